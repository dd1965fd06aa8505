//! Bad-input sweep: empty, truncated-at-every-byte and 1 MiB inputs; KIDs and counters near
//! 2^64; floods of frames naming unknown KIDs or future epochs. Memory stays bounded, real
//! senders' replay state does not move, and every failure is a typed error.

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::room_of;
use sotto::frame::{CipherSuite, FrameError, FrameOpener, FrameSealer, Header};
use sotto::keys::{KeyError, KidLayout};
use sotto::media::MediaConfig;
use sotto::room::{RoomConfig, RoomError};

const MIB: usize = 1 << 20;

#[test]
fn frames_empty_truncated_and_huge() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let t = t0 + Duration::from_secs(1);
    let frame = m[0].seal(b"a genuine frame of audio", t);
    // Every truncation is refused with a typed error.
    for cut in 0..frame.len() {
        let e = m[1].open(&frame[..cut], t).unwrap_err();
        assert!(
            matches!(
                e,
                KeyError::Frame(
                    FrameError::MalformedHeader
                        | FrameError::Truncated
                        | FrameError::AuthenticationFailed
                )
            ),
            "cut {cut}: {e:?}"
        );
    }
    // A 1 MiB frame under a genuine header: authentication fails, nothing breaks.
    let mut huge = frame.to_vec();
    huge.resize(MIB, 0xa5);
    assert_eq!(
        m[1].open(&huge, t).unwrap_err(),
        KeyError::Frame(FrameError::AuthenticationFailed)
    );
    // The genuine frame still opens: no forged input moved its replay window.
    assert_eq!(m[1].open(&frame, t).unwrap().1, b"a genuine frame of audio");
    // 1 MiB through the plain opener and the header parser too.
    let mut opener = FrameOpener::new();
    opener
        .insert_key(0, CipherSuite::AesCtr128HmacSha256_80, b"k")
        .unwrap();
    let big = vec![0u8; MIB];
    assert_eq!(
        opener.open(b"", &big, &mut BytesMut::new()),
        Err(FrameError::AuthenticationFailed)
    );
    assert!(Header::parse(&big).is_ok());
    assert_eq!(
        opener.open(b"", &[], &mut BytesMut::new()),
        Err(FrameError::MalformedHeader)
    );
}

#[test]
fn kids_and_counters_near_the_top() {
    for suite in CipherSuite::ALL {
        for (kid, ctr) in [
            (u64::MAX, u64::MAX),
            (u64::MAX - 1, 0),
            (0, u64::MAX),
            (1 << 63, (1 << 63) + 1),
        ] {
            let mut sealer = FrameSealer::starting_at(suite, kid, b"top", ctr).unwrap();
            let mut opener = FrameOpener::new();
            opener.insert_key(kid, suite, b"top").unwrap();
            let mut f = BytesMut::new();
            sealer.seal(b"m", b"payload", &mut f).unwrap();
            assert_eq!(Header::parse(&f).unwrap().0, Header::new(kid, ctr));
            let got = opener.open(b"m", &f, &mut BytesMut::new()).unwrap();
            assert_eq!((got.kid, got.ctr), (kid, ctr));
            assert_eq!(
                opener.open(b"m", &f, &mut BytesMut::new()),
                Err(FrameError::Replayed)
            );
        }
    }
    // The KID layout maps out-of-range values to typed errors, never a wrap.
    let l = KidLayout::default();
    assert_eq!(l.compose(0, 1 << 16, 0), Err(KeyError::OutOfRange));
    assert_eq!(l.compose(u64::MAX, 0, 0), Err(KeyError::OutOfRange));
    let parts = l.decompose(u64::MAX);
    assert_eq!((parts.leaf, parts.epoch_bits), (0xffff, 0xf));
}

/// Live heap bytes allocated minus freed by the current thread (tests run in parallel, so
/// a process-wide count would mix them), to show floods do not grow memory.
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }
    fn add(n: isize) {
        let _ = LIVE.try_with(|c| c.set(c.get() + n));
    }
    pub struct Counting;
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            add(l.size() as isize);
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            add(-(l.size() as isize));
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            add(n as isize - l.size() as isize);
            unsafe { System.realloc(p, l, n) }
        }
    }
    pub fn live() -> isize {
        LIVE.with(|c| c.get())
    }
}

#[global_allocator]
static GLOBAL: heap::Counting = heap::Counting;

