//! Issue 10, finding 3: nonce reuse after a storage rollback, re-processing a commit, or
//! re-joining from the same Welcome.
//!
//! An epoch's keys are a deterministic function of the MLS state: an instance restored
//! from an older snapshot that reaches the same epoch again (the relay hands it the same
//! commit, or the same Welcome) holds the very base key an earlier instance sealed with,
//! and a sealer made from it would start at counter 0 again. The adversary here is the
//! relay (it keeps and re-delivers every handshake message) together with a storage
//! rollback (a backup restored, a VM snapshot, a crash before a write hit the disk). Every
//! frame any instance seals is entered in a ledger keyed by (base key, KID, CTR): a second
//! entry is a reused nonce.
//!
//! Storage snapshots are copies of `openmls_memory_storage`'s map (its `values` field is
//! public), which is what a file-level backup of a persistent provider amounts to.

use sotto::room::MlsSuite;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use sotto::frame::Header;
use sotto::keys::KeyError;
use sotto::media::{EpochKeys, EpochStatus, MediaConfig, MediaSession};
use sotto::room::{Identity, Room, RoomConfig, RoomEvent};

type Provider = OpenMlsRustCrypto;
type Snapshot = HashMap<Vec<u8>, Vec<u8>>;

const FRAME: Duration = Duration::from_millis(20);
/// The default switch delay, in 20 ms frames.
const SWITCH_FRAMES: u64 = 50;

/// Everything the provider's storage holds right now.
fn snapshot(provider: &Provider) -> Snapshot {
    provider.storage().values.read().unwrap().clone()
}

/// A provider whose storage is `snapshot` (the rollback).
fn restored(snapshot: &Snapshot) -> Provider {
    let provider = Provider::default();
    *provider.storage().values.write().unwrap() = snapshot.clone();
    provider
}

/// Every (base key, KID, CTR) sealed by any instance, and who sealed it first.
#[derive(Default)]
struct Ledger {
    owner: HashMap<(Vec<u8>, u64, u64), String>,
    reused: Vec<String>,
}

impl Ledger {
    fn record(&mut self, who: &str, base_key: &[u8], frame: &[u8]) {
        let (h, _) = Header::parse(frame).unwrap();
        if let Some(first) = self
            .owner
            .insert((base_key.to_vec(), h.kid, h.ctr), who.to_string())
        {
            self.reused.push(format!(
                "{who} sealed (KID {}, CTR {}) under a key {first} had sealed it with",
                h.kid, h.ctr
            ));
        }
    }

    fn sealed(&self) -> usize {
        self.owner.len() + self.reused.len()
    }

    fn assert_no_reuse(&self) {
        assert!(
            self.reused.is_empty(),
            "nonce reuse: {} (key, KID, CTR) sealed twice; first ones: {:?}",
            self.reused.len(),
            &self.reused[..self.reused.len().min(3)]
        );
    }
}

/// What one instance's attempt to speak gave.
#[derive(Debug, Default)]
struct Talk {
    /// Frames sealed, by epoch.
    sealed: HashMap<u64, Vec<BytesMut>>,
    /// Attempts refused with `NoSendingKey`.
    refused: u64,
}

impl Talk {
    fn count(&self) -> usize {
        self.sealed.values().map(Vec::len).sum()
    }

    fn in_epoch(&self, epoch: u64) -> usize {
        self.sealed.get(&epoch).map_or(0, Vec::len)
    }
}

/// One instance of a member: its room, its media session, and the base key of every
/// epoch applied to the session (so the ledger knows which key sealed each frame).
struct Inst {
    name: String,
    room: Room<Provider>,
    media: MediaSession,
    bases: HashMap<u64, Vec<u8>>,
    status: HashMap<u64, EpochStatus>,
}

impl Inst {
    fn new(name: &str, room: Room<Provider>, keys: EpochKeys, now: Instant) -> Inst {
        let mut inst = Inst {
            name: name.to_string(),
            room,
            media: MediaSession::new(MediaConfig::default()),
            bases: HashMap::new(),
            status: HashMap::new(),
        };
        inst.apply(keys, now).unwrap();
        inst
    }

