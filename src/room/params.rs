//! The room's media parameters, carried in the MLS group context so that every member,
//! including one that joins from a Welcome, reads them from the group itself.
//!
//! The extension (type [`PARAMS_EXTENSION_TYPE`], from MLS's private-use range
//! 0xF000–0xFFFF, RFC 9420 §17.3) is listed in the group's required capabilities, so a
//! client whose KeyPackage does not declare it cannot be added. Its content, for other
//! implementations:
//!
//! ```text
//! byte 0      version: 2
//! bytes 1-2   SFrame cipher suite (RFC 9605 §8.1 code point, big-endian)
//! byte 3      S: KID sender (leaf) bits, 1..=32
//! byte 4      E: KID epoch bits, 2..=8
//! byte 5      T: KID stream (context) bits, 0..=4
//! ```
//!
//! A member's stream `s` (0 ≤ s < 2^T) seals under
//! `KID = (s << (S + E)) | (leaf << E) | (epoch mod 2^E)` (RFC 9605 §5.2's context bits),
//! so stream 0's KIDs are those of a room without streams.
//!
//! Nothing follows. A version this build does not know, or a value it does not support, is
//! refused with a [`ParamsError`] naming it.

use crate::frame::CipherSuite;
use crate::keys::KidLayout;

/// The MLS extension type of sotto's room parameters (private use).
pub const PARAMS_EXTENSION_TYPE: u16 = 0xF5A0;

/// The layout version this build writes and reads.
pub const PARAMS_VERSION: u8 = 2;

const ENCODED_LEN: usize = 6;

pub use crate::keys::MAX_STREAM_BITS;

/// What every member of a room must agree on to open each other's frames. The creator
/// chooses them ([`RoomConfig::params`](super::RoomConfig::params)); joiners read them from
/// the Welcome; a member may change the suite later ([`Room::change_suite`](super::Room::change_suite)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoomParams {
    /// SFrame suite of the media. Default `AES_128_CTR_HMAC_SHA256_80`.
    pub suite: CipherSuite,
    /// KID layout. Default S = 16, E = 4. Fixed for the room's life.
    pub layout: KidLayout,
    /// T: how many KID context bits name a member's stream, so each member may send
    /// `2^T` streams ([`StreamId`](crate::keys::StreamId)), each with its own key and
    /// counter. Default 2 (4 streams). Fixed for the room's life.
    pub stream_bits: u8,
}

impl Default for RoomParams {
    fn default() -> Self {
        RoomParams {
            suite: CipherSuite::AesCtr128HmacSha256_80,
            layout: KidLayout::default(),
            stream_bits: 2,
        }
    }
}

/// Why room parameters were refused: each variant names the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// The group context has no sotto parameters (not a sotto room, or made by a build
    /// before they existed).
    #[error("the room carries no sotto parameters")]
    Missing,
    /// The extension is shorter or longer than its version's layout.
    #[error("room parameters of {0} bytes do not match their layout")]
    Malformed(usize),
    /// A layout version this build does not know.
    #[error("room parameters version {0} not supported")]
    UnsupportedVersion(u8),
    /// An SFrame suite this build does not implement.
    #[error("SFrame cipher suite {0:#06x} not supported")]
    UnsupportedSuite(u16),
    /// A KID layout outside S 1..=32, E 2..=8.
    #[error("KID layout S = {sender_bits}, E = {epoch_bits} not supported")]
    UnsupportedLayout {
        /// S.
        sender_bits: u8,
        /// E.
        epoch_bits: u8,
    },
    /// Stream bits above [`MAX_STREAM_BITS`].
    #[error("{0} KID stream bits not supported")]
    UnsupportedStreamBits(u8),
    /// A change of the KID layout or stream bits after creation (only the suite may
    /// change).
    #[error("the KID layout and stream bits are fixed for the room's life")]
    Fixed,
}

