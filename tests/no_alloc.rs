//! Zero heap allocations per frame on the seal/open path in steady state, measured with a
//! counting global allocator.

use bytes::BytesMut;
use sotto::frame::{CipherSuite, FrameOpener, FrameSealer};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_in;

#[test]
fn seal_and_open_do_not_allocate() {
    let payload = [0x5au8; 60];
    for suite in CipherSuite::ALL {
        for metadata in [&b""[..], &b"room metadata"[..]] {
            let mut sealer = FrameSealer::new(suite, 17, b"base key").unwrap();
            let mut opener = FrameOpener::new();
            opener.insert_key(17, suite, b"base key").unwrap();
            let mut wire = BytesMut::with_capacity(256);
            let mut plain = BytesMut::with_capacity(256);
            let mut buf = [0u8; 256];
            let mut out = [0u8; 256];
            let mut round = |wire: &mut BytesMut, plain: &mut BytesMut| {
                wire.clear();
                plain.clear();
                sealer.seal(metadata, &payload, wire).unwrap();
                opener.open(metadata, wire, plain).unwrap();
                assert_eq!(&plain[..], &payload[..]);
                let n = sealer.seal_into(metadata, &payload, &mut buf).unwrap();
                let o = opener.open_into(metadata, &buf[..n], &mut out).unwrap();
                assert_eq!(o.len, 60);
            };
            // Warm-up: lets the metadata scratch buffers reach their size.
            round(&mut wire, &mut plain);
            let n = allocations_in(|| {
                for _ in 0..10_000 {
                    round(&mut wire, &mut plain);
                }
            });
            assert_eq!(n, 0, "{suite:?} metadata {}", metadata.len());
        }
    }
}

#[test]
fn media_session_seal_and_open_do_not_allocate() {
    use sotto::keys::{KidLayout, MemberId};
    use sotto::media::{ChannelToken, EpochKeys, EpochStatus, MediaConfig, MediaSession};
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    let suite = CipherSuite::AesCtr128HmacSha256_80;
    let keys = |own| {
        EpochKeys::assume_unique_for_key(
            3,
            EpochStatus::Current,
            suite,
            KidLayout::default(),
            0,
            (0..3).map(|leaf| MemberId { leaf, tag: 0 }).collect(),
            own,
            ChannelToken([1; 16]),
            vec![9; suite.key_len()],
        )
    };
    let mut alice = MediaSession::new(MediaConfig::default());
    let mut bob = MediaSession::new(MediaConfig::default());
    alice.apply(keys(0), t0).unwrap();
    bob.apply(keys(1), t0).unwrap();
    let payload = [0x33u8; 60];
    let mut wire = BytesMut::with_capacity(256);
    let mut plain = BytesMut::with_capacity(256);
    let mut step = |k: u64, wire: &mut BytesMut, plain: &mut BytesMut| {
        let now = t0 + Duration::from_millis(20 * k);
        wire.clear();
        plain.clear();
        alice
            .seal(sotto::keys::StreamId::MICROPHONE, &payload, wire, now)
            .unwrap();
        bob.open(wire, plain, now).unwrap();
    };
    // Sealing starts after the switch delay (1 s = 50 frames); the first frame derives
    // bob's opening key.
    step(50, &mut wire, &mut plain);
    let n = allocations_in(|| {
        for k in 51..=10_050 {
            step(k, &mut wire, &mut plain);
        }
    });
    assert_eq!(n, 0);
}
