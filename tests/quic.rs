//! The QUIC carrier (`sotto::quic`) against its adversaries, in process on virtual time
//! (datagrams handed between the sans-IO endpoints, no sockets): a relay impostor (wrong
//! certificate), a forger of source addresses replaying a member's first packet with a
//! victim's address, a client that breaks the framing or sends control messages as
//! datagrams, a restarted relay, and a graceful shutdown.
#![cfg(feature = "quic")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sotto::media::ChannelToken;
use sotto::quic::{QuicClient, QuicEvent, QuicRelay, RelayIdentity, RelayPin};
use sotto::relay::{ClientMessage, RelayMessage, Router, RouterLimits};

const STEP: Duration = Duration::from_millis(5);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const RELAY: u16 = 7000;

fn relay(identity: &RelayIdentity) -> QuicRelay {
    QuicRelay::new(identity, Router::new(RouterLimits::default(), &[9; 32])).unwrap()
}

fn encode(message: ClientMessage<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; message.encoded_len()];
    message.encode(&mut buf).unwrap();
    buf
}

/// A member: its port and client, what it received.
struct Member {
    port: u16,
    client: QuicClient,
    events: Vec<QuicEvent>,
    messages: Vec<Vec<u8>>,
}

impl Member {
    fn new(port: u16, pin: RelayPin, now: Instant) -> Member {
        Member {
            port,
            client: QuicClient::connect(addr(RELAY), pin, now).unwrap(),
            events: Vec::new(),
            messages: Vec::new(),
        }
    }

    fn relay_messages(&self) -> Vec<RelayMessage<'_>> {
        self.messages
            .iter()
            .map(|m| RelayMessage::parse(m).unwrap())
            .collect()
    }
}

/// Runs `steps` steps of `STEP`: every datagram sent is delivered in the same step (unless
/// `cut` says the member's path is down). Returns the time reached.
fn run(
    relay: &mut Option<QuicRelay>,
    members: &mut [Member],
    mut now: Instant,
    steps: usize,
    cut: impl Fn(u16) -> bool,
) -> Instant {
    let mut buf = Vec::new();
    for _ in 0..steps {
        now += STEP;
        for _ in 0..8 {
            for m in members.iter_mut() {
                if m.client.poll_timeout().is_some_and(|t| t <= now) {
                    m.client.handle_timeout(now);
                }
                while let Some(to) = m.client.poll_transmit(now, &mut buf) {
                    assert_eq!(to, addr(RELAY));
                    if let (Some(r), false) = (relay.as_mut(), cut(m.port)) {
                        r.handle_datagram(&buf, addr(m.port), now);
                    }
                }
                while let Some(e) = m.client.poll_event() {
                    m.events.push(e);
                }
                let mut message = Vec::new();
                while m.client.poll_message(&mut message) {
                    m.messages.push(message.clone());
                }
            }
            if let Some(r) = relay.as_mut() {
                if r.poll_timeout().is_some_and(|t| t <= now) {
                    r.handle_timeout(now);
                }
                while let Some(to) = r.poll_transmit(now, &mut buf) {
                    if let Some(m) = members.iter_mut().find(|m| addr(m.port) == to) {
                        if !cut(m.port) {
                            m.client.handle_datagram(&buf, addr(RELAY), now);
                        }
                    }
                }
            }
        }
    }
    now
}

