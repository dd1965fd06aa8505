//! The data plane: [`MediaSession`] seals this member's frames and opens everyone else's,
//! with keys handed over as [`EpochKeys`] values by the control plane
//! ([`Room`](crate::room::Room)). No MLS calls, no locks; time is a parameter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use zeroize::Zeroizing;

use crate::frame::{CipherSuite, FrameSealer, DEFAULT_FAILURE_BUDGET, DEFAULT_REPLAY_WINDOW};
use crate::keys::{
    KeyError, KeyRing, KidLayout, MemberId, Received, ReplayState, StreamId, MAX_STREAM_BITS,
};

/// Length of a channel token.
pub const CHANNEL_TOKEN_LEN: usize = 16;

/// An opaque per-epoch channel token (`MLS-Exporter("sotto 1 channel token", "", 16)`):
/// what a relay routes by. Only members of the epoch can compute it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelToken(pub [u8; CHANNEL_TOKEN_LEN]);

impl std::fmt::Debug for ChannelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChannelToken(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Length of a handshake key.
pub const HANDSHAKE_KEY_LEN: usize = 16;

/// The key that hides an epoch's handshake messages from the relay
/// (`MLS-Exporter("sotto 1 handshake key", "", 16)`, AES-128-GCM; see
/// `crate::call`'s sealed handshakes). Only members of the epoch can compute it.
/// Zeroized on drop; its `Debug` shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct HandshakeKey(Zeroizing<[u8; HANDSHAKE_KEY_LEN]>);

impl HandshakeKey {
    /// A key from exported bytes. [`Room`](crate::room::Room) makes these; this exists for
    /// other control planes and tests.
    pub fn from_exported(bytes: [u8; HANDSHAKE_KEY_LEN]) -> HandshakeKey {
        HandshakeKey(Zeroizing::new(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; HANDSHAKE_KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for HandshakeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandshakeKey(..)")
    }
}

/// Where an epoch's keys stand for the member that received them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochStatus {
    /// A commit into this epoch is staged, not merged: open its frames, keep sealing with
    /// the current epoch.
    Staged,
    /// The member has merged into this epoch and is the only instance that ever will seal
    /// in it: open its frames and, after the switch delay, seal with it.
    Current,
    /// The member has merged into this epoch but may not seal in it: an earlier instance
    /// of this member (before a crash, a storage rollback, or the same Welcome fetched
    /// again) may have reached the same epoch and sealed in it. Open its frames; seal again
    /// from the epoch of this member's next own commit (a self-update gives one at once).
    ReceiveOnly,
    /// The epoch is current but was already under way when this session got its keys (a
    /// restart): frames seen before could be replayed, so its frames are refused
    /// ([`KeyError::ReplayStateUnknown`]) and nothing is sealed in it. Its channel token
    /// is given so the member can follow the room to its next epoch.
    Restored,
}

/// Everything the data plane needs for one epoch. The base key is zeroized on drop.
///
/// Not `Clone`, and its fields are read-only: a `Current` value is the single permission
/// to seal in its epoch, so no two sealers can share a key and counter.
pub struct EpochKeys {
    epoch: u64,
    status: EpochStatus,
    suite: CipherSuite,
    layout: KidLayout,
    stream_bits: u8,
    members: Vec<MemberId>,
    own_leaf: u32,
    token: ChannelToken,
    handshake_key: Option<HandshakeKey>,
    departed: Vec<u32>,
    removal: bool,
    base_key: Zeroizing<Vec<u8>>,
}

impl EpochKeys {
    /// Keys from an exported base key (`MLS-Exporter("SFrame 1.0 Base Key", "", Nk)`).
    /// [`Room`](crate::room::Room) builds these; this constructor exists for other control
    /// planes and tests.
    ///
    /// **The caller's duty:** a `Current` value gives permission to seal from counter 0 in
    /// `epoch`, so it may be made at most once per (room, epoch, `own_leaf`) across every
    /// process, crash, reload and storage rollback; otherwise nonces repeat and
    /// confidentiality and integrity are lost. `Room` keeps this rule by giving `Current`
    /// only for epochs that descend from a contribution fresh to its own instance (see
    /// [`Room`](crate::room::Room)).
    #[allow(clippy::too_many_arguments)]
    pub fn assume_unique_for_key(
        epoch: u64,
        status: EpochStatus,
        suite: CipherSuite,
        layout: KidLayout,
        stream_bits: u8,
        members: Vec<MemberId>,
        own_leaf: u32,
        token: ChannelToken,
        base_key: Vec<u8>,
    ) -> EpochKeys {
        EpochKeys {
            epoch,
            status,
            suite,
            layout,
            stream_bits,
            members,
            own_leaf,
            token,
            handshake_key: None,
            departed: Vec::new(),
            removal: false,
            base_key: Zeroizing::new(base_key),
        }
    }

    /// These keys with the epoch's handshake key ([`Room`](crate::room::Room) always
    /// adds it; the call engine needs it to send and read handshake messages).
    pub fn with_handshake_key(mut self, key: HandshakeKey) -> EpochKeys {
        self.handshake_key = Some(key);
        self
    }

    /// The epoch's handshake key, if these keys carry one.
    pub fn handshake_key(&self) -> Option<&HandshakeKey> {
        self.handshake_key.as_ref()
    }

    /// These keys with the leaves whose member left in this epoch (see
    /// [`departed`](Self::departed)).
    pub fn with_departed(mut self, leaves: Vec<u32>) -> EpochKeys {
        self.removal |= !leaves.is_empty();
        self.departed = leaves;
        self
    }

    /// These keys mark a removal although no sender left: someone who held the older
    /// epochs' keys did (a stage listener), so older epochs close one switch delay plus
    /// [`MediaConfig::removal_skew`] after they are applied, as after a sender's removal.
    pub fn with_removal(mut self) -> EpochKeys {
        self.removal = true;
        self
    }

    /// The MLS epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// What the receiving member may do with the epoch.
    pub fn status(&self) -> EpochStatus {
        self.status
    }

    /// The SFrame suite of the epoch (a room may change suites at an epoch change).
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// The KID layout of the room.
    pub fn layout(&self) -> KidLayout {
        self.layout
    }

    /// The room's stream bits (T): each member may send `2^T` streams.
    pub fn stream_bits(&self) -> u8 {
        self.stream_bits
    }

    /// The members who may send in this epoch.
    pub fn members(&self) -> &[MemberId] {
        &self.members
    }

    /// This member's leaf in this epoch.
    pub fn own_leaf(&self) -> u32 {
        self.own_leaf
    }

    /// The epoch's channel token.
    pub fn token(&self) -> ChannelToken {
        self.token
    }

    /// Leaves whose member left in this epoch (removed, or replaced by a newcomer at the
    /// same leaf): their frames under older epochs stop being accepted one switch delay
    /// after this epoch becomes current, and every older epoch closes at most one switch
    /// delay plus [`MediaConfig::removal_skew`] after it.
    pub fn departed(&self) -> &[u32] {
        &self.departed
    }

    /// The exported base key of the epoch (`Nk` bytes), for interoperability tests.
    ///
    /// Whoever holds it can derive every member's key of the epoch: never build a
    /// [`FrameSealer`] from it (its counter would restart where this member's sealer has
    /// already been), and never send or store it.
    pub fn expose_base_key(&self) -> &[u8] {
        &self.base_key
    }
}

impl std::fmt::Debug for EpochKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochKeys")
            .field("epoch", &self.epoch)
            .field("status", &self.status)
            .field("members", &self.members.len())
            .field("own_leaf", &self.own_leaf)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// Timing and limits of the data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaConfig {
    /// How long a member that merged a new epoch keeps sealing with the old one, so
    /// receivers whose copy of the commit is late lose nothing. 0 cuts a removed member off
    /// at once, at the price of a possible blip for slow receivers. Default 1 s.
    pub switch_delay: Duration,
    /// How long an epoch is still opened after a newer one became current, when no member
    /// was removed. Default 10 s.
    pub grace: Duration,
    /// After a commit that removed anyone, older epochs are opened for at most
    /// `switch_delay + removal_skew` after this member merged it, for every sender: the
    /// removed member holds their base keys. The skew is how much later than this member
    /// another member may merge the same commit (and so start its switch delay); a sender
    /// merging later than that loses the frames it seals in the old epoch after the cut.
    /// Default 250 ms.
    pub removal_skew: Duration,
    /// Replay window per sender, in counters. Default 128.
    pub replay_window: usize,
    /// Authentication failures each sender key tolerates before it opens nothing more
    /// ([`FrameOpener::with_failure_budget`](crate::frame::FrameOpener::with_failure_budget)).
    /// Default [`DEFAULT_FAILURE_BUDGET`].
    pub failure_budget: u32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            switch_delay: Duration::from_secs(1),
            grace: Duration::from_secs(10),
            removal_skew: Duration::from_millis(250),
            replay_window: DEFAULT_REPLAY_WINDOW,
            failure_budget: DEFAULT_FAILURE_BUDGET,
        }
    }
}

