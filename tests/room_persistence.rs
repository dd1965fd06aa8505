//! A room persisted with `openmls_sqlite_storage`: create, drop every in-memory object,
//! reload from the SQLite file, keep opening, resume sealing after a self-update, and
//! process the next commit.

mod common;

use sotto::room::MlsSuite;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{identity, Member};
use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::{Codec, Connection, SqliteStorageProvider};
use sotto::keys::KeyError;
use sotto::media::{EpochStatus, MediaConfig, MediaSession};
use sotto::room::{Identity, Room, RoomConfig};

#[derive(Default)]
struct JsonCodec;

impl Codec for JsonCodec {
    type Error = serde_json::Error;
    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }
    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}

struct SqliteProvider {
    crypto: RustCrypto,
    storage: SqliteStorageProvider<JsonCodec, Connection>,
}

impl SqliteProvider {
    fn open(path: &std::path::Path) -> SqliteProvider {
        let mut storage = SqliteStorageProvider::new(Connection::open(path).unwrap());
        storage.run_migrations().unwrap();
        SqliteProvider {
            crypto: RustCrypto::default(),
            storage,
        }
    }
}

impl openmls_traits::OpenMlsProvider for SqliteProvider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = SqliteStorageProvider<JsonCodec, Connection>;
    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }
    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }
    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}

fn open(media: &mut MediaSession, frame: &[u8], now: Instant) -> Result<Vec<u8>, KeyError> {
    let mut out = BytesMut::new();
    media.open(frame, &mut out, now)?;
    Ok(out.to_vec())
}

