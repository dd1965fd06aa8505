//! Bodies of the fuzz targets, shared by `fuzz_targets/*.rs` (libFuzzer) and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpus under `cargo test`.
//! Each body panics only when an invariant is broken; any input must be handled.
// Each fuzz target (and the corpus test) uses only some of these bodies.
#![allow(dead_code, unused_imports)]

use bytes::BytesMut;
use sotto::frame::{CipherSuite, FrameError, FrameOpener, Header};

/// `Header::parse` never panics, and parse → encode → parse is the identity.
pub fn header(data: &[u8]) {
    if let Ok((header, len)) = Header::parse(data) {
        assert!((1..=Header::MAX_LEN).contains(&len));
        assert_eq!(len, header.encoded_len());
        let mut buf = [0u8; Header::MAX_LEN];
        let n = header.encode(&mut buf).expect("MAX_LEN always fits");
        assert_eq!(&buf[..n], &data[..len], "encoding is unique");
        assert_eq!(Header::parse(&buf[..n]), Ok((header, n)));
    }
}

/// KIDs and suites of the keys the `open` target's opener holds.
pub const OPEN_KEYS: [(u64, CipherSuite); 5] = [
    (0, CipherSuite::AesCtr128HmacSha256_80),
    (1, CipherSuite::AesCtr128HmacSha256_64),
    (7, CipherSuite::AesCtr128HmacSha256_32),
    (8, CipherSuite::AesGcm128Sha256),
    (0x1234, CipherSuite::AesGcm256Sha512),
];

/// Base key of every key in [`OPEN_KEYS`].
pub const OPEN_BASE_KEY: &[u8] = b"sotto fuzz base key";

/// An opener holding the keys of [`OPEN_KEYS`].
pub fn open_opener() -> FrameOpener {
    let mut opener = FrameOpener::new();
    for (kid, suite) in OPEN_KEYS {
        opener
            .insert_key(kid, suite, OPEN_BASE_KEY)
            .expect("valid key");
    }
    opener
}

/// Arbitrary bytes into an opener holding a few keys. The first byte chooses how many of
/// the following bytes are metadata; the rest is the frame.
pub fn open(opener: &mut FrameOpener, data: &[u8]) {
    let Some((&meta_len, rest)) = data.split_first() else {
        return;
    };
    let meta_len = usize::from(meta_len % 16).min(rest.len());
    let (metadata, frame) = rest.split_at(meta_len);
    let mut out = BytesMut::new();
    match opener.open(metadata, frame, &mut out) {
        Ok(opened) => {
            let (header, hlen) = Header::parse(frame).expect("opened frames parse");
            let suite = OPEN_KEYS
                .iter()
                .find(|(kid, _)| *kid == header.kid)
                .map(|(_, s)| *s)
                .expect("opened under a known KID");
            assert_eq!(opened.kid, header.kid);
            assert_eq!(opened.ctr, header.ctr);
            assert_eq!(opened.len, frame.len() - hlen - suite.tag_len());
            assert_eq!(out.len(), opened.len);
            // The same frame again is a replay.
            assert_eq!(
                opener.open(metadata, frame, &mut out),
                Err(FrameError::Replayed)
            );
        }
        Err(_) => assert!(out.is_empty(), "no plaintext on error"),
    }
    // The caller-buffer path, with a buffer that may be too small.
    let mut small = [0u8; 32];
    let _ = opener.open_into(metadata, frame, &mut small);
}

pub use room_fixture::{room_fixture, room_ingest};

mod room_fixture {
    use std::collections::HashMap;
    use std::sync::{OnceLock, RwLock};

    use openmls_memory_storage::MemoryStorage;
    use openmls_rust_crypto::RustCrypto;
    use sotto::media::ChannelToken;
    use sotto::room::{Identity, Room, RoomConfig};

    /// An MLS provider over a memory storage that can be snapshotted and restored, so every
    /// fuzz input starts from the same live room.
    pub struct SnapProvider {
        crypto: RustCrypto,
        storage: MemoryStorage,
    }

