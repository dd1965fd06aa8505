//! MLS rooms end to end: agreement, forward secrecy, leaf reuse, and no gap at epoch change.

mod common;

use sotto::room::MlsSuite;
use std::time::{Duration, Instant};

use common::{deliver_commit, identity, ms, room_of, Member};
use sotto::frame::KeyMaterial;
use sotto::keys::{KeyError, KidLayout};
use sotto::media::MediaConfig;
use sotto::room::{
    ProposalInfo, ProposalKind, ProposalSender, Rejection, Room, RoomConfig, RoomError, RoomEvent,
};

#[test]
fn three_members_agree_and_open_each_other() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob", "carol"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let epoch = m[0].room.epoch();
    // The invite, then bob's and carol's first own commits (joiners seal only in epochs
    // that descend from their own commit).
    assert_eq!(epoch, 3);
    let token = m[0].room.channel_token().unwrap();
    let code = m[0].room.safety_code();
    for x in &m {
        assert_eq!(x.room.epoch(), epoch);
        assert_eq!(x.room.channel_token().unwrap(), token);
        assert_eq!(x.room.safety_code(), code);
        assert_eq!(x.room.safety_code().to_string().len(), 30 + 5);
        assert_eq!(x.room.members(), m[0].room.members());
    }
    let names: Vec<Vec<u8>> = m[0]
        .room
        .members()
        .into_iter()
        .map(|i| i.pseudonym)
        .collect();
    assert_eq!(
        names,
        [b"alice".to_vec(), b"bob".to_vec(), b"carol".to_vec()]
    );
    let fps: Vec<_> = m[0]
        .room
        .members()
        .into_iter()
        .map(|i| i.fingerprint)
        .collect();
    assert!(fps[0] != fps[1] && fps[1] != fps[2]);

    // After the switch delay, everyone seals in the current epoch.
    let t = t0 + Duration::from_secs(1);
    let layout = KidLayout::default();
    for i in 0..3 {
        let payload = format!("frame from {}", m[i].name).into_bytes();
        let frame = m[i].seal(&payload, t);
        let kid = m[i].media.sending_kid().unwrap();
        let parts = layout.decompose(kid);
        assert_eq!(parts.leaf, u64::from(m[i].room.own_leaf()));
        assert_eq!(parts.epoch_bits, epoch % 16);
        assert_eq!(parts.context, 0);
        for j in 0..3 {
            let result = m[j].open(&frame, t);
            if i == j {
                assert_eq!(result.unwrap_err(), KeyError::OwnFrame);
                continue;
            }
            let (got, plain) = result.unwrap();
            assert_eq!(got.leaf, m[i].room.own_leaf());
            assert_eq!(got.epoch, epoch);
            assert_eq!(plain, payload);
        }
    }
    // Tokens the relay would see: the media sessions know the current one.
    for x in &m {
        assert!(x.media.tokens().any(|(e, tk)| e == epoch && tk == token));
    }
}

#[test]
fn removal_cuts_off_and_newcomer_cannot_read_the_past() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob", "carol"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let t1 = t0 + Duration::from_secs(2);
    let e0 = m[0].room.epoch();
    let carol_leaf = m[2].room.own_leaf();
    let carol_token = m[2].room.channel_token().unwrap();
    let commit = m[0].room.remove(&[carol_leaf]).unwrap();
    // Carol's copy of the commit tells her she is out.
    m[0].apply_staged(commit.keys, t1);
    m[1].process(&commit.message, t1);
    let events = m[2].process(&commit.message, t1);
    assert!(events
        .iter()
        .any(|e| matches!(e, RoomEvent::RemovedFromRoom)));
    assert!(!m[2].room.is_active());
    assert_eq!(m[2].room.channel_token(), Err(RoomError::NotAMember));
    m[0].confirm(t1);
    let new_token = m[0].room.channel_token().unwrap();
    assert_ne!(new_token, carol_token);
    assert_eq!(m[1].room.channel_token().unwrap(), new_token);
    assert!(m[2].media.tokens().all(|(_, t)| t != new_token));

    // After the switch delay, alice and bob seal in epoch 2: carol opens nothing of it.
    let t2 = t1 + ms(1001);
    let a = m[0].seal(b"alice in epoch 2", t2);
    assert_eq!(m[0].media.sending_epoch(), Some(e0 + 1));
    assert!(m[2].open(&a, t2).is_err());
    assert!(m[1].open(&a, t2).is_ok());

    // Carol still seals in epoch 1: accepted for one switch delay after the others merged
    // her removal (frames she sent just before it may still be on their way)...
    let c = m[2].seal(b"carol, removed", t1 + ms(500));
    assert!(m[1].open(&c, t1 + ms(500)).is_ok());
    // ...then refused, though epoch 1 itself is kept for its grace period.
    let c = m[2].seal(b"carol, rogue", t2);
    assert_eq!(
        m[1].open(&c, t2).unwrap_err(),
        KeyError::UnknownSender {
            leaf: u64::from(carol_leaf)
        }
    );
    assert!(m[1].media.ring().unwrap().holds(e0));
    // The commit removed someone, so the old epoch closes for every sender one switch
    // delay plus the removal skew (250 ms) after the merge, not after the grace period.
    let t3 = t1 + ms(1250);
    let c = m[2].seal(b"carol, later", t3);
    assert_eq!(m[1].open(&c, t3).unwrap_err(), KeyError::EpochExpired);
    assert_eq!(m[0].open(&c, t3).unwrap_err(), KeyError::EpochExpired);

    // A newcomer cannot open frames from before it joined.
    let dave = identity("dave");
    let kp = dave.key_package(MlsSuite::Classic).unwrap();
    let commit = m[0].room.invite(&[&kp.bytes]).unwrap();
    let welcome = commit.welcome.clone().unwrap();
    m.truncate(2);
    deliver_commit(&mut m, 0, commit, t3);
    let mut dave = Member::join(
        dave,
        RoomConfig::default(),
        MediaConfig::default(),
        &welcome,
        t3,
    );
    assert_eq!(dave.room.epoch(), e0 + 2);
    assert!(dave.open(&a, t3).is_err());
    let b_old = m[1].seal(b"bob, still epoch 2", t3);
    assert!(dave.open(&b_old, t3).is_err());
    let t4 = t3 + ms(1001);
    let b_new = m[1].seal(b"bob, epoch 3", t4);
    assert_eq!(dave.open(&b_new, t4).unwrap().1, b"bob, epoch 3");
}

