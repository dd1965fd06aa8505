//! `cargo run --release --example client -- (--create | --join) --name NAME --dir DIR
//! --pin PIN [--relay ADDR (default 127.0.0.1:7878)] [--seconds N (default 10)]`
//!
//! One call member as a process: it speaks a synthesized voice in real time (one sealed Opus
//! frame every 20 ms) over QUIC to the relay (`cargo run --release --bin sotto-relay`) and
//! decodes everyone else. `PIN` is the relay's certificate pin as the relay prints it
//! (`sha256:…`), or the path of the relay's certificate file (`relay-cert.der`): the member
//! talks to no relay whose certificate does not match.
//!
//! Invitations go through a shared directory, standing in for an out-of-band channel (an
//! invite link): KeyPackages carry the member's pseudonym in the clear, so they never pass
//! through the relay. Only the encrypted Welcome does, in a relay mailbox keyed by the
//! KeyPackage reference.
//!
//! - `--create` makes the room, writes `DIR/room` (a random marker for this room's run), and
//!   watches `DIR/*.kp`: each KeyPackage written after the marker is invited (one commit
//!   each, once everyone has caught up with the previous one); the Welcome goes to the
//!   relay mailbox.
//! - `--join` waits for `DIR/room`, writes its KeyPackage to `DIR/NAME.kp` (again whenever
//!   a new room marker appears), and polls its relay mailbox until the Welcome comes.
//!
//! Every member uses the default room configuration. After `--seconds`, it prints what it
//! sent and decoded, per sender, and the room's safety code: compare it across terminals.

#[path = "common/quic_member.rs"]
mod quic_member;
#[path = "common/voice.rs"]
mod voice;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use openmls_rust_crypto::OpenMlsRustCrypto;
use quic_member::QuicWire;
use sotto::call::{Call, CallConfig, CallError, CallEvent};
use sotto::quic::RelayPin;
use sotto::room::{Identity, RoomError};
use voice::Voice;

/// One audio frame.
const FRAME: Duration = Duration::from_millis(20);
/// A creator invites anyway when the room has not settled for this long (a member that
/// went away silently must not block invitations forever).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the directory is looked at.
const DIR_POLL: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Create,
    Join,
}

struct Options {
    role: Role,
    name: String,
    dir: PathBuf,
    relay: SocketAddr,
    pin: RelayPin,
    seconds: u64,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: client (--create | --join) --name NAME --dir DIR --pin PIN [--relay ADDR \
         (default 127.0.0.1:7878)] [--seconds N (default 10)]\n  NAME: 1-32 of A-Z a-z 0-9 - _\n  \
         PIN: the relay's pin (sha256:...) or the path of its certificate (relay-cert.der)"
    );
    ExitCode::from(2)
}

fn parse_args() -> Option<Options> {
    let mut role = None;
    let mut name = None;
    let mut dir = None;
    let mut relay: SocketAddr = "127.0.0.1:7878".parse().ok()?;
    let mut seconds = 10;
    let mut pin = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--create" => role = Some(Role::Create),
            "--join" => role = Some(Role::Join),
            "--name" => name = args.next(),
            "--dir" => dir = args.next().map(PathBuf::from),
            "--relay" => relay = args.next()?.parse().ok()?,
            "--pin" => pin = Some(read_pin(&args.next()?)?),
            "--seconds" => seconds = args.next()?.parse().ok().filter(|s| *s > 0)?,
            _ => return None,
        }
    }
    let name = name.filter(|n| {
        (1..=32).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })?;
    Some(Options {
        role: role?,
        name,
        dir: dir?,
        relay,
        pin: pin?,
        seconds,
    })
}

/// A pin as the relay prints it, or the pin of a certificate file.
fn read_pin(value: &str) -> Option<RelayPin> {
    if value.starts_with("sha256:") {
        return RelayPin::parse(value).ok();
    }
    match std::fs::read(value) {
        Ok(der) => Some(RelayPin::of_certificate(&der)),
        Err(e) => {
            eprintln!("cannot read the relay certificate {value}: {e}");
            None
        }
    }
}

/// Writes `bytes` to `path` atomically (a reader never sees half a file).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn random_hex(len: usize) -> String {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; len];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The creator's side of the directory: the room marker and the KeyPackages to invite.
struct Inviter {
    dir: PathBuf,
    marker_time: SystemTime,
    /// (name, KeyPackage bytes) already handled.
    seen: HashSet<(String, Vec<u8>)>,
    last_commit: Instant,
}

