//! `sotto-relay`: the reference relay. sotto's sans-IO [`Router`] behind a QUIC endpoint
//! ([`QuicRelay`]) on one UDP socket, one thread.
//!
//! ```text
//! sotto-relay [--config FILE] [--KEY VALUE]...
//! ```
//!
//! Every setting can be given in a config file (`key = value` lines, `#` comments) and on
//! the command line as `--key value` (the command line wins):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `listen` | `127.0.0.1:7878` | UDP address to listen on |
//! | `certificate` | `relay-cert.der` | the relay's certificate (DER) |
//! | `private_key` | `relay-key.der` | its PKCS #8 private key (DER); written mode 0600 |
//! | `log_secs` | `10` | counters on stderr this often |
//! | `seconds` | none | stop after this long (tests) |
//! | `max_connections` | `10000` | connections in total |
//! | `max_channels` | `10000` | channels in total |
//! | `max_channels_per_connection` | `64` | subscriptions of one connection |
//! | `max_subscribers_per_channel` | `64` | subscribers of one channel |
//! | `max_mailboxes` | `10000` | Welcome mailboxes |
//! | `welcome_ttl_secs` | `86400` | how long a Welcome is held |
//! | `history_linger_secs` | `30` | how long an idle channel keeps its handshake messages |
//!
//! When neither the certificate nor the key file exists, the relay makes a new key and a
//! self-signed certificate and writes both. It prints the certificate's pin
//! (`sha256:…`) on stderr at start: members pin it (no web PKI). SIGINT or SIGTERM shut it
//! down gracefully: new connections are refused, every connection is closed with a
//! "shutting down" code, and the relay exits once they drained (at most 3 s). It keeps
//! nothing on disk but its identity, and logs counts only: never tokens, handles,
//! payloads or peer addresses.

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use sotto::quic::{QuicRelay, RelayIdentity};
use sotto::relay::{ErrorCode, Router, RouterLimits, MAX_MESSAGE};
use zeroize::Zeroize;

struct Options {
    listen: SocketAddr,
    certificate: String,
    private_key: String,
    log_every: Duration,
    seconds: Option<u64>,
    limits: RouterLimits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            certificate: "relay-cert.der".to_owned(),
            private_key: "relay-key.der".to_owned(),
            log_every: Duration::from_secs(10),
            seconds: None,
            limits: RouterLimits::default(),
        }
    }
}

/// Why the options were refused.
enum Refused {
    Usage,
    Setting(String),
}

fn positive(value: &str) -> Option<u64> {
    value.parse().ok().filter(|n| *n > 0)
}

impl Options {
    fn set(&mut self, key: &str, value: &str) -> Result<(), Refused> {
        let bad = || Refused::Setting(format!("{key} = {value}"));
        let count = |v: &str| {
            positive(v)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(bad)
        };
        let secs = |v: &str| positive(v).map(Duration::from_secs).ok_or_else(bad);
        match key {
            "listen" => self.listen = value.parse().map_err(|_| bad())?,
            "certificate" => self.certificate = value.to_owned(),
            "private_key" => self.private_key = value.to_owned(),
            "log_secs" => self.log_every = secs(value)?,
            "seconds" => self.seconds = Some(positive(value).ok_or_else(bad)?),
            "max_connections" => self.limits.max_connections = count(value)?,
            "max_channels" => self.limits.max_channels = count(value)?,
            "max_channels_per_connection" => {
                self.limits.max_channels_per_connection = count(value)?
            }
            "max_subscribers_per_channel" => {
                self.limits.max_subscribers_per_channel = count(value)?
            }
            "max_mailboxes" => self.limits.max_mailboxes = count(value)?,
            "welcome_ttl_secs" => self.limits.welcome_ttl = secs(value)?,
            "history_linger_secs" => self.limits.history_linger = secs(value)?,
            _ => return Err(Refused::Setting(format!("unknown setting {key}"))),
        }
        Ok(())
    }

