//! The relay wire carried over QUIC (RFC 9000, RFC 9221) through `quinn-proto`, sans-IO
//! like the rest of sotto: [`QuicClient`] for a member, [`QuicRelay`] for the relay (a
//! [`Router`] behind a QUIC endpoint). Both take UDP datagrams and time in and give UDP
//! datagrams out; sockets live in the programs that use them (`sotto-relay`,
//! `examples/client.rs`), and tests drive them on virtual time.
//!
//! # What travels where
//!
//! One QUIC connection per member. The member opens one bidirectional stream on it; every
//! relay wire message except media travels on that stream, in order and retransmitted
//! when lost, each framed by a 4-byte big-endian length: `Hello`, `Subscribe`,
//! `Unsubscribe`, `Handshake`, `DeliverWelcome`, `FetchWelcomes` and their answers.
//! Media messages (`0x63` / `0x73`: the channel handle and the SFrame frame, as on the
//! relay wire) travel as QUIC DATAGRAM frames, one per frame: a lost packet is never sent
//! again, so no audio arrives late from a retransmission. Each side sends media only as
//! datagrams and everything else only on the stream; the relay drops (and counts) a
//! message that came the other way. The [`Router`] sees relay wire messages and knows
//! nothing of QUIC.
//!
//! # What a network observer sees
//!
//! QUIC encrypts every packet after the first flight under keys of the TLS 1.3 handshake,
//! and the relay's certificate travels encrypted too. An observer on a member's path sees
//! the relay's address and port, packet sizes and timing, the ALPN [`ALPN`] and server
//! name [`SERVER_NAME`] of the (cleartext-keyed) Initial packets, and the connection ids.
//! It sees no channel token, handle, KeyPackage reference, MLS message or SFrame header.
//! Session resumption and address-validation tokens are off, so a member's next connection
//! carries nothing that links it to the last one (its address still may).
//!
//! # Who is who
//!
//! Members authenticate the relay by pinning its certificate ([`RelayPin`]: SHA-256 of the
//! certificate's DER; no web PKI). The relay does not authenticate members — it must not
//! learn who they are; what bounds abuse is the [`Router`]'s quotas per connection
//! ([`RouterLimits`](crate::relay::RouterLimits)), QUIC's own flow control and anti-amplification limit, and the relay's
//! Retry: a first Initial packet from an address is answered only with a stateless Retry,
//! so a forged source address costs the relay no connection state and gets at most one
//! small packet sent to the victim.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig,
    Event, IdleTimeout, NoneTokenStore, ReadError, ServerConfig, StreamEvent, StreamId,
    TransportConfig, VarInt,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::relay::{ChannelHandle, ClientMessage, ConnId, RelayMessage, Router, MAX_MESSAGE};

/// The ALPN protocol id of the relay wire over QUIC (visible to a network observer).
pub const ALPN: &[u8] = b"sotto/3";

/// The server name a member puts in its TLS ClientHello (visible to a network observer, so
/// it names nothing: the relay is authenticated by its pinned certificate, not its name).
pub const SERVER_NAME: &str = "relay";

/// Bytes of a stream message's length prefix.
const LEN_PREFIX: usize = 4;

/// A member's connection closes after this long without a packet from the relay (and the
/// relay's after this long without one from the member).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A member sends a keep-alive this often when it has nothing else to send.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Media waiting to be sent on one connection: beyond this, the oldest queued datagram is
/// dropped for the new one (late audio is worth nothing).
const DATAGRAM_BUFFER: usize = 32 * 1024;

/// Stream bytes one side may have in flight to the other.
const STREAM_WINDOW: u32 = 256 * 1024;

/// Bytes of control messages a relay queues for one connection that does not read them:
/// beyond this, the relay closes the connection ([`QuicRelayStats::closed_slow`]). With
/// the stream's send window, what one connection can hold at the relay is about 1.25 MiB
/// (12.5 GiB for the default 10,000 connections: size `max_connections` to the host).
pub const RELAY_BACKLOG: usize = 1024 * 1024;

/// What a member queues before its connection is up or while the stream is blocked:
/// beyond this, [`QuicClient::send`] refuses.
pub const CLIENT_BACKLOG: usize = 1024 * 1024;

/// How long a member waits before connecting again after losing its connection, doubled
/// after each failure up to [`RECONNECT_MAX`].
pub const RECONNECT_MIN: Duration = Duration::from_millis(500);

/// The longest wait between two connection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(8);

/// Application close codes.
const CLOSE_DONE: u32 = 0;
const CLOSE_PROTOCOL: u32 = 1;
const CLOSE_SLOW: u32 = 2;
const CLOSE_SHUTDOWN: u32 = 3;

/// The first byte of a media message, member → relay.
const CLIENT_MEDIA: u8 = first(ClientMessage::media_header(ChannelHandle(0)));
/// The first byte of a media message, relay → member.
const RELAY_MEDIA: u8 = first(RelayMessage::media_header(ChannelHandle(0)));

const fn first(header: [u8; crate::relay::MEDIA_OVERHEAD]) -> u8 {
    let [b, ..] = header;
    b
}