/// The epoch this member seals in, with one sealer per stream used so far (each made once,
/// on the stream's first frame in the epoch: a fresh key, counter from 0).
struct Sending {
    epoch: u64,
    leaf: u32,
    sealers: Vec<(StreamId, FrameSealer)>,
}

/// One member's data plane for one room (see the [module docs](self)).
pub struct MediaSession {
    config: MediaConfig,
    ring: Option<KeyRing>,
    sending: Option<Sending>,
    /// Sending epochs waiting for their switch delay, oldest first: (epoch, this member's
    /// leaf in it, the instant it takes over). Each epoch waits its own delay, so a quick
    /// series of commits never postpones switching indefinitely.
    next: VecDeque<(u64, u32, Instant)>,
    /// The highest epoch a sealer was ever made for: sealers are only made for newer ones.
    sealed_up_to: Option<u64>,
    /// (epoch, channel token, handshake key) of the epochs held, oldest first.
    tokens: Vec<(u64, ChannelToken, Option<HandshakeKey>)>,
}

impl MediaSession {
    /// A session with no keys yet.
    pub fn new(config: MediaConfig) -> MediaSession {
        MediaSession {
            config,
            ring: None,
            sending: None,
            next: VecDeque::new(),
            sealed_up_to: None,
            tokens: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// Applies an epoch's keys at `now`.
    ///
    /// `Staged` keys are installed for opening only; they are refused with
    /// [`KeyError::StaleEpoch`] for an epoch at or below the current one (a losing commit's
    /// keys must not replace the winner's). `Current` keys are installed, older epochs start
    /// their grace period, and this member switches to sealing in the new epoch after the
    /// switch delay (its first epoch too: members whose copy of the commit that added it is
    /// late must be able to open its first frame), with a counter starting at 0 (a fresh
    /// key). `ReceiveOnly` keys are installed and become current, for opening only.
    /// `Restored` keys become current and give the epoch's token, but its frames are
    /// refused. When the keys mark a removal (departed members, or
    /// [`EpochKeys::with_removal`]), every older epoch closes one switch delay plus
    /// [`MediaConfig::removal_skew`] from `now`.
    pub fn apply(&mut self, keys: EpochKeys, now: Instant) -> Result<(), KeyError> {
        if keys.stream_bits > MAX_STREAM_BITS {
            return Err(KeyError::InvalidLayout);
        }
        let ring = match &mut self.ring {
            // The suite is the epoch's own; the KID layout and stream bits are the room's
            // for its whole life (a receiver reads a frame's epoch from its KID).
            Some(ring)
                if ring.layout() == keys.layout && ring.stream_bits() == keys.stream_bits =>
            {
                ring
            }
            _ => self.ring.insert(KeyRing::new(
                keys.layout,
                keys.stream_bits,
                self.config.grace,
                self.config.replay_window,
                self.config.failure_budget,
            )),
        };
        if keys.status == EpochStatus::Staged
            && ring.current_epoch().is_some_and(|c| keys.epoch <= c)
        {
            return Err(KeyError::StaleEpoch);
        }
        let replay = if keys.status == EpochStatus::Restored {
            ReplayState::Unknown
        } else {
            ReplayState::Complete
        };
        ring.insert_epoch(
            keys.epoch,
            keys.suite,
            &keys.base_key,
            &keys.members,
            Some(keys.own_leaf),
            replay,
        )?;
        // Tokens follow the epochs the ring holds (an epoch may just have been evicted).
        self.tokens.retain(|(e, _, _)| ring.holds(*e));
        let entry = (keys.epoch, keys.token, keys.handshake_key.clone());
        match self
            .tokens
            .binary_search_by_key(&keys.epoch, |(e, _, _)| *e)
        {
            // The epoch's keys were replaced (the winner of a commit race after this
            // member's own `Staged` keys): its token and handshake key go with them.
            Ok(at) => {
                if let Some(held) = self.tokens.get_mut(at) {
                    *held = entry;
                }
            }
            Err(at) => self.tokens.insert(at, entry),
        }
        if keys.status != EpochStatus::Staged {
            ring.set_current(keys.epoch, now);
            let switch = now.checked_add(self.config.switch_delay).unwrap_or(now);
            ring.retire_senders(keys.epoch, &keys.departed, switch);
            if keys.removal {
                let cut = switch
                    .checked_add(self.config.removal_skew)
                    .unwrap_or(switch);
                ring.cut_off_before(keys.epoch, cut);
            }
        }
        if keys.status == EpochStatus::Current && self.sealed_up_to.is_none_or(|e| keys.epoch > e) {
            ring.layout()
                .compose(0, u64::from(keys.own_leaf), keys.epoch)?;
            // Reserve the epoch: no second sealer is ever made for it.
            self.sealed_up_to = Some(keys.epoch);
            // Even a member's first epoch (a newcomer's) waits the switch delay: the other
            // members' copies of the commit that added it may be late.
            let at = now.checked_add(self.config.switch_delay).unwrap_or(now);
            self.next.push_back((keys.epoch, keys.own_leaf, at));
        }
        self.expire(now);
        Ok(())
    }

    /// Moves time to `now`: switches to a pending sending epoch whose delay has passed, and
    /// drops epochs (and tokens) whose grace period ended. `seal` and `open` call it.
    pub fn expire(&mut self, now: Instant) {
        // The newest epoch whose delay has passed takes over; older pending ones are skipped.
        let mut due = None;
        while self.next.front().is_some_and(|(_, _, at)| *at <= now) {
            due = self.next.pop_front();
        }
        if let (Some((epoch, leaf, _)), Some(ring)) = (due, &self.ring) {
            // Each epoch's key is fresh (reserved by `apply`), so its counter starts at 0:
            // counters say nothing of how long a member has been in the call, and a
            // sender's frames are ordered by (epoch, counter). An epoch already evicted (a
            // newer one took its slot) is skipped: the member keeps sealing with what it
            // has until a later epoch is due.
            if let Ok(sealer) = ring.sealer(epoch, leaf, StreamId::MICROPHONE) {
                self.sending = Some(Sending {
                    epoch,
                    leaf,
                    sealers: vec![(StreamId::MICROPHONE, sealer)],
                });
            }
        }
        if let Some(ring) = &mut self.ring {
            if ring.next_expiry().is_some_and(|t| t <= now) {
                ring.expire(now);
                self.tokens.retain(|(e, _, _)| ring.holds(*e));
            }
        }
    }

    /// Stops sealing (for a member that left). Receiving keys stay until their grace
    /// period ends.
    pub fn stop_sending(&mut self) {
        self.sending = None;
        self.next.clear();
    }

    /// Drops every key (sending and receiving) and token: for a member that was removed
    /// from the room, so nothing it held outlives the removal in this session. The base and
    /// per-sender keys sotto holds are zeroized; the expanded AES and GHASH/HMAC states
    /// inside `ring` and RustCrypto are freed, not wiped (see the README).
    pub fn close(&mut self) {
        self.ring = None;
        self.sending = None;
        self.next.clear();
        self.tokens.clear();
    }

    /// The epoch this member seals in at `now`, if any.
    pub fn sending_epoch(&self) -> Option<u64> {
        self.sending.as_ref().map(|s| s.epoch)
    }

    /// The KID this member seals its microphone stream with, if any.
    pub fn sending_kid(&self) -> Option<u64> {
        self.sending
            .as_ref()
            .and_then(|s| s.sealers.first())
            .map(|(_, sealer)| sealer.kid())
    }

    /// Size of a sealed frame of the microphone stream for a payload of `payload_len`
    /// bytes right now (other streams' KIDs are longer, see the README's overhead table).
    pub fn sealed_len(&self, payload_len: usize) -> Option<usize> {
        self.sending
            .as_ref()
            .and_then(|s| s.sealers.first())
            .map(|(_, sealer)| sealer.sealed_len(payload_len))
    }

    /// Seals `payload` on `stream` with this member's current key of that stream and
    /// appends the frame to `out`; returns the frame length. Each stream has its own key
    /// and counter (a stream's first frame in an epoch starts at 0);
    /// [`StreamId::MICROPHONE`] is the default stream. A stream the room does not have
    /// fails with [`KeyError::UnknownStream`].
    pub fn seal(
        &mut self,
        stream: StreamId,
        payload: &[u8],
        out: &mut BytesMut,
        now: Instant,
    ) -> Result<usize, KeyError> {
        self.seal_bound(stream, &[], payload, out, now)
    }

    /// [`seal`](Self::seal) with `metadata` bound to the frame (RFC 9605 §4.4.3): sent
    /// alongside it in the clear, it cannot be changed without the frame failing to open.
    pub fn seal_bound(
        &mut self,
        stream: StreamId,
        metadata: &[u8],
        payload: &[u8],
        out: &mut BytesMut,
        now: Instant,
    ) -> Result<usize, KeyError> {
        self.expire(now);
        let sending = self.sending.as_mut().ok_or(KeyError::NoSendingKey)?;
        let at = match sending.sealers.iter().position(|(s, _)| *s == stream) {
            Some(at) => at,
            None => {
                // The stream's first frame in this epoch: its sealer is made once, here,
                // and lives as long as the epoch is the sending one (never made again:
                // sending epochs only move forward).
                let ring = self.ring.as_ref().ok_or(KeyError::NoSendingKey)?;
                let sealer = ring.sealer(sending.epoch, sending.leaf, stream)?;
                sending.sealers.push((stream, sealer));
                sending.sealers.len() - 1
            }
        };
        let (_, sealer) = sending.sealers.get_mut(at).ok_or(KeyError::NoSendingKey)?;
        Ok(sealer.seal(metadata, payload, out)?)
    }

    /// Opens a frame from another member and appends its plaintext to `out`.
    ///
    /// [`KeyError::EpochNotYetKnown`] means the frame is from an epoch whose keys have not
    /// been applied yet: hold it and retry after the next [`apply`](Self::apply).
    pub fn open(
        &mut self,
        frame: &[u8],
        out: &mut BytesMut,
        now: Instant,
    ) -> Result<Received, KeyError> {
        self.open_bound(&[], frame, out, now)
    }

    /// [`open`](Self::open) for a frame sealed with [`seal_bound`](Self::seal_bound): it
    /// opens only with the metadata it was sealed with.
    pub fn open_bound(
        &mut self,
        metadata: &[u8],
        frame: &[u8],
        out: &mut BytesMut,
        now: Instant,
    ) -> Result<Received, KeyError> {
        self.expire(now);
        let ring = self
            .ring
            .as_mut()
            .ok_or(KeyError::EpochNotYetKnown { epoch_bits: 0 })?;
        ring.open_bound(metadata, frame, out, now)
    }

    /// The member and stream a frame claims in its KID, read without opening it: for
    /// routing a packet to its `AudioReceiver` (`crate::audio`) before it is opened. Not
    /// authenticated until the frame opens (and [`Received`] says who it really was).
    pub fn sender_of(&self, frame: &[u8]) -> Result<(MemberId, StreamId), KeyError> {
        let ring = self.ring.as_ref().ok_or(KeyError::NoSendingKey)?;
        ring.sender_of(frame)
    }

    /// Channel tokens of the epochs held, oldest first: subscribe to all of them; drop a
    /// token once it is gone from this list.
    pub fn tokens(&self) -> impl Iterator<Item = (u64, ChannelToken)> + '_ {
        self.tokens.iter().map(|(e, t, _)| (*e, *t))
    }

    /// The handshake key of the epoch whose channel is `token`, if held.
    pub fn handshake_key(&self, token: &ChannelToken) -> Option<&HandshakeKey> {
        self.tokens
            .iter()
            .find(|(_, t, _)| t == token)
            .and_then(|(_, _, k)| k.as_ref())
    }

    /// The key ring (for inspection: epochs held, keys derived).
    pub fn ring(&self) -> Option<&KeyRing> {
        self.ring.as_ref()
    }
}

impl std::fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSession")
            .field("sending_epoch", &self.sending_epoch())
            .field("ring", &self.ring)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(epoch: u64) -> EpochKeys {
        let suite = CipherSuite::AesGcm128Sha256;
        EpochKeys::assume_unique_for_key(
            epoch,
            EpochStatus::Current,
            suite,
            KidLayout::default(),
            0,
            vec![MemberId { leaf: 0, tag: 0 }, MemberId { leaf: 1, tag: 1 }],
            0,
            ChannelToken([u8::try_from(epoch % 256).unwrap(); 16]),
            vec![1; suite.key_len()],
        )
    }