#[test]
fn reused_leaf_gets_different_keys() {
    // E = 2: epochs 3 and 7 share KID bits, so carol (leaf 2, epoch 3) and dave (leaf 2,
    // epoch 7) seal under the very same KID — but with different keys.
    let config = RoomConfig {
        params: sotto::room::RoomParams {
            layout: KidLayout::new(8, 2).unwrap(),
            ..Default::default()
        },
        ..RoomConfig::default()
    };
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob", "carol"],
        config.clone(),
        MediaConfig::default(),
        t0,
    );
    let t1 = t0 + Duration::from_secs(1);
    let carol_frame = m[2].seal(b"carol", t1);
    let carol_kid = m[2].media.sending_kid().unwrap();
    let carol_leaf = m[2].room.own_leaf();

    let commit = m[0].room.remove(&[carol_leaf]).unwrap();
    m[0].apply_staged(commit.keys, t1);
    m[1].process(&commit.message, t1);
    m[2].process(&commit.message, t1);
    m[0].confirm(t1);
    m.truncate(2);

    let dave = identity("dave");
    let kp = dave.key_package(MlsSuite::Classic).unwrap();
    let commit = m[0].room.invite(&[&kp.bytes]).unwrap();
    let welcome = commit.welcome.clone().unwrap();
    deliver_commit(&mut m, 0, commit, t1);
    let dave = Member::join(dave, config.clone(), MediaConfig::default(), &welcome, t1);
    assert_eq!(
        dave.room.own_leaf(),
        carol_leaf,
        "MLS reuses the blank leaf"
    );
    m.push(dave);
    common::speak(&mut m, 2, t1);
    let commit = m[0].room.self_update().unwrap();
    let dave_base = commit.keys.expose_base_key().to_vec();
    deliver_commit(&mut m, 0, commit, t1);
    assert_eq!(m[0].room.epoch(), 7);
    let mut dave = m.pop().unwrap();
    // A newcomer, too, starts sealing after the switch delay.
    assert!(dave
        .media
        .seal(
            sotto::keys::StreamId::MICROPHONE,
            b"dave",
            &mut bytes::BytesMut::new(),
            t1
        )
        .is_err());
    let dave_frame = dave.seal(b"dave", t1 + ms(1000));
    let dave_kid = dave.media.sending_kid().unwrap();
    assert_eq!(dave_kid, carol_kid, "same KID by construction");

    let t2 = t1 + ms(1001);
    assert_eq!(m[0].open(&dave_frame, t2).unwrap().1, b"dave");
    // Carol's frame under the same KID does not open with dave's key.
    assert_eq!(
        m[1].open(&carol_frame, t2).unwrap_err(),
        KeyError::Frame(sotto::frame::FrameError::AuthenticationFailed)
    );
    let suite = config.params.suite;
    let k_dave = KeyMaterial::derive(suite, dave_kid, &dave_base).unwrap();
    let mut opener = sotto::frame::FrameOpener::new();
    opener.insert_key(dave_kid, suite, &dave_base).unwrap();
    assert!(
        opener
            .open(b"", &dave_frame, &mut bytes::BytesMut::new())
            .is_ok(),
        "epoch 7 key is dave's"
    );
    assert_ne!(k_dave.sframe_key(), &[0u8; 16][..]);
    assert_ne!(dave_base, vec![0u8; dave_base.len()]);
}

/// Every member seals a frame every 20 ms; each frame goes to every other member at once.
/// Returns, per (sender, receiver), the frames that failed to open.
struct Call {
    failures: Vec<(usize, usize, u64, KeyError)>,
    opened: usize,
}

#[allow(clippy::needless_range_loop)]
fn tick(m: &mut [Member], now: Instant, call: &mut Call, skip: &[usize]) {
    for i in 0..m.len() {
        m[i].media.expire(now);
        if skip.contains(&i) || m[i].media.sending_epoch().is_none() {
            continue;
        }
        let frame = m[i].seal(b"twenty ms of audio", now);
        let epoch = m[i].media.sending_epoch().unwrap();
        for j in 0..m.len() {
            if i == j {
                continue;
            }
            match m[j].open(&frame, now) {
                Ok(_) => call.opened += 1,
                Err(e) => call.failures.push((i, j, epoch, e)),
            }
        }
    }
}

#[test]
fn no_gap_when_one_receiver_is_800ms_late() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["a", "b", "c", "d"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let mut call = Call {
        failures: Vec::new(),
        opened: 0,
    };
    let e0 = m[0].room.epoch();
    let start = t0 + Duration::from_secs(1);
    let commit_at = start + Duration::from_secs(1);
    let late_at = commit_at + ms(800);
    let mut pending = None;
    for step in 0..200u64 {
        let now = start + ms(20 * step);
        if now == commit_at {
            // a self-updates; the relay orders it at once; b and d process it at once, c 800 ms later.
            let commit = m[0].room.self_update().unwrap();
            m[0].apply_staged(commit.keys, now);
            m[0].confirm(now);
            m[1].process(&commit.message, now);
            m[3].process(&commit.message, now);
            pending = Some(commit.message);
        }
        if now == late_at {
            m[2].process(pending.as_deref().unwrap(), now);
        }
        tick(&mut m, now, &mut call, &[]);
    }
    assert!(
        call.failures.is_empty(),
        "lost frames: {:?}",
        &call.failures[..call.failures.len().min(5)]
    );
    assert_eq!(call.opened, 200 * 4 * 3);
    // Everyone ended in the next epoch and agrees.
    for x in &m {
        assert_eq!(x.media.sending_epoch(), Some(e0 + 1));
        assert_eq!(x.room.safety_code(), m[0].room.safety_code());
    }
}

