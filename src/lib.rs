//! # sotto — end-to-end encrypted group audio
//!
//! sotto lets an app run group voice calls through a relay (SFU) that learns nothing but
//! opaque channel tokens, ciphertext, packet sizes and timing: no user ids, no room names,
//! no audio.
//!
//! The crate is layered (see `DESIGN.md` in the project's shared folder):
//!
//! - [`frame`]: RFC 9605 SFrame — header codec, the five cipher suites, key schedule,
//!   [`frame::FrameSealer`] (a key with its counter) and [`frame::FrameOpener`] (keys by KID
//!   with replay windows). It knows nothing of MLS, rooms or Opus.
//! - [`keys`]: the RFC 9605 §5.2 KID layout and the [`keys::KeyRing`] of epochs and lazily
//!   derived per-sender keys.
//! - [`media`]: the data plane, [`media::MediaSession`], which applies
//!   [`media::EpochKeys`] and seals/opens frames. No MLS calls, no locks.
//! - `audio` (feature `opus`, default): Opus encode → seal and open → decode with FEC and
//!   loss concealment; constant cadence and size by default.
//! - [`room`]: the control plane, [`room::Room`], one MLS group (RFC 9420 via `openmls`)
//!   that emits [`media::EpochKeys`], channel tokens and safety codes.
//!
//! - [`stage`]: stage rooms — a host, a few speakers and up to 65,536 listeners keyed by a
//!   logical key hierarchy instead of a full MLS tree.
//!
//! - [`rtp`]: sealed Opus frames as RTP payloads (for SFUs that forward RTP), without
//!   I/O.
//!
//! - `webrtc` (feature `webrtc`): a WebRTC peer connection on `str0m` carrying sealed
//!   audio as RTP and handshake bytes on a data channel, through an SFU such as Janus.
//!
//! - `call` (feature `opus`, default): the call engine, `call::Call`: one member of one
//!   room, sans-IO, doing all of the above plus the relay protocol. Start here.
//!
//! Every untrusted input (frames, handshake messages, relay messages) is parsed without
//! panicking; failures are typed errors.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[cfg(feature = "opus")]
pub mod audio;
#[cfg(feature = "opus")]
pub mod call;
pub mod frame;
mod hash;
pub mod keys;
pub mod media;
pub mod provider;
#[cfg(feature = "quic")]
pub mod quic;
pub mod relay;
pub mod room;
pub mod rtp;
pub mod stage;
#[cfg(feature = "webrtc")]
pub mod webrtc;

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
