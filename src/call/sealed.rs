//! Sealed handshake messages: what the call engine puts on a channel instead of a bare MLS
//! message, so that the relay (or SFU) sees neither the group id, nor the epoch, nor the
//! content type, nor the exact size of a commit or proposal.
//!
//! ```text
//! byte 0      0xA1 (a sealed handshake message, version 1; an MLS message starts with 0x00)
//! bytes 1-12  nonce: 12 random bytes, fresh for every message
//! bytes 13-   AES-128-GCM under the epoch's handshake key
//!             (MLS-Exporter("sotto 1 handshake key", "", 16) of the epoch whose channel
//!             carries it), AAD = byte 0 ‖ the channel token (16 bytes),
//!             plaintext = the MLS message's length (4 bytes, big-endian) ‖ the MLS
//!             message ‖ zero bytes up to the padded size; then the 16-byte tag
//! ```
//!
//! The whole is padded to a size bucket: the smallest power of two at least
//! [`CallConfig::handshake_padding`](super::CallConfig::handshake_padding) (default 4 KiB)
//! that holds it, at most [`MAX_HANDSHAKE`](crate::relay::MAX_HANDSHAKE).

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::media::{ChannelToken, HandshakeKey, CHANNEL_TOKEN_LEN};

/// The first byte of a sealed handshake message.
pub const SEALED_HANDSHAKE: u8 = 0xA1;

/// Bytes a sealed handshake message adds before padding: marker, nonce, length, tag.
pub const SEALED_OVERHEAD: usize = 1 + NONCE_LEN + 4 + TAG_LEN;

const TAG_LEN: usize = 16;
const HEADER: usize = 1 + NONCE_LEN;

/// Why a handshake message could not be sealed or opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Too large for the largest bucket.
    #[error("handshake message too large to seal")]
    TooLarge,
    /// Not a sealed handshake message, not under this key and channel, or malformed (one
    /// error for all: no oracle).
    #[error("sealed handshake message does not open")]
    Unopenable,
    /// No randomness for the nonce.
    #[error("no randomness for a nonce")]
    NoRandomness,
}

/// The padded size of a message of `len` bytes: the smallest power of two at least
/// `min_bucket` holding it with its overhead, `max` if only that holds it, or `None`
/// above `max`.
pub fn bucket(len: usize, min_bucket: usize, max: usize) -> Option<usize> {
    padded_size(len.checked_add(SEALED_OVERHEAD)?, min_bucket, max)
}

fn padded_size(need: usize, min_bucket: usize, max: usize) -> Option<usize> {
    let size = need.checked_next_power_of_two()?.max(min_bucket);
    if size <= max {
        Some(size)
    } else if need <= max {
        // Between the last power of two and the wire's maximum: the maximum is the bucket.
        Some(max)
    } else {
        None
    }
}

fn aad(token: &ChannelToken) -> [u8; 1 + CHANNEL_TOKEN_LEN] {
    let mut aad = [0u8; 1 + CHANNEL_TOKEN_LEN];
    let (first, rest) = aad.split_at_mut(1);
    first.copy_from_slice(&[SEALED_HANDSHAKE]);
    rest.copy_from_slice(&token.0);
    aad
}

fn aead_key(key: &HandshakeKey) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&AES_128_GCM, key.as_bytes())
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Unopenable)
}

/// Seals the MLS message `message` for the channel `token` under its epoch's `key` into
/// `out` (replaced), padded to its [bucket].
pub fn seal(
    key: &HandshakeKey,
    token: &ChannelToken,
    message: &[u8],
    min_bucket: usize,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(), SealError> {
    let size = bucket(message.len(), min_bucket, max).ok_or(SealError::TooLarge)?;
    let len = u32::try_from(message.len()).map_err(|_| SealError::TooLarge)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| SealError::NoRandomness)?;
    out.clear();
    out.push(SEALED_HANDSHAKE);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out.resize(size - TAG_LEN, 0);
    let body = out.get_mut(HEADER..).ok_or(SealError::TooLarge)?;
    let tag = aead_key(key)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(token)),
            body,
        )
        .map_err(|_| SealError::TooLarge)?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// Opens a sealed handshake message received on the channel `token` under its epoch's
