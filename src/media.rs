//! The data plane: [`MediaSession`] seals this member's frames and opens everyone else's,
//! with keys handed over as [`EpochKeys`] values by the control plane
//! ([`Room`](crate::room::Room)). No MLS calls, no locks; time is a parameter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use zeroize::Zeroizing;

use crate::frame::{CipherSuite, FrameSealer, DEFAULT_REPLAY_WINDOW};
use crate::keys::{KeyError, KeyRing, KidLayout, Received};

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

/// Where an epoch's keys stand for the member that received them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochStatus {
    /// A commit into this epoch is staged, not merged: open its frames, keep sealing with
    /// the current epoch.
    Staged,
    /// The member has merged into this epoch: open its frames and, after the switch delay,
    /// seal with it.
    Current,
    /// The epoch is current but was restored from storage. Frame counters of this member's
    /// key in this epoch were lost with the old process, so it only receives until the next
    /// epoch (a self-update gives one at once).
    Restored,
}

/// Everything the data plane needs for one epoch. The base key is zeroized on drop.
///
/// Not `Clone`: a `Current` value is the single permission to seal in its epoch, so no two
/// sealers can share a key and counter.
pub struct EpochKeys {
    /// The MLS epoch.
    pub epoch: u64,
    /// What the receiving member may do with the epoch.
    pub status: EpochStatus,
    /// The SFrame suite of the room.
    pub suite: CipherSuite,
    /// The KID layout of the room.
    pub layout: KidLayout,
    /// The KID context value of the room.
    pub context: u64,
    /// Leaves of the members who may send in this epoch.
    pub members: Vec<u32>,
    /// This member's leaf in this epoch.
    pub own_leaf: u32,
    /// The epoch's channel token.
    pub token: ChannelToken,
    /// Leaves whose member left in this epoch (removed, or replaced by a newcomer at the
    /// same leaf): their frames under older epochs stop being accepted one switch delay
    /// after this epoch becomes current.
    pub departed: Vec<u32>,
    pub(crate) base_key: Zeroizing<Vec<u8>>,
}

impl EpochKeys {
    /// Keys from an exported base key (`MLS-Exporter("SFrame 1.0 Base Key", "", Nk)`).
    /// [`Room`](crate::room::Room) builds these; this constructor exists for other control
    /// planes and tests.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        epoch: u64,
        status: EpochStatus,
        suite: CipherSuite,
        layout: KidLayout,
        context: u64,
        members: Vec<u32>,
        own_leaf: u32,
        token: ChannelToken,
        base_key: Vec<u8>,
    ) -> EpochKeys {
        EpochKeys {
            epoch,
            status,
            suite,
            layout,
            context,
            members,
            own_leaf,
            token,
            departed: Vec::new(),
            base_key: Zeroizing::new(base_key),
        }
    }

    /// These keys with the leaves whose member left in this epoch (see
    /// [`departed`](Self::departed)).
    pub fn with_departed(mut self, leaves: Vec<u32>) -> EpochKeys {
        self.departed = leaves;
        self
    }

    /// The exported base key of the epoch (`Nk` bytes).
    pub fn base_key(&self) -> &[u8] {
        &self.base_key
    }

    /// The exported base key of the epoch (`Nk` bytes). Whoever holds it can seal under any
    /// member's KID: never build a sealer from it (nonces would repeat).
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

/// Timing of the data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaConfig {
    /// How long a member that merged a new epoch keeps sealing with the old one, so
    /// receivers whose copy of the commit is late lose nothing. 0 cuts a removed member off
    /// at once, at the price of a possible blip for slow receivers. Default 1 s.
    pub switch_delay: Duration,
    /// How long an epoch is still opened after a newer one became current. Default 10 s.
    pub grace: Duration,
    /// Replay window per sender, in counters. Default 128.
    pub replay_window: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            switch_delay: Duration::from_secs(1),
            grace: Duration::from_secs(10),
            replay_window: DEFAULT_REPLAY_WINDOW,
        }
    }
}

