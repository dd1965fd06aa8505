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

#[path = "common/member.rs"]
mod member;
#[path = "common/quic_member.rs"]
mod quic_member;
#[path = "common/voice.rs"]
mod voice;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use member::{Options, Role};
use sotto::quic::RelayPin;

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

fn main() -> ExitCode {
    let Some(options) = parse_args() else {
        return usage();
    };
    let done = match member::run(&options) {
        Ok(done) => done,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    member::print_report(&done.call, &options.name, done.ran, &done.departed);
    let q = done.wire.quic().stats();
    println!(
        "quic: {} media datagrams sent, {} dropped; {} connects, {} disconnects; {} socket errors",
        q.media_sent, q.media_dropped, q.connects, q.disconnects, done.wire.send_errors
    );
    if done.call.room().is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
