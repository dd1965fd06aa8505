//! The receiver's adaptive playout delay, in virtual time with a millisecond clock: one
//! sender seals a frame every 20 ms, each packet reaches the receiver after its own delay,
//! and the receiver pulls a frame every 20 ms (10 ms out of phase with the sender).
//!
//! Checked: under jitter the delay deepens and late packets stop (against what the fixed
//! configured delay would have lost on the same arrivals, computed in the same run); a
//! delay spike is absorbed and the added delay is taken back once the path is calm, every
//! frame accounted for; a path that gets faster is followed down; and the adversaries'
//! best: a relay delaying genuine packets adds at most [`MAX_ADDED_DELAY`] of buffering, a
//! relay holding packets and releasing them at once leaves no lasting delay, and replayed
//! or forged packets of old positions add none.
//!
//! The buffering is measured by the harness's own clock, not read back from the receiver:
//! how long the last packet waited between its arrival and the pull that played it.
#![cfg(feature = "opus")]

mod common;

#[path = "../examples/common/voice.rs"]
mod voice;

use std::time::{Duration, Instant};

use common::{ms, room_of, speak, Member, Rng};
use sotto::audio::{
    AudioConfig, AudioError, AudioReceiver, AudioSender, Pulled, ReceiverStats, MAX_ADDED_DELAY,
    MAX_PLAYOUT_DELAY_FRAMES, SAMPLE_RATE,
};
use sotto::media::MediaConfig;
use sotto::room::RoomConfig;

const FRAME: usize = (SAMPLE_RATE / 50) as usize; // 20 ms mono

/// What a run did.
struct Run {
    stats: ReceiverStats,
    /// The receiver's playout delay at the end.
    delay: Duration,
    /// The largest playout delay the receiver reported at any pull.
    max_delay: Duration,
    /// Frames concealed after the last frame decoded (the sender had stopped; the stream
    /// had not yet counted as ended).
    trailing: u64,
    /// How long the last packet waited in the receiver: from its arrival to the last pull
    /// that decoded a frame (which played it: no test loses the last packet).
    buffered: Duration,
    /// When each packet arrived, in ms after the first was sent (None: never delivered).
    arrivals: Vec<Option<u64>>,
}

/// Sends `frames` frames; packet k is sent at 20k ms and arrives `delay(k)` later (None:
/// lost). `extra(t)` may inject bytes of its own at ms t (an attacker's); the run goes on
/// until one second after the last arrival.
fn run(
    frames: usize,
    delay: impl FnMut(usize) -> Option<u64>,
    extra: impl FnMut(u64, &[Vec<u8>]) -> Vec<Vec<u8>>,
) -> Run {
    run_with(&AudioConfig::default(), frames, None, delay, extra)
}

