//! One call member over QUIC, as a process runs it in real time: the synthesized voice
//! spoken every 20 ms, invitations through a shared directory (standing in for an
//! out-of-band invite link), the relay reached through `QuicWire`. `examples/client.rs`
//! is this with command-line options; `tests/quic_impaired.rs` runs it in child processes
//! behind an impairing proxy.
#![allow(dead_code)]

use sotto::room::MlsSuite;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sotto::call::{Call, CallConfig, CallError, CallEvent};
use sotto::provider::Provider;
use sotto::quic::RelayPin;
use sotto::room::{Identity, RoomError};

use super::quic_member::QuicWire;
use super::voice::Voice;

/// One audio frame.
const FRAME: Duration = Duration::from_millis(20);
/// A creator invites anyway when the room has not settled for this long (a member that
/// went away silently must not block invitations forever).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the directory is looked at.
const DIR_POLL: Duration = Duration::from_millis(250);

/// Whether this member makes the room or joins it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Makes the room and invites every KeyPackage written to the directory.
    Create,
    /// Writes its KeyPackage to the directory and waits for its Welcome.
    Join,
}

/// What a member needs to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Create or join.
    pub role: Role,
    /// Its pseudonym (1-32 of A-Z a-z 0-9 - _).
    pub name: String,
    /// The shared invitation directory.
    pub dir: PathBuf,
    /// The relay's (or a proxy's) address.
    pub relay: SocketAddr,
    /// The relay's certificate pin.
    pub pin: RelayPin,
    /// How long to run.
    pub seconds: u64,
}

/// A member after its run.
pub struct Finished {
    /// The call.
    pub call: Call,
    /// Its network side.
    pub wire: QuicWire,
    /// How long it ran.
    pub ran: Duration,
    /// Members that left, as seen.
    pub departed: Vec<String>,
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

/// Prints what the member sent and decoded, per sender, and the safety code.
pub fn print_report(call: &Call, name: &str, ran: Duration, departed: &[String]) {
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

/// Runs one member for `options.seconds`.
pub fn run(options: &Options) -> Result<Finished, String> {
    std::fs::create_dir_all(&options.dir)
        .map_err(|e| format!("cannot use {}: {e}", options.dir.display()))?;
    let start = Instant::now();
    let mut wire = QuicWire::connect(options.relay, options.pin, start)
        .map_err(|e| format!("cannot open a QUIC connection to {}: {e}", options.relay))?;
    let mut voice = Voice::new(voice_of(&options.name));
    let config = CallConfig::default();
    let made = Provider::new()
        .and_then(|provider| Identity::new(provider, options.name.as_bytes()))
        .map_err(CallError::from)
        .and_then(|identity| match options.role {
            Role::Create => Call::create(identity, config, start),
            Role::Join => {
                let key_package = identity.key_package(MlsSuite::Classic)?;
                Call::join(identity, key_package, config, start)
            }
        });
    let mut call = made.map_err(|e| format!("cannot set up the call: {e}"))?;
    let mut inviter = None;
    let mut publisher = None;
    match options.role {
        Role::Create => {
            let i = Inviter::open(&options.dir, start)
                .map_err(|e| format!("cannot write the room marker: {e}"))?;
            println!(
                "{}: room created; invite with `--join --dir {}`",
                options.name,
                options.dir.display()
            );
            inviter = Some(i);
        }
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
    Ok(Finished {
        call,
        wire,
        ran: start.elapsed(),
        departed,
    })
}
