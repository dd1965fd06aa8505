//! The call engine: one member of one room, sans-IO, in the style of `quinn-proto`'s
//! `Connection`. No sockets, no clock, no threads: the app feeds it datagrams, time and
//! microphone PCM, and drains datagrams, deadlines, events and speaker PCM.
//!
//! ```no_run
//! # use std::time::{Duration, Instant};
//! # use sotto::call::{Call, CallConfig, CallEvent};
//! # use sotto::room::Identity;
//! # use sotto::provider::Provider;
//! # fn mic(_: &mut [i16]) {}
//! # fn speaker(_: &[i16]) {}
//! # fn socket_send(_: &[u8]) {}
//! # fn socket_recv() -> Option<Vec<u8>> { None }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let identity = Identity::new(Provider::new()?, b"owl-7f3a")?;
//! let mut call = Call::create(identity, CallConfig::default(), Instant::now())?;
//! let mut pcm = vec![0i16; call.frame_samples()];
//! let mut datagram = Vec::new();
//! let mut next_frame = Instant::now();
//! loop {
//!     let now = Instant::now();
//!     while let Some(bytes) = socket_recv() {
//!         let _ = call.handle_datagram(&bytes, now); // bad datagrams are refused, typed
//!     }
//!     if call.poll_timeout().is_some_and(|t| t <= now) {
//!         call.handle_timeout(now);
//!     }
//!     if now >= next_frame {
//!         mic(&mut pcm);
//!         call.send_audio(&pcm, now)?;
//!         call.pull_audio(&mut pcm, now)?;
//!         speaker(&pcm);
//!         next_frame += Duration::from_millis(20);
//!     }
//!     while call.poll_transmit(&mut datagram) {
//!         socket_send(&datagram);
//!     }
//!     while let Some(event) = call.poll_event() {
//!         if let CallEvent::EpochChanged { safety_code, .. } = event {
//!             println!("safety code {safety_code}");
//!         }
//!     }
//! #   break;
//! }
//! # Ok(()) }
//! ```
//!
//! What the engine does for the app:
//!
//! - **Transport.** It speaks through a [`Transport`] ([`RelayTransport`] for sotto's relay
//!   wire): connects, and reconnects when the other side forgot it (after a relay restart
//!   every subscription is asked again).
//! - **Channels.** Subscriptions follow the tokens the media session holds: one channel
//!   per epoch still in use, joined when its keys arrive, left when they retire.
//!   Unconfirmed requests are repeated every [`CallConfig::retry`].
//! - **Handshake.** Messages go to the [`Room`] in the relay's order: each channel's
//!   messages by their number ([`Inbound::Handshake`]), none before every lower number was
//!   seen, a missing one asked again with a repeated subscribe (the relay sends what the
//!   channel keeps). When two members commit in one epoch, every member applies the one
//!   the relay numbered first, also a member that lost it on the way: rooms do not fork.
//!   A message of an epoch not reached yet is held (at most
//!   [`CallConfig::max_early_handshakes`]) and retried after each epoch change. Commits
//!   are published on the current epoch's channel, confirmed by their echo (repeated until
//!   echoed, since a datagram can be lost), and once confirmed published again on that
//!   channel a few times ([`CallConfig::republish`]), with the proposals they cover, for
//!   members who reach that epoch after a relay restart. Welcomes go into the relay mailbox
//!   of each invitee once their commit is confirmed (the Welcome of a commit that lost the
//!   race would admit the invitee to an epoch no other member reaches), repeated until
//!   stored, and again after a reconnection until the invitee is heard. A leaving member
//!   proposes its removal again after each epoch change that did not commit it.
//! - **Keys.** Staged and current keys go to the [`MediaSession`]; a joined or restored
//!   member makes its first own commit (a self-update) as soon as it can, since it seals
//!   only in epochs that descend from its own randomness (see [`Room`]); every
//!   [`CallConfig::self_update_every`] it refreshes its keys (post-compromise security).
//! - **Audio.** One [`AudioReceiver`] per other member and stream, keyed by [`MemberId`]
//!   (leaf and signature key) and [`StreamId`]: the microphone's made and dropped as the
//!   member list changes, another stream's once a frame of it opened;
//!   [`Call::pull_audio`] mixes them, [`Call::voices`] gives each one's frame.
//!
//! Everything is bounded: held handshakes, queued datagrams and events, Welcome retries.
//! Nothing untrusted panics: a bad datagram is an error and changes nothing.
//!
//! # Sealed handshake messages
//!
//! The engine never puts a bare MLS message on a channel: its framing would show the relay
//! the group id (the same for the room's whole life, so it links every channel token of
//! the room), the epoch and the content type. Every commit and proposal a member sends
//! travels sealed under its epoch's handshake key
//! (`MLS-Exporter("sotto 1 handshake key", "", 16)`), which only members of that epoch
//! can compute, with a fresh nonce, padded to a size bucket
//! ([`CallConfig::handshake_padding`]):
//!
//! ```text
//! byte 0      0xA1 (a sealed handshake message, version 1; an MLS message starts with 0x00)
//! bytes 1-12  nonce: 12 random bytes, fresh for every message
//! bytes 13-   AES-128-GCM under the handshake key of the epoch whose channel carries it,
//!             AAD = byte 0 ‖ the channel token (16 bytes),
//!             plaintext = the MLS message's length (4 bytes, big-endian) ‖ the MLS
//!             message ‖ zero bytes up to the bucket; then the 16-byte tag
//! ```
//!
//! A member knows which key opens a message from the channel it arrived on (the key of
//! each epoch comes with its token in [`EpochKeys`]). A message that does not open is
//! refused like a bad MLS message (it still takes its place in the channel's order). The
//! one bare MLS message a member accepts is a proposal of an external sender (the relay
//! proposing a removal: a PublicMessage the relay wrote itself), and only for the epoch
//! whose channel carries it (a rule of the message and channel alone, so every member
//! decides alike whenever it arrives). [`Room`] still takes and gives plain
//! MLS messages: sealing is the engine's, on the transport side.
//!
//! Welcomes cannot be sealed (the invitee shares no key with the room before it joins);
//! they travel padded to the same buckets, `0xA2 ‖ length (4 bytes, big-endian) ‖ the MLS
//! Welcome ‖ zero bytes` ([`sealed::pad_welcome`]), which hides the exact size of the
//! room's ratchet tree. What a Welcome still shows whoever holds the mailbox: the mailbox
//! id (the invitee's KeyPackage reference, which routes it), the cipher suite, the
//! KeyPackage references of every invitee of the same commit, and its bucket.

#[cfg(feature = "webrtc")]
mod janus;
pub mod sealed;
mod transport;

#[cfg(feature = "webrtc")]
pub use janus::{JanusTransport, Outbound as JanusOutbound};
use sealed::SEALED_HANDSHAKE;
pub use transport::{Inbound, RelayTransport, Transport, TransportError};

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::provider::Provider;
use bytes::BytesMut;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{ContentType, MlsMessageBodyIn, MlsMessageIn};
use openmls_traits::OpenMlsProvider;

use crate::audio::{AudioConfig, AudioError, AudioReceiver, AudioSender, Pulled, ReceiverStats};
use crate::frame::Header;
use crate::keys::{KeyError, MemberId, StreamId};
use crate::media::{ChannelToken, EpochKeys, MediaConfig, MediaSession};
use crate::relay::{MailboxId, MAX_HANDSHAKE, MAX_MESSAGE};

/// The largest padded Welcome: it fits the relay's Welcome messages (type byte, mailbox id
/// of at most [`MailboxId::MAX_LEN`] bytes with its length byte) in [`MAX_MESSAGE`].
const MAX_WELCOME: usize = MAX_MESSAGE - 2 - MailboxId::MAX_LEN;
use crate::room::{
    Commit, Identity, ParamsError, ProposalId, ProposalInfo, PublishedKeyPackage, Rejection, Room,
    RoomConfig, RoomError, RoomEvent, SafetyCode,
};

/// Datagrams queued for [`Call::poll_transmit`] at most; beyond, new ones are dropped and
/// counted ([`CallStats::transmit_dropped`]).
const MAX_TRANSMIT: usize = 1024;
/// Events queued for [`Call::poll_event`] at most; beyond, the oldest are dropped and
/// counted ([`CallStats::events_dropped`]).
const MAX_EVENTS: usize = 256;
/// Spare datagram buffers kept for reuse.
const MAX_SPARE: usize = 64;
/// Housekeeping (retired epochs, subscriptions) runs at least this often.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// How long an invitee's Welcome is kept for delivery again after a reconnection (a
/// restarted relay lost its mailboxes; an invitee that has not fetched it by then needs a
/// new invitation).
const KEEP_WELCOME: Duration = Duration::from_secs(120);
/// Handshake messages held per channel behind a missing number, and proposals kept per
/// epoch for publishing again, at most.
const MAX_HELD: usize = 64;
/// After a reconnection, how long this member makes no commit and sends its unconfirmed
/// one no more: the other side may have lost its order (a restarted relay numbers afresh),
/// and the commits members applied just before go out again first (see [`Applied`]), so
/// members that missed one apply it rather than a new rival.
const REJOIN_HOLD: Duration = Duration::from_secs(1);
/// After a commit of the current epoch that this member could not process (it may lack a
/// proposal the commit covers, which other members had and applied), how long it makes no
/// commit of its own: its commit would race one the others may have applied.
const DOUBT: Duration = Duration::from_secs(3);
/// Commits that moved this member's epoch, kept for publishing again after a reconnection:
/// how many, and how long.
const MAX_APPLIED: usize = 8;
const KEEP_APPLIED: Duration = Duration::from_secs(30);
/// How long a member hears nobody in its epoch before it asks for its channel's messages
/// again (see [`Call::catch_up`]).
const CATCH_UP: Duration = Duration::from_secs(2);

