//! Epoch keys for the data plane: the RFC 9605 §5.2 KID layout and the [`KeyRing`] of
//! receiving keys.
//!
//! With MLS, every epoch has one base key, `MLS-Exporter("SFrame 1.0 Base Key", "", Nk)`,
//! and every member seals under its own KID:
//!
//! ```text
//! KID = (stream << (S + E)) | (leaf << E) | (epoch mod 2^E)
//! ```
//!
//! where the context bits (RFC 9605 §5.2) name the member's stream ([`StreamId`], fewer than
//! `2^T`, T the room's stream bits), so each (epoch, leaf, stream) has its own
//! `sframe_key`, `sframe_salt`, counter and replay window. Nothing is
//! keyed by leaf alone: MLS reuses leaf indices after removals, but a reused leaf in a later
//! epoch has a different base key.
//!
//! The [`KeyRing`] holds the base keys of up to `2^E` epochs (one per slot) and derives the
//! per-sender keys lazily, on the first frame of each (epoch, leaf, stream). Epochs that are
//! no longer current are kept for a grace period, and are evicted early when a newer epoch
//! takes their slot. Memory is bounded by members × streams × retained epochs, whatever
//! frames arrive: only leaves that are members of a held epoch ever get a key, and only for
//! the room's `2^T` streams (at most [`MAX_STREAM_BITS`]
//! bits).

use std::time::{Duration, Instant};

use bytes::BytesMut;
use zeroize::Zeroizing;

use crate::frame::{CipherSuite, FrameError, FrameOpener, FrameSealer, Header};

/// Errors of the key ring and the media session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The frame layer rejected the frame (malformed, replayed, too old, not authentic...).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The frame names an epoch this ring does not hold *yet* (a commit not yet processed).
    /// The audio layer may hold such a frame briefly and retry once keys arrive.
    #[error("frame from epoch {epoch_bits} (mod 2^E) whose keys have not arrived yet")]
    EpochNotYetKnown {
        /// The epoch bits of the KID (`epoch mod 2^E`).
        epoch_bits: u64,
    },
    /// The frame names an epoch that has expired or was evicted.
    #[error("frame from an epoch no longer held")]
    EpochExpired,
    /// The KID names a leaf that is not a member of that epoch.
    #[error("leaf {leaf} is not a sender of that epoch")]
    UnknownSender {
        /// The leaf named by the KID.
        leaf: u64,
    },
    /// The KID names a stream the room does not have (its context bits are not below
    /// `2^T`).
    #[error("stream {stream} is not a stream of this room")]
    UnknownStream {
        /// The KID's context bits.
        stream: u64,
    },
    /// The frame was sealed by this member (e.g. reflected back by a relay).
    #[error("frame sealed by this member")]
    OwnFrame,
    /// Invalid KID layout: needs 2 ≤ E ≤ 8, 1 ≤ S ≤ 32, T ≤ [`MAX_STREAM_BITS`]. (With E = 1 a frame of the next
    /// epoch could not be told from one of the previous epoch.)
    #[error("invalid KID layout")]
    InvalidLayout,
    /// A leaf or context does not fit its bits in the KID layout.
    #[error("value does not fit the KID layout")]
    OutOfRange,
    /// There is no sending key (no epoch applied yet, or this member may only receive until
    /// its next epoch).
    #[error("no sending key")]
    NoSendingKey,
    /// The epoch is older than the one holding its slot (keys applied out of order).
    #[error("epoch older than the one holding its slot")]
    StaleEpoch,
    /// The sender has already sealed in a newer epoch, and this frame of an older epoch
    /// would play after what it sealed there: refused, since a removed member still holding
    /// the older epoch's key could have forged it.
    #[error("sender has moved on to a newer epoch")]
    Superseded,
    /// The epoch was already under way when this session got its keys (a restart): frames
    /// seen before the restart could be replayed, so its frames are refused. Frames of
    /// later epochs open normally.
    #[error("replay state of the epoch unknown after a restart")]
    ReplayStateUnknown,
    /// An epoch's base key has the wrong length for the suite.
    #[error("base key must be {expected} bytes")]
    BadBaseKey {
        /// `Nk` of the suite.
        expected: usize,
    },
}

/// The RFC 9605 §5.2 KID layout: `S` sender (leaf) bits and `E` epoch bits; the remaining
/// high bits carry a context value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KidLayout {
    sender_bits: u8,
    epoch_bits: u8,
}

/// The parts of a KID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KidParts {
    /// The context value (high bits).
    pub context: u64,
    /// The sender's MLS leaf index.
    pub leaf: u64,
    /// The epoch modulo `2^E`.
    pub epoch_bits: u64,
}

