//! The call engine end to end on a simulated network (`common/call_net.rs`): rooms form,
//! converge and hear each other; removals, leaves and relay restarts.
#![cfg(feature = "opus")]

#[path = "common/call_net.rs"]
mod call_net;

use std::time::{Duration, Instant};

use call_net::{CallNet, Impairment};
use sotto::call::{CallConfig, CallEvent};

fn room_of(net: &mut CallNet, n: usize) {
    room_with(net, n, CallConfig::default());
}

fn room_with(net: &mut CallNet, n: usize, config: CallConfig) {
    let creator = net.create("m0", config.clone());
    for k in 1..n {
        let (j, kp) = net.joiner(&format!("m{k}"), config.clone());
        assert!(
            net.run_until(Duration::from_secs(5), |net| net.nodes[creator]
                .call
                .ready_to_commit()),
            "creator never ready"
        );
        net.nodes[creator].call.invite(&[&kp], net.now).unwrap();
        assert!(
            net.run_until(Duration::from_secs(10), |net| net.nodes[j]
                .call
                .is_in_room()),
            "m{k} never joined"
        );
    }
    assert!(
        net.run_until(Duration::from_secs(20), CallNet::converged),
        "the room never converged"
    );
}

#[test]
fn a_room_forms_converges_and_everyone_hears_everyone() {
    let mut net = CallNet::new(1, Impairment::default(), Instant::now());
    room_of(&mut net, 4);
    let before: Vec<u64> = net.nodes.iter().map(|n| n.heard_frames).collect();
    net.run(Duration::from_secs(2));
    for (i, node) in net.nodes.iter().enumerate() {
        assert!(node.heard_frames - before[i] >= 95, "{i} heard too little");
        for v in node.call.voices() {
            assert_eq!(v.stats.auth_failures, 0);
            assert!(v.stats.decoded > 50, "{i} decoded {:?}", v.stats);
        }
        assert_eq!(node.call.voices().count(), 3);
        assert_eq!(node.refused, 0);
    }
}

/// A member sending its microphone and a second stream is heard as two voices by every
/// other member, both decoded; a stream the room does not have is not sent.
#[test]
fn a_second_stream_is_heard_as_its_own_voice() {
    use sotto::keys::StreamId;
    let mut net = CallNet::new(3, Impairment::default(), Instant::now());
    room_of(&mut net, 3);
    net.nodes[0].second_stream = true;
    net.run(Duration::from_secs(2));
    let alice = net.nodes[1]
        .call
        .members()
        .find(|(_, p)| *p == b"m0")
        .map(|(id, _)| id)
        .unwrap();
    for node in &net.nodes[1..] {
        let voices: Vec<_> = node.call.voices().collect();
        assert_eq!(
            voices.len(),
            3,
            "{}: m0's two streams and one more",
            node.name
        );
        for stream in [StreamId::MICROPHONE, StreamId(1)] {
            let v = voices
                .iter()
                .find(|v| v.member == alice && v.stream == stream)
                .unwrap();
            assert_eq!(v.stats.auth_failures, 0);
            assert!(v.stats.decoded > 80, "{} decoded {:?}", node.name, v.stats);
        }
        assert_eq!(node.refused, 0);
    }
    // Stream 4 is outside the room's 2^2 streams: counted as unsent, nothing on the wire.
    let unsent = net.nodes[0].call.stats().frames_unsent;
    let pcm = vec![0i16; net.nodes[0].call.frame_samples()];
    let now = net.now;
    net.nodes[0]
        .call
        .send_stream(StreamId(4), &pcm, now)
        .unwrap();
    assert_eq!(net.nodes[0].call.stats().frames_unsent, unsent + 1);
}

/// A post-quantum room through the call engine: sealed handshakes and padded Welcomes of
/// the larger PQ messages pass the relay, the room converges, everyone hears everyone, and
/// a removal reaches everyone.
#[cfg(feature = "pq")]
#[test]
fn a_post_quantum_room_forms_hears_and_removes() {
    use sotto::room::MlsSuite;
    let mut net = CallNet::new(4, Impairment::default(), Instant::now());
    let mut config = CallConfig::default();
    config.room.mls_suite = MlsSuite::HybridPq;
    room_with(&mut net, 3, config);
    let before: Vec<u64> = net.nodes.iter().map(|n| n.heard_frames).collect();
    net.run(Duration::from_secs(2));
    for (i, node) in net.nodes.iter().enumerate() {
        assert_eq!(node.call.room().unwrap().mls_suite(), MlsSuite::HybridPq);
        assert!(node.heard_frames - before[i] >= 95, "{i} heard too little");
        assert_eq!(node.call.voices().count(), 2);
        assert_eq!(node.refused, 0);
    }
    let victim = net.nodes[0]
        .call
        .members()
        .find(|(_, p)| *p == b"m2")
        .map(|(id, _)| id)
        .unwrap();
    let now = net.now;
    net.nodes[0].call.remove(victim, now).unwrap();
    assert!(
        net.run_until(Duration::from_secs(10), |net| net.nodes[2]
            .events
            .iter()
            .any(|e| matches!(e, CallEvent::Removed))),
        "the removed member never learned it"
    );
}

