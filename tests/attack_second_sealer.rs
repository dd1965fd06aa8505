//! Issue 10, finding 4: a second sealer for the same key through the public API.
//!
//! The adversary loads one stored room twice (two devices restored from one backup, or an
//! app that starts a second process on the same database) and lets both instances follow
//! the room: every frame either instance seals is entered in a ledger keyed by
//! (base key, KID, CTR); a second entry is a reused nonce.
//!
//! Not reachable at all, and so checked by the compiler rather than by a test:
//! - `EpochKeys` has no public field (`keys.status = EpochStatus::Current` does not
//!   compile), is not `Clone` (asserted below), and its only public constructor is
//!   `EpochKeys::assume_unique_for_key`, whose name states the caller's duty; the only
//!   other way to get one is from a `Room`. `with_departed` consumes the value it changes.
//! - `FrameSealer` is not `Clone`, and `KeyRing::sealer` is crate-private.

use sotto::room::MlsSuite;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use sotto::frame::{FrameError, FrameSealer, Header};
use sotto::keys::KeyError;
use sotto::media::{EpochKeys, EpochStatus, MediaConfig, MediaSession};
use sotto::room::{Identity, Rejection, Room, RoomConfig, RoomError, RoomEvent};

type Provider = OpenMlsRustCrypto;
type Snapshot = HashMap<Vec<u8>, Vec<u8>>;

const FRAME: Duration = Duration::from_millis(20);
/// The default switch delay, in 20 ms frames.
const SWITCH_FRAMES: u64 = 50;

/// `Probe::<T>::IS_CLONE` is true exactly when `T: Clone`.
struct Probe<T>(PhantomData<T>);
trait NotClone {
    const IS_CLONE: bool = false;
}
impl<T> NotClone for Probe<T> {}
impl<T: Clone> Probe<T> {
    #[allow(dead_code)]
    const IS_CLONE: bool = true;
}

fn snapshot(provider: &Provider) -> Snapshot {
    provider.storage().values.read().unwrap().clone()
}

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
}

/// One instance of a member: room, media session, and the base key of each epoch applied.
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
        inst.apply(keys, now);
        inst
    }

    fn apply(&mut self, keys: EpochKeys, now: Instant) {
        let (epoch, status) = (keys.epoch(), keys.status());
        let base = keys.expose_base_key().to_vec();
        self.media.apply(keys, now).unwrap();
        self.bases.insert(epoch, base);
        self.status.insert(epoch, status);
    }

    fn handle(&mut self, events: Vec<RoomEvent>, now: Instant) -> usize {
        let n = events.len();
        for e in events {
            if let RoomEvent::Keys(keys) = e {
                self.apply(keys, now);
            }
        }
        n
    }

    fn confirm(&mut self, now: Instant) {
        let events = self.room.confirm_pending().unwrap();
        self.handle(events, now);
    }

    fn process(&mut self, bytes: &[u8], now: Instant) -> usize {
        let events = self.room.process(bytes).unwrap();
        self.handle(events, now)
    }

    /// Tries to seal one frame every 20 ms, `n` times from `from`; returns the frames
    /// sealed (each entered in the ledger) and the number of `NoSendingKey` refusals.
    fn talk(&mut self, n: u32, from: Instant, ledger: &mut Ledger) -> (Vec<BytesMut>, u32) {
        let mut sealed = Vec::new();
        let mut refused = 0;
        for i in 0..n {
            let mut out = BytesMut::new();
            match self.media.seal(
                sotto::keys::StreamId::MICROPHONE,
                b"20 ms of audio",
                &mut out,
                from + FRAME * i,
            ) {
                Ok(_) => {
                    let epoch = self.media.sending_epoch().unwrap();
                    ledger.record(&self.name, &self.bases[&epoch], &out);
                    sealed.push(out);
                }
                Err(KeyError::NoSendingKey) => refused += 1,
                Err(e) => panic!("{}: unexpected {e:?}", self.name),
            }
        }
        (sealed, refused)
    }
}