#[test]
fn members_meet_through_the_relay_media_as_datagrams_control_on_the_stream() {
    let identity = RelayIdentity::generate().unwrap();
    let mut relay = Some(relay(&identity));
    let now = Instant::now();
    let token = ChannelToken([3; 16]);
    let mut members: Vec<Member> = (0..2)
        .map(|i| Member::new(8000 + i, identity.pin(), now))
        .collect();
    for m in &mut members {
        m.client.send(&encode(ClientMessage::Hello)).unwrap();
        m.client
            .send(&encode(ClientMessage::Subscribe { token }))
            .unwrap();
    }
    let now = run(&mut relay, &mut members, now, 40, |_| false);
    for m in &members {
        assert_eq!(m.events, vec![QuicEvent::Connected]);
        assert!(m.client.is_connected());
        let got = m.relay_messages();
        assert!(matches!(got[0], RelayMessage::Ready));
        assert!(matches!(got[1], RelayMessage::Subscribed { token: t, .. } if t == token));
    }
    let handle = match members[0].relay_messages()[1] {
        RelayMessage::Subscribed { handle, .. } => handle,
        _ => unreachable!(),
    };
    let frame = [0xab; 80];
    members[0]
        .client
        .send(&encode(ClientMessage::Media {
            handle,
            frame: &frame,
        }))
        .unwrap();
    run(&mut relay, &mut members, now, 4, |_| false);
    assert!(members[1]
        .relay_messages()
        .iter()
        .any(|m| matches!(m, RelayMessage::Media { frame: f, .. } if *f == frame)));
    assert_eq!(members[0].client.stats().media_sent, 1);
    let stats = relay.as_ref().unwrap().stats();
    assert_eq!(stats.accepted, 2);
    // Each member's first Initial was answered with a Retry: addresses proven by QUIC.
    assert_eq!(stats.retries, 2);
    assert_eq!(stats.misrouted, 0);
}

#[test]
fn a_relay_with_another_certificate_is_refused() {
    let real = RelayIdentity::generate().unwrap();
    let impostor = RelayIdentity::generate().unwrap();
    let mut relay = Some(relay(&impostor));
    let now = Instant::now();
    let mut members = vec![Member::new(8100, real.pin(), now)];
    members[0]
        .client
        .send(&encode(ClientMessage::Hello))
        .unwrap();
    run(&mut relay, &mut members, now, 200, |_| false);
    let m = &members[0];
    assert!(!m.client.is_connected());
    assert!(!m.events.contains(&QuicEvent::Connected));
    assert!(m.messages.is_empty(), "no relay message from an impostor");
    // The app can tell: every attempt failed its handshake.
    assert!(
        m.client.stats().handshake_failures >= 1,
        "{:?}",
        m.client.stats()
    );
    // The impostor never saw the Hello: the stream opens only after the handshake.
    assert_eq!(relay.unwrap().router().stats().hellos, 0);
}

#[test]
fn a_forged_source_address_gets_only_retries_and_no_connection() {
    // The forger captured a member's first datagram (its Initial) and sends it again and
    // again with the victim's address as source: what does the relay send the victim?
    let identity = RelayIdentity::generate().unwrap();
    let mut relay = relay(&identity);
    let now = Instant::now();
    let mut member = QuicClient::connect(addr(RELAY), identity.pin(), now).unwrap();
    let mut initial = Vec::new();
    assert!(member.poll_transmit(now, &mut initial).is_some());
    let victim = addr(9999);
    let mut sent_to_victim = 0usize;
    let mut forged = 0usize;
    let mut buf = Vec::new();
    let mut t = now;
    for _ in 0..100 {
        t += STEP;
        relay.handle_datagram(&initial, victim, t);
        forged += initial.len();
        relay.handle_timeout(t);
        while let Some(to) = relay.poll_transmit(t, &mut buf) {
            assert_eq!(to, victim);
            sent_to_victim += buf.len();
        }
    }
    assert_eq!(
        relay.connection_count(),
        0,
        "no state for an unproven address"
    );
    assert_eq!(relay.stats().accepted, 0);
    // Each Retry is smaller than the Initial that caused it (at least 1,200 bytes).
    assert!(
        sent_to_victim * 4 < forged,
        "amplification: {sent_to_victim} B sent for {forged} B forged"
    );
}

/// A client written against quinn-proto directly, free to break the carrier's rules: it
/// verifies nothing about the relay (it does not care) and writes what it likes.
mod rogue {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Instant;

