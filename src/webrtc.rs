//! A WebRTC peer connection (feature `webrtc`, on [`str0m`]) that carries sotto's sealed
//! Opus packets as RTP audio ([`crate::rtp`]) and opaque bytes (MLS handshake messages,
//! Welcomes) on a data channel, through an unmodified SFU such as a Janus VideoRoom.
//!
//! Sans-IO like the rest of sotto: no sockets, no clock. The app binds a UDP socket, hands
//! each received datagram to [`WebRtcPeer::handle_datagram`], sends what
//! [`WebRtcPeer::poll_transmit`] gives, calls [`WebRtcPeer::handle_timeout`] at
//! [`WebRtcPeer::poll_timeout`], and reads [`PeerEvent`]s. Signalling (exchanging SDP with
//! the SFU) is the app's: [`WebRtcPeer::offer`], [`WebRtcPeer::accept_answer`] and
//! [`WebRtcPeer::accept_offer`] give and take SDP strings.
//!
//! What the peer sends the SFU besides sealed payloads:
//! - **Candidates:** only the host address it was created with (no STUN, no TURN, no
//!   interface enumeration). [`candidate_addresses`] reads them back from an SDP, so an app
//!   (or a test) can check what either side offers.
//! - **Header extensions:** only `mid` (RFC 8843), which binds the stream to its SDP
//!   section. No audio level (RFC 6464: it would tell the SFU who speaks), no absolute send
//!   time, no transport-wide sequence numbers.
//! - **Codecs:** Opus only, without RED, as the ordinary Opus payload type.
//! - RTCP sender and receiver reports (counts, jitter, timing), as any WebRTC stack does.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// RTP time of one 20 ms Opus frame at 48 kHz.
const FRAME_TICKS: u64 = 960;
/// Data-channel label sotto opens.
const CHANNEL_LABEL: &str = "sotto";
/// Events and datagrams queued at most (beyond, the oldest events and the newest datagrams
/// are dropped).
const MAX_QUEUE: usize = 4096;

/// Why the peer refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebRtcError {
    /// The SDP did not parse, or str0m refused it.
    #[error("SDP: {0}")]
    Sdp(String),
    /// No offer of this peer is waiting for an answer.
    #[error("no pending offer")]
    NoPendingOffer,
    /// No audio section has been negotiated yet.
    #[error("no audio stream negotiated")]
    NoAudio,
    /// The data channel is not open yet.
    #[error("data channel not open")]
    NoChannel,
    /// The candidate address is not usable (str0m refuses link-local, multicast, ...).
    #[error("bad candidate address {0}")]
    Candidate(SocketAddr),
    /// str0m failed on input or output.
    #[error("webrtc: {0}")]
    Rtc(String),
}

fn rtc_error(e: impl std::fmt::Display) -> WebRtcError {
    WebRtcError::Rtc(e.to_string())
}

/// What happened on the peer connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// ICE, DTLS and SRTP are up: audio and data flow.
    Connected,
    /// A data channel opened (this peer's own, or one the SFU opened towards it).
    ChannelOpen,
    /// One RTP audio payload (a sealed frame, see [`crate::rtp::open_payload`]).
    Audio {
        /// The payload.
        payload: Vec<u8>,
        /// Its RTP timestamp (48 kHz).
        rtp_time: u64,
    },
    /// Bytes received on a data channel.
    Data(Vec<u8>),
    /// The connection closed or failed.
    Closed,
}

/// One WebRTC peer connection to an SFU (see the [module docs](self)).
pub struct WebRtcPeer {
    rtc: Rtc,
    local: SocketAddr,
    audio: Option<Mid>,
    channel: Option<ChannelId>,
    pending: Option<SdpPendingOffer>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<PeerEvent>,
    timeout: Option<Instant>,
    rtp_time: u64,
    failed: bool,
}

impl std::fmt::Debug for WebRtcPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcPeer")
            .field("local", &self.local)
            .field("connected", &self.rtc.is_connected())
            .field("audio", &self.audio.is_some())
            .field("channel", &self.channel.is_some())
            .finish()
    }
}