#[test]
fn removal_and_leave_reach_everyone() {
    let mut net = CallNet::new(2, Impairment::default(), Instant::now());
    room_of(&mut net, 4);
    let victim = net.nodes[3]
        .call
        .room()
        .map(|r| {
            r.members()
                .into_iter()
                .find(|m| m.leaf == r.own_leaf())
                .unwrap()
                .id
        })
        .unwrap();
    net.nodes[0].call.remove(victim, net.now).unwrap();
    assert!(net.run_until(Duration::from_secs(5), |net| net.nodes[3].call.is_removed()));
    assert!(net.nodes[3]
        .events
        .iter()
        .any(|e| matches!(e, CallEvent::Removed)));
    assert!(net.run_until(Duration::from_secs(10), CallNet::converged));
    for i in 0..3 {
        assert!(net.nodes[i]
            .events
            .iter()
            .any(|e| matches!(e, CallEvent::MemberLeft { member } if *member == victim)));
        assert_eq!(net.nodes[i].call.voices().count(), 2);
    }
    // Member 2 leaves: its proposal is committed by the next commit of another member.
    net.nodes[2].call.leave(net.now).unwrap();
    assert!(!net.nodes[2].call.can_speak());
    net.run(Duration::from_millis(200));
    net.nodes[0].call.self_update(net.now).unwrap();
    assert!(net.run_until(Duration::from_secs(5), |net| net.nodes[2].call.is_removed()));
    assert!(net.run_until(Duration::from_secs(10), CallNet::converged));
    assert_eq!(net.active(), vec![0, 1]);
}

#[test]
fn a_relay_restart_is_survived() {
    let mut net = CallNet::new(3, Impairment::default(), Instant::now());
    room_of(&mut net, 3);
    net.restart_relay();
    net.run(Duration::from_secs(2));
    let before: Vec<u64> = net.nodes.iter().map(|n| n.heard_frames).collect();
    net.run(Duration::from_secs(1));
    for (i, node) in net.nodes.iter().enumerate() {
        assert!(
            node.heard_frames - before[i] >= 45,
            "{i} deaf after the restart"
        );
    }
    // And commits still go through.
    net.nodes[1].call.self_update(net.now).unwrap();
    assert!(net.run_until(Duration::from_secs(10), CallNet::converged));
}

#[test]
fn self_updates_follow_the_schedule() {
    let mut net = CallNet::new(4, Impairment::default(), Instant::now());
    let config = CallConfig {
        self_update_every: Some(Duration::from_secs(3)),
        ..CallConfig::default()
    };
    let creator = net.create("m0", config.clone());
    let (j, kp) = net.joiner("m1", config);
    assert!(
        net.run_until(Duration::from_secs(5), |net| net.nodes[creator]
            .call
            .ready_to_commit())
    );
    net.nodes[creator].call.invite(&[&kp], net.now).unwrap();
    assert!(net.run_until(Duration::from_secs(10), CallNet::converged));
    let (e0, commits0) = (net.nodes[j].call.epoch().unwrap(), total_commits(&net));
    net.run(Duration::from_secs(12));
    let (e1, commits1) = (net.nodes[j].call.epoch().unwrap(), total_commits(&net));
    // Each member self-updates every 3 s (each commit resets the committer's clock): 12 s
    // give each at least 3.
    assert!(commits1 - commits0 >= 6, "{} commits", commits1 - commits0);
    assert_eq!(e1 - e0, commits1 - commits0 - dropped(&net));
    assert!(net.run_until(Duration::from_secs(5), CallNet::converged));
}

fn total_commits(net: &CallNet) -> u64 {
    net.nodes.iter().map(|n| n.call.stats().commits).sum()
}

fn dropped(net: &CallNet) -> u64 {
    net.nodes
        .iter()
        .map(|n| n.call.stats().commits_dropped)
        .sum()
}

#[test]
fn a_member_that_does_not_commit_still_makes_its_first_commit() {
    use sotto::call::{CallError, Committer};
    let mut net = CallNet::new(5, Impairment::default(), Instant::now());
    let creator = net.create("m0", CallConfig::default());
    let listener = CallConfig {
        committer: Committer::Others,
        ..CallConfig::default()
    };
    let (j, kp) = net.joiner("m1", listener);
    assert!(
        net.run_until(Duration::from_secs(5), |net| net.nodes[creator]
            .call
            .ready_to_commit())
    );
    net.nodes[creator].call.invite(&[&kp], net.now).unwrap();
    assert!(net.run_until(Duration::from_secs(10), CallNet::converged));
    // It speaks (its one commit, made by the engine) ...
    assert_eq!(net.nodes[j].call.stats().commits, 1);
    assert!(net.nodes[j].call.can_speak());
    // ... but makes no other.
    assert!(matches!(
        net.nodes[j].call.self_update(net.now),
        Err(CallError::NotCommitter)
    ));
    assert!(matches!(
        net.nodes[j].call.invite(&[&kp], net.now),
        Err(CallError::NotCommitter)
    ));
    net.run(Duration::from_secs(5));
    assert_eq!(net.nodes[j].call.stats().commits, 1);
}
