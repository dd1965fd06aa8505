//! The core of the `room` example, shared with `tests/room_example.rs`: a whole call on
//! virtual time, each member a `sotto::call::Call`, every datagram through an in-process
//! relay (sotto's `Router`) that records everything it is given.
#![allow(dead_code)]

use sotto::room::MlsSuite;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use sotto::audio::{AudioConfig, AudioSender, ReceiverStats, SAMPLE_RATE};
use sotto::call::{Call, CallConfig};
use sotto::keys::StreamId;
use sotto::media::ChannelToken;
use sotto::provider::Provider;
use sotto::relay::{ClientMessage, RelayMessage, MEDIA_OVERHEAD};
use sotto::room::{Identity, SafetyCode};

#[path = "../common/relay.rs"]
mod relay;
#[path = "../common/voice.rs"]
mod voice;

use relay::InProcessRelay;
use voice::Voice;

/// What the call looks like.
#[derive(Clone, Debug)]
pub struct Options {
    /// Members at the start (one more joins mid-call).
    pub members: usize,
    /// Call length in seconds of virtual time.
    pub seconds: u64,
    /// Keep what member 0 heard (and the plain reference), for `--wav`.
    pub record_audio: bool,
    /// Media packets the network drops, in percent (seeded, reproducible). Default 0.
    pub loss_percent: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            members: 5,
            seconds: 10,
            record_audio: false,
            loss_percent: 0,
        }
    }
}

/// Per-member results.
#[derive(Clone, Debug, Default)]
pub struct MemberReport {
    pub pseudonym: String,
    pub display_name: String,
    pub frames_sent: u64,
    pub frames_decoded: u64,
    pub fec_recovered: u64,
    pub concealed: u64,
    pub rejected: u64,
    /// Media packets the network dropped on the way to this member.
    pub lost: u64,
    pub overhead_bytes: Vec<usize>,
    /// Wall time spent in the member's `Call` (datagrams in, timers, audio out and in).
    pub call_ns: u128,
    /// 20 ms intervals the member was in the call.
    pub ticks: u64,
    pub token_rotations: usize,
    pub safety_code: Option<SafetyCode>,
    pub removed: bool,
    pub joined_late: bool,
}

/// Whole-call results.
#[derive(Debug, Default)]
pub struct Report {
    pub members: Vec<MemberReport>,
    pub epochs: u64,
    pub safety_codes_agree: bool,
    pub distinct_tokens: usize,
    /// Commits that lost a race at the relay (their makers redid them).
    pub commits_dropped: u64,
    pub relay_bytes: usize,
    pub relay_datagrams: usize,
    pub size_histogram: BTreeMap<usize, usize>,
    /// Secrets found in what the relay recorded: (what, which).
    pub leaks: Vec<(String, String)>,
    pub checked_windows: usize,
    /// Member 0's mix through the encrypted path, and the same packets decoded plainly.
    pub heard: Vec<i16>,
    pub heard_plain: Vec<i16>,
}

const NAMES: [(&str, &str); 8] = [
    ("owl-7f3a", "Ada Lovelace"),
    ("fox-19c2", "Grace Hopper"),
    ("elk-a4d0", "Alan Turing"),
    ("yak-5e61", "Katherine Johnson"),
    ("emu-c8b7", "Claude Shannon"),
    ("ibis-20f9", "Radia Perlman"),
    ("lynx-6d14", "Whitfield Diffie"),
    ("moth-e3a5", "Hedy Lamarr"),
];

/// The room's name: known to the app only.
pub const ROOM_NAME: &str = "Friday design review";

const FRAME_MS: u64 = 20;

/// The member whose handshake messages arrive 600 ms late (the others' 30 ms).
pub const SLOW_MEMBER: usize = 2;

/// A step of the call's script.
#[derive(Clone, Copy, Debug)]
enum Op {
    Update(usize),
    Join,
    Remove(usize),
}

