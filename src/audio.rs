//! The Opus pipeline (feature `opus`, on by default): PCM → Opus → sealed packet, and
//! sealed packets → PCM with loss concealment.
//!
//! Defaults hide speaking activity from the relay: one packet every frame interval whether
//! anyone speaks or not, constant bitrate (every packet the same size), no DTX. In-band FEC is
//! on, so a lost packet is usually rebuilt from the next one; otherwise Opus' packet-loss
//! concealment fills the gap.
//!
//! An [`AudioReceiver`] per remote sender orders packets by their SFrame counter (which a
//! [`MediaSession`] keeps running across epochs), holds packets of an epoch whose keys have
//! not arrived yet (at most [`HOLD_LIMIT`]), and treats packets that fail authentication or
//! are replayed as lost: they are concealed, never decoded.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::keys::KeyError;
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
    /// Frames a receiver buffers before it starts playing (jitter and FEC look-ahead).
    /// Default 2.
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
    opus: Vec<u8>,
    opus_len: usize,
    out: BytesMut,
}

impl AudioSender {
    /// An encoder for `config`.
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
            opus: vec![0; MAX_OPUS],
            opus_len: 0,
            out: BytesMut::new(),
        })
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
        media.seal(payload, &mut self.out, now)?;
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
    /// Packets held because their epoch's keys had not arrived.
    pub held: u64,
    /// Packets refused for another reason (malformed, unknown sender, expired epoch).
    pub rejected: u64,
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
    /// Concealed (packet lost, late, or refused).
    Concealed,
}

struct Slot {
    seq: Option<u64>,
    data: Vec<u8>,
}

/// Sealed packets of one remote sender → PCM, one frame per [`pull`](Self::pull_i16).
pub struct AudioReceiver {
    decoder: opus::Decoder,
    config: AudioConfig,
    slots: Vec<Slot>,
    /// Next sequence (SFrame counter) to play, once playing.
    next: Option<u64>,
    /// When the first packet arrived (playback starts a playout delay later).
    first_arrival: Option<Instant>,
    /// When the newest packet arrived (a stream silent for [`STREAM_END`] has ended).
    last_arrival: Option<Instant>,
    /// Epoch of the newest packet opened.
    last_epoch: u64,
    held: VecDeque<(Instant, Bytes)>,
    scratch: BytesMut,
    stats: ReceiverStats,
}

impl AudioReceiver {
    /// A decoder for `config` (the sender's channels and frame duration).
    pub fn new(config: &AudioConfig) -> Result<AudioReceiver, AudioError> {
        config.validate()?;
        let decoder = opus::Decoder::new(SAMPLE_RATE, config.channels.opus())?;
        Ok(AudioReceiver {
            decoder,
            config: config.clone(),
            slots: (0..QUEUE)
                .map(|_| Slot {
                    seq: None,
                    data: Vec::with_capacity(MAX_OPUS),
                })
                .collect(),
            next: None,
            first_arrival: None,
            last_arrival: None,
            last_epoch: 0,
            held: VecDeque::with_capacity(MAX_HELD),
            scratch: BytesMut::with_capacity(MAX_OPUS + 64),
            stats: ReceiverStats::default(),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    fn slot_of(seq: u64) -> usize {
        usize::try_from(seq % QUEUE as u64).unwrap_or(0)
    }

    /// Takes one sealed packet from the network.
    pub fn push(&mut self, packet: &[u8], media: &mut MediaSession, now: Instant) {
        self.scratch.clear();
        match media.open(packet, &mut self.scratch, now) {
            Ok(received) => self.store(received.ctr, received.epoch, now),
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
            KeyError::Frame(crate::frame::FrameError::AuthenticationFailed) => {
                self.stats.auth_failures += 1
            }
            KeyError::Frame(
                crate::frame::FrameError::Replayed | crate::frame::FrameError::TooOld,
            ) => self.stats.replays += 1,
            _ => self.stats.rejected += 1,
        }
    }

    /// Puts the opened Opus packet (in `scratch`) into the reorder queue.
    fn store(&mut self, seq: u64, epoch: u64, now: Instant) {
        if let Some(next) = self.next {
            if seq < next {
                // A sender that restarted (new epoch, counter from 0) starts a new stream.
                if epoch > self.last_epoch && next - seq > QUEUE as u64 {
                    self.reset();
                } else {
                    self.stats.late += 1;
                    return;
                }
            } else if seq - next >= QUEUE as u64 {
                // Far ahead of playback (a long gap): restart the stream there.
                self.reset();
            }
        }
        self.last_epoch = self.last_epoch.max(epoch);
        self.last_arrival = Some(now);
        if self.first_arrival.is_none() {
            self.first_arrival = Some(now);
        }
        if let Some(slot) = self.slots.get_mut(Self::slot_of(seq)) {
            slot.seq = Some(seq);
            slot.data.clear();
            slot.data.extend_from_slice(&self.scratch);
        }
    }

    fn reset(&mut self) {
        self.next = None;
        self.first_arrival = None;
        self.last_arrival = None;
        for slot in &mut self.slots {
            slot.seq = None;
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
                Ok(received) => self.store(received.ctr, received.epoch, now),
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

    /// The sequence to play now, starting playback once the playout delay has passed.
    fn start(&mut self, now: Instant) -> Option<u64> {
        let ended = self
            .last_arrival
            .is_some_and(|t| now.saturating_duration_since(t) > STREAM_END);
        if ended && self.slots.iter().all(|s| s.seq.is_none()) {
            self.reset();
            return None;
        }
        if self.next.is_none() {
            let first = self.first_arrival?;
            let delay = self.config.frame_duration() * self.config.playout_delay_frames;
            if now.saturating_duration_since(first) < delay {
                return None;
            }
            self.next = self.slots.iter().filter_map(|s| s.seq).min();
        }
        self.next
    }

    fn packet(slots: &[Slot], seq: u64) -> Option<&[u8]> {
        slots
            .get(Self::slot_of(seq))
            .filter(|s| s.seq == Some(seq))
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
        let Some(seq) = self.start(now) else {
            out.silence();
            return Ok(Pulled::Idle);
        };
        self.next = seq.checked_add(1);
        let pulled = if let Some(packet) = Self::packet(&self.slots, seq) {
            out.decode(&mut self.decoder, packet, false)?;
            self.stats.decoded += 1;
            Pulled::Decoded
        } else {
            let next = seq
                .checked_add(1)
                .and_then(|n| Self::packet(&self.slots, n));
            match next {
                Some(packet) if self.config.fec => {
                    out.decode(&mut self.decoder, packet, true)?;
                    self.stats.fec_recovered += 1;
                    Pulled::FecRecovered
                }
                _ => {
                    out.decode(&mut self.decoder, &[], false)?;
                    self.stats.concealed += 1;
                    Pulled::Concealed
                }
            }
        };
        if let Some(slot) = self.slots.get_mut(Self::slot_of(seq)) {
            if slot.seq == Some(seq) {
                slot.seq = None;
            }
        }
        Ok(pulled)
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
