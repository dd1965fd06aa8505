//! One call member, sans-IO: a [`Member`] takes relay datagrams and time in and hands the
//! datagrams it wants sent to a caller's closure. No sockets, no clock: `examples/client.rs`
//! runs it on a UDP socket in real time, `tests/relay_transcript.rs` on virtual time.
//!
//! It owns the control plane (`Room`), the data plane (`MediaSession`), the Opus pipeline
//! (an `AudioSender`, one `AudioReceiver` per other member), the relay client side
//! (`RelayClient`) and a synthesized voice. What it does:
//!
//! - subscriptions follow the tokens the media session holds (`media.tokens()`): subscribe
//!   to each new one, unsubscribe from those no longer listed; unconfirmed requests are
//!   repeated every 500 ms;
//! - every 20 ms tick it seals one Opus frame if it has a sending key and the relay
//!   confirmed its subscription to the sending epoch's channel, and pulls one frame from each
//!   receiver into a mix;
//! - handshake messages go to `Room::process`; the events update keys, receivers and state.
//!   A message for an epoch not reached yet is kept (bounded) and retried after the next
//!   epoch change;
//! - commits: apply the staged keys, publish the commit on the CURRENT channel, leave the
//!   Welcome in the mailbox of each invited KeyPackage reference (repeated until stored);
//! - a joiner polls its mailbox (its KeyPackage reference) until a Welcome made for it
//!   arrives, then joins. KeyPackages themselves travel out of band, never through here.
//!
//! Anything stale, refused or malformed is ignored and counted in [`Stats`].
#![allow(dead_code)]

#[path = "voice.rs"]
pub mod voice;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{MlsMessageBodyIn, MlsMessageIn};
use openmls_rust_crypto::OpenMlsRustCrypto;
use sotto::audio::{AudioConfig, AudioError, AudioReceiver, AudioSender, Pulled, ReceiverStats};
use sotto::frame::Header;
use sotto::keys::MemberId;
use sotto::media::{ChannelToken, EpochKeys, MediaConfig, MediaSession};
use sotto::relay::{ClientError, ClientEvent, Cookie, ErrorCode, RelayClient};
use sotto::room::{
    Commit, Identity, PublishedKeyPackage, Rejection, Room, RoomConfig, RoomError, RoomEvent,
    SafetyCode,
};

use voice::Voice;

/// One tick: one audio frame.
pub const FRAME: Duration = Duration::from_millis(20);
/// Unconfirmed subscription changes and unstored Welcomes are sent again after this.
const RETRY: Duration = Duration::from_millis(500);
/// A joiner asks for its Welcome this often.
const FETCH_EVERY: Duration = Duration::from_millis(250);
/// A rogue removed member renews its old subscription this often.
const ROGUE_RESUBSCRIBE: Duration = Duration::from_secs(1);
/// Handshake messages of an epoch not reached yet, kept for a retry.
const MAX_EARLY_HANDSHAKES: usize = 16;
/// Times a Welcome is delivered before giving up.
const WELCOME_TRIES: u32 = 10;

/// The room handle this member uses.
pub type MemberRoom = Room<OpenMlsRustCrypto>;

/// Why a member operation did not happen.
#[derive(Debug)]
pub enum MemberError {
    /// Not in a room yet, removed, a commit in flight, or the relay has not confirmed the
    /// current channel yet: try again later.
    NotReady,
    /// The room refused.
    Room(RoomError),
    /// The relay wire format refused (e.g. a message too large).
    Relay(ClientError),
    /// The audio pipeline could not be set up.
    Audio(AudioError),
}

impl From<RoomError> for MemberError {
    fn from(e: RoomError) -> Self {
        MemberError::Room(e)
    }
}

impl From<ClientError> for MemberError {
    fn from(e: ClientError) -> Self {
        MemberError::Relay(e)
    }
}

impl From<AudioError> for MemberError {
    fn from(e: AudioError) -> Self {
        MemberError::Audio(e)
    }
}

impl std::fmt::Display for MemberError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemberError::NotReady => f.write_str("not ready"),
            MemberError::Room(e) => write!(f, "room: {e}"),
            MemberError::Relay(e) => write!(f, "relay: {e}"),
            MemberError::Audio(e) => write!(f, "audio: {e}"),
        }
    }
}