#[test]
fn floods_of_unknown_kids_and_future_epochs_stay_bounded() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob", "carol"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let t = t0 + Duration::from_secs(1);
    let genuine = m[0].seal(b"genuine", t);
    m[1].open(&genuine, t).unwrap();
    let derived_before = m[1].media.ring().unwrap().derived_keys();
    let layout = KidLayout::default();
    let epoch = m[1].room.epoch();
    let live_before = heap::live();
    let mut errors = std::collections::BTreeMap::new();
    let mut out = BytesMut::with_capacity(128);
    for i in 0..20_000u64 {
        // Unknown leaves in the current epoch, leaves in future epochs, random contexts.
        let kid = match i % 3 {
            0 => layout.compose(0, 1000 + (i % 60_000), epoch).unwrap(),
            1 => layout.compose(0, i % 3, epoch + 1 + (i % 7)).unwrap(),
            _ => i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        };
        let mut forged =
            FrameSealer::starting_at(CipherSuite::AesCtr128HmacSha256_80, kid, b"attacker", i)
                .unwrap();
        let mut f = BytesMut::new();
        forged.seal(b"", b"noise", &mut f).unwrap();
        out.clear();
        let e = m[1].media.open(&f, &mut out, t).unwrap_err();
        *errors
            .entry(
                format!("{e:?}")
                    .split(['{', '('])
                    .next()
                    .unwrap()
                    .trim()
                    .to_string(),
            )
            .or_insert(0) += 1;
    }
    let grown = heap::live() - live_before;
    // The counter sees retained memory (one 1 MiB buffer shows as 1 MiB).
    let probe = vec![1u8; MIB];
    assert!(heap::live() - live_before - grown >= MIB as isize);
    drop(probe);
    println!("errors: {errors:?}; live heap change {grown} bytes");
    // No key was derived for any forged KID, and memory did not grow with the flood.
    assert_eq!(m[1].media.ring().unwrap().derived_keys(), derived_before);
    assert!(grown < 64 * 1024, "heap grew by {grown} bytes");
    for kind in errors.keys() {
        assert!(
            [
                "UnknownSender",
                "EpochNotYetKnown",
                "EpochExpired",
                "UnknownStream",
                "Frame",
                "OwnFrame"
            ]
            .contains(&kind.as_str()),
            "unexpected error {kind}"
        );
    }
    // The real sender's replay state is untouched: its next frame opens, a replay does not.
    let next = m[0].seal(b"still here", t);
    assert_eq!(m[1].open(&next, t).unwrap().1, b"still here");
    assert_eq!(
        m[1].open(&genuine, t).unwrap_err(),
        KeyError::Frame(FrameError::Replayed)
    );
}