impl WebRtcPeer {
    /// A peer whose only candidate is the UDP address `local` the app bound.
    pub fn new(local: SocketAddr, now: Instant) -> Result<WebRtcPeer, WebRtcError> {
        let mut exts = ExtensionMap::empty();
        exts.set(4, Extension::RtpMid);
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .set_extension_map(exts)
            .build(now);
        let candidate =
            Candidate::host(local, Protocol::Udp).map_err(|_| WebRtcError::Candidate(local))?;
        if rtc.add_local_candidate(candidate).is_none() {
            return Err(WebRtcError::Candidate(local));
        }
        let mut peer = WebRtcPeer {
            rtc,
            local,
            audio: None,
            channel: None,
            pending: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timeout: None,
            rtp_time: 0,
            failed: false,
        };
        peer.drain();
        Ok(peer)
    }

    /// An SDP offer of one audio section (sending, receiving or both) and, if `data`, a
    /// data channel; the answer goes to [`accept_answer`](Self::accept_answer).
    pub fn offer(&mut self, direction: Direction, data: bool) -> Result<String, WebRtcError> {
        let mut api = self.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, direction, None, None, None);
        let channel = data.then(|| api.add_channel(CHANNEL_LABEL.into()));
        let (offer, pending) = api.apply().ok_or(WebRtcError::NoPendingOffer)?;
        self.audio = Some(mid);
        if channel.is_some() {
            self.channel = channel;
        }
        self.pending = Some(pending);
        self.drain();
        Ok(offer.to_sdp_string())
    }

    /// Takes the answer to this peer's [`offer`](Self::offer).
    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), WebRtcError> {
        let pending = self.pending.take().ok_or(WebRtcError::NoPendingOffer)?;
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| WebRtcError::Sdp(e.to_string()))?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| WebRtcError::Sdp(e.to_string()))?;
        self.drain();
        Ok(())
    }

    /// Takes an offer (an SFU offering the streams this peer subscribed to) and gives the
    /// answer.
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, WebRtcError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| WebRtcError::Sdp(e.to_string()))?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WebRtcError::Sdp(e.to_string()))?;
        self.drain();
        Ok(answer.to_sdp_string())
    }

    /// Opens this peer's data channel on a connection whose SDP already has a data section
    /// (an SFU relays data to a subscriber only once the subscriber opened a channel).
    pub fn open_channel(&mut self) {
        if self.channel.is_none() {
            let mut api = self.rtc.sdp_api();
            self.channel = Some(api.add_channel(CHANNEL_LABEL.into()));
            // A data section exists: nothing to negotiate.
            let _ = api.apply();
            self.drain();
        }
    }

    /// Whether ICE, DTLS and SRTP are up.
    pub fn is_connected(&self) -> bool {
        self.rtc.is_connected()
    }

    /// The UDP address this peer offers.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Takes one UDP datagram received on the app's socket from `source`.
    pub fn handle_datagram(
        &mut self,
        source: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<(), WebRtcError> {
        let receive = Receive::new(Protocol::Udp, source, self.local, datagram)
            .map_err(|e| WebRtcError::Rtc(format!("{e:?}")))?;
        let result = self
            .rtc
            .handle_input(Input::Receive(now, receive))
            .map_err(rtc_error);
        self.drain();
        result
    }

    /// Advances timers to `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), WebRtcError> {
        let result = self
            .rtc
            .handle_input(Input::Timeout(now))
            .map_err(rtc_error);
        self.drain();
        result
    }

    /// The next datagram to send, and where.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timeout
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// Sends one sealed payload (see [`crate::rtp::seal_payload`]) as the next 20 ms of
    /// audio. Before the connection is up, str0m drops it.
    pub fn send_audio(&mut self, payload: &[u8], now: Instant) -> Result<(), WebRtcError> {
        let mid = self.audio.ok_or(WebRtcError::NoAudio)?;
        let writer = self.rtc.writer(mid).ok_or(WebRtcError::NoAudio)?;
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
            .ok_or(WebRtcError::NoAudio)?;
        let time = MediaTime::new(self.rtp_time, Frequency::FORTY_EIGHT_KHZ);
        self.rtp_time = self.rtp_time.wrapping_add(FRAME_TICKS);
        let result = writer
            .write(pt, now, time, payload.to_vec())
            .map_err(rtc_error);
        self.drain();
        result
    }

    /// Sends bytes on the data channel (reliable, ordered); false when its buffer is full
    /// (try again later).
    pub fn send_data(&mut self, bytes: &[u8]) -> Result<bool, WebRtcError> {
        let id = self.channel.ok_or(WebRtcError::NoChannel)?;
        let mut channel = self.rtc.channel(id).ok_or(WebRtcError::NoChannel)?;
        let sent = channel.write(true, bytes).map_err(rtc_error)?;
        self.drain();
        Ok(sent)
    }

    /// Sends text on the data channel (for SFU plugins that take text only, such as
    /// Janus's TextRoom); false when its buffer is full.
    pub fn send_text(&mut self, text: &str) -> Result<bool, WebRtcError> {
        let id = self.channel.ok_or(WebRtcError::NoChannel)?;
        let mut channel = self.rtc.channel(id).ok_or(WebRtcError::NoChannel)?;
        let sent = channel.write(false, text.as_bytes()).map_err(rtc_error)?;
        self.drain();
        Ok(sent)
    }

    /// Closes the connection.
    pub fn close(&mut self) {
        self.rtc.disconnect();
        self.drain();
    }

    fn event(&mut self, event: PeerEvent) {
        if self.events.len() >= MAX_QUEUE {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Moves everything str0m has to say into the queues (str0m requires draining after
    /// every input).
    fn drain(&mut self) {
        if self.failed {
            return;
        }
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = Some(t);
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    if self.transmits.len() < MAX_QUEUE {
                        self.transmits
                            .push_back((t.destination, t.contents.to_vec()));
                    }
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => self.event(PeerEvent::Connected),
                    Event::ChannelOpen(id, _) => {
                        if self.channel.is_none() {
                            self.channel = Some(id);
                        }
                        self.event(PeerEvent::ChannelOpen);
                    }
                    Event::ChannelData(d) => self.event(PeerEvent::Data(d.data)),
                    Event::MediaData(m) => self.event(PeerEvent::Audio {
                        payload: m.data.to_vec(),
                        rtp_time: m.time.numer(),
                    }),
                    Event::MediaAdded(m) if self.audio.is_none() && m.kind == MediaKind::Audio => {
                        self.audio = Some(m.mid);
                    }
                    Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected) => {
                        self.event(PeerEvent::Closed)
                    }
                    _ => {}
                },
                Err(_) => {
                    self.failed = true;
                    self.timeout = None;
                    self.event(PeerEvent::Closed);
                    return;
                }
            }
        }
    }
}

