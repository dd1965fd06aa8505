//! [`RelayClient`]: the client's side of the wire format, sans-IO. It maps channel tokens to
//! the relay's per-connection handles and turns relay datagrams into events.

use bytes::BytesMut;

use super::{ChannelHandle, ClientMessage, Cookie, ErrorCode, MailboxId, RelayMessage, WireError};
use crate::media::ChannelToken;

/// What a relay datagram meant for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent<'a> {
    /// The relay confirmed a subscription.
    Subscribed {
        /// The channel.
        token: ChannelToken,
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
    /// The relay refused a request.
    Refused {
        /// Why.
        code: ErrorCode,
    },
    /// A message for a handle this client does not know (e.g. just unsubscribed).
    Stale,
    /// The relay asks this client to prove its address: on first contact, when it forgot
    /// the connection (then it dropped the request that caused this, and holds none of the
    /// client's subscriptions), or to renew a validation. Answer with
    /// [`RelayClient::hello`] and this cookie — at most once per retry interval, since
    /// anyone can forge a Challenge — and after [`Ready`](Self::Ready) subscribe again to
    /// every channel (subscribing is idempotent).
    Challenge {
        /// The cookie to echo.
        cookie: Cookie,
    },
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
}

/// The client side of one relay connection (see [`crate::relay`]).
#[derive(Debug, Default)]
pub struct RelayClient {
    handles: Vec<(ChannelToken, ChannelHandle)>,
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

    /// Whether the relay confirmed a subscription to `token`.
    pub fn is_subscribed(&self, token: &ChannelToken) -> bool {
        self.handle(token).is_some()
    }

    /// The channels the relay confirmed.
    pub fn subscribed(&self) -> impl Iterator<Item = ChannelToken> + '_ {
        self.handles.iter().map(|(t, _)| *t)
    }

    /// Appends a subscription request for `token` to `out` (one datagram).
    pub fn subscribe(&self, token: ChannelToken, out: &mut BytesMut) -> Result<(), ClientError> {
        ClientMessage::Subscribe { token }.encode_into(out)?;
        Ok(())
    }

    /// Appends a request to leave `token`'s channel to `out`.
    pub fn unsubscribe(&self, token: &ChannelToken, out: &mut BytesMut) -> Result<(), ClientError> {
        let handle = self.handle(token).ok_or(ClientError::NotSubscribed)?;
        ClientMessage::Unsubscribe { handle }.encode_into(out)?;
        Ok(())
    }

    /// Appends a media datagram (3 bytes of framing, then the SFrame frame) to `out`.
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
        let handle = self.handle(token).ok_or(ClientError::NotSubscribed)?;
        ClientMessage::Handshake { handle, message }.encode_into(out)?;
        Ok(())
    }

    /// Appends a datagram leaving `welcome` in the mailbox `reference` (the invitee's
    /// KeyPackage reference).
    pub fn deliver_welcome(
        &self,
        reference: &[u8],
        welcome: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), ClientError> {
        let mailbox = MailboxId::new(reference)?;
        ClientMessage::DeliverWelcome { mailbox, welcome }.encode_into(out)?;
        Ok(())
    }

    /// Appends a Hello: with the default (all-zero) cookie before anything else, so the
    /// relay can challenge the address; with a [challenge's](ClientEvent::Challenge) cookie
    /// to answer it.
    pub fn hello(&self, cookie: Cookie, out: &mut BytesMut) -> Result<(), ClientError> {
        ClientMessage::Hello { cookie }.encode_into(out)?;
        Ok(())
    }

    /// Appends a datagram asking for the Welcomes in the mailbox `reference`.
    pub fn fetch_welcomes(&self, reference: &[u8], out: &mut BytesMut) -> Result<(), ClientError> {
        let mailbox = MailboxId::new(reference)?;
        ClientMessage::FetchWelcomes { mailbox }.encode_into(out)?;
        Ok(())
    }

    /// Reads one datagram from the relay.
    pub fn receive<'a>(&mut self, datagram: &'a [u8]) -> Result<ClientEvent<'a>, ClientError> {
        let event = match RelayMessage::parse(datagram)? {
            RelayMessage::Subscribed { token, handle } => {
                self.handles.retain(|(t, h)| *t != token && *h != handle);
                self.handles.push((token, handle));
                ClientEvent::Subscribed { token }
            }
            RelayMessage::Unsubscribed { handle } => match self.token(handle) {
                Some(token) => {
                    self.handles.retain(|(_, h)| *h != handle);
                    ClientEvent::Unsubscribed { token }
                }
                None => ClientEvent::Stale,
            },
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
            RelayMessage::Welcome { mailbox, welcome } => ClientEvent::Welcome { mailbox, welcome },
            RelayMessage::Stored { mailbox } => ClientEvent::Stored { mailbox },
            RelayMessage::Error { code, .. } => ClientEvent::Refused { code },
            RelayMessage::Challenge { cookie } => ClientEvent::Challenge { cookie },
            RelayMessage::Ready => ClientEvent::Ready,
        };
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{ConnId, Router, RouterLimits};
    use std::time::Instant;

    #[test]
    fn client_and_router_round_trip() {
        let now = Instant::now();
        let mut router = Router::new(RouterLimits::default());
        let token = ChannelToken([3; 16]);
        let mut a = RelayClient::new();
        let mut b = RelayClient::new();
        let mut out = BytesMut::new();
        let mut inbox: Vec<(ConnId, Vec<u8>)> = Vec::new();
        for (conn, client) in [(ConnId(1), &a), (ConnId(2), &b)] {
            out.clear();
            client.subscribe(token, &mut out).unwrap();
            router
                .receive(conn, &out, now, &mut |to, d: &[u8]| {
                    inbox.push((to, d.to_vec()))
                })
                .unwrap();
        }
        for (to, d) in inbox.drain(..) {
            let client = if to == ConnId(1) { &mut a } else { &mut b };
            assert_eq!(
                client.receive(&d).unwrap(),
                ClientEvent::Subscribed { token }
            );
        }
        out.clear();
        a.media(&token, b"frame", &mut out).unwrap();
        assert_eq!(out.len(), 3 + 5);
        router
            .receive(ConnId(1), &out, now, &mut |to, d: &[u8]| {
                inbox.push((to, d.to_vec()))
            })
            .unwrap();
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
}
