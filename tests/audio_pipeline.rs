//! The Opus pipeline end to end through real rooms: bit-exactness, constant packet size,
//! loss concealment, tampering, held packets of a future epoch, and an epoch change with
//! nothing concealed.
#![cfg(feature = "opus")]

mod common;

#[path = "../examples/common/voice.rs"]
mod voice;

use std::time::{Duration, Instant};

use common::{ms, room_of, Member, Rng};
use sotto::audio::{AudioConfig, AudioReceiver, AudioSender, Pulled, SAMPLE_RATE};
use sotto::frame::Header;
use sotto::media::MediaConfig;
use sotto::room::RoomConfig;
use voice::Voice;

const FRAME: usize = (SAMPLE_RATE / 50) as usize; // 20 ms mono

fn frames(speaker: usize, n: usize) -> Vec<Vec<i16>> {
    let mut v = Voice::new(speaker);
    (0..n)
        .map(|_| {
            let mut f = vec![0i16; FRAME];
            v.fill(&mut f);
            f
        })
        .collect()
}

/// A two-member room; returns it and an instant after the creator's switch into the epoch
/// the invitee joined (frames of the creation epoch are not for the invitee).
fn two(t0: Instant) -> (Vec<Member>, Instant) {
    let m = room_of(
        &["alice", "bob"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    (m, t0 + Duration::from_secs(1))
}

#[test]
fn decrypted_path_is_bit_exact() {
    let (mut m, t0) = two(Instant::now());
    let config = AudioConfig::default();
    let pcm = frames(0, 150);
    let mut sender = AudioSender::new(&config).unwrap();
    let mut receiver = AudioReceiver::new(&config).unwrap();
    // The reference: the same PCM through a fresh encoder and a plain decoder, no crypto.
    let mut ref_encoder = AudioSender::new(&config).unwrap();
    let mut ref_decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).unwrap();
    let mut reference = Vec::new();
    for f in &pcm {
        let packet = ref_encoder.encode_i16(f).unwrap();
        let mut out = vec![0i16; FRAME];
        ref_decoder.decode(packet, &mut out, false).unwrap();
        reference.push(out);
    }
    let mut heard = Vec::new();
    let mut out = vec![0i16; FRAME];
    for (i, f) in pcm.iter().enumerate() {
        let now = t0 + ms(20 * i as u64);
        let packet = sender.send_i16(f, &mut m[0].media, now).unwrap();
        receiver.push(&packet, &mut m[1].media, now);
        if receiver.pull_i16(&mut m[1].media, &mut out, now).unwrap() == Pulled::Decoded {
            heard.push(out.clone());
        }
    }
    // Two more pulls drain the playout delay.
    for k in 0..2 {
        let now = t0 + ms(20 * (150 + k));
        if receiver.pull_i16(&mut m[1].media, &mut out, now).unwrap() == Pulled::Decoded {
            heard.push(out.clone());
        }
    }
    assert_eq!(heard.len(), 150);
    assert!(
        heard == reference,
        "decrypted PCM differs from the plain decode"
    );
    assert!(
        reference.iter().flatten().any(|s| s.abs() > 1000),
        "signal is not silent"
    );
    let s = receiver.stats();
    assert_eq!((s.decoded, s.concealed, s.fec_recovered), (150, 0, 0));
}

#[test]
fn packet_size_is_constant_across_speech_and_silence() {
    let (mut m, t0) = two(Instant::now());
    let config = AudioConfig::default();
    let mut talker = AudioSender::new(&config).unwrap();
    let mut quiet = AudioSender::new(&config).unwrap();
    let speech = frames(1, 100);
    let silence = vec![0i16; FRAME];
    let mut sizes = std::collections::BTreeSet::new();
    for f in &speech {
        let a = talker.encode_i16(f).unwrap().len();
        let b = quiet.encode_i16(&silence).unwrap().len();
        sizes.insert(a);
        sizes.insert(b);
    }
    // 24 kbit/s × 20 ms = 60 bytes, every packet.
    assert_eq!(sizes.into_iter().collect::<Vec<_>>(), vec![60]);
    // Sealed, the size depends on the counter's header bytes only — never on the audio.
    let mut talker = AudioSender::new(&config).unwrap();
    let now = t0;
    for (i, f) in speech.iter().enumerate() {
        let pcm: &[i16] = if (i / 10) % 2 == 0 { f } else { &silence };
        let packet = talker.send_i16(pcm, &mut m[0].media, now).unwrap();
        let (header, hlen) = Header::parse(&packet).unwrap();
        assert_eq!(header.ctr, i as u64);
        assert_eq!(packet.len(), hlen + 60 + 10);
        // The next frame's size is known in advance: header of the next counter + 70.
        let next = Header::new(header.kid, header.ctr + 1).encoded_len();
        assert_eq!(m[0].media.sealed_len(60), Some(next + 70));
    }
}

#[test]
fn ten_percent_loss_is_filled_by_fec_and_plc() {
    let (mut m, t0) = two(Instant::now());
    let config = AudioConfig::default();
    let mut sender = AudioSender::new(&config).unwrap();
    let mut receiver = AudioReceiver::new(&config).unwrap();
    let pcm = frames(2, 500);
    let mut rng = Rng(0x5eed);
    let mut lost = 0;
    let mut played = 0;
    let mut out = vec![0i16; FRAME];
    for step in 0..503u64 {
        let now = t0 + ms(20 * step);
        if let Some(f) = pcm.get(step as usize) {
            let packet = sender.send_i16(f, &mut m[0].media, now).unwrap();
            // The first packet always arrives (it starts the stream), the rest lose 10%.
            if step > 0 && rng.chance(10) {
                lost += 1;
            } else {
                receiver.push(&packet, &mut m[1].media, now);
            }
        }
        if receiver.pull_i16(&mut m[1].media, &mut out, now).unwrap() != Pulled::Idle {
            played += 1;
        }
    }
    let s = receiver.stats();
    println!("lost {lost} of 500: {s:?}");
    assert!(lost > 30, "the loss pattern lost {lost}");
    assert_eq!(
        played, 501,
        "frames out = frames in (plus one concealed after the end)"
    );
    assert_eq!(s.decoded, 500 - lost);
    // Every gap was filled: by the next packet's FEC where it arrived, else by PLC.
    assert_eq!(s.fec_recovered + s.concealed, lost + 1);
    assert!(s.fec_recovered > 0);
}

#[test]
fn tampered_packet_is_concealed_not_decoded() {
    let (mut m, t0) = two(Instant::now());
    let config = AudioConfig {
        fec: false,
        ..AudioConfig::default()
    };
    let mut sender = AudioSender::new(&config).unwrap();
    let mut receiver = AudioReceiver::new(&config).unwrap();
    let pcm = frames(3, 30);
    let mut out = vec![0i16; FRAME];
    let mut results = Vec::new();
    for step in 0..32u64 {
        let now = t0 + ms(20 * step);
        if let Some(f) = pcm.get(step as usize) {
            let packet = sender.send_i16(f, &mut m[0].media, now).unwrap();
            if step == 10 {
                let mut bad = packet.to_vec();
                let last = bad.len() - 1;
                bad[last] ^= 0x01; // the tag
                receiver.push(&bad, &mut m[1].media, now);
                // A replay of a genuine packet is refused too.
            } else {
                receiver.push(&packet, &mut m[1].media, now);
                if step == 12 {
                    receiver.push(&packet, &mut m[1].media, now);
                }
            }
        }
        results.push(receiver.pull_i16(&mut m[1].media, &mut out, now).unwrap());
    }
    let s = receiver.stats();
    assert_eq!(s.auth_failures, 1);
    assert_eq!(s.replays, 1);
    assert_eq!(s.decoded, 29);
    assert_eq!(s.concealed, 1);
    // Playback starts two frames late: frame 10 is played at step 12.
    assert_eq!(results[12], Pulled::Concealed);
}

#[test]
fn future_epoch_packet_is_held_then_decoded() {
    let t0 = Instant::now();
    let media = MediaConfig {
        switch_delay: Duration::ZERO,
        ..MediaConfig::default()
    };
    let mut m = room_of(&["alice", "bob", "carol"], RoomConfig::default(), media, t0);
    let config = AudioConfig::default();
    let mut sender = AudioSender::new(&config).unwrap();
    let mut receiver = AudioReceiver::new(&config).unwrap();
    let pcm = frames(4, 60);
    let mut out = vec![0i16; FRAME];
    let mut commit = None;
    for step in 0..62u64 {
        let now = t0 + ms(20 * step);
        if step == 20 {
            // Alice self-updates and switches at once; bob processes; carol's copy is late.
            let c = m[0].room.self_update().unwrap();
            m[0].apply_staged(c.keys, now);
            m[0].confirm(now);
            m[1].process(&c.message, now);
            commit = Some(c.message);
        }
        if step == 21 {
            // Carol gets the commit 20 ms later: the held packet must be decoded in time.
            m[2].process(commit.as_deref().unwrap(), now);
        }
        if let Some(f) = pcm.get(step as usize) {
            let packet = sender.send_i16(f, &mut m[0].media, now).unwrap();
            receiver.push(&packet, &mut m[2].media, now);
        }
        receiver.pull_i16(&mut m[2].media, &mut out, now).unwrap();
    }
    let s = receiver.stats();
    assert_eq!(s.held, 1, "{s:?}");
    assert_eq!((s.decoded, s.concealed, s.late), (60, 0, 0), "{s:?}");
}

#[test]
#[allow(clippy::needless_range_loop)]
fn epoch_change_mid_stream_conceals_nothing() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob", "carol"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let config = AudioConfig::default();
    let mut senders: Vec<AudioSender> =
        (0..3).map(|_| AudioSender::new(&config).unwrap()).collect();
    // receivers[r][s]: receiver at member r for sender s.
    let mut receivers: Vec<Vec<AudioReceiver>> = (0..3)
        .map(|_| {
            (0..3)
                .map(|_| AudioReceiver::new(&config).unwrap())
                .collect()
        })
        .collect();
    let mut voices: Vec<Voice> = (0..3).map(Voice::new).collect();
    let mut pcm = vec![0i16; FRAME];
    let mut out = vec![0i16; FRAME];
    let mut commit = None;
    // Start once alice seals in the epoch bob and carol joined.
    let start = t0 + Duration::from_secs(1);
    for step in 0..300u64 {
        let now = start + ms(20 * step);
        if step == 100 {
            let c = m[1].room.self_update().unwrap();
            m[1].apply_staged(c.keys, now);
            m[1].confirm(now);
            m[0].process(&c.message, now);
            commit = Some(c.message);
        }
        if step == 140 {
            // 800 ms later (within the 1 s switch delay), carol processes it.
            m[2].process(commit.as_deref().unwrap(), now);
        }
        for s in 0..3 {
            voices[s].fill(&mut pcm);
            let packet = senders[s].send_i16(&pcm, &mut m[s].media, now).unwrap();
            for r in 0..3 {
                if r != s {
                    receivers[r][s].push(&packet, &mut m[r].media, now);
                }
            }
        }
        for r in 0..3 {
            for s in 0..3 {
                if r != s {
                    receivers[r][s]
                        .pull_i16(&mut m[r].media, &mut out, now)
                        .unwrap();
                }
            }
        }
    }
    for r in 0..3 {
        for s in 0..3 {
            if r != s {
                let st = receivers[r][s].stats();
                assert_eq!(st.concealed + st.fec_recovered, 0, "{r}<-{s}: {st:?}");
                assert_eq!(st.decoded, 298, "{r}<-{s}: {st:?}");
            }
        }
        assert_eq!(m[r].media.sending_epoch(), Some(m[0].room.epoch()));
    }
}

#[test]
fn a_stream_that_stops_goes_quiet() {
    let (mut m, t0) = two(Instant::now());
    let config = AudioConfig::default();
    let mut sender = AudioSender::new(&config).unwrap();
    let mut receiver = AudioReceiver::new(&config).unwrap();
    let pcm = frames(5, 50);
    let mut out = vec![0i16; FRAME];
    let mut pulled = Vec::new();
    for step in 0..200u64 {
        let now = t0 + ms(20 * step);
        if let Some(f) = pcm.get(step as usize) {
            let packet = sender.send_i16(f, &mut m[0].media, now).unwrap();
            receiver.push(&packet, &mut m[1].media, now);
        }
        pulled.push(receiver.pull_i16(&mut m[1].media, &mut out, now).unwrap());
    }
    let s = receiver.stats();
    assert_eq!(s.decoded, 50);
    // After the sender stops: concealment for at most STREAM_END, then silence.
    let limit = (sotto::audio::STREAM_END.as_millis() / 20) as u64 + 1;
    assert!(s.concealed <= limit, "{s:?}");
    assert!(pulled[150..].iter().all(|p| *p == Pulled::Idle));
    assert!(out.iter().all(|x| *x == 0));
}
