//! Adversaries of the call engine, each trying its best on a simulated network
//! (`common/call_net.rs`): anyone who knows a KeyPackage reference forging Welcomes, the
//! relay replaying every handshake it ever carried, an on-path forger of handshake numbers,
//! an app that
//! never drains the call, a removed member's own engine, and a relay that is an MLS
//! external sender trying to slip its proposals in outside the current epoch.
#![cfg(feature = "opus")]

#[path = "common/call_net.rs"]
mod call_net;

use std::time::{Duration, Instant};

use call_net::{CallNet, Impairment};
use sotto::call::{CallConfig, CallError, CallEvent, TransportError};
use sotto::keys::MemberId;
use sotto::relay::{ChannelHandle, ClientMessage, MailboxId, RelayMessage};

fn room(net: &mut CallNet, n: usize) {
    room_with(net, n, CallConfig::default());
}

fn room_with(net: &mut CallNet, n: usize, config: CallConfig) {
    let creator = net.create("m0", config.clone());
    for k in 1..n {
        let (j, kp) = net.joiner(&format!("m{k}"), config.clone());
        assert!(
            net.run_until(Duration::from_secs(5), |net| net.nodes[creator]
                .call
                .ready_to_commit())
        );
        net.nodes[creator].call.invite(&[&kp], net.now).unwrap();
        assert!(net.run_until(Duration::from_secs(10), |net| net.nodes[j]
            .call
            .is_in_room()));
    }
    assert!(net.run_until(Duration::from_secs(20), CallNet::converged));
}

fn own_id(net: &CallNet, i: usize) -> MemberId {
    let room = net.nodes[i].call.room().unwrap();
    room.members()
        .into_iter()
        .find(|m| m.leaf == room.own_leaf())
        .unwrap()
        .id
}

