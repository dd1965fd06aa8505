//! sotto's openmls provider (`sotto::provider`): its storage keeps a room whole across a
//! reload, and (feature `pq`) its X-Wing (openmls' libcrux provider) agrees key for key
//! and ciphertext for ciphertext with openmls' RustCrypto provider, so members on either
//! provider share post-quantum rooms.

use openmls_rust_crypto::OpenMlsRustCrypto;
use sotto::provider::{Provider, Storage};
use sotto::room::{Identity, MlsSuite, Room, RoomConfig, RoomError};

fn config(suite: MlsSuite) -> RoomConfig {
    RoomConfig {
        mls_suite: suite,
        ..RoomConfig::default()
    }
}

/// A room is reloaded from a storage handle kept by the app, with its own commit still
/// pending: the reloaded room hands the commit back byte for byte, merges its echo, and
/// ends in the same epoch as the member who processed it.
#[test]
fn a_room_reloads_from_a_kept_storage_handle_with_its_pending_commit() {
    for suite in suites() {
        let storage = Storage::default();
        let alice_id =
            Identity::new(Provider::with_storage(storage.clone()).unwrap(), b"alice").unwrap();
        let alice_key = alice_id.signature_key().to_vec();
        let (mut alice, _) = Room::create(alice_id, config(suite)).unwrap();
        let bob_id = Identity::new(Provider::new().unwrap(), b"bob").unwrap();
        let kp = bob_id.key_package(suite).unwrap();
        let invite = alice.invite(&[&kp.bytes]).unwrap();
        alice.confirm_pending().unwrap();
        let (mut bob, _) =
            Room::join(bob_id, RoomConfig::default(), &invite.welcome.unwrap()).unwrap();

        let update = alice.self_update().unwrap();
        let group_id = alice.group_id().to_vec();
        let epoch = alice.epoch();
        drop(alice);

        let (mut alice, keys) = Room::load(
            Provider::with_storage(storage.clone()).unwrap(),
            &alice_key,
            &group_id,
            RoomConfig::default(),
        )
        .unwrap();
        assert_eq!((alice.epoch(), keys.epoch()), (epoch, epoch));
        assert_eq!(alice.mls_suite(), suite);
        assert_eq!(
            alice.pending_commit_message(),
            Some(update.message.as_slice())
        );
        bob.process(&update.message).unwrap();
        alice.process(&update.message).unwrap();
        assert_eq!(alice.epoch(), epoch + 1);
        assert_eq!(alice.safety_code(), bob.safety_code());
        assert_eq!(alice.channel_token(), bob.channel_token());

        // And the reloaded room goes on: bob's next commit.
        let next = bob.self_update().unwrap();
        bob.confirm_pending().unwrap();
        alice.process(&next.message).unwrap();
        assert_eq!(alice.safety_code(), bob.safety_code());
    }
}

/// A snapshot is independent of the storage it was taken from: later writes do not reach
/// it, so a member restored from it is back where it was.
#[test]
fn a_snapshot_is_a_checkpoint() {
    let storage = Storage::default();
    let alice_id =
        Identity::new(Provider::with_storage(storage.clone()).unwrap(), b"alice").unwrap();
    let alice_key = alice_id.signature_key().to_vec();
    let (mut alice, _) = Room::create(alice_id, RoomConfig::default()).unwrap();
    let checkpoint = storage.snapshot().unwrap();
    let group_id = alice.group_id().to_vec();
    let epoch = alice.epoch();
    alice.self_update().unwrap();
    alice.confirm_pending().unwrap();
    assert_eq!(alice.epoch(), epoch + 1);

    let (restored, _) = Room::load(
        Provider::with_storage(checkpoint).unwrap(),
        &alice_key,
        &group_id,
        RoomConfig::default(),
    )
    .unwrap();
    assert_eq!(restored.epoch(), epoch);
    let (current, _) = Room::load(
        Provider::with_storage(storage).unwrap(),
        &alice_key,
        &group_id,
        RoomConfig::default(),
    )
    .unwrap();
    assert_eq!(current.epoch(), epoch + 1);
}

