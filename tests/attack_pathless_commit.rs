//! A commit with no UpdatePath (MLS allows one for adds only) draws no randomness: its
//! epoch secret is a function of the previous epoch and the commit's content, and both the
//! KeyPackages and Ed25519 signatures are deterministic. A member rolled back to before an
//! invite that re-invites the same KeyPackage (an app retrying after a crash) would reach
//! the very epoch its earlier instance reached — and, as the maker of that commit, seal in
//! it from counter 0 again under the same key. Every commit sotto makes carries a path, so
//! the two epochs differ.

mod common;

use common::identity;
use openmls_traits::OpenMlsProvider as _;
use sotto::media::EpochStatus;
use sotto::provider::{Provider, Storage};
use sotto::room::MlsSuite;
use sotto::room::{Room, RoomConfig, RoomEvent};

fn provider_from(snapshot: &Storage) -> Provider {
    Provider::with_storage(snapshot.snapshot().unwrap()).unwrap()
}

fn confirmed_keys(room: &mut Room<Provider>) -> Vec<u8> {
    room.confirm_pending()
        .unwrap()
        .into_iter()
        .find_map(|e| match e {
            RoomEvent::Keys(k) => {
                assert_eq!(k.status(), EpochStatus::Current, "its own commit seals");
                Some(k.expose_base_key().to_vec())
            }
            _ => None,
        })
        .unwrap()
}

#[test]
fn re_inviting_after_a_rollback_reaches_another_epoch() {
    let config = RoomConfig::default();
    let (mut alice, _) = Room::create(identity("alice"), config.clone()).unwrap();
    let signature_key = alice.signature_key().to_vec();
    let group_id = alice.group_id().to_vec();
    let snapshot = alice.provider().storage().snapshot().unwrap();

    let carol = identity("carol");
    let kp = carol.key_package(MlsSuite::Classic).unwrap();
    let first = alice.invite(&[&kp.bytes]).unwrap();
    let first_key = confirmed_keys(&mut alice);

    // Rolled back to before the invite; the app invites the same KeyPackage again.
    let (mut again, _) =
        Room::load(provider_from(&snapshot), &signature_key, &group_id, config).unwrap();
    let second = again.invite(&[&kp.bytes]).unwrap();
    let second_key = confirmed_keys(&mut again);
    assert_eq!(alice.epoch(), again.epoch());
    assert_ne!(first.message, second.message);
    assert_ne!(
        first_key, second_key,
        "the same epoch key twice: both instances would seal under it from counter 0"
    );
}
