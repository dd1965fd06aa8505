//! The transport seam of the call engine: what [`Call`](super::Call) needs from whatever
//! carries its bytes, and [`RelayTransport`], the implementation for sotto's relay wire.
//!
//! A transport is sans-IO like the engine: each request writes at most one datagram into
//! the `out` buffer it is given (the engine queues it for
//! [`Call::poll_transmit`](super::Call::poll_transmit)), and [`Transport::receive`] turns
//! one received datagram into an [`Inbound`]. The engine never looks inside the bytes, so
//! another wire (RTP and a data channel through an SFU, QUIC) plugs in here without the
//! engine knowing which one it runs over.

use std::time::Instant;

use bytes::BytesMut;

use crate::media::ChannelToken;
use crate::relay::{ClientError, ClientEvent, ErrorCode, RelayClient, WireError};

/// Why a transport could not do what was asked, or could not read a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The transport is not connected yet (no `Ready` from the other side).
    #[error("transport not ready")]
    NotReady,
    /// No confirmed subscription to that channel.
    #[error("not subscribed to that channel")]
    NotSubscribed,
    /// The message does not fit the wire format (too large, bad mailbox).
    #[error("message does not fit the wire format")]
    TooLarge,
    /// A received datagram did not parse.
    #[error("malformed datagram")]
    Malformed,
}

impl From<ClientError> for TransportError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::NotReady => TransportError::NotReady,
            ClientError::NotSubscribed => TransportError::NotSubscribed,
            ClientError::Wire(
                WireError::TooLarge { .. }
                | WireError::InvalidMailboxId { .. }
                | WireError::BufferTooSmall { .. },
            ) => TransportError::TooLarge,
            _ => TransportError::Malformed,
        }
    }
}

/// What one received datagram meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inbound<'a> {
    /// The transport is (again) connected: the other side may hold none of this client's
    /// subscriptions or requests from before, so everything is to be asked again.
    Ready,
    /// A subscription was confirmed.
    Subscribed {
        /// The channel.
        token: ChannelToken,
        /// How many handshake messages the channel numbered so far: the engine asks again
        /// for those it has not seen ([`Inbound::Handshake`]).
        next_seq: u64,
    },
    /// Leaving a channel was confirmed.
    Unsubscribed(ChannelToken),
    /// An SFrame frame published on a channel.
    Media {
        /// The channel.
        token: ChannelToken,
        /// The frame.
        frame: &'a [u8],
    },
    /// An MLS handshake message published on a channel.
    Handshake {
        /// The channel.
        token: ChannelToken,
        /// The message's number in the channel's order: the same for every receiver,
        /// from 0 in each channel (renumbered after [`Inbound::Ready`]). The engine gives
        /// the room a channel's messages in this order, none before every lower number was
        /// seen: it asks for missing ones with a repeated
        /// [`subscribe`](Transport::subscribe).
        seq: u64,
        /// The message.
        message: &'a [u8],
    },
    /// A Welcome from the mailbox of a KeyPackage reference this client asked about.
    Welcome {
        /// The mailbox (the KeyPackage reference).
        mailbox: &'a [u8],
        /// The Welcome.
        welcome: &'a [u8],
    },
    /// A Welcome this client delivered was stored in this mailbox.
    Stored {
        /// The mailbox.
        mailbox: &'a [u8],
    },
    /// A mailbox this client asked about was empty.
    MailboxEmpty,
    /// The other side refused a request. When it refused it because it forgot this
    /// client's connection, the transport is not [ready](Transport::is_ready) any more:
    /// the engine connects again.
    Refused,
    /// Nothing for the engine: stale, unsolicited or duplicate (counted by the transport).
    Ignored,
}

