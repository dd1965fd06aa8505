//! The bad-input sweep for `Call::handle_datagram`: every kind of datagram a member really
//! received from the relay in a short call, cut at every length and with bits flipped, fed
//! to a member. No panic; a datagram that does not parse is a typed error; nothing a member
//! shows changes (epoch, safety code, members, whether it speaks, its confirmed channels),
//! and the call goes on afterwards.
//!
//! Except for the connection itself: a flipped error that reads as `NotConnected` about a
//! request the member made is, on this wire, indistinguishable from the relay having
//! forgotten the connection: the member drops its channels and says Hello again. Measured
//! here: how long until it hears again.
#![cfg(feature = "opus")]

#[path = "common/call_net.rs"]
mod call_net;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use call_net::{CallNet, Impairment};
use sotto::call::{Call, CallConfig, CallError, TransportError};
use sotto::keys::{KidLayout, MemberId, StreamId};
use sotto::media::ChannelToken;
use sotto::relay::RelayMessage;
use sotto::room::SafetyCode;

#[derive(Debug, PartialEq, Eq)]
struct Shown {
    epoch: Option<u64>,
    code: Option<SafetyCode>,
    members: Vec<MemberId>,
    speaks: bool,
    channels: Vec<ChannelToken>,
    removed: bool,
    /// (member, stream) voices: a forged KID must not make one.
    voices: Vec<(MemberId, StreamId)>,
}

fn shown(call: &Call) -> Shown {
    let mut channels: Vec<ChannelToken> = call.transport().client().subscribed().collect();
    channels.sort_by_key(|t| t.0);
    Shown {
        epoch: call.epoch(),
        code: call.safety_code(),
        members: call.members().map(|(id, _)| id).collect(),
        speaks: call.can_speak(),
        channels,
        removed: call.is_removed(),
        voices: call.voices().map(|v| (v.member, v.stream)).collect(),
    }
}

fn kind(d: &[u8]) -> &'static str {
    match RelayMessage::parse(d) {
        Ok(RelayMessage::Subscribed { .. }) => "subscribed",
        Ok(RelayMessage::Unsubscribed { .. }) => "unsubscribed",
        Ok(RelayMessage::Media { .. }) => "media",
        Ok(RelayMessage::Handshake { .. }) => "handshake",
        Ok(RelayMessage::Welcome { .. }) => "welcome",
        Ok(RelayMessage::Stored { .. }) => "stored",
        Ok(RelayMessage::Error { .. }) => "error",
        Ok(RelayMessage::Ready) => "ready",
        _ => "other",
    }
}

