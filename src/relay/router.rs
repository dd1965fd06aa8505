//! [`Router`]: the relay's sans-IO state. Datagrams and time go in; datagrams come out
//! through a sink the I/O layer passes in. No sockets, no clock, no threads.

use crate::hash::IntMap;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

use super::wire::{
    ChannelHandle, ClientMessage, ErrorCode, MailboxId, RelayMessage, Request, HANDSHAKE_OVERHEAD,
    MAX_MESSAGE, MEDIA_OVERHEAD,
};
use crate::media::ChannelToken;

/// A connection, as the I/O layer (the carrier) names it: a QUIC connection, for sotto's
/// carrier. The router never interprets it, and trusts that every datagram it is given
/// under an id comes from that connection (see the [module docs](super)).
///
/// Ids are chosen by the I/O layer, never by peers, so the router hashes them with a cheap
/// non-keyed hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the router holds at most. A request that would exceed a limit is refused with an
/// [error](RelayMessage::Error) to its sender; nothing else changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterLimits {
    /// Connections: made by a connection's first Hello, ended by
    /// [`disconnect`](Router::disconnect). Default 10,000.
    pub max_connections: usize,
    /// Channels in total. Default 10,000.
    pub max_channels: usize,
    /// Channels one connection is subscribed to. Default 64 (a client keeps one token per
    /// epoch still in its grace period: up to 2^E of them).
    pub max_channels_per_connection: usize,
    /// Subscribers of one channel. Default 64.
    pub max_subscribers_per_channel: usize,
    /// Largest datagram accepted, in bytes; at most [`MAX_MESSAGE`] (larger values are
    /// lowered). Media messages are further bounded by
    /// [`MAX_MEDIA_MESSAGE`](super::MAX_MEDIA_MESSAGE). Default [`MAX_MESSAGE`].
    pub max_message: usize,
    /// Welcome mailboxes in total. Default 10,000.
    pub max_mailboxes: usize,
    /// Welcomes held in one mailbox. Default 4.
    pub max_welcomes_per_mailbox: usize,
    /// Bytes of Welcomes held in all mailboxes together. Default 64 MiB.
    pub max_welcome_bytes: usize,
    /// How long a Welcome is held after it was delivered. Fetching does not remove it (a
    /// fetch reply lost on the way can be fetched again). Default 24 hours.
    pub welcome_ttl: Duration,
    /// Bytes of Welcomes one connection may fetch per minute. A fetch is a few dozen bytes
    /// and its answer up to `max_welcomes_per_mailbox` × 60 KiB; this bounds what one
    /// connection's fetches can make the relay send.
    /// Default 256 KiB (a full mailbox of the largest Welcomes).
    pub max_fetch_bytes_per_minute: usize,
    /// Channels one connection opened (was their first subscriber) that still exist. A
    /// channel is charged to its opener until it closes (its last subscriber left) or the
    /// opener [disconnects](Router::disconnect), even after the opener left it, so one
    /// connection holds at most this share of `max_channels`. Default 32: a member opens
    /// at most one channel per epoch, and holds at most 2^E of them in their grace period
    /// (16 with the default KID layout), with room for channels others still hold open.
    pub max_channels_opened_per_connection: usize,
    /// Welcomes held on behalf of one connection (delivered by it, not yet expired). The
    /// charge ends when the Welcome expires or the connection disconnects (the Welcome
    /// stays for its invitee); a fetch does not end it, since the Welcome is still held.
    /// Default 64 (one connection holds at most this share of `max_mailboxes`).
    pub max_welcomes_per_connection: usize,
    /// Welcome bytes held on behalf of one connection, charged and released as
    /// `max_welcomes_per_connection`. Default 1 MiB (17 of the largest Welcomes; 1/64 of
    /// the default `max_welcome_bytes`).
    pub max_welcome_bytes_per_connection: usize,
    /// Handshake messages a channel keeps, the latest, for its subscribers: every
    /// `Subscribe` (a first one or a repeated one) is answered by `Subscribed` and then
    /// the kept messages, with their sequence numbers, so a client that missed one (lost on
    /// the way, or published before it subscribed) gets it and applies the channel's
    /// messages in the relay's order. Default 64 (an epoch's channel carries its proposals,
    /// its commit, rival commits and copies published again).
    pub history_per_channel: usize,
    /// Bytes of handshake messages one channel keeps. Default 256 KiB.
    pub history_bytes_per_channel: usize,
    /// Bytes of handshake messages all channels keep together; a message that does not
    /// fit is fanned out but not kept. Default 64 MiB.
    pub max_history_bytes: usize,
    /// How long a channel whose last subscriber left keeps its handshake messages (and its
    /// numbering) for a member that comes back to it: one that fell behind while the others
    /// moved on to the next epoch's channel. An idle channel forwards nothing (it has no
    /// subscribers), is charged to nobody, and is the first to go when the router needs
    /// room for a new channel. Zero: a channel closes with its last subscriber. Default 30 s.
    pub history_linger: Duration,
    /// Bytes of kept handshake messages one connection may be sent again per minute (the
    /// replays after its `Subscribe`s). A `Subscribe` costs 17 bytes and can bring a
    /// channel's whole history (up to `history_bytes_per_channel`), so without this a
    /// client repeating it would make the relay send far more than it receives. Beyond
    /// it, `Subscribed` still answers (its `next_seq` tells the client what it lacks) and
    /// the replay is cut short (counted in [`DropStats::replays_cut`]). Default 1 MiB.
    pub max_replay_bytes_per_minute: usize,
}

impl Default for RouterLimits {
    fn default() -> Self {
        RouterLimits {
            max_connections: 10_000,
            max_channels: 10_000,
            // A member holds one token per epoch in its grace period: up to 2^E (16 with
            // the default KID layout, 64 with E = 6).
            max_channels_per_connection: 64,
            max_subscribers_per_channel: 64,
            max_message: MAX_MESSAGE,
            max_mailboxes: 10_000,
            max_welcomes_per_mailbox: 4,
            max_welcome_bytes: 64 << 20,
            welcome_ttl: Duration::from_secs(24 * 3600),
            max_fetch_bytes_per_minute: 256 << 10,
            max_channels_opened_per_connection: 32,
            max_welcomes_per_connection: 64,
            max_welcome_bytes_per_connection: 1 << 20,
            history_per_channel: 64,
            history_bytes_per_channel: 256 << 10,
            max_history_bytes: 64 << 20,
            history_linger: Duration::from_secs(30),
            max_replay_bytes_per_minute: 1 << 20,
        }
    }
}