/// Who may commit in a room (see [`CallConfig::committer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Committer {
    /// Any member commits (default): fine for rooms of a few dozen members, where two
    /// commits of one epoch are rare and the loser simply redoes its operation.
    Anyone,
    /// Only designated members commit membership changes and periodic self-updates; this
    /// member is not one of them ([`Call::invite`], [`Call::remove`], [`Call::approve`]
    /// and [`Call::self_update`] return [`CallError::NotCommitter`]). It still makes the
    /// one self-update that lets it speak after joining or a restart (a member seals only
    /// in epochs that descend from its own commit), so big rooms see one commit per
    /// joiner, not one per member per period.
    Others,
}

/// How a [`Call`] behaves. The defaults are safe; each field says what it trades.
#[derive(Clone, Debug)]
pub struct CallConfig {
    /// The room: its media parameters and external senders when this member creates it
    /// (a joiner reads them from its Welcome, see [`RoomParams`](crate::room::RoomParams)),
    /// and this member's proposal policy.
    pub room: RoomConfig,
    /// The data plane: switch delay, grace period, replay window, forgery budget.
    pub media: MediaConfig,
    /// The Opus pipeline, including the playout delay
    /// ([`AudioConfig::playout_delay_frames`]).
    pub audio: AudioConfig,
    /// Unanswered requests (connect, subscribe, Welcome delivery, an unechoed commit) are
    /// repeated after this. Default 500 ms.
    pub retry: Duration,
    /// A joiner asks the relay for its Welcome this often. Default 250 ms.
    pub fetch_every: Duration,
    /// Times a Welcome delivery or an unechoed commit is sent before giving up. Default 10.
    pub tries: u32,
    /// Delays after its echo at which a confirmed commit is published again on its
    /// channel, for members whose copy was lost and joiners still subscribing (duplicates
    /// are refused as stale by everyone who has it). Default 250 ms, 500 ms, 1 s, 2 s, 4 s.
    pub republish: Vec<Duration>,
    /// Handshake messages of epochs not reached yet held for a retry. Default 16.
    pub max_early_handshakes: usize,
    /// Self-update this often (post-compromise security: keys a thief took stop working
    /// after the next one). `None`: never on its own. Default 10 minutes.
    pub self_update_every: Option<Duration>,
    /// Who may commit. Default [`Committer::Anyone`].
    pub committer: Committer,
    /// The smallest size a sealed handshake message is padded to, in bytes; larger ones go
    /// to the next power of two (see [sealed handshakes](self#sealed-handshake-messages)).
    /// Default 4,096: a self-update, an add and a remove of a room of 2 to about 40 members
    /// all travel as 4,096 bytes. 0 pads to powers of two only. Welcomes are padded to the
    /// same buckets (4,096 bytes hold the Welcome of a room of up to about 16 members).
    pub handshake_padding: usize,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig {
            room: RoomConfig::default(),
            media: MediaConfig::default(),
            audio: AudioConfig::default(),
            retry: Duration::from_millis(500),
            fetch_every: Duration::from_millis(250),
            tries: 10,
            republish: [250, 500, 1000, 2000, 4000]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            max_early_handshakes: 16,
            handshake_padding: 4096,
            self_update_every: Some(Duration::from_secs(600)),
            committer: Committer::Anyone,
        }
    }
}

/// Why a call operation did not happen. The call is unchanged after any of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// Not in a room (still waiting for a Welcome, removed, or left).
    #[error("not in a room")]
    NotInRoom,
    /// A commit of this member is in flight; wait for its echo.
    #[error("a commit is in flight")]
    CommitInFlight,
    /// The transport has not confirmed the current epoch's channel yet (where commits are
    /// published), or reconnected a moment ago (commits wait a second, see
    /// [`Call::ready_to_commit`]): try again shortly.
    #[error("the current channel is not confirmed yet")]
    NotConnected,
    /// This member does not commit ([`Committer::Others`]).
    #[error("this member does not commit")]
    NotCommitter,
    /// No such member in the room (or it is this member).
    #[error("no such member")]
    NoSuchMember,
    /// The room refused.
    #[error("room: {0}")]
    Room(#[from] RoomError),
    /// The transport refused or could not read a datagram.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The audio pipeline refused (e.g. a PCM buffer of the wrong size).
    #[error("audio: {0}")]
    Audio(#[from] AudioError),
}

/// Something the app may want to show or act on.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallEvent {
    /// A Welcome admitted this member; it hears the room now and speaks after its first
    /// own commit (made by the engine).
    Joined {
        /// The epoch joined.
        epoch: u64,
    },
    /// Another member is in the room (also given for every member found on joining).
    MemberJoined {
        /// Its data-plane name (leaf and signature key).
        member: MemberId,
        /// The pseudonym in its credential.
        pseudonym: Vec<u8>,
    },
    /// A member left or was removed.
    MemberLeft {
        /// Its data-plane name.
        member: MemberId,
    },
    /// The room moved to a new epoch. Compare the safety code with the other members'
    /// out of band to rule out a man in the middle.
    EpochChanged {
        /// The new epoch.
        epoch: u64,
        /// Its safety code.
        safety_code: SafetyCode,
    },
    /// A member or an external sender proposed something. Removals and updates go into
    /// this member's next commit; adds and extension changes wait for
    /// [`Call::approve`].
    ProposalQueued(ProposalInfo),
    /// This member's commit lost the race at the relay; an operation the app asked for is
    /// to be asked again (the engine redoes its own self-updates).
    CommitDropped,
    /// This member was removed (or its leave was committed): the call is over.
    Removed,
    /// Something went wrong that the app may show.
    Warning(Warning),
}

/// A problem worth showing; the call goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A Welcome was never confirmed stored after [`CallConfig::tries`] deliveries.
    WelcomeUndelivered,
    /// A commit was never echoed after [`CallConfig::tries`] sends: it was dropped; the
    /// operation is to be asked again.
    CommitUnconfirmed,
    /// The data plane refused an epoch's keys.
    KeysRefused(KeyError),
    /// A commit naming this member's own leaf that this instance did not make
    /// ([`Rejection::FromOwnLeaf`]): another instance of this member may be running.
    OwnLeafCommit,
    /// A Welcome for this member's KeyPackage opened but names room parameters this build
    /// does not support (or none): the KeyPackage is used up, so this member cannot join
    /// from it; publish a new one (and a build that supports the room's parameters).
    UnsupportedRoom(ParamsError),
}

/// Counters of a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Datagrams handed out by [`Call::poll_transmit`].
    pub datagrams_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Datagrams given to [`Call::handle_datagram`].
    pub datagrams_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Datagrams that did not parse.
    pub malformed: u64,
    /// Audio frames sealed and queued.
    pub frames_sent: u64,
    /// Calls of [`Call::send_audio`] that sent nothing (no sending key yet, or its channel
    /// not confirmed).
    pub frames_unsent: u64,
    /// Media frames received.
    pub media_in: u64,
    /// Media frames with no receiver (unknown or removed sender, or not in a room).
    pub media_unrouted: u64,
    /// Handshake messages applied.
    pub handshakes_applied: u64,
    /// Handshake messages of a later epoch, held for a retry.
    pub handshakes_early: u64,
    /// Handshake messages refused (stale, duplicate, forged, not allowed).
    pub handshakes_refused: u64,
    /// Handshake messages whose number was seen already (copies, replays), not processed.
    pub handshakes_duplicate: u64,
    /// Times a channel's messages were asked again because a number was missing.
    pub handshake_gaps_asked: u64,
    /// Missing numbers given up after [`CallConfig::tries`] askings (the relay no longer
    /// kept them): the messages after them went on without them.
    pub handshake_gaps_skipped: u64,
    /// Commits this member made.
    pub commits: u64,
    /// Commits of this member that lost the race.
    pub commits_dropped: u64,
    /// Commit messages sent again (unechoed, or republished after their echo).
    pub commits_resent: u64,
    /// Epoch changes.
    pub epoch_changes: u64,
    /// Subscribe requests sent.
    pub subscribes: u64,
    /// Unsubscribe requests sent.
    pub unsubscribes: u64,
    /// Connect requests sent (the first, retries, and after the other side forgot this
    /// client).
    pub connects: u64,
    /// Welcome fetches sent.
    pub fetches: u64,
    /// Welcome deliveries sent.
    pub welcomes_delivered: u64,
    /// Welcomes received that did not admit this member.
    pub welcomes_ignored: u64,
    /// Datagrams dropped because [`Call::poll_transmit`] was not called.
    pub transmit_dropped: u64,
    /// Events dropped because [`Call::poll_event`] was not called.
    pub events_dropped: u64,
}

/// One other member's audio this interval (see [`Call::voices`]).
#[derive(Clone, Copy, Debug)]
pub struct Voice<'a> {
    /// The member.
    pub member: MemberId,
    /// Which of its streams ([`StreamId::MICROPHONE`] unless it sends others).
    pub stream: StreamId,
    /// The pseudonym in its credential.
    pub pseudonym: &'a [u8],
    /// Its frame of the last [`Call::pull_audio`].
    pub pcm: &'a [i16],
    /// How that frame came about.
    pub pulled: Pulled,
    /// Its receiver's counters.
    pub stats: ReceiverStats,
    /// Its receiver's playout delay now (configured plus what late packets added).
    pub playout_delay: Duration,
}

/// The parts of a call ([`Call::into_parts`]).
pub struct CallParts<P: OpenMlsProvider, T: Transport> {
    /// The room, once created, joined or loaded.
    pub room: Option<Room<P>>,
    /// The data plane.
    pub media: MediaSession,
    /// The transport.
    pub transport: T,
}

struct Peer {
    pseudonym: Vec<u8>,
    /// One receiver per stream the member sends: the microphone's from the start, the
    /// others from their first frame (at most the room's `2^T`, sorted).
    streams: Vec<PeerStream>,
    /// Epoch bits of the newest frame of it that opened.
    heard: Option<u64>,
}

