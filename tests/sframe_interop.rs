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
use sotto::media::{EpochKeys, MediaConfig};
use sotto::room::{RoomConfig, RoomError, SFRAME_EXPORTER_LABEL};

/// sframe's exporter interface over the base key a sotto room exported for the epoch
/// (`Room::export_secret` refuses sotto's own labels, so the key comes from the room's
/// `EpochKeys`). It answers only the RFC 9605 §5.2 export.
struct RoomExporter(EpochKeys);

impl RoomExporter {
    fn of(room: &common::MemRoom) -> RoomExporter {
        RoomExporter(room.receive_keys().unwrap())
    }
}

impl MlsExporter for RoomExporter {
    type BaseKey = Vec<u8>;
    type Error = RoomError;
    fn export_secret(&self, label: &str, context: &[u8], len: usize) -> Result<Vec<u8>, RoomError> {
        let base = self.0.expose_base_key();
        if label != SFRAME_EXPORTER_LABEL || !context.is_empty() || len != base.len() {
            return Err(RoomError::ReservedLabel);
        }
        Ok(base.to_vec())
    }
}

#[test]
fn sframe_crate_derives_the_same_keys_and_opens_our_frames() {
    // The ring backend of sframe 2.1 has the GCM suites.
    let config = RoomConfig {
        params: sotto::room::RoomParams {
            suite: CipherSuite::AesGcm128Sha256,
            layout: KidLayout::new(16, 4).unwrap(),
            stream_bits: 2,
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
        let exporter = RoomExporter::of(&m[(i + 1) % 3].room);
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
        let keys = m[i].room.receive_keys().unwrap();
        let base = keys.expose_base_key();
        assert_eq!(base.len(), config.params.suite.key_len());
        let mut ours = FrameSealer::starting_at(config.params.suite, kid, base, 77).unwrap();
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
