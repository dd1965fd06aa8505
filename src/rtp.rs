//! RTP mapping of sealed Opus frames (RFC 3550), without I/O.
//!
//! How a sealed Opus packet travels as the payload of an RTP packet through an SFU that
//! forwards RTP (Janus, LiveKit, mediasoup, Jitsi), and back:
//!
//! - [`PayloadMode::Sframe`] (the default, what SFUs and browsers' encoded transforms
//!   expect today): the SFrame frame of the whole Opus packet is the payload of the
//!   ordinary Opus payload type. One Opus packet per RTP packet, so no fragmentation.
//! - [`PayloadMode::ClearToc`]: the Opus TOC byte goes first, in the clear, then the SFrame
//!   frame of the rest of the packet, sealed with the TOC bound as SFrame metadata (RFC 9605
//!   §4.4.3), so the SFU can read it but nobody can change it. For SFUs that read the TOC
//!   (to tell frame sizes, or DTX). What the TOC reveals: the Opus mode (SILK, CELT,
//!   hybrid), audio bandwidth, frame duration and frame count. With sotto's defaults
//!   (constant bit rate, fixed 20 ms frames, no DTX) the encoder picks one configuration for
//!   a call and keeps it, so the byte stays the same from the first packet to the last:
//!   it tells the SFU nothing that changes while someone speaks. An app that lets Opus
//!   switch modes (VBR, DTX, bandwidth changes) leaks those switches.
//!
//! Both modes need nothing from the SFU but forwarding; which one a call uses is the app's
//! choice, the same for every member.
//!
//! **Header extensions.** sotto writes none ([`write_packet`]). The audio-level extension
//! (RFC 6464) above all is never sent: it would tell the SFU who speaks, and when. A
//! WebRTC stack under sotto adds what it needs for transport (the `mid` extension that
//! binds a stream to its SDP section, and transport-wide congestion-control sequence
//! numbers); none of them says anything about the audio.
//!
//! **Receiving** ([`RtpReceiver`]): packets are parsed strictly (version 2, lengths,
//! padding), CSRCs and header extensions are skipped, duplicates (the same sequence number
//! again, within a window of 64 per SSRC) are refused, and RED (RFC 2198) packets are
//! unwrapped to their primary Opus block; anything else is a typed [`RtpError`], never a
//! panic.

use std::time::Instant;

use bytes::BytesMut;

use crate::keys::{KeyError, Received, StreamId};
use crate::media::MediaSession;

/// The RTP clock rate of Opus (RFC 7587): 48 kHz, whatever the sampling rate.
pub const OPUS_CLOCK_RATE: u32 = 48_000;

/// The fixed RTP header: 12 bytes.
pub const HEADER_LEN: usize = 12;

/// How sealed Opus packets map to RTP payloads (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PayloadMode {
    /// The SFrame frame of the whole Opus packet is the payload.
    #[default]
    Sframe,
    /// The Opus TOC byte in the clear (bound as SFrame metadata), then the SFrame frame of
    /// the rest of the Opus packet.
    ClearToc,
    /// The SFrame RTP payload format of draft-ietf-avtcore-rtp-sframe-02 (January 2026),
    /// per-packet mode: a one-byte descriptor (`S E T` bits set, [`DRAFT_DESCRIPTOR`]), then
    /// the SFrame frame of the Opus packet. For peers that negotiated it with `a=sframe`
    /// ([`sdp_add_sframe`], [`sdp_has_sframe`]); an SFU that does not understand the
    /// attribute (Janus 1.1 drops it) forwards it all the same. Fragmented frames (per-frame
    /// mode) go through a [`DraftReassembler`] first.
    #[cfg(feature = "rtp-sframe")]
    Draft,
}

/// The draft's payload descriptor of an unfragmented per-packet SFrame payload: S (first
/// fragment), E (last fragment) and T (packetized media) set, the reserved bits zero.
#[cfg(feature = "rtp-sframe")]
pub const DRAFT_DESCRIPTOR: u8 = 0xe0;

