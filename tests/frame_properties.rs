//! Property tests of the frame layer (proptest).

use bytes::BytesMut;
use proptest::prelude::*;
use sotto::frame::{CipherSuite, FrameError, FrameOpener, FrameSealer, Header};

fn suite() -> impl Strategy<Value = CipherSuite> {
    prop::sample::select(CipherSuite::ALL.to_vec())
}

/// u64 values spread over every encoded length: tiny, around byte boundaries, and uniform.
fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..16,
        (0u32..64, any::<u64>()).prop_map(|(bits, r)| (1u64 << bits) | (r & ((1u64 << bits) - 1))),
        (0u32..64).prop_map(|bits| (1u64 << bits) - 1),
        any::<u64>(),
    ]
}

fn pair(suite: CipherSuite, kid: u64, key: &[u8]) -> (FrameSealer, FrameOpener) {
    let sealer = FrameSealer::new(suite, kid, key).unwrap();
    let mut opener = FrameOpener::new();
    opener.insert_key(kid, suite, key).unwrap();
    (sealer, opener)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn header_round_trip(kid in value(), ctr in value(), trailing in prop::collection::vec(any::<u8>(), 0..8)) {
        let h = Header::new(kid, ctr);
        let mut buf = [0u8; Header::MAX_LEN];
        let n = h.encode(&mut buf).unwrap();
        prop_assert_eq!(n, h.encoded_len());
        // Minimal: a KID or CTR below 8 costs no byte; otherwise exactly its significant bytes.
        let field = |v: u64| if v < 8 { 0 } else { (64 - v.leading_zeros() as usize).div_ceil(8) };
        prop_assert_eq!(n, 1 + field(kid) + field(ctr));
        let mut input = buf[..n].to_vec();
        input.extend_from_slice(&trailing);
        prop_assert_eq!(Header::parse(&input).unwrap(), (h, n));
        for cut in 0..n {
            prop_assert_eq!(Header::parse(&buf[..cut]), Err(FrameError::MalformedHeader));
        }
    }

    #[test]
    fn header_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..20)) {
        if let Ok((h, n)) = Header::parse(&bytes) {
            let mut buf = [0u8; Header::MAX_LEN];
            let m = h.encode(&mut buf).unwrap();
            prop_assert_eq!(&buf[..m], &bytes[..n]);
        }
    }

    #[test]
    fn seal_open_round_trip(
        suite in suite(),
        kid in value(),
        key in prop::collection::vec(any::<u8>(), 1..64),
        payload in prop::collection::vec(any::<u8>(), 0..2000),
        metadata in prop::collection::vec(any::<u8>(), 0..64),
        first in value(),
    ) {
        let mut sealer = FrameSealer::starting_at(suite, kid, &key, first).unwrap();
        let mut opener = FrameOpener::new();
        opener.insert_key(kid, suite, &key).unwrap();
        let mut frame = BytesMut::new();
        let n = sealer.seal(&metadata, &payload, &mut frame).unwrap();
        prop_assert_eq!(n, frame.len());
        prop_assert_eq!(n, Header::new(kid, first).encoded_len() + payload.len() + suite.tag_len());
        let mut plain = BytesMut::new();
        let opened = opener.open(&metadata, &frame, &mut plain).unwrap();
        prop_assert_eq!((opened.kid, opened.ctr, opened.len), (kid, first, payload.len()));
        prop_assert_eq!(&plain[..], &payload[..]);
    }

    #[test]
    fn every_bit_flip_is_rejected(
        suite in suite(),
        kid in value(),
        ctr in value(),
        payload in prop::collection::vec(any::<u8>(), 0..48),
        metadata in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let key = b"bit flip key";
        let mut sealer = FrameSealer::starting_at(suite, kid, key, ctr).unwrap();
        let mut frame = BytesMut::new();
        sealer.seal(&metadata, &payload, &mut frame).unwrap();
        let mut opener = FrameOpener::new();
        opener.insert_key(kid, suite, key).unwrap();
        let mut plain = BytesMut::new();
        for bit in 0..frame.len() * 8 {
            let mut bad = frame.to_vec();
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(opener.open(&metadata, &bad, &mut plain).is_err(), "bit {} accepted", bit);
            prop_assert!(plain.is_empty());
        }
        // No forged frame moved the replay window: the genuine one still opens.
        prop_assert_eq!(opener.highest_counter(kid), None);
        prop_assert!(opener.open(&metadata, &frame, &mut plain).is_ok());
    }

    #[test]
    fn wrong_metadata_rejected(
        suite in suite(),
        metadata in prop::collection::vec(any::<u8>(), 0..32),
        other in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        prop_assume!(metadata != other);
        let (mut sealer, mut opener) = pair(suite, 9, b"k");
        let mut frame = BytesMut::new();
        sealer.seal(&metadata, b"payload", &mut frame).unwrap();
        let mut plain = BytesMut::new();
        prop_assert_eq!(opener.open(&other, &frame, &mut plain), Err(FrameError::AuthenticationFailed));
        prop_assert!(opener.open(&metadata, &frame, &mut plain).is_ok());
    }

    #[test]
    fn replay_and_reorder_within_window(
        suite in suite(),
        order in Just((0u64..100).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let (mut sealer, mut opener) = pair(suite, 1, b"reorder");
        let frames: Vec<BytesMut> = (0..100).map(|_| {
            let mut f = BytesMut::new();
            sealer.seal(b"", b"x", &mut f).unwrap();
            f
        }).collect();
        let mut plain = BytesMut::new();
        // Any order within the 128-counter window is accepted, once.
        for &i in &order {
            let opened = opener.open(b"", &frames[i as usize], &mut plain).unwrap();
            prop_assert_eq!(opened.ctr, i);
        }
        for &i in &order {
            prop_assert_eq!(opener.open(b"", &frames[i as usize], &mut plain), Err(FrameError::Replayed));
        }
    }

    #[test]
    fn older_than_window_rejected(suite in suite(), window in 128usize..600, lag in 0u64..700) {
        let (mut sealer, _) = pair(suite, 2, b"old");
        let mut opener = FrameOpener::with_replay_window(window);
        opener.insert_key(2, suite, b"old").unwrap();
        let effective = opener.replay_window() as u64;
        prop_assert!(effective >= window as u64 && effective.is_power_of_two());
        let mut frames = Vec::new();
        for _ in 0..=lag {
            let mut f = BytesMut::new();
            sealer.seal(b"", b"y", &mut f).unwrap();
            frames.push(f);
        }
        let mut plain = BytesMut::new();
        opener.open(b"", &frames[lag as usize], &mut plain).unwrap();
        let result = opener.open(b"", &frames[0], &mut plain);
        if lag == 0 {
            prop_assert_eq!(result, Err(FrameError::Replayed));
        } else if lag >= effective {
            prop_assert_eq!(result, Err(FrameError::TooOld));
        } else {
            prop_assert!(result.is_ok());
        }
    }
}

