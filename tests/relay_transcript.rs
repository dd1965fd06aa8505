//! The relay transcript: a whole call through sotto's `Router` on a real UDP socket, four
//! members (`sotto::call::Call`) each on its own UDP socket, all on 127.0.0.1 and in this
//! one process, driven step by step on virtual time (20 ms per step). Every datagram the
//! relay receives is recorded. (The harness maps each member's socket address to its
//! connection, which only a loopback test may do: a relay on a network needs a carrier
//! that authenticates connections, such as sotto's QUIC.)
//!
//! The call: alice creates the room, bob and carol join (KeyPackages handed over in-process,
//! i.e. out of band; Welcomes through the relay mailbox), everyone self-updates once, dave
//! joins mid-call, carol is removed. Carol then misbehaves: just before her removal reaches
//! her, her app takes her call apart (`Call::into_parts`) and keeps sealing with her last
//! key, sending on her old channel, renewing her subscription to it and replaying a
//! handshake there, past the grace period.
//!
//! Checked: no pseudonym, display name or room name and no plaintext Opus (8-byte runs) in
//! the recording, and the check is shown to be sensitive; a fresh channel token per epoch;
//! the removed member cannot get the new token; after the grace period nothing she sends
//! reaches a current member, and her frames no longer open anywhere; the remaining members
//! agree on the safety code and heard each other.
#![cfg(feature = "opus")]

#[path = "../examples/common/voice.rs"]
mod voice;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use openmls_rust_crypto::OpenMlsRustCrypto;
use sotto::audio::{AudioConfig, AudioSender};
use sotto::call::{Call, CallConfig, CallEvent, Inbound, RelayTransport, Transport};
use sotto::keys::MemberId;
use sotto::media::{ChannelToken, MediaSession};
use sotto::relay::{ClientMessage, ConnId, RelayMessage, Router, RouterLimits};
use sotto::room::{Identity, Room};
use voice::Voice;

const FRAME: Duration = Duration::from_millis(20);

/// (credential pseudonym, display name): the display names exist in the app only.
const PEOPLE: [(&str, &str); 4] = [
    ("owl-7f3a", "Ada Lovelace"),
    ("fox-19c2", "Grace Hopper"),
    ("elk-a4d0", "Alan Turing"),
    ("yak-5e61", "Katherine Johnson"),
];
/// The room's name: known to the app only.
const ROOM_NAME: &str = "Friday design review";

const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;
const DAVE: usize = 3;

/// The media grace period (MediaConfig default, 10 s) in steps.
const GRACE_STEPS: u64 = 500;
/// Steps after the grace period during which carol keeps trying.
const AFTER_GRACE_STEPS: u64 = 150;

/// Carol after she stopped playing by the rules: the parts of her call, driven by hand.
struct Rogue {
    room: Option<Room<OpenMlsRustCrypto>>,
    media: MediaSession,
    transport: RelayTransport,
    sender: AudioSender,
    token: ChannelToken,
    last_subscribe: Option<Instant>,
}

enum Peer {
    Call(Box<Call>),
    Rogue(Box<Rogue>),
    /// Only while carol is being taken apart.
    Gone,
}

struct Node {
    peer: Peer,
    voice: Voice,
    /// A second encoder fed the same PCM whenever the call sealed a frame: libopus is
    /// deterministic, so these are the plaintext packets the call sent (checked below).
    shadow: AudioSender,
    opus_sent: Vec<Vec<u8>>,
    /// Every (epoch, token) this member's session held, in the order first seen.
    tokens: Vec<(u64, ChannelToken)>,
    /// Most frames decoded from each pseudonym (departed senders included).
    decoded: BTreeMap<String, u64>,
    events: Vec<CallEvent>,
    sock: UdpSocket,
    /// Datagrams read from the socket.
    got: u64,
    /// Every datagram this member received: (step, bytes).
    inbox: Vec<(u64, Vec<u8>)>,
}

impl Node {
    fn call(&self) -> &Call {
        match &self.peer {
            Peer::Call(c) => c,
            _ => panic!("not a call"),
        }
    }

