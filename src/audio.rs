//! The Opus pipeline (feature `opus`, on by default): PCM → Opus → sealed packet, and
//! sealed packets → PCM with loss concealment.
//!
//! Defaults hide speaking activity from the relay: one packet every frame interval whether
//! anyone speaks or not, constant bitrate (every packet the same size), no DTX. In-band FEC is
//! on, so a lost packet is usually rebuilt from the next one; otherwise Opus' packet-loss
//! concealment fills the gap.
//!
//! An [`AudioReceiver`] per remote member and stream ([`MemberId`], [`StreamId`]: route
//! packets with [`MediaSession::sender_of`]) orders packets by (epoch, SFrame counter) — a
//! stream's counter starts at 0 in each epoch —, holds packets of an epoch whose keys have not
//! arrived yet (at most [`HOLD_LIMIT`]), and treats packets that fail authentication, are
//! replayed, or do not decode as lost: they are concealed, never played. A queued packet is
//! never replaced by a later one claiming the same position.
//!
//! The playout delay adapts to the network: a packet that arrives after its frame was
//! played deepens the delay at once, by as many frames as it came late (a concealed frame
//! is inserted for each), up to [`MAX_ADDED_DELAY`] above the configured
//! [`AudioConfig::playout_delay_frames`]; once every packet of a [`RELEASE_WINDOW`] arrived
//! at least a frame ahead of its turn, one frame is taken back (a frame is decoded and
//! dropped) if any was added, or if the packets are buffered longer than the delay asks
//! for (the path got faster, or a burst came). Playback that starts on a burst starts at
//! its newest packets less the delay (the older ones are stale). Only authenticated packets
//! of the playing epoch move the delay: forged or replayed packets never reach it.
//!
//! What whoever delays genuine packets (the relay, the network) can do to the receiver's
//! buffering: add at most [`MAX_ADDED_DELAY`] through late packets; and hold packets, then
//! release them at once, which buffers the excess until it drains at one frame per release
//! window (two seconds at 20 ms frames), or not at all when playback (re)starts on the
//! burst. The delay of the path itself is theirs to choose.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::frame::FrameError;
use crate::keys::{KeyError, MemberId, Received, StreamId};
use crate::media::MediaSession;

/// Sample rate of every stream, in Hz.
pub const SAMPLE_RATE: u32 = 48_000;

/// Longest time a packet of a not-yet-known epoch is held before it counts as late.
pub const HOLD_LIMIT: Duration = Duration::from_millis(200);

/// Largest Opus packet (RFC 6716 §3.2.1: 1275 bytes per frame, up to 3 frames at 60 ms;
/// libopus never produces more than 1275 bytes for one frame).
const MAX_OPUS: usize = 1275;

/// Packets kept in a receiver's reorder queue: one second at 20 ms frames.
const QUEUE: usize = 64;

/// A stream that has delivered nothing for this long has ended: the receiver goes back to
/// silence ([`Pulled::Idle`]) instead of concealing, until packets come again.
pub const STREAM_END: Duration = Duration::from_millis(500);

/// Packets held at most while their epoch's keys are missing.
const MAX_HELD: usize = 16;

/// Most delay a receiver adds to its configured playout delay after late packets (rounded
/// down to whole frames).
pub const MAX_ADDED_DELAY: Duration = Duration::from_millis(200);

/// Arrivals a receiver watches (two seconds at 20 ms frames) before it takes back one frame
/// of delay, if every one of them arrived at least a frame ahead of its turn and some
/// delay was added or the packets wait longer than the delay asks for. Only packets of
/// the playing epoch that came from the network (not held for their keys) count, and a
/// late one of them starts the window over.
pub const RELEASE_WINDOW: u32 = 100;

/// Most frames a receiver buffers on purpose (configured plus added delay): half its
/// reorder queue, so packets up to as many frames further ahead still find a place.
pub const MAX_PLAYOUT_DELAY_FRAMES: u32 = (QUEUE / 2) as u32;

/// Errors of the audio pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// libopus reported an error (its error code).
    #[error("opus error {code}")]
    Opus {
        /// The libopus error code.
        code: i32,
    },
    /// The configuration is not supported.
    #[error("invalid audio configuration")]
    InvalidConfig,
    /// The PCM buffer does not hold exactly one frame.
    #[error("expected {expected} samples, got {got}")]
    FrameSize {
        /// Samples per frame (all channels).
        expected: usize,
        /// Samples given.
        got: usize,
    },
    /// Sealing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl From<opus::Error> for AudioError {
    fn from(e: opus::Error) -> AudioError {
        AudioError::Opus {
            code: e.code() as i32,
        }
    }
}

