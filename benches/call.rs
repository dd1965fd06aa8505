//! The call engine's cost per 20 ms tick for a member hearing 7 speakers (an 8-member
//! room of real `Call`s over sotto's relay `Router`), against the sum of the parts it
//! calls, measured in the same run:
//!
//! - `call/engine`: `Call::handle_datagram` × 7 (the relay's datagrams for this tick),
//!   `handle_timeout` when due, `send_audio` (one 20 ms frame of PCM), `pull_audio`, and
//!   `poll_transmit` drained.
//! - `call/parts`: the same work done directly with the parts the engine calls:
//!   `RelayClient::receive` + `MediaSession::sender_of` + `AudioReceiver::push` × 7,
//!   `AudioSender::encode_i16` + `MediaSession::seal` + `RelayClient::media`, and
//!   `AudioReceiver::pull_i16` × 7 mixed into one frame. Its state is the listener's: a
//!   relay connection subscribed to the same channel, the epoch's keys, a receiver per
//!   speaker.
//!
//! Every tick's datagrams are fresh (a replayed frame is refused before it is decoded,
//! which would make either side look cheap): the 7 speakers' `Call`s make them through
//! the router in the untimed setup of `iter_batched_ref`. After the two criterion
//! benchmarks the same two tick functions run interleaved, tick by tick, and their ratio
//! is printed (drift of the machine's load hits both alike).

#[path = "../tests/common/call_room.rs"]
mod call_room;
#[path = "../examples/common/voice.rs"]
mod voice;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use call_room::CallRoom;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use sotto::audio::{AudioReceiver, AudioSender, Pulled};
use sotto::call::{Call, CallConfig};
use sotto::keys::MemberId;
use sotto::media::{ChannelToken, EpochKeys, EpochStatus, MediaSession};
use sotto::relay::{ClientEvent, RelayClient};

const MEMBERS: usize = 8;
/// The member measured (a joiner, like most members).
const LISTENER: usize = MEMBERS - 1;
/// Frames of the listener's microphone, cycled.
const MIC_FRAMES: usize = 500;

/// One tick's input: its time, the relay's datagrams for the listener, its mic frame.
struct Tick {
    now: Instant,
    datagrams: Vec<Vec<u8>>,
    mic: usize,
}

/// The 7 speakers and the relay, making each tick's datagrams.
struct World {
    room: CallRoom,
    voices: Vec<voice::Voice>,
    speakers: Vec<usize>,
    ticks: usize,
}

impl World {
    /// One frame interval: the speakers speak; returns what the relay sent the listener
    /// and what it sent the parts' connection (the same frames).
    fn next(&mut self, parts: usize) -> (Tick, Tick) {
        let voices = &mut self.voices;
        self.room
            .tick(&self.speakers, &[], &mut |i, pcm| voices[i].fill(pcm));
        self.ticks += 1;
        let mut take = |to: usize| {
            let datagrams = std::mem::take(&mut self.room.inbox[to]);
            assert_eq!(
                datagrams.len(),
                self.speakers.len(),
                "one frame per speaker"
            );
            Tick {
                now: self.room.now,
                datagrams,
                mic: self.ticks % MIC_FRAMES,
            }
        };
        let ticks = (take(LISTENER), take(parts));
        for inbox in &mut self.room.inbox {
            inbox.clear();
        }
        ticks
    }
}

/// The engine's tick.
struct Engine {
    call: Call,
    out: Vec<i16>,
    datagram: Vec<u8>,
}

impl Engine {
    fn tick(&mut self, t: &Tick, mic: &[i16]) {
        for d in &t.datagrams {
            self.call.handle_datagram(d, t.now).unwrap();
        }
        if self.call.poll_timeout().is_some_and(|at| at <= t.now) {
            self.call.handle_timeout(t.now);
        }
        self.call.send_audio(mic, t.now).unwrap();
        self.call.pull_audio(&mut self.out, t.now).unwrap();
        while self.call.poll_transmit(&mut self.datagram) {
            black_box(&self.datagram);
        }
        black_box(&self.out);
    }

    fn decoded(&self) -> u64 {
        self.call.voices().map(|v| v.stats.decoded).sum()
    }
}

/// The same tick with the parts the engine calls.
struct Parts {
    client: RelayClient,
    media: MediaSession,
    sender: AudioSender,
    receivers: Vec<(MemberId, AudioReceiver, Vec<i16>)>,
    token: ChannelToken,
    frame: BytesMut,
    datagram: BytesMut,
    mix: Vec<i32>,
    out: Vec<i16>,
}