    fn call_mut(&mut self) -> &mut Call {
        match &mut self.peer {
            Peer::Call(c) => c,
            _ => panic!("not a call"),
        }
    }

    fn media(&self) -> &MediaSession {
        match &self.peer {
            Peer::Call(c) => c.media(),
            Peer::Rogue(r) => &r.media,
            Peer::Gone => panic!("gone"),
        }
    }

    fn media_mut(&mut self) -> &mut MediaSession {
        match &mut self.peer {
            Peer::Call(c) => c.media_mut(),
            Peer::Rogue(r) => &mut r.media,
            Peer::Gone => panic!("gone"),
        }
    }

    fn subscribed(&self) -> Vec<ChannelToken> {
        match &self.peer {
            Peer::Call(c) => c.transport().client().subscribed().collect(),
            Peer::Rogue(r) => r.transport.client().subscribed().collect(),
            Peer::Gone => Vec::new(),
        }
    }

    fn is_joined(&self) -> bool {
        matches!(&self.peer, Peer::Call(c) if c.room().is_some())
    }

    fn is_active(&self) -> bool {
        matches!(&self.peer, Peer::Call(c) if c.is_in_room())
    }

    fn own_id(&self) -> MemberId {
        let room = self.call().room().unwrap();
        room.members()
            .into_iter()
            .find(|m| m.leaf == room.own_leaf())
            .unwrap()
            .id
    }

    fn record(&mut self) {
        let held: Vec<(u64, ChannelToken)> = self.media().tokens().collect();
        for t in held {
            if !self.tokens.contains(&t) {
                self.tokens.push(t);
            }
        }
        if let Peer::Call(c) = &self.peer {
            for v in c.voices() {
                let name = String::from_utf8_lossy(v.pseudonym).into_owned();
                let n = self.decoded.entry(name).or_default();
                *n = (*n).max(v.stats.decoded);
            }
            let mut events = Vec::new();
            while let Some(e) = c_poll(&mut self.peer) {
                events.push(e);
            }
            self.events.extend(events);
        }
    }
}

fn c_poll(peer: &mut Peer) -> Option<CallEvent> {
    match peer {
        Peer::Call(c) => c.poll_event(),
        _ => None,
    }
}

/// One datagram the relay received.
struct Recorded {
    step: u64,
    from: usize,
    bytes: Vec<u8>,
}

struct Net {
    relay: UdpSocket,
    relay_addr: SocketAddr,
    router: Router,
    /// Node addresses; a node's index is its `ConnId`.
    addrs: Vec<SocketAddr>,
    /// Datagrams the relay sent to each node.
    expected: Vec<u64>,
    /// Datagrams sent to the relay, and read by it.
    relay_expected: u64,
    relay_got: u64,
    recording: Vec<Recorded>,
    nodes: Vec<Node>,
    buf: Vec<u8>,
    /// After carol's removal: her leaf. Frames claiming it that reach the other members are
    /// also tried against their media sessions, to measure what the grace period admits.
    probe: Option<u32>,
    /// Carol's removal was committed: take her call apart before it reaches her.
    turn_carol: bool,
    /// (frames probed, frames that opened, last step one opened).
    probed: (u64, u64, u64),
}

impl Net {
    fn new() -> Net {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Only a safety net: a read happens only when a datagram is known to be on its way.
        relay
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        Net {
            relay_addr: relay.local_addr().unwrap(),
            relay,
            router: Router::new(RouterLimits::default(), &[0x6b; 32]),
            addrs: Vec::new(),
            expected: Vec::new(),
            relay_expected: 0,
            relay_got: 0,
            recording: Vec::new(),
            nodes: Vec::new(),
            buf: vec![0; 65_536],
            probe: None,
            turn_carol: false,
            probed: (0, 0, 0),
        }
    }