    use quinn_proto::crypto::rustls::QuicClientConfig;
    use quinn_proto::{
        ClientConfig, Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig,
        StreamId,
    };
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct Anything;

    impl ServerCertVerifier for Anything {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    pub struct Rogue {
        pub endpoint: Endpoint,
        pub ch: ConnectionHandle,
        pub conn: Connection,
        pub stream: Option<StreamId>,
    }

    impl Rogue {
        pub fn connect(relay: SocketAddr, now: Instant) -> Rogue {
            let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Anything))
            .with_no_client_auth();
            tls.alpn_protocols = vec![sotto::quic::ALPN.to_vec()];
            let mut config = ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
            let mut transport = quinn_proto::TransportConfig::default();
            transport.datagram_receive_buffer_size(Some(65_536));
            config.transport_config(Arc::new(transport));
            let mut endpoint =
                Endpoint::new(Arc::new(EndpointConfig::default()), None, false, None);
            let (ch, conn) = endpoint.connect(now, config, relay, "relay").unwrap();
            Rogue {
                endpoint,
                ch,
                conn,
                stream: None,
            }
        }

        pub fn handle(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) {
            let mut scratch = Vec::new();
            if let Some(DatagramEvent::ConnectionEvent(_, event)) =
                self.endpoint
                    .handle(now, from, None, None, datagram.into(), &mut scratch)
            {
                self.conn.handle_event(event);
            }
            self.events();
        }

        pub fn events(&mut self) {
            while let Some(e) = self.conn.poll_endpoint_events() {
                if let Some(answer) = self.endpoint.handle_event(self.ch, e) {
                    self.conn.handle_event(answer);
                }
            }
            while self.conn.poll().is_some() {}
            if self.stream.is_none() && !self.conn.is_handshaking() {
                self.stream = self.conn.streams().open(Dir::Bi);
            }
        }

        pub fn write(&mut self, bytes: &[u8]) {
            let id = self.stream.unwrap();
            assert_eq!(self.conn.send_stream(id).write(bytes).unwrap(), bytes.len());
        }
    }
}

