//! Bodies of the fuzz targets, shared by `fuzz_targets/*.rs` (libFuzzer) and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpus under `cargo test`.
//! Each body panics only when an invariant is broken; any input must be handled.
// Each fuzz target (and the corpus test) uses only some of these bodies.
#![allow(dead_code, unused_imports)]

use bytes::BytesMut;
use sotto::frame::{CipherSuite, FrameError, FrameOpener, Header};

/// `Header::parse` never panics, and parse → encode → parse is the identity.
pub fn header(data: &[u8]) {
    if let Ok((header, len)) = Header::parse(data) {
        assert!((1..=Header::MAX_LEN).contains(&len));
        assert_eq!(len, header.encoded_len());
        let mut buf = [0u8; Header::MAX_LEN];
        let n = header.encode(&mut buf).expect("MAX_LEN always fits");
        assert_eq!(&buf[..n], &data[..len], "encoding is unique");
        assert_eq!(Header::parse(&buf[..n]), Ok((header, n)));
    }
}

/// KIDs and suites of the keys the `open` target's opener holds.
pub const OPEN_KEYS: [(u64, CipherSuite); 5] = [
    (0, CipherSuite::AesCtr128HmacSha256_80),
    (1, CipherSuite::AesCtr128HmacSha256_64),
    (7, CipherSuite::AesCtr128HmacSha256_32),
    (8, CipherSuite::AesGcm128Sha256),
    (0x1234, CipherSuite::AesGcm256Sha512),
];

/// Base key of every key in [`OPEN_KEYS`].
pub const OPEN_BASE_KEY: &[u8] = b"sotto fuzz base key";

/// An opener holding the keys of [`OPEN_KEYS`].
pub fn open_opener() -> FrameOpener {
    let mut opener = FrameOpener::new();
    for (kid, suite) in OPEN_KEYS {
        opener
            .insert_key(kid, suite, OPEN_BASE_KEY)
            .expect("valid key");
    }
    opener
}

/// Arbitrary bytes into an opener holding a few keys. The first byte chooses how many of
/// the following bytes are metadata; the rest is the frame. Returns whether a frame opened
/// (the opener's replay state changed).
pub fn open(opener: &mut FrameOpener, data: &[u8]) -> bool {
    let Some((&meta_len, rest)) = data.split_first() else {
        return false;
    };
    let meta_len = usize::from(meta_len % 16).min(rest.len());
    let (metadata, frame) = rest.split_at(meta_len);
    let mut out = BytesMut::new();
    let result = opener.open(metadata, frame, &mut out);
    match result {
        Ok(opened) => {
            let (header, hlen) = Header::parse(frame).expect("opened frames parse");
            let suite = OPEN_KEYS
                .iter()
                .find(|(kid, _)| *kid == header.kid)
                .map(|(_, s)| *s)
                .expect("opened under a known KID");
            assert_eq!(opened.kid, header.kid);
            assert_eq!(opened.ctr, header.ctr);
            assert_eq!(opened.len, frame.len() - hlen - suite.tag_len());
            assert_eq!(out.len(), opened.len);
            // The same frame again is a replay.
            assert_eq!(
                opener.open(metadata, frame, &mut out),
                Err(FrameError::Replayed)
            );
        }
        Err(_) => assert!(out.is_empty(), "no plaintext on error"),
    }
    // The caller-buffer path, with a buffer that may be too small.
    let mut small = [0u8; 32];
    let again = opener.open_into(metadata, frame, &mut small);
    result.is_ok() || again.is_ok()
}

pub use room_fixture::{room_fixture, room_ingest, RoomIngest};

mod room_fixture {
    use std::collections::HashMap;
    use std::sync::{OnceLock, RwLock};

    use openmls_memory_storage::MemoryStorage;
    use openmls_rust_crypto::RustCrypto;
    use sotto::media::ChannelToken;
    use sotto::room::{Identity, Room, RoomConfig};

    /// An MLS provider over a memory storage that can be snapshotted and restored, so every
    /// fuzz input starts from the same live room.
    pub struct SnapProvider {
        crypto: RustCrypto,
        storage: MemoryStorage,
    }

    impl SnapProvider {
        fn new(values: HashMap<Vec<u8>, Vec<u8>>) -> SnapProvider {
            SnapProvider {
                crypto: RustCrypto::default(),
                storage: MemoryStorage {
                    values: RwLock::new(values),
                },
            }
        }

        fn snapshot(&self) -> HashMap<Vec<u8>, Vec<u8>> {
            self.storage.values.read().expect("lock").clone()
        }
    }

