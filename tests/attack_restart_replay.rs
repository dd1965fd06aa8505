//! Issue 10, finding 7: a restarted media session accepted replays.
//!
//! The relay records every frame of an epoch. A member's media session restarts in the
//! middle of that epoch (the audio process crashed, or the whole app restarted and loaded
//! its room); its replay windows are gone. The relay now replays everything it recorded.

mod common;

use sotto::room::MlsSuite;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{deliver_commit, room_of, Member};
use sotto::frame::FrameError;
use sotto::keys::KeyError;
use sotto::media::{EpochStatus, MediaConfig, MediaSession};
use sotto::room::{Room, RoomConfig};

const FRAME: Duration = Duration::from_millis(20);

/// Bob seals `n` frames, one every 20 ms from `from`.
fn record(bob: &mut Member, n: u32, from: Instant) -> Vec<BytesMut> {
    (0..n)
        .map(|i| bob.seal(b"recorded", from + FRAME * i))
        .collect()
}

/// Opens every frame at `now`; returns (opened, refusals by kind).
fn replay(media: &mut MediaSession, frames: &[BytesMut], now: Instant) -> (usize, Vec<KeyError>) {
    let mut opened = 0;
    let mut refused = Vec::new();
    for f in frames {
        match media.open(f, &mut BytesMut::new(), now) {
            Ok(_) => opened += 1,
            Err(e) => refused.push(e),
        }
    }
    (opened, refused)
}

fn count(refused: &[KeyError], kind: KeyError) -> usize {
    refused.iter().filter(|e| **e == kind).count()
}

/// Finding 7 (issue 10): a media session restarted mid-epoch with `Room::receive_keys()`
/// (`Restored`) refuses every frame of that epoch the relay replays
/// (`KeyError::ReplayStateUnknown`), opens every frame of the next epoch, and refuses the
/// next epoch's frames replayed.
#[test]
fn restarted_media_session_refuses_replays_of_the_running_epoch() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob", "carol"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let e = m[0].room.epoch();
    let t1 = t0 + Duration::from_secs(1);
    // Alice's first session opens 200 frames of bob's; the relay keeps them.
    let recorded = record(&mut m[1], 200, t1);
    let t2 = t1 + Duration::from_secs(4);
    let (opened, refused) = replay(&mut m[0].media, &recorded, t2);
    assert_eq!((opened, refused.len()), (200, 0));

    // Alice's audio thread restarts: a new session from the running room.
    let keys = m[0].room.receive_keys().unwrap();
    assert_eq!((keys.epoch(), keys.status()), (e, EpochStatus::Restored));
    let mut restarted = MediaSession::new(MediaConfig::default());
    restarted.apply(keys, t2).unwrap();
    m[0].media = restarted;

    // The relay replays all it recorded, in order and then reversed.
    let (opened, refused) = replay(&mut m[0].media, &recorded, t2);
    let mut reversed = recorded.clone();
    reversed.reverse();
    let (opened_rev, refused_rev) = replay(&mut m[0].media, &reversed, t2);
    println!(
        "restart: {} of {} replayed frames refused as ReplayStateUnknown (then {} reversed)",
        count(&refused, KeyError::ReplayStateUnknown),
        recorded.len(),
        count(&refused_rev, KeyError::ReplayStateUnknown),
    );
    assert_eq!(opened + opened_rev, 0, "replayed frames accepted");
    assert_eq!(count(&refused, KeyError::ReplayStateUnknown), 200);
    assert_eq!(count(&refused_rev, KeyError::ReplayStateUnknown), 200);
    // The restarted session does not seal in the running epoch either.
    assert_eq!(
        m[0].media.seal(
            sotto::keys::StreamId::MICROPHONE,
            b"x",
            &mut BytesMut::new(),
            t2 + Duration::from_secs(2)
        ),
        Err(KeyError::NoSendingKey)
    );

    // The next epoch (carol's commit) opens normally, and its replays are refused.
    let t3 = t2 + Duration::from_secs(2);
    let commit = m[2].room.self_update().unwrap();
    deliver_commit(&mut m, 2, commit, t3);
    let t4 = t3 + Duration::from_secs(1);
    let fresh = record(&mut m[1], 100, t4);
    let t5 = t4 + Duration::from_secs(2);
    let (opened, refused) = replay(&mut m[0].media, &fresh, t5);
    assert_eq!((opened, refused.len()), (100, 0), "{refused:?}");
    let (opened, refused) = replay(&mut m[0].media, &fresh, t5);
    assert_eq!(opened, 0);
    assert_eq!(count(&refused, KeyError::Frame(FrameError::Replayed)), 100);
    // And the old epoch's recording still opens nothing.
    let (opened, _) = replay(&mut m[0].media, &recorded, t5);
    assert_eq!(opened, 0);
}

