//! The call engine in steady state: no heap allocation per 20 ms tick for a member hearing
//! 7 speakers, and the memory one `Call` holds in a 50-member room. Both measured with a
//! counting global allocator (`common/counting_alloc.rs`) around a room of real `Call`s
//! over sotto's relay `Router` (`common/call_room.rs`).
#![cfg(feature = "opus")]

#[path = "common/call_room.rs"]
mod call_room;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "../examples/common/voice.rs"]
mod voice;

use std::hint::black_box;
use std::os::raw::c_int;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use call_room::CallRoom;
use counting_alloc::{allocations_in, heap_change_in};
use openmls_traits::OpenMlsProvider as _;
use sotto::audio::{AudioConfig, AudioReceiver, AudioSender};
use sotto::call::{Call, CallConfig};
use sotto::frame::CipherSuite;
use sotto::keys::{KidLayout, MemberId};
use sotto::media::{ChannelToken, EpochKeys, EpochStatus, MediaConfig, MediaSession};

// libopus (linked through the `opus` crate) allocates its encoder and decoder states with
// `malloc`, unseen by the Rust allocator: their sizes come from libopus itself.
extern "C" {
    fn opus_decoder_get_size(channels: c_int) -> c_int;
    fn opus_encoder_get_size(channels: c_int) -> c_int;
}

/// A config with no periodic self-update: steady state has no commits.
fn config() -> CallConfig {
    CallConfig {
        self_update_every: None,
        ..CallConfig::default()
    }
}

fn voices(n: usize) -> Vec<voice::Voice> {
    (0..n).map(voice::Voice::new).collect()
}

/// One tick of a detached listener: the datagrams the relay sent it, its due timeout, a
/// frame sent and one pulled, its datagrams drained into a reused buffer.
fn listener_tick(
    call: &mut Call,
    datagrams: &[Vec<u8>],
    now: Instant,
    mic: &[i16],
    out: &mut [i16],
    datagram: &mut Vec<u8>,
) {
    for d in datagrams {
        call.handle_datagram(d, now).unwrap();
    }
    if call.poll_timeout().is_some_and(|t| t <= now) {
        call.handle_timeout(now);
    }
    call.send_audio(mic, now).unwrap();
    call.pull_audio(out, now).unwrap();
    while call.poll_transmit(datagram) {
        black_box(&datagram);
    }
}

#[test]
fn a_listener_hearing_7_speakers_does_not_allocate_per_tick() {
    const MEMBERS: usize = 8;
    const LISTENER: usize = MEMBERS - 1;
    let speakers: Vec<usize> = (0..LISTENER).collect();
    let all: Vec<usize> = (0..MEMBERS).collect();
    let mut v = voices(MEMBERS);
    let mut voice = |i: usize, pcm: &mut [i16]| v[i].fill(pcm);
    let mut room = CallRoom::build(MEMBERS, &config(), Instant::now(), &all, &all, &mut voice);
    assert!(
        room.run_until(
            Duration::from_secs(20),
            &all,
            &all,
            &mut voice,
            CallRoom::converged
        ),
        "the room never converged"
    );
    // Past the grace period of the epochs left behind while building.
    room.run(Duration::from_secs(11), &all, &all, &mut voice);
    let mut call = room.detach(LISTENER);
    let mut mic_voice = voice::Voice::new(LISTENER);
    let mut mic = vec![0i16; call.frame_samples()];
    let mut out = vec![0i16; call.frame_samples()];
    let mut datagram = Vec::new();
    let mut total = 0;
    let mut sanity = None;
    let mut before = None;
    for tick in 0..=700 {
        room.tick(&speakers, &[], &mut voice);
        let datagrams = std::mem::take(&mut room.inbox[LISTENER]);
        assert_eq!(datagrams.len(), speakers.len(), "one frame per speaker");
        let now = room.now;
        mic_voice.fill(&mut mic);
        if tick == 200 {
            before = Some((
                call.voices().map(|v| v.stats.decoded).sum::<u64>(),
                call.stats().frames_sent,
            ));
        }
        if tick == 700 {
            // The counter counts here: one more tick, plus one deliberate allocation.
            sanity = Some(allocations_in(|| {
                listener_tick(&mut call, &datagrams, now, &mic, &mut out, &mut datagram);
                black_box(Vec::<u8>::with_capacity(1));
            }));
            continue;
        }
        let n = allocations_in(|| {
            listener_tick(&mut call, &datagrams, now, &mic, &mut out, &mut datagram);
        });
        if tick >= 200 {
            total += n;
        }
    }
    assert_eq!(
        sanity,
        Some(1),
        "the counter must see exactly the deliberate allocation"
    );
    // The 500 ticks (and the sanity one) did real work: every speaker's frames decoded,
    // every frame sent.
    let (decoded, sent) = before.unwrap();
    let decoded = call.voices().map(|v| v.stats.decoded).sum::<u64>() - decoded;
    assert!(
        decoded >= 7 * 495,
        "decoded only {decoded} frames in 500 ticks"
    );
    assert_eq!(call.stats().frames_sent - sent, 501);
    for v in call.voices() {
        assert_eq!(
            v.stats.auth_failures + v.stats.replays + v.stats.rejected,
            0
        );
    }
    assert_eq!(
        total, 0,
        "{total} heap allocations in 500 steady-state ticks"
    );
}