    impl openmls_traits::OpenMlsProvider for SnapProvider {
        type CryptoProvider = RustCrypto;
        type RandProvider = RustCrypto;
        type StorageProvider = MemoryStorage;
        fn storage(&self) -> &MemoryStorage {
            &self.storage
        }
        fn crypto(&self) -> &RustCrypto {
            &self.crypto
        }
        fn rand(&self) -> &RustCrypto {
            &self.crypto
        }
    }

    /// Alice's state in a live 3-member room, and a genuine commit (bob's self-update) that
    /// alice can process next.
    pub struct RoomFixture {
        snapshot: HashMap<Vec<u8>, Vec<u8>>,
        signature_key: Vec<u8>,
        group_id: Vec<u8>,
        /// The epoch alice is in.
        pub epoch: u64,
        token: ChannelToken,
        /// Bob's pending self-update commit, valid for alice's epoch.
        pub good_commit: Vec<u8>,
        /// A leave proposal from carol, valid for alice's epoch.
        pub good_proposal: Vec<u8>,
    }

    impl RoomFixture {
        fn build() -> RoomFixture {
            let config = RoomConfig::default();
            let alice = Identity::new(SnapProvider::new(HashMap::new()), b"alice").expect("id");
            let signature_key = alice.signature_key().to_vec();
            let (mut room, _) = Room::create(alice, config.clone()).expect("create");
            let bob = Identity::new(SnapProvider::new(HashMap::new()), b"bob").expect("id");
            let carol = Identity::new(SnapProvider::new(HashMap::new()), b"carol").expect("id");
            let kps = [
                bob.key_package(sotto::room::MlsSuite::Classic)
                    .expect("kp")
                    .bytes,
                carol
                    .key_package(sotto::room::MlsSuite::Classic)
                    .expect("kp")
                    .bytes,
            ];
            let commit = room
                .invite(&[kps[0].as_slice(), kps[1].as_slice()])
                .expect("invite");
            room.confirm_pending().expect("confirm");
            let welcome = commit.welcome.expect("welcome");
            let (mut bob, _) = Room::join(bob, config.clone(), &welcome).expect("join");
            let (mut carol, _) = Room::join(carol, config, &welcome).expect("join");
            let good_commit = bob.self_update().expect("update").message;
            let good_proposal = carol.leave().expect("leave");
            RoomFixture {
                snapshot: room.provider().snapshot(),
                signature_key,
                group_id: room.group_id().to_vec(),
                epoch: room.epoch(),
                token: room.channel_token().expect("token"),
                good_commit,
                good_proposal,
            }
        }

        /// Alice's room, restored from the snapshot.
        pub fn restore(&self) -> Room<SnapProvider> {
            let provider = SnapProvider::new(self.snapshot.clone());
            Room::load(
                provider,
                &self.signature_key,
                &self.group_id,
                RoomConfig::default(),
            )
            .expect("restore")
            .0
        }
    }

    /// The shared fixture (built once per process).
    pub fn room_fixture() -> &'static RoomFixture {
        static FIXTURE: OnceLock<RoomFixture> = OnceLock::new();
        FIXTURE.get_or_init(RoomFixture::build)
    }

    /// What the `room_ingest` target keeps between inputs: alice's room, restored from the
    /// snapshot only after an input changed it (so refused inputs pile up on one room, and
    /// the checks below see their sum), and a joiner that never published a KeyPackage.
    #[derive(Default)]
    pub struct RoomIngest {
        room: Option<Room<SnapProvider>>,
        joiner: Option<Identity<SnapProvider>>,
    }

    impl RoomIngest {
        /// Alice's room: the one the last inputs left, or the fixture's.
        fn room(&mut self) -> &mut Room<SnapProvider> {
            self.room.get_or_insert_with(|| room_fixture().restore())
        }
    }

    /// Arbitrary bytes into a live 3-member room: never a panic. The bytes go to
    /// `Room::invite` (as a KeyPackage), to `Room::join` of a joiner without KeyPackages (as
    /// a Welcome; it must fail and give the identity back) and to `Room::process`. A refused
    /// input leaves the room as it was; with `full_check`, the room must then still process
    /// a genuine commit.
    pub fn room_ingest(state: &mut RoomIngest, data: &[u8], full_check: bool) {
        let fixture = room_fixture();
        // A KeyPackage to invite. One that validates makes a pending commit; dropping it
        // must leave the room as it was.
        let room = state.room();
        if let Ok(invitation) = room.invite(&[data]) {
            assert!(invitation.welcome.is_some());
            room.discard_pending().expect("a pending commit to drop");
            assert_unchanged(room, fixture);
            state.room = None;
        }
        // A Welcome (anyone can drop one in a relay mailbox).
        let joiner = match state.joiner.take() {
            Some(joiner) => joiner,
            None => Identity::new(SnapProvider::new(HashMap::new()), b"joiner").expect("id"),
        };
        match Room::join(joiner, RoomConfig::default(), data) {
            Ok(_) => panic!("a joiner without KeyPackages joined"),
            Err(failed) => state.joiner = Some(failed.identity),
        }
        // Handshake bytes.
        let room = state.room();
        if room.process(data).is_ok() {
            state.room = None;
            return;
        }
        assert_unchanged(room, fixture);
        if full_check {
            room.process(&fixture.good_commit)
                .expect("the room still processes a genuine commit");
            assert_eq!(room.epoch(), fixture.epoch + 1);
            state.room = None;
        }
    }

    fn assert_unchanged(room: &Room<SnapProvider>, fixture: &RoomFixture) {
        assert_eq!(room.epoch(), fixture.epoch);
        assert!(room.is_active());
        assert_eq!(room.channel_token(), Ok(fixture.token));
        assert!(!room.has_pending_commit());
    }
}