#[test]
fn switch_delay_zero_cuts_the_removed_member_at_the_commit() {
    let t0 = Instant::now();
    let media = MediaConfig {
        switch_delay: Duration::ZERO,
        ..MediaConfig::default()
    };
    let mut m = room_of(&["a", "b", "c", "d"], RoomConfig::default(), media, t0);
    let start = t0 + ms(100);
    let commit_at = start + Duration::from_secs(1);
    let mut before = Call {
        failures: Vec::new(),
        opened: 0,
    };
    let mut after = Call {
        failures: Vec::new(),
        opened: 0,
    };
    let d_leaf = m[3].room.own_leaf();
    for step in 0..100u64 {
        let now = start + ms(20 * step);
        if now == commit_at {
            let commit = m[0].room.remove(&[d_leaf]).unwrap();
            m[0].apply_staged(commit.keys, now);
            m[0].confirm(now);
            for x in &mut m[1..] {
                x.process(&commit.message, now);
            }
            assert!(m[3].removed);
            m[3].media.stop_sending();
        }
        let call = if now < commit_at {
            &mut before
        } else {
            &mut after
        };
        tick(&mut m, now, call, &[]);
    }
    assert!(before.failures.is_empty());
    // After the commit, d (index 3) opens nothing; everyone else opens everything.
    let d_opened_after = 50 * 3 - after.failures.iter().filter(|f| f.1 == 3).count();
    assert_eq!(
        d_opened_after, 0,
        "removed member opened frames sealed after the commit"
    );
    assert!(after.failures.iter().all(|f| f.1 == 3));
    assert_eq!(after.opened, 50 * 3 * 2);
}

#[test]
fn leave_proposal_is_committed_by_another_member() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob", "carol"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let proposal = m[2].room.leave().unwrap();
    let carol = m[2].room.own_leaf();
    for x in &mut m[..2] {
        let info = queued(&x.process(&proposal, t0));
        assert_eq!(
            (info.kind, info.sender, info.target, info.needs_approval),
            (
                ProposalKind::Remove,
                ProposalSender::Member(carol),
                Some(carol),
                false
            )
        );
    }
    // carol's own proposal echoed back is ignored.
    assert!(m[2].process(&proposal, t0).is_empty());
    let commit = m[1].room.commit_pending_proposals().unwrap();
    deliver_commit(&mut m, 1, commit, t0);
    assert!(m[2].removed);
    assert_eq!(m[0].room.members().len(), 2);
    assert_eq!(m[0].room.epoch(), m[1].room.epoch());
}

#[test]
fn concurrent_commits_loser_is_told_and_can_retry() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob", "carol"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let e0 = m[0].room.epoch();
    let a = m[0].room.self_update().unwrap();
    assert_eq!(
        m[0].room.self_update().unwrap_err(),
        RoomError::CommitPending
    );
    let b = m[1].room.self_update().unwrap();
    m[0].apply_staged(a.keys, t0);
    m[1].apply_staged(b.keys, t0);
    // The relay orders bob's commit first and hands it to everyone, bob included.
    let events = m[0].process(&b.message, t0);
    assert!(events
        .iter()
        .any(|e| matches!(e, RoomEvent::PendingCommitDropped)));
    m[2].process(&b.message, t0);
    let events = m[1].process(&b.message, t0); // bob's own commit comes back: confirmed
    assert!(events
        .iter()
        .any(|e| matches!(e, RoomEvent::EpochChanged { epoch } if *epoch == e0 + 1)));
    // Alice's commit is now for a past epoch.
    assert_eq!(
        m[2].room.process(&a.message).unwrap_err(),
        RoomError::Rejected(sotto::room::Rejection::WrongEpoch)
    );
    for x in &m {
        assert_eq!(x.room.epoch(), e0 + 1);
        assert_eq!(x.room.safety_code(), m[0].room.safety_code());
    }
    // Alice retries.
    let a = m[0].room.self_update().unwrap();
    deliver_commit(&mut m, 0, a, t0);
    assert_eq!(m[2].room.epoch(), e0 + 2);
    assert_eq!(
        m[0].room.discard_pending().unwrap_err(),
        RoomError::NoPendingCommit
    );
}

#[test]
fn bad_handshake_bytes_are_typed_errors_and_change_nothing() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let good = m[1].room.self_update().unwrap();
    let epoch = m[0].room.epoch();
    let mut flipped = good.message.clone();
    let n = flipped.len();
    flipped[n - 3] ^= 0x40;
    for bad in [
        &b""[..],
        b"\x00\x01garbage",
        &good.message[..n / 2],
        &flipped,
    ] {
        assert!(matches!(
            m[0].room.process(bad),
            Err(RoomError::Rejected(_))
        ));
        assert_eq!(m[0].room.epoch(), epoch);
    }
    // A KeyPackage is not a handshake message; a Welcome is not a KeyPackage.
    let kp = identity("x").key_package(MlsSuite::Classic).unwrap();
    assert!(m[0].room.process(&kp.bytes).is_err());
    assert_eq!(
        m[0].room.invite(&[b"nope"]).unwrap_err(),
        RoomError::InvalidKeyPackage
    );
    assert_eq!(
        m[0].room.remove(&[99]).unwrap_err(),
        RoomError::NoSuchMember
    );
    let own = m[0].room.own_leaf();
    assert_eq!(
        m[0].room.remove(&[own]).unwrap_err(),
        RoomError::NoSuchMember
    );
    // The genuine commit still goes through.
    m[0].process(&good.message, t0);
    assert_eq!(m[0].room.epoch(), epoch + 1);
}

#[test]
fn rooms_and_sessions_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<sotto::media::MediaSession>();
    assert_send::<sotto::room::Room<openmls_rust_crypto::OpenMlsRustCrypto>>();
    assert_send::<sotto::media::EpochKeys>();
}