    fn add(&mut self, call: Call, who: usize) -> usize {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        self.addrs.push(sock.local_addr().unwrap());
        self.expected.push(0);
        self.nodes.push(Node {
            peer: Peer::Call(Box::new(call)),
            voice: Voice::new(who),
            shadow: AudioSender::new(&AudioConfig::default()).unwrap(),
            opus_sent: Vec::new(),
            tokens: Vec::new(),
            decoded: BTreeMap::new(),
            events: Vec::new(),
            sock,
            got: 0,
            inbox: Vec::new(),
        });
        let i = self.nodes.len() - 1;
        self.flush(i);
        i
    }

    /// Sends what node `i` has queued to the relay from its socket.
    fn flush(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let mut d = Vec::new();
        if let Peer::Call(c) = &mut node.peer {
            while c.poll_transmit(&mut d) {
                node.sock.send_to(&d, self.relay_addr).unwrap();
                self.relay_expected += 1;
            }
        }
        node.record();
    }

    /// Sends one datagram from node `i`'s socket.
    fn send_from(&mut self, i: usize, d: &[u8]) {
        self.nodes[i].sock.send_to(d, self.relay_addr).unwrap();
        self.relay_expected += 1;
    }

    /// Runs `f` on node `i`'s call, then sends what it queued.
    fn act<R>(&mut self, i: usize, f: impl FnOnce(&mut Call) -> R) -> R {
        let r = f(self.nodes[i].call_mut());
        self.flush(i);
        r
    }

    /// One 20 ms step of node `i`: timers, one frame of its voice out, one mix in.
    fn tick(&mut self, i: usize, now: Instant) {
        let mut pcm = vec![0i16; 960];
        self.nodes[i].voice.fill(&mut pcm);
        let node = &mut self.nodes[i];
        match &mut node.peer {
            Peer::Call(c) => {
                if c.poll_timeout().is_some_and(|t| t <= now) {
                    c.handle_timeout(now);
                }
                let sent = c.stats().frames_sent;
                c.send_audio(&pcm, now).unwrap();
                if c.stats().frames_sent > sent {
                    node.opus_sent
                        .push(node.shadow.encode_i16(&pcm).unwrap().to_vec());
                }
                let mut out = vec![0i16; 960];
                c.pull_audio(&mut out, now).unwrap();
            }
            Peer::Rogue(r) => {
                // Keeps her old subscription alive, and keeps sealing with her last key.
                let mut out = BytesMut::new();
                if r.last_subscribe
                    .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
                {
                    r.last_subscribe = Some(now);
                    r.transport.subscribe(r.token, &mut out).unwrap();
                    let d = out.split().to_vec();
                    self.send_from(i, &d);
                }
                let Peer::Rogue(r) = &mut self.nodes[i].peer else {
                    unreachable!()
                };
                let opus = r.sender.encode_i16(&pcm).unwrap().to_vec();
                let mut frame = BytesMut::new();
                r.media.seal(&opus, &mut frame, now).unwrap();
                if r.transport.media(&r.token, &frame, &mut out).is_ok() {
                    let d = out.split().to_vec();
                    self.nodes[i].opus_sent.push(opus);
                    self.send_from(i, &d);
                }
            }
            Peer::Gone => unreachable!(),
        }
        self.flush(i);
    }

    /// Carol's app takes her call apart and drives the parts itself from now on.
    fn turn_rogue(&mut self) {
        let node = &mut self.nodes[CAROL];
        let Peer::Call(call) = std::mem::replace(&mut node.peer, Peer::Gone) else {
            panic!("carol is not a call")
        };
        let token = call.sending_token().unwrap();
        let parts = call.into_parts();
        node.peer = Peer::Rogue(Box::new(Rogue {
            room: parts.room,
            media: parts.media,
            transport: parts.transport,
            sender: AudioSender::new(&AudioConfig::default()).unwrap(),
            token,
            last_subscribe: None,
        }));
    }