/// What the call engine needs from whatever carries its bytes: each request writes at most
/// one datagram into the `out` buffer it is given (the engine queues it for
/// [`Call::poll_transmit`](super::Call::poll_transmit)), and [`receive`](Self::receive)
/// turns one received datagram into an [`Inbound`]. The engine never looks inside the
/// bytes, so another wire (RTP and a data channel through an SFU, QUIC) plugs in here.
pub trait Transport {
    /// Whether requests can be sent (the other side said it is ready).
    fn is_ready(&self) -> bool;
    /// Whether the subscription to `token` is confirmed.
    fn is_subscribed(&self, token: &ChannelToken) -> bool;
    /// Appends the confirmed subscriptions to `into`.
    fn subscriptions(&self, into: &mut Vec<ChannelToken>);
    /// Forgets the connection: whatever carries this transport's datagrams connected
    /// anew, and the other side holds none of its state (subscriptions, requests). Not
    /// ready until [`connect`](Self::connect) is answered again.
    fn reset(&mut self);
    /// Writes the datagram that (re)connects: it is answered by [`Inbound::Ready`].
    fn connect(&mut self, out: &mut BytesMut) -> Result<(), TransportError>;
    /// Writes a request to subscribe to `token`. Repeated while subscribed, it asks for the
    /// channel's recent handshake messages again: the other side sends what it keeps, with
    /// the numbers it gave them (sotto's relay does: see
    /// [`RouterLimits::history_per_channel`](crate::relay::RouterLimits::history_per_channel)).
    fn subscribe(&mut self, token: ChannelToken, out: &mut BytesMut) -> Result<(), TransportError>;
    /// Writes a request to leave `token`.
    fn unsubscribe(
        &mut self,
        token: &ChannelToken,
        out: &mut BytesMut,
    ) -> Result<(), TransportError>;
    /// Writes one SFrame frame for the channel `token`.
    fn media(
        &mut self,
        token: &ChannelToken,
        frame: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TransportError>;
    /// Writes one MLS handshake message for the channel `token`.
    fn handshake(
        &mut self,
        token: &ChannelToken,
        message: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TransportError>;
    /// Writes a Welcome for the mailbox `mailbox` (a KeyPackage reference).
    fn deliver_welcome(
        &mut self,
        mailbox: &[u8],
        welcome: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TransportError>;
    /// Writes a request for the Welcomes in `mailbox`.
    fn fetch_welcomes(&mut self, mailbox: &[u8], out: &mut BytesMut) -> Result<(), TransportError>;
    /// Reads one received datagram at `now`. Whatever the transport writes into `out` (an
    /// answer of its own) is sent; sotto's transports write nothing there.
    fn receive<'a>(
        &mut self,
        datagram: &'a [u8],
        now: Instant,
        out: &mut BytesMut,
    ) -> Result<Inbound<'a>, TransportError>;
}

/// [`Transport`] over sotto's relay wire ([`crate::relay`]): a [`RelayClient`]. It is ready
/// once the relay answered a Hello, and not ready again from when the relay says it forgot
/// the connection ([`ErrorCode::NotConnected`]: it restarted, or dropped the connection)
/// until a new Hello is answered, so the engine connects again and asks everything again.
#[derive(Debug)]
pub struct RelayTransport {
    client: RelayClient,
}

impl Default for RelayTransport {
    fn default() -> Self {
        RelayTransport::new()
    }
}

impl RelayTransport {
    /// A transport with no connection yet.
    pub fn new() -> RelayTransport {
        RelayTransport {
            client: RelayClient::new(),
        }
    }

    /// The relay client underneath (its counters, its confirmed subscriptions).
    pub fn client(&self) -> &RelayClient {
        &self.client
    }

    /// The relay client underneath, mutably (to send requests of its own).
    pub fn client_mut(&mut self) -> &mut RelayClient {
        &mut self.client
    }
}

impl Transport for RelayTransport {
    fn is_ready(&self) -> bool {
        self.client.is_ready()
    }

    fn reset(&mut self) {
        self.client.forget();
    }

    fn is_subscribed(&self, token: &ChannelToken) -> bool {
        self.client.is_subscribed(token)
    }

    fn subscriptions(&self, into: &mut Vec<ChannelToken>) {
        into.extend(self.client.subscribed());
    }

    fn connect(&mut self, out: &mut BytesMut) -> Result<(), TransportError> {
        Ok(self.client.hello(out)?)
    }

    fn subscribe(&mut self, token: ChannelToken, out: &mut BytesMut) -> Result<(), TransportError> {
        Ok(self.client.subscribe(token, out)?)
    }

    fn unsubscribe(
        &mut self,
        token: &ChannelToken,
        out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        Ok(self.client.unsubscribe(token, out)?)
    }

    fn media(
        &mut self,
        token: &ChannelToken,
        frame: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        Ok(self.client.media(token, frame, out)?)
    }

    fn handshake(
        &mut self,
        token: &ChannelToken,
        message: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        Ok(self.client.handshake(token, message, out)?)
    }

    fn deliver_welcome(
        &mut self,
        mailbox: &[u8],
        welcome: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        Ok(self.client.deliver_welcome(mailbox, welcome, out)?)
    }

    fn fetch_welcomes(&mut self, mailbox: &[u8], out: &mut BytesMut) -> Result<(), TransportError> {
        Ok(self.client.fetch_welcomes(mailbox, out)?)
    }

    fn receive<'a>(
        &mut self,
        datagram: &'a [u8],
        _now: Instant,
        _out: &mut BytesMut,
    ) -> Result<Inbound<'a>, TransportError> {
        let event = self
            .client
            .receive(datagram)
            .map_err(|_| TransportError::Malformed)?;
        Ok(match event {
            ClientEvent::Ready => Inbound::Ready,
            ClientEvent::Subscribed { token, next_seq } => Inbound::Subscribed { token, next_seq },
            ClientEvent::Unsubscribed { token } => Inbound::Unsubscribed(token),
            ClientEvent::Media { token, frame } => Inbound::Media { token, frame },
            ClientEvent::Handshake {
                token,
                seq,
                message,
            } => Inbound::Handshake {
                token,
                seq,
                message,
            },
            ClientEvent::Welcome { mailbox, welcome } => Inbound::Welcome {
                mailbox: mailbox.as_bytes(),
                welcome,
            },
            ClientEvent::Stored { mailbox } => Inbound::Stored {
                mailbox: mailbox.as_bytes(),
            },
            ClientEvent::Refused {
                code: ErrorCode::MailboxEmpty,
            } => Inbound::MailboxEmpty,
            // NotConnected included: the client is not ready until a new Hello is answered.
            ClientEvent::Refused { .. } => Inbound::Refused,
            _ => Inbound::Ignored,
        })
    }
}
