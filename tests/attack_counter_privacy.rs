//! Issue 10, finding 14 (privacy): frame counters ran on across epochs.
//!
//! SFrame counters travel in the clear. When a member's counter continued across epochs,
//! anyone on the path (the relay first) read from it how long that member had been in the
//! call, and could link its streams across key changes; the header also grew with the
//! call's length. Now every epoch's sealer starts at counter 0. The observer here is the
//! relay, which sees every frame's header and length.

mod common;

use std::time::{Duration, Instant};

use common::{deliver_commit, ms, room_of};
use sotto::frame::{CipherSuite, Header};
use sotto::media::MediaConfig;
use sotto::room::RoomConfig;

/// 20 ms frames in ten minutes.
const TEN_MINUTES: u64 = 30_000;
/// The call: 22 minutes, a self-update every 10 (at 10:00 and 20:00). The two minutes
/// after the brief's 20 make the header bound below bite: a counter run on since the start
/// would pass 65,535 at 21:51 and take a third byte.
const TICKS: u64 = 66_000;
const PAYLOAD: usize = 60;

/// Per-member counter tracking, as the relay sees it.
#[derive(Default, Clone)]
struct Seen {
    epoch: Option<u64>,
    next_ctr: u64,
    /// CTR of the first frame in each epoch after the first.
    first_ctrs: Vec<(u64, u64)>,
    max_ctr: u64,
}

/// Finding 14 (issue 10): in a 4-member room (`AES_128_CTR_HMAC_SHA256_80`) over a
/// 22-minute call with a self-update every 10 minutes, each epoch's first frame has CTR 0,
/// counters never pass the frames sent in one epoch, the per-frame overhead (header + tag)
/// is at most 14 bytes for every frame — and at most 13 (header ≤ 3 bytes) for the member
/// whose KIDs are below 8 — and every frame opens at every other member.
#[test]
fn counters_restart_every_epoch_and_overhead_stays_small() {
    let t0 = Instant::now();
    let config = RoomConfig::default();
    assert_eq!(config.params.suite, CipherSuite::AesCtr128HmacSha256_80);
    let tag = config.params.suite.tag_len();
    let mut m = room_of(&["a", "b", "c", "d"], config, MediaConfig::default(), t0);
    let e = m[0].room.epoch();
    let start = t0 + Duration::from_secs(1);
    let payload = [0x5a; PAYLOAD];
    let mut seen = vec![Seen::default(); 4];
    let mut max_overhead = [0usize; 4];
    let mut sum_overhead = 0u64;
    let mut frames = 0u64;
    let mut first20 = (0usize, 0u64, 0u64); // max, sum, count over the first 20 minutes
    let mut lost = 0u64;
    let mut max_header_low_kid = 0usize;
    let clock = std::time::Instant::now();
    for tick in 0..TICKS {
        let now = start + ms(20 * tick);
        if tick == TEN_MINUTES || tick == 2 * TEN_MINUTES {
            let who = if tick == TEN_MINUTES { 1 } else { 2 };
            let commit = m[who].room.self_update().unwrap();
            deliver_commit(&mut m, who, commit, now);
        }
        for i in 0..4 {
            let frame = m[i].seal(&payload, now);
            let (h, hlen) = Header::parse(&frame).unwrap();
            let epoch = m[i].media.sending_epoch().unwrap();
            let s = &mut seen[i];
            if s.epoch != Some(epoch) {
                if s.epoch.is_some() {
                    s.first_ctrs.push((epoch, h.ctr));
                }
                s.epoch = Some(epoch);
                s.next_ctr = h.ctr;
            }
            assert_eq!(h.ctr, s.next_ctr, "member {i}: counters run one by one");
            s.next_ctr += 1;
            s.max_ctr = s.max_ctr.max(h.ctr);
            let overhead = frame.len() - PAYLOAD;
            assert_eq!(overhead, hlen + tag);
            max_overhead[i] = max_overhead[i].max(overhead);
            sum_overhead += overhead as u64;
            frames += 1;
            if tick < 2 * TEN_MINUTES {
                first20.0 = first20.0.max(overhead);
                first20.1 += overhead as u64;
                first20.2 += 1;
            }
            if h.kid < 8 {
                max_header_low_kid = max_header_low_kid.max(hlen);
            }
            for (j, other) in m.iter_mut().enumerate() {
                if j != i && other.open(&frame, now).is_err() {
                    lost += 1;
                }
            }
        }
    }
    let max = *max_overhead.iter().max().unwrap();
    println!(
        "{frames} frames in {:.1} s: first 20 min max {} mean {:.3} B; all 22 min max {max} \
         (per member {max_overhead:?}) mean {:.3} B; header ≤ {max_header_low_kid} B for \
         KID < 8; max CTR per member {:?}; first CTR of each new epoch {:?}",
        clock.elapsed().as_secs_f64(),
        first20.0,
        first20.1 as f64 / first20.2 as f64,
        sum_overhead as f64 / frames as f64,
        seen.iter().map(|s| s.max_ctr).collect::<Vec<_>>(),
        seen.iter()
            .map(|s| s.first_ctrs.clone())
            .collect::<Vec<_>>(),
    );
    for (i, s) in seen.iter().enumerate() {
        // Two switches (one switch delay after each commit), each to counter 0.
        assert_eq!(
            s.first_ctrs,
            vec![(e + 1, 0), (e + 2, 0)],
            "member {i}: the first frame of each epoch has CTR 0"
        );
        // Never more than the frames sealed in one epoch (10 minutes and a switch delay).
        assert!(
            s.max_ctr < TEN_MINUTES + 50,
            "member {i}: CTR {}",
            s.max_ctr
        );
    }
    assert_eq!(lost, 0);
    assert_eq!(frames, 4 * TICKS);
    assert_eq!(first20.2, 4 * 2 * TEN_MINUTES);
    assert!(first20.0 <= 14, "first 20 minutes: {} bytes", first20.0);
    assert!(max <= 14, "per-frame overhead {max} bytes");
    assert!(max_header_low_kid <= 3, "header {max_header_low_kid} bytes");
    assert_eq!(m[0].media.sending_kid().map(|k| k < 8), Some(true));
}
