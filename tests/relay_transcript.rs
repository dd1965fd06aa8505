//! The relay transcript: a whole call over QUIC on loopback, watched from two places. The
//! relay is sotto's `QuicRelay` (a `Router` behind a QUIC endpoint) on its own UDP socket;
//! four members (`sotto::call::Call`) each have a `QuicClient` on their own UDP socket, all
//! on 127.0.0.1 and in this one process. The test moves the real UDP datagrams between the
//! sockets and drives everything step by step on virtual time (20 ms per step; within a
//! step, datagrams go back and forth until no side has anything left to send, so a
//! member's QUIC handshake — opened by a stateless Retry — and its Hello complete within
//! the step it starts in).
//!
//! Two views are recorded:
//! - **the relay's view**: the relay wire messages the relay received and sent. It is
//!   reconstructed at the members, at the boundary of the QUIC carrier: every message a
//!   member handed to its `QuicClient` (media that QUIC refused to send — none here — left
//!   out) and every message its `QuicClient` gave it. The test checks that this is exactly
//!   what the relay's router took in and gave out (message and byte counts of its stats).
//! - **the network observer's view**: every UDP datagram sent on the loopback path, either
//!   way, recorded at each `send_to` with its direction.
//!
//! The call: alice creates the room, bob and carol join (KeyPackages handed over in-process,
//! i.e. out of band; Welcomes through the relay mailbox), everyone self-updates once, dave
//! joins mid-call, carol is removed. Carol then misbehaves: just before her removal reaches
//! her, her app takes her call apart (`Call::into_parts`) and keeps sealing with her last
//! key, sending on her old channel, renewing her subscription to it and replaying a
//! handshake there, past the grace period; her relay client's messages still travel over
//! her QUIC connection.
//!
//! Checked, in the relay's view: no pseudonym, display name or room name and no plaintext
//! Opus (8-byte runs), the checks shown sensitive by a planted copy; a fresh channel token
//! per epoch; the removed member cannot get the new token; after the grace period nothing
//! she sends reaches a current member, and her frames no longer open anywhere; the
//! remaining members agree on the safety code and heard each other. In the observer's
//! view: no name and no plaintext Opus either, and no channel token of any epoch, no
//! channel handle as the relay wire writes it (the 5-byte `type ‖ handle` prefixes of
//! media, and the handle fields of the other messages with their context), no KeyPackage
//! reference (Welcome mailbox id) — each of which the same search does find in the
//! relay's view. The relay accepted every member's connection after a Retry, and no
//! message came the wrong way (media on the stream or control as a datagram).
#![cfg(all(feature = "opus", feature = "quic"))]

#[path = "../examples/common/voice.rs"]
mod voice;

use sotto::room::MlsSuite;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use openmls::prelude::tls_codec::Deserialize as _;
use sotto::audio::{AudioConfig, AudioSender};
use sotto::call::{sealed, Call, CallConfig, CallEvent, Inbound, RelayTransport, Transport};
use sotto::keys::MemberId;
use sotto::media::{ChannelToken, MediaSession};
use sotto::provider::Provider;
use sotto::quic::{QuicClient, QuicEvent, QuicRelay, RelayIdentity, RelayPin};
use sotto::relay::{ChannelHandle, ClientMessage, RelayMessage, Request, Router, RouterLimits};
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

/// Rounds of datagram exchange within one step before the test gives up (a step takes at
/// most 7 in this call, the QUIC handshakes included).
const MAX_ROUNDS: usize = 200;

/// How many bytes of a non-media relay wire message that names a handle are searched for:
/// its type byte, the handle and what follows (a handshake's sequence number or the first
/// bytes of its MLS message), so that random ciphertext cannot match by chance.
const HANDLE_CONTEXT: usize = 13;

/// Bytes of a media message searched for on the wire: type, handle, the SFrame header and
/// the start of the ciphertext.
const MEDIA_HEAD: usize = 16;