    fn apply(&mut self, keys: EpochKeys, now: Instant) -> Result<(), KeyError> {
        let (epoch, status) = (keys.epoch(), keys.status());
        let base = keys.expose_base_key().to_vec();
        self.media.apply(keys, now)?;
        self.bases.insert(epoch, base);
        self.status.insert(epoch, status);
        Ok(())
    }

    fn handle(&mut self, events: Vec<RoomEvent>, now: Instant) -> usize {
        let mut n = 0;
        for e in events {
            if let RoomEvent::Keys(keys) = e {
                self.apply(keys, now).unwrap();
            }
            n += 1;
        }
        n
    }

    /// Processes handshake bytes; returns the number of events.
    fn process(&mut self, bytes: &[u8], now: Instant) -> usize {
        let events = self.room.process(bytes).unwrap();
        self.handle(events, now)
    }

    fn confirm(&mut self, now: Instant) {
        let events = self.room.confirm_pending().unwrap();
        self.handle(events, now);
    }

    /// Tries to seal one frame every 20 ms, `n` times from `from`; every frame sealed goes
    /// into the ledger.
    fn talk(&mut self, n: u64, from: Instant, ledger: &mut Ledger) -> Talk {
        let mut talk = Talk::default();
        for i in 0..n {
            let now = from + FRAME * u32::try_from(i).unwrap();
            let mut out = BytesMut::new();
            match self.media.seal(
                sotto::keys::StreamId::MICROPHONE,
                b"20 ms of audio",
                &mut out,
                now,
            ) {
                Ok(_) => {
                    let epoch = self.media.sending_epoch().unwrap();
                    ledger.record(&self.name, &self.bases[&epoch], &out);
                    talk.sealed.entry(epoch).or_default().push(out);
                }
                Err(KeyError::NoSendingKey) => talk.refused += 1,
                Err(e) => panic!("{}: unexpected {e:?}", self.name),
            }
        }
        talk
    }
}

/// Alice creates a room (so she seals at once) and bob joins and speaks.
fn alice_and_bob(t: Instant) -> (Inst, Inst, Vec<u8>) {
    let alice_id = Identity::new(Provider::default(), b"alice").unwrap();
    let alice_key = alice_id.signature_key().to_vec();
    let (room, keys) = Room::create(alice_id, RoomConfig::default()).unwrap();
    let mut alice = Inst::new("alice", room, keys, t);
    let bob_id = Identity::new(Provider::default(), b"bob").unwrap();
    let kp = bob_id.key_package(MlsSuite::Classic).unwrap();
    let invite = alice.room.invite(&[&kp.bytes]).unwrap();
    alice.apply(invite.keys, t).unwrap();
    alice.confirm(t);
    let (room, keys) = Room::join(bob_id, RoomConfig::default(), &invite.welcome.unwrap()).unwrap();
    let mut bob = Inst::new("bob", room, keys, t);
    let update = bob.room.self_update().unwrap();
    bob.apply(update.keys, t).unwrap();
    alice.process(&update.message, t);
    bob.confirm(t);
    (alice, bob, alice_key)
}

/// Bob opens every frame; returns how many opened.
fn bob_opens(bob: &mut Inst, frames: &[BytesMut], now: Instant) -> usize {
    frames
        .iter()
        .filter(|f| bob.media.open(f, &mut BytesMut::new(), now).is_ok())
        .count()
}

