//! The relay: wire format round trips and rejections, and the router's behaviour (fan-out,
//! handshake ordering, mailboxes, limits, disconnects, counters).

use std::time::{Duration, Instant};

use bytes::BytesMut;
use proptest::prelude::*;
use sotto::media::ChannelToken;
use sotto::relay::{
    ChannelHandle, ClientMessage, ConnId, Departure, ErrorCode, MailboxId, RelayMessage, Request,
    Router, RouterLimits, RouterStats, WireError, HANDSHAKE_OVERHEAD, HANDSHAKE_REQUEST_OVERHEAD,
    MAX_HANDSHAKE, MAX_MEDIA_FRAME, MAX_MEDIA_MESSAGE, MAX_MESSAGE, MEDIA_OVERHEAD,
};

// ---------------------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------------------

/// Owned contents of a client message (messages borrow their payloads).
#[derive(Clone, Debug)]
enum OwnedClient {
    Subscribe([u8; 16]),
    Unsubscribe(u32),
    Media(u32, Vec<u8>),
    Handshake(u32, Vec<u8>),
    DeliverWelcome(Vec<u8>, Vec<u8>),
    FetchWelcomes(Vec<u8>),
    Hello,
}

impl OwnedClient {
    fn message(&self) -> ClientMessage<'_> {
        match self {
            OwnedClient::Subscribe(t) => ClientMessage::Subscribe {
                token: ChannelToken(*t),
            },
            OwnedClient::Unsubscribe(h) => ClientMessage::Unsubscribe {
                handle: ChannelHandle(*h),
            },
            OwnedClient::Media(h, f) => ClientMessage::Media {
                handle: ChannelHandle(*h),
                frame: f,
            },
            OwnedClient::Handshake(h, m) => ClientMessage::Handshake {
                handle: ChannelHandle(*h),
                message: m,
            },
            OwnedClient::DeliverWelcome(id, w) => ClientMessage::DeliverWelcome {
                mailbox: MailboxId::new(id).unwrap(),
                welcome: w,
            },
            OwnedClient::FetchWelcomes(id) => ClientMessage::FetchWelcomes {
                mailbox: MailboxId::new(id).unwrap(),
            },
            OwnedClient::Hello => ClientMessage::Hello,
        }
    }

    /// Bytes of its open-ended payload (0 for others).
    fn payload_len(&self) -> usize {
        match self {
            OwnedClient::Media(_, p)
            | OwnedClient::Handshake(_, p)
            | OwnedClient::DeliverWelcome(_, p) => p.len(),
            _ => 0,
        }
    }

    /// Whether the message ends with a payload (so appended bytes become payload).
    fn open_ended(&self) -> bool {
        matches!(
            self,
            OwnedClient::Media(..) | OwnedClient::Handshake(..) | OwnedClient::DeliverWelcome(..)
        )
    }
}

#[derive(Clone, Debug)]
enum OwnedRequest {
    Unparsed,
    Subscribe([u8; 16]),
    Unsubscribe(u32),
    Media(u32),
    Handshake(u32),
    DeliverWelcome(Vec<u8>),
    FetchWelcomes(Vec<u8>),
    Hello,
}

#[derive(Clone, Debug)]
enum OwnedRelay {
    Subscribed([u8; 16], u32, u64),
    Unsubscribed(u32),
    Media(u32, Vec<u8>),
    Handshake(u32, u64, Vec<u8>),
    Welcome(Vec<u8>, Vec<u8>),
    Stored(Vec<u8>),
    Error(u8, OwnedRequest),
    Ready,
}

impl OwnedRelay {
    fn message(&self) -> RelayMessage<'_> {
        match self {
            OwnedRelay::Subscribed(t, h, n) => RelayMessage::Subscribed {
                next_seq: *n,
                token: ChannelToken(*t),
                handle: ChannelHandle(*h),
            },
            OwnedRelay::Unsubscribed(h) => RelayMessage::Unsubscribed {
                handle: ChannelHandle(*h),
            },
            OwnedRelay::Media(h, f) => RelayMessage::Media {
                handle: ChannelHandle(*h),
                frame: f,
            },
            OwnedRelay::Handshake(h, seq, m) => RelayMessage::Handshake {
                handle: ChannelHandle(*h),
                seq: *seq,
                message: m,
            },
            OwnedRelay::Welcome(id, w) => RelayMessage::Welcome {
                mailbox: MailboxId::new(id).unwrap(),
                welcome: w,
            },
            OwnedRelay::Stored(id) => RelayMessage::Stored {
                mailbox: MailboxId::new(id).unwrap(),
            },
            OwnedRelay::Error(code, req) => RelayMessage::Error {
                code: ErrorCode::from(*code),
                request: match req {
                    OwnedRequest::Unparsed => Request::Unparsed,
                    OwnedRequest::Subscribe(t) => Request::Subscribe(ChannelToken(*t)),
                    OwnedRequest::Unsubscribe(h) => Request::Unsubscribe(ChannelHandle(*h)),
                    OwnedRequest::Media(h) => Request::Media(ChannelHandle(*h)),
                    OwnedRequest::Handshake(h) => Request::Handshake(ChannelHandle(*h)),
                    OwnedRequest::DeliverWelcome(id) => {
                        Request::DeliverWelcome(MailboxId::new(id).unwrap())
                    }
                    OwnedRequest::FetchWelcomes(id) => {
                        Request::FetchWelcomes(MailboxId::new(id).unwrap())
                    }
                    OwnedRequest::Hello => Request::Hello,
                },
            },
            OwnedRelay::Ready => RelayMessage::Ready,
        }
    }

    fn open_ended(&self) -> bool {
        matches!(
            self,
            OwnedRelay::Media(..) | OwnedRelay::Handshake(..) | OwnedRelay::Welcome(..)
        )
    }
}

fn mailbox_id() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..=MailboxId::MAX_LEN)
}

/// Payloads: mostly small, sometimes up to the bound of their type.
fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..200),
        1 => prop::collection::vec(any::<u8>(), 0..=max),
    ]
}

fn client_message() -> impl Strategy<Value = OwnedClient> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(OwnedClient::Subscribe),
        any::<u32>().prop_map(OwnedClient::Unsubscribe),
        (any::<u32>(), payload(MAX_MEDIA_FRAME)).prop_map(|(h, f)| OwnedClient::Media(h, f)),
        (any::<u32>(), payload(4000)).prop_map(|(h, m)| OwnedClient::Handshake(h, m)),
        (mailbox_id(), payload(4000)).prop_map(|(id, w)| OwnedClient::DeliverWelcome(id, w)),
        mailbox_id().prop_map(OwnedClient::FetchWelcomes),
        Just(OwnedClient::Hello),
    ]
}

fn request() -> impl Strategy<Value = OwnedRequest> {
    prop_oneof![
        Just(OwnedRequest::Unparsed),
        any::<[u8; 16]>().prop_map(OwnedRequest::Subscribe),
        any::<u32>().prop_map(OwnedRequest::Unsubscribe),
        any::<u32>().prop_map(OwnedRequest::Media),
        any::<u32>().prop_map(OwnedRequest::Handshake),
        mailbox_id().prop_map(OwnedRequest::DeliverWelcome),
        mailbox_id().prop_map(OwnedRequest::FetchWelcomes),
        Just(OwnedRequest::Hello),
    ]
}

fn relay_message() -> impl Strategy<Value = OwnedRelay> {
    prop_oneof![
        (any::<[u8; 16]>(), any::<u32>(), any::<u64>())
            .prop_map(|(t, h, n)| OwnedRelay::Subscribed(t, h, n)),
        any::<u32>().prop_map(OwnedRelay::Unsubscribed),
        (any::<u32>(), payload(MAX_MEDIA_FRAME)).prop_map(|(h, f)| OwnedRelay::Media(h, f)),
        (any::<u32>(), any::<u64>(), payload(4000))
            .prop_map(|(h, s, m)| OwnedRelay::Handshake(h, s, m)),
        (mailbox_id(), payload(4000)).prop_map(|(id, w)| OwnedRelay::Welcome(id, w)),
        mailbox_id().prop_map(OwnedRelay::Stored),
        (any::<u8>(), request()).prop_map(|(c, r)| OwnedRelay::Error(c, r)),
        Just(OwnedRelay::Ready),
    ]
}

