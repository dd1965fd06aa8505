//! The relay over QUIC against the plain-UDP relay, same run, loopback, one room of 8
//! members: what forwarding one member's 60-byte media frame to the 7 others costs the
//! relay (its whole work: receiving, decrypting, routing, encrypting, the socket calls, and
//! the acknowledgements QUIC brings back), reported per forwarded packet. Both relays run
//! on this bench's thread, so the time measured is one core's. Also: a new member's
//! connection setup to its first media packet delivered, over QUIC on loopback.
//!
//! The plain-UDP relay is today's router on a socket with an address → connection map and
//! no address check (the cheapest it could be); its clients are bare sockets.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sotto::media::ChannelToken;
use sotto::quic::{QuicClient, QuicRelay, RelayIdentity, RelayPin};
use sotto::relay::{ChannelHandle, ClientMessage, ConnId, RelayMessage, Router, RouterLimits};

const MEMBERS: usize = 8;
const FRAME: usize = 60;
const TOKEN: ChannelToken = ChannelToken([7; 16]);

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

fn encode(message: ClientMessage<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; message.encoded_len()];
    message.encode(&mut buf).unwrap();
    buf
}

// ---- Plain UDP ----

struct UdpRelay {
    socket: UdpSocket,
    router: Router,
    conns: HashMap<SocketAddr, ConnId>,
    addrs: HashMap<ConnId, SocketAddr>,
    buf: Vec<u8>,
}

impl UdpRelay {
    fn new() -> UdpRelay {
        UdpRelay {
            socket: socket(),
            router: Router::new(RouterLimits::default(), &[0x42; 32]),
            conns: HashMap::new(),
            addrs: HashMap::new(),
            buf: vec![0u8; 65_536],
        }
    }

    /// Handles every datagram waiting; how many.
    fn drain(&mut self, now: Instant) -> usize {
        let mut n = 0;
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf) {
                Ok(got) => got,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
                Err(e) => panic!("{e}"),
            };
            n += 1;
            let next = ConnId(self.conns.len() as u64 + 1);
            let conn = *self.conns.entry(from).or_insert(next);
            self.addrs.insert(conn, from);
            let (socket, addrs) = (&self.socket, &self.addrs);
            let _ = self
                .router
                .receive(conn, &self.buf[..len], now, &mut |to, bytes| {
                    let _ = socket.send_to(bytes, addrs[&to]);
                });
        }
    }
}

fn drain_socket(s: &UdpSocket, buf: &mut [u8], mut each: impl FnMut(&[u8], SocketAddr)) {
    loop {
        match s.recv_from(buf) {
            Ok((n, from)) => each(&buf[..n], from),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => panic!("{e}"),
        }
    }
}

fn udp_room() -> (UdpRelay, Vec<(UdpSocket, ChannelHandle)>) {
    let mut relay = UdpRelay::new();
    let to = relay.socket.local_addr().unwrap();
    let mut members = Vec::new();
    let mut buf = vec![0u8; 65_536];
    for _ in 0..MEMBERS {
        let s = socket();
        s.send_to(&encode(ClientMessage::Hello), to).unwrap();
        s.send_to(&encode(ClientMessage::Subscribe { token: TOKEN }), to)
            .unwrap();
        relay.drain(Instant::now());
        let mut handle = None;
        drain_socket(&s, &mut buf, |bytes, _| {
            if let Ok(RelayMessage::Subscribed { handle: h, .. }) = RelayMessage::parse(bytes) {
                handle = Some(h);
            }
        });
        members.push((s, handle.expect("subscribed")));
    }
    (relay, members)
}

// ---- QUIC ----