/// Carol after she stopped playing by the rules: the parts of her call, driven by hand.
struct Rogue {
    room: Option<Room<Provider>>,
    media: MediaSession,
    transport: RelayTransport,
    sender: AudioSender,
    token: ChannelToken,
    last_subscribe: Option<Instant>,
    /// The MLS messages her app opened from sealed handshake messages.
    opened: Vec<Vec<u8>>,
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
    /// This member's QUIC connection to the relay, and the UDP socket it runs on.
    quic: QuicClient,
    sock: UdpSocket,
    quic_events: Vec<QuicEvent>,
    /// Every relay wire message QUIC handed this member (the relay sent it): (step, bytes).
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

/// One relay wire message a member sent the relay (the relay's view, inbound).
struct Recorded {
    step: u64,
    from: usize,
    bytes: Vec<u8>,
}

/// One UDP datagram on the loopback path (the network observer's view).
struct Observed {
    member: usize,
    to_relay: bool,
    bytes: Vec<u8>,
}

struct Net {
    relay: QuicRelay,
    relay_sock: UdpSocket,
    relay_addr: SocketAddr,
    pin: RelayPin,
    /// Node addresses, by node index.
    addrs: Vec<SocketAddr>,
    /// The current step.
    step: u64,
    /// The relay's view, member → relay: every message a member handed its QUIC client.
    recording: Vec<Recorded>,
    /// The network observer's view.
    observed: Vec<Observed>,
    /// Media messages QUIC refused to send (not connected): not in the relay's view.
    unsent_media: u64,
    /// The joiners' KeyPackage references (their Welcome mailboxes).
    kp_refs: Vec<Vec<u8>>,
    nodes: Vec<Node>,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// After carol's removal: her leaf. Frames claiming it that reach the other members are
    /// also tried against their media sessions, to measure what the grace period admits.
    probe: Option<u32>,
    /// Carol's removal was committed: take her call apart before it reaches her.
    turn_carol: bool,
    /// (frames probed, frames that opened, last step one opened).
    probed: (u64, u64, u64),
    /// Most rounds of datagram exchange one step took.
    max_rounds: usize,
}

/// Sends `bytes` from the socket `from` to the socket `to` (bound to `to_addr`) and reads
/// it there at once, so that no socket ever holds more than one datagram (none is lost to
/// a full receive buffer); returns the source address the receiver saw.
fn carry(
    from: &UdpSocket,
    to: &UdpSocket,
    to_addr: SocketAddr,
    bytes: &[u8],
    buf: &mut [u8],
) -> SocketAddr {
    assert_eq!(from.send_to(bytes, to_addr).unwrap(), bytes.len());
    let (n, source) = to.recv_from(buf).unwrap();
    assert_eq!(&buf[..n], bytes, "loopback altered or reordered a datagram");
    source
}

fn bind() -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Only a safety net: a read happens only right after a datagram was sent to it.
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock
}

impl Net {
    fn new() -> Net {
        let identity = RelayIdentity::generate().unwrap();
        let router = Router::new(RouterLimits::default(), &[0x6b; 32]);
        let relay_sock = bind();
        Net {
            relay: QuicRelay::new(&identity, router).unwrap(),
            relay_addr: relay_sock.local_addr().unwrap(),
            relay_sock,
            pin: identity.pin(),
            addrs: Vec::new(),
            step: 0,
            recording: Vec::new(),
            observed: Vec::new(),
            unsent_media: 0,
            kp_refs: Vec::new(),
            nodes: Vec::new(),
            buf: vec![0; 65_536],
            out: Vec::new(),
            probe: None,
            turn_carol: false,
            probed: (0, 0, 0),
            max_rounds: 0,
        }
    }

    fn add(&mut self, call: Call, who: usize, now: Instant) -> usize {
        let sock = bind();
        self.addrs.push(sock.local_addr().unwrap());
        if let Some(kp) = call.key_package() {
            self.kp_refs.push(kp.reference.clone());
        }
        self.nodes.push(Node {
            peer: Peer::Call(Box::new(call)),
            voice: Voice::new(who),
            shadow: AudioSender::new(&AudioConfig::default()).unwrap(),
            opus_sent: Vec::new(),
            tokens: Vec::new(),
            decoded: BTreeMap::new(),
            events: Vec::new(),
            quic: QuicClient::connect(self.relay_addr, self.pin, now).unwrap(),
            sock,
            quic_events: Vec::new(),
            inbox: Vec::new(),
        });
        let i = self.nodes.len() - 1;
        self.flush(i);
        i
    }

    /// Hands one relay wire message of node `i` to its QUIC client (what reaches the relay
    /// goes into the relay's view).
    fn send(&mut self, i: usize, message: &[u8]) {
        let quic = &mut self.nodes[i].quic;
        let dropped = quic.stats().media_dropped;
        quic.send(message).unwrap();
        if quic.stats().media_dropped == dropped {
            self.recording.push(Recorded {
                step: self.step,
                from: i,
                bytes: message.to_vec(),
            });
        } else {
            self.unsent_media += 1;
        }
    }

    /// Hands what node `i`'s call queued to its QUIC client.
    fn flush(&mut self, i: usize) {
        let mut queued = Vec::new();
        if let Peer::Call(c) = &mut self.nodes[i].peer {
            let mut d = Vec::new();
            while c.poll_transmit(&mut d) {
                queued.push(d.clone());
            }
        }
        for d in queued {
            self.send(i, &d);
        }
        self.nodes[i].record();
    }