/// Encodes through both APIs and checks they agree.
fn encode_both(len: usize, encode: impl Fn(&mut [u8]) -> Result<usize, WireError>) -> Vec<u8> {
    let mut buf = vec![0u8; len + 7];
    let n = encode(&mut buf).unwrap();
    assert_eq!(n, len);
    buf.truncate(n);
    // One byte short is refused with the size needed.
    let mut short = vec![0u8; len - 1];
    assert_eq!(
        encode(&mut short),
        Err(WireError::BufferTooSmall { needed: len })
    );
    buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn client_messages_round_trip(owned in client_message(), extra in any::<u8>()) {
        let msg = owned.message();
        let bytes = encode_both(msg.encoded_len(), |b| msg.encode(b));
        let mut appended = BytesMut::from(&b"prefix"[..]);
        prop_assert_eq!(msg.encode_into(&mut appended), Ok(bytes.len()));
        prop_assert_eq!(&appended[6..], &bytes[..]);
        prop_assert_eq!(ClientMessage::parse(&bytes), Ok(msg));
        prop_assert_eq!(bytes[0] >> 5, 3, "version 3");
        // The other direction refuses it.
        let wrong = matches!(RelayMessage::parse(&bytes), Err(WireError::WrongDirection { .. }));
        prop_assert!(wrong, "relay parser accepted a client message");
        // Truncations: never the same message.
        for cut in 0..bytes.len() {
            let parsed = ClientMessage::parse(&bytes[..cut]);
            if cut < owned.message().encoded_len() - owned.payload_len() || !owned.open_ended() {
                prop_assert!(parsed.is_err(), "prefix of {} parsed", cut);
            } else {
                prop_assert_ne!(parsed, Ok(msg));
            }
        }
        // Trailing bytes: refused, or payload of an open-ended message.
        let mut longer = bytes.clone();
        longer.push(extra);
        let parsed = ClientMessage::parse(&longer);
        if owned.open_ended() {
            prop_assert!(parsed.is_ok_and(|m| m != msg) || parsed.is_err());
        } else {
            prop_assert_eq!(parsed, Err(WireError::TrailingBytes));
        }
        // Every other version is refused.
        for version in (0u8..8).filter(|v| *v != 3) {
            let mut other = bytes.clone();
            other[0] = (version << 5) | (other[0] & 0x1f);
            prop_assert_eq!(
                ClientMessage::parse(&other),
                Err(WireError::UnsupportedVersion { version })
            );
        }
    }

    #[test]
    fn relay_messages_round_trip(owned in relay_message(), extra in any::<u8>()) {
        let msg = owned.message();
        let bytes = encode_both(msg.encoded_len(), |b| msg.encode(b));
        let mut appended = BytesMut::new();
        prop_assert_eq!(msg.encode_into(&mut appended), Ok(bytes.len()));
        prop_assert_eq!(&appended[..], &bytes[..]);
        prop_assert_eq!(RelayMessage::parse(&bytes), Ok(msg));
        let wrong = matches!(ClientMessage::parse(&bytes), Err(WireError::WrongDirection { .. }));
        prop_assert!(wrong, "client parser accepted a relay message");
        for cut in 0..bytes.len() {
            let parsed = RelayMessage::parse(&bytes[..cut]);
            let header = match &owned {
                OwnedRelay::Handshake(..) => HANDSHAKE_OVERHEAD,
                OwnedRelay::Welcome(id, _) => 2 + id.len(),
                _ => MEDIA_OVERHEAD,
            };
            if cut < header || !owned.open_ended() {
                prop_assert!(parsed.is_err(), "prefix of {} parsed", cut);
            } else {
                prop_assert_ne!(parsed, Ok(msg));
            }
        }
        let mut longer = bytes.clone();
        longer.push(extra);
        let parsed = RelayMessage::parse(&longer);
        if owned.open_ended() {
            prop_assert!(parsed.is_ok_and(|m| m != msg) || parsed.is_err());
        } else {
            prop_assert_eq!(parsed, Err(WireError::TrailingBytes));
        }
        for version in (0u8..8).filter(|v| *v != 3) {
            let mut other = bytes.clone();
            other[0] = (version << 5) | (other[0] & 0x1f);
            prop_assert_eq!(
                RelayMessage::parse(&other),
                Err(WireError::UnsupportedVersion { version })
            );
        }
    }

    /// Arbitrary bytes never panic a parser, and whatever parses re-encodes to the same
    /// bytes.
    #[test]
    fn arbitrary_bytes_parse_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        if let Ok(msg) = ClientMessage::parse(&bytes) {
            let mut buf = vec![0u8; bytes.len()];
            prop_assert_eq!(msg.encode(&mut buf), Ok(bytes.len()));
            prop_assert_eq!(&buf, &bytes);
        }
        if let Ok(msg) = RelayMessage::parse(&bytes) {
            let mut buf = vec![0u8; bytes.len()];
            prop_assert_eq!(msg.encode(&mut buf), Ok(bytes.len()));
            prop_assert_eq!(&buf, &bytes);
        }
    }
}

#[test]
fn wire_layout_matches_the_table() {
    let token = ChannelToken([0xaa; 16]);
    let h = ChannelHandle(0x0102_0304);
    let id = MailboxId::new(&[7; 32]).unwrap();
    let enc = |m: ClientMessage<'_>| {
        let mut buf = vec![0u8; m.encoded_len()];
        m.encode(&mut buf).unwrap();
        buf
    };
    let renc = |m: RelayMessage<'_>| {
        let mut buf = vec![0u8; m.encoded_len()];
        m.encode(&mut buf).unwrap();
        buf
    };
    let then = |first: u8, rest: &[u8]| [&[first][..], rest].concat();
    let sub = enc(ClientMessage::Subscribe { token });
    assert_eq!(sub, then(0x61, &[0xaa; 16]));
    assert_eq!(sub.len(), 17);
    assert_eq!(
        enc(ClientMessage::Unsubscribe { handle: h }),
        [0x62, 1, 2, 3, 4]
    );
    let media = enc(ClientMessage::Media {
        handle: h,
        frame: &[9; 60],
    });
    assert_eq!(MEDIA_OVERHEAD, 5);
    assert_eq!(media.len(), 60 + MEDIA_OVERHEAD);
    assert_eq!(&media[..5], &[0x63, 1, 2, 3, 4]);
    assert_eq!(&media[..5], &ClientMessage::media_header(h));
    assert_eq!(
        enc(ClientMessage::Handshake {
            handle: h,
            message: b"mls"
        }),
        [0x64, 1, 2, 3, 4, b'm', b'l', b's']
    );
    assert_eq!(HANDSHAKE_REQUEST_OVERHEAD, 5);
    let deliver = enc(ClientMessage::DeliverWelcome {
        mailbox: id,
        welcome: b"w",
    });
    assert_eq!(deliver.len(), 1 + 1 + 32 + 1);
    assert_eq!(&deliver[..2], &[0x65, 32]);
    assert_eq!(deliver[34], b'w');
    let fetch = enc(ClientMessage::FetchWelcomes { mailbox: id });
    assert_eq!((fetch.len(), &fetch[..2]), (34, &[0x66, 32][..]));
    assert_eq!(enc(ClientMessage::Hello), [0x67]);
    assert_eq!(renc(RelayMessage::Ready), [0x79]);

    let subscribed = renc(RelayMessage::Subscribed {
        token,
        handle: h,
        next_seq: 0x0102_0304_0506_0708,
    });
    assert_eq!(subscribed.len(), 29);
    assert_eq!(
        (subscribed[0], &subscribed[17..]),
        (0x71, &[1u8, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8][..])
    );
    assert_eq!(
        renc(RelayMessage::Unsubscribed { handle: h }),
        [0x72, 1, 2, 3, 4]
    );
    let media = renc(RelayMessage::Media {
        handle: h,
        frame: &[9; 60],
    });
    assert_eq!((media.len(), &media[..5]), (65, &[0x73u8, 1, 2, 3, 4][..]));
    let hs = renc(RelayMessage::Handshake {
        handle: h,
        seq: 5,
        message: b"x",
    });
    assert_eq!(hs, [0x74, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 5, b'x']);
    assert_eq!(HANDSHAKE_OVERHEAD, 13);
    assert_eq!(
        renc(RelayMessage::Welcome {
            mailbox: id,
            welcome: b"w"
        })[0],
        0x75
    );
    assert_eq!(renc(RelayMessage::Stored { mailbox: id })[..2], [0x76, 32]);
    assert_eq!(
        renc(RelayMessage::Error {
            code: ErrorCode::UnknownHandle,
            request: Request::Media(h)
        }),
        [0x77, 4, 0x03, 1, 2, 3, 4]
    );
    assert_eq!(
        renc(RelayMessage::Error {
            code: ErrorCode::Malformed,
            request: Request::Unparsed
        }),
        [0x77, 1, 0]
    );
    // An error about a Subscribe names the token.
    assert_eq!(
        renc(RelayMessage::Error {
            code: ErrorCode::RelayFull,
            request: Request::Subscribe(token)
        }),
        [&[0x77, 7, 0x01][..], &[0xaa; 16]].concat()
    );
    assert_eq!(
        renc(RelayMessage::Error {
            code: ErrorCode::NotConnected,
            request: Request::Hello
        }),
        [0x77, 15, 0x07]
    );
    // 0x18 (version 2's Challenge) and error code 14 (version 2's Unproven) are retired.
    assert_eq!(
        RelayMessage::parse(&[0x78; 17]),
        Err(WireError::UnknownType { code: 0x18 })
    );
    assert_eq!(
        RelayMessage::parse(&[0x77, 14, 0]),
        Ok(RelayMessage::Error {
            code: ErrorCode::Other(14),
            request: Request::Unparsed
        })
    );
}

