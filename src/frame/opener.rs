//! [`FrameOpener`]: receiving keys by KID, each with its replay window.

use bytes::BytesMut;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::aead::{Aad, AeadKey};
use super::replay::{effective_window, ReplayWindow, DEFAULT_REPLAY_WINDOW};
use super::schedule::{nonce_for, KeyMaterial};
use super::{CipherSuite, FrameError, Header};
use crate::hash::IntMap;

/// What [`FrameOpener::open`] found: who sealed the frame, its counter, and the plaintext
/// length written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// KID of the key that opened the frame.
    pub kid: u64,
    /// The frame's counter.
    pub ctr: u64,
    /// Plaintext bytes written.
    pub len: usize,
}

struct ReceiveKey {
    key: AeadKey,
    salt: Zeroizing<[u8; CipherSuite::NONCE_LEN]>,
    window: ReplayWindow,
    /// Frames under this key that failed authentication.
    failures: u32,
}

/// Authentication failures a key tolerates before it opens nothing more
/// ([`FrameOpener::with_failure_budget`]).
///
/// Genuine traffic does not fail authentication (datagrams with bit errors are dropped by
/// the UDP checksum), so failures are an injector guessing tags. With the 32-bit tag of
/// `AES_128_CTR_HMAC_SHA256_32`, 1,024 guesses succeed with probability at most
/// 2^10 × 2^-32 = 2^-22 over the key's whole life; with 64 bits and more, 2^-54 or less.
pub const DEFAULT_FAILURE_BUDGET: u32 = 1024;

/// Receiving keys by KID, each with a replay window.
///
/// A frame is looked up by the KID in its header (no trial decryption), screened against
/// that key's replay window, authenticated, and only then recorded in the window.
pub struct FrameOpener {
    keys: IntMap<u64, ReceiveKey>,
    window: usize,
    failure_budget: u32,
    scratch: Vec<u8>,
}

impl Default for FrameOpener {
    fn default() -> Self {
        FrameOpener::new()
    }
}

/// The parts of a frame: header, its length, and the split of the rest into ciphertext and
/// tag for a suite.
struct Parsed<'a> {
    header: Header,
    head: &'a [u8],
    ct: &'a [u8],
    tag: &'a [u8],
}

#[inline]
fn split_frame(
    frame: &[u8],
    tag_len: usize,
    header: Header,
    hlen: usize,
) -> Result<Parsed<'_>, FrameError> {
    let (head, rest) = frame
        .split_at_checked(hlen)
        .ok_or(FrameError::MalformedHeader)?;
    let ct_len = rest
        .len()
        .checked_sub(tag_len)
        .ok_or(FrameError::Truncated)?;
    let (ct, tag) = rest.split_at_checked(ct_len).ok_or(FrameError::Truncated)?;
    Ok(Parsed {
        header,
        head,
        ct,
        tag,
    })
}

impl FrameOpener {
    /// An opener with no keys and the default replay window
    /// ([`DEFAULT_REPLAY_WINDOW`] counters).
    pub fn new() -> FrameOpener {
        FrameOpener::with_replay_window(DEFAULT_REPLAY_WINDOW)
    }

    /// An opener whose keys each remember `counters` counters behind the newest frame.
    ///
    /// The size is rounded up to a power of two and kept within
    /// [`MIN_REPLAY_WINDOW`](super::MIN_REPLAY_WINDOW)..=[`MAX_REPLAY_WINDOW`](super::MAX_REPLAY_WINDOW);
    /// [`replay_window`](Self::replay_window) tells the size in force.
    pub fn with_replay_window(counters: usize) -> FrameOpener {
        FrameOpener {
            keys: IntMap::default(),
            window: effective_window(counters),
            failure_budget: DEFAULT_FAILURE_BUDGET,
            scratch: Vec::new(),
        }
    }

    /// This opener with a budget of `failures` authentication failures per key: once a
    /// key has seen that many, it opens nothing more ([`FrameError::KeyRetired`]) until it
    /// is installed anew under another key. Default [`DEFAULT_FAILURE_BUDGET`].
    pub fn with_failure_budget(mut self, failures: u32) -> FrameOpener {
        self.failure_budget = failures;
        self
    }

    /// Authentication failures seen so far under `kid`'s key.
    pub fn failures(&self, kid: u64) -> Option<u32> {
        self.keys.get(&kid).map(|k| k.failures)
    }

    /// Counters each key's replay window covers.
    pub fn replay_window(&self) -> usize {
        self.window
    }