/// Requests refused, by reason: one count per error sent back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DropStats {
    /// [`ErrorCode::Malformed`].
    pub malformed: u64,
    /// [`ErrorCode::UnsupportedVersion`].
    pub unsupported_version: u64,
    /// [`ErrorCode::TooLarge`].
    pub too_large: u64,
    /// [`ErrorCode::UnknownHandle`].
    pub unknown_handle: u64,
    /// [`ErrorCode::TooManySubscriptions`].
    pub too_many_subscriptions: u64,
    /// [`ErrorCode::ChannelFull`].
    pub channel_full: u64,
    /// [`ErrorCode::RelayFull`].
    pub relay_full: u64,
    /// [`ErrorCode::MailboxFull`].
    pub mailbox_full: u64,
    /// [`ErrorCode::StorageFull`].
    pub storage_full: u64,
    /// [`ErrorCode::MailboxEmpty`] (a fetch with nothing to deliver).
    pub mailbox_empty: u64,
    /// [`ErrorCode::RateLimited`].
    pub rate_limited: u64,
    /// [`ErrorCode::TooManyChannelsOpened`].
    pub too_many_channels_opened: u64,
    /// [`ErrorCode::WelcomeQuotaExceeded`].
    pub welcome_quota: u64,
    /// [`ErrorCode::NotConnected`]: a request other than Hello from a connection the
    /// router holds no state for.
    pub not_connected: u64,
    /// Replays of a channel's history cut short by
    /// [`RouterLimits::max_replay_bytes_per_minute`] (not an error sent; not in
    /// [`total`](Self::total)).
    pub replays_cut: u64,
}

impl DropStats {
    /// The count for `code` (0 for codes the router never sends).
    pub fn get(&self, code: ErrorCode) -> u64 {
        match code {
            ErrorCode::Malformed => self.malformed,
            ErrorCode::UnsupportedVersion => self.unsupported_version,
            ErrorCode::TooLarge => self.too_large,
            ErrorCode::UnknownHandle => self.unknown_handle,
            ErrorCode::TooManySubscriptions => self.too_many_subscriptions,
            ErrorCode::ChannelFull => self.channel_full,
            ErrorCode::RelayFull => self.relay_full,
            ErrorCode::MailboxFull => self.mailbox_full,
            ErrorCode::StorageFull => self.storage_full,
            ErrorCode::MailboxEmpty => self.mailbox_empty,
            ErrorCode::RateLimited => self.rate_limited,
            ErrorCode::TooManyChannelsOpened => self.too_many_channels_opened,
            ErrorCode::WelcomeQuotaExceeded => self.welcome_quota,
            ErrorCode::NotConnected => self.not_connected,
            ErrorCode::Other(_) => 0,
        }
    }

    /// All requests refused.
    pub fn total(&self) -> u64 {
        ErrorCode::ALL.iter().map(|c| self.get(*c)).sum()
    }

    fn count(&mut self, code: ErrorCode) {
        let slot = match code {
            ErrorCode::Malformed => &mut self.malformed,
            ErrorCode::UnsupportedVersion => &mut self.unsupported_version,
            ErrorCode::TooLarge => &mut self.too_large,
            ErrorCode::UnknownHandle => &mut self.unknown_handle,
            ErrorCode::TooManySubscriptions => &mut self.too_many_subscriptions,
            ErrorCode::ChannelFull => &mut self.channel_full,
            ErrorCode::RelayFull => &mut self.relay_full,
            ErrorCode::MailboxFull => &mut self.mailbox_full,
            ErrorCode::StorageFull => &mut self.storage_full,
            ErrorCode::MailboxEmpty => &mut self.mailbox_empty,
            ErrorCode::RateLimited => &mut self.rate_limited,
            ErrorCode::TooManyChannelsOpened => &mut self.too_many_channels_opened,
            ErrorCode::WelcomeQuotaExceeded => &mut self.welcome_quota,
            ErrorCode::NotConnected => &mut self.not_connected,
            ErrorCode::Other(_) => return,
        };
        *slot = slot.saturating_add(1);
    }
}

/// Counters of a [`Router`]: what a reference relay logs (counts only, never tokens,
/// handles or payloads).
///
/// Every datagram in is either accepted (counted under its type) or refused (counted in
/// [`drops`](Self::drops), and answered with exactly one error), so
/// `datagrams_in = subscribes + unsubscribes + media_in + handshakes_in + welcomes_in +
/// fetches + hellos + drops.total()`, `errors_out = drops.total()` and
/// `datagrams_out = subscribes + unsubscribes + media_out + handshakes_out + welcomes_in +
/// welcomes_out + hellos + errors_out`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterStats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams handed to the sink.
    pub datagrams_out: u64,
    /// Bytes handed to the sink.
    pub bytes_out: u64,
    /// Subscribe requests accepted (each answered with `Subscribed`).
    pub subscribes: u64,
    /// Unsubscribe requests accepted (each answered with `Unsubscribed`).
    pub unsubscribes: u64,
    /// Media messages accepted.
    pub media_in: u64,
    /// Media messages sent.
    pub media_out: u64,
    /// Handshake messages accepted (each stamped with a sequence number).
    pub handshakes_in: u64,
    /// Handshake messages sent (fanned out or replayed).
    pub handshakes_out: u64,
    /// Of those, replayed from a channel's history after a `Subscribe`.
    pub handshakes_replayed: u64,
    /// Welcome deliveries accepted (each answered with `Stored`).
    pub welcomes_in: u64,
    /// Fetches that found at least one Welcome.
    pub fetches: u64,
    /// Welcome messages sent.
    pub welcomes_out: u64,
    /// Hellos accepted (each answered with `Ready`).
    pub hellos: u64,
    /// Error messages sent.
    pub errors_out: u64,
    /// Channels created (by a first subscriber).
    pub channels_opened: u64,
    /// Channels removed (their last subscriber left).
    pub channels_closed: u64,
    /// Requests refused, by reason.
    pub drops: DropStats,
}

