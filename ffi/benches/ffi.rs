//! Seal + open of a 60-byte frame through the C ABI against the same through the Rust
//! API, in one run (`cargo bench -p sotto-ffi`). Goal: C ABI ≤ 1.15× Rust.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use sotto::keys::StreamId;
use sotto::media::{MediaConfig, MediaSession};
use sotto::provider::Provider;
use sotto::room::{Identity, MlsSuite, Room, RoomConfig, RoomEvent};
use sotto_ffi::*;

#[path = "../tests/common/pair.rs"]
mod pair;
use pair::c_pair;

const PAYLOAD: [u8; 60] = [0x5a; 60];

/// Two members' data planes through the Rust API, sealing in epoch 1.
fn rust_pair() -> (MediaSession, MediaSession, Instant) {
    let t0 = Instant::now();
    let alice = Identity::new(Provider::new().unwrap(), b"alice").unwrap();
    let bob = Identity::new(Provider::new().unwrap(), b"bob").unwrap();
    let kp = bob.key_package(MlsSuite::Classic).unwrap();
    let (mut room, keys) = Room::create(alice, RoomConfig::default()).unwrap();
    let mut a = MediaSession::new(MediaConfig::default());
    a.apply(keys, t0).unwrap();
    let commit = room.invite(&[&kp.bytes]).unwrap();
    a.apply(commit.keys, t0).unwrap();
    for event in room.confirm_pending().unwrap() {
        if let RoomEvent::Keys(k) = event {
            a.apply(k, t0).unwrap();
        }
    }
    let (_bob_room, keys) =
        Room::join(bob, RoomConfig::default(), &commit.welcome.unwrap()).unwrap();
    let mut b = MediaSession::new(MediaConfig::default());
    b.apply(keys, t0).unwrap();
    (a, b, t0 + Duration::from_secs(2))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ffi/seal_open_60B");
    let (mut a, mut b, now) = rust_pair();
    let mut sealed = BytesMut::with_capacity(256);
    let mut opened = BytesMut::with_capacity(256);
    group.bench_function("rust", |bench| {
        bench.iter(|| {
            sealed.clear();
            opened.clear();
            a.seal(StreamId::MICROPHONE, black_box(&PAYLOAD), &mut sealed, now)
                .unwrap();
            b.open(&sealed, &mut opened, now).unwrap();
            black_box(opened.len())
        })
    });
    let (ca, cb, rooms, now_ms) = c_pair();
    let mut sealed = [0u8; 256];
    let mut opened = [0u8; 256];
    group.bench_function("c_abi", |bench| {
        bench.iter(|| {
            let mut sealed_len = 0;
            let mut opened_len = 0;
            let mut leaf = 0;
            // SAFETY: live handles from `c_pair`; buffers of the stated sizes.
            unsafe {
                let s = sotto_media_seal(
                    ca,
                    0,
                    black_box(PAYLOAD.as_ptr()),
                    PAYLOAD.len(),
                    sealed.as_mut_ptr(),
                    sealed.len(),
                    &mut sealed_len,
                    now_ms,
                );
                assert_eq!(s, SottoStatus::SOTTO_OK);
                let s = sotto_media_open(
                    cb,
                    sealed.as_ptr(),
                    sealed_len,
                    opened.as_mut_ptr(),
                    opened.len(),
                    &mut opened_len,
                    &mut leaf,
                    now_ms,
                );
                assert_eq!(s, SottoStatus::SOTTO_OK);
            }
            black_box(opened_len)
        })
    });
    group.finish();
    // SAFETY: live handles from `c_pair`, freed once.
    unsafe {
        sotto_media_free(ca);
        sotto_media_free(cb);
        for room in rooms {
            sotto_room_free(room);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
