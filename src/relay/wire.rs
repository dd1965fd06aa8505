//! The client ↔ relay wire format, version 3 (layout in the [module docs](super)).
//!
//! Messages are parsed from borrowed bytes without copying ([`ClientMessage::parse`],
//! [`RelayMessage::parse`]) and encoded into caller buffers ([`ClientMessage::encode`]) or
//! appended to a [`BytesMut`] ([`ClientMessage::encode_into`]). Every message has exactly
//! one encoding: parse → encode gives back the input bytes.

use bytes::BytesMut;

use super::codec::{Reader, Writer};
use crate::media::{ChannelToken, CHANNEL_TOKEN_LEN};

/// The wire format version this crate speaks (the top 3 bits of every message's first byte).
pub const VERSION: u8 = 3;

/// Relay framing in front of every media frame, both directions: the type byte and the
/// 4-byte channel handle.
pub const MEDIA_OVERHEAD: usize = 1 + ChannelHandle::LEN;

/// The largest media message (framing included): one UDP datagram on a typical path.
pub const MAX_MEDIA_MESSAGE: usize = 1400;

/// The largest SFrame frame a media message carries.
pub const MAX_MEDIA_FRAME: usize = MAX_MEDIA_MESSAGE - MEDIA_OVERHEAD;

/// The largest message of any type (60 KiB): handshake messages and Welcomes of large rooms
/// exceed one packet, so the carrier must deliver a message above [`MAX_MEDIA_MESSAGE`]
/// whole.
pub const MAX_MESSAGE: usize = 60 * 1024;

/// Framing of a handshake message as the relay fans it out: type byte, handle, sequence.
pub const HANDSHAKE_OVERHEAD: usize = 1 + ChannelHandle::LEN + 8;

/// Framing of a handshake message as a client sends it: type byte, handle.
pub const HANDSHAKE_REQUEST_OVERHEAD: usize = 1 + ChannelHandle::LEN;

/// The largest MLS handshake message carried, so that both the client's request and the
/// relay's stamped copy fit in [`MAX_MESSAGE`]: the longer framing of the two (the relay's,
/// [`HANDSHAKE_OVERHEAD`]) decides.
pub const MAX_HANDSHAKE: usize = MAX_MESSAGE
    - if HANDSHAKE_OVERHEAD > HANDSHAKE_REQUEST_OVERHEAD {
        HANDSHAKE_OVERHEAD
    } else {
        HANDSHAKE_REQUEST_OVERHEAD
    };

/// Type codes (the low 5 bits of the first byte). Bit 4 set: relay → client.
mod code {
    pub(super) const SUBSCRIBE: u8 = 0x01;
    pub(super) const UNSUBSCRIBE: u8 = 0x02;
    pub(super) const MEDIA: u8 = 0x03;
    pub(super) const HANDSHAKE: u8 = 0x04;
    pub(super) const DELIVER_WELCOME: u8 = 0x05;
    pub(super) const FETCH_WELCOMES: u8 = 0x06;
    pub(super) const HELLO: u8 = 0x07;

    pub(super) const SUBSCRIBED: u8 = 0x11;
    pub(super) const UNSUBSCRIBED: u8 = 0x12;
    pub(super) const RELAY_MEDIA: u8 = 0x13;
    pub(super) const RELAY_HANDSHAKE: u8 = 0x14;
    pub(super) const WELCOME: u8 = 0x15;
    pub(super) const STORED: u8 = 0x16;
    pub(super) const ERROR: u8 = 0x17;
    // 0x18 was version 2's Challenge: retired, never reused.
    pub(super) const READY: u8 = 0x19;

    /// The request kind of an error about a datagram that did not parse.
    pub(super) const UNPARSED: u8 = 0x00;
}

/// The first byte of a message of type `code`.
#[inline]
const fn type_byte(code: u8) -> u8 {
    (VERSION << 5) | code
}