    #[test]
    fn tokens_and_pending_switches_stay_bounded() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(MediaConfig::default());
        // An epoch every 100 ms: slots are taken over long before grace ends.
        for e in 0..1000u64 {
            m.apply(keys(e), t0 + Duration::from_millis(100 * e))
                .unwrap();
        }
        let held = m.ring().unwrap().epochs();
        assert_eq!(held.len(), 16);
        let tokens: Vec<u64> = m.tokens().map(|(e, _)| e).collect();
        assert_eq!(tokens, held);
        // Only the switches of the last second are pending.
        assert!(m.next.len() <= 11, "{} pending switches", m.next.len());
    }

    #[test]
    fn a_commit_race_winner_replaces_the_staged_token() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(MediaConfig::default());
        m.apply(keys(1), t0).unwrap();
        // This member's own commit of epoch 2 (staged), then the winner's epoch 2.
        let mut own = keys(2);
        own.status = EpochStatus::Staged;
        own.token = ChannelToken([0xaa; 16]);
        own.base_key = Zeroizing::new(vec![2; own.suite.key_len()]);
        m.apply(own, t0).unwrap();
        m.apply(keys(2), t0).unwrap();
        let tokens: Vec<(u64, ChannelToken)> = m.tokens().collect();
        assert_eq!(tokens, vec![(1, keys(1).token), (2, keys(2).token)]);
    }
}