struct Sending {
    epoch: u64,
    sealer: FrameSealer,
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
    tokens: Vec<(u64, ChannelToken)>,
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
    /// `Staged` keys are installed for opening only. `Current` keys are installed, older
    /// epochs start their grace period, and this member switches to sealing in the new
    /// epoch after the switch delay (its first epoch too: members whose copy of the commit
    /// that added it is late must be able to open its first frame). `Restored` keys are
    /// installed for opening only and become current.
    pub fn apply(&mut self, keys: EpochKeys, now: Instant) -> Result<(), KeyError> {
        let ring = match &mut self.ring {
            Some(ring) if ring.suite() == keys.suite && ring.layout() == keys.layout => ring,
            _ => self.ring.insert(KeyRing::new(
                keys.layout,
                keys.suite,
                keys.context,
                self.config.grace,
                self.config.replay_window,
            )),
        };
        ring.insert_epoch(
            keys.epoch,
            &keys.base_key,
            &keys.members,
            Some(keys.own_leaf),
        )?;
        // Tokens follow the epochs the ring holds (an epoch may just have been evicted).
        self.tokens.retain(|(e, _)| ring.holds(*e));
        if let Err(at) = self.tokens.binary_search_by_key(&keys.epoch, |(e, _)| *e) {
            self.tokens.insert(at, (keys.epoch, keys.token));
        }
        match keys.status {
            EpochStatus::Staged => {}
            EpochStatus::Restored => ring.set_current(keys.epoch, now),
            EpochStatus::Current => {
                ring.set_current(keys.epoch, now);
                let cutoff = now.checked_add(self.config.switch_delay).unwrap_or(now);
                ring.retire_senders(keys.epoch, &keys.departed, cutoff);
                if self.sealed_up_to.is_none_or(|e| keys.epoch > e) {
                    ring.layout()
                        .compose(keys.context, u64::from(keys.own_leaf), keys.epoch)?;
                    // Reserve the epoch: no second sealer is ever made for it.
                    self.sealed_up_to = Some(keys.epoch);
                    // Even a member's first epoch (a newcomer's) waits the switch delay:
                    // the other members' copies of the commit that added it may be late.
                    let at = now.checked_add(self.config.switch_delay).unwrap_or(now);
                    self.next.push_back((keys.epoch, keys.own_leaf, at));
                }
            }
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
        if let Some((epoch, leaf, _)) = due {
            if let Some(ring) = &self.ring {
                // The counter runs on across epochs, so receivers can order a sender's
                // frames (and spot losses) across key changes. The epoch's key is fresh
                // (reserved by `apply`), so any starting counter is safe for it.
                let first_ctr = self
                    .sending
                    .as_ref()
                    .and_then(|s| s.sealer.next_counter())
                    .unwrap_or(0);
                // An epoch already evicted (a newer one took its slot) is skipped: the
                // member keeps sealing with what it has until a later epoch is due.
                if let Ok(sealer) = ring.sealer(epoch, leaf, first_ctr) {
                    self.sending = Some(Sending { epoch, sealer });
                }
            }
        }
        if let Some(ring) = &mut self.ring {
            if ring.next_expiry().is_some_and(|t| t <= now) {
                ring.expire(now);
                self.tokens.retain(|(e, _)| ring.holds(*e));
            }
        }
    }

    /// Stops sealing (for a member that was removed or left). Receiving keys stay until
    /// their grace period ends.
    pub fn stop_sending(&mut self) {
        self.sending = None;
        self.next.clear();
    }

    /// The epoch this member seals in at `now`, if any.
    pub fn sending_epoch(&self) -> Option<u64> {
        self.sending.as_ref().map(|s| s.epoch)
    }

    /// The KID this member seals with, if any.
    pub fn sending_kid(&self) -> Option<u64> {
        self.sending.as_ref().map(|s| s.sealer.kid())
    }

    /// Size of a sealed frame for a payload of `payload_len` bytes right now.
    pub fn sealed_len(&self, payload_len: usize) -> Option<usize> {
        self.sending
            .as_ref()
            .map(|s| s.sealer.sealed_len(payload_len))
    }

    /// Seals `payload` with this member's current key and appends the frame to `out`;
    /// returns the frame length.
    pub fn seal(
        &mut self,
        payload: &[u8],
        out: &mut BytesMut,
        now: Instant,
    ) -> Result<usize, KeyError> {
        self.expire(now);
        let sending = self.sending.as_mut().ok_or(KeyError::NoSendingKey)?;
        Ok(sending.sealer.seal(&[], payload, out)?)
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
        self.expire(now);
        let ring = self
            .ring
            .as_mut()
            .ok_or(KeyError::EpochNotYetKnown { epoch_bits: 0 })?;
        ring.open(frame, out, now)
    }

    /// The sender (leaf) a frame claims in its KID, read without any key: for routing a
    /// packet to its [`AudioReceiver`](crate::audio) before it is opened. Not authenticated
    /// until the frame opens.
    pub fn sender_of(&self, frame: &[u8]) -> Result<u32, KeyError> {
        let (header, _) = crate::frame::Header::parse(frame)?;
        let ring = self.ring.as_ref().ok_or(KeyError::NoSendingKey)?;
        let parts = ring.layout().decompose(header.kid);
        u32::try_from(parts.leaf).map_err(|_| KeyError::UnknownSender { leaf: parts.leaf })
    }

    /// Channel tokens of the epochs held, oldest first: subscribe to all of them; drop a
    /// token once it is gone from this list.
    pub fn tokens(&self) -> impl Iterator<Item = (u64, ChannelToken)> + '_ {
        self.tokens.iter().copied()
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
        EpochKeys::new(
            epoch,
            EpochStatus::Current,
            suite,
            KidLayout::default(),
            0,
            vec![0, 1],
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
}
