//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same bodies the
//! libFuzzer targets run, so every `cargo test` re-checks what fuzzing found.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use sotto::frame::FrameSealer;

#[path = "../fuzz/bodies.rs"]
mod bodies;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn header_corpus() {
    let inputs = corpus("header");
    assert!(
        inputs.len() >= 10,
        "header corpus has {} inputs",
        inputs.len()
    );
    for (_, data) in &inputs {
        bodies::header(data);
    }
}

#[test]
fn open_corpus() {
    let inputs = corpus("open");
    assert!(
        inputs.len() >= 10,
        "open corpus has {} inputs",
        inputs.len()
    );
    for (_, data) in &inputs {
        let mut opener = bodies::open_opener();
        let _ = bodies::open(&mut opener, data);
    }
}

/// The seed corpus: valid frames under every key of the `open` target (so fuzzing starts
/// from frames that authenticate) and headers of every length. Run with `--ignored` to
/// rewrite the seed files.
#[test]
#[ignore]
fn write_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let open_dir = root.join("open");
    let header_dir = root.join("header");
    std::fs::create_dir_all(&open_dir).unwrap();
    std::fs::create_dir_all(&header_dir).unwrap();
    for (kid, suite) in bodies::OPEN_KEYS {
        for (ctr, meta) in [(0u64, &b""[..]), (9, b"meta"), (300, b""), (u64::MAX, b"m")] {
            let mut sealer =
                FrameSealer::starting_at(suite, kid, bodies::OPEN_BASE_KEY, ctr).unwrap();
            let mut frame = BytesMut::new();
            sealer.seal(meta, &[0x42; 24], &mut frame).unwrap();
            let mut input = vec![u8::try_from(meta.len()).unwrap()];
            input.extend_from_slice(meta);
            input.extend_from_slice(&frame);
            std::fs::write(open_dir.join(format!("seed-{kid}-{ctr}")), &input).unwrap();
        }
    }
    for (i, (kid, ctr)) in [
        (0u64, 0u64),
        (7, 7),
        (8, 8),
        (255, 256),
        (1 << 40, 3),
        (u64::MAX, u64::MAX),
    ]
    .into_iter()
    .enumerate()
    {
        let header = sotto::frame::Header::new(kid, ctr);
        let mut buf = [0u8; 17];
        let n = header.encode(&mut buf).unwrap();
        std::fs::write(header_dir.join(format!("seed-{i}")), &buf[..n]).unwrap();
    }
    // Malformed: non-minimal and truncated.
    for (i, bad) in [
        &[0x80u8, 0x03][..],
        &[0x90, 0x00, 0x08],
        &[0x8f, 0x08],
        &[],
        &[0x0f],
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(header_dir.join(format!("bad-{i}")), bad).unwrap();
    }
}

#[test]
fn room_ingest_corpus() {
    let inputs = corpus("room_ingest");
    assert!(
        inputs.len() >= 5,
        "room_ingest corpus has {} inputs",
        inputs.len()
    );
    // As the target runs: one state through all inputs, the full check on the same eighth.
    let mut state = bodies::RoomIngest::default();
    for (_, data) in &inputs {
        bodies::room_ingest(&mut state, data, data.len() % 8 == 0);
    }
    // The room every refused input was piled on still processes a genuine commit.
    bodies::room_ingest(&mut state, b"", true);
    // The genuine messages of this run's room are accepted.
    let fixture = bodies::room_fixture();
    let mut room = fixture.restore();
    assert!(room.process(&fixture.good_proposal).is_ok());
    let mut room = fixture.restore();
    assert!(room.process(&fixture.good_commit).is_ok());
    assert_eq!(room.epoch(), fixture.epoch + 1);
}

/// Seeds for `room_ingest`: genuine MLS messages of a room (a commit, a proposal, a Welcome,
/// a KeyPackage) — of another group than the fuzz fixture's, so they exercise parsing and
/// validation — plus truncations and garbage.
#[test]
#[ignore]
fn write_room_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/room_ingest");
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = bodies::room_fixture();
    let mut seeds = vec![
        ("commit", fixture.good_commit.clone()),
        ("proposal", fixture.good_proposal.clone()),
        ("empty", Vec::new()),
        ("garbage", b"not an MLS message".to_vec()),
    ];
    seeds.push((
        "commit-truncated",
        fixture.good_commit[..fixture.good_commit.len() / 2].to_vec(),
    ));
    let mut flipped = fixture.good_commit.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    seeds.push(("commit-flipped", flipped));
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}