    /// Runs `f` on node `i`'s call, then hands what it queued to QUIC.
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
                    self.send(i, &d);
                }
                let Peer::Rogue(r) = &mut self.nodes[i].peer else {
                    unreachable!()
                };
                let opus = r.sender.encode_i16(&pcm).unwrap().to_vec();
                let mut frame = BytesMut::new();
                r.media
                    .seal(sotto::keys::StreamId::MICROPHONE, &opus, &mut frame, now)
                    .unwrap();
                if r.transport.media(&r.token, &frame, &mut out).is_ok() {
                    let d = out.split().to_vec();
                    self.nodes[i].opus_sent.push(opus);
                    self.send(i, &d);
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
            opened: Vec::new(),
        }));
    }

    /// Node `i` takes one relay wire message from the relay.
    fn deliver(&mut self, i: usize, message: &[u8], now: Instant) {
        if i == CAROL
            && self.turn_carol
            && matches!(
                RelayMessage::parse(message),
                Ok(RelayMessage::Handshake { .. })
            )
            && matches!(self.nodes[CAROL].peer, Peer::Call(_))
        {
            self.turn_rogue();
        }
        match &mut self.nodes[i].peer {
            Peer::Call(c) => {
                c.handle_datagram(message, now).unwrap();
                self.flush(i);
            }
            Peer::Rogue(r) => {
                let mut out = BytesMut::new();
                if let Inbound::Handshake { token, message, .. } =
                    r.transport.receive(message, now, &mut out).unwrap()
                {
                    // Her app opens what it can with the keys she still holds.
                    let mut scratch = Vec::new();
                    let opened = r
                        .media
                        .handshake_key(&token)
                        .and_then(|key| sealed::open(key, &token, message, &mut scratch).ok());
                    if let Some(message) = opened {
                        r.opened.push(message.to_vec());
                        if let Some(room) = &mut r.room {
                            let _ = room.process(message);
                        }
                    }
                }
                self.nodes[i].record();
            }
            Peer::Gone => unreachable!(),
        }
    }

    /// Moves datagrams until no side has anything to send at `now`: QUIC's due timers, the
    /// relay's datagrams to the members, each member's messages (to its call, which may
    /// answer) and datagrams to the relay.
    fn drain(&mut self, now: Instant) {
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(
                rounds <= MAX_ROUNDS,
                "datagrams kept moving at step {}",
                self.step
            );
            let mut moved = false;
            if self.relay.poll_timeout().is_some_and(|t| t <= now) {
                self.relay.handle_timeout(now);
            }
            while let Some(to) = self.relay.poll_transmit(now, &mut self.out) {
                moved = true;
                let Some(i) = self.addrs.iter().position(|a| *a == to) else {
                    panic!("the relay sent a datagram to {to}, not a member");
                };
                self.observed.push(Observed {
                    member: i,
                    to_relay: false,
                    bytes: self.out.clone(),
                });
                let from = carry(
                    &self.relay_sock,
                    &self.nodes[i].sock,
                    to,
                    &self.out,
                    &mut self.buf,
                );
                self.nodes[i].quic.handle_datagram(&self.out, from, now);
            }
            for i in 0..self.nodes.len() {
                let quic = &mut self.nodes[i].quic;
                if quic.poll_timeout().is_some_and(|t| t <= now) {
                    quic.handle_timeout(now);
                }
                while let Some(e) = self.nodes[i].quic.poll_event() {
                    self.nodes[i].quic_events.push(e);
                }
                let mut message = Vec::new();
                while self.nodes[i].quic.poll_message(&mut message) {
                    moved = true;
                    self.nodes[i].inbox.push((self.step, message.clone()));
                    self.probe_carol(i, &message, now);
                    self.deliver(i, &message, now);
                }
                while let Some(to) = self.nodes[i].quic.poll_transmit(now, &mut self.out) {
                    moved = true;
                    assert_eq!(to, self.relay_addr);
                    self.observed.push(Observed {
                        member: i,
                        to_relay: true,
                        bytes: self.out.clone(),
                    });
                    let from = carry(
                        &self.nodes[i].sock,
                        &self.relay_sock,
                        to,
                        &self.out,
                        &mut self.buf,
                    );
                    assert_eq!(from, self.addrs[i]);
                    self.relay.handle_datagram(&self.out, from, now);
                }
            }
            if !moved {
                break;
            }
        }
        self.max_rounds = self.max_rounds.max(rounds);
    }

    /// After carol's removal, a frame claiming her leaf that reaches another member is also
    /// tried against that member's media session.
    fn probe_carol(&mut self, i: usize, message: &[u8], now: Instant) {
        let (Some(leaf), true) = (self.probe, i != CAROL) else {
            return;
        };
        let Ok(RelayMessage::Media { frame, .. }) = RelayMessage::parse(message) else {
            return;
        };
        let media = self.nodes[i].media_mut();
        let claimed = sotto::frame::Header::parse(frame).ok().and_then(|(h, _)| {
            let layout = media.ring()?.layout();
            Some(layout.decompose(h.kid).leaf)
        });
        if claimed == Some(u64::from(leaf)) {
            self.probed.0 += 1;
            if media.open(frame, &mut BytesMut::new(), now).is_ok() {
                self.probed.1 += 1;
                self.probed.2 = self.step;
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

/// Every 8-byte run within any one of `items`, sorted.
fn windows8(items: &[&[u8]]) -> Vec<u64> {
    let mut all: Vec<u64> = items
        .iter()
        .flat_map(|b| b.windows(8))
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

/// How often each of `needles` (each at least 2 bytes) occurs within any one of `items`.
fn occurrences(items: &[&[u8]], needles: &[Vec<u8>]) -> Vec<usize> {
    let mut by_start: HashMap<[u8; 2], Vec<usize>> = HashMap::new();
    for (n, needle) in needles.iter().enumerate() {
        by_start.entry([needle[0], needle[1]]).or_default().push(n);
    }
    let mut starts = vec![false; 1 << 16];
    for s in by_start.keys() {
        starts[usize::from(u16::from_be_bytes(*s))] = true;
    }
    let mut hits = vec![0; needles.len()];
    for item in items {
        for at in 0..item.len().saturating_sub(1) {
            let s = [item[at], item[at + 1]];
            if !starts[usize::from(u16::from_be_bytes(s))] {
                continue;
            }
            for &n in &by_start[&s] {
                if item[at..].starts_with(&needles[n]) {
                    hits[n] += 1;
                }
            }
        }
    }
    hits
}

/// The start of a stream message as the QUIC carrier frames it (a 4-byte length, then the
/// message): what would be on the wire if the stream were not encrypted. It makes the
/// needles of 5-byte messages (`Unsubscribe`, `Unsubscribed`) 9 bytes long.
fn framed(start: &[u8], len: usize) -> Vec<u8> {
    let mut v = (len as u32).to_be_bytes().to_vec();
    v.extend_from_slice(start);
    v
}

/// How many of `needles` occur somewhere in `items`.
fn found(items: &[&[u8]], needles: &[Vec<u8>]) -> usize {
    occurrences(items, needles)
        .iter()
        .filter(|h| **h > 0)
        .count()
}

/// The expected number of chance occurrences of `needles` in random bytes as long as
/// `items`.
fn chance(items: &[&[u8]], needles: &[Vec<u8>]) -> f64 {
    let bytes: usize = items.iter().map(|i| i.len()).sum();
    needles
        .iter()
        .map(|n| bytes as f64 / 256f64.powi(n.len() as i32))
        .sum()
}

/// A copy of the longest of `items` with `planted` spliced into its middle, one after the
/// other.
fn planted_copy(items: &[&[u8]], planted: &[&[u8]]) -> Vec<u8> {
    let mut copy = items.iter().max_by_key(|i| i.len()).unwrap().to_vec();
    let middle = copy.len() / 2;
    copy.splice(middle..middle, planted.concat());
    copy
}

#[test]
fn the_relay_sees_tokens_and_ciphertext_only_and_a_removed_member_is_cut_off() {
    let started = Instant::now();
    let t0 = Instant::now();
    let config = CallConfig::default();
    let mut net = Net::new();
    shadow_encoding_is_faithful();

    let identity = Identity::new(Provider::new().unwrap(), PEOPLE[ALICE].0.as_bytes()).unwrap();
    net.add(
        Call::create(identity, config.clone(), t0).unwrap(),
        ALICE,
        t0,
    );
    for who in [BOB, CAROL] {
        net.add(joiner(who, &config, t0), who, t0);
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
        net.step = step;
        if step.is_multiple_of(50) {
            net.relay.router_mut().expire(now);
        }
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
                            net.add(joiner(who, &config, now), who, now);
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
                        net.drain(now);
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
                net.send(CAROL, &out);
            }
        }
        net.drain(now);
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
                    net.relay.router().subscriber_count(&r.old_token),
                    net.relay.router().subscriber_count(&r.new_token),
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
    let call_done = started.elapsed();

    // ---- The two views ----
    // The relay's view: the relay wire messages it received, and sent.
    let to_relay: Vec<&[u8]> = net.recording.iter().map(|r| &r.bytes[..]).collect();
    let from_relay: Vec<&[u8]> = net
        .nodes
        .iter()
        .flat_map(|n| n.inbox.iter().map(|(_, b)| &b[..]))
        .collect();
    let relay_view: Vec<&[u8]> = to_relay.iter().chain(&from_relay).copied().collect();
    let size = |items: &[&[u8]]| items.iter().map(|b| b.len() as u64).sum::<u64>();
    // Reconstructed at the members, it is exactly what the router took in and gave out:
    // nothing was lost on the way, and nothing reached the relay that is not in it.
    let router = net.relay.router().stats();
    assert_eq!(net.unsent_media, 0, "media before the connection was up");
    assert_eq!(
        (router.datagrams_in, router.bytes_in),
        (to_relay.len() as u64, size(&to_relay))
    );
    assert_eq!(
        (router.datagrams_out, router.bytes_out),
        (from_relay.len() as u64, size(&from_relay))
    );
    let relay_counts = (
        to_relay.len(),
        size(&to_relay),
        from_relay.len(),
        size(&from_relay),
    );
    // The network observer's view: every UDP datagram on the loopback path, either way.
    let observed: Vec<&[u8]> = net.observed.iter().map(|o| &o.bytes[..]).collect();
    let observed_up: Vec<&[u8]> = net
        .observed
        .iter()
        .filter(|o| o.to_relay)
        .map(|o| &o.bytes[..])
        .collect();
    let per_member: Vec<usize> = (0..net.nodes.len())
        .map(|i| net.observed.iter().filter(|o| o.member == i).count())
        .collect();
    assert!(per_member.iter().all(|n| *n > 500), "{per_member:?}");
    // Each member's path opens with its QUIC Initial (long header, type 0, padded to at
    // least 1200 bytes), answered by a Retry (long header, type 3).
    for i in 0..net.nodes.len() {
        let mut path = net.observed.iter().filter(|o| o.member == i);
        let first = path.next().unwrap();
        assert!(first.to_relay && first.bytes[0] & 0xf0 == 0xc0 && first.bytes.len() >= 1200);
        let answer = path.find(|o| !o.to_relay).unwrap();
        assert_eq!(answer.bytes[0] & 0xf0, 0xf0, "a Retry");
    }
    let quic = net.relay.stats();
    assert_eq!(
        (quic.datagrams_in, quic.datagrams_out),
        (
            observed_up.len() as u64,
            (observed.len() - observed_up.len()) as u64
        )
    );

    // No pseudonym, display name or room name in either view; the search finds them in
    // a planted copy.
    let names: Vec<Vec<u8>> = PEOPLE
        .iter()
        .flat_map(|(p, d)| [p.as_bytes().to_vec(), d.as_bytes().to_vec()])
        .chain([ROOM_NAME.as_bytes().to_vec()])
        .collect();
    let name_refs: Vec<&[u8]> = names.iter().map(|n| &n[..]).collect();
    for view in [&relay_view, &observed] {
        assert_eq!(occurrences(view, &names), vec![0; names.len()]);
        let copy = planted_copy(view, &name_refs);
        let mut tampered = view.clone();
        tampered.push(&copy);
        assert_eq!(found(&tampered, &names), names.len());
    }

    // No plaintext Opus: not one 8-byte run of any packet any member sent, in either view.
    let opus: Vec<Vec<u8>> = net
        .nodes
        .iter()
        .flat_map(|n| n.opus_sent.iter().cloned())
        .collect();
    let (checked, found_relay) = opus_runs_found(&opus, &windows8(&relay_view));
    assert_eq!(found_relay, 0, "plaintext Opus runs in the relay's view");
    let (_, found_observed) = opus_runs_found(&opus, &windows8(&observed));
    assert_eq!(found_observed, 0, "plaintext Opus runs on the wire");
    assert!(checked > 100_000, "only {checked} runs checked");
    // The check is sensitive: one plaintext packet slipped into a copy is found.
    let leaked = opus
        .iter()
        .max_by_key(|p| opus_runs_found(std::slice::from_ref(*p), &[]).0)
        .unwrap()
        .clone();
    let (leaked_checked, _) = opus_runs_found(std::slice::from_ref(&leaked), &[]);
    assert!(leaked_checked > 20);
    for view in [&relay_view, &observed] {
        let copy = planted_copy(view, &[&leaked]);
        let mut tampered = view.clone();
        tampered.push(&copy);
        let (_, found_leaked) =
            opus_runs_found(std::slice::from_ref(&leaked), &windows8(&tampered));
        assert_eq!(found_leaked, leaked_checked);
    }

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
    assert_eq!(
        subscribed,
        distinct_tokens.iter().map(|t| t.0).collect::<HashSet<_>>()
    );

    // ---- What the observer does not see, and the relay does ----
    // Every epoch's channel token.
    let tokens: Vec<Vec<u8>> = by_epoch.values().map(|t| t.0.to_vec()).collect();
    // Every channel handle the relay gave out, as the relay wire writes it: the head of
    // every media message both ways (type byte, handle, the SFrame header and the start of
    // its ciphertext: 16 bytes, so random bytes cannot match by chance), and the handle
    // fields of the other messages with their
    // context: type byte, handle and up to 8 bytes after it (a handshake's sequence number
    // or the start of its MLS message; an Unsubscribe is 5 bytes in all), a Subscribed's
    // handle with its next sequence number.
    let mut handle_contexts: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut media_heads: BTreeSet<Vec<u8>> = BTreeSet::new();
    let head = |bytes: &[u8]| bytes[..bytes.len().min(MEDIA_HEAD)].to_vec();
    // Welcome mailboxes: the invitees' KeyPackage references.
    let mut mailboxes: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let handled = |bytes: &[u8], handle: ChannelHandle| {
        assert_eq!(
            bytes[1..5],
            handle.0.to_be_bytes(),
            "the handle follows the type"
        );
        framed(&bytes[..bytes.len().min(HANDLE_CONTEXT)], bytes.len())
    };
    for node in &net.nodes {
        for (_, bytes) in &node.inbox {
            match RelayMessage::parse(bytes).unwrap() {
                RelayMessage::Subscribed {
                    handle, next_seq, ..
                } => {
                    *kinds.entry("Subscribed").or_default() += 1;
                    let mut context = handle.0.to_be_bytes().to_vec();
                    context.extend_from_slice(&next_seq.to_be_bytes());
                    handle_contexts.insert(context);
                }
                RelayMessage::Media { .. } => {
                    media_heads.insert(head(bytes));
                }
                RelayMessage::Handshake { handle, .. } => {
                    *kinds.entry("Handshake (relay)").or_default() += 1;
                    handle_contexts.insert(handled(bytes, handle));
                }
                RelayMessage::Unsubscribed { handle } => {
                    *kinds.entry("Unsubscribed").or_default() += 1;
                    handle_contexts.insert(handled(bytes, handle));
                }
                RelayMessage::Welcome { mailbox, .. } | RelayMessage::Stored { mailbox } => {
                    mailboxes.insert(mailbox.as_bytes().to_vec());
                }
                RelayMessage::Error {
                    request: Request::Media(_) | Request::Handshake(_) | Request::Unsubscribe(_),
                    ..
                } => {
                    *kinds.entry("Error (handle)").or_default() += 1;
                    handle_contexts.insert(framed(bytes, bytes.len()));
                }
                _ => {}
            }
        }
    }
    for r in &net.recording {
        match ClientMessage::parse(&r.bytes).unwrap() {
            ClientMessage::Media { .. } => {
                media_heads.insert(head(&r.bytes));
            }
            ClientMessage::Handshake { handle, .. } => {
                *kinds.entry("Handshake").or_default() += 1;
                handle_contexts.insert(handled(&r.bytes, handle));
            }
            ClientMessage::Unsubscribe { handle } => {
                *kinds.entry("Unsubscribe").or_default() += 1;
                handle_contexts.insert(handled(&r.bytes, handle));
            }
            ClientMessage::DeliverWelcome { mailbox, .. }
            | ClientMessage::FetchWelcomes { mailbox } => {
                mailboxes.insert(mailbox.as_bytes().to_vec());
            }
            _ => {}
        }
    }
    let media_heads: Vec<Vec<u8>> = media_heads.into_iter().collect();
    let handle_contexts: Vec<Vec<u8>> = handle_contexts.into_iter().collect();
    let mailboxes: Vec<Vec<u8>> = mailboxes.into_iter().collect();
    let kp_refs: BTreeSet<Vec<u8>> = net.kp_refs.iter().cloned().collect();
    assert_eq!(kp_refs.len(), 3, "bob's, carol's and dave's");
    assert_eq!(mailboxes, kp_refs.into_iter().collect::<Vec<_>>());
    assert!(media_heads.len() > 1000, "{}", media_heads.len());
    for kind in ["Subscribed", "Handshake", "Handshake (relay)"] {
        assert!(
            kinds.get(kind).is_some_and(|n| *n > 0),
            "no {kind} in {kinds:?}"
        );
    }
    // The relay's view holds every token, every handle prefix of the media it carried,
    // every handle context and every mailbox: the search finds them there.
    // (Stream messages as the carrier frames them: the handle contexts carry the length.)
    let relay_stream: Vec<Vec<u8>> = relay_view.iter().map(|m| framed(m, m.len())).collect();
    let relay_stream: Vec<&[u8]> = relay_stream.iter().map(|m| &m[..]).collect();
    let in_relay_view = |needles: &[Vec<u8>]| occurrences(&relay_stream, needles);
    assert!(in_relay_view(&tokens).iter().all(|h| *h > 0));
    assert!(in_relay_view(&media_heads).iter().all(|h| *h > 0));
    assert!(in_relay_view(&handle_contexts).iter().all(|h| *h > 0));
    assert!(in_relay_view(&mailboxes).iter().all(|h| *h > 0));
    // The observer sees none of them.
    let secret: Vec<Vec<u8>> = [&tokens, &media_heads, &handle_contexts, &mailboxes]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let on_wire = occurrences(&observed, &secret);
    let leaked: Vec<&Vec<u8>> = secret
        .iter()
        .zip(&on_wire)
        .filter(|(_, h)| **h > 0)
        .map(|(n, _)| n)
        .collect();
    assert!(leaked.is_empty(), "on the wire: {leaked:02x?}");
    // Random bytes as long as the observer's recording would match them by chance this
    // often (the 12-byte Subscribed contexts decide it).
    let expected_by_chance = chance(&observed, &secret);
    assert!(expected_by_chance < 1e-9, "{expected_by_chance}");

    // ---- MLS framing (issue 17) ----
    // Every commit and proposal travelled sealed: the relay sees neither the room's group
    // id (constant for the room's life: it would link every token) nor the epoch (it
    // follows the group id in MLS framing) nor the content type, and every handshake
    // message has the size of its bucket.
    let group_id = net.nodes[ALICE].call().room().unwrap().group_id().to_vec();
    assert!(group_id.len() >= 16);
    let group_needle = [group_id.clone()];
    assert_eq!(
        found(&relay_view, &group_needle),
        0,
        "group id in the relay's view"
    );
    assert_eq!(found(&observed, &group_needle), 0, "group id on the wire");
    // The search finds it where it is: in the MLS messages carol's app opened.
    let Peer::Rogue(carol) = &net.nodes[CAROL].peer else {
        panic!("carol")
    };
    let carol_opened: Vec<&[u8]> = carol.opened.iter().map(|m| &m[..]).collect();
    assert!(!carol_opened.is_empty());
    assert_eq!(found(&carol_opened, &group_needle), 1);
    let mut handshake_sizes: BTreeMap<usize, usize> = BTreeMap::new();
    let mut note_handshake = |message: &[u8]| {
        assert_eq!(message.first(), Some(&sealed::SEALED_HANDSHAKE));
        assert!(
            openmls::prelude::MlsMessageIn::tls_deserialize_exact(message).is_err(),
            "an MLS message on the relay wire"
        );
        *handshake_sizes.entry(message.len()).or_default() += 1;
    };
    for m in &relay_view {
        if let Ok(ClientMessage::Handshake { message, .. }) = ClientMessage::parse(m) {
            note_handshake(message);
        }
        if let Ok(RelayMessage::Handshake { message, .. }) = RelayMessage::parse(m) {
            note_handshake(message);
        }
    }
    // No epoch number either: MLS writes an epoch as 8 bytes, big-endian, right after the
    // group id. None of the room's epochs appears in what members sent through the relay
    // (the handshake messages and Welcomes themselves; the relay's own framing has its
    // sequence numbers, small integers of the same shape) nor anywhere on the wire, while
    // the same search finds them in the MLS messages carol's app opened. (Epoch 0 is eight
    // zero bytes, which every padded Welcome holds as padding: it tells nothing and is not
    // searched.)
    let epoch_needles: Vec<Vec<u8>> = (1..=final_epoch)
        .map(|e| e.to_be_bytes().to_vec())
        .collect();
    let mut carried: Vec<&[u8]> = Vec::new();
    for m in &relay_view {
        match (ClientMessage::parse(m), RelayMessage::parse(m)) {
            (Ok(ClientMessage::Handshake { message, .. }), _)
            | (_, Ok(RelayMessage::Handshake { message, .. })) => carried.push(message),
            (Ok(ClientMessage::DeliverWelcome { welcome, .. }), _)
            | (_, Ok(RelayMessage::Welcome { welcome, .. })) => carried.push(welcome),
            _ => {}
        }
    }
    assert!(
        carried.len() > 100,
        "{} handshakes and Welcomes",
        carried.len()
    );
    assert_eq!(
        found(&carried, &epoch_needles),
        0,
        "an epoch number in a handshake message or Welcome"
    );
    assert_eq!(
        found(&observed, &epoch_needles),
        0,
        "an epoch number on the wire"
    );
    assert!(found(&carol_opened, &epoch_needles) >= 2);
    let by_chance = chance(&carried, &epoch_needles) + chance(&observed, &epoch_needles);
    assert!(by_chance < 1e-9, "{by_chance}");
    // Welcomes travel padded to the same buckets (they cannot be sealed: the invitee has no
    // key yet): each is 0xA2, a length, the MLS Welcome and zeros, 4,096 bytes in all.
    let mut welcome_sizes: BTreeMap<usize, usize> = BTreeMap::new();
    for m in &relay_view {
        let welcome = match (ClientMessage::parse(m), RelayMessage::parse(m)) {
            (Ok(ClientMessage::DeliverWelcome { welcome, .. }), _)
            | (_, Ok(RelayMessage::Welcome { welcome, .. })) => Some(welcome),
            _ => None,
        };
        if let Some(welcome) = welcome {
            assert_eq!(welcome.first(), Some(&sealed::PADDED_WELCOME));
            let inner = sealed::unpad_welcome(welcome).unwrap();
            assert!(inner.len() < welcome.len());
            *welcome_sizes.entry(welcome.len()).or_default() += 1;
        }
    }
    assert_eq!(
        welcome_sizes.keys().copied().collect::<Vec<_>>(),
        vec![4096],
        "{welcome_sizes:?}"
    );
    // One bucket for everything this room sent: self-updates, adds, a removal, proposals.
    assert_eq!(
        handshake_sizes.keys().copied().collect::<Vec<_>>(),
        vec![4096],
        "{handshake_sizes:?}"
    );
    // Carol's opened commits were of every kind and of different sizes before sealing.
    let plain_sizes: BTreeSet<usize> = carol.opened.iter().map(Vec::len).collect();
    assert!(plain_sizes.len() > 1, "{plain_sizes:?}");
    println!(
        "handshake messages on the relay wire: {handshake_sizes:?} (bytes: count); their MLS \
         messages (as carol's app opened them) were {plain_sizes:?} bytes; Welcomes \
         {welcome_sizes:?}; group id in neither view"
    );

    // ---- QUIC ----
    // Every member's connection was accepted once, after a Retry proved its address; it
    // never dropped; nothing came the wrong way (media on the stream, control as a
    // datagram), and the relay refused or dropped nothing.
    let members = net.nodes.len() as u64;
    assert!(quic.retries >= members, "{quic:?}");
    assert_eq!(quic.accepted, members, "{quic:?}");
    assert_eq!(quic.misrouted, 0, "{quic:?}");
    assert_eq!(
        (
            quic.refused,
            quic.closed,
            quic.closed_slow,
            quic.closed_protocol,
            quic.media_dropped
        ),
        (0, 0, 0, 0, 0),
        "{quic:?}"
    );
    assert_eq!(net.relay.connection_count(), net.nodes.len());
    for node in &net.nodes {
        assert_eq!(node.quic_events, vec![QuicEvent::Connected]);
        let stats = node.quic.stats();
        assert_eq!((stats.connects, stats.disconnects), (1, 0), "{stats:?}");
        assert_eq!(stats.media_dropped, 0, "{stats:?}");
    }

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
    let drops = net.relay.router().stats().drops;
    assert_eq!(drops.total(), drops.mailbox_empty, "{drops:?}");

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
        // Its QUIC connection came up, and the relay answered that Hello, within the step
        // the member started in.
        let hello_step = net.recording.iter().find(|r| r.from == i).unwrap().step;
        let (ready_step, ready) = &net.nodes[i].inbox[0];
        assert_eq!(RelayMessage::parse(ready), Ok(RelayMessage::Ready));
        assert_eq!(*ready_step, hello_step);
    }
    assert_eq!(net.relay.router().stats().drops.not_connected, 0);

    println!(
        "relay's view: {} messages in ({} bytes), {} out ({} bytes), as its router counted; \
         {} distinct tokens subscribed for epochs 0..={final_epoch}; ops at steps {:?}",
        relay_counts.0,
        relay_counts.1,
        relay_counts.2,
        relay_counts.3,
        subscribed.len(),
        op_steps.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    println!(
        "observer's view: {} UDP datagrams ({} bytes) to the relay, {} ({} bytes) from it; \
         per member {per_member:?}; relay QUIC stats {quic:?}",
        observed_up.len(),
        size(&observed_up),
        observed.len() - observed_up.len(),
        size(&observed) - size(&observed_up),
    );
    println!(
        "searched: {} tokens, {} media message heads, {} handle contexts {kinds:?}, {} mailbox ids: all \
         in the relay's view, none on the wire (chance matches expected there: \
         {expected_by_chance:.1e}); {} names: in neither, found when planted",
        tokens.len(),
        media_heads.len(),
        handle_contexts.len(),
        mailboxes.len(),
        names.len(),
    );
    println!(
        "{checked} plaintext Opus runs checked in each view, 0 found; {leaked_checked} of \
         {leaked_checked} found in each when one packet is planted"
    );
    println!(
        "carol after her removal at step {}: {} frames, {carol_handshakes_sent} replayed \
         handshakes, {carol_resubscribes} re-subscriptions after the grace period reached \
         nobody ({media_after} media messages reached current members then); during the \
         grace period {grace_deliveries} deliveries of her frames reached members, {opened} \
         of them would still have opened (last at step {last_open}), no receiver took them",
        removal.step,
        carol_frames.len(),
    );
    println!(
        "most channels one member was subscribed to at once: {max_subscriptions:?}; most \
         rounds of datagram exchange in one step: {}",
        net.max_rounds
    );
    println!(
        "wall time {} ms ({} ms for the call, the rest for the checks)",
        started.elapsed().as_millis(),
        call_done.as_millis()
    );
}

fn joiner(who: usize, config: &CallConfig, now: Instant) -> Call {
    let identity = Identity::new(Provider::new().unwrap(), PEOPLE[who].0.as_bytes()).unwrap();
    let key_package = identity.key_package(MlsSuite::Classic).unwrap();
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