/// A relay configured as an MLS external sender proposes removing a member whose
/// connection is gone; a member commits the proposal.
#[test]
fn external_sender_proposes_a_removal() {
    use openmls::prelude::{GroupEpoch, GroupId, LeafNodeIndex, SenderExtensionIndex};
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_rust_crypto::OpenMlsRustCrypto;

    let relay_key = SignatureKeyPair::new(openmls::prelude::SignatureScheme::ED25519).unwrap();
    let config = RoomConfig {
        external_senders: vec![(relay_key.public().to_vec(), b"relay".to_vec())],
        ..RoomConfig::default()
    };
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob", "carol"],
        config,
        MediaConfig::default(),
        t0,
    );
    let gone = m[2].room.own_leaf();
    // What the relay knows: the group id and epoch from MLS framing, the leaf from KIDs.
    let proposal = openmls::prelude::ExternalProposal::new_remove::<OpenMlsRustCrypto>(
        LeafNodeIndex::new(gone),
        GroupId::from_slice(m[0].room.group_id()),
        GroupEpoch::from(m[0].room.epoch()),
        &relay_key,
        SenderExtensionIndex::new(0),
    )
    .unwrap()
    .to_bytes()
    .unwrap();
    for x in m.iter_mut() {
        let info = queued(&x.process(&proposal, t0));
        assert_eq!(
            (info.kind, info.sender, info.target, info.needs_approval),
            (
                ProposalKind::Remove,
                ProposalSender::External(0),
                Some(gone),
                false
            )
        );
    }
    let commit = m[0].room.commit_pending_proposals().unwrap();
    deliver_commit(&mut m, 0, commit, t0);
    assert!(m[2].removed);
    assert_eq!(m[0].room.members().len(), 2);
    assert_eq!(m[1].room.safety_code(), m[0].room.safety_code());
}

/// A Welcome that fails gives the identity back, and does not use up the KeyPackage it
/// names: a forged Welcome naming bob's KeyPackage (anyone who knows its reference can
/// drop one in the relay mailbox) must not stop bob joining with the genuine one after it.
#[test]
fn failed_welcome_gives_the_identity_back_with_its_key_package() {
    let config = RoomConfig::default();
    let (mut alice, _) = Room::create(common::identity("alice"), config.clone()).unwrap();
    let bob = common::identity("bob");
    let kp = bob.key_package(MlsSuite::Classic).unwrap();
    let commit = alice.invite(&[&kp.bytes]).unwrap();
    alice.confirm_pending().unwrap();
    let welcome = commit.welcome.unwrap();

    // The genuine Welcome with one byte of its encrypted GroupInfo flipped: it still names
    // bob's KeyPackage, so openmls reaches (and would delete) it before failing.
    let mut forged = welcome.clone();
    *forged.last_mut().unwrap() ^= 1;
    let failed = Room::join(bob, config.clone(), &forged).unwrap_err();
    assert_eq!(failed.error, RoomError::InvalidWelcome);
    assert!(holds_key_package(&failed.identity, &kp.bytes));
    // Garbage, and a Welcome for someone else's KeyPackage, fail the same way.
    let failed = Room::join(failed.identity, config.clone(), b"not a welcome").unwrap_err();
    assert_eq!(failed.error, RoomError::InvalidWelcome);
    let carol = common::identity("carol");
    let other = alice
        .invite(&[&carol.key_package(MlsSuite::Classic).unwrap().bytes])
        .unwrap();
    alice.discard_pending().unwrap();
    let failed = Room::join(failed.identity, config.clone(), &other.welcome.unwrap()).unwrap_err();
    assert_eq!(failed.error, RoomError::InvalidWelcome);
    assert_eq!(failed.identity.pseudonym(), b"bob");

    let (bob, _) = Room::join(failed.identity, config, &welcome).unwrap();
    assert_eq!(bob.epoch(), alice.epoch());
    assert_eq!(bob.safety_code(), alice.safety_code());
}

/// Whether the identity's storage still holds the KeyPackage published as `bytes`.
fn holds_key_package<P: openmls_traits::OpenMlsProvider>(
    identity: &sotto::room::Identity<P>,
    bytes: &[u8],
) -> bool {
    use openmls::prelude::tls_codec::Deserialize as _;
    use openmls::prelude::{
        KeyPackageBundle, KeyPackageRef, MlsMessageBodyIn, MlsMessageIn, ProtocolVersion,
    };
    use openmls_traits::storage::StorageProvider as _;
    let MlsMessageBodyIn::KeyPackage(kp) = MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .extract()
    else {
        panic!("a KeyPackage");
    };
    let crypto = identity.provider().crypto();
    let reference = kp
        .validate(crypto, ProtocolVersion::Mls10)
        .unwrap()
        .hash_ref(crypto)
        .unwrap();
    identity
        .provider()
        .storage()
        .key_package::<KeyPackageRef, KeyPackageBundle>(&reference)
        .unwrap()
        .is_some()
}