pub use relay_body::{relay_wire, RELAY_TOKENS};

mod relay_body {
    use std::time::{Duration, Instant};

    use bytes::BytesMut;
    use sotto::media::ChannelToken;
    use sotto::relay::{
        ChannelHandle, ClientMessage, ConnId, ErrorCode, RelayMessage, Router, RouterLimits,
        RouterStats,
    };

    /// Tokens of the fixture's channels: two the script's connections share, and the
    /// control channel of connections 100 and 101 (which the script never speaks for).
    pub const RELAY_TOKENS: [ChannelToken; 3] = [
        ChannelToken([0x10; 16]),
        ChannelToken([0x11; 16]),
        ChannelToken([0xcc; 16]),
    ];
    const X: ConnId = ConnId(100);
    const Y: ConnId = ConnId(101);

    /// A router with small limits (so inputs reach them), what went in, and what the sink
    /// saw.
    struct Harness {
        router: Router,
        now: Instant,
        datagrams_in: u64,
        bytes_in: u64,
        datagrams_out: u64,
        bytes_out: u64,
        /// Welcome messages sent: (to, when, bytes).
        welcomes: Vec<(ConnId, Instant, usize)>,
    }

    /// The harness's fetch allowance per connection and minute.
    const FETCH_BYTES: usize = 500;

    impl Harness {
        fn new() -> Harness {
            let mut h = Harness {
                router: Router::new(
                    RouterLimits {
                        max_connections: 6,
                        max_channels: 5,
                        max_channels_per_connection: 3,
                        max_subscribers_per_channel: 3,
                        max_message: 4096,
                        max_mailboxes: 2,
                        max_welcomes_per_mailbox: 2,
                        max_welcome_bytes: 300,
                        welcome_ttl: Duration::from_secs(5),
                        max_fetch_bytes_per_minute: FETCH_BYTES,
                        max_channels_opened_per_connection: 2,
                        max_welcomes_per_connection: 3,
                        max_welcome_bytes_per_connection: 200,
                        history_per_channel: 3,
                        history_bytes_per_channel: 200,
                        max_history_bytes: 300,
                        history_linger: Duration::from_secs(4),
                        max_replay_bytes_per_minute: 400,
                    },
                    &[0x42; 32],
                ),
                now: Instant::now(),
                datagrams_in: 0,
                bytes_in: 0,
                datagrams_out: 0,
                bytes_out: 0,
                welcomes: Vec::new(),
            };
            // Every connection says Hello (1 to 4, X, Y); 1 and 2 subscribe to token 0, 2
            // and 3 to token 1, X and Y to the control channel.
            for conn in [1, 2, 3, 4, X.0, Y.0] {
                let mut buf = [0u8; 1];
                let n = ClientMessage::Hello.encode(&mut buf).expect("fits");
                h.feed(ConnId(conn), &buf[..n]).expect("fixture says Hello");
            }
            let subs = [(1, 0), (2, 0), (2, 1), (3, 1), (X.0, 2), (Y.0, 2)];
            for (conn, t) in subs {
                let token = RELAY_TOKENS[t];
                let mut buf = [0u8; 64];
                let n = ClientMessage::Subscribe { token }
                    .encode(&mut buf)
                    .expect("fits");
                h.feed(ConnId(conn), &buf[..n]).expect("fixture subscribes");
            }
            h
        }