/// A group the storage never held is `NotFound`, not a panic or an empty room.
#[test]
fn loading_from_an_empty_storage_is_not_found() {
    let result = Room::load(
        Provider::new().unwrap(),
        &[7; 32],
        &[1; 16],
        RoomConfig::default(),
    );
    assert!(matches!(result, Err(RoomError::NotFound)));
}

fn suites() -> Vec<MlsSuite> {
    #[cfg(feature = "pq")]
    return vec![MlsSuite::Classic, MlsSuite::HybridPq];
    #[cfg(not(feature = "pq"))]
    return vec![MlsSuite::Classic];
}

/// Members with sotto's provider and with openmls' RustCrypto provider share a room of
/// every suite: each commits, everyone processes, all end with the same epoch, safety code
/// and channel token.
#[test]
fn members_on_either_provider_share_a_room() {
    for suite in suites() {
        let (mut alice, _) = Room::create(
            Identity::new(Provider::new().unwrap(), b"alice").unwrap(),
            config(suite),
        )
        .unwrap();
        let bob_id = Identity::new(OpenMlsRustCrypto::default(), b"bob").unwrap();
        let carol_id = Identity::new(Provider::new().unwrap(), b"carol").unwrap();
        let kps = [
            bob_id.key_package(suite).unwrap().bytes,
            carol_id.key_package(suite).unwrap().bytes,
        ];
        let invite = alice.invite(&[&kps[0], &kps[1]]).unwrap();
        alice.confirm_pending().unwrap();
        let welcome = invite.welcome.unwrap();
        let (mut bob, _) = Room::join(bob_id, RoomConfig::default(), &welcome).unwrap();
        let (mut carol, _) = Room::join(carol_id, RoomConfig::default(), &welcome).unwrap();

        for round in 0..2 {
            // Bob (RustCrypto) encrypts path secrets to Alice and Carol (sotto's provider),
            // and they to him.
            let commit = bob.self_update().unwrap();
            bob.confirm_pending().unwrap();
            alice.process(&commit.message).unwrap();
            carol.process(&commit.message).unwrap();
            let commit = carol.self_update().unwrap();
            carol.confirm_pending().unwrap();
            alice.process(&commit.message).unwrap();
            bob.process(&commit.message).unwrap();
            let commit = alice.self_update().unwrap();
            alice.confirm_pending().unwrap();
            bob.process(&commit.message).unwrap();
            carol.process(&commit.message).unwrap();
            let seen = |room_epoch, code, token| {
                assert_eq!(room_epoch, alice.epoch(), "{suite:?} round {round}");
                assert_eq!(code, alice.safety_code());
                assert_eq!(token, alice.channel_token());
            };
            seen(bob.epoch(), bob.safety_code(), bob.channel_token());
            seen(carol.epoch(), carol.safety_code(), carol.channel_token());
        }
    }
}