/// A Welcome whose group secrets open under the KeyPackage's init key uses the KeyPackage
/// up even when joining fails after that (the init key decrypts one Welcome only): here one
/// from a holder of bob's KeyPackage whose group leaves the ratchet tree out. A Welcome
/// that does not open leaves it in place.
#[test]
fn a_welcome_that_opened_uses_the_key_package_up() {
    use openmls::prelude::tls_codec::Deserialize as _;
    use openmls::prelude::{
        BasicCredential, CredentialWithKey, MlsGroup, MlsGroupCreateConfig, MlsMessageBodyIn,
        MlsMessageIn, ProtocolVersion,
    };
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_rust_crypto::OpenMlsRustCrypto;
    use openmls_traits::OpenMlsProvider as _;

    let bob = common::identity("bob");
    let kp = bob.key_package(MlsSuite::Classic).unwrap();
    assert!(holds_key_package(&bob, &kp.bytes));

    let provider = OpenMlsRustCrypto::default();
    let signer =
        SignatureKeyPair::new(MlsSuite::Classic.ciphersuite().signature_algorithm()).unwrap();
    let credential = CredentialWithKey {
        credential: BasicCredential::new(b"mallory".to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let config = MlsGroupCreateConfig::builder()
        .ciphersuite(MlsSuite::Classic.ciphersuite())
        .use_ratchet_tree_extension(false)
        .build();
    let mut group = MlsGroup::new(&provider, &signer, &config, credential).unwrap();
    let MlsMessageBodyIn::KeyPackage(kp_in) = MlsMessageIn::tls_deserialize_exact(&kp.bytes)
        .unwrap()
        .extract()
    else {
        panic!("a KeyPackage");
    };
    let key_package = kp_in
        .validate(provider.crypto(), ProtocolVersion::Mls10)
        .unwrap();
    let (_, welcome, _) = group
        .add_members(&provider, &signer, &[key_package])
        .unwrap();
    let welcome = welcome.to_bytes().unwrap();

    // Not opened (one byte of the encrypted GroupInfo, the HPKE context, flipped): kept.
    let mut forged = welcome.clone();
    *forged.last_mut().unwrap() ^= 1;
    let failed = Room::join(bob, RoomConfig::default(), &forged).unwrap_err();
    assert_eq!(failed.error, RoomError::InvalidWelcome);
    assert!(holds_key_package(&failed.identity, &kp.bytes));
    // Opened, then refused for the missing ratchet tree: used up.
    let failed = Room::join(failed.identity, RoomConfig::default(), &welcome).unwrap_err();
    assert_eq!(failed.error, RoomError::InvalidWelcome);
    assert!(!holds_key_package(&failed.identity, &kp.bytes));
}

/// A client speaking openmls directly, not through sotto: the relay once it holds a Welcome,
/// or a member making proposals sotto has no API for (another client implementation).
struct RawClient {
    provider: openmls_rust_crypto::OpenMlsRustCrypto,
    signer: openmls_basic_credential::SignatureKeyPair,
    key_package: openmls::prelude::KeyPackage,
}

impl RawClient {
    /// A client whose KeyPackage carries `name`, signed with `signer`.
    fn new(name: &[u8], signer: openmls_basic_credential::SignatureKeyPair) -> RawClient {
        use openmls::prelude::{BasicCredential, CredentialWithKey, KeyPackage};
        let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.to_vec()).into(),
            signature_key: signer.public().into(),
        };
        // It declares sotto's parameters extension, as any client that joins sotto rooms
        // must.
        let key_package = KeyPackage::builder()
            .leaf_node_capabilities(sotto_capabilities())
            .build(
                sotto::room::MlsSuite::Classic.ciphersuite(),
                &provider,
                &signer,
                credential,
            )
            .unwrap()
            .key_package()
            .clone();
        RawClient {
            provider,
            signer,
            key_package,
        }
    }

    fn fresh(name: &[u8]) -> RawClient {
        let signer = openmls_basic_credential::SignatureKeyPair::new(
            sotto::room::MlsSuite::Classic
                .ciphersuite()
                .signature_algorithm(),
        )
        .unwrap();
        RawClient::new(name, signer)
    }

    /// The KeyPackage as published (an MLS message).
    fn key_package_bytes(&self) -> Vec<u8> {
        openmls::prelude::MlsMessageOut::from(self.key_package.clone())
            .to_bytes()
            .unwrap()
    }

    fn key_package_ref(&self) -> Vec<u8> {
        use openmls_traits::OpenMlsProvider as _;
        self.key_package
            .hash_ref(self.provider.crypto())
            .unwrap()
            .as_slice()
            .to_vec()
    }

    /// Joins from a Welcome the way sotto does (ratchet tree in the Welcome).
    fn join(&self, welcome: &[u8]) -> Option<openmls::prelude::MlsGroup> {
        use openmls::prelude::tls_codec::Deserialize as _;
        use openmls::prelude::{MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, StagedWelcome};
        let MlsMessageBodyIn::Welcome(welcome) = MlsMessageIn::tls_deserialize_exact(welcome)
            .unwrap()
            .extract()
        else {
            panic!("a Welcome");
        };
        let config = MlsGroupJoinConfig::builder()
            .wire_format_policy(openmls::prelude::PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .build();
        StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None)
            .ok()?
            .into_group(&self.provider)
            .ok()
    }
}

fn relay_room(relay_key: &openmls_basic_credential::SignatureKeyPair, t0: Instant) -> Vec<Member> {
    let config = RoomConfig {
        external_senders: vec![(relay_key.public().to_vec(), b"relay".to_vec())],
        ..RoomConfig::default()
    };
    room_of(
        &["alice", "bob", "carol"],
        config,
        MediaConfig::default(),
        t0,
    )
}

