//! What a relay (SFU) provider runs: the client ↔ relay wire format and a sans-IO router
//! keyed by opaque channel tokens. Never links against room or key secrets.
//!
//! The relay sees channel tokens (16 opaque bytes per epoch), short per-connection channel
//! handles, SFrame ciphertext, MLS handshake messages, Welcomes addressed to opaque
//! KeyPackage references, sizes and timing. Nothing else.
//!
//! # Wire format, version 2
//!
//! One message per datagram. The first byte is `version (3 bits) ‖ type (5 bits)`; version
//! 2 is `0b010`, so every v2 message starts with `0x4_` (client → relay) or `0x5_` (relay
//! → client), and any other version is refused with [`WireError::UnsupportedVersion`] (the
//! relay answers [`ErrorCode::UnsupportedVersion`]). Version 1 (`0x2_`, `0x3_`) had 2-byte
//! handles and no [`Proof`]; its layouts are not compatible, hence the new version.
//! Integers are big-endian. A message whose last field is a payload ends with the
//! datagram; any other message must end exactly after its last field
//! ([`WireError::TrailingBytes`]). A mailbox id is a length byte (1..=64) and that many
//! bytes. A handle is 4 bytes, a proof 16.
//!
//! Client → relay:
//!
//! | byte 0 | message            | fields after byte 0                      | size          |
//! |--------|--------------------|------------------------------------------|---------------|
//! | `0x41` | `Subscribe`        | proof (16), token (16)                   | 33            |
//! | `0x42` | `Unsubscribe`      | proof (16), handle (4)                   | 21            |
//! | `0x43` | `Media`            | handle (4), SFrame frame                 | 5 + n ≤ 1400  |
//! | `0x44` | `Handshake`        | proof (16), handle (4), MLS message      | 21 + n        |
//! | `0x45` | `DeliverWelcome`   | proof (16), mailbox id (1 + m), Welcome  | 18 + m + n    |
//! | `0x46` | `FetchWelcomes`    | proof (16), mailbox id (1 + m)           | 18 + m        |
//! | `0x47` | `Hello`            | cookie (16)                              | 17            |
//!
//! Relay → client:
//!
//! | byte 0 | message            | fields after byte 0                   | size          |
//! |--------|--------------------|---------------------------------------|---------------|
//! | `0x51` | `Subscribed`       | token (16), handle (4), next seq (8)  | 29            |
//! | `0x52` | `Unsubscribed`     | handle (4)                            | 5             |
//! | `0x53` | `Media`            | receiver's handle (4), SFrame frame   | 5 + n ≤ 1400  |
//! | `0x54` | `Handshake`        | receiver's handle (4), seq (8), MLS message | 13 + n  |
//! | `0x55` | `Welcome`          | mailbox id (1 + m), Welcome           | 2 + m + n     |
//! | `0x56` | `Stored`           | mailbox id (1 + m)                    | 2 + m         |
//! | `0x57` | `Error`            | code (1), request kind (1), subject   | 3 to 68       |
//! | `0x58` | `Challenge`        | cookie (16)                           | 17            |
//! | `0x59` | `Ready`            | proof (16)                            | 17            |
//!
//! An error's request kind is the 5-bit type code of the refused request (0 for a datagram
//! that did not parse); its subject is what that request named: nothing, the token (16), the
//! handle (4) or the mailbox id (1 + m) — never the proof. Media costs [`MEDIA_OVERHEAD`] =
//! 5 bytes of relay framing per packet in each direction. Every message is at most
//! [`MAX_MESSAGE`] (60 KiB); media at most [`MAX_MEDIA_MESSAGE`] (1400, one datagram);
//! handshake messages at most [`MAX_HANDSHAKE`] so both the request and the relay's
//! stamped copy fit. The reference UDP transport is for rooms whose commits and Welcomes
//! fit what the path carries (larger ones rely on IP fragmentation).
//!
//! ## Proof of the connection
//!
//! The relay answers a connection's Hello with `Ready` and the connection's [`Proof`]: 16
//! bytes derived from the relay's own key, the same for every Hello of that connection
//! (so a forged Hello only repeats it to its owner, in 17 bytes for 17). Every request that
//! changes the relay's state, costs a quota or makes the relay send — `Subscribe`,
//! `Unsubscribe`, `Handshake` (fanned out to a whole channel, and it takes a sequence
//! number), `DeliverWelcome`, `FetchWelcomes` (up to 256 KiB of Welcomes a minute, and it
//! uses up the connection's allowance) — carries it; the router compares it in constant
//! time and drops a request without it, unanswered ([`ErrorCode::Unproven`], counted).
//! `Hello` carries none: it is how a connection learns its proof, and over raw UDP the
//! address check guards it. `Media` carries none, to keep 16 bytes off every packet: its
//! handle stands for it. Handles are 32 bits drawn per connection under the relay's key
//! (distinct within a connection), so a forger who never saw one hits one of a
//! connection's at most 64 channels with probability 64 / 2^32 per datagram, and media on
//! a handle the connection does not hold is dropped unanswered too. What a hit would
//! achieve is bounded anyway: receivers authenticate every SFrame frame. A client
//! ([`RelayClient`]) takes only answers to what it asked ([`ClientEvent::Unsolicited`]
//! otherwise).
//!
//! The proof travels in the clear: it stops forgers off the path, not an observer on it,
//! who can read a proof and a handle and act for that connection (as it could drop or
//! delay its traffic anyway). Transports that protect their datagrams (QUIC, DTLS) stop
//! that observer too.
//!
//! # Router
//!
//! [`Router`] is sans-IO: the I/O layer names connections ([`ConnId`]), feeds datagrams in
//! with [`Router::receive`] and sends what the sink gets. Channels live while they have
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
//! A [`ConnId`] must name a peer whose address is proven: the router sends to it whatever
//! the connection asked for (a channel's media, a mailbox's Welcomes). Transports that
//! validate addresses themselves (QUIC, TCP, WebRTC) pass every datagram on; a transport on
//! raw UDP, where a source address can be forged, lets an address in only after it echoed
//! an [`AddressCheck`] cookie in a [`ClientMessage::Hello`] (`examples/relay.rs` does).
//! Either way the router answers a Hello with [`RelayMessage::Ready`] and the connection's
//! [`Proof`], so a client says Hello first and waits for `Ready` before anything else.
//!
//! Clients move to each new epoch's token: subscribe to the new one, keep the old one
//! through the grace period, then unsubscribe. Both are independent, cheap operations.
//!
//! ```
//! use std::time::Instant;
//! use sotto::media::ChannelToken;
//! use sotto::relay::{ClientMessage, ConnId, Cookie, RelayMessage, Router, RouterLimits};
//!
//! let mut router = Router::new(RouterLimits::default(), &[0x42; 32]);
//! let now = Instant::now();
//! let token = ChannelToken([9; 16]);
//! let mut out = Vec::new();
//! let mut sink = |to: ConnId, bytes: &[u8]| out.push((to, bytes.to_vec()));
//!
//! let mut buf = [0u8; 64];
//! for conn in [ConnId(1), ConnId(2)] {
//!     let n = ClientMessage::Hello { cookie: Cookie::default() }.encode(&mut buf)?;
//!     router.receive(conn, &buf[..n], now, &mut sink).unwrap();
//!     let proof = router.proof(conn).unwrap(); // what `Ready` told the client
//!     let n = ClientMessage::Subscribe { proof, token }.encode(&mut buf)?;
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

mod address;
mod client;
mod codec;
mod router;
mod wire;

pub use address::{AddressCheck, Admission, CHALLENGE_LEN};
pub use client::{ClientError, ClientEvent, RelayClient};

pub use router::{ConnId, Departure, DropStats, Router, RouterLimits, RouterStats, Usage};
pub use wire::{
    ChannelHandle, ClientMessage, Cookie, ErrorCode, MailboxId, Proof, RelayMessage, Request,
    WireError, HANDSHAKE_OVERHEAD, HANDSHAKE_REQUEST_OVERHEAD, MAX_HANDSHAKE, MAX_MEDIA_FRAME,
    MAX_MEDIA_MESSAGE, MAX_MESSAGE, MEDIA_OVERHEAD, VERSION,
};