/// `key`: the MLS message, in `scratch` (replaced).
pub fn open<'s>(
    key: &HandshakeKey,
    token: &ChannelToken,
    sealed: &[u8],
    scratch: &'s mut Vec<u8>,
) -> Result<&'s [u8], SealError> {
    let (&marker, rest) = sealed.split_first().ok_or(SealError::Unopenable)?;
    if marker != SEALED_HANDSHAKE || sealed.len() < SEALED_OVERHEAD {
        return Err(SealError::Unopenable);
    }
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Unopenable)?;
    scratch.clear();
    scratch.extend_from_slice(body);
    let plain = aead_key(key)?
        .open_in_place(nonce, Aad::from(aad(token)), scratch)
        .map_err(|_| SealError::Unopenable)?;
    let len = unpad(plain)?.len();
    scratch.get(4..4 + len).ok_or(SealError::Unopenable)
}

/// The message in `length (4 bytes, big-endian) ‖ message ‖ zero bytes`; anything else
/// (a length past the end, padding that is not all zero) is [`SealError::Unopenable`].
fn unpad(padded: &[u8]) -> Result<&[u8], SealError> {
    let (len, tail) = padded.split_at_checked(4).ok_or(SealError::Unopenable)?;
    let mut be = [0u8; 4];
    be.copy_from_slice(len);
    let len = usize::try_from(u32::from_be_bytes(be)).map_err(|_| SealError::Unopenable)?;
    let (message, padding) = tail.split_at_checked(len).ok_or(SealError::Unopenable)?;
    if padding.iter().any(|b| *b != 0) {
        return Err(SealError::Unopenable);
    }
    Ok(message)
}

/// The first byte of a padded Welcome.
pub const PADDED_WELCOME: u8 = 0xA2;

/// Bytes a padded Welcome adds before padding: marker and length.
pub const PADDED_WELCOME_OVERHEAD: usize = 1 + 4;