struct PeerStream {
    stream: StreamId,
    receiver: AudioReceiver,
    pcm: Vec<i16>,
    pulled: Pulled,
}

impl PeerStream {
    fn new(stream: StreamId, config: &AudioConfig) -> Option<PeerStream> {
        // The configuration was checked when the sender was made.
        let receiver = AudioReceiver::new(config).ok()?;
        Some(PeerStream {
            stream,
            receiver,
            pcm: vec![0; config.frame_samples()],
            pulled: Pulled::Idle,
        })
    }
}

struct Joining<P: OpenMlsProvider> {
    identity: Identity<P>,
    key_package: PublishedKeyPackage,
    last_fetch: Option<Instant>,
}

/// A Welcome for an invitee.
struct Invite {
    mailbox: Vec<u8>,
    welcome: Vec<u8>,
    sent: Instant,
    tries: u32,
    stored: bool,
    made: Instant,
}

/// This member's commit in flight.
struct InFlight {
    token: ChannelToken,
    sent: Instant,
    tries: u32,
    /// The engine made it (a self-update), not the app.
    own: bool,
    /// Its Welcome and the invitees' mailboxes: delivered once the commit is confirmed.
    welcome: Option<(Vec<u8>, Vec<Vec<u8>>)>,
    /// The proposals it covers, as received: sent again before it (after a relay restart,
    /// a member that lost one could not process the commit).
    proposals: Vec<Vec<u8>>,
}

/// A commit that moved this member's epoch (its own or another member's), kept for
/// publishing again on its channel: this member's own on the [`CallConfig::republish`]
/// schedule, for members whose copy was lost; every one once after a reconnection, since a
/// restarted relay lost the order in which it came and members that missed it would
/// otherwise apply a rival commit made since. The proposals it covers go before it (a
/// member that lacks one cannot process the commit).
struct Applied {
    token: ChannelToken,
    message: Vec<u8>,
    /// The proposals it covers, as received.
    proposals: Vec<Vec<u8>>,
    /// When it was applied.
    at: Instant,
    /// For this member's own commit: the next entry of the schedule.
    scheduled: Option<usize>,
    /// To be published again once its channel is confirmed (after a reconnection).
    due: bool,
}

/// One channel's handshake messages in the relay's order: the room gets them by number,
/// none before every lower number was seen.
struct Order {
    token: ChannelToken,
    /// The next number the room gets.
    next: u64,
    /// One past the highest number known to exist (seen, or told by
    /// [`Inbound::Subscribed`]): numbers from `next` up to it are missing.
    known: u64,
    /// Messages numbered after a missing one.
    held: BTreeMap<u64, Vec<u8>>,
    /// Since when a number is missing; how many times the channel's messages were asked
    /// again since, and when last.
    gap_since: Option<Instant>,
    asked: u32,
    asked_at: Option<Instant>,
}

impl Order {
    fn missing(&self) -> bool {
        self.next < self.known
    }

    /// A number was seen: notes a gap that opens.
    fn learn(&mut self, known: u64, now: Instant) {
        self.known = self.known.max(known);
        if self.missing() {
            self.gap_since.get_or_insert(now);
        }
    }

    /// The other side told how many messages the channel numbered: numbers from it on do
    /// not exist yet, so a held message under one was forged (by the relay, or whoever else
    /// can put datagrams into this connection) and goes, or it was numbered after this
    /// answer was sent and comes again with the next asking.
    fn told(&mut self, next_seq: u64, now: Instant) {
        self.known = next_seq;
        self.held.retain(|seq, _| *seq < next_seq);
        if self.missing() {
            self.gap_since.get_or_insert(now);
        } else {
            self.gap_since = None;
            self.asked = 0;
            self.asked_at = None;
        }
    }

    /// Numbers start again (after [`Inbound::Ready`]).
    fn reset(&mut self) {
        self.next = 0;
        self.known = 0;
        self.held.clear();
        self.gap_since = None;
        self.asked = 0;
        self.asked_at = None;
    }
}

/// One member of one room (see the [module docs](self)).
pub struct Call<P: OpenMlsProvider = Provider, T: Transport = RelayTransport> {
    config: CallConfig,
    room: Option<Room<P>>,
    joining: Option<Joining<P>>,
    removed: bool,
    /// A leave proposal waiting to be committed by another member: (token, message, sent).
    leaving: Option<(ChannelToken, Vec<u8>, Instant)>,
    media: MediaSession,
    /// One Opus encoder per stream this member sends, the microphone's first.
    senders: Vec<AudioSender>,
    peers: BTreeMap<MemberId, Peer>,
    transport: T,
    /// When a change of each channel's subscription was last asked.
    requested: Vec<(ChannelToken, Instant)>,
    connect_sent: Option<Instant>,
    /// After a (re)connection: renew every subscription once.
    renew: bool,
    early: VecDeque<Vec<u8>>,
    /// Handshake numbering of the subscribed channels.
    orders: Vec<Order>,
    /// Proposals queued in the current epoch, as received.
    proposals: Vec<Vec<u8>>,
    /// Recent commits that moved this member's epoch (at most [`MAX_APPLIED`]).
    applied: VecDeque<Applied>,
    /// When the transport reconnected (not the first connection).
    reconnected: Option<Instant>,
    /// When a commit of the current epoch could not be processed (see [`DOUBT`]).
    doubt: Option<Instant>,
    /// When the room reached its current epoch, and when this member last asked for its
    /// channel's messages because nobody was heard in it (see [`Call::catch_up`]).
    epoch_since: Instant,
    caught_up_asked: Option<Instant>,
    connected_before: bool,
    in_flight: Option<InFlight>,
    invites: Vec<Invite>,
    last_self_update: Instant,
    last_housekeeping: Option<Instant>,
    /// Since when a wanted channel has gone unconfirmed although the transport is ready.
    unconfirmed_since: Option<Instant>,
    transmit: VecDeque<BytesMut>,
    spare: Vec<BytesMut>,
    /// A sealed (or opened) handshake message.
    sealed: Vec<u8>,
    events: VecDeque<CallEvent>,
    frame: BytesMut,
    mix: Vec<i32>,
    want: Vec<ChannelToken>,
    held: Vec<ChannelToken>,
    stats: CallStats,
}

/// The epoch an MLS handshake message names (in the clear in both wire formats).
fn handshake_epoch(message: &[u8]) -> Option<u64> {
    match MlsMessageIn::tls_deserialize_exact(message).map(MlsMessageIn::extract) {
        Ok(MlsMessageBodyIn::PrivateMessage(m)) => Some(m.epoch().as_u64()),
        Ok(MlsMessageBodyIn::PublicMessage(m)) => Some(m.epoch().as_u64()),
        _ => None,
    }
}

/// Whether an MLS message is a proposal of an external sender (a PublicMessage whose
/// sender is not a member).
fn is_external_proposal(message: &[u8]) -> bool {
    match MlsMessageIn::tls_deserialize_exact(message).map(MlsMessageIn::extract) {
        Ok(MlsMessageBodyIn::PublicMessage(m)) => {
            m.content_type() == ContentType::Proposal
                && matches!(m.sender(), openmls::prelude::Sender::External(_))
        }
        _ => false,
    }
}

/// Whether an MLS handshake message is a commit (its content type is in the clear).
fn is_commit(message: &[u8]) -> bool {
    match MlsMessageIn::tls_deserialize_exact(message).map(MlsMessageIn::extract) {
        Ok(MlsMessageBodyIn::PrivateMessage(m)) => m.content_type() == ContentType::Commit,
        Ok(MlsMessageBodyIn::PublicMessage(m)) => m.content_type() == ContentType::Commit,
        _ => false,
    }
}

impl<P: OpenMlsProvider> Call<P, RelayTransport> {
    /// Creates a room with `identity` as its first member, over sotto's relay wire.
    pub fn create(
        identity: Identity<P>,
        config: CallConfig,
        now: Instant,
    ) -> Result<Self, CallError> {
        Call::create_with(identity, config, RelayTransport::new(), now)
    }

    /// Waits for a Welcome for `key_package` (made by `identity`, handed to an inviter out
    /// of band), fetched from the relay's mailbox.
    pub fn join(
        identity: Identity<P>,
        key_package: PublishedKeyPackage,
        config: CallConfig,
        now: Instant,
    ) -> Result<Self, CallError> {
        Call::join_with(identity, key_package, config, RelayTransport::new(), now)
    }

    /// Reloads a room from `provider`'s storage after a restart (see [`Room::load`]): it
    /// hears again and speaks after its first own commit, which the engine makes.
    pub fn load(
        provider: P,
        signature_key: &[u8],
        group_id: &[u8],
        config: CallConfig,
        now: Instant,
    ) -> Result<Self, CallError> {
        Call::load_with(
            provider,
            signature_key,
            group_id,
            config,
            RelayTransport::new(),
            now,
        )
    }
}

impl<P: OpenMlsProvider, T: Transport> Call<P, T> {
    fn new(config: CallConfig, transport: T, now: Instant) -> Result<Self, CallError> {
        let samples = config.audio.frame_samples();
        Ok(Call {
            senders: vec![AudioSender::new(&config.audio)?],
            media: MediaSession::new(config.media),
            config,
            room: None,
            joining: None,
            removed: false,
            leaving: None,
            peers: BTreeMap::new(),
            transport,
            requested: Vec::new(),
            connect_sent: None,
            renew: false,
            early: VecDeque::new(),
            orders: Vec::new(),
            proposals: Vec::new(),
            applied: VecDeque::new(),
            reconnected: None,
            doubt: None,
            epoch_since: now,
            caught_up_asked: None,
            connected_before: false,
            in_flight: None,
            invites: Vec::new(),
            last_self_update: now,
            last_housekeeping: None,
            unconfirmed_since: None,
            transmit: VecDeque::new(),
            spare: Vec::new(),
            sealed: Vec::new(),
            events: VecDeque::new(),
            frame: BytesMut::with_capacity(2048),
            mix: vec![0; samples],
            want: Vec::new(),
            held: Vec::new(),
            stats: CallStats::default(),
        })
    }