/// The HPKE operations of the X-Wing suite through sotto's provider (libcrux) and through
/// RustCrypto: the same key pair from the same secret, each opens what the other sealed,
/// the same exported secret both ways; a key pair of another secret opens nothing.
#[cfg(feature = "pq")]
#[test]
fn xwing_agrees_across_providers() {
    use openmls_traits::crypto::OpenMlsCrypto;
    use openmls_traits::random::OpenMlsRand;
    use openmls_traits::types::{HpkeAeadType, HpkeConfig, HpkeKdfType, HpkeKemType};
    use openmls_traits::OpenMlsProvider as _;

    let sotto = Provider::new().unwrap();
    let rust = OpenMlsRustCrypto::default();
    let (a, b) = (sotto.crypto(), rust.crypto());
    let config = || {
        HpkeConfig(
            HpkeKemType::XWingKemDraft6,
            HpkeKdfType::HkdfSha256,
            HpkeAeadType::AesGcm128,
        )
    };
    for round in 0..16 {
        let ikm = rust.rand().random_vec(32).unwrap();
        let ka = a.derive_hpke_keypair(config(), &ikm).unwrap();
        let kb = b.derive_hpke_keypair(config(), &ikm).unwrap();
        assert_eq!(ka.public, kb.public, "round {round}: public keys");
        assert_eq!(
            ka.private.as_ref(),
            kb.private.as_ref(),
            "round {round}: private keys"
        );
        assert_eq!(ka.public.len(), 1216);

        let plaintext = rust.rand().random_vec(48).unwrap();
        let from_a = a
            .hpke_seal(config(), &kb.public, b"info", b"aad", &plaintext)
            .unwrap();
        let from_b = b
            .hpke_seal(config(), &ka.public, b"info", b"aad", &plaintext)
            .unwrap();
        assert_eq!(
            b.hpke_open(config(), &from_a, &kb.private, b"info", b"aad")
                .unwrap(),
            plaintext
        );
        assert_eq!(
            a.hpke_open(config(), &from_b, &ka.private, b"info", b"aad")
                .unwrap(),
            plaintext
        );
        // Another member's key opens neither; neither does other associated data.
        let other = a
            .derive_hpke_keypair(config(), &rust.rand().random_vec(32).unwrap())
            .unwrap();
        assert!(a
            .hpke_open(config(), &from_b, &other.private, b"info", b"aad")
            .is_err());
        assert!(b
            .hpke_open(config(), &from_a, &kb.private, b"info", b"other")
            .is_err());

        let (enc, secret_a) = a
            .hpke_setup_sender_and_export(config(), &kb.public, b"info", b"ctx", 32)
            .unwrap();
        let secret_b = b
            .hpke_setup_receiver_and_export(config(), &enc, &kb.private, b"info", b"ctx", 32)
            .unwrap();
        assert_eq!(secret_a.as_ref(), secret_b.as_ref());
        let (enc, secret_b) = b
            .hpke_setup_sender_and_export(config(), &ka.public, b"info", b"ctx", 32)
            .unwrap();
        let secret_a = a
            .hpke_setup_receiver_and_export(config(), &enc, &ka.private, b"info", b"ctx", 32)
            .unwrap();
        assert_eq!(secret_a.as_ref(), secret_b.as_ref());
    }
}

/// A record that does not decode as what openmls stored there (a corrupted or tampered
/// storage) fails the load with a typed error, never a panic or a half-loaded room.
#[test]
fn a_corrupted_record_fails_the_load_with_a_storage_error() {
    use openmls::prelude::GroupId;
    use openmls_traits::storage::{traits, Entity, StorageProvider as _, CURRENT_VERSION};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Garbage(Vec<u8>, u64);
    impl Entity<CURRENT_VERSION> for Garbage {}
    impl traits::TreeSync<CURRENT_VERSION> for Garbage {}
    impl traits::GroupContext<CURRENT_VERSION> for Garbage {}

    for corrupt in ["tree", "context"] {
        let storage = Storage::default();
        let id = Identity::new(Provider::with_storage(storage.clone()).unwrap(), b"a").unwrap();
        let key = id.signature_key().to_vec();
        let (room, _) = Room::create(id, RoomConfig::default()).unwrap();
        let group_id = GroupId::from_slice(room.group_id());
        drop(room);
        let garbage = Garbage(vec![0xff; 40], 7);
        match corrupt {
            "tree" => storage.write_tree(&group_id, &garbage).unwrap(),
            _ => storage.write_context(&group_id, &garbage).unwrap(),
        }
        let loaded = Room::load(
            Provider::with_storage(storage).unwrap(),
            &key,
            group_id.as_slice(),
            RoomConfig::default(),
        );
        assert!(
            matches!(loaded, Err(RoomError::Storage)),
            "{corrupt}: {:?}",
            loaded.err()
        );
    }
}
