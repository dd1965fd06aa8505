//! The core of the `room` example, shared with `tests/room_example.rs`: a whole call on
//! virtual time, every byte through an in-process relay that routes by channel token and
//! records everything it is given.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openmls_rust_crypto::OpenMlsRustCrypto;
use sotto::audio::{AudioConfig, AudioReceiver, AudioSender, Pulled, SAMPLE_RATE};
use sotto::keys::MemberId as SenderId;
use sotto::media::{ChannelToken, MediaConfig, MediaSession};
use sotto::room::{Commit, Identity, Room, RoomConfig, RoomEvent, SafetyCode};

#[path = "../common/relay.rs"]
mod relay;
#[path = "../common/voice.rs"]
mod voice;

use relay::{Delivery, InProcessRelay, MemberId};
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
    pub seal_ns: u128,
    pub seals: u64,
    pub open_ns: u128,
    pub opens: u64,
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
    id: MemberId,
    report: MemberReport,
    room: Room<OpenMlsRustCrypto>,
    media: MediaSession,
    sender: AudioSender,
    receivers: BTreeMap<SenderId, AudioReceiver>,
    voice: Voice,
    tokens_seen: HashSet<ChannelToken>,
    subscribed: Vec<ChannelToken>,
    /// Handshake and media bytes waiting for their delivery time.
    inbox: VecDeque<(Instant, Delivery)>,
    /// Extra handshake latency for this member (one member is slow).
    handshake_delay: Duration,
    gone: bool,
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
    let t0 = Instant::now();
    let audio = AudioConfig::default();
    let media_config = MediaConfig::default();
    let config = RoomConfig::default();
    let frame_samples = audio.frame_samples();
    let mut relay = InProcessRelay::new();
    let mut members: Vec<Member> = Vec::new();
    let mut plain_decoders: BTreeMap<MemberId, opus::Decoder> = BTreeMap::new();
    let mut report = Report::default();
    let mut opus_packets: Vec<Vec<u8>> = Vec::new();
    let mut pcm_sent: Vec<Vec<i16>> = Vec::new();

    let new_member = |i: usize,
                      room: Room<OpenMlsRustCrypto>,
                      media: MediaSession,
                      relay: &mut InProcessRelay| Member {
        id: {
            let id = relay.connect();
            assert!(relay.is_ready(id), "the relay answers Hello with Ready");
            id
        },
        report: MemberReport {
            pseudonym: pseudonym(i),
            display_name: display_name(i),
            ..MemberReport::default()
        },
        room,
        media,
        sender: AudioSender::new(&AudioConfig::default()).expect("audio config"),
        receivers: BTreeMap::new(),
        voice: Voice::new(i),
        tokens_seen: HashSet::new(),
        subscribed: Vec::new(),
        inbox: VecDeque::new(),
        handshake_delay: if i == 2 {
            Duration::from_millis(600)
        } else {
            Duration::from_millis(30)
        },
        gone: false,
    };

    // The creator, then everyone else invited in one commit. KeyPackages reach the inviter
    // out of band (an invite link): they carry the pseudonym in the clear, so they never
    // pass through the relay. Welcomes go through the relay's mailboxes.
    let creator =
        Identity::new(OpenMlsRustCrypto::default(), pseudonym(0).as_bytes()).expect("identity");
    let (room, keys) = Room::create(creator, config.clone()).expect("create");
    let mut media = MediaSession::new(media_config);
    media.apply(keys, t0).expect("keys");
    members.push(new_member(0, room, media, &mut relay));
    let invitees: Vec<Identity<OpenMlsRustCrypto>> = (1..options.members)
        .map(|i| {
            Identity::new(OpenMlsRustCrypto::default(), pseudonym(i).as_bytes()).expect("identity")
        })
        .collect();
    let kps: Vec<_> = invitees
        .iter()
        .map(|id| id.key_package().expect("key package"))
        .collect();
    let kp_bytes: Vec<&[u8]> = kps.iter().map(|k| k.bytes.as_slice()).collect();
    let commit = members[0].room.invite(&kp_bytes).expect("invite");
    // The creator is the channel's only subscriber so far.
    sync_subscriptions(&mut relay, &mut members);
    publish_commit(&mut relay, &mut members, 0, commit, t0);
    // The relay orders the commit; the creator sees it come back and confirms.
    deliver_all(&mut relay, &mut members, t0, &mut Lcg(0), 0);
    process_inbox(&mut members[0], t0);
    for (k, id) in invitees.into_iter().enumerate() {
        let i = k + 1;
        let welcome = relay
            .fetch_welcome(&kps[k].reference)
            .expect("welcome in mailbox");
        let (room, keys) = Room::join(id, config.clone(), &welcome).expect("join");
        let mut media = MediaSession::new(media_config);
        media.apply(keys, t0).expect("keys");
        members.push(new_member(i, room, media, &mut relay));
    }
    settle(&mut members);
    sync_subscriptions(&mut relay, &mut members);
    // A joiner seals only in epochs that descend from its own commit: each makes one (a
    // self-update) before the call starts, and the call starts once they are all due.
    let mut now = t0;
    for i in 1..members.len() {
        let commit = members[i].room.self_update().expect("self-update");
        publish_commit(&mut relay, &mut members, i, commit, now);
        deliver_all(&mut relay, &mut members, now, &mut Lcg(0), 0);
        now += Duration::from_secs(1);
        for m in members.iter_mut() {
            process_inbox(m, now);
        }
        settle(&mut members);
        sync_subscriptions(&mut relay, &mut members);
    }
    let t0 = now + media_config.switch_delay;

    // The script: one join, one removal, and every member self-updates once. An operation
    // starts when no commit is in flight and every member has caught up (one member's
    // handshakes arrive 600 ms late on purpose), and not before its earliest step.
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
    ops.push_back((0, Op::Update(joiner_index)));
    ops.push_back((steps / 2, Op::Remove(removed_index)));
    for i in late {
        ops.push_back((0, Op::Update(*i)));
    }
    let mut pending_join: Option<(Identity<OpenMlsRustCrypto>, Vec<u8>)> = None;
    let mut mix = vec![0i32; frame_samples];
    let mut plain_mix = vec![0i32; frame_samples];
    let mut pcm = vec![0i16; frame_samples];
    let mut out = vec![0i16; frame_samples];
    let mut loss = Lcg(0x5077_0a0d);

    let mut step = 0;
    // The call lasts `seconds`, or longer if the script needs it (large rooms).
    while step < steps || !ops.is_empty() || pending_join.is_some() {
        let now = t0 + Duration::from_millis(step * FRAME_MS);
        step += 1;

        let settled = pending_join.is_none()
            && members
                .iter()
                .filter(|m| !m.gone)
                .all(|m| !m.room.has_pending_commit())
            && {
                let epochs: HashSet<u64> = members
                    .iter()
                    .filter(|m| !m.gone)
                    .map(|m| m.room.epoch())
                    .collect();
                epochs.len() == 1
            };
        if settled
            && ops
                .front()
                .is_some_and(|(not_before, _)| step >= *not_before)
        {
            match ops.pop_front().map(|(_, op)| op) {
                Some(Op::Update(who)) => {
                    if let Some(m) = members.get_mut(who).filter(|m| !m.gone) {
                        let commit = m.room.self_update().expect("self-update");
                        publish_commit(&mut relay, &mut members, who, commit, now);
                    }
                }
                Some(Op::Join) => {
                    let id = Identity::new(
                        OpenMlsRustCrypto::default(),
                        pseudonym(joiner_index).as_bytes(),
                    )
                    .expect("identity");
                    let kp = id.key_package().expect("key package");
                    let inviter = 1;
                    let commit = members[inviter].room.invite(&[&kp.bytes]).expect("invite");
                    publish_commit(&mut relay, &mut members, inviter, commit, now);
                    pending_join = Some((id, kp.reference));
                }
                Some(Op::Remove(who)) => {
                    let leaf = members[who].room.own_leaf();
                    let commit = members[0].room.remove(&[leaf]).expect("remove");
                    publish_commit(&mut relay, &mut members, 0, commit, now);
                }
                None => {}
            }
        }

        // Everyone speaks: one packet per 20 ms, speech or silence.
        let listener_leaves: Vec<u32> = members[0].receivers.keys().map(|id| id.leaf).collect();
        plain_mix.iter_mut().for_each(|s| *s = 0);
        for m in members.iter_mut().filter(|m| !m.gone) {
            m.voice.fill(&mut pcm);
            let opus = m.sender.encode_i16(&pcm).expect("encode").to_vec();
            let began = Instant::now();
            let Some(packet) = m.media_seal(&opus, now) else {
                continue;
            };
            m.report.seal_ns += began.elapsed().as_nanos();
            m.report.seals += 1;
            m.report.frames_sent += 1;
            m.report.overhead_bytes.push(packet.len() - opus.len());
            if let Some(token) = m.sending_token() {
                relay.publish_media(m.id, token, &packet);
            }

            // What member 0 would have heard without encryption: the same Opus packets,
            // decoded plainly.
            let leaf = m.room.own_leaf();
            if options.record_audio && listener_leaves.contains(&leaf) {
                let dec = plain_decoders.entry(m.id).or_insert_with(|| {
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
        if options.record_audio {
            report
                .heard_plain
                .extend(plain_mix.iter().map(|s| (*s).clamp(-32768, 32767) as i16));
        }

        // The network delivers what is due; members process it.
        deliver_all(
            &mut relay,
            &mut members,
            now,
            &mut loss,
            options.loss_percent,
        );
        for m in members.iter_mut() {
            process_inbox(m, now);
        }
        settle(&mut members);
        if let Some((id, reference)) = pending_join.take() {
            match relay.fetch_welcome(&reference) {
                Some(welcome) => {
                    let i = members.len();
                    let (room, keys) = Room::join(id, config.clone(), &welcome).expect("join");
                    let mut media = MediaSession::new(media_config);
                    media.apply(keys, now).expect("keys");
                    let mut m = new_member(i, room, media, &mut relay);
                    m.report.joined_late = true;
                    members.push(m);
                    settle(&mut members);
                }
                None => pending_join = Some((id, reference)),
            }
        }
        sync_subscriptions(&mut relay, &mut members);

        // Everyone listens: one frame per remote sender, mixed.
        for (index, m) in members.iter_mut().enumerate() {
            if m.gone {
                continue;
            }
            mix.iter_mut().for_each(|s| *s = 0);
            for receiver in m.receivers.values_mut() {
                if receiver
                    .pull_i16(&mut m.media, &mut out, now)
                    .expect("pull")
                    != Pulled::Idle
                {
                    for (acc, s) in mix.iter_mut().zip(&out) {
                        *acc += i32::from(*s);
                    }
                }
            }
            if index == 0 && options.record_audio {
                report
                    .heard
                    .extend(mix.iter().map(|s| (*s).clamp(-32768, 32767) as i16));
            }
        }
    }

    // Final tallies.
    for m in &mut members {
        for r in m.receivers.values() {
            let s = r.stats();
            m.report.frames_decoded += s.decoded;
            m.report.fec_recovered += s.fec_recovered;
            m.report.concealed += s.concealed;
            m.report.rejected += s.rejected + s.auth_failures + s.replays;
        }
        m.report.token_rotations = m.tokens_seen.len().saturating_sub(1);
        if !m.gone {
            m.report.safety_code = Some(m.room.safety_code());
        }
    }
    let active: Vec<&Member> = members.iter().filter(|m| !m.gone).collect();
    report.safety_codes_agree = active.windows(2).all(|w| {
        w[0].room.safety_code() == w[1].room.safety_code() && w[0].room.epoch() == w[1].room.epoch()
    });
    report.epochs = active.first().map(|m| m.room.epoch()).unwrap_or(0);
    report.members = members.iter().map(|m| m.report.clone()).collect();

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

impl Member {
    fn media_seal(&mut self, opus: &[u8], now: Instant) -> Option<Bytes> {
        let mut out = bytes::BytesMut::new();
        self.media.seal(opus, &mut out, now).ok()?;
        Some(out.freeze())
    }

    /// The token of the epoch this member seals in.
    fn sending_token(&self) -> Option<ChannelToken> {
        let epoch = self.media.sending_epoch()?;
        self.media
            .tokens()
            .find(|(e, _)| *e == epoch)
            .map(|(_, t)| t)
    }
}

/// The committer publishes on its current channel and applies its staged keys.
fn publish_commit(
    relay: &mut InProcessRelay,
    members: &mut [Member],
    who: usize,
    commit: Commit,
    now: Instant,
) {
    let Some(m) = members.get_mut(who) else {
        return;
    };
    let token = m.room.channel_token().expect("token");
    m.media.apply(commit.keys, now).expect("staged keys");
    relay.publish_handshake(m.id, token, &commit.message);
    if let Some(welcome) = &commit.welcome {
        for reference in &commit.invited {
            relay.post_welcome(reference, welcome);
        }
    }
}

fn deliver_all(
    relay: &mut InProcessRelay,
    members: &mut [Member],
    now: Instant,
    loss: &mut Lcg,
    percent: u64,
) {
    for (to, delivery) in relay.drain() {
        if let Some(m) = members.iter_mut().find(|m| m.id == to) {
            if matches!(delivery, Delivery::Media(_)) && percent > 0 && loss.percent() < percent {
                m.report.lost += 1;
                continue;
            }
            let at = match delivery {
                Delivery::Handshake(_) => now + m.handshake_delay,
                Delivery::Media(_) => now,
            };
            m.inbox.push_back((at, delivery));
        }
    }
}

fn process_inbox(m: &mut Member, now: Instant) {
    if m.gone {
        m.inbox.clear();
        return;
    }
    let mut later = VecDeque::new();
    while let Some((at, delivery)) = m.inbox.pop_front() {
        if at > now {
            later.push_back((at, delivery));
            continue;
        }
        match delivery {
            Delivery::Media(packet) => {
                let Ok(member) = m.media.member_of(&packet) else {
                    continue;
                };
                let began = Instant::now();
                if let Some(r) = m.receivers.get_mut(&member) {
                    r.push(&packet, &mut m.media, now);
                    m.report.open_ns += began.elapsed().as_nanos();
                    m.report.opens += 1;
                }
            }
            Delivery::Handshake(bytes) => match m.room.process(&bytes) {
                Ok(events) => handle_events(m, events, now),
                Err(_) => m.report.rejected += 1,
            },
        }
    }
    m.inbox = later;
}

fn handle_events(m: &mut Member, events: Vec<RoomEvent>, now: Instant) {
    for e in events {
        match e {
            RoomEvent::Keys(keys) => m.media.apply(keys, now).expect("keys"),
            RoomEvent::MemberRemoved { leaf } => {
                m.receivers.retain(|id, _| id.leaf != leaf);
            }
            RoomEvent::RemovedFromRoom => {
                m.gone = true;
                m.report.removed = true;
                m.media.stop_sending();
            }
            _ => {}
        }
    }
}

/// Receivers for every other member; subscriptions follow the tokens the session holds.
fn settle(members: &mut [Member]) {
    for m in members.iter_mut().filter(|m| !m.gone) {
        let own = m.room.own_leaf();
        let ids: Vec<SenderId> = m
            .room
            .members()
            .iter()
            .map(|i| i.id)
            .filter(|id| id.leaf != own)
            .collect();
        m.receivers.retain(|id, _| ids.contains(id));
        for id in ids {
            m.receivers.entry(id).or_insert_with(|| {
                AudioReceiver::new(&AudioConfig::default()).expect("audio config")
            });
        }
    }
}

fn sync_subscriptions(relay: &mut InProcessRelay, members: &mut [Member]) {
    for m in members.iter_mut() {
        let want: Vec<ChannelToken> = if m.gone {
            Vec::new()
        } else {
            m.media.tokens().map(|(_, t)| t).collect()
        };
        for t in &want {
            if !m.subscribed.contains(t) {
                relay.subscribe(m.id, *t);
                m.tokens_seen.insert(*t);
            }
        }
        for t in &m.subscribed {
            if !want.contains(t) {
                relay.unsubscribe(m.id, *t);
            }
        }
        m.subscribed = want;
    }
}

/// The sample rate, for WAV output.
pub const RATE: u32 = SAMPLE_RATE;
