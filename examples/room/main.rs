//! `cargo run --release --example room [-- --members N] [--seconds S] [--wav DIR]`
//!
//! A whole end-to-end encrypted call on virtual time: N members (default 5) each speak a
//! synthesized voice; one joins mid-call, one is removed, everyone self-updates once. All
//! handshake and media bytes go through an in-process relay that records them; the example
//! then checks that no credential, display name, room name, plaintext Opus or PCM is in
//! what the relay saw, and exits non-zero if anything is.

mod core;

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: room [--members N (2..=64)] [--seconds S (2..=120)] [--loss PERCENT (0..=50)] [--wav DIR]");
    ExitCode::from(2)
}

fn write_wav(path: &PathBuf, samples: &[i16]) -> std::io::Result<()> {
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX);
    let mut bytes = Vec::with_capacity(44 + samples.len() * 2);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_len).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&1u16.to_le_bytes()); // mono
    bytes.extend_from_slice(&core::RATE.to_le_bytes());
    bytes.extend_from_slice(&(core::RATE * 2).to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, bytes)
}

fn main() -> ExitCode {
    let mut options = core::Options::default();
    let mut wav: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--members", Some(v)) => match v.parse() {
                Ok(n) if (2..=64).contains(&n) => options.members = n,
                _ => return usage(),
            },
            ("--seconds", Some(v)) => match v.parse() {
                Ok(n) if (2..=120).contains(&n) => options.seconds = n,
                _ => return usage(),
            },
            ("--wav", Some(v)) => wav = Some(PathBuf::from(v)),
            ("--loss", Some(v)) => match v.parse() {
                Ok(n) if n <= 50 => options.loss_percent = n,
                _ => return usage(),
            },
            _ => return usage(),
        }
    }
    options.record_audio = wav.is_some();
    let started = std::time::Instant::now();
    let report = core::run(&options);
    let wall = started.elapsed();

    println!(
        "sotto room: {} members, {} s of call on virtual time ({} ms of wall time)",
        options.members,
        options.seconds,
        wall.as_millis()
    );
    println!(
        "room \"{}\" is known to the app only; MLS epochs: {}",
        core::ROOM_NAME,
        report.epochs
    );
    println!();
    println!(
        "{:<12} {:<18} {:>6} {:>7} {:>5} {:>5} {:>9} {:>8} {:>8} {:>7}",
        "pseudonym",
        "display name",
        "sent",
        "opened",
        "lost",
        "FEC",
        "concealed",
        "overhead",
        "µs/tick",
        "tokens"
    );
    for m in &report.members {
        let overhead = if m.overhead_bytes.is_empty() {
            "-".to_string()
        } else {
            let min = m.overhead_bytes.iter().min().copied().unwrap_or(0);
            let max = m.overhead_bytes.iter().max().copied().unwrap_or(0);
            if min == max {
                format!("{min} B")
            } else {
                format!("{min}-{max} B")
            }
        };
        let per = |ns: u128, n: u64| {
            if n == 0 {
                0.0
            } else {
                ns as f64 / n as f64 / 1000.0
            }
        };
        let note = if m.removed {
            " (removed)"
        } else if m.joined_late {
            " (joined)"
        } else {
            ""
        };
        println!(
            "{:<12} {:<18} {:>6} {:>7} {:>5} {:>5} {:>9} {:>8} {:>8.1} {:>7}{}",
            m.pseudonym,
            m.display_name,
            m.frames_sent,
            m.frames_decoded,
            m.lost,
            m.fec_recovered,
            m.concealed,
            overhead,
            per(m.call_ns, m.ticks),
            m.token_rotations,
            note
        );
    }
    let codes: Vec<_> = report
        .members
        .iter()
        .filter_map(|m| m.safety_code)
        .collect();
    println!();
    match codes.first() {
        Some(code) if report.safety_codes_agree => {
            println!("safety code (all {} members agree): {code}", codes.len())
        }
        _ => println!("safety codes DISAGREE"),
    }
    println!();
    println!(
        "what the relay saw: {} messages, {} bytes, {} distinct channel tokens",
        report.relay_datagrams, report.relay_bytes, report.distinct_tokens
    );
    println!("media packet sizes (bytes: count):");
    for (size, count) in &report.size_histogram {
        println!("  {size:>4}: {count}");
    }
    println!(
        "checked {} 8-byte runs of plaintext Opus and PCM against the recording",
        report.checked_windows
    );
    if let Some(dir) = wav {
        if let Err(e) = std::fs::create_dir_all(&dir)
            .and_then(|_| write_wav(&dir.join("heard-encrypted.wav"), &report.heard))
            .and_then(|_| write_wav(&dir.join("heard-plain.wav"), &report.heard_plain))
        {
            eprintln!("could not write WAV files: {e}");
            return ExitCode::FAILURE;
        }
        println!(
            "wrote {} (what {} heard) and heard-plain.wav (the same packets without encryption)",
            dir.join("heard-encrypted.wav").display(),
            report
                .members
                .first()
                .map(|m| m.pseudonym.as_str())
                .unwrap_or("?")
        );
    }
    if report.leaks.is_empty() && report.safety_codes_agree {
        println!("relay check: no credential, display name, room name, plaintext Opus or PCM in the recording");
        ExitCode::SUCCESS
    } else {
        for (what, which) in &report.leaks {
            println!("LEAK: {what}: {which}");
        }
        ExitCode::FAILURE
    }
}
