//! Stage rooms: a host, speakers and listeners keyed by the audience tree, against every
//! adversary we could name (a relay, a departed listener, a newcomer, a current listener,
//! a forger of the host), and the stage simulation at reduced size (full size ignored).

use std::time::{Duration, Instant};

use bytes::BytesMut;
use openmls_rust_crypto::OpenMlsRustCrypto;
use sotto::keys::StreamId;
use sotto::media::{EpochKeys, MediaConfig, MediaSession};
use sotto::room::{Identity, MlsSuite};
use sotto::stage::{Role, StageConfig, StageError, StageHost, StageMember};

type Id = Identity<OpenMlsRustCrypto>;

fn identity(name: &str) -> Id {
    Identity::new(OpenMlsRustCrypto::default(), name.as_bytes()).unwrap()
}

fn key_package(id: &Id) -> Vec<u8> {
    id.key_package(MlsSuite::Classic).unwrap().bytes
}

fn crypto() -> openmls_rust_crypto::RustCrypto {
    openmls_rust_crypto::RustCrypto::default()
}

fn media(keys: EpochKeys, now: Instant) -> MediaSession {
    let mut m = MediaSession::new(stage_media());
    m.apply(keys, now).unwrap();
    m
}

/// The stage's media timing: a shorter switch delay than a room's (rekeys reach listeners
/// through one relay hop, and newcomers wait for it before their first frame).
fn stage_media() -> MediaConfig {
    MediaConfig {
        switch_delay: Duration::from_millis(400),
        ..MediaConfig::default()
    }
}

fn seal(m: &mut MediaSession, payload: &[u8], now: Instant) -> Vec<u8> {
    let mut out = BytesMut::new();
    m.seal(StreamId::MICROPHONE, payload, &mut out, now)
        .unwrap();
    out.to_vec()
}

fn opens(m: &mut MediaSession, frame: &[u8], now: Instant) -> Option<Vec<u8>> {
    let mut out = BytesMut::new();
    m.open(frame, &mut out, now).ok().map(|_| out.to_vec())
}

struct Small {
    t0: Instant,
    host: StageHost,
    host_media: MediaSession,
    ids: Vec<Id>,
    members: Vec<(StageMember, MediaSession)>,
}

/// A host and `n` listeners at capacity 16, all joined at epoch 1.
fn small(n: usize) -> Small {
    let t0 = Instant::now();
    let config = StageConfig {
        capacity: 16,
        ..StageConfig::default()
    };
    let (mut host, keys) = StageHost::new(config).unwrap();
    let host_media = media(keys, t0);
    let ids: Vec<Id> = (0..n).map(|i| identity(&format!("listener {i}"))).collect();
    for id in &ids {
        host.add(&crypto(), &key_package(id)).unwrap();
    }
    let commit = host.commit(&crypto()).unwrap();
    let mut small = Small {
        t0,
        host,
        host_media,
        ids,
        members: Vec::new(),
    };
    small.host_media.apply(commit.keys, t0).unwrap();
    for (id, w) in small.ids.iter().zip(&commit.welcomes) {
        let (member, keys) = StageMember::join(id, small.host.signature_key(), &w.bytes).unwrap();
        assert_eq!(member.role(), Role::Listener);
        small.members.push((member, media(keys, t0)));
    }
    small
}