        /// `datagram` as `from` itself would send it: a handle field (media, handshakes,
        /// unsubscribes) mapped to one of its own (handle mod 3 picks one of the fixture's
        /// tokens). The input cannot guess handles (drawn under the relay's key): this is
        /// how it reaches what lies behind them.
        fn authentic(&self, from: ConnId, datagram: &[u8]) -> Vec<u8> {
            let Ok(msg) = ClientMessage::parse(datagram) else {
                return datagram.to_vec();
            };
            let own = |h: ChannelHandle| {
                let token = RELAY_TOKENS[(h.0 % 3) as usize];
                self.router.handle(from, &token).unwrap_or(h)
            };
            let msg = match msg {
                ClientMessage::Unsubscribe { handle } => ClientMessage::Unsubscribe {
                    handle: own(handle),
                },
                ClientMessage::Media { handle, frame } => ClientMessage::Media {
                    handle: own(handle),
                    frame,
                },
                ClientMessage::Handshake { handle, message } => ClientMessage::Handshake {
                    handle: own(handle),
                    message,
                },
                other => other,
            };
            let mut out = vec![0u8; msg.encoded_len()];
            match msg.encode(&mut out) {
                Ok(n) => out.truncate(n),
                Err(_) => return datagram.to_vec(),
            }
            out
        }

        /// One datagram in; checks every invariant of what comes out.
        fn feed(&mut self, from: ConnId, datagram: &[u8]) -> Result<(), ErrorCode> {
            // A connection the router holds no state for gets nothing but NotConnected for
            // any request but Hello.
            let stranger = self.router.usage(from).is_none()
                && datagram.len() <= self.router.limits().max_message
                && ClientMessage::parse(datagram).is_ok_and(|m| !matches!(m, ClientMessage::Hello));
            let mut errors = Vec::new();
            let (mut datagrams, mut bytes) = (0u64, 0u64);
            let now = self.now;
            let welcomes = &mut self.welcomes;
            let result = self.router.receive(from, datagram, now, &mut |to, b| {
                datagrams += 1;
                bytes += b.len() as u64;
                let msg = RelayMessage::parse(b).expect("the router sends valid messages");
                match msg {
                    RelayMessage::Error { code, .. } => errors.push((to, code)),
                    RelayMessage::Welcome { .. } => welcomes.push((to, now, b.len())),
                    _ => {}
                }
            });
            // The fetch allowance: its minutes are fixed windows, so any 60 s span holds
            // at most two of them.
            let recent: usize = self
                .welcomes
                .iter()
                .filter(|(to, t, _)| {
                    *to == from && now.saturating_duration_since(*t).as_secs() < 60
                })
                .map(|(_, _, n)| *n)
                .sum();
            assert!(
                recent <= 2 * FETCH_BYTES,
                "{recent} Welcome bytes to one connection"
            );
            self.datagrams_in += 1;
            self.bytes_in += datagram.len() as u64;
            self.datagrams_out += datagrams;
            self.bytes_out += bytes;
            if stranger {
                assert_eq!(result, Err(ErrorCode::NotConnected));
                assert!(self.router.usage(from).is_none());
            }
            match result {
                Err(code) => {
                    assert_eq!(datagrams, 1, "a refusal sends exactly the error");
                    assert_eq!(errors, [(from, code)]);
                }
                Ok(()) => assert!(errors.is_empty()),
            }
            self.check();
            result
        }

        fn check(&self) {
            let s: &RouterStats = self.router.stats();
            assert_eq!(s.datagrams_in, self.datagrams_in);
            assert_eq!(s.bytes_in, self.bytes_in);
            assert_eq!(s.datagrams_out, self.datagrams_out);
            assert_eq!(s.bytes_out, self.bytes_out);
            let accepted = s.subscribes
                + s.unsubscribes
                + s.media_in
                + s.handshakes_in
                + s.welcomes_in
                + s.fetches
                + s.hellos;
            assert_eq!(s.datagrams_in, accepted + s.drops.total());
            assert_eq!(s.errors_out, s.drops.total());
            assert_eq!(
                s.datagrams_out,
                s.subscribes
                    + s.unsubscribes
                    + s.media_out
                    + s.handshakes_out
                    + s.welcomes_in
                    + s.welcomes_out
                    + s.hellos
                    + s.errors_out
            );
            assert_eq!(
                s.channels_opened - s.channels_closed,
                self.router.channel_count() as u64
            );
            let limits = self.router.limits();
            assert!(self.router.channel_count() <= limits.max_channels);
            assert!(self.router.connection_count() <= limits.max_connections);
            assert!(self.router.mailbox_count() <= limits.max_mailboxes);
            assert!(self.router.welcome_bytes() <= limits.max_welcome_bytes);
            // Per-connection quotas hold, and every charge is exactly what the router
            // holds on the connection's behalf (released on close, expiry, disconnect).
            for conn in [1, 2, 3, 4, X.0, Y.0] {
                if let Some(u) = self.router.usage(ConnId(conn)) {
                    assert!(u.subscriptions <= limits.max_channels_per_connection);
                    assert!(u.channels_opened <= limits.max_channels_opened_per_connection);
                    assert!(u.welcomes <= limits.max_welcomes_per_connection);
                    assert!(u.welcome_bytes <= limits.max_welcome_bytes_per_connection);
                }
            }
            assert!(self.router.accounting_is_exact());
        }