/// Rust heap bytes held by a fresh `AudioReceiver` (its jitter-buffer slots are allocated
/// up front).
fn receiver_bytes(config: &AudioConfig) -> isize {
    let (receiver, bytes) = heap_change_in(|| AudioReceiver::new(config).unwrap());
    drop(receiver);
    bytes
}

/// Rust heap bytes of a media session of a `members`-member room that has opened frames
/// of `heard` senders and sealed one of its own.
fn media_bytes(members: u32, heard: u32) -> isize {
    let t0 = Instant::now();
    let config = MediaConfig::default();
    let suite = CipherSuite::AesCtr128HmacSha256_80;
    let keys = |own| {
        EpochKeys::assume_unique_for_key(
            7,
            EpochStatus::Current,
            suite,
            KidLayout::default(),
            0,
            (0..members).map(|leaf| MemberId { leaf, tag: 0 }).collect(),
            own,
            ChannelToken([3; 16]),
            vec![0x42; suite.key_len()],
        )
    };
    let now = t0 + config.switch_delay;
    let mut senders: Vec<MediaSession> = (1..=heard)
        .map(|leaf| {
            let mut m = MediaSession::new(config);
            m.apply(keys(leaf), t0).unwrap();
            m
        })
        .collect();
    let mut frames = Vec::new();
    for s in &mut senders {
        let mut f = BytesMut::new();
        s.seal(sotto::keys::StreamId::MICROPHONE, &[0x11; 80], &mut f, now)
            .unwrap();
        frames.push(f);
    }
    let (session, bytes) = heap_change_in(|| {
        let mut m = MediaSession::new(config);
        m.apply(keys(0), t0).unwrap();
        let mut plain = BytesMut::with_capacity(256);
        for f in &frames {
            plain.clear();
            m.open(f, &mut plain, now).unwrap();
        }
        let mut sealed = BytesMut::with_capacity(256);
        m.seal(
            sotto::keys::StreamId::MICROPHONE,
            &[0x22; 80],
            &mut sealed,
            now,
        )
        .unwrap();
        drop((plain, sealed));
        m
    });
    drop(session);
    bytes
}

