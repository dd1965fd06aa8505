//! The call engine over an unmodified Janus: three `Call`s with `JanusTransport`, audio
//! through a VideoRoom, handshake messages and Welcomes through TextRoom rooms. Alice
//! creates the room and invites Bob and Carol (Welcomes by TextRoom mailbox rooms), they
//! join and make their first commits, everyone talks, everyone self-updates, then Alice
//! removes Carol. Required: one epoch and safety code for the members, everyone hears
//! everyone, Carol knows she was removed and hears nothing after.
//!
//! Runs in the loopback-only sandbox of `common/janus.rs` (fails without Janus).
#![cfg(feature = "webrtc")]

#[path = "../examples/common/janus.rs"]
mod janus;
#[path = "../examples/common/voice.rs"]
mod voice;

use sotto::room::MlsSuite;
use std::time::{Duration, Instant};

use janus::{Member, World};
use serde_json::{json, Value};
use sotto::call::{Call, CallConfig, CallEvent, JanusTransport, Transport};
use sotto::provider::Provider;
use sotto::room::Identity;
use sotto::webrtc::{candidate_addresses, PeerEvent};

const PORT: u16 = 18_090;
const NAMES: [&str; 3] = [
    "alice@sotto.example",
    "bob@sotto.example",
    "carol@sotto.example",
];

impl janus::Fill for voice::Voice {
    fn fill(&mut self, out: &mut [i16]) {
        voice::Voice::fill(self, out);
    }
}

fn decoded(m: &Member) -> Vec<(Vec<u8>, u64, u64)> {
    m.call
        .voices()
        .map(|v| (v.pseudonym.to_vec(), v.stats.decoded, v.stats.concealed))
        .collect()
}

