//! [`FrameSealer`]: one sending key with its counter.

use bytes::BytesMut;
use zeroize::Zeroizing;

use super::aead::{Aad, AeadKey};
use super::schedule::{nonce_for, KeyMaterial};
use super::{CipherSuite, FrameError, Header};

/// One SFrame sending key (suite, KID, key, salt) together with its frame counter.
///
/// The counter starts where the constructor says and only moves forward: each sealed frame
/// takes the next value, a failed seal takes none, and after `u64::MAX` sealing fails with
/// [`FrameError::CounterExhausted`] instead of wrapping. The type is neither `Clone` nor
/// `Copy`, so one key's counter cannot be forked by copying its sealer.
pub struct FrameSealer {
    kid: u64,
    key: AeadKey,
    salt: Zeroizing<[u8; CipherSuite::NONCE_LEN]>,
    /// Counter of the next frame; `None` once every value has been used.
    next_ctr: Option<u64>,
    /// Reused buffer joining header and metadata for GCM.
    scratch: Vec<u8>,
}

impl FrameSealer {
    /// A sealer for `kid` whose key is derived from `base_key`, starting at counter 0.
    pub fn new(suite: CipherSuite, kid: u64, base_key: &[u8]) -> Result<FrameSealer, FrameError> {
        FrameSealer::starting_at(suite, kid, base_key, 0)
    }

    /// A sealer whose first frame uses counter `ctr`.
    ///
    /// For resuming a key after a restart and for test vectors. **The caller's duty:** no
    /// frame may ever have been sealed under this (`base_key`, `kid`, `suite`) with a counter
    /// `>= ctr`, or nonces repeat and confidentiality and integrity are lost. Persist the
    /// counter (ahead of use) before relying on this.
    pub fn starting_at(
        suite: CipherSuite,
        kid: u64,
        base_key: &[u8],
        ctr: u64,
    ) -> Result<FrameSealer, FrameError> {
        let km = KeyMaterial::derive(suite, kid, base_key)?;
        Ok(FrameSealer {
            kid,
            key: AeadKey::new(suite, km.sframe_key())?,
            salt: Zeroizing::new(*km.sframe_salt()),
            next_ctr: Some(ctr),
            scratch: Vec::new(),
        })
    }

    /// The KID this sealer writes into every header.
    pub fn kid(&self) -> u64 {
        self.kid
    }

    /// The cipher suite of the key.
    pub fn suite(&self) -> CipherSuite {
        self.key.suite()
    }

    /// The counter the next frame will use, or `None` if the counter is exhausted.
    pub fn next_counter(&self) -> Option<u64> {
        self.next_ctr
    }

    /// Size of the next sealed frame for a payload of `payload_len` bytes:
    /// header ‖ ciphertext ‖ tag.
    pub fn sealed_len(&self, payload_len: usize) -> usize {
        let header = Header::new(self.kid, self.next_ctr.unwrap_or(u64::MAX));
        header
            .encoded_len()
            .saturating_add(payload_len)
            .saturating_add(self.key.suite().tag_len())
    }

    /// Seals `payload` and appends `header ‖ ciphertext ‖ tag` to `out`; returns the number
    /// of bytes appended. `metadata` is authenticated but not sent.
    ///
    /// `out` only allocates when its capacity is too small; a buffer that is cleared and
    /// reused does not.
    pub fn seal(
        &mut self,
        metadata: &[u8],
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<usize, FrameError> {
        let start = out.len();
        let len = self.sealed_len(payload.len());
        out.resize(start.saturating_add(len), 0);
        let dst = out
            .get_mut(start..)
            .ok_or(FrameError::BufferTooSmall { needed: len })?;
        match self.seal_into(metadata, payload, dst) {
            Ok(n) => {
                out.truncate(start.saturating_add(n));
                Ok(n)
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Seals `payload` into the start of `out`; returns the frame length.
    ///
    /// Fails with [`FrameError::BufferTooSmall`] (naming the size needed) when `out` is
    /// shorter than [`sealed_len`](Self::sealed_len); the counter is then not used.
    #[inline]
    pub fn seal_into(
        &mut self,
        metadata: &[u8],
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, FrameError> {
        let ctr = self.next_ctr.ok_or(FrameError::CounterExhausted)?;
        let header = Header::new(self.kid, ctr);
        let tag_len = self.key.suite().tag_len();
        let hlen = header.encoded_len();
        let total = hlen
            .checked_add(payload.len())
            .and_then(|n| n.checked_add(tag_len))
            .ok_or(FrameError::PayloadTooLarge)?;
        let frame = out
            .get_mut(..total)
            .ok_or(FrameError::BufferTooSmall { needed: total })?;
        let too_small = FrameError::BufferTooSmall { needed: total };
        let (head, rest) = frame.split_at_mut_checked(hlen).ok_or(too_small)?;
        let (body, tag) = rest.split_at_mut_checked(payload.len()).ok_or(too_small)?;
        header.encode(head)?;
        body.copy_from_slice(payload);
        let aad = Aad {
            header: head,
            metadata,
        };
        let nonce = nonce_for(&self.salt, ctr);
        self.key
            .seal_parts(&nonce, aad, &mut self.scratch, body, tag)?;
        // Only a frame actually sealed consumes its counter.
        self.next_ctr = ctr.checked_add(1);
        Ok(total)
    }
}

impl std::fmt::Debug for FrameSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSealer")
            .field("suite", &self.key.suite())
            .field("kid", &self.kid)
            .field("next_ctr", &self.next_ctr)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_exhaustion_is_an_error() {
        let mut s =
            FrameSealer::starting_at(CipherSuite::AesGcm128Sha256, 1, b"k", u64::MAX).unwrap();
        let mut out = BytesMut::new();
        s.seal(b"", b"x", &mut out).unwrap();
        assert_eq!(s.next_counter(), None);
        let before = out.len();
        assert_eq!(
            s.seal(b"", b"x", &mut out),
            Err(FrameError::CounterExhausted)
        );
        assert_eq!(out.len(), before);
    }

    #[test]
    fn small_buffer_does_not_use_counter() {
        let mut s = FrameSealer::new(CipherSuite::AesCtr128HmacSha256_80, 1, b"k").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            s.seal_into(b"", b"hello", &mut buf),
            Err(FrameError::BufferTooSmall { needed: 1 + 5 + 10 })
        );
        assert_eq!(s.next_counter(), Some(0));
    }
}
