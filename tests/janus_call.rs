//! The call engine over an unmodified Janus: three `Call`s with `JanusTransport`, audio
//! through a VideoRoom, handshake messages and Welcomes through TextRoom rooms. Alice
//! creates the room and invites Bob and Carol (Welcomes by TextRoom mailbox rooms), they
//! join and make their first commits, everyone talks, everyone self-updates, then Alice
//! removes Carol. Required: one epoch and safety code for the members, everyone hears
//! everyone, Carol knows she was removed and hears nothing after.
//!
//! Runs in the loopback-only sandbox of `common/janus.rs` (fails without Janus).
#![cfg(feature = "webrtc")]

#[path = "common/janus.rs"]
mod janus;
#[path = "../examples/common/voice.rs"]
mod voice;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use janus::Link;
use openmls_rust_crypto::OpenMlsRustCrypto;
use serde_json::{json, Value};
use sotto::call::{Call, CallConfig, CallEvent, JanusOutbound, JanusTransport, Transport};
use sotto::room::Identity;
use sotto::webrtc::{candidate_addresses, PeerEvent};
use str0m::media::Direction;

const PORT: u16 = 18_090;
const NAMES: [&str; 3] = [
    "alice@sotto.example",
    "bob@sotto.example",
    "carol@sotto.example",
];

struct Member {
    call: Call<OpenMlsRustCrypto, JanusTransport>,
    text: Link,
    /// VideoRoom publisher: handle, feed, link.
    publisher: Option<(u64, u64, Link)>,
    /// VideoRoom subscriptions: feed, link.
    subs: Vec<(u64, Link)>,
    voice: voice::Voice,
    events: Vec<CallEvent>,
    /// Decoded frames per other member after the removal, for Carol.
    removed_at: Option<Instant>,
}

struct World {
    session: janus::Session,
    members: Vec<Member>,
    sent_to: HashSet<SocketAddr>,
    media_room: Option<u64>,
    sdps: Vec<String>,
}

impl World {
    /// Moves everything one step: sockets, Janus events, the calls' datagrams and timers.
    fn pump(&mut self) {
        let now = Instant::now();
        for m in &mut self.members {
            m.text.pump(&mut self.sent_to);
            for e in std::mem::take(&mut m.text.events) {
                if let PeerEvent::Data(bytes) = e {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    let _ = m.call.handle_datagram(&JanusTransport::inbound(&text), now);
                }
            }
            if let Some((_, _, link)) = &mut m.publisher {
                link.pump(&mut self.sent_to);
                link.events.clear();
            }
            for (_, link) in &mut m.subs {
                link.pump(&mut self.sent_to);
                for e in std::mem::take(&mut link.events) {
                    if let PeerEvent::Audio { payload, .. } = e {
                        let _ = m
                            .call
                            .handle_datagram(&JanusTransport::audio(&payload), now);
                    }
                }
            }
            if m.call.poll_timeout().is_some_and(|t| t <= now) {
                m.call.handle_timeout(now);
            }
            let mut buf = Vec::new();
            while m.call.poll_transmit(&mut buf) {
                match JanusTransport::outbound(&buf) {
                    Some(JanusOutbound::Audio(payload)) => {
                        if let Some((_, _, link)) = &mut m.publisher {
                            if link.peer.is_connected() {
                                let _ = link.peer.send_audio(payload, now);
                            }
                        }
                    }
                    Some(JanusOutbound::Text(texts)) => {
                        for t in texts {
                            let _ = m.text.peer.send_text(t);
                        }
                    }
                    None => panic!("the engine wrote something JanusTransport cannot split"),
                }
            }
            while let Some(e) = m.call.poll_event() {
                m.events.push(e);
            }
            m.text.pump(&mut self.sent_to);
        }
    }

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

