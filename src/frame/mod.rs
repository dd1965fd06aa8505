//! RFC 9605 SFrame: the frame format, cipher suites, key schedule, sealing and opening.
//!
//! This layer knows nothing of MLS, rooms or Opus. A [`FrameSealer`] holds one sending key
//! *and its counter*, so the only way to seal is with a fresh nonce. A [`FrameOpener`] holds
//! receiving keys by KID, each with a replay window that is checked before decryption and
//! updated only once a frame authenticated.
//!
//! A sealed frame is `header ‖ ciphertext ‖ tag`; the AEAD's additional data is
//! `header ‖ metadata` (RFC 9605 §4.4.3), where the metadata is whatever the application
//! binds to the frame without sending it.
//!
//! ```
//! use bytes::BytesMut;
//! use sotto::frame::{CipherSuite, FrameOpener, FrameSealer};
//!
//! let base_key = [7u8; 16];
//! let suite = CipherSuite::AesCtr128HmacSha256_80;
//! let mut sealer = FrameSealer::new(suite, 3, &base_key)?;
//! let mut opener = FrameOpener::new();
//! opener.insert_key(3, suite, &base_key)?;
//!
//! let mut wire = BytesMut::new();
//! sealer.seal(b"", b"opus packet", &mut wire)?;
//! let mut plain = BytesMut::new();
//! let opened = opener.open(b"", &wire, &mut plain)?;
//! assert_eq!((opened.kid, opened.ctr), (3, 0));
//! assert_eq!(&plain[..], b"opus packet");
//! // The same frame again is a replay.
//! assert!(opener.open(b"", &wire, &mut plain).is_err());
//! # Ok::<(), sotto::frame::FrameError>(())
//! ```

mod aead;
mod header;
mod opener;
mod replay;
mod schedule;
mod sealer;
mod suite;
#[cfg(test)]
mod vectors;

pub use aead::{AeadKey, Nonce};
pub use header::Header;
pub use opener::{FrameOpener, Opened, DEFAULT_FAILURE_BUDGET};
pub use replay::{DEFAULT_REPLAY_WINDOW, MAX_REPLAY_WINDOW, MIN_REPLAY_WINDOW};
pub use schedule::KeyMaterial;
pub use sealer::FrameSealer;
pub use suite::{CipherSuite, SuiteHash};

/// Everything that can go wrong sealing or opening a frame.
///
/// Every cryptographic failure when opening is the single [`AuthenticationFailed`]
/// variant, so errors give no oracle on keys or plaintext.
///
/// [`AuthenticationFailed`]: FrameError::AuthenticationFailed
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header is truncated or not minimally encoded.
    #[error("malformed SFrame header")]
    MalformedHeader,
    /// The frame is shorter than its header plus the suite's tag.
    #[error("frame too short for its header and tag")]
    Truncated,
    /// No key is installed for this KID.
    #[error("no key for KID {kid}")]
    UnknownKid {
        /// The KID named by the frame.
        kid: u64,
    },
    /// This counter was already opened under this key.
    #[error("replayed frame")]
    Replayed,
    /// The counter is older than the replay window remembers.
    #[error("frame counter too old for the replay window")]
    TooOld,
    /// The frame did not authenticate (wrong key, tampered bytes, wrong metadata, ...).
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The key has seen as many authentication failures as its budget allows
    /// ([`FrameOpener::with_failure_budget`]) and opens nothing more.
    #[error("key retired after too many authentication failures")]
    KeyRetired,
    /// The sealer has used every counter value; a new key is needed.
    #[error("frame counter exhausted")]
    CounterExhausted,
    /// The output buffer is too small.
    #[error("buffer too small: {needed} bytes needed")]
    BufferTooSmall {
        /// Bytes the operation needs.
        needed: usize,
    },
    /// The suite id is not one of RFC 9605's.
    #[error("unsupported cipher suite {id}")]
    UnsupportedSuite {
        /// The id that was given.
        id: u16,
    },
    /// A raw AEAD key has the wrong length for its suite.
    #[error("key must be {expected} bytes")]
    InvalidKeyLength {
        /// The suite's `Nk`.
        expected: usize,
    },
    /// The payload is longer than the AEAD can encrypt.
    #[error("payload too large")]
    PayloadTooLarge,
    /// The key schedule failed (cannot happen with RFC 9605 suites; reported, never panicked).
    #[error("key derivation failed")]
    KeyDerivation,
}