/// What one connection holds of the router's shared resources, charged against its
/// quotas ([`Router::usage`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// Channels subscribed to ([`RouterLimits::max_channels_per_connection`]).
    pub subscriptions: usize,
    /// Channels opened that still exist
    /// ([`RouterLimits::max_channels_opened_per_connection`]).
    pub channels_opened: usize,
    /// Welcomes held for it ([`RouterLimits::max_welcomes_per_connection`]).
    pub welcomes: usize,
    /// Bytes of those Welcomes ([`RouterLimits::max_welcome_bytes_per_connection`]).
    pub welcome_bytes: usize,
}

/// A channel that lost a member when a connection [disconnected](Router::disconnect).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Departure {
    /// The channel.
    pub token: ChannelToken,
    /// Subscribers left; 0 means the channel was removed.
    pub remaining: usize,
}

type ConnMap<V> = IntMap<ConnId, V>;

/// A connection's name for a channel: the key of the per-packet lookup.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Route {
    conn: ConnId,
    handle: ChannelHandle,
}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // One word for the hasher; equality still compares both fields.
        state.write_u64(self.conn.0.rotate_left(32) ^ u64::from(self.handle.0));
    }
}

type RouteMap = IntMap<Route, usize>;

/// A subscriber of a channel, with its own handle for it.
#[derive(Clone, Copy)]
struct Member {
    conn: ConnId,
    handle: ChannelHandle,
}

/// Who a quota charge belongs to: a connection, and which of the connections that had its
/// id (a charge outliving its connection is charged to nobody, so a later connection under
/// the same id never pays for it, nor is credited by it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Owner {
    conn: ConnId,
    serial: u64,
}

struct Channel {
    token: ChannelToken,
    members: Vec<Member>,
    next_seq: u64,
    /// The latest handshake messages, oldest first, with their sequence numbers.
    history: VecDeque<(u64, Vec<u8>)>,
    history_bytes: usize,
    /// The connection charged for it (its first subscriber).
    opener: Option<Owner>,
    /// Since when it has had no subscriber (see [`RouterLimits::history_linger`]).
    idle_since: Option<Instant>,
}

/// A connection's subscriptions and quota charges.
struct Connection {
    /// Distinguishes this connection from earlier ones under the same id.
    serial: u64,
    /// Handle → channel slot, sorted by handle.
    handles: Vec<(ChannelHandle, usize)>,
    /// How many handles were drawn for it: the input of the next draw.
    draws: u64,
    /// Channels charged to it, still open.
    opened: usize,
    /// Welcomes charged to it, still held, and their bytes.
    welcomes: usize,
    welcome_bytes: usize,
    /// Its replay allowance: when its minute began, and the bytes replayed in it.
    replayed: Option<(Instant, usize)>,
}

impl Connection {
    fn new(serial: u64) -> Connection {
        Connection {
            serial,
            handles: Vec::new(),
            draws: 0,
            opened: 0,
            welcomes: 0,
            welcome_bytes: 0,
            replayed: None,
        }
    }

    fn owner(&self, conn: ConnId) -> Owner {
        Owner {
            conn,
            serial: self.serial,
        }
    }

    fn handle_of(&self, slot: usize) -> Option<ChannelHandle> {
        self.handles
            .iter()
            .find(|(_, s)| *s == slot)
            .map(|(h, _)| *h)
    }

    /// Gives `slot` the first of the handles `draw` makes (from the connection's serial
    /// and a draw count) that the connection does not use; `None` only if 64 draws in a
    /// row collided, which a connection of at most 65,535 handles out of 2^32 never sees.
    fn insert(
        &mut self,
        slot: usize,
        draw: impl Fn(u64, u64) -> ChannelHandle,
    ) -> Option<ChannelHandle> {
        for _ in 0..64 {
            let handle = draw(self.serial, self.draws);
            self.draws = self.draws.wrapping_add(1);
            if let Err(pos) = self.handles.binary_search_by_key(&handle, |(h, _)| *h) {
                self.handles.insert(pos, (handle, slot));
                return Some(handle);
            }
        }
        None
    }

    fn remove(&mut self, handle: ChannelHandle) -> Option<usize> {
        let pos = self
            .handles
            .binary_search_by_key(&handle, |(h, _)| *h)
            .ok()?;
        Some(self.handles.remove(pos).1)
    }
}

/// A mailbox id, owned, fixed-size (no allocation per key).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct MailboxKey {
    len: u8,
    bytes: [u8; MailboxId::MAX_LEN],
}

impl MailboxKey {
    fn new(id: MailboxId<'_>) -> MailboxKey {
        let src = id.as_bytes();
        let mut bytes = [0u8; MailboxId::MAX_LEN];
        for (d, s) in bytes.iter_mut().zip(src) {
            *d = *s;
        }
        MailboxKey {
            len: u8::try_from(src.len()).unwrap_or(u8::MAX),
            bytes,
        }
    }
}

struct HeldWelcome {
    /// `None`: the TTL overflowed `Instant`, never expires.
    expires: Option<Instant>,
    bytes: Box<[u8]>,
    /// The connection charged for it (its depositor).
    owner: Option<Owner>,
}

/// Ends the charge `owner` paid for a channel (`welcome` is `None`) or for a Welcome of
/// `welcome` bytes, if that connection is still there.
fn release(connections: &mut ConnMap<Connection>, owner: Option<Owner>, welcome: Option<usize>) {
    let Some(owner) = owner else {
        return;
    };
    let Some(c) = connections
        .get_mut(&owner.conn)
        .filter(|c| c.serial == owner.serial)
    else {
        return;
    };
    match welcome {
        None => c.opened = c.opened.saturating_sub(1),
        Some(len) => {
            c.welcomes = c.welcomes.saturating_sub(1);
            c.welcome_bytes = c.welcome_bytes.saturating_sub(len);
        }
    }
}