/// Why an RTP packet or payload was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Shorter than its headers say.
    #[error("truncated RTP packet")]
    Truncated,
    /// Not RTP version 2.
    #[error("RTP version {0}, expected 2")]
    Version(u8),
    /// The padding count is zero or longer than the payload.
    #[error("bad RTP padding")]
    Padding,
    /// A payload type this receiver does not take (after unwrapping RED).
    #[error("unexpected payload type {0}")]
    PayloadType(u8),
    /// A sequence number already received (or too old to tell) on this SSRC.
    #[error("duplicate RTP packet (sequence {0})")]
    Duplicate(u16),
    /// A RED packet whose block headers do not add up, or without a primary block.
    #[error("malformed RED payload")]
    Red,
    /// An empty payload (nothing to open), or an Opus packet without its TOC byte.
    #[error("empty payload")]
    Empty,
    /// More SSRCs than the receiver tracks at once.
    #[error("too many RTP streams")]
    TooManyStreams,
    /// A payload or packet larger than RTP can carry here.
    #[error("payload too large")]
    TooLarge,
    /// A draft SFrame payload whose descriptor is not one unfragmented per-packet payload
    /// (fragments go through a [`DraftReassembler`]; per-frame mode is not Opus's).
    #[cfg(feature = "rtp-sframe")]
    #[error("SFrame payload descriptor {0:#04x} not supported here")]
    Descriptor(u8),
    /// The SFrame layer refused the frame (or had no key to seal with).
    #[error("frame: {0}")]
    Key(#[from] KeyError),
}

/// The fields of an RTP header sotto reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtpHeader {
    /// The marker bit (for audio: the first packet after silence; sotto sends no silence
    /// gaps, so it sets it only on a stream's first packet).
    pub marker: bool,
    /// 7-bit payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp, in [`OPUS_CLOCK_RATE`] units.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
}

/// A parsed RTP packet: its header and payload (CSRCs, header extension and padding
/// stripped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The header.
    pub header: RtpHeader,
    /// The payload, without padding.
    pub payload: &'a [u8],
    /// Whether the packet carried a header extension (skipped).
    pub extension: bool,
    /// Padding bytes stripped.
    pub padding: usize,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, RtpError> {
    let s = b.get(at..at + 2).and_then(|s| s.try_into().ok());
    Ok(u16::from_be_bytes(s.ok_or(RtpError::Truncated)?))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, RtpError> {
    let s = b.get(at..at + 4).and_then(|s| s.try_into().ok());
    Ok(u32::from_be_bytes(s.ok_or(RtpError::Truncated)?))
}

impl<'a> RtpPacket<'a> {
    /// Parses one RTP packet (RFC 3550 §5.1).
    pub fn parse(bytes: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        let first = *bytes.first().ok_or(RtpError::Truncated)?;
        let version = first >> 6;
        if version != 2 {
            return Err(RtpError::Version(version));
        }
        if bytes.len() < HEADER_LEN {
            return Err(RtpError::Truncated);
        }
        let padded = first & 0x20 != 0;
        let extension = first & 0x10 != 0;
        let csrcs = usize::from(first & 0x0f);
        let second = *bytes.get(1).ok_or(RtpError::Truncated)?;
        let header = RtpHeader {
            marker: second & 0x80 != 0,
            payload_type: second & 0x7f,
            sequence: u16_at(bytes, 2)?,
            timestamp: u32_at(bytes, 4)?,
            ssrc: u32_at(bytes, 8)?,
        };
        let mut at = HEADER_LEN + 4 * csrcs;
        if extension {
            // Profile-specific id (2 bytes), then the length in 32-bit words.
            let words = usize::from(u16_at(bytes, at + 2)?);
            at += 4 + 4 * words;
        }
        let mut end = bytes.len();
        if at > end {
            return Err(RtpError::Truncated);
        }
        let mut padding = 0;
        if padded {
            padding = usize::from(*bytes.last().ok_or(RtpError::Truncated)?);
            if padding == 0 || padding > end - at {
                return Err(RtpError::Padding);
            }
            end -= padding;
        }
        Ok(RtpPacket {
            header,
            payload: bytes.get(at..end).ok_or(RtpError::Truncated)?,
            extension,
            padding,
        })
    }
}

/// Appends an RTP packet (12-byte header, no CSRC, no extension, no padding) carrying
/// `payload` to `out`; returns its length.
pub fn write_packet(header: &RtpHeader, payload: &[u8], out: &mut BytesMut) -> usize {
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&[
        0x80,
        (u8::from(header.marker) << 7) | (header.payload_type & 0x7f),
    ]);
    out.extend_from_slice(&header.sequence.to_be_bytes());
    out.extend_from_slice(&header.timestamp.to_be_bytes());
    out.extend_from_slice(&header.ssrc.to_be_bytes());
    out.extend_from_slice(payload);
    HEADER_LEN + payload.len()
}

