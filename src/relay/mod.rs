//! What a relay (SFU) provider runs: the client ↔ relay wire format and a sans-IO router
//! keyed by opaque channel tokens. Never links against room or key secrets.
//!
//! The relay sees channel tokens (16 opaque bytes per epoch), short per-connection channel
//! handles, SFrame ciphertext, MLS handshake messages, Welcomes addressed to opaque
//! KeyPackage references, sizes and timing. Nothing else.
//!
//! # Wire format, version 1
//!
//! One message per datagram. The first byte is `version (3 bits) ‖ type (5 bits)`; version
//! 1 is `0b001`, so every v1 message starts with `0x2_` or `0x3_`, and any other version is
//! refused with [`WireError::UnsupportedVersion`] (the relay answers
//! [`ErrorCode::UnsupportedVersion`]). Integers are big-endian. A message whose last field
//! is a payload ends with the datagram; any other message must end exactly after its last
//! field ([`WireError::TrailingBytes`]). A mailbox id is a length byte (1..=64) and that
//! many bytes.
//!
//! Client → relay:
//!
//! | byte 0 | message            | fields after byte 0                   | size          |
//! |--------|--------------------|---------------------------------------|---------------|
//! | `0x21` | `Subscribe`        | token (16)                            | 17            |
//! | `0x22` | `Unsubscribe`      | handle (2)                            | 3             |
//! | `0x23` | `Media`            | handle (2), SFrame frame              | 3 + n ≤ 1400  |
//! | `0x24` | `Handshake`        | handle (2), MLS message               | 3 + n         |
//! | `0x25` | `DeliverWelcome`   | mailbox id (1 + m), Welcome           | 2 + m + n     |
//! | `0x26` | `FetchWelcomes`    | mailbox id (1 + m)                    | 2 + m         |
//! | `0x27` | `Hello`            | cookie (16)                           | 17            |
//!
//! Relay → client:
//!
//! | byte 0 | message            | fields after byte 0                   | size          |
//! |--------|--------------------|---------------------------------------|---------------|
//! | `0x31` | `Subscribed`       | token (16), handle (2)                | 19            |
//! | `0x32` | `Unsubscribed`     | handle (2)                            | 3             |
//! | `0x33` | `Media`            | receiver's handle (2), SFrame frame   | 3 + n ≤ 1400  |
//! | `0x34` | `Handshake`        | receiver's handle (2), seq (8), MLS message | 11 + n  |
//! | `0x35` | `Welcome`          | mailbox id (1 + m), Welcome           | 2 + m + n     |
//! | `0x36` | `Stored`           | mailbox id (1 + m)                    | 2 + m         |
//! | `0x37` | `Error`            | code (1), request kind (1), subject   | 3 to 68       |
//! | `0x38` | `Challenge`        | cookie (16)                           | 17            |
//! | `0x39` | `Ready`            |                                       | 1             |
//!
//! An error's request kind is the 5-bit type code of the refused request (0 for a datagram
//! that did not parse); its subject is what that request named: nothing, the token (16), the
//! handle (2) or the mailbox id (1 + m). Media costs [`MEDIA_OVERHEAD`] = 3 bytes of relay
//! framing per packet in each direction. Every message is at most [`MAX_MESSAGE`] (60 KiB);
//! media at most [`MAX_MEDIA_MESSAGE`] (1400, one datagram); handshake messages at most
//! [`MAX_HANDSHAKE`] so the relay's stamped copy fits. The reference UDP transport is for
//! rooms whose commits and Welcomes fit what the path carries (larger ones rely on IP
//! fragmentation).
//!
//! # Router
//!
//! [`Router`] is sans-IO: the I/O layer names connections ([`ConnId`]), feeds datagrams in
//! with [`Router::receive`] and sends what the sink gets. Channels live while they have
//! subscribers. Media goes to every other subscriber, each with its own handle; handshake
//! messages get a per-channel sequence number and go to every subscriber, the sender
//! included, so a committer learns where its commit was ordered. Welcomes wait in mailboxes
//! keyed by the invitee's KeyPackage reference until they expire. Every limit
//! ([`RouterLimits`]) is enforced by refusing the one request with an error to its sender.
//! Besides the relay-wide limits, each connection has quotas of its own — subscriptions,
//! channels it opened, Welcomes and Welcome bytes held for it ([`Router::usage`]) — so one
//! client cannot use up what the others share. A channel is charged to its opener until it
//! closes, a Welcome to its depositor until it expires; a disconnect ends a connection's
//! charges (its Welcomes stay for their invitees).
//!
//! A [`ConnId`] must name a peer whose address is proven: the router sends to it whatever
//! the connection asked for (a channel's media, a mailbox's Welcomes). Transports that
//! validate addresses themselves (QUIC, TCP, WebRTC) pass every datagram on; a transport on
//! raw UDP, where a source address can be forged, lets an address in only after it echoed
//! an [`AddressCheck`] cookie in a [`ClientMessage::Hello`] (`examples/relay.rs` does).
//! Either way the router answers a Hello with [`RelayMessage::Ready`], so a client says
//! Hello first and waits for `Ready` before anything else.
//!
//! Clients move to each new epoch's token: subscribe to the new one, keep the old one
//! through the grace period, then unsubscribe. Both are independent, cheap operations.
//!
//! ```
//! use std::time::Instant;
//! use sotto::media::ChannelToken;
//! use sotto::relay::{ChannelHandle, ClientMessage, ConnId, RelayMessage, Router, RouterLimits};
//!
//! let mut router = Router::new(RouterLimits::default());
//! let now = Instant::now();
//! let token = ChannelToken([9; 16]);
//! let mut out = Vec::new();
//! let mut sink = |to: ConnId, bytes: &[u8]| out.push((to, bytes.to_vec()));
//!
//! let mut buf = [0u8; 64];
//! for conn in [ConnId(1), ConnId(2)] {
//!     let n = ClientMessage::Subscribe { token }.encode(&mut buf)?;
//!     router.receive(conn, &buf[..n], now, &mut sink).unwrap();
//! }
//! let handle = router.handle(ConnId(1), &token).unwrap();
//! let n = ClientMessage::Media { handle, frame: b"sframe bytes" }.encode(&mut buf)?;
//! router.receive(ConnId(1), &buf[..n], now, &mut sink).unwrap();
//!
//! let (to, bytes) = out.last().unwrap();
//! assert_eq!(*to, ConnId(2));
//! assert_eq!(
//!     RelayMessage::parse(bytes)?,
//!     RelayMessage::Media { handle: router.handle(ConnId(2), &token).unwrap(), frame: b"sframe bytes" }
//! );
//! # let _ = ChannelHandle(0);
//! # Ok::<(), sotto::relay::WireError>(())
//! ```

mod address;
mod client;
mod codec;
mod router;
mod wire;

pub use address::{AddressCheck, Admission, CHALLENGE_LEN};
pub use client::{ClientError, ClientEvent, RelayClient};

pub use router::{ConnId, Departure, DropStats, Router, RouterLimits, RouterStats, Usage};
pub use wire::{
    ChannelHandle, ClientMessage, Cookie, ErrorCode, MailboxId, RelayMessage, Request, WireError,
    HANDSHAKE_OVERHEAD, MAX_HANDSHAKE, MAX_MEDIA_FRAME, MAX_MEDIA_MESSAGE, MAX_MESSAGE,
    MEDIA_OVERHEAD, VERSION,
};