#[test]
fn reload_from_sqlite_and_continue() {
    let dir = std::env::temp_dir().join(format!("sotto-persist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("alice.sqlite");
    let _ = std::fs::remove_file(&db);
    let t0 = Instant::now();
    let config = RoomConfig::default();

    // Alice (SQLite) creates the room and invites bob (in memory).
    let alice_id = Identity::new(SqliteProvider::open(&db), b"alice").unwrap();
    let alice_key = alice_id.signature_key().to_vec();
    let (mut alice, keys) = Room::create(alice_id, config.clone()).unwrap();
    let mut alice_media = MediaSession::new(MediaConfig::default());
    alice_media.apply(keys, t0).unwrap();
    let bob_id = identity("bob");
    let kp = bob_id.key_package(MlsSuite::Classic).unwrap();
    let commit = alice.invite(&[&kp.bytes]).unwrap();
    alice_media.apply(commit.keys, t0).unwrap();
    for e in alice.confirm_pending().unwrap() {
        if let sotto::room::RoomEvent::Keys(k) = e {
            alice_media.apply(k, t0).unwrap();
        }
    }
    let mut bob = Member::join(
        bob_id,
        config.clone(),
        MediaConfig::default(),
        &commit.welcome.unwrap(),
        t0,
    );
    // Bob speaks from the epoch of his own first commit on.
    let commit = bob.room.self_update().unwrap();
    bob.apply_staged(commit.keys, t0);
    for e in alice.process(&commit.message).unwrap() {
        if let sotto::room::RoomEvent::Keys(k) = e {
            alice_media.apply(k, t0).unwrap();
        }
    }
    bob.confirm(t0);
    let t1 = t0 + Duration::from_secs(1);
    let mut out = BytesMut::new();
    alice_media
        .seal(
            sotto::keys::StreamId::MICROPHONE,
            b"before the restart",
            &mut out,
            t1,
        )
        .unwrap();
    assert_eq!(bob.open(&out, t1).unwrap().1, b"before the restart");
    let group_id = alice.group_id().to_vec();
    let epoch = alice.epoch();
    let token = alice.channel_token().unwrap();
    let code = alice.safety_code();

    // The restart: every in-memory object of alice's goes.
    drop(alice);
    drop(alice_media);

    let (mut alice, keys) = Room::load(
        SqliteProvider::open(&db),
        &alice_key,
        &group_id,
        config.clone(),
    )
    .unwrap();
    assert_eq!(keys.status(), EpochStatus::Restored);
    assert_eq!(
        (
            alice.epoch(),
            alice.channel_token().unwrap(),
            alice.safety_code()
        ),
        (epoch, token, code)
    );
    let mut alice_media = MediaSession::new(MediaConfig::default());
    alice_media.apply(keys, t1).unwrap();

    // Finding 7 (issue 10): the restored epoch's frames are refused (what the old process
    // opened could be replayed), and nothing is sealed in it (finding 3).
    let b = bob.seal(b"bob after alice's restart", t1);
    assert_eq!(
        open(&mut alice_media, &b, t1),
        Err(KeyError::ReplayStateUnknown)
    );
    assert_eq!(
        alice_media.seal(
            sotto::keys::StreamId::MICROPHONE,
            b"x",
            &mut BytesMut::new(),
            t1
        ),
        Err(KeyError::NoSendingKey)
    );

    // Alice self-updates; bob processes; alice confirms and seals in the new epoch.
    let commit = alice.self_update().unwrap();
    alice_media.apply(commit.keys, t1).unwrap();
    bob.process(&commit.message, t1);
    for e in alice.confirm_pending().unwrap() {
        if let sotto::room::RoomEvent::Keys(k) = e {
            alice_media.apply(k, t1).unwrap();
        }
    }
    // The new epoch's sealing starts after the switch delay.
    let t15 = t1 + Duration::from_secs(1);
    let mut out = BytesMut::new();
    alice_media
        .seal(
            sotto::keys::StreamId::MICROPHONE,
            b"alice resumed",
            &mut out,
            t15,
        )
        .unwrap();
    assert_eq!(alice_media.sending_epoch(), Some(epoch + 1));
    assert_eq!(bob.open(&out, t15).unwrap().1, b"alice resumed");

    // And the next commit (bob's) is processed by the reloaded room.
    let commit = bob.room.self_update().unwrap();
    bob.apply_staged(commit.keys, t1);
    bob.confirm(t1);
    for e in alice.process(&commit.message).unwrap() {
        if let sotto::room::RoomEvent::Keys(k) = e {
            alice_media.apply(k, t1).unwrap();
        }
    }
    assert_eq!(alice.epoch(), epoch + 2);
    assert_eq!(alice.safety_code(), bob.room.safety_code());
    let t2 = t1 + Duration::from_secs(1);
    let b = bob.seal(b"bob in epoch 3", t2);
    assert_eq!(open(&mut alice_media, &b, t2).unwrap(), b"bob in epoch 3");

    // Once more from disk: the latest state is there.
    drop(alice);
    let (alice, _) = Room::load(SqliteProvider::open(&db), &alice_key, &group_id, config).unwrap();
    assert_eq!(alice.epoch(), epoch + 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Finding 10 (issue 10), part a: a member that crashed between making a commit and seeing
/// it come back reloads with the commit pending; the relay's echo of that very commit then
/// merges it (and a tampered copy does not).
#[test]
fn reloaded_pending_commit_is_merged_by_its_echo() {
    let dir = std::env::temp_dir().join(format!("sotto-echo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("alice.sqlite");
    let _ = std::fs::remove_file(&db);
    let t0 = Instant::now();
    let config = RoomConfig::default();

    let alice_id = Identity::new(SqliteProvider::open(&db), b"alice").unwrap();
    let alice_key = alice_id.signature_key().to_vec();
    let (mut alice, _) = Room::create(alice_id, config.clone()).unwrap();
    let bob_id = identity("bob");
    let kp = bob_id.key_package(MlsSuite::Classic).unwrap();
    let commit = alice.invite(&[&kp.bytes]).unwrap();
    alice.confirm_pending().unwrap();
    let mut bob = Member::join(
        bob_id,
        config.clone(),
        MediaConfig::default(),
        &commit.welcome.unwrap(),
        t0,
    );
    let group_id = alice.group_id().to_vec();
    let epoch = alice.epoch();

    // Alice commits, sends the commit to the relay, and crashes before its echo.
    let commit = alice.self_update().unwrap();
    drop(alice);
    bob.process(&commit.message, t0);

    let (mut alice, _) = Room::load(
        SqliteProvider::open(&db),
        &alice_key,
        &group_id,
        config.clone(),
    )
    .unwrap();
    assert!(alice.has_pending_commit());
    assert_eq!(alice.pending_commit_message(), Some(&commit.message[..]));
    let mut tampered = commit.message.clone();
    *tampered.last_mut().unwrap() ^= 1;
    // Its sender data still names alice's leaf (openmls reports an own message it cannot
    // decrypt), but the bytes are not the commit's: refused, nothing changes.
    assert_eq!(
        alice.process(&tampered).unwrap_err(),
        sotto::room::RoomError::Rejected(sotto::room::Rejection::FromOwnLeaf)
    );
    assert_eq!(alice.epoch(), epoch);
    assert!(alice.has_pending_commit());
    let events = alice.process(&commit.message).unwrap();
    assert!(
        events.iter().any(
            |e| matches!(e, sotto::room::RoomEvent::EpochChanged { epoch: e } if *e == epoch + 1)
        ),
        "the echo of the reloaded pending commit was not merged: {events:?}"
    );
    assert_eq!(alice.epoch(), epoch + 1);
    assert!(!alice.has_pending_commit());
    assert_eq!(alice.safety_code(), bob.room.safety_code());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A joiner whose process restarts while its KeyPackage waits for the Welcome: the
/// identity comes back from storage by its signature key, joins with the KeyPackage made
/// before the restart, commits (so it can seal) and is heard.
#[test]
fn identity_reloaded_before_its_welcome_joins_and_speaks() {
    let dir = std::env::temp_dir().join(format!("sotto-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("bob.sqlite");
    let _ = std::fs::remove_file(&db);
    let t0 = Instant::now();
    let config = RoomConfig::default();

    let bob_id = Identity::new(SqliteProvider::open(&db), b"bob").unwrap();
    let bob_key = bob_id.signature_key().to_vec();
    let kp = bob_id.key_package(MlsSuite::Classic).unwrap();
    drop(bob_id);
    assert!(matches!(
        Identity::load(SqliteProvider::open(&db), b"not a stored key", b"bob"),
        Err(sotto::room::RoomError::NotFound)
    ));

    let mut alice = Member::create("alice", config.clone(), MediaConfig::default(), t0);
    let commit = alice.room.invite(&[&kp.bytes]).unwrap();
    alice.apply_staged(commit.keys, t0);
    alice.confirm(t0);
    let bob_id = Identity::load(SqliteProvider::open(&db), &bob_key, b"bob").unwrap();
    assert_eq!(bob_id.signature_key(), &bob_key[..]);
    let (mut bob, keys) = Room::join(bob_id, config, &commit.welcome.unwrap()).unwrap();
    assert_eq!(bob.safety_code(), alice.room.safety_code());
    let mut bob_media = MediaSession::new(MediaConfig::default());
    bob_media.apply(keys, t0).unwrap();

    // Its own commit makes it a sender.
    let update = bob.self_update().unwrap();
    bob_media.apply(update.keys, t0).unwrap();
    alice.process(&update.message, t0);
    for e in bob.process(&update.message).unwrap() {
        if let sotto::room::RoomEvent::Keys(k) = e {
            bob_media.apply(k, t0).unwrap();
        }
    }
    let t1 = t0 + Duration::from_secs(2);
    bob_media.expire(t1);
    let mut frame = BytesMut::new();
    bob_media
        .seal(
            sotto::keys::StreamId::MICROPHONE,
            b"hello after a restart",
            &mut frame,
            t1,
        )
        .unwrap();
    assert_eq!(
        open(&mut alice.media, &frame, t1).unwrap(),
        b"hello after a restart"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
