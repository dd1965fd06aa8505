//! Issue 10, finding 8: a staged key overwrote the current key of the same epoch.
//!
//! Two members commit at once; the relay orders one. The loser's control plane processes
//! the winner's commit and hands its data plane the winner's `Current` keys; the data
//! plane runs on another thread and applies the losing commit's `Staged` keys (same epoch,
//! another key) only after them. The adversary is the scheduling (or a relay that orders
//! commits to make this likely): if the staged key replaced the winner's, every frame of
//! the new epoch would fail to open at the loser.

mod common;

use std::time::{Duration, Instant};

use common::{ms, room_of, Member};
use sotto::keys::{KeyError, Received};
use sotto::media::{EpochStatus, MediaConfig};
use sotto::room::{RoomConfig, RoomEvent};

/// Two seconds and more of a call after the commit: b and c seal every 20 ms, a opens.
/// Returns (frames a opened by epoch (old, new), frames a could not open).
fn call(m: &mut [Member], from: Instant, frames: u64, new: u64) -> ((u64, u64), Vec<KeyError>) {
    let mut opened = (0, 0);
    let mut lost = Vec::new();
    for step in 0..frames {
        let now = from + ms(20 * step);
        for sender in [1, 2] {
            let frame = m[sender].seal(b"twenty ms of audio", now);
            match m[0].open(&frame, now) {
                Ok((Received { epoch, .. }, _)) if epoch == new => opened.1 += 1,
                Ok(_) => opened.0 += 1,
                Err(e) => lost.push(e),
            }
        }
        // a keeps talking too; b and c open it.
        let frame = m[0].seal(b"a's twenty ms", now);
        for receiver in [1, 2] {
            if let Err(e) = m[receiver].open(&frame, now) {
                lost.push(e);
            }
        }
    }
    (opened, lost)
}

/// Finding 8 (issue 10): a's commit C1 loses to b's C2; a processes C2 (`Current` keys of
/// e+1) and only then applies C1's `Staged` keys of e+1: `MediaSession::apply` refuses them
/// with `KeyError::StaleEpoch`, and over 3 s of 20 ms frames (2 s of them in e+1) a loses
/// none of b's and c's frames.
#[test]
fn losing_commits_staged_keys_applied_late_are_refused() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["a", "b", "c"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let e = m[0].room.epoch();
    let t1 = t0 + Duration::from_secs(1);
    let c1 = m[0].room.self_update().unwrap();
    let c2 = m[1].room.self_update().unwrap();
    assert_eq!((c1.keys.epoch(), c2.keys.epoch()), (e + 1, e + 1));
    assert_eq!(c1.keys.status(), EpochStatus::Staged);
    assert_ne!(c1.keys.expose_base_key(), c2.keys.expose_base_key());

    // The relay orders C2. b applies its staged keys and gets C2 back; c processes C2.
    m[1].apply_staged(c2.keys, t1);
    m[1].process(&c2.message, t1);
    m[2].process(&c2.message, t1);
    // a's control plane processes C2 and hands over e+1's Current keys...
    let events = m[0].process(&c2.message, t1);
    assert!(events
        .iter()
        .any(|e| matches!(e, RoomEvent::PendingCommitDropped)));
    assert_eq!(m[0].room.epoch(), e + 1);
    // ...and a's data plane applies C1's staged keys only now.
    let stale = m[0].media.apply(c1.keys, t1);

    let ((old, new), lost) = call(&mut m, t1, 150, e + 1);
    println!(
        "late staged keys: apply gave {stale:?}; a opened {old} frames of epoch {e} and {new} \
         of epoch {}, lost {}",
        e + 1,
        lost.len()
    );
    assert_eq!(
        lost.len(),
        0,
        "frames lost after the stale staged keys: first {:?}",
        &lost[..lost.len().min(3)]
    );
    // b and c switch after the 1 s switch delay: 50 frames each in e, 100 each in e+1.
    assert_eq!((old, new), (2 * 50, 2 * 100));
    assert_eq!(stale, Err(KeyError::StaleEpoch));
}

/// Finding 8 (issue 10), the other order: C1's staged keys applied first (before a knew
/// it lost), then C2 processed: the winner's `Current` keys replace the loser's staged
/// ones, and nothing is lost either.
#[test]
fn losing_commits_staged_keys_applied_first_are_replaced() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["a", "b", "c"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let e = m[0].room.epoch();
    let t1 = t0 + Duration::from_secs(1);
    let c1 = m[0].room.self_update().unwrap();
    let c2 = m[1].room.self_update().unwrap();
    m[0].apply_staged(c1.keys, t1);
    m[1].apply_staged(c2.keys, t1);
    m[1].process(&c2.message, t1);
    m[2].process(&c2.message, t1);
    m[0].process(&c2.message, t1);
    let ((old, new), lost) = call(&mut m, t1, 150, e + 1);
    assert_eq!(
        lost.len(),
        0,
        "first lost: {:?}",
        &lost[..lost.len().min(3)]
    );
    assert_eq!((old, new), (2 * 50, 2 * 100));
}