#[test]
fn memory_of_one_call_in_a_50_member_room() {
    const MEMBERS: usize = 50;
    const LISTENER: usize = MEMBERS - 1;
    let speakers: Vec<usize> = (0..7).collect();
    let listener = [LISTENER];
    let mut v = voices(7);
    let mut voice = |i: usize, pcm: &mut [i16]| v[i].fill(pcm);
    let mut room = CallRoom::build(
        MEMBERS,
        &config(),
        Instant::now(),
        &speakers,
        &listener,
        &mut voice,
    );
    // Settled: past the grace period of every epoch left behind while building, hearing
    // the 7 speakers.
    room.run(Duration::from_secs(12), &speakers, &listener, &mut voice);
    let call = room.detach(LISTENER);
    assert_eq!(call.room().unwrap().members().len(), MEMBERS);
    assert_eq!(call.voices().count(), MEMBERS - 1);
    let heard = call.voices().filter(|v| v.stats.decoded > 500).count();
    assert_eq!(heard, 7, "the listener hears the 7 speakers");
    assert_eq!(call.media().tokens().count(), 1, "one epoch held");

    // The openmls provider's storage (the serialized group, its secrets and this member's
    // keys), payload bytes only.
    let storage = call
        .room()
        .unwrap()
        .provider()
        .storage()
        .stored_bytes()
        .unwrap();
    // Everything the Call owns on the Rust heap is freed when it is dropped.
    let ((), freed) = heap_change_in(move || drop(call));
    let total = -freed;

    let audio = AudioConfig::default();
    let receiver = receiver_bytes(&audio);
    let (sender, sender_bytes) = heap_change_in(|| AudioSender::new(&audio).unwrap());
    drop(sender);
    let media = media_bytes(MEMBERS as u32, 7);
    let peers = MEMBERS as isize - 1;
    // SAFETY: plain libopus size queries.
    let (decoder, encoder) = unsafe {
        (
            opus_decoder_get_size(audio.channels.count() as c_int) as isize,
            opus_encoder_get_size(audio.channels.count() as c_int) as isize,
        )
    };
    let opus_c = peers * decoder + encoder;
    let receivers = peers * receiver;
    let pcm = peers * (audio.frame_samples() * 2) as isize;
    let rest = total - receivers - pcm - sender_bytes - media;
    let kib = |b: isize| b as f64 / 1024.0;
    println!("memory of one Call in a {MEMBERS}-member room, hearing 7 speakers:");
    println!("  Rust heap, total             {:>9.1} KiB", kib(total));
    println!(
        "    {peers} AudioReceivers (Rust)  {:>9.1} KiB ({:.1} KiB each: jitter slots)",
        kib(receivers),
        kib(receiver)
    );
    println!("    {peers} per-member PCM frames {:>9.1} KiB", kib(pcm));
    println!(
        "    AudioSender (Rust)         {:>9.1} KiB",
        kib(sender_bytes)
    );
    println!("    MediaSession (standalone)  {:>9.1} KiB", kib(media));
    println!(
        "    rest: openmls group, provider storage ({:.1} KiB payload), identity, transport, queues {:.1} KiB",
        storage as f64 / 1024.0,
        kib(rest)
    );
    println!(
        "  C heap (libopus): {peers} decoders × {decoder} B + encoder {encoder} B = {:.1} KiB",
        kib(opus_c)
    );
    println!(
        "  total                        {:>9.1} KiB",
        kib(total + opus_c)
    );
    // The bound: measured 656 KiB (the openmls state of 50 members and its storage about
    // 300 KiB, 49 receivers about 5 KiB each, their PCM frames 92 KiB). 1.5 MiB is about
    // twice that: it catches a per-member structure growing several-fold (the receivers'
    // jitter slots used to be allocated at the largest Opus packet, 80 KiB per receiver,
    // 4.5 MiB in all) or a leak that scales with frames received, not small drift.
    assert!(total > 0);
    assert!(
        total < 3 << 19,
        "one Call holds {:.1} KiB of Rust heap",
        kib(total)
    );
    assert!(opus_c < 4 << 20, "libopus states: {:.1} KiB", kib(opus_c));
}