#[test]
fn handshake_bytes_empty_truncated_and_huge() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let commit = m[1].room.self_update().unwrap();
    let epoch = m[0].room.epoch();
    for cut in 0..commit.message.len() {
        match m[0].room.process(&commit.message[..cut]) {
            Err(RoomError::Rejected(_)) => {}
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    let mut huge = commit.message.clone();
    huge.resize(MIB, 0);
    assert!(matches!(
        m[0].room.process(&huge),
        Err(RoomError::Rejected(_))
    ));
    assert!(matches!(
        m[0].room.process(&vec![0xffu8; MIB]),
        Err(RoomError::Rejected(_))
    ));
    assert_eq!(m[0].room.epoch(), epoch);
    // Welcomes and KeyPackages of garbage.
    assert_eq!(
        sotto::room::Room::join(common::identity("x"), RoomConfig::default(), &[])
            .unwrap_err()
            .error,
        RoomError::InvalidWelcome
    );
    assert_eq!(
        m[0].room.invite(&[&vec![0u8; MIB]]).unwrap_err(),
        RoomError::InvalidKeyPackage
    );
    // And the genuine commit still goes through.
    m[0].process(&commit.message, t0);
    assert_eq!(m[0].room.epoch(), epoch + 1);
}

/// Relay datagrams of every message type, both directions, cut at every byte, empty and
/// 1 MiB: both parsers return typed errors (a cut open-ended message may parse as a shorter
/// one, never as anything longer), the router refuses with exactly one error to the sender,
/// and the client's parser refuses what the relay would never send.
#[test]
fn relay_datagrams_empty_truncated_and_huge() {
    use sotto::media::ChannelToken;
    use sotto::relay::{
        ChannelHandle, ClientError, ClientMessage, ConnId, ErrorCode, MailboxId, RelayClient,
        RelayMessage, Request, Router, RouterLimits, WireError,
    };

    let now = Instant::now();
    // The router knows the connection (it said Hello), so requests cut short reach the
    // router's logic.
    let mut router = Router::new(RouterLimits::default(), &[4; 32]);
    let conn = ConnId(1);
    let mut hello = [0u8; 1];
    let n = ClientMessage::Hello.encode(&mut hello).unwrap();
    router
        .receive(conn, &hello[..n], now, &mut |_, _| {})
        .unwrap();
    let token = ChannelToken([7; 16]);
    let handle = ChannelHandle(0x0300_0003);
    let id = [9u8; 32];
    let mailbox = MailboxId::new(&id).unwrap();
    let payload = vec![0x5au8; 200];
    let client: Vec<(ClientMessage<'_>, bool)> = vec![
        (ClientMessage::Subscribe { token }, false),
        (ClientMessage::Unsubscribe { handle }, false),
        (
            ClientMessage::Media {
                handle,
                frame: &payload[..60],
            },
            true,
        ),
        (
            ClientMessage::Handshake {
                handle,
                message: &payload,
            },
            true,
        ),
        (
            ClientMessage::DeliverWelcome {
                mailbox,
                welcome: &payload,
            },
            true,
        ),
        (ClientMessage::FetchWelcomes { mailbox }, false),
        (ClientMessage::Hello, false),
    ];
    let relay: Vec<(RelayMessage<'_>, bool)> = vec![
        (
            RelayMessage::Subscribed {
                token,
                handle,
                next_seq: 7,
            },
            false,
        ),
        (RelayMessage::Unsubscribed { handle }, false),
        (
            RelayMessage::Media {
                handle,
                frame: &payload[..60],
            },
            true,
        ),
        (
            RelayMessage::Handshake {
                handle,
                seq: 9,
                message: &payload,
            },
            true,
        ),
        (
            RelayMessage::Welcome {
                mailbox,
                welcome: &payload,
            },
            true,
        ),
        (RelayMessage::Stored { mailbox }, false),
        (
            RelayMessage::Error {
                code: ErrorCode::ChannelFull,
                request: Request::Subscribe(token),
            },
            false,
        ),
        (RelayMessage::Ready, false),
    ];

    let mut refused = 0u64;
    let mut feed = |router: &mut Router, bytes: &[u8]| {
        let mut replies = Vec::new();
        let result = router.receive(conn, bytes, now, &mut |to, b| {
            replies.push((to, b.to_vec()))
        });
        if let Err(code) = result {
            refused += 1;
            assert_eq!(replies.len(), 1);
            assert_eq!(replies[0].0, conn);
            assert!(matches!(
                RelayMessage::parse(&replies[0].1),
                Ok(RelayMessage::Error { code: c, .. }) if c == code
            ));
        }
    };
    for (msg, open_ended) in &client {
        let mut full = vec![0u8; msg.encoded_len()];
        msg.encode(&mut full).unwrap();
        for cut in 0..full.len() {
            let bytes = &full[..cut];
            match ClientMessage::parse(bytes) {
                Ok(short) => assert!(*open_ended && short.encoded_len() == cut),
                Err(e) => assert_eq!(e, WireError::Truncated, "{msg:?} cut at {cut}"),
            }
            feed(&mut router, bytes);
        }
    }
    let mut client_side = RelayClient::new();
    for (msg, open_ended) in &relay {
        let mut full = vec![0u8; msg.encoded_len()];
        msg.encode(&mut full).unwrap();
        for cut in 0..full.len() {
            let bytes = &full[..cut];
            match RelayMessage::parse(bytes) {
                Ok(short) => assert!(*open_ended && short.encoded_len() == cut),
                Err(e) => assert_eq!(e, WireError::Truncated, "{msg:?} cut at {cut}"),
            }
            if RelayMessage::parse(bytes).is_err() {
                assert_eq!(
                    client_side.receive(bytes),
                    Err(ClientError::Wire(WireError::Truncated))
                );
            }
        }
    }
    // Empty and 1 MiB.
    let huge = vec![0x63u8; MIB];
    assert_eq!(ClientMessage::parse(&[]), Err(WireError::Truncated));
    assert_eq!(RelayMessage::parse(&[]), Err(WireError::Truncated));
    assert!(matches!(
        ClientMessage::parse(&huge),
        Err(WireError::TooLarge { .. })
    ));
    assert!(matches!(
        RelayMessage::parse(&huge),
        Err(WireError::TooLarge { .. })
    ));
    assert!(matches!(
        client_side.receive(&huge),
        Err(ClientError::Wire(WireError::TooLarge { .. }))
    ));
    feed(&mut router, &[]);
    feed(&mut router, &huge);
    // What the cuts left valid was shorter Welcomes for one mailbox (its handles are
    // unknown, so no media or handshake went anywhere); no channel was opened.
    assert_eq!(router.stats().drops.get(ErrorCode::TooLarge), 1);
    assert_eq!(router.channel_count(), 0);
    assert!(router.mailbox_count() <= 1);
    assert_eq!(refused, router.stats().drops.total());
    assert!(refused > 100);
}