/// Everything that can be wrong with a relay message's bytes, or with a buffer to encode
/// one into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The message ends before one of its fields does (an empty datagram included).
    #[error("truncated relay message")]
    Truncated,
    /// Bytes follow the end of a fixed-size message.
    #[error("trailing bytes after relay message")]
    TrailingBytes,
    /// The message is of another version of the wire format.
    #[error("unsupported relay wire version {version}")]
    UnsupportedVersion {
        /// The version in the message.
        version: u8,
    },
    /// No message type has this code.
    #[error("unknown relay message type {code:#04x}")]
    UnknownType {
        /// The 5-bit type code.
        code: u8,
    },
    /// A relay → client message where a client → relay one was expected, or the reverse.
    #[error("relay message type {code:#04x} is for the other direction")]
    WrongDirection {
        /// The 5-bit type code.
        code: u8,
    },
    /// The message, or its payload, exceeds the wire format's bound for its type.
    #[error("relay message of {len} bytes exceeds {max}")]
    TooLarge {
        /// The length found (of the message, or of the payload when `max` bounds one).
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A mailbox id is empty or longer than [`MailboxId::MAX_LEN`].
    #[error("mailbox id of {len} bytes (1..=64 allowed)")]
    InvalidMailboxId {
        /// The length found.
        len: usize,
    },
    /// The output buffer is too small.
    #[error("buffer too small: {needed} bytes needed")]
    BufferTooSmall {
        /// Bytes the encoding needs.
        needed: usize,
    },
}

/// A short per-connection name the relay gives a channel token: what media and handshake
/// messages carry instead of the 16-byte token. Each receiver gets its own handles, drawn
/// at random by the relay (under its own key), distinct within a connection: a handle says
/// nothing about other connections' handles or about how many channels the relay holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelHandle(pub u32);

impl ChannelHandle {
    /// Length of a handle on the wire.
    pub const LEN: usize = 4;
}

/// A Welcome mailbox: the invitee's KeyPackage reference (an opaque hash), 1 to
/// [`MailboxId::MAX_LEN`] bytes. Holding one proves the length fits the wire format.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MailboxId<'a>(&'a [u8]);

impl<'a> MailboxId<'a> {
    /// The longest mailbox id.
    pub const MAX_LEN: usize = 64;

