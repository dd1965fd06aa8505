//! Several streams per member (a microphone and shared music, say): each stream is its own
//! KID context value with its own key, counter and replay window. Two streams per member,
//! interleaved, decode bit-exact at every receiver; frames replayed across streams, or
//! moved to another stream, are refused; a stream the room does not have opens nothing and
//! costs receivers no key; a member's move to a new epoch on one stream does not cut its
//! other stream's frames still in flight.
#![cfg(feature = "opus")]

mod common;

#[path = "../examples/common/voice.rs"]
mod voice;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{deliver_commit, ms, room_of, Member};
use sotto::audio::{AudioConfig, AudioReceiver, AudioSender, Pulled, SAMPLE_RATE};
use sotto::frame::{FrameError, Header};
use sotto::keys::{KeyError, KidLayout, MemberId, StreamId};
use sotto::media::MediaConfig;
use sotto::room::{RoomConfig, RoomParams};
use voice::Voice;

const FRAME: usize = (SAMPLE_RATE / 50) as usize; // 20 ms mono
const FRAMES: usize = 100;
const MUSIC: StreamId = StreamId(1);

/// Decoded PCM frames, in order.
type Frames = Vec<Vec<i16>>;

fn pcm(seed: usize) -> Vec<Vec<i16>> {
    let mut v = Voice::new(seed);
    (0..FRAMES)
        .map(|_| {
            let mut f = vec![0i16; FRAME];
            v.fill(&mut f);
            f
        })
        .collect()
}

/// What a plain decoder makes of `pcm` through a fresh encoder (no crypto).
fn reference(pcm: &[Vec<i16>]) -> Vec<Vec<i16>> {
    let config = AudioConfig::default();
    let mut encoder = AudioSender::new(&config).unwrap();
    let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).unwrap();
    pcm.iter()
        .map(|f| {
            let packet = encoder.encode_i16(f).unwrap();
            let mut out = vec![0i16; FRAME];
            decoder.decode(packet, &mut out, false).unwrap();
            out
        })
        .collect()
}

fn room(names: &[&str], t0: Instant) -> Vec<Member> {
    room_of(names, RoomConfig::default(), MediaConfig::default(), t0)
}

#[test]
#[allow(clippy::needless_range_loop)]
fn two_streams_per_member_interleaved_decode_bit_exact_at_every_receiver() {
    let t0 = Instant::now();
    let mut m = room(&["alice", "bob", "carol"], t0);
    assert_eq!(m[0].room.params().streams(), 4, "default: 2 stream bits");
    let t1 = t0 + Duration::from_secs(1);
    let config = AudioConfig::default();
    let streams = [StreamId::MICROPHONE, MUSIC];
    // Every (member, stream) speaks its own signal through its own encoder.
    let mut senders: Vec<Vec<AudioSender>> = (0..3)
        .map(|_| {
            streams
                .iter()
                .map(|s| AudioSender::new(&config).unwrap().with_stream(*s))
                .collect()
        })
        .collect();
    let signals: Vec<Vec<Vec<Vec<i16>>>> = (0..3)
        .map(|i| (0..2).map(|s| pcm(2 * i + s)).collect())
        .collect();
    // Each receiver keeps one AudioReceiver per (member, stream), made as frames arrive,
    // routed by the KID before opening (as the call engine does).
    let mut receivers: Vec<BTreeMap<(MemberId, StreamId), AudioReceiver>> =
        (0..3).map(|_| BTreeMap::new()).collect();
    let mut heard: Vec<BTreeMap<(MemberId, StreamId), Frames>> =
        (0..3).map(|_| BTreeMap::new()).collect();
    let mut out = vec![0i16; FRAME];
    for k in 0..FRAMES + 2 {
        let now = t1 + ms(20 * k as u64);
        if k < FRAMES {
            // Interleaved: each member's streams alternate which goes first.
            for i in 0..3 {
                for j in 0..2 {
                    let s = (j + k + i) % 2;
                    let packet = senders[i][s]
                        .send_i16(&signals[i][s][k], &mut m[i].media, now)
                        .unwrap();
                    for r in (0..3).filter(|r| *r != i) {
                        let sender = m[r].media.sender_of(&packet).unwrap();
                        assert_eq!(sender.1, streams[s]);
                        receivers[r]
                            .entry(sender)
                            .or_insert_with(|| AudioReceiver::new(&config).unwrap())
                            .push(&packet, &mut m[r].media, now);
                    }
                }
            }
        }
        for r in 0..3 {
            for (who, receiver) in receivers[r].iter_mut() {
                if receiver.pull_i16(&mut m[r].media, &mut out, now).unwrap() == Pulled::Decoded {
                    heard[r].entry(*who).or_default().push(out.clone());
                }
            }
        }
    }
    for r in 0..3 {
        assert_eq!(receivers[r].len(), 4, "two streams of two members");
        for (i, member) in m.iter().enumerate().filter(|(i, _)| *i != r) {
            let own = member.room.own_leaf();
            let id = m[r]
                .room
                .members()
                .iter()
                .find(|x| x.id.leaf == own)
                .unwrap()
                .id;
            for (s, stream) in streams.iter().enumerate() {
                let receiver = &receivers[r][&(id, *stream)];
                assert_eq!(receiver.stream(), Some(*stream));
                assert_eq!(receiver.member(), Some(id));
                let stats = receiver.stats();
                assert_eq!((stats.decoded, stats.concealed), (FRAMES as u64, 0));
                assert!(
                    heard[r][&(id, *stream)] == reference(&signals[i][s]),
                    "{} hears {}'s stream {} not bit-exact",
                    m[r].name,
                    member.name,
                    stream.0
                );
            }
        }
    }
}