#[test]
fn listeners_hear_speakers_and_a_promoted_listener_speaks() {
    let mut s = small(4);
    let t = s.t0 + Duration::from_secs(1);
    let frame = seal(&mut s.host_media, b"host audio", t);
    for (_, m) in &mut s.members {
        assert_eq!(opens(m, &frame, t).as_deref(), Some(&b"host audio"[..]));
    }
    // Promote listener 1; everyone processes the rekey.
    let slot = s.members[1].0.slot();
    let index = s.host.promote(slot).unwrap();
    let commit = s.host.commit(&crypto()).unwrap();
    assert!(commit.welcomes.is_empty());
    s.host_media.apply(commit.keys, t).unwrap();
    for (member, m) in &mut s.members {
        let keys = member.process(&commit.rekey).unwrap();
        m.apply(keys, t).unwrap();
    }
    assert_eq!(s.members[1].0.role(), Role::Speaker(index));
    let t = t + Duration::from_secs(1);
    let frame = seal(&mut s.members[1].1, b"new speaker", t);
    for (i, (_, m)) in s.members.iter_mut().enumerate() {
        let got = opens(m, &frame, t);
        if i == 1 {
            continue;
        }
        assert_eq!(got.as_deref(), Some(&b"new speaker"[..]), "listener {i}");
    }
    assert!(opens(&mut s.host_media, &frame, t).is_some());
    // Demoted, it gets no sending key of the next epoch, and what its session still
    // seals in the old one is refused one switch delay after the others apply the rekey.
    s.host.demote(slot).unwrap();
    let commit = s.host.commit(&crypto()).unwrap();
    s.host_media.apply(commit.keys, t).unwrap();
    for (member, m) in &mut s.members {
        let keys = member.process(&commit.rekey).unwrap();
        m.apply(keys, t).unwrap();
    }
    assert_eq!(s.members[1].0.role(), Role::Listener);
    let early = seal(&mut s.members[1].1, b"old epoch, early", t);
    let late = seal(
        &mut s.members[1].1,
        b"old epoch, late",
        t + Duration::from_millis(450),
    );
    assert_eq!(
        s.members[1].1.sending_epoch(),
        Some(2),
        "still the old sending epoch"
    );
    let (_, m0) = &mut s.members[0];
    assert!(opens(m0, &early, t + Duration::from_millis(100)).is_some());
    assert!(opens(m0, &late, t + Duration::from_millis(450)).is_none());
}

#[test]
fn a_current_listener_cannot_forge_a_rekey() {
    // A listener holds the handshake key the next rekey is sealed under: it can open the
    // rekey, change it and seal it again. The host's signature stops it.
    use ring::aead;
    let mut s = small(3);
    s.host.add(&crypto(), &key_package(&identity("x"))).unwrap();
    let commit = s.host.commit(&crypto()).unwrap();
    let keys = s.members[0].0.process(&commit.rekey).unwrap();
    let key = *keys.handshake_key().unwrap().as_bytes();
    s.members[1].0.process(&commit.rekey).unwrap();
    s.host.remove(s.members[2].0.slot()).unwrap();
    let commit = s.host.commit(&crypto()).unwrap();
    let (head, sealed) = commit.rekey.split_at(1 + 8 + 12);
    let from: [u8; 8] = head[1..9].try_into().unwrap();
    let nonce: [u8; 12] = head[9..].try_into().unwrap();
    let mut aad = b"sotto stage rekey v1".to_vec();
    aad.extend_from_slice(&from);
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &key).unwrap());
    let mut body = sealed.to_vec();
    let plain = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(&aad),
            &mut body,
        )
        .unwrap()
        .to_vec();
    // Flip each byte of the signed body in turn (the removal flag, the confirmation, the
    // speakers, the wrapped keys) and seal it again, as the listener can.
    for at in 0..plain.len() - 64 {
        let mut forged = plain.clone();
        forged[at] ^= 0x01;
        key.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(&aad),
            &mut forged,
        )
        .unwrap();
        let mut wire = head.to_vec();
        wire.extend_from_slice(&forged);
        assert_eq!(
            s.members[1].0.process(&wire).unwrap_err(),
            StageError::BadSignature,
            "byte {at}"
        );
    }
    // The genuine rekey still works for it.
    s.members[1].0.process(&commit.rekey).unwrap();
}

#[test]
fn the_last_listener_under_the_refresh_learns_it_was_removed() {
    // Alone in the tree, a departed listener's refresh leaves no entry naming its sibling:
    // the host's key confirmation tells it.
    let mut s = small(1);
    s.host.remove(s.members[0].0.slot()).unwrap();
    let commit = s.host.commit(&crypto()).unwrap();
    assert_eq!(
        s.members[0].0.process(&commit.rekey).unwrap_err(),
        StageError::Removed
    );
}