/// Finding 4 (issue 10): two `Room::load`s of one stored room. Neither seals in the loaded
/// epoch, nor in an epoch reached through another member's commit (both would hold the
/// same key from counter 0); each seals only from its own commit on. When both self-update
/// and the relay orders one, the other cannot even open the winner's commit (openmls does
/// not decrypt a PrivateMessage from its own leaf: the room refuses it as
/// `Rejection::FromOwnLeaf` and changes nothing), so it never reaches the winner's epoch; a relay that then confirms
/// the loser's commit to it alone gets it sealing under a different key. No
/// (key, KID, CTR) is ever sealed by two instances.
#[test]
fn two_loads_of_one_stored_room_never_seal_the_same_key_and_counter() {
    const { assert!(Probe::<String>::IS_CLONE, "the probe detects Clone") };
    const { assert!(!Probe::<EpochKeys>::IS_CLONE) };
    const { assert!(!Probe::<FrameSealer>::IS_CLONE) };
    const { assert!(!Probe::<MediaSession>::IS_CLONE) };

    let mut ledger = Ledger::default();
    let t0 = Instant::now();
    let alice_id = Identity::new(Provider::default(), b"alice").unwrap();
    let alice_key = alice_id.signature_key().to_vec();
    let (room, keys) = Room::create(alice_id, RoomConfig::default()).unwrap();
    let mut alice = Inst::new("alice", room, keys, t0);
    let bob_id = Identity::new(Provider::default(), b"bob").unwrap();
    let kp = bob_id.key_package(MlsSuite::Classic).unwrap();
    let invite = alice.room.invite(&[&kp.bytes]).unwrap();
    alice.apply(invite.keys, t0);
    alice.confirm(t0);
    let (room, keys) = Room::join(bob_id, RoomConfig::default(), &invite.welcome.unwrap()).unwrap();
    let mut bob = Inst::new("bob", room, keys, t0);
    let update = bob.room.self_update().unwrap();
    bob.apply(update.keys, t0);
    alice.process(&update.message, t0);
    bob.confirm(t0);
    let e = alice.room.epoch();
    let group_id = alice.room.group_id().to_vec();

    // The original instance speaks in epoch e, then its storage is loaded twice.
    let t1 = t0 + Duration::from_secs(1);
    let (original, _) = alice.talk(100, t1, &mut ledger);
    assert_eq!(original.len(), 100);
    let stored = snapshot(alice.room.provider());
    drop(alice);
    let t2 = t1 + Duration::from_secs(2);
    let load = |name: &str| {
        let (room, keys) = Room::load(
            restored(&stored),
            &alice_key,
            &group_id,
            RoomConfig::default(),
        )
        .unwrap();
        Inst::new(name, room, keys, t2)
    };
    let mut one = load("first load");
    let mut two = load("second load");
    let (s1, r1) = one.talk(100, t2, &mut ledger);
    let (s2, r2) = two.talk(100, t2, &mut ledger);
    let mut refusals = r1 + r2;
    assert!(
        ledger.reused.is_empty(),
        "the loads sealed in the loaded epoch: {:?}",
        &ledger.reused[..ledger.reused.len().min(3)]
    );
    assert_eq!(one.status[&e], EpochStatus::Restored);
    assert_eq!(two.status[&e], EpochStatus::Restored);
    assert!(!one.room.can_seal() && !two.room.can_seal());
    assert_eq!((s1.len(), r1, s2.len(), r2), (0, 100, 0, 100));

    // Bob commits: both loads reach epoch e+1 with the same key; neither may seal in it.
    let t3 = t2 + Duration::from_secs(2);
    let commit = bob.room.self_update().unwrap();
    bob.apply(commit.keys, t3);
    one.process(&commit.message, t3);
    two.process(&commit.message, t3);
    bob.confirm(t3);
    assert_eq!(one.bases[&(e + 1)], two.bases[&(e + 1)]);
    let (s1, r1) = one.talk(150, t3, &mut ledger);
    let (s2, r2) = two.talk(150, t3, &mut ledger);
    refusals += r1 + r2;
    assert!(
        ledger.reused.is_empty(),
        "both loads sealed in bob's epoch: {:?}",
        &ledger.reused[..ledger.reused.len().min(3)]
    );
    assert_eq!(one.status[&(e + 1)], EpochStatus::Restored);
    assert_eq!(two.status[&(e + 1)], EpochStatus::Restored);
    assert_eq!((s1.len(), r1, s2.len(), r2), (0, 150, 0, 150));

    // Both self-update; the relay orders the first load's commit.
    let t4 = t3 + Duration::from_secs(3);
    let c1 = one.room.self_update().unwrap();
    let c2 = two.room.self_update().unwrap();
    one.apply(c1.keys, t4);
    two.apply(c2.keys, t4);
    assert_ne!(
        one.bases[&(e + 2)],
        two.bases[&(e + 2)],
        "fresh path secrets"
    );
    bob.process(&c1.message, t4);
    one.process(&c1.message, t4); // its own commit back: confirmed
    assert_eq!(one.status[&(e + 2)], EpochStatus::Current);
    assert!(one.room.can_seal());
    // The other load gets a commit from its own leaf that it did not make: refused as
    // such (it cannot be checked: any member could forge its sender data), nothing else
    // happens (same epoch, its own commit still pending).
    assert_eq!(
        two.room.process(&c1.message).unwrap_err(),
        RoomError::Rejected(Rejection::FromOwnLeaf)
    );
    assert_eq!(two.room.epoch(), e + 1);
    assert!(two.room.has_pending_commit());
    let (winner, r1) = one.talk(2 * SWITCH_FRAMES as u32, t4, &mut ledger);
    let (s2, r2) = two.talk(2 * SWITCH_FRAMES as u32, t4, &mut ledger);
    refusals += r2;
    assert_eq!(
        (winner.len(), r1),
        (50, 50),
        "the switch delay, then sealing"
    );
    assert_eq!((s2.len(), r2), (0, 100));
    let t5 = t4 + Duration::from_secs(2);
    let bob_opened = winner
        .iter()
        .filter(|f| bob.media.open(f, &mut BytesMut::new(), t5).is_ok())
        .count();
    assert_eq!(bob_opened, 50);
    // Nothing the room can do afterwards brings the loser into the winner's epoch.
    let next = bob.room.self_update().unwrap();
    assert_eq!(
        two.room.process(&next.message).unwrap_err(),
        RoomError::Rejected(Rejection::WrongEpoch)
    );
    bob.room.discard_pending().unwrap();

    // A relay that confirms the losing commit to its maker alone: it seals, under the key
    // of its own fork of epoch e+2 (same KID as the winner's, another key).
    two.process(&c2.message, t5);
    assert_eq!(two.status[&(e + 2)], EpochStatus::Current);
    let (forked, r2) = two.talk(2 * SWITCH_FRAMES as u32, t5, &mut ledger);
    assert_eq!((forked.len(), r2), (50, 50));
    assert_eq!(
        Header::parse(&forked[0]).unwrap().0.kid,
        Header::parse(&winner[0]).unwrap().0.kid
    );
    let t6 = t5 + Duration::from_secs(2);
    let refused: Vec<KeyError> = forked
        .iter()
        .filter_map(|f| bob.media.open(f, &mut BytesMut::new(), t6).err())
        .collect();
    assert_eq!(refused.len(), 50, "the fork's frames open nowhere");
    // (Its counters are ones bob already opened under the winner's key of this KID.)
    assert!(refused.iter().all(|e| matches!(
        e,
        KeyError::Frame(FrameError::Replayed | FrameError::AuthenticationFailed)
    )));

    assert!(
        ledger.reused.is_empty(),
        "nonce reuse: {} (key, KID, CTR) sealed twice; first ones: {:?}",
        ledger.reused.len(),
        &ledger.reused[..ledger.reused.len().min(3)]
    );
    let distinct_keys: std::collections::HashSet<&Vec<u8>> =
        ledger.owner.keys().map(|(k, _, _)| k).collect();
    println!(
        "{} frames sealed by 3 instances under {} keys, no (key, KID, CTR) twice; the two \
         loads were refused {refusals} times before their own commits (the switch delays aside)",
        ledger.owner.len(),
        distinct_keys.len(),
    );
    assert_eq!(ledger.owner.len(), 100 + 50 + 50);
    assert_eq!(distinct_keys.len(), 3);
}
