//! Issue 10, finding 13: no bound on authentication failures per key.
//!
//! With `AES_128_CTR_HMAC_SHA256_32` a tag is 4 bytes: an injector (the relay, or anyone on
//! the path) that may send unlimited guesses under a member's KID forges a frame after
//! about 2^32 of them, ~2^31 on average. The fix bounds the guesses per key: after
//! `MediaConfig::failure_budget` failures the key opens nothing more, until the next epoch
//! brings a new key. The injector here sends fresh-counter forgeries under bob's KID with
//! random bodies and tags, interleaved with bob's genuine packets.

#![cfg(feature = "opus")]

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{deliver_commit, ms, room_of, Rng};
use sotto::audio::{AudioConfig, AudioReceiver, AudioSender, Pulled};
use sotto::frame::{CipherSuite, FrameError, Header, DEFAULT_FAILURE_BUDGET};
use sotto::keys::{KeyError, KidLayout};
use sotto::media::MediaConfig;
use sotto::room::RoomConfig;

/// A forged frame under `kid` with counter `ctr`: a 60-byte body and a 4-byte tag, random.
fn forge(rng: &mut Rng, kid: u64, ctr: u64) -> Vec<u8> {
    let mut frame = vec![0u8; Header::MAX_LEN];
    let hlen = Header::new(kid, ctr).encode(&mut frame).unwrap();
    frame.truncate(hlen);
    frame.extend((0..60 + 4).map(|_| rng.next() as u8));
    frame
}

/// Finding 13 (issue 10): 1,500 forgeries under bob's KID (4-byte tags): the first
/// `DEFAULT_FAILURE_BUDGET` (1,024) fail authentication, then bob's key is retired — the
/// remaining forgeries *and bob's genuine packets* are refused with `KeyRetired`
/// (`stats().key_retired`) — while carol's key is untouched; bob's next-epoch key opens
/// again. `KidLayout::new(16, 1)` is refused.
#[test]
fn forgeries_retire_the_key_after_the_failure_budget() {
    assert_eq!(KidLayout::new(16, 1), Err(KeyError::InvalidLayout));
    assert!(KidLayout::new(16, 2).is_ok());
    assert_eq!(
        MediaConfig::default().failure_budget,
        DEFAULT_FAILURE_BUDGET
    );
    assert_eq!(DEFAULT_FAILURE_BUDGET, 1024);

    let t0 = Instant::now();
    let suite = CipherSuite::AesCtr128HmacSha256_32;
    assert_eq!(suite.tag_len(), 4);
    let room = RoomConfig {
        params: sotto::room::RoomParams {
            suite,
            ..Default::default()
        },
        ..RoomConfig::default()
    };
    let mut m = room_of(&["alice", "bob", "carol"], room, MediaConfig::default(), t0);
    let e = m[0].room.epoch();
    let t1 = t0 + Duration::from_secs(1);
    let config = AudioConfig::default();
    let mut bob_tx = AudioSender::new(&config).unwrap();
    let mut carol_tx = AudioSender::new(&config).unwrap();
    let mut bob_rx = AudioReceiver::new(&config).unwrap();
    let mut rng = Rng(0x0bad_f00d);
    let pcm = vec![0i16; config.frame_samples()];
    let mut out = vec![0i16; config.frame_samples()];

    let mut forged = 0u64;
    let mut genuine_refused = Vec::new();
    let mut carol_opened = 0;
    let mut pulled = Vec::new();
    let mut rekeyed_at = None;
    for step in 0..140u64 {
        let now = t1 + ms(20 * step);
        if step == 40 {
            // Carol's self-update: a new epoch, new keys for everyone.
            let commit = m[2].room.self_update().unwrap();
            deliver_commit(&mut m, 2, commit, now);
            rekeyed_at = Some(now);
        }
        m[1].media.expire(now);
        let kid = m[1].media.sending_kid().unwrap();
        if (10..40).contains(&step) {
            // 50 forgeries per 20 ms, with counters bob has not reached.
            for _ in 0..50 {
                let frame = forge(&mut rng, kid, 1_000_000 + forged);
                forged += 1;
                bob_rx.push(&frame, &mut m[0].media, now);
            }
        }
        let before = bob_rx.stats();
        let packet = bob_tx.send_i16(&pcm, &mut m[1].media, now).unwrap();
        bob_rx.push(&packet, &mut m[0].media, now);
        if bob_rx.stats().key_retired > before.key_retired {
            genuine_refused.push((step, m[1].media.sending_epoch().unwrap()));
        }
        pulled.push(bob_rx.pull_i16(&mut m[0].media, &mut out, now).unwrap());
        // Carol's key is another key: her frames open throughout.
        let c = carol_tx.send_i16(&pcm, &mut m[2].media, now).unwrap();
        if m[0].media.open(&c, &mut BytesMut::new(), now).is_ok() {
            carol_opened += 1;
        }
    }
    let s = bob_rx.stats();
    println!(
        "{forged} forgeries: {} authentication failures, then key retired ({} refusals, {} of \
         them bob's genuine packets, steps {:?}..={:?}); carol opened {carol_opened}/140; {s:?}",
        s.auth_failures,
        s.key_retired,
        genuine_refused.len(),
        genuine_refused.first(),
        genuine_refused.last(),
    );
    assert_eq!(forged, 1500);
    assert_eq!(s.auth_failures, 1024, "failures before the key is retired");
    // Forgery 1,025 onwards is refused unopened, and so is every genuine packet of bob's
    // from step 30 (when the 1,025th forgery came) until he seals in the next epoch
    // (one switch delay after the commit at step 40, i.e. step 90).
    assert_eq!(genuine_refused.len(), 60);
    assert_eq!(genuine_refused.first(), Some(&(30, e)));
    assert_eq!(genuine_refused.last(), Some(&(89, e)));
    assert_eq!(s.key_retired, (1500 - 1024) + 60);
    assert_eq!(
        s.decoded + s.fec_recovered,
        140 - 60 - 2,
        "playout delay: 2"
    );
    assert_eq!(carol_opened, 140);
    // Bob's next-epoch key opens: his last 50 packets (epoch e+1) played.
    assert!(rekeyed_at.is_some());
    assert_eq!(m[1].media.sending_epoch(), Some(e + 1));
    assert!(pulled[92..].iter().all(|p| *p == Pulled::Decoded));

    // A correctly sealed frame under the retired key, opened directly: still refused.
    let mut fresh = room_of(
        &["x", "y"],
        RoomConfig {
            params: sotto::room::RoomParams {
                suite,
                ..Default::default()
            },
            ..RoomConfig::default()
        },
        MediaConfig {
            failure_budget: 3,
            ..MediaConfig::default()
        },
        t0,
    );
    let first = fresh[1].seal(b"y", t1);
    let y_kid = Header::parse(&first).unwrap().0.kid;
    assert_eq!(fresh[0].open(&first, t1).unwrap().1, b"y");
    for i in 0..3 {
        let f = forge(&mut rng, y_kid, 500 + i);
        assert_eq!(
            fresh[0].open(&f, t1).unwrap_err(),
            KeyError::Frame(FrameError::AuthenticationFailed)
        );
    }
    let good = fresh[1].seal(b"y again", t1);
    assert_eq!(
        fresh[0].open(&good, t1).unwrap_err(),
        KeyError::Frame(FrameError::KeyRetired)
    );
}