#[test]
fn a_departed_listener_cannot_follow_or_open_the_next_epoch() {
    let mut s = small(5);
    let t = s.t0 + Duration::from_secs(1);
    let departed = 2;
    let held_back: Vec<Vec<u8>> = (0..8)
        .map(|i| seal(&mut s.host_media, &[i], t - Duration::from_millis(100)))
        .collect();
    s.host.remove(s.members[departed].0.slot()).unwrap();
    let commit = s.host.commit(&crypto()).unwrap();
    s.host_media.apply(commit.keys, t).unwrap();
    // It still holds every key of its path: the rekey gives it nothing.
    let (gone, mut gone_media) = s.members.remove(departed);
    let mut gone = gone;
    assert_eq!(
        gone.process(&commit.rekey).unwrap_err(),
        StageError::Removed
    );
    for (member, m) in &mut s.members {
        let keys = member.process(&commit.rekey).unwrap();
        m.apply(keys, t).unwrap();
    }
    // What it can still send — frames under the old epoch's keys, which it holds (here a
    // genuine old-epoch frame a relay held back stands for any it could forge) — opens
    // only until one switch delay plus the skew after the others applied the rekey.
    // (Checked before any new-epoch frame of the host opens: that alone would already
    // refuse the host's older frames as superseded.)
    let mut held = held_back;
    let cut = t + Duration::from_millis(400 + 250);
    for (_, m) in &mut s.members {
        assert!(opens(m, &held.remove(0), cut - Duration::from_millis(10)).is_some());
        assert!(opens(m, &held.remove(0), cut + Duration::from_millis(10)).is_none());
    }
    // After the switch delay the host seals in the new epoch: the others open, it cannot.
    let t = cut + Duration::from_millis(20);
    let frame = seal(&mut s.host_media, b"after", t);
    for (_, m) in &mut s.members {
        assert!(opens(m, &frame, t).is_some());
    }
    assert!(opens(&mut gone_media, &frame, t).is_none());
}

#[test]
fn a_newcomer_opens_nothing_from_before_its_welcome() {
    let mut s = small(2);
    let t = s.t0 + Duration::from_secs(1);
    let before = seal(&mut s.host_media, b"before", t);
    let newcomer = identity("newcomer");
    s.host.add(&crypto(), &key_package(&newcomer)).unwrap();
    let commit = s.host.commit(&crypto()).unwrap();
    s.host_media.apply(commit.keys, t).unwrap();
    let (member, keys) =
        StageMember::join(&newcomer, s.host.signature_key(), &commit.welcomes[0].bytes).unwrap();
    assert_eq!(member.epoch(), 2);
    let mut m = media(keys, t);
    assert!(opens(&mut m, &before, t).is_none());
    let after = seal(&mut s.host_media, b"after", t + Duration::from_millis(500));
    assert!(opens(&mut m, &after, t + Duration::from_millis(500)).is_some());
    // The old members' rekey does not open for it (it is sealed under epoch 1's key).
    let mut member = member;
    assert!(matches!(
        member.process(&commit.rekey),
        Err(StageError::WrongEpoch { .. })
    ));
}

#[test]
fn a_relay_cannot_alter_replay_or_redirect_stage_messages() {
    let mut s = small(2);
    let newcomer = identity("newcomer");
    s.host.add(&crypto(), &key_package(&newcomer)).unwrap();
    let commit = s.host.commit(&crypto()).unwrap();
    // Every single-byte change of the rekey is refused, and the member stays usable.
    let (member, _) = &mut s.members[0];
    for at in 0..commit.rekey.len() {
        let mut bad = commit.rekey.clone();
        bad[at] ^= 0x40;
        assert!(member.process(&bad).is_err(), "byte {at}");
        assert!(member.process(&bad[..at]).is_err(), "cut at {at}");
    }
    member.process(&commit.rekey).unwrap();
    // Replayed, it is for an epoch this member left.
    assert!(matches!(
        member.process(&commit.rekey),
        Err(StageError::WrongEpoch { .. })
    ));
    // A Welcome altered anywhere does not join (and leaves the KeyPackage usable).
    let w = &commit.welcomes[0].bytes;
    for at in (0..w.len()).step_by(7) {
        let mut bad = w.clone();
        bad[at] ^= 0x01;
        assert!(StageMember::join(&newcomer, s.host.signature_key(), &bad).is_err());
    }
    // Sent to someone else, it names a KeyPackage they do not hold.
    let other = identity("other");
    assert_eq!(
        StageMember::join(&other, s.host.signature_key(), w).unwrap_err(),
        StageError::UnknownKeyPackage
    );
    StageMember::join(&newcomer, s.host.signature_key(), w).unwrap();
    // Fetched again, the KeyPackage is used up.
    assert_eq!(
        StageMember::join(&newcomer, s.host.signature_key(), w).unwrap_err(),
        StageError::UnknownKeyPackage
    );
}

#[test]
fn a_relay_running_its_own_host_is_refused_by_the_host_key() {
    // The relay holds listeners' published KeyPackages: it can run a StageHost of its own
    // and seal a Welcome to them. The listener checks the host's key it learnt from the app.
    let s = small(1);
    let victim = identity("victim");
    let (mut fake, _) = StageHost::new(StageConfig {
        capacity: 16,
        ..StageConfig::default()
    })
    .unwrap();
    fake.add(&crypto(), &key_package(&victim)).unwrap();
    let commit = fake.commit(&crypto()).unwrap();
    assert_eq!(
        StageMember::join(&victim, s.host.signature_key(), &commit.welcomes[0].bytes).unwrap_err(),
        StageError::BadSignature
    );
}

