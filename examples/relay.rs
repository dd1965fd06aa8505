//! `cargo run --release --example relay [-- --port N] [--bind ADDR] [--idle-secs N]
//! [--seconds N] [--log-secs N]`
//!
//! The reference relay: sotto's sans-IO `Router` on a UDP socket. A peer address becomes a
//! connection once it proved it receives there (sotto's `AddressCheck`: it echoed the
//! cookie of a challenge in a Hello); until then its datagrams get nothing but a challenge
//! no longer than themselves, so a forged source address cannot turn the relay against a
//! third party. A connection proves its address again every 30 s (the relay challenges it;
//! unanswered, the connection ends a period later), so a validation does not outlive its
//! peer. A peer silent for `--idle-secs` (default 30) is disconnected (its subscriptions
//! end). Every request that changes the relay's state carries the proof of its connection
//! the relay gave in `Ready`, so a forger who knows a client's address and port cannot act
//! for it (media stands on its random 32-bit handle). It logs counts only — datagrams, bytes, channels, connections,
//! refusals — never tokens, handles, payloads or peer addresses. Runs until killed, or for
//! `--seconds N`.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use zeroize::Zeroize;

use ring::rand::{SecureRandom, SystemRandom};
use sotto::relay::{
    AddressCheck, Admission, ClientMessage, ConnId, RelayMessage, Router, RouterLimits,
    CHALLENGE_LEN, MAX_MESSAGE,
};

struct Options {
    bind: IpAddr,
    port: u16,
    idle: Duration,
    seconds: Option<u64>,
    log_every: Duration,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: relay [--port N (default 7878)] [--bind ADDR (default 127.0.0.1)] \
         [--idle-secs N (default 30)] [--seconds N (default: until killed)] [--log-secs N (default 5)]"
    );
    ExitCode::from(2)
}

fn parse_args() -> Option<Options> {
    let mut o = Options {
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 7878,
        idle: Duration::from_secs(30),
        seconds: None,
        log_every: Duration::from_secs(5),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next()?;
        match arg.as_str() {
            "--port" => o.port = value.parse().ok()?,
            "--bind" => o.bind = value.parse().ok()?,
            "--idle-secs" => o.idle = Duration::from_secs(value.parse().ok().filter(|n| *n > 0)?),
            "--seconds" => o.seconds = Some(value.parse().ok()?),
            "--log-secs" => {
                o.log_every = Duration::from_secs(value.parse().ok().filter(|n| *n > 0)?)
            }
            _ => return None,
        }
    }
    Some(o)
}

/// A validated peer.
struct Peer {
    addr: SocketAddr,
    /// When it was last heard from.
    seen: Instant,
    /// When it last proved its address (a Hello with its cookie), and when it was last
    /// asked to again.
    proved: Instant,
    asked: Option<Instant>,
}

/// The peers: address ↔ connection id.
#[derive(Default)]
struct Peers {
    by_addr: HashMap<SocketAddr, ConnId>,
    by_conn: HashMap<ConnId, Peer>,
    next: u64,
    idle_disconnects: u64,
    /// Datagrams from unvalidated addresses answered with a challenge, and ignored.
    challenges: u64,
    ignored: u64,
    /// Validated peers asked to prove their address again, and dropped for not doing so.
    rechallenges: u64,
    unproved: u64,
}

