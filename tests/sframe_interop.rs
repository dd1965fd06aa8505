//! Cross-check of RFC 9605 §5.2 with another implementation, the `sframe` crate 2.1: the
//! per-sender key sotto's `MediaSession` uses for (epoch, leaf) is the one `sframe` derives
//! with `derive_from_mls` from the same MLS exporter and KID, and `sframe` opens a frame
//! sotto sealed.

mod common;

use std::time::{Duration, Instant};

use common::room_of;
use sframe::frame::{EncryptedFrame, MediaFrame, SingleUseCounter};
use sframe::key::{DecryptionKey, EncryptionKey};
use sframe::mls::{MlsExporter, MlsKeyId, MlsKeyIdBitRange};
use sotto::frame::{CipherSuite, FrameSealer};
use sotto::keys::KidLayout;
use sotto::media::MediaConfig;
use sotto::room::{RoomConfig, RoomError};

/// sframe's exporter interface over a sotto room's MLS exporter.
struct RoomExporter<'a>(&'a common::MemRoom);

impl MlsExporter for RoomExporter<'_> {
    type BaseKey = Vec<u8>;
    type Error = RoomError;
    fn export_secret(&self, label: &str, context: &[u8], len: usize) -> Result<Vec<u8>, RoomError> {
        self.0.export_secret(label, context, len)
    }
}

#[test]
fn sframe_crate_derives_the_same_keys_and_opens_our_frames() {
    // The ring backend of sframe 2.1 has the GCM suites.
    let config = RoomConfig {
        suite: CipherSuite::AesGcm128Sha256,
        layout: KidLayout::new(16, 4).unwrap(),
        ..RoomConfig::default()
    };
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob", "carol"],
        config.clone(),
        MediaConfig::default(),
        t0,
    );
    let t = t0 + Duration::from_secs(1);
    let range = MlsKeyIdBitRange::new(4, 16); // E = 4, S = 16 (epoch bits first)

    for i in 0..m.len() {
        let epoch = m[i].room.epoch();
        let leaf = m[i].room.own_leaf();
        let frame = m[i].seal(b"an opus packet", t);
        let kid = m[i].media.sending_kid().unwrap();
        let mls_kid = MlsKeyId::try_new(0u64, epoch, leaf, range).unwrap();
        assert_eq!(u64::from(mls_kid), kid, "same KID layout");

        // sframe opens sotto's frame with a key it derived itself through the exporter.
        let exporter = RoomExporter(&m[(i + 1) % 3].room);
        let dec = DecryptionKey::derive_from_mls(
            sframe::CipherSuite::AesGcm128Sha256,
            &exporter,
            mls_kid,
        )
        .unwrap();
        let opened = EncryptedFrame::try_new(&frame[..])
            .unwrap()
            .decrypt(&dec)
            .unwrap();
        assert_eq!(opened.payload(), b"an opus packet");

        // Same key and salt: the same (counter, payload) seals to identical bytes.
        let enc = EncryptionKey::derive_from_mls(
            sframe::CipherSuite::AesGcm128Sha256,
            &exporter,
            mls_kid,
        )
        .unwrap();
        let mut counter = SingleUseCounter::new(77);
        let theirs = MediaFrame::try_new(&mut counter, b"same input".as_slice())
            .unwrap()
            .encrypt(&enc)
            .unwrap();
        let base = m[i]
            .room
            .export_secret("SFrame 1.0 Base Key", b"", config.suite.key_len())
            .unwrap();
        let mut ours = FrameSealer::starting_at(config.suite, kid, &base, 77).unwrap();
        let mut out = bytes::BytesMut::new();
        ours.seal(b"", b"same input", &mut out).unwrap();
        assert_eq!(&out[..], theirs.sframe_cipher_text());

        // And sotto's media session opens sframe's frame as coming from that leaf.
        let j = (i + 2) % 3;
        let (got, plain) = m[j].open(theirs.sframe_cipher_text(), t).unwrap();
        assert_eq!((got.leaf, got.epoch, got.ctr), (leaf, epoch, 77));
        assert_eq!(plain, b"same input");
    }
}