/// Finding 1 (issue 10): a relay set as external sender proposes adding its own KeyPackage.
/// Whichever commit path the next committer takes (invite, remove, self-update, committing
/// the pending proposals), the commit must not add the relay: otherwise the Welcome goes to
/// the relay's mailbox and the relay derives the room's media keys. The proposal is refused
/// with a typed rejection and not stored.
#[test]
fn external_sender_cannot_add_itself() {
    use openmls::prelude::{ExternalProposal, GroupEpoch, GroupId, SenderExtensionIndex};
    use openmls_rust_crypto::OpenMlsRustCrypto;
    use openmls_traits::OpenMlsProvider as _;

    let mut breaches = Vec::new();
    for path in [
        "invite",
        "remove",
        "self_update",
        "commit_pending_proposals",
    ] {
        let t0 = Instant::now();
        // The relay's KeyPackage is signed with its external-sender key.
        let relay = RawClient::fresh(b"relay");
        let relay_key = &relay.signer;
        let mut m = relay_room(relay_key, t0);
        let proposal = ExternalProposal::new_add::<OpenMlsRustCrypto>(
            relay.key_package.clone(),
            GroupId::from_slice(m[0].room.group_id()),
            GroupEpoch::from(m[0].room.epoch()),
            relay_key,
            SenderExtensionIndex::new(0),
        )
        .unwrap()
        .to_bytes()
        .unwrap();
        let verdicts: Vec<_> = m
            .iter_mut()
            .map(|x| x.room.process(&proposal).map(|_| ()))
            .collect();

        let dave = identity("dave");
        let commit = match path {
            "invite" => m[0]
                .room
                .invite(&[&dave.key_package(MlsSuite::Classic).unwrap().bytes])
                .unwrap(),
            "remove" => {
                let carol = m[2].room.own_leaf();
                m[0].room.remove(&[carol]).unwrap()
            }
            "self_update" => m[0].room.self_update().unwrap(),
            _ => m[0].room.commit_pending_proposals().unwrap(),
        };
        let base = commit.keys.expose_base_key().to_vec();
        if let Some(welcome) = &commit.welcome {
            if let Some(group) = relay.join(welcome) {
                let stolen = group
                    .export_secret(
                        relay.provider.crypto(),
                        "SFrame 1.0 Base Key",
                        &[],
                        base.len(),
                    )
                    .unwrap();
                breaches.push(format!(
                    "{path}: the relay joined from the Welcome, invited {:02x?}; \
                     its base key is the room's next one: {}",
                    commit.invited,
                    stolen == base
                ));
            }
        }
        deliver_commit(&mut m, 0, commit, t0);
        if m[0].room.members().iter().any(|x| x.pseudonym == b"relay") {
            breaches.push(format!("{path}: the relay is a member"));
        }
        for verdict in verdicts {
            if verdict != Err(RoomError::Rejected(Rejection::ProposalNotAllowed)) {
                breaches.push(format!("{path}: proposal not refused: {verdict:?}"));
            }
        }
    }
    assert!(breaches.is_empty(), "{breaches:#?}");
}

/// A room of alice, bob (sotto) and erin (a client speaking openmls directly, so it can make
/// proposals sotto has no API for).
fn room_with_erin(
    config: RoomConfig,
    t0: Instant,
) -> (Vec<Member>, RawClient, openmls::prelude::MlsGroup) {
    let mut m = room_of(&["alice", "bob"], config, MediaConfig::default(), t0);
    let erin = RawClient::fresh(b"erin");
    let commit = m[0].room.invite(&[&erin.key_package_bytes()]).unwrap();
    let welcome = commit.welcome.clone().unwrap();
    deliver_commit(&mut m, 0, commit, t0);
    let group = erin.join(&welcome).unwrap();
    (m, erin, group)
}

/// The ProposalQueued event among `events`.
fn queued(events: &[RoomEvent]) -> ProposalInfo {
    events
        .iter()
        .find_map(|e| match e {
            RoomEvent::ProposalQueued(info) => Some(info.clone()),
            _ => None,
        })
        .expect("a ProposalQueued event")
}

/// Finding 1 (issue 10): an Add proposal by a member (here a client speaking openmls
/// directly) is the app's call: the event says who proposed whom, no commit path includes
/// it on its own, and only [`Room::commit_proposals`] with its id commits it.
#[test]
fn member_add_proposal_is_not_committed_silently() {
    for path in [
        "invite",
        "remove",
        "self_update",
        "commit_pending_proposals",
        "approve",
    ] {
        let t0 = Instant::now();
        let (mut m, erin, mut erin_group) = room_with_erin(RoomConfig::default(), t0);
        let frank = RawClient::fresh(b"frank");
        let (proposal, _) = erin_group
            .propose_add_member(&erin.provider, &erin.signer, &frank.key_package)
            .unwrap();
        let proposal = proposal.to_bytes().unwrap();
        let erin_leaf = erin_group.own_leaf_index().u32();
        let mut infos = Vec::new();
        for x in m.iter_mut() {
            let events = x.process(&proposal, t0);
            infos.push(queued(&events));
        }
        let info = infos[0].clone();
        assert_eq!(infos[1], info);
        assert_eq!(info.kind, ProposalKind::Add);
        assert_eq!(info.sender, ProposalSender::Member(erin_leaf));
        assert_eq!(info.target, None);
        assert_eq!(
            info.key_package.as_deref(),
            Some(&frank.key_package_ref()[..])
        );
        assert_eq!(info.pseudonym.as_deref(), Some(&b"frank"[..]));
        assert!(info.needs_approval);
        assert_eq!(m[0].room.pending_proposals().unwrap(), vec![info.clone()]);

        let dave = identity("dave");
        let commit = match path {
            "invite" => m[0]
                .room
                .invite(&[&dave.key_package(MlsSuite::Classic).unwrap().bytes])
                .unwrap(),
            "remove" => {
                let bob = m[1].room.own_leaf();
                m[0].room.remove(&[bob]).unwrap()
            }
            "self_update" => m[0].room.self_update().unwrap(),
            "commit_pending_proposals" => m[0].room.commit_pending_proposals().unwrap(),
            _ => {
                let bogus = m[0].room.commit_proposals(&[]).unwrap();
                m[0].room.discard_pending().unwrap();
                assert!(bogus.welcome.is_none());
                m[0].room
                    .commit_proposals(std::slice::from_ref(&info.id))
                    .unwrap()
            }
        };
        let joined = commit.welcome.as_ref().and_then(|w| frank.join(w));
        deliver_commit(&mut m, 0, commit, t0);
        let frank_in = m[0].room.members().iter().any(|x| x.pseudonym == b"frank");
        if path == "approve" {
            assert!(frank_in && joined.is_some(), "approved, frank joins");
        } else {
            assert!(!frank_in && joined.is_none(), "{path} added frank");
        }
    }
}

