//! [`RelayClient`]: the client's side of the wire format, sans-IO. It maps channel tokens to
//! the relay's per-connection handles and turns relay datagrams into events.

use bytes::BytesMut;

use super::{ChannelHandle, ClientMessage, ErrorCode, MailboxId, RelayMessage, Request, WireError};
use crate::media::ChannelToken;

/// What a relay datagram meant for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent<'a> {
    /// The relay confirmed a subscription.
    Subscribed {
        /// The channel.
        token: ChannelToken,
        /// How many handshake messages the channel numbered so far (see
        /// [`RelayMessage::Subscribed`]).
        next_seq: u64,
    },
    /// The relay confirmed leaving a channel.
    Unsubscribed {
        /// The channel.
        token: ChannelToken,
    },
    /// An SFrame frame from another member of a channel.
    Media {
        /// The channel.
        token: ChannelToken,
        /// The frame.
        frame: &'a [u8],
    },
    /// An MLS handshake message in the channel's order.
    Handshake {
        /// The channel.
        token: ChannelToken,
        /// The relay's sequence number.
        seq: u64,
        /// The message.
        message: &'a [u8],
    },
    /// A Welcome from a mailbox this client fetched.
    Welcome {
        /// The mailbox (the KeyPackage reference it was fetched under).
        mailbox: MailboxId<'a>,
        /// The Welcome.
        welcome: &'a [u8],
    },
    /// A Welcome this client delivered was stored.
    Stored {
        /// The mailbox it was stored in.
        mailbox: MailboxId<'a>,
    },
    /// The relay refused a request. [`ErrorCode::NotConnected`] means the relay holds
    /// nothing of this connection: the client forgot its subscriptions and pending
    /// requests, and takes requests again after a [`hello`](RelayClient::hello) is
    /// answered ([`Ready`](Self::Ready)); then subscribe again to every channel.
    Refused {
        /// Why.
        code: ErrorCode,
    },
    /// A message for a handle this client does not know (e.g. just unsubscribed).
    Stale,
    /// A reply to a request this client did not make, or no longer waits for: a
    /// `Subscribed` for a token it did not ask to subscribe to, an `Unsubscribed` for a
    /// handle it did not ask to leave, a `Welcome` or `Stored` for a mailbox it did not
    /// ask about, an error about a request it did not send, a `Ready` without a Hello.
    /// The second answer to a retransmitted request, or a late one; it changed nothing, and
    /// is counted ([`RelayClient::unsolicited`]).
    Unsolicited,
    /// The relay takes this client's requests (the answer to a Hello).
    Ready,
}

/// Errors of the client side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The wire format refused the message.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// No handle for that token yet (subscribe first and wait for the confirmation).
    #[error("not subscribed to that channel")]
    NotSubscribed,
    /// The relay has not answered a Hello yet, or said it holds nothing of this connection
    /// ([`ErrorCode::NotConnected`]): say Hello and wait for [`ClientEvent::Ready`].
    #[error("no Ready from the relay yet")]
    NotReady,
}

/// The client side of one relay connection (see [`crate::relay`]).
#[derive(Debug, Default)]
pub struct RelayClient {
    handles: Vec<(ChannelToken, ChannelHandle)>,
    /// The relay answered a Hello, and has not said since that it forgot the connection.
    ready: bool,
    /// What this client asked for and has no answer to yet: only those answers are taken.
    hello_pending: bool,
    subscribing: Vec<ChannelToken>,
    unsubscribing: Vec<ChannelHandle>,
    delivering: Vec<Vec<u8>>,
    /// Mailboxes fetched from, most recent last (a fetch may get several Welcomes, and a
    /// retry's answers may come late, so they stay; at most [`FETCHED`]).
    fetched: Vec<Vec<u8>>,
    unsolicited: u64,
}

/// How many mailboxes a client remembers fetching from.
const FETCHED: usize = 8;

/// Adds `item` to `list` unless it is there.
fn note<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Removes `item` from `list`; whether it was there.
fn take<T: PartialEq>(list: &mut Vec<T>, item: &T) -> bool {
    let before = list.len();
    list.retain(|x| x != item);
    list.len() != before
}