/// Counters of a member.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Datagrams handed to the transport.
    pub datagrams_out: u64,
    /// Bytes handed to the transport.
    pub bytes_out: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Audio frames sealed and sent.
    pub frames_sent: u64,
    /// Ticks in a room without a frame sent (no sending key yet, or the sending channel not
    /// confirmed by the relay).
    pub frames_unsent: u64,
    /// Media frames received.
    pub media_in: u64,
    /// Media frames with no receiver to go to (unknown or removed sender, not in a room).
    pub media_unrouted: u64,
    /// Handshake messages applied.
    pub handshakes_applied: u64,
    /// Handshake messages for an epoch not reached yet (kept for a retry).
    pub handshakes_early: u64,
    /// Handshake messages refused or ignored (stale, undecryptable, after removal).
    pub handshakes_refused: u64,
    /// Epochs entered after the first.
    pub epoch_changes: u64,
    /// Commits this member published.
    pub commits: u64,
    /// Commits of this member that lost the race at the relay.
    pub commits_dropped: u64,
    /// Subscribe requests sent.
    pub subscribes: u64,
    /// Unsubscribe requests sent.
    pub unsubscribes: u64,
    /// Welcome fetches sent.
    pub fetches: u64,
    /// Welcome deliveries sent.
    pub welcomes_delivered: u64,
    /// Welcome deliveries the relay confirmed.
    pub welcomes_stored: u64,
    /// Welcomes received that did not admit this member (not for it, forged, or after it
    /// joined).
    pub welcomes_ignored: u64,
    /// Fetches that found an empty mailbox.
    pub mailbox_empty: u64,
    /// Challenges of this member's address the relay sent (answered with a Hello).
    pub challenges: u64,
    /// Other requests the relay refused.
    pub relay_refusals: u64,
    /// Relay messages for a channel this member already left.
    pub stale: u64,
    /// Datagrams that did not parse.
    pub malformed: u64,
    /// Keys the media session refused, and audio errors.
    pub errors: u64,
}

/// What one remote sender's stream gave this member.
#[derive(Clone, Debug)]
pub struct SenderReport {
    /// The sender's leaf.
    pub leaf: u32,
    /// The pseudonym in its credential.
    pub pseudonym: String,
    /// Whether it is still a member.
    pub present: bool,
    /// Its receiver's counters.
    pub stats: ReceiverStats,
}

struct Joining {
    identity: Identity<OpenMlsRustCrypto>,
    key_package: PublishedKeyPackage,
    last_fetch: Option<Instant>,
}

struct Unstored {
    reference: Vec<u8>,
    welcome: Vec<u8>,
    sent: Instant,
    tries: u32,
}

/// One member of a call (see the [module docs](self)).
pub struct Member {
    pseudonym: String,
    config: RoomConfig,
    audio: AudioConfig,
    room: Option<MemberRoom>,
    joining: Option<Joining>,
    removed: bool,
    removed_at: Option<Instant>,
    media: MediaSession,
    sender: AudioSender,
    receivers: BTreeMap<MemberId, AudioReceiver>,
    names: BTreeMap<u32, String>,
    departed: Vec<SenderReport>,
    client: RelayClient,
    voice: Voice,
    /// Every (epoch, token) this member's session ever held, in the order first seen.
    tokens: Vec<(u64, ChannelToken)>,
    /// When a subscription change for a token was last requested.
    requested: HashMap<ChannelToken, Instant>,
    /// Whether the relay said `Ready` (once), when this member last said Hello, and whether
    /// every subscription is to be renewed (after a `Ready`: the relay may have forgotten
    /// them).
    ready: bool,
    hello_sent: Option<Instant>,
    challenge_answered: Option<Instant>,
    resubscribe: bool,
    /// Leaf → epoch bits of its newest frame that opened.
    heard: BTreeMap<u32, u64>,
    early: Vec<Vec<u8>>,
    unstored: Vec<Unstored>,
    pcm: Vec<i16>,
    out_pcm: Vec<i16>,
    mix: Vec<i32>,
    last_mix: Vec<i16>,
    frame: BytesMut,
    out: BytesMut,
    stats: Stats,
    opus_sent: Vec<Vec<u8>>,
    /// Keep every plaintext Opus packet sent (for leak checks in tests).
    pub record_opus: bool,
    /// Test only: a member that ignores its removal — keeps sealing with its last key,
    /// keeps sending on (and renewing its subscription to) its last sending channel.
    pub rogue: bool,
}

