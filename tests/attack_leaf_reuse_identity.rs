//! Issue 10, finding 9: a departed member's frames opened as the newcomer at its leaf.
//!
//! MLS gives a removed member's leaf to the next newcomer. Carol is removed and dave joins
//! at her leaf; during the switch delay after her removal carol's frames of the old epoch
//! still open (by design), while dave already speaks in the new one. If the data plane
//! named senders by leaf, an app would route both streams to one receiver and play carol's
//! audio as dave's. Carol keeps talking (she may be hostile, or just not know yet).

#![cfg(feature = "opus")]

mod common;

use sotto::room::MlsSuite;
use std::collections::{HashMap, HashSet};
use std::f32::consts::TAU;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{deliver_commit, identity, ms, room_of, Member};
use sotto::audio::{AudioConfig, AudioReceiver, AudioSender, Pulled, SAMPLE_RATE};
use sotto::keys::{KeyError, MemberId};
use sotto::media::MediaConfig;
use sotto::room::{RoomConfig, RoomEvent};

const FRAME: usize = (SAMPLE_RATE / 50) as usize; // 20 ms mono

/// Frame `i` of a sine tone at `hz`.
fn tone(hz: f32, i: u64) -> Vec<i16> {
    (0..FRAME)
        .map(|k| {
            let t = (i as f32 * FRAME as f32 + k as f32) / SAMPLE_RATE as f32;
            (8000.0 * (TAU * hz * t).sin()) as i16
        })
        .collect()
}