    /// A TextRoom peer connection (Janus offers, the link answers).
    fn textroom_link(&mut self) -> Link {
        let handle = self.session.attach_plugin("janus.plugin.textroom");
        self.session
            .message(handle, json!({"request": "setup"}), None);
        let offer = self.wait(handle, "textroom offer", |e| e["jsep"].is_object());
        let sdp = offer["jsep"]["sdp"].as_str().unwrap().to_string();
        let mut link = Link::new(Instant::now());
        let answer = link.peer.accept_offer(&sdp).unwrap();
        self.sdps.push(sdp);
        self.sdps.push(answer.clone());
        self.session.message(
            handle,
            json!({"request": "ack"}),
            Some(json!({"type": "answer", "sdp": answer})),
        );
        link
    }

    /// Publishes member `i`'s audio in the media room (made by the first to publish).
    fn publish(&mut self, i: usize) {
        let room = match self.media_room {
            Some(r) => r,
            None => {
                let group = self.members[i].call.room().unwrap().group_id().to_vec();
                let digest: [u8; 32] = {
                    use sha2::Digest;
                    sha2::Sha256::new()
                        .chain_update(b"test: janus media room")
                        .chain_update(&group)
                        .finalize()
                        .into()
                };
                let room = u64::from_be_bytes(digest[..8].try_into().unwrap()) >> 12;
                let admin = self.session.attach();
                let r = self.session.message(
                    admin,
                    json!({"request": "create", "room": room, "audiocodec": "opus",
                           "require_e2ee": true, "publishers": 8, "audiolevel_ext": false}),
                    None,
                );
                assert_eq!(r["plugindata"]["data"]["videoroom"], "created", "{r}");
                self.media_room = Some(room);
                room
            }
        };
        let handle = self.session.attach();
        self.session.message(
            handle,
            json!({"request": "join", "ptype": "publisher", "room": room}),
            None,
        );
        let joined = self.wait(handle, "joined", |e| {
            e["plugindata"]["data"]["videoroom"] == "joined"
        });
        let feed = joined["plugindata"]["data"]["id"].as_u64().unwrap();
        let mut link = Link::new(Instant::now());
        let offer = link.peer.offer(Direction::SendOnly, false).unwrap();
        self.sdps.push(offer.clone());
        self.session.message(
            handle,
            json!({"request": "publish"}),
            Some(json!({"type": "offer", "sdp": offer, "e2ee": true})),
        );
        self.members[i].publisher = Some((handle, feed, link));
        let answer = self.wait(handle, "publish answer", |e| e["jsep"].is_object());
        let sdp = answer["jsep"]["sdp"].as_str().unwrap().to_string();
        self.sdps.push(sdp.clone());
        if let Some((_, _, link)) = &mut self.members[i].publisher {
            link.peer.accept_answer(&sdp).unwrap();
        }
        self.wait(handle, "publisher webrtcup", |e| e["janus"] == "webrtcup");
        // Those already publishing.
        for p in joined["plugindata"]["data"]["publishers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(f) = p["id"].as_u64() {
                self.subscribe(i, f);
            }
        }
    }

    /// Subscribes member `i` to `feed` (one peer connection per feed).
    fn subscribe(&mut self, i: usize, feed: u64) {
        let room = self.media_room.unwrap();
        if self.members[i].subs.iter().any(|(f, _)| *f == feed) {
            return;
        }
        let handle = self.session.attach();
        self.session.message(
            handle,
            json!({"request": "join", "ptype": "subscriber", "room": room,
                   "streams": [{"feed": feed}]}),
            None,
        );
        let offer = self.wait(handle, "subscriber offer", |e| e["jsep"].is_object());
        let sdp = offer["jsep"]["sdp"].as_str().unwrap().to_string();
        let mut link = Link::new(Instant::now());
        let answer = link.peer.accept_offer(&sdp).unwrap();
        self.sdps.push(sdp);
        self.sdps.push(answer.clone());
        self.session.message(
            handle,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer})),
        );
        self.members[i].subs.push((feed, link));
    }

    /// New publishers announced to member `i`'s publisher handle.
    fn follow_publishers(&mut self, i: usize) {
        let Some((handle, _, _)) = &self.members[i].publisher else {
            return;
        };
        let handle = *handle;
        while let Some(e) = self
            .session
            .take(handle, |e| e["plugindata"]["data"]["publishers"].is_array())
        {
            for p in e["plugindata"]["data"]["publishers"].as_array().unwrap() {
                if let Some(f) = p["id"].as_u64() {
                    self.subscribe(i, f);
                }
            }
        }
    }

    /// Runs the call for `d`, every member in the room sending and pulling 20 ms frames.
    fn talk(&mut self, d: Duration) {
        let start = Instant::now();
        let mut frame = 0u32;
        let mut pcm = vec![0i16; 960];
        let mut out = vec![0i16; 960];
        while start.elapsed() < d {
            let due = start + Duration::from_millis(20) * frame;
            while Instant::now() < due {
                self.pump();
                std::thread::sleep(Duration::from_millis(1));
            }
            frame += 1;
            let now = Instant::now();
            for i in 0..self.members.len() {
                let in_room = self.members[i].call.is_in_room();
                if in_room && self.members[i].publisher.is_none() {
                    self.publish(i);
                }
                self.follow_publishers(i);
                let m = &mut self.members[i];
                if m.call.is_in_room() {
                    m.voice.fill(&mut pcm);
                    let _ = m.call.send_audio(&pcm, now);
                    let _ = m.call.pull_audio(&mut out, now);
                }
            }
            self.pump();
        }
    }

    fn converged(&self, who: &[usize]) -> bool {
        let codes: HashSet<String> = who
            .iter()
            .filter_map(|i| self.members[*i].call.safety_code().map(|c| c.to_string()))
            .collect();
        codes.len() == 1
            && who.iter().all(|i| {
                let c = &self.members[*i].call;
                c.is_in_room() && c.can_speak() && c.members().count() + 1 == who.len()
            })
    }
}

