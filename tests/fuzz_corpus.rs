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
        bodies::open(&mut opener, data);
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
    for (_, data) in &inputs {
        bodies::room_ingest(data, true);
    }
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