#[test]
fn relay_wire_corpus() {
    let inputs = corpus("relay_wire");
    assert!(
        inputs.len() >= 10,
        "relay_wire corpus has {} inputs",
        inputs.len()
    );
    // The named seeds are messages of this wire version (valid ones parse, bad ones do
    // not), so they keep reaching what lies behind the parsers; fuzzer finds are any bytes.
    use sotto::relay::{ClientMessage, RelayMessage};
    let mut seeds = 0;
    for (path, data) in &inputs {
        let name = path.file_name().unwrap().to_string_lossy();
        let parses = ClientMessage::parse(data).is_ok() || RelayMessage::parse(data).is_ok();
        if name.starts_with("seed-") {
            seeds += 1;
            assert!(parses, "{name} is not a message of this wire version");
        } else if name.starts_with("bad-") {
            assert!(!parses, "{name} parses");
        }
    }
    assert!(seeds >= 14, "{seeds} seed messages");
    for (_, data) in &inputs {
        bodies::relay_wire(data);
    }
}

/// Seeds for `relay_wire`: one valid message of every type (both directions), messages
/// the fixture's router acts on (media and handshakes on its connections' handles,
/// subscriptions to its tokens, a Welcome delivered and fetched), malformed ones, and
/// scripts of several steps. Run with `--ignored` to rewrite the seed files.
#[test]
#[ignore]
fn write_relay_seeds() {
    use sotto::relay::{ChannelHandle, ClientMessage, ErrorCode, MailboxId, RelayMessage, Request};
    // The harness stamps the connection's handles in (script op 32); these are
    // placeholders.

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/relay_wire");
    std::fs::create_dir_all(&dir).unwrap();
    let [t0, t1, _] = bodies::RELAY_TOKENS;
    let kp = [0x4bu8; 32];
    let mailbox = MailboxId::new(&kp).unwrap();
    let h0 = ChannelHandle(0);
    let h1 = ChannelHandle(1);
    let enc = |m: ClientMessage<'_>| {
        let mut b = vec![0u8; m.encoded_len()];
        m.encode(&mut b).unwrap();
        b
    };
    let renc = |m: RelayMessage<'_>| {
        let mut b = vec![0u8; m.encoded_len()];
        m.encode(&mut b).unwrap();
        b
    };
    let frame = [0xa5u8; 60];
    let client = [
        ("subscribe", enc(ClientMessage::Subscribe { token: t1 })),
        (
            "unsubscribe",
            enc(ClientMessage::Unsubscribe { handle: h0 }),
        ),
        (
            "media",
            enc(ClientMessage::Media {
                handle: h0,
                frame: &frame,
            }),
        ),
        (
            "handshake",
            enc(ClientMessage::Handshake {
                handle: h0,
                message: b"commit",
            }),
        ),
        (
            "deliver",
            enc(ClientMessage::DeliverWelcome {
                mailbox,
                welcome: b"welcome",
            }),
        ),
        ("fetch", enc(ClientMessage::FetchWelcomes { mailbox })),
        ("hello", enc(ClientMessage::Hello)),
    ];
    let relay = [
        (
            "subscribed",
            renc(RelayMessage::Subscribed {
                token: t0,
                handle: h1,
                next_seq: 3,
            }),
        ),
        (
            "unsubscribed",
            renc(RelayMessage::Unsubscribed { handle: h1 }),
        ),
        (
            "r-media",
            renc(RelayMessage::Media {
                handle: h1,
                frame: &frame,
            }),
        ),
        (
            "r-handshake",
            renc(RelayMessage::Handshake {
                handle: h1,
                seq: 7,
                message: b"commit",
            }),
        ),
        (
            "welcome",
            renc(RelayMessage::Welcome {
                mailbox,
                welcome: b"welcome",
            }),
        ),
        ("stored", renc(RelayMessage::Stored { mailbox })),
        (
            "error",
            renc(RelayMessage::Error {
                code: ErrorCode::UnknownHandle,
                request: Request::Media(h0),
            }),
        ),
        (
            "error-fetch",
            renc(RelayMessage::Error {
                code: ErrorCode::MailboxEmpty,
                request: Request::FetchWelcomes(mailbox),
            }),
        ),
        (
            "error-not-connected",
            renc(RelayMessage::Error {
                code: ErrorCode::NotConnected,
                request: Request::Subscribe(t1),
            }),
        ),
        ("ready", renc(RelayMessage::Ready)),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = client
        .iter()
        .chain(relay.iter())
        .map(|(name, bytes)| (format!("seed-{name}"), bytes.clone()))
        .collect();
    for (name, bytes) in [
        ("empty", vec![]),
        ("version-1", vec![0x23, 0, 0, 1]),
        ("version-2", [&[0x41][..], &[0; 32]].concat()),
        ("unknown-type", vec![0x6f]),
        ("retired-challenge", vec![0x78; 17]),
        ("truncated-subscribe", vec![0x61, 1, 2, 3]),
        ("mailbox-0", vec![0x66, 0]),
    ] {
        seeds.push((format!("bad-{name}"), bytes));
    }
    // Scripts: `op ‖ len ‖ datagram` steps (see `bodies::relay_wire`). Connection index
    // `op & 3` is connection 1..=4; op 32 puts the connection's own handles in (the input
    // cannot guess them), without it the datagram goes as it is.
    let step = |op: u8, datagram: &[u8]| {
        let mut s = vec![op, u8::try_from(datagram.len()).unwrap()];
        s.extend_from_slice(datagram);
        s
    };
    let (_, sub1) = &client[0];
    let (_, media) = &client[2];
    let (_, hs) = &client[3];
    let (_, deliver) = &client[4];
    let (_, fetch) = &client[5];
    let (_, hello) = &client[6];
    let scripts: [(&str, Vec<Vec<u8>>); 5] = [
        // Conn 1 publishes media and a handshake on token 0; conn 2 subscribes to token 1
        // again and unsubscribes handle 0.
        (
            "traffic",
            vec![
                step(32, media),
                step(32, hs),
                step(33, sub1),
                step(33, &enc(ClientMessage::Unsubscribe { handle: h0 })),
                step(33, hs),
                step(1, hs),
            ],
        ),
        // Welcome delivered, fetched, expired (op 8 + 16: 3 s later and expire, twice).
        (
            "mailbox",
            vec![
                step(32, deliver),
                step(33, fetch),
                step(32 | 8 | 16, fetch),
                step(32 | 8 | 16, fetch),
            ],
        ),
        // Subscription flood from conn 4, then disconnects (op 4).
        (
            "flood",
            (0u8..8)
                .map(|i| {
                    step(
                        32 | 3,
                        &enc(ClientMessage::Subscribe {
                            token: sotto::media::ChannelToken([i; 16]),
                        }),
                    )
                })
                .chain([vec![4 | 3], vec![4], step(32 | 1, media)])
                .collect(),
        ),
        // Conn 2 is disconnected: refused (NotConnected) until it says Hello again, then
        // subscribes and sends media as a new connection.
        (
            "reconnect",
            vec![
                vec![4 | 1],
                step(1, sub1),
                step(32 | 1, media),
                step(1, hello),
                step(1, sub1),
                step(32 | 1, media),
            ],
        ),
        // Malformed steps between valid ones.
        (
            "mixed",
            vec![
                step(0, &[0x23, 0, 0]),
                step(2, &[0x61]),
                step(32, media),
                step(0, media),
                step(1, &[]),
            ],
        ),
    ];
    for (name, steps) in scripts {
        seeds.push((format!("script-{name}"), steps.concat()));
    }
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[cfg(feature = "opus")]
#[test]
fn call_datagram_corpus() {
    let inputs = corpus("call_datagram");
    assert!(
        inputs.len() >= 8,
        "call_datagram corpus has {} inputs",
        inputs.len()
    );
    // As the target runs: one live call through all inputs (twice, so the check that the
    // call comes back together runs too).
    let mut state = bodies::CallFuzz::new();
    for _ in 0..2 {
        for (_, data) in &inputs {
            bodies::call_datagram(&mut state, data);
        }
    }
    assert!(state.run_until(
        std::time::Duration::from_secs(10),
        bodies::CallFuzz::together
    ));
}

/// Seeds for `call_datagram`: what the relay sent the victim during a self-update of the
/// other member and a few frames of its audio (live handles of the fixture's relay key),
/// one file per kind and size, plus truncations.
#[cfg(feature = "opus")]
#[test]
#[ignore]
fn write_call_seeds() {
    use sotto::relay::RelayMessage;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/call_datagram");
    std::fs::create_dir_all(&dir).unwrap();
    let mut state = bodies::CallFuzz::new();
    state.record = Some(Vec::new());
    let now = state.now;
    state.calls[1].self_update(now).unwrap();
    let pcm = vec![0i16; state.calls[1].frame_samples()];
    for _ in 0..100 {
        let now = state.now;
        state.calls[1].send_audio(&pcm, now).unwrap();
        for _ in 0..4 {
            state.step();
        }
    }
    // The old epoch's channel retires after the grace period: an Unsubscribed.
    for _ in 0..2400 {
        state.step();
    }
    let mut datagrams = state.record.take().unwrap();
    // What the relay sends only around (re)connections and mailboxes, made up.
    let mut buf = vec![0u8; 128];
    for m in [
        RelayMessage::Ready,
        RelayMessage::Error {
            code: sotto::relay::ErrorCode::ChannelFull,
            request: sotto::relay::Request::Unparsed,
        },
        RelayMessage::Stored {
            mailbox: sotto::relay::MailboxId::new(&[5; 32]).unwrap(),
        },
    ] {
        let n = m.encode(&mut buf).unwrap();
        datagrams.push(buf[..n].to_vec());
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in datagrams {
        let kind = match RelayMessage::parse(&d) {
            Ok(m) => format!("{:?}", m)
                .split([' ', '{'])
                .next()
                .unwrap()
                .to_string(),
            Err(_) => "other".into(),
        };
        if !seen.insert(kind.clone()) {
            continue;
        }
        std::fs::write(dir.join(format!("seed-{kind}")), &d).unwrap();
        std::fs::write(dir.join(format!("cut-{kind}")), &d[..d.len() / 2]).unwrap();
    }
    assert!(seen.len() >= 7, "{seen:?}");
}

#[test]
fn rtp_corpus() {
    let inputs = corpus("rtp");
    assert!(inputs.len() >= 7, "rtp corpus has {} inputs", inputs.len());
    for (_, data) in &inputs {
        bodies::rtp(data);
    }
}

#[cfg(feature = "opus")]
#[test]
fn sealed_corpus() {
    let inputs = corpus("sealed");
    assert!(
        inputs.len() >= 4,
        "sealed corpus has {} inputs",
        inputs.len()
    );
    for (_, data) in &inputs {
        bodies::sealed(data);
    }
}

/// Writes the `sealed` seeds: a sealed handshake message and a padded Welcome (both
/// whole), one cut short, and a padded Welcome whose length points past its end. Run by
/// hand (`--ignored`) when the layout changes.
#[cfg(feature = "opus")]
#[test]
#[ignore = "writes the committed seeds; run by hand when the layout changes"]
fn write_sealed_seeds() {
    use sotto::call::sealed;
    use sotto::media::{ChannelToken, HandshakeKey};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sealed");
    std::fs::create_dir_all(&dir).unwrap();
    // The key and channel of the fuzz body, so that the seed opens there.
    let key = HandshakeKey::from_exported([0x5a; 16]);
    let token = ChannelToken([0x3c; 16]);
    let mut handshake = Vec::new();
    sealed::seal(&key, &token, b"\0\x01commit", 0, 4096, &mut handshake).unwrap();
    let mut welcome = Vec::new();
    sealed::pad_welcome(b"\0\x01welcome", 64, 4096, &mut welcome).unwrap();
    let mut long = welcome.clone();
    long[1..5].copy_from_slice(&1000u32.to_be_bytes());
    let seeds = [
        ("handshake", handshake.clone()),
        ("handshake-cut", handshake[..handshake.len() - 1].to_vec()),
        ("welcome", welcome),
        ("welcome-long", long),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[cfg(feature = "quic")]
#[test]
fn quic_stream_corpus() {
    let inputs = corpus("quic_stream");
    assert!(
        inputs.len() >= 5,
        "quic_stream corpus has {} inputs",
        inputs.len()
    );
    for (_, data) in &inputs {
        bodies::quic_stream(data);
    }
}

/// Writes the `quic_stream` seeds: whole and cut messages of the relay wire, framed, and
/// broken framings. Run by hand (`--ignored`) when the layout changes.
#[cfg(feature = "quic")]
#[test]
#[ignore = "writes the committed seeds; run by hand when the layout changes"]
fn write_quic_stream_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/quic_stream");
    std::fs::create_dir_all(&dir).unwrap();
    let framed = |m: &[u8]| {
        let mut v = (m.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(m);
        v
    };
    let hello = [0x67u8];
    let subscribe = [[0x61u8].as_slice(), &[7; 16]].concat();
    let mut two = framed(&hello);
    two.extend(framed(&subscribe));
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("seed-hello-whole", [vec![0], framed(&hello)].concat()),
        ("seed-two-in-bytes", [vec![0], two.clone()].concat()),
        ("seed-two-in-sevens", [vec![6], two.clone()].concat()),
        ("seed-cut", [vec![3], two[..9].to_vec()].concat()),
        ("bad-zero-length", vec![1, 0, 0, 0, 0, 0x67]),
        (
            "bad-too-long",
            [vec![2], 0x0001_0000u32.to_be_bytes().to_vec()].concat(),
        ),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn stage_corpus() {
    use sotto::stage::{fuzzing, StageError};
    let inputs = corpus("stage");
    assert!(
        inputs.len() >= 8,
        "stage corpus has {} inputs",
        inputs.len()
    );
    for (_, data) in &inputs {
        bodies::stage(data);
    }
    // The seeds reach past the parsers' first checks: valid bodies parse, broken ones are
    // refused for what they break.
    let seed = |name: &str| {
        inputs
            .iter()
            .find(|(p, _)| p.file_name().unwrap() == name)
            .map(|(_, d)| d.clone())
            .unwrap()
    };
    assert_eq!(
        fuzzing::rekey_body(&seed("rekey_departure"), 1 << 14),
        Ok(6)
    );
    assert_eq!(fuzzing::rekey_body(&seed("rekey_empty"), 1 << 14), Ok(0));
    for bad in ["rekey_unsorted", "rekey_bad_count", "rekey_retired_speaker"] {
        assert_eq!(
            fuzzing::rekey_body(&seed(bad), 1 << 14),
            Err(StageError::Malformed)
        );
    }
    assert_eq!(fuzzing::welcome_body(&seed("welcome_16")), Ok((3, 5)));
    assert_eq!(
        fuzzing::welcome_body(&seed("welcome_16384_speakers")),
        Ok((16383, 15))
    );
    assert_eq!(
        fuzzing::welcome_body(&seed("welcome_bad_capacity")),
        Err(StageError::Malformed)
    );
}

#[test]
fn storage_codec_corpus() {
    let inputs = corpus("storage_codec");
    assert!(
        inputs.len() >= 6,
        "storage_codec corpus has {} inputs",
        inputs.len()
    );
    let mut typed = 0;
    for (path, data) in &inputs {
        bodies::storage_codec(data);
        let decoded = sotto::provider::fuzzing::decode(data).unwrap();
        if path.file_name().unwrap() == "key_package" {
            assert_eq!(decoded, 1, "the KeyPackage seed decodes as one");
        }
        typed += decoded;
    }
    assert!(typed >= 1);
}

/// Seeds for `storage_codec`: a real KeyPackage as sotto's storage encodes it, cut short,
/// and values of every tag. Run by hand (`--ignored`) when the encoding changes.
#[test]
#[ignore = "writes the committed seeds; run by hand when the encoding changes"]
fn write_storage_codec_seeds() {
    use openmls::prelude::tls_codec::Deserialize as _;
    use openmls::prelude::{MlsMessageBodyIn, MlsMessageIn, ProtocolVersion};
    use openmls_traits::OpenMlsProvider as _;
    use sotto::provider::{fuzzing::encode, Provider};
    use sotto::room::{Identity, MlsSuite};

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/storage_codec");
    std::fs::create_dir_all(&dir).unwrap();
    let identity = Identity::new(Provider::new().unwrap(), b"seed").unwrap();
    let bytes = identity.key_package(MlsSuite::Classic).unwrap().bytes;
    let MlsMessageBodyIn::KeyPackage(kp) = MlsMessageIn::tls_deserialize_exact(bytes.as_slice())
        .unwrap()
        .extract()
    else {
        panic!("not a KeyPackage message")
    };
    let kp = kp
        .validate(identity.provider().crypto(), ProtocolVersion::Mls10)
        .unwrap();
    let kp = encode(&kp).unwrap();
    #[derive(serde::Serialize)]
    enum Shape {
        Unit,
        Newtype(u64),
        Tuple(i32, bool),
        Struct { text: String, ratio: f64 },
    }
    let map: std::collections::BTreeMap<u16, Option<Vec<u8>>> =
        [(1, None), (2, Some(vec![7; 5]))].into_iter().collect();
    let seeds = vec![
        ("key_package_cut", kp[..kp.len() / 2].to_vec()),
        ("key_package", kp),
        ("bytes", encode(&vec![0xa5u8; 40]).unwrap()),
        (
            "shapes",
            encode(&vec![
                Shape::Unit,
                Shape::Newtype(u64::MAX),
                Shape::Tuple(-9, true),
                Shape::Struct {
                    text: "ß".into(),
                    ratio: 0.25,
                },
            ])
            .unwrap(),
        ),
        ("map", encode(&map).unwrap()),
        (
            "nested",
            encode(&Some(Some((1u8, vec![vec![2u8]], ())))).unwrap(),
        ),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
