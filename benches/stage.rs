//! Stage rooms: the per-commit costs of a stage at 1,000, 4,000 and 10,000 listeners under
//! the goal's churn (10 joins and 2 departures per commit), against an MLS room's
//! self-update at 1,000 members measured in the same run.
//!
//! `cargo bench --bench stage`. Sizes of every message are printed once per size.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use openmls_rust_crypto::{OpenMlsRustCrypto, RustCrypto};
use sotto::room::{Identity, MlsSuite, Room, RoomConfig};
use sotto::stage::{StageCommit, StageConfig, StageHost, StageMember};

const SIZES: [(usize, u32); 3] = [(1000, 2048), (4000, 8192), (10_000, 16_384)];
const JOINS: usize = 10;
const DEPARTURES: usize = 2;

fn identity(counter: &mut u64) -> Identity<OpenMlsRustCrypto> {
    *counter += 1;
    Identity::new(
        OpenMlsRustCrypto::default(),
        format!("member-{:08}", *counter).as_bytes(),
    )
    .unwrap()
}

fn key_package(counter: &mut u64) -> Vec<u8> {
    identity(counter)
        .key_package(MlsSuite::Classic)
        .unwrap()
        .bytes
}

struct Stage {
    host: StageHost,
    listener: StageMember,
    /// Slots of the bulk listeners (departures are taken from them).
    bulk: Vec<u32>,
    size: usize,
    counter: u64,
    rng: u64,
}

impl Stage {
    fn new(size: usize, capacity: u32) -> Stage {
        let crypto = RustCrypto::default();
        let mut counter = 0;
        let (mut host, _) = StageHost::new(StageConfig {
            capacity,
            ..StageConfig::default()
        })
        .unwrap();
        let measured = identity(&mut counter);
        host.add(
            &crypto,
            &measured.key_package(MlsSuite::Classic).unwrap().bytes,
        )
        .unwrap();
        let bulk = (1..size)
            .map(|_| host.add(&crypto, &key_package(&mut counter)).unwrap())
            .collect();
        let commit = host.commit(&crypto).unwrap();
        let (listener, _) =
            StageMember::join(&measured, host.signature_key(), &commit.welcomes[0].bytes).unwrap();
        Stage {
            host,
            listener,
            bulk,
            size,
            counter,
            rng: 0x5eed,
        }
    }

    /// Prepares one commit's churn (KeyPackages made outside the timing) and returns them.
    fn key_packages(&mut self) -> Vec<Vec<u8>> {
        (0..JOINS).map(|_| key_package(&mut self.counter)).collect()
    }

    /// Adds the newcomers, removes two bulk listeners and commits; then trims the stage
    /// back to its size (untimed for callers that time only this step's commit).
    fn commit(&mut self, kps: &[Vec<u8>]) -> StageCommit {
        let crypto = RustCrypto::default();
        // Departures first, from listeners already in (never a newcomer of this commit).
        for _ in 0..DEPARTURES {
            self.rng = self
                .rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = (self.rng >> 33) as usize % self.bulk.len();
            let slot = self.bulk.swap_remove(k);
            self.host.remove(slot).unwrap();
        }
        for kp in kps {
            self.bulk.push(self.host.add(&crypto, kp).unwrap());
        }
        self.host.commit(&crypto).unwrap()
    }

    /// Removes listeners until the stage is back to its size (one untimed commit).
    fn trim(&mut self) {
        let crypto = RustCrypto::default();
        // Departures count until committed: remove the excess at once.
        let excess = (self.host.listeners() as usize).saturating_sub(self.size);
        for _ in 0..excess {
            let slot = self.bulk.swap_remove(0);
            self.host.remove(slot).unwrap();
        }
        if let Ok(commit) = self.host.commit(&crypto) {
            self.listener.process(&commit.rekey).unwrap();
        }
    }
}

fn stage(c: &mut Criterion) {
    let mut group = c.benchmark_group("stage");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (size, capacity) in SIZES {
        let mut s = Stage::new(size, capacity);
        {
            let kps = s.key_packages();
            let commit = s.commit(&kps);
            s.listener.process(&commit.rekey).unwrap();
            eprintln!(
                "stage {size}: rekey {} B ({} joins, {} departures), welcome {} B",
                commit.rekey.len(),
                JOINS,
                DEPARTURES,
                commit.welcomes[0].bytes.len()
            );
            s.trim();
        }
        // The host: add 10 KeyPackages (validated), remove 2, commit (10 HPKE seals).
        group.bench_function(BenchmarkId::new("host_commit", size), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let kps = s.key_packages();
                    let start = Instant::now();
                    let commit = s.commit(&kps);
                    total += start.elapsed();
                    s.listener.process(&commit.rekey).unwrap();
                    black_box(commit);
                    s.trim();
                }
                total
            })
        });
        // A listener processing that rekey.
        group.bench_function(BenchmarkId::new("listener_process", size), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let kps = s.key_packages();
                    let commit = s.commit(&kps);
                    let start = Instant::now();
                    let keys = s.listener.process(&commit.rekey).unwrap();
                    total += start.elapsed();
                    black_box(keys);
                    s.trim();
                }
                total
            })
        });
        // A newcomer joining with its Welcome.
        group.bench_function(BenchmarkId::new("newcomer_join", size), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let newcomer = identity(&mut s.counter);
                    let mut kps = s.key_packages();
                    kps[0] = newcomer.key_package(MlsSuite::Classic).unwrap().bytes;
                    let commit = s.commit(&kps);
                    s.listener.process(&commit.rekey).unwrap();
                    let start = Instant::now();
                    let joined = StageMember::join(
                        &newcomer,
                        s.host.signature_key(),
                        &commit.welcomes[0].bytes,
                    )
                    .unwrap();
                    total += start.elapsed();
                    black_box(joined);
                    s.trim();
                }
                total
            })
        });
    }
    // The baseline: an MLS room of 1,000 members (built in batches of 200, a worst-case
    // tree as in a fast-growing room), one self-update commit and its processing.
    let mut counter = 1_000_000;
    let (mut committer, _) = Room::create(identity(&mut counter), RoomConfig::default()).unwrap();
    let kps: Vec<Vec<u8>> = (0..998).map(|_| key_package(&mut counter)).collect();
    for batch in kps.chunks(200) {
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        committer.invite(&refs).unwrap();
        committer.confirm_pending().unwrap();
    }
    let joiner = identity(&mut counter);
    let kp = joiner.key_package(MlsSuite::Classic).unwrap();
    let commit = committer.invite(&[&kp.bytes]).unwrap();
    committer.confirm_pending().unwrap();
    let welcome = commit.welcome.unwrap();
    let (mut processor, _) = Room::join(joiner, RoomConfig::default(), &welcome).unwrap();
    assert_eq!(committer.members().len(), 1000);
    let update = committer.self_update().unwrap();
    eprintln!(
        "mls room 1000: welcome {} B, self-update commit {} B",
        welcome.len(),
        update.message.len()
    );
    committer.confirm_pending().unwrap();
    processor.process(&update.message).unwrap();
    group.bench_function(BenchmarkId::new("mls_room_self_update_commit", 1000), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let update = committer.self_update().unwrap();
                committer.confirm_pending().unwrap();
                total += start.elapsed();
                processor.process(&update.message).unwrap();
            }
            total
        })
    });
    group.bench_function(BenchmarkId::new("mls_room_process", 1000), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let update = committer.self_update().unwrap();
                committer.confirm_pending().unwrap();
                let start = Instant::now();
                processor.process(&update.message).unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, stage);
criterion_main!(benches);