impl Inviter {
    fn open(dir: &Path, now: Instant) -> std::io::Result<Inviter> {
        let marker = dir.join("room");
        write_atomically(
            &marker,
            format!("sotto room {}\n", random_hex(16)).as_bytes(),
        )?;
        Ok(Inviter {
            dir: dir.to_path_buf(),
            marker_time: std::fs::metadata(&marker)?.modified()?,
            seen: HashSet::new(),
            last_commit: now,
        })
    }

    /// KeyPackages written since the marker and not handled yet: (name, path, bytes).
    fn waiting(&self) -> Vec<(String, PathBuf, Vec<u8>)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".kp").filter(|n| !n.starts_with('.')) else {
                continue;
            };
            let fresh = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= self.marker_time);
            if !fresh {
                continue;
            }
            if let Ok(bytes) = std::fs::read(&path) {
                if !self.seen.contains(&(name.to_string(), bytes.clone())) {
                    found.push((name.to_string(), path, bytes));
                }
            }
        }
        found.sort();
        found
    }

    /// Invites one waiting KeyPackage when the room is ready for a commit.
    fn step(&mut self, call: &mut Call, now: Instant) {
        let Some((name, path, bytes)) = self.waiting().into_iter().next() else {
            return;
        };
        let caught_up =
            call.is_settled() || now.saturating_duration_since(self.last_commit) >= SETTLE_TIMEOUT;
        if !caught_up || !call.ready_to_commit() {
            return;
        }
        match call.invite(&[&bytes], now) {
            Ok(()) => {
                println!(
                    "invited {name} (its Welcome is in the relay mailbox of its KeyPackage reference)"
                );
                self.seen.insert((name, bytes));
                self.last_commit = now;
                let _ = std::fs::remove_file(&path);
            }
            Err(CallError::CommitInFlight | CallError::NotConnected) => {}
            Err(CallError::Room(RoomError::InvalidKeyPackage)) => {
                eprintln!("{}: not a valid KeyPackage, ignored", path.display());
                self.seen.insert((name, bytes));
            }
            Err(e) => eprintln!("could not invite {name}: {e}"),
        }
    }
}

/// The joiner's side: (re)publish the KeyPackage whenever a new room marker appears.
struct Publisher {
    dir: PathBuf,
    name: String,
    key_package: Vec<u8>,
    marker: Option<Vec<u8>>,
}