#[test]
fn bad_key_packages_and_operations_are_typed_errors() {
    let (mut host, _) = StageHost::new(StageConfig {
        capacity: 2,
        ..StageConfig::default()
    })
    .unwrap();
    assert!(matches!(
        host.add(&crypto(), b"not a key package"),
        Err(StageError::KeyPackage(_))
    ));
    assert_eq!(
        host.commit(&crypto()).unwrap_err(),
        StageError::NothingPending
    );
    let a = host.add(&crypto(), &key_package(&identity("a"))).unwrap();
    host.add(&crypto(), &key_package(&identity("b"))).unwrap();
    assert_eq!(
        host.add(&crypto(), &key_package(&identity("c")))
            .unwrap_err(),
        StageError::Full
    );
    assert_eq!(host.promote(a).unwrap_err(), StageError::NoSuchSlot(a));
    host.remove(a).unwrap();
    let kp = key_package(&identity("d"));
    host.add(&crypto(), &kp).unwrap();
    assert_eq!(
        host.add(&crypto(), &kp).unwrap_err(),
        StageError::DuplicateKeyPackage
    );
    assert_eq!(host.remove(9).unwrap_err(), StageError::NoSuchSlot(9));
    for capacity in [0, 3, 1 << 17] {
        assert_eq!(
            StageHost::new(StageConfig {
                capacity,
                ..StageConfig::default()
            })
            .unwrap_err(),
            StageError::InvalidCapacity(capacity)
        );
    }
}

#[cfg(feature = "opus")]
mod simulation {
    use super::*;
    use sotto::audio::SAMPLE_RATE;
    use std::cmp::Reverse;
    use std::collections::{BTreeMap, BinaryHeap};

    // ---------------------------------------------------------------------------------------
    // The simulation (with Opus: listeners decode what they open): a stage of `members` listeners in a tree of `capacity` leaves, 3 speakers
    // (the host and two promoted listeners), `samples` listeners kept as full members that
    // process every rekey and open every frame, the others represented by their KeyPackages
    // and Welcomes; churn of `joins` and `departures` per second, committed once a second;
    // virtual time, rekeys delivered 50–150 ms and frames 20–60 ms after they are sent.

    struct SimConfig {
        capacity: u32,
        members: usize,
        samples: usize,
        seconds: u64,
        joins_per_s: u64,
        departures_per_s: u64,
    }

    #[derive(Debug, Default)]
    #[allow(dead_code)] // printed
    struct Report {
        members: usize,
        commits: u64,
        rekey_bytes_per_s: f64,
        audio_bytes_per_s: f64,
        process_cpu_fraction: f64,
        host_commit_ms_max: f64,
        host_commit_ms_mean: f64,
        welcome_bytes_max: usize,
        first_frame_ms_max: f64,
        newcomers_measured: usize,
        frames_expected: u64,
        frames_lost: u64,
        frames_decoded: u64,
        departed_checked: usize,
        departed_last_open_ms_max: f64,
        departed_opens_after_window: u64,
    }

    enum Payload {
        Rekey(Vec<u8>),
        Welcome(Vec<u8>),
        Frame { bytes: Vec<u8>, sealed: Duration },
    }

    struct Full {
        member: Option<StageMember>,
        media: Option<MediaSession>,
        identity: Id,
        /// Virtual time its Welcome arrived, and of its first opened frame.
        welcomed: Option<Duration>,
        /// Virtual time of the commit that admitted it (newcomers).
        admitted: Option<Duration>,
        first_open: Option<Duration>,
        /// Present from the start: every frame sealed while it is a member must open.
        counted: bool,
        /// Virtual time the commit removing it was made.
        departed: Option<Duration>,
        last_open: Option<Duration>,
        cpu: Duration,
        received_rekey_bytes: u64,
        received_audio_bytes: u64,
        expected: u64,
        lost: u64,
        /// One Opus decoder per speaker (by speaker index).
        decoders: BTreeMap<u32, opus::Decoder>,
        decoded: u64,
    }