/// Errors of the QUIC carrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// The relay's certificate or private key was refused (not DER, not a key TLS 1.3 can
    /// sign with, or not the certificate's key).
    #[error("relay certificate or key refused")]
    Identity,
    /// A certificate pin is not `sha256:` and 64 hex digits.
    #[error("malformed relay pin")]
    Pin,
    /// A carrier stream broke its framing (a length of 0 or above the wire's maximum).
    #[error("broken stream framing")]
    Framing,
    /// QUIC cannot connect to that address (port 0 or unspecified).
    #[error("cannot connect to that address")]
    Address,
    /// The message is empty, larger than the relay wire allows, or more than the backlog
    /// ([`CLIENT_BACKLOG`]) is already waiting.
    #[error("message refused by the carrier")]
    Message,
}

/// A relay's certificate pin: SHA-256 of its certificate (DER). Written `sha256:` and 64
/// lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RelayPin(pub [u8; 32]);

impl RelayPin {
    /// The pin of the certificate `der`.
    pub fn of_certificate(der: &[u8]) -> RelayPin {
        RelayPin(Sha256::digest(der).into())
    }

    /// Reads `sha256:` and 64 hex digits (either case).
    pub fn parse(text: &str) -> Result<RelayPin, QuicError> {
        let hex = text.strip_prefix("sha256:").ok_or(QuicError::Pin)?;
        let digits = hex.as_bytes();
        if digits.len() != 64 {
            return Err(QuicError::Pin);
        }
        let mut pin = [0u8; 32];
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(QuicError::Pin);
        }
        for (byte, pair) in pin.iter_mut().zip(digits.chunks_exact(2)) {
            let text = std::str::from_utf8(pair).map_err(|_| QuicError::Pin)?;
            *byte = u8::from_str_radix(text, 16).map_err(|_| QuicError::Pin)?;
        }
        Ok(RelayPin(pin))
    }
}

impl fmt::Display for RelayPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for RelayPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A relay's TLS identity: a self-signed certificate and its private key (PKCS #8), both
/// DER. Members pin the certificate ([`pin`](Self::pin)).
pub struct RelayIdentity {
    certificate: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for RelayIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayIdentity")
            .field("pin", &self.pin())
            .finish_non_exhaustive()
    }
}

impl RelayIdentity {
    /// A new ECDSA P-256 key and a self-signed certificate for it (name [`SERVER_NAME`]).
    pub fn generate() -> Result<RelayIdentity, QuicError> {
        let generated = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .map_err(|_| QuicError::Identity)?;
        Ok(RelayIdentity {
            certificate: generated.cert.der().to_vec(),
            key: Zeroizing::new(generated.signing_key.serialize_der()),
        })
    }

    /// An identity from a certificate and its PKCS #8 private key (both DER), checked by
    /// building the TLS configuration the relay will use.
    pub fn from_der(certificate: Vec<u8>, key: Vec<u8>) -> Result<RelayIdentity, QuicError> {
        let identity = RelayIdentity {
            certificate,
            key: Zeroizing::new(key),
        };
        server_tls(&identity)?;
        Ok(identity)
    }

    /// The certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// The private key (PKCS #8 DER): keep it secret.
    pub fn private_key(&self) -> &[u8] {
        &self.key
    }

    /// What members pin.
    pub fn pin(&self) -> RelayPin {
        RelayPin::of_certificate(&self.certificate)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_tls(identity: &RelayIdentity) -> Result<QuicServerConfig, QuicError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.to_vec()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|_| QuicError::Identity)?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(identity.certificate.clone())],
            key,
        )
        .map_err(|_| QuicError::Identity)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption tickets: a ticket shown again would link a member's connections.
    tls.send_tls13_tickets = 0;
    tls.max_early_data_size = 0;
    QuicServerConfig::try_from(tls).map_err(|_| QuicError::Identity)
}

/// Checks the relay's certificate against the pin, and its handshake signature.
#[derive(Debug)]
struct PinVerifier {
    pin: RelayPin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = RelayPin::of_certificate(end_entity.as_ref());
        if bool::from(seen.0.ct_eq(&self.pin.0)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // QUIC is TLS 1.3 only; this is never reached, and checks properly if it were.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The congestion window of every carrier connection, in bytes: fixed.
///
/// Media is inelastic: Opus at a constant bit rate, 50 packets a second per speaker, like
/// RTP over UDP in every VoIP stack. A reacting controller cannot make it smaller; it can
/// only hold it back. Measured: with quinn's default (CUBIC), a 2-second outage of a
/// member's path filled the window with unacknowledged packets, both sides then sent
/// nothing but loss probes, backed off exponentially, and audio resumed about 2 s after
/// the path came back. With the fixed window, media keeps going out during an outage (and
/// is lost, as on any path) and flows again the moment the path returns. The window still
/// bounds what one connection has in flight (1 MiB: more than 2 s of a 64-speaker room's
/// fan-out), and control messages are few and small.
pub const WINDOW: u64 = 1 << 20;

/// The carrier's congestion "controller": a window of [`WINDOW`] bytes that never moves.
#[derive(Clone, Copy, Debug)]
struct FixedWindow;

impl quinn_proto::congestion::Controller for FixedWindow {
    fn on_congestion_event(&mut self, _: Instant, _: Instant, _: bool, _: u64) {}

    fn on_mtu_update(&mut self, _: u16) {}

    fn window(&self) -> u64 {
        WINDOW
    }

    fn clone_box(&self) -> Box<dyn quinn_proto::congestion::Controller> {
        Box::new(*self)
    }

    fn initial_window(&self) -> u64 {
        WINDOW
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

impl quinn_proto::congestion::ControllerFactory for FixedWindow {
    fn build(self: Arc<Self>, _: Instant, _: u16) -> Box<dyn quinn_proto::congestion::Controller> {
        Box::new(FixedWindow)
    }
}

fn transport(member: bool) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.congestion_controller_factory(Arc::new(FixedWindow));
    // The member opens the one stream; the relay opens none.
    t.max_concurrent_bidi_streams(VarInt::from_u32(if member { 0 } else { 1 }))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(STREAM_WINDOW))
        .send_window(u64::from(STREAM_WINDOW))
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
            u32::try_from(IDLE_TIMEOUT.as_millis()).unwrap_or(u32::MAX),
        ))))
        .keep_alive_interval(member.then_some(KEEP_ALIVE))
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_BUFFER);
    t
}