    fn load(&mut self, path: &str) -> Result<(), Refused> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Refused::Setting(format!("config {path}: {e}")))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(Refused::Setting(format!(
                    "{path}:{}: not key = value",
                    n + 1
                )));
            };
            self.set(key.trim(), value.trim())?;
        }
        Ok(())
    }

    fn parse(args: impl Iterator<Item = String>) -> Result<Options, Refused> {
        let args: Vec<String> = args.collect();
        let mut options = Options::default();
        // The config file first, so that the command line wins.
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let key = flag.strip_prefix("--").ok_or(Refused::Usage)?;
            let value = it.next().ok_or(Refused::Usage)?;
            if key == "config" {
                options.load(value)?;
            } else {
                pairs.push((key.replace('-', "_"), value.clone()));
            }
        }
        for (key, value) in pairs {
            options.set(&key, &value)?;
        }
        Ok(options)
    }
}

/// Loads the identity, or makes and saves one when neither file exists.
fn identity(options: &Options) -> Result<RelayIdentity, String> {
    let cert = std::fs::read(&options.certificate);
    let key = std::fs::read(&options.private_key);
    match (cert, key) {
        (Ok(cert), Ok(key)) => RelayIdentity::from_der(cert, key)
            .map_err(|e| format!("{} / {}: {e}", options.certificate, options.private_key)),
        (Err(c), Err(k)) if c.kind() == ErrorKind::NotFound && k.kind() == ErrorKind::NotFound => {
            let identity = RelayIdentity::generate().map_err(|e| e.to_string())?;
            write_file(&options.private_key, identity.private_key(), true)?;
            write_file(&options.certificate, identity.certificate(), false)?;
            eprintln!(
                "sotto-relay: made a new identity ({}, {})",
                options.certificate, options.private_key
            );
            Ok(identity)
        }
        (Err(e), _) => Err(format!("{}: {e}", options.certificate)),
        (_, Err(e)) => Err(format!("{}: {e}", options.private_key)),
    }
}

fn write_file(path: &str, bytes: &[u8], secret: bool) -> Result<(), String> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    let _ = secret;
    open.open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("{path}: {e}"))
}

/// Counters on stderr: connections, channels, forwards per second, drops by reason.
struct Log {
    last: Instant,
    last_media_out: u64,
    started: Instant,
}