/// The bytes an address is challenged under: IP address and port.
fn address_bytes(addr: &SocketAddr, out: &mut [u8; 18]) -> usize {
    let ip_len = match addr.ip() {
        IpAddr::V4(ip) => {
            out[..4].copy_from_slice(&ip.octets());
            4
        }
        IpAddr::V6(ip) => {
            out[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    out[ip_len..ip_len + 2].copy_from_slice(&addr.port().to_be_bytes());
    ip_len + 2
}

impl Peers {
    /// The connection of a validated address (a new one if it just proved its address).
    fn touch(&mut self, addr: SocketAddr, now: Instant) -> ConnId {
        let conn = *self.by_addr.entry(addr).or_insert_with(|| {
            self.next += 1;
            ConnId(self.next)
        });
        self.by_conn
            .entry(conn)
            .and_modify(|p| p.seen = now)
            .or_insert(Peer {
                addr,
                seen: now,
                proved: now,
                asked: None,
            });
        conn
    }

    /// Disconnects peers silent for `idle`, or that did not prove their address again
    /// within a period of being asked (anyone can send with a validated address, so a
    /// validation must not outlive the peer); asks those whose proof is a period old.
    fn sweep(
        &mut self,
        router: &mut Router,
        idle: Duration,
        now: Instant,
        mut challenge: impl FnMut(SocketAddr),
    ) {
        let period = AddressCheck::PERIOD;
        let mut gone = Vec::new();
        for (conn, peer) in &mut self.by_conn {
            let since_proof = now.saturating_duration_since(peer.proved);
            if now.saturating_duration_since(peer.seen) >= idle {
                self.idle_disconnects += 1;
                gone.push((*conn, peer.addr));
            } else if since_proof >= 2 * period {
                self.unproved += 1;
                gone.push((*conn, peer.addr));
            } else if since_proof >= period && peer.asked.is_none_or(|t| t < peer.proved) {
                peer.asked = Some(now);
                self.rechallenges += 1;
                challenge(peer.addr);
            }
        }
        for (conn, addr) in gone {
            router.disconnect(conn, now);
            self.by_conn.remove(&conn);
            self.by_addr.remove(&addr);
        }
    }
}

fn log(router: &Router, peers: &Peers, send_errors: u64, started: Instant, now: Instant) {
    let s = router.stats();
    println!(
        "relay {:>5} s | in {} dgrams {} B | out {} dgrams {} B | media {} in {} out | \
         handshakes {} in {} out | welcomes {} stored {} sent | channels {} | connections {} \
         ({} with routing state) | mailboxes {} | refused {} (empty mailbox {}) | idle disconnects {} \
         | unvalidated: {} challenged {} ignored | re-challenged {} dropped unproved {} \
         | send errors {}",
        now.saturating_duration_since(started).as_secs(),
        s.datagrams_in,
        s.bytes_in,
        s.datagrams_out,
        s.bytes_out,
        s.media_in,
        s.media_out,
        s.handshakes_in,
        s.handshakes_out,
        s.welcomes_in,
        s.welcomes_out,
        router.channel_count(),
        peers.by_conn.len(),
        router.connection_count(),
        router.mailbox_count(),
        s.drops.total(),
        s.drops.mailbox_empty,
        peers.idle_disconnects,
        peers.challenges,
        peers.ignored,
        peers.rechallenges,
        peers.unproved,
        send_errors,
    );
}

fn main() -> ExitCode {
    let Some(options) = parse_args() else {
        return usage();
    };
    let socket = match UdpSocket::bind(SocketAddr::new(options.bind, options.port)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("relay: cannot bind UDP port {}: {e}", options.port);
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = socket.set_read_timeout(Some(Duration::from_millis(50))) {
        eprintln!("relay: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "sotto relay listening on udp://{} (idle timeout {} s); logging counts every {} s",
        SocketAddr::new(options.bind, options.port),
        options.idle.as_secs(),
        options.log_every.as_secs()
    );

    let started = Instant::now();
    let stop = options
        .seconds
        .and_then(|s| started.checked_add(Duration::from_secs(s)));
    let mut key = [0u8; 32];
    if SystemRandom::new().fill(&mut key).is_err() {
        eprintln!("relay: no system randomness for the address check key");
        return ExitCode::FAILURE;
    }
    let check = AddressCheck::new(&key, started);
    // A second key for the router: connection proofs and channel handles.
    if SystemRandom::new().fill(&mut key).is_err() {
        eprintln!("relay: no system randomness for the router key");
        return ExitCode::FAILURE;
    }
    let mut router_key = key;
    key.zeroize();
    let mut challenge = [0u8; CHALLENGE_LEN];
    let limits = RouterLimits::default();
    let max_peers = limits.max_connections;
    let mut router = Router::new(limits, &router_key);
    router_key.zeroize();
    let mut peers = Peers::default();
    let mut send_errors = 0u64;
    let mut recv_errors = 0u64;
    let mut buf = vec![0u8; MAX_MESSAGE + 1024];
    let mut next_log = started + options.log_every;
    let mut next_sweep = started + Duration::from_secs(1);

    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let now = Instant::now();
                let datagram = buf.get(..n).unwrap_or(&[]);
                let mut addr = [0u8; 18];
                let len = address_bytes(&from, &mut addr);
                let known = peers.by_addr.get(&from).copied();
                // A Hello renews a connection's proof (the length test keeps the parse off
                // the media path).
                let hello = if datagram.len() == CHALLENGE_LEN {
                    ClientMessage::parse(datagram).ok()
                } else {
                    None
                };
                if let (Some(conn), Some(ClientMessage::Hello { cookie })) = (known, hello) {
                    if check.is_valid(&addr[..len], &cookie, now) {
                        if let Some(peer) = peers.by_conn.get_mut(&conn) {
                            peer.proved = now;
                        }
                    }
                }
                let admitted = known.is_some() || {
                    match check.check(&addr[..len], datagram, now, &mut challenge) {
                        // A Hello with its cookie: a connection from now on.
                        // At most as many peers as the router takes connections.
                        Admission::Admit if peers.by_conn.len() >= max_peers => {
                            peers.ignored += 1;
                            false
                        }
                        Admission::Admit => true,
                        Admission::Challenge(bytes) => {
                            peers.challenges += 1;
                            if socket.send_to(bytes, from).is_err() {
                                send_errors += 1;
                            }
                            false
                        }
                        _ => {
                            peers.ignored += 1;
                            false
                        }
                    }
                };
                if admitted {
                    let conn = peers.touch(from, now);
                    let by_conn = &peers.by_conn;
                    let socket = &socket;
                    // A refusal is answered by the router itself and counted in its stats.
                    let _ = router.receive(conn, datagram, now, &mut |to, bytes| {
                        let sent = by_conn.get(&to).map(|p| socket.send_to(bytes, p.addr));
                        if !matches!(sent, Some(Ok(_))) {
                            send_errors += 1;
                        }
                    });
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => recv_errors += 1,
        }
        let now = Instant::now();
        if now >= next_sweep {
            peers.sweep(&mut router, options.idle, now, |peer| {
                let mut addr = [0u8; 18];
                let len = address_bytes(&peer, &mut addr);
                let ask = RelayMessage::Challenge {
                    cookie: check.cookie(&addr[..len], now),
                };
                let mut bytes = [0u8; CHALLENGE_LEN];
                let sent = ask
                    .encode(&mut bytes)
                    .map(|n| socket.send_to(&bytes[..n], peer));
                if !matches!(sent, Ok(Ok(_))) {
                    send_errors += 1;
                }
            });
            router.expire(now);
            next_sweep = now + Duration::from_secs(1);
        }
        if now >= next_log {
            log(&router, &peers, send_errors, started, now);
            next_log = now + options.log_every;
        }
        if stop.is_some_and(|t| now >= t) {
            break;
        }
    }
    log(&router, &peers, send_errors, started, Instant::now());
    if recv_errors > 0 {
        println!("relay: {recv_errors} receive errors");
    }
    ExitCode::SUCCESS
}