fn client_config(pin: RelayPin) -> Result<ClientConfig, QuicError> {
    let provider = provider();
    let verifier = PinVerifier {
        pin,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|_| QuicError::Identity)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    tls.enable_early_data = false;
    let crypto = QuicClientConfig::try_from(tls).map_err(|_| QuicError::Identity)?;
    let mut config = ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport(true)));
    // No address-validation tokens kept for the next connection (they would link them).
    config.token_store(Arc::new(NoneTokenStore));
    Ok(config)
}

/// Reads the relay wire messages of a carrier stream: each is a 4-byte big-endian length
/// (1 to [`MAX_MESSAGE`]) and that many bytes. Push the stream's bytes as they come, in
/// order; take whole messages with [`next_message`](Self::next_message).
#[derive(Debug, Default)]
pub struct Deframer {
    buf: BytesMut,
    /// Bytes of the message last returned, dropped at the next call.
    taken: usize,
}

impl Deframer {
    /// An empty reader.
    pub fn new() -> Deframer {
        Deframer::default()
    }

    /// Appends stream bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet a whole message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.taken
    }

    /// The next whole message, `None` until one is complete, or
    /// [`QuicError::Framing`] when a length is 0 or above [`MAX_MESSAGE`] (the stream is
    /// broken for good: close the connection).
    pub fn next_message(&mut self) -> Result<Option<&[u8]>, QuicError> {
        self.buf.advance(std::mem::take(&mut self.taken));
        let Some(prefix) = self.buf.get(..LEN_PREFIX) else {
            return Ok(None);
        };
        let mut len = [0u8; LEN_PREFIX];
        len.copy_from_slice(prefix);
        let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len == 0 || len > MAX_MESSAGE {
            return Err(QuicError::Framing);
        }
        let Some(message) = self.buf.get(LEN_PREFIX..LEN_PREFIX + len) else {
            return Ok(None);
        };
        self.taken = LEN_PREFIX + len;
        Ok(Some(message))
    }
}

/// How a message arrived.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Stream,
    Datagram,
}

/// One QUIC connection carrying the relay wire, either side.
struct Link {
    conn: Connection,
    stream: Option<StreamId>,
    /// Stream bytes received and not yet a whole message.
    rx: Deframer,
    /// Framed messages the stream has not taken yet (no stream yet, or flow control).
    tx: BytesMut,
    /// The time of this link's entry in the relay's timer heap.
    scheduled: Option<Instant>,
    /// In the relay's list of links to poll for transmits.
    dirty: bool,
    /// Closed by this side: nothing more is queued or taken.
    closing: bool,
}

/// What [`Link::events`] found.
#[derive(Default)]
struct Polled {
    connected: bool,
    lost: bool,
    /// The peer broke the framing (a message of length 0 or above the wire's maximum) or
    /// ended its stream.
    broken: bool,
}

impl Link {
    fn new(conn: Connection) -> Link {
        Link {
            conn,
            stream: None,
            rx: Deframer::new(),
            tx: BytesMut::new(),
            scheduled: None,
            dirty: false,
            closing: false,
        }
    }

    /// Frames `message` onto the stream; false (and nothing queued) beyond `backlog`.
    fn queue(&mut self, message: &[u8], backlog: usize) -> bool {
        let queued = frame(&mut self.tx, message, backlog);
        self.flush();
        queued
    }

    fn flush(&mut self) {
        let Some(id) = self.stream else {
            return;
        };
        while !self.tx.is_empty() {
            match self.conn.send_stream(id).write(&self.tx) {
                Ok(n) if n > 0 => self.tx.advance(n),
                _ => break,
            }
        }
    }

    /// Sends a media message as a DATAGRAM frame (dropping the oldest queued one if the
    /// buffer is full); false if QUIC refused it (too large for the path, or no datagram
    /// support yet).
    fn datagram(&mut self, message: &[u8]) -> bool {
        self.conn
            .datagrams()
            .send(Bytes::copy_from_slice(message), true)
            .is_ok()
    }