    /// [`create`](Call::create) over another transport.
    pub fn create_with(
        identity: Identity<P>,
        config: CallConfig,
        transport: T,
        now: Instant,
    ) -> Result<Self, CallError> {
        let mut call = Call::new(config, transport, now)?;
        let (room, keys) = Room::create(identity, call.config.room.clone())?;
        call.enter(room, keys, now);
        call.handle_timeout(now);
        Ok(call)
    }

    /// [`join`](Call::join) over another transport.
    pub fn join_with(
        identity: Identity<P>,
        key_package: PublishedKeyPackage,
        config: CallConfig,
        transport: T,
        now: Instant,
    ) -> Result<Self, CallError> {
        let mut call = Call::new(config, transport, now)?;
        call.joining = Some(Joining {
            identity,
            key_package,
            last_fetch: None,
        });
        call.handle_timeout(now);
        Ok(call)
    }

    /// [`load`](Call::load) over another transport.
    pub fn load_with(
        provider: P,
        signature_key: &[u8],
        group_id: &[u8],
        config: CallConfig,
        transport: T,
        now: Instant,
    ) -> Result<Self, CallError> {
        let mut call = Call::new(config, transport, now)?;
        let (room, keys) = Room::load(provider, signature_key, group_id, call.config.room.clone())?;
        call.enter(room, keys, now);
        // A commit made before the restart and not yet echoed is sent again.
        let pending = call
            .room
            .as_ref()
            .filter(|r| r.has_pending_commit())
            .and_then(|r| r.channel_token().ok());
        if let Some(token) = pending {
            call.in_flight = Some(InFlight {
                token,
                sent: now,
                tries: 0,
                own: true,
                welcome: None,
                proposals: Vec::new(),
            });
        }
        call.handle_timeout(now);
        Ok(call)
    }

    // ---- Accessors ----

    /// The configuration.
    pub fn config(&self) -> &CallConfig {
        &self.config
    }

    /// The room, once created, joined or loaded.
    pub fn room(&self) -> Option<&Room<P>> {
        self.room.as_ref()
    }

    /// The data plane (its epochs and tokens).
    pub fn media(&self) -> &MediaSession {
        &self.media
    }

    /// The data plane, mutably: for apps that also seal or open single frames themselves
    /// (e.g. an encoded-frame transform of their own WebRTC stack). A frame opened here is
    /// a replay to the engine's receivers, so never open here what the engine also gets.
    pub fn media_mut(&mut self) -> &mut MediaSession {
        &mut self.media
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Takes the call apart: the room (if any), the data plane and the transport, for an
    /// app that carries on with the parts itself. Queued datagrams and events are dropped.
    pub fn into_parts(self) -> CallParts<P, T> {
        CallParts {
            room: self.room,
            media: self.media,
            transport: self.transport,
        }
    }

    /// The KeyPackage waiting for its Welcome, while joining.
    pub fn key_package(&self) -> Option<&PublishedKeyPackage> {
        self.joining.as_ref().map(|j| &j.key_package)
    }

    /// The counters.
    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    /// Samples per channel × channels in one frame ([`send_audio`](Self::send_audio) and
    /// [`pull_audio`](Self::pull_audio) buffers).
    pub fn frame_samples(&self) -> usize {
        self.config.audio.frame_samples()
    }

    /// Whether this member is in a room (created, joined or loaded, and not removed).
    pub fn is_in_room(&self) -> bool {
        self.room.is_some() && !self.removed
    }

    /// Whether this member was removed (or its leave committed).
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// The room's epoch.
    pub fn epoch(&self) -> Option<u64> {
        self.room.as_ref().map(Room::epoch)
    }

    /// The current epoch's safety code.
    pub fn safety_code(&self) -> Option<SafetyCode> {
        self.room.as_ref().map(Room::safety_code)
    }

    /// Whether [`send_audio`](Self::send_audio) sends: a sending key, and its channel
    /// confirmed by the transport.
    pub fn can_speak(&self) -> bool {
        !self.removed
            && self.leaving.is_none()
            && self
                .sending_token()
                .is_some_and(|t| self.transport.is_subscribed(&t))
    }

    /// The channel of the epoch this member seals in.
    pub fn sending_token(&self) -> Option<ChannelToken> {
        let epoch = self.media.sending_epoch()?;
        self.media
            .tokens()
            .find(|(e, _)| *e == epoch)
            .map(|(_, t)| t)
    }

    /// The other members: (member, pseudonym).
    pub fn members(&self) -> impl Iterator<Item = (MemberId, &[u8])> + '_ {
        self.peers
            .iter()
            .map(|(id, p)| (*id, p.pseudonym.as_slice()))
    }

    /// Each other member's frame of the last [`pull_audio`](Self::pull_audio), one per
    /// stream it sends, for apps that render members separately (spatial audio, level
    /// meters).
    pub fn voices(&self) -> impl Iterator<Item = Voice<'_>> + '_ {
        self.peers.iter().flat_map(|(id, p)| {
            p.streams.iter().map(move |s| Voice {
                member: *id,
                stream: s.stream,
                pseudonym: &p.pseudonym,
                pcm: &s.pcm,
                pulled: s.pulled,
                stats: s.receiver.stats(),
                playout_delay: s.receiver.playout_delay(),
            })
        })
    }

    /// Whether a commit can go out now: in the room, no commit in flight, the current
    /// epoch's channel confirmed by the transport, no handshake message missing, and not in
    /// the first second after a reconnection (a restarted relay numbers afresh, and the
    /// commits members applied just before go out again first).
    pub fn ready_to_commit(&self) -> bool {
        match &self.room {
            Some(room)
                if !self.removed
                    && self.leaving.is_none()
                    && room.is_active()
                    && !room.has_pending_commit()
                    && !self.rejoining()
                    && !self.orders.iter().any(Order::missing) =>
            {
                room.channel_token()
                    .is_ok_and(|t| self.transport.is_subscribed(&t))
            }
            _ => false,
        }
    }

    /// Within [`REJOIN_HOLD`] of a reconnection or [`DOUBT`] of an unprocessable commit (as
    /// of the last input).
    fn rejoining(&self) -> bool {
        let Some(now) = self.last_housekeeping else {
            return false;
        };
        self.reconnected
            .is_some_and(|t| now.saturating_duration_since(t) < REJOIN_HOLD)
            || self
                .doubt
                .is_some_and(|t| now.saturating_duration_since(t) < DOUBT)
    }

    /// Ready to commit, sealing in the current epoch, and a frame of the current epoch has
    /// opened from every other member: everyone has caught up, so a commit now reaches
    /// them all.
    pub fn is_settled(&self) -> bool {
        let Some(room) = &self.room else {
            return false;
        };
        let epoch = room.epoch();
        if !self.ready_to_commit() || self.media.sending_epoch() != Some(epoch) {
            return false;
        }
        let bits = epoch % room.params().layout.epoch_slots();
        self.peers.values().all(|p| p.heard == Some(bits))
    }

    // ---- Output ----

    /// The next datagram for the transport, copied into `into` (cleared first); `false`
    /// when none is queued. Reuse `into`: no allocation in steady state.
    pub fn poll_transmit(&mut self, into: &mut Vec<u8>) -> bool {
        let Some(buf) = self.transmit.pop_front() else {
            return false;
        };
        into.clear();
        into.extend_from_slice(&buf);
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += buf.len() as u64;
        self.recycle(buf);
        true
    }