impl HeldWelcome {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// The relay's routing state (see the [module docs](super)).
///
/// Channels are created by their first subscriber; after their last one leaves they stay
/// idle for [`RouterLimits::history_linger`] when they keep handshake messages, else they
/// close at once. Each
/// connection names its channels by its own [`ChannelHandle`]s; a media message is copied
/// once into an internal buffer and handed to the sink once per other subscriber, with
/// only the 4 handle bytes rewritten in between: no heap allocation per packet.
pub struct Router {
    limits: RouterLimits,
    /// HMAC under the relay's key: channel handles.
    mac: Hmac<Sha256>,
    connections: ConnMap<Connection>,
    /// (connection, handle) → channel slot: the one lookup per media packet. Mirrors the
    /// connections' handle lists.
    routes: RouteMap,
    /// Channel slab; `None` slots are listed in `free`.
    channels: Vec<Option<Channel>>,
    free: Vec<usize>,
    by_token: HashMap<ChannelToken, usize>,
    mailboxes: HashMap<MailboxKey, Vec<HeldWelcome>>,
    welcome_bytes: usize,
    /// Bytes of handshake messages kept by all channels.
    history_bytes: usize,
    /// Channels left idle, oldest first, with when they went idle (entries of channels
    /// revived or closed since are skipped when they come up).
    idle: VecDeque<(Instant, usize)>,
    /// Per connection that fetched in the last minute: when its minute began, and the
    /// Welcome bytes it was sent since. At most `max_connections` entries.
    fetched: HashMap<ConnId, (Instant, usize)>,
    /// No Welcome expires before this (so sweeps on a full store stay rare).
    next_expiry: Option<Instant>,
    /// The serial of the next connection.
    next_serial: u64,
    /// Where every outgoing datagram is built.
    buf: Vec<u8>,
    stats: RouterStats,
}

/// 32 bytes of HMAC(relay key, `label` ‖ `serial` ‖ `n`): a connection's channel handles,
/// unguessable without the key, unrelated across connections (serials are never reused).
fn derive(mac: &Hmac<Sha256>, label: &[u8], serial: u64, n: u64) -> [u8; 32] {
    let mut mac = mac.clone();
    mac.update(label);
    mac.update(&serial.to_be_bytes());
    mac.update(&n.to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// The window of [`RouterLimits::max_fetch_bytes_per_minute`].
const FETCH_WINDOW: Duration = Duration::from_secs(60);

/// Converts a length to a counter increment.
#[inline]
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Hands `bytes` to the sink and counts it.
#[inline]
fn emit(stats: &mut RouterStats, sink: &mut impl FnMut(ConnId, &[u8]), conn: ConnId, bytes: &[u8]) {
    stats.datagrams_out += 1;
    stats.bytes_out += count(bytes.len());
    sink(conn, bytes);
}

impl Router {
    /// A router with no connections, holding at most `limits`, under the relay's own
    /// random `key` (draw it at start-up; it never leaves the relay). Channel handles are
    /// derived from it, so nobody without it can guess them.
    pub fn new(limits: RouterLimits, key: &[u8; 32]) -> Router {
        // HMAC pads a short key with zeros to the block size, so this is HMAC under `key`.
        let mut block = [0u8; 64];
        for (b, k) in block.iter_mut().zip(key) {
            *b = *k;
        }
        let mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
        block.zeroize();
        let limits = RouterLimits {
            max_message: limits.max_message.min(MAX_MESSAGE),
            max_channels_per_connection: limits
                .max_channels_per_connection
                .min(usize::from(u16::MAX)),
            ..limits
        };
        Router {
            limits,
            mac,
            connections: ConnMap::default(),
            routes: RouteMap::default(),
            channels: Vec::new(),
            free: Vec::new(),
            by_token: HashMap::new(),
            mailboxes: HashMap::new(),
            welcome_bytes: 0,
            history_bytes: 0,
            idle: VecDeque::new(),
            fetched: HashMap::new(),
            next_expiry: None,
            next_serial: 0,
            buf: vec![0; MAX_MESSAGE],
            stats: RouterStats::default(),
        }
    }

    /// The state of `conn`, made (with a fresh serial) if it has none; fails
    /// with [`ErrorCode::RelayFull`] when the router holds as many connections as it may.
    fn connection(&mut self, conn: ConnId) -> Result<&mut Connection, ErrorCode> {
        if !self.connections.contains_key(&conn) {
            if self.connections.len() >= self.limits.max_connections {
                return Err(ErrorCode::RelayFull);
            }
            self.next_serial += 1;
            self.connections
                .insert(conn, Connection::new(self.next_serial));
        }
        self.connections.get_mut(&conn).ok_or(ErrorCode::RelayFull)
    }

    /// The limits in force.
    pub fn limits(&self) -> &RouterLimits {
        &self.limits
    }

    /// The counters.
    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    /// Channels held: with a subscriber, or idle and keeping their handshake messages
    /// (see [`RouterLimits::history_linger`]).
    pub fn channel_count(&self) -> usize {
        self.by_token.len()
    }

    /// Connections holding state (said Hello, not disconnected).
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Subscribers of the channel of `token` (0 when there is no such channel).
    pub fn subscriber_count(&self, token: &ChannelToken) -> usize {
        self.channel(token).map_or(0, |c| c.members.len())
    }

    /// The handle `conn` has for the channel of `token`, if subscribed.
    pub fn handle(&self, conn: ConnId, token: &ChannelToken) -> Option<ChannelHandle> {
        let slot = *self.by_token.get(token)?;
        self.connections.get(&conn)?.handle_of(slot)
    }

    /// What `conn` holds against its quotas; `None` for a connection the router holds no
    /// state for.
    pub fn usage(&self, conn: ConnId) -> Option<Usage> {
        let c = self.connections.get(&conn)?;
        Some(Usage {
            subscriptions: c.handles.len(),
            channels_opened: c.opened,
            welcomes: c.welcomes,
            welcome_bytes: c.welcome_bytes,
        })
    }

    /// Recomputes every connection's charges from what the router holds and compares them
    /// with its counters. A walk over all state: for tests and fuzzing, not for a relay's
    /// hot path.
    pub fn accounting_is_exact(&self) -> bool {
        let mut expected: HashMap<Owner, Usage> = HashMap::new();
        let live = |o: &Option<Owner>| {
            o.filter(|o| {
                self.connections
                    .get(&o.conn)
                    .is_some_and(|c| c.serial == o.serial)
            })
        };
        let mut subscribers = 0;
        let mut history = 0;
        for channel in self.channels.iter().flatten() {
            subscribers += channel.members.len();
            let kept: usize = channel.history.iter().map(|(_, m)| m.len()).sum();
            if kept != channel.history_bytes
                || channel.history.len() > self.limits.history_per_channel
                || kept > self.limits.history_bytes_per_channel
            {
                return false;
            }
            history += kept;
            if channel.members.is_empty() != channel.idle_since.is_some()
                || (channel.idle_since.is_some() && channel.opener.is_some())
            {
                return false;
            }
            if let Some(o) = live(&channel.opener) {
                expected.entry(o).or_default().channels_opened += 1;
            }
        }
        let mut bytes = 0;
        for w in self.mailboxes.values().flatten() {
            bytes += w.bytes.len();
            if let Some(o) = live(&w.owner) {
                let u = expected.entry(o).or_default();
                u.welcomes += 1;
                u.welcome_bytes += w.bytes.len();
            }
        }
        let mut handles = 0;
        let charges_match = self.connections.iter().all(|(conn, c)| {
            handles += c.handles.len();
            let want = expected.remove(&c.owner(*conn)).unwrap_or_default();
            (c.opened, c.welcomes, c.welcome_bytes)
                == (want.channels_opened, want.welcomes, want.welcome_bytes)
                && c.handles.iter().all(|(handle, slot)| {
                    self.routes.get(&Route {
                        conn: *conn,
                        handle: *handle,
                    }) == Some(slot)
                })
        });
        charges_match
            && expected.is_empty()
            && bytes == self.welcome_bytes
            && history == self.history_bytes
            && history <= self.limits.max_history_bytes
            && handles == self.routes.len()
            && handles == subscribers
    }

    /// Mailboxes holding at least one Welcome (expired ones included until
    /// [`expire`](Self::expire) or a request touches them).
    pub fn mailbox_count(&self) -> usize {
        self.mailboxes.len()
    }

    /// Bytes of Welcomes held.
    pub fn welcome_bytes(&self) -> usize {
        self.welcome_bytes
    }

    /// Bytes of handshake messages the channels keep.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    fn channel(&self, token: &ChannelToken) -> Option<&Channel> {
        let slot = *self.by_token.get(token)?;
        self.channels.get(slot)?.as_ref()
    }

    /// Handles one datagram from `conn` received at `now`; hands every datagram to send to
    /// `sink`, with its destination, before returning.
    ///
    /// Returns the error sent back to `conn` when the request was refused; a refusal
    /// changes nothing else. `now` only matters for Welcome expiry.
    pub fn receive(
        &mut self,
        conn: ConnId,
        datagram: &[u8],
        now: Instant,
        sink: &mut impl FnMut(ConnId, &[u8]),
    ) -> Result<(), ErrorCode> {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += count(datagram.len());
        self.close_idle(now);
        let refused = if datagram.len() > self.limits.max_message {
            Err((ErrorCode::TooLarge, Request::Unparsed))
        } else {
            match ClientMessage::parse(datagram) {
                Err(e) => Err((ErrorCode::from(e), Request::Unparsed)),
                Ok(msg) => self
                    .dispatch(conn, msg, now, sink)
                    .map_err(|code| (code, msg.request())),
            }
        };
        refused.map_err(|(code, request)| {
            self.refuse(conn, code, request, sink);
            code
        })
    }

    fn dispatch(
        &mut self,
        conn: ConnId,
        msg: ClientMessage<'_>,
        now: Instant,
        sink: &mut impl FnMut(ConnId, &[u8]),
    ) -> Result<(), ErrorCode> {
        // A connection is made by its Hello: any other request from a connection the
        // router holds no state for (it never said Hello, or it was forgotten) is refused,
        // so its client learns to say Hello and ask everything again. Media is checked
        // after its route lookup, which fails for such a connection anyway (one lookup per
        // packet).
        match msg {
            ClientMessage::Media { handle, frame } => {
                self.media(conn, handle, frame, sink).map_err(|code| {
                    if self.connections.contains_key(&conn) {
                        code
                    } else {
                        ErrorCode::NotConnected
                    }
                })
            }
            ClientMessage::Hello => {
                // The carrier authenticated `conn`: the router trusts it is who it says.
                self.connection(conn)?;
                self.stats.hellos += 1;
                self.reply(conn, RelayMessage::Ready, sink);
                Ok(())
            }
            _ if !self.connections.contains_key(&conn) => Err(ErrorCode::NotConnected),
            ClientMessage::Handshake {
                handle, message, ..
            } => self.handshake(conn, handle, message, sink),
            ClientMessage::Subscribe { token } => self.subscribe(conn, token, now, sink),
            ClientMessage::Unsubscribe { handle } => self.unsubscribe(conn, handle, now, sink),
            ClientMessage::DeliverWelcome { mailbox, welcome } => {
                self.deliver(conn, mailbox, welcome, now, sink)
            }
            ClientMessage::FetchWelcomes { mailbox } => self.fetch(conn, mailbox, now, sink),
        }
    }

    /// Counts a refusal and sends the error.
    fn refuse(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        request: Request<'_>,
        sink: &mut impl FnMut(ConnId, &[u8]),
    ) {
        self.stats.drops.count(code);
        let reply = RelayMessage::Error { code, request };
        if let Ok(n) = reply.encode(&mut self.buf) {
            if let Some(bytes) = self.buf.get(..n) {
                self.stats.errors_out += 1;
                emit(&mut self.stats, sink, conn, bytes);
            }
        }
    }

    /// Sends a small control reply to `conn`.
    fn reply(&mut self, conn: ConnId, msg: RelayMessage<'_>, sink: &mut impl FnMut(ConnId, &[u8])) {
        if let Ok(n) = msg.encode(&mut self.buf) {
            if let Some(bytes) = self.buf.get(..n) {
                emit(&mut self.stats, sink, conn, bytes);
            }
        }
    }

    /// The channel slot `conn` calls `handle`.
    #[inline]
    fn slot(&self, conn: ConnId, handle: ChannelHandle) -> Result<usize, ErrorCode> {
        self.routes
            .get(&Route { conn, handle })
            .copied()
            .ok_or(ErrorCode::UnknownHandle)
    }

    /// The hot path: one copy of the frame into the buffer, then per receiver a 4-byte
    /// handle rewrite and a sink call.
    #[inline]
    fn media(
        &mut self,
        conn: ConnId,
        handle: ChannelHandle,
        frame: &[u8],
        sink: &mut impl FnMut(ConnId, &[u8]),
    ) -> Result<(), ErrorCode> {
        let slot = self.slot(conn, handle)?;
        let channel = self
            .channels
            .get(slot)
            .and_then(Option::as_ref)
            .ok_or(ErrorCode::UnknownHandle)?;
        let len = MEDIA_OVERHEAD + frame.len();
        let out = self.buf.get_mut(..len).ok_or(ErrorCode::TooLarge)?;
        if let Some(body) = out.get_mut(MEDIA_OVERHEAD..) {
            body.copy_from_slice(frame);
        }
        let mut sent = 0;
        for member in &channel.members {
            if member.conn == conn {
                continue;
            }
            if let Some(head) = out.get_mut(..MEDIA_OVERHEAD) {
                head.copy_from_slice(&RelayMessage::media_header(member.handle));
            }
            sink(member.conn, out);
            sent += 1;
        }
        self.stats.media_in += 1;
        self.stats.media_out += sent;
        self.stats.datagrams_out += sent;
        self.stats.bytes_out += sent * count(len);
        Ok(())
    }

    fn handshake(
        &mut self,
        conn: ConnId,
        handle: ChannelHandle,
        message: &[u8],
        sink: &mut impl FnMut(ConnId, &[u8]),
    ) -> Result<(), ErrorCode> {
        let slot = self.slot(conn, handle)?;
        // Channels in use keep their messages before idle ones do.
        while self.history_bytes + message.len() > self.limits.max_history_bytes
            && message.len() <= self.limits.history_bytes_per_channel
            && self.evict_idle()
        {}
        let channel = self
            .channels
            .get_mut(slot)
            .and_then(Option::as_mut)
            .ok_or(ErrorCode::UnknownHandle)?;
        let len = HANDSHAKE_OVERHEAD + message.len();
        let out = self.buf.get_mut(..len).ok_or(ErrorCode::TooLarge)?;
        let seq = channel.next_seq;
        channel.next_seq = seq.wrapping_add(1);
        if let Some(body) = out.get_mut(HANDSHAKE_OVERHEAD..) {
            body.copy_from_slice(message);
        }
        self.stats.handshakes_in += 1;
        for member in &channel.members {
            if let Some(head) = out.get_mut(..HANDSHAKE_OVERHEAD) {
                head.copy_from_slice(&RelayMessage::handshake_header(member.handle, seq));
            }
            self.stats.handshakes_out += 1;
            emit(&mut self.stats, sink, member.conn, out);
        }
        // Kept for later subscribers: the oldest go first to make room (the buffer of the
        // last one out is reused, so a channel with a full history allocates nothing).
        let limits = &self.limits;
        if message.len() <= limits.history_bytes_per_channel && limits.history_per_channel > 0 {
            let mut reuse = Vec::new();
            while channel.history.len() >= limits.history_per_channel
                || channel.history_bytes + message.len() > limits.history_bytes_per_channel
            {
                let Some((_, old)) = channel.history.pop_front() else {
                    break;
                };
                channel.history_bytes -= old.len();
                self.history_bytes -= old.len();
                reuse = old;
            }
            if self.history_bytes + message.len() <= limits.max_history_bytes {
                reuse.clear();
                reuse.extend_from_slice(message);
                channel.history.push_back((seq, reuse));
                channel.history_bytes += message.len();
                self.history_bytes += message.len();
            }
        }
        Ok(())
    }

    /// The number the next handshake message of the channel in `slot` gets.
    fn next_seq(&self, slot: usize) -> u64 {
        self.channels
            .get(slot)
            .and_then(Option::as_ref)
            .map_or(0, |c| c.next_seq)
    }

    /// Sends `conn` the handshake messages the channel in `slot` keeps, under its `handle`.
    fn replay(
        &mut self,
        conn: ConnId,
        slot: usize,
        handle: ChannelHandle,
        now: Instant,
        sink: &mut impl FnMut(ConnId, &[u8]),
    ) {
        let Some(Some(channel)) = self.channels.get(slot) else {
            return;
        };
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        // The connection's allowance: its minute began at its first replay in it.
        let (start, mut used) = connection
            .replayed
            .filter(|(start, _)| now.saturating_duration_since(*start) < FETCH_WINDOW)
            .unwrap_or((now, 0));
        for (seq, message) in &channel.history {
            let len = HANDSHAKE_OVERHEAD + message.len();
            if used.saturating_add(len) > self.limits.max_replay_bytes_per_minute {
                self.stats.drops.replays_cut += 1;
                break;
            }
            let Some(out) = self.buf.get_mut(..len) else {
                continue;
            };
            used += len;
            let (head, body) = out.split_at_mut(HANDSHAKE_OVERHEAD);
            head.copy_from_slice(&RelayMessage::handshake_header(handle, *seq));
            body.copy_from_slice(message);
            self.stats.handshakes_out += 1;
            self.stats.handshakes_replayed += 1;
            emit(&mut self.stats, sink, conn, out);
        }
        connection.replayed = Some((start, used));
    }

    fn subscribe(
        &mut self,
        conn: ConnId,
        token: ChannelToken,
        now: Instant,
        sink: &mut impl FnMut(ConnId, &[u8]),
    ) -> Result<(), ErrorCode> {
        let existing = self.by_token.get(&token).copied();
        let connection = self.connections.get(&conn);
        // Already subscribed: the same handle again (a retransmitted request, or a
        // client asking for the channel's handshake messages again).
        if let Some((slot, handle)) = existing
            .zip(connection)
            .and_then(|(slot, c)| Some((slot, c.handle_of(slot)?)))
        {
            self.stats.subscribes += 1;
            let next_seq = self.next_seq(slot);
            self.reply(
                conn,
                RelayMessage::Subscribed {
                    token,
                    handle,
                    next_seq,
                },
                sink,
            );
            self.replay(conn, slot, handle, now, sink);
            return Ok(());
        }
        // Check every limit before changing anything.
        match connection {
            None if self.connections.len() >= self.limits.max_connections => {
                return Err(ErrorCode::RelayFull)
            }
            Some(c) if c.handles.len() >= self.limits.max_channels_per_connection => {
                return Err(ErrorCode::TooManySubscriptions)
            }
            None if self.limits.max_channels_per_connection == 0 => {
                return Err(ErrorCode::TooManySubscriptions)
            }
            _ => {}
        }
        // An idle channel comes back to life charged to its new first subscriber.
        let idle = existing
            .and_then(|slot| self.channels.get(slot)?.as_ref())
            .is_some_and(|c| c.idle_since.is_some());
        let opening = existing.is_none() || idle;
        match existing.and_then(|slot| self.channels.get(slot)?.as_ref()) {
            Some(channel) if channel.members.len() >= self.limits.max_subscribers_per_channel => {
                return Err(ErrorCode::ChannelFull)
            }
            None if self.limits.max_subscribers_per_channel == 0 => {
                return Err(ErrorCode::ChannelFull)
            }
            _ if opening
                && connection.map_or(0, |c| c.opened)
                    >= self.limits.max_channels_opened_per_connection =>
            {
                return Err(ErrorCode::TooManyChannelsOpened)
            }
            _ => {}
        }
        // Idle channels make room for a new one.
        if existing.is_none()
            && self.by_token.len() >= self.limits.max_channels
            && !self.evict_idle()
        {
            return Err(ErrorCode::RelayFull);
        }
        let slot = match existing {
            Some(slot) => slot,
            None => self.open_channel(token),
        };
        let mac = &self.mac;
        let draw = |serial: u64, n: u64| {
            let [a, b, c, d, ..] = derive(mac, b"handle", serial, n);
            ChannelHandle(u32::from_be_bytes([a, b, c, d]))
        };
        // Only a known connection gets here (a connection is made by its Hello).
        let handle = self
            .connections
            .get_mut(&conn)
            .and_then(|c| c.insert(slot, draw));
        let (Some(handle), Some(connection), Some(Some(channel))) = (
            handle,
            self.connections.get_mut(&conn),
            self.channels.get_mut(slot),
        ) else {
            // Unreachable: the connection is known, its handles do not collide 64 times
            // in a row, and the slot is live. Undo a channel opened for nothing.
            self.leave(slot, conn, now);
            return Err(ErrorCode::TooManySubscriptions);
        };
        if opening {
            connection.opened += 1;
            channel.opener = Some(connection.owner(conn));
            channel.idle_since = None;
        }
        channel.members.push(Member { conn, handle });
        self.routes.insert(Route { conn, handle }, slot);
        self.stats.subscribes += 1;
        let next_seq = self.next_seq(slot);
        self.reply(
            conn,
            RelayMessage::Subscribed {
                token,
                handle,
                next_seq,
            },
            sink,
        );
        self.replay(conn, slot, handle, now, sink);
        Ok(())
    }

    fn open_channel(&mut self, token: ChannelToken) -> usize {
        let channel = Channel {
            token,
            members: Vec::new(),
            next_seq: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            opener: None,
            idle_since: None,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(entry) = self.channels.get_mut(slot) {
                    *entry = Some(channel);
                }
                slot
            }
            None => {
                self.channels.push(Some(channel));
                self.channels.len() - 1
            }
        };
        self.by_token.insert(token, slot);
        self.stats.channels_opened += 1;
        slot
    }

    /// Removes `conn` from the channel in `slot` (the connection's own map is the caller's
    /// business); when that was its last member, the channel goes idle (it has handshake
    /// messages to keep) or closes. Returns the channel's token and how many members
    /// remain.
    fn leave(&mut self, slot: usize, conn: ConnId, now: Instant) -> Option<Departure> {
        let channel = self.channels.get_mut(slot)?.as_mut()?;
        if let Some(i) = channel.members.iter().position(|m| m.conn == conn) {
            channel.members.swap_remove(i);
        }
        let departure = Departure {
            token: channel.token,
            remaining: channel.members.len(),
        };
        if departure.remaining == 0 {
            release(&mut self.connections, channel.opener.take(), None);
            if channel.history.is_empty() || self.limits.history_linger.is_zero() {
                self.close(slot);
            } else {
                channel.idle_since = Some(now);
                self.idle.push_back((now, slot));
            }
        }
        Some(departure)
    }

    /// Removes the channel in `slot` and what it keeps.
    fn close(&mut self, slot: usize) {
        let Some(entry) = self.channels.get_mut(slot) else {
            return;
        };
        let Some(channel) = entry.take() else {
            return;
        };
        self.history_bytes -= channel.history_bytes;
        release(&mut self.connections, channel.opener, None);
        self.free.push(slot);
        self.by_token.remove(&channel.token);
        self.stats.channels_closed += 1;
    }

    /// Whether the channel in `slot` has been idle since `at`.
    fn idle_at(&self, slot: usize, at: Instant) -> bool {
        self.channels
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.idle_since == Some(at))
    }