impl Parts {
    /// The listener's state, copied: a relay connection `conn` subscribed to its channel,
    /// its epoch's keys, a receiver per speaker, its audio configuration.
    fn new(room: &mut CallRoom, listener: &Call, conn: usize) -> Parts {
        let config = listener.config().audio.clone();
        let keys = listener.room().unwrap().receive_keys().unwrap();
        // The same epoch key, but sealing as a leaf no member has: the listener's own
        // frames and these never share a nonce (neither leaves this process anyway).
        let leaf = keys.members().iter().map(|m| m.leaf).max().unwrap() + 1;
        let mut members = keys.members().to_vec();
        members.push(MemberId { leaf, tag: 0 });
        let current = EpochKeys::assume_unique_for_key(
            keys.epoch(),
            EpochStatus::Current,
            keys.suite(),
            keys.layout(),
            keys.stream_bits(),
            members,
            leaf,
            keys.token(),
            keys.expose_base_key().to_vec(),
        );
        let mut media = MediaSession::new(listener.config().media);
        let now = room.now;
        media
            .apply(current, now - listener.config().media.switch_delay)
            .unwrap();
        media.expire(now);
        assert!(media.sending_epoch().is_some());
        let mut client = RelayClient::new();
        let mut out = BytesMut::new();
        client.hello(&mut out).unwrap();
        room.send(conn, &out);
        for d in std::mem::take(&mut room.inbox[conn]) {
            assert!(matches!(client.receive(&d), Ok(ClientEvent::Ready)));
        }
        out.clear();
        client.subscribe(keys.token(), &mut out).unwrap();
        room.send(conn, &out);
        for d in std::mem::take(&mut room.inbox[conn]) {
            assert!(matches!(
                client.receive(&d),
                Ok(ClientEvent::Subscribed { .. })
            ));
        }
        assert!(client.is_subscribed(&keys.token()));
        let own = listener.room().unwrap().own_leaf();
        let receivers = keys
            .members()
            .iter()
            .filter(|m| m.leaf != own)
            .map(|m| {
                (
                    *m,
                    AudioReceiver::new(&config).unwrap(),
                    vec![0; config.frame_samples()],
                )
            })
            .collect();
        Parts {
            client,
            media,
            sender: AudioSender::new(&config).unwrap(),
            receivers,
            token: keys.token(),
            frame: BytesMut::with_capacity(2048),
            datagram: BytesMut::with_capacity(2048),
            mix: vec![0; config.frame_samples()],
            out: vec![0; config.frame_samples()],
        }
    }

    fn tick(&mut self, t: &Tick, mic: &[i16]) {
        for d in &t.datagrams {
            if let Ok(ClientEvent::Media { frame, .. }) = self.client.receive(d) {
                if let Ok(member) = self.media.sender_of(frame).map(|(member, _)| member) {
                    if let Some((_, r, _)) = self.receivers.iter_mut().find(|(m, ..)| *m == member)
                    {
                        r.push(frame, &mut self.media, t.now);
                    }
                }
            }
        }
        let opus = self.sender.encode_i16(mic).unwrap();
        self.frame.clear();
        self.media
            .seal(
                sotto::keys::StreamId::MICROPHONE,
                opus,
                &mut self.frame,
                t.now,
            )
            .unwrap();
        self.datagram.clear();
        self.client
            .media(&self.token, &self.frame, &mut self.datagram)
            .unwrap();
        black_box(&self.datagram);
        self.mix.fill(0);
        for (_, r, pcm) in &mut self.receivers {
            if r.pull_i16(&mut self.media, pcm, t.now).unwrap() != Pulled::Idle {
                for (acc, s) in self.mix.iter_mut().zip(pcm.iter()) {
                    *acc += i32::from(*s);
                }
            }
        }
        for (o, s) in self.out.iter_mut().zip(&self.mix) {
            *o = (*s).clamp(-32768, 32767) as i16;
        }
        black_box(&self.out);
    }