/// The epoch an MLS handshake message names (in the clear in both wire formats).
fn handshake_epoch(message: &[u8]) -> Option<u64> {
    match MlsMessageIn::tls_deserialize_exact(message).map(MlsMessageIn::extract) {
        Ok(MlsMessageBodyIn::PrivateMessage(m)) => Some(m.epoch().as_u64()),
        Ok(MlsMessageBodyIn::PublicMessage(m)) => Some(m.epoch().as_u64()),
        _ => None,
    }
}

impl Member {
    fn new(pseudonym: &str, voice: usize, config: RoomConfig) -> Result<Member, MemberError> {
        let audio = AudioConfig::default();
        let samples = audio.frame_samples();
        Ok(Member {
            pseudonym: pseudonym.to_string(),
            config,
            sender: AudioSender::new(&audio)?,
            audio,
            room: None,
            joining: None,
            removed: false,
            removed_at: None,
            media: MediaSession::new(MediaConfig::default()),
            receivers: BTreeMap::new(),
            names: BTreeMap::new(),
            departed: Vec::new(),
            client: RelayClient::new(),
            voice: Voice::new(voice),
            tokens: Vec::new(),
            requested: HashMap::new(),
            ready: false,
            hello_sent: None,
            challenge_answered: None,
            resubscribe: false,
            heard: BTreeMap::new(),
            early: Vec::new(),
            unstored: Vec::new(),
            pcm: vec![0; samples],
            out_pcm: vec![0; samples],
            mix: vec![0; samples],
            last_mix: vec![0; samples],
            frame: BytesMut::with_capacity(2048),
            out: BytesMut::with_capacity(2048),
            stats: Stats::default(),
            opus_sent: Vec::new(),
            record_opus: false,
            rogue: false,
        })
    }

    /// Creates a room; `pseudonym` goes into this member's credential, `voice` picks its
    /// synthesized voice.
    pub fn create(
        pseudonym: &str,
        voice: usize,
        config: RoomConfig,
        now: Instant,
    ) -> Result<Member, MemberError> {
        let mut m = Member::new(pseudonym, voice, config)?;
        let identity = Identity::new(OpenMlsRustCrypto::default(), pseudonym.as_bytes())?;
        let (room, keys) = Room::create(identity, m.config.clone())?;
        if m.media.apply(keys, now).is_err() {
            m.stats.errors += 1;
        }
        m.room = Some(room);
        m.after_room_change();
        Ok(m)
    }

    /// A member waiting to be invited: hand [`key_package`](Self::key_package) to an
    /// inviter out of band; the member then fetches its Welcome from the relay.
    pub fn joiner(
        pseudonym: &str,
        voice: usize,
        config: RoomConfig,
    ) -> Result<Member, MemberError> {
        let mut m = Member::new(pseudonym, voice, config)?;
        let identity = Identity::new(OpenMlsRustCrypto::default(), pseudonym.as_bytes())?;
        let key_package = identity.key_package()?;
        m.joining = Some(Joining {
            identity,
            key_package,
            last_fetch: None,
        });
        Ok(m)
    }

    /// The pseudonym in this member's credential.
    pub fn pseudonym(&self) -> &str {
        &self.pseudonym
    }

    /// The KeyPackage to hand to an inviter (out of band), while waiting to join.
    pub fn key_package(&self) -> Option<&PublishedKeyPackage> {
        self.joining.as_ref().map(|j| &j.key_package)
    }

    /// The room, once created or joined.
    pub fn room(&self) -> Option<&MemberRoom> {
        self.room.as_ref()
    }

    /// The data plane.
    pub fn media(&self) -> &MediaSession {
        &self.media
    }

