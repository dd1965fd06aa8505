//! A room's MLS cipher suite: chosen by its creator, fixed for the room's life, read by
//! joiners from their Welcome. A KeyPackage of another suite is refused by name, so a
//! joiner that offers only post-quantum KeyPackages can only ever be in a post-quantum room
//! (no downgrade by an inviter or a relay substituting KeyPackages), and a build without
//! the post-quantum suite names it when it meets one.

mod common;

use std::time::Instant;

use common::{deliver_commit, identity, Member};
use sotto::media::MediaConfig;
use sotto::room::{MlsSuite, RoomConfig, RoomError};

/// The code point of the provisional post-quantum suite (draft-ietf-mls-pq-ciphersuites).
const PQ_ID: u16 = 0x004F;

fn config(suite: MlsSuite) -> RoomConfig {
    RoomConfig {
        mls_suite: suite,
        ..RoomConfig::default()
    }
}

/// The cipher suite field of a serialized KeyPackage message (RFC 9420 §6, §10: version,
/// wire format 5, the KeyPackage's version, then its suite).
fn with_kp_suite(mut kp: Vec<u8>, id: u16) -> Vec<u8> {
    assert_eq!(kp[2..4], [0, 5], "an mls_key_package message");
    kp[6..8].copy_from_slice(&id.to_be_bytes());
    kp
}

#[test]
fn an_invite_with_a_key_package_of_another_suite_is_refused_by_name() {
    let t0 = Instant::now();
    let mut alice = Member::create(
        "alice",
        config(MlsSuite::Classic),
        MediaConfig::default(),
        t0,
    );
    assert_eq!(alice.room.mls_suite(), MlsSuite::Classic);
    let bob = identity("bob");
    let kp = bob.key_package(MlsSuite::Classic).unwrap();
    // The same KeyPackage naming another suite (its signature no longer holds: refused
    // before that matters, by the suite it names).
    let other = with_kp_suite(kp.bytes.clone(), PQ_ID);
    assert_eq!(
        alice.room.invite(&[&other]).unwrap_err(),
        RoomError::WrongMlsSuite {
            room: 0x0001,
            key_package: PQ_ID
        }
    );
    // One bad KeyPackage refuses the whole invite; the room is unchanged and usable.
    assert_eq!(
        alice.room.invite(&[&kp.bytes, &other]).unwrap_err(),
        RoomError::WrongMlsSuite {
            room: 0x0001,
            key_package: PQ_ID
        }
    );
    assert_eq!(alice.room.epoch(), 0);
    let commit = alice.room.invite(&[&kp.bytes]).unwrap();
    let welcome = commit.welcome.clone().unwrap();
    let mut m = vec![alice];
    deliver_commit(&mut m, 0, commit, t0);
    let bob = Member::join(
        bob,
        RoomConfig::default(),
        MediaConfig::default(),
        &welcome,
        t0,
    );
    assert_eq!(bob.room.mls_suite(), MlsSuite::Classic);
}

/// In a build without feature `pq`, a post-quantum room's Welcome is refused with the
/// suite's code point, and the identity comes back with its KeyPackage unused.
#[cfg(not(feature = "pq"))]
#[test]
fn a_build_without_pq_names_a_post_quantum_welcome() {
    let t0 = Instant::now();
    let mut alice = Member::create("alice", RoomConfig::default(), MediaConfig::default(), t0);
    let bob = identity("bob");
    let kp = bob.key_package(MlsSuite::Classic).unwrap();
    let commit = alice.room.invite(&[&kp.bytes]).unwrap();
    let welcome = commit.welcome.clone().unwrap();
    let mut m = vec![alice];
    deliver_commit(&mut m, 0, commit, t0);
    // The Welcome as a post-quantum room's would start: version, wire format 3, suite.
    assert_eq!(welcome[2..4], [0, 3]);
    let mut pq = welcome.clone();
    pq[4..6].copy_from_slice(&PQ_ID.to_be_bytes());
    let refused = match sotto::room::Room::join(bob, RoomConfig::default(), &pq) {
        Err(e) => e,
        Ok(_) => panic!("a Welcome of an unsupported suite was accepted"),
    };
    assert_eq!(refused.error, RoomError::UnsupportedMlsSuite(PQ_ID));
    let bob = Member::join(
        refused.identity,
        RoomConfig::default(),
        MediaConfig::default(),
        &welcome,
        t0,
    );
    assert_eq!(bob.room.epoch(), 1);
}

#[cfg(feature = "pq")]
mod pq {
    use super::*;
    use common::exchange_all;
    use std::time::Duration;