/// Seals one Opus packet with this member's current microphone key and appends the RTP payload of
/// `mode` to `out`; returns its length.
pub fn seal_payload(
    mode: PayloadMode,
    media: &mut MediaSession,
    opus: &[u8],
    out: &mut BytesMut,
    now: Instant,
) -> Result<usize, RtpError> {
    match mode {
        PayloadMode::Sframe => Ok(media.seal(StreamId::MICROPHONE, opus, out, now)?),
        #[cfg(feature = "rtp-sframe")]
        PayloadMode::Draft => {
            let start = out.len();
            out.extend_from_slice(&[DRAFT_DESCRIPTOR]);
            match media.seal(StreamId::MICROPHONE, opus, out, now) {
                Ok(n) => Ok(n + 1),
                Err(e) => {
                    out.truncate(start);
                    Err(e.into())
                }
            }
        }
        PayloadMode::ClearToc => {
            let (toc, rest) = opus.split_first().ok_or(RtpError::Empty)?;
            let start = out.len();
            out.extend_from_slice(&[*toc]);
            match media.seal_bound(
                StreamId::MICROPHONE,
                std::slice::from_ref(toc),
                rest,
                out,
                now,
            ) {
                Ok(n) => Ok(n + 1),
                Err(e) => {
                    out.truncate(start);
                    Err(e.into())
                }
            }
        }
    }
}

/// Opens the RTP payload of `mode` from another member and appends the whole Opus packet
/// to `out`. On error nothing is appended.
pub fn open_payload(
    mode: PayloadMode,
    media: &mut MediaSession,
    payload: &[u8],
    out: &mut BytesMut,
    now: Instant,
) -> Result<Received, RtpError> {
    match mode {
        PayloadMode::Sframe => Ok(media.open(payload, out, now)?),
        #[cfg(feature = "rtp-sframe")]
        PayloadMode::Draft => {
            let (descriptor, frame) = payload.split_first().ok_or(RtpError::Empty)?;
            // S, E and T set; reserved bits are ignored on receipt.
            if descriptor & DRAFT_DESCRIPTOR != DRAFT_DESCRIPTOR {
                return Err(RtpError::Descriptor(*descriptor));
            }
            Ok(media.open(frame, out, now)?)
        }
        PayloadMode::ClearToc => {
            let (toc, frame) = payload.split_first().ok_or(RtpError::Empty)?;
            let start = out.len();
            out.extend_from_slice(&[*toc]);
            match media.open_bound(std::slice::from_ref(toc), frame, out, now) {
                Ok(mut received) => {
                    received.len += 1;
                    Ok(received)
                }
                Err(e) => {
                    out.truncate(start);
                    Err(e.into())
                }
            }
        }
    }
}

/// Duplicate detection of one SSRC: the highest extended sequence number seen and a
/// bitmap of the 64 before it.
#[derive(Clone, Copy, Debug)]
struct Stream {
    ssrc: u32,
    highest: u64,
    seen: u64,
}

/// SSRCs tracked at once by an [`RtpReceiver`].
const MAX_STREAMS: usize = 256;

/// A received packet's payload, ready for [`open_payload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Depacketized<'a> {
    /// The packet's header (for RED: the payload type of the primary block).
    pub header: RtpHeader,
    /// The sealed payload.
    pub payload: &'a [u8],
}

/// The receive side of the mapping: parses packets, unwraps RED, refuses other payload
/// types and duplicates. Bounded: at most 256 SSRCs at once (RTP streams of an SFU's
/// subscription; beyond, [`RtpError::TooManyStreams`] until [`forget`](Self::forget)).
#[derive(Clone, Debug)]
pub struct RtpReceiver {
    opus: u8,
    red: Option<u8>,
    streams: Vec<Stream>,
}

impl RtpReceiver {
    /// A receiver of the Opus payload type `opus`, and of RED (RFC 2198) under `red` if the
    /// session negotiated it.
    pub fn new(opus: u8, red: Option<u8>) -> RtpReceiver {
        RtpReceiver {
            opus: opus & 0x7f,
            red: red.map(|pt| pt & 0x7f),
            streams: Vec::new(),
        }
    }

    /// Stops tracking `ssrc` (its sender left).
    pub fn forget(&mut self, ssrc: u32) {
        self.streams.retain(|s| s.ssrc != ssrc);
    }

