//! What a relay (SFU) provider runs: the client ↔ relay wire format and a sans-IO router
//! keyed by opaque channel tokens. Never links against room or key secrets.
//!
//! The relay sees channel tokens (16 opaque bytes per epoch), short per-connection channel
//! handles, SFrame ciphertext, MLS handshake messages, Welcomes addressed to opaque
//! KeyPackage references, sizes and timing. Nothing else.
//!
//! # Wire format, version 3
//!
//! One message per datagram. The first byte is `version (3 bits) ‖ type (5 bits)`; version
//! 3 is `0b011`, so every v3 message starts with `0x6_` (client → relay) or `0x7_` (relay
//! → client), and any other version is refused with [`WireError::UnsupportedVersion`] (the
//! relay answers [`ErrorCode::UnsupportedVersion`]). Version 2 (`0x4_`, `0x5_`) carried a
//! connection proof in every request and a cookie in `Hello`, and had a `Challenge` for
//! raw-UDP address checks; version 1 (`0x2_`, `0x3_`) had 2-byte handles. Their layouts
//! are not compatible with this one, hence the new version.
//! Integers are big-endian. A message whose last field is a payload ends with the
//! datagram; any other message must end exactly after its last field
//! ([`WireError::TrailingBytes`]). A mailbox id is a length byte (1..=64) and that many
//! bytes. A handle is 4 bytes.
//!
//! Client → relay:
//!
//! | byte 0 | message            | fields after byte 0                      | size          |
//! |--------|--------------------|------------------------------------------|---------------|
//! | `0x61` | `Subscribe`        | token (16)                               | 17            |
//! | `0x62` | `Unsubscribe`      | handle (4)                               | 5             |
//! | `0x63` | `Media`            | handle (4), SFrame frame                 | 5 + n ≤ 1400  |
//! | `0x64` | `Handshake`        | handle (4), MLS message                  | 5 + n         |
//! | `0x65` | `DeliverWelcome`   | mailbox id (1 + m), Welcome              | 2 + m + n     |
//! | `0x66` | `FetchWelcomes`    | mailbox id (1 + m)                       | 2 + m         |
//! | `0x67` | `Hello`            | —                                        | 1             |
//!
//! Relay → client:
//!
//! | byte 0 | message            | fields after byte 0                   | size          |
//! |--------|--------------------|---------------------------------------|---------------|
//! | `0x71` | `Subscribed`       | token (16), handle (4), next seq (8)  | 29            |
//! | `0x72` | `Unsubscribed`     | handle (4)                            | 5             |
//! | `0x73` | `Media`            | receiver's handle (4), SFrame frame   | 5 + n ≤ 1400  |
//! | `0x74` | `Handshake`        | receiver's handle (4), seq (8), MLS message | 13 + n  |
//! | `0x75` | `Welcome`          | mailbox id (1 + m), Welcome           | 2 + m + n     |
//! | `0x76` | `Stored`           | mailbox id (1 + m)                    | 2 + m         |
//! | `0x77` | `Error`            | code (1), request kind (1), subject   | 3 to 68       |
//! | `0x79` | `Ready`            | —                                     | 1             |
//!
//! Type `0x18` (version 2's `Challenge`, `0x58`) is retired and never reused, as is error
//! code 14 (version 2's `Unproven`): both parse as unknown.
//!
//! An error's request kind is the 5-bit type code of the refused request (0 for a datagram
//! that did not parse); its subject is what that request named: nothing, the token (16), the
//! handle (4) or the mailbox id (1 + m). Media costs [`MEDIA_OVERHEAD`] =
//! 5 bytes of relay framing per packet in each direction. Every message is at most
//! [`MAX_MESSAGE`] (60 KiB); media at most [`MAX_MEDIA_MESSAGE`] (1400, one datagram);
//! handshake messages at most [`MAX_HANDSHAKE`] so both the request and the relay's
//! stamped copy fit. A message is one datagram of the carrier, which must deliver messages
//! larger than one packet (commits and Welcomes of large rooms) whole.
//!
//! ## The carrier authenticates connections
//!
//! The router trusts that every datagram it is given under a [`ConnId`] comes from that
//! connection, and sends to that connection whatever it asked for (a channel's media, a
//! mailbox's Welcomes). So the carrier must authenticate each connection and validate its
//! peer's address. sotto's carrier is QUIC (`sotto::quic`): it does both (Retry,
//! anti-amplification limits), and encrypts each connection, so a network observer sees
//! neither the requests nor the tokens in them. A raw-UDP carrier is **not** safe for
//! this wire — anyone can forge a source address, and so act for a client or make the
//! relay send to a third party — and sotto ships none. Handles are 32 bits drawn per
//! connection under the relay's key (distinct within a connection); receivers
//! authenticate every SFrame frame whatever the relay forwards.
//!
//! # Router
//!
//! [`Router`] is sans-IO: the I/O layer names connections ([`ConnId`]), feeds datagrams in
//! with [`Router::receive`] and sends what the sink gets. A connection is made by its
//! `Hello`, answered with [`RelayMessage::Ready`]; the router refuses any other request
//! from a connection it holds no state for with [`ErrorCode::NotConnected`] (it never
//! said Hello, or the router forgot it: a restart, [`Router::disconnect`]), so a client
//! says Hello first, waits for `Ready`, and says Hello again (and subscribes again) when
//! told its connection is unknown. Channels live while they have
//! subscribers. Media goes to every other subscriber, each with its own handle; handshake
//! messages get a per-channel sequence number and go to every subscriber, the sender
//! included, so a committer learns where its commit was ordered. A channel keeps its
//! latest handshake messages ([`RouterLimits::history_per_channel`]) and sends them, with
//! their numbers, after every `Subscribe` (a repeated one too): a client that missed one
//! (lost, or published before it subscribed) asks again and applies the channel's
//! messages in the relay's order, so members that see two rival commits of one epoch all
//! apply the same one first. Welcomes wait in mailboxes
//! keyed by the invitee's KeyPackage reference until they expire. Every limit
//! ([`RouterLimits`]) is enforced by refusing the one request with an error to its sender.
//! Besides the relay-wide limits, each connection has quotas of its own — subscriptions,
//! channels it opened, Welcomes and Welcome bytes held for it ([`Router::usage`]) — so one
//! client cannot use up what the others share. A channel is charged to its opener until it
//! closes, a Welcome to its depositor until it expires; a disconnect ends a connection's
//! charges (its Welcomes stay for their invitees).
//!
//! Clients move to each new epoch's token: subscribe to the new one, keep the old one
//! through the grace period, then unsubscribe. Both are independent, cheap operations.
//!
//! ```
//! use std::time::Instant;
//! use sotto::media::ChannelToken;
//! use sotto::relay::{ClientMessage, ConnId, RelayMessage, Router, RouterLimits};
//!
//! let mut router = Router::new(RouterLimits::default(), &[0x42; 32]);
//! let now = Instant::now();
//! let token = ChannelToken([9; 16]);
//! let mut out = Vec::new();
//! let mut sink = |to: ConnId, bytes: &[u8]| out.push((to, bytes.to_vec()));
//!
//! let mut buf = [0u8; 64];
//! for conn in [ConnId(1), ConnId(2)] {
//!     let n = ClientMessage::Hello.encode(&mut buf)?; // answered with `Ready`
//!     router.receive(conn, &buf[..n], now, &mut sink).unwrap();
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
//! # Ok::<(), sotto::relay::WireError>(())
//! ```

mod client;
mod codec;
mod router;
mod wire;

pub use client::{ClientError, ClientEvent, RelayClient};

pub use router::{ConnId, Departure, DropStats, Router, RouterLimits, RouterStats, Usage};
pub use wire::{
    ChannelHandle, ClientMessage, ErrorCode, MailboxId, RelayMessage, Request, WireError,
    HANDSHAKE_OVERHEAD, HANDSHAKE_REQUEST_OVERHEAD, MAX_HANDSHAKE, MAX_MEDIA_FRAME,
    MAX_MEDIA_MESSAGE, MAX_MESSAGE, MEDIA_OVERHEAD, VERSION,
};