/// A seeded generator for network loss.
struct Lcg(u64);

impl Lcg {
    fn percent(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % 100
    }
}

struct Member {
    call: Call,
    report: MemberReport,
    voice: Voice,
    /// A second encoder fed the same PCM whenever the call sealed a frame: libopus is
    /// deterministic, so these are the plaintext packets the call sent.
    shadow: AudioSender,
    /// Datagrams from the relay waiting for their delivery time.
    inbox: VecDeque<(Instant, Vec<u8>)>,
    /// Extra handshake latency for this member (one member is slow).
    handshake_delay: Duration,
    tokens_seen: HashSet<ChannelToken>,
    /// Length of the last plaintext packet sent.
    last_opus_len: Option<usize>,
    /// The latest counters of each sender's receiver (departed senders included).
    received: BTreeMap<sotto::keys::MemberId, ReceiverStats>,
    /// The counters when the call started (everyone in and heard): the report counts from
    /// there.
    at_start: BTreeMap<sotto::keys::MemberId, ReceiverStats>,
}

fn pseudonym(i: usize) -> String {
    NAMES
        .get(i % NAMES.len())
        .map(|(p, _)| format!("{p}{}", i / NAMES.len()))
        .unwrap_or_default()
}

fn display_name(i: usize) -> String {
    NAMES
        .get(i % NAMES.len())
        .map(|(_, d)| d.to_string())
        .unwrap_or_default()
}