        /// The control channel delivers exactly as it should: X's frame reaches Y once
        /// with Y's handle, and otherwise only other subscribers of the channel.
        fn control_still_works(&mut self) {
            let token = RELAY_TOKENS[2];
            let hx = self.router.handle(X, &token).expect("X subscribed");
            let hy = self.router.handle(Y, &token).expect("Y subscribed");
            let frame = [0x5a; 40];
            let mut datagram = ClientMessage::media_header(hx).to_vec();
            datagram.extend_from_slice(&frame);
            let mut expected = RelayMessage::media_header(hy).to_vec();
            expected.extend_from_slice(&frame);
            let mut to_y = 0;
            let mut total = 0;
            let mut receivers = Vec::new();
            let result = self
                .router
                .receive(X, &datagram, self.now, &mut |to, b: &[u8]| {
                    total += 1;
                    if to == Y {
                        to_y += 1;
                        assert_eq!(b, &expected[..]);
                    }
                    receivers.push(to);
                });
            assert_eq!(result, Ok(()));
            assert_eq!(to_y, 1);
            for to in &receivers {
                assert!(self.router.handle(*to, &token).is_some());
            }
            assert_eq!(total, self.router.subscriber_count(&token) - 1);
            self.datagrams_in += 1;
            self.bytes_in += datagram.len() as u64;
            self.datagrams_out += total as u64;
            self.bytes_out += (total * expected.len()) as u64;
            self.check();
        }
    }

    /// Checks parse → encode is the identity for both directions.
    fn round_trip(data: &[u8]) {
        if let Ok(msg) = ClientMessage::parse(data) {
            assert_eq!(msg.encoded_len(), data.len());
            let mut buf = vec![0u8; data.len()];
            assert_eq!(msg.encode(&mut buf), Ok(data.len()));
            assert_eq!(buf, data, "encoding is unique");
            assert_eq!(ClientMessage::parse(&buf), Ok(msg));
            let mut bytes = BytesMut::new();
            assert_eq!(msg.encode_into(&mut bytes), Ok(data.len()));
            assert_eq!(&bytes[..], data);
        }
        if let Ok(msg) = RelayMessage::parse(data) {
            assert_eq!(msg.encoded_len(), data.len());
            let mut buf = vec![0u8; data.len()];
            assert_eq!(msg.encode(&mut buf), Ok(data.len()));
            assert_eq!(buf, data, "encoding is unique");
            assert_eq!(RelayMessage::parse(&buf), Ok(msg));
            let mut bytes = BytesMut::new();
            assert_eq!(msg.encode_into(&mut bytes), Ok(data.len()));
            assert_eq!(&bytes[..], data);
        }
    }

    /// Arbitrary bytes: both parsers never panic and parse → encode → parse is the
    /// identity; then the bytes go to a router holding a few connections and channels,
    /// first as one datagram from connection 1, then as a script of steps
    /// `op ‖ len ‖ len bytes`, where `op & 3` picks connection 1..=4, `op & 4` disconnects
    /// it instead (no len, no bytes), `op & 8` advances time by 3 s, `op & 16` calls
    /// `expire` and `op & 32` sends the datagram with the connection's own handles in place
    /// of the ones it names. The router never panics, its counters add up, its limits hold,
    /// a connection it holds no state for gets only `NotConnected` (Hello aside), and the
    /// control channel, which the input cannot speak for, delivers exactly as before.
    pub fn relay_wire(data: &[u8]) {
        round_trip(data);
        let mut h = Harness::new();
        let _ = h.feed(ConnId(1), data);
        h.control_still_works();
        let mut rest = data;
        while let Some((&op, tail)) = rest.split_first() {
            let conn = ConnId(u64::from(op & 3) + 1);
            if op & 8 != 0 {
                h.now += Duration::from_secs(3);
            }
            if op & 16 != 0 {
                h.router.expire(h.now);
                h.check();
            }
            if op & 4 != 0 {
                h.router.disconnect(conn, h.now);
                // A later datagram under this id is a new connection, with a new allowance.
                h.welcomes.retain(|(to, _, _)| *to != conn);
                h.check();
                rest = tail;
                continue;
            }
            let Some((&len, tail)) = tail.split_first() else {
                break;
            };
            let len = usize::from(len).min(tail.len());
            let (datagram, tail) = tail.split_at(len);
            round_trip(datagram);
            let datagram = if op & 32 != 0 {
                h.authentic(conn, datagram)
            } else {
                datagram.to_vec()
            };
            let _ = h.feed(conn, &datagram);
            rest = tail;
        }
        h.control_still_works();
    }
}

