//! sotto through a real SFU: members of one MLS room, each a `sotto::call::Call` with
//! `JanusTransport`, talk through an unmodified Janus (Debian package `janus`). Audio is
//! sealed Opus as RTP through a VideoRoom (`require_e2ee`, no audio-level extension);
//! commits, proposals and Welcomes go through TextRoom rooms. One member joins mid-call,
//! everyone self-updates, one member is removed. Prints a per-member table and the safety
//! code, and sotto's share of the mouth-to-ear latency.
//!
//! Janus runs in a network sandbox whose only address is 127.0.0.1 (see
//! `examples/common/janus.rs`): the example re-runs itself inside with `unshare` (root, or
//! unprivileged where user namespaces are allowed).
//!
//! ```sh
//! apt-get install janus iproute2
//! cargo run --release --features webrtc --example janus -- --members 4 --seconds 60
//! ```

#[path = "common/janus.rs"]
mod janus;
#[path = "common/voice.rs"]
mod voice;

use sotto::room::MlsSuite;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use janus::{Member, Report, World};
use sotto::audio::AudioConfig;
use sotto::call::{Call, CallConfig, JanusTransport, Transport};
use sotto::provider::Provider;
use sotto::room::Identity;

const PORT: u16 = 18_091;
const PSEUDONYMS: [&str; 8] = [
    "owl-7f3a0",
    "fox-19c20",
    "elk-a4d00",
    "yak-5e610",
    "emu-c8b70",
    "ibis-20f90",
    "gnu-3b2c1",
    "koi-9d4e2",
];

impl janus::Fill for voice::Voice {
    fn fill(&mut self, out: &mut [i16]) {
        voice::Voice::fill(self, out);
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the world until `done` (or `limit`), talking in 20 ms ticks.
fn until(world: &mut World, limit: Duration, what: &str, done: impl Fn(&World) -> bool) {
    let start = Instant::now();
    while !done(world) {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen in {limit:?}"
        );
        world.talk(Duration::from_millis(100));
    }
}

fn main() -> ExitCode {
    if !janus::inside_sandbox() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        return if janus::rerun_in_sandbox(&args) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let n = arg("--members", 4).clamp(3, 8) as usize;
    let seconds = arg("--seconds", 60).max(6);
    let addresses = janus::addresses();
    assert_eq!(addresses, vec!["127.0.0.1/32".to_string()]);
    let mut server = janus::Janus::start(PORT);
    let wall = Instant::now();

    // The first n - 1 members: the first creates the room and invites the others; the
    // last one joins mid-call.
    let config = CallConfig::default();
    let identity = |n: &str| Identity::new(Provider::new().unwrap(), n.as_bytes()).unwrap();
    let now = Instant::now();
    let mut calls = vec![Call::create_with(
        identity(PSEUDONYMS[0]),
        config.clone(),
        JanusTransport::new(),
        now,
    )
    .unwrap()];
    let mut key_packages = Vec::new();
    for name in &PSEUDONYMS[1..n] {
        let id = identity(name);
        let kp = id.key_package(MlsSuite::Classic).unwrap();
        key_packages.push(kp.bytes.clone());
        calls.push(Call::join_with(id, kp, config.clone(), JanusTransport::new(), now).unwrap());
    }
    let mut world = World::new(PORT);
    for (i, call) in calls.into_iter().enumerate() {
        let text = world.textroom_link();
        world.members.push(Member {
            call,
            text,
            publisher: None,
            subs: Vec::new(),
            voice: Box::new(voice::Voice::new(i)),
            events: Vec::new(),
            removed_at: None,
            report: Report::default(),
        });
    }
    // TextRoom connections come up; Janus sends on a data channel only once the client
    // opened one of its own. Then the engines connect over them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !world.members.iter().all(|m| m.call.transport().is_ready()) {
        assert!(
            Instant::now() < deadline,
            "TextRoom connections did not come up"
        );
        for m in &mut world.members {
            if m.text.peer.is_connected() {
                m.text.peer.open_channel();
            }
        }
        world.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    until(
        &mut world,
        Duration::from_secs(10),
        "the creator ready",
        |w| w.members[0].call.ready_to_commit(),
    );
    let first: Vec<&[u8]> = key_packages[..n - 2].iter().map(Vec::as_slice).collect();
    world.members[0]
        .call
        .invite(&first, Instant::now())
        .unwrap();
    let initial: Vec<usize> = (0..n - 1).collect();
    until(
        &mut world,
        Duration::from_secs(30),
        "the first members' room",
        |w| w.converged(&initial),
    );
    world.talk(Duration::from_secs(1));
    for m in &mut world.members {
        m.report = Report::default();
    }

    // The call: a joiner at a third, self-updates at half, a removal at two thirds.
    let start = Instant::now();
    let at = |f: f64| start + Duration::from_secs_f64(seconds as f64 * f);
    let (mut invited, mut updated, mut removed) = (false, 0usize, false);
    let removed_member = 1;
    let joiner = n - 1;
    let mut epochs_seen = std::collections::HashSet::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        let now = Instant::now();
        if !invited && now >= at(1.0 / 3.0) && world.members[0].call.ready_to_commit() {
            let kp = key_packages[n - 2].clone();
            world.members[0].call.invite(&[&kp], now).unwrap();
            invited = true;
        }
        if invited && updated < n && now >= at(0.5) + Duration::from_millis(700) * updated as u32 {
            let m = &mut world.members[updated];
            if m.call.is_in_room() && m.call.ready_to_commit() {
                m.call.self_update(now).unwrap();
                updated += 1;
            } else if !m.call.is_in_room() {
                updated += 1;
            }
        }
        if !removed && now >= at(2.0 / 3.0) && world.members[0].call.ready_to_commit() {
            let victim = world.members[0]
                .call
                .members()
                .find(|(_, p)| *p == PSEUDONYMS[removed_member].as_bytes())
                .map(|(id, _)| id)
                .unwrap();
            world.members[0].call.remove(victim, now).unwrap();
            removed = true;
        }
        for m in &world.members {
            if let Some(e) = m.call.epoch() {
                epochs_seen.insert(e);
            }
        }
        world.talk(Duration::from_millis(20));
    }
    let remaining: Vec<usize> = (0..n).filter(|i| *i != removed_member).collect();
    until(&mut world, Duration::from_secs(10), "the final room", |w| {
        w.converged(&remaining) && w.members[removed_member].call.is_removed()
    });