impl Default for KidLayout {
    /// `S = 16` (65,536 leaves), `E = 4` (16 epoch slots). Rooms of up to 16 leaves with
    /// context 0 get 1-byte KIDs, so the header stays 2–4 bytes in a call.
    fn default() -> Self {
        KidLayout {
            sender_bits: 16,
            epoch_bits: 4,
        }
    }
}

impl KidLayout {
    /// A layout with `sender_bits` (S, 1..=32) and `epoch_bits` (E, 2..=8).
    ///
    /// E = 1 is refused: receivers read the epoch bits relative to their current epoch,
    /// half of the `2^E` slots ahead of it and half behind, and with two slots nothing is
    /// ahead, so a frame of the next epoch would be taken for an expired one.
    pub fn new(sender_bits: u8, epoch_bits: u8) -> Result<KidLayout, KeyError> {
        if !(1..=32).contains(&sender_bits) || !(2..=8).contains(&epoch_bits) {
            return Err(KeyError::InvalidLayout);
        }
        Ok(KidLayout {
            sender_bits,
            epoch_bits,
        })
    }

    /// S.
    pub fn sender_bits(&self) -> u8 {
        self.sender_bits
    }

    /// E.
    pub fn epoch_bits(&self) -> u8 {
        self.epoch_bits
    }

    /// Number of epoch slots, `2^E`.
    pub fn epoch_slots(&self) -> u64 {
        1u64 << self.epoch_bits
    }

    fn context_shift(&self) -> u32 {
        u32::from(self.sender_bits) + u32::from(self.epoch_bits)
    }

    /// `(context << (S+E)) | (leaf << E) | (epoch mod 2^E)`; fails with
    /// [`KeyError::OutOfRange`] when the leaf or the context does not fit.
    pub fn compose(&self, context: u64, leaf: u64, epoch: u64) -> Result<u64, KeyError> {
        if leaf >> self.sender_bits != 0 {
            return Err(KeyError::OutOfRange);
        }
        let shift = self.context_shift();
        let context_part = if context == 0 {
            0
        } else {
            // shift <= 40, so the checks below are well defined.
            let shifted = context.checked_shl(shift).ok_or(KeyError::OutOfRange)?;
            if shifted >> shift != context {
                return Err(KeyError::OutOfRange);
            }
            shifted
        };
        Ok(context_part | (leaf << self.epoch_bits) | (epoch & (self.epoch_slots() - 1)))
    }

    /// Splits a KID into context, leaf and epoch bits.
    pub fn decompose(&self, kid: u64) -> KidParts {
        let shift = self.context_shift();
        KidParts {
            context: kid.checked_shr(shift).unwrap_or(0),
            leaf: (kid >> self.epoch_bits) & ((1u64 << self.sender_bits) - 1),
            epoch_bits: kid & (self.epoch_slots() - 1),
        }
    }
}

/// A member as the data plane knows it: its leaf and a tag of its signature key.
///
/// MLS gives a removed member's leaf to the next newcomer, so a leaf alone does not name a
/// member: frames the departed member sealed under an older epoch must not be taken for the
/// newcomer's. The tag (the first 8 bytes of `SHA-256("sotto 1 member id" ‖ signature
/// key)`, computed by the control plane) tells them apart; every member computes the same
/// value for the same member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId {
    /// The member's leaf index.
    pub leaf: u32,
    /// Tag of the member's signature key.
    pub tag: u64,
}

/// The most stream bits a room may have (16 streams per member). Each stream of each member
/// costs receivers a key per epoch held, derived on the stream's first frame (forged or
/// not), so the bound keeps a forger's reach to 16 × members × epochs keys.
pub const MAX_STREAM_BITS: u8 = 4;

/// A member's stream: the KID context value its frames carry (RFC 9605 §5.2). Each stream
/// of a member has its own key, counter and replay window, so a member may send several
/// at once (a microphone and shared system audio, say). A room has `2^T` streams
/// ([`RoomParams::stream_bits`](crate::room::RoomParams::stream_bits)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u8);

impl StreamId {
    /// Stream 0, the microphone: its KIDs are those of a room without streams, so its
    /// frames are as short as they can be.
    pub const MICROPHONE: StreamId = StreamId(0);
}

/// What [`KeyRing::open`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// The sender: leaf and member tag (a newcomer at a reused leaf is another member).
    pub member: MemberId,
    /// The sender's leaf index (`member.leaf`).
    pub leaf: u32,
    /// The sender's stream.
    pub stream: StreamId,
    /// The full epoch the frame was sealed in.
    pub epoch: u64,
    /// The frame counter.
    pub ctr: u64,
    /// Plaintext bytes written.
    pub len: usize,
}