impl RelayClient {
    /// A client with no subscriptions.
    pub fn new() -> RelayClient {
        RelayClient::default()
    }

    fn handle(&self, token: &ChannelToken) -> Option<ChannelHandle> {
        self.handles
            .iter()
            .find(|(t, _)| t == token)
            .map(|(_, h)| *h)
    }

    fn token(&self, handle: ChannelHandle) -> Option<ChannelToken> {
        self.handles
            .iter()
            .find(|(_, h)| *h == handle)
            .map(|(t, _)| *t)
    }

    fn ready(&self) -> Result<(), ClientError> {
        if self.ready {
            Ok(())
        } else {
            Err(ClientError::NotReady)
        }
    }

    /// Whether the relay takes this client's requests: it answered a Hello, and has not said
    /// since that it forgot the connection.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Forgets the connection: the carrier made a new one (a new QUIC connection after
    /// the last was lost), and the relay holds nothing of this client there. Not ready,
    /// no subscriptions, nothing awaited; say Hello again.
    pub fn forget(&mut self) {
        self.forget_state();
        self.hello_pending = false;
    }

    fn forget_state(&mut self) {
        self.ready = false;
        self.handles.clear();
        self.subscribing.clear();
        self.unsubscribing.clear();
        self.delivering.clear();
    }

    /// Replies ignored as [`ClientEvent::Unsolicited`].
    pub fn unsolicited(&self) -> u64 {
        self.unsolicited
    }

    /// Whether the relay confirmed a subscription to `token`.
    pub fn is_subscribed(&self, token: &ChannelToken) -> bool {
        self.handle(token).is_some()
    }