    /// A mailbox id; fails with [`WireError::InvalidMailboxId`] unless `bytes` has 1 to
    /// [`MAX_LEN`](Self::MAX_LEN) bytes.
    pub fn new(bytes: &'a [u8]) -> Result<MailboxId<'a>, WireError> {
        if (1..=Self::MAX_LEN).contains(&bytes.len()) {
            Ok(MailboxId(bytes))
        } else {
            Err(WireError::InvalidMailboxId { len: bytes.len() })
        }
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// Encoded length: a length byte and the id.
    fn encoded_len(&self) -> usize {
        1 + self.0.len()
    }

    fn read(r: &mut Reader<'a>) -> Result<MailboxId<'a>, WireError> {
        let len = r.u8()?;
        MailboxId::new(r.take(usize::from(len))?)
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        // new() bounds the length to 64.
        let len = u8::try_from(self.0.len())
            .map_err(|_| WireError::InvalidMailboxId { len: self.0.len() })?;
        w.u8(len)?;
        w.put(self.0)
    }
}

impl std::fmt::Debug for MailboxId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MailboxId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// What went wrong with a request, as the relay reports it to the client.
///
/// Codes this version does not know parse as [`Other`](Self::Other), so a client can still
/// tell which request failed. Code 14 was version 2's `Unproven` (a request without the
/// connection's proof, never sent): it is retired and never reused, so it parses as
/// `Other(14)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The datagram is not a client → relay message of this version.
    #[error("malformed request")]
    Malformed,
    /// The datagram is of a wire version the relay does not speak.
    #[error("unsupported wire version")]
    UnsupportedVersion,
    /// The request exceeds the relay's message size limit.
    #[error("request too large")]
    TooLarge,
    /// The connection has no channel with this handle.
    #[error("unknown channel handle")]
    UnknownHandle,
    /// The connection is subscribed to as many channels as the relay allows.
    #[error("too many subscriptions on this connection")]
    TooManySubscriptions,
    /// The channel has as many subscribers as the relay allows.
    #[error("channel full")]
    ChannelFull,
    /// The relay holds as many channels or connections as it allows.
    #[error("relay full")]
    RelayFull,
    /// The mailbox holds as many Welcomes as the relay allows.
    #[error("mailbox full")]
    MailboxFull,
    /// The relay holds as many mailboxes or Welcome bytes as it allows.
    #[error("welcome storage full")]
    StorageFull,
    /// A fetch found no Welcome in the mailbox.
    #[error("mailbox empty")]
    MailboxEmpty,
    /// The connection fetched as many Welcome bytes as the relay allows per minute.
    #[error("rate limited")]
    RateLimited,
    /// The connection holds as many channels it opened as the relay allows
    /// ([`RouterLimits::max_channels_opened_per_connection`](super::RouterLimits)): it may
    /// still join channels others opened.
    #[error("too many channels opened by this connection")]
    TooManyChannelsOpened,
    /// The connection has as many Welcomes, or Welcome bytes, held in mailboxes as the
    /// relay allows ([`RouterLimits::max_welcomes_per_connection`](super::RouterLimits),
    /// `max_welcome_bytes_per_connection`) until some expire.
    #[error("welcome quota of this connection exceeded")]
    WelcomeQuotaExceeded,
    /// The relay holds no state for this connection: it has not said Hello, or the relay
    /// forgot it (it restarted, or [disconnected](super::Router::disconnect) it). Every
    /// request but [`Hello`](ClientMessage::Hello) is refused with this code until the
    /// connection says Hello again; then nothing of before is held (subscribe again).
    #[error("connection unknown to the relay: say Hello")]
    NotConnected,
    /// A code this version does not know, the retired 14 included (never one of the codes
    /// above).
    #[error("error code {0}")]
    Other(u8),
}

impl ErrorCode {
    /// Every code this version defines.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::Malformed,
        ErrorCode::UnsupportedVersion,
        ErrorCode::TooLarge,
        ErrorCode::UnknownHandle,
        ErrorCode::TooManySubscriptions,
        ErrorCode::ChannelFull,
        ErrorCode::RelayFull,
        ErrorCode::MailboxFull,
        ErrorCode::StorageFull,
        ErrorCode::MailboxEmpty,
        ErrorCode::RateLimited,
        ErrorCode::TooManyChannelsOpened,
        ErrorCode::WelcomeQuotaExceeded,
        ErrorCode::NotConnected,
    ];
}

impl From<u8> for ErrorCode {
    fn from(b: u8) -> ErrorCode {
        match b {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::TooLarge,
            4 => ErrorCode::UnknownHandle,
            5 => ErrorCode::TooManySubscriptions,
            6 => ErrorCode::ChannelFull,
            7 => ErrorCode::RelayFull,
            8 => ErrorCode::MailboxFull,
            9 => ErrorCode::StorageFull,
            10 => ErrorCode::MailboxEmpty,
            11 => ErrorCode::RateLimited,
            12 => ErrorCode::TooManyChannelsOpened,
            13 => ErrorCode::WelcomeQuotaExceeded,
            // 14: version 2's Unproven, retired (parses as Other(14)).
            15 => ErrorCode::NotConnected,
            other => ErrorCode::Other(other),
        }
    }
}

impl From<ErrorCode> for u8 {
    fn from(code: ErrorCode) -> u8 {
        match code {
            ErrorCode::Malformed => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::TooLarge => 3,
            ErrorCode::UnknownHandle => 4,
            ErrorCode::TooManySubscriptions => 5,
            ErrorCode::ChannelFull => 6,
            ErrorCode::RelayFull => 7,
            ErrorCode::MailboxFull => 8,
            ErrorCode::StorageFull => 9,
            ErrorCode::MailboxEmpty => 10,
            ErrorCode::RateLimited => 11,
            ErrorCode::TooManyChannelsOpened => 12,
            ErrorCode::WelcomeQuotaExceeded => 13,
            ErrorCode::NotConnected => 15,
            ErrorCode::Other(b) => b,
        }
    }
}

impl From<WireError> for ErrorCode {
    /// The code a relay answers a request that failed to parse with.
    fn from(e: WireError) -> ErrorCode {
        match e {
            WireError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            WireError::TooLarge { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::Malformed,
        }
    }
}

/// Which request an [error](RelayMessage::Error) answers: the request's type and what it
/// named (never its payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Request<'a> {
    /// A datagram that did not parse.
    Unparsed,
    /// [`ClientMessage::Subscribe`] to this token.
    Subscribe(ChannelToken),
    /// [`ClientMessage::Unsubscribe`] of this handle.
    Unsubscribe(ChannelHandle),
    /// [`ClientMessage::Media`] on this handle.
    Media(ChannelHandle),
    /// [`ClientMessage::Handshake`] on this handle.
    Handshake(ChannelHandle),
    /// [`ClientMessage::DeliverWelcome`] to this mailbox.
    DeliverWelcome(MailboxId<'a>),
    /// [`ClientMessage::FetchWelcomes`] from this mailbox.
    FetchWelcomes(MailboxId<'a>),
    /// [`ClientMessage::Hello`].
    Hello,
}

impl<'a> Request<'a> {
    fn encoded_len(&self) -> usize {
        1 + match self {
            Request::Unparsed | Request::Hello => 0,
            Request::Subscribe(_) => CHANNEL_TOKEN_LEN,
            Request::Unsubscribe(_) | Request::Media(_) | Request::Handshake(_) => {
                ChannelHandle::LEN
            }
            Request::DeliverWelcome(m) | Request::FetchWelcomes(m) => m.encoded_len(),
        }
    }

    fn read(r: &mut Reader<'a>) -> Result<Request<'a>, WireError> {
        Ok(match r.u8()? {
            code::UNPARSED => Request::Unparsed,
            code::SUBSCRIBE => Request::Subscribe(ChannelToken(r.array()?)),
            code::UNSUBSCRIBE => Request::Unsubscribe(ChannelHandle(r.u32()?)),
            code::MEDIA => Request::Media(ChannelHandle(r.u32()?)),
            code::HANDSHAKE => Request::Handshake(ChannelHandle(r.u32()?)),
            code::DELIVER_WELCOME => Request::DeliverWelcome(MailboxId::read(r)?),
            code::FETCH_WELCOMES => Request::FetchWelcomes(MailboxId::read(r)?),
            code::HELLO => Request::Hello,
            code => return Err(WireError::UnknownType { code }),
        })
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        match self {
            Request::Unparsed => w.u8(code::UNPARSED),
            Request::Hello => w.u8(code::HELLO),
            Request::Subscribe(token) => {
                w.u8(code::SUBSCRIBE)?;
                w.put(&token.0)
            }
            Request::Unsubscribe(h) => {
                w.u8(code::UNSUBSCRIBE)?;
                w.u32(h.0)
            }
            Request::Media(h) => {
                w.u8(code::MEDIA)?;
                w.u32(h.0)
            }
            Request::Handshake(h) => {
                w.u8(code::HANDSHAKE)?;
                w.u32(h.0)
            }
            Request::DeliverWelcome(m) => {
                w.u8(code::DELIVER_WELCOME)?;
                m.write(w)
            }
            Request::FetchWelcomes(m) => {
                w.u8(code::FETCH_WELCOMES)?;
                m.write(w)
            }
        }
    }
}

/// A message from a client to the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientMessage<'a> {
    /// Join a channel; the relay answers [`RelayMessage::Subscribed`] with this connection's
    /// handle for it (the same handle again if already subscribed).
    Subscribe {
        /// The epoch's channel token.
        token: ChannelToken,
    },
    /// Leave a channel; the relay answers [`RelayMessage::Unsubscribed`].
    Unsubscribe {
        /// This connection's handle for the channel.
        handle: ChannelHandle,
    },
    /// An SFrame frame for every other subscriber of the channel.
    Media {
        /// This connection's handle for the channel.
        handle: ChannelHandle,
        /// The frame, at most [`MAX_MEDIA_FRAME`] bytes.
        frame: &'a [u8],
    },
    /// An MLS handshake message for every subscriber of the channel, this one included, in
    /// one order stamped by the relay.
    Handshake {
        /// This connection's handle for the channel.
        handle: ChannelHandle,
        /// The MLS message, at most [`MAX_HANDSHAKE`] bytes.
        message: &'a [u8],
    },
    /// Leave a Welcome in the invitee's mailbox; the relay answers [`RelayMessage::Stored`].
    DeliverWelcome {
        /// The invitee's KeyPackage reference.
        mailbox: MailboxId<'a>,
        /// The MLS Welcome.
        welcome: &'a [u8],
    },
    /// Ask for the Welcomes in a mailbox; the relay answers one [`RelayMessage::Welcome`]
    /// per Welcome held, or [`ErrorCode::MailboxEmpty`], or [`ErrorCode::RateLimited`]
    /// once the connection had its allowance of Welcome bytes for the minute.
    FetchWelcomes {
        /// This client's KeyPackage reference.
        mailbox: MailboxId<'a>,
    },
    /// Start (or restart) the connection: the relay answers [`RelayMessage::Ready`]. It is
    /// the first request of every connection: the relay refuses any other from a
    /// connection it holds no state for ([`ErrorCode::NotConnected`]). A Hello on a
    /// connection the relay holds changes nothing.
    Hello,
}

/// Fails with [`WireError::TooLarge`] when `len` exceeds `max`.
#[inline]
fn bound(len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        Err(WireError::TooLarge { len, max })
    } else {
        Ok(())
    }
}

/// Reads the first byte: checks the version and the overall size bound, returns the
/// type code and a reader at the first field.
#[inline]
fn open(input: &[u8]) -> Result<(u8, Reader<'_>), WireError> {
    let mut r = Reader::new(input);
    let first = r.u8()?;
    let version = first >> 5;
    if version != VERSION {
        return Err(WireError::UnsupportedVersion { version });
    }
    bound(input.len(), MAX_MESSAGE)?;
    Ok((first & 0x1f, r))
}

/// Checks `out` can take `len` bytes.
#[inline]
fn room_for(out: &mut [u8], len: usize) -> Result<Writer<'_>, WireError> {
    let out = out
        .get_mut(..len)
        .ok_or(WireError::BufferTooSmall { needed: len })?;
    Ok(Writer::new(out))
}

/// Appends an encoding of `len` bytes done by `encode` to `out`.
fn append(
    out: &mut BytesMut,
    len: usize,
    encode: impl FnOnce(&mut [u8]) -> Result<usize, WireError>,
) -> Result<usize, WireError> {
    let start = out.len();
    out.resize(start + len, 0);
    let written = out
        .get_mut(start..)
        .ok_or(WireError::BufferTooSmall { needed: len })
        .and_then(encode);
    if written.is_err() {
        out.truncate(start);
    }
    written
}

impl<'a> ClientMessage<'a> {
    /// Parses one message, which must take all of `input`.
    #[inline]
    pub fn parse(input: &'a [u8]) -> Result<ClientMessage<'a>, WireError> {
        let (code, mut r) = open(input)?;
        let msg = match code {
            code::SUBSCRIBE => ClientMessage::Subscribe {
                token: ChannelToken(r.array()?),
            },
            code::UNSUBSCRIBE => ClientMessage::Unsubscribe {
                handle: ChannelHandle(r.u32()?),
            },
            code::MEDIA => {
                bound(input.len(), MAX_MEDIA_MESSAGE)?;
                ClientMessage::Media {
                    handle: ChannelHandle(r.u32()?),
                    frame: r.rest(),
                }
            }
            code::HANDSHAKE => {
                let handle = ChannelHandle(r.u32()?);
                let message = r.rest();
                bound(message.len(), MAX_HANDSHAKE)?;
                ClientMessage::Handshake { handle, message }
            }
            code::DELIVER_WELCOME => ClientMessage::DeliverWelcome {
                mailbox: MailboxId::read(&mut r)?,
                welcome: r.rest(),
            },
            code::FETCH_WELCOMES => ClientMessage::FetchWelcomes {
                mailbox: MailboxId::read(&mut r)?,
            },
            code::HELLO => ClientMessage::Hello,
            code if is_relay_code(code) => return Err(WireError::WrongDirection { code }),
            code => return Err(WireError::UnknownType { code }),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Length of the encoding.
    pub fn encoded_len(&self) -> usize {
        match self {
            ClientMessage::Subscribe { .. } => 1 + CHANNEL_TOKEN_LEN,
            ClientMessage::Unsubscribe { .. } => 1 + ChannelHandle::LEN,
            ClientMessage::Media { frame, .. } => MEDIA_OVERHEAD + frame.len(),
            ClientMessage::Handshake { message, .. } => HANDSHAKE_REQUEST_OVERHEAD + message.len(),
            ClientMessage::DeliverWelcome { mailbox, welcome } => {
                1 + mailbox.encoded_len() + welcome.len()
            }
            ClientMessage::FetchWelcomes { mailbox } => 1 + mailbox.encoded_len(),
            ClientMessage::Hello => 1,
        }
    }

    /// The encoded length, or [`WireError::TooLarge`] if the message exceeds its bound.
    fn checked_len(&self) -> Result<usize, WireError> {
        let len = self.encoded_len();
        match self {
            ClientMessage::Media { .. } => bound(len, MAX_MEDIA_MESSAGE)?,
            ClientMessage::Handshake { message, .. } => bound(message.len(), MAX_HANDSHAKE)?,
            _ => bound(len, MAX_MESSAGE)?,
        }
        Ok(len)
    }

    /// Writes the message into the start of `out` and returns its length.
    ///
    /// Fails with [`WireError::TooLarge`] if the message exceeds its type's bound and with
    /// [`WireError::BufferTooSmall`] if `out` is shorter than
    /// [`encoded_len`](Self::encoded_len).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let len = self.checked_len()?;
        let mut w = room_for(out, len)?;
        match self {
            ClientMessage::Subscribe { token } => {
                w.u8(type_byte(code::SUBSCRIBE))?;
                w.put(&token.0)?;
            }
            ClientMessage::Unsubscribe { handle } => {
                w.u8(type_byte(code::UNSUBSCRIBE))?;
                w.u32(handle.0)?;
            }
            ClientMessage::Media { handle, frame } => {
                w.put(&Self::media_header(*handle))?;
                w.put(frame)?;
            }
            ClientMessage::Handshake { handle, message } => {
                w.u8(type_byte(code::HANDSHAKE))?;
                w.u32(handle.0)?;
                w.put(message)?;
            }
            ClientMessage::DeliverWelcome { mailbox, welcome } => {
                w.u8(type_byte(code::DELIVER_WELCOME))?;
                mailbox.write(&mut w)?;
                w.put(welcome)?;
            }
            ClientMessage::FetchWelcomes { mailbox } => {
                w.u8(type_byte(code::FETCH_WELCOMES))?;
                mailbox.write(&mut w)?;
            }
            ClientMessage::Hello => w.u8(type_byte(code::HELLO))?,
        }
        Ok(w.len())
    }

    /// Appends the message to `out` and returns its length; `out` is left as it was on
    /// error.
    pub fn encode_into(&self, out: &mut BytesMut) -> Result<usize, WireError> {
        let len = self.checked_len()?;
        append(out, len, |buf| self.encode(buf))
    }

    /// The [`MEDIA_OVERHEAD`] bytes in front of a media frame on `handle`: a client can
    /// write them and seal the frame right after, with no copy.
    #[inline]
    pub const fn media_header(handle: ChannelHandle) -> [u8; MEDIA_OVERHEAD] {
        let [h0, h1, h2, h3] = handle.0.to_be_bytes();
        [type_byte(code::MEDIA), h0, h1, h2, h3]
    }

    /// Which request this is, as an [error](RelayMessage::Error) about it names it.
    pub fn request(&self) -> Request<'a> {
        match *self {
            ClientMessage::Subscribe { token } => Request::Subscribe(token),
            ClientMessage::Unsubscribe { handle } => Request::Unsubscribe(handle),
            ClientMessage::Media { handle, .. } => Request::Media(handle),
            ClientMessage::Handshake { handle, .. } => Request::Handshake(handle),
            ClientMessage::DeliverWelcome { mailbox, .. } => Request::DeliverWelcome(mailbox),
            ClientMessage::FetchWelcomes { mailbox } => Request::FetchWelcomes(mailbox),
            ClientMessage::Hello => Request::Hello,
        }
    }
}

/// Whether `code` is a relay → client type (for telling a misdirected message from garbage).
const fn is_relay_code(code: u8) -> bool {
    matches!(
        code,
        code::SUBSCRIBED
            | code::UNSUBSCRIBED
            | code::RELAY_MEDIA
            | code::RELAY_HANDSHAKE
            | code::WELCOME
            | code::STORED
            | code::ERROR
            | code::READY
    )
}

/// A message from the relay to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RelayMessage<'a> {
    /// The connection is subscribed to `token` under `handle`.
    Subscribed {
        /// The token subscribed to.
        token: ChannelToken,
        /// This connection's handle for it.
        handle: ChannelHandle,
        /// The number the channel's next handshake message gets: how many it numbered so
        /// far. A client that has not seen every number below it missed some (the channel
        /// sends what it keeps right after this message; ask again with another
        /// `Subscribe` if they were lost).
        next_seq: u64,
    },
    /// The connection left the channel of `handle`.
    Unsubscribed {
        /// The handle released (the relay does not reuse it soon).
        handle: ChannelHandle,
    },
    /// A frame from another subscriber.
    Media {
        /// The receiver's own handle for the channel.
        handle: ChannelHandle,
        /// The SFrame frame, at most [`MAX_MEDIA_FRAME`] bytes.
        frame: &'a [u8],
    },
    /// A handshake message, in the channel's total order.
    Handshake {
        /// The receiver's own handle for the channel.
        handle: ChannelHandle,
        /// The channel's sequence number for the message: every subscriber sees the same
        /// numbers, in increasing order.
        seq: u64,
        /// The MLS message, at most [`MAX_HANDSHAKE`] bytes.
        message: &'a [u8],
    },
    /// A Welcome held in a mailbox.
    Welcome {
        /// The mailbox.
        mailbox: MailboxId<'a>,
        /// The MLS Welcome.
        welcome: &'a [u8],
    },
    /// A Welcome was stored in the mailbox.
    Stored {
        /// The mailbox.
        mailbox: MailboxId<'a>,
    },
    /// A request was refused.
    Error {
        /// Why.
        code: ErrorCode,
        /// Which request.
        request: Request<'a>,
    },
    /// The relay takes this connection's requests (the answer to a Hello).
    Ready,
}

impl<'a> RelayMessage<'a> {
    /// Parses one message, which must take all of `input`.
    #[inline]
    pub fn parse(input: &'a [u8]) -> Result<RelayMessage<'a>, WireError> {
        let (code, mut r) = open(input)?;
        let msg = match code {
            code::SUBSCRIBED => RelayMessage::Subscribed {
                token: ChannelToken(r.array()?),
                handle: ChannelHandle(r.u32()?),
                next_seq: r.u64()?,
            },
            code::UNSUBSCRIBED => RelayMessage::Unsubscribed {
                handle: ChannelHandle(r.u32()?),
            },
            code::RELAY_MEDIA => {
                bound(input.len(), MAX_MEDIA_MESSAGE)?;
                RelayMessage::Media {
                    handle: ChannelHandle(r.u32()?),
                    frame: r.rest(),
                }
            }
            code::RELAY_HANDSHAKE => {
                let handle = ChannelHandle(r.u32()?);
                let seq = r.u64()?;
                let message = r.rest();
                bound(message.len(), MAX_HANDSHAKE)?;
                RelayMessage::Handshake {
                    handle,
                    seq,
                    message,
                }
            }
            code::WELCOME => RelayMessage::Welcome {
                mailbox: MailboxId::read(&mut r)?,
                welcome: r.rest(),
            },
            code::STORED => RelayMessage::Stored {
                mailbox: MailboxId::read(&mut r)?,
            },
            code::ERROR => RelayMessage::Error {
                code: ErrorCode::from(r.u8()?),
                request: Request::read(&mut r)?,
            },
            code::READY => RelayMessage::Ready,
            code @ (code::SUBSCRIBE
            | code::UNSUBSCRIBE
            | code::MEDIA
            | code::HANDSHAKE
            | code::DELIVER_WELCOME
            | code::FETCH_WELCOMES
            | code::HELLO) => return Err(WireError::WrongDirection { code }),
            code => return Err(WireError::UnknownType { code }),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Length of the encoding.
    pub fn encoded_len(&self) -> usize {
        match self {
            RelayMessage::Subscribed { .. } => 1 + CHANNEL_TOKEN_LEN + ChannelHandle::LEN + 8,
            RelayMessage::Unsubscribed { .. } => 1 + ChannelHandle::LEN,
            RelayMessage::Media { frame, .. } => MEDIA_OVERHEAD + frame.len(),
            RelayMessage::Handshake { message, .. } => HANDSHAKE_OVERHEAD + message.len(),
            RelayMessage::Welcome { mailbox, welcome } => 1 + mailbox.encoded_len() + welcome.len(),
            RelayMessage::Stored { mailbox } => 1 + mailbox.encoded_len(),
            RelayMessage::Error { request, .. } => 2 + request.encoded_len(),
            RelayMessage::Ready => 1,
        }
    }

    /// The encoded length, or [`WireError::TooLarge`] if the message exceeds its bound.
    fn checked_len(&self) -> Result<usize, WireError> {
        let len = self.encoded_len();
        match self {
            RelayMessage::Media { .. } => bound(len, MAX_MEDIA_MESSAGE)?,
            RelayMessage::Handshake { message, .. } => bound(message.len(), MAX_HANDSHAKE)?,
            _ => bound(len, MAX_MESSAGE)?,
        }
        Ok(len)
    }

    /// Writes the message into the start of `out` and returns its length.
    ///
    /// Fails with [`WireError::TooLarge`] if the message exceeds its type's bound and with
    /// [`WireError::BufferTooSmall`] if `out` is shorter than
    /// [`encoded_len`](Self::encoded_len).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let len = self.checked_len()?;
        let mut w = room_for(out, len)?;
        match self {
            RelayMessage::Subscribed {
                token,
                handle,
                next_seq,
            } => {
                w.u8(type_byte(code::SUBSCRIBED))?;
                w.put(&token.0)?;
                w.u32(handle.0)?;
                w.u64(*next_seq)?;
            }
            RelayMessage::Unsubscribed { handle } => {
                w.u8(type_byte(code::UNSUBSCRIBED))?;
                w.u32(handle.0)?;
            }
            RelayMessage::Media { handle, frame } => {
                w.put(&Self::media_header(*handle))?;
                w.put(frame)?;
            }
            RelayMessage::Handshake {
                handle,
                seq,
                message,
            } => {
                w.put(&Self::handshake_header(*handle, *seq))?;
                w.put(message)?;
            }
            RelayMessage::Welcome { mailbox, welcome } => {
                w.u8(type_byte(code::WELCOME))?;
                mailbox.write(&mut w)?;
                w.put(welcome)?;
            }
            RelayMessage::Stored { mailbox } => {
                w.u8(type_byte(code::STORED))?;
                mailbox.write(&mut w)?;
            }
            RelayMessage::Error { code, request } => {
                w.u8(type_byte(code::ERROR))?;
                w.u8(u8::from(*code))?;
                request.write(&mut w)?;
            }
            RelayMessage::Ready => w.u8(type_byte(code::READY))?,
        }
        Ok(w.len())
    }

    /// Appends the message to `out` and returns its length; `out` is left as it was on
    /// error.
    pub fn encode_into(&self, out: &mut BytesMut) -> Result<usize, WireError> {
        let len = self.checked_len()?;
        append(out, len, |buf| self.encode(buf))
    }

    /// The [`MEDIA_OVERHEAD`] bytes in front of a relayed media frame for `handle`.
    #[inline]
    pub const fn media_header(handle: ChannelHandle) -> [u8; MEDIA_OVERHEAD] {
        let [h0, h1, h2, h3] = handle.0.to_be_bytes();
        [type_byte(code::RELAY_MEDIA), h0, h1, h2, h3]
    }

    /// The [`HANDSHAKE_OVERHEAD`] bytes in front of a relayed handshake message.
    #[inline]
    pub const fn handshake_header(handle: ChannelHandle, seq: u64) -> [u8; HANDSHAKE_OVERHEAD] {
        let [h0, h1, h2, h3] = handle.0.to_be_bytes();
        let [s0, s1, s2, s3, s4, s5, s6, s7] = seq.to_be_bytes();
        [
            type_byte(code::RELAY_HANDSHAKE),
            h0,
            h1,
            h2,
            h3,
            s0,
            s1,
            s2,
            s3,
            s4,
            s5,
            s6,
            s7,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_framing_is_five_bytes() {
        let frame = [0xaa; 10];
        let msg = ClientMessage::Media {
            handle: ChannelHandle(0x0102_0304),
            frame: &frame,
        };
        let mut buf = [0u8; 15];
        assert_eq!(msg.encode(&mut buf), Ok(15));
        assert_eq!(&buf[..5], &[0x63, 1, 2, 3, 4]);
        assert_eq!(ClientMessage::parse(&buf), Ok(msg));
        assert_eq!(
            RelayMessage::parse(&buf),
            Err(WireError::WrongDirection { code: 0x03 })
        );
    }

    #[test]
    fn handshake_header_layout() {
        let h = RelayMessage::handshake_header(ChannelHandle(7), 0x0102_0304_0506_0708);
        assert_eq!(h, [0x74, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn error_codes_round_trip() {
        for b in 0..=u8::MAX {
            assert_eq!(u8::from(ErrorCode::from(b)), b);
        }
        for code in ErrorCode::ALL {
            assert!(!matches!(code, ErrorCode::Other(_)));
        }
    }

    #[test]
    fn retired_codes_stay_unknown() {
        // Version 2's Challenge type (0x18) and Unproven error code (14) are never reused.
        assert_eq!(
            RelayMessage::parse(&[0x78; 17]),
            Err(WireError::UnknownType { code: 0x18 })
        );
        assert_eq!(
            ClientMessage::parse(&[0x78]),
            Err(WireError::UnknownType { code: 0x18 })
        );
        assert_eq!(ErrorCode::from(14), ErrorCode::Other(14));
        assert!(ErrorCode::ALL.iter().all(|c| u8::from(*c) != 14));
    }

    #[test]
    fn hello_and_ready_are_one_byte() {
        let mut buf = [0u8; 1];
        assert_eq!(ClientMessage::Hello.encode(&mut buf), Ok(1));
        assert_eq!(buf, [0x67]);
        assert_eq!(RelayMessage::Ready.encode(&mut buf), Ok(1));
        assert_eq!(buf, [0x79]);
        assert_eq!(
            RelayMessage::parse(&[0x79, 0]),
            Err(WireError::TrailingBytes)
        );
    }
}