#[cfg(feature = "opus")]
pub use call_body::{call_datagram, CallFuzz};

/// `Call::handle_datagram` on a member of a live two-member call: any datagram, as if from
/// the relay. The call runs over sotto's router in-process (a fixed relay key, so handles
/// in seeds recorded from this fixture are live ones).
#[cfg(feature = "opus")]
mod call_body {
    use std::time::{Duration, Instant};

    use sotto::call::{Call, CallConfig, CallError};
    use sotto::keys::MemberId;
    use sotto::media::ChannelToken;
    use sotto::provider::Provider;
    use sotto::relay::{ConnId, Router, RouterLimits};
    use sotto::room::{Identity, SafetyCode};

    const STEP: Duration = Duration::from_millis(5);
    /// Datagrams moved per pump at most (the pump ends sooner when nothing is queued).
    const MAX_PUMPED: usize = 4096;
    /// Every this many inputs, the call must come back together within [`RECOVERY`].
    const CHECK_EVERY: u64 = 256;
    const RECOVERY: Duration = Duration::from_secs(10);

    /// What a member shows: a refused datagram changes none of it.
    #[derive(Debug, PartialEq, Eq)]
    struct Shown {
        epoch: Option<u64>,
        code: Option<SafetyCode>,
        members: Vec<MemberId>,
        speaks: bool,
        channels: Vec<ChannelToken>,
        removed: bool,
    }

    fn shown(call: &Call) -> Shown {
        let mut channels: Vec<ChannelToken> = call.transport().client().subscribed().collect();
        channels.sort_by_key(|t| t.0);
        Shown {
            epoch: call.epoch(),
            code: call.safety_code(),
            members: call.members().map(|(id, _)| id).collect(),
            speaks: call.can_speak(),
            channels,
            removed: call.is_removed(),
        }
    }

    /// The victim (connection 0), the other member (connection 1) and the relay.
    pub struct CallFuzz {
        pub calls: [Call; 2],
        router: Router,
        pub now: Instant,
        inputs: u64,
        buf: Vec<u8>,
        /// Datagrams the relay sent the victim, when recording (for seeds).
        pub record: Option<Vec<Vec<u8>>>,
    }

    impl CallFuzz {
        /// A room of two, converged. Panics if it does not form (a broken engine).
        pub fn new() -> CallFuzz {
            let now = Instant::now();
            let config = CallConfig::default();
            let creator = Identity::new(Provider::new().unwrap(), b"creator").unwrap();
            let creator = Call::create(creator, config.clone(), now).unwrap();
            let joiner = Identity::new(Provider::new().unwrap(), b"joiner").unwrap();
            let kp = joiner.key_package(sotto::room::MlsSuite::Classic).unwrap();
            let kp_bytes = kp.bytes.clone();
            let joiner = Call::join(joiner, kp, config, now).unwrap();
            let mut state = CallFuzz {
                calls: [joiner, creator],
                router: Router::new(RouterLimits::default(), &[0x5a; 32]),
                now,
                inputs: 0,
                buf: Vec::new(),
                record: None,
            };
            assert!(state.run_until(Duration::from_secs(5), |s| s.calls[1].ready_to_commit()));
            let now = state.now;
            state.calls[1].invite(&[&kp_bytes], now).unwrap();
            assert!(state.run_until(RECOVERY, CallFuzz::together));
            state
        }

        /// Both in the room, in one epoch with one safety code, settled.
        pub fn together(&self) -> bool {
            let [a, b] = &self.calls;
            a.is_in_room()
                && b.is_in_room()
                && a.epoch() == b.epoch()
                && a.safety_code() == b.safety_code()
                && a.ready_to_commit()
                && b.ready_to_commit()
        }

        /// Steps of [`STEP`] until `done` or `limit` of virtual time.
        pub fn run_until(&mut self, limit: Duration, done: impl Fn(&CallFuzz) -> bool) -> bool {
            let end = self.now + limit;
            while self.now < end {
                if done(self) {
                    return true;
                }
                self.step();
            }
            done(self)
        }

        /// One step: time passes, and datagrams move until none is queued.
        pub fn step(&mut self) {
            self.now += STEP;
            let now = self.now;
            for call in &mut self.calls {
                if call.poll_timeout().is_some_and(|t| t <= now) {
                    call.handle_timeout(now);
                }
            }
            self.pump();
        }

