//! Test helpers: members with a room and a media session, and a virtual clock.
#![allow(dead_code)]

use sotto::room::MlsSuite;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sotto::keys::{KeyError, Received};
use sotto::media::{EpochKeys, MediaConfig, MediaSession};
use sotto::provider::Provider;
use sotto::room::{Commit, Identity, Room, RoomConfig, RoomEvent};

pub type MemRoom = Room<Provider>;

/// A room member: control plane and data plane.
pub struct Member {
    pub name: String,
    pub room: MemRoom,
    pub media: MediaSession,
    /// Whether the room told this member it was removed.
    pub removed: bool,
}

pub fn identity(name: &str) -> Identity<Provider> {
    Identity::new(Provider::new().unwrap(), name.as_bytes()).unwrap()
}

impl Member {
    pub fn create(name: &str, config: RoomConfig, media: MediaConfig, now: Instant) -> Member {
        let (room, keys) = Room::create(identity(name), config).unwrap();
        let mut media = MediaSession::new(media);
        media.apply(keys, now).unwrap();
        Member {
            name: name.into(),
            room,
            media,
            removed: false,
        }
    }

    pub fn join(
        id: Identity<Provider>,
        config: RoomConfig,
        media: MediaConfig,
        welcome: &[u8],
        now: Instant,
    ) -> Member {
        let name = String::from_utf8(id.pseudonym().to_vec()).unwrap();
        let (room, keys) = Room::join(id, config, welcome).unwrap();
        let mut media = MediaSession::new(media);
        media.apply(keys, now).unwrap();
        Member {
            name,
            room,
            media,
            removed: false,
        }
    }

    /// Applies the data-plane parts of room events; returns the events for inspection.
    pub fn handle(&mut self, events: Vec<RoomEvent>, now: Instant) -> Vec<RoomEvent> {
        let mut rest = Vec::new();
        for e in events {
            match e {
                RoomEvent::Keys(keys) => self.media.apply(keys, now).unwrap(),
                RoomEvent::RemovedFromRoom => {
                    self.removed = true;
                    rest.push(e);
                }
                other => rest.push(other),
            }
        }
        rest
    }

    pub fn apply_staged(&mut self, keys: EpochKeys, now: Instant) {
        self.media.apply(keys, now).unwrap();
    }

    /// The committer's side of the relay ordering its commit.
    pub fn confirm(&mut self, now: Instant) -> Vec<RoomEvent> {
        let events = self.room.confirm_pending().unwrap();
        self.handle(events, now)
    }

    pub fn process(&mut self, bytes: &[u8], now: Instant) -> Vec<RoomEvent> {
        let events = self.room.process(bytes).unwrap();
        self.handle(events, now)
    }

    pub fn seal(&mut self, payload: &[u8], now: Instant) -> BytesMut {
        let mut out = BytesMut::new();
        self.media
            .seal(sotto::keys::StreamId::MICROPHONE, payload, &mut out, now)
            .unwrap();
        out
    }

    pub fn open(&mut self, frame: &[u8], now: Instant) -> Result<(Received, Vec<u8>), KeyError> {
        let mut out = BytesMut::new();
        let r = self.media.open(frame, &mut out, now)?;
        Ok((r, out.to_vec()))
    }
}

/// Commit `commit` from `members[committer]`: the committer applies its staged keys, the
/// relay orders the commit, every other active member processes it, the committer confirms.
pub fn deliver_commit(members: &mut [Member], committer: usize, commit: Commit, now: Instant) {
    members[committer].apply_staged(commit.keys, now);
    for (i, m) in members.iter_mut().enumerate() {
        if i == committer || m.removed {
            continue;
        }
        m.process(&commit.message, now);
    }
    members[committer].confirm(now);
}

/// Creates a room of `names`, the first inviting the others in one commit.
pub fn room_of(
    names: &[&str],
    config: RoomConfig,
    media: MediaConfig,
    now: Instant,
) -> Vec<Member> {
    let mut creator = Member::create(names[0], config.clone(), media, now);
    let ids: Vec<_> = names[1..].iter().map(|n| identity(n)).collect();
    let kps: Vec<_> = ids
        .iter()
        .map(|i| i.key_package(MlsSuite::Classic).unwrap().bytes)
        .collect();
    let refs: Vec<&[u8]> = kps.iter().map(|k| k.as_slice()).collect();
    let commit = creator.room.invite(&refs).unwrap();
    let welcome = commit.welcome.clone().unwrap();
    creator.apply_staged(commit.keys, now);
    creator.confirm(now);
    let mut members = vec![creator];
    for id in ids {
        members.push(Member::join(id, config.clone(), media, &welcome, now));
    }
    for i in 1..members.len() {
        speak(&mut members, i, now);
    }
    members
}

/// A joined member's first own commit (a self-update), delivered to everyone: joiners
/// seal only in epochs that descend from their own commit.
pub fn speak(members: &mut [Member], who: usize, now: Instant) {
    let commit = members[who].room.self_update().unwrap();
    deliver_commit(members, who, commit, now);
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A seeded xorshift generator: reproducible test scenarios.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-ish in `0..n` (`0` for `n = 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Every member seals a frame at `now`; every other member must open it. Returns how many
/// opened.
pub fn exchange_all(m: &mut [Member], now: Instant) -> usize {
    let mut opened = 0;
    for i in 0..m.len() {
        m[i].media.expire(now);
        if m[i].media.sending_epoch().is_none() {
            continue;
        }
        let frame = m[i].seal(b"twenty ms of audio", now);
        for j in 0..m.len() {
            if i != j {
                let (_, payload) = m[j]
                    .open(&frame, now)
                    .unwrap_or_else(|e| panic!("{} -> {}: {e:?}", m[i].name, m[j].name));
                assert_eq!(payload, b"twenty ms of audio");
                opened += 1;
            }
        }
    }
    opened
}

/// A provider holding a copy of `room`'s storage: the state a crashed member restarts from.
pub fn storage_copy(room: &MemRoom) -> Provider {
    use openmls_traits::OpenMlsProvider as _;
    Provider::with_storage(room.provider().storage().snapshot().unwrap()).unwrap()
}