#[test]
fn commit_proposals_refuses_unknown_ids() {
    let t0 = Instant::now();
    let (mut m, erin, mut erin_group) = room_with_erin(RoomConfig::default(), t0);
    let frank = RawClient::fresh(b"frank");
    let (proposal, _) = erin_group
        .propose_add_member(&erin.provider, &erin.signer, &frank.key_package)
        .unwrap();
    let info = queued(&m[0].process(&proposal.to_bytes().unwrap(), t0));
    // Once the epoch moved on, the proposal is gone.
    let commit = m[1].room.self_update().unwrap();
    deliver_commit(&mut m, 1, commit, t0);
    assert_eq!(m[0].room.pending_proposals().unwrap(), Vec::new());
    assert_eq!(
        m[0].room.commit_proposals(&[info.id]).unwrap_err(),
        RoomError::NoSuchProposal
    );
    assert!(!m[0].room.has_pending_commit());
}

/// The capabilities a client needs to join a sotto room.
fn sotto_capabilities() -> openmls::prelude::Capabilities {
    openmls::prelude::Capabilities::new(
        None,
        None,
        Some(&[openmls::prelude::ExtensionType::Unknown(
            sotto::room::PARAMS_EXTENSION_TYPE,
        )]),
        None,
        None,
    )
}

/// A sotto room's group context extensions (default parameters) with these external
/// senders.
fn external_senders(
    keys: &[(&[u8], &[u8])],
) -> openmls::prelude::Extensions<openmls::prelude::GroupContext> {
    use openmls::prelude::{
        BasicCredential, Extension, ExtensionType, Extensions, ExternalSender,
        RequiredCapabilitiesExtension, UnknownExtension,
    };
    use sotto::room::{RoomParams, PARAMS_EXTENSION_TYPE};
    let senders = keys
        .iter()
        .map(|(key, name)| {
            ExternalSender::new((*key).into(), BasicCredential::new(name.to_vec()).into())
        })
        .collect();
    Extensions::from_vec(vec![
        Extension::Unknown(
            PARAMS_EXTENSION_TYPE,
            UnknownExtension(RoomParams::default().encode()),
        ),
        Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
            &[ExtensionType::Unknown(PARAMS_EXTENSION_TYPE)],
            &[],
            &[],
        )),
        Extension::ExternalSenders(senders),
    ])
    .unwrap()
}

/// Finding 1 (issue 10): an external sender's GroupContextExtensions proposal (here the
/// relay makes a second key of its own an external sender) is refused, so no commit
/// changes the group context for it.
#[test]
fn external_sender_cannot_change_the_group_context() {
    use openmls::prelude::{
        ExternalProposal, GroupEpoch, GroupId, LeafNodeIndex, SenderExtensionIndex,
    };
    use openmls_rust_crypto::OpenMlsRustCrypto;

    let t0 = Instant::now();
    let relay = RawClient::fresh(b"relay");
    let relay2 = RawClient::fresh(b"relay2");
    let mut m = relay_room(&relay.signer, t0);
    let group = GroupId::from_slice(m[0].room.group_id());
    let proposal = ExternalProposal::new_group_context_extensions::<OpenMlsRustCrypto>(
        external_senders(&[
            (relay.signer.public(), b"relay"),
            (relay2.signer.public(), b"relay2"),
        ]),
        group.clone(),
        GroupEpoch::from(m[0].room.epoch()),
        &relay.signer,
        SenderExtensionIndex::new(0),
    )
    .unwrap()
    .to_bytes()
    .unwrap();
    let verdicts: Vec<_> = m
        .iter_mut()
        .map(|x| x.room.process(&proposal).map(|_| ()))
        .collect();
    let commit = m[0].room.commit_pending_proposals().unwrap();
    deliver_commit(&mut m, 0, commit, t0);
    // Were the second key an external sender now, its removal proposal would be queued.
    let bob = m[1].room.own_leaf();
    let removal = ExternalProposal::new_remove::<OpenMlsRustCrypto>(
        LeafNodeIndex::new(bob),
        group,
        GroupEpoch::from(m[0].room.epoch()),
        &relay2.signer,
        SenderExtensionIndex::new(1),
    )
    .unwrap()
    .to_bytes()
    .unwrap();
    assert!(
        m[0].room.process(&removal).is_err(),
        "the relay's second key became an external sender: {verdicts:?}"
    );
    for verdict in verdicts {
        assert_eq!(
            verdict,
            Err(RoomError::Rejected(Rejection::ProposalNotAllowed))
        );
    }
}

/// Erin's openmls group processes and merges a commit of another member.
fn raw_merge(client: &RawClient, group: &mut openmls::prelude::MlsGroup, commit: &[u8]) {
    use openmls::prelude::tls_codec::Deserialize as _;
    use openmls::prelude::{MlsMessageIn, ProcessedMessageContent};
    let message = MlsMessageIn::tls_deserialize_exact(commit)
        .unwrap()
        .try_into_protocol_message()
        .unwrap();
    match group
        .process_message(&client.provider, message)
        .unwrap()
        .into_content()
    {
        ProcessedMessageContent::StagedCommitMessage(staged) => group
            .merge_staged_commit(&client.provider, *staged)
            .unwrap(),
        _ => panic!("a commit"),
    }
}

/// Whether the room still takes a removal proposal from `relay` as its external sender 0.
fn relay_is_external_sender(member: &mut Member, relay: &RawClient) -> bool {
    use openmls::prelude::{
        ExternalProposal, GroupEpoch, GroupId, LeafNodeIndex, SenderExtensionIndex,
    };
    let own = member.room.own_leaf();
    let other = member
        .room
        .members()
        .iter()
        .map(|x| x.leaf)
        .find(|l| *l != own)
        .unwrap();
    let removal = ExternalProposal::new_remove::<openmls_rust_crypto::OpenMlsRustCrypto>(
        LeafNodeIndex::new(other),
        GroupId::from_slice(member.room.group_id()),
        GroupEpoch::from(member.room.epoch()),
        &relay.signer,
        SenderExtensionIndex::new(0),
    )
    .unwrap()
    .to_bytes()
    .unwrap();
    member.room.process(&removal).is_ok()
}

