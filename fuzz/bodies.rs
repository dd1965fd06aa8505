//! Bodies of the fuzz targets, shared by `fuzz_targets/*.rs` (libFuzzer) and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpus under `cargo test`.
//! Each body panics only when an invariant is broken; any input must be handled.

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