#[test]
fn wire_rejections() {
    assert_eq!(ClientMessage::parse(&[]), Err(WireError::Truncated));
    assert_eq!(RelayMessage::parse(&[]), Err(WireError::Truncated));
    assert_eq!(
        ClientMessage::parse(&[0x60]),
        Err(WireError::UnknownType { code: 0 })
    );
    assert_eq!(
        ClientMessage::parse(&[0x6f, 1, 2]),
        Err(WireError::UnknownType { code: 0x0f })
    );
    assert_eq!(
        ClientMessage::parse(&[0x73, 1, 2]),
        Err(WireError::WrongDirection { code: 0x13 })
    );
    assert_eq!(
        RelayMessage::parse(&[0x7f, 1, 2]),
        Err(WireError::UnknownType { code: 0x1f })
    );
    // Version 2 (0x4_ and 0x5_: proofs, cookies and challenges) and version 1 (0x2_ and
    // 0x3_: 2-byte handles) are refused.
    assert_eq!(
        ClientMessage::parse(&[0x47; 17]),
        Err(WireError::UnsupportedVersion { version: 2 })
    );
    assert_eq!(
        RelayMessage::parse(&[0x59; 17]),
        Err(WireError::UnsupportedVersion { version: 2 })
    );
    assert_eq!(
        ClientMessage::parse(&[0x23, 1, 2]),
        Err(WireError::UnsupportedVersion { version: 1 })
    );
    assert_eq!(
        RelayMessage::parse(&[0x39]),
        Err(WireError::UnsupportedVersion { version: 1 })
    );
    assert_eq!(
        ClientMessage::parse(&[0x03, 1, 2]),
        Err(WireError::UnsupportedVersion { version: 0 })
    );
    // Hello and Ready are one byte.
    assert_eq!(ClientMessage::parse(&[0x67]), Ok(ClientMessage::Hello));
    assert_eq!(
        ClientMessage::parse(&[0x67, 0]),
        Err(WireError::TrailingBytes)
    );
    assert_eq!(
        RelayMessage::parse(&[0x79, 0]),
        Err(WireError::TrailingBytes)
    );
    // Mailbox ids of 0 and 65 bytes.
    assert_eq!(
        ClientMessage::parse(&[0x66, 0]),
        Err(WireError::InvalidMailboxId { len: 0 })
    );
    let mut long = vec![0x66, 65];
    long.extend([1; 65]);
    assert_eq!(
        ClientMessage::parse(&long),
        Err(WireError::InvalidMailboxId { len: 65 })
    );
    assert_eq!(
        ClientMessage::parse(&[0x66, 3, 1, 2]),
        Err(WireError::Truncated)
    );
    assert_eq!(
        MailboxId::new(&[]),
        Err(WireError::InvalidMailboxId { len: 0 })
    );
    assert!(MailboxId::new(&[0; 64]).is_ok());
    // Size bounds.
    let mut media = vec![0x63, 0, 0, 0, 1];
    media.resize(MAX_MEDIA_MESSAGE, 0);
    assert!(ClientMessage::parse(&media).is_ok());
    media.push(0);
    assert_eq!(
        ClientMessage::parse(&media),
        Err(WireError::TooLarge {
            len: MAX_MEDIA_MESSAGE + 1,
            max: MAX_MEDIA_MESSAGE
        })
    );
    // The largest handshake message: the relay's stamped copy takes all of MAX_MESSAGE.
    assert_eq!(MAX_HANDSHAKE, MAX_MESSAGE - HANDSHAKE_OVERHEAD);
    let mut hs = vec![0x64, 0, 0, 0, 1];
    hs.resize(HANDSHAKE_REQUEST_OVERHEAD + MAX_HANDSHAKE, 0);
    assert!(ClientMessage::parse(&hs).is_ok());
    hs.push(0);
    assert_eq!(
        ClientMessage::parse(&hs),
        Err(WireError::TooLarge {
            len: MAX_HANDSHAKE + 1,
            max: MAX_HANDSHAKE
        })
    );
    let mut relayed = vec![0x74, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    relayed.resize(HANDSHAKE_OVERHEAD + MAX_HANDSHAKE, 0);
    assert_eq!(relayed.len(), MAX_MESSAGE);
    assert!(RelayMessage::parse(&relayed).is_ok());
    let mut welcome = vec![0x65, 1, 9];
    welcome.resize(MAX_MESSAGE + 1, 0);
    assert_eq!(
        ClientMessage::parse(&welcome),
        Err(WireError::TooLarge {
            len: MAX_MESSAGE + 1,
            max: MAX_MESSAGE
        })
    );
    // Encoding refuses what parsing would.
    let frame = vec![0u8; MAX_MEDIA_FRAME + 1];
    let msg = ClientMessage::Media {
        handle: ChannelHandle(1),
        frame: &frame,
    };
    let mut buf = vec![0u8; 2000];
    assert!(matches!(
        msg.encode(&mut buf),
        Err(WireError::TooLarge { .. })
    ));
    let mut out = BytesMut::from(&b"keep"[..]);
    assert!(msg.encode_into(&mut out).is_err());
    assert_eq!(&out[..], b"keep");
    // Unknown error codes and request kinds.
    assert_eq!(
        RelayMessage::parse(&[0x77, 200, 0]),
        Ok(RelayMessage::Error {
            code: ErrorCode::Other(200),
            request: Request::Unparsed
        })
    );
    assert_eq!(
        RelayMessage::parse(&[0x77, 1, 0x09]),
        Err(WireError::UnknownType { code: 9 })
    );
    assert_eq!(
        RelayMessage::parse(&[0x77, 1, 0, 0]),
        Err(WireError::TrailingBytes)
    );
}

// ---------------------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------------------

const A: ConnId = ConnId(1);
const B: ConnId = ConnId(2);
const C: ConnId = ConnId(3);
const D: ConnId = ConnId(4);
/// Members of the control channel, whose traffic must never be disturbed.
const X: ConnId = ConnId(100);
const Y: ConnId = ConnId(101);

fn token(n: u8) -> ChannelToken {
    ChannelToken([n; 16])
}

/// The relay's key in these tests.
const KEY: [u8; 32] = [0x6b; 32];

/// What a request returned, and what the router sent because of it.
type Outcome = (Result<(), ErrorCode>, Vec<(ConnId, Vec<u8>)>);

/// A router and everything it sent, with virtual time.
struct Relay {
    router: Router,
    now: Instant,
    sent: Vec<(ConnId, Vec<u8>)>,
    /// Datagrams and bytes seen by the sink.
    sink_datagrams: u64,
    sink_bytes: u64,
}

impl Relay {
    fn new(limits: RouterLimits) -> Relay {
        Relay {
            router: Router::new(limits, &KEY),
            now: Instant::now(),
            sent: Vec::new(),
            sink_datagrams: 0,
            sink_bytes: 0,
        }
    }

    /// Feeds raw bytes; returns what was sent because of them.
    fn raw(&mut self, from: ConnId, bytes: &[u8]) -> Outcome {
        let mut out = Vec::new();
        let result = self
            .router
            .receive(from, bytes, self.now, &mut |to, b: &[u8]| {
                out.push((to, b.to_vec()))
            });
        self.sink_datagrams += out.len() as u64;
        self.sink_bytes += out.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        self.sent.extend(out.iter().cloned());
        check_stats(self.router.stats());
        assert!(self.router.accounting_is_exact());
        assert_eq!(self.router.stats().datagrams_out, self.sink_datagrams);
        assert_eq!(self.router.stats().bytes_out, self.sink_bytes);
        for (_, b) in &out {
            RelayMessage::parse(b).expect("the router only sends valid messages");
        }
        (result, out)
    }

    /// Says Hello for `conn` (as every client does first); expects `Ready`.
    fn hello(&mut self, conn: ConnId) {
        let (result, out) = self.send(conn, ClientMessage::Hello);
        assert_eq!(result, Ok(()));
        assert_eq!(out, vec![(conn, vec![0x79])]);
    }

    /// Sends `msg` from `from`, saying Hello for it first if the router holds no state for
    /// it (as a client does).
    fn send(&mut self, from: ConnId, msg: ClientMessage<'_>) -> Outcome {
        if !matches!(msg, ClientMessage::Hello) && self.router.usage(from).is_none() {
            self.hello(from);
        }
        self.unhello(from, msg)
    }

    /// Sends `msg` from `from` as it is (no Hello first).
    fn unhello(&mut self, from: ConnId, msg: ClientMessage<'_>) -> Outcome {
        let mut buf = vec![0u8; msg.encoded_len()];
        msg.encode(&mut buf).unwrap();
        self.raw(from, &buf)
    }

    fn subscribe(&mut self, from: ConnId, t: ChannelToken) -> ChannelHandle {
        let (result, out) = self.send(from, ClientMessage::Subscribe { token: t });
        assert_eq!(result, Ok(()));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, from);
        match RelayMessage::parse(&out[0].1).unwrap() {
            RelayMessage::Subscribed {
                token: got, handle, ..
            } => {
                assert_eq!(got, t);
                assert_eq!(self.router.handle(from, &t), Some(handle));
                handle
            }
            other => panic!("expected Subscribed, got {other:?}"),
        }
    }

    fn media(&mut self, from: ConnId, handle: ChannelHandle, frame: &[u8]) -> Outcome {
        self.send(from, ClientMessage::Media { handle, frame })
    }

    /// Expects `out` to be exactly one error to `to`.
    fn expect_error(out: &[(ConnId, Vec<u8>)], to: ConnId, code: ErrorCode, request: Request<'_>) {
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, to);
        assert_eq!(
            RelayMessage::parse(&out[0].1).unwrap(),
            RelayMessage::Error { code, request }
        );
    }

    /// Sets up the control channel (X and Y on token 0xcc) and returns X's handle.
    fn control(&mut self) -> ChannelHandle {
        let hx = self.subscribe(X, token(0xcc));
        self.subscribe(Y, token(0xcc));
        hx
    }

    /// The control channel still delivers exactly as before: X's frame reaches Y, once,
    /// with Y's handle, and nobody else.
    fn control_still_works(&mut self) {
        let hx = self
            .router
            .handle(X, &token(0xcc))
            .expect("X still subscribed");
        let hy = self
            .router
            .handle(Y, &token(0xcc))
            .expect("Y still subscribed");
        let frame = [0x5a; 60];
        let (result, out) = self.media(X, hx, &frame);
        assert_eq!(result, Ok(()));
        let mut expected = RelayMessage::media_header(hy).to_vec();
        expected.extend_from_slice(&frame);
        assert_eq!(out, vec![(Y, expected)]);
        assert_eq!(self.router.subscriber_count(&token(0xcc)), 2);
    }
}

/// The accounting identities of [`RouterStats`].
fn check_stats(s: &RouterStats) {
    let accepted = s.subscribes
        + s.unsubscribes
        + s.media_in
        + s.handshakes_in
        + s.welcomes_in
        + s.fetches
        + s.hellos;
    assert_eq!(s.datagrams_in, accepted + s.drops.total(), "{s:?}");
    assert_eq!(s.errors_out, s.drops.total(), "{s:?}");
    assert_eq!(
        s.datagrams_out,
        s.subscribes
            + s.unsubscribes
            + s.media_out
            + s.handshakes_out
            + s.welcomes_in
            + s.welcomes_out
            + s.hellos
            + s.errors_out,
        "{s:?}"
    );
}

#[test]
fn subscribe_gives_a_handle_and_is_idempotent() {
    let mut relay = Relay::new(RouterLimits::default());
    let h1 = relay.subscribe(A, token(1));
    let h2 = relay.subscribe(A, token(2));
    assert_ne!(h1, h2);
    // Subscribing again (a retransmission) gives the same handle.
    assert_eq!(relay.subscribe(A, token(1)), h1);
    assert_eq!(relay.router.subscriber_count(&token(1)), 1);
    assert_eq!(relay.router.channel_count(), 2);
    assert_eq!(relay.router.connection_count(), 1);
    assert_eq!(relay.router.stats().subscribes, 3);
    assert_eq!(relay.router.stats().channels_opened, 2);
}