impl Log {
    fn print(&mut self, relay: &QuicRelay, socket_errors: u64, now: Instant) {
        let r = relay.router().stats();
        let q = relay.stats();
        let secs = now
            .saturating_duration_since(self.last)
            .as_secs_f64()
            .max(1e-3);
        let forwards = (r.media_out - self.last_media_out) as f64 / secs;
        let mut drops = String::new();
        for code in ErrorCode::ALL {
            let n = r.drops.get(code);
            if n > 0 {
                drops.push_str(&format!(" {code:?}={n}"));
            }
        }
        for (name, n) in [
            ("replays_cut", r.drops.replays_cut),
            ("misrouted", q.misrouted),
            ("media_not_queued", q.media_dropped),
            ("closed_slow", q.closed_slow),
            ("closed_protocol", q.closed_protocol),
            ("refused_connections", q.refused),
            ("socket_errors", socket_errors),
        ] {
            if n > 0 {
                drops.push_str(&format!(" {name}={n}"));
            }
        }
        eprintln!(
            "sotto-relay {:>6} s | connections {} (accepted {}, retries {}, closed {}) | \
             channels {} | mailboxes {} | forwards/s {:.0} | media {} in {} out | \
             handshakes {} in {} out | welcomes {} in {} out | udp {} in {} out | drops:{}",
            now.saturating_duration_since(self.started).as_secs(),
            relay.connection_count(),
            q.accepted,
            q.retries,
            q.closed,
            relay.router().channel_count(),
            relay.router().mailbox_count(),
            forwards,
            r.media_in,
            r.media_out,
            r.handshakes_in,
            r.handshakes_out,
            r.welcomes_in,
            r.welcomes_out,
            q.datagrams_in,
            q.datagrams_out,
            if drops.is_empty() { " none" } else { &drops },
        );
        self.last = now;
        self.last_media_out = r.media_out;
    }
}

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(Refused::Usage) => {
            eprintln!("usage: sotto-relay [--config FILE] [--KEY VALUE]... (keys: see the docs)");
            return ExitCode::from(2);
        }
        Err(Refused::Setting(what)) => {
            eprintln!("sotto-relay: bad setting: {what}");
            return ExitCode::from(2);
        }
    };
    let identity = match identity(&options) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("sotto-relay: identity: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut key = [0u8; 32];
    if SystemRandom::new().fill(&mut key).is_err() {
        eprintln!("sotto-relay: no system randomness");
        return ExitCode::FAILURE;
    }
    let router = Router::new(options.limits.clone(), &key);
    key.zeroize();
    let mut relay = match QuicRelay::new(&identity, router) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sotto-relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let socket = match UdpSocket::bind(options.listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sotto-relay: cannot bind {}: {e}", options.listen);
            return ExitCode::FAILURE;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("sotto-relay: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let local = socket.local_addr().unwrap_or(options.listen);
    eprintln!(
        "sotto-relay listening on quic://{local} pin {} (counters every {} s)",
        identity.pin(),
        options.log_every.as_secs()
    );

    let started = Instant::now();
    let run_until = options.seconds.map(|s| started + Duration::from_secs(s));
    let mut log = Log {
        last: started,
        last_media_out: 0,
        started,
    };
    let mut next_log = started + options.log_every;
    let mut next_expire = started + Duration::from_secs(1);
    let mut closing: Option<Instant> = None;
    let mut buf = vec![0u8; MAX_MESSAGE + 1024];
    let mut out = Vec::with_capacity(2048);
    let mut send_errors = 0u64;
    let mut recv_errors = 0u64;
    let mut wait = Duration::ZERO;

    loop {
        let now = Instant::now();
        // Block until a datagram or the next due time (never 0: that means "forever").
        let mut due = next_log.min(next_expire);
        if let Some(t) = relay.poll_timeout() {
            due = due.min(t);
        }
        let timeout = due
            .saturating_duration_since(now)
            .clamp(Duration::from_millis(1), Duration::from_millis(100));
        if timeout != wait && socket.set_read_timeout(Some(timeout)).is_ok() {
            wait = timeout;
        }
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let now = Instant::now();
                relay.handle_datagram(buf.get(..n).unwrap_or(&[]), from, now);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => recv_errors += 1,
        }
        let now = Instant::now();
        if relay.poll_timeout().is_some_and(|t| t <= now) {
            relay.handle_timeout(now);
        }
        while let Some(to) = relay.poll_transmit(now, &mut out) {
            if socket.send_to(&out, to).is_err() {
                send_errors += 1;
            }
        }
        if now >= next_expire {
            relay.router_mut().expire(now);
            next_expire = now + Duration::from_secs(1);
        }
        if now >= next_log {
            log.print(&relay, send_errors + recv_errors, now);
            next_log = now + options.log_every;
        }
        let asked = stop.load(Ordering::Relaxed) || run_until.is_some_and(|t| now >= t);
        match closing {
            None if asked => {
                eprintln!(
                    "sotto-relay: shutting down ({} connections)",
                    relay.connection_count()
                );
                relay.shut_down(now);
                closing = Some(now);
            }
            Some(since)
                if relay.connection_count() == 0
                    || now.saturating_duration_since(since) >= Duration::from_secs(3) =>
            {
                break;
            }
            _ => {}
        }
    }
    log.print(&relay, send_errors + recv_errors, Instant::now());
    eprintln!(
        "sotto-relay: stopped ({} connections still closing)",
        relay.connection_count()
    );
    ExitCode::SUCCESS
}