#[test]
fn cut_and_flipped_datagrams_are_refused_and_change_nothing() {
    let mut net = CallNet::new(21, Impairment::default(), Instant::now());
    net.record_delivered = true;
    let config = CallConfig::default();
    let creator = net.create("m0", config.clone());
    let (j, kp) = net.joiner("m1", config.clone());
    assert!(net.run_until(Duration::from_secs(5), |n| n.nodes[creator]
        .call
        .ready_to_commit()));
    net.nodes[creator].call.invite(&[&kp], net.now).unwrap();
    let (k, kp2) = net.joiner("m2", config);
    assert!(net.run_until(Duration::from_secs(10), CallNet::converged));
    net.nodes[creator].call.invite(&[&kp2], net.now).unwrap();
    assert!(net.run_until(Duration::from_secs(10), |n| n.nodes[k].call.is_in_room()));
    assert!(net.run_until(Duration::from_secs(10), CallNet::converged));
    let _ = j;

    // A few datagrams (five) of every kind the members received.
    let mut samples: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();
    for (_, _, d) in &net.delivered {
        let list = samples.entry(kind(d)).or_default();
        if list.len() < 5 {
            list.push(d.clone());
        }
    }
    for needed in [
        "subscribed",
        "media",
        "handshake",
        "welcome",
        "stored",
        "ready",
    ] {
        assert!(
            samples.contains_key(needed),
            "no {needed} datagram recorded"
        );
    }

    let victim = 1;
    let before = shown(&net.nodes[victim].call);
    let (mut fed, mut malformed) = (0u64, 0u64);
    // The connection's own messages last (see the module docs).
    let order = |w: &&str| matches!(*w, "error");
    let mut kinds: Vec<(&&str, &Vec<Vec<u8>>)> = samples.iter().collect();
    kinds.sort_by_key(|(w, _)| order(w));
    for (what, list) in kinds {
        let control = order(what);
        for d in list {
            let mut mutants: Vec<Vec<u8>> = Vec::new();
            // Every cut (every length for short datagrams, 64 lengths for long ones).
            let step = (d.len() / 64).max(1);
            for n in (0..d.len()).step_by(step) {
                mutants.push(d[..n].to_vec());
            }
            // Flips: every byte of the first 32, then a sample, at three bit positions.
            let positions: Vec<usize> = (0..d.len().min(32))
                .chain((32..d.len()).step_by((d.len() / 32).max(1)))
                .collect();
            for at in positions {
                for bit in [0, 3, 7] {
                    let mut m = d.clone();
                    m[at] ^= 1 << bit;
                    mutants.push(m);
                }
            }
            for m in mutants {
                fed += 1;
                let parses = RelayMessage::parse(&m).is_ok();
                let result = net.nodes[victim].call.handle_datagram(&m, net.now);
                if parses {
                    assert!(result.is_ok(), "{what}: {result:?}");
                } else {
                    malformed += 1;
                    assert!(
                        matches!(result, Err(CallError::Transport(TransportError::Malformed))),
                        "{what}: {result:?}"
                    );
                }
                // Drain what it queued (a Hello after a forged NotConnected goes nowhere).
                let mut out = Vec::new();
                while net.nodes[victim].call.poll_transmit(&mut out) {}
                let now_shown = shown(&net.nodes[victim].call);
                if control {
                    assert_eq!(
                        (
                            now_shown.epoch,
                            now_shown.code,
                            &now_shown.members,
                            now_shown.removed
                        ),
                        (before.epoch, before.code, &before.members, before.removed),
                        "{what}: state changed"
                    );
                } else {
                    assert_eq!(now_shown, before, "{what}: state changed");
                }
            }
        }
    }
    // Genuine media frames moved to streams the members do not use (the KID's context bits
    // rewritten, ciphertext kept): they do not open, and no voice is made for them.
    let layout = KidLayout::default();
    let mut moved = 0;
    for d in &samples["media"] {
        let Ok(RelayMessage::Media { handle, frame }) = RelayMessage::parse(d) else {
            continue;
        };
        for stream in 1..4u64 {
            let (header, len) = sotto::frame::Header::parse(frame).unwrap();
            let parts = layout.decompose(header.kid);
            let kid = layout
                .compose(stream, parts.leaf, parts.epoch_bits)
                .unwrap();
            let mut forged = vec![0u8; 32];
            let n = sotto::frame::Header { kid, ..header }
                .encode(&mut forged)
                .unwrap();
            forged.truncate(n);
            forged.extend_from_slice(&frame[len..]);
            let mut datagram = bytes::BytesMut::new();
            RelayMessage::Media {
                handle,
                frame: &forged,
            }
            .encode_into(&mut datagram)
            .unwrap();
            assert!(net.nodes[victim]
                .call
                .handle_datagram(&datagram, net.now)
                .is_ok());
            moved += 1;
        }
    }
    assert!(moved >= 3);
    assert_eq!(shown(&net.nodes[victim].call).voices, before.voices);
    assert!(fed > 4_000, "only {fed} mutants");
    assert!(malformed > 500, "only {malformed} refused as malformed");
    println!(
        "{fed} cut or flipped datagrams fed; {malformed} refused as malformed; none changed \
         the member's epoch, safety code or members"
    );
    // The call goes on: the member hears again.
    let cut_off = !net.nodes[victim].call.can_speak();
    let heard = net.nodes[victim].heard_frames;
    let start = net.now;
    assert!(
        net.run_until(Duration::from_secs(10), |n| n.nodes[victim].heard_frames
            >= heard + 50),
        "the member never heard again"
    );
    println!(
        "after the sweep (member cut off from its channels: {cut_off}) it heard 50 frames \
         again {} ms later",
        (net.now - start).as_millis()
    );
    assert!(net.run_until(Duration::from_secs(10), CallNet::converged));
}
