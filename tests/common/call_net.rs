//! A simulated network for `sotto::call::Call`s on virtual time: sotto's `Router`, each
//! member one connection (as a carrier that authenticates connections gives it), every
//! datagram in both directions through a seeded impairment (delay, loss, duplication, and
//! so reordering), and relay restarts (a new router and key: every connection and mailbox
//! is lost).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use sotto::call::{Call, CallConfig, CallEvent};
use sotto::provider::Provider;
use sotto::relay::{ConnId, Router, RouterLimits};
use sotto::room::Identity;

/// Virtual time advances by this much per step.
pub const TICK: Duration = Duration::from_millis(5);
/// Audio frame interval.
pub const FRAME: Duration = Duration::from_millis(20);

/// A seeded generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// How the network treats every datagram (each direction, independently).
#[derive(Clone, Copy, Debug, Default)]
pub struct Impairment {
    /// Percent of datagrams lost.
    pub loss: u64,
    /// Percent of datagrams delivered twice (the copy with its own delay).
    pub duplicate: u64,
    /// Delay, uniform in 0..=max_delay (so datagrams overtake each other).
    pub max_delay: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum To {
    Relay { from: usize },
    Node(usize),
}

pub struct Node {
    pub call: Call,
    pub name: String,
    /// Every event the call gave.
    pub events: Vec<CallEvent>,
    /// Frames pulled in which at least one member was heard.
    pub heard_frames: u64,
    /// Mixed frames pulled.
    pub pulled_frames: u64,
    /// Datagrams `handle_datagram` refused.
    pub refused: u64,
    /// Stop feeding this node (crashed or gone).
    pub offline: bool,
    /// Also sends a second stream (`sotto::keys::StreamId(1)`), a tone of its own.
    pub second_stream: bool,
}

pub struct CallNet {
    pub router: Router,
    pub nodes: Vec<Node>,
    wire: Vec<(Instant, To, Vec<u8>)>,
    pub rng: Rng,
    pub impairment: Impairment,
    pub now: Instant,
    pub restarts: u64,
    /// Datagrams the relay received from members (from, bytes), when `record` is on.
    pub recording: Vec<(usize, Vec<u8>)>,
    pub record: bool,
    /// Datagrams the relay sent to members as the network delivered them (when, to,
    /// bytes), when `record_delivered` is on; an offline member's too (it does not get them).
    pub delivered: Vec<(Instant, usize, Vec<u8>)>,
    pub record_delivered: bool,
    next_frame: Instant,
    pcm: Vec<i16>,
    out: Vec<i16>,
    datagram: Vec<u8>,
}

fn key(seed: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    let mut r = Rng(seed);
    for chunk in k.chunks_mut(8) {
        chunk.copy_from_slice(&r.next().to_le_bytes());
    }
    k
}

/// A tone for member `i`: different per member, never silent.
pub fn tone(i: usize, frame: u64, pcm: &mut [i16]) {
    let period = 40 + 7 * i as u64;
    let len = pcm.len() as u64;
    for (n, s) in pcm.iter_mut().enumerate() {
        let t = frame * len + n as u64;
        *s = if (t / (period / 2)).is_multiple_of(2) {
            6000
        } else {
            -6000
        };
    }
}

impl CallNet {
    pub fn new(seed: u64, impairment: Impairment, now: Instant) -> CallNet {
        CallNet {
            router: Router::new(RouterLimits::default(), &key(seed)),
            nodes: Vec::new(),
            wire: Vec::new(),
            rng: Rng(seed),
            impairment,
            now,
            restarts: 0,
            recording: Vec::new(),
            record: false,
            delivered: Vec::new(),
            record_delivered: false,
            next_frame: now,
            pcm: vec![0; 960],
            out: vec![0; 960],
            datagram: Vec::new(),
        }
    }

    pub fn add(&mut self, name: &str, call: Call) -> usize {
        self.nodes.push(Node {
            call,
            name: name.to_string(),
            events: Vec::new(),
            heard_frames: 0,
            pulled_frames: 0,
            refused: 0,
            offline: false,
            second_stream: false,
        });
        self.nodes.len() - 1
    }

    /// A new room's first member.
    pub fn create(&mut self, name: &str, config: CallConfig) -> usize {
        let identity = Identity::new(Provider::new().unwrap(), name.as_bytes()).unwrap();
        let call = Call::create(identity, config, self.now).unwrap();
        self.add(name, call)
    }

    /// A member waiting for its Welcome, with a KeyPackage of `config.room.mls_suite`;
    /// returns it and its KeyPackage bytes.
    pub fn joiner(&mut self, name: &str, config: CallConfig) -> (usize, Vec<u8>) {
        let identity = Identity::new(Provider::new().unwrap(), name.as_bytes()).unwrap();
        let kp = identity.key_package(config.room.mls_suite).unwrap();
        let bytes = kp.bytes.clone();
        let call = Call::join(identity, kp, config, self.now).unwrap();
        (self.add(name, call), bytes)
    }