        fn pump(&mut self) {
            let now = self.now;
            let mut moved = 0;
            let mut queue: Vec<(usize, Vec<u8>)> = Vec::new();
            loop {
                for (i, call) in self.calls.iter_mut().enumerate() {
                    while call.poll_transmit(&mut self.buf) {
                        let _ = self.router.receive(
                            ConnId(i as u64),
                            &self.buf,
                            now,
                            &mut |to: ConnId, b: &[u8]| queue.push((to.0 as usize, b.to_vec())),
                        );
                    }
                    while call.poll_event().is_some() {}
                }
                if queue.is_empty() || moved >= MAX_PUMPED {
                    return;
                }
                for (to, bytes) in queue.drain(..) {
                    moved += 1;
                    if to == 0 {
                        if let Some(record) = &mut self.record {
                            record.push(bytes.clone());
                        }
                    }
                    if let Some(call) = self.calls.get_mut(to) {
                        let _ = call.handle_datagram(&bytes, now);
                    }
                }
            }
        }
    }

    impl Default for CallFuzz {
        fn default() -> Self {
            CallFuzz::new()
        }
    }

    /// One datagram to the victim: no panic; refused means typed and nothing shown changed;
    /// the call then goes on (time passes, the relay answers) and, every [`CHECK_EVERY`]
    /// inputs, comes back together within [`RECOVERY`].
    pub fn call_datagram(state: &mut CallFuzz, data: &[u8]) {
        let now = state.now;
        let victim = &mut state.calls[0];
        let before = shown(victim);
        match victim.handle_datagram(data, now) {
            Ok(()) => {}
            Err(CallError::Transport(_)) => assert_eq!(shown(victim), before),
            Err(e) => panic!("handle_datagram: untyped refusal {e:?}"),
        }
        state.step();
        state.inputs += 1;
        if state.inputs.is_multiple_of(CHECK_EVERY) {
            assert!(
                state.run_until(RECOVERY, CallFuzz::together),
                "the call did not come back together after input {}",
                state.inputs
            );
        }
    }
}

/// The `rtp` target: `data` is a script of RTP packets, each prefixed by its length (one
/// byte), fed to an [`RtpReceiver`](sotto::rtp::RtpReceiver) of Opus (PT 111) and RED
/// (PT 63). Every packet is also parsed alone: a parsed payload lies inside the packet,
/// and writing the header back with that payload parses to the same. An accepted packet
/// fed again is a duplicate.
pub fn rtp(data: &[u8]) {
    use sotto::rtp::{write_packet, RtpError, RtpPacket, RtpReceiver};
    let mut rx = RtpReceiver::new(111, Some(63));
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (packet, tail) = tail.split_at(len);
        rest = tail;
        if let Ok(parsed) = RtpPacket::parse(packet) {
            let start = parsed.payload.as_ptr() as usize - packet.as_ptr() as usize;
            assert!(start >= sotto::rtp::HEADER_LEN);
            assert!(start + parsed.payload.len() + parsed.padding <= packet.len());
            let mut again = bytes::BytesMut::new();
            write_packet(&parsed.header, parsed.payload, &mut again);
            let reparsed = RtpPacket::parse(&again).expect("a written packet parses");
            assert_eq!(reparsed.header, parsed.header);
            assert_eq!(reparsed.payload, parsed.payload);
        }
        if let Ok(got) = rx.receive(packet) {
            assert!(!got.payload.is_empty());
            assert_eq!(got.header.payload_type, 111);
            assert_eq!(
                rx.receive(packet),
                Err(RtpError::Duplicate(got.header.sequence))
            );
        }
    }
}

