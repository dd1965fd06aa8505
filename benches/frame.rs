//! Frame layer benchmarks: every suite × payload size, seal / open / seal+open, with two
//! baselines measured in the same run: raw `ring` AES-128-GCM (pre-expanded key, the floor)
//! and the `sframe` crate 2.1 (ring backend) through its own API.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ring::aead;
use sotto::frame::{CipherSuite, FrameOpener, FrameSealer};

const PAYLOADS: [usize; 4] = [20, 60, 160, 1000];
const KID: u64 = 3;
const BASE_KEY: &[u8] = b"benchmark base key 0123456789abc";

fn pair(suite: CipherSuite) -> (FrameSealer, FrameOpener) {
    let sealer = FrameSealer::new(suite, KID, BASE_KEY).unwrap();
    // A window far larger than the batch keeps pre-sealed frames inside it.
    let mut opener = FrameOpener::new();
    opener.insert_key(KID, suite, BASE_KEY).unwrap();
    (sealer, opener)
}

fn sotto(c: &mut Criterion) {
    for suite in CipherSuite::ALL {
        let mut group = c.benchmark_group(format!("sotto/{suite}"));
        for size in PAYLOADS {
            let payload = vec![0xa5u8; size];
            let mut frame = vec![0u8; size + 64];
            let mut plain = vec![0u8; size + 64];
            group.throughput(Throughput::Bytes(size as u64));

            let (mut sealer, _) = pair(suite);
            group.bench_function(BenchmarkId::new("seal", size), |b| {
                b.iter(|| {
                    black_box(
                        sealer
                            .seal_into(b"", black_box(&payload), &mut frame)
                            .unwrap(),
                    )
                })
            });

            let (mut sealer, mut opener) = pair(suite);
            group.bench_function(BenchmarkId::new("open", size), |b| {
                b.iter_batched_ref(
                    || {
                        let mut f = vec![0u8; size + 64];
                        let n = sealer.seal_into(b"", &payload, &mut f).unwrap();
                        f.truncate(n);
                        f
                    },
                    |f| black_box(opener.open_into(b"", f, &mut plain).unwrap()),
                    BatchSize::SmallInput,
                )
            });

            let (mut sealer, mut opener) = pair(suite);
            group.bench_function(BenchmarkId::new("seal+open", size), |b| {
                b.iter(|| {
                    let n = sealer
                        .seal_into(b"", black_box(&payload), &mut frame)
                        .unwrap();
                    black_box(opener.open_into(b"", &frame[..n], &mut plain).unwrap())
                })
            });
        }
        group.finish();
    }
}

/// The floor: ring AES-128-GCM seal+open with a pre-expanded key, a 1-byte "header" as AAD
/// and a fresh nonce per frame; nothing else.
fn ring_floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("baseline/ring-aes128gcm");
    let key =
        aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &[7u8; 16]).unwrap());
    for size in PAYLOADS {
        let payload = vec![0xa5u8; size];
        let mut buf = vec![0u8; size];
        let mut ctr: u64 = 0;
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("seal+open", size), |b| {
            b.iter(|| {
                ctr += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&ctr.to_be_bytes());
                let aad = [0x10u8];
                buf.copy_from_slice(black_box(&payload));
                let tag = key
                    .seal_in_place_separate_tag(
                        aead::Nonce::assume_unique_for_key(nonce),
                        aead::Aad::from(&aad),
                        &mut buf,
                    )
                    .unwrap();
                let plain = key
                    .open_in_place_separate_tag(
                        aead::Nonce::assume_unique_for_key(nonce),
                        aead::Aad::from(&aad),
                        tag,
                        &mut buf,
                        0..,
                    )
                    .unwrap();
                black_box(plain.len())
            })
        });
    }
    group.finish();
}

/// The `sframe` crate 2.1 (ring backend), AES_128_GCM_SHA256_128, through its frame API with
/// reused output buffers (`MediaFrameView::encrypt_into`, `EncryptedFrameView::decrypt_into`,
/// a KID-checked key store), and through its raw key API (header serialized by hand, no
/// parsing) for the lowest cost it allows.
fn sframe_baseline(c: &mut Criterion) {
    use sframe::crypto::{DecryptionBufferView, EncryptionBufferView};
    use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
    use sframe::header::SframeHeader;
    use sframe::key::{DecryptionKey, EncryptionKey};

    let suite = sframe::CipherSuite::AesGcm128Sha256;
    let enc = EncryptionKey::derive_from(suite, KID, BASE_KEY).unwrap();
    let dec = DecryptionKey::derive_from(suite, KID, BASE_KEY).unwrap();
    let mut group = c.benchmark_group("baseline/sframe-2.1-AES_128_GCM_SHA256_128");
    for size in PAYLOADS {
        let payload = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));

        let mut counter = MonotonicCounter::default();
        let mut enc_buf: Vec<u8> = Vec::with_capacity(size + 64);
        let mut dec_buf: Vec<u8> = Vec::with_capacity(size + 64);
        group.bench_function(BenchmarkId::new("seal+open", size), |b| {
            b.iter(|| {
                let media = MediaFrameView::try_new(&mut counter, black_box(&payload)).unwrap();
                let sealed = media.encrypt_into(&enc, &mut enc_buf).unwrap();
                let wire = sealed.sframe_cipher_text();
                let frame = EncryptedFrameView::try_new(wire).unwrap();
                let opened = frame.decrypt_into(&dec, &mut dec_buf).unwrap();
                black_box(opened.payload().len())
            })
        });

        let mut ctr: u64 = 0;
        let mut aad = [0u8; 17];
        let mut data = vec![0u8; size + 16];
        group.bench_function(BenchmarkId::new("seal+open-raw", size), |b| {
            b.iter(|| {
                ctr += 1;
                let header = SframeHeader::new(KID, ctr);
                let hl = header.len();
                header.serialize(&mut aad[..hl]).unwrap();
                data[..size].copy_from_slice(black_box(&payload));
                let (body, tag) = data.split_at_mut(size);
                enc.encrypt(
                    EncryptionBufferView {
                        aad: &mut aad[..hl],
                        data: body,
                        tag,
                    },
                    ctr,
                )
                .unwrap();
                dec.decrypt(
                    DecryptionBufferView {
                        aad: &mut aad[..hl],
                        data: &mut data,
                    },
                    ctr,
                )
                .unwrap();
                black_box(data[0])
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = sotto, ring_floor, sframe_baseline
}
criterion_main!(benches);