    /// Loses everything the relay held: connections, channels, mailboxes.
    pub fn restart_relay(&mut self) {
        self.restarts += 1;
        let seed = self.rng.next();
        self.router = Router::new(RouterLimits::default(), &key(seed));
        self.wire.retain(|(_, to, _)| !matches!(to, To::Node(_)));
    }

    fn send(&mut self, to: To, bytes: &[u8]) {
        let copies = if self.rng.chance(self.impairment.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.rng.chance(self.impairment.loss) {
                continue;
            }
            let max = self.impairment.max_delay.as_micros() as u64;
            let delay = Duration::from_micros(self.rng.below(max + 1));
            self.wire.push((self.now + delay, to, bytes.to_vec()));
        }
    }

    fn flush(&mut self, i: usize) {
        let mut d = std::mem::take(&mut self.datagram);
        while self.nodes[i].call.poll_transmit(&mut d) {
            if !self.nodes[i].offline {
                self.send(To::Relay { from: i }, &d);
            }
        }
        self.datagram = d;
        while let Some(e) = self.nodes[i].call.poll_event() {
            self.nodes[i].events.push(e);
        }
    }

    fn relay_receive(&mut self, from: usize, bytes: &[u8]) {
        if self.record {
            self.recording.push((from, bytes.to_vec()));
        }
        let _ = self.relay_inject(from as u64, bytes);
    }

    /// Hands the relay `bytes` from connection `conn` (a node's index, or any other number
    /// for a connection of the test's own); the relay's answers to nodes go on the wire,
    /// those to other connections are returned.
    pub fn relay_inject(&mut self, conn: u64, bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let now = self.now;
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        let _ = self
            .router
            .receive(ConnId(conn), bytes, now, &mut |to: ConnId, b: &[u8]| {
                out.push((to.0, b.to_vec()))
            });
        let nodes = self.nodes.len() as u64;
        let (to_nodes, others): (Vec<_>, Vec<_>) = out.into_iter().partition(|(to, _)| *to < nodes);
        for (to, b) in to_nodes {
            self.send(To::Node(to as usize), &b);
        }
        others
    }

    /// Delivers everything due, runs due timeouts, and every 20 ms moves one frame of
    /// audio per member (`speak` chooses who sends PCM; everyone pulls).
    pub fn step(&mut self, speak: &mut impl FnMut(usize) -> bool) {
        self.now += TICK;
        let now = self.now;
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.wire.len() {
            if self.wire[i].0 <= now {
                due.push(self.wire.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|(t, _, _)| *t);
        for (_, to, bytes) in due {
            match to {
                To::Relay { from } => self.relay_receive(from, &bytes),
                To::Node(n) => {
                    if self.record_delivered {
                        self.delivered.push((now, n, bytes.clone()));
                    }
                    if self.nodes[n].offline {
                        continue;
                    }
                    if self.nodes[n].call.handle_datagram(&bytes, now).is_err() {
                        self.nodes[n].refused += 1;
                    }
                    self.flush(n);
                }
            }
        }
        let audio = now >= self.next_frame;
        if audio {
            self.next_frame += FRAME;
        }
        for n in 0..self.nodes.len() {
            if self.nodes[n].offline {
                continue;
            }
            if self.nodes[n].call.poll_timeout().is_some_and(|t| t <= now) {
                self.nodes[n].call.handle_timeout(now);
            }
            if audio {
                let frame = self.nodes[n].call.stats().frames_sent;
                let samples = self.nodes[n].call.frame_samples();
                self.pcm.resize(samples, 0);
                self.out.resize(samples, 0);
                if speak(n) {
                    tone(n, frame, &mut self.pcm);
                } else {
                    self.pcm.fill(0);
                }
                self.nodes[n].call.send_audio(&self.pcm, now).unwrap();
                if self.nodes[n].second_stream {
                    tone(n + 100, frame, &mut self.pcm);
                    let music = sotto::keys::StreamId(1);
                    self.nodes[n]
                        .call
                        .send_stream(music, &self.pcm, now)
                        .unwrap();
                }
                let heard = self.nodes[n].call.pull_audio(&mut self.out, now).unwrap();
                self.nodes[n].pulled_frames += 1;
                if heard > 0 {
                    self.nodes[n].heard_frames += 1;
                }
            }
            self.flush(n);
        }
    }

    /// Steps for `d` of virtual time, everyone speaking.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step(&mut |_| true);
        }
    }

    /// Steps until `done` holds or `limit` passes; whether it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&CallNet) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.step(&mut |_| true);
        }
        done(self)
    }

    /// Nodes in the room.
    pub fn active(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| !self.nodes[*i].offline && self.nodes[*i].call.is_in_room())
            .collect()
    }

    /// Every active node at the same epoch and safety code, and settled (heard every other
    /// member in that epoch).
    pub fn converged(&self) -> bool {
        let active = self.active();
        let Some(first) = active.first() else {
            return false;
        };
        let code = self.nodes[*first].call.safety_code();
        let epoch = self.nodes[*first].call.epoch();
        active.iter().all(|i| {
            let c = &self.nodes[*i].call;
            c.epoch() == epoch && c.safety_code() == code && c.is_settled()
        })
    }
}