/// Seals `payload` on `stream` of member `i`.
fn seal(m: &mut [Member], i: usize, stream: StreamId, payload: &[u8], now: Instant) -> BytesMut {
    let mut out = BytesMut::new();
    m[i].media.seal(stream, payload, &mut out, now).unwrap();
    out
}

/// Rewrites a frame's KID to name `stream` (the header is rebuilt; the ciphertext and tag
/// are the original's).
fn moved_to(frame: &[u8], stream: u64, layout: KidLayout) -> Vec<u8> {
    let (header, len) = Header::parse(frame).unwrap();
    let parts = layout.decompose(header.kid);
    let kid = layout
        .compose(stream, parts.leaf, parts.epoch_bits)
        .unwrap();
    let moved = Header { kid, ..header };
    let mut out = vec![0u8; 32];
    let n = moved.encode(&mut out).unwrap();
    out.truncate(n);
    out.extend_from_slice(&frame[len..]);
    out
}

#[test]
fn frames_replayed_or_moved_across_streams_are_refused() {
    let t0 = Instant::now();
    let mut m = room(&["alice", "bob"], t0);
    let t1 = t0 + Duration::from_secs(1);
    let layout = m[0].room.params().layout;
    // Counters are per stream: both streams' first frames have counter 0, and both open.
    let mic = seal(&mut m, 0, StreamId::MICROPHONE, b"microphone", t1);
    let music = seal(&mut m, 0, MUSIC, b"music", t1);
    assert_eq!(Header::parse(&mic).unwrap().0.ctr, 0);
    assert_eq!(Header::parse(&music).unwrap().0.ctr, 0);
    let (a, pa) = m[1].open(&mic, t1).unwrap();
    let (b, pb) = m[1].open(&music, t1).unwrap();
    assert_eq!(
        (a.stream, pa.as_slice()),
        (StreamId::MICROPHONE, &b"microphone"[..])
    );
    assert_eq!((b.stream, pb.as_slice()), (MUSIC, &b"music"[..]));
    // A replay on either stream is refused by that stream's window.
    for frame in [&mic, &music] {
        assert_eq!(
            m[1].open(frame, t1).unwrap_err(),
            KeyError::Frame(FrameError::Replayed)
        );
    }
    // The microphone frame presented as stream 2 (a stream never used, same counter, so
    // no window has seen it): the KID is authenticated, so it does not open.
    let forged = moved_to(&mic, 2, layout);
    assert_eq!(
        m[1].open(&forged, t1).unwrap_err(),
        KeyError::Frame(FrameError::AuthenticationFailed)
    );
    // The music frame as the microphone's next counter would be: the same.
    let forged = moved_to(&music, 0, layout);
    assert!(m[1].open(&forged, t1).is_err());
    // A stream the room does not have (2 stream bits: streams 0 to 3): refused before any
    // key is derived for it.
    let keys_before = m[1].media.ring().unwrap().derived_keys();
    let outside = moved_to(&mic, 4, layout);
    assert_eq!(
        m[1].open(&outside, t1).unwrap_err(),
        KeyError::UnknownStream { stream: 4 }
    );
    assert_eq!(m[1].media.ring().unwrap().derived_keys(), keys_before);
    let mut out = BytesMut::new();
    assert_eq!(
        m[0].media
            .seal(StreamId(4), b"x", &mut out, t1)
            .unwrap_err(),
        KeyError::UnknownStream { stream: 4 }
    );
    // The genuine next frames still open on both streams.
    let mic2 = seal(&mut m, 0, StreamId::MICROPHONE, b"mic again", t1);
    assert_eq!(m[1].open(&mic2, t1).unwrap().0.ctr, 1);
    let music2 = seal(&mut m, 0, MUSIC, b"music again", t1);
    assert_eq!(m[1].open(&music2, t1).unwrap().0.ctr, 1);
}