struct Quic {
    socket: UdpSocket,
    relay: QuicRelay,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Quic {
    fn new(identity: &RelayIdentity) -> Quic {
        Quic {
            socket: socket(),
            relay: QuicRelay::new(identity, Router::new(RouterLimits::default(), &[0x42; 32]))
                .unwrap(),
            buf: vec![0u8; 65_536],
            out: Vec::with_capacity(2048),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Handles every datagram waiting and due timer, sends everything; how many datagrams
    /// came in.
    fn drain(&mut self, now: Instant) -> usize {
        let mut n = 0;
        loop {
            match self.socket.recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    n += 1;
                    self.relay.handle_datagram(&self.buf[..len], from, now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        if self.relay.poll_timeout().is_some_and(|t| t <= now) {
            self.relay.handle_timeout(now);
        }
        while let Some(to) = self.relay.poll_transmit(now, &mut self.out) {
            let _ = self.socket.send_to(&self.out, to);
        }
        n
    }
}

struct QuicMember {
    socket: UdpSocket,
    client: QuicClient,
    handle: Option<ChannelHandle>,
    media: u64,
}

impl QuicMember {
    fn new(relay: SocketAddr, pin: RelayPin, now: Instant) -> QuicMember {
        let mut client = QuicClient::connect(relay, pin, now).unwrap();
        client.send(&encode(ClientMessage::Hello)).unwrap();
        client
            .send(&encode(ClientMessage::Subscribe { token: TOKEN }))
            .unwrap();
        QuicMember {
            socket: socket(),
            client,
            handle: None,
            media: 0,
        }
    }

    /// Takes what arrived, runs timers, sends what is due.
    fn step(&mut self, buf: &mut [u8], out: &mut Vec<u8>, now: Instant) {
        let client = &mut self.client;
        drain_socket(&self.socket, buf, |bytes, from| {
            client.handle_datagram(bytes, from, now)
        });
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
        let mut message = Vec::new();
        while client.poll_message(&mut message) {
            match RelayMessage::parse(&message) {
                Ok(RelayMessage::Subscribed { handle, .. }) => self.handle = Some(handle),
                Ok(RelayMessage::Media { .. }) => self.media += 1,
                _ => {}
            }
        }
        while let Some(to) = client.poll_transmit(now, out) {
            let _ = self.socket.send_to(out, to);
        }
    }
}

fn quic_room(identity: &RelayIdentity) -> (Quic, Vec<QuicMember>) {
    let mut relay = Quic::new(identity);
    let now = Instant::now();
    let mut members: Vec<QuicMember> = (0..MEMBERS)
        .map(|_| QuicMember::new(relay.addr(), identity.pin(), now))
        .collect();
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while members.iter().any(|m| m.handle.is_none()) {
        assert!(Instant::now() < deadline, "QUIC room setup timed out");
        let now = Instant::now();
        for m in &mut members {
            m.step(&mut buf, &mut out, now);
        }
        relay.drain(now);
        std::thread::sleep(Duration::from_micros(200));
    }
    (relay, members)
}

fn forward(c: &mut Criterion) {
    let identity = RelayIdentity::generate().unwrap();
    let frame = [0x5a; FRAME];
    let mut group = c.benchmark_group("relay over loopback/forward 60 B to 7 of 8");
    group.throughput(Throughput::Elements((MEMBERS - 1) as u64));
    group.sample_size(30);

    group.bench_function("plain UDP relay", |b| {
        let (mut relay, members) = udp_room();
        let to = relay.socket.local_addr().unwrap();
        let mut buf = vec![0u8; 65_536];
        let mut i = 0usize;
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let (s, handle) = &members[i % MEMBERS];
                i += 1;
                let media = ClientMessage::Media {
                    handle: *handle,
                    frame: &frame,
                };
                let n = media.encode(&mut buf).unwrap();
                s.send_to(&buf[..n], to).unwrap();
                let start = Instant::now();
                let got = relay.drain(start);
                spent += start.elapsed();
                assert_eq!(got, 1);
                if i.is_multiple_of(16) {
                    for (s, _) in &members {
                        drain_socket(s, &mut buf, |_, _| {});
                    }
                }
            }
            spent
        });
        assert_eq!(relay.router.stats().drops.total(), 0);
    });

    group.bench_function("QUIC relay", |b| {
        let (mut relay, mut members) = quic_room(&identity);
        let mut buf = vec![0u8; 65_536];
        let mut out = Vec::new();
        let mut i = 0usize;
        let received_before: u64 = members.iter().map(|m| m.media).sum();
        let mut sent = 0u64;
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let m = &mut members[i % MEMBERS];
                i += 1;
                let media = ClientMessage::Media {
                    handle: m.handle.unwrap(),
                    frame: &frame,
                };
                let n = media.encode(&mut buf).unwrap();
                m.client.send(&buf[..n]).unwrap();
                let now = Instant::now();
                while let Some(dest) = m.client.poll_transmit(now, &mut out) {
                    m.socket.send_to(&out, dest).unwrap();
                }
                sent += 1;
                // The relay's whole work for this packet, and the acknowledgements that
                // came back since the last one.
                let start = Instant::now();
                relay.drain(start);
                spent += start.elapsed();
                if i.is_multiple_of(16) {
                    let now = Instant::now();
                    for m in &mut members {
                        m.step(&mut buf, &mut out, now);
                    }
                }
            }
            spent
        });
        // Every packet reached all 7 others (loopback loses nothing), none twice.
        let now = Instant::now();
        for m in &mut members {
            m.step(&mut buf, &mut out, now);
        }
        let received: u64 = members.iter().map(|m| m.media).sum::<u64>() - received_before;
        assert!(received <= sent * (MEMBERS as u64 - 1));
        assert!(
            received * 100 >= sent * (MEMBERS as u64 - 1) * 99,
            "QUIC relay delivered {received} of {}",
            sent * (MEMBERS as u64 - 1)
        );
        let q = relay.relay.stats();
        assert_eq!(q.media_dropped, 0, "{q:?}");
    });
    group.finish();
}

fn setup(c: &mut Criterion) {
    let identity = RelayIdentity::generate().unwrap();
    let mut relay = Quic::new(&identity);
    let frame = [0x5a; FRAME];
    let mut group = c.benchmark_group("relay over loopback/setup to first media");
    group.sample_size(20);
    group.bench_function("QUIC: connect, Hello, Subscribe, media to a peer", |b| {
        let mut buf = vec![0u8; 65_536];
        let mut out = Vec::new();
        // The peer that receives: connected once.
        let mut peer = QuicMember::new(relay.addr(), identity.pin(), Instant::now());
        while peer.handle.is_none() {
            let now = Instant::now();
            peer.step(&mut buf, &mut out, now);
            relay.drain(now);
        }
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let before = peer.media;
                let start = Instant::now();
                let mut member = QuicMember::new(relay.addr(), identity.pin(), start);
                let mut media_sent = false;
                while peer.media == before {
                    let now = Instant::now();
                    assert!(now - start < Duration::from_secs(5), "setup timed out");
                    member.step(&mut buf, &mut out, now);
                    if let (false, Some(handle)) = (media_sent, member.handle) {
                        let n = ClientMessage::Media {
                            handle,
                            frame: &frame,
                        }
                        .encode(&mut buf)
                        .unwrap();
                        member.client.send(&buf[..n]).unwrap();
                        member.step(&mut buf, &mut out, now);
                        media_sent = true;
                    }
                    relay.drain(now);
                    peer.step(&mut buf, &mut out, now);
                }
                spent += start.elapsed();
                member.client.close(Instant::now());
                member.step(&mut buf, &mut out, Instant::now());
                relay.drain(Instant::now());
            }
            spent
        });
    });
    group.finish();
}

criterion_group!(benches, forward, setup);
criterion_main!(benches);