/// Finding 9 (issue 10): carol removed, dave joined at her leaf. During the switch delay
/// carol's old-epoch frames and dave's frames both open, as different members
/// (`Received::member`); `MediaSession::sender_of` routes them to different receivers; and
/// a receiver that played dave — even one an app keyed by leaf, fed both streams with
/// dave's packets first — never plays a packet of carol's: it counts them in
/// `stats().rejected` and plays exactly what a receiver fed dave's packets alone plays.
#[test]
fn departed_members_frames_never_play_as_the_newcomer_at_its_leaf() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob", "carol", "erin"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let e0 = m[0].room.epoch();
    let leaf = m[2].room.own_leaf();
    let id_at = |m: &Member| {
        m.room
            .members()
            .into_iter()
            .find(|x| x.leaf == leaf)
            .unwrap()
            .id
    };
    let carol_id = id_at(&m[0]);

    // At t1 alice removes carol, invites dave (who gets carol's leaf), and dave speaks.
    let t1 = t0 + Duration::from_secs(2);
    let removal = m[0].room.remove(&[leaf]).unwrap();
    deliver_commit(&mut m, 0, removal, t1);
    assert!(m[2].removed);
    let dave = identity("dave");
    let kp = dave.key_package(MlsSuite::Classic).unwrap();
    let invite = m[0].room.invite(&[&kp.bytes]).unwrap();
    let welcome = invite.welcome.clone().unwrap();
    m[0].apply_staged(invite.keys, t1);
    let mut added = Vec::new();
    for i in [1, 3] {
        added.extend(m[i].process(&invite.message, t1));
    }
    m[0].confirm(t1);
    assert!(added
        .iter()
        .any(|e| matches!(e, RoomEvent::MemberAdded { leaf: l, .. } if *l == leaf)));
    let fast = MediaConfig {
        switch_delay: Duration::ZERO,
        ..MediaConfig::default()
    };
    m.push(Member::join(
        dave,
        RoomConfig::default(),
        fast,
        &welcome,
        t1,
    ));
    assert_eq!(m[4].room.own_leaf(), leaf, "MLS reuses the blank leaf");
    let update = m[4].room.self_update().unwrap();
    deliver_commit(&mut m, 4, update, t1);
    let dave_id = id_at(&m[0]);
    assert_eq!(dave_id.leaf, carol_id.leaf);

    let config = AudioConfig::default();
    let mut carol_tx = AudioSender::new(&config).unwrap();
    let mut dave_tx = AudioSender::new(&config).unwrap();
    // bob routes by `sender_of`; erin keys receivers by leaf (a new one for the leaf when
    // dave was added), the naive app.
    let mut bob_rx: HashMap<MemberId, AudioReceiver> = HashMap::new();
    let mut erin_rx = AudioReceiver::new(&config).unwrap();
    let mut bob_pcm: Vec<Vec<i16>> = Vec::new();
    let mut erin_pcm: Vec<Vec<i16>> = Vec::new();
    let mut carol_opened = 0;
    let mut carol_refused = Vec::new();
    let mut dave_opened = 0;
    let mut said_carol = HashSet::new();
    let mut said_dave = HashSet::new();
    let mut routed = (0, 0);
    let mut unroutable = 0;
    let steps = 100u64; // 2 s: the switch delay, and as long again
    for step in 0..steps {
        let now = t1 + ms(20 * step);
        let d = dave_tx
            .send_i16(&tone(660.0, step), &mut m[4].media, now)
            .unwrap();
        let c: Bytes = carol_tx
            .send_i16(&tone(440.0, step), &mut m[2].media, now)
            .unwrap();
        assert_eq!(m[4].media.sending_epoch(), Some(e0 + 3));
        assert_eq!(m[2].media.sending_epoch(), Some(e0));
        // alice opens both directly (carol's first) and notes who each is from.
        let mut out = BytesMut::new();
        match m[0].media.open(&c, &mut out, now) {
            Ok(got) => {
                assert_eq!((got.leaf, got.epoch), (leaf, e0));
                said_carol.insert(got.member);
                carol_opened += 1;
            }
            Err(e) => carol_refused.push(e),
        }
        let got = m[0].media.open(&d, &mut out, now).unwrap();
        assert_eq!((got.leaf, got.epoch), (leaf, e0 + 3));
        said_dave.insert(got.member);
        dave_opened += 1;
        // bob routes by the member each frame claims (an expired epoch names no one).
        for packet in [&d, &c] {
            let Ok(who) = m[1].media.sender_of(packet).map(|(member, _)| member) else {
                unroutable += 1;
                continue;
            };
            if who == dave_id {
                routed.0 += 1;
            } else {
                assert_eq!(who, carol_id);
                routed.1 += 1;
            }
            bob_rx
                .entry(who)
                .or_insert_with(|| AudioReceiver::new(&config).unwrap())
                .push(packet, &mut m[1].media, now);
        }
        // erin's one receiver for the leaf gets both, dave's first.
        erin_rx.push(&d, &mut m[3].media, now);
        erin_rx.push(&c, &mut m[3].media, now);
        let mut pcm = vec![0i16; FRAME];
        for (who, rx) in bob_rx.iter_mut() {
            let pulled = rx.pull_i16(&mut m[1].media, &mut pcm, now).unwrap();
            if *who == dave_id && pulled != Pulled::Idle {
                bob_pcm.push(pcm.clone());
            }
        }
        if erin_rx.pull_i16(&mut m[3].media, &mut pcm, now).unwrap() != Pulled::Idle {
            erin_pcm.push(pcm.clone());
        }
    }

    let bob_dave = bob_rx[&dave_id].stats();
    let bob_carol = bob_rx[&carol_id].stats();
    let erin = erin_rx.stats();
    println!(
        "alice: dave {dave_opened} opened as dave, carol {carol_opened} opened as carol then \
         {} refused ({:?}); bob routed {} to dave, {} to carol ({unroutable} unroutable); \
         bob's dave receiver {:?}; erin's leaf receiver {:?}",
        carol_refused.len(),
        carol_refused.first(),
        routed.0,
        routed.1,
        bob_dave,
        erin
    );
    // Each packet opened as the member who sealed it.
    assert!(
        said_carol.is_disjoint(&said_dave),
        "carol's frames opened as the newcomer: {said_carol:?} / {said_dave:?}"
    );
    assert_eq!(said_carol, HashSet::from([carol_id]));
    assert_eq!(said_dave, HashSet::from([dave_id]));
    // The leaf-keyed receiver played dave and refused every one of carol's packets: the
    // 50 that authenticated (as carol) and the 50 refused after the switch delay.
    assert_eq!(erin_rx.member(), Some(dave_id));
    assert_eq!(
        erin.rejected, 100,
        "carol's packets went into the receiver that plays dave"
    );
    assert_eq!(erin.decoded, bob_dave.decoded);
    assert_eq!(erin.decoded, 100 - 2, "all of dave's but the playout delay");
    assert!(
        erin_pcm == bob_pcm,
        "the leaf-keyed receiver played something other than dave's stream"
    );
    // Carol's frames opened for one switch delay, as carol, then stopped.
    assert_eq!((dave_opened, carol_opened), (100, 50));
    assert_eq!(carol_refused.len(), 50);
    assert!(carol_refused
        .iter()
        .all(|e| matches!(e, KeyError::UnknownSender { .. } | KeyError::EpochExpired)));
    // Routing by member sends each stream to its own receiver.
    assert_eq!(routed.0, 100);
    assert!(routed.1 >= 50);
    assert_eq!(routed.1 + unroutable, 100);
    assert_eq!(bob_rx.len(), 2);
    assert_eq!(bob_rx[&dave_id].member(), Some(dave_id));
    assert_eq!(bob_rx[&carol_id].member(), Some(carol_id));
    assert_eq!(bob_dave.rejected, 0);
    assert_eq!(bob_carol.rejected, routed.1 - 50);
    // Checked last, so that a regression shows as the attack working: a newcomer at a
    // reused leaf is another member.
    assert_ne!(dave_id, carol_id);
}
