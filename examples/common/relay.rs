//! An in-process relay for the examples: sotto's `Router` taking each member's datagrams
//! as they would arrive from its carrier (in process, each member is one connection by
//! construction), with every datagram it is given recorded.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use sotto::media::ChannelToken;
use sotto::relay::{ClientMessage, ConnId, Router, RouterLimits};

/// The relay and what it saw.
pub struct InProcessRelay {
    router: Router,
    recording: Vec<u8>,
    datagrams: usize,
    tokens: HashSet<ChannelToken>,
    media_sizes: BTreeMap<usize, usize>,
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
            recording: Vec::new(),
            datagrams: 0,
            tokens: HashSet::new(),
            media_sizes: BTreeMap::new(),
        }
    }

    /// Takes one datagram from connection `from` at `now`; returns what the relay sends,
    /// with each destination connection.
    pub fn receive(&mut self, from: usize, datagram: &[u8], now: Instant) -> Vec<(usize, Vec<u8>)> {
        self.recording.extend_from_slice(datagram);
        self.datagrams += 1;
        match ClientMessage::parse(datagram) {
            Ok(ClientMessage::Subscribe { token, .. }) => {
                self.tokens.insert(token);
            }
            Ok(ClientMessage::Media { frame, .. }) => {
                *self.media_sizes.entry(frame.len()).or_default() += 1;
            }
            _ => {}
        }
        let mut out = Vec::new();
        let _ = self.router.receive(
            ConnId(from as u64),
            datagram,
            now,
            &mut |to, bytes: &[u8]| out.push((to.0 as usize, bytes.to_vec())),
        );
        out
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