/// Runs the call.
pub fn run(options: &Options) -> Report {
    let start = Instant::now();
    let config = CallConfig::default();
    let frame_samples = config.audio.frame_samples();
    let mut relay = InProcessRelay::new();
    let mut members: Vec<Member> = Vec::new();
    let mut plain_decoders: BTreeMap<usize, opus::Decoder> = BTreeMap::new();
    let mut report = Report::default();
    let mut opus_packets: Vec<Vec<u8>> = Vec::new();
    let mut pcm_sent: Vec<Vec<i16>> = Vec::new();
    let mut loss = Lcg(0x5077_0a0d);

    let new_member = |i: usize, call: Call| Member {
        call,
        report: MemberReport {
            pseudonym: pseudonym(i),
            display_name: display_name(i),
            ..MemberReport::default()
        },
        voice: Voice::new(i),
        shadow: AudioSender::new(&AudioConfig::default()).expect("audio config"),
        inbox: VecDeque::new(),
        handshake_delay: if i == SLOW_MEMBER {
            Duration::from_millis(600)
        } else {
            Duration::from_millis(30)
        },
        tokens_seen: HashSet::new(),
        last_opus_len: None,
        received: BTreeMap::new(),
        at_start: BTreeMap::new(),
    };
    let joiner = |i: usize, now: Instant| {
        let identity = Identity::new(Provider::new().expect("provider"), pseudonym(i).as_bytes())
            .expect("identity");
        let kp = identity
            .key_package(MlsSuite::Classic)
            .expect("key package");
        let bytes = kp.bytes.clone();
        let call = Call::join(identity, kp, config.clone(), now).expect("join");
        (call, bytes)
    };

    // The creator, then everyone else invited in one commit. KeyPackages reach the inviter
    // out of band (an invite link): they carry the pseudonym in the clear, so they never
    // pass through the relay. Welcomes go through the relay's mailboxes; each joiner makes
    // one commit of its own before it speaks (the engine does it).
    let creator = Identity::new(Provider::new().expect("provider"), pseudonym(0).as_bytes())
        .expect("identity");
    members.push(new_member(
        0,
        Call::create(creator, config.clone(), start).expect("create"),
    ));
    let mut invites: Vec<Vec<u8>> = Vec::new();
    for i in 1..options.members {
        let (call, kp) = joiner(i, start);
        members.push(new_member(i, call));
        invites.push(kp);
    }

    // The script: the first invitation, one join, one removal, and every member
    // self-updates once. An operation starts when every member has caught up (one
    // member's handshakes arrive 600 ms late on purpose), and not before its step.
    let steps = options.seconds * 1000 / FRAME_MS;
    let removed_index = options.members.saturating_sub(2).max(1);
    let joiner_index = options.members;
    let mut ops: VecDeque<(u64, Op)> = VecDeque::new();
    ops.push_back((steps / 20, Op::Update(removed_index)));
    let others: Vec<usize> = (0..options.members)
        .filter(|i| *i != removed_index)
        .collect();
    let (early, late) = others.split_at(others.len() / 2);
    for i in early {
        ops.push_back((0, Op::Update(*i)));
    }
    ops.push_back((steps * 3 / 10, Op::Join));
    ops.push_back((steps / 2, Op::Remove(removed_index)));
    for i in late {
        ops.push_back((0, Op::Update(*i)));
    }
    let mut pcm = vec![0i16; frame_samples];
    let mut heard = vec![0i16; frame_samples];
    let mut out = vec![0i16; frame_samples];
    let mut plain_mix = vec![0i32; frame_samples];
    let mut datagram = Vec::new();
    let mut call_started: Option<u64> = None;

    let mut step: u64 = 0;
    // The call lasts `seconds` once everyone speaks, or longer if the script needs it.
    loop {
        let now = start + Duration::from_millis(step * FRAME_MS);
        let settled = all_settled(&members);
        if !invites.is_empty() && members[0].call.ready_to_commit() {
            let kps: Vec<&[u8]> = invites.iter().map(Vec::as_slice).collect();
            members[0].call.invite(&kps, now).expect("invite");
            invites.clear();
        }
        if settled && call_started.is_none() {
            call_started = Some(step);
            for m in members.iter_mut() {
                m.at_start = m.received.clone();
            }
        }
        let script_step = call_started.map_or(0, |s| step - s);
        if settled
            && call_started.is_some()
            && ops
                .front()
                .is_some_and(|(not_before, _)| script_step >= *not_before)
        {
            match ops.pop_front().map(|(_, op)| op) {
                Some(Op::Update(who)) => {
                    if let Some(m) = members.get_mut(who).filter(|m| m.call.is_in_room()) {
                        m.call.self_update(now).expect("self-update");
                    }
                }
                Some(Op::Join) => {
                    let (call, kp) = joiner(joiner_index, now);
                    let mut m = new_member(joiner_index, call);
                    m.report.joined_late = true;
                    members.push(m);
                    members[1].call.invite(&[&kp], now).expect("invite");
                }
                Some(Op::Remove(who)) => {
                    let room = members[who].call.room().expect("room");
                    let own = room.own_leaf();
                    let id = room
                        .members()
                        .into_iter()
                        .find(|m| m.leaf == own)
                        .expect("own leaf")
                        .id;
                    members[0].call.remove(id, now).expect("remove");
                }
                None => {}
            }
        }

        // The network delivers what is due.
        for m in members.iter_mut() {
            let began = Instant::now();
            // Media is not held up behind a late handshake message.
            let mut later = VecDeque::new();
            while let Some((at, bytes)) = m.inbox.pop_front() {
                if at > now {
                    later.push_back((at, bytes));
                } else {
                    // A datagram that does not parse is refused; none here does.
                    let _ = m.call.handle_datagram(&bytes, now);
                }
            }
            m.inbox = later;
            if m.call.poll_timeout().is_some_and(|t| t <= now) {
                m.call.handle_timeout(now);
            }
            m.report.call_ns += began.elapsed().as_nanos();
        }

        // Everyone speaks: one packet per 20 ms, speech or silence; everyone listens.
        plain_mix.iter_mut().for_each(|s| *s = 0);
        let listener_peers: Vec<usize> = (1..members.len()).collect();
        for (index, m) in members.iter_mut().enumerate() {
            if m.call.room().is_none() || m.call.is_removed() {
                continue;
            }
            m.voice.fill(&mut pcm);
            let began = Instant::now();
            let sent = m.call.stats().frames_sent;
            m.call.send_audio(&pcm, now).expect("send");
            m.call.pull_audio(&mut heard, now).expect("pull");
            m.report.call_ns += began.elapsed().as_nanos();
            m.report.ticks += 1;
            // The members send their microphones only; another stream would be its own voice.
            for v in m.call.voices().filter(|v| v.stream == StreamId::MICROPHONE) {
                m.received.insert(v.member, v.stats);
            }
            if index == 0 && options.record_audio && call_started.is_some() {
                report.heard.extend_from_slice(&heard);
            }
            if m.call.stats().frames_sent == sent {
                continue;
            }
            if call_started.is_some() {
                m.report.frames_sent += 1;
            }
            let opus = m.shadow.encode_i16(&pcm).expect("encode").to_vec();
            m.last_opus_len = Some(opus.len());
            // What member 0 would have heard without encryption: the same Opus packets,
            // decoded plainly.
            if options.record_audio && call_started.is_some() && listener_peers.contains(&index) {
                let dec = plain_decoders.entry(index).or_insert_with(|| {
                    opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder")
                });
                if dec.decode(&opus, &mut out, false).is_ok() {
                    for (acc, s) in plain_mix.iter_mut().zip(&out) {
                        *acc += i32::from(*s);
                    }
                }
            }
            opus_packets.push(opus);
            pcm_sent.push(pcm.clone());
        }
        if options.record_audio && call_started.is_some() {
            report
                .heard_plain
                .extend(plain_mix.iter().map(|s| (*s).clamp(-32768, 32767) as i16));
        }

        // What each member sends goes through the relay.
        for from in 0..members.len() {
            while members[from].call.poll_transmit(&mut datagram) {
                let media = matches!(
                    ClientMessage::parse(&datagram),
                    Ok(ClientMessage::Media { .. })
                );
                if let (true, Some(opus)) = (media, members[from].last_opus_len) {
                    members[from]
                        .report
                        .overhead_bytes
                        .push(datagram.len() - MEDIA_OVERHEAD - opus);
                }
                for (to, bytes) in relay.receive(from, &datagram, now) {
                    let Some(m) = members.get_mut(to) else {
                        continue;
                    };
                    let kind = RelayMessage::parse(&bytes);
                    let at = match kind {
                        Ok(RelayMessage::Media { .. }) => {
                            if options.loss_percent > 0 && loss.percent() < options.loss_percent {
                                m.report.lost += 1;
                                continue;
                            }
                            now
                        }
                        Ok(RelayMessage::Handshake { .. }) => now + m.handshake_delay,
                        _ => now,
                    };
                    m.inbox.push_back((at, bytes));
                }
            }
            let m = &mut members[from];
            for (_, t) in m.call.media().tokens() {
                m.tokens_seen.insert(t);
            }
            if m.call.is_removed() {
                m.report.removed = true;
            }
            while m.call.poll_event().is_some() {}
        }

        step += 1;
        let done = call_started.is_some_and(|s| step - s >= steps)
            && ops.is_empty()
            && all_settled(&members);
        if done {
            break;
        }
        if step >= 100 * steps + 3000 {
            for (i, m) in members.iter().enumerate() {
                eprintln!(
                    "m{i}: epoch {:?} speaks {} ready {} settled {} removed {} stats {:?}",
                    m.call.epoch(),
                    m.call.can_speak(),
                    m.call.ready_to_commit(),
                    m.call.is_settled(),
                    m.call.is_removed(),
                    m.call.stats()
                );
            }
            panic!("the script stalled: {ops:?} left");
        }
    }

    // Final tallies.
    for m in &mut members {
        for (id, stats) in &m.received {
            let before = m.at_start.get(id).copied().unwrap_or_default();
            m.report.frames_decoded += stats.decoded - before.decoded;
            m.report.fec_recovered += stats.fec_recovered - before.fec_recovered;
            m.report.concealed += stats.concealed - before.concealed;
            m.report.rejected += (stats.rejected + stats.auth_failures + stats.replays)
                - (before.rejected + before.auth_failures + before.replays);
        }
        m.report.token_rotations = m.tokens_seen.len().saturating_sub(1);
        if m.call.is_in_room() {
            m.report.safety_code = m.call.safety_code();
        }
    }
    let active: Vec<&Member> = members.iter().filter(|m| m.call.is_in_room()).collect();
    report.safety_codes_agree = active.windows(2).all(|w| {
        w[0].call.safety_code() == w[1].call.safety_code() && w[0].call.epoch() == w[1].call.epoch()
    });
    report.epochs = active.first().and_then(|m| m.call.epoch()).unwrap_or(0);
    report.members = members.iter().map(|m| m.report.clone()).collect();
    report.commits_dropped = members.iter().map(|m| m.call.stats().commits_dropped).sum();

    // What the relay saw.
    report.distinct_tokens = relay.distinct_tokens();
    report.relay_bytes = relay.recorded_bytes();
    report.relay_datagrams = relay.recorded_datagrams();
    report.size_histogram = relay.media_size_histogram();
    let mut needles: Vec<(String, String, Vec<u8>)> = Vec::new();
    for m in &members {
        needles.push((
            "credential".into(),
            m.report.pseudonym.clone(),
            m.report.pseudonym.clone().into_bytes(),
        ));
        needles.push((
            "display name".into(),
            m.report.display_name.clone(),
            m.report.display_name.clone().into_bytes(),
        ));
    }
    needles.push((
        "room name".into(),
        ROOM_NAME.into(),
        ROOM_NAME.as_bytes().to_vec(),
    ));
    let recording = relay.recording();
    for (what, which, needle) in &needles {
        if contains(recording, needle) {
            report.leaks.push((what.clone(), which.clone()));
        }
    }
    // Any 8-byte run of any plaintext Opus packet or PCM frame (runs of at least 5
    // distinct byte values, so silence or padding cannot match by chance).
    let windows = windows8(recording);
    let mut checked = 0;
    for (what, blobs) in [
        ("plaintext Opus", &opus_packets),
        (
            "PCM",
            &pcm_sent
                .iter()
                .map(|f| f.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>())
                .collect::<Vec<_>>(),
        ),
    ] {
        let mut found = 0;
        for blob in blobs.iter() {
            for w in blob.windows(8) {
                if distinct(w) < 5 {
                    continue;
                }
                checked += 1;
                if windows.contains(&u64::from_le_bytes(w.try_into().unwrap_or([0; 8]))) {
                    found += 1;
                }
            }
        }
        if found > 0 {
            report
                .leaks
                .push((what.into(), format!("{found} matching 8-byte runs")));
        }
    }
    report.checked_windows = checked;
    report
}

/// Everyone is in the room, at one epoch, and heard everyone else in it.
fn all_settled(members: &[Member]) -> bool {
    let active: Vec<&Member> = members.iter().filter(|m| m.call.is_in_room()).collect();
    let epochs: HashSet<Option<u64>> = active.iter().map(|m| m.call.epoch()).collect();
    members.iter().all(|m| m.call.room().is_some())
        && epochs.len() == 1
        && active.iter().all(|m| m.call.is_settled())
}

fn distinct(w: &[u8]) -> usize {
    let mut seen = [false; 256];
    w.iter()
        .filter(|b| !std::mem::replace(&mut seen[usize::from(**b)], true))
        .count()
}

fn windows8(bytes: &[u8]) -> HashSet<u64> {
    bytes
        .windows(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The sample rate, for WAV output.
pub const RATE: u32 = SAMPLE_RATE;