/// Finding 7 (issue 10): the same after a whole restart: `Room::load` gives `Restored`
/// keys; every recorded frame of the loaded epoch is refused, and after the member's own
/// commit the next epoch's frames open.
#[test]
fn loaded_room_refuses_replays_of_the_loaded_epoch() {
    let t0 = Instant::now();
    let alice_id = common::identity("alice");
    let alice_key = alice_id.signature_key().to_vec();
    let (room, keys) = Room::create(alice_id, RoomConfig::default()).unwrap();
    let mut media = MediaSession::new(MediaConfig::default());
    media.apply(keys, t0).unwrap();
    let alice = Member {
        name: "alice".into(),
        room,
        media,
        removed: false,
    };
    let bob_id = common::identity("bob");
    let kp = bob_id.key_package(MlsSuite::Classic).unwrap();
    let mut m = vec![alice];
    let invite = m[0].room.invite(&[&kp.bytes]).unwrap();
    let welcome = invite.welcome.clone().unwrap();
    deliver_commit(&mut m, 0, invite, t0);
    m.push(Member::join(
        bob_id,
        RoomConfig::default(),
        MediaConfig::default(),
        &welcome,
        t0,
    ));
    common::speak(&mut m, 1, t0);
    let e = m[0].room.epoch();

    let t1 = t0 + Duration::from_secs(1);
    let recorded = record(&mut m[1], 150, t1);
    let t2 = t1 + Duration::from_secs(3);
    assert_eq!(replay(&mut m[0].media, &recorded, t2).0, 150);

    // The app restarts: the room is loaded from its storage, a new session starts.
    let provider = common::storage_copy(&m[0].room);
    let group_id = m[0].room.group_id().to_vec();
    let (room, keys) = Room::load(provider, &alice_key, &group_id, RoomConfig::default()).unwrap();
    let loaded = (keys.epoch(), keys.status());
    let mut media = MediaSession::new(MediaConfig::default());
    media.apply(keys, t2).unwrap();
    m[0].room = room;
    m[0].media = media;

    let (opened, refused) = replay(&mut m[0].media, &recorded, t2);
    println!(
        "load: {} of {} replayed frames refused as ReplayStateUnknown",
        count(&refused, KeyError::ReplayStateUnknown),
        recorded.len()
    );
    assert_eq!(opened, 0, "replayed frames accepted");
    assert_eq!(count(&refused, KeyError::ReplayStateUnknown), 150);
    assert_eq!(loaded, (e, EpochStatus::Restored));

    // Alice's own commit: the next epoch opens, the recording still does not.
    let t3 = t2 + Duration::from_secs(1);
    let commit = m[0].room.self_update().unwrap();
    deliver_commit(&mut m, 0, commit, t3);
    let t4 = t3 + Duration::from_secs(1);
    let fresh = record(&mut m[1], 100, t4);
    let t5 = t4 + Duration::from_secs(2);
    let (opened, refused) = replay(&mut m[0].media, &fresh, t5);
    assert_eq!((opened, refused.len()), (100, 0), "{refused:?}");
    let (opened, _) = replay(&mut m[0].media, &recorded, t5);
    assert_eq!(opened, 0);
}