struct EpochSlot {
    epoch: u64,
    suite: CipherSuite,
    base_key: Zeroizing<Vec<u8>>,
    /// Members who may send in this epoch, sorted by leaf.
    members: Vec<MemberId>,
    /// This member's leaf in this epoch (its own frames are refused).
    own_leaf: Option<u32>,
    /// (leaf, stream) whose opening key has been derived into the opener (sorted).
    derived: Vec<(u32, u8)>,
    /// (leaf, stream) with at least one frame authenticated in this epoch (sorted): their
    /// frames in older epochs have been superseded.
    opened: Vec<(u32, u8)>,
    /// Set once a newer epoch became current: the epoch is dropped at this instant.
    expires_at: Option<Instant>,
    /// Senders who left in a later epoch, and when their frames stop being accepted here.
    retired: Vec<(u32, Instant)>,
    /// (leaf, stream) that already sealed in a newer epoch, with the highest counter of
    /// this epoch that had opened by then (`None`: none had): nothing above it opens any
    /// more.
    superseded: Vec<((u32, u8), Option<u64>)>,
    /// The epoch was under way before this ring got it: its frames are refused.
    replay_unknown: bool,
}

impl EpochSlot {
    fn member(&self, leaf: u32) -> Option<MemberId> {
        self.members
            .binary_search_by_key(&leaf, |m| m.leaf)
            .ok()
            .and_then(|i| self.members.get(i).copied())
    }
}

/// How an epoch enters a [`KeyRing`] ([`KeyRing::insert_epoch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayState {
    /// The ring holds the epoch from its start (keys from a commit or a Welcome): every
    /// frame of it this ring ever opened is in its replay windows.
    Complete,
    /// The epoch was under way before this ring got it (a restart): frames opened before
    /// could be replayed, so its frames are refused with [`KeyError::ReplayStateUnknown`].
    Unknown,
}

/// Receiving keys of a room's recent epochs (see the [module docs](self)).
pub struct KeyRing {
    layout: KidLayout,
    stream_bits: u8,
    grace: Duration,
    slots: Vec<Option<EpochSlot>>,
    current: Option<u64>,
    /// The newest epoch made by a commit that removed someone ([`cut_off_before`]): frames
    /// of it and later epochs cannot come from a removed member.
    ///
    /// [`cut_off_before`]: Self::cut_off_before
    removal_epoch: Option<u64>,
    opener: FrameOpener,
}

impl KeyRing {
    /// A ring for one room with `stream_bits` (T) stream bits above the layout's S + E (at
    /// most [`MAX_STREAM_BITS`]: more are taken as that many).
    /// `grace` is how long an epoch stays after a newer one became current;
    /// `replay_window` is the replay window of each (sender, stream) in counters; `failure_budget` the
    /// authentication failures each sender key tolerates
    /// ([`FrameOpener::with_failure_budget`]).
    pub fn new(
        layout: KidLayout,
        stream_bits: u8,
        grace: Duration,
        replay_window: usize,
        failure_budget: u32,
    ) -> KeyRing {
        let slots = (0..layout.epoch_slots()).map(|_| None).collect();
        KeyRing {
            layout,
            stream_bits: stream_bits.min(MAX_STREAM_BITS),
            grace,
            slots,
            current: None,
            removal_epoch: None,
            opener: FrameOpener::with_replay_window(replay_window)
                .with_failure_budget(failure_budget),
        }
    }

    /// The KID layout.
    pub fn layout(&self) -> KidLayout {
        self.layout
    }

    /// The stream bits (T).
    pub fn stream_bits(&self) -> u8 {
        self.stream_bits
    }

    /// The KID of (`leaf`, `stream`) in `epoch`.
    fn kid(&self, leaf: u32, stream: u8, epoch: u64) -> Result<u64, KeyError> {
        if u32::from(stream) >> self.stream_bits != 0 {
            return Err(KeyError::UnknownStream {
                stream: u64::from(stream),
            });
        }
        self.layout
            .compose(u64::from(stream), u64::from(leaf), epoch)
    }

    /// The newest epoch made current with [`set_current`](Self::set_current).
    pub fn current_epoch(&self) -> Option<u64> {
        self.current
    }

    /// Epochs held, oldest first.
    pub fn epochs(&self) -> Vec<u64> {
        let mut e: Vec<u64> = self.slots.iter().flatten().map(|s| s.epoch).collect();
        e.sort_unstable();
        e
    }

    /// Number of per-sender opening keys derived so far (bounded by members × streams ×
    /// epochs held).
    pub fn derived_keys(&self) -> usize {
        self.opener.len()
    }