    impl Full {
        /// A full member not yet joined; `counted`: present from the start.
        fn new(identity: Id, counted: bool) -> Full {
            Full {
                member: None,
                media: None,
                identity,
                welcomed: None,
                admitted: None,
                first_open: None,
                counted,
                departed: None,
                last_open: None,
                cpu: Duration::ZERO,
                received_rekey_bytes: 0,
                received_audio_bytes: 0,
                expected: 0,
                lost: 0,
                decoders: BTreeMap::new(),
                decoded: 0,
            }
        }
    }

    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 33
    }

    /// Rekeys and Welcomes reach members this long after the commit, at least and at most.
    const REKEY_DELAY_MIN: Duration = Duration::from_millis(50);
    const REKEY_DELAY_MAX: Duration = Duration::from_millis(149);

    fn opus_packets() -> Vec<Vec<u8>> {
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip).unwrap();
        encoder.set_bitrate(opus::Bitrate::Bits(24_000)).unwrap();
        (0..50)
            .map(|k| {
                let pcm: Vec<i16> = (0..960)
                    .map(|i| {
                        let t = (k * 960 + i) as f64 / f64::from(SAMPLE_RATE);
                        (8000.0 * (2.0 * std::f64::consts::PI * 220.0 * t).sin()) as i16
                    })
                    .collect();
                encoder.encode_vec(&pcm, 400).unwrap()
            })
            .collect()
    }

    fn simulate(cfg: &SimConfig) -> Report {
        let t0 = Instant::now();
        let mut rng = 0x5eed_u64;
        let crypto = crypto();
        let (mut host, keys) = StageHost::new(StageConfig {
            capacity: cfg.capacity,
            ..StageConfig::default()
        })
        .unwrap();
        let host_key = host.signature_key().to_vec();
        let mut host_media = media(keys, t0);
        let mut full: Vec<Full> = Vec::new();
        // Full members first (slots 0..samples), then the bulk, which only needs KeyPackages.
        let mut full_slot: BTreeMap<u32, usize> = BTreeMap::new();
        for i in 0..cfg.samples {
            let identity = identity(&format!("sample {i}"));
            let slot = host.add(&crypto, &key_package(&identity)).unwrap();
            full_slot.insert(slot, full.len());
            full.push(Full::new(identity, true));
        }
        let mut bulk: Vec<u32> = Vec::new();
        let mut counter = 0u64;
        let bulk_key_package = |counter: &mut u64| {
            *counter += 1;
            key_package(&identity(&format!("bulk {counter}")))
        };
        for _ in cfg.samples..cfg.members {
            bulk.push(host.add(&crypto, &bulk_key_package(&mut counter)).unwrap());
        }
        // Epoch 1: everyone in; then two speakers promoted (epoch 2). Set-up, not measured.
        let commit = host.commit(&crypto).unwrap();
        host_media.apply(commit.keys, t0).unwrap();
        for w in &commit.welcomes {
            if let Some(&i) = full_slot.get(&w.slot) {
                let f = &mut full[i];
                let (member, keys) = StageMember::join(&f.identity, &host_key, &w.bytes).unwrap();
                f.member = Some(member);
                f.media = Some(media(keys, t0));
            }
        }
        let speakers: Vec<usize> = vec![0, 1];
        for &i in &speakers {
            host.promote(full[i].member.as_ref().unwrap().slot())
                .unwrap();
        }
        let commit = host.commit(&crypto).unwrap();
        host_media.apply(commit.keys, t0).unwrap();
        for f in &mut full {
            let keys = f.member.as_mut().unwrap().process(&commit.rekey).unwrap();
            f.media.as_mut().unwrap().apply(keys, t0).unwrap();
        }
        // Measured phase starts once the speakers have switched.
        let start = Duration::from_secs(1);
        let end = start + Duration::from_secs(cfg.seconds);
        let mut queue: BinaryHeap<Reverse<(Duration, u64, usize)>> = BinaryHeap::new();
        let mut payloads: BTreeMap<u64, Payload> = BTreeMap::new();
        let mut seq = 0u64;
        let mut report = Report {
            members: cfg.members,
            ..Report::default()
        };
        let mut commit_times = Vec::new();
        let mut path: BTreeMap<(usize, usize), Duration> = BTreeMap::new();
        let tick = Duration::from_millis(20);
        let mut now = Duration::ZERO;
        // One second of a 220 Hz tone as 24 kbit/s Opus packets, looped by every speaker.
        let packets = opus_packets();
        let mut tick_index = 0usize;
        let switch = stage_media().switch_delay;
        while now < end + Duration::from_secs(2) {
            let at = t0 + now;
            let measuring = now >= start && now < end;
            // Churn, spread over the second; committed on the second.
            if measuring && now.subsec_millis().is_multiple_of(100) {
                let tenth = u64::from(now.subsec_millis() / 100);
                // `joins_per_s` (at most 10) spread over the tenths of the second.
                if (tenth + 1) * cfg.joins_per_s / 10 > tenth * cfg.joins_per_s / 10 {
                    // One newcomer a second is a full member (its first frame is timed).
                    if tenth == 0 {
                        let identity = identity(&format!("newcomer {}", now.as_secs()));
                        let slot = host.add(&crypto, &key_package(&identity)).unwrap();
                        full_slot.insert(slot, full.len());
                        full.push(Full::new(identity, false));
                    } else {
                        bulk.push(host.add(&crypto, &bulk_key_package(&mut counter)).unwrap());
                    }
                }
                let every = 10 / cfg.departures_per_s.clamp(1, 10);
                if tenth % every == 0 {
                    // Every fifth second a sample listener departs (its opens are watched);
                    // otherwise a bulk listener.
                    let sample = now.as_secs().is_multiple_of(5) && tenth == 0;
                    let victim = full
                        .iter()
                        .enumerate()
                        .skip(2)
                        .find(|(_, f)| f.counted && f.departed.is_none() && f.member.is_some())
                        .map(|(i, _)| i);
                    match (sample, victim) {
                        (true, Some(i)) => {
                            let slot = full[i].member.as_ref().unwrap().slot();
                            host.remove(slot).unwrap();
                            full[i].departed = Some(Duration::MAX);
                        }
                        _ => {
                            let k = (lcg(&mut rng) as usize) % bulk.len();
                            let slot = bulk.swap_remove(k);
                            host.remove(slot).unwrap();
                        }
                    }
                }
            }
            if measuring && now.subsec_millis() == 0 && now > start {
                let began = Instant::now();
                let commit = host.commit(&crypto).unwrap();
                commit_times.push(began.elapsed());
                report.commits += 1;
                host_media.apply(commit.keys, at).unwrap();
                for f in full.iter_mut() {
                    if f.departed == Some(Duration::MAX) {
                        f.departed = Some(now);
                    }
                }
                let rekey = seq;
                payloads.insert(seq, Payload::Rekey(commit.rekey));
                seq += 1;
                for (i, f) in full.iter().enumerate() {
                    if f.member.is_some() {
                        let delay = REKEY_DELAY_MIN + Duration::from_millis(lcg(&mut rng) % 100);
                        queue.push(Reverse((now + delay, rekey, i)));
                    }
                }
                for w in commit.welcomes {
                    report.welcome_bytes_max = report.welcome_bytes_max.max(w.bytes.len());
                    if let Some(&i) = full_slot.get(&w.slot) {
                        if full[i].member.is_none() {
                            full[i].admitted = Some(now);
                            let delay =
                                REKEY_DELAY_MIN + Duration::from_millis(lcg(&mut rng) % 100);
                            payloads.insert(seq, Payload::Welcome(w.bytes));
                            queue.push(Reverse((now + delay, seq, i)));
                            seq += 1;
                        }
                    }
                }
            }
            // The speakers seal one frame each per tick (until the end of the measured phase).
            if now < end {
                let payload = packets[tick_index % packets.len()].clone();
                tick_index += 1;
                let mut sealed = Vec::new();
                let mut out = BytesMut::new();
                if host_media
                    .seal(StreamId::MICROPHONE, &payload, &mut out, at)
                    .is_ok()
                {
                    sealed.push((usize::MAX, out.to_vec()));
                }
                for &i in &speakers {
                    let mut out = BytesMut::new();
                    if let Some(m) = full[i].media.as_mut() {
                        if m.seal(StreamId::MICROPHONE, &payload, &mut out, at).is_ok() {
                            sealed.push((i, out.to_vec()));
                        }
                    }
                }
                for (from, bytes) in sealed {
                    payloads.insert(seq, Payload::Frame { bytes, sealed: now });
                    for (i, f) in full.iter_mut().enumerate() {
                        if i == from || f.member.is_none() && f.welcomed.is_none() {
                            continue;
                        }
                        // Each (speaker, listener) path is FIFO with jitter: frames of one
                        // speaker are not reordered (a reordered old-epoch frame arriving after
                        // the speaker's first new-epoch frame is refused as superseded, the
                        // rule that stops a removed sender's forgeries).
                        let delay = Duration::from_millis(20 + lcg(&mut rng) % 40);
                        let last = path.entry((from, i)).or_insert(Duration::ZERO);
                        *last = (*last).max(now + delay);
                        queue.push(Reverse((*last, seq, i)));
                    }
                    seq += 1;
                }
            }
            // Deliveries due by the next tick.
            while let Some(Reverse((when, id, i))) = queue.peek().copied() {
                if when > now + tick {
                    break;
                }
                queue.pop();
                let at = t0 + when;
                let f = &mut full[i];
                match payloads.get(&id) {
                    Some(Payload::Rekey(bytes)) => {
                        f.received_rekey_bytes += bytes.len() as u64;
                        let Some(member) = f.member.as_mut() else {
                            continue;
                        };
                        let began = Instant::now();
                        match member.process(bytes) {
                            Ok(keys) => {
                                f.media.as_mut().unwrap().apply(keys, at).unwrap();
                                f.cpu += began.elapsed();
                            }
                            Err(StageError::Removed) => assert!(f.departed.is_some()),
                            // A departed member stays at the epoch it could not leave.
                            Err(StageError::WrongEpoch { .. }) if f.departed.is_some() => {}
                            Err(e) => panic!("rekey refused: {e}"),
                        }
                    }
                    Some(Payload::Welcome(bytes)) => {
                        let (member, keys) =
                            StageMember::join(&f.identity, &host_key, bytes).unwrap();
                        f.member = Some(member);
                        f.media = Some(media(keys, at));
                        f.welcomed = Some(when);
                    }
                    Some(Payload::Frame { bytes, sealed }) => {
                        let Some(m) = f.media.as_mut() else { continue };
                        f.received_audio_bytes += bytes.len() as u64;
                        // Every frame sealed in the measured phase while it is present must open:
                        // for a listener there from the start, all of them; for a newcomer, those
                        // sealed once every speaker has switched to its first epoch (the switch
                        // delay after the rekey reached the slowest speaker).
                        let following = f
                            .admitted
                            .is_some_and(|c| *sealed >= c + REKEY_DELAY_MAX + switch);
                        let present = *sealed >= start
                            && *sealed < end
                            && f.departed.is_none()
                            && (f.counted || following);
                        let mut out = BytesMut::new();
                        // Opened, then decoded by this listener's decoder for that speaker.
                        let ok = match m.open(bytes, &mut out, at) {
                            Ok(received) => {
                                let decoder =
                                    f.decoders.entry(received.leaf).or_insert_with(|| {
                                        opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)
                                            .unwrap()
                                    });
                                let mut pcm = [0i16; 960];
                                let n = decoder.decode(&out, &mut pcm, false).unwrap();
                                assert_eq!(n, 960);
                                f.decoded += 1;
                                true
                            }
                            Err(_) => false,
                        };
                        if ok {
                            f.first_open.get_or_insert(when);
                            f.last_open = Some(f.last_open.map_or(*sealed, |l| l.max(*sealed)));
                        }
                        if present {
                            f.expected += 1;
                            f.lost += u64::from(!ok);
                        }
                        if let Some(d) = f.departed.filter(|d| *d != Duration::MAX) {
                            if ok && *sealed > d + switch + REKEY_DELAY_MAX {
                                report.departed_opens_after_window += 1;
                            }
                        }
                    }
                    None => {}
                }
            }
            now += tick;
        }
        let secs = cfg.seconds as f64;
        let listeners: Vec<&Full> = full.iter().filter(|f| f.counted).collect();
        let n = listeners.len() as f64;
        report.rekey_bytes_per_s = listeners
            .iter()
            .map(|f| f.received_rekey_bytes)
            .sum::<u64>() as f64
            / n
            / secs;
        report.audio_bytes_per_s = listeners
            .iter()
            .map(|f| f.received_audio_bytes)
            .sum::<u64>() as f64
            / n
            / secs;
        report.process_cpu_fraction = listeners
            .iter()
            .map(|f| f.cpu.as_secs_f64())
            .fold(0.0, f64::max)
            / secs;
        let present = || full.iter().filter(|f| f.departed.is_none());
        report.frames_expected = present().map(|f| f.expected).sum();
        report.frames_lost = present().map(|f| f.lost).sum();
        report.frames_decoded = full.iter().map(|f| f.decoded).sum();
        for f in full.iter().filter(|f| !f.counted) {
            if let (Some(w), Some(o)) = (f.welcomed, f.first_open) {
                report.newcomers_measured += 1;
                report.first_frame_ms_max =
                    report.first_frame_ms_max.max((o - w).as_secs_f64() * 1e3);
            }
        }
        for f in full.iter() {
            if let Some(d) = f.departed.filter(|d| *d != Duration::MAX) {
                report.departed_checked += 1;
                if let Some(l) = f.last_open {
                    report.departed_last_open_ms_max = report
                        .departed_last_open_ms_max
                        .max(l.saturating_sub(d).as_secs_f64() * 1e3);
                }
            }
        }
        let ms: Vec<f64> = commit_times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        report.host_commit_ms_max = ms.iter().copied().fold(0.0, f64::max);
        report.host_commit_ms_mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
        report
    }

    fn check(report: &Report) {
        println!("stage simulation: {report:#?}");
        assert!(report.frames_expected > 0);
        assert_eq!(report.frames_lost, 0, "frames lost by present listeners");
        assert!(report.frames_decoded >= report.frames_expected);
        assert!(report.departed_checked > 0);
        assert_eq!(report.departed_opens_after_window, 0);
        assert!(report.newcomers_measured > 0);
        // The byte goals are deterministic (sizes, not time).
        assert!(
            report.rekey_bytes_per_s <= report.audio_bytes_per_s,
            "handshake {:.0} B/s > audio {:.0} B/s",
            report.rekey_bytes_per_s,
            report.audio_bytes_per_s
        );
        assert!(report.welcome_bytes_max <= 256 * 1024);
        // Virtual time: a newcomer's first frame is at most the switch delay plus delivery
        // delays after its Welcome.
        assert!(
            report.first_frame_ms_max <= 1000.0,
            "{}",
            report.first_frame_ms_max
        );
    }

    #[test]
    fn stage_simulation_1000_listeners() {
        check(&simulate(&SimConfig {
            capacity: 2048,
            members: 1000,
            samples: 20,
            seconds: 12,
            joins_per_s: 10,
            departures_per_s: 2,
        }));
    }

    /// Full size: `cargo test --release --test stage -- --ignored --nocapture`.
    #[test]
    #[ignore = "full size: several minutes; run with --release --ignored"]
    fn stage_simulation_full_size() {
        for (members, capacity) in [(1000, 2048), (4000, 8192), (10_000, 16_384)] {
            check(&simulate(&SimConfig {
                capacity,
                members,
                samples: 20,
                seconds: 30,
                joins_per_s: 10,
                departures_per_s: 2,
            }));
        }
    }
}