#[test]
fn media_reaches_every_other_subscriber_with_its_own_handle() {
    let mut relay = Relay::new(RouterLimits::default());
    // Give B and C other channels first, so their handles for token 7 differ from A's.
    relay.subscribe(B, token(1));
    relay.subscribe(C, token(1));
    relay.subscribe(C, token(2));
    let ha = relay.subscribe(A, token(7));
    let hb = relay.subscribe(B, token(7));
    let hc = relay.subscribe(C, token(7));
    assert!(ha != hb && hb != hc && ha != hc);

    let frame = b"sframe ciphertext";
    let (result, out) = relay.media(A, ha, frame);
    assert_eq!(result, Ok(()));
    assert_eq!(out.len(), 2);
    let mut receivers: Vec<_> = out
        .iter()
        .map(|(to, bytes)| match RelayMessage::parse(bytes).unwrap() {
            RelayMessage::Media { handle, frame: f } => {
                assert_eq!(f, frame);
                assert_eq!(bytes.len(), frame.len() + MEDIA_OVERHEAD);
                (*to, handle)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    receivers.sort();
    assert_eq!(receivers, vec![(B, hb), (C, hc)]);
    // Members of the other channels heard nothing.
    assert!(out.iter().all(|(to, _)| *to != A));
    // B's frame reaches A and C.
    let (_, out) = relay.media(B, hb, b"from b");
    let mut to: Vec<_> = out.iter().map(|(c, _)| *c).collect();
    to.sort();
    assert_eq!(to, vec![A, C]);
    // A lone subscriber's media goes nowhere, and is not an error.
    let (result, out) = relay.media(C, relay.router.handle(C, &token(2)).unwrap(), b"alone");
    assert_eq!((result, out.len()), (Ok(()), 0));
    let s = relay.router.stats();
    assert_eq!((s.media_in, s.media_out), (3, 4));
}

/// The handshake messages in `out` to `to`: (seq, message).
fn handshakes_to(out: &[(ConnId, Vec<u8>)], to: ConnId) -> Vec<(u64, Vec<u8>)> {
    out.iter()
        .filter(|(c, _)| *c == to)
        .filter_map(|(_, b)| match RelayMessage::parse(b).unwrap() {
            RelayMessage::Handshake { seq, message, .. } => Some((seq, message.to_vec())),
            _ => None,
        })
        .collect()
}

/// A client that fills a channel's history and then repeats `Subscribe` (17 bytes each)
/// to be sent the whole history again and again: the relay sends it at most
/// `max_replay_bytes_per_minute` of replays a minute, whatever it asks.
#[test]
fn repeated_subscribes_cannot_make_the_relay_an_amplifier() {
    let limits = RouterLimits::default();
    let budget = limits.max_replay_bytes_per_minute;
    let mut relay = Relay::new(limits);
    let ha = relay.subscribe(A, token(1));
    for i in 0..64u8 {
        let (result, _) = relay.send(
            A,
            ClientMessage::Handshake {
                handle: ha,
                message: &[i; 4000],
            },
        );
        assert_eq!(result, Ok(()));
    }
    let mut asked = 0usize;
    let mut replayed = 0usize;
    for _ in 0..2_000 {
        let (result, out) = relay.send(A, ClientMessage::Subscribe { token: token(1) });
        assert_eq!(result, Ok(()));
        asked += 17;
        replayed += handshakes_to(&out, A)
            .iter()
            .map(|(_, m)| m.len() + HANDSHAKE_OVERHEAD)
            .sum::<usize>();
    }
    assert!(
        replayed <= budget,
        "{replayed} B replayed for {asked} B asked"
    );
    assert!(
        replayed > budget - 4100,
        "the allowance is used, not refused outright"
    );
    assert!(relay.router.stats().drops.replays_cut >= 1_990);
    // Another connection's allowance is its own; and a minute later A's is back.
    let (_, out) = relay.send(B, ClientMessage::Subscribe { token: token(1) });
    assert_eq!(handshakes_to(&out, B).len(), 64);
    relay.now += Duration::from_secs(60);
    let (_, out) = relay.send(A, ClientMessage::Subscribe { token: token(1) });
    assert_eq!(handshakes_to(&out, A).len(), 64);
}

#[test]
fn a_channel_replays_its_latest_handshakes_after_every_subscribe() {
    let limits = RouterLimits {
        history_per_channel: 3,
        history_bytes_per_channel: 100,
        ..RouterLimits::default()
    };
    let mut relay = Relay::new(limits);
    let ha = relay.subscribe(A, token(1));
    let publish = |relay: &mut Relay, message: &[u8]| {
        let (result, _) = relay.send(
            A,
            ClientMessage::Handshake {
                handle: ha,
                message,
            },
        );
        assert_eq!(result, Ok(()));
    };
    for i in 0..5u8 {
        publish(&mut relay, &[i; 10]);
    }
    // A late subscriber: Subscribed, then the latest three, in order, under its handle.
    let (result, out) = relay.send(B, ClientMessage::Subscribe { token: token(1) });
    assert_eq!(result, Ok(()));
    let hb = relay.router.handle(B, &token(1)).unwrap();
    assert!(matches!(
        RelayMessage::parse(&out[0].1).unwrap(),
        RelayMessage::Subscribed { handle, .. } if handle == hb
    ));
    let expected: Vec<(u64, Vec<u8>)> = (2..5u8).map(|i| (u64::from(i), vec![i; 10])).collect();
    assert_eq!(handshakes_to(&out, B), expected);
    assert!(
        out.iter().all(|(to, _)| *to == B),
        "nobody else hears a replay"
    );
    // A repeated Subscribe (a client that saw a gap) gets them again.
    let (_, again) = relay.send(B, ClientMessage::Subscribe { token: token(1) });
    assert_eq!(handshakes_to(&again, B), expected);
    assert_eq!(relay.router.stats().handshakes_replayed, 6);
    // The byte budget: an 85-byte message pushes out what no longer fits in 100 bytes.
    publish(&mut relay, &[7; 85]);
    let (_, out) = relay.send(B, ClientMessage::Subscribe { token: token(1) });
    assert_eq!(
        handshakes_to(&out, B),
        vec![(4, vec![4; 10]), (5, vec![7; 85])]
    );
    // A message larger than a channel keeps is fanned out, not kept; the rest stays.
    publish(&mut relay, &[8; 101]);
    assert_eq!(relay.router.history_bytes(), 95);
    // The last subscriber out leaves the channel idle: it keeps its messages and numbers
    // for a member that comes back (one that fell behind), charged to nobody.
    let leave = |relay: &mut Relay, conn: ConnId| {
        let handle = relay.router.handle(conn, &token(1)).unwrap();
        let (result, _) = relay.send(conn, ClientMessage::Unsubscribe { handle });
        assert_eq!(result, Ok(()));
    };
    leave(&mut relay, A);
    leave(&mut relay, B);
    assert_eq!(relay.router.subscriber_count(&token(1)), 0);
    assert_eq!(relay.router.channel_count(), 1);
    assert_eq!(relay.router.history_bytes(), 95);
    assert_eq!(relay.router.usage(A).unwrap().channels_opened, 0);
    relay.now += Duration::from_secs(29);
    let (_, out) = relay.send(C, ClientMessage::Subscribe { token: token(1) });
    assert!(matches!(
        RelayMessage::parse(&out[0].1).unwrap(),
        RelayMessage::Subscribed { next_seq: 7, .. }
    ));
    assert_eq!(
        handshakes_to(&out, C),
        vec![(4, vec![4; 10]), (5, vec![7; 85])]
    );
    // Revived, it is charged to its new first subscriber.
    assert_eq!(relay.router.usage(C).unwrap().channels_opened, 1);
    // Idle for the whole linger, it closes with its history (at the next datagram).
    leave(&mut relay, C);
    relay.now += Duration::from_secs(30);
    relay.hello(D);
    assert_eq!(relay.router.channel_count(), 0);
    assert_eq!(relay.router.history_bytes(), 0);
    let (_, out) = relay.send(C, ClientMessage::Subscribe { token: token(1) });
    assert!(matches!(
        RelayMessage::parse(&out[0].1).unwrap(),
        RelayMessage::Subscribed { next_seq: 0, .. }
    ));
    assert!(handshakes_to(&out, C).is_empty());
}

#[test]
fn idle_channels_give_way_to_channels_in_use() {
    // Room for two channels and 40 bytes of history in all.
    let mut relay = Relay::new(RouterLimits {
        max_channels: 2,
        max_history_bytes: 40,
        ..RouterLimits::default()
    });
    let publish = |relay: &mut Relay, conn: ConnId, t: u8, message: &[u8]| {
        let handle = relay.router.handle(conn, &token(t)).unwrap();
        let (result, _) = relay.send(conn, ClientMessage::Handshake { handle, message });
        assert_eq!(result, Ok(()));
    };
    let leave = |relay: &mut Relay, conn: ConnId, t: u8| {
        let handle = relay.router.handle(conn, &token(t)).unwrap();
        let (result, _) = relay.send(conn, ClientMessage::Unsubscribe { handle });
        assert_eq!(result, Ok(()));
    };
    // One connection leaves two channels idle, with 20 bytes each: the relay is full.
    for t in [1, 2] {
        relay.subscribe(A, token(t));
        publish(&mut relay, A, t, &[t; 20]);
        leave(&mut relay, A, t);
    }
    assert_eq!(relay.router.channel_count(), 2);
    assert_eq!(relay.router.history_bytes(), 40);
    assert_eq!(relay.router.usage(A).unwrap().channels_opened, 0);
    // A new channel still opens: the oldest idle one goes.
    relay.subscribe(B, token(3));
    assert_eq!(relay.router.channel_count(), 2);
    assert_eq!(relay.router.subscriber_count(&token(3)), 1);
    assert_eq!(relay.router.history_bytes(), 20);
    // A message of a channel in use is kept: the last idle one's messages make room.
    publish(&mut relay, B, 3, &[3; 30]);
    assert_eq!(relay.router.channel_count(), 1);
    assert_eq!(relay.router.history_bytes(), 30);
    // With nothing idle left, the limits hold as before.
    let (result, _) = relay.send(C, ClientMessage::Subscribe { token: token(4) });
    assert_eq!(result, Ok(()));
    let (result, _) = relay.send(D, ClientMessage::Subscribe { token: token(5) });
    assert_eq!(result, Err(ErrorCode::RelayFull));
}

#[test]
fn kept_handshakes_are_bounded_relay_wide() {
    let limits = RouterLimits {
        max_history_bytes: 250,
        ..RouterLimits::default()
    };
    let mut relay = Relay::new(limits);
    for t in 1..=3u8 {
        let handle = relay.subscribe(A, token(t));
        for _ in 0..2 {
            let (result, out) = relay.send(
                A,
                ClientMessage::Handshake {
                    handle,
                    message: &[t; 50],
                },
            );
            // Fanned out whether kept or not.
            assert_eq!((result, out.len()), (Ok(()), 1));
        }
    }
    // Five of the six 50-byte messages fit 250 bytes: the last one was not kept.
    assert_eq!(relay.router.history_bytes(), 250);
    let (_, out) = relay.send(B, ClientMessage::Subscribe { token: token(3) });
    assert_eq!(handshakes_to(&out, B), vec![(0, vec![3; 50])]);
}

#[test]
fn handshake_is_sequenced_per_channel_and_reaches_the_sender() {
    let mut relay = Relay::new(RouterLimits::default());
    relay.subscribe(C, token(9));
    let ha = relay.subscribe(A, token(1));
    let hb = relay.subscribe(B, token(1));
    let hc = relay.subscribe(C, token(1));
    let hc9 = relay.router.handle(C, &token(9)).unwrap();

    let mut seen: Vec<(ConnId, ChannelHandle, u64, Vec<u8>)> = Vec::new();
    for (i, (from, handle)) in [(A, ha), (B, hb), (A, ha), (C, hc)].into_iter().enumerate() {
        let commit = format!("commit {i}").into_bytes();
        let (result, out) = relay.send(
            from,
            ClientMessage::Handshake {
                handle,
                message: &commit,
            },
        );
        assert_eq!(result, Ok(()));
        assert_eq!(out.len(), 3, "every subscriber, sender included");
        for (to, bytes) in out {
            match RelayMessage::parse(&bytes).unwrap() {
                RelayMessage::Handshake {
                    handle,
                    seq,
                    message,
                } => {
                    assert_eq!(seq, i as u64);
                    assert_eq!(message, commit.as_slice());
                    seen.push((to, handle, seq, message.to_vec()));
                }
                other => panic!("{other:?}"),
            }
        }
    }
    // Every member saw sequence 0, 1, 2, 3 in order, under its own handle.
    for (conn, handle) in [(A, ha), (B, hb), (C, hc)] {
        let mine: Vec<_> = seen.iter().filter(|s| s.0 == conn).collect();
        assert_eq!(mine.iter().map(|s| s.2).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert!(mine.iter().all(|s| s.1 == handle));
    }
    // Another channel has its own sequence.
    let (_, out) = relay.send(
        C,
        ClientMessage::Handshake {
            handle: hc9,
            message: b"other",
        },
    );
    assert_eq!(out.len(), 1);
    assert!(matches!(
        RelayMessage::parse(&out[0].1).unwrap(),
        RelayMessage::Handshake { seq: 0, .. }
    ));
    assert_eq!(relay.router.stats().handshakes_in, 5);
    assert_eq!(relay.router.stats().handshakes_out, 13);
}

#[test]
fn handshake_of_the_largest_size_fans_out() {
    let mut relay = Relay::new(RouterLimits::default());
    let ha = relay.subscribe(A, token(1));
    relay.subscribe(B, token(1));
    let big = vec![0x77; MAX_HANDSHAKE];
    let (result, out) = relay.send(
        A,
        ClientMessage::Handshake {
            handle: ha,
            message: &big,
        },
    );
    assert_eq!(result, Ok(()));
    assert_eq!(out.len(), 2);
    // The stamped copies are longer than the request by the sequence number: exactly
    // MAX_MESSAGE bytes.
    assert!(out
        .iter()
        .all(|(_, b)| b.len() == HANDSHAKE_OVERHEAD + MAX_HANDSHAKE));
    assert_eq!(HANDSHAKE_OVERHEAD + MAX_HANDSHAKE, MAX_MESSAGE);
}

#[test]
fn mailbox_deliver_and_fetch() {
    let mut relay = Relay::new(RouterLimits {
        welcome_ttl: Duration::from_secs(60),
        ..RouterLimits::default()
    });
    let kp_ref = [0x42u8; 32];
    let mailbox = MailboxId::new(&kp_ref).unwrap();
    // Empty mailbox.
    let (result, out) = relay.send(B, ClientMessage::FetchWelcomes { mailbox });
    assert_eq!(result, Err(ErrorCode::MailboxEmpty));
    Relay::expect_error(
        &out,
        B,
        ErrorCode::MailboxEmpty,
        Request::FetchWelcomes(mailbox),
    );
    // Deliver: acknowledged with Stored.
    let (result, out) = relay.send(
        A,
        ClientMessage::DeliverWelcome {
            mailbox,
            welcome: b"welcome 1",
        },
    );
    assert_eq!(result, Ok(()));
    assert_eq!(out.len(), 1);
    assert_eq!(
        RelayMessage::parse(&out[0].1).unwrap(),
        RelayMessage::Stored { mailbox }
    );
    // A retransmission is not stored twice.
    assert_eq!(
        relay
            .send(
                A,
                ClientMessage::DeliverWelcome {
                    mailbox,
                    welcome: b"welcome 1",
                },
            )
            .0,
        Ok(())
    );
    relay.now += Duration::from_secs(30);
    assert_eq!(
        relay
            .send(
                C,
                ClientMessage::DeliverWelcome {
                    mailbox,
                    welcome: b"welcome 2",
                },
            )
            .0,
        Ok(())
    );
    assert_eq!(relay.router.welcome_bytes(), 18);
    // Fetch: both Welcomes, to the fetcher only.
    let (result, out) = relay.send(B, ClientMessage::FetchWelcomes { mailbox });
    assert_eq!(result, Ok(()));
    let got: Vec<_> = out
        .iter()
        .map(|(to, b)| {
            assert_eq!(*to, B);
            match RelayMessage::parse(b).unwrap() {
                RelayMessage::Welcome {
                    mailbox: m,
                    welcome,
                } => {
                    assert_eq!(m, mailbox);
                    welcome.to_vec()
                }
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(got, vec![b"welcome 1".to_vec(), b"welcome 2".to_vec()]);
    // Still there for a second fetch (a lost reply can be fetched again).
    let (_, out) = relay.send(B, ClientMessage::FetchWelcomes { mailbox });
    assert_eq!(out.len(), 2);
    // Another mailbox id (a prefix of this one) is another mailbox.
    let (result, _) = relay.send(
        B,
        ClientMessage::FetchWelcomes {
            mailbox: MailboxId::new(&kp_ref[..31]).unwrap(),
        },
    );
    assert_eq!(result, Err(ErrorCode::MailboxEmpty));
    // The first Welcome expires 60 s after delivery, the second 30 s later.
    relay.now += Duration::from_secs(31);
    let (_, out) = relay.send(B, ClientMessage::FetchWelcomes { mailbox });
    assert_eq!(out.len(), 1);
    assert_eq!(relay.router.welcome_bytes(), 9);
    relay.now += Duration::from_secs(30);
    relay.router.expire(relay.now);
    assert_eq!(relay.router.mailbox_count(), 0);
    assert_eq!(relay.router.welcome_bytes(), 0);
    let (result, _) = relay.send(B, ClientMessage::FetchWelcomes { mailbox });
    assert_eq!(result, Err(ErrorCode::MailboxEmpty));
    let s = relay.router.stats();
    assert_eq!((s.welcomes_in, s.fetches, s.welcomes_out), (3, 3, 5));
}

#[test]
fn mailbox_limits() {
    let mut relay = Relay::new(RouterLimits {
        max_mailboxes: 2,
        max_welcomes_per_mailbox: 2,
        max_welcome_bytes: 1000,
        welcome_ttl: Duration::from_secs(10),
        ..RouterLimits::default()
    });
    relay.control();
    let deliver = |relay: &mut Relay, id: u8, welcome: &[u8]| {
        let kp = [id; 32];
        let mailbox = MailboxId::new(&kp).unwrap();
        let (result, out) = relay.send(A, ClientMessage::DeliverWelcome { mailbox, welcome });
        if let Err(code) = result {
            Relay::expect_error(&out, A, code, Request::DeliverWelcome(mailbox));
        }
        result
    };
    assert_eq!(deliver(&mut relay, 1, b"a"), Ok(()));
    assert_eq!(deliver(&mut relay, 1, b"b"), Ok(()));
    assert_eq!(deliver(&mut relay, 1, b"c"), Err(ErrorCode::MailboxFull));
    assert_eq!(deliver(&mut relay, 2, b"d"), Ok(()));
    assert_eq!(deliver(&mut relay, 3, b"e"), Err(ErrorCode::StorageFull));
    assert_eq!(
        deliver(&mut relay, 2, &[0; 998]),
        Err(ErrorCode::StorageFull),
        "byte budget"
    );
    relay.control_still_works();
    // Once the first Welcomes expire, there is room again.
    relay.now += Duration::from_secs(11);
    assert_eq!(deliver(&mut relay, 3, &[0; 998]), Ok(()));
    assert_eq!(relay.router.mailbox_count(), 1);
    assert_eq!(relay.router.welcome_bytes(), 998);
    let d = relay.router.stats().drops;
    assert_eq!((d.mailbox_full, d.storage_full), (1, 2));
    relay.control_still_works();
}

#[test]
fn unsubscribe_and_epoch_move() {
    let mut relay = Relay::new(RouterLimits::default());
    let old_a = relay.subscribe(A, token(1));
    let old_b = relay.subscribe(B, token(1));
    // Epoch change: both subscribe to the new token and keep the old one.
    let new_a = relay.subscribe(A, token(2));
    let new_b = relay.subscribe(B, token(2));
    let (_, out) = relay.media(A, old_a, b"old epoch");
    assert_eq!(out.len(), 1);
    let (_, out) = relay.media(A, new_a, b"new epoch");
    assert_eq!(out.len(), 1);
    // After the grace period, A leaves the old channel: acknowledged.
    let (result, out) = relay.send(A, ClientMessage::Unsubscribe { handle: old_a });
    assert_eq!(result, Ok(()));
    assert_eq!(
        RelayMessage::parse(&out[0].1).unwrap(),
        RelayMessage::Unsubscribed { handle: old_a }
    );
    assert_eq!(relay.router.handle(A, &token(1)), None);
    // B's old-epoch media no longer reaches A; the new channel is untouched.
    let (_, out) = relay.media(B, old_b, b"late");
    assert!(out.is_empty());
    let (_, out) = relay.media(B, new_b, b"new");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, A);
    // A's released handle is unknown now: media on it, and unsubscribing it again, say so.
    let (result, out) = relay.media(A, old_a, b"stale");
    assert_eq!(result, Err(ErrorCode::UnknownHandle));
    Relay::expect_error(&out, A, ErrorCode::UnknownHandle, Request::Media(old_a));
    let (result, _) = relay.send(A, ClientMessage::Unsubscribe { handle: old_a });
    assert_eq!(result, Err(ErrorCode::UnknownHandle));
    // B leaves too: the channel is removed.
    assert_eq!(
        relay
            .send(B, ClientMessage::Unsubscribe { handle: old_b })
            .0,
        Ok(())
    );
    assert_eq!(relay.router.channel_count(), 1);
    assert_eq!(relay.router.subscriber_count(&token(1)), 0);
    assert_eq!(relay.router.stats().channels_closed, 1);
    // Handles are not reused soon: subscribing again gives a fresh one.
    let again = relay.subscribe(A, token(1));
    assert!(again != old_a && again != new_a);
}

#[test]
fn subscription_floods_are_refused_without_disturbing_others() {
    let mut relay = Relay::new(RouterLimits {
        max_channels: 10,
        max_channels_per_connection: 4,
        max_subscribers_per_channel: 3,
        max_connections: 6,
        ..RouterLimits::default()
    });
    relay.control();
    relay.control_still_works();
    // Per connection.
    for i in 0..4 {
        relay.subscribe(A, token(i));
    }
    for i in 4..50 {
        let (result, out) = relay.send(A, ClientMessage::Subscribe { token: token(i) });
        assert_eq!(result, Err(ErrorCode::TooManySubscriptions));
        Relay::expect_error(
            &out,
            A,
            ErrorCode::TooManySubscriptions,
            Request::Subscribe(token(i)),
        );
    }
    relay.control_still_works();
    // Per channel: token 0 has A; B and C fill it, D is refused.
    relay.subscribe(B, token(0));
    relay.subscribe(C, token(0));
    let (result, out) = relay.send(ConnId(4), ClientMessage::Subscribe { token: token(0) });
    assert_eq!(result, Err(ErrorCode::ChannelFull));
    Relay::expect_error(
        &out,
        ConnId(4),
        ErrorCode::ChannelFull,
        Request::Subscribe(token(0)),
    );
    // The control channel is full too, to outsiders.
    relay.subscribe(ConnId(4), token(0xcc));
    let (result, _) = relay.send(B, ClientMessage::Subscribe { token: token(0xcc) });
    assert_eq!(result, Err(ErrorCode::ChannelFull));
    // Unsubscribe 4 from the control channel again, so its traffic is as before.
    let h4 = relay.router.handle(ConnId(4), &token(0xcc)).unwrap();
    assert_eq!(
        relay
            .send(ConnId(4), ClientMessage::Unsubscribe { handle: h4 })
            .0,
        Ok(())
    );
    relay.control_still_works();
    // Total channels: 5 exist (control + 4 of A); B and C add 5 more, then the relay is full.
    for i in 10..13 {
        relay.subscribe(B, token(i));
    }
    for i in 20..22 {
        relay.subscribe(C, token(i));
    }
    assert_eq!(relay.router.channel_count(), 10);
    let (result, out) = relay.send(C, ClientMessage::Subscribe { token: token(99) });
    assert_eq!(result, Err(ErrorCode::RelayFull));
    Relay::expect_error(&out, C, ErrorCode::RelayFull, Request::Subscribe(token(99)));
    // Joining an existing channel is still fine.
    relay.subscribe(C, token(10));
    // Total connections: X, Y, A, B, C, 4 = 6; a seventh's Hello is refused.
    let (result, _) = relay.send(ConnId(5), ClientMessage::Hello);
    assert_eq!(result, Err(ErrorCode::RelayFull));
    assert_eq!(relay.router.connection_count(), 6);
    relay.control_still_works();
    let d = relay.router.stats().drops;
    assert_eq!(
        (d.too_many_subscriptions, d.channel_full, d.relay_full),
        (46, 2, 2)
    );
}

#[test]
fn oversized_unknown_and_malformed_datagrams_are_refused_without_disturbing_others() {
    let mut relay = Relay::new(RouterLimits {
        max_message: 2000,
        ..RouterLimits::default()
    });
    relay.control();
    let ha = relay.subscribe(A, token(1));
    relay.subscribe(B, token(1));
    relay.control_still_works();

    // Larger than the router's limit.
    let big = vec![0x25; 2001];
    let (result, out) = relay.raw(A, &big);
    assert_eq!(result, Err(ErrorCode::TooLarge));
    Relay::expect_error(&out, A, ErrorCode::TooLarge, Request::Unparsed);
    // Media larger than a datagram.
    let mut media = ClientMessage::media_header(ha).to_vec();
    media.resize(MAX_MEDIA_MESSAGE + 1, 0);
    let (result, out) = relay.raw(A, &media);
    assert_eq!(result, Err(ErrorCode::TooLarge));
    Relay::expect_error(&out, A, ErrorCode::TooLarge, Request::Unparsed);
    relay.control_still_works();

    // Unknown handles, from a subscribed connection and from a new one: media and a
    // handshake are refused.
    for (from, handle) in [(A, ChannelHandle(999)), (ConnId(77), ChannelHandle(0))] {
        let (result, out) = relay.media(from, handle, b"x");
        assert_eq!(result, Err(ErrorCode::UnknownHandle));
        Relay::expect_error(&out, from, ErrorCode::UnknownHandle, Request::Media(handle));
        let (result, out) = relay.send(
            from,
            ClientMessage::Handshake {
                handle,
                message: b"commit",
            },
        );
        assert_eq!(result, Err(ErrorCode::UnknownHandle));
        Relay::expect_error(
            &out,
            from,
            ErrorCode::UnknownHandle,
            Request::Handshake(handle),
        );
    }
    // Handles are per connection: X's handle, sent by A, names nothing of A's.
    let hx = relay.router.handle(X, &token(0xcc)).unwrap();
    assert_ne!(hx, ha);
    let (result, out) = relay.media(A, hx, b"x");
    assert_eq!(result, Err(ErrorCode::UnknownHandle));
    Relay::expect_error(&out, A, ErrorCode::UnknownHandle, Request::Media(hx));
    relay.control_still_works();

    // Malformed: empty, garbage, wrong direction, truncated, trailing, retired type, other
    // versions (1, 2 and 7).
    let bad: [(&[u8], ErrorCode); 10] = [
        (&[], ErrorCode::Malformed),
        (b"\x6fgarbage", ErrorCode::Malformed),
        (&[0x73, 0, 0, 1], ErrorCode::Malformed),
        (&[0x61, 1, 2, 3], ErrorCode::Malformed),
        (&[0x62, 0, 1, 0], ErrorCode::Malformed),
        (&[0x67, 0], ErrorCode::Malformed),
        (&[0x78; 17], ErrorCode::Malformed),
        (&[0x23, 0, 0, 1], ErrorCode::UnsupportedVersion),
        (&[0x47; 17], ErrorCode::UnsupportedVersion),
        (&[0xff; 40], ErrorCode::UnsupportedVersion),
    ];
    for (bytes, code) in bad {
        let (result, out) = relay.raw(A, bytes);
        assert_eq!(result, Err(code), "{bytes:x?}");
        Relay::expect_error(&out, A, code, Request::Unparsed);
    }
    relay.control_still_works();
    // A's own channel still works too.
    let (_, out) = relay.media(A, ha, b"fine");
    assert_eq!(out.len(), 1);
    let d = relay.router.stats().drops;
    assert_eq!(
        (
            d.too_large,
            d.unknown_handle,
            d.not_connected,
            d.malformed,
            d.unsupported_version
        ),
        (2, 5, 0, 7, 3)
    );
}

#[test]
fn disconnect_cleans_up() {
    let mut relay = Relay::new(RouterLimits::default());
    relay.control();
    let ha = relay.subscribe(A, token(1));
    relay.subscribe(A, token(2));
    relay.subscribe(A, token(3));
    relay.subscribe(B, token(1));
    relay.subscribe(C, token(1));
    relay.subscribe(B, token(2));
    assert_eq!(relay.router.channel_count(), 4);

    let mut departures = relay.router.disconnect(A, relay.now);
    departures.sort_by_key(|d| d.token.0);
    assert_eq!(
        departures,
        vec![
            Departure {
                token: token(1),
                remaining: 2
            },
            Departure {
                token: token(2),
                remaining: 1
            },
            Departure {
                token: token(3),
                remaining: 0
            },
        ]
    );
    assert_eq!(relay.router.channel_count(), 3);
    assert_eq!(relay.router.subscriber_count(&token(1)), 2);
    assert_eq!(relay.router.connection_count(), 4);
    assert_eq!(relay.router.handle(A, &token(1)), None);
    // A is forgotten: its requests (media on its old handle too) are refused until it says
    // Hello again. B's media reaches C only.
    let (result, out) = relay.unhello(
        A,
        ClientMessage::Media {
            handle: ha,
            frame: b"x",
        },
    );
    assert_eq!(result, Err(ErrorCode::NotConnected));
    Relay::expect_error(&out, A, ErrorCode::NotConnected, Request::Media(ha));
    assert_eq!(relay.router.connection_count(), 4);
    let hb = relay.router.handle(B, &token(1)).unwrap();
    let (_, out) = relay.media(B, hb, b"x");
    assert_eq!(out.iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![C]);
    // Disconnecting twice, or an unknown connection, does nothing.
    assert!(relay.router.disconnect(A, relay.now).is_empty());
    assert!(relay.router.disconnect(ConnId(12345), relay.now).is_empty());
    // Everyone leaves: nothing remains but the control channel.
    relay.router.disconnect(B, relay.now);
    relay.router.disconnect(C, relay.now);
    assert_eq!(relay.router.channel_count(), 1);
    assert_eq!(relay.router.connection_count(), 2);
    assert_eq!(relay.router.stats().channels_closed, 3);
    relay.control_still_works();
    // Channel slots are reused cleanly: a new channel works.
    let h = relay.subscribe(A, token(50));
    relay.subscribe(B, token(50));
    let (_, out) = relay.media(A, h, b"again");
    assert_eq!(out.iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![B]);
    relay.control_still_works();
}

#[test]
fn counters_add_up() {
    let mut relay = Relay::new(RouterLimits::default());
    let ha = relay.subscribe(A, token(1));
    relay.subscribe(B, token(1));
    assert_eq!(relay.media(A, ha, &[1; 60]).0, Ok(()));
    assert_eq!(relay.raw(A, b"\x60junk").0, Err(ErrorCode::Malformed));
    // A request from a connection that never said Hello is counted, and answered.
    let early = ClientMessage::Subscribe { token: token(2) };
    assert_eq!(relay.unhello(C, early).0, Err(ErrorCode::NotConnected));
    let s = *relay.router.stats();
    // Hello and Subscribe from A and B, media, junk, C's Subscribe.
    assert_eq!(s.datagrams_in, 7);
    assert_eq!(s.bytes_in, 2 * (1 + 17) + 65 + 5 + 17);
    // Ready and Subscribed to each, media to B, the two errors.
    assert_eq!(s.datagrams_out, 7);
    assert_eq!(s.bytes_out, 2 * (1 + 29) + 65 + 3 + (3 + 16));
    assert_eq!(s.drops.not_connected, 1);
    assert_eq!(s.drops.malformed, 1);
    assert_eq!(s.drops.get(ErrorCode::Malformed), 1);
    assert_eq!(s.drops.total(), 2);
}

#[test]
fn hello_is_answered_with_ready_and_changes_nothing_else() {
    let mut relay = Relay::new(RouterLimits::default());
    let (result, out) = relay.send(A, ClientMessage::Hello);
    assert_eq!(result, Ok(()));
    assert_eq!(out, vec![(A, vec![0x79])]);
    // The connection exists now; nothing else changed.
    assert_eq!(relay.router.connection_count(), 1);
    assert_eq!(relay.router.channel_count(), 0);
    // A Hello on a connection the router holds changes nothing: its subscriptions stay.
    let h = relay.subscribe(A, token(1));
    let hello = ClientMessage::Hello;
    assert_eq!(relay.send(A, hello).1, vec![(A, vec![0x79])]);
    assert_eq!(relay.router.handle(A, &token(1)), Some(h));
    assert_eq!(relay.router.connection_count(), 1);
    relay.hello(B);
    assert_eq!(relay.router.stats().hellos, 3);
    // Beyond the connection limit, a Hello is refused.
    let mut full = Relay::new(RouterLimits {
        max_connections: 1,
        ..RouterLimits::default()
    });
    full.hello(A);
    let (result, out) = full.send(B, hello);
    assert_eq!(result, Err(ErrorCode::RelayFull));
    Relay::expect_error(&out, B, ErrorCode::RelayFull, Request::Hello);
    check_stats(relay.router.stats());
}

/// A connection is made by its Hello: every other request from a connection the router
/// holds no state for (it never said Hello, or it was disconnected) is refused with
/// `NotConnected`, answered, and makes no state, so its client learns to say Hello.
#[test]
fn requests_before_hello_are_refused_with_not_connected() {
    let mut relay = Relay::new(RouterLimits::default());
    relay.control();
    let kp = [0x42u8; 32];
    let mailbox = MailboxId::new(&kp).unwrap();
    let requests = [
        ClientMessage::Subscribe { token: token(1) },
        ClientMessage::Unsubscribe {
            handle: ChannelHandle(1),
        },
        ClientMessage::Media {
            handle: ChannelHandle(1),
            frame: b"x",
        },
        ClientMessage::Handshake {
            handle: ChannelHandle(1),
            message: b"commit",
        },
        ClientMessage::DeliverWelcome {
            mailbox,
            welcome: b"w",
        },
        ClientMessage::FetchWelcomes { mailbox },
    ];
    for msg in requests {
        let (result, out) = relay.unhello(A, msg);
        assert_eq!(result, Err(ErrorCode::NotConnected), "{msg:?}");
        Relay::expect_error(&out, A, ErrorCode::NotConnected, msg.request());
    }
    assert_eq!(relay.router.usage(A), None);
    assert_eq!(relay.router.connection_count(), 2);
    assert_eq!(relay.router.channel_count(), 1);
    assert_eq!(relay.router.mailbox_count(), 0);
    assert_eq!(relay.router.stats().drops.not_connected, 6);
    relay.control_still_works();
    // After its Hello, A subscribes; once disconnected, it is refused again until its next
    // Hello, which makes a new connection (new handles).
    relay.hello(A);
    let h = relay.subscribe(A, token(1));
    relay.router.disconnect(A, relay.now);
    let (result, _) = relay.unhello(A, ClientMessage::Subscribe { token: token(1) });
    assert_eq!(result, Err(ErrorCode::NotConnected));
    relay.hello(A);
    assert_ne!(relay.subscribe(A, token(1)), h);
    relay.control_still_works();
}

/// What one connection can be sent from mailboxes is bounded per minute; other connections
/// keep their own allowance.
#[test]
fn fetch_replies_are_bounded_per_connection_per_minute() {
    let mut relay = Relay::new(RouterLimits {
        max_fetch_bytes_per_minute: 10_000,
        ..RouterLimits::default()
    });
    let kp_ref = [0x42u8; 32];
    let mailbox = MailboxId::new(&kp_ref).unwrap();
    let welcome = vec![0x77u8; 3000];
    for i in 0..2u8 {
        let mut w = welcome.clone();
        w[0] = i;
        let (result, _) = relay.send(
            A,
            ClientMessage::DeliverWelcome {
                mailbox,
                welcome: &w,
            },
        );
        assert_eq!(result, Ok(()));
    }
    // One fetch answers 2 × (3000 + 34) = 6,068 bytes; a second within the minute would
    // pass 10,000.
    let fetch = ClientMessage::FetchWelcomes { mailbox };
    let (result, out) = relay.send(B, fetch);
    assert_eq!(result, Ok(()));
    let sent: usize = out.iter().map(|(_, b)| b.len()).sum();
    assert_eq!((out.len(), sent), (2, 6068));
    let (result, out) = relay.send(B, fetch);
    assert_eq!(result, Err(ErrorCode::RateLimited));
    Relay::expect_error(
        &out,
        B,
        ErrorCode::RateLimited,
        Request::FetchWelcomes(mailbox),
    );
    // Another connection has its own allowance.
    let (result, out) = relay.send(C, fetch);
    assert_eq!((result, out.len()), (Ok(()), 2));
    // A minute later B may fetch again.
    relay.now += Duration::from_secs(60);
    let (result, out) = relay.send(B, fetch);
    assert_eq!((result, out.len()), (Ok(()), 2));
    assert_eq!(relay.router.stats().drops.rate_limited, 1);
    check_stats(relay.router.stats());
}

/// Finding 5 (issue 10): one relay client could exhaust the relay's global limits. With
/// the default limits, one connection filled the whole mailbox table with tiny Welcomes
/// and the 64 MiB Welcome store with large ones (for the Welcome TTL, 24 h), so another
/// client's invite was refused with `StorageFull`. Now each connection holds at most its
/// own quota of Welcomes and Welcome bytes, is refused beyond it with a typed error, and
/// other clients' invites still succeed.
#[test]
fn finding5_one_connection_cannot_exhaust_the_welcome_store() {
    let limits = RouterLimits::default();
    let mut relay = Relay::new(limits.clone());
    relay.control();
    let victim_kp = [0xeeu8; 32];
    let victim = MailboxId::new(&victim_kp).unwrap();
    let invite = |relay: &mut Relay, n: u8| {
        let welcome = vec![n; 5000];
        relay
            .send(
                B,
                ClientMessage::DeliverWelcome {
                    mailbox: victim,
                    welcome: &welcome,
                },
            )
            .0
    };
    // Phase 1: tiny Welcomes to ever new mailboxes (the mailbox table).
    let mut stored = 0usize;
    let mut refused = None;
    for i in 0..(limits.max_mailboxes as u32 + 10) {
        let kp = [&i.to_be_bytes()[..], &[0xa1; 28]].concat();
        let mailbox = MailboxId::new(&kp).unwrap();
        let (result, out) = relay.send(
            A,
            ClientMessage::DeliverWelcome {
                mailbox,
                welcome: b"w",
            },
        );
        match result {
            Ok(()) => stored += 1,
            Err(code) => {
                Relay::expect_error(&out, A, code, Request::DeliverWelcome(mailbox));
                refused = Some(code);
                break;
            }
        }
    }
    assert_eq!(
        invite(&mut relay, 1),
        Ok(()),
        "the victim's invite after a mailbox flood"
    );
    assert_eq!(refused, Some(ErrorCode::WelcomeQuotaExceeded));
    assert_eq!(stored, limits.max_welcomes_per_connection);
    // Phase 2: large Welcomes (the byte store), from a second abusive connection.
    let big = vec![0xb2u8; 60_000];
    let mut held = 0usize;
    let mut refused = None;
    for i in 0..2000u32 {
        let kp = [&i.to_be_bytes()[..], &[0xb2; 28]].concat();
        let mailbox = MailboxId::new(&kp).unwrap();
        let (result, _) = relay.send(
            C,
            ClientMessage::DeliverWelcome {
                mailbox,
                welcome: &big,
            },
        );
        match result {
            Ok(()) => held += big.len(),
            Err(code) => {
                refused = Some(code);
                break;
            }
        }
    }
    assert_eq!(
        invite(&mut relay, 2),
        Ok(()),
        "the victim's invite after a byte flood"
    );
    assert_eq!(refused, Some(ErrorCode::WelcomeQuotaExceeded));
    assert!(held <= limits.max_welcome_bytes_per_connection);
    assert!(held + big.len() > limits.max_welcome_bytes_per_connection);
    assert_eq!(relay.router.usage(C).unwrap().welcome_bytes, held);
    relay.control_still_works();
    let d = relay.router.stats().drops;
    assert_eq!(d.welcome_quota, 2);
    assert_eq!(d.storage_full, 0);
}

/// Finding 5 (issue 10): channels a connection opens count against its own quota, so one
/// connection cannot fill the channel table (a relay whose table is as small as one
/// connection's subscriptions shows it: before, one connection took every channel and
/// another's subscribe to a new token was refused with `RelayFull`).
#[test]
fn finding5_one_connection_cannot_exhaust_the_channel_table() {
    let limits = RouterLimits {
        max_channels: 64,
        ..RouterLimits::default()
    };
    assert!(limits.max_channels_opened_per_connection < limits.max_channels);
    let mut relay = Relay::new(limits.clone());
    relay.control();
    let mut opened = 0;
    let mut refused = None;
    for i in 0..200u8 {
        let (result, out) = relay.send(A, ClientMessage::Subscribe { token: token(i) });
        match result {
            Ok(()) => opened += 1,
            Err(code) => {
                Relay::expect_error(&out, A, code, Request::Subscribe(token(i)));
                refused = Some(code);
                break;
            }
        }
    }
    let (result, _) = relay.send(B, ClientMessage::Subscribe { token: token(0xfe) });
    assert_eq!(
        result,
        Ok(()),
        "another client's subscribe to a new channel"
    );
    assert_eq!(refused, Some(ErrorCode::TooManyChannelsOpened));
    assert_eq!(opened, limits.max_channels_opened_per_connection);
    // Joining channels others opened is bounded by the subscription quota only.
    relay.subscribe(B, token(0xfd));
    relay.subscribe(A, token(0xfe));
    relay.subscribe(A, token(0xfd));
    relay.control_still_works();
    let u = relay.router.usage(A).unwrap();
    assert_eq!((u.subscriptions, u.channels_opened), (opened + 2, opened));
    assert_eq!(relay.router.stats().drops.too_many_channels_opened, 1);
}

/// Finding 5 (issue 10): quota charges are released exactly when what they pay for is
/// gone: a channel's when it closes (its last subscriber left) or its opener disconnects,
/// a Welcome's when it expires (a fetch does not release it: the Welcome is still held,
/// for a fetch again) or its depositor disconnects (the Welcome stays for the invitee).
#[test]
fn finding5_quota_charges_are_released_exactly() {
    let limits = RouterLimits {
        max_channels_opened_per_connection: 2,
        max_welcomes_per_connection: 2,
        max_welcome_bytes_per_connection: 1000,
        welcome_ttl: Duration::from_secs(10),
        ..RouterLimits::default()
    };
    let mut relay = Relay::new(limits);
    let kp = |i: u8| [i; 32];
    let deliver = |relay: &mut Relay, from: ConnId, i: u8, len: usize| {
        let id = kp(i);
        let welcome = vec![i; len];
        relay
            .send(
                from,
                ClientMessage::DeliverWelcome {
                    mailbox: MailboxId::new(&id).unwrap(),
                    welcome: &welcome,
                },
            )
            .0
    };
    // Channels: two opened, the third refused; B joins the first.
    let h1 = relay.subscribe(A, token(1));
    relay.subscribe(A, token(2));
    relay.subscribe(B, token(1));
    let sub3 = ClientMessage::Subscribe { token: token(3) };
    assert_eq!(relay.send(A, sub3).0, Err(ErrorCode::TooManyChannelsOpened));
    // A leaves channel 1, which B keeps open: still charged to A while it exists.
    assert_eq!(
        relay.send(A, ClientMessage::Unsubscribe { handle: h1 }).0,
        Ok(())
    );
    assert_eq!(relay.send(A, sub3).0, Err(ErrorCode::TooManyChannelsOpened));
    // B leaves it: the channel closes, A's charge is released.
    let hb = relay.router.handle(B, &token(1)).unwrap();
    assert_eq!(
        relay.send(B, ClientMessage::Unsubscribe { handle: hb }).0,
        Ok(())
    );
    assert_eq!(relay.router.usage(A).unwrap().channels_opened, 1);
    relay.subscribe(A, token(3));
    assert!(relay.router.accounting_is_exact());
    // Welcomes: count and bytes.
    assert_eq!(deliver(&mut relay, A, 1, 600), Ok(()));
    assert_eq!(
        deliver(&mut relay, A, 2, 500),
        Err(ErrorCode::WelcomeQuotaExceeded)
    );
    assert_eq!(deliver(&mut relay, A, 2, 400), Ok(()));
    assert_eq!(
        deliver(&mut relay, A, 3, 1),
        Err(ErrorCode::WelcomeQuotaExceeded)
    );
    // A retransmission is no new charge.
    assert_eq!(deliver(&mut relay, A, 2, 400), Ok(()));
    // A fetch does not release the charge (the Welcome is still held).
    let id = kp(2);
    let fetch = ClientMessage::FetchWelcomes {
        mailbox: MailboxId::new(&id).unwrap(),
    };
    assert_eq!(relay.send(A, fetch).0, Ok(()));
    assert_eq!(
        deliver(&mut relay, A, 3, 1),
        Err(ErrorCode::WelcomeQuotaExceeded)
    );
    let u = relay.router.usage(A).unwrap();
    assert_eq!((u.welcomes, u.welcome_bytes), (2, 1000));
    assert!(relay.router.accounting_is_exact());
    // Expiry releases it.
    relay.now += Duration::from_secs(11);
    assert_eq!(deliver(&mut relay, A, 3, 1000), Ok(()));
    let u = relay.router.usage(A).unwrap();
    assert_eq!((u.welcomes, u.welcome_bytes), (1, 1000));
    assert!(relay.router.accounting_is_exact());
    // Disconnecting releases everything; the Welcome stays for its invitee.
    relay.router.disconnect(A, relay.now);
    assert!(relay.router.usage(A).is_none());
    assert_eq!(relay.router.welcome_bytes(), 1000);
    assert!(relay.router.accounting_is_exact());
    // A new connection under the same id starts from nothing, and the old Welcome's
    // expiry does not touch its charges.
    relay.now += Duration::from_secs(5);
    relay.subscribe(A, token(7));
    assert_eq!(deliver(&mut relay, A, 4, 10), Ok(()));
    relay.now += Duration::from_secs(6);
    relay.router.expire(relay.now);
    assert_eq!(relay.router.welcome_bytes(), 10);
    let u = relay.router.usage(A).unwrap();
    assert_eq!((u.welcomes, u.welcome_bytes, u.channels_opened), (1, 10, 1));
    assert!(relay.router.accounting_is_exact());
    relay.now += Duration::from_secs(5);
    relay.router.expire(relay.now);
    assert_eq!(relay.router.welcome_bytes(), 0);
    let u = relay.router.usage(A).unwrap();
    assert_eq!((u.welcomes, u.welcome_bytes), (0, 0));
    assert!(relay.router.accounting_is_exact());
}

/// Finding 6 (issue 10): handles are drawn at random (under the relay's key) per
/// connection, distinct within a connection, and say nothing about the order of
/// subscriptions or about other connections' handles.
#[test]
fn finding6_channel_handles_are_random_and_collision_free() {
    let mut relay = Relay::new(RouterLimits {
        max_channels_opened_per_connection: 64,
        ..RouterLimits::default()
    });
    let mut seen = std::collections::HashSet::new();
    let mut handles = Vec::new();
    for i in 0..64u8 {
        let h = relay.subscribe(A, token(i));
        assert!(seen.insert(h), "handle {h:?} given twice to one connection");
        handles.push(h.0);
    }
    // Not sequential, not small: a blind guess of one of 64 handles succeeds with
    // probability 64 / 2^32.
    assert!(
        handles
            .windows(2)
            .filter(|w| w[1] == w[0].wrapping_add(1))
            .count()
            < 2
    );
    assert!(handles.iter().filter(|h| **h < 1 << 16).count() < 2);
    // Another connection on the same channels gets other handles.
    for i in 0..8u8 {
        let hb = relay.subscribe(B, token(i));
        assert_ne!(Some(hb), relay.router.handle(A, &token(i)));
    }
    // Another relay key, other handles.
    let mut other = Relay {
        router: Router::new(RouterLimits::default(), &[0x6c; 32]),
        ..Relay::new(RouterLimits::default())
    };
    assert_ne!(other.subscribe(A, token(0)).0, handles[0]);
}

/// Finding 6 (issue 10): `RelayClient::receive` took `Subscribed` and `Unsubscribed`
/// replies it never asked for. Now the client ignores (and counts) every reply to a request
/// it did not make: a late or repeated answer, or a relay's answer to nothing, changes
/// nothing.
#[test]
fn finding6_the_client_ignores_replies_it_did_not_ask_for() {
    use sotto::relay::{ClientEvent, RelayClient};
    let mut relay = Relay::new(RouterLimits::default());
    let mut client = RelayClient::new();
    let mut out = BytesMut::new();
    let enc = |m: RelayMessage<'_>| {
        let mut b = vec![0u8; m.encoded_len()];
        m.encode(&mut b).unwrap();
        b
    };
    let kp = [0x42u8; 32];
    let mailbox = MailboxId::new(&kp).unwrap();
    let forgeries = [
        enc(RelayMessage::Ready),
        enc(RelayMessage::Subscribed {
            token: token(5),
            next_seq: 0,
            handle: ChannelHandle(1),
        }),
        enc(RelayMessage::Welcome {
            mailbox,
            welcome: b"forged",
        }),
        enc(RelayMessage::Stored { mailbox }),
        enc(RelayMessage::Error {
            code: ErrorCode::ChannelFull,
            request: Request::Subscribe(token(5)),
        }),
    ];
    for f in &forgeries {
        assert_eq!(client.receive(f), Ok(ClientEvent::Unsolicited), "{f:x?}");
    }
    // The genuine Ready (after a Hello), then a genuine subscription.
    let feed = |relay: &mut Relay, _: &mut RelayClient, out: &mut BytesMut| {
        let (_, replies) = relay.raw(A, out);
        out.clear();
        replies
    };
    client.hello(&mut out).unwrap();
    let replies = feed(&mut relay, &mut client, &mut out);
    assert_eq!(client.receive(&replies[0].1), Ok(ClientEvent::Ready));
    client.subscribe(token(1), &mut out).unwrap();
    let replies = feed(&mut relay, &mut client, &mut out);
    assert_eq!(
        client.receive(&replies[0].1),
        Ok(ClientEvent::Subscribed {
            token: token(1),
            next_seq: 0
        })
    );
    let handle = relay.router.handle(A, &token(1)).unwrap();
    // Forged: another subscription, the real channel's handle reassigned, leaving it.
    for f in [
        enc(RelayMessage::Subscribed {
            token: token(6),
            next_seq: 0,
            handle: ChannelHandle(9),
        }),
        enc(RelayMessage::Subscribed {
            token: token(1),
            next_seq: 0,
            handle: ChannelHandle(handle.0 ^ 1),
        }),
        enc(RelayMessage::Unsubscribed { handle }),
        enc(RelayMessage::Ready),
        enc(RelayMessage::Error {
            code: ErrorCode::UnknownHandle,
            request: Request::Unsubscribe(handle),
        }),
        // "Forgot your connection" about a request it did not make: it keeps everything.
        enc(RelayMessage::Error {
            code: ErrorCode::NotConnected,
            request: Request::Subscribe(token(7)),
        }),
    ] {
        assert_eq!(client.receive(&f), Ok(ClientEvent::Unsolicited), "{f:x?}");
    }
    assert!(client.is_subscribed(&token(1)));
    assert!(!client.is_subscribed(&token(6)));
    assert!(client.is_ready());
    assert_eq!(client.unsolicited(), 11);
    // Its own requests still go through: leaving works.
    client.unsubscribe(&token(1), &mut out).unwrap();
    let replies = feed(&mut relay, &mut client, &mut out);
    assert_eq!(
        client.receive(&replies[0].1),
        Ok(ClientEvent::Unsubscribed { token: token(1) })
    );
    assert!(!client.is_subscribed(&token(1)));
}