    /// Node `i` takes one datagram from the relay.
    fn deliver(&mut self, i: usize, datagram: &[u8], now: Instant) {
        if i == CAROL
            && self.turn_carol
            && matches!(
                RelayMessage::parse(datagram),
                Ok(RelayMessage::Handshake { .. })
            )
            && matches!(self.nodes[CAROL].peer, Peer::Call(_))
        {
            self.turn_rogue();
        }
        match &mut self.nodes[i].peer {
            Peer::Call(c) => {
                c.handle_datagram(datagram, now).unwrap();
                self.flush(i);
            }
            Peer::Rogue(r) => {
                let mut out = BytesMut::new();
                if let Inbound::Handshake { message, .. } =
                    r.transport.receive(datagram, now, &mut out).unwrap()
                {
                    if let Some(room) = &mut r.room {
                        let _ = room.process(message);
                    }
                }
                self.nodes[i].record();
            }
            Peer::Gone => unreachable!(),
        }
    }

    /// Moves datagrams until every socket is empty: the relay routes what it got, members
    /// take what the relay sent (and may answer).
    fn drain(&mut self, step: u64, now: Instant) {
        loop {
            let mut moved = false;
            while self.relay_got < self.relay_expected {
                let (n, from) = self.relay.recv_from(&mut self.buf).unwrap();
                self.relay_got += 1;
                moved = true;
                let datagram = &self.buf[..n];
                let Some(index) = self.addrs.iter().position(|a| *a == from) else {
                    panic!("a datagram from {from}, not a member");
                };
                self.recording.push(Recorded {
                    step,
                    from: index,
                    bytes: datagram.to_vec(),
                });
                let relay = &self.relay;
                let addrs = &self.addrs;
                let expected = &mut self.expected;
                let _ = self.router.receive(
                    ConnId(index as u64),
                    datagram,
                    now,
                    &mut |to: ConnId, bytes: &[u8]| {
                        let to = to.0 as usize;
                        relay.send_to(bytes, addrs[to]).unwrap();
                        expected[to] += 1;
                    },
                );
            }
            for i in 0..self.nodes.len() {
                while self.nodes[i].got < self.expected[i] {
                    let n = self.nodes[i].sock.recv(&mut self.buf).unwrap();
                    self.nodes[i].got += 1;
                    moved = true;
                    let datagram = self.buf[..n].to_vec();
                    self.nodes[i].inbox.push((step, datagram.clone()));
                    if let (Some(leaf), true) = (self.probe, i != CAROL) {
                        if let Ok(RelayMessage::Media { frame, .. }) =
                            RelayMessage::parse(&datagram)
                        {
                            let media = self.nodes[i].media_mut();
                            let claimed =
                                sotto::frame::Header::parse(frame).ok().and_then(|(h, _)| {
                                    let layout = media.ring()?.layout();
                                    Some(layout.decompose(h.kid).leaf)
                                });
                            if claimed == Some(u64::from(leaf)) {
                                self.probed.0 += 1;
                                if media.open(frame, &mut BytesMut::new(), now).is_ok() {
                                    self.probed.1 += 1;
                                    self.probed.2 = step;
                                }
                            }
                        }
                    }
                    self.deliver(i, &datagram, now);
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// Nodes in the room and not removed.
    fn active(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_active())
            .collect()
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Invite { by: usize, who: usize },
    Update(usize),
    Remove { by: usize, who: usize },
}

struct Removal {
    step: u64,
    leaf: u32,
    old_token: ChannelToken,
    new_token: ChannelToken,
}

fn distinct(w: &[u8]) -> usize {
    w.iter().collect::<BTreeSet<_>>().len()
}

/// Every 8-byte run of `bytes`, sorted.
fn windows8(bytes: &[u8]) -> Vec<u64> {
    let mut all: Vec<u64> = bytes
        .windows(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// (runs checked, runs found): 8-byte runs of the packets with at least 5 distinct byte
/// values (silence or padding cannot match by chance) found in `windows`.
fn opus_runs_found(packets: &[Vec<u8>], windows: &[u64]) -> (usize, usize) {
    let (mut checked, mut found) = (0, 0);
    for p in packets {
        for w in p.windows(8) {
            if distinct(w) < 5 {
                continue;
            }
            checked += 1;
            if windows
                .binary_search(&u64::from_le_bytes(w.try_into().unwrap()))
                .is_ok()
            {
                found += 1;
            }
        }
    }
    (checked, found)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_relay_sees_tokens_and_ciphertext_only_and_a_removed_member_is_cut_off() {
    let started = Instant::now();
    let t0 = Instant::now();
    let config = CallConfig::default();
    let mut net = Net::new();
    shadow_encoding_is_faithful();

    let identity = Identity::new(OpenMlsRustCrypto::default(), PEOPLE[ALICE].0.as_bytes()).unwrap();
    net.add(Call::create(identity, config.clone(), t0).unwrap(), ALICE);
    for who in [BOB, CAROL] {
        net.add(joiner(who, &config, t0), who);
    }

    let mut ops: VecDeque<Op> = VecDeque::from([
        Op::Invite {
            by: ALICE,
            who: BOB,
        },
        Op::Invite {
            by: ALICE,
            who: CAROL,
        },
        Op::Update(ALICE),
        Op::Update(BOB),
        Op::Update(CAROL),
        Op::Invite { by: BOB, who: DAVE },
        Op::Remove {
            by: ALICE,
            who: CAROL,
        },
    ]);
    let mut awaiting: Option<usize> = None;
    let mut removal: Option<Removal> = None;
    let mut removal_commit: Option<Vec<u8>> = None;
    let mut carol_id: Option<MemberId> = None;
    let mut op_steps = Vec::new();
    let mut subscribers_at_cutoff = None;
    let mut max_subscriptions: Vec<usize> = Vec::new();
    let mut step: u64 = 0;

    loop {
        let now = t0 + FRAME * u32::try_from(step).unwrap();
        if awaiting.is_some_and(|w| net.nodes[w].is_joined()) {
            awaiting = None;
        }
        let active = net.active();
        let epochs: HashSet<u64> = active
            .iter()
            .filter_map(|i| net.nodes[*i].call().epoch())
            .collect();
        let settled = awaiting.is_none()
            && epochs.len() == 1
            && active.iter().all(|i| net.nodes[*i].call().is_settled());
        if settled {
            if let Some(op) = ops.pop_front() {
                op_steps.push((step, op));
                match op {
                    Op::Invite { by, who } => {
                        if who == net.nodes.len() {
                            net.add(joiner(who, &config, now), who);
                        }
                        // Out of band: the KeyPackage goes from the invitee to the inviter
                        // in-process, never through the relay.
                        let kp = net.nodes[who].call().key_package().unwrap().bytes.clone();
                        net.act(by, |c| c.invite(&[&kp], now)).unwrap();
                        awaiting = Some(who);
                    }
                    Op::Update(who) => net.act(who, |c| c.self_update(now)).unwrap(),
                    Op::Remove { by, who } => {
                        let id = net.nodes[who].own_id();
                        carol_id = Some(id);
                        let leaf = id.leaf;
                        let old_token = net.nodes[by]
                            .call()
                            .room()
                            .unwrap()
                            .channel_token()
                            .unwrap();
                        assert_eq!(net.nodes[who].call().sending_token(), Some(old_token));
                        let before = net.recording.len();
                        net.turn_carol = true;
                        net.act(by, |c| c.remove(id, now)).unwrap();
                        net.drain(step, now);
                        // The commit alice sent, as the relay got it.
                        removal_commit = net.recording[before..]
                            .iter()
                            .filter(|r| r.from == by)
                            .find_map(|r| match ClientMessage::parse(&r.bytes) {
                                Ok(ClientMessage::Handshake { message, .. }) => {
                                    Some(message.to_vec())
                                }
                                _ => None,
                            });
                        let new_token = net.nodes[by]
                            .call()
                            .room()
                            .unwrap()
                            .channel_token()
                            .unwrap();
                        assert_ne!(new_token, old_token);
                        net.probe = Some(leaf);
                        removal = Some(Removal {
                            step,
                            leaf,
                            old_token,
                            new_token,
                        });
                    }
                }
            }
        }

        for i in 0..net.nodes.len() {
            net.tick(i, now);
        }
        if let Some(r) = &removal {
            // Carol replays the commit that removed her on her old channel, once a second.
            if (step - r.step) % 50 == 25 {
                let commit = removal_commit.clone().unwrap();
                let token = r.old_token;
                let Peer::Rogue(carol) = &net.nodes[CAROL].peer else {
                    panic!("carol is still a call")
                };
                let mut out = BytesMut::new();
                carol
                    .transport
                    .client()
                    .handshake(&token, &commit, &mut out)
                    .unwrap();
                net.send_from(CAROL, &out);
            }
        }
        net.drain(step, now);
        for (i, node) in net.nodes.iter().enumerate() {
            let held = node.subscribed().len();
            if max_subscriptions.len() <= i {
                max_subscriptions.push(0);
            }
            max_subscriptions[i] = max_subscriptions[i].max(held);
        }

        if let Some(r) = &removal {
            let node = &net.nodes[CAROL];
            let Peer::Rogue(carol) = &node.peer else {
                panic!("carol's removal never reached her")
            };
            let room = carol.room.as_ref().unwrap();
            assert!(!room.is_active(), "carol processed her removal at once");
            // She cannot compute the new epoch's token, and never held it.
            assert!(room.channel_token().is_err());
            assert!(!node.tokens.iter().any(|(_, t)| *t == r.new_token));
            assert!(!carol.media.tokens().any(|(_, t)| t == r.new_token));
            assert!(!carol.transport.client().is_subscribed(&r.new_token));
            if step == r.step + GRACE_STEPS + 5 {
                subscribers_at_cutoff = Some((
                    net.router.subscriber_count(&r.old_token),
                    net.router.subscriber_count(&r.new_token),
                ));
            }
            if step >= r.step + GRACE_STEPS + AFTER_GRACE_STEPS {
                break;
            }
        }
        step += 1;
        assert!(
            step < 3_000,
            "the script stalled: {ops:?} left, awaiting {awaiting:?}"
        );
    }
    let last_now = t0 + FRAME * u32::try_from(step).unwrap();
    let removal = removal.unwrap();
    let cutoff = removal.step + GRACE_STEPS + 5;

    // ---- What the relay recorded ----
    let recording: Vec<u8> = net
        .recording
        .iter()
        .flat_map(|r| r.bytes.iter().copied())
        .collect();
    let datagrams = net.recording.len();
    for (pseudonym, display) in PEOPLE {
        assert!(!contains(&recording, pseudonym.as_bytes()), "{pseudonym}");
        assert!(!contains(&recording, display.as_bytes()), "{display}");
    }
    assert!(!contains(&recording, ROOM_NAME.as_bytes()));

    // No plaintext Opus: not one 8-byte run of any packet any member sent.
    let opus: Vec<Vec<u8>> = net
        .nodes
        .iter()
        .flat_map(|n| n.opus_sent.iter().cloned())
        .collect();
    let windows = windows8(&recording);
    let (checked, found) = opus_runs_found(&opus, &windows);
    assert_eq!(found, 0, "plaintext Opus runs in the recording");
    assert!(checked > 100_000, "only {checked} runs checked");
    // The check is sensitive: one plaintext packet slipped into a copy is found.
    let leaked = opus
        .iter()
        .max_by_key(|p| opus_runs_found(std::slice::from_ref(*p), &[]).0)
        .unwrap()
        .clone();
    let mut tampered = recording.clone();
    tampered.splice(
        tampered.len() / 2..tampered.len() / 2,
        leaked.iter().copied(),
    );
    let (_, found_leaked) = opus_runs_found(std::slice::from_ref(&leaked), &windows8(&tampered));
    let (leaked_checked, _) = opus_runs_found(std::slice::from_ref(&leaked), &[]);
    assert!(leaked_checked > 20);
    assert_eq!(found_leaked, leaked_checked);

    // A fresh token per epoch: the distinct tokens subscribed are the epochs seen.
    let subscribed: HashSet<[u8; 16]> = net
        .recording
        .iter()
        .filter_map(|r| match ClientMessage::parse(&r.bytes) {
            Ok(ClientMessage::Subscribe { token, .. }) => Some(token.0),
            _ => None,
        })
        .collect();
    let final_epoch = net.nodes[ALICE].call().epoch().unwrap();
    assert_eq!(
        final_epoch, 10,
        "2 invites, 3 joiners' first own commits, 3 updates, 1 invite, 1 removal"
    );
    assert_eq!(subscribed.len() as u64, final_epoch + 1);
    let mut by_epoch: BTreeMap<u64, ChannelToken> = BTreeMap::new();
    for node in &net.nodes {
        for (epoch, token) in &node.tokens {
            assert_eq!(*by_epoch.entry(*epoch).or_insert(*token), *token);
        }
    }
    let distinct_tokens: HashSet<ChannelToken> = by_epoch.values().copied().collect();
    assert_eq!(by_epoch.len() as u64, final_epoch + 1);
    assert_eq!(distinct_tokens.len(), by_epoch.len());

    // ---- Carol after the grace period ----
    // Only she is left on her old channel; the current members moved on.
    assert_eq!(subscribers_at_cutoff, Some((1, 3)));
    let mut carol_frames: HashSet<Vec<u8>> = HashSet::new();
    let mut carol_handshakes: HashSet<Vec<u8>> = HashSet::new();
    let mut carol_handshakes_sent = 0;
    let mut carol_resubscribes = 0;
    let mut carol_grace_frames: HashSet<Vec<u8>> = HashSet::new();
    for r in net.recording.iter().filter(|r| r.from == CAROL) {
        match ClientMessage::parse(&r.bytes).unwrap() {
            ClientMessage::Media { frame, .. } if r.step >= cutoff => {
                carol_frames.insert(frame.to_vec());
            }
            ClientMessage::Media { frame, .. } if r.step >= removal.step => {
                carol_grace_frames.insert(frame.to_vec());
            }
            ClientMessage::Handshake { message, .. } if r.step >= cutoff => {
                carol_handshakes_sent += 1;
                carol_handshakes.insert(message.to_vec());
            }
            ClientMessage::Subscribe { token, .. } if r.step >= cutoff => {
                assert_eq!(token, removal.old_token);
                carol_resubscribes += 1;
            }
            _ => {}
        }
    }
    assert!(carol_frames.len() as u64 >= AFTER_GRACE_STEPS - 10);
    assert!(!carol_handshakes.is_empty());
    assert!(carol_resubscribes >= 2);
    let mut media_after = 0;
    let mut grace_deliveries = 0;
    for i in [ALICE, BOB, DAVE] {
        let node = &mut net.nodes[i];
        for (at, bytes) in &node.inbox {
            match RelayMessage::parse(bytes).unwrap() {
                RelayMessage::Media { frame, .. } if *at >= cutoff => {
                    media_after += 1;
                    assert!(!carol_frames.contains(frame), "carol's frame reached {i}");
                    let (h, _) = sotto::frame::Header::parse(frame).unwrap();
                    let layout = node.media().ring().unwrap().layout();
                    assert_ne!(layout.decompose(h.kid).leaf, u64::from(removal.leaf));
                }
                RelayMessage::Media { frame, .. } if carol_grace_frames.contains(frame) => {
                    grace_deliveries += 1;
                }
                RelayMessage::Handshake { message, .. } if *at >= cutoff => {
                    assert!(
                        !carol_handshakes.contains(message),
                        "carol's handshake reached {i}"
                    );
                }
                _ => {}
            }
        }
        // Her frames do not open anywhere any more.
        for frame in carol_frames.iter().take(20) {
            let mut out = BytesMut::new();
            assert!(node.media_mut().open(frame, &mut out, last_now).is_err());
        }
        // Nor did any member route her frames to a receiver after her removal.
        assert!(!node.call().voices().any(|v| Some(v.member) == carol_id));
        assert!(node
            .events
            .iter()
            .any(|e| matches!(e, CallEvent::MemberLeft { member } if Some(*member) == carol_id)));
    }
    assert!(
        media_after > 2 * AFTER_GRACE_STEPS as usize,
        "members kept talking"
    );
    // Every frame claiming her leaf that reached a member was probed; none after the
    // grace period (none arrived), and any that opened did so within it.
    let (probed, opened, last_open) = net.probed;
    assert_eq!(probed, grace_deliveries);
    assert!(opened == 0 || last_open < removal.step + GRACE_STEPS + 1);

    // ---- The remaining members ----
    let codes: HashSet<String> = [ALICE, BOB, DAVE]
        .iter()
        .map(|i| net.nodes[*i].call().safety_code().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 1, "safety codes disagree: {codes:?}");
    for i in [ALICE, BOB, DAVE] {
        let node = &net.nodes[i];
        assert_eq!(node.call().epoch(), Some(final_epoch));
        let heard = &node.decoded;
        for j in [ALICE, BOB, DAVE].into_iter().filter(|j| *j != i) {
            let decoded = heard.get(PEOPLE[j].0).copied().unwrap_or(0);
            assert!(
                decoded > 100,
                "{} decoded {decoded} frames of {}",
                PEOPLE[i].0,
                PEOPLE[j].0
            );
        }
        if i != DAVE {
            assert!(heard.get(PEOPLE[CAROL].0).copied().unwrap_or(0) > 100);
        }
        for v in node.call().voices() {
            assert_eq!(v.stats.auth_failures, 0);
            assert_eq!(v.stats.replays, 0);
        }
    }
    let carol_heard: u64 = net.nodes[CAROL].decoded.values().sum();
    assert!(carol_heard > 100);
    let drops = net.router.stats().drops;
    assert_eq!(drops.total(), drops.mailbox_empty, "{drops:?}");

    let stats = net.router.stats();
    println!(
        "relay recorded {datagrams} datagrams, {} bytes; sent {} datagrams; {} distinct tokens \
         subscribed for epochs 0..={final_epoch}; ops at steps {:?}",
        recording.len(),
        stats.datagrams_out,
        subscribed.len(),
        op_steps.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    println!(
        "{checked} plaintext Opus runs checked, 0 found; {leaked_checked} of {leaked_checked} \
         found when one packet is injected"
    );
    println!(
        "carol after her removal at step {}: {} frames, {carol_handshakes_sent} replayed \
         handshakes, {carol_resubscribes} re-subscriptions after the grace period reached \
         nobody ({media_after} media datagrams reached current members then); during the \
         grace period {grace_deliveries} deliveries of her frames reached members, {opened} \
         of them would still have opened (last at step {last_open}), no receiver took them",
        removal.step,
        carol_frames.len(),
    );
    println!("most channels one member was subscribed to at once: {max_subscriptions:?}");

    // ---- Connections ----
    // Every member said Hello before anything else, once: nothing made the relay forget it.
    for i in 0..net.nodes.len() {
        let mut sent = net
            .recording
            .iter()
            .filter(|r| r.from == i)
            .map(|r| &r.bytes);
        assert_eq!(
            sent.next().map(|d| ClientMessage::parse(d)),
            Some(Ok(ClientMessage::Hello))
        );
        assert!(sent.all(|d| ClientMessage::parse(d) != Ok(ClientMessage::Hello)));
    }
    assert_eq!(net.router.stats().drops.not_connected, 0);
    println!("wall time {} ms", started.elapsed().as_millis());
}

fn joiner(who: usize, config: &CallConfig, now: Instant) -> Call {
    let identity = Identity::new(OpenMlsRustCrypto::default(), PEOPLE[who].0.as_bytes()).unwrap();
    let key_package = identity.key_package().unwrap();
    Call::join(identity, key_package, config.clone(), now).unwrap()
}

/// The plaintext check relies on a second encoder reproducing the call's packets: two
/// encoders fed the same PCM give the same bytes.
fn shadow_encoding_is_faithful() {
    let mut a = AudioSender::new(&AudioConfig::default()).unwrap();
    let mut b = AudioSender::new(&AudioConfig::default()).unwrap();
    let mut voice = Voice::new(1);
    let mut pcm = vec![0i16; 960];
    for _ in 0..100 {
        voice.fill(&mut pcm);
        let x = a.encode_i16(&pcm).unwrap().to_vec();
        assert_eq!(x, b.encode_i16(&pcm).unwrap());
    }
}