    /// Closes the channels idle for [`RouterLimits::history_linger`] at `now`.
    fn close_idle(&mut self, now: Instant) {
        while let Some(&(at, slot)) = self.idle.front() {
            if now.saturating_duration_since(at) < self.limits.history_linger {
                break;
            }
            self.idle.pop_front();
            if self.idle_at(slot, at) {
                self.close(slot);
            }
        }
    }

    /// Closes the channel idle the longest; false when none is idle.
    fn evict_idle(&mut self) -> bool {
        while let Some((at, slot)) = self.idle.pop_front() {
            if self.idle_at(slot, at) {
                self.close(slot);
                return true;
            }
        }
        false
    }

    fn unsubscribe(
        &mut self,
        conn: ConnId,
        handle: ChannelHandle,
        now: Instant,
        sink: &mut impl FnMut(ConnId, &[u8]),
    ) -> Result<(), ErrorCode> {
        let slot = self
            .connections
            .get_mut(&conn)
            .and_then(|c| c.remove(handle))
            .ok_or(ErrorCode::UnknownHandle)?;
        self.routes.remove(&Route { conn, handle });
        self.leave(slot, conn, now);
        self.stats.unsubscribes += 1;
        self.reply(conn, RelayMessage::Unsubscribed { handle }, sink);
        Ok(())
    }