    /// Takes one RTP packet: the sealed payload it carries, or why not. A refused packet
    /// changes nothing (a duplicate is recorded only when accepted).
    pub fn receive<'a>(&mut self, packet: &'a [u8]) -> Result<Depacketized<'a>, RtpError> {
        let parsed = RtpPacket::parse(packet)?;
        let mut header = parsed.header;
        let payload = if Some(header.payload_type) == self.red {
            let (pt, block) = red_primary(parsed.payload)?;
            header.payload_type = pt;
            block
        } else {
            parsed.payload
        };
        if header.payload_type != self.opus {
            return Err(RtpError::PayloadType(header.payload_type));
        }
        if payload.is_empty() {
            return Err(RtpError::Empty);
        }
        self.admit(header.ssrc, header.sequence)?;
        Ok(Depacketized { header, payload })
    }

    /// Records `sequence` on `ssrc` unless it is a duplicate.
    fn admit(&mut self, ssrc: u32, sequence: u16) -> Result<(), RtpError> {
        let Some(stream) = self.streams.iter_mut().find(|s| s.ssrc == ssrc) else {
            if self.streams.len() >= MAX_STREAMS {
                return Err(RtpError::TooManyStreams);
            }
            self.streams.push(Stream {
                ssrc,
                // Start in the middle of the extended range, so wrapping either way works.
                highest: (1 << 32) | u64::from(sequence),
                seen: 1,
            });
            return Ok(());
        };
        // Extend the 16-bit number to the one closest to the highest seen.
        let delta = i64::from(sequence.wrapping_sub(stream.highest as u16) as i16);
        let extended = stream.highest.wrapping_add_signed(delta);
        if delta > 0 {
            let shift = u32::try_from(delta).unwrap_or(64);
            stream.seen = if shift >= 64 {
                1
            } else {
                (stream.seen << shift) | 1
            };
            stream.highest = extended;
            return Ok(());
        }
        let back = stream.highest - extended;
        if back >= 64 {
            return Err(RtpError::Duplicate(sequence));
        }
        let bit = 1u64 << back;
        if stream.seen & bit != 0 {
            return Err(RtpError::Duplicate(sequence));
        }
        stream.seen |= bit;
        Ok(())
    }
}

/// The primary (last) block of a RED payload (RFC 2198 §3) and its payload type.
/// Redundant blocks are skipped: Opus's in-band FEC already covers a single loss.
fn red_primary(payload: &[u8]) -> Result<(u8, &[u8]), RtpError> {
    let mut at = 0;
    let mut redundant = 0usize;
    loop {
        let b = *payload.get(at).ok_or(RtpError::Red)?;
        if b & 0x80 == 0 {
            // The last header: 1 byte, the primary block's payload type.
            let start = at + 1 + redundant;
            let block = payload.get(start..).ok_or(RtpError::Red)?;
            return Ok((b & 0x7f, block));
        }
        // F=1: PT (7), timestamp offset (14), block length (10).
        let len = usize::from(u16_at(payload, at + 2).map_err(|_| RtpError::Red)? & 0x03ff);
        redundant += len;
        at += 4;
    }
}

/// Fragments of one SFrame frame at most (draft per-frame mode), and bytes.
#[cfg(feature = "rtp-sframe")]
const MAX_FRAGMENTS: usize = 64;
#[cfg(feature = "rtp-sframe")]
const MAX_FRAME_BYTES: usize = 64 << 10;

/// Joins the fragments of a draft SFrame payload (descriptor S on the first, E on the
/// last, consecutive sequence numbers) into one payload with a per-packet descriptor, for
/// [`open_payload`] in [`PayloadMode::Draft`]. Bounded: at most 64 fragments and 64 KiB
/// per frame; a gap, a new start or an overflow drops what was gathered.
#[cfg(feature = "rtp-sframe")]
#[derive(Clone, Debug, Default)]
pub struct DraftReassembler {
    frame: Vec<u8>,
    next: Option<u16>,
    fragments: usize,
    /// Frames dropped incomplete.
    pub dropped: u64,
}

#[cfg(feature = "rtp-sframe")]
impl DraftReassembler {
    /// A reassembler with nothing gathered.
    pub fn new() -> DraftReassembler {
        DraftReassembler::default()
    }

