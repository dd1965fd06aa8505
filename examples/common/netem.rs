//! An impairing UDP proxy on 127.0.0.1, standing in for netem (which this kernel lacks):
//! one client's path to a server, with loss, delay and jitter (hence reordering),
//! duplicates and outages, applied to both directions; it can record every datagram it
//! carries (what a network observer on that path sees). It runs on its own thread, in
//! real time, until stopped (and at most `Impairment::max_run`).
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the path does to each datagram, in each direction independently.
#[derive(Clone, Debug)]
pub struct Impairment {
    /// Probability a datagram is dropped.
    pub loss: f64,
    /// Base one-way delay.
    pub delay: Duration,
    /// Each datagram's delay is `delay` ± up to this, uniformly: datagrams reorder.
    pub jitter: Duration,
    /// Probability a datagram is delivered twice (each copy with its own delay).
    pub duplicate: f64,
    /// Windows (start after the proxy started, length) in which everything is dropped.
    pub outages: Vec<(Duration, Duration)>,
    /// Seed of the proxy's random choices.
    pub seed: u64,
    /// Keep a copy of every datagram carried.
    pub record: bool,
    /// The proxy stops by itself after this long.
    pub max_run: Duration,
}

impl Impairment {
    /// A clean path (nothing lost, delayed or duplicated), recording or not.
    pub fn clean(record: bool) -> Impairment {
        Impairment {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            duplicate: 0.0,
            outages: Vec::new(),
            seed: 1,
            record,
            max_run: Duration::from_secs(600),
        }
    }
}

/// Which way a datagram went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// What the proxy did.
#[derive(Clone, Debug, Default)]
pub struct ProxyReport {
    /// Datagrams received from either side.
    pub received: u64,
    /// Dropped by loss, and by an outage.
    pub lost: u64,
    /// Dropped inside an outage window.
    pub outage_dropped: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Datagrams sent on (copies included).
    pub forwarded: u64,
    /// Every datagram carried (if recording): when it arrived, which way, its bytes.
    pub recording: Vec<(Duration, Direction, Vec<u8>)>,
}

/// A running proxy.
pub struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ProxyReport>>,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Pending {
    at: Instant,
    seq: u64,
    dir: Direction,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Proxy {
    /// A proxy on a fresh 127.0.0.1 port in front of `server` (a 127.0.0.1 address).
    pub fn start(server: SocketAddr, impairment: Impairment) -> std::io::Result<Proxy> {
        assert!(server.ip().is_loopback(), "the proxy stays on 127.0.0.1");
        let front = UdpSocket::bind("127.0.0.1:0")?;
        let back = UdpSocket::bind("127.0.0.1:0")?;
        back.connect(server)?;
        front.set_nonblocking(true)?;
        back.set_nonblocking(true)?;
        let addr = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || run(front, back, impairment, flag));
        Ok(Proxy {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Where the client sends (instead of the server's address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the proxy; what it did.
    pub fn stop(mut self) -> ProxyReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(front: UdpSocket, back: UdpSocket, imp: Impairment, stop: Arc<AtomicBool>) -> ProxyReport {
    let started = Instant::now();
    let mut rng = Rng(imp.seed.max(1));
    let mut report = ProxyReport::default();
    let mut queue: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut client: Option<SocketAddr> = None;
    let mut seq = 0u64;
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < imp.max_run {
        let mut busy = false;
        for dir in [Direction::Up, Direction::Down] {
            loop {
                let got = match dir {
                    Direction::Up => front.recv_from(&mut buf).map(|(n, from)| {
                        client = Some(from);
                        n
                    }),
                    Direction::Down => back.recv(&mut buf),
                };
                let n = match got {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // ICMP errors of an earlier send (port unreachable): keep going.
                    Err(_) => continue,
                };
                busy = true;
                let now = Instant::now();
                let since = now.saturating_duration_since(started);
                let bytes = buf[..n].to_vec();
                report.received += 1;
                if imp.record {
                    report.recording.push((since, dir, bytes.clone()));
                }
                if imp
                    .outages
                    .iter()
                    .any(|(start, len)| since >= *start && since < *start + *len)
                {
                    report.outage_dropped += 1;
                    continue;
                }
                if rng.unit() < imp.loss {
                    report.lost += 1;
                    continue;
                }
                let copies = if rng.unit() < imp.duplicate { 2 } else { 1 };
                report.duplicated += copies - 1;
                for _ in 0..copies {
                    let jitter = imp.jitter.as_secs_f64() * (2.0 * rng.unit() - 1.0);
                    let delay = (imp.delay.as_secs_f64() + jitter).max(0.0);
                    seq += 1;
                    queue.push(Reverse(Pending {
                        at: now + Duration::from_secs_f64(delay),
                        seq,
                        dir,
                        bytes: bytes.clone(),
                    }));
                }
            }
        }
        let now = Instant::now();
        while queue.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Some(Reverse(p)) = queue.pop() else { break };
            let sent = match (p.dir, client) {
                (Direction::Up, _) => back.send(&p.bytes),
                (Direction::Down, Some(to)) => front.send_to(&p.bytes, to),
                (Direction::Down, None) => continue,
            };
            if sent.is_ok() {
                report.forwarded += 1;
            }
        }
        if !busy {
            let next = queue
                .peek()
                .map(|Reverse(p)| p.at.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(1));
            std::thread::sleep(next.min(Duration::from_micros(500)));
        }
    }
    report
}
