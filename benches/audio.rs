//! Audio pipeline benchmarks: the crypto share of a 20 ms frame (Opus encode alone vs
//! encode+seal, decode alone vs open+decode, same run), and one thread receiving 50
//! speakers × 50 frames/s for one second of audio.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use sotto::audio::{AudioConfig, AudioReceiver, AudioSender, SAMPLE_RATE};
use sotto::frame::CipherSuite;
use sotto::keys::{KidLayout, MemberId};
use sotto::media::{ChannelToken, EpochKeys, EpochStatus, MediaConfig, MediaSession};

#[path = "../examples/common/voice.rs"]
mod voice;

const SPEAKERS: u32 = 50;
const FRAME: usize = (SAMPLE_RATE / 50) as usize;

fn keys(own_leaf: u32, members: u32) -> EpochKeys {
    let suite = CipherSuite::AesCtr128HmacSha256_80;
    EpochKeys::assume_unique_for_key(
        1,
        EpochStatus::Current,
        suite,
        KidLayout::default(),
        0,
        (0..members).map(|leaf| MemberId { leaf, tag: 0 }).collect(),
        own_leaf,
        ChannelToken([7; 16]),
        vec![0x42; suite.key_len()],
    )
}

/// A session whose keys were applied one switch delay before `now`, so it seals at `now`.
fn session(own_leaf: u32, members: u32, now: Instant) -> MediaSession {
    let config = MediaConfig::default();
    let mut m = MediaSession::new(config);
    m.apply(keys(own_leaf, members), now - config.switch_delay)
        .unwrap();
    m
}

/// The next Opus packet of `opus`, sealed: open benchmarks need a fresh packet per
/// iteration (the replay window refuses repeats).
fn seal_next(sealer: &mut MediaSession, opus: &[Vec<u8>], i: &mut usize, now: Instant) -> BytesMut {
    *i = (*i + 1) % opus.len();
    let mut p = BytesMut::new();
    sealer
        .seal(sotto::keys::StreamId::MICROPHONE, &opus[*i], &mut p, now)
        .unwrap();
    p
}

fn speech(speaker: usize, frames: usize) -> Vec<Vec<i16>> {
    let mut v = voice::Voice::new(speaker);
    (0..frames)
        .map(|_| {
            let mut f = vec![0i16; FRAME];
            v.fill(&mut f);
            f
        })
        .collect()
}

fn per_frame(c: &mut Criterion) {
    let now = Instant::now() + Duration::from_secs(2);
    let config = AudioConfig::default();
    let pcm = speech(0, 250);
    let mut group = c.benchmark_group("audio/frame");

    let mut encoder = AudioSender::new(&config).unwrap();
    let mut i = 0;
    group.bench_function("encode", |b| {
        b.iter(|| {
            i = (i + 1) % pcm.len();
            black_box(encoder.encode_i16(&pcm[i]).unwrap().len())
        })
    });

    let mut sender = AudioSender::new(&config).unwrap();
    let mut media = session(0, 2, now);
    group.bench_function("encode+seal", |b| {
        b.iter(|| {
            i = (i + 1) % pcm.len();
            black_box(sender.send_i16(&pcm[i], &mut media, now).unwrap().len())
        })
    });

    // Opus packets and sealed packets of the same speech.
    let mut encoder = AudioSender::new(&config).unwrap();
    let opus: Vec<Vec<u8>> = pcm
        .iter()
        .map(|f| encoder.encode_i16(f).unwrap().to_vec())
        .collect();
    let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).unwrap();
    let mut out = vec![0i16; FRAME];
    group.bench_function("decode", |b| {
        b.iter(|| {
            i = (i + 1) % opus.len();
            black_box(decoder.decode(&opus[i], &mut out, false).unwrap())
        })
    });

    // The crypto alone, for the share: seal, and open (fresh packets, untimed setup).
    let mut media = session(0, 2, now);
    let mut wire = BytesMut::with_capacity(256);
    group.bench_function("seal", |b| {
        b.iter(|| {
            i = (i + 1) % opus.len();
            wire.clear();
            black_box(
                media
                    .seal(sotto::keys::StreamId::MICROPHONE, &opus[i], &mut wire, now)
                    .unwrap(),
            )
        })
    });
    let mut sealer = session(1, 2, now);
    let mut receiver = session(0, 2, now);
    let mut plain = BytesMut::with_capacity(256);
    group.bench_function("open", |b| {
        b.iter_batched(
            || seal_next(&mut sealer, &opus, &mut i, now),
            |packet| {
                plain.clear();
                black_box(receiver.open(&packet, &mut plain, now).unwrap())
            },
            BatchSize::SmallInput,
        )
    });

    let mut sealer = session(1, 2, now);
    let mut receiver = session(0, 2, now);
    let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).unwrap();
    group.bench_function("open+decode", |b| {
        b.iter_batched(
            || seal_next(&mut sealer, &opus, &mut i, now),
            |packet| {
                plain.clear();
                receiver.open(&packet, &mut plain, now).unwrap();
                black_box(decoder.decode(&plain, &mut out, false).unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// One receiving thread: 50 speakers × 50 packets (one second of audio), each opened,
/// queued and decoded by its own `AudioReceiver`, one pull per speaker per 20 ms.
#[allow(clippy::needless_range_loop)]
fn fifty_speakers(c: &mut Criterion) {
    let t0 = Instant::now() + Duration::from_secs(2);
    let config = AudioConfig::default();
    // Pre-seal one second from each speaker (untimed).
    let mut packets: Vec<Vec<Bytes>> = Vec::new();
    for s in 0..SPEAKERS {
        let mut media = session(s + 1, SPEAKERS + 1, t0);
        let mut sender = AudioSender::new(&config).unwrap();
        let mut seq = Vec::new();
        for (k, f) in speech(s as usize, 50).iter().enumerate() {
            let now = t0 + Duration::from_millis(20 * k as u64);
            seq.push(sender.send_i16(f, &mut media, now).unwrap());
        }
        packets.push(seq);
    }
    let mut group = c.benchmark_group("audio/receive");
    group.sample_size(20);
    group.bench_function("50 speakers x 1 s", |b| {
        b.iter_batched(
            || {
                let media = session(0, SPEAKERS + 1, t0);
                let receivers: Vec<AudioReceiver> = (0..SPEAKERS)
                    .map(|_| AudioReceiver::new(&config).unwrap())
                    .collect();
                (media, receivers, vec![0i16; FRAME])
            },
            |(mut media, mut receivers, mut out)| {
                for k in 0..50 {
                    let now = t0 + Duration::from_millis(20 * k as u64);
                    for (s, r) in receivers.iter_mut().enumerate() {
                        r.push(&packets[s][k], &mut media, now);
                        r.pull_i16(&mut media, &mut out, now).unwrap();
                    }
                }
                black_box(receivers[0].stats().decoded)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = per_frame, fifty_speakers
}
criterion_main!(benches);