/// Mono or stereo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channels {
    /// One channel.
    Mono,
    /// Two interleaved channels.
    Stereo,
}

impl Channels {
    /// Number of channels.
    pub fn count(self) -> usize {
        match self {
            Channels::Mono => 1,
            Channels::Stereo => 2,
        }
    }

    fn opus(self) -> opus::Channels {
        match self {
            Channels::Mono => opus::Channels::Mono,
            Channels::Stereo => opus::Channels::Stereo,
        }
    }
}

/// Audio configuration. The defaults hide speaking activity: CBR, no DTX.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioConfig {
    /// Mono (default) or stereo.
    pub channels: Channels,
    /// Frame duration in ms: 10, 20 (default), 40 or 60.
    pub frame_ms: u32,
    /// Bitrate in bit/s. Default 24,000 (voice).
    pub bitrate: u32,
    /// Constant bitrate: every packet the same size. Default on.
    pub cbr: bool,
    /// Discontinuous transmission (near-empty packets in silence — visible to the relay).
    /// Default off.
    pub dtx: bool,
    /// In-band forward error correction. Default on.
    pub fec: bool,
    /// The packet loss the encoder plans FEC for, in percent. Default 10.
    pub expected_loss_percent: u8,
    /// For VBR users: pad each Opus packet (with Opus' own padding, which any decoder
    /// ignores) up to the smallest of these sizes that fits. Empty (default): no padding.
    pub padding_buckets: Vec<usize>,
    /// Frames a receiver buffers before it starts playing (jitter and FEC look-ahead):
    /// the least playout delay; late packets add up to [`MAX_ADDED_DELAY`] to it (less if
    /// the sum would pass [`MAX_PLAYOUT_DELAY_FRAMES`]). At most
    /// [`MAX_PLAYOUT_DELAY_FRAMES`]. Default 2.
    pub playout_delay_frames: u32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            channels: Channels::Mono,
            frame_ms: 20,
            bitrate: 24_000,
            cbr: true,
            dtx: false,
            fec: true,
            expected_loss_percent: 10,
            padding_buckets: Vec::new(),
            playout_delay_frames: 2,
        }
    }
}

impl AudioConfig {
    /// Samples in one frame, all channels together.
    pub fn frame_samples(&self) -> usize {
        self.samples_per_channel() * self.channels.count()
    }

    fn samples_per_channel(&self) -> usize {
        usize::try_from(SAMPLE_RATE / 1000 * self.frame_ms).unwrap_or(0)
    }

    /// Duration of one frame.
    pub fn frame_duration(&self) -> Duration {
        Duration::from_millis(u64::from(self.frame_ms))
    }

    fn validate(&self) -> Result<(), AudioError> {
        let buckets_ok = self
            .padding_buckets
            .iter()
            .all(|b| (1..=MAX_OPUS).contains(b));
        if ![10, 20, 40, 60].contains(&self.frame_ms)
            || !(6_000..=510_000).contains(&self.bitrate)
            || self.expected_loss_percent > 100
            || self.playout_delay_frames > MAX_PLAYOUT_DELAY_FRAMES
            || !buckets_ok
        {
            return Err(AudioError::InvalidConfig);
        }
        Ok(())
    }
}

/// PCM → Opus → sealed packet, one packet per frame interval.
pub struct AudioSender {
    encoder: opus::Encoder,
    config: AudioConfig,
    stream: StreamId,
    opus: Vec<u8>,
    opus_len: usize,
    out: BytesMut,
}