/// Pads the MLS Welcome `welcome` into `out` (replaced) to the smallest power of two at
/// least `min_bucket` that holds it with its [`PADDED_WELCOME_OVERHEAD`] (or to `max`):
/// `0xA2 ‖ length (4 bytes, big-endian) ‖ the Welcome ‖ zero bytes`. Not encrypted (the
/// invitee shares no key with the inviter before it joins): the padding hides the
/// Welcome's exact size, which tells the size of the room's ratchet tree.
pub fn pad_welcome(
    welcome: &[u8],
    min_bucket: usize,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(), SealError> {
    let need = welcome
        .len()
        .checked_add(PADDED_WELCOME_OVERHEAD)
        .ok_or(SealError::TooLarge)?;
    let size = padded_size(need, min_bucket, max).ok_or(SealError::TooLarge)?;
    let len = u32::try_from(welcome.len()).map_err(|_| SealError::TooLarge)?;
    out.clear();
    out.push(PADDED_WELCOME);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(welcome);
    out.resize(size, 0);
    Ok(())
}

/// The MLS Welcome inside a padded one; [`SealError::Unopenable`] for anything else
/// (another marker, a length beyond the end, padding that is not all zero).
pub fn unpad_welcome(padded: &[u8]) -> Result<&[u8], SealError> {
    let (&marker, rest) = padded.split_first().ok_or(SealError::Unopenable)?;
    if marker != PADDED_WELCOME {
        return Err(SealError::Unopenable);
    }
    unpad(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> HandshakeKey {
        HandshakeKey::from_exported([b; 16])
    }

    #[test]
    fn seals_to_buckets_and_opens_only_under_its_key_and_channel() {
        let token = ChannelToken([7; 16]);
        let mut sealed = Vec::new();
        let mut scratch = Vec::new();
        for len in [
            1usize,
            100,
            1000,
            4096 - SEALED_OVERHEAD,
            4096 - SEALED_OVERHEAD + 1,
            9000,
        ] {
            let message: Vec<u8> = (0..len).map(|i| i as u8).collect();
            seal(&key(1), &token, &message, 4096, 61_427, &mut sealed).unwrap();
            let expected = if len + SEALED_OVERHEAD <= 4096 {
                4096
            } else {
                (len + SEALED_OVERHEAD).next_power_of_two()
            };
            assert_eq!(sealed.len(), expected, "{len}");
            assert_eq!(
                open(&key(1), &token, &sealed, &mut scratch).unwrap(),
                &message[..]
            );
            assert_eq!(
                open(&key(2), &token, &sealed, &mut scratch),
                Err(SealError::Unopenable)
            );
            assert_eq!(
                open(&key(1), &ChannelToken([8; 16]), &sealed, &mut scratch),
                Err(SealError::Unopenable)
            );
            let mut flipped = sealed.clone();
            let last = flipped.len() - 1;
            flipped[last / 2] ^= 1;
            assert_eq!(
                open(&key(1), &token, &flipped, &mut scratch),
                Err(SealError::Unopenable)
            );
        }
        // Two seals of one message differ (fresh nonces) and have the same size.
        let mut again = Vec::new();
        seal(&key(1), &token, b"m", 4096, 61_427, &mut sealed).unwrap();
        seal(&key(1), &token, b"m", 4096, 61_427, &mut again).unwrap();
        assert_ne!(sealed, again);
        assert_eq!(sealed.len(), again.len());
        // Beyond the largest bucket.
        assert_eq!(
            seal(&key(1), &token, &[0; 61_427], 4096, 61_427, &mut sealed),
            Err(SealError::TooLarge)
        );
        // Between the last power of two and the maximum: padded to the maximum.
        seal(&key(1), &token, &[0; 40_000], 4096, 61_427, &mut sealed).unwrap();
        assert_eq!(sealed.len(), 61_427);
        // Garbage never opens, never panics.
        for len in 0..64 {
            let junk = vec![SEALED_HANDSHAKE; len];
            assert!(open(&key(1), &token, &junk, &mut scratch).is_err());
        }
    }

    #[test]
    fn welcomes_pad_to_buckets_and_unpad_exactly() {
        let mut out = Vec::new();
        for len in [
            0usize,
            1,
            1043,
            4096 - PADDED_WELCOME_OVERHEAD,
            4092,
            12_543,
        ] {
            let welcome: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            pad_welcome(&welcome, 4096, 61_000, &mut out).unwrap();
            let expected = (len + PADDED_WELCOME_OVERHEAD)
                .next_power_of_two()
                .max(4096);
            assert_eq!(out.len(), expected, "{len}");
            assert_eq!(unpad_welcome(&out).unwrap(), &welcome[..]);
            // A non-zero padding byte, a length past the end, another marker: refused.
            if out.len() > len + PADDED_WELCOME_OVERHEAD {
                let mut bad = out.clone();
                *bad.last_mut().unwrap() = 1;
                assert_eq!(unpad_welcome(&bad), Err(SealError::Unopenable));
            }
            let mut bad = out.clone();
            bad[1..5].copy_from_slice(&(out.len() as u32).to_be_bytes());
            assert_eq!(unpad_welcome(&bad), Err(SealError::Unopenable));
            let mut bad = out.clone();
            bad[0] = 0;
            assert_eq!(unpad_welcome(&bad), Err(SealError::Unopenable));
        }
        assert_eq!(
            pad_welcome(&[1; 61_000], 4096, 61_000, &mut out),
            Err(SealError::TooLarge)
        );
        for len in 0..8 {
            assert!(unpad_welcome(&vec![PADDED_WELCOME; len]).is_err());
        }
    }
}