    impl SnapProvider {
        fn new(values: HashMap<Vec<u8>, Vec<u8>>) -> SnapProvider {
            SnapProvider {
                crypto: RustCrypto::default(),
                storage: MemoryStorage {
                    values: RwLock::new(values),
                },
            }
        }

        fn snapshot(&self) -> HashMap<Vec<u8>, Vec<u8>> {
            self.storage.values.read().expect("lock").clone()
        }
    }

    impl openmls_traits::OpenMlsProvider for SnapProvider {
        type CryptoProvider = RustCrypto;
        type RandProvider = RustCrypto;
        type StorageProvider = MemoryStorage;
        fn storage(&self) -> &MemoryStorage {
            &self.storage
        }
        fn crypto(&self) -> &RustCrypto {
            &self.crypto
        }
        fn rand(&self) -> &RustCrypto {
            &self.crypto
        }
    }

    /// Alice's state in a live 3-member room, and a genuine commit (bob's self-update) that
    /// alice can process next.
    pub struct RoomFixture {
        snapshot: HashMap<Vec<u8>, Vec<u8>>,
        signature_key: Vec<u8>,
        group_id: Vec<u8>,
        /// The epoch alice is in.
        pub epoch: u64,
        token: ChannelToken,
        /// Bob's pending self-update commit, valid for alice's epoch.
        pub good_commit: Vec<u8>,
        /// A leave proposal from carol, valid for alice's epoch.
        pub good_proposal: Vec<u8>,
    }

    impl RoomFixture {
        fn build() -> RoomFixture {
            let config = RoomConfig::default();
            let alice = Identity::new(SnapProvider::new(HashMap::new()), b"alice").expect("id");
            let signature_key = alice.signature_key().to_vec();
            let (mut room, _) = Room::create(alice, config.clone()).expect("create");
            let bob = Identity::new(SnapProvider::new(HashMap::new()), b"bob").expect("id");
            let carol = Identity::new(SnapProvider::new(HashMap::new()), b"carol").expect("id");
            let kps = [
                bob.key_package().expect("kp").bytes,
                carol.key_package().expect("kp").bytes,
            ];
            let commit = room
                .invite(&[kps[0].as_slice(), kps[1].as_slice()])
                .expect("invite");
            room.confirm_pending().expect("confirm");
            let welcome = commit.welcome.expect("welcome");
            let (mut bob, _) = Room::join(bob, config.clone(), &welcome).expect("join");
            let (mut carol, _) = Room::join(carol, config, &welcome).expect("join");
            let good_commit = bob.self_update().expect("update").message;
            let good_proposal = carol.leave().expect("leave");
            RoomFixture {
                snapshot: room.provider().snapshot(),
                signature_key,
                group_id: room.group_id().to_vec(),
                epoch: room.epoch(),
                token: room.channel_token().expect("token"),
                good_commit,
                good_proposal,
            }
        }

        /// Alice's room, restored from the snapshot.
        pub fn restore(&self) -> Room<SnapProvider> {
            let provider = SnapProvider::new(self.snapshot.clone());
            Room::load(
                provider,
                &self.signature_key,
                &self.group_id,
                RoomConfig::default(),
            )
            .expect("restore")
            .0
        }
    }

    /// The shared fixture (built once per process).
    pub fn room_fixture() -> &'static RoomFixture {
        static FIXTURE: OnceLock<RoomFixture> = OnceLock::new();
        FIXTURE.get_or_init(RoomFixture::build)
    }

    /// Arbitrary bytes into `Room::process` of a live 3-member room: never a panic, and an
    /// error leaves the room as it was. With `full_check`, the room must then still process
    /// a genuine commit.
    pub fn room_ingest(data: &[u8], full_check: bool) {
        let fixture = room_fixture();
        let mut room = fixture.restore();
        if room.process(data).is_ok() {
            return;
        }
        assert_eq!(room.epoch(), fixture.epoch);
        assert!(room.is_active());
        assert_eq!(room.channel_token(), Ok(fixture.token));
        assert!(!room.has_pending_commit());
        if full_check {
            room.process(&fixture.good_commit)
                .expect("the room still processes a genuine commit");
            assert_eq!(room.epoch(), fixture.epoch + 1);
        }
    }
}