impl Publisher {
    fn step(&mut self) {
        let Ok(marker) = std::fs::read(self.dir.join("room")) else {
            return;
        };
        if self.marker.as_ref() == Some(&marker) {
            return;
        }
        let path = self.dir.join(format!("{}.kp", self.name));
        match write_atomically(&path, &self.key_package) {
            Ok(()) => {
                println!(
                    "wrote {} ({} bytes); waiting for the Welcome",
                    path.display(),
                    self.key_package.len()
                );
                self.marker = Some(marker);
            }
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
}

fn voice_of(name: &str) -> usize {
    name.bytes().map(usize::from).sum::<usize>() % 97
}

fn print_report(call: &Call, name: &str, ran: Duration, departed: &[String]) {
    let s = call.stats();
    println!();
    println!("--- {name}: report after {:.1} s ---", ran.as_secs_f64());
    println!(
        "frames sent: {} ({} intervals before this member could speak)",
        s.frames_sent, s.frames_unsent
    );
    match call.room() {
        Some(room) => println!(
            "epochs: {} changes seen, now epoch {} with {} members",
            s.epoch_changes,
            room.epoch(),
            room.members().len()
        ),
        None => println!("never joined a room (no Welcome arrived)"),
    }
    for v in call.voices() {
        let r = v.stats;
        println!(
            "  from {:<12} (leaf {}): decoded {:>5}  FEC {:>3}  concealed {:>4}  late {:>3}  \
             auth failures {}  replays {}",
            String::from_utf8_lossy(v.pseudonym),
            v.member.leaf,
            r.decoded,
            r.fec_recovered,
            r.concealed,
            r.late,
            r.auth_failures,
            r.replays,
        );
    }
    for d in departed {
        println!("  {d} left the room");
    }
    println!(
        "datagrams: {} out ({} B), {} in ({} B); handshakes applied {}, refused {}; \
         commits {} (resent {})",
        s.datagrams_out,
        s.bytes_out,
        s.datagrams_in,
        s.bytes_in,
        s.handshakes_applied,
        s.handshakes_refused,
        s.commits,
        s.commits_resent
    );
    if let (Some(code), Some(epoch)) = (call.safety_code(), call.epoch()) {
        println!("safety code (epoch {epoch}): {code}");
    }
}

fn main() -> ExitCode {
    let Some(options) = parse_args() else {
        return usage();
    };
    if let Err(e) = std::fs::create_dir_all(&options.dir) {
        eprintln!("cannot use {}: {e}", options.dir.display());
        return ExitCode::FAILURE;
    }
    let start = Instant::now();
    let mut wire = match QuicWire::connect(options.relay, options.pin, start) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("cannot open a QUIC connection to {}: {e}", options.relay);
            return ExitCode::FAILURE;
        }
    };
    let mut voice = Voice::new(voice_of(&options.name));
    let config = CallConfig::default();
    let made = Identity::new(OpenMlsRustCrypto::default(), options.name.as_bytes())
        .map_err(CallError::from)
        .and_then(|identity| match options.role {
            Role::Create => Call::create(identity, config, start),
            Role::Join => {
                let key_package = identity.key_package()?;
                Call::join(identity, key_package, config, start)
            }
        });
    let mut call = match made {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot set up the call: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut inviter = None;
    let mut publisher = None;
    match options.role {
        Role::Create => match Inviter::open(&options.dir, start) {
            Ok(i) => {
                println!(
                    "{}: room created; invite with `--join --dir {}`",
                    options.name,
                    options.dir.display()
                );
                inviter = Some(i);
            }
            Err(e) => {
                eprintln!("cannot write the room marker: {e}");
                return ExitCode::FAILURE;
            }
        },
        Role::Join => {
            publisher = call.key_package().map(|kp| Publisher {
                dir: options.dir.clone(),
                name: options.name.clone(),
                key_package: kp.bytes.clone(),
                marker: None,
            });
            println!(
                "{}: waiting for {}/room",
                options.name,
                options.dir.display()
            );
        }
    }

    let mut departed = Vec::new();
    let mut pcm = vec![0i16; call.frame_samples()];
    let mut heard = vec![0i16; call.frame_samples()];
    let end = start + Duration::from_secs(options.seconds);
    let mut next_tick = start;
    let mut next_dir = start;
    let mut shown: Option<(u64, usize)> = None;
    let mut warned = false;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        wire.pump(&mut call, now);
        if !warned
            && !wire.is_connected()
            && now.saturating_duration_since(start) > Duration::from_secs(3)
        {
            eprintln!(
                "no QUIC connection to the relay at {} yet (is `sotto-relay` running, and is the pin its own?)",
                options.relay
            );
            warned = true;
        }
        if now >= next_tick {
            voice.fill(&mut pcm);
            let _ = call.send_audio(&pcm, now);
            // A real app plays `heard` on its speaker.
            let _ = call.pull_audio(&mut heard, now);
            next_tick += FRAME;
            if now > next_tick + 5 * FRAME {
                // Fell behind (the machine was busy): resume the cadence from now.
                next_tick = now + FRAME;
            }
        }
        if now >= next_dir {
            next_dir = now + DIR_POLL;
            if let Some(i) = &mut inviter {
                i.step(&mut call, now);
            }
            if let Some(p) = &mut publisher {
                if call.room().is_some() {
                    publisher = None;
                } else {
                    p.step();
                }
            }
        }
        wire.flush(&mut call, now);
        while let Some(event) = call.poll_event() {
            match event {
                CallEvent::MemberLeft { member } => departed.push(format!("leaf {}", member.leaf)),
                CallEvent::Warning(w) => eprintln!("warning: {w:?}"),
                _ => {}
            }
        }
        if let Some(room) = call.room() {
            let state = (room.epoch(), room.members().len());
            if shown != Some(state) {
                let names: Vec<String> = room
                    .members()
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.pseudonym).into_owned())
                    .collect();
                println!(
                    "epoch {} · {} members ({}) · safety code {}",
                    state.0,
                    state.1,
                    names.join(", "),
                    room.safety_code()
                );
                shown = Some(state);
            }
        }
        if call.is_removed() {
            println!("removed from the room");
            break;
        }
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(2));
        std::thread::sleep(wait);
    }
    call.hang_up();
    // Let the last requests reach the relay (a QUIC close drops unsent stream data).
    let flushed = Instant::now() + Duration::from_millis(300);
    while Instant::now() < flushed {
        wire.pump(&mut call, Instant::now());
        std::thread::sleep(Duration::from_millis(5));
    }
    wire.close(Instant::now());
    print_report(&call, &options.name, start.elapsed(), &departed);
    let q = wire.quic().stats();
    println!(
        "quic: {} media datagrams sent, {} dropped; {} connects, {} disconnects; {} socket errors",
        q.media_sent, q.media_dropped, q.connects, q.disconnects, wire.send_errors
    );
    if call.room().is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