fn decoded(m: &Member) -> Vec<(Vec<u8>, u64, u64)> {
    m.call
        .voices()
        .map(|v| (v.pseudonym.to_vec(), v.stats.decoded, v.stats.concealed))
        .collect()
}

#[test]
fn calls_run_over_janus_textroom_and_videoroom() {
    if !janus::inside_sandbox() {
        assert!(
            janus::rerun_in_sandbox(&[
                "--exact",
                "calls_run_over_janus_textroom_and_videoroom",
                "--nocapture",
                "--test-threads=1",
            ]),
            "the run inside the sandbox failed (see above)"
        );
        return;
    }
    assert_eq!(janus::addresses(), vec!["127.0.0.1/32".to_string()]);
    let mut server = janus::Janus::start(PORT);
    let now = Instant::now();
    let config = CallConfig::default();
    let identity = |n: &str| Identity::new(OpenMlsRustCrypto::default(), n.as_bytes()).unwrap();
    let alice = Call::create_with(
        identity(NAMES[0]),
        config.clone(),
        JanusTransport::new(),
        now,
    )
    .unwrap();
    let mut kps = Vec::new();
    let mut calls = vec![alice];
    for name in &NAMES[1..] {
        let id = identity(name);
        let kp = id.key_package().unwrap();
        kps.push(kp.bytes.clone());
        calls.push(Call::join_with(id, kp, config.clone(), JanusTransport::new(), now).unwrap());
    }
    let mut world = World {
        session: janus::Session::new(PORT),
        members: Vec::new(),
        sent_to: HashSet::new(),
        media_room: None,
        sdps: Vec::new(),
    };
    for (i, call) in calls.into_iter().enumerate() {
        let text = world.textroom_link();
        world.members.push(Member {
            call,
            text,
            publisher: None,
            subs: Vec::new(),
            voice: voice::Voice::new(i),
            events: Vec::new(),
            removed_at: None,
        });
    }
    // The TextRoom connections come up; then the engines connect over them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !world.members.iter().all(|m| m.call.transport().is_ready()) {
        assert!(
            Instant::now() < deadline,
            "textroom connections did not come up"
        );
        for m in &mut world.members {
            if m.text.peer.is_connected() {
                m.text.peer.open_channel();
            }
        }
        world.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    // Alice invites Bob and Carol as soon as she can commit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !world.members[0].call.ready_to_commit() {
        assert!(Instant::now() < deadline, "alice never ready to commit");
        world.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    let refs: Vec<&[u8]> = kps.iter().map(Vec::as_slice).collect();
    world.members[0].call.invite(&refs, Instant::now()).unwrap();
    let start = Instant::now();
    while !world.converged(&[0, 1, 2]) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no convergence: {:?}",
            world
                .members
                .iter()
                .map(|m| (
                    m.call.epoch(),
                    m.call.is_in_room(),
                    m.call.can_speak(),
                    m.call.members().count(),
                    m.call.safety_code().map(|c| c.to_string()),
                    m.subs.len(),
                    m.publisher.is_some(),
                ))
                .collect::<Vec<_>>()
        );
        world.talk(Duration::from_millis(200));
    }
    println!(
        "janus call: converged {:?} after the invite",
        start.elapsed()
    );
    world.talk(Duration::from_secs(3));
    let heard_before: Vec<_> = world.members.iter().map(decoded).collect();
    // Everyone self-updates, one after the other.
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !world.members[i].call.ready_to_commit() {
            assert!(Instant::now() < deadline, "{i} never ready to commit");
            world.talk(Duration::from_millis(20));
        }
        world.members[i].call.self_update(Instant::now()).unwrap();
        world.talk(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !world.converged(&[0, 1, 2]) {
        assert!(
            Instant::now() < deadline,
            "no convergence after self-updates"
        );
        world.talk(Duration::from_millis(100));
    }
    // Alice removes Carol.
    let carol = world.members[0]
        .call
        .members()
        .find(|(_, p)| *p == NAMES[2].as_bytes())
        .map(|(id, _)| id)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !world.members[0].call.ready_to_commit() {
        assert!(Instant::now() < deadline, "alice never ready to remove");
        world.talk(Duration::from_millis(20));
    }
    world.members[0].call.remove(carol, Instant::now()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(world.members[2].call.is_removed() && world.converged(&[0, 1])) {
        assert!(Instant::now() < deadline, "the removal did not go through");
        world.talk(Duration::from_millis(100));
    }
    world.members[2].removed_at = Some(Instant::now());
    let carol_heard = decoded(&world.members[2]);
    world.talk(Duration::from_secs(3));
    let heard_after: Vec<_> = world.members.iter().map(decoded).collect();
    for (i, m) in world.members.iter().enumerate() {
        println!(
            "janus call: {} epoch {:?} code {:?} heard {:?}",
            NAMES[i],
            m.call.epoch(),
            m.call.safety_code().map(|c| c.to_string()),
            heard_after[i]
                .iter()
                .map(|(p, d, c)| (String::from_utf8_lossy(p).into_owned(), *d, *c))
                .collect::<Vec<_>>()
        );
    }
    // Alice and Bob hear each other after everything; Carol knows and hears nothing new.
    for (i, j) in [(0, 1), (1, 0)] {
        let after = heard_after[i]
            .iter()
            .find(|(p, _, _)| p == NAMES[j].as_bytes())
            .map(|v| v.1)
            .unwrap_or(0);
        let before = heard_before[i]
            .iter()
            .find(|(p, _, _)| p == NAMES[j].as_bytes())
            .map(|v| v.1)
            .unwrap_or(0);
        assert!(after > before + 100, "{i} hears {j}: {before} → {after}");
    }
    assert!(world.members[2]
        .events
        .iter()
        .any(|e| matches!(e, CallEvent::Removed)));
    assert_eq!(
        decoded(&world.members[2]),
        carol_heard,
        "carol hears nothing after"
    );
    // Loopback only.
    for c in world.sdps.iter().flat_map(|s| candidate_addresses(s)) {
        assert_eq!(c.ip().to_string(), "127.0.0.1");
    }
    for to in &world.sent_to {
        assert_eq!(to.ip().to_string(), "127.0.0.1");
    }
    world.session.destroy();
    server.stop();
    let _ = std::fs::remove_dir_all(&server.dir);
}
