//! The room's media parameters, carried in the MLS group context so that every member,
//! including one that joins from a Welcome, reads them from the group itself.
//!
//! The extension (type [`PARAMS_EXTENSION_TYPE`], from MLS's private-use range
//! 0xF000–0xFFFF, RFC 9420 §17.3) is listed in the group's required capabilities, so a
//! client whose KeyPackage does not declare it cannot be added. Its content, for other
//! implementations:
//!
//! ```text
//! byte 0      version: 1
//! bytes 1-2   SFrame cipher suite (RFC 9605 §8.1 code point, big-endian)
//! byte 3      S: KID sender (leaf) bits, 1..=32
//! byte 4      E: KID epoch bits, 2..=8
//! bytes 5-12  KID context value (big-endian); it must fit in the 64 − S − E high bits
//! ```
//!
//! Nothing follows. A version this build does not know, or a value it does not support, is
//! refused with a [`ParamsError`] naming it.

use crate::frame::CipherSuite;
use crate::keys::KidLayout;

/// The MLS extension type of sotto's room parameters (private use).
pub const PARAMS_EXTENSION_TYPE: u16 = 0xF5A0;

/// The layout version this build writes and reads.
pub const PARAMS_VERSION: u8 = 1;

const ENCODED_LEN: usize = 13;

/// What every member of a room must agree on to open each other's frames. The creator
/// chooses them ([`RoomConfig::params`](super::RoomConfig::params)); joiners read them from
/// the Welcome; a member may change the suite later ([`Room::change_suite`](super::Room::change_suite)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoomParams {
    /// SFrame suite of the media. Default `AES_128_CTR_HMAC_SHA256_80`.
    pub suite: CipherSuite,
    /// KID layout. Default S = 16, E = 4. Fixed for the room's life.
    pub layout: KidLayout,
    /// KID context value. Default 0. Fixed for the room's life.
    pub context: u64,
}

impl Default for RoomParams {
    fn default() -> Self {
        RoomParams {
            suite: CipherSuite::AesCtr128HmacSha256_80,
            layout: KidLayout::default(),
            context: 0,
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
    /// A context value that does not fit above the layout's S + E bits.
    #[error("KID context {0} does not fit the layout")]
    ContextTooLarge(u64),
    /// A change of the KID layout or context after creation (only the suite may change).
    #[error("the KID layout and context are fixed for the room's life")]
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
        out.extend_from_slice(&self.context.to_be_bytes());
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
        let [s0, s1, sender_bits, epoch_bits, c @ ..] = *fields;
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
            context: u64::from_be_bytes(c),
        };
        params.check()?;
        Ok(params)
    }

    /// Whether this build supports the parameters (the context fits the layout).
    pub fn check(&self) -> Result<(), ParamsError> {
        self.layout
            .compose(self.context, 0, 0)
            .map(|_| ())
            .map_err(|_| ParamsError::ContextTooLarge(self.context))
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
                context: 3,
            };
            let bytes = params.encode();
            assert_eq!(bytes.len(), ENCODED_LEN);
            assert_eq!(RoomParams::decode(&bytes), Ok(params));
        }
        let good = RoomParams::default().encode();
        assert_eq!(
            good,
            [1, 0, 1, 16, 4, 0, 0, 0, 0, 0, 0, 0, 0],
            "the documented layout"
        );
        let with = |at: usize, value: &[u8]| {
            let mut b = good.clone();
            b[at..at + value.len()].copy_from_slice(value);
            RoomParams::decode(&b)
        };
        assert_eq!(with(0, &[2]), Err(ParamsError::UnsupportedVersion(2)));
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
        assert_eq!(
            with(5, &u64::MAX.to_be_bytes()),
            Err(ParamsError::ContextTooLarge(u64::MAX))
        );
        assert_eq!(
            RoomParams::decode(&good[..12]),
            Err(ParamsError::Malformed(12))
        );
        assert_eq!(
            RoomParams::decode(&[good.as_slice(), &[0]].concat()),
            Err(ParamsError::Malformed(14))
        );
        assert_eq!(RoomParams::decode(&[]), Err(ParamsError::Malformed(0)));
    }
}