    /// A post-quantum room: its Welcome names suite 0x004F, members join, self-update,
    /// remove, and frames open; a classic KeyPackage cannot enter it and a post-quantum one
    /// cannot enter a classic room.
    #[test]
    fn a_post_quantum_room_lives_and_refuses_the_other_suite_both_ways() {
        let t0 = Instant::now();
        let pq = config(MlsSuite::HybridPq);
        let mut alice = Member::create("alice", pq.clone(), MediaConfig::default(), t0);
        assert_eq!(alice.room.mls_suite(), MlsSuite::HybridPq);
        assert_eq!(MlsSuite::HybridPq.id(), PQ_ID);

        let bob = identity("bob");
        let classic_kp = bob.key_package(MlsSuite::Classic).unwrap();
        assert_eq!(
            alice.room.invite(&[&classic_kp.bytes]).unwrap_err(),
            RoomError::WrongMlsSuite {
                room: PQ_ID,
                key_package: 0x0001
            }
        );
        // The other way: a joiner offering only post-quantum KeyPackages cannot be put in
        // a classic room.
        let mut classic = Member::create("carl", RoomConfig::default(), MediaConfig::default(), t0);
        let pq_kp = bob.key_package(MlsSuite::HybridPq).unwrap();
        assert_eq!(
            classic.room.invite(&[&pq_kp.bytes]).unwrap_err(),
            RoomError::WrongMlsSuite {
                room: 0x0001,
                key_package: PQ_ID
            }
        );

        let carol = identity("carol");
        let carol_kp = carol.key_package(MlsSuite::HybridPq).unwrap();
        let commit = alice.room.invite(&[&pq_kp.bytes, &carol_kp.bytes]).unwrap();
        let welcome = commit.welcome.clone().unwrap();
        assert_eq!(
            welcome[4..6],
            PQ_ID.to_be_bytes(),
            "the Welcome names 0x004F"
        );
        let mut m = vec![alice];
        deliver_commit(&mut m, 0, commit, t0);
        // A joiner's own configuration says classic: the Welcome decides.
        for id in [bob, carol] {
            let joined = Member::join(
                id,
                RoomConfig::default(),
                MediaConfig::default(),
                &welcome,
                t0,
            );
            assert_eq!(joined.room.mls_suite(), MlsSuite::HybridPq);
            m.push(joined);
        }
        for i in 1..3 {
            let commit = m[i].room.self_update().unwrap();
            deliver_commit(&mut m, i, commit, t0);
        }
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(exchange_all(&mut m, t1), 6);
        let codes: Vec<_> = m.iter().map(|x| x.room.safety_code()).collect();
        assert!(codes.windows(2).all(|w| w[0] == w[1]));

        // Remove carol: the next epoch's frames do not open for her.
        let carol_leaf = m[2].room.own_leaf();
        let commit = m[0].room.remove(&[carol_leaf]).unwrap();
        deliver_commit(&mut m, 0, commit, t1);
        assert!(m[2].removed);
        let t2 = t1 + Duration::from_secs(2);
        let frame = m[1].seal(b"after carol", t2);
        assert!(m[0].open(&frame, t2).is_ok());
        assert!(m[2].open(&frame, t2).is_err());
    }

    /// A crashed-and-restored member of a post-quantum room: it reloads the room from its
    /// storage (its configuration says classic: not used), still in the PQ suite, and
    /// after its own commit everyone hears everyone again.
    #[test]
    fn a_restored_member_stays_in_the_post_quantum_suite() {
        use sotto::room::Room;
        let t0 = Instant::now();
        let pq = config(MlsSuite::HybridPq);
        let mut m = vec![Member::create("alice", pq, MediaConfig::default(), t0)];
        let bob = identity("bob");
        let kp = bob.key_package(MlsSuite::HybridPq).unwrap();
        let commit = m[0].room.invite(&[&kp.bytes]).unwrap();
        let welcome = commit.welcome.clone().unwrap();
        deliver_commit(&mut m, 0, commit, t0);
        m.push(Member::join(
            bob,
            RoomConfig::default(),
            MediaConfig::default(),
            &welcome,
            t0,
        ));
        let provider = common::storage_copy(&m[1].room);
        let key = m[1].room.signature_key().to_vec();
        let group = m[1].room.group_id().to_vec();
        let (room, keys) = Room::load(provider, &key, &group, RoomConfig::default()).unwrap();
        assert_eq!(room.mls_suite(), MlsSuite::HybridPq);
        let mut media = sotto::media::MediaSession::new(MediaConfig::default());
        media.apply(keys, t0).unwrap();
        m[1].room = room;
        m[1].media = media;
        let commit = m[1].room.self_update().unwrap();
        deliver_commit(&mut m, 1, commit, t0);
        assert_eq!(exchange_all(&mut m, t0 + Duration::from_secs(1)), 2);
    }
}