    fn slot_index(&self, epoch: u64) -> usize {
        usize::try_from(epoch & (self.layout.epoch_slots() - 1)).unwrap_or(0)
    }

    fn slot(&self, epoch: u64) -> Option<&EpochSlot> {
        self.slots
            .get(self.slot_index(epoch))
            .and_then(Option::as_ref)
            .filter(|s| s.epoch == epoch)
    }

    /// Holds `epoch` with its SFrame suite, base key and senders. An older epoch in the same
    /// slot is evicted (a newer one makes this fail with [`KeyError::StaleEpoch`]); the same
    /// epoch with the same suite and key only updates its members; the same epoch with
    /// another key (a commit that lost the race at the relay) is replaced. Each epoch has
    /// its own suite, so a room can change suites at an epoch change while frames of the
    /// older epochs still open under theirs.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_epoch(
        &mut self,
        epoch: u64,
        suite: CipherSuite,
        base_key: &[u8],
        members: &[MemberId],
        own_leaf: Option<u32>,
        replay: ReplayState,
    ) -> Result<(), KeyError> {
        if base_key.len() != suite.key_len() {
            return Err(KeyError::BadBaseKey {
                expected: suite.key_len(),
            });
        }
        let mut members = members.to_vec();
        members.sort_unstable();
        members.dedup_by_key(|m| m.leaf);
        for m in &members {
            self.kid(m.leaf, 0, epoch)?;
        }
        let index = self.slot_index(epoch);
        if let Some(Some(slot)) = self.slots.get_mut(index) {
            if slot.epoch > epoch {
                return Err(KeyError::StaleEpoch);
            }
            if slot.epoch == epoch && slot.suite == suite && slot.base_key.as_slice() == base_key {
                // Keep derived keys (and their replay windows) of members still present.
                let kept =
                    |l: &u32| slot.member(*l) == members.iter().find(|m| m.leaf == *l).copied();
                let dropped: Vec<(u32, u8)> = slot
                    .derived
                    .iter()
                    .copied()
                    .filter(|(l, _)| !kept(l))
                    .collect();
                slot.derived.retain(|d| !dropped.contains(d));
                slot.opened.retain(|d| !dropped.contains(d));
                slot.members = members;
                slot.own_leaf = own_leaf;
                for (leaf, stream) in dropped {
                    if let Ok(kid) = self.kid(leaf, stream, epoch) {
                        self.opener.remove_key(kid);
                    }
                }
                return Ok(());
            }
        }
        self.evict(index);
        if let Some(entry) = self.slots.get_mut(index) {
            *entry = Some(EpochSlot {
                epoch,
                suite,
                base_key: Zeroizing::new(base_key.to_vec()),
                members,
                own_leaf,
                derived: Vec::new(),
                opened: Vec::new(),
                expires_at: None,
                retired: Vec::new(),
                superseded: Vec::new(),
                replay_unknown: replay == ReplayState::Unknown,
            });
        }
        Ok(())
    }

    /// Marks `epoch` as the member's current epoch at `now`: every older epoch held starts
    /// its grace period (if it has not already).
    pub fn set_current(&mut self, epoch: u64, now: Instant) {
        if self.current.is_some_and(|c| c >= epoch) {
            return;
        }
        self.current = Some(epoch);
        let expiry = now.checked_add(self.grace).unwrap_or(now);
        for slot in self.slots.iter_mut().flatten() {
            if slot.epoch < epoch && slot.expires_at.is_none() {
                slot.expires_at = Some(expiry);
            }
        }
    }

    /// The earliest instant at which a held epoch expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|s| s.expires_at)
            .min()
    }

    /// Whether `epoch` is held.
    pub fn holds(&self, epoch: u64) -> bool {
        self.slot(epoch).is_some()
    }

    /// Stops accepting frames from `leaves` in every held epoch before `epoch` from `at` on:
    /// those members left in `epoch` (removed, or their leaf given to someone else), so
    /// frames under their old keys must not outlive the switch delay, nor be taken for a
    /// newcomer's at a reused leaf.
    pub fn retire_senders(&mut self, epoch: u64, leaves: &[u32], at: Instant) {
        for slot in self.slots.iter_mut().flatten() {
            if slot.epoch < epoch {
                for leaf in leaves {
                    if slot.member(*leaf).is_some() && !slot.retired.iter().any(|(l, _)| l == leaf)
                    {
                        slot.retired.push((*leaf, at));
                    }
                }
            }
        }
    }

    /// Drops every epoch before `epoch` at `at` at the latest, for every sender: after a
    /// commit that removed someone, the older epochs' base keys are known to someone who is
    /// no longer a member and can seal under *any* sender's KID of those epochs.
    pub fn cut_off_before(&mut self, epoch: u64, at: Instant) {
        self.removal_epoch = Some(self.removal_epoch.map_or(epoch, |e| e.max(epoch)));
        for slot in self.slots.iter_mut().flatten() {
            if slot.epoch < epoch {
                slot.expires_at = Some(slot.expires_at.map_or(at, |t| t.min(at)));
            }
        }
    }

    /// Drops every epoch whose grace period has ended by `now`.
    pub fn expire(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            let expired = matches!(
                self.slots.get(index),
                Some(Some(EpochSlot { expires_at: Some(t), .. })) if *t <= now
            );
            if expired {
                self.evict(index);
            }
        }
    }

    fn evict(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::take) else {
            return;
        };
        for (leaf, stream) in &slot.derived {
            if let Ok(kid) = self.kid(*leaf, *stream, slot.epoch) {
                self.opener.remove_key(kid);
            }
        }
    }

    /// A sealer for this member's own key of `stream` in `epoch`, starting at counter 0.
    ///
    /// Crate-internal: the media session makes at most one per (epoch, stream), from
    /// `Current` keys the control plane gives at most once per epoch, so no (key, counter)
    /// is ever used twice.
    pub(crate) fn sealer(
        &self,
        epoch: u64,
        leaf: u32,
        stream: StreamId,
    ) -> Result<FrameSealer, KeyError> {
        let slot = self.slot(epoch).ok_or(KeyError::NoSendingKey)?;
        let kid = self.kid(leaf, stream.0, epoch)?;
        Ok(FrameSealer::new(slot.suite, kid, &slot.base_key)?)
    }

    /// Classifies epoch bits that no held epoch matches.
    fn missing_epoch(&self, epoch_bits: u64) -> KeyError {
        let Some(current) = self.current else {
            return KeyError::EpochNotYetKnown { epoch_bits };
        };
        let slots = self.layout.epoch_slots();
        let ahead = epoch_bits.wrapping_sub(current) & (slots - 1);
        if ahead != 0 && ahead < slots / 2 {
            KeyError::EpochNotYetKnown { epoch_bits }
        } else {
            KeyError::EpochExpired
        }
    }

    /// The stream a KID's context bits name, if the room has it.
    fn stream_of(&self, context: u64) -> Result<u8, KeyError> {
        u8::try_from(context)
            .ok()
            .filter(|s| u32::from(*s) >> self.stream_bits == 0)
            .ok_or(KeyError::UnknownStream { stream: context })
    }

    /// The sender and stream a frame claims, read from its KID without opening it: for
    /// routing the frame to the right receiver before it is opened. Not authenticated until
    /// it opens.
    pub fn sender_of(&self, frame: &[u8]) -> Result<(MemberId, StreamId), KeyError> {
        let (header, _) = Header::parse(frame)?;
        let parts = self.layout.decompose(header.kid);
        let stream = StreamId(self.stream_of(parts.context)?);
        let slot = match self
            .slots
            .get(usize::try_from(parts.epoch_bits).unwrap_or(usize::MAX))
        {
            Some(Some(slot)) => slot,
            _ => return Err(self.missing_epoch(parts.epoch_bits)),
        };
        u32::try_from(parts.leaf)
            .ok()
            .and_then(|leaf| slot.member(leaf))
            .map(|member| (member, stream))
            .ok_or(KeyError::UnknownSender { leaf: parts.leaf })
    }

    /// Opens `frame` and appends its plaintext to `out`.
    ///
    /// The KID selects the epoch and sender (no trial decryption). The sender's key is
    /// derived on its first frame. On error nothing is appended and no replay state moves.
    pub fn open(
        &mut self,
        frame: &[u8],
        out: &mut BytesMut,
        now: Instant,
    ) -> Result<Received, KeyError> {
        self.open_bound(&[], frame, out, now)
    }

    /// [`open`](Self::open) for a frame sealed with `metadata` bound to it (RFC 9605
    /// §4.4.3): it opens only with the same metadata.
    pub fn open_bound(
        &mut self,
        metadata: &[u8],
        frame: &[u8],
        out: &mut BytesMut,
        now: Instant,
    ) -> Result<Received, KeyError> {
        let (header, _) = Header::parse(frame)?;
        let parts = self.layout.decompose(header.kid);
        let stream = self.stream_of(parts.context)?;
        let index = usize::try_from(parts.epoch_bits).unwrap_or(usize::MAX);
        // Epoch bits are read relative to the current epoch: the half of the slots ahead
        // of it name epochs to come. A slot there still holding an old epoch (kept for its
        // grace period) does not make a newer epoch's frame look like an old one.
        if let Some(current) = self.current {
            let slots = self.layout.epoch_slots();
            let ahead = parts.epoch_bits.wrapping_sub(current) & (slots - 1);
            let held_is_old = matches!(self.slots.get(index), Some(Some(s)) if s.epoch < current);
            if ahead != 0 && ahead < slots / 2 && held_is_old {
                return Err(KeyError::EpochNotYetKnown {
                    epoch_bits: parts.epoch_bits,
                });
            }
        }
        let slot = match self.slots.get_mut(index) {
            Some(Some(slot)) => slot,
            _ => return Err(self.missing_epoch(parts.epoch_bits)),
        };
        if slot.expires_at.is_some_and(|t| t <= now) {
            self.evict(index);
            return Err(KeyError::EpochExpired);
        }
        let leaf =
            u32::try_from(parts.leaf).map_err(|_| KeyError::UnknownSender { leaf: parts.leaf })?;
        if slot.own_leaf == Some(leaf) {
            return Err(KeyError::OwnFrame);
        }
        let member = match slot.member(leaf) {
            Some(m) if !slot.retired.iter().any(|(l, t)| *l == leaf && *t <= now) => m,
            _ => return Err(KeyError::UnknownSender { leaf: parts.leaf }),
        };
        if slot.replay_unknown {
            return Err(KeyError::ReplayStateUnknown);
        }
        let sender = (leaf, stream);
        if let Some((_, top)) = slot.superseded.iter().find(|(s, _)| *s == sender) {
            if top.is_none_or(|top| header.ctr > top) {
                return Err(KeyError::Superseded);
            }
        }
        let epoch = slot.epoch;
        if let Err(at) = slot.derived.binary_search(&sender) {
            self.opener
                .insert_key(header.kid, slot.suite, &slot.base_key)?;
            slot.derived.insert(at, sender);
        }
        // A frame of an epoch a removed member may hold proves nothing about its sender:
        // the removed member could have forged it to cut a slow sender's genuine frames off.
        let trusted = self.removal_epoch.is_some_and(|r| epoch >= r);
        let first_here = slot.opened.binary_search(&sender).err().filter(|_| trusted);
        let opened = self.opener.open(metadata, frame, out)?;
        if let Some(at) = first_here {
            // Recorded only once a frame authenticated, so forged frames cannot supersede
            // anything.
            if let Some(Some(slot)) = self.slots.get_mut(index) {
                slot.opened.insert(at, sender);
            }
            self.supersede_before(epoch, member, stream);
        }
        Ok(Received {
            member,
            leaf,
            stream: StreamId(stream),
            epoch,
            ctr: opened.ctr,
            len: opened.len,
        })
    }

    /// `member` sealed on `stream` in `epoch`, an epoch no removed member holds: its
    /// frames of that stream in older epochs above what opened so far would play after
    /// that, so they are refused from now on (a removed member holding those epochs' keys
    /// could have sealed them). Each stream has its own counter, so each is superseded on
    /// its own.
    fn supersede_before(&mut self, epoch: u64, member: MemberId, stream: u8) {
        let sender = (member.leaf, stream);
        let layout = self.layout;
        for slot in self.slots.iter_mut().flatten() {
            if slot.epoch >= epoch
                || slot.member(member.leaf) != Some(member)
                || slot.superseded.iter().any(|(s, _)| *s == sender)
            {
                continue;
            }
            let top = layout
                .compose(u64::from(stream), u64::from(member.leaf), slot.epoch)
                .ok()
                .and_then(|kid| self.opener.highest_counter(kid));
            slot.superseded.push((sender, top));
        }
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("layout", &self.layout)
            .field("epochs", &self.epochs())
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;

    #[test]
    fn layout_compose_decompose() {
        let l = KidLayout::new(8, 4).unwrap();
        let kid = l.compose(3, 0x42, 0x1235).unwrap();
        assert_eq!(kid, (3 << 12) | (0x42 << 4) | 5);
        assert_eq!(
            l.decompose(kid),
            KidParts {
                context: 3,
                leaf: 0x42,
                epoch_bits: 5
            }
        );
        assert_eq!(l.compose(0, 256, 0), Err(KeyError::OutOfRange));
        assert_eq!(l.compose(1 << 52, 0, 0), Err(KeyError::OutOfRange));
        assert!(l.compose((1 << 52) - 1, 255, 15).is_ok());
        let full = KidLayout::new(32, 8).unwrap();
        assert_eq!(
            full.compose(0xff_ffff, u64::from(u32::MAX), 255).unwrap(),
            u64::MAX
        );
        assert_eq!(full.decompose(u64::MAX).leaf, u64::from(u32::MAX));
        assert_eq!(KidLayout::new(0, 4), Err(KeyError::InvalidLayout));
        assert_eq!(KidLayout::new(8, 9), Err(KeyError::InvalidLayout));
        // Finding 13 (issue 10): E = 1 leaves no slot "ahead" of the current epoch.
        assert_eq!(KidLayout::new(8, 1), Err(KeyError::InvalidLayout));
        assert!(KidLayout::new(8, 2).is_ok());
    }

    fn ring() -> KeyRing {
        KeyRing::new(
            KidLayout::new(8, 2).unwrap(),
            0,
            Duration::from_secs(10),
            128,
            crate::frame::DEFAULT_FAILURE_BUDGET,
        )
    }

    fn members(leaves: &[u32]) -> Vec<MemberId> {
        leaves
            .iter()
            .map(|&leaf| MemberId {
                leaf,
                tag: u64::from(leaf) + 100,
            })
            .collect()
    }

    fn frame(ring: &KeyRing, epoch: u64, leaf: u32) -> BytesMut {
        let mut s = ring.sealer(epoch, leaf, StreamId::MICROPHONE).unwrap();
        let mut out = BytesMut::new();
        s.seal(b"", b"audio", &mut out).unwrap();
        out
    }

    #[test]
    fn lazily_derives_only_for_members() {
        let t0 = Instant::now();
        let mut r = ring();
        r.insert_epoch(
            0,
            SUITE,
            &[1; 16],
            &members(&[0, 1, 2]),
            Some(0),
            ReplayState::Complete,
        )
        .unwrap();
        r.set_current(0, t0);
        let mut out = BytesMut::new();
        assert_eq!(r.derived_keys(), 0);
        let got = r.open(&frame(&r, 0, 1), &mut out, t0).unwrap();
        assert_eq!((got.leaf, got.epoch, got.len), (1, 0, 5));
        assert_eq!(r.derived_keys(), 1);
        assert_eq!(
            r.open(&frame(&r, 0, 0), &mut out, t0),
            Err(KeyError::OwnFrame)
        );
        // A forged KID for a non-member leaf derives nothing.
        let l = r.layout();
        let mut forged = FrameSealer::new(SUITE, l.compose(0, 9, 0).unwrap(), &[1; 16]).unwrap();
        let mut f = BytesMut::new();
        forged.seal(b"", b"x", &mut f).unwrap();
        assert_eq!(
            r.open(&f, &mut out, t0),
            Err(KeyError::UnknownSender { leaf: 9 })
        );
        assert_eq!(r.derived_keys(), 1);
    }

    #[test]
    fn grace_slots_and_future_epochs() {
        let t0 = Instant::now();
        let mut r = ring(); // 4 slots
        r.insert_epoch(
            5,
            SUITE,
            &[5; 16],
            &members(&[0, 1, 2]),
            Some(0),
            ReplayState::Complete,
        )
        .unwrap();
        r.set_current(5, t0);
        let old = frame(&r, 5, 2);
        // Epoch 6 not known yet; epoch 4 (behind) is expired.
        let mut sealer6 =
            FrameSealer::new(SUITE, r.layout().compose(0, 1, 6).unwrap(), &[6; 16]).unwrap();
        let mut f6 = BytesMut::new();
        sealer6.seal(b"", b"next", &mut f6).unwrap();
        let mut out = BytesMut::new();
        assert_eq!(
            r.open(&f6, &mut out, t0),
            Err(KeyError::EpochNotYetKnown { epoch_bits: 2 })
        );
        r.insert_epoch(
            6,
            SUITE,
            &[6; 16],
            &members(&[0, 1, 2]),
            Some(0),
            ReplayState::Complete,
        )
        .unwrap();
        assert!(r.open(&f6, &mut out, t0).is_ok());
        r.set_current(6, t0);
        // Epoch 5 stays for the grace period (for leaf 2, which has not sealed in epoch 6
        // yet), then goes.
        assert!(r.open(&old, &mut out, t0 + Duration::from_secs(9)).is_ok());
        let old2 = frame(&r, 5, 2);
        assert_eq!(
            r.open(&old2, &mut out, t0 + Duration::from_secs(10)),
            Err(KeyError::EpochExpired)
        );
        assert_eq!(r.epochs(), vec![6]);
        // Slot takeover: epoch 10 evicts epoch 6 (same slot mod 4).
        r.insert_epoch(
            10,
            SUITE,
            &[10; 16],
            &members(&[0, 1, 2]),
            Some(0),
            ReplayState::Complete,
        )
        .unwrap();
        assert_eq!(r.epochs(), vec![10]);
        assert_eq!(r.derived_keys(), 0);
    }

    /// Finding 2 (issue 10): once a sender's frame opened in a newer epoch, its frames of
    /// older epochs above what had opened there are refused (a removed member holding the
    /// old base key could have sealed them), and frames it left below still open.
    #[test]
    fn newer_epoch_supersedes_older_frames_of_the_same_member() {
        let t0 = Instant::now();
        let mut r = ring();
        r.insert_epoch(
            5,
            SUITE,
            &[5; 16],
            &members(&[0, 1, 2]),
            Some(0),
            ReplayState::Complete,
        )
        .unwrap();
        r.set_current(5, t0);
        let mut s5 = r.sealer(5, 1, StreamId::MICROPHONE).unwrap();
        let seal = |s: &mut FrameSealer| {
            let mut f = BytesMut::new();
            s.seal(b"", b"a", &mut f).unwrap();
            f
        };
        let f5: Vec<BytesMut> = (0..4).map(|_| seal(&mut s5)).collect();
        let mut out = BytesMut::new();
        // 0 and 2 open; 1 is late; 3 is forged-ahead territory.
        r.open(&f5[0], &mut out, t0).unwrap();
        r.open(&f5[2], &mut out, t0).unwrap();
        r.insert_epoch(
            6,
            SUITE,
            &[6; 16],
            &members(&[0, 1, 2]),
            Some(0),
            ReplayState::Complete,
        )
        .unwrap();
        r.set_current(6, t0);
        // Epoch 6 came with a removal: its frames cannot come from the removed member.
        r.cut_off_before(6, t0 + Duration::from_secs(1));
        // A forged frame in epoch 6 (wrong key) does not supersede anything.
        let mut forged =
            FrameSealer::new(SUITE, r.layout().compose(0, 1, 6).unwrap(), &[9; 16]).unwrap();
        assert!(r.open(&seal(&mut forged), &mut out, t0).is_err());
        let mut s6 = r.sealer(6, 1, StreamId::MICROPHONE).unwrap();
        r.open(&seal(&mut s6), &mut out, t0).unwrap();
        // Below the highest counter that had opened: still accepted (a late genuine frame).
        assert!(r.open(&f5[1], &mut out, t0).is_ok());
        // Above it: superseded.
        assert_eq!(r.open(&f5[3], &mut out, t0), Err(KeyError::Superseded));
        // Another member of epoch 5 is not affected.
        let mut s5_2 = r.sealer(5, 2, StreamId::MICROPHONE).unwrap();
        assert!(r.open(&seal(&mut s5_2), &mut out, t0).is_ok());
    }

    /// Finding 2 (issue 10): after a commit that removed anyone, older epochs close for
    /// every sender at the cut-off, not after the whole grace period.
    #[test]
    fn removal_cuts_off_every_sender_of_older_epochs() {
        let t0 = Instant::now();
        let mut r = ring();
        r.insert_epoch(
            5,
            SUITE,
            &[5; 16],
            &members(&[0, 1, 2]),
            Some(0),
            ReplayState::Complete,
        )
        .unwrap();
        r.set_current(5, t0);
        r.insert_epoch(
            6,
            SUITE,
            &[6; 16],
            &members(&[0, 1]),
            Some(0),
            ReplayState::Complete,
        )
        .unwrap();
        r.set_current(6, t0);
        let cut = t0 + Duration::from_millis(1250);
        r.cut_off_before(6, cut);
        let mut out = BytesMut::new();
        assert!(r
            .open(&frame(&r, 5, 1), &mut out, cut - Duration::from_millis(1))
            .is_ok());
        let mut s = r.sealer(5, 1, StreamId::MICROPHONE).unwrap();
        s.seal(b"", b"x", &mut BytesMut::new()).unwrap();
        let mut late = BytesMut::new();
        s.seal(b"", b"y", &mut late).unwrap();
        assert_eq!(r.open(&late, &mut out, cut), Err(KeyError::EpochExpired));
    }

    /// Finding 7 (issue 10): an epoch the ring got already under way refuses its frames.
    #[test]
    fn restored_epoch_refuses_frames() {
        let t0 = Instant::now();
        let mut r = ring();
        r.insert_epoch(
            5,
            SUITE,
            &[5; 16],
            &members(&[0, 1]),
            Some(0),
            ReplayState::Unknown,
        )
        .unwrap();
        r.set_current(5, t0);
        let mut out = BytesMut::new();
        assert_eq!(
            r.open(&frame(&r, 5, 1), &mut out, t0),
            Err(KeyError::ReplayStateUnknown)
        );
        r.insert_epoch(
            6,
            SUITE,
            &[6; 16],
            &members(&[0, 1]),
            Some(0),
            ReplayState::Complete,
        )
        .unwrap();
        assert!(r.open(&frame(&r, 6, 1), &mut out, t0).is_ok());
    }
}