fn encode(msg: RelayMessage<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = msg.encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Anyone who learns a KeyPackage reference (the relay sees it in every fetch) can put
/// Welcomes in its mailbox. The joiner refuses them and still joins with the genuine one.
#[test]
fn forged_welcomes_do_not_stop_a_joiner() {
    let mut net = CallNet::new(11, Impairment::default(), Instant::now());
    let config = CallConfig::default();
    let creator = net.create("m0", config.clone());
    let (joiner, kp) = net.joiner("m1", config);
    let reference = net.nodes[joiner]
        .call
        .key_package()
        .unwrap()
        .reference
        .clone();
    net.run(Duration::from_millis(600));
    // The joiner has asked its mailbox by now: forged answers are taken as Welcomes.
    let forged = [
        b"not a welcome".to_vec(),
        vec![0u8; 2000],
        // A Welcome-shaped message: MLS version 1, wire format 3 (Welcome), then garbage.
        [vec![0, 1, 0, 3], vec![0x5a; 600]].concat(),
    ];
    for bytes in &forged {
        let d = encode(RelayMessage::Welcome {
            mailbox: MailboxId::new(&reference).unwrap(),
            welcome: bytes,
        });
        net.nodes[joiner].call.handle_datagram(&d, net.now).unwrap();
    }
    assert_eq!(net.nodes[joiner].call.stats().welcomes_ignored, 3);
    assert!(net.nodes[joiner].call.room().is_none());
    assert!(net.nodes[joiner].call.key_package().is_some());
    net.nodes[creator].call.invite(&[&kp], net.now).unwrap();
    assert!(net.run_until(Duration::from_secs(10), CallNet::converged));
    assert!(net.nodes[joiner].call.is_in_room());
}

/// Someone on the path (the relay wire has no integrity of its own: see `sotto::relay`)
/// sends a member a handshake datagram under its live handle with a number far ahead of the
/// channel's. Before the relay's own count overrode what numbers suggest, the member asked
/// for the missing numbers ten times, then skipped to the forged one and took every later
/// genuine message for a copy: it never applied another commit of that epoch. Now the
/// relay's answer to the first asking shows the number does not exist, and the next
/// commit goes through as usual.
#[test]
fn a_forged_far_ahead_number_does_not_stall_a_channel() {
    let mut net = CallNet::new(31, Impairment::default(), Instant::now());
    net.record_delivered = true;
    room(&mut net, 3);
    let victim = 1;
    let genuine = net
        .delivered
        .iter()
        .rev()
        .find(|(_, to, d)| {
            *to == victim && matches!(RelayMessage::parse(d), Ok(RelayMessage::Handshake { .. }))
        })
        .map(|(_, _, d)| d.clone())
        .expect("the victim received a handshake");
    let Ok(RelayMessage::Handshake { message, .. }) = RelayMessage::parse(&genuine) else {
        unreachable!()
    };
    // The victim's current channel: where the next commit will be published.
    let token = net.nodes[victim].call.sending_token().unwrap();
    let handle = net
        .delivered
        .iter()
        .rev()
        .filter(|(_, to, _)| *to == victim)
        .find_map(|(_, _, d)| match RelayMessage::parse(d) {
            Ok(RelayMessage::Subscribed {
                token: t, handle, ..
            }) if t == token => Some(handle),
            _ => None,
        })
        .expect("the victim's subscription was confirmed");
    let forged = RelayMessage::Handshake {
        handle,
        seq: 1 << 40,
        message,
    };
    let mut buf = vec![0u8; forged.encoded_len()];
    forged.encode(&mut buf).unwrap();
    net.nodes[victim]
        .call
        .handle_datagram(&buf, net.now)
        .unwrap();
    assert!(
        !net.nodes[victim].call.ready_to_commit(),
        "a number is missing"
    );
    // The relay's answer to the asking clears it.
    assert!(net.run_until(Duration::from_secs(2), |n| n.nodes[victim]
        .call
        .ready_to_commit()));
    let epoch = net.nodes[0].call.epoch().unwrap();
    net.nodes[0].call.self_update(net.now).unwrap();
    assert!(net.run_until(Duration::from_secs(10), CallNet::converged));
    assert_eq!(net.nodes[victim].call.epoch(), Some(epoch + 1));
    assert_eq!(net.nodes[victim].call.stats().handshake_gaps_skipped, 0);
}

/// The relay replays, to one member, every handshake datagram it ever delivered to it, in
/// order and reversed, and flips a byte of each: nothing changes (copies under a number
/// already seen go no further; stale, own and damaged commits are refused) and the call
/// goes on.
#[test]
fn a_relay_replaying_every_handshake_changes_nothing() {
    let mut net = CallNet::new(12, Impairment::default(), Instant::now());
    net.record_delivered = true;
    room(&mut net, 3);
    net.nodes[2].call.self_update(net.now).unwrap();
    assert!(net.run_until(Duration::from_secs(10), CallNet::converged));
    let victim = 1;
    let handshakes: Vec<Vec<u8>> = net
        .delivered
        .iter()
        .filter(|(_, to, d)| {
            *to == victim && matches!(RelayMessage::parse(d), Ok(RelayMessage::Handshake { .. }))
        })
        .map(|(_, _, d)| d.clone())
        .collect();
    assert!(handshakes.len() >= 3, "{} handshakes", handshakes.len());
    let before = (
        net.nodes[victim].call.epoch(),
        net.nodes[victim].call.safety_code(),
        net.nodes[victim].call.stats().handshakes_applied,
    );
    let mut replays: Vec<Vec<u8>> = handshakes.clone();
    replays.extend(handshakes.iter().rev().cloned());
    for d in &handshakes {
        for at in [d.len() / 2, d.len() - 1] {
            let mut flipped = d.clone();
            flipped[at] ^= 0x40;
            replays.push(flipped);
        }
    }
    for d in &replays {
        // A replayed datagram parses; a flipped one may not: either way, nothing changes.
        let _ = net.nodes[victim].call.handle_datagram(d, net.now);
    }
    let after = (
        net.nodes[victim].call.epoch(),
        net.nodes[victim].call.safety_code(),
        net.nodes[victim].call.stats().handshakes_applied,
    );
    assert_eq!(before, after);
    // Copies under a number already given to the room go no further; flipped ones that
    // kept their number too, the rest the room refuses.
    let stats = net.nodes[victim].call.stats();
    let (refused, duplicate) = (stats.handshakes_refused, stats.handshakes_duplicate);
    assert!(
        duplicate >= 2 * handshakes.len() as u64,
        "duplicate {duplicate} refused {refused}"
    );
    assert!(net.run_until(Duration::from_secs(5), CallNet::converged));
    // And the next commit still goes through.
    net.nodes[0].call.self_update(net.now).unwrap();
    assert!(net.run_until(Duration::from_secs(10), CallNet::converged));
}

/// An app that stops draining the call: queued datagrams and events stay bounded (the
/// newest datagrams and the oldest events are dropped and counted).
#[test]
fn an_app_that_never_polls_cannot_make_the_call_grow() {
    let mut net = CallNet::new(14, Impairment::default(), Instant::now());
    room(&mut net, 2);
    let call = &mut net.nodes[0].call;
    let mut now = net.now;
    let pcm = vec![1000i16; call.frame_samples()];
    let mut out = vec![0i16; call.frame_samples()];
    for _ in 0..3000 {
        now += Duration::from_millis(20);
        call.handle_timeout(now);
        call.send_audio(&pcm, now).unwrap();
        call.pull_audio(&mut out, now).unwrap();
    }
    assert!(call.stats().transmit_dropped > 1000);
    let mut d = Vec::new();
    let mut queued = 0;
    while call.poll_transmit(&mut d) {
        queued += 1;
    }
    assert!(queued <= 1024, "{queued} datagrams queued");
}

/// A removed member's own engine: it stops sending media at once, leaves every channel,
/// and refuses to commit; its PCM buffer is still checked.
#[test]
fn a_removed_member_goes_quiet_and_leaves_every_channel() {
    let mut net = CallNet::new(15, Impairment::default(), Instant::now());
    net.record = true;
    room(&mut net, 3);
    let victim = own_id(&net, 2);
    net.nodes[0].call.remove(victim, net.now).unwrap();
    assert!(net.run_until(Duration::from_secs(5), |net| net.nodes[2].call.is_removed()));
    assert!(net.nodes[2]
        .events
        .iter()
        .any(|e| matches!(e, CallEvent::Removed)));
    let removed_at = net.recording.len();
    net.run(Duration::from_secs(3));
    let media_after = net.recording[removed_at..]
        .iter()
        .filter(|(from, d)| {
            *from == 2 && matches!(ClientMessage::parse(d), Ok(ClientMessage::Media { .. }))
        })
        .count();
    assert_eq!(media_after, 0);
    let mut held = Vec::new();
    net.nodes[2]
        .call
        .transport()
        .client()
        .subscribed()
        .for_each(|t| held.push(t));
    assert!(
        held.is_empty(),
        "still subscribed to {} channels",
        held.len()
    );
    assert!(!net.nodes[2].call.can_speak());
    assert_eq!(net.nodes[2].call.voices().count(), 0);
    assert!(matches!(
        net.nodes[2].call.self_update(net.now),
        Err(CallError::NotInRoom)
    ));
    assert!(matches!(
        net.nodes[2].call.send_audio(&[0i16; 3], net.now),
        Err(CallError::Audio(_))
    ));
    assert!(matches!(
        net.nodes[2].call.handle_datagram(&[0xff; 3], net.now),
        Err(CallError::Transport(TransportError::Malformed))
    ));
    assert!(net.run_until(Duration::from_secs(5), CallNet::converged));
}

/// A member's device crashes and comes back from a storage snapshot taken two seconds
/// earlier (a rollback: it sealed frames after the snapshot). The restored call reconnects
/// on a new connection, hears nothing it cannot prove fresh, makes its own commit at once
/// and is heard again; no (KID, CTR) it seals repeats one the crashed instance sealed.
#[test]
fn a_member_restored_from_an_old_snapshot_never_reuses_a_nonce() {
    use openmls_traits::OpenMlsProvider as _;
    use sotto::call::Call;
    use sotto::provider::Provider;

    let mut net = CallNet::new(16, Impairment::default(), Instant::now());
    net.record = true;
    room(&mut net, 3);
    let victim = 1;
    let room = net.nodes[victim].call.room().unwrap();
    let snapshot = room.provider().storage().snapshot().unwrap();
    let signature_key = room.signature_key().to_vec();
    let group_id = room.group_id().to_vec();
    let epoch = room.epoch();
    net.run(Duration::from_secs(2));
    assert_eq!(net.nodes[victim].call.epoch(), Some(epoch));
    // The crash.
    net.nodes[victim].offline = true;
    let provider = Provider::with_storage(snapshot).unwrap();
    let restored = Call::load(
        provider,
        &signature_key,
        &group_id,
        CallConfig::default(),
        net.now,
    )
    .unwrap();
    assert!(!restored.can_speak());
    let back = net.add("m1-restored", restored);
    assert!(
        net.run_until(Duration::from_secs(10), CallNet::converged),
        "the restored member never caught up"
    );
    assert!(net.nodes[back].call.epoch() > Some(epoch), "it committed");
    let before: Vec<u64> = net.nodes.iter().map(|n| n.heard_frames).collect();
    net.run(Duration::from_secs(2));
    for i in [0, 2, back] {
        assert!(
            net.nodes[i].heard_frames - before[i] >= 95,
            "{i} does not hear"
        );
    }
    // (KID, CTR) of every frame each instance sent.
    let sealed = |who: usize| -> std::collections::HashSet<(u64, u64)> {
        net.recording
            .iter()
            .filter(|(from, _)| *from == who)
            .filter_map(|(_, d)| match ClientMessage::parse(d) {
                Ok(ClientMessage::Media { frame, .. }) => {
                    let (h, _) = sotto::frame::Header::parse(frame).ok()?;
                    Some((h.kid, h.ctr))
                }
                _ => None,
            })
            .collect()
    };
    let (old, new) = (sealed(victim), sealed(back));
    assert!(
        old.len() > 100 && new.len() > 100,
        "{} and {}",
        old.len(),
        new.len()
    );
    assert_eq!(
        old.intersection(&new).count(),
        0,
        "a (KID, CTR) sealed twice"
    );
}

fn encode_client(msg: ClientMessage<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; msg.encoded_len()];
    msg.encode(&mut buf).unwrap();
    buf
}

