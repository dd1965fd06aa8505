//! sotto through a real SFU: three members of one MLS room publish sealed Opus as RTP
//! audio and a commit on a data channel through an unmodified Janus VideoRoom
//! (`require_e2ee`, recording on), each subscribing to the others; then what Janus kept
//! (its recordings and its logs) is searched for every credential, every 8-byte run of
//! plaintext Opus and PCM, and the room's MLS group id.
//!
//! Loopback only, as a hard rule: the test re-runs itself in a network sandbox whose only
//! address is 127.0.0.1 (`common/janus.rs`), checks that, and checks that every candidate
//! either side offers is 127.0.0.1 before any media flows. Janus must be installed
//! (`apt-get install janus`); without it the test fails, it is never skipped.
#![cfg(feature = "webrtc")]

mod common;
#[path = "../examples/common/janus.rs"]
mod janus;
#[path = "../examples/common/voice.rs"]
mod voice;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{room_of, Member};
use janus::Link;
use serde_json::{json, Value};
use sotto::audio::{AudioConfig, AudioSender};
use sotto::call::sealed;
use sotto::media::MediaConfig;
use sotto::room::RoomConfig;
use sotto::rtp::{open_payload, seal_payload, PayloadMode};
use sotto::webrtc::{candidate_addresses, PeerEvent};
use str0m::media::Direction;

const PORT: u16 = 18_089;
const NAMES: [&str; 3] = [
    "alice@sotto.example",
    "bob@sotto.example",
    "carol@sotto.example",
];
/// Frames each member sends (20 ms each).
const FRAMES: usize = 500;
/// The frame at which alice commits a self-update (sent on her data channel).
const COMMIT_AT: usize = 200;

struct World {
    links: Vec<Link>,
    sent_to: HashSet<SocketAddr>,
    session: janus::Session,
}

impl World {
    fn pump(&mut self) {
        for l in &mut self.links {
            l.pump(&mut self.sent_to);
        }
    }