    fn decoded(&self) -> u64 {
        self.receivers
            .iter()
            .map(|(_, r, _)| r.stats().decoded)
            .sum()
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn call(c: &mut Criterion) {
    let config = CallConfig {
        // Steady state: no commit during the benchmark.
        self_update_every: None,
        ..CallConfig::default()
    };
    let all: Vec<usize> = (0..MEMBERS).collect();
    let mut voices: Vec<voice::Voice> = (0..MEMBERS).map(voice::Voice::new).collect();
    let mut fill = |i: usize, pcm: &mut [i16]| voices[i].fill(pcm);
    let mut room = CallRoom::build(MEMBERS, &config, Instant::now(), &all, &all, &mut fill);
    assert!(
        room.run_until(
            Duration::from_secs(20),
            &all,
            &all,
            &mut fill,
            CallRoom::converged
        ),
        "the room never converged"
    );
    // Past the grace period of the epochs left behind while building: one epoch held.
    room.run(Duration::from_secs(11), &all, &all, &mut fill);
    let listener = room.detach(LISTENER);
    assert_eq!(listener.media().tokens().count(), 1);
    let parts_conn = room.add_raw();
    let mut parts = Parts::new(&mut room, &listener, parts_conn);
    let mut engine = Engine {
        out: vec![0; listener.frame_samples()],
        call: listener,
        datagram: Vec::new(),
    };
    let mut mic_voice = voice::Voice::new(LISTENER);
    let mic: Vec<Vec<i16>> = (0..MIC_FRAMES)
        .map(|_| {
            let mut f = vec![0; engine.call.frame_samples()];
            mic_voice.fill(&mut f);
            f
        })
        .collect();
    let mut world = World {
        room,
        voices: (0..MEMBERS).map(voice::Voice::new).collect(),
        speakers: (0..LISTENER).collect(),
        ticks: 0,
    };
    // Both sides reach steady playback (the parts' receivers start empty).
    for _ in 0..100 {
        let (e, p) = world.next(parts_conn);
        engine.tick(&e, &mic[e.mic]);
        parts.tick(&p, &mic[p.mic]);
    }

    let mut group = c.benchmark_group("call");
    let (d0, t0) = (engine.decoded(), world.ticks);
    group.bench_function("engine", |b| {
        b.iter_batched_ref(
            || world.next(parts_conn).0,
            |t| engine.tick(t, &mic[t.mic]),
            BatchSize::SmallInput,
        )
    });
    let engine_rate = (engine.decoded() - d0) as f64 / (world.ticks - t0) as f64;
    let (d0, t0) = (parts.decoded(), world.ticks);
    group.bench_function("parts", |b| {
        b.iter_batched_ref(
            || world.next(parts_conn).1,
            |t| parts.tick(t, &mic[t.mic]),
            BatchSize::SmallInput,
        )
    });
    let parts_rate = (parts.decoded() - d0) as f64 / (world.ticks - t0) as f64;
    group.finish();
    println!("frames decoded per tick: engine {engine_rate:.3}, parts {parts_rate:.3} (of 7)");
    for v in engine.call.voices() {
        assert_eq!(
            v.stats.auth_failures + v.stats.replays + v.stats.rejected,
            0
        );
    }

    // The two interleaved, tick by tick (each given the same frames), after both are back
    // in steady playback.
    for _ in 0..100 {
        let (e, p) = world.next(parts_conn);
        engine.tick(&e, &mic[e.mic]);
        parts.tick(&p, &mic[p.mic]);
    }
    let (d0, p0) = (engine.decoded(), parts.decoded());
    const TICKS: usize = 3000;
    let mut e = Vec::with_capacity(TICKS);
    let mut p = Vec::with_capacity(TICKS);
    for k in 0..TICKS {
        let (te, tp) = world.next(parts_conn);
        // Alternate which goes first (the second may find the frames' bytes in cache).
        let mut time_engine = || {
            let start = Instant::now();
            engine.tick(&te, &mic[te.mic]);
            e.push(start.elapsed());
        };
        let mut time_parts = || {
            let start = Instant::now();
            parts.tick(&tp, &mic[tp.mic]);
            p.push(start.elapsed());
        };
        if k % 2 == 0 {
            time_engine();
            time_parts();
        } else {
            time_parts();
            time_engine();
        }
    }
    println!(
        "interleaved: frames decoded per tick: engine {:.3}, parts {:.3} (of 7)",
        (engine.decoded() - d0) as f64 / TICKS as f64,
        (parts.decoded() - p0) as f64 / TICKS as f64
    );
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    let (me, mp) = (mean(&e), mean(&p));
    let (de, dp) = (median(&mut e), median(&mut p));
    println!(
        "interleaved, {TICKS} ticks each: engine median {de:?} mean {me:?}; parts median {dp:?} \
         mean {mp:?}; engine/parts median {:.3}, mean {:.3}",
        de.as_secs_f64() / dp.as_secs_f64(),
        me.as_secs_f64() / mp.as_secs_f64()
    );
}

criterion_group!(benches, call);
criterion_main!(benches);