    /// Forgets `conn` at `now`: ends its subscriptions (channels left empty go idle or
    /// close) and returns the channels that lost a member. Unknown connections are ignored.
    pub fn disconnect(&mut self, conn: ConnId, now: Instant) -> Vec<Departure> {
        self.fetched.remove(&conn);
        let Some(connection) = self.connections.remove(&conn) else {
            return Vec::new();
        };
        connection
            .handles
            .iter()
            .filter_map(|&(handle, slot)| {
                self.routes.remove(&Route { conn, handle });
                self.leave(slot, conn, now)
            })
            .collect()
    }

    fn deliver(
        &mut self,
        conn: ConnId,
        mailbox: MailboxId<'_>,
        welcome: &[u8],
        now: Instant,
        sink: &mut impl FnMut(ConnId, &[u8]),
    ) -> Result<(), ErrorCode> {
        let key = MailboxKey::new(mailbox);
        self.expire_mailbox(&key, now);
        match self.mailboxes.get(&key) {
            // The same Welcome again (a retransmitted request): already held.
            Some(held) if held.iter().any(|w| *w.bytes == *welcome) => {
                self.stats.welcomes_in += 1;
                self.reply(conn, RelayMessage::Stored { mailbox }, sink);
                return Ok(());
            }
            Some(held) if held.len() >= self.limits.max_welcomes_per_mailbox => {
                return Err(ErrorCode::MailboxFull)
            }
            None if self.limits.max_welcomes_per_mailbox == 0 => {
                return Err(ErrorCode::MailboxFull)
            }
            _ => {}
        }
        // The connection's quota, then the relay's store; expired Welcomes are swept (and
        // their charges released) before either refuses.
        let within_quota = |r: &Router| {
            r.connections.get(&conn).is_none_or(|c| {
                c.welcomes < r.limits.max_welcomes_per_connection
                    && c.welcome_bytes.saturating_add(welcome.len())
                        <= r.limits.max_welcome_bytes_per_connection
            }) && r.limits.max_welcomes_per_connection > 0
                && welcome.len() <= r.limits.max_welcome_bytes_per_connection
        };
        let fits = |r: &Router| {
            (r.mailboxes.contains_key(&key) || r.mailboxes.len() < r.limits.max_mailboxes)
                && r.welcome_bytes.saturating_add(welcome.len()) <= r.limits.max_welcome_bytes
        };
        if !within_quota(self) || !fits(self) {
            self.expire(now);
            if !within_quota(self) {
                return Err(ErrorCode::WelcomeQuotaExceeded);
            }
            if !fits(self) {
                return Err(ErrorCode::StorageFull);
            }
        }
        let connection = self.connection(conn)?;
        connection.welcomes += 1;
        connection.welcome_bytes += welcome.len();
        let owner = Some(connection.owner(conn));
        let expires = now.checked_add(self.limits.welcome_ttl);
        if let Some(t) = expires {
            self.next_expiry = Some(self.next_expiry.map_or(t, |e| e.min(t)));
        }
        self.mailboxes.entry(key).or_default().push(HeldWelcome {
            expires,
            bytes: welcome.into(),
            owner,
        });
        self.welcome_bytes += welcome.len();
        self.stats.welcomes_in += 1;
        self.reply(conn, RelayMessage::Stored { mailbox }, sink);
        Ok(())
    }