/// A connection of the test's own on the relay, subscribed to `token`: its handle.
fn outside_subscriber(
    net: &mut CallNet,
    conn: u64,
    token: sotto::media::ChannelToken,
) -> ChannelHandle {
    net.relay_inject(conn, &encode_client(ClientMessage::Hello));
    let answers = net.relay_inject(conn, &encode_client(ClientMessage::Subscribe { token }));
    answers
        .iter()
        .find_map(|(_, b)| match RelayMessage::parse(b) {
            Ok(RelayMessage::Subscribed {
                token: t, handle, ..
            }) if t == token => Some(handle),
            _ => None,
        })
        .expect("the relay confirmed the subscription")
}

/// A connection of the test's own publishes `message` on `token`'s channel (as the relay
/// itself could); the network then runs 300 ms.
fn publish_outside(
    net: &mut CallNet,
    conn: u64,
    token: sotto::media::ChannelToken,
    message: &[u8],
) {
    let handle = outside_subscriber(net, conn, token);
    net.relay_inject(
        conn,
        &encode_client(ClientMessage::Handshake { handle, message }),
    );
    net.run(Duration::from_millis(300));
}

/// The relay is the room's MLS external sender, so its removal proposals travel bare (they
/// are MLS PublicMessages it wrote itself). A member accepts a bare message only on the
/// channel of its current epoch: the relay's valid proposal for the current epoch,
/// published on the previous epoch's channel (which the members still hear), is refused by
/// every member and queues nothing; the same bytes on the current channel queue the removal
/// at every member, and a commit carries it out.
#[test]
fn an_external_proposal_counts_only_on_the_current_epochs_channel() {
    use openmls::prelude::{
        ExternalProposal, GroupEpoch, GroupId, LeafNodeIndex, SenderExtensionIndex, SignatureScheme,
    };
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_rust_crypto::OpenMlsRustCrypto;
    use sotto::room::{ProposalKind, ProposalSender};

    let relay_key = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let mut config = CallConfig::default();
    config.room.external_senders = vec![(relay_key.public().to_vec(), b"relay".to_vec())];
    let mut net = CallNet::new(14, Impairment::default(), Instant::now());
    room_with(&mut net, 3, config);
    let old = net.nodes[0].call.sending_token().unwrap();
    net.nodes[1].call.self_update(net.now).unwrap();
    assert!(net.run_until(Duration::from_secs(10), CallNet::converged));
    let current = net.nodes[0].call.sending_token().unwrap();
    assert_ne!(old, current);
    let epoch = net.nodes[0].call.epoch().unwrap();
    let (group, target) = {
        let room = net.nodes[2].call.room().unwrap();
        (room.group_id().to_vec(), room.own_leaf())
    };
    let proposal = ExternalProposal::new_remove::<OpenMlsRustCrypto>(
        LeafNodeIndex::new(target),
        GroupId::from_slice(&group),
        GroupEpoch::from(epoch),
        &relay_key,
        SenderExtensionIndex::new(0),
    )
    .unwrap()
    .to_bytes()
    .unwrap();
    let queued = |net: &CallNet, i: usize| {
        net.nodes[i]
            .events
            .iter()
            .filter_map(|e| match e {
                CallEvent::ProposalQueued(info) => Some(info.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let refused = |net: &CallNet| -> Vec<u64> {
        (0..3)
            .map(|i| net.nodes[i].call.stats().handshakes_refused)
            .collect()
    };

    // On the previous epoch's channel: heard and refused by every member.
    let before = refused(&net);
    publish_outside(&mut net, 1000, old, &proposal);
    let after = refused(&net);
    for i in 0..3 {
        assert_eq!(after[i], before[i] + 1, "member {i} refused it: {after:?}");
        assert!(queued(&net, i).is_empty(), "member {i} queued it");
    }
    assert_eq!(net.nodes[0].call.epoch(), Some(epoch));

    // The same bytes on the current channel: queued everywhere as the relay's removal.
    publish_outside(&mut net, 1001, current, &proposal);
    for i in 0..3 {
        let infos = queued(&net, i);
        assert_eq!(infos.len(), 1, "member {i}: {infos:?}");
        assert_eq!(
            (infos[0].kind, infos[0].sender, infos[0].target),
            (
                ProposalKind::Remove,
                ProposalSender::External(0),
                Some(target)
            )
        );
    }
    // A member's next commit carries it out.
    net.nodes[0].call.self_update(net.now).unwrap();
    assert!(net.run_until(Duration::from_secs(10), |net| net.nodes[2]
        .call
        .room()
        .is_none()
        || net.nodes[2].call.is_removed()));
    assert!(net.run_until(Duration::from_secs(10), |net| {
        net.nodes[0].call.room().map(|r| r.members().len()) == Some(2)
            && net.nodes[0].call.safety_code() == net.nodes[1].call.safety_code()
    }));
}
