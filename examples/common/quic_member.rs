//! A call member's network side over QUIC: one UDP socket on 127.0.0.1 (or any address for
//! a remote relay), sotto's sans-IO `QuicClient` on it, and the moves between the socket,
//! the QUIC connection and the `Call`, in real time.
#![allow(dead_code)]

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use sotto::call::Call;
use sotto::quic::{QuicClient, QuicEvent, RelayPin};

/// The socket and the QUIC connection of one member.
pub struct QuicWire {
    socket: UdpSocket,
    quic: QuicClient,
    buf: Vec<u8>,
    out: Vec<u8>,
    message: Vec<u8>,
    /// Whether the connection was ever up (a later `Connected` is a reconnection).
    connected_once: bool,
    /// Socket send errors.
    pub send_errors: u64,
    /// Connections lost, and made again.
    pub disconnects: u64,
    /// Reconnections (a new QUIC connection after a lost one).
    pub reconnects: u64,
}

impl QuicWire {
    /// Opens a socket and starts connecting to the relay at `relay` pinned to `pin`.
    pub fn connect(relay: SocketAddr, pin: RelayPin, now: Instant) -> std::io::Result<QuicWire> {
        let bind: SocketAddr = if relay.ip().is_loopback() {
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            SocketAddr::from(([0, 0, 0, 0], 0))
        };
        let socket = UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        let quic = QuicClient::connect(relay, pin, now)
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, e))?;
        Ok(QuicWire {
            socket,
            quic,
            buf: vec![0u8; 65_536],
            out: Vec::with_capacity(2048),
            message: Vec::with_capacity(2048),
            connected_once: false,
            send_errors: 0,
            disconnects: 0,
            reconnects: 0,
        })
    }

    /// The socket's own address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// The QUIC client (its counters, its connection's).
    pub fn quic(&self) -> &QuicClient {
        &self.quic
    }

    /// Whether the connection is up.
    pub fn is_connected(&self) -> bool {
        self.quic.is_connected()
    }

    /// Everything that can move now: datagrams in (to the call), the call's and QUIC's
    /// timers, the call's messages out.
    pub fn pump(&mut self, call: &mut Call, now: Instant) {
        loop {
            match self.socket.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    let bytes = self.buf.get(..n).unwrap_or(&[]);
                    self.quic.handle_datagram(bytes, from, now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // ICMP errors of earlier sends (the relay is not up yet): QUIC retries.
                Err(_) => continue,
            }
        }
        if self.quic.poll_timeout().is_some_and(|t| t <= now) {
            self.quic.handle_timeout(now);
        }
        while let Some(event) = self.quic.poll_event() {
            match event {
                QuicEvent::Connected if std::mem::replace(&mut self.connected_once, true) => {
                    // A new connection: the relay holds none of this member's state.
                    self.reconnects += 1;
                    call.transport_reset(now);
                }
                QuicEvent::Disconnected => self.disconnects += 1,
                _ => {}
            }
        }
        while self.quic.poll_message(&mut self.message) {
            // A message that does not parse is refused by the call and changes nothing.
            let _ = call.handle_datagram(&self.message, now);
        }
        if call.poll_timeout().is_some_and(|t| t <= now) {
            call.handle_timeout(now);
        }
        self.flush(call, now);
    }

    /// Sends what the call queued, and what QUIC has to send.
    pub fn flush(&mut self, call: &mut Call, now: Instant) {
        while call.poll_transmit(&mut self.message) {
            // Refused only beyond the backlog (the relay has been unreachable for long).
            let _ = self.quic.send(&self.message);
        }
        while let Some(to) = self.quic.poll_transmit(now, &mut self.out) {
            if self.socket.send_to(&self.out, to).is_err() {
                self.send_errors += 1;
            }
        }
    }

    /// Hangs up the connection (the relay learns at once) and sends the close.
    pub fn close(&mut self, now: Instant) {
        self.quic.close(now);
        while let Some(to) = self.quic.poll_transmit(now, &mut self.out) {
            let _ = self.socket.send_to(&self.out, to);
        }
    }
}
