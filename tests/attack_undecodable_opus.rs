//! Issue 10, finding 11: an authenticated but undecodable Opus packet made `pull_*` fail.
//!
//! The adversary is a current member (it holds a sealing key, so its packets
//! authenticate): it sends, in the middle of its 20 ms stream, packets a 20 ms receiver
//! cannot decode — 60 ms Opus packets (too long for the receiver's frame buffer), and bytes
//! that are not Opus at all. Before the fix the decoder's error came out of `pull_i16`,
//! and an app that stops a stream on error went silent for that member.

#![cfg(feature = "opus")]

mod common;

use std::f32::consts::TAU;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{ms, room_of};
use sotto::audio::{AudioConfig, AudioReceiver, AudioSender, Pulled, SAMPLE_RATE};
use sotto::media::MediaConfig;
use sotto::room::RoomConfig;

/// `n` samples of a 330 Hz tone starting at sample `start`.
fn tone(start: usize, n: usize) -> Vec<i16> {
    (start..start + n)
        .map(|k| (8000.0 * (TAU * 330.0 * k as f32 / SAMPLE_RATE as f32).sin()) as i16)
        .collect()
}

/// Finding 11 (issue 10): a sealed 60 ms Opus packet (from an `AudioSender` with
/// `frame_ms: 60`) and a sealed non-Opus payload, in a 20 ms stream: `pull_i16` returns
/// `Ok(Pulled::Concealed)` for each, `stats().undecodable` counts them, and the stream
/// goes on decoding the good packets after them.
#[test]
fn undecodable_authenticated_packets_are_concealed_and_the_stream_goes_on() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "mallory"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let t1 = t0 + Duration::from_secs(1);
    let config = AudioConfig::default();
    let long = AudioConfig {
        frame_ms: 60,
        ..AudioConfig::default()
    };
    let frame = config.frame_samples();
    let mut good = AudioSender::new(&config).unwrap();
    let mut bad = AudioSender::new(&long).unwrap();
    let mut receiver = AudioReceiver::new(&config).unwrap();
    // Positions (in mallory's stream) of the bad packets: a 60 ms packet, two in a row, a
    // 60 ms packet after a lost one (played from the next packet's FEC path), and one
    // authenticated payload that is no Opus at all.
    let sixty = [20u64, 40, 41, 61];
    let lost = [60u64];
    let garbage = 80u64;
    let steps = 120u64;
    let mut pulled = Vec::new();
    let mut out = vec![0i16; frame];
    for step in 0..steps + 2 {
        let now = t1 + ms(20 * step);
        if step < steps {
            let packet: Bytes = if sixty.contains(&step) {
                bad.send_i16(&tone(0, long.frame_samples()), &mut m[1].media, now)
                    .unwrap()
            } else if step == garbage {
                let mut sealed = BytesMut::new();
                m[1].media
                    .seal(
                        sotto::keys::StreamId::MICROPHONE,
                        &[0xff; 60],
                        &mut sealed,
                        now,
                    )
                    .unwrap();
                sealed.freeze()
            } else {
                good.send_i16(&tone(step as usize * frame, frame), &mut m[1].media, now)
                    .unwrap()
            };
            if !lost.contains(&step) {
                receiver.push(&packet, &mut m[0].media, now);
            }
        }
        let got = receiver.pull_i16(&mut m[0].media, &mut out, now);
        assert!(got.is_ok(), "pull_i16 failed at step {step}: {got:?}");
        pulled.push(got.unwrap());
    }
    let s = receiver.stats();
    println!("{s:?}");
    // Playback starts two frames late: the packet of position p plays at step p + 2.
    for p in sixty.iter().filter(|p| !lost.contains(&(*p - 1))) {
        assert_eq!(pulled[*p as usize + 2], Pulled::Concealed, "position {p}");
    }
    // The lost packet before a 60 ms one: the receiver tries the 60 ms packet's FEC, and
    // libopus, finding no usable FEC for a 20 ms frame in it, conceals instead (returning
    // success, so it counts as FEC-recovered).
    assert_eq!(pulled[lost[0] as usize + 2], Pulled::FecRecovered);
    // Every good packet after a bad one decodes.
    for p in sixty.iter().chain([&garbage]) {
        let next = *p + 1;
        if !sixty.contains(&next) && !lost.contains(&next) {
            assert_eq!(pulled[next as usize + 2], Pulled::Decoded, "after {p}");
        }
    }
    assert_eq!(
        pulled[steps as usize + 1],
        Pulled::Decoded,
        "the stream goes on"
    );
    let bad_count = sixty.len() as u64 + 1;
    assert_eq!(s.auth_failures + s.rejected + s.replays + s.late, 0);
    assert_eq!(s.decoded, steps - bad_count - lost.len() as u64);
    // The 60 ms packets and the garbage one: undecodable, concealed.
    assert_eq!(s.undecodable, bad_count);
    assert_eq!(s.concealed, bad_count);
    assert_eq!(s.fec_recovered, 1);
}