    // ---- Report ----
    println!(
        "sotto over Janus: {n} members, {seconds} s of call ({} ms of wall time in all)",
        wall.elapsed().as_millis()
    );
    println!(
        "sandbox addresses: {addresses:?}; Janus VideoRoom {} (opaque, from the MLS group); epochs {}",
        world.media_room.unwrap_or_default(),
        epochs_seen.len()
    );
    println!();
    println!(
        "{:<11} {:>6} {:>7} {:>5} {:>9} {:>8} {:>8} {:>8}",
        "pseudonym", "sent", "opened", "FEC", "concealed", "seal µs", "open µs", "mix µs"
    );
    for (i, m) in world.members.iter().enumerate() {
        let r = &m.report;
        let per = |d: Duration, k: u64| d.as_secs_f64() * 1e6 / k.max(1) as f64;
        let note = if i == removed_member {
            " (removed)"
        } else if i == joiner {
            " (joined)"
        } else {
            ""
        };
        println!(
            "{:<11} {:>6} {:>7} {:>5} {:>9} {:>8.1} {:>8.1} {:>8.1}{note}",
            PSEUDONYMS[i],
            r.sent,
            r.opened,
            r.fec,
            r.concealed,
            per(r.send_time, r.ticks),
            per(r.receive_time, r.received),
            per(r.pull_time, r.ticks),
        );
    }
    let codes: std::collections::HashSet<String> = remaining
        .iter()
        .filter_map(|i| world.members[*i].call.safety_code().map(|c| c.to_string()))
        .collect();
    println!();
    println!(
        "safety code (all {} members agree): {}",
        remaining.len(),
        codes.iter().next().cloned().unwrap_or_default()
    );
    let playout = AudioConfig::default();
    let playout_ms =
        playout.frame_duration().as_secs_f64() * 1e3 * f64::from(playout.playout_delay_frames);
    let worst = |f: fn(&Report) -> (Duration, u64)| {
        world
            .members
            .iter()
            .map(|m| {
                let (d, k) = f(&m.report);
                d.as_secs_f64() * 1e3 / k.max(1) as f64
            })
            .fold(0.0, f64::max)
    };
    let seal = worst(|r| (r.send_time, r.ticks));
    let open = worst(|r| (r.receive_time, r.received));
    let mix = worst(|r| (r.pull_time, r.ticks));
    println!(
        "sotto's share of mouth-to-ear latency (worst member): encode + seal {seal:.2} ms, \
         open {open:.3} ms, playout buffer {playout_ms:.0} ms, decode + mix {mix:.2} ms: \
         {:.1} ms in all",
        seal + open + playout_ms + mix
    );
    for c in world
        .sdps
        .iter()
        .flat_map(|s| sotto::webrtc::candidate_addresses(s))
    {
        assert_eq!(c.ip().to_string(), "127.0.0.1");
    }
    for to in &world.sent_to {
        assert_eq!(to.ip().to_string(), "127.0.0.1");
    }
    println!(
        "every ICE candidate ({} SDPs) and every packet ({} destinations) was on 127.0.0.1",
        world.sdps.len(),
        world.sent_to.len()
    );
    world.session.destroy();
    server.stop();
    let _ = std::fs::remove_dir_all(&server.dir);
    let ok = codes.len() == 1
        && remaining.iter().all(|i| {
            world.members[*i].report.concealed == 0 && world.members[*i].report.opened > 0
        });
    if ok {
        ExitCode::SUCCESS
    } else {
        println!("FAILED: the remaining members disagree or concealed frames");
        ExitCode::FAILURE
    }
}