/// (a) Snapshot, seal, roll back, `Room::load`, the relay hands the same foreign commit
/// again. Returns the number of frames the restored instance sealed.
fn reprocessed_commit(ledger: &mut Ledger) -> usize {
    let t0 = Instant::now();
    let (mut alice, mut bob, alice_key) = alice_and_bob(t0);
    let group_id = alice.room.group_id().to_vec();
    let e = alice.room.epoch();
    let t1 = t0 + Duration::from_secs(1);
    let before = alice.talk(50, t1, ledger);
    assert_eq!(before.in_epoch(e), 50);
    let backup = snapshot(alice.room.provider());

    // Bob's commit: alice (created the room, so fresh) seals in e+1 after the switch delay.
    let t2 = t1 + Duration::from_secs(1);
    let commit = bob.room.self_update().unwrap();
    bob.apply(commit.keys, t2).unwrap();
    alice.process(&commit.message, t2);
    bob.confirm(t2);
    assert_eq!(alice.status[&(e + 1)], EpochStatus::Current);
    let first = alice.talk(2 * SWITCH_FRAMES, t2, ledger);
    assert_eq!(
        (first.in_epoch(e), first.in_epoch(e + 1)),
        (SWITCH_FRAMES as usize, SWITCH_FRAMES as usize)
    );
    let sealed_e1 = alice.bases[&(e + 1)].clone();
    let keys_used: Vec<Vec<u8>> = vec![alice.bases[&e].clone(), sealed_e1.clone()];

    // Crash; the storage rolls back to the snapshot; the room is loaded.
    drop(alice);
    let t3 = t2 + Duration::from_secs(3);
    let (room, keys) = Room::load(
        restored(&backup),
        &alice_key,
        &group_id,
        RoomConfig::default(),
    )
    .unwrap();
    assert_eq!(room.epoch(), e);
    let mut again = Inst::new("alice after the rollback", room, keys, t3);
    let in_e = again.talk(100, t3, ledger);

    // The relay hands it bob's commit again: the same epoch, the same base key...
    let t4 = t3 + Duration::from_secs(2);
    again.process(&commit.message, t4);
    assert_eq!(again.room.epoch(), e + 1);
    assert_eq!(
        again.bases[&(e + 1)],
        sealed_e1,
        "re-processing gives the very key the first instance sealed with"
    );
    // ...but not the permission to seal with it.
    let in_e1 = again.talk(150, t4, ledger);
    ledger.assert_no_reuse();
    assert_eq!(again.status[&e], EpochStatus::Restored);
    assert_eq!(again.status[&(e + 1)], EpochStatus::Restored);
    assert_eq!((in_e.count(), in_e.refused), (0, 100));
    assert_eq!((in_e1.count(), in_e1.refused), (0, 150));

    // Its own commit gives it a fresh epoch to seal in; nothing in it was used before.
    let t5 = t4 + Duration::from_secs(3);
    let update = again.room.self_update().unwrap();
    again.apply(update.keys, t5).unwrap();
    bob.process(&update.message, t5);
    again.confirm(t5);
    assert_eq!(again.status[&(e + 2)], EpochStatus::Current);
    let after = again.talk(2 * SWITCH_FRAMES, t5, ledger);
    assert_eq!(
        after.refused, SWITCH_FRAMES,
        "the switch delay, then sealing"
    );
    assert_eq!(after.in_epoch(e + 2), SWITCH_FRAMES as usize);
    assert!(!keys_used.contains(&again.bases[&(e + 2)]));
    let t6 = t5 + Duration::from_secs(2);
    assert_eq!(
        bob_opens(&mut bob, &after.sealed[&(e + 2)], t6),
        SWITCH_FRAMES as usize
    );
    println!(
        "(a) first instance sealed {} frames; after the rollback: {} refused in epochs {e} \
         and {}, then {} sealed in epoch {} under a fresh key",
        before.count() + first.count(),
        in_e.refused + in_e1.refused,
        e + 1,
        after.count(),
        e + 2
    );
    after.count()
}