impl AudioSender {
    /// An encoder for `config`, sealing on the microphone stream.
    pub fn new(config: &AudioConfig) -> Result<AudioSender, AudioError> {
        config.validate()?;
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, config.channels.opus(), opus::Application::Voip)?;
        encoder.set_bitrate(opus::Bitrate::Bits(
            i32::try_from(config.bitrate).map_err(|_| AudioError::InvalidConfig)?,
        ))?;
        encoder.set_vbr(!config.cbr)?;
        encoder.set_dtx(config.dtx)?;
        encoder.set_inband_fec(config.fec)?;
        encoder.set_packet_loss_perc(i32::from(config.expected_loss_percent))?;
        let mut buckets = config.padding_buckets.clone();
        buckets.sort_unstable();
        Ok(AudioSender {
            encoder,
            config: AudioConfig {
                padding_buckets: buckets,
                ..config.clone()
            },
            stream: StreamId::MICROPHONE,
            opus: vec![0; MAX_OPUS],
            opus_len: 0,
            out: BytesMut::new(),
        })
    }

    /// This sender sealing on `stream` instead (shared system audio, music): each stream
    /// has its own Opus encoder (this one), key and counter, and receivers keep one
    /// [`AudioReceiver`] per (member, stream).
    pub fn with_stream(mut self, stream: StreamId) -> AudioSender {
        self.stream = stream;
        self
    }

    /// The stream it seals on.
    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// The configuration.
    pub fn config(&self) -> &AudioConfig {
        &self.config
    }

    fn check(&self, got: usize) -> Result<(), AudioError> {
        let expected = self.config.frame_samples();
        if got != expected {
            return Err(AudioError::FrameSize { expected, got });
        }
        Ok(())
    }

    fn pad(&mut self, len: usize) -> Result<usize, AudioError> {
        let target = self
            .config
            .padding_buckets
            .iter()
            .copied()
            .find(|b| *b >= len);
        match (target, self.opus.get_mut(..target.unwrap_or(0))) {
            (Some(t), Some(buf)) if t > len => Ok(opus::packet::pad(buf, len).map(|_| t)?),
            _ => Ok(len),
        }
    }

    /// Encodes one frame of interleaved `i16` PCM to Opus (no sealing); returns the Opus
    /// packet. [`send_i16`](Self::send_i16) is this plus sealing.
    pub fn encode_i16(&mut self, pcm: &[i16]) -> Result<&[u8], AudioError> {
        self.check(pcm.len())?;
        let len = self.encoder.encode(pcm, &mut self.opus)?;
        self.opus_len = self.pad(len)?;
        Ok(self.opus.get(..self.opus_len).unwrap_or(&[]))
    }

    /// Encodes one frame of interleaved `f32` PCM (−1.0..=1.0) to Opus (no sealing).
    pub fn encode_f32(&mut self, pcm: &[f32]) -> Result<&[u8], AudioError> {
        self.check(pcm.len())?;
        let len = self.encoder.encode_float(pcm, &mut self.opus)?;
        self.opus_len = self.pad(len)?;
        Ok(self.opus.get(..self.opus_len).unwrap_or(&[]))
    }

    fn seal(&mut self, media: &mut MediaSession, now: Instant) -> Result<Bytes, AudioError> {
        if self.out.capacity() < 2 * (MAX_OPUS + 64) {
            // One block serves many packets: `split` hands each out without copying.
            self.out.reserve(64 * (self.opus_len + 64));
        }
        let payload = self.opus.get(..self.opus_len).unwrap_or(&[]);
        media.seal(self.stream, payload, &mut self.out, now)?;
        Ok(self.out.split().freeze())
    }

    /// Encodes and seals one frame of interleaved `i16` PCM; returns the packet to send.
    pub fn send_i16(
        &mut self,
        pcm: &[i16],
        media: &mut MediaSession,
        now: Instant,
    ) -> Result<Bytes, AudioError> {
        self.encode_i16(pcm)?;
        self.seal(media, now)
    }

    /// Encodes and seals one frame of interleaved `f32` PCM; returns the packet to send.
    pub fn send_f32(
        &mut self,
        pcm: &[f32],
        media: &mut MediaSession,
        now: Instant,
    ) -> Result<Bytes, AudioError> {
        self.encode_f32(pcm)?;
        self.seal(media, now)
    }
}

