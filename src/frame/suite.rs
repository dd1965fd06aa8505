//! The five RFC 9605 cipher suites (§4.5, IANA "SFrame Cipher Suites").

use super::FrameError;

/// Hash function used by a suite's key schedule (and, for the CTR suites, its HMAC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SuiteHash {
    /// SHA-256 (output 32 bytes).
    Sha256,
    /// SHA-512 (output 64 bytes).
    Sha512,
}

impl SuiteHash {
    /// Output length of the hash in bytes.
    pub const fn output_len(self) -> usize {
        match self {
            SuiteHash::Sha256 => 32,
            SuiteHash::Sha512 => 64,
        }
    }
}

/// An SFrame cipher suite (RFC 9605 §4.5 and §8.1), identified on the wire by a 2-byte id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CipherSuite {
    /// `AES_128_CTR_HMAC_SHA256_80` (id 0x0001): AES-128-CTR with a 10-byte HMAC-SHA256 tag.
    AesCtr128HmacSha256_80,
    /// `AES_128_CTR_HMAC_SHA256_64` (id 0x0002): AES-128-CTR with an 8-byte HMAC-SHA256 tag.
    AesCtr128HmacSha256_64,
    /// `AES_128_CTR_HMAC_SHA256_32` (id 0x0003): AES-128-CTR with a 4-byte HMAC-SHA256 tag.
    AesCtr128HmacSha256_32,
    /// `AES_128_GCM_SHA256_128` (id 0x0004).
    AesGcm128Sha256,
    /// `AES_256_GCM_SHA512_128` (id 0x0005).
    AesGcm256Sha512,
}

impl CipherSuite {
    /// All suites, in id order.
    pub const ALL: [CipherSuite; 5] = [
        CipherSuite::AesCtr128HmacSha256_80,
        CipherSuite::AesCtr128HmacSha256_64,
        CipherSuite::AesCtr128HmacSha256_32,
        CipherSuite::AesGcm128Sha256,
        CipherSuite::AesGcm256Sha512,
    ];

    /// Nonce length `Nn` in bytes (12 for every suite).
    pub const NONCE_LEN: usize = 12;

    /// The IANA id of the suite.
    pub const fn id(self) -> u16 {
        match self {
            CipherSuite::AesCtr128HmacSha256_80 => 1,
            CipherSuite::AesCtr128HmacSha256_64 => 2,
            CipherSuite::AesCtr128HmacSha256_32 => 3,
            CipherSuite::AesGcm128Sha256 => 4,
            CipherSuite::AesGcm256Sha512 => 5,
        }
    }

    /// The suite with IANA id `id`, or [`FrameError::UnsupportedSuite`].
    pub const fn from_id(id: u16) -> Result<CipherSuite, FrameError> {
        match id {
            1 => Ok(CipherSuite::AesCtr128HmacSha256_80),
            2 => Ok(CipherSuite::AesCtr128HmacSha256_64),
            3 => Ok(CipherSuite::AesCtr128HmacSha256_32),
            4 => Ok(CipherSuite::AesGcm128Sha256),
            5 => Ok(CipherSuite::AesGcm256Sha512),
            _ => Err(FrameError::UnsupportedSuite { id }),
        }
    }

    /// Authentication tag length `Nt` in bytes: the per-frame overhead besides the header.
    pub const fn tag_len(self) -> usize {
        match self {
            CipherSuite::AesCtr128HmacSha256_80 => 10,
            CipherSuite::AesCtr128HmacSha256_64 => 8,
            CipherSuite::AesCtr128HmacSha256_32 => 4,
            CipherSuite::AesGcm128Sha256 | CipherSuite::AesGcm256Sha512 => 16,
        }
    }

    /// AEAD key length `Nk` in bytes. For the CTR suites this is the AES key (16) followed by
    /// the HMAC key (32), as in RFC 9605 §4.5.1.
    pub const fn key_len(self) -> usize {
        match self {
            CipherSuite::AesCtr128HmacSha256_80
            | CipherSuite::AesCtr128HmacSha256_64
            | CipherSuite::AesCtr128HmacSha256_32 => 48,
            CipherSuite::AesGcm128Sha256 => 16,
            CipherSuite::AesGcm256Sha512 => 32,
        }
    }

    /// Hash of the key schedule (HKDF) and, for the CTR suites, of the HMAC.
    pub const fn hash(self) -> SuiteHash {
        match self {
            CipherSuite::AesGcm256Sha512 => SuiteHash::Sha512,
            _ => SuiteHash::Sha256,
        }
    }

    /// The suite's name in the IANA registry, e.g. `"AES_128_GCM_SHA256_128"`.
    pub const fn name(self) -> &'static str {
        match self {
            CipherSuite::AesCtr128HmacSha256_80 => "AES_128_CTR_HMAC_SHA256_80",
            CipherSuite::AesCtr128HmacSha256_64 => "AES_128_CTR_HMAC_SHA256_64",
            CipherSuite::AesCtr128HmacSha256_32 => "AES_128_CTR_HMAC_SHA256_32",
            CipherSuite::AesGcm128Sha256 => "AES_128_GCM_SHA256_128",
            CipherSuite::AesGcm256Sha512 => "AES_256_GCM_SHA512_128",
        }
    }

    /// True for the AES-CTR + HMAC suites (ids 1–3).
    pub const fn is_ctr_hmac(self) -> bool {
        matches!(
            self,
            CipherSuite::AesCtr128HmacSha256_80
                | CipherSuite::AesCtr128HmacSha256_64
                | CipherSuite::AesCtr128HmacSha256_32
        )
    }
}

impl std::fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl TryFrom<u16> for CipherSuite {
    type Error = FrameError;
    fn try_from(id: u16) -> Result<Self, FrameError> {
        CipherSuite::from_id(id)
    }
}

impl From<CipherSuite> for u16 {
    fn from(suite: CipherSuite) -> u16 {
        suite.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for s in CipherSuite::ALL {
            assert_eq!(CipherSuite::from_id(s.id()).unwrap(), s);
        }
        assert_eq!(
            CipherSuite::from_id(0),
            Err(FrameError::UnsupportedSuite { id: 0 })
        );
        assert_eq!(
            CipherSuite::from_id(6),
            Err(FrameError::UnsupportedSuite { id: 6 })
        );
    }
}
