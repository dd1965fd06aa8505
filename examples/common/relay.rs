//! An in-process relay for the examples and tests: routes by channel token, keeps Welcome
//! mailboxes keyed by KeyPackage reference, and records every byte it is given.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use sotto::media::ChannelToken;

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

/// The relay.
#[derive(Default)]
pub struct InProcessRelay {
    next_id: MemberId,
    channels: HashMap<ChannelToken, Vec<MemberId>>,
    mailboxes: HashMap<Vec<u8>, Vec<Bytes>>,
    outbox: Vec<(MemberId, Delivery)>,
    recording: Vec<u8>,
    datagrams: usize,
    tokens: HashSet<ChannelToken>,
    media_sizes: BTreeMap<usize, usize>,
}

impl InProcessRelay {
    /// An empty relay.
    pub fn new() -> InProcessRelay {
        InProcessRelay::default()
    }

    fn record(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.recording.extend_from_slice(p);
        }
        self.datagrams += 1;
    }

    /// A new connection.
    pub fn connect(&mut self) -> MemberId {
        self.next_id += 1;
        self.next_id
    }

    /// Subscribes `id` to a channel.
    pub fn subscribe(&mut self, id: MemberId, token: ChannelToken) {
        self.record(&[b"S", &token.0]);
        self.tokens.insert(token);
        let subs = self.channels.entry(token).or_default();
        if !subs.contains(&id) {
            subs.push(id);
        }
    }

    /// Unsubscribes `id` from a channel.
    pub fn unsubscribe(&mut self, id: MemberId, token: ChannelToken) {
        self.record(&[b"U", &token.0]);
        if let Some(subs) = self.channels.get_mut(&token) {
            subs.retain(|s| *s != id);
        }
    }

    /// Media from `id` to every other subscriber of the channel.
    pub fn publish_media(&mut self, id: MemberId, token: ChannelToken, packet: &[u8]) {
        self.record(&[b"M", &token.0, packet]);
        *self.media_sizes.entry(packet.len()).or_default() += 1;
        let packet = Bytes::copy_from_slice(packet);
        for sub in self.channels.get(&token).into_iter().flatten() {
            if *sub != id {
                self.outbox.push((*sub, Delivery::Media(packet.clone())));
            }
        }
    }

    /// A handshake message to every subscriber of the channel, the sender included (so it
    /// learns its commit was ordered).
    pub fn publish_handshake(&mut self, id: MemberId, token: ChannelToken, message: &[u8]) {
        self.record(&[b"H", &token.0, message]);
        let _ = id;
        let message = Bytes::copy_from_slice(message);
        for sub in self.channels.get(&token).into_iter().flatten() {
            self.outbox
                .push((*sub, Delivery::Handshake(message.clone())));
        }
    }

    /// Leaves a Welcome in the mailbox of a KeyPackage reference.
    pub fn post_welcome(&mut self, reference: &[u8], welcome: &[u8]) {
        self.record(&[b"W", reference, welcome]);
        self.mailboxes
            .entry(reference.to_vec())
            .or_default()
            .push(Bytes::copy_from_slice(welcome));
    }

    /// Takes the oldest Welcome of a mailbox.
    pub fn fetch_welcome(&mut self, reference: &[u8]) -> Option<Vec<u8>> {
        self.record(&[b"F", reference]);
        let box_ = self.mailboxes.get_mut(reference)?;
        if box_.is_empty() {
            return None;
        }
        Some(box_.remove(0).to_vec())
    }

    /// Everything to deliver since the last call.
    pub fn drain(&mut self) -> Vec<(MemberId, Delivery)> {
        std::mem::take(&mut self.outbox)
    }

    /// Every byte given to the relay, concatenated.
    pub fn recording(&self) -> &[u8] {
        &self.recording
    }

    /// Bytes recorded.
    pub fn recorded_bytes(&self) -> usize {
        self.recording.len()
    }

    /// Messages recorded.
    pub fn recorded_datagrams(&self) -> usize {
        self.datagrams
    }

    /// Distinct channel tokens seen.
    pub fn distinct_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Media packet sizes seen, with counts.
    pub fn media_size_histogram(&self) -> BTreeMap<usize, usize> {
        self.media_sizes.clone()
    }
}
