//! No public API path seals two frames with the same key and counter: sealers cannot be
//! cloned, a session never makes a second sealer for an epoch (re-applied keys, keys of an
//! evicted epoch applied again, restored keys), and counters run on across epochs.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sotto::frame::{CipherSuite, FrameError, FrameSealer, Header};
use sotto::keys::{KeyError, KidLayout, MemberId};
use sotto::media::{ChannelToken, EpochKeys, EpochStatus, MediaConfig, MediaSession};

/// `Probe::<T>::IS_CLONE` is true exactly when `T: Clone` (inherent items win over trait
/// items when their bounds hold).
struct Probe<T>(PhantomData<T>);
trait NotClone {
    const IS_CLONE: bool = false;
}
impl<T> NotClone for Probe<T> {}
impl<T: Clone> Probe<T> {
    #[allow(dead_code)]
    const IS_CLONE: bool = true;
}

#[test]
fn sealers_and_sessions_cannot_be_cloned() {
    // Checked at compile time: the test does not build if any of these changes.
    const { assert!(Probe::<String>::IS_CLONE, "the probe detects Clone") };
    const { assert!(!Probe::<FrameSealer>::IS_CLONE) };
    const { assert!(!Probe::<MediaSession>::IS_CLONE) };
    const { assert!(!Probe::<EpochKeys>::IS_CLONE) };
}

const SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;

fn keys(epoch: u64, status: EpochStatus, base: u8) -> EpochKeys {
    EpochKeys::assume_unique_for_key(
        epoch,
        status,
        SUITE,
        KidLayout::new(8, 2).unwrap(), // 4 slots: eviction comes quickly
        0,
        vec![MemberId { leaf: 0, tag: 0 }, MemberId { leaf: 1, tag: 1 }],
        0,
        ChannelToken([epoch as u8; 16]),
        vec![base; SUITE.key_len()],
    )
}

/// Seals `n` frames and records (base key of the epoch, KID, CTR) of each.
fn seal_n(
    media: &mut MediaSession,
    n: usize,
    now: Instant,
    base_of: &dyn Fn(u64) -> u8,
    seen: &mut HashSet<(u8, u64, u64)>,
) -> Result<(), KeyError> {
    for _ in 0..n {
        let mut out = BytesMut::new();
        media.seal(sotto::keys::StreamId::MICROPHONE, b"x", &mut out, now)?;
        let (h, _) = Header::parse(&out).unwrap();
        let epoch = media.sending_epoch().unwrap();
        assert!(
            seen.insert((base_of(epoch), h.kid, h.ctr)),
            "nonce reuse: epoch {epoch} kid {} ctr {}",
            h.kid,
            h.ctr
        );
    }
    Ok(())
}

#[test]
fn no_path_reuses_a_key_and_counter() {
    let t0 = Instant::now();
    let config = MediaConfig {
        switch_delay: Duration::ZERO,
        ..MediaConfig::default()
    };
    let base_of = |epoch: u64| epoch as u8;
    let mut seen = HashSet::new();
    let mut media = MediaSession::new(config);

    media.apply(keys(1, EpochStatus::Current, 1), t0).unwrap();
    seal_n(&mut media, 5, t0, &base_of, &mut seen).unwrap();
    // The same keys again: no new sealer, the counter goes on.
    media.apply(keys(1, EpochStatus::Current, 1), t0).unwrap();
    seal_n(&mut media, 5, t0, &base_of, &mut seen).unwrap();
    // Forward through more epochs than there are slots (epoch 1 is evicted).
    for e in 2..=6 {
        media
            .apply(keys(e, EpochStatus::Current, e as u8), t0)
            .unwrap();
        seal_n(&mut media, 3, t0, &base_of, &mut seen).unwrap();
    }
    assert!(!media.ring().unwrap().holds(1));
    // Epoch 1 re-entered after its eviction (a confused control plane): refused, since a
    // newer epoch holds its slot; sealing goes on in epoch 6.
    assert_eq!(
        media.apply(keys(1, EpochStatus::Current, 1), t0),
        Err(KeyError::StaleEpoch)
    );
    assert!(media.ring().unwrap().holds(5));
    seal_n(&mut media, 3, t0, &base_of, &mut seen).unwrap();
    assert_eq!(media.sending_epoch(), Some(6));
    // Restored keys give no sending key at all.
    let mut restored = MediaSession::new(config);
    restored
        .apply(keys(6, EpochStatus::Restored, 6), t0)
        .unwrap();
    assert_eq!(
        restored.seal(
            sotto::keys::StreamId::MICROPHONE,
            b"x",
            &mut BytesMut::new(),
            t0
        ),
        Err(KeyError::NoSendingKey)
    );
    // Staged keys never seal either.
    let mut staged = MediaSession::new(config);
    staged.apply(keys(7, EpochStatus::Staged, 7), t0).unwrap();
    assert_eq!(
        staged.seal(
            sotto::keys::StreamId::MICROPHONE,
            b"x",
            &mut BytesMut::new(),
            t0
        ),
        Err(KeyError::NoSendingKey)
    );
    assert_eq!(seen.len(), 5 + 5 + 5 * 3 + 3);
}

#[test]
fn sealer_counter_never_wraps() {
    let mut s = FrameSealer::starting_at(SUITE, 1, b"k", u64::MAX - 1).unwrap();
    let mut out = BytesMut::new();
    s.seal(b"", b"a", &mut out).unwrap();
    s.seal(b"", b"b", &mut out).unwrap();
    assert_eq!(
        s.seal(b"", b"c", &mut out),
        Err(FrameError::CounterExhausted)
    );
    assert_eq!(
        s.seal_into(b"", b"c", &mut [0u8; 64]),
        Err(FrameError::CounterExhausted)
    );
    assert_eq!(s.next_counter(), None);
}