    /// Installs the key for `kid`, derived from `base_key` under `suite`.
    ///
    /// Installing the very key that is already there keeps its replay window (so replays
    /// stay rejected); installing a different key for the KID replaces it with a fresh
    /// window.
    pub fn insert_key(
        &mut self,
        kid: u64,
        suite: CipherSuite,
        base_key: &[u8],
    ) -> Result<(), FrameError> {
        let km = KeyMaterial::derive(suite, kid, base_key)?;
        if let Some(existing) = self.keys.get(&kid) {
            let same_salt: bool = existing.salt.ct_eq(km.sframe_salt()).into();
            if existing.key.suite() == suite && same_salt {
                return Ok(());
            }
        }
        let key = ReceiveKey {
            key: AeadKey::new(suite, km.sframe_key())?,
            salt: Zeroizing::new(*km.sframe_salt()),
            window: ReplayWindow::new(self.window),
            failures: 0,
        };
        self.keys.insert(kid, key);
        Ok(())
    }

    /// Removes the key for `kid`; returns whether there was one.
    pub fn remove_key(&mut self, kid: u64) -> bool {
        self.keys.remove(&kid).is_some()
    }

    /// Whether a key is installed for `kid`.
    pub fn contains_key(&self, kid: u64) -> bool {
        self.keys.contains_key(&kid)
    }

    /// Number of keys installed.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is installed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The highest counter authenticated so far under `kid`'s key.
    pub fn highest_counter(&self, kid: u64) -> Option<u64> {
        self.keys.get(&kid).and_then(|k| k.window.top())
    }

    /// Opens `frame` and appends its plaintext to `out`.
    ///
    /// `metadata` must equal what the sender bound to the frame. On any error nothing is
    /// appended and the key's replay window is unchanged.
    pub fn open(
        &mut self,
        metadata: &[u8],
        frame: &[u8],
        out: &mut BytesMut,
    ) -> Result<Opened, FrameError> {
        let start = out.len();
        let (header, hlen) = Header::parse(frame)?;
        let key = self
            .keys
            .get_mut(&header.kid)
            .ok_or(FrameError::UnknownKid { kid: header.kid })?;
        let parsed = split_frame(frame, key.key.suite().tag_len(), header, hlen)?;
        let needed = parsed.ct.len();
        out.resize(start.saturating_add(needed), 0);
        let dst = out
            .get_mut(start..)
            .ok_or(FrameError::BufferTooSmall { needed })?;
        let budget = self.failure_budget;
        let result = open_with(key, budget, &mut self.scratch, metadata, &parsed, dst);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Opens `frame` into the start of `out`; returns what was opened.
    ///
    /// Fails with [`FrameError::BufferTooSmall`] when `out` cannot hold the plaintext
    /// (frame length minus header and tag). On any error `out` holds no plaintext and the
    /// key's replay window is unchanged.
    #[inline]
    pub fn open_into(
        &mut self,
        metadata: &[u8],
        frame: &[u8],
        out: &mut [u8],
    ) -> Result<Opened, FrameError> {
        let (header, hlen) = Header::parse(frame)?;
        let key = self
            .keys
            .get_mut(&header.kid)
            .ok_or(FrameError::UnknownKid { kid: header.kid })?;
        let parsed = split_frame(frame, key.key.suite().tag_len(), header, hlen)?;
        let needed = parsed.ct.len();
        let dst = out
            .get_mut(..needed)
            .ok_or(FrameError::BufferTooSmall { needed })?;
        open_with(
            key,
            self.failure_budget,
            &mut self.scratch,
            metadata,
            &parsed,
            dst,
        )
    }
}

/// Failure budget and replay screen, authenticate and decrypt into `dst` (exactly the
/// ciphertext length), then record the counter.
#[inline]
fn open_with(
    key: &mut ReceiveKey,
    failure_budget: u32,
    scratch: &mut Vec<u8>,
    metadata: &[u8],
    parsed: &Parsed<'_>,
    dst: &mut [u8],
) -> Result<Opened, FrameError> {
    let ctr = parsed.header.ctr;
    if key.failures >= failure_budget {
        return Err(FrameError::KeyRetired);
    }
    key.window.check(ctr)?;
    let dst = dst
        .get_mut(..parsed.ct.len())
        .ok_or(FrameError::BufferTooSmall {
            needed: parsed.ct.len(),
        })?;
    dst.copy_from_slice(parsed.ct);
    let aad = Aad {
        header: parsed.head,
        metadata,
    };
    let nonce = nonce_for(&key.salt, ctr);
    if let Err(e) = key.key.open_parts(&nonce, aad, scratch, dst, parsed.tag) {
        key.failures = key.failures.saturating_add(1);
        return Err(e);
    }
    key.window.record(ctr);
    Ok(Opened {
        kid: parsed.header.kid,
        ctr,
        len: dst.len(),
    })
}

impl std::fmt::Debug for FrameOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameOpener")
            .field("keys", &self.keys.len())
            .field("replay_window", &self.window)
            .finish_non_exhaustive()
    }
}