impl std::fmt::Debug for AudioSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioSender")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Counters of an [`AudioReceiver`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Frames decoded from their own packet.
    pub decoded: u64,
    /// Frames rebuilt from the next packet's in-band FEC.
    pub fec_recovered: u64,
    /// Frames filled by packet-loss concealment.
    pub concealed: u64,
    /// Packets that failed authentication (never decoded).
    pub auth_failures: u64,
    /// Packets replayed or older than the replay window (never decoded).
    pub replays: u64,
    /// Packets that arrived after their frame was played, or were held too long.
    pub late: u64,
    /// Concealed frames inserted to deepen the playout delay after late packets (not
    /// counted in `concealed`: no packet was lost for them).
    pub delay_inserted: u64,
    /// Frames decoded and dropped while playing to take playout delay back.
    pub delay_removed: u64,
    /// Packets dropped unplayed when playback started on a burst: all but the newest
    /// (playout delay + 1) queued packets.
    pub stale_skipped: u64,
    /// Packets held because their epoch's keys had not arrived.
    pub held: u64,
    /// Packets refused for another reason (malformed, unknown sender, expired epoch,
    /// superseded, another member's).
    pub rejected: u64,
    /// Authenticated packets that did not decode as Opus for this receiver (e.g. a 60 ms
    /// packet at a 20 ms receiver): concealed instead.
    pub undecodable: u64,
    /// Packets refused because their key had used up its authentication-failure budget.
    pub key_retired: u64,
}

/// What [`AudioReceiver::pull_i16`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pulled {
    /// No stream yet (or still buffering): silence.
    Idle,
    /// Decoded from its packet.
    Decoded,
    /// Rebuilt from the next packet's FEC.
    FecRecovered,
    /// Concealed (packet lost, late, or refused), or inserted to deepen the playout delay.
    Concealed,
}

/// A packet's place in its sender's stream: (epoch, counter).
type Position = (u64, u64);

struct Slot {
    pos: Option<Position>,
    data: Vec<u8>,
}

/// Sealed packets of one remote member's stream → PCM, one frame per [`pull`](Self::pull_i16).
pub struct AudioReceiver {
    decoder: opus::Decoder,
    config: AudioConfig,
    /// The member and stream whose packets this receiver plays: the first that opened.
    sender: Option<(MemberId, StreamId)>,
    slots: Vec<Slot>,
    /// Next position to play, once playing.
    next: Option<Position>,
    /// When the first packet arrived (playback starts a playout delay later).
    first_arrival: Option<Instant>,
    /// When the newest packet arrived (a stream silent for [`STREAM_END`] has ended).
    last_arrival: Option<Instant>,
    held: VecDeque<(Instant, Bytes)>,
    scratch: BytesMut,
    stats: ReceiverStats,
    /// Frames of delay added above the configured playout delay (at most `max_added`).
    added: u32,
    max_added: u32,
    /// Concealed frames still to insert before the next due frame.
    stretch: u32,
    /// One added frame to take back at the next pull that can drop a frame.
    shrink: bool,
    /// Arrivals in the current release window, and the least slack (frames between a
    /// packet's arrival and its turn) among them.
    window: u32,
    min_slack: u64,
}

impl AudioReceiver {
    /// A decoder for `config` (the sender's channels and frame duration).
    pub fn new(config: &AudioConfig) -> Result<AudioReceiver, AudioError> {
        config.validate()?;
        let decoder = opus::Decoder::new(SAMPLE_RATE, config.channels.opus())?;
        let max_added =
            u32::try_from(MAX_ADDED_DELAY.as_millis() / u128::from(config.frame_ms.max(1)))
                .unwrap_or(0)
                .min(MAX_PLAYOUT_DELAY_FRAMES.saturating_sub(config.playout_delay_frames));
        Ok(AudioReceiver {
            decoder,
            config: config.clone(),
            sender: None,
            // A slot grows to the packets it holds (60 bytes at 24 kbit/s, not the 1,275 of
            // the largest Opus packet) on first use, and keeps that capacity: 64 slots
            // cost ~4 KiB, not 80 KiB, per receiver.
            slots: (0..QUEUE)
                .map(|_| Slot {
                    pos: None,
                    data: Vec::new(),
                })
                .collect(),
            next: None,
            first_arrival: None,
            last_arrival: None,
            held: VecDeque::with_capacity(MAX_HELD),
            scratch: BytesMut::with_capacity(MAX_OPUS + 64),
            stats: ReceiverStats::default(),
            added: 0,
            max_added,
            stretch: 0,
            shrink: false,
            window: 0,
            min_slack: u64::MAX,
        })
    }

    /// The playout delay now: the configured one plus what late packets added.
    pub fn playout_delay(&self) -> Duration {
        self.config.frame_duration() * self.delay_frames()
    }

