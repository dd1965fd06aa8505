//! An in-process relay for the examples and tests: sotto's `Router`, reached through each
//! member's `RelayClient`, with every datagram the relay is given recorded.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use sotto::media::ChannelToken;
use sotto::relay::{ClientEvent, ClientMessage, ConnId, Cookie, RelayClient, Router, RouterLimits};

/// A connection to the relay.
pub type MemberId = u64;

/// What the relay hands a member.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// An SFrame packet.
    Media(Bytes),
    /// An MLS handshake message, in the relay's total order.
    Handshake(Bytes),
}

/// The relay and its clients' ends.
pub struct InProcessRelay {
    router: Router,
    clients: BTreeMap<MemberId, RelayClient>,
    next_id: MemberId,
    outbox: Vec<(MemberId, Delivery)>,
    welcomes: BTreeMap<MemberId, Vec<Bytes>>,
    recording: Vec<u8>,
    datagrams: usize,
    tokens: HashSet<ChannelToken>,
    ready: HashSet<MemberId>,
    media_sizes: BTreeMap<usize, usize>,
    buf: BytesMut,
    now: Instant,
}

impl Default for InProcessRelay {
    fn default() -> Self {
        InProcessRelay::new()
    }
}

impl InProcessRelay {
    /// An empty relay.
    pub fn new() -> InProcessRelay {
        InProcessRelay {
            router: Router::new(RouterLimits::default(), &[0x5e; 32]),
            clients: BTreeMap::new(),
            next_id: 0,
            outbox: Vec::new(),
            welcomes: BTreeMap::new(),
            recording: Vec::new(),
            datagrams: 0,
            tokens: HashSet::new(),
            ready: HashSet::new(),
            media_sizes: BTreeMap::new(),
            buf: BytesMut::new(),
            now: Instant::now(),
        }
    }

    /// A new connection; it says Hello first, as every client does (an in-process relay
    /// needs no address check, so the router answers `Ready` at once).
    pub fn connect(&mut self) -> MemberId {
        self.next_id += 1;
        let id = self.next_id;
        let mut client = RelayClient::new();
        if client.hello(Cookie::default(), &mut self.buf).is_ok() {
            self.clients.insert(id, client);
            self.send(id);
        }
        id
    }

    /// Whether the relay answered `id`'s Hello.
    pub fn is_ready(&self, id: MemberId) -> bool {
        self.ready.contains(&id)
    }

    /// Hands the datagram in `self.buf` from `id` to the router and routes its answers to
    /// the clients.
    fn send(&mut self, id: MemberId) {
        let datagram = self.buf.split().freeze();
        self.recording.extend_from_slice(&datagram);
        self.datagrams += 1;
        match ClientMessage::parse(&datagram) {
            Ok(ClientMessage::Subscribe { token, .. }) => {
                self.tokens.insert(token);
            }
            Ok(ClientMessage::Media { frame, .. }) => {
                *self.media_sizes.entry(frame.len()).or_default() += 1;
            }
            _ => {}
        }
        let mut replies: Vec<(u64, Vec<u8>)> = Vec::new();
        let _ = self
            .router
            .receive(ConnId(id), &datagram, self.now, &mut |to, bytes: &[u8]| {
                replies.push((to.0, bytes.to_vec()))
            });
        for (to, bytes) in replies {
            let Some(client) = self.clients.get_mut(&to) else {
                continue;
            };
            match client.receive(&bytes) {
                Ok(ClientEvent::Media { frame, .. }) => self
                    .outbox
                    .push((to, Delivery::Media(Bytes::copy_from_slice(frame)))),
                Ok(ClientEvent::Handshake { message, .. }) => self
                    .outbox
                    .push((to, Delivery::Handshake(Bytes::copy_from_slice(message)))),
                Ok(ClientEvent::Welcome { welcome, .. }) => self
                    .welcomes
                    .entry(to)
                    .or_default()
                    .push(Bytes::copy_from_slice(welcome)),
                Ok(ClientEvent::Ready) => {
                    self.ready.insert(to);
                }
                _ => {}
            }
        }
    }

    /// Subscribes `id` to a channel.
    pub fn subscribe(&mut self, id: MemberId, token: ChannelToken) {
        if let Some(c) = self.clients.get_mut(&id) {
            if c.subscribe(token, &mut self.buf).is_ok() {
                self.send(id);
            }
        }
    }

    /// Unsubscribes `id` from a channel.
    pub fn unsubscribe(&mut self, id: MemberId, token: ChannelToken) {
        if let Some(c) = self.clients.get_mut(&id) {
            if c.unsubscribe(&token, &mut self.buf).is_ok() {
                self.send(id);
            }
        }
    }

    /// Media from `id` to every other subscriber of the channel.
    pub fn publish_media(&mut self, id: MemberId, token: ChannelToken, packet: &[u8]) {
        if let Some(c) = self.clients.get_mut(&id) {
            if c.media(&token, packet, &mut self.buf).is_ok() {
                self.send(id);
            }
        }
    }

    /// A handshake message to every subscriber of the channel, the sender included (so it
    /// learns its commit was ordered).
    pub fn publish_handshake(&mut self, id: MemberId, token: ChannelToken, message: &[u8]) {
        if let Some(c) = self.clients.get_mut(&id) {
            if c.handshake(&token, message, &mut self.buf).is_ok() {
                self.send(id);
            }
        }
    }

    /// Leaves a Welcome in the mailbox of a KeyPackage reference (sent from connection 0,
    /// the relay's own bookkeeping connection, since any client may deliver).
    pub fn post_welcome(&mut self, reference: &[u8], welcome: &[u8]) {
        let id = self.clients.keys().next().copied().unwrap_or(0);
        if let Some(c) = self.clients.get_mut(&id) {
            if c.deliver_welcome(reference, welcome, &mut self.buf).is_ok() {
                self.send(id);
            }
        }
    }

    /// Takes a Welcome from a mailbox, asking over a fresh connection (the invitee's).
    pub fn fetch_welcome(&mut self, reference: &[u8]) -> Option<Vec<u8>> {
        let id = self.connect();
        let c = self.clients.get_mut(&id)?;
        c.fetch_welcomes(reference, &mut self.buf).ok()?;
        self.send(id);
        self.router.disconnect(ConnId(id));
        self.clients.remove(&id);
        self.welcomes
            .remove(&id)?
            .into_iter()
            .next()
            .map(|b| b.to_vec())
    }

    /// Everything to deliver since the last call.
    pub fn drain(&mut self) -> Vec<(MemberId, Delivery)> {
        std::mem::take(&mut self.outbox)
    }

    /// Every datagram given to the relay, concatenated.
    pub fn recording(&self) -> &[u8] {
        &self.recording
    }

    /// Bytes recorded.
    pub fn recorded_bytes(&self) -> usize {
        self.recording.len()
    }

    /// Datagrams recorded.
    pub fn recorded_datagrams(&self) -> usize {
        self.datagrams
    }

    /// Distinct channel tokens subscribed to.
    pub fn distinct_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Sizes of the SFrame packets relayed, with counts.
    pub fn media_size_histogram(&self) -> BTreeMap<usize, usize> {
        self.media_sizes.clone()
    }
}