    /// The next thing that happened.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = self.config.retry;
        if !self.transport.is_ready() {
            return Some(
                self.connect_sent
                    .map_or(self.last_self_update, |t| t + retry),
            );
        }
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(t) = self.last_housekeeping {
            at(t + HOUSEKEEPING);
        }
        if let Some(j) = &self.joining {
            match j.last_fetch {
                Some(t) => at(t + self.config.fetch_every),
                None => return self.last_housekeeping,
            }
        }
        if let Some(f) = &self.in_flight {
            at(f.sent + retry);
        }
        for a in &self.applied {
            if let Some(d) = a.scheduled.and_then(|i| self.config.republish.get(i)) {
                at(a.at + *d);
            }
        }
        for i in self.invites.iter().filter(|i| !i.stored) {
            at(i.sent + retry);
        }
        if let Some((_, _, sent)) = &self.leaving {
            at(*sent + retry);
        }
        if let (Some(every), Committer::Anyone) =
            (self.config.self_update_every, self.config.committer)
        {
            if self.is_in_room() {
                at(self.last_self_update + every);
            }
        }
        next
    }

    // ---- Input ----

    /// Housekeeping at `now`: (re)connecting, fetching the Welcome, retiring epochs,
    /// subscriptions, retries, republishing, and the engine's own self-updates.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_housekeeping = Some(now);
        self.connect(now);
        if !self.transport.is_ready() {
            return;
        }
        if self.room.is_none() {
            self.fetch_welcome(now);
            return;
        }
        self.media.expire(now);
        self.sync_subscriptions(now);
        self.check_connection(now);
        self.fill_gaps(now);
        self.catch_up(now);
        self.resend(now);
        if self.removed || self.leaving.is_some() {
            return;
        }
        let room_can_seal = self.room.as_ref().is_some_and(Room::can_seal);
        let periodic = self.config.committer == Committer::Anyone
            && self
                .config
                .self_update_every
                .is_some_and(|every| now.saturating_duration_since(self.last_self_update) >= every);
        if (!room_can_seal || periodic) && self.ready_to_commit() {
            let _ = self.commit_with(now, true, |room| room.self_update());
        }
    }

    /// Takes one datagram from the transport at `now`. A datagram that does not parse is
    /// refused with [`CallError::Transport`] and changes nothing; anything stale, forged or
    /// refused by the room is counted ([`stats`](Self::stats)).
    pub fn handle_datagram(&mut self, datagram: &[u8], now: Instant) -> Result<(), CallError> {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += datagram.len() as u64;
        let mut out = self.buffer();
        let inbound = match self.transport.receive(datagram, now, &mut out) {
            Ok(inbound) => inbound,
            Err(e) => {
                self.recycle(out);
                self.stats.malformed += 1;
                return Err(e.into());
            }
        };
        self.queue(out);
        match inbound {
            Inbound::Media { frame, .. } => self.on_media(frame, now),
            Inbound::Handshake {
                token,
                seq,
                message,
            } => {
                let mut scratch = std::mem::take(&mut self.sealed);
                let opened = self.open_handshake(&token, message, &mut scratch);
                // One that does not open still takes its place in the channel's order
                // (the room refuses it as it would a bad MLS message).
                self.on_numbered(token, seq, opened.unwrap_or(&[]), now);
                self.sealed = scratch;
                self.sync_subscriptions(now);
            }
            Inbound::Welcome { mailbox, welcome } => {
                self.on_welcome(mailbox, welcome, now);
                if self.room.is_some() {
                    self.sync_subscriptions(now);
                }
            }
            Inbound::Stored { mailbox } => {
                for i in self.invites.iter_mut().filter(|i| i.mailbox == mailbox) {
                    i.stored = true;
                }
            }
            Inbound::Ready => {
                // The other side may have forgotten everything: ask again.
                self.renew = true;
                self.requested.clear();
                if std::mem::replace(&mut self.connected_before, true) {
                    self.reconnected = Some(now);
                    for a in &mut self.applied {
                        a.due = true;
                    }
                }
                // Numbers start again (a restarted relay numbers from 0; one that kept the
                // channels sends what they keep again). What was held here waits for
                // nothing any more: its committer publishes it again.
                for o in &mut self.orders {
                    o.reset();
                }
                for i in &mut self.invites {
                    i.stored = false;
                    i.tries = 0;
                    i.sent = now.checked_sub(self.config.retry).unwrap_or(now);
                }
                if let Some(j) = &mut self.joining {
                    j.last_fetch = None;
                }
                self.handle_timeout(now);
            }
            Inbound::Subscribed { token, next_seq } => {
                // The channel's kept messages follow; those that do not arrive are asked
                // again (fill_gaps).
                let i = self.order(token);
                if let Some(order) = self.orders.get_mut(i) {
                    order.told(next_seq, now);
                }
            }
            Inbound::Unsubscribed(_)
            | Inbound::MailboxEmpty
            | Inbound::Refused
            | Inbound::Ignored => {}
        }
        Ok(())
    }

    /// Encodes and seals one frame of microphone PCM ([`frame_samples`](Self::frame_samples)
    /// samples, interleaved) and queues it: [`send_stream`](Self::send_stream) on
    /// [`StreamId::MICROPHONE`]. Sends nothing (and counts it) before this member can speak
    /// ([`can_speak`](Self::can_speak)). Call it once per frame interval, also in silence:
    /// a constant cadence hides who speaks.
    pub fn send_audio(&mut self, pcm: &[i16], now: Instant) -> Result<(), CallError> {
        self.send_stream(StreamId::MICROPHONE, pcm, now)
    }

    /// Encodes and seals one frame of PCM on `stream` (shared system audio, music) and
    /// queues it. Each stream has its own Opus encoder (made on its first frame), key and
    /// counter; other members hear it as its own [`Voice`], mixed into
    /// [`pull_audio`](Self::pull_audio). The room has `2^T` streams
    /// ([`RoomParams::stream_bits`](crate::room::RoomParams::stream_bits)); a frame on
    /// another is not sent (counted in [`CallStats::frames_unsent`]).
    pub fn send_stream(
        &mut self,
        stream: StreamId,
        pcm: &[i16],
        now: Instant,
    ) -> Result<(), CallError> {
        let token = match self.sending_token() {
            Some(t) if self.can_speak() => t,
            _ => {
                if pcm.len() != self.frame_samples() {
                    return Err(AudioError::FrameSize {
                        expected: self.frame_samples(),
                        got: pcm.len(),
                    }
                    .into());
                }
                self.stats.frames_unsent += 1;
                return Ok(());
            }
        };
        let at = match self.senders.iter().position(|s| s.stream() == stream) {
            Some(at) => at,
            None => {
                let streams = self.room.as_ref().map_or(1, |r| r.params().streams());
                if u16::from(stream.0) >= streams {
                    // Not a stream of this room: no encoder is made for it.
                    self.stats.frames_unsent += 1;
                    return Ok(());
                }
                self.senders
                    .push(AudioSender::new(&self.config.audio)?.with_stream(stream));
                self.senders.len() - 1
            }
        };
        let Some(sender) = self.senders.get_mut(at) else {
            return Ok(());
        };
        let opus = sender.encode_i16(pcm)?;
        self.frame.clear();
        if self.media.seal(stream, opus, &mut self.frame, now).is_err() {
            self.stats.frames_unsent += 1;
            return Ok(());
        }
        let mut out = self.buffer();
        match self.transport.media(&token, &self.frame, &mut out) {
            Ok(()) => {
                self.stats.frames_sent += 1;
                self.queue(out);
            }
            Err(_) => {
                self.stats.frames_unsent += 1;
                self.recycle(out);
            }
        }
        Ok(())
    }

    /// One frame of every other member, mixed into `out`
    /// ([`frame_samples`](Self::frame_samples) samples); each member's own frame stays
    /// available through [`voices`](Self::voices). Call it once per frame interval.
    /// Returns how many voices (member streams) were heard (decoded, recovered or concealed).
    pub fn pull_audio(&mut self, out: &mut [i16], now: Instant) -> Result<usize, CallError> {
        if out.len() != self.mix.len() {
            return Err(AudioError::FrameSize {
                expected: self.mix.len(),
                got: out.len(),
            }
            .into());
        }
        self.mix.fill(0);
        let mut heard = 0;
        for peer in self.peers.values_mut() {
            for stream in &mut peer.streams {
                stream.pulled = stream
                    .receiver
                    .pull_i16(&mut self.media, &mut stream.pcm, now)
                    .unwrap_or(Pulled::Idle);
                if stream.pulled == Pulled::Idle {
                    stream.pcm.fill(0);
                    continue;
                }
                heard += 1;
                for (acc, s) in self.mix.iter_mut().zip(&stream.pcm) {
                    *acc += i32::from(*s);
                }
            }
        }
        for (o, s) in out.iter_mut().zip(&self.mix) {
            *o = i16::try_from((*s).clamp(-32768, 32767)).unwrap_or(0);
        }
        Ok(heard)
    }

    // ---- Commands ----

    /// Invites the members of these KeyPackages (received out of band): a commit
    /// published on the current channel, and the Welcome left in each invitee's mailbox.
    pub fn invite(&mut self, key_packages: &[&[u8]], now: Instant) -> Result<(), CallError> {
        self.committer()?;
        self.commit_with(now, false, |room| room.invite(key_packages))
    }

    /// Removes `member` from the room.
    pub fn remove(&mut self, member: MemberId, now: Instant) -> Result<(), CallError> {
        self.committer()?;
        if !self.peers.contains_key(&member) {
            return Err(CallError::NoSuchMember);
        }
        self.commit_with(now, false, |room| room.remove(&[member.leaf]))
    }

    /// Commits the proposals the app approved (adds and extension changes from
    /// [`CallEvent::ProposalQueued`]).
    pub fn approve(&mut self, proposals: &[ProposalId], now: Instant) -> Result<(), CallError> {
        self.committer()?;
        self.commit_with(now, false, |room| room.commit_proposals(proposals))
    }

    /// Refreshes this member's keys in a new epoch now (the engine also does it every
    /// [`CallConfig::self_update_every`]).
    pub fn self_update(&mut self, now: Instant) -> Result<(), CallError> {
        self.committer()?;
        self.commit_with(now, false, |room| room.self_update())
    }

    /// Leaves the room: stops sending at once and proposes its own removal (repeated until
    /// another member commits it; then [`CallEvent::Removed`]).
    pub fn leave(&mut self, now: Instant) -> Result<(), CallError> {
        if self.leaving.is_some() {
            return Ok(());
        }
        let room = self
            .room
            .as_mut()
            .filter(|_| !self.removed)
            .ok_or(CallError::NotInRoom)?;
        let token = room.channel_token()?;
        if !self.transport.is_subscribed(&token) {
            return Err(CallError::NotConnected);
        }
        let proposal = room.leave()?;
        let mut out = self.buffer();
        if let Err(e) = self.send_handshake(&token, &proposal, &mut out) {
            self.recycle(out);
            return Err(e.into());
        }
        self.queue(out);
        self.media.stop_sending();
        self.leaving = Some((token, proposal, now));
        Ok(())
    }

    /// Tells the call that its carrier connected anew (e.g. a new QUIC connection to the
    /// relay after the last one was lost: `sotto::quic::QuicEvent::Connected` a second
    /// time): the other side holds none of its state. The call says Hello at once and,
    /// once answered, subscribes and asks for everything again. (Without this the call
    /// still recovers, at its next request, from the relay's `NotConnected` answer.)
    pub fn transport_reset(&mut self, now: Instant) {
        self.transport.reset();
        self.connect_sent = None;
        self.handle_timeout(now);
    }

    /// Leaves every channel at the transport (e.g. before the app exits). The call is
    /// over for the transport; the room is unchanged.
    pub fn hang_up(&mut self) {
        self.held.clear();
        self.transport.subscriptions(&mut self.held);
        let held = std::mem::take(&mut self.held);
        for token in &held {
            let mut out = self.buffer();
            if self.transport.unsubscribe(token, &mut out).is_ok() {
                self.stats.unsubscribes += 1;
            }
            self.queue(out);
        }
        self.held = held;
        self.media.close();
        self.removed = true;
    }

    // ---- Internals ----

    fn committer(&self) -> Result<(), CallError> {
        match self.config.committer {
            Committer::Anyone => Ok(()),
            Committer::Others => Err(CallError::NotCommitter),
        }
    }

    fn buffer(&mut self) -> BytesMut {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b
    }

    fn recycle(&mut self, mut b: BytesMut) {
        if self.spare.len() < MAX_SPARE {
            b.clear();
            self.spare.push(b);
        }
    }

    /// Queues `b` for the transport unless it is empty.
    fn queue(&mut self, b: BytesMut) {
        if b.is_empty() {
            self.recycle(b);
        } else if self.transmit.len() >= MAX_TRANSMIT {
            self.stats.transmit_dropped += 1;
            self.recycle(b);
        } else {
            self.transmit.push_back(b);
        }
    }

    fn event(&mut self, event: CallEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    fn connect(&mut self, now: Instant) {
        let due = self
            .connect_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.retry);
        if self.transport.is_ready() || !due {
            return;
        }
        let mut out = self.buffer();
        if self.transport.connect(&mut out).is_ok() {
            self.connect_sent = Some(now);
            self.stats.connects += 1;
        }
        self.queue(out);
    }

    fn fetch_welcome(&mut self, now: Instant) {
        let Some(joining) = &mut self.joining else {
            return;
        };
        if joining
            .last_fetch
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.fetch_every)
        {
            return;
        }
        joining.last_fetch = Some(now);
        let mut out = self.spare.pop().unwrap_or_default();
        out.clear();
        if self
            .transport
            .fetch_welcomes(&joining.key_package.reference, &mut out)
            .is_ok()
        {
            self.stats.fetches += 1;
        }
        self.queue(out);
    }

    /// Subscriptions follow the media session's tokens (none once removed).
    fn sync_subscriptions(&mut self, now: Instant) {
        if !self.transport.is_ready() {
            return;
        }
        let retry = self.config.retry;
        self.want.clear();
        if !self.removed {
            self.want.extend(self.media.tokens().map(|(_, t)| t));
            // After a reconnection, the channels of recently applied commits are held
            // again (after their epoch retired) until the commit went out once more: a
            // restarted relay lost them, and members that fell behind need them. (The
            // relay keeps a channel's messages a while after its last subscriber left.)
            for a in self.applied.iter().filter(|a| a.due) {
                if !self.want.contains(&a.token) {
                    self.want.push(a.token);
                }
            }
        }
        let renew = std::mem::take(&mut self.renew);
        let want = std::mem::take(&mut self.want);
        for token in &want {
            let due = self
                .requested
                .iter()
                .find(|(t, _)| t == token)
                .is_none_or(|(_, at)| now.saturating_duration_since(*at) >= retry);
            if due && (renew || !self.transport.is_subscribed(token)) {
                let mut out = self.buffer();
                if self.transport.subscribe(*token, &mut out).is_ok() {
                    self.stats.subscribes += 1;
                    self.note_request(*token, now);
                }
                self.queue(out);
            }
        }
        self.held.clear();
        self.transport.subscriptions(&mut self.held);
        let held = std::mem::take(&mut self.held);
        for token in held.iter().filter(|t| !want.contains(t)) {
            let due = self
                .requested
                .iter()
                .find(|(t, _)| t == token)
                .is_none_or(|(_, at)| now.saturating_duration_since(*at) >= retry);
            if due {
                let mut out = self.buffer();
                if self.transport.unsubscribe(token, &mut out).is_ok() {
                    self.stats.unsubscribes += 1;
                    self.note_request(*token, now);
                }
                self.queue(out);
            }
        }
        self.requested
            .retain(|(t, _)| want.contains(t) || held.contains(t));
        self.orders
            .retain(|o| want.contains(&o.token) || held.contains(&o.token));
        self.want = want;
        self.held = held;
    }

    /// Subscriptions that stay unconfirmed although the transport is ready mean the other
    /// side may have forgotten the connection without this member hearing of it (its
    /// refusals that said so were lost). After four retries the call says Hello again, and
    /// asks everything again once it is answered.
    fn check_connection(&mut self, now: Instant) {
        let missing = self.want.iter().any(|t| !self.transport.is_subscribed(t));
        match self.unconfirmed_since {
            _ if !missing => self.unconfirmed_since = None,
            None => self.unconfirmed_since = Some(now),
            Some(t) if now.saturating_duration_since(t) >= 4 * self.config.retry => {
                let mut out = self.buffer();
                if self.transport.connect(&mut out).is_ok() {
                    self.stats.connects += 1;
                    self.connect_sent = Some(now);
                }
                self.queue(out);
                self.unconfirmed_since = Some(now);
            }
            Some(_) => {}
        }
    }

    fn note_request(&mut self, token: ChannelToken, now: Instant) {
        match self.requested.iter_mut().find(|(t, _)| *t == token) {
            Some(entry) => entry.1 = now,
            None => self.requested.push((token, now)),
        }
    }

    /// Unechoed commits, unstored Welcomes, republished commits, an uncommitted leave.
    fn resend(&mut self, now: Instant) {
        let retry = self.config.retry;
        let tries = self.config.tries;
        // Applied commits: after a reconnection, once; this member's own, on schedule.
        self.applied
            .retain(|a| now.saturating_duration_since(a.at) < KEEP_APPLIED);
        let schedule = std::mem::take(&mut self.config.republish);
        let mut applied = std::mem::take(&mut self.applied);
        for a in &mut applied {
            let scheduled = a
                .scheduled
                .and_then(|i| schedule.get(i))
                .is_some_and(|d| now.saturating_duration_since(a.at) >= *d);
            if !a.due && !scheduled {
                continue;
            }
            if self.publish(&a.token, &a.proposals, &a.message) {
                self.stats.commits_resent += 1;
                a.due = false;
                a.scheduled = a.scheduled.map(|i| i + 1);
            } else if !a.due && !self.media.tokens().any(|(_, t)| t == a.token) {
                // Its epoch retired: the relay keeps the channel's messages for members
                // that come back to it.
                a.scheduled = None;
            }
            // Otherwise its channel is not confirmed (again) yet: the copy goes once it is.
        }
        self.applied = applied;
        self.config.republish = schedule;
        // This member's commit in flight (not once its echo is held, nor while rejoining).
        let rejoining = self.rejoining();
        let due = self
            .in_flight
            .as_ref()
            .is_some_and(|f| !rejoining && now.saturating_duration_since(f.sent) >= retry);
        let pending = self.room.as_ref().and_then(|r| r.pending_commit_message());
        // Its echo came and is held behind a missing number: it waits for that.
        let echoed = pending.is_some_and(|m| {
            self.orders
                .iter()
                .any(|o| o.held.values().any(|h| h.as_slice() == m))
        });
        if due && !echoed {
            let pending = pending.map(<[u8]>::to_vec);
            match (self.in_flight.as_mut(), pending) {
                (Some(f), Some(message)) if f.tries < tries => {
                    f.tries += 1;
                    f.sent = now;
                    let token = f.token;
                    let proposals = std::mem::take(&mut f.proposals);
                    if self.publish(&token, &proposals, &message) {
                        self.stats.commits_resent += 1;
                    }
                    if let Some(f) = &mut self.in_flight {
                        f.proposals = proposals;
                    }
                }
                (_, pending) => {
                    if let Some(room) = self.room.as_mut().filter(|_| pending.is_some()) {
                        let _ = room.discard_pending();
                        self.event(CallEvent::Warning(Warning::CommitUnconfirmed));
                    }
                    self.in_flight = None;
                }
            }
        }
        // Welcomes not stored yet (or lost with a relay restart).
        self.invites
            .retain(|i| now.saturating_duration_since(i.made) < KEEP_WELCOME);
        let mut i = 0;
        while let Some(invite) = self.invites.get_mut(i) {
            if invite.stored || now.saturating_duration_since(invite.sent) < retry {
                i += 1;
                continue;
            }
            if invite.tries >= tries {
                self.invites.remove(i);
                self.event(CallEvent::Warning(Warning::WelcomeUndelivered));
                continue;
            }
            invite.tries += 1;
            invite.sent = now;
            let mut out = self.spare.pop().unwrap_or_default();
            out.clear();
            if let Some(invite) = self.invites.get(i) {
                if self
                    .transport
                    .deliver_welcome(&invite.mailbox, &invite.welcome, &mut out)
                    .is_ok()
                {
                    self.stats.welcomes_delivered += 1;
                }
            }
            self.queue(out);
            i += 1;
        }
        // A leave proposal until it is committed.
        if let Some((token, proposal, sent)) = &mut self.leaving {
            if !self.removed && now.saturating_duration_since(*sent) >= retry {
                *sent = now;
                let (token, proposal) = (*token, proposal.clone());
                let mut out = self.buffer();
                let _ = self.send_handshake(&token, &proposal, &mut out);
                self.queue(out);
            }
        }
    }

    /// Makes a commit and publishes it: staged keys applied, the commit on the current
    /// channel, the Welcome into each invitee's mailbox.
    fn commit_with(
        &mut self,
        now: Instant,
        own: bool,
        make: impl FnOnce(&mut Room<P>) -> Result<Commit, RoomError>,
    ) -> Result<(), CallError> {
        let room = self
            .room
            .as_mut()
            .filter(|_| !self.removed)
            .ok_or(CallError::NotInRoom)?;
        if room.has_pending_commit() {
            return Err(CallError::CommitInFlight);
        }
        let token = room.channel_token()?;
        let rejoining = self
            .reconnected
            .is_some_and(|t| now.saturating_duration_since(t) < REJOIN_HOLD)
            || self
                .doubt
                .is_some_and(|t| now.saturating_duration_since(t) < DOUBT);
        if !self.transport.is_subscribed(&token) || self.leaving.is_some() || rejoining {
            return Err(CallError::NotConnected);
        }
        let commit = make(room)?;
        let mut out = self.buffer();
        if let Err(e) = self.send_handshake(&token, &commit.message, &mut out) {
            if let Some(room) = self.room.as_mut() {
                let _ = room.discard_pending();
            }
            self.recycle(out);
            return Err(e.into());
        }
        self.queue(out);
        self.apply_keys(commit.keys, now);
        self.stats.commits += 1;
        self.last_self_update = now;
        // The Welcome waits for the commit's echo: the Welcome of a commit that lost the
        // race would admit the invitees to an epoch no other member reaches.
        self.in_flight = Some(InFlight {
            token,
            sent: now,
            tries: 0,
            own,
            welcome: commit.welcome.map(|w| (w, commit.invited)),
            proposals: self.proposals.clone(),
        });
        self.sync_subscriptions(now);
        Ok(())
    }

    /// Publishes `proposals` and then `commit` on `token`'s channel; whether the commit
    /// went out.
    fn publish(&mut self, token: &ChannelToken, proposals: &[Vec<u8>], commit: &[u8]) -> bool {
        for proposal in proposals {
            let mut out = self.buffer();
            let _ = self.send_handshake(token, proposal, &mut out);
            self.queue(out);
        }
        let mut out = self.buffer();
        let sent = self.send_handshake(token, commit, &mut out).is_ok();
        self.queue(out);
        sent
    }

    /// Seals `message` under the handshake key of `token`'s epoch and writes it for that
    /// channel.
    fn send_handshake(
        &mut self,
        token: &ChannelToken,
        message: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        let key = self
            .media
            .handshake_key(token)
            .ok_or(TransportError::NotSubscribed)?;
        sealed::seal(
            key,
            token,
            message,
            self.config.handshake_padding,
            MAX_HANDSHAKE,
            &mut self.sealed,
        )
        .map_err(|e| match e {
            sealed::SealError::TooLarge => TransportError::TooLarge,
            // No randomness for a nonce: nothing can be sent safely now.
            _ => TransportError::NotReady,
        })?;
        self.transport.handshake(token, &self.sealed, out)
    }

    /// The MLS message of a handshake message received on `token`'s channel: a sealed one
    /// opened under that epoch's key, or an external sender's proposal for the very epoch
    /// whose channel carries it. `None` for anything else. The rule depends on the message
    /// and the channel only, never on when it arrives, so every member decides alike
    /// (whether it holds the message behind a gap or for a later epoch first); members
    /// process a channel in the relay's order, so a proposal numbered after the epoch's
    /// commit is refused by all as stale.
    fn open_handshake<'s>(
        &self,
        token: &ChannelToken,
        message: &'s [u8],
        scratch: &'s mut Vec<u8>,
    ) -> Option<&'s [u8]> {
        if message.first() == Some(&SEALED_HANDSHAKE) {
            let key = self.media.handshake_key(token)?;
            return sealed::open(key, token, message, scratch).ok();
        }
        let channel_epoch = self
            .media
            .tokens()
            .find(|(_, t)| t == token)
            .map(|(e, _)| e);
        (channel_epoch.is_some()
            && channel_epoch == handshake_epoch(message)
            && is_external_proposal(message))
        .then_some(message)
    }

    /// Puts a confirmed commit's Welcome into each invitee's mailbox (and keeps it for
    /// delivery again until stored).
    fn deliver_welcomes(&mut self, welcome: Vec<u8>, invited: Vec<Vec<u8>>, now: Instant) {
        let mut padded = Vec::new();
        if sealed::pad_welcome(
            &welcome,
            self.config.handshake_padding,
            MAX_WELCOME,
            &mut padded,
        )
        .is_err()
        {
            // Larger than the wire carries: no invitee could get it.
            self.event(CallEvent::Warning(Warning::WelcomeUndelivered));
            return;
        }
        let welcome = padded;
        for mailbox in invited {
            let mut out = self.buffer();
            if self
                .transport
                .deliver_welcome(&mailbox, &welcome, &mut out)
                .is_ok()
            {
                self.stats.welcomes_delivered += 1;
            }
            self.queue(out);
            self.invites.push(Invite {
                mailbox,
                welcome: welcome.clone(),
                sent: now,
                tries: 1,
                stored: false,
                made: now,
            });
        }
    }

    /// The index of `token`'s [`Order`] (made if need be).
    fn order(&mut self, token: ChannelToken) -> usize {
        if let Some(i) = self.orders.iter().position(|o| o.token == token) {
            return i;
        }
        self.orders.push(Order {
            token,
            next: 0,
            known: 0,
            held: BTreeMap::new(),
            gap_since: None,
            asked: 0,
            asked_at: None,
        });
        self.orders.len() - 1
    }

    /// A handshake message numbered `seq` on its channel: given to the room in number
    /// order. One numbered after a missing number is held (at most [`MAX_HELD`] per
    /// channel) and the channel's messages asked again ([`fill_gaps`](Self::fill_gaps)):
    /// the missing one may be a rival commit the relay ordered first, which every other
    /// member applies.
    fn on_numbered(&mut self, token: ChannelToken, seq: u64, message: &[u8], now: Instant) {
        let i = self.order(token);
        let Some(order) = self.orders.get_mut(i) else {
            return;
        };
        if seq < order.next || order.held.contains_key(&seq) {
            self.stats.handshakes_duplicate += 1;
            return;
        }
        order.learn(seq.saturating_add(1), now);
        if seq > order.next {
            if order.held.len() >= MAX_HELD {
                // Keep the lowest numbers: the later ones come again with the next replay.
                match order.held.last_key_value() {
                    Some((&last, _)) if last > seq => {
                        order.held.remove(&last);
                    }
                    _ => return,
                }
            }
            order.held.insert(seq, message.to_vec());
            return;
        }
        order.next = seq + 1;
        self.on_handshake(message, now);
        self.release(token, now);
    }

    /// Gives the room the held messages of `token`'s channel that are next in order.
    fn release(&mut self, token: ChannelToken, now: Instant) {
        loop {
            let Some(order) = self.orders.iter_mut().find(|o| o.token == token) else {
                return;
            };
            let Some(message) = order.held.remove(&order.next) else {
                if !order.missing() {
                    order.gap_since = None;
                    order.asked = 0;
                    order.asked_at = None;
                }
                return;
            };
            order.next += 1;
            self.on_handshake(&message, now);
        }
    }

    /// Channels with a missing number ask for their messages again ([`HOUSEKEEPING`]
    /// after the gap opened, in case the missing one is only late, then every
    /// [`CallConfig::retry`]); after [`CallConfig::tries`] askings the missing numbers are
    /// given up (the relay no longer keeps them) and the held messages go on.
    fn fill_gaps(&mut self, now: Instant) {
        if !self.transport.is_ready() {
            return;
        }
        let retry = self.config.retry;
        let tries = self.config.tries;
        for i in 0..self.orders.len() {
            let Some(order) = self.orders.get_mut(i) else {
                break;
            };
            let due = match (order.gap_since, order.asked_at) {
                (Some(_), Some(t)) => now.saturating_duration_since(t) >= retry,
                (Some(t), None) => now.saturating_duration_since(t) >= HOUSEKEEPING,
                (None, _) => false,
            };
            if !order.missing() || !due || !self.transport.is_subscribed(&order.token) {
                continue;
            }
            let token = order.token;
            if order.asked >= tries {
                order.next = order.held.keys().next().copied().unwrap_or(order.known);
                self.stats.handshake_gaps_skipped += 1;
                self.release(token, now);
                continue;
            }
            order.asked += 1;
            order.asked_at = Some(now);
            let mut out = self.buffer();
            if self.transport.subscribe(token, &mut out).is_ok() {
                self.stats.handshake_gaps_asked += 1;
            }
            self.queue(out);
        }
    }

    /// Other members send a frame every interval, silence included: when none of them has
    /// been heard in the current epoch for [`CATCH_UP`], this member may have missed the
    /// commit that moved them on (lost, with no later number on its channel to show it).
    /// It asks for its channel's messages again, every [`CATCH_UP`] while unheard.
    fn catch_up(&mut self, now: Instant) {
        let Some(room) = self.room.as_ref().filter(|_| !self.removed) else {
            return;
        };
        let bits = room.epoch() % room.params().layout.epoch_slots();
        if self.peers.is_empty()
            || self.peers.values().any(|p| p.heard == Some(bits))
            || now.saturating_duration_since(self.epoch_since) < CATCH_UP
            || self
                .caught_up_asked
                .is_some_and(|t| now.saturating_duration_since(t) < CATCH_UP)
        {
            return;
        }
        let Some(token) = self
            .media
            .tokens()
            .find(|(e, _)| *e == room.epoch())
            .map(|(_, t)| t)
        else {
            return;
        };
        self.caught_up_asked = Some(now);
        let mut out = self.buffer();
        if self.transport.subscribe(token, &mut out).is_ok() {
            self.stats.handshake_gaps_asked += 1;
        }
        self.queue(out);
    }

    fn on_media(&mut self, frame: &[u8], now: Instant) {
        self.stats.media_in += 1;
        if self.room.is_none() || self.removed {
            self.stats.media_unrouted += 1;
            return;
        }
        let Ok((member, stream)) = self.media.sender_of(frame) else {
            self.stats.media_unrouted += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&member) else {
            self.stats.media_unrouted += 1;
            return;
        };
        let (opened, known) = match peer.streams.binary_search_by_key(&stream, |s| s.stream) {
            Ok(at) => {
                let Some(receiver) = peer.streams.get_mut(at).map(|s| &mut s.receiver) else {
                    return;
                };
                (push_opened(receiver, frame, &mut self.media, now), true)
            }
            Err(at) => {
                // The member's first frame on another stream: its receiver is kept only if
                // the frame opens (a KID alone is not authenticated), so forged KIDs make
                // no voices; the key ring bounds streams to the room's 2^T.
                let Some(mut new) = PeerStream::new(stream, &self.config.audio) else {
                    self.stats.media_unrouted += 1;
                    return;
                };
                let opened = push_opened(&mut new.receiver, frame, &mut self.media, now);
                if opened {
                    peer.streams.insert(at, new);
                }
                (opened, opened)
            }
        };
        if !known {
            self.stats.media_unrouted += 1;
        }
        if opened {
            // A late frame of an older epoch does not undo having heard the current one.
            let Some(room) = self.room.as_ref() else {
                return;
            };
            let layout = room.params().layout;
            let current = Some(room.epoch() % layout.epoch_slots());
            if let Ok((header, _)) = Header::parse(frame) {
                if peer.heard.is_none() || peer.heard != current {
                    peer.heard = Some(layout.decompose(header.kid).epoch_bits);
                }
            }
        }
    }

    fn on_handshake(&mut self, message: &[u8], now: Instant) {
        let Some(room) = self.room.as_mut().filter(|_| !self.removed) else {
            self.stats.handshakes_refused += 1;
            return;
        };
        let had_pending = room.has_pending_commit();
        let epoch = room.epoch();
        match room.process(message) {
            Ok(events) => {
                self.stats.handshakes_applied += 1;
                let moved = events
                    .iter()
                    .any(|e| matches!(e, RoomEvent::EpochChanged { .. }));
                let token = self
                    .media
                    .tokens()
                    .find(|(e, _)| *e == epoch)
                    .map(|(_, t)| t);
                if let Some(token) = token.filter(|_| moved) {
                    if self.applied.len() >= MAX_APPLIED {
                        self.applied.pop_front();
                    }
                    self.applied.push_back(Applied {
                        token,
                        message: message.to_vec(),
                        proposals: self.proposals.clone(),
                        at: now,
                        scheduled: None,
                        due: false,
                    });
                }
                let queued = events
                    .iter()
                    .any(|e| matches!(e, RoomEvent::ProposalQueued(_)));
                if queued
                    && self.proposals.len() < MAX_HELD
                    && !self.proposals.iter().any(|p| p == message)
                {
                    self.proposals.push(message.to_vec());
                }
                let dropped = events
                    .iter()
                    .any(|e| matches!(e, RoomEvent::PendingCommitDropped));
                let confirmed = had_pending && !dropped && !room.has_pending_commit();
                if confirmed {
                    self.confirmed(message, now);
                }
                self.room_events(events, now);
                self.retry_early(now);
            }
            Err(RoomError::Rejected(Rejection::WrongEpoch))
                if handshake_epoch(message).is_some_and(|e| e > room.epoch()) =>
            {
                self.stats.handshakes_early += 1;
                if self.early.iter().any(|m| m == message) {
                    return;
                }
                if self.early.len() >= self.config.max_early_handshakes {
                    self.early.pop_front();
                }
                if self.config.max_early_handshakes > 0 {
                    self.early.push_back(message.to_vec());
                }
            }
            Err(RoomError::Rejected(Rejection::FromOwnLeaf)) => {
                self.stats.handshakes_refused += 1;
                self.event(CallEvent::Warning(Warning::OwnLeafCommit));
            }
            Err(_) => {
                self.stats.handshakes_refused += 1;
                if handshake_epoch(message) == Some(epoch) && is_commit(message) {
                    self.doubt = Some(now);
                }
            }
        }
    }

    /// This member's commit came back: confirmed, its Welcome delivered, and published
    /// again on its channel a few times.
    fn confirmed(&mut self, message: &[u8], now: Instant) {
        if let Some(f) = self.in_flight.take() {
            if let Some((welcome, invited)) = f.welcome {
                self.deliver_welcomes(welcome, invited, now);
            }
            // on_handshake kept it as applied.
            if let Some(a) = self.applied.back_mut().filter(|a| a.message == message) {
                a.scheduled = Some(0);
            }
        }
    }

    /// Retries held handshake messages until none applies any more.
    fn retry_early(&mut self, now: Instant) {
        loop {
            let Some(room) = self.room.as_mut().filter(|_| !self.removed) else {
                self.early.clear();
                return;
            };
            let epoch = room.epoch();
            self.early
                .retain(|m| handshake_epoch(m).is_some_and(|e| e >= epoch));
            let mut applied = None;
            let mut i = 0;
            while let Some(message) = self.early.get(i) {
                match room.process(message) {
                    Ok(events) => {
                        self.early.remove(i);
                        applied = Some(events);
                        break;
                    }
                    Err(RoomError::Rejected(Rejection::WrongEpoch)) => i += 1,
                    Err(_) => {
                        self.early.remove(i);
                    }
                }
            }
            match applied {
                Some(events) => {
                    self.stats.handshakes_applied += 1;
                    self.room_events(events, now);
                }
                None => return,
            }
        }
    }

    fn room_events(&mut self, events: Vec<RoomEvent>, now: Instant) {
        for event in events {
            match event {
                RoomEvent::Keys(keys) => self.apply_keys(keys, now),
                RoomEvent::EpochChanged { epoch } => {
                    self.stats.epoch_changes += 1;
                    self.epoch_since = now;
                    self.caught_up_asked = None;
                    self.proposals.clear();
                    if let Some(room) = &self.room {
                        self.event(CallEvent::EpochChanged {
                            epoch,
                            safety_code: room.safety_code(),
                        });
                    }
                    self.renew_leave(now);
                }
                RoomEvent::ProposalQueued(info) => self.event(CallEvent::ProposalQueued(info)),
                RoomEvent::PendingCommitDropped => {
                    self.stats.commits_dropped += 1;
                    let own = self.in_flight.take().is_some_and(|f| f.own);
                    if !own {
                        self.event(CallEvent::CommitDropped);
                    }
                }
                RoomEvent::RemovedFromRoom => {
                    self.removed = true;
                    self.media.close();
                    self.in_flight = None;
                    self.applied.clear();
                    // Welcomes of its confirmed invitations still go out (after a relay
                    // restart, this member may be the only one that has them).
                    self.early.clear();
                    self.event(CallEvent::Removed);
                }
                _ => {}
            }
        }
        self.sync_peers();
    }

    /// A leave proposal is valid in its epoch only: after an epoch change that did not
    /// commit it, the leaving member proposes again in the new epoch (sent at once).
    fn renew_leave(&mut self, now: Instant) {
        if self.leaving.is_none() || self.removed {
            return;
        }
        let Some(room) = self.room.as_mut() else {
            return;
        };
        if let (Ok(token), Ok(proposal)) = (room.channel_token(), room.leave()) {
            let due = now.checked_sub(self.config.retry).unwrap_or(now);
            self.leaving = Some((token, proposal, due));
        }
    }

    fn apply_keys(&mut self, keys: EpochKeys, now: Instant) {
        if let Err(e) = self.media.apply(keys, now) {
            self.event(CallEvent::Warning(Warning::KeysRefused(e)));
        }
    }

    /// Receivers for exactly the other members.
    fn sync_peers(&mut self) {
        let Some(room) = &self.room else {
            return;
        };
        let members = if self.removed {
            Vec::new()
        } else {
            let own = room.own_leaf();
            room.members()
                .into_iter()
                .filter(|m| m.leaf != own)
                .collect()
        };
        let gone: Vec<MemberId> = self
            .peers
            .keys()
            .copied()
            .filter(|id| !members.iter().any(|m| m.id == *id))
            .collect();
        for member in gone {
            self.peers.remove(&member);
            self.event(CallEvent::MemberLeft { member });
        }
        for m in members {
            if self.peers.contains_key(&m.id) {
                continue;
            }
            let Some(microphone) = PeerStream::new(StreamId::MICROPHONE, &self.config.audio) else {
                continue;
            };
            self.peers.insert(
                m.id,
                Peer {
                    streams: vec![microphone],
                    pseudonym: m.pseudonym.clone(),
                    heard: None,
                },
            );
            self.event(CallEvent::MemberJoined {
                member: m.id,
                pseudonym: m.pseudonym,
            });
        }
    }

    fn enter(&mut self, room: Room<P>, keys: EpochKeys, now: Instant) {
        self.epoch_since = now;
        self.apply_keys(keys, now);
        self.room = Some(room);
        self.sync_peers();
    }

    fn on_welcome(&mut self, mailbox: &[u8], welcome: &[u8], now: Instant) {
        // Welcomes travel padded (see `deliver_welcomes`); anything else is not one.
        let Ok(welcome) = sealed::unpad_welcome(welcome) else {
            self.stats.welcomes_ignored += 1;
            return;
        };
        let Some(joining) = self
            .joining
            .take_if(|j| j.key_package.reference.as_slice() == mailbox)
        else {
            self.stats.welcomes_ignored += 1;
            return;
        };
        let Joining {
            identity,
            key_package,
            last_fetch,
        } = joining;
        match Room::join(identity, self.config.room.clone(), welcome) {
            Ok((room, keys)) => {
                let epoch = room.epoch();
                self.event(CallEvent::Joined { epoch });
                self.enter(room, keys, now);
                self.last_self_update = now;
            }
            // Not for this member, or forged: keep waiting.
            Err(e) => {
                self.stats.welcomes_ignored += 1;
                if let RoomError::Params(params) = e.error {
                    self.event(CallEvent::Warning(Warning::UnsupportedRoom(params)));
                }
                self.joining = Some(Joining {
                    identity: e.identity,
                    key_package,
                    last_fetch,
                });
            }
        }
    }
}

/// Pushes `frame` into `receiver`; whether it opened (no authentication failure, replay,
/// refusal, or hold).
fn push_opened(
    receiver: &mut AudioReceiver,
    frame: &[u8],
    media: &mut MediaSession,
    now: Instant,
) -> bool {
    let before = receiver.stats();
    receiver.push(frame, media, now);
    let after = receiver.stats();
    after.auth_failures == before.auth_failures
        && after.replays == before.replays
        && after.rejected == before.rejected
        && after.held == before.held
}
