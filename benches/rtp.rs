//! Per-packet cost of the RTP mapping against the bare frame layer, in the same run: a
//! 60-byte Opus packet (24 kbit/s at 20 ms) from one `MediaSession` to another.
//!
//! - `rtp/bare`: `MediaSession::seal` then `MediaSession::open` (the frame layer alone).
//! - `rtp/sframe` and `rtp/clear_toc`: `rtp::seal_payload` in that mode, `write_packet`,
//!   `RtpReceiver::receive` (parse, duplicate check), `rtp::open_payload`.
//!
//! After criterion, the three run interleaved in rounds (drift of the machine's load hits
//! all alike) and the median ratios to `bare` are printed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use sotto::frame::CipherSuite;
use sotto::keys::{KidLayout, MemberId};
use sotto::media::{ChannelToken, EpochKeys, EpochStatus, MediaConfig, MediaSession};
use sotto::rtp::{open_payload, seal_payload, write_packet, PayloadMode, RtpHeader, RtpReceiver};

const OPUS_PT: u8 = 111;

/// One sender and one receiver, and the buffers of one packet's trip.
struct Trip {
    alice: MediaSession,
    bob: MediaSession,
    rx: RtpReceiver,
    header: RtpHeader,
    now: Instant,
    opus: Vec<u8>,
    payload: BytesMut,
    wire: BytesMut,
    plain: BytesMut,
}

impl Trip {
    fn new() -> Trip {
        let suite = CipherSuite::AesGcm128Sha256;
        let keys = |own| {
            EpochKeys::assume_unique_for_key(
                1,
                EpochStatus::Current,
                suite,
                KidLayout::default(),
                0,
                (0..2).map(|leaf| MemberId { leaf, tag: 0 }).collect(),
                own,
                ChannelToken([1; 16]),
                vec![7; suite.key_len()],
            )
        };
        let now = Instant::now();
        let before = now - Duration::from_secs(2);
        let mut alice = MediaSession::new(MediaConfig::default());
        let mut bob = MediaSession::new(MediaConfig::default());
        alice.apply(keys(0), before).unwrap();
        bob.apply(keys(1), before).unwrap();
        let mut opus = vec![0xfc];
        opus.extend((0..59u8).map(|i| i.wrapping_mul(37)));
        Trip {
            alice,
            bob,
            rx: RtpReceiver::new(OPUS_PT, None),
            header: RtpHeader {
                payload_type: OPUS_PT,
                ssrc: 0x1234_5678,
                ..RtpHeader::default()
            },
            now,
            opus,
            payload: BytesMut::with_capacity(256),
            wire: BytesMut::with_capacity(256),
            plain: BytesMut::with_capacity(256),
        }
    }

    fn bare(&mut self) -> usize {
        self.payload.clear();
        self.plain.clear();
        self.alice
            .seal(
                sotto::keys::StreamId::MICROPHONE,
                black_box(&self.opus),
                &mut self.payload,
                self.now,
            )
            .unwrap();
        self.bob
            .open(&self.payload, &mut self.plain, self.now)
            .unwrap()
            .len
    }

    fn mapped(&mut self, mode: PayloadMode) -> usize {
        self.payload.clear();
        self.wire.clear();
        self.plain.clear();
        seal_payload(
            mode,
            &mut self.alice,
            black_box(&self.opus),
            &mut self.payload,
            self.now,
        )
        .unwrap();
        self.header.sequence = self.header.sequence.wrapping_add(1);
        self.header.timestamp = self.header.timestamp.wrapping_add(960);
        write_packet(&self.header, &self.payload, &mut self.wire);
        let got = self.rx.receive(&self.wire).unwrap();
        open_payload(mode, &mut self.bob, got.payload, &mut self.plain, self.now)
            .unwrap()
            .len
    }
}

fn rtp(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtp");
    let mut trip = Trip::new();
    group.bench_function("bare", |b| b.iter(|| black_box(trip.bare())));
    let mut trip = Trip::new();
    group.bench_function("sframe", |b| {
        b.iter(|| black_box(trip.mapped(PayloadMode::Sframe)))
    });
    let mut trip = Trip::new();
    group.bench_function("clear_toc", |b| {
        b.iter(|| black_box(trip.mapped(PayloadMode::ClearToc)))
    });
    group.finish();

    // Interleaved rounds: the median of each round's ratio.
    let (mut a, mut b, mut c) = (Trip::new(), Trip::new(), Trip::new());
    let mut ratios: Vec<(f64, f64)> = Vec::new();
    for _ in 0..200 {
        let time = |f: &mut dyn FnMut() -> usize| {
            let t = Instant::now();
            for _ in 0..500 {
                black_box(f());
            }
            t.elapsed().as_secs_f64()
        };
        let bare = time(&mut || a.bare());
        let sframe = time(&mut || b.mapped(PayloadMode::Sframe));
        let toc = time(&mut || c.mapped(PayloadMode::ClearToc));
        ratios.push((sframe / bare, toc / bare));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "interleaved, median of 200 rounds of 500 packets: sframe / bare = {:.3}x, clear_toc / bare = {:.3}x",
        median(ratios.iter().map(|r| r.0).collect()),
        median(ratios.iter().map(|r| r.1).collect()),
    );
}

criterion_group!(benches, rtp);
criterion_main!(benches);