/// [`run`] with the receiver's (and sender's) audio configuration (20 ms mono frames), and
/// a self-update of the sender's before it seals frame `commit_at` (its frames change epoch
/// a switch delay, one second, later).
fn run_with(
    config: &AudioConfig,
    frames: usize,
    commit_at: Option<usize>,
    mut delay: impl FnMut(usize) -> Option<u64>,
    mut extra: impl FnMut(u64, &[Vec<u8>]) -> Vec<Vec<u8>>,
) -> Run {
    let t0 = Instant::now();
    let mut m: Vec<Member> = room_of(
        &["alice", "bob"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    // After the creator switched into the epoch bob joined.
    let start = t0 + Duration::from_secs(1);
    let mut sender = AudioSender::new(config).unwrap();
    let mut receiver = AudioReceiver::new(config).unwrap();
    let mut voice = voice::Voice::new(0);
    let mut pcm = vec![0i16; FRAME];
    let mut out = vec![0i16; FRAME];
    let mut in_flight: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut arrivals = vec![None; frames];
    let mut last = 0u64;
    let mut trailing = 0u64;
    let mut last_decoded = 0u64;
    let mut max_delay = Duration::ZERO;
    let mut t = 0u64;
    // Bounded: frames × 20 ms plus the longest delay any test uses plus a second.
    while t < frames as u64 * 20 + 4_000 && (t <= last + 1_000 || sent.len() < frames) {
        let now = start + ms(t);
        if t.is_multiple_of(20) && sent.len() < frames {
            let k = sent.len();
            if commit_at == Some(k) {
                speak(&mut m, 0, now);
            }
            voice.fill(&mut pcm);
            let packet = sender.send_i16(&pcm, &mut m[0].media, now).unwrap();
            sent.push(packet.to_vec());
            if let Some(d) = delay(k) {
                in_flight.push((t + d, packet.to_vec()));
                arrivals[k] = Some(t + d);
                last = last.max(t + d);
            }
        }
        for bytes in extra(t, &sent) {
            receiver.push(&bytes, &mut m[1].media, now);
        }
        // Deliver what is due, in order of arrival (stable for equal times).
        in_flight.sort_by_key(|(at, _)| *at);
        let due = in_flight.iter().take_while(|(at, _)| *at <= t).count();
        for (_, bytes) in in_flight.drain(..due) {
            receiver.push(&bytes, &mut m[1].media, now);
        }
        if t % 20 == 10 {
            let concealed = receiver.stats().concealed;
            let pulled = receiver.pull_i16(&mut m[1].media, &mut out, now).unwrap();
            match pulled {
                Pulled::Decoded | Pulled::FecRecovered => {
                    trailing = 0;
                    last_decoded = t;
                }
                // Inserted frames (delay) are not concealments of lost packets.
                _ if receiver.stats().concealed > concealed => trailing += 1,
                _ => {}
            }
            max_delay = max_delay.max(receiver.playout_delay());
        }
        t += 1;
    }
    let last_arrival = arrivals[frames - 1].expect("the last packet is delivered");
    assert!(
        last_decoded >= last_arrival,
        "the last packet was not played (last decoded at {last_decoded} ms, it came at \
         {last_arrival} ms)"
    );
    Run {
        stats: receiver.stats(),
        delay: receiver.playout_delay(),
        max_delay,
        trailing,
        buffered: ms(last_decoded.saturating_sub(last_arrival)),
        arrivals,
    }
}

/// A run with `delay` (and a self-update before frame `commit_at`) beside the same run on a
/// calm path (50 ms for every packet), whose last packet waits the configured 40 ms.
fn against_calm(
    frames: usize,
    commit_at: Option<usize>,
    delay: impl FnMut(usize) -> Option<u64>,
) -> (Run, Run) {
    let config = AudioConfig::default();
    let r = run_with(&config, frames, commit_at, delay, |_, _| Vec::new());
    let calm = run_with(&config, frames, commit_at, |_| Some(50), |_, _| Vec::new());
    println!(
        "{:?}; the last packet waited {:?} ({:?} on a calm path)",
        r.stats, r.buffered, calm.buffered
    );
    assert_eq!(calm.buffered, ms(40));
    assert_eq!((calm.stats.delay_removed, calm.stats.stale_skipped), (0, 0));
    (r, calm)
}

/// 50 ms per packet, except that the relay holds the packets of `range` and releases them
/// with the packet after it (at its 50 ms).
fn held(range: std::ops::Range<usize>) -> impl FnMut(usize) -> Option<u64> {
    let release = range.end as u64 * 20 + 50;
    move |k| {
        Some(if range.contains(&k) {
            release - k as u64 * 20
        } else {
            50
        })
    }
}

/// Packets the fixed configured delay (2 frames after the first arrival, pulls at
/// 20j + 10 ms) would have received after their turn, on the same arrivals.
fn late_at_fixed_delay(arrivals: &[Option<u64>]) -> usize {
    let Some(first) = arrivals.iter().flatten().min().copied() else {
        return 0;
    };
    // The first pull at least 40 ms after the first arrival plays the earliest frame
    // arrived by then; each pull after it the next.
    let start = (first + 40 - 10).div_ceil(20) * 20 + 10;
    let Some(earliest) = arrivals.iter().position(|a| a.is_some_and(|a| a <= start)) else {
        return 0;
    };
    arrivals
        .iter()
        .enumerate()
        .filter(|(k, a)| a.is_some_and(|a| *k < earliest || a > start + 20 * (k - earliest) as u64))
        .count()
}

#[test]
fn under_jitter_the_delay_deepens_and_late_packets_stop() {
    // 40 ms plus two hops of 0–40 ms each (so 40–120 ms, most near 80): four minutes of
    // it, one minute per seed. The first packet comes at the fastest (40 ms), as the
    // first of a call on a quiet path may: a fixed delay is then timed from the best case.
    let frames = 3_000;
    let (mut late, mut fixed_late) = (0, 0);
    for seed in [0x717e, 0x5eed, 0xbeef, 0xcafe] {
        let mut rng = Rng(seed);
        for _ in 0..8 {
            rng.next();
        }
        let r = run(
            frames,
            |k| {
                Some(if k == 0 {
                    40
                } else {
                    40 + rng.below(41) + rng.below(41)
                })
            },
            |_, _| Vec::new(),
        );
        let fixed = late_at_fixed_delay(&r.arrivals) as u64;
        let s = r.stats;
        println!(
            "seed {seed:#x}: late {} adaptive vs {fixed} at the fixed delay; delay now {:?}, \
             at most {:?}; inserted {}, removed {}",
            s.late, r.delay, r.max_delay, s.delay_inserted, s.delay_removed
        );
        late += s.late;
        fixed_late += fixed;
        // It added no more than the spread of the delays (80 ms) plus a frame of phase.
        assert!(r.max_delay <= ms(40 + 100), "{:?}", r.max_delay);
        // Every frame is accounted for: decoded, or dropped to shrink the delay, or its
        // packet came late and FEC or concealment stood in for it; nothing else was
        // concealed.
        assert_eq!(
            s.decoded + s.delay_removed + s.stale_skipped,
            frames as u64 - s.late,
            "{s:?}"
        );
        assert_eq!(s.fec_recovered + s.concealed, s.late + r.trailing, "{s:?}");
    }
    println!("late packets in four minutes: {late} adaptive, {fixed_late} at the fixed delay");
    assert!(
        fixed_late >= 200,
        "the jitter made {fixed_late} late at the fixed delay"
    );
    assert!(late * 20 <= fixed_late, "{late} late vs {fixed_late}");
}

#[test]
fn a_delay_spike_is_absorbed_then_the_delay_is_taken_back() {
    // 50 ms steady; from 10 s, half a second of packets 100 ms slower; calm again after.
    let frames = 1_500;
    let spike = 500..525;
    let (r, calm) = against_calm(frames, None, |k| {
        Some(if spike.contains(&k) { 150 } else { 50 })
    });
    let s = r.stats;
    println!("delay now {:?}, at most {:?}", r.delay, r.max_delay);
    // The first packets of the spike come late (at most its 100 ms = 5 frames), after
    // which the delay covers it.
    assert!((1..=5).contains(&s.late), "{s:?}");
    assert!(r.max_delay >= ms(40 + 20 * s.late), "{:?}", r.max_delay);
    // Twenty calm seconds later every added frame was taken back: the configured delay,
    // and the last packet waited no longer than on a calm path all along.
    assert_eq!(r.delay, ms(40));
    assert_eq!(s.delay_removed, s.delay_inserted);
    assert_eq!(r.buffered, calm.buffered);
    // Nothing else was lost: what the late packets missed was concealed, nothing more.
    assert_eq!(s.concealed + s.fec_recovered, s.late + r.trailing);
    assert_eq!(s.decoded + s.delay_removed, frames as u64 - s.late);
}

#[test]
fn a_path_that_gets_faster_is_followed_down() {
    // 300 ms for ten seconds, then 50 ms: the packets of the faster path overtake, and
    // 250 ms more is buffered than the delay asks for. Fifty seconds later it is gone.
    let frames = 3_000;
    let (r, calm) = against_calm(frames, None, |k| Some(if k < 500 { 300 } else { 50 }));
    let s = r.stats;
    assert_eq!((s.late, s.delay_inserted), (0, 0), "{s:?}");
    // The slack went from 2 to 15 frames: 13 dropped, one per release window, and the
    // buffering is the calm path's again (40 ms).
    assert_eq!(s.delay_removed, 13, "{s:?}");
    assert_eq!(r.buffered, calm.buffered);
    assert_eq!(r.delay, ms(40));
    assert_eq!(s.decoded + s.delay_removed, frames as u64);
}

#[test]
fn a_relay_delaying_genuine_packets_adds_at_most_the_bound() {
    // The relay's best: every packet later than the one before (by 10 ms more each, up to
    // 3 s), so each arrives after its turn as long as the receiver follows.
    let frames = 1_000;
    let r = run(
        frames,
        |k| Some((k as u64 * 10).min(3_000)),
        |_, _| Vec::new(),
    );
    let s = r.stats;
    println!(
        "{s:?}; delay at most {:?}; the last packet waited {:?}",
        r.max_delay, r.buffered
    );
    assert!(s.late > 0);
    assert_eq!(r.max_delay, ms(40) + MAX_ADDED_DELAY);
    // Measured: the last packet (3 s late, like every packet from the 300th) waited no
    // more than the configured delay plus the bound (and the pull's 10 ms phase).
    assert!(
        r.buffered <= ms(40 + 10) + MAX_ADDED_DELAY,
        "{:?}",
        r.buffered
    );
}

#[test]
fn a_relay_holding_packets_then_bursting_leaves_no_lasting_delay() {
    // 50 ms, except that the relay holds packets 200 to 230 (620 ms, longer than
    // STREAM_END: the receiver stops) and releases them with packet 231. Playback restarts
    // on the burst at its newest packets less the delay: the stale ones are dropped, and
    // the buffering is what it is on a calm path.
    let frames = 1_000;
    let (r, calm) = against_calm(frames, None, held(200..231));
    let s = r.stats;
    assert_eq!(r.buffered, calm.buffered);
    // Exactly the 31 held packets were skipped (the queue held 200 to 233 at the restart;
    // 231, 232 and 233 are the newest delay + 1), none taken back later.
    assert_eq!((s.stale_skipped, s.delay_removed), (31, 0), "{s:?}");
    assert_eq!(s.decoded + s.stale_skipped, frames as u64 - s.late, "{s:?}");
}

#[test]
fn a_burst_across_an_epoch_change_leaves_no_lasting_delay() {
    // The same hold, timed (as the relay can: it sees commits go by) so that the burst
    // holds the last packets of one epoch and the first of the next: the sender commits
    // before frame 100 and seals in the new epoch from frame 150; packets 140 to 170 are
    // held 620 ms and released with packet 171. The restart skips both epochs' stale
    // packets alike.
    let frames = 1_000;
    let (r, calm) = against_calm(frames, Some(100), held(140..171));
    let s = r.stats;
    assert_eq!(r.buffered, calm.buffered);
    assert_eq!((s.stale_skipped, s.delay_removed), (31, 0), "{s:?}");
    assert_eq!(s.decoded + s.stale_skipped, frames as u64 - s.late, "{s:?}");
}

#[test]
fn the_configured_delay_is_bounded_and_a_long_one_still_plays() {
    let mut config = AudioConfig {
        playout_delay_frames: MAX_PLAYOUT_DELAY_FRAMES + 1,
        ..AudioConfig::default()
    };
    assert_eq!(
        AudioReceiver::new(&config).err(),
        Some(AudioError::InvalidConfig)
    );
    // At the longest delay nothing can be added (the queue keeps room ahead of it), so the
    // relay's ramp cannot push packets a queue's length ahead of playback (which would
    // restart the receiver at every packet): it restarts only when the stream stalls, and
    // plays every packet not late.
    config.playout_delay_frames = MAX_PLAYOUT_DELAY_FRAMES;
    let frames = 1_000;
    let r = run_with(
        &config,
        frames,
        None,
        |k| Some((k as u64 * 10).min(3_000)),
        |_, _| Vec::new(),
    );
    let s = r.stats;
    println!("{s:?}; the last packet waited {:?}", r.buffered);
    assert_eq!(r.max_delay, ms(20 * u64::from(MAX_PLAYOUT_DELAY_FRAMES)));
    assert_eq!(s.delay_inserted, 0);
    assert!(s.late > 0 && s.decoded > 500, "{s:?}");
    assert_eq!(
        s.decoded + s.delay_removed + s.stale_skipped,
        frames as u64 - s.late,
        "{s:?}"
    );
}

#[test]
fn replayed_or_forged_old_packets_add_no_delay() {
    // The relay (or anyone on the path) sends, every 20 ms, a copy of a genuine packet
    // already played and a forgery claiming an old position (a genuine header, a flipped
    // tag): neither opens, so neither can move the delay.
    let frames = 500;
    let mut injected = 0u64;
    let r = run(
        frames,
        |_| Some(50),
        |t, sent| {
            if t % 20 != 5 || sent.len() < 10 {
                return Vec::new();
            }
            injected += 2;
            let old = &sent[sent.len() - 8];
            let mut forged = old.clone();
            let last = forged.len() - 1;
            forged[last] ^= 1;
            vec![old.clone(), forged]
        },
    );
    let s = r.stats;
    println!("{s:?}");
    assert!(injected > 900);
    assert_eq!(s.replays + s.auth_failures, injected, "{s:?}");
    assert_eq!((s.late, s.delay_inserted), (0, 0), "{s:?}");
    assert_eq!(r.max_delay, ms(40));
    assert_eq!(s.decoded, frames as u64);
}