    fn fetch(
        &mut self,
        conn: ConnId,
        mailbox: MailboxId<'_>,
        now: Instant,
        sink: &mut impl FnMut(ConnId, &[u8]),
    ) -> Result<(), ErrorCode> {
        let key = MailboxKey::new(mailbox);
        self.expire_mailbox(&key, now);
        let held = self.mailboxes.get(&key).ok_or(ErrorCode::MailboxEmpty)?;
        let reply: usize = held
            .iter()
            .map(|w| {
                RelayMessage::Welcome {
                    mailbox,
                    welcome: &w.bytes,
                }
                .encoded_len()
            })
            .sum();
        // The connection's allowance: its minute began at its first fetch in it.
        let (start, used) = self
            .fetched
            .get(&conn)
            .copied()
            .filter(|(start, _)| now.saturating_duration_since(*start) < FETCH_WINDOW)
            .unwrap_or((now, 0));
        if used.saturating_add(reply) > self.limits.max_fetch_bytes_per_minute {
            return Err(ErrorCode::RateLimited);
        }
        if !self.fetched.contains_key(&conn) && self.fetched.len() >= self.limits.max_connections {
            self.fetched
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < FETCH_WINDOW);
            if self.fetched.len() >= self.limits.max_connections {
                return Err(ErrorCode::RelayFull);
            }
        }
        self.fetched.insert(conn, (start, used + reply));
        self.stats.fetches += 1;
        let Some(held) = self.mailboxes.get(&key) else {
            return Ok(());
        };
        for w in held {
            let msg = RelayMessage::Welcome {
                mailbox,
                welcome: &w.bytes,
            };
            if let Ok(n) = msg.encode(&mut self.buf) {
                if let Some(bytes) = self.buf.get(..n) {
                    self.stats.welcomes_out += 1;
                    emit(&mut self.stats, sink, conn, bytes);
                }
            }
        }
        Ok(())
    }

    /// Drops the expired Welcomes of one mailbox (and the mailbox if left empty).
    fn expire_mailbox(&mut self, key: &MailboxKey, now: Instant) {
        if self.next_expiry.is_none_or(|t| t > now) {
            return;
        }
        if let Some(held) = self.mailboxes.get_mut(key) {
            let connections = &mut self.connections;
            let mut freed = 0;
            held.retain(|w| {
                let live = w.live(now);
                if !live {
                    freed += w.bytes.len();
                    release(connections, w.owner, Some(w.bytes.len()));
                }
                live
            });
            self.welcome_bytes = self.welcome_bytes.saturating_sub(freed);
            if held.is_empty() {
                self.mailboxes.remove(key);
            }
        }
    }

    /// Drops every Welcome older than the TTL at `now`, mailboxes left empty, and fetch
    /// allowances whose minute is over. A pass over the connections that fetched in the
    /// last minute, and over all mailboxes only when a Welcome can have expired. Requests
    /// also expire what they touch, so calling this is only needed to free memory sooner.
    pub fn expire(&mut self, now: Instant) {
        self.fetched
            .retain(|_, (start, _)| now.saturating_duration_since(*start) < FETCH_WINDOW);
        if self.next_expiry.is_none_or(|t| t > now) {
            return;
        }
        let mut freed = 0;
        let mut next: Option<Instant> = None;
        let connections = &mut self.connections;
        self.mailboxes.retain(|_, held| {
            held.retain(|w| {
                let live = w.live(now);
                if live {
                    if let Some(t) = w.expires {
                        next = Some(next.map_or(t, |n| n.min(t)));
                    }
                } else {
                    freed += w.bytes.len();
                    release(connections, w.owner, Some(w.bytes.len()));
                }
                live
            });
            !held.is_empty()
        });
        self.welcome_bytes = self.welcome_bytes.saturating_sub(freed);
        self.next_expiry = next;
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("connections", &self.connections.len())
            .field("channels", &self.by_token.len())
            .field("mailboxes", &self.mailboxes.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