/// (a') The snapshot holds alice's own pending commit: after the rollback, the relay echoes
/// that commit, and the app (told by the relay it was ordered) confirms it.
fn pending_own_commit(ledger: &mut Ledger) -> usize {
    let t0 = Instant::now();
    let (mut alice, mut bob, alice_key) = alice_and_bob(t0);
    let group_id = alice.room.group_id().to_vec();
    let e = alice.room.epoch();
    let t1 = t0 + Duration::from_secs(1);
    alice.talk(50, t1, ledger);
    let t2 = t1 + Duration::from_secs(1);
    let commit = alice.room.self_update().unwrap();
    alice.apply(commit.keys, t2).unwrap();
    // The snapshot holds the pending commit.
    let backup = snapshot(alice.room.provider());
    bob.process(&commit.message, t2);
    alice.confirm(t2);
    let first = alice.talk(2 * SWITCH_FRAMES, t2, ledger);
    assert_eq!(first.in_epoch(e + 1), SWITCH_FRAMES as usize);
    let sealed_e1 = alice.bases[&(e + 1)].clone();

    drop(alice);
    let t3 = t2 + Duration::from_secs(3);
    let (room, keys) = Room::load(
        restored(&backup),
        &alice_key,
        &group_id,
        RoomConfig::default(),
    )
    .unwrap();
    assert!(room.has_pending_commit());
    let mut again = Inst::new("alice after the rollback", room, keys, t3);
    // The echo of its own commit is recognised by its stored bytes (finding 10) and
    // merged: the epoch the first instance sealed in, with the same key.
    assert!(again.process(&commit.message, t3) > 0);
    assert_eq!(again.room.epoch(), e + 1);
    assert_eq!(again.bases[&(e + 1)], sealed_e1);
    let replayed = again.talk(150, t3, ledger);
    ledger.assert_no_reuse();
    assert_eq!(again.status[&(e + 1)], EpochStatus::Restored);
    let t4 = t3 + Duration::from_secs(3);
    assert_eq!((replayed.count(), replayed.refused), (0, 150));

    let update = again.room.self_update().unwrap();
    again.apply(update.keys, t4).unwrap();
    bob.process(&update.message, t4);
    again.confirm(t4);
    let after = again.talk(2 * SWITCH_FRAMES, t4, ledger);
    assert_eq!(after.in_epoch(e + 2), SWITCH_FRAMES as usize);
    assert_ne!(again.bases[&(e + 2)], sealed_e1);
    println!(
        "(a') rollback over a pending own commit: {} refused, then {} sealed in epoch {}",
        replayed.refused,
        after.count(),
        e + 2
    );
    after.count()
}

/// (b) The joiner's storage is snapshotted before the join (its KeyPackage is in it); it
/// joins, speaks after its own commit, rolls back and joins again from the same Welcome.
fn refetched_welcome(ledger: &mut Ledger) -> usize {
    let t0 = Instant::now();
    let alice_id = Identity::new(Provider::default(), b"alice").unwrap();
    let (room, keys) = Room::create(alice_id, RoomConfig::default()).unwrap();
    let mut alice = Inst::new("alice", room, keys, t0);
    let dave_id = Identity::new(Provider::default(), b"dave").unwrap();
    let kp = dave_id.key_package(MlsSuite::Classic).unwrap();
    let backup = snapshot(dave_id.provider());
    let invite = alice.room.invite(&[&kp.bytes]).unwrap();
    let welcome = invite.welcome.clone().unwrap();
    alice.apply(invite.keys, t0).unwrap();
    alice.confirm(t0);
    let e = alice.room.epoch();

    let (room, keys) = Room::join(dave_id, RoomConfig::default(), &welcome).unwrap();
    let mut dave = Inst::new("dave", room, keys, t0);
    let joined_status = dave.status[&e];
    let joined = dave.talk(100, t0, ledger);
    let joined_key = dave.bases[&e].clone();
    let update = dave.room.self_update().unwrap();
    let t1 = t0 + Duration::from_secs(2);
    dave.apply(update.keys, t1).unwrap();
    alice.process(&update.message, t1);
    dave.confirm(t1);
    let spoke = dave.talk(2 * SWITCH_FRAMES, t1, ledger);
    assert_eq!(spoke.in_epoch(e + 1), SWITCH_FRAMES as usize);
    let spoke_key = dave.bases[&(e + 1)].clone();

    // Rollback to before the join: the KeyPackage is back, the relay still has the Welcome.
    // (The restored identity gets a new signature key here; `Identity::load` would give
    // the stored one back. Joining does not use it.)
    drop(dave);
    let t2 = t1 + Duration::from_secs(3);
    let again_id = Identity::new(restored(&backup), b"dave").unwrap();
    let (room, keys) = Room::join(again_id, RoomConfig::default(), &welcome).unwrap();
    let mut again = Inst::new("dave after the rollback", room, keys, t2);
    assert_eq!(
        again.bases[&e], joined_key,
        "the same Welcome, the same key"
    );
    // The relay hands it the first instance's own commit: openmls cannot open a
    // PrivateMessage from its own leaf, so it is refused and the instance does not reach
    // that epoch at all.
    assert_eq!(
        again.room.process(&update.message).unwrap_err(),
        sotto::room::RoomError::Rejected(sotto::room::Rejection::FromOwnLeaf)
    );
    assert_eq!(again.room.epoch(), e);
    let rejoined = again.talk(150, t2, ledger);
    ledger.assert_no_reuse();
    assert_eq!(joined_status, EpochStatus::ReceiveOnly);
    assert_eq!(again.status[&e], EpochStatus::ReceiveOnly);
    assert_eq!((joined.count(), joined.refused), (0, 100));
    assert_eq!((rejoined.count(), rejoined.refused), (0, 150));

    // Its own commit (confirmed by a relay that plays along) seals under a fresh key.
    let t3 = t2 + Duration::from_secs(4);
    let own = again.room.self_update().unwrap();
    again.apply(own.keys, t3).unwrap();
    again.confirm(t3);
    assert_eq!(again.status[&(e + 1)], EpochStatus::Current);
    assert_ne!(again.bases[&(e + 1)], spoke_key);
    let after = again.talk(2 * SWITCH_FRAMES, t3, ledger);
    assert_eq!(after.in_epoch(e + 1), SWITCH_FRAMES as usize);
    println!(
        "(b) re-joined from the same Welcome: {} refused; after its own commit {} sealed \
         under a key other than the first instance's",
        rejoined.refused,
        after.count()
    );
    after.count()
}