    /// The playout delay now, in frames.
    fn delay_frames(&self) -> u32 {
        self.config.playout_delay_frames.saturating_add(self.added)
    }

    /// The counters so far.
    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// The member this receiver plays, once its first packet opened.
    pub fn member(&self) -> Option<MemberId> {
        self.sender.map(|(member, _)| member)
    }

    /// The stream this receiver plays, once its first packet opened.
    pub fn stream(&self) -> Option<StreamId> {
        self.sender.map(|(_, stream)| stream)
    }

    /// Takes one sealed packet from the network.
    pub fn push(&mut self, packet: &[u8], media: &mut MediaSession, now: Instant) {
        self.scratch.clear();
        match media.open(packet, &mut self.scratch, now) {
            Ok(received) => self.store(&received, now, true),
            Err(KeyError::EpochNotYetKnown { .. }) => {
                self.stats.held += 1;
                if self.held.len() == MAX_HELD {
                    self.held.pop_front();
                    self.stats.late += 1;
                }
                self.held.push_back((now, Bytes::copy_from_slice(packet)));
            }
            Err(e) => self.count_refusal(e),
        }
    }

    fn count_refusal(&mut self, e: KeyError) {
        match e {
            KeyError::Frame(FrameError::AuthenticationFailed) => self.stats.auth_failures += 1,
            KeyError::Frame(FrameError::Replayed | FrameError::TooOld) => self.stats.replays += 1,
            KeyError::Frame(FrameError::KeyRetired) => self.stats.key_retired += 1,
            _ => self.stats.rejected += 1,
        }
    }

    /// Puts the opened Opus packet (in `scratch`) into the reorder queue at `pos`. A packet
    /// that arrived from the network (`network`, not released from the held packets, whose
    /// lateness is the keys') moves the playout delay.
    fn store(&mut self, received: &Received, now: Instant, network: bool) {
        let sender = (received.member, received.stream);
        let pos = (received.epoch, received.ctr);
        if self.sender.is_some_and(|s| s != sender) {
            // Another member's packet (a newcomer at a departed member's leaf), or another
            // stream's (its own counter: its positions mean nothing here): not ours.
            self.stats.rejected += 1;
            return;
        }
        self.sender = Some(sender);
        if let Some(next) = self.next {
            if pos < next {
                self.stats.late += 1;
                if network && pos.0 == next.0 {
                    self.deepen(next.1 - pos.1);
                }
                return;
            }
            if pos.0 == next.0 && pos.1 - next.1 >= QUEUE as u64 {
                // Far ahead of playback in the same epoch (a long gap): restart there.
                self.reset();
            } else if network && pos.0 == next.0 {
                self.observe_slack(pos.1 - next.1 + u64::from(self.stretch));
            }
        }
        if self.slots.iter().any(|s| s.pos == Some(pos)) {
            // Never replace a queued packet: the first to authenticate keeps its place.
            self.stats.late += 1;
            return;
        }
        let Some(slot) = self.slots.iter_mut().find(|s| s.pos.is_none()) else {
            // The queue is full of packets ahead of playback: this one cannot wait.
            self.stats.late += 1;
            return;
        };
        slot.pos = Some(pos);
        slot.data.clear();
        slot.data.extend_from_slice(&self.scratch);
        self.last_arrival = Some(now);
        if self.first_arrival.is_none() {
            self.first_arrival = Some(now);
        }
    }

    fn reset(&mut self) {
        self.next = None;
        self.first_arrival = None;
        self.last_arrival = None;
        for slot in &mut self.slots {
            slot.pos = None;
        }
        // The delay learned so far stays (a restarted stream starts with it); what was
        // still to be inserted or taken back does not.
        self.stretch = 0;
        self.shrink = false;
        self.window = 0;
        self.min_slack = u64::MAX;
    }

    /// A packet came `lateness` frames after its turn: insert frames until that much
    /// delay is added (within `max_added`), and start watching for slack anew.
    fn deepen(&mut self, lateness: u64) {
        let want = u32::try_from(lateness).unwrap_or(u32::MAX);
        if want > self.stretch {
            let more = (want - self.stretch).min(self.max_added - self.added);
            self.stretch += more;
            self.added += more;
        }
        self.shrink = false;
        self.window = 0;
        self.min_slack = u64::MAX;
    }

