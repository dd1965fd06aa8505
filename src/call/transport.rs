//! The transport seam of the call engine: what [`Call`](super::Call) needs from whatever
//! carries its bytes, and [`RelayTransport`], the implementation for sotto's relay wire.
//!
//! A transport is sans-IO like the engine: each request writes at most one datagram into
//! the `out` buffer it is given (the engine queues it for
//! [`Call::poll_transmit`](super::Call::poll_transmit)), and [`Transport::receive`] turns
//! one received datagram into an [`Inbound`]. The engine never looks inside the bytes, so
//! another wire (RTP and a data channel through an SFU, QUIC) plugs in here without the
//! engine knowing which one it runs over.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::media::ChannelToken;
use crate::relay::{ClientError, ClientEvent, Cookie, ErrorCode, RelayClient, WireError};

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
    /// The transport is (again) connected: the other side holds none of this client's
    /// subscriptions or requests from before; everything is to be asked again.
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
    /// The other side refused a request.
    Refused,
    /// The transport answered by itself (e.g. proved its address): the answer is in
    /// `out`, to be sent.
    Answered,
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
    /// Reads one received datagram at `now`; an answer the transport makes by itself goes
    /// into `out` ([`Inbound::Answered`]).
    fn receive<'a>(
        &mut self,
        datagram: &'a [u8],
        now: Instant,
        out: &mut BytesMut,
    ) -> Result<Inbound<'a>, TransportError>;
}

/// [`Transport`] over sotto's relay wire ([`crate::relay`]): a [`RelayClient`] that also
/// answers the relay's address challenges, at most once per `retry` (anyone can forge a
/// challenge, so answering each would make this client a reflector).
#[derive(Debug)]
pub struct RelayTransport {
    client: RelayClient,
    ready: bool,
    retry: Duration,
    answered: Option<Instant>,
}

impl Default for RelayTransport {
    fn default() -> Self {
        RelayTransport::new()
    }
}

impl RelayTransport {
    /// A transport with no connection yet; challenges answered at most every 500 ms.
    pub fn new() -> RelayTransport {
        RelayTransport {
            client: RelayClient::new(),
            ready: false,
            retry: Duration::from_millis(500),
            answered: None,
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
        self.ready
    }

    fn is_subscribed(&self, token: &ChannelToken) -> bool {
        self.client.is_subscribed(token)
    }

    fn subscriptions(&self, into: &mut Vec<ChannelToken>) {
        into.extend(self.client.subscribed());
    }

    fn connect(&mut self, out: &mut BytesMut) -> Result<(), TransportError> {
        Ok(self.client.hello(Cookie::default(), out)?)
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
        now: Instant,
        out: &mut BytesMut,
    ) -> Result<Inbound<'a>, TransportError> {
        let event = self
            .client
            .receive(datagram)
            .map_err(|_| TransportError::Malformed)?;
        Ok(match event {
            ClientEvent::Ready => {
                self.ready = true;
                Inbound::Ready
            }
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
            ClientEvent::Refused { .. } => Inbound::Refused,
            ClientEvent::Challenge { cookie } => {
                if self
                    .answered
                    .is_some_and(|t| now.saturating_duration_since(t) < self.retry)
                {
                    return Ok(Inbound::Ignored);
                }
                self.answered = Some(now);
                self.client.hello(cookie, out)?;
                // Not ready again until the relay's Ready: if that answer is lost, the
                // engine says Hello again (a relay that validated the address does not
                // challenge it again, and drops requests with the old proof unanswered).
                self.ready = false;
                Inbound::Answered
            }
            _ => Inbound::Ignored,
        })
    }
}