impl RoomParams {
    /// The extension's content.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.push(PARAMS_VERSION);
        out.extend_from_slice(&self.suite.id().to_be_bytes());
        out.push(self.layout.sender_bits());
        out.push(self.layout.epoch_bits());
        out.push(self.stream_bits);
        out
    }

    /// Reads the extension's content; any value this build does not support is refused
    /// with the error that names it.
    pub fn decode(bytes: &[u8]) -> Result<RoomParams, ParamsError> {
        let (&version, rest) = bytes.split_first().ok_or(ParamsError::Malformed(0))?;
        if version != PARAMS_VERSION {
            return Err(ParamsError::UnsupportedVersion(version));
        }
        let fields: &[u8; ENCODED_LEN - 1] = rest
            .try_into()
            .map_err(|_| ParamsError::Malformed(bytes.len()))?;
        let [s0, s1, sender_bits, epoch_bits, stream_bits] = *fields;
        let suite_id = u16::from_be_bytes([s0, s1]);
        let suite =
            CipherSuite::from_id(suite_id).map_err(|_| ParamsError::UnsupportedSuite(suite_id))?;
        let layout = KidLayout::new(sender_bits, epoch_bits).map_err(|_| {
            ParamsError::UnsupportedLayout {
                sender_bits,
                epoch_bits,
            }
        })?;
        let params = RoomParams {
            suite,
            layout,
            stream_bits,
        };
        params.check()?;
        Ok(params)
    }

    /// Whether this build supports the parameters. (S ≤ 32, E ≤ 8 and T ≤ 4 always fit a
    /// 64-bit KID.)
    pub fn check(&self) -> Result<(), ParamsError> {
        if self.stream_bits > MAX_STREAM_BITS {
            return Err(ParamsError::UnsupportedStreamBits(self.stream_bits));
        }
        Ok(())
    }

    /// How many streams each member may send (`2^T`).
    pub fn streams(&self) -> u16 {
        1 << self.stream_bits.min(MAX_STREAM_BITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_what_it_refuses() {
        for suite in CipherSuite::ALL {
            let params = RoomParams {
                suite,
                layout: KidLayout::new(8, 6).unwrap(),
                stream_bits: 3,
            };
            let bytes = params.encode();
            assert_eq!(bytes.len(), ENCODED_LEN);
            assert_eq!(RoomParams::decode(&bytes), Ok(params));
        }
        let good = RoomParams::default().encode();
        assert_eq!(good, [2, 0, 1, 16, 4, 2], "the documented layout");
        let with = |at: usize, value: &[u8]| {
            let mut b = good.clone();
            b[at..at + value.len()].copy_from_slice(value);
            RoomParams::decode(&b)
        };
        assert_eq!(with(0, &[3]), Err(ParamsError::UnsupportedVersion(3)));
        // Version 1 (a room-wide KID context instead of stream bits, builds of 2026-12-02)
        // is refused by its version, not misread.
        assert_eq!(with(0, &[1]), Err(ParamsError::UnsupportedVersion(1)));
        assert_eq!(with(1, &[0, 9]), Err(ParamsError::UnsupportedSuite(9)));
        assert_eq!(
            with(3, &[40, 4]),
            Err(ParamsError::UnsupportedLayout {
                sender_bits: 40,
                epoch_bits: 4
            })
        );
        assert_eq!(
            with(3, &[16, 1]),
            Err(ParamsError::UnsupportedLayout {
                sender_bits: 16,
                epoch_bits: 1
            })
        );
        assert_eq!(with(5, &[5]), Err(ParamsError::UnsupportedStreamBits(5)));
        // The widest layout with the most streams.
        assert!(with(3, &[32, 8, 4]).is_ok());
        assert_eq!(
            RoomParams::decode(&good[..5]),
            Err(ParamsError::Malformed(5))
        );
        assert_eq!(
            RoomParams::decode(&[good.as_slice(), &[0]].concat()),
            Err(ParamsError::Malformed(7))
        );
        assert_eq!(RoomParams::decode(&[]), Err(ParamsError::Malformed(0)));
    }
}