    /// A packet arrived `slack` frames before its turn; after a whole window in which
    /// every packet had a frame to spare, one frame goes if any was added or if every
    /// packet waited longer than the delay asks for.
    fn observe_slack(&mut self, slack: u64) {
        self.min_slack = self.min_slack.min(slack);
        self.window += 1;
        if self.window >= RELEASE_WINDOW {
            let excess = self.min_slack > u64::from(self.delay_frames());
            if (self.added > 0 || excess) && self.stretch == 0 && self.min_slack >= 1 {
                self.shrink = true;
            }
            self.window = 0;
            self.min_slack = u64::MAX;
        }
    }

    /// Retries held packets (their keys may have arrived); drops those held too long.
    fn retry_held(&mut self, media: &mut MediaSession, now: Instant) {
        for _ in 0..self.held.len() {
            let Some((since, packet)) = self.held.pop_front() else {
                break;
            };
            self.scratch.clear();
            match media.open(&packet, &mut self.scratch, now) {
                Ok(received) => self.store(&received, now, false),
                Err(KeyError::EpochNotYetKnown { .. }) => {
                    if now.saturating_duration_since(since) > HOLD_LIMIT {
                        self.stats.late += 1;
                    } else {
                        self.held.push_back((since, packet));
                    }
                }
                Err(e) => self.count_refusal(e),
            }
        }
    }

    /// The earliest queued position.
    fn earliest(&self) -> Option<Position> {
        self.slots.iter().filter_map(|s| s.pos).min()
    }

    /// The position to play now, starting playback once the playout delay has passed.
    ///
    /// Within an epoch a missing counter is a lost packet. When nothing of the playing
    /// epoch is queued past it but a newer epoch's packets are, the sender has switched
    /// keys: playback moves on to the newer epoch's first packet (the old epoch's last
    /// packets, if lost, leave no gap to conceal).
    fn start(&mut self, now: Instant) -> Option<Position> {
        let ended = self
            .last_arrival
            .is_some_and(|t| now.saturating_duration_since(t) > STREAM_END);
        if ended && self.slots.iter().all(|s| s.pos.is_none()) {
            self.reset();
            return None;
        }
        match self.next {
            None => {
                let first = self.first_arrival?;
                if now.saturating_duration_since(first) < self.playout_delay() {
                    return None;
                }
                self.next = self.earliest();
                self.skip_stale();
            }
            Some(next) => {
                let queued = |s: &Slot| s.pos.is_some_and(|p| p >= next);
                let same_epoch_ahead = self
                    .slots
                    .iter()
                    .any(|s| queued(s) && s.pos.is_some_and(|p| p.0 == next.0));
                if !same_epoch_ahead {
                    if let Some(newer) = self.earliest().filter(|p| p.0 > next.0) {
                        self.next = Some(newer);
                    }
                }
            }
        }
        self.next
    }

    /// Playback starts on a burst (packets held, then released at once, in one epoch or
    /// across an epoch change): it starts at the oldest of the newest (playout delay + 1)
    /// queued packets, as if they had come at the pace they were sent; the older ones are
    /// dropped ([`ReceiverStats::stale_skipped`]). Started on packets that came at their
    /// pace, nothing is skipped.
    fn skip_stale(&mut self) {
        let keep = usize::try_from(self.delay_frames())
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let newer = |p: Position| self.slots.iter().filter(|s| s.pos >= Some(p)).count();
        // The newest queued position with `keep` queued at or after it (64 slots: no
        // allocation, at most 64 × 64 comparisons once per start).
        let from = self
            .slots
            .iter()
            .filter_map(|s| s.pos)
            .filter(|p| newer(*p) >= keep)
            .max();
        let Some(from) = from.filter(|f| self.next.is_some_and(|n| *f > n)) else {
            return;
        };
        for slot in &mut self.slots {
            if slot.pos.is_some_and(|p| p < from) {
                slot.pos = None;
                self.stats.stale_skipped += 1;
            }
        }
        self.next = Some(from);
    }

    fn packet(slots: &[Slot], pos: Position) -> Option<&[u8]> {
        slots
            .iter()
            .find(|s| s.pos == Some(pos))
            .map(|s| s.data.as_slice())
    }