    /// Takes the payload of the packet numbered `sequence`; returns a whole payload (the
    /// descriptor [`DRAFT_DESCRIPTOR`], then the frame) once its last fragment arrived.
    pub fn push(&mut self, sequence: u16, payload: &[u8]) -> Result<Option<Vec<u8>>, RtpError> {
        let (descriptor, body) = payload.split_first().ok_or(RtpError::Empty)?;
        let (first, last) = (descriptor & 0x80 != 0, descriptor & 0x40 != 0);
        if first {
            if self.next.is_some() {
                self.dropped += 1;
            }
            self.frame.clear();
            self.frame.push(DRAFT_DESCRIPTOR);
            self.fragments = 0;
        } else if self.next != Some(sequence) {
            if self.next.is_some() {
                self.dropped += 1;
            }
            self.next = None;
            return Err(RtpError::Descriptor(*descriptor));
        }
        self.fragments += 1;
        if self.fragments > MAX_FRAGMENTS || self.frame.len() + body.len() > MAX_FRAME_BYTES {
            self.dropped += 1;
            self.next = None;
            return Err(RtpError::TooLarge);
        }
        self.frame.extend_from_slice(body);
        if last {
            self.next = None;
            return Ok(Some(std::mem::take(&mut self.frame)));
        }
        self.next = Some(sequence.wrapping_add(1));
        Ok(None)
    }
}

/// `sdp` with `a=sframe` (draft-ietf-avtcore-rtp-sframe-02: "this endpoint expects SFrame
/// RTP payloads on this m-section") added to every audio m-section that lacks it.
#[cfg(feature = "rtp-sframe")]
pub fn sdp_add_sframe(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 32);
    let mut in_audio = false;
    let mut marked = false;
    let mark = |out: &mut String, in_audio: bool, marked: &mut bool| {
        if in_audio && !*marked {
            out.push_str("a=sframe\r\n");
            *marked = true;
        }
    };
    for line in sdp.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed.starts_with("m=") {
            mark(&mut out, in_audio, &mut marked);
            in_audio = trimmed.starts_with("m=audio");
            marked = false;
        } else if trimmed == "a=sframe" {
            marked = true;
        }
        out.push_str(line);
    }
    mark(&mut out, in_audio, &mut marked);
    out
}