/// The addresses of every `a=candidate` line of an SDP (for checking what a peer or an SFU
/// offers); lines that do not parse are skipped.
pub fn candidate_addresses(sdp: &str) -> Vec<SocketAddr> {
    sdp.lines()
        .filter_map(|line| line.trim().strip_prefix("a=candidate:"))
        .filter_map(|c| {
            // foundation component transport priority address port typ ...
            let mut fields = c.split_whitespace();
            let ip: IpAddr = fields.nth(4)?.parse().ok()?;
            let port: u16 = fields.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_read_from_sdp() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n\
                   a=candidate:bad\r\na=candidate:2 1 UDP 1 10.0.0.1 5 typ host\r\n";
        assert_eq!(
            candidate_addresses(sdp),
            vec![
                "127.0.0.1:40000".parse().unwrap(),
                "10.0.0.1:5".parse().unwrap()
            ]
        );
    }

    #[test]
    fn an_offer_has_only_the_given_candidate_and_no_audio_level() {
        let now = Instant::now();
        let local: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let mut peer = WebRtcPeer::new(local, now).unwrap();
        let sdp = peer.offer(Direction::SendRecv, true).unwrap();
        assert_eq!(candidate_addresses(&sdp), vec![local]);
        assert!(!sdp.contains("ssrc-audio-level"), "{sdp}");
        assert!(!sdp.contains("transport-wide-cc"), "{sdp}");
        assert!(!sdp.contains("abs-send-time"), "{sdp}");
        assert!(sdp.contains("opus/48000"));
        assert!(!sdp.contains("red/48000"));
    }
}