    /// Decodes the frame due now into `out` (exactly one frame, interleaved).
    fn pull(
        &mut self,
        media: &mut MediaSession,
        mut out: Pcm<'_>,
        now: Instant,
    ) -> Result<Pulled, AudioError> {
        let expected = self.config.frame_samples();
        if out.len() != expected {
            return Err(AudioError::FrameSize {
                expected,
                got: out.len(),
            });
        }
        self.retry_held(media, now);
        let Some(mut pos) = self.start(now) else {
            out.silence();
            return Ok(Pulled::Idle);
        };
        if self.stretch > 0 {
            // Deepen the delay: conceal a frame and play the due one at the next pull.
            self.stretch -= 1;
            out.decode(&mut self.decoder, &[], false)?;
            self.stats.delay_inserted += 1;
            return Ok(Pulled::Concealed);
        }
        let mut following = pos.1.checked_add(1).map(|c| (pos.0, c));
        if self.shrink {
            if let (Some(packet), Some(f)) = (
                Self::packet(&self.slots, pos),
                following.filter(|f| Self::packet(&self.slots, *f).is_some()),
            ) {
                // Take a frame of delay back: decode the due frame (the decoder's state
                // stays continuous), drop it, and play the one after it now.
                if out.decode(&mut self.decoder, packet, false).is_err() {
                    self.stats.undecodable += 1;
                }
                self.free(pos);
                self.shrink = false;
                self.added = self.added.saturating_sub(1);
                self.stats.delay_removed += 1;
                pos = f;
                following = pos.1.checked_add(1).map(|c| (pos.0, c));
            }
        }
        self.next = following;
        let own = Self::packet(&self.slots, pos);
        let next = following.and_then(|f| Self::packet(&self.slots, f));
        let decoded = match (own, next) {
            (Some(packet), _) => Some((out.decode(&mut self.decoder, packet, false), false)),
            (None, Some(packet)) if self.config.fec => {
                Some((out.decode(&mut self.decoder, packet, true), true))
            }
            _ => None,
        };
        let pulled = match decoded {
            Some((Ok(()), false)) => {
                self.stats.decoded += 1;
                Pulled::Decoded
            }
            Some((Ok(()), true)) => {
                self.stats.fec_recovered += 1;
                Pulled::FecRecovered
            }
            outcome => {
                // Lost, or authenticated but not decodable here: conceal either way.
                if outcome.is_some() {
                    self.stats.undecodable += 1;
                }
                out.decode(&mut self.decoder, &[], false)?;
                self.stats.concealed += 1;
                Pulled::Concealed
            }
        };
        self.free(pos);
        Ok(pulled)
    }

    fn free(&mut self, pos: Position) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.pos == Some(pos)) {
            slot.pos = None;
        }
    }

    /// Writes the next frame of interleaved `i16` PCM into `out` (one frame exactly).
    pub fn pull_i16(
        &mut self,
        media: &mut MediaSession,
        out: &mut [i16],
        now: Instant,
    ) -> Result<Pulled, AudioError> {
        self.pull(media, Pcm::I16(out), now)
    }

    /// Writes the next frame of interleaved `f32` PCM into `out` (one frame exactly).
    pub fn pull_f32(
        &mut self,
        media: &mut MediaSession,
        out: &mut [f32],
        now: Instant,
    ) -> Result<Pulled, AudioError> {
        self.pull(media, Pcm::F32(out), now)
    }
}

/// A caller's PCM output buffer.
enum Pcm<'a> {
    I16(&'a mut [i16]),
    F32(&'a mut [f32]),
}

impl Pcm<'_> {
    fn len(&self) -> usize {
        match self {
            Pcm::I16(b) => b.len(),
            Pcm::F32(b) => b.len(),
        }
    }

    fn silence(&mut self) {
        match self {
            Pcm::I16(b) => b.fill(0),
            Pcm::F32(b) => b.fill(0.0),
        }
    }

    /// Decodes `packet` (empty: conceal) into the buffer.
    fn decode(
        &mut self,
        decoder: &mut opus::Decoder,
        packet: &[u8],
        fec: bool,
    ) -> Result<(), AudioError> {
        match self {
            Pcm::I16(b) => decoder.decode(packet, b, fec)?,
            Pcm::F32(b) => decoder.decode_float(packet, b, fec)?,
        };
        Ok(())
    }
}

impl std::fmt::Debug for AudioReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioReceiver")
            .field("next", &self.next)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