#[test]
fn unknown_kid_and_truncation_are_typed() {
    let (mut sealer, mut opener) = pair(CipherSuite::AesGcm128Sha256, 5, b"k");
    let mut frame = BytesMut::new();
    sealer.seal(b"", b"abc", &mut frame).unwrap();
    let mut plain = BytesMut::new();
    opener.remove_key(5);
    assert_eq!(
        opener.open(b"", &frame, &mut plain),
        Err(FrameError::UnknownKid { kid: 5 })
    );
    opener
        .insert_key(5, CipherSuite::AesGcm128Sha256, b"k")
        .unwrap();
    for cut in 1..1 + 16 {
        assert_eq!(
            opener.open(b"", &frame[..cut], &mut plain),
            Err(FrameError::Truncated)
        );
    }
    assert_eq!(
        opener.open(b"", &[], &mut plain),
        Err(FrameError::MalformedHeader)
    );
    let mut small = [0u8; 2];
    assert_eq!(
        opener.open_into(b"", &frame, &mut small),
        Err(FrameError::BufferTooSmall { needed: 3 })
    );
    assert!(opener.open_into(b"", &frame, &mut [0u8; 3]).is_ok());
}

#[test]
fn reinserting_the_same_key_keeps_replay_state() {
    let suite = CipherSuite::AesCtr128HmacSha256_80;
    let (mut sealer, mut opener) = pair(suite, 4, b"same");
    let mut frame = BytesMut::new();
    sealer.seal(b"", b"abc", &mut frame).unwrap();
    let mut plain = BytesMut::new();
    opener.open(b"", &frame, &mut plain).unwrap();
    opener.insert_key(4, suite, b"same").unwrap();
    assert_eq!(
        opener.open(b"", &frame, &mut plain),
        Err(FrameError::Replayed)
    );
    // A different key for the KID starts fresh (and does not open the old frame).
    opener.insert_key(4, suite, b"other").unwrap();
    assert_eq!(
        opener.open(b"", &frame, &mut plain),
        Err(FrameError::AuthenticationFailed)
    );
}