#[test]
fn a_crashed_and_restored_listener_rejoins_receive_only() {
    // A listener whose device restores its storage from before the join (a backup, a
    // crash before the deletion reached disk) gets the same Welcome again from the relay:
    // it may listen again, but the copy never seals — a stage Welcome only ever makes
    // listeners, and a listener's keys are receive-only.
    use openmls_traits::OpenMlsProvider as _;
    let mut s = small(1);
    let newcomer = identity("restored");
    let kp = key_package(&newcomer);
    let backup = OpenMlsRustCrypto::default();
    *backup.storage().values.write().unwrap() =
        newcomer.provider().storage().values.read().unwrap().clone();
    s.host.add(&crypto(), &kp).unwrap();
    let commit = s.host.commit(&crypto()).unwrap();
    let welcome = &commit.welcomes[0].bytes;
    let (first, _) = StageMember::join(&newcomer, s.host.signature_key(), welcome).unwrap();
    // The original instance may join only once.
    assert_eq!(
        StageMember::join(&newcomer, s.host.signature_key(), welcome).unwrap_err(),
        StageError::UnknownKeyPackage
    );
    let restored_id = Identity::load(backup, newcomer.signature_key(), b"restored").unwrap();
    let (copy, keys) = StageMember::join(&restored_id, s.host.signature_key(), welcome).unwrap();
    assert_eq!((copy.slot(), copy.role()), (first.slot(), Role::Listener));
    let t = s.t0 + Duration::from_secs(5);
    let mut m = media(keys, s.t0);
    let mut out = BytesMut::new();
    assert!(m.seal(StreamId::MICROPHONE, b"x", &mut out, t).is_err());
    // It hears what the stage seals, as the listener it is.
    s.host_media.apply(commit.keys, s.t0).unwrap();
    let frame = seal(&mut s.host_media, b"to the restored copy", t);
    assert!(opens(&mut m, &frame, t).is_some());
}