    /// The channels the relay confirmed.
    pub fn subscribed(&self) -> impl Iterator<Item = ChannelToken> + '_ {
        self.handles.iter().map(|(t, _)| *t)
    }

    /// Appends a subscription request for `token` to `out` (one datagram).
    pub fn subscribe(
        &mut self,
        token: ChannelToken,
        out: &mut BytesMut,
    ) -> Result<(), ClientError> {
        self.ready()?;
        ClientMessage::Subscribe { token }.encode_into(out)?;
        note(&mut self.subscribing, token);
        Ok(())
    }

    /// Appends a request to leave `token`'s channel to `out`.
    pub fn unsubscribe(
        &mut self,
        token: &ChannelToken,
        out: &mut BytesMut,
    ) -> Result<(), ClientError> {
        self.ready()?;
        let handle = self.handle(token).ok_or(ClientError::NotSubscribed)?;
        ClientMessage::Unsubscribe { handle }.encode_into(out)?;
        note(&mut self.unsubscribing, handle);
        Ok(())
    }

    /// Appends a media datagram ([`MEDIA_OVERHEAD`](super::MEDIA_OVERHEAD) bytes of
    /// framing, then the SFrame frame) to `out`.
    pub fn media(
        &self,
        token: &ChannelToken,
        frame: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), ClientError> {
        let handle = self.handle(token).ok_or(ClientError::NotSubscribed)?;
        ClientMessage::Media { handle, frame }.encode_into(out)?;
        Ok(())
    }

    /// Appends a handshake datagram for `token`'s channel to `out`.
    pub fn handshake(
        &self,
        token: &ChannelToken,
        message: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), ClientError> {
        self.ready()?;
        let handle = self.handle(token).ok_or(ClientError::NotSubscribed)?;
        ClientMessage::Handshake { handle, message }.encode_into(out)?;
        Ok(())
    }

    /// Appends a datagram leaving `welcome` in the mailbox `reference` (the invitee's
    /// KeyPackage reference).
    pub fn deliver_welcome(
        &mut self,
        reference: &[u8],
        welcome: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), ClientError> {
        self.ready()?;
        let mailbox = MailboxId::new(reference)?;
        ClientMessage::DeliverWelcome { mailbox, welcome }.encode_into(out)?;
        note(&mut self.delivering, reference.to_vec());
        Ok(())
    }

    /// Appends a Hello: before anything else, and again after the relay said it forgot the
    /// connection ([`ErrorCode::NotConnected`]). Its answer is [`ClientEvent::Ready`].
    pub fn hello(&mut self, out: &mut BytesMut) -> Result<(), ClientError> {
        ClientMessage::Hello.encode_into(out)?;
        self.hello_pending = true;
        Ok(())
    }

    /// Appends a datagram asking for the Welcomes in the mailbox `reference`.
    pub fn fetch_welcomes(
        &mut self,
        reference: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), ClientError> {
        self.ready()?;
        let mailbox = MailboxId::new(reference)?;
        ClientMessage::FetchWelcomes { mailbox }.encode_into(out)?;
        if !self.fetched.iter().any(|m| m.as_slice() == reference) {
            if self.fetched.len() >= FETCHED {
                self.fetched.remove(0);
            }
            self.fetched.push(reference.to_vec());
        }
        Ok(())
    }

    /// Whether this client waits for an answer about `request`.
    fn asked(&mut self, request: &Request<'_>) -> bool {
        match request {
            Request::Subscribe(token) => take(&mut self.subscribing, token),
            Request::Unsubscribe(handle) => take(&mut self.unsubscribing, handle),
            Request::Media(handle) | Request::Handshake(handle) => self.token(*handle).is_some(),
            Request::DeliverWelcome(m) => take(&mut self.delivering, &m.as_bytes().to_vec()),
            Request::FetchWelcomes(m) => self.fetched.iter().any(|f| f.as_slice() == m.as_bytes()),
            Request::Hello => std::mem::take(&mut self.hello_pending),
            // This client sends nothing that does not parse.
            Request::Unparsed => false,
        }
    }

    /// Reads one datagram from the relay. A reply to nothing this client asked for (see
    /// [`ClientEvent::Unsolicited`]) changes nothing.
    pub fn receive<'a>(&mut self, datagram: &'a [u8]) -> Result<ClientEvent<'a>, ClientError> {
        let event = match RelayMessage::parse(datagram)? {
            RelayMessage::Subscribed {
                token,
                handle,
                next_seq,
            } if take(&mut self.subscribing, &token) => {
                self.handles.retain(|(t, h)| *t != token && *h != handle);
                self.handles.push((token, handle));
                ClientEvent::Subscribed { token, next_seq }
            }
            RelayMessage::Unsubscribed { handle } if take(&mut self.unsubscribing, &handle) => {
                match self.token(handle) {
                    Some(token) => {
                        self.handles.retain(|(_, h)| *h != handle);
                        ClientEvent::Unsubscribed { token }
                    }
                    None => ClientEvent::Stale,
                }
            }
            RelayMessage::Media { handle, frame } => match self.token(handle) {
                Some(token) => ClientEvent::Media { token, frame },
                None => ClientEvent::Stale,
            },
            RelayMessage::Handshake {
                handle,
                seq,
                message,
            } => match self.token(handle) {
                Some(token) => ClientEvent::Handshake {
                    token,
                    seq,
                    message,
                },
                None => ClientEvent::Stale,
            },
            RelayMessage::Welcome { mailbox, welcome }
                if self
                    .fetched
                    .iter()
                    .any(|m| m.as_slice() == mailbox.as_bytes()) =>
            {
                ClientEvent::Welcome { mailbox, welcome }
            }
            RelayMessage::Stored { mailbox }
                if take(&mut self.delivering, &mailbox.as_bytes().to_vec()) =>
            {
                ClientEvent::Stored { mailbox }
            }
            RelayMessage::Error { code, request } if self.asked(&request) => {
                if code == ErrorCode::NotConnected {
                    // The relay holds nothing of this connection: nothing of before holds
                    // there (a Hello in flight stays awaited).
                    self.forget_state();
                }
                ClientEvent::Refused { code }
            }
            RelayMessage::Ready if std::mem::take(&mut self.hello_pending) => {
                self.ready = true;
                ClientEvent::Ready
            }
            _ => {
                self.unsolicited += 1;
                ClientEvent::Unsolicited
            }
        };
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{ConnId, Router, RouterLimits};
    use std::time::Instant;

    /// Feeds the datagram in `out` from `conn` to the router; returns what it sent.
    fn to_router(router: &mut Router, conn: ConnId, out: &mut BytesMut) -> Vec<(ConnId, Vec<u8>)> {
        let mut inbox = Vec::new();
        let _ = router.receive(conn, out, Instant::now(), &mut |to, d: &[u8]| {
            inbox.push((to, d.to_vec()))
        });
        out.clear();
        inbox
    }

    #[test]
    fn client_and_router_round_trip() {
        let mut router = Router::new(RouterLimits::default(), &[1; 32]);
        let token = ChannelToken([3; 16]);
        let mut a = RelayClient::new();
        let mut b = RelayClient::new();
        let mut out = BytesMut::new();
        for (conn, client) in [(ConnId(1), &mut a), (ConnId(2), &mut b)] {
            assert_eq!(
                client.subscribe(token, &mut out),
                Err(ClientError::NotReady)
            );
            client.hello(&mut out).unwrap();
            let replies = to_router(&mut router, conn, &mut out);
            assert_eq!(client.receive(&replies[0].1), Ok(ClientEvent::Ready));
            client.subscribe(token, &mut out).unwrap();
            let replies = to_router(&mut router, conn, &mut out);
            assert_eq!(
                client.receive(&replies[0].1),
                Ok(ClientEvent::Subscribed { token, next_seq: 0 })
            );
        }
        a.media(&token, b"frame", &mut out).unwrap();
        assert_eq!(out.len(), crate::relay::MEDIA_OVERHEAD + 5);
        let inbox = to_router(&mut router, ConnId(1), &mut out);
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].0, ConnId(2));
        assert_eq!(
            b.receive(&inbox[0].1).unwrap(),
            ClientEvent::Media {
                token,
                frame: b"frame"
            }
        );
        assert_eq!(
            a.media(&ChannelToken([4; 16]), b"x", &mut out),
            Err(ClientError::NotSubscribed)
        );
    }

    #[test]
    fn a_forgotten_connection_says_hello_again() {
        let mut router = Router::new(RouterLimits::default(), &[1; 32]);
        let token = ChannelToken([3; 16]);
        let mut a = RelayClient::new();
        let mut out = BytesMut::new();
        a.hello(&mut out).unwrap();
        let replies = to_router(&mut router, ConnId(1), &mut out);
        assert_eq!(a.receive(&replies[0].1), Ok(ClientEvent::Ready));
        a.subscribe(token, &mut out).unwrap();
        let replies = to_router(&mut router, ConnId(1), &mut out);
        assert!(matches!(
            a.receive(&replies[0].1),
            Ok(ClientEvent::Subscribed { .. })
        ));
        // The relay restarts: it holds nothing of the connection, and says so.
        let mut router = Router::new(RouterLimits::default(), &[2; 32]);
        a.media(&token, b"frame", &mut out).unwrap();
        let replies = to_router(&mut router, ConnId(1), &mut out);
        assert_eq!(
            a.receive(&replies[0].1),
            Ok(ClientEvent::Refused {
                code: ErrorCode::NotConnected
            })
        );
        assert!(!a.is_ready());
        assert!(!a.is_subscribed(&token));
        assert_eq!(a.subscribe(token, &mut out), Err(ClientError::NotReady));
        a.hello(&mut out).unwrap();
        let replies = to_router(&mut router, ConnId(1), &mut out);
        assert_eq!(a.receive(&replies[0].1), Ok(ClientEvent::Ready));
        a.subscribe(token, &mut out).unwrap();
        let replies = to_router(&mut router, ConnId(1), &mut out);
        assert!(matches!(
            a.receive(&replies[0].1),
            Ok(ClientEvent::Subscribed { .. })
        ));
        assert!(a.is_subscribed(&token));
    }
}
