//! The SFrame header (RFC 9605 §4.3): a config byte, then the KID and the counter.
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+---------------------+---------------------+
//! |X|  K  |Y|  C  |   KID (0-8 bytes)   |   CTR (0-8 bytes)   |
//! +-+-+-+-+-+-+-+-+---------------------+---------------------+
//! ```
//!
//! A value below 8 is carried in the config byte itself (`X`/`Y` clear); a larger one follows
//! in `K + 1` / `C + 1` big-endian bytes. Encoding is always minimal, and parsing rejects any
//! non-minimal form, so every header has exactly one encoding.

use super::FrameError;

/// An SFrame header: key id and counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Key id (KID).
    pub kid: u64,
    /// Frame counter (CTR).
    pub ctr: u64,
}

/// Bytes needed to carry `v` after the config byte (0 when it fits in 3 bits).
const fn value_len(v: u64) -> usize {
    if v < 8 {
        0
    } else {
        // 1..=8 bytes: 8 minus the number of leading zero bytes (at most 7 here).
        8 - (v.leading_zeros() / 8) as usize
    }
}

/// Reads one field described by the 4 config bits `flag` (X or Y) and `bits` (K or C).
#[inline]
fn read_value(extended: bool, bits: u8, input: &[u8]) -> Result<(u64, usize), FrameError> {
    if !extended {
        return Ok((u64::from(bits), 0));
    }
    let len = usize::from(bits) + 1;
    let bytes = input.get(..len).ok_or(FrameError::MalformedHeader)?;
    let value = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    // Minimal encoding: an extended value is at least 8 and has no leading zero byte.
    if value_len(value) != len {
        return Err(FrameError::MalformedHeader);
    }
    Ok((value, len))
}

impl Header {
    /// The longest possible header: config byte, 8 KID bytes, 8 CTR bytes.
    pub const MAX_LEN: usize = 17;

    /// A header with this KID and counter.
    pub const fn new(kid: u64, ctr: u64) -> Header {
        Header { kid, ctr }
    }

    /// Length of the (minimal) encoding of this header.
    pub const fn encoded_len(&self) -> usize {
        1 + value_len(self.kid) + value_len(self.ctr)
    }

    /// Writes the minimal encoding into the start of `out` and returns its length.
    ///
    /// Fails with [`FrameError::BufferTooSmall`] when `out` is shorter than
    /// [`encoded_len`](Self::encoded_len).
    #[inline]
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, FrameError> {
        let klen = value_len(self.kid);
        let clen = value_len(self.ctr);
        let total = 1 + klen + clen;
        let out = out
            .get_mut(..total)
            .ok_or(FrameError::BufferTooSmall { needed: total })?;
        let (config, rest) = out
            .split_first_mut()
            .ok_or(FrameError::BufferTooSmall { needed: total })?;
        let (kid_out, ctr_out) = rest.split_at_mut(klen);
        *config = (field_bits(self.kid, klen) << 4) | field_bits(self.ctr, clen);
        write_be(self.kid, kid_out);
        write_be(self.ctr, ctr_out);
        Ok(total)
    }

    /// Parses a header from the start of `input`; returns it and its encoded length (the
    /// ciphertext starts there).
    ///
    /// Truncated or non-minimal encodings fail with [`FrameError::MalformedHeader`].
    #[inline]
    pub fn parse(input: &[u8]) -> Result<(Header, usize), FrameError> {
        let (&config, rest) = input.split_first().ok_or(FrameError::MalformedHeader)?;
        let (kid, klen) = read_value(config & 0x80 != 0, (config >> 4) & 0x07, rest)?;
        let rest = rest.get(klen..).ok_or(FrameError::MalformedHeader)?;
        let (ctr, clen) = read_value(config & 0x08 != 0, config & 0x07, rest)?;
        Ok((Header { kid, ctr }, 1 + klen + clen))
    }
}

/// The 4 config bits for a value taking `len` extra bytes.
#[inline]
fn field_bits(v: u64, len: usize) -> u8 {
    if len == 0 {
        // v < 8 here, so the low three bits are the value.
        u8::try_from(v & 0x07).unwrap_or_default()
    } else {
        // len in 1..=8: X/Y set, K/C = len - 1.
        0x08 | u8::try_from((len - 1) & 0x07).unwrap_or_default()
    }
}

/// Writes the low `out.len()` bytes of `v`, big-endian.
#[inline]
fn write_be(v: u64, out: &mut [u8]) {
    let bytes = v.to_be_bytes();
    let skip = bytes.len().saturating_sub(out.len());
    if let Some(src) = bytes.get(skip..) {
        if let Some(dst) = out.get_mut(..src.len()) {
            dst.copy_from_slice(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(kid: u64, ctr: u64) -> Vec<u8> {
        let h = Header::new(kid, ctr);
        let mut buf = [0u8; Header::MAX_LEN];
        let n = h.encode(&mut buf).unwrap();
        assert_eq!(n, h.encoded_len());
        assert_eq!(Header::parse(&buf[..n]).unwrap(), (h, n));
        buf[..n].to_vec()
    }

    #[test]
    fn small_values_fit_in_config_byte() {
        assert_eq!(round_trip(0, 0), [0x00]);
        assert_eq!(round_trip(7, 7), [0x77]);
        assert_eq!(round_trip(8, 0), [0x80, 0x08]);
        assert_eq!(round_trip(0, 8), [0x08, 0x08]);
        assert_eq!(
            round_trip(0x100, 0x1_0000),
            [0x9a, 0x01, 0x00, 0x01, 0x00, 0x00]
        );
        assert_eq!(round_trip(u64::MAX, u64::MAX).len(), 17);
    }

    #[test]
    fn rejects_non_minimal_and_truncated() {
        // KID 3 written in one extended byte.
        assert_eq!(
            Header::parse(&[0x80, 0x03]),
            Err(FrameError::MalformedHeader)
        );
        // KID 8 written in two bytes with a leading zero.
        assert_eq!(
            Header::parse(&[0x90, 0x00, 0x08]),
            Err(FrameError::MalformedHeader)
        );
        assert_eq!(Header::parse(&[]), Err(FrameError::MalformedHeader));
        assert_eq!(Header::parse(&[0x80]), Err(FrameError::MalformedHeader));
        assert_eq!(
            Header::parse(&[0x8f, 0x08, 0x01]),
            Err(FrameError::MalformedHeader)
        );
    }

    #[test]
    fn encode_reports_needed_size() {
        let mut buf = [0u8; 2];
        assert_eq!(
            Header::new(0x100, 0).encode(&mut buf),
            Err(FrameError::BufferTooSmall { needed: 3 })
        );
    }
}