/// A room with 4 stream bits (16 streams): a member's frames on all of them open, each with
/// its own counter, and a forger sending every KID context value derives at most the room's
/// streams' keys.
#[test]
fn the_number_of_streams_is_a_room_parameter() {
    let t0 = Instant::now();
    let config = RoomConfig {
        params: RoomParams {
            stream_bits: 4,
            ..RoomParams::default()
        },
        ..RoomConfig::default()
    };
    let mut m = room_of(&["alice", "bob"], config, MediaConfig::default(), t0);
    let t1 = t0 + Duration::from_secs(1);
    let layout = m[0].room.params().layout;
    for s in 0..16u8 {
        let frame = seal(&mut m, 0, StreamId(s), &[s; 10], t1);
        let (r, payload) = m[1].open(&frame, t1).unwrap();
        assert_eq!((r.stream, r.ctr, payload), (StreamId(s), 0, vec![s; 10]));
    }
    let frame = seal(&mut m, 0, StreamId::MICROPHONE, b"x", t1);
    let derived = m[1].media.ring().unwrap().derived_keys();
    for stream in 16..300u64 {
        let forged = moved_to(&frame, stream, layout);
        assert!(m[1].open(&forged, t1).is_err());
    }
    assert_eq!(m[1].media.ring().unwrap().derived_keys(), derived);
}

/// After an epoch change, a member's first microphone frame of the new epoch arrives before
/// its last music frames of the old one: those still open (each stream is superseded on its
/// own, by its own first frame of the newer epoch); once music moved too, its old frames
/// above what opened are refused.
#[test]
fn a_new_epoch_on_one_stream_does_not_cut_the_other_streams_frames_in_flight() {
    let t0 = Instant::now();
    let mut m = room(&["alice", "bob", "carol"], t0);
    // A removal first, so the epochs after it are ones no removed member holds (the only
    // epochs whose frames supersede older ones).
    let carol = m[2].room.own_leaf();
    let commit = m[0].room.remove(&[carol]).unwrap();
    deliver_commit(&mut m, 0, commit, t0);
    m.truncate(2);
    let t1 = t0 + Duration::from_secs(2);
    let old_epoch = m[0].room.epoch();
    let music_old: Vec<BytesMut> = (0..4u8)
        .map(|k| seal(&mut m, 0, MUSIC, &[k; 8], t1))
        .collect();
    m[1].open(&music_old[0], t1).unwrap();
    let commit = m[0].room.self_update().unwrap();
    deliver_commit(&mut m, 0, commit, t1);
    let t2 = t1 + Duration::from_secs(1);
    let mic_new = seal(&mut m, 0, StreamId::MICROPHONE, b"new epoch", t2);
    assert_eq!(m[1].open(&mic_new, t2).unwrap().0.epoch, old_epoch + 1);
    for (k, frame) in music_old.iter().enumerate().take(3).skip(1) {
        let (r, payload) = m[1].open(frame, t2).unwrap();
        assert_eq!(
            (r.stream, r.epoch, payload),
            (MUSIC, old_epoch, vec![k as u8; 8])
        );
    }
    let music_new = seal(&mut m, 0, MUSIC, b"new epoch music", t2);
    assert_eq!(m[1].open(&music_new, t2).unwrap().0.epoch, old_epoch + 1);
    assert_eq!(
        m[1].open(&music_old[3], t2).unwrap_err(),
        KeyError::Superseded
    );
}