#[test]
fn calls_run_over_janus_textroom_and_videoroom() {
    if !janus::inside_sandbox() {
        assert!(
            janus::rerun_in_sandbox(&[
                "--exact",
                "calls_run_over_janus_textroom_and_videoroom",
                "--nocapture",
                "--test-threads=1",
            ]),
            "the run inside the sandbox failed (see above)"
        );
        return;
    }
    assert_eq!(janus::addresses(), vec!["127.0.0.1/32".to_string()]);
    let mut server = janus::Janus::start(PORT);
    let now = Instant::now();
    let config = CallConfig::default();
    let identity = |n: &str| Identity::new(Provider::new().unwrap(), n.as_bytes()).unwrap();
    let alice = Call::create_with(
        identity(NAMES[0]),
        config.clone(),
        JanusTransport::new(),
        now,
    )
    .unwrap();
    let mut kps = Vec::new();
    let mut calls = vec![alice];
    for name in &NAMES[1..] {
        let id = identity(name);
        let kp = id.key_package(MlsSuite::Classic).unwrap();
        kps.push(kp.bytes.clone());
        calls.push(Call::join_with(id, kp, config.clone(), JanusTransport::new(), now).unwrap());
    }
    let mut world = World::new(PORT);
    for (i, call) in calls.into_iter().enumerate() {
        let text = world.textroom_link();
        world.members.push(Member {
            call,
            text,
            publisher: None,
            subs: Vec::new(),
            voice: Box::new(voice::Voice::new(i)),
            events: Vec::new(),
            removed_at: None,
            report: janus::Report::default(),
        });
    }
    // The TextRoom connections come up; then the engines connect over them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !world.members.iter().all(|m| m.call.transport().is_ready()) {
        assert!(
            Instant::now() < deadline,
            "textroom connections did not come up"
        );
        for m in &mut world.members {
            if m.text.peer.is_connected() {
                m.text.peer.open_channel();
            }
        }
        world.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    // Alice invites Bob and Carol as soon as she can commit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !world.members[0].call.ready_to_commit() {
        assert!(Instant::now() < deadline, "alice never ready to commit");
        world.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    let refs: Vec<&[u8]> = kps.iter().map(Vec::as_slice).collect();
    world.members[0].call.invite(&refs, Instant::now()).unwrap();
    let start = Instant::now();
    while !world.converged(&[0, 1, 2]) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no convergence: {:?}",
            world
                .members
                .iter()
                .map(|m| (
                    m.call.epoch(),
                    m.call.is_in_room(),
                    m.call.can_speak(),
                    m.call.members().count(),
                    m.call.safety_code().map(|c| c.to_string()),
                    m.subs.len(),
                    m.publisher.is_some(),
                ))
                .collect::<Vec<_>>()
        );
        world.talk(Duration::from_millis(200));
    }
    println!(
        "janus call: converged {:?} after the invite",
        start.elapsed()
    );
    world.talk(Duration::from_secs(3));
    let heard_before: Vec<_> = world.members.iter().map(decoded).collect();
    // Everyone self-updates, one after the other.
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !world.members[i].call.ready_to_commit() {
            assert!(Instant::now() < deadline, "{i} never ready to commit");
            world.talk(Duration::from_millis(20));
        }
        world.members[i].call.self_update(Instant::now()).unwrap();
        world.talk(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !world.converged(&[0, 1, 2]) {
        assert!(
            Instant::now() < deadline,
            "no convergence after self-updates"
        );
        world.talk(Duration::from_millis(100));
    }
    // Alice removes Carol.
    let carol = world.members[0]
        .call
        .members()
        .find(|(_, p)| *p == NAMES[2].as_bytes())
        .map(|(id, _)| id)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !world.members[0].call.ready_to_commit() {
        assert!(Instant::now() < deadline, "alice never ready to remove");
        world.talk(Duration::from_millis(20));
    }
    world.members[0].call.remove(carol, Instant::now()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(world.members[2].call.is_removed() && world.converged(&[0, 1])) {
        assert!(Instant::now() < deadline, "the removal did not go through");
        world.talk(Duration::from_millis(100));
    }
    world.members[2].removed_at = Some(Instant::now());
    let carol_heard = decoded(&world.members[2]);
    world.talk(Duration::from_secs(3));
    let heard_after: Vec<_> = world.members.iter().map(decoded).collect();
    for (i, m) in world.members.iter().enumerate() {
        println!(
            "janus call: {} epoch {:?} code {:?} heard {:?}",
            NAMES[i],
            m.call.epoch(),
            m.call.safety_code().map(|c| c.to_string()),
            heard_after[i]
                .iter()
                .map(|(p, d, c)| (String::from_utf8_lossy(p).into_owned(), *d, *c))
                .collect::<Vec<_>>()
        );
    }
    // Alice and Bob hear each other after everything; Carol knows and hears nothing new.
    for (i, j) in [(0, 1), (1, 0)] {
        let after = heard_after[i]
            .iter()
            .find(|(p, _, _)| p == NAMES[j].as_bytes())
            .map(|v| v.1)
            .unwrap_or(0);
        let before = heard_before[i]
            .iter()
            .find(|(p, _, _)| p == NAMES[j].as_bytes())
            .map(|v| v.1)
            .unwrap_or(0);
        assert!(after > before + 100, "{i} hears {j}: {before} → {after}");
    }
    assert!(world.members[2]
        .events
        .iter()
        .any(|e| matches!(e, CallEvent::Removed)));
    assert_eq!(
        decoded(&world.members[2]),
        carol_heard,
        "carol hears nothing after"
    );
    // A stranger on the same Janus (another tenant of the SFU) that learned the current
    // channel's room id cannot join it, post to it, or destroy it: the PIN and secret come
    // from the token, which only members have.
    let token = world.members[0].call.media().tokens().last().unwrap().1;
    let room = JanusTransport::channel_id(&token);
    let mut stranger = world.textroom_link();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stranger.events.contains(&PeerEvent::ChannelOpen) {
        assert!(Instant::now() < deadline, "stranger's channel");
        if stranger.peer.is_connected() {
            stranger.peer.open_channel();
        }
        stranger.pump(&mut world.sent_to);
        world.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    let tries = [
        json!({"textroom": "join", "transaction": "s1", "room": room, "username": "stranger"}),
        json!({"textroom": "join", "transaction": "s2", "room": room, "username": "stranger",
               "pin": "00000000000000000000000000000000"}),
        json!({"textroom": "message", "transaction": "s3", "room": room, "text": "AAAA"}),
        json!({"textroom": "destroy", "transaction": "s4", "room": room}),
        json!({"textroom": "announcement", "transaction": "s5", "room": room, "text": "AAAA"}),
    ];
    for t in &tries {
        assert!(stranger.peer.send_text(&t.to_string()).unwrap());
    }
    let mut answers: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answers.len() < tries.len() {
        assert!(Instant::now() < deadline, "stranger got {answers:?}");
        stranger.pump(&mut world.sent_to);
        for e in std::mem::take(&mut stranger.events) {
            if let PeerEvent::Data(bytes) = e {
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                if v["transaction"]
                    .as_str()
                    .is_some_and(|t| t.starts_with('s'))
                {
                    answers.push(v);
                }
            }
        }
        world.talk(Duration::from_millis(20));
    }
    for a in &answers {
        assert_eq!(a["textroom"], "error", "the stranger got through: {a}");
    }
    println!(
        "janus call: a stranger's join, message, destroy and announcement refused: {:?}",
        answers
            .iter()
            .map(|a| a["error_code"].clone())
            .collect::<Vec<_>>()
    );
    // The room still works for its members: Alice and Bob still converge after it.
    world.talk(Duration::from_millis(500));
    assert!(world.converged(&[0, 1]));
    // Loopback only.
    for c in world.sdps.iter().flat_map(|s| candidate_addresses(s)) {
        assert_eq!(c.ip().to_string(), "127.0.0.1");
    }
    for to in &world.sent_to {
        assert_eq!(to.ip().to_string(), "127.0.0.1");
    }
    world.session.destroy();
    server.stop();
    let _ = std::fs::remove_dir_all(&server.dir);
}