/// Finding 3 (issue 10): a room restored from an older storage snapshot that re-processes a
/// commit the relay kept gets the very base key its earlier instance sealed with, but
/// `Restored` status: it seals nothing in that epoch, and from its own next commit on it
/// seals under fresh keys only.
#[test]
fn rollback_then_reprocessed_commit_seals_nothing_under_used_keys() {
    let mut ledger = Ledger::default();
    assert_eq!(reprocessed_commit(&mut ledger), SWITCH_FRAMES as usize);
    ledger.assert_no_reuse();
}

/// Finding 3 (issue 10): the same with the snapshot taken while the instance's own commit
/// was pending: confirming the loaded pending commit does not make its epoch sealable.
#[test]
fn rollback_over_a_pending_own_commit_seals_nothing_under_used_keys() {
    let mut ledger = Ledger::default();
    assert_eq!(pending_own_commit(&mut ledger), SWITCH_FRAMES as usize);
    ledger.assert_no_reuse();
}

/// Finding 3 (issue 10): a joiner rolled back to before its join (KeyPackage present) and
/// joining again from the same Welcome gets the same keys, `ReceiveOnly`: sealing gives
/// `NoSendingKey`.
#[test]
fn refetched_welcome_after_rollback_is_receive_only() {
    let mut ledger = Ledger::default();
    assert_eq!(refetched_welcome(&mut ledger), SWITCH_FRAMES as usize);
    ledger.assert_no_reuse();
}

/// Finding 3 (issue 10): every (base key, KID, CTR) sealed by every instance of all the
/// scenarios above, in one set: no duplicate.
#[test]
fn no_key_and_counter_sealed_twice_across_all_instances() {
    let mut ledger = Ledger::default();
    let restored = reprocessed_commit(&mut ledger)
        + pending_own_commit(&mut ledger)
        + refetched_welcome(&mut ledger);
    ledger.assert_no_reuse();
    println!(
        "(c) {} frames sealed across all instances ({restored} by restored ones), \
         {} distinct (key, KID, CTR)",
        ledger.sealed(),
        ledger.owner.len()
    );
    assert_eq!(ledger.owner.len(), ledger.sealed());
}
