//! A 64-member room end to end: invites in batches, a removal, a self-update; everyone
//! agrees and every frame opens everywhere.

mod common;

use sotto::room::MlsSuite;
use std::time::{Duration, Instant};

use common::{deliver_commit, identity, speak, Member};
use sotto::media::MediaConfig;
use sotto::room::RoomConfig;

#[test]
fn sixty_four_members() {
    let t0 = Instant::now();
    let config = RoomConfig::default();
    let media = MediaConfig::default();
    let mut m = vec![Member::create("m00", config.clone(), media, t0)];
    // 63 invitees in batches of 9, each batch one commit processed by everyone so far.
    for batch in 0..7 {
        let ids: Vec<_> = (0..9)
            .map(|i| identity(&format!("m{:02}", 1 + batch * 9 + i)))
            .collect();
        let kps: Vec<_> = ids
            .iter()
            .map(|i| i.key_package(MlsSuite::Classic).unwrap().bytes)
            .collect();
        let refs: Vec<&[u8]> = kps.iter().map(|k| k.as_slice()).collect();
        let inviter = batch % m.len();
        let commit = m[inviter].room.invite(&refs).unwrap();
        let welcome = commit.welcome.clone().unwrap();
        assert_eq!(commit.invited.len(), 9);
        deliver_commit(&mut m, inviter, commit, t0);
        for id in ids {
            m.push(Member::join(id, config.clone(), media, &welcome, t0));
        }
    }
    assert_eq!(m.len(), 64);
    assert_eq!(m[0].room.members().len(), 64);
    // Each joiner's first own commit, so it may seal (63 self-updates).
    for i in 1..m.len() {
        speak(&mut m, i, t0);
    }

    // Remove four members in one commit.
    let t1 = t0 + Duration::from_secs(2);
    let gone: Vec<u32> = [5usize, 17, 40, 63]
        .iter()
        .map(|&i| m[i].room.own_leaf())
        .collect();
    let commit = m[1].room.remove(&gone).unwrap();
    deliver_commit(&mut m, 1, commit, t1);
    let removed: Vec<usize> = (0..m.len()).filter(|&i| m[i].removed).collect();
    assert_eq!(removed, vec![5, 17, 40, 63]);
    for i in removed.iter().rev() {
        m.remove(*i);
    }
    assert_eq!(m.len(), 60);

    // One member self-updates.
    let t2 = t1 + Duration::from_secs(2);
    let commit = m[30].room.self_update().unwrap();
    deliver_commit(&mut m, 30, commit, t2);

    let epoch = m[0].room.epoch();
    assert_eq!(epoch, 9 + 63);
    let token = m[0].room.channel_token().unwrap();
    let code = m[0].room.safety_code();
    for x in &m {
        assert_eq!(x.room.epoch(), epoch);
        assert_eq!(x.room.channel_token().unwrap(), token);
        assert_eq!(x.room.safety_code(), code);
        assert_eq!(x.room.members().len(), 60);
    }
    // Every member's frame opens at every other member.
    let t3 = t2 + Duration::from_secs(2);
    let mut opened = 0;
    for i in 0..m.len() {
        let frame = m[i].seal(b"hello, room", t3);
        assert_eq!(m[i].media.sending_epoch(), Some(epoch));
        for j in 0..m.len() {
            if i != j {
                let (r, plain) = m[j].open(&frame, t3).unwrap();
                assert_eq!(r.leaf, m[i].room.own_leaf());
                assert_eq!(plain, b"hello, room");
                opened += 1;
            }
        }
    }
    assert_eq!(opened, 60 * 59);
    // The key rings derived only what they needed: 59 senders in one epoch.
    assert_eq!(m[0].media.ring().unwrap().derived_keys(), 59);
}