/// Runs the rogue against the relay for `steps` steps.
fn run_rogue(
    relay: &mut QuicRelay,
    rogue: &mut rogue::Rogue,
    mut now: Instant,
    steps: usize,
) -> Instant {
    let me = addr(8600);
    let mut buf = Vec::new();
    for _ in 0..steps {
        now += STEP;
        for _ in 0..6 {
            if rogue.conn.poll_timeout().is_some_and(|t| t <= now) {
                rogue.conn.handle_timeout(now);
            }
            rogue.events();
            buf.clear();
            while let Some(t) = rogue.conn.poll_transmit(now, 1, &mut buf) {
                relay.handle_datagram(&buf[..t.size], me, now);
                buf.clear();
            }
            rogue.events();
            if relay.poll_timeout().is_some_and(|t| t <= now) {
                relay.handle_timeout(now);
            }
            while let Some(to) = relay.poll_transmit(now, &mut buf) {
                assert_eq!(to, me);
                rogue.handle(&buf, addr(RELAY), now);
            }
        }
    }
    now
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut v = (message.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(message);
    v
}

#[test]
fn a_client_that_sends_a_request_as_a_datagram_is_not_heard() {
    let identity = RelayIdentity::generate().unwrap();
    let mut relay = relay(&identity);
    let now = Instant::now();
    let mut rogue = rogue::Rogue::connect(addr(RELAY), now);
    let now = run_rogue(&mut relay, &mut rogue, now, 20);
    assert_eq!(relay.stats().accepted, 1);
    rogue.write(&framed(&encode(ClientMessage::Hello)));
    let now = run_rogue(&mut relay, &mut rogue, now, 5);
    assert_eq!(relay.router().stats().hellos, 1);
    // A Subscribe as a DATAGRAM frame: dropped and counted, never routed.
    let subscribe = encode(ClientMessage::Subscribe {
        token: ChannelToken([1; 16]),
    });
    rogue
        .conn
        .datagrams()
        .send(subscribe.clone().into(), false)
        .unwrap();
    // And a media message on the stream.
    let media = encode(ClientMessage::Media {
        handle: sotto::relay::ChannelHandle(1),
        frame: &[1; 20],
    });
    rogue.write(&framed(&media));
    run_rogue(&mut relay, &mut rogue, now, 5);
    assert_eq!(relay.stats().misrouted, 2);
    assert_eq!(relay.router().stats().subscribes, 0);
    assert_eq!(relay.router().stats().media_in, 0);
    assert_eq!(relay.connection_count(), 1, "dropped, not closed");
}

#[test]
fn broken_framing_closes_the_connection() {
    let identity = RelayIdentity::generate().unwrap();
    for bad in [
        vec![0, 0, 0, 0], // length 0
        ((sotto::relay::MAX_MESSAGE + 1) as u32)
            .to_be_bytes()
            .to_vec(), // too long
    ] {
        let mut relay = relay(&identity);
        let now = Instant::now();
        let mut rogue = rogue::Rogue::connect(addr(RELAY), now);
        let now = run_rogue(&mut relay, &mut rogue, now, 20);
        rogue.write(&framed(&encode(ClientMessage::Hello)));
        rogue.write(&bad);
        run_rogue(&mut relay, &mut rogue, now, 1);
        assert_eq!(relay.stats().closed_protocol, 1);
        // The router forgot the connection at once (not only when QUIC drained it).
        assert_eq!(relay.router().connection_count(), 0);
        run_rogue(&mut relay, &mut rogue, now, 400);
        assert_eq!(relay.connection_count(), 0);
        assert!(rogue.conn.is_closed());
    }
}

#[test]
fn after_a_relay_restart_the_member_connects_again_and_says_so() {
    let identity = RelayIdentity::generate().unwrap();
    let mut relay = Some(relay(&identity));
    let now = Instant::now();
    let mut members = vec![Member::new(8300, identity.pin(), now)];
    members[0]
        .client
        .send(&encode(ClientMessage::Hello))
        .unwrap();
    let now = run(&mut relay, &mut members, now, 40, |_| false);
    assert_eq!(members[0].events, vec![QuicEvent::Connected]);
    // The relay process dies: no close, its state is gone.
    relay = None;
    let now = run(&mut relay, &mut members, now, 40 * 200, |_| false);
    assert!(members[0].events.contains(&QuicEvent::Disconnected));
    // A new relay (same identity) comes up: the member reconnects by itself.
    relay = Some(self::relay(&identity));
    run(&mut relay, &mut members, now, 3 * 200, |_| false);
    assert_eq!(
        members[0].events,
        vec![
            QuicEvent::Connected,
            QuicEvent::Disconnected,
            QuicEvent::Connected
        ]
    );
    assert!(members[0].client.stats().connects >= 2);
}

#[test]
fn a_path_outage_of_two_seconds_keeps_the_connection_and_loses_no_control_message() {
    let identity = RelayIdentity::generate().unwrap();
    let mut relay = Some(relay(&identity));
    let now = Instant::now();
    let token = ChannelToken([5; 16]);
    let mut members = vec![Member::new(8400, identity.pin(), now)];
    members[0]
        .client
        .send(&encode(ClientMessage::Hello))
        .unwrap();
    let now = run(&mut relay, &mut members, now, 40, |_| false);
    // Sent during the outage: it must arrive after (the stream retransmits).
    members[0]
        .client
        .send(&encode(ClientMessage::Subscribe { token }))
        .unwrap();
    let now = run(&mut relay, &mut members, now, 400, |_| true);
    run(&mut relay, &mut members, now, 1000, |_| false);
    assert_eq!(members[0].events, vec![QuicEvent::Connected]);
    assert!(members[0]
        .relay_messages()
        .iter()
        .any(|m| matches!(m, RelayMessage::Subscribed { token: t, .. } if *t == token)));
}

#[test]
fn a_graceful_shutdown_closes_every_connection() {
    let identity = RelayIdentity::generate().unwrap();
    let mut relay = Some(relay(&identity));
    let now = Instant::now();
    let mut members: Vec<Member> = (0..3)
        .map(|i| Member::new(8500 + i, identity.pin(), now))
        .collect();
    let now = run(&mut relay, &mut members, now, 40, |_| false);
    assert_eq!(relay.as_ref().unwrap().connection_count(), 3);
    relay.as_mut().unwrap().shut_down(now);
    run(&mut relay, &mut members, now, 600, |_| false);
    assert_eq!(relay.as_ref().unwrap().connection_count(), 0);
    for m in &members {
        assert!(m.events.contains(&QuicEvent::Disconnected));
    }
    // New connections are refused while shutting down.
    assert!(relay.as_ref().unwrap().stats().refused >= 1);
}

#[test]
fn pins_read_back_and_refuse_garbage() {
    let identity = RelayIdentity::generate().unwrap();
    let pin = identity.pin();
    assert_eq!(RelayPin::parse(&pin.to_string()), Ok(pin));
    assert!(RelayPin::parse("sha256:zz").is_err());
    assert!(RelayPin::parse(&pin.to_string()[7..]).is_err());
    assert!(RelayPin::parse(&format!("{pin}00")).is_err());
    assert!(RelayIdentity::from_der(identity.certificate().to_vec(), vec![1, 2, 3]).is_err());
    let other = RelayIdentity::generate().unwrap();
    assert!(
        RelayIdentity::from_der(
            identity.certificate().to_vec(),
            other.private_key().to_vec()
        )
        .is_err(),
        "a key that is not the certificate's"
    );
    assert!(RelayIdentity::from_der(
        identity.certificate().to_vec(),
        identity.private_key().to_vec()
    )
    .is_ok());
}

#[test]
fn a_client_that_never_reads_is_closed_and_forgotten() {
    // It publishes handshake messages on its own channel (the relay sends every one back
    // to it, as to every subscriber) and never reads its stream: the relay's queue for it
    // grows to the backlog limit, then the relay closes it.
    let identity = RelayIdentity::generate().unwrap();
    let mut relay = relay(&identity);
    let now = Instant::now();
    let mut rogue = rogue::Rogue::connect(addr(RELAY), now);
    let mut now = run_rogue(&mut relay, &mut rogue, now, 20);
    let token = ChannelToken([4; 16]);
    rogue.write(&framed(&encode(ClientMessage::Hello)));
    rogue.write(&framed(&encode(ClientMessage::Subscribe { token })));
    now = run_rogue(&mut relay, &mut rogue, now, 5);
    let handle = relay
        .router()
        .handle(sotto::relay::ConnId(1), &token)
        .expect("subscribed");
    let message = framed(&encode(ClientMessage::Handshake {
        handle,
        message: &[9; 8000],
    }));
    let mut pending = Vec::new();
    for _ in 0..2_000 {
        if relay.stats().closed_slow > 0 {
            break;
        }
        if pending.len() < 64 * 1024 {
            pending.extend_from_slice(&message);
        }
        let id = rogue.stream.unwrap();
        if let Ok(n) = rogue.conn.send_stream(id).write(&pending) {
            pending.drain(..n);
        }
        now = run_rogue(&mut relay, &mut rogue, now, 1);
    }
    assert_eq!(relay.stats().closed_slow, 1);
    assert_eq!(relay.router().connection_count(), 0);
    run_rogue(&mut relay, &mut rogue, now, 400);
    assert_eq!(relay.connection_count(), 0);
}