/// Finding 1 (issue 10): a member's GroupContextExtensions proposal that replaces the
/// external senders (openmls lets members' GCE proposals through as PrivateMessages) is
/// refused unless the room allows policy changes; even then only the app's approval
/// commits it.
#[test]
fn member_cannot_change_the_external_senders_silently() {
    for allow in [false, true] {
        let t0 = Instant::now();
        let relay = RawClient::fresh(b"relay");
        let config = RoomConfig {
            external_senders: vec![(relay.signer.public().to_vec(), b"relay".to_vec())],
            allow_policy_changes: allow,
            ..RoomConfig::default()
        };
        let (mut m, erin, mut erin_group) = room_with_erin(config, t0);
        let propose = |group: &mut openmls::prelude::MlsGroup| {
            let (proposal, _) = group
                .propose_group_context_extensions(
                    &erin.provider,
                    external_senders(&[(erin.signer.public(), b"erin")]),
                    &erin.signer,
                )
                .unwrap();
            proposal.to_bytes().unwrap()
        };
        let proposal = propose(&mut erin_group);
        let verdicts: Vec<_> = m.iter_mut().map(|x| x.room.process(&proposal)).collect();
        if allow {
            let info = queued(verdicts[0].as_ref().unwrap());
            assert_eq!(info.kind, ProposalKind::GroupContextExtensions);
            assert_eq!(
                info.sender,
                ProposalSender::Member(erin_group.own_leaf_index().u32())
            );
            assert!(info.needs_approval);
        } else {
            for verdict in &verdicts {
                assert_eq!(
                    verdict.as_ref().map(|_| ()),
                    Err(&RoomError::Rejected(Rejection::ProposalNotAllowed))
                );
            }
        }
        let commit = m[0].room.commit_pending_proposals().unwrap();
        let message = commit.message.clone();
        deliver_commit(&mut m, 0, commit, t0);
        raw_merge(&erin, &mut erin_group, &message);
        assert!(
            relay_is_external_sender(&mut m[0], &relay),
            "the external senders were replaced without approval (allow = {allow})"
        );
        if allow {
            // Approved, it goes through.
            let proposal = propose(&mut erin_group);
            let info = queued(&m[1].process(&proposal, t0));
            m[0].process(&proposal, t0);
            let commit = m[1].room.commit_proposals(&[info.id]).unwrap();
            deliver_commit(&mut m, 1, commit, t0);
            assert!(!relay_is_external_sender(&mut m[0], &relay));
        }
    }
}

/// Finding 10 (issue 10), part b: `Commit::invited` lists every KeyPackage the commit adds,
/// whatever path made the commit (here an approved Add proposal of a member), so the
/// Welcome reaches the invitee's mailbox.
#[test]
fn invited_lists_every_added_key_package() {
    let t0 = Instant::now();
    let (mut m, erin, mut erin_group) = room_with_erin(RoomConfig::default(), t0);
    let frank = RawClient::fresh(b"frank");
    let (proposal, _) = erin_group
        .propose_add_member(&erin.provider, &erin.signer, &frank.key_package)
        .unwrap();
    let proposal = proposal.to_bytes().unwrap();
    let info = queued(&m[0].process(&proposal, t0));
    m[1].process(&proposal, t0);
    let commit = m[0].room.commit_proposals(&[info.id]).unwrap();
    assert_eq!(commit.invited, vec![frank.key_package_ref()]);
    let welcome = commit.welcome.clone().unwrap();
    deliver_commit(&mut m, 0, commit, t0);
    assert!(frank.join(&welcome).is_some());
}

/// Finding 4 (issue 10), reserved exporter labels: `Room::export_secret` refuses sotto's own
/// labels (the SFrame base key, and the "sotto " namespace such as the channel token), so an
/// app cannot be led to hand out the media keys; other labels still work.
#[test]
fn export_secret_refuses_reserved_labels() {
    let t0 = Instant::now();
    let m = room_of(
        &["alice", "bob"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    for label in [
        sotto::room::SFRAME_EXPORTER_LABEL,
        sotto::room::TOKEN_EXPORTER_LABEL,
        "sotto 1 member fingerprint",
        "sotto ",
        "sotto 2 anything",
    ] {
        let got = m[0].room.export_secret(label, b"", 16);
        assert_eq!(got, Err(RoomError::ReservedLabel), "{label:?}");
    }
    let a = m[0]
        .room
        .export_secret("my app 1 chat key", b"", 32)
        .unwrap();
    assert_eq!(
        a,
        m[1].room
            .export_secret("my app 1 chat key", b"", 32)
            .unwrap()
    );
    assert_eq!(a.len(), 32);
}

/// Finding 1 (issue 10), commit policy: a queued removal of the committer itself stays out of
/// its own commits (a commit cannot remove its sender); another member commits it.
#[test]
fn removal_of_the_committer_is_left_to_another_member() {
    use openmls::prelude::{
        ExternalProposal, GroupEpoch, GroupId, LeafNodeIndex, SenderExtensionIndex,
    };
    use openmls_rust_crypto::OpenMlsRustCrypto;

    let t0 = Instant::now();
    let relay = RawClient::fresh(b"relay");
    let mut m = relay_room(&relay.signer, t0);
    let alice = m[0].room.own_leaf();
    let proposal = ExternalProposal::new_remove::<OpenMlsRustCrypto>(
        LeafNodeIndex::new(alice),
        GroupId::from_slice(m[0].room.group_id()),
        GroupEpoch::from(m[0].room.epoch()),
        &relay.signer,
        SenderExtensionIndex::new(0),
    )
    .unwrap()
    .to_bytes()
    .unwrap();
    for x in m.iter_mut() {
        assert_eq!(queued(&x.process(&proposal, t0)).target, Some(alice));
    }
    let own = m[0].room.commit_pending_proposals().unwrap();
    assert!(own.keys.members().iter().any(|m| m.leaf == alice));
    m[0].room.discard_pending().unwrap();
    let commit = m[1].room.commit_pending_proposals().unwrap();
    deliver_commit(&mut m, 1, commit, t0);
    assert!(m[0].removed);
    assert_eq!(m[1].room.members().len(), 2);
}