    /// Handles the connection's events; every whole message received goes to `take`.
    fn events(&mut self, member: bool, mut take: impl FnMut(Path, &[u8])) -> Polled {
        let mut polled = Polled::default();
        while let Some(event) = self.conn.poll() {
            match event {
                Event::Connected => {
                    polled.connected = true;
                    if member && self.stream.is_none() {
                        self.stream = self.conn.streams().open(Dir::Bi);
                        self.flush();
                    }
                }
                Event::ConnectionLost { .. } => polled.lost = true,
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) if !member => {
                    if let Some(id) = self.conn.streams().accept(Dir::Bi) {
                        if self.stream.is_none() {
                            self.stream = Some(id);
                            polled.broken |= !self.read(&mut take);
                            self.flush();
                        }
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) if Some(id) == self.stream => {
                    polled.broken |= !self.read(&mut take);
                }
                Event::Stream(StreamEvent::Writable { id }) if Some(id) == self.stream => {
                    self.flush();
                }
                Event::DatagramReceived => {
                    while let Some(bytes) = self.conn.datagrams().recv() {
                        take(Path::Datagram, &bytes);
                    }
                }
                _ => {}
            }
        }
        polled
    }

    /// Reads what the stream has and hands over each whole message; false if the peer
    /// broke the framing or ended the stream.
    fn read(&mut self, take: &mut impl FnMut(Path, &[u8])) -> bool {
        let Some(id) = self.stream else {
            return true;
        };
        let Link { conn, rx, .. } = self;
        let mut recv = conn.recv_stream(id);
        let Ok(mut chunks) = recv.read(true) else {
            return false;
        };
        let mut intact = true;
        loop {
            match chunks.next(usize::MAX) {
                Ok(Some(chunk)) => rx.push(&chunk.bytes),
                Ok(None) | Err(ReadError::Reset(_)) => {
                    intact = false;
                    break;
                }
                Err(ReadError::Blocked) => break,
            }
        }
        // Whether this asks for a flow-control update: the link is polled for transmits
        // after every event anyway.
        let _ = chunks.finalize();
        loop {
            match rx.next_message() {
                Ok(Some(message)) => take(Path::Stream, message),
                Ok(None) => return intact,
                Err(_) => return false,
            }
        }
    }

    fn close(&mut self, now: Instant, code: u32, reason: &'static [u8]) {
        self.conn
            .close(now, VarInt::from_u32(code), Bytes::from_static(reason));
    }
}

/// Hands the connection's endpoint events to the endpoint (and its answers back); whether
/// the connection is drained (the endpoint forgot it: drop it).
fn endpoint_events(endpoint: &mut Endpoint, ch: ConnectionHandle, conn: &mut Connection) -> bool {
    let mut drained = false;
    while let Some(event) = conn.poll_endpoint_events() {
        drained |= event.is_drained();
        if let Some(answer) = endpoint.handle_event(ch, event) {
            conn.handle_event(answer);
        }
    }
    drained
}

/// What happened to a member's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuicEvent {
    /// The connection to the relay is up (the first time, or again after
    /// [`Disconnected`](Self::Disconnected)). After a reconnection the relay holds none of
    /// this member's state: tell the call (`Call::transport_reset`) so it says Hello and
    /// subscribes again.
    Connected,
    /// The connection ended (the relay closed it, restarted, or went silent for
    /// [`IDLE_TIMEOUT`]); the client connects again by itself (after [`RECONNECT_MIN`],
    /// doubling up to [`RECONNECT_MAX`]). Messages sent meanwhile are dropped and counted
    /// ([`QuicClientStats::control_dropped`]): the next connection starts with nothing at
    /// the relay, and the call asks everything again once told (`Call::transport_reset`).
    /// (Before the very first connection, control messages wait for it.)
    Disconnected,
}

/// Counters of a member's carrier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicClientStats {
    /// Connection attempts.
    pub connects: u64,
    /// Connections that ended.
    pub disconnects: u64,
    /// Media messages sent as DATAGRAM frames.
    pub media_sent: u64,
    /// Media messages dropped: not connected, or QUIC refused them.
    pub media_dropped: u64,
    /// Messages received (stream and datagrams).
    pub messages_in: u64,
    /// Control messages dropped because the connection was lost (between
    /// [`QuicEvent::Disconnected`] and the next [`QuicEvent::Connected`]).
    pub control_dropped: u64,
    /// Connection attempts that ended before the handshake completed: the relay is not
    /// there, or it is not the pinned relay (its certificate does not match).
    pub handshake_failures: u64,
}

/// A member's QUIC connection to a relay, carrying the relay wire (see the [module
/// docs](self)). Sans-IO: feed it the UDP datagrams that arrive from the relay
/// ([`handle_datagram`](Self::handle_datagram)) and its timeouts, send what
/// [`poll_transmit`](Self::poll_transmit) gives to the relay's address, give it the call's
/// relay wire messages ([`send`](Self::send)) and hand the call what
/// [`poll_message`](Self::poll_message) gives.
pub struct QuicClient {
    endpoint: Endpoint,
    config: ClientConfig,
    relay: SocketAddr,
    link: Option<(ConnectionHandle, Link)>,
    /// Control messages waiting for a connection.
    waiting: BytesMut,
    inbox: VecDeque<Bytes>,
    events: VecDeque<QuicEvent>,
    connected: bool,
    /// Was connected once (control messages then no longer wait for a connection).
    ever_connected: bool,
    reconnect_at: Option<Instant>,
    backoff: Duration,
    /// Hung up: no reconnecting.
    closed: bool,
    stats: QuicClientStats,
}