    /// Pumps until Janus sends `handle` an event matching `pred` (20 s at most).
    fn wait(&mut self, handle: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = self.session.take(handle, &pred) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} from janus; events: {:?}",
                self.session.seen()
            );
            self.pump();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn pump_until(&mut self, what: &str, mut done: impl FnMut(&World) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.pump();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn distinct(w: &[u8]) -> usize {
    w.iter().collect::<HashSet<_>>().len()
}

/// Informative 8-byte windows of `packets` (at least 5 distinct bytes), and how many of them
/// occur in `haystack`.
fn runs_found(packets: &[Vec<u8>], haystack: &HashSet<[u8; 8]>) -> (usize, usize) {
    let (mut checked, mut found) = (0, 0);
    for p in packets {
        for w in p.windows(8) {
            if distinct(w) < 5 {
                continue;
            }
            checked += 1;
            if haystack.contains(<&[u8; 8]>::try_from(w).unwrap()) {
                found += 1;
            }
        }
    }
    (checked, found)
}

#[test]
fn sealed_audio_and_a_commit_cross_janus_which_learns_nothing() {
    if !janus::inside_sandbox() {
        assert!(
            janus::rerun_in_sandbox(&[
                "--exact",
                "sealed_audio_and_a_commit_cross_janus_which_learns_nothing",
                "--nocapture",
                "--test-threads=1",
            ]),
            "the run inside the sandbox failed (see above)"
        );
        return;
    }
    // Inside: 127.0.0.1 is the only address.
    assert_eq!(janus::addresses(), vec!["127.0.0.1/32".to_string()]);
    let mut server = janus::Janus::start(PORT);

    let t0 = Instant::now();
    let mut members: Vec<Member> = room_of(
        &NAMES,
        RoomConfig::default(),
        MediaConfig::default(),
        t0 - Duration::from_secs(5),
    );
    let group_id = members[0].room.group_id().to_vec();
    // The VideoRoom id: opaque, from the room's exporter, never a name.
    let secret = members[0]
        .room
        .export_secret("test: janus room id", b"", 8)
        .unwrap();
    let room_id = u64::from_be_bytes(secret[..8].try_into().unwrap()) >> 12;

    let mut world = World {
        links: Vec::new(),
        sent_to: HashSet::new(),
        session: janus::Session::new(PORT),
    };
    let admin = world.session.attach();
    let r = world.session.message(
        admin,
        json!({"request": "create", "room": room_id, "audiocodec": "opus",
               "require_e2ee": true, "publishers": 8, "audiolevel_ext": false,
               "audiolevel_event": false, "record": true,
               "rec_dir": server.dir.join("rec").display().to_string()}),
        None,
    );
    assert_eq!(r["plugindata"]["data"]["videoroom"], "created", "{r}");

    // Publishers: audio out and a data channel, marked end-to-end encrypted.
    let mut sdps: Vec<String> = Vec::new();
    let mut feeds = Vec::new();
    for _ in &members {
        let handle = world.session.attach();
        world.session.message(
            handle,
            json!({"request": "join", "ptype": "publisher", "room": room_id}),
            None,
        );
        let joined = world.wait(handle, "joined", |e| {
            e["plugindata"]["data"]["videoroom"] == "joined"
        });
        let feed = joined["plugindata"]["data"]["id"].as_u64().unwrap();
        let mut link = Link::new(Instant::now());
        let offer = link.peer.offer(Direction::SendOnly, true).unwrap();
        sdps.push(offer.clone());
        world.session.message(
            handle,
            json!({"request": "publish"}),
            Some(json!({"type": "offer", "sdp": offer, "e2ee": true})),
        );
        world.links.push(link);
        let answer = world.wait(handle, "publish answer", |e| e["jsep"].is_object());
        assert_eq!(answer["jsep"]["e2ee"], true);
        let sdp = answer["jsep"]["sdp"].as_str().unwrap().to_string();
        sdps.push(sdp.clone());
        let i = world.links.len() - 1;
        world.links[i].peer.accept_answer(&sdp).unwrap();
        world.wait(handle, "publisher webrtcup", |e| e["janus"] == "webrtcup");
        feeds.push(feed);
    }
    // Subscribers: each member to the others' audio and data.
    for (i, _) in members.iter().enumerate() {
        let handle = world.session.attach();
        let streams: Vec<Value> = feeds
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, f)| json!({"feed": f}))
            .collect();
        world.session.message(
            handle,
            json!({"request": "join", "ptype": "subscriber", "room": room_id, "streams": streams}),
            None,
        );
        let offer = world.wait(handle, "subscriber offer", |e| e["jsep"].is_object());
        let sdp = offer["jsep"]["sdp"].as_str().unwrap().to_string();
        sdps.push(sdp.clone());
        let mut link = Link::new(Instant::now());
        let answer = link.peer.accept_offer(&sdp).unwrap();
        sdps.push(answer.clone());
        world.links.push(link);
        world.session.message(
            handle,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer})),
        );
        world.wait(handle, "subscriber webrtcup", |e| e["janus"] == "webrtcup");
    }
    // Every candidate either side offered is on 127.0.0.1, before any media.
    let candidates: Vec<SocketAddr> = sdps.iter().flat_map(|s| candidate_addresses(s)).collect();
    assert!(candidates.len() >= 2 * members.len());
    for c in &candidates {
        assert!(
            c.ip().is_loopback() && c.ip().to_string() == "127.0.0.1",
            "{c}"
        );
    }
    let n = members.len();
    world.pump_until("every peer connected", |w| {
        w.links.iter().all(|l| l.peer.is_connected())
    });
    // Subscribers open a channel of their own: Janus relays data only then.
    for l in &mut world.links[n..] {
        l.peer.open_channel();
    }
    world.pump_until("data channels open", |w| {
        w.links
            .iter()
            .all(|l| l.events.contains(&PeerEvent::ChannelOpen))
    });

    // Talk: every member seals a frame every 20 ms; alice commits a self-update on her data
    // channel partway through.
    let audio = AudioConfig::default();
    let mut senders: Vec<AudioSender> = (0..n).map(|_| AudioSender::new(&audio).unwrap()).collect();
    let mut voices: Vec<voice::Voice> = (0..n).map(voice::Voice::new).collect();
    let mut opus_sent: Vec<Vec<u8>> = Vec::new();
    let mut pcm_sent: Vec<Vec<u8>> = Vec::new();
    let mut sealed_sent: Vec<Vec<u8>> = Vec::new();
    let mut pcm = vec![0i16; audio.frame_samples()];
    let mut opened: HashMap<(usize, u32), usize> = HashMap::new();
    let mut epochs_opened: HashSet<u64> = HashSet::new();
    let mut failures = 0;
    let mut commit_received = vec![false; n];
    let mut commit_bytes = Vec::new();
    let mut commit_plain = Vec::new();
    let mut channel = sotto::media::ChannelToken([0; 16]);
    let mut handshake_key = None;
    let start = Instant::now();
    let mut sealed_latency = Duration::ZERO;
    for frame in 0..FRAMES {
        let due = start + Duration::from_millis(20 * frame as u64);
        while Instant::now() < due {
            world.pump();
            std::thread::sleep(Duration::from_millis(1));
        }
        let now = Instant::now();
        if frame == COMMIT_AT {
            // Sealed as the call engine seals handshake messages: under the epoch's
            // handshake key, padded to its bucket (the SFU sees no MLS framing).
            let key = members[0].room.receive_keys().unwrap();
            let key = key.handshake_key().unwrap().clone();
            channel = members[0].room.channel_token().unwrap();
            let commit = members[0].room.self_update().unwrap();
            commit_plain = commit.message.clone();
            sealed::seal(
                &key,
                &channel,
                &commit.message,
                4096,
                60_000,
                &mut commit_bytes,
            )
            .unwrap();
            handshake_key = Some(key);
            assert!(world.links[0].peer.send_data(&commit_bytes).unwrap());
            members[0].apply_staged(commit.keys, now);
            members[0].confirm(now);
        }
        for (i, m) in members.iter_mut().enumerate() {
            voices[i].fill(&mut pcm);
            let t = Instant::now();
            let packet = senders[i].encode_i16(&pcm).unwrap().to_vec();
            let mut payload = BytesMut::new();
            seal_payload(
                PayloadMode::Sframe,
                &mut m.media,
                &packet,
                &mut payload,
                now,
            )
            .unwrap();
            sealed_latency += t.elapsed();
            world.links[i].peer.send_audio(&payload, now).unwrap();
            sealed_sent.push(payload.to_vec());
            opus_sent.push(packet);
            pcm_sent.push(pcm.iter().flat_map(|s| s.to_le_bytes()).collect());
        }
        world.pump();
        // Receive on the subscriber links.
        for (i, m) in members.iter_mut().enumerate() {
            for e in std::mem::take(&mut world.links[n + i].events) {
                match e {
                    PeerEvent::Audio { payload, .. } => {
                        let mut out = BytesMut::new();
                        match open_payload(
                            PayloadMode::Sframe,
                            &mut m.media,
                            &payload,
                            &mut out,
                            now,
                        ) {
                            Ok(r) => {
                                *opened.entry((i, r.leaf)).or_default() += 1;
                                epochs_opened.insert(r.epoch);
                            }
                            Err(_) => failures += 1,
                        }
                    }
                    PeerEvent::Data(bytes) => {
                        assert_eq!(bytes, commit_bytes, "only alice's commit travels");
                        let mut scratch = Vec::new();
                        let key = handshake_key.as_ref().unwrap();
                        let plain = sealed::open(key, &channel, &bytes, &mut scratch).unwrap();
                        m.process(plain, now);
                        commit_received[i] = true;
                    }
                    _ => {}
                }
            }
        }
    }
    // The last frames' trip.
    let settle = Instant::now() + Duration::from_millis(300);
    while Instant::now() < settle {
        world.pump();
        std::thread::sleep(Duration::from_millis(1));
    }
    let end = Instant::now();
    for (i, m) in members.iter_mut().enumerate() {
        for e in std::mem::take(&mut world.links[n + i].events) {
            if let PeerEvent::Audio { payload, .. } = e {
                let mut out = BytesMut::new();
                match open_payload(PayloadMode::Sframe, &mut m.media, &payload, &mut out, end) {
                    Ok(r) => *opened.entry((i, r.leaf)).or_default() += 1,
                    Err(_) => failures += 1,
                }
            }
        }
    }
    let codes: HashSet<String> = members
        .iter()
        .map(|m| m.room.safety_code().to_string())
        .collect();
    println!(
        "janus: {n} members, {FRAMES} frames each; opened per (listener, sender leaf): {opened:?}; \
         failures {failures}; epochs {epochs_opened:?}; seal (encode + seal) {:.1} µs per frame",
        sealed_latency.as_secs_f64() * 1e6 / (FRAMES * n) as f64
    );
    assert_eq!(failures, 0);
    assert!(commit_received[1] && commit_received[2] && !commit_received[0]);
    assert_eq!(codes.len(), 1, "safety codes agree after the commit");
    assert_eq!(epochs_opened.len(), 2, "frames of both epochs opened");
    for i in 0..n {
        for (j, speaker) in members.iter().enumerate() {
            if i != j {
                let leaf = speaker.room.own_leaf();
                assert_eq!(
                    opened.get(&(i, leaf)).copied().unwrap_or(0),
                    FRAMES,
                    "{i} opened every frame of {j}"
                );
            }
        }
    }
    // Every packet went to 127.0.0.1.
    for to in &world.sent_to {
        assert_eq!(to.ip().to_string(), "127.0.0.1");
    }

    // ---- What Janus kept ----
    world
        .session
        .message(admin, json!({"request": "destroy", "room": room_id}), None);
    world.session.destroy();
    server.stop();
    let files = server.files();
    let recordings: Vec<_> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "mjr"))
        .collect();
    assert!(
        recordings.len() >= n,
        "janus recorded every publisher: {files:?}"
    );
    let mut kept = Vec::new();
    for f in &files {
        kept.extend(std::fs::read(f).unwrap());
    }
    let recorded: u64 = recordings
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        recorded > (FRAMES * n * 40) as u64,
        "recordings hold the audio: {recorded} bytes"
    );
    let windows: HashSet<[u8; 8]> = kept
        .windows(8)
        .map(|w| <[u8; 8]>::try_from(w).unwrap())
        .collect();
    for name in NAMES {
        assert!(
            !kept.windows(name.len()).any(|w| w == name.as_bytes()),
            "{name} reached janus"
        );
    }
    // The MLS group id: in nothing Janus kept, its data channel's recording included:
    // the commit travelled sealed (its MLS framing carries the group id and epoch in the
    // clear; the search finds the group id in it).
    let has = |bytes: &[u8]| {
        bytes
            .windows(group_id.len())
            .any(|w| w == group_id.as_slice())
    };
    assert!(has(&commit_plain), "the bare commit carries the group id");
    let mut data_bytes = 0;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        if f.to_string_lossy().contains("-data-") {
            data_bytes += bytes.len();
        }
        assert!(!has(&bytes), "the group id is in {}", f.display());
    }
    assert!(
        data_bytes >= commit_bytes.len(),
        "janus recorded the sealed commit ({data_bytes} B of data recordings)"
    );
    // The control: what Janus forwarded (the sealed payloads) is in its recordings, so the
    // search below would find plaintext if it had been forwarded.
    let (sealed_checked, sealed_found) = runs_found(&sealed_sent, &windows);
    assert!(
        sealed_found * 100 >= sealed_checked * 99,
        "janus recorded {sealed_found} of {sealed_checked} sealed runs"
    );
    let (opus_checked, opus_found) = runs_found(&opus_sent, &windows);
    let (pcm_checked, pcm_found) = runs_found(&pcm_sent, &windows);
    println!(
        "janus kept {} bytes in {} files ({recorded} bytes of recordings): {sealed_found} of {sealed_checked} sealed runs (control), {opus_found} of {opus_checked} Opus runs, {pcm_found} of {pcm_checked} PCM runs found",
        kept.len(),
        files.len()
    );
    assert!(opus_checked > 10_000 && pcm_checked > 10_000);
    assert_eq!((opus_found, pcm_found), (0, 0));
    let _ = std::fs::remove_dir_all(&server.dir);
}