/// Whether every audio m-section of `sdp` carries `a=sframe` (and there is one).
#[cfg(feature = "rtp-sframe")]
pub fn sdp_has_sframe(sdp: &str) -> bool {
    let mut sections = 0;
    let mut marked = 0;
    let mut in_audio = false;
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            in_audio = line.starts_with("m=audio");
            sections += usize::from(in_audio);
        } else if in_audio && line == "a=sframe" {
            marked += 1;
            in_audio = false;
        }
    }
    sections > 0 && marked == sections
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(header: RtpHeader, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_packet(&header, payload, &mut out);
        out.to_vec()
    }

    #[test]
    fn a_packet_round_trips() {
        let h = RtpHeader {
            marker: true,
            payload_type: 111,
            sequence: 65_535,
            timestamp: 0xdead_beef,
            ssrc: 7,
        };
        let p = packet(h, b"sealed");
        let parsed = RtpPacket::parse(&p).unwrap();
        assert_eq!(parsed.header, h);
        assert_eq!(parsed.payload, b"sealed");
        assert!(!parsed.extension);
    }

    #[test]
    fn csrcs_extensions_and_padding_are_stripped() {
        let mut p = vec![0x80 | 0x20 | 0x10 | 2, 111];
        p.extend_from_slice(&[0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
        p.extend_from_slice(&[0xaa; 8]); // two CSRCs
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]); // one-word extension
        p.extend_from_slice(b"frame");
        p.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let parsed = RtpPacket::parse(&p).unwrap();
        assert_eq!(parsed.payload, b"frame");
        assert!(parsed.extension);
        assert_eq!(parsed.padding, 3);
        // Padding longer than the payload, or zero, is refused.
        let last = p.len() - 1;
        p[last] = 40;
        assert_eq!(RtpPacket::parse(&p), Err(RtpError::Padding));
        p[last] = 0;
        assert_eq!(RtpPacket::parse(&p), Err(RtpError::Padding));
        // Every cut is refused, never a panic.
        for cut in 0..HEADER_LEN + 8 + 8 {
            assert!(RtpPacket::parse(&p[..cut]).is_err());
        }
        assert_eq!(RtpPacket::parse(&[0x40; 20]), Err(RtpError::Version(1)));
    }

    #[test]
    fn duplicates_are_refused_across_wraparound() {
        let mut rx = RtpReceiver::new(111, None);
        let h = |sequence| RtpHeader {
            payload_type: 111,
            sequence,
            ssrc: 9,
            ..RtpHeader::default()
        };
        for seq in [65_530u16, 65_535, 0, 3, 65_534, 1] {
            assert!(rx.receive(&packet(h(seq), b"x")).is_ok(), "{seq}");
        }
        for seq in [65_530u16, 0, 3, 65_534] {
            assert_eq!(
                rx.receive(&packet(h(seq), b"x")),
                Err(RtpError::Duplicate(seq))
            );
        }
        // Too old to tell: refused.
        assert_eq!(
            rx.receive(&packet(h(65_000), b"x")),
            Err(RtpError::Duplicate(65_000))
        );
        // Another SSRC has its own window.
        let other = RtpHeader { ssrc: 10, ..h(3) };
        assert!(rx.receive(&packet(other, b"x")).is_ok());
        // Other payload types are refused without touching the window.
        let video = RtpHeader {
            payload_type: 96,
            ..h(4)
        };
        assert_eq!(
            rx.receive(&packet(video, b"x")),
            Err(RtpError::PayloadType(96))
        );
        assert!(rx.receive(&packet(h(4), b"x")).is_ok());
        assert_eq!(rx.receive(&packet(h(5), b"")), Err(RtpError::Empty));
    }

    #[test]
    fn red_is_unwrapped_to_its_primary_block() {
        let mut rx = RtpReceiver::new(111, Some(63));
        // One redundant block of 3 bytes (PT 111, offset 960), then the primary.
        let offset: u32 = 960;
        let word = (1u32 << 31) | (111 << 24) | (offset << 10) | 3;
        let mut red = word.to_be_bytes().to_vec();
        red.push(111);
        red.extend_from_slice(b"oldprimary");
        let h = RtpHeader {
            payload_type: 63,
            sequence: 1,
            ssrc: 1,
            ..RtpHeader::default()
        };
        let bytes = packet(h, &red);
        let got = rx.receive(&bytes).unwrap();
        assert_eq!(got.payload, b"primary");
        assert_eq!(got.header.payload_type, 111);
        // A block length beyond the payload, or no last header, is refused.
        let mut bad = ((1u32 << 31) | (111 << 24) | 1000).to_be_bytes().to_vec();
        bad.push(111);
        let h2 = RtpHeader { sequence: 2, ..h };
        assert_eq!(rx.receive(&packet(h2, &bad)), Err(RtpError::Red));
        assert_eq!(
            rx.receive(&packet(h2, &word.to_be_bytes())),
            Err(RtpError::Red)
        );
        // RED carrying another payload type is refused.
        let h3 = RtpHeader { sequence: 3, ..h };
        assert_eq!(
            rx.receive(&packet(h3, &[96, 1, 2])),
            Err(RtpError::PayloadType(96))
        );
        // Without RED negotiated, PT 63 is just another payload type.
        let mut plain = RtpReceiver::new(111, None);
        assert_eq!(
            plain.receive(&packet(h, &red)),
            Err(RtpError::PayloadType(63))
        );
    }

    #[cfg(feature = "rtp-sframe")]
    #[test]
    fn draft_fragments_join_and_sdp_marks_audio_only() {
        let mut r = DraftReassembler::new();
        assert_eq!(r.push(7, &[0xc0, 1, 2]), Ok(Some(vec![0xe0, 1, 2])));
        assert_eq!(r.push(65_535, &[0x80, 1]), Ok(None));
        assert_eq!(r.push(0, &[0x00, 2]), Ok(None));
        assert_eq!(r.push(1, &[0x40, 3]), Ok(Some(vec![0xe0, 1, 2, 3])));
        // A gap drops the frame.
        assert_eq!(r.push(5, &[0x80, 1]), Ok(None));
        assert!(r.push(7, &[0x40, 3]).is_err());
        assert_eq!(r.dropped, 1);
        // Too many fragments.
        assert_eq!(r.push(0, &[0x80]), Ok(None));
        let mut last = Ok(None);
        for seq in 1..=MAX_FRAGMENTS as u16 {
            last = r.push(seq, &[0x00, 9]);
            if last.is_err() {
                break;
            }
        }
        assert_eq!(last, Err(RtpError::TooLarge));

        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n";
        assert!(!sdp_has_sframe(sdp));
        let marked = sdp_add_sframe(sdp);
        assert!(sdp_has_sframe(&marked));
        assert_eq!(marked.matches("a=sframe").count(), 1);
        assert_eq!(sdp_add_sframe(&marked), marked, "idempotent");
        let (audio, data) = marked.split_at(marked.find("m=application").unwrap());
        assert!(audio.contains("a=sframe") && !data.contains("a=sframe"));
    }
}