/// The `quic_stream` target: the QUIC carrier's stream reader
/// ([`Deframer`](sotto::quic::Deframer)). The first byte sets the size of the pieces the
/// rest arrives in. Every message it gives is 1 to `MAX_MESSAGE` bytes; the messages, framed
/// again, are exactly the start of the stream; what it holds back is the rest (unless the
/// framing broke).
#[cfg(feature = "quic")]
pub fn quic_stream(data: &[u8]) {
    use sotto::quic::Deframer;
    use sotto::relay::MAX_MESSAGE;
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let mut reader = Deframer::new();
    let mut again = Vec::new();
    let mut broken = false;
    for piece in stream.chunks(usize::from(cut % 64) + 1) {
        reader.push(piece);
        loop {
            match reader.next_message() {
                Ok(Some(message)) => {
                    assert!(!message.is_empty() && message.len() <= MAX_MESSAGE);
                    again.extend_from_slice(&(message.len() as u32).to_be_bytes());
                    again.extend_from_slice(message);
                }
                Ok(None) => break,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        if broken {
            break;
        }
    }
    assert!(stream.starts_with(&again));
    if !broken {
        assert_eq!(again.len() + reader.buffered(), stream.len());
    }
}

/// The `sealed` target: `data` as a sealed handshake message (under a fixed key and
/// channel) and as a padded Welcome. Neither ever panics; what opens lies inside `data`;
/// and `data` itself sealed, or padded, comes back whole (and a flipped byte of the sealed
/// one does not open).
#[cfg(feature = "opus")]
pub fn sealed(data: &[u8]) {
    use sotto::call::sealed::{self, SealError};
    use sotto::media::{ChannelToken, HandshakeKey};
    use sotto::relay::MAX_HANDSHAKE;
    let key = HandshakeKey::from_exported([0x5a; 16]);
    let token = ChannelToken([0x3c; 16]);
    let mut scratch = Vec::new();
    if let Ok(opened) = sealed::open(&key, &token, data, &mut scratch) {
        assert!(opened.len() + sealed::SEALED_OVERHEAD <= data.len());
    }
    if let Ok(welcome) = sealed::unpad_welcome(data) {
        assert!(welcome.len() + sealed::PADDED_WELCOME_OVERHEAD <= data.len());
    }
    let mut wire = Vec::new();
    match sealed::seal(&key, &token, data, 4096, MAX_HANDSHAKE, &mut wire) {
        Ok(()) => {
            assert!(wire.len() >= 4096 && wire.len() <= MAX_HANDSHAKE);
            assert_eq!(
                sealed::open(&key, &token, &wire, &mut scratch).unwrap(),
                data
            );
            let at = data.len() % wire.len();
            wire[at] ^= 0x01;
            assert_eq!(
                sealed::open(&key, &token, &wire, &mut scratch),
                Err(SealError::Unopenable)
            );
        }
        Err(e) => assert_eq!(e, SealError::TooLarge),
    }
    match sealed::pad_welcome(data, 4096, MAX_HANDSHAKE, &mut wire) {
        Ok(()) => assert_eq!(sealed::unpad_welcome(&wire).unwrap(), data),
        Err(e) => assert_eq!(e, SealError::TooLarge),
    }
}

/// Stage messages: `data` as a rekey and a Welcome on the wire of a stage member, and as a
/// Welcome for a KeyPackage the member holds (all refused, at the latest at decryption), and as the signed bodies behind them, parsed directly (what a
/// host's signature would otherwise keep out): never a panic, counts within the bytes.
pub fn stage(data: &[u8]) {
    use openmls_rust_crypto::{OpenMlsRustCrypto, RustCrypto};
    use sotto::room::{Identity, MlsSuite};
    use sotto::stage::{fuzzing, StageConfig, StageHost, StageMember};
    use std::cell::RefCell;
    /// A member, its identity, the host's key, and a KeyPackage reference it holds.
    type Fixture = (StageMember, Identity<OpenMlsRustCrypto>, Vec<u8>, Vec<u8>);
    thread_local! {
        static MEMBER: RefCell<Fixture> = {
            let (mut host, _) = StageHost::new(StageConfig { capacity: 16, ..StageConfig::default() }).unwrap();
            let id = Identity::new(OpenMlsRustCrypto::default(), b"fuzz").unwrap();
            host.add(&RustCrypto::default(), &id.key_package(MlsSuite::Classic).unwrap().bytes).unwrap();
            let commit = host.commit(&RustCrypto::default()).unwrap();
            let (member, _) = StageMember::join(&id, host.signature_key(), &commit.welcomes[0].bytes).unwrap();
            // A second KeyPackage, whose reference leads Welcomes made of `data` to HPKE.
            let reference = id.key_package(MlsSuite::Classic).unwrap().reference;
            RefCell::new((member, id, host.signature_key().to_vec(), reference))
        };
    }
    MEMBER.with(|m| {
        let (member, id, host_key, reference) = &mut *m.borrow_mut();
        let epoch = member.epoch();
        assert!(member.process(data).is_err());
        assert_eq!(member.epoch(), epoch);
        assert!(StageMember::join(id, host_key, data).is_err());
        // The same bytes behind the held KeyPackage's reference: refused at decryption
        // (the KeyPackage is kept for a genuine Welcome).
        let mut welcome = vec![1u8];
        welcome.extend_from_slice(&(reference.len() as u16).to_be_bytes());
        welcome.extend_from_slice(reference);
        welcome.extend_from_slice(data);
        assert!(StageMember::join(id, host_key, &welcome).is_err());
    });
    if let Ok(n) = fuzzing::rekey_body(data, 1 << 14) {
        assert!(n * 36 <= data.len());
    }
    if let Ok((slot, path)) = fuzzing::welcome_body(data) {
        assert!(path * 32 <= data.len() && path <= 17 && slot < 1 << 16);
    }
}

/// The storage codec (`sotto::provider`): `data` decoded as any value, as a KeyPackage and
/// as a GroupContext: never a panic, and a value that decodes survives a round trip.
pub fn storage_codec(data: &[u8]) {
    if let Err(e) = sotto::provider::fuzzing::decode(data) {
        panic!("{e}");
    }
}