    /// The data plane, mutably (tests poke at it).
    pub fn media_mut(&mut self) -> &mut MediaSession {
        &mut self.media
    }

    /// The relay client state (confirmed subscriptions).
    pub fn client(&self) -> &RelayClient {
        &self.client
    }

    /// Whether this member is in a room.
    pub fn is_joined(&self) -> bool {
        self.room.is_some()
    }

    /// Whether this member was removed from the room.
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// When the removal was processed.
    pub fn removed_at(&self) -> Option<Instant> {
        self.removed_at
    }

    /// The room's epoch.
    pub fn epoch(&self) -> Option<u64> {
        self.room.as_ref().map(|r| r.epoch())
    }

    /// The safety code of the current epoch.
    pub fn safety_code(&self) -> Option<SafetyCode> {
        self.room.as_ref().map(|r| r.safety_code())
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Every (epoch, token) this member's session ever held.
    pub fn token_history(&self) -> &[(u64, ChannelToken)] {
        &self.tokens
    }

    /// Plaintext Opus packets sent (when [`record_opus`](Self::record_opus) is on).
    pub fn opus_sent(&self) -> &[Vec<u8>] {
        &self.opus_sent
    }

    /// The last 20 ms this member heard (all other members mixed).
    pub fn last_mix(&self) -> &[i16] {
        &self.last_mix
    }

    /// Pseudonyms of the other members, by leaf.
    pub fn names(&self) -> &BTreeMap<u32, String> {
        &self.names
    }

    /// What each sender's stream gave, departed senders included.
    pub fn senders(&self) -> Vec<SenderReport> {
        let mut all = self.departed.clone();
        all.extend(self.receivers.iter().map(|(id, r)| SenderReport {
            leaf: id.leaf,
            pseudonym: self.names.get(&id.leaf).cloned().unwrap_or_default(),
            present: true,
            stats: r.stats(),
        }));
        all
    }

    /// The token of the epoch this member seals in.
    pub fn sending_token(&self) -> Option<ChannelToken> {
        let epoch = self.media.sending_epoch()?;
        self.tokens
            .iter()
            .rev()
            .find(|(e, _)| *e == epoch)
            .map(|(_, t)| *t)
    }

    /// Whether a commit can go out now: in the room, no commit in flight, and the relay
    /// confirmed the current channel (where the commit is published).
    pub fn ready_to_commit(&self) -> bool {
        match &self.room {
            Some(room) if !self.removed && room.is_active() && !room.has_pending_commit() => room
                .channel_token()
                .is_ok_and(|t| self.client.is_subscribed(&t)),
            _ => false,
        }
    }

    /// Ready to commit, sealing in the current epoch, and a frame of the current epoch has
    /// opened from every other member: everyone has caught up, so the next commit reaches
    /// them all (the relay does not keep handshake history for late subscribers).
    pub fn settled(&self) -> bool {
        let Some(room) = &self.room else {
            return false;
        };
        let epoch = room.epoch();
        if !self.ready_to_commit() || self.media.sending_epoch() != Some(epoch) {
            return false;
        }
        let bits = epoch % room.config().layout.epoch_slots();
        let own = room.own_leaf();
        room.members()
            .iter()
            .filter(|m| m.leaf != own)
            .all(|m| self.heard.get(&m.leaf) == Some(&bits))
    }

    fn emit(&mut self, send: &mut impl FnMut(&[u8])) {
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += self.out.len() as u64;
        send(&self.out);
        self.out.clear();
    }

    /// One 20 ms step at `now`: fetch the Welcome (a joiner), keep subscriptions in sync,
    /// send one audio frame, mix one frame of every other member.
    pub fn tick(&mut self, now: Instant, send: &mut impl FnMut(&[u8])) {
        self.greet(now, send);
        if !self.ready {
            // Nothing else goes out before the relay takes this member's requests.
            return;
        }
        if self.room.is_none() {
            self.poll_mailbox(now, send);
            return;
        }
        self.media.expire(now);
        self.record_tokens();
        self.sync_subscriptions(now, send);
        // A joiner seals only in epochs that descend from its own commit: it self-updates
        // as soon as it can (again if that commit lost a race).
        if self.room.as_ref().is_some_and(|r| !r.can_seal()) && self.ready_to_commit() {
            let _ = self.self_update(now, send);
        }
        self.retry_welcomes(now, send);
        self.speak(now, send);
        self.listen(now);
    }

    /// Says Hello until the relay is ready (its first answer may be a challenge).
    fn greet(&mut self, now: Instant, send: &mut impl FnMut(&[u8])) {
        if self.ready
            || self
                .hello_sent
                .is_some_and(|t| now.saturating_duration_since(t) < RETRY)
        {
            return;
        }
        self.hello(Cookie::default(), now, send);
    }

    fn hello(&mut self, cookie: Cookie, now: Instant, send: &mut impl FnMut(&[u8])) {
        self.out.clear();
        if self.client.hello(cookie, &mut self.out).is_ok() {
            self.hello_sent = Some(now);
            self.emit(send);
        }
    }

    fn poll_mailbox(&mut self, now: Instant, send: &mut impl FnMut(&[u8])) {
        let Some(joining) = &mut self.joining else {
            return;
        };
        if joining
            .last_fetch
            .is_some_and(|t| now.saturating_duration_since(t) < FETCH_EVERY)
        {
            return;
        }
        joining.last_fetch = Some(now);
        self.out.clear();
        if self
            .client
            .fetch_welcomes(&joining.key_package.reference, &mut self.out)
            .is_ok()
        {
            self.stats.fetches += 1;
            self.emit(send);
        }
    }

    fn record_tokens(&mut self) {
        for (epoch, token) in self.media.tokens() {
            if !self.tokens.contains(&(epoch, token)) {
                self.tokens.push((epoch, token));
            }
        }
    }

    /// The channels this member should be on.
    fn wanted(&self) -> Vec<ChannelToken> {
        if !self.removed {
            self.media.tokens().map(|(_, t)| t).collect()
        } else if self.rogue {
            self.sending_token().into_iter().collect()
        } else {
            Vec::new()
        }
    }

    fn sync_subscriptions(&mut self, now: Instant, send: &mut impl FnMut(&[u8])) {
        let want = self.wanted();
        let renew = std::mem::take(&mut self.resubscribe) || (self.removed && self.rogue);
        let wait = if renew { ROGUE_RESUBSCRIBE } else { RETRY };
        for token in &want {
            let due = self
                .requested
                .get(token)
                .is_none_or(|t| now.saturating_duration_since(*t) >= wait);
            if due && (renew || !self.client.is_subscribed(token)) {
                self.out.clear();
                if self.client.subscribe(*token, &mut self.out).is_ok() {
                    self.stats.subscribes += 1;
                    self.requested.insert(*token, now);
                    self.emit(send);
                }
            }
        }
        let leave: Vec<ChannelToken> = self
            .client
            .subscribed()
            .filter(|t| !want.contains(t))
            .collect();
        for token in leave {
            let due = self
                .requested
                .get(&token)
                .is_none_or(|t| now.saturating_duration_since(*t) >= RETRY);
            self.out.clear();
            if due && self.client.unsubscribe(&token, &mut self.out).is_ok() {
                self.stats.unsubscribes += 1;
                self.requested.insert(token, now);
                self.emit(send);
            }
        }
        let client = &self.client;
        self.requested
            .retain(|t, _| want.contains(t) || client.is_subscribed(t));
    }

    fn retry_welcomes(&mut self, now: Instant, send: &mut impl FnMut(&[u8])) {
        let mut due = Vec::new();
        self.unstored.retain_mut(|u| {
            if now.saturating_duration_since(u.sent) < RETRY {
                return true;
            }
            if u.tries >= WELCOME_TRIES {
                return false;
            }
            u.tries += 1;
            u.sent = now;
            due.push((u.reference.clone(), u.welcome.clone()));
            true
        });
        for (reference, welcome) in due {
            self.out.clear();
            if self
                .client
                .deliver_welcome(&reference, &welcome, &mut self.out)
                .is_ok()
            {
                self.stats.welcomes_delivered += 1;
                self.emit(send);
            }
        }
    }

    fn speak(&mut self, now: Instant, send: &mut impl FnMut(&[u8])) {
        self.voice.fill(&mut self.pcm);
        let token = match self.sending_token() {
            Some(t) if self.client.is_subscribed(&t) && (!self.removed || self.rogue) => t,
            _ => {
                self.stats.frames_unsent += 1;
                return;
            }
        };
        let opus = match self.sender.encode_i16(&self.pcm) {
            Ok(opus) => opus,
            Err(_) => {
                self.stats.errors += 1;
                return;
            }
        };
        self.frame.clear();
        if self.media.seal(opus, &mut self.frame, now).is_err() {
            self.stats.frames_unsent += 1;
            return;
        }
        if self.record_opus {
            self.opus_sent.push(opus.to_vec());
        }
        self.out.clear();
        if self
            .client
            .media(&token, &self.frame, &mut self.out)
            .is_ok()
        {
            self.stats.frames_sent += 1;
            self.emit(send);
        }
    }

    fn listen(&mut self, now: Instant) {
        self.mix.fill(0);
        for r in self.receivers.values_mut() {
            match r.pull_i16(&mut self.media, &mut self.out_pcm, now) {
                Ok(Pulled::Idle) => {}
                Ok(_) => {
                    for (acc, s) in self.mix.iter_mut().zip(&self.out_pcm) {
                        *acc += i32::from(*s);
                    }
                }
                Err(_) => self.stats.errors += 1,
            }
        }
        for (o, s) in self.last_mix.iter_mut().zip(&self.mix) {
            *o = i16::try_from((*s).clamp(-32768, 32767)).unwrap_or(0);
        }
    }

    /// Takes one datagram from the relay at `now`; any subscription change it causes goes
    /// out through `send` at once.
    pub fn on_datagram(&mut self, datagram: &[u8], now: Instant, send: &mut impl FnMut(&[u8])) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += datagram.len() as u64;
        let event = match self.client.receive(datagram) {
            Ok(e) => e,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        match event {
            ClientEvent::Media { frame, .. } => self.on_media(frame, now),
            ClientEvent::Handshake { message, .. } => {
                self.on_handshake(message, now);
                self.sync_subscriptions(now, send);
            }
            ClientEvent::Welcome { welcome, .. } => {
                self.on_welcome(welcome, now);
                if self.room.is_some() {
                    self.sync_subscriptions(now, send);
                }
            }
            ClientEvent::Stored { mailbox } => {
                self.stats.welcomes_stored += 1;
                self.unstored
                    .retain(|u| u.reference.as_slice() != mailbox.as_bytes());
            }
            ClientEvent::Refused {
                code: ErrorCode::MailboxEmpty,
            } => self.stats.mailbox_empty += 1,
            ClientEvent::Refused { .. } => self.stats.relay_refusals += 1,
            ClientEvent::Stale => self.stats.stale += 1,
            // Prove the address; at most once per RETRY (a Challenge can be forged).
            ClientEvent::Challenge { cookie } => {
                self.stats.challenges += 1;
                if self
                    .challenge_answered
                    .is_none_or(|t| now.saturating_duration_since(t) >= RETRY)
                {
                    self.challenge_answered = Some(now);
                    self.hello(cookie, now, send);
                }
            }
            // The relay may have forgotten this member (requests dropped, subscriptions
            // gone): redo them at once.
            ClientEvent::Ready => {
                self.ready = true;
                self.resubscribe = true;
                self.requested.clear();
                if let Some(joining) = &mut self.joining {
                    joining.last_fetch = None;
                }
                if self.room.is_some() {
                    self.sync_subscriptions(now, send);
                } else {
                    self.poll_mailbox(now, send);
                }
            }
            _ => {}
        }
    }

    fn on_media(&mut self, frame: &[u8], now: Instant) {
        self.stats.media_in += 1;
        if self.room.is_none() || self.removed {
            self.stats.media_unrouted += 1;
            return;
        }
        let Ok(member) = self.media.member_of(frame) else {
            self.stats.media_unrouted += 1;
            return;
        };
        let leaf = member.leaf;
        let Some(r) = self.receivers.get_mut(&member) else {
            self.stats.media_unrouted += 1;
            return;
        };
        let before = r.stats();
        r.push(frame, &mut self.media, now);
        let after = r.stats();
        let opened = after.auth_failures == before.auth_failures
            && after.replays == before.replays
            && after.rejected == before.rejected
            && after.held == before.held;
        if opened {
            if let Ok((header, _)) = Header::parse(frame) {
                let bits = self.config.layout.decompose(header.kid).epoch_bits;
                self.heard.insert(leaf, bits);
            }
        }
    }

    fn on_handshake(&mut self, message: &[u8], now: Instant) {
        let Some(room) = self.room.as_mut().filter(|_| !self.removed) else {
            self.stats.handshakes_refused += 1;
            return;
        };
        match room.process(message) {
            Ok(events) => {
                self.stats.handshakes_applied += 1;
                self.apply_events(events, now);
                self.retry_early(now);
            }
            // A message of a later epoch (its commit not processed yet) is kept; a stale
            // one (e.g. replayed) is dropped.
            Err(RoomError::Rejected(Rejection::WrongEpoch))
                if handshake_epoch(message).is_some_and(|e| e > room.epoch()) =>
            {
                self.stats.handshakes_early += 1;
                if self.early.len() == MAX_EARLY_HANDSHAKES {
                    self.early.remove(0);
                }
                self.early.push(message.to_vec());
            }
            Err(_) => self.stats.handshakes_refused += 1,
        }
    }

    /// Retries kept handshake messages until none applies any more.
    fn retry_early(&mut self, now: Instant) {
        loop {
            let Some(room) = self.room.as_mut().filter(|_| !self.removed) else {
                return;
            };
            let epoch = room.epoch();
            self.early
                .retain(|m| handshake_epoch(m).is_some_and(|e| e > epoch));
            let mut applied = None;
            let mut i = 0;
            while i < self.early.len() {
                match room.process(&self.early[i]) {
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
                    self.apply_events(events, now);
                }
                None => return,
            }
        }
    }

    fn apply_events(&mut self, events: Vec<RoomEvent>, now: Instant) {
        for event in events {
            match event {
                RoomEvent::Keys(keys) => self.apply_keys(keys, now),
                RoomEvent::MemberRemoved { leaf } => {
                    let ids: Vec<MemberId> = self
                        .receivers
                        .keys()
                        .copied()
                        .filter(|id| id.leaf == leaf)
                        .collect();
                    for id in ids {
                        self.drop_receiver(id);
                    }
                }
                RoomEvent::EpochChanged { .. } => self.stats.epoch_changes += 1,
                RoomEvent::RemovedFromRoom => {
                    self.removed = true;
                    self.removed_at = Some(now);
                    if !self.rogue {
                        self.media.stop_sending();
                    }
                }
                RoomEvent::PendingCommitDropped => self.stats.commits_dropped += 1,
                _ => {}
            }
        }
        self.after_room_change();
    }

    fn apply_keys(&mut self, keys: EpochKeys, now: Instant) {
        if self.media.apply(keys, now).is_err() {
            self.stats.errors += 1;
        }
    }

    fn drop_receiver(&mut self, id: MemberId) {
        let leaf = id.leaf;
        self.heard.remove(&leaf);
        if let Some(r) = self.receivers.remove(&id) {
            self.departed.push(SenderReport {
                leaf,
                pseudonym: self.names.get(&leaf).cloned().unwrap_or_default(),
                present: false,
                stats: r.stats(),
            });
        }
    }

    /// Receivers for exactly the other members; tokens recorded.
    fn after_room_change(&mut self) {
        self.record_tokens();
        let Some(room) = &self.room else {
            return;
        };
        if self.removed {
            let ids: Vec<MemberId> = self.receivers.keys().copied().collect();
            for id in ids {
                self.drop_receiver(id);
            }
            return;
        }
        let own = room.own_leaf();
        let members: Vec<(MemberId, String)> = room
            .members()
            .into_iter()
            .filter(|m| m.leaf != own)
            .map(|m| (m.id, String::from_utf8_lossy(&m.pseudonym).into_owned()))
            .collect();
        let gone: Vec<MemberId> = self
            .receivers
            .keys()
            .copied()
            .filter(|id| !members.iter().any(|(m, _)| m == id))
            .collect();
        for id in gone {
            self.drop_receiver(id);
        }
        for (id, name) in members {
            self.names.insert(id.leaf, name);
            if let std::collections::btree_map::Entry::Vacant(slot) = self.receivers.entry(id) {
                match AudioReceiver::new(&self.audio) {
                    Ok(r) => {
                        slot.insert(r);
                    }
                    Err(_) => self.stats.errors += 1,
                }
            }
        }
    }

    fn on_welcome(&mut self, welcome: &[u8], now: Instant) {
        let Some(joining) = self.joining.take() else {
            self.stats.welcomes_ignored += 1;
            return;
        };
        let Joining {
            identity,
            key_package,
            last_fetch,
        } = joining;
        match Room::join(identity, self.config.clone(), welcome) {
            Ok((room, keys)) => {
                if self.media.apply(keys, now).is_err() {
                    self.stats.errors += 1;
                }
                self.room = Some(room);
                self.after_room_change();
            }
            // Not for this member, or forged: keep waiting with the identity (and its
            // KeyPackage) the failed join gave back.
            Err(e) => {
                self.stats.welcomes_ignored += 1;
                self.joining = Some(Joining {
                    identity: e.identity,
                    key_package,
                    last_fetch,
                });
            }
        }
    }

    /// Invites the members whose KeyPackages are given (received out of band).
    pub fn invite(
        &mut self,
        key_packages: &[&[u8]],
        now: Instant,
        send: &mut impl FnMut(&[u8]),
    ) -> Result<(), MemberError> {
        self.commit_with(now, send, |room| room.invite(key_packages))
    }

    /// Removes the members at `leaves`.
    pub fn remove(
        &mut self,
        leaves: &[u32],
        now: Instant,
        send: &mut impl FnMut(&[u8]),
    ) -> Result<(), MemberError> {
        self.commit_with(now, send, |room| room.remove(leaves))
    }

    /// Refreshes this member's leaf keys in a new epoch.
    pub fn self_update(
        &mut self,
        now: Instant,
        send: &mut impl FnMut(&[u8]),
    ) -> Result<(), MemberError> {
        self.commit_with(now, send, |room| room.self_update())
    }

    /// Makes a commit and publishes it: staged keys applied, the commit on the current
    /// channel, the Welcome into each invitee's mailbox.
    fn commit_with(
        &mut self,
        now: Instant,
        send: &mut impl FnMut(&[u8]),
        make: impl FnOnce(&mut MemberRoom) -> Result<Commit, RoomError>,
    ) -> Result<(), MemberError> {
        if !self.ready_to_commit() {
            return Err(MemberError::NotReady);
        }
        let room = self.room.as_mut().ok_or(MemberError::NotReady)?;
        let token = room.channel_token()?;
        let commit = make(room)?;
        self.out.clear();
        if let Err(e) = self
            .client
            .handshake(&token, &commit.message, &mut self.out)
        {
            let _ = room.discard_pending();
            self.out.clear();
            return Err(e.into());
        }
        if self.media.apply(commit.keys, now).is_err() {
            self.stats.errors += 1;
        }
        self.stats.commits += 1;
        self.emit(send);
        if let Some(welcome) = &commit.welcome {
            for reference in &commit.invited {
                self.out.clear();
                if self
                    .client
                    .deliver_welcome(reference, welcome, &mut self.out)
                    .is_ok()
                {
                    self.stats.welcomes_delivered += 1;
                    self.unstored.push(Unstored {
                        reference: reference.clone(),
                        welcome: welcome.clone(),
                        sent: now,
                        tries: 1,
                    });
                    self.emit(send);
                }
            }
        }
        self.record_tokens();
        self.sync_subscriptions(now, send);
        Ok(())
    }

    /// Leaves every channel (before the process exits).
    pub fn leave_relay(&mut self, send: &mut impl FnMut(&[u8])) {
        let all: Vec<ChannelToken> = self.client.subscribed().collect();
        for token in all {
            self.out.clear();
            if self.client.unsubscribe(&token, &mut self.out).is_ok() {
                self.stats.unsubscribes += 1;
                self.emit(send);
            }
        }
    }
}