impl fmt::Debug for QuicClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicClient")
            .field("relay", &self.relay)
            .field("connected", &self.connected)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl QuicClient {
    /// Starts connecting to the relay at `relay` whose certificate has the pin `pin`.
    pub fn connect(
        relay: SocketAddr,
        pin: RelayPin,
        now: Instant,
    ) -> Result<QuicClient, QuicError> {
        let mut client = QuicClient {
            endpoint: Endpoint::new(Arc::new(EndpointConfig::default()), None, false, None),
            config: client_config(pin)?,
            relay,
            link: None,
            waiting: BytesMut::new(),
            inbox: VecDeque::new(),
            events: VecDeque::new(),
            connected: false,
            ever_connected: false,
            reconnect_at: None,
            backoff: RECONNECT_MIN,
            closed: false,
            stats: QuicClientStats::default(),
        };
        client.start(now)?;
        Ok(client)
    }

    fn start(&mut self, now: Instant) -> Result<(), QuicError> {
        let (ch, conn) = self
            .endpoint
            .connect(now, self.config.clone(), self.relay, SERVER_NAME)
            .map_err(|_| QuicError::Address)?;
        let mut link = Link::new(conn);
        // What was sent while disconnected goes first, once the stream is open.
        link.tx = std::mem::take(&mut self.waiting);
        self.link = Some((ch, link));
        self.reconnect_at = None;
        self.stats.connects += 1;
        Ok(())
    }

    /// Whether the connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The relay's address.
    pub fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// Counters.
    pub fn stats(&self) -> QuicClientStats {
        self.stats
    }

    /// QUIC's own counters and round-trip estimate of the current connection.
    pub fn connection_stats(&self) -> Option<quinn_proto::ConnectionStats> {
        self.link.as_ref().map(|(_, l)| l.conn.stats())
    }

    /// Sends one relay wire message (what `Call::poll_transmit` gives): media as a DATAGRAM
    /// frame (dropped, and counted, while not connected), anything else on the stream (kept
    /// until the connection is up).
    pub fn send(&mut self, message: &[u8]) -> Result<(), QuicError> {
        let Some(&kind) = message.first() else {
            return Err(QuicError::Message);
        };
        if message.len() > MAX_MESSAGE {
            return Err(QuicError::Message);
        }
        if kind == CLIENT_MEDIA {
            let sent =
                self.connected && self.link.as_mut().is_some_and(|(_, l)| l.datagram(message));
            if sent {
                self.stats.media_sent += 1;
            } else {
                self.stats.media_dropped += 1;
            }
            return Ok(());
        }
        if self.ever_connected && !self.connected {
            // Lost: the relay will hold none of this member's state on the next
            // connection, so what is asked now would be refused there; the call asks
            // everything again after `Call::transport_reset`.
            self.stats.control_dropped += 1;
            return Ok(());
        }
        let queued = match &mut self.link {
            Some((_, link)) => link.queue(message, CLIENT_BACKLOG),
            None => frame(&mut self.waiting, message, CLIENT_BACKLOG),
        };
        if queued {
            Ok(())
        } else {
            Err(QuicError::Message)
        }
    }

    /// Takes one UDP datagram received from `from` at `now` (anything not from the relay's
    /// address is ignored).
    pub fn handle_datagram(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) {
        if from != self.relay {
            return;
        }
        let mut scratch = Vec::new();
        let event = self.endpoint.handle(
            now,
            from,
            None,
            None,
            BytesMut::from(datagram),
            &mut scratch,
        );
        if let (Some(DatagramEvent::ConnectionEvent(ch, event)), Some((mine, link))) =
            (event, &mut self.link)
        {
            if ch == *mine {
                link.conn.handle_event(event);
            }
        }
        self.drive(now);
    }

    /// The next UDP datagram to send (into `buf`, replaced) and where to; `None` when
    /// there is nothing to send now.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let (_, link) = self.link.as_mut()?;
        buf.clear();
        let transmit = link.conn.poll_transmit(now, 1, buf);
        self.drive(now);
        let transmit = transmit?;
        buf.truncate(transmit.size);
        Some(transmit.destination)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let conn = self.link.as_mut().and_then(|(_, l)| l.conn.poll_timeout());
        match (conn, self.reconnect_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timers at `now`: QUIC's own (loss detection, keep-alive, idle) and reconnecting.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, link)) = &mut self.link {
            if link.conn.poll_timeout().is_some_and(|t| t <= now) {
                link.conn.handle_timeout(now);
            }
        }
        self.drive(now);
        if self.link.is_none()
            && self.reconnect_at.is_some_and(|t| t <= now)
            && self.start(now).is_err()
        {
            // Cannot happen for an address accepted at construction; try again later.
            self.reconnect_at = Some(now + self.backoff);
        }
    }

    /// The next relay wire message received, into `into` (replaced); false if none.
    pub fn poll_message(&mut self, into: &mut Vec<u8>) -> bool {
        let Some(message) = self.inbox.pop_front() else {
            return false;
        };
        into.clear();
        into.extend_from_slice(&message);
        true
    }

    /// The next connection event.
    pub fn poll_event(&mut self) -> Option<QuicEvent> {
        self.events.pop_front()
    }

    /// Closes the connection (hanging up): the relay learns it at once instead of after
    /// [`IDLE_TIMEOUT`]. Keep polling transmits briefly so the close goes out.
    pub fn close(&mut self, now: Instant) {
        if let Some((_, link)) = &mut self.link {
            link.close(now, CLOSE_DONE, b"");
        }
        self.reconnect_at = None;
        self.closed = true;
        self.connected = false;
    }

    fn drive(&mut self, now: Instant) {
        let Some((ch, link)) = &mut self.link else {
            return;
        };
        let inbox = &mut self.inbox;
        let stats = &mut self.stats;
        let polled = link.events(true, |path, message| {
            // Media only as datagrams, everything else only on the stream.
            let media = message.first() == Some(&RELAY_MEDIA);
            if media == (path == Path::Datagram) {
                stats.messages_in += 1;
                inbox.push_back(Bytes::copy_from_slice(message));
            }
        });
        if polled.broken {
            link.close(now, CLOSE_PROTOCOL, b"framing");
        }
        if polled.connected {
            self.connected = true;
            self.ever_connected = true;
            self.backoff = RECONNECT_MIN;
            self.events.push_back(QuicEvent::Connected);
        }
        let drained = endpoint_events(&mut self.endpoint, *ch, &mut link.conn);
        if polled.lost || drained || link.conn.is_drained() {
            if self.connected {
                self.events.push_back(QuicEvent::Disconnected);
                self.stats.disconnects += 1;
            } else if polled.lost && !self.closed {
                self.stats.handshake_failures += 1;
            }
            self.connected = false;
            if drained || link.conn.is_drained() {
                // What the stream had not sent yet is lost with the connection: the
                // call asks again after it reconnects.
                self.link = None;
                if !self.closed {
                    self.reconnect_at = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
    }
}

/// Appends `message` with its length prefix to `buffer`; false (and nothing appended)
/// when that would take the buffer beyond `backlog` bytes.
fn frame(buffer: &mut BytesMut, message: &[u8], backlog: usize) -> bool {
    let Ok(len) = u32::try_from(message.len()) else {
        return false;
    };
    if buffer.len() + LEN_PREFIX + message.len() > backlog {
        return false;
    }
    buffer.extend_from_slice(&len.to_be_bytes());
    buffer.extend_from_slice(message);
    true
}

/// Counters of the relay's QUIC side (the router's own are in
/// [`Router::stats`](crate::relay::Router::stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicRelayStats {
    /// Connections accepted (their address proven by a Retry).
    pub accepted: u64,
    /// First Initial packets answered with a Retry (address not proven yet).
    pub retries: u64,
    /// Connection attempts refused: the relay is full, or shutting down.
    pub refused: u64,
    /// Connections that ended.
    pub closed: u64,
    /// Connections closed for not reading their control messages ([`RELAY_BACKLOG`]).
    pub closed_slow: u64,
    /// Connections closed for breaking the stream framing.
    pub closed_protocol: u64,
    /// Messages that came the wrong way (media on the stream, control as a datagram).
    pub misrouted: u64,
    /// Media datagrams QUIC would not queue for a receiver (too large for its path).
    pub media_dropped: u64,
    /// UDP datagrams received.
    pub datagrams_in: u64,
    /// UDP datagrams sent.
    pub datagrams_out: u64,
}

/// The relay's connections: one endpoint, its QUIC connections, and the [`Router`]
/// between them. Sans-IO like [`QuicClient`].
pub struct QuicRelay {
    endpoint: Endpoint,
    router: Router,
    links: HashMap<ConnectionHandle, (ConnId, Link)>,
    by_id: HashMap<ConnId, ConnectionHandle>,
    next_id: u64,
    /// Answers of the endpoint itself (Retry, refusals, resets).
    responses: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Links that may have packets to send.
    dirty: Vec<ConnectionHandle>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// The messages of one link's events: ranges in `inbox_bytes`.
    inbox: Vec<(usize, usize)>,
    inbox_bytes: Vec<u8>,
    /// Links over their backlog while the router fanned out (closed right after).
    slow: Vec<ConnectionHandle>,
    recv: BytesMut,
    shutting_down: bool,
    stats: QuicRelayStats,
}

impl fmt::Debug for QuicRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicRelay")
            .field("connections", &self.links.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl QuicRelay {
    /// A relay with the TLS identity `identity` around `router`.
    pub fn new(identity: &RelayIdentity, router: Router) -> Result<QuicRelay, QuicError> {
        let mut server = ServerConfig::with_crypto(Arc::new(server_tls(identity)?));
        server.transport_config(Arc::new(transport(false)));
        // No address-validation tokens for a member's next connection (they would link
        // its connections; quinn-proto sends 2 when its `bloom` feature is on).
        let mut tokens = quinn_proto::ValidationTokenConfig::default();
        tokens.sent(0);
        server.validation_token_config(tokens);
        server.max_incoming(router.limits().max_connections);
        Ok(QuicRelay {
            endpoint: Endpoint::new(
                Arc::new(EndpointConfig::default()),
                Some(Arc::new(server)),
                false,
                None,
            ),
            router,
            links: HashMap::new(),
            by_id: HashMap::new(),
            next_id: 0,
            responses: VecDeque::new(),
            dirty: Vec::new(),
            timers: BinaryHeap::new(),
            inbox: Vec::new(),
            inbox_bytes: Vec::new(),
            slow: Vec::new(),
            recv: BytesMut::new(),
            shutting_down: false,
            stats: QuicRelayStats::default(),
        })
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The router, mutably (to expire what is due: call
    /// [`Router::expire`](crate::relay::Router::expire) about once a second).
    pub fn router_mut(&mut self) -> &mut Router {
        &mut self.router
    }

    /// Counters of the QUIC side.
    pub fn stats(&self) -> QuicRelayStats {
        self.stats
    }

    /// Open connections (handshaking, established or closing).
    pub fn connection_count(&self) -> usize {
        self.links.len()
    }

    /// Takes one UDP datagram received from `from` at `now`.
    pub fn handle_datagram(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) {
        self.stats.datagrams_in += 1;
        self.recv.extend_from_slice(datagram);
        let data = self.recv.split();
        let mut buf = Vec::new();
        match self.endpoint.handle(now, from, None, None, data, &mut buf) {
            Some(DatagramEvent::NewConnection(incoming)) => {
                if self.shutting_down || self.links.len() >= self.router.limits().max_connections {
                    self.stats.refused += 1;
                    let t = self.endpoint.refuse(incoming, &mut buf);
                    self.respond(t.destination, &buf, t.size);
                } else if !incoming.remote_address_validated() {
                    match self.endpoint.retry(incoming, &mut buf) {
                        Ok(t) => {
                            self.stats.retries += 1;
                            self.respond(t.destination, &buf, t.size);
                        }
                        Err(e) => self.endpoint.ignore(e.into_incoming()),
                    }
                } else {
                    match self.endpoint.accept(incoming, now, &mut buf, None) {
                        Ok((ch, conn)) => {
                            self.next_id += 1;
                            let id = ConnId(self.next_id);
                            self.links.insert(ch, (id, Link::new(conn)));
                            self.by_id.insert(id, ch);
                            self.stats.accepted += 1;
                            self.touched(ch, now);
                        }
                        Err(e) => {
                            if let Some(t) = e.response {
                                self.respond(t.destination, &buf, t.size);
                            }
                        }
                    }
                }
            }
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some((_, link)) = self.links.get_mut(&ch) {
                    link.conn.handle_event(event);
                    self.touched(ch, now);
                }
            }
            Some(DatagramEvent::Response(t)) => self.respond(t.destination, &buf, t.size),
            None => {}
        }
    }

    fn respond(&mut self, to: SocketAddr, buf: &[u8], size: usize) {
        if let Some(bytes) = buf.get(..size) {
            self.responses.push_back((to, bytes.to_vec()));
        }
    }

    /// After anything happened on the link `ch`: its events (messages through the router,
    /// the router's output straight into the receivers' links), endpoint events,
    /// transmits, timer.
    fn touched(&mut self, ch: ConnectionHandle, now: Instant) {
        let QuicRelay {
            links,
            inbox,
            inbox_bytes,
            stats,
            ..
        } = self;
        let Some((id, link)) = links.get_mut(&ch) else {
            return;
        };
        let id = *id;
        // What arrived, kept aside: at most one stream window and the datagram buffer.
        inbox.clear();
        inbox_bytes.clear();
        let polled = link.events(false, |path, message| {
            let media = message.first() == Some(&CLIENT_MEDIA);
            if media != (path == Path::Datagram) {
                stats.misrouted += 1;
                return;
            }
            let start = inbox_bytes.len();
            inbox_bytes.extend_from_slice(message);
            inbox.push((start, inbox_bytes.len()));
        });
        if polled.broken {
            stats.closed_protocol += 1;
            self.close_link(ch, CLOSE_PROTOCOL, b"framing", now);
        }
        if polled.lost {
            self.router.disconnect(id, now);
        }
        let inbox = std::mem::take(&mut self.inbox);
        for &(start, end) in &inbox {
            // A connection the relay closed is not heard any more.
            if self.links.get(&ch).is_none_or(|(_, l)| l.closing) {
                break;
            }
            let Some(message) = self.inbox_bytes.get(start..end) else {
                continue;
            };
            let QuicRelay {
                links,
                by_id,
                router,
                dirty,
                stats,
                slow,
                ..
            } = self;
            // A refusal is answered by the router itself and counted in its stats. Each
            // output goes into its receiver's link at once, so a request that makes the
            // relay send much (a fan-out, a replay) meets each receiver's backlog limit
            // then and there.
            let _ = router.receive(id, message, now, &mut |to, bytes| {
                let Some(&to_ch) = by_id.get(&to) else {
                    return;
                };
                let Some((_, link)) = links.get_mut(&to_ch) else {
                    return;
                };
                if link.closing {
                    return;
                }
                if bytes.first() == Some(&RELAY_MEDIA) {
                    if !link.datagram(bytes) {
                        stats.media_dropped += 1;
                    }
                } else if !link.queue(bytes, RELAY_BACKLOG) {
                    stats.closed_slow += 1;
                    slow.push(to_ch);
                }
                if !link.dirty {
                    link.dirty = true;
                    dirty.push(to_ch);
                }
            });
            for slow in std::mem::take(&mut self.slow) {
                self.close_link(slow, CLOSE_SLOW, b"backlog", now);
            }
        }
        self.inbox = inbox;
        self.mark(ch);
        self.settle(ch, now);
    }

    /// Closes a link from the relay's side: the router forgets its connection at once
    /// (quinn reports no loss for a local close), nothing more is queued for it or taken
    /// from it, and the close goes out with its next transmit.
    fn close_link(&mut self, ch: ConnectionHandle, code: u32, reason: &'static [u8], now: Instant) {
        let Some((id, link)) = self.links.get_mut(&ch) else {
            return;
        };
        if link.closing {
            return;
        }
        link.closing = true;
        link.tx.clear();
        link.close(now, code, reason);
        let id = *id;
        self.router.disconnect(id, now);
        self.mark(ch);
    }

    /// The link's endpoint events; drops it once drained, else (re)schedules its timer.
    fn settle(&mut self, ch: ConnectionHandle, now: Instant) {
        let Some((_, link)) = self.links.get_mut(&ch) else {
            return;
        };
        if endpoint_events(&mut self.endpoint, ch, &mut link.conn) {
            if let Some((id, _)) = self.links.remove(&ch) {
                self.by_id.remove(&id);
                self.router.disconnect(id, now);
                self.stats.closed += 1;
            }
        } else {
            self.schedule(ch);
        }
    }

    fn mark(&mut self, ch: ConnectionHandle) {
        if let Some((_, link)) = self.links.get_mut(&ch) {
            if !link.dirty {
                link.dirty = true;
                self.dirty.push(ch);
            }
        }
    }

    fn schedule(&mut self, ch: ConnectionHandle) {
        let Some((_, link)) = self.links.get_mut(&ch) else {
            return;
        };
        let Some(t) = link.conn.poll_timeout() else {
            return;
        };
        if link.scheduled.is_none_or(|s| t < s) {
            link.scheduled = Some(t);
            self.timers.push(Reverse((t, ch.0)));
        }
        // Entries a link's later deadlines left behind wait in the heap until their time:
        // when they outnumber the live ones, rebuild it from the live ones.
        if self.timers.len() > 2 * self.links.len() + 64 {
            self.timers = self
                .links
                .iter()
                .filter_map(|(ch, (_, l))| l.scheduled.map(|t| Reverse((t, ch.0))))
                .collect();
        }
    }

    /// The next UDP datagram to send (into `buf`, replaced) and where to; `None` when
    /// there is nothing to send now.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        if let Some((to, bytes)) = self.responses.pop_front() {
            buf.clear();
            buf.extend_from_slice(&bytes);
            self.stats.datagrams_out += 1;
            return Some(to);
        }
        while let Some(&ch) = self.dirty.last() {
            if let Some((_, link)) = self.links.get_mut(&ch) {
                buf.clear();
                if let Some(t) = link.conn.poll_transmit(now, 1, buf) {
                    buf.truncate(t.size);
                    self.stats.datagrams_out += 1;
                    return Some(t.destination);
                }
                link.dirty = false;
                self.dirty.pop();
                // Sending may have ended a closing connection, or moved its timers.
                self.settle(ch, now);
            } else {
                self.dirty.pop();
            }
        }
        None
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(&Reverse((t, ch))) = self.timers.peek() {
            let current = self
                .links
                .get(&ConnectionHandle(ch))
                .is_some_and(|(_, l)| l.scheduled == Some(t));
            if current {
                return Some(t);
            }
            self.timers.pop();
        }
        None
    }

    /// QUIC's timers due at `now` (loss detection, idle connections, closes).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((t, ch))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let ch = ConnectionHandle(ch);
            let Some((_, link)) = self.links.get_mut(&ch) else {
                continue;
            };
            if link.scheduled != Some(t) {
                continue;
            }
            link.scheduled = None;
            if link.conn.poll_timeout().is_some_and(|due| due <= now) {
                link.conn.handle_timeout(now);
            }
            self.touched(ch, now);
        }
    }

    /// Starts a graceful shutdown: every connection is closed with a "shutting down" code
    /// and new ones are refused. Keep driving the relay until
    /// [`connection_count`](Self::connection_count) is 0 (each close takes about three
    /// round trips to drain), or a deadline.
    pub fn shut_down(&mut self, now: Instant) {
        self.shutting_down = true;
        let handles: Vec<ConnectionHandle> = self.links.keys().copied().collect();
        for ch in handles {
            self.close_link(ch, CLOSE_SHUTDOWN, b"relay shutting down", now);
            self.settle(ch, now);
        }
    }
}
