//! Control-plane benchmarks: MLS add / remove / self-update through sotto's `Room`, with bare
//! openmls 0.9 doing the same operations in the same run as the baseline, at room sizes 2, 16,
//! 64 and 256; and the data-plane cost of applying one epoch's keys to a `MediaSession`.
//!
//! Each room operation is timed as "commit + one member processing it":
//!
//! - sotto: `Room::invite` / `Room::remove` / `Room::self_update`, `confirm_pending` by the
//!   committer, `process(&commit.message)` by one other member.
//! - openmls: the KeyPackage parsed and validated from the same bytes (add only),
//!   `MlsGroup::add_members` / `remove_members` / `self_update`, the commit (and Welcome)
//!   serialized, `merge_pending_commit` by the committer; the other member parses the commit
//!   bytes, `process_message` and `merge_staged_commit`. Same provider (sotto's
//!   `sotto::provider::Provider`), same ciphersuite
//!   (MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519), PURE_CIPHERTEXT wire format, ratchet
//!   tree extension on. sotto additionally exports the SFrame base key and channel token
//!   (staged and merged) and builds its events: that is the overhead the ratio shows.
//!
//! Room size stays constant across iterations (`iter_custom`, only the operation timed):
//! "add" grows an N-member room to N+1 and the added member is removed untimed; "remove"
//! adds a member untimed and times its removal (N+1 back to N); "self_update" keeps N. Every
//! add uses a fresh KeyPackage made untimed. The groups are built by their creator (leaf 0),
//! who adds the other members in batches; only the last one (the processing member) joins
//! from its Welcome, the others are KeyPackages of throwaway identities that never join. So
//! the tree has blank parent nodes and a commit with an update path encrypts to every other
//! leaf: the worst case for the committer, the same for sotto and openmls.
//!
//! `room/sealed_process/{bare,sealed}/N` (N = 2, 16, 64): one member processing a
//! self-update commit bare (`Room::process`) against the way the call engine carries it
//! (seal under the epoch's handshake key with 4 KiB buckets, open, process); only that is
//! timed, the commit is made and confirmed untimed; and `seal_open_only`, what sealing adds
//! alone (seal + open of a commit of that room). It prints the bytes sealing adds.
//!
//! `room/pq/…` (feature `pq`): a classic and a post-quantum room (X-Wing KEM) of N = 2, 16,
//! 64, 256 members built the same way, in one run: `commit` (self-update + confirm), `process`
//! (the other member), `join` (`Room::join` from a Welcome); the sizes of a KeyPackage, a
//! self-update commit, an add commit and its Welcome are printed. `room/pq/healthy_…` (N = 16,
//! 64): the same self-update after every member joined and the members at odd leaves updated,
//! so every parent node is set and a commit encrypts to one node per level.
//!
//! `media/apply_epoch_keys/N`: `MediaSession::apply` of the next epoch's `Current` keys
//! (N member leaves, random 48-byte base key, AES_128_CTR_HMAC_SHA256_80, default KID layout)
//! on a session whose 16 epoch slots are already full, 100 ms of caller time per epoch (well
//! within the 10 s grace), so every apply evicts the oldest epoch from its slot. Building
//! the `EpochKeys` value is not timed.

use sotto::room::MlsSuite;
use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion,
    SamplingMode,
};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{
    BasicCredential, Ciphersuite, CredentialWithKey, KeyPackage, LeafNodeIndex, LeafNodeParameters,
    MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn,
    MlsMessageOut, ProcessedMessageContent, ProtocolVersion, StagedWelcome,
    PURE_CIPHERTEXT_WIRE_FORMAT_POLICY,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::OpenMlsProvider;
use ring::rand::{SecureRandom, SystemRandom};
#[cfg(feature = "opus")]
use sotto::call::sealed;
use sotto::frame::CipherSuite;
use sotto::keys::{KidLayout, MemberId};
use sotto::media::{ChannelToken, EpochKeys, EpochStatus, MediaConfig, MediaSession};
use sotto::provider::Provider;
#[cfg(feature = "opus")]
use sotto::relay::MAX_HANDSHAKE;
use sotto::room::{Identity, Room, RoomConfig, RoomEvent};

const SIZES: [usize; 4] = [2, 16, 64, 256];
/// Members added per commit while building a room.
const SETUP_BATCH: usize = 64;
const CS: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// A fresh pseudonym per identity (same lengths for sotto and openmls).
fn pseudonym(counter: &mut u64) -> Vec<u8> {
    *counter += 1;
    format!("member-{:08}", *counter).into_bytes()
}

// ---------------------------------------------------------------------------------------
// sotto

type SottoRoom = Room<Provider>;

/// KeyPackage bytes of a throwaway identity that never joins.
fn sotto_key_package(counter: &mut u64, suite: MlsSuite) -> Vec<u8> {
    let identity = Identity::new(Provider::new().unwrap(), &pseudonym(counter)).unwrap();
    identity.key_package(suite).unwrap().bytes
}

struct SottoFixture {
    committer: SottoRoom,
    processor: SottoRoom,
    counter: u64,
}

impl SottoFixture {
    fn new(size: usize, suite: MlsSuite) -> SottoFixture {
        let mut counter = 0;
        let creator = Identity::new(Provider::new().unwrap(), &pseudonym(&mut counter)).unwrap();
        let config = RoomConfig {
            mls_suite: suite,
            ..RoomConfig::default()
        };
        let (mut committer, _) = Room::create(creator, config).unwrap();
        let throwaway: Vec<Vec<u8>> = (0..size - 2)
            .map(|_| sotto_key_package(&mut counter, suite))
            .collect();
        for batch in throwaway.chunks(SETUP_BATCH) {
            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            committer.invite(&refs).unwrap();
            committer.confirm_pending().unwrap();
        }
        let joiner = Identity::new(Provider::new().unwrap(), &pseudonym(&mut counter)).unwrap();
        let kp = joiner.key_package(suite).unwrap();
        let commit = committer.invite(&[&kp.bytes]).unwrap();
        committer.confirm_pending().unwrap();
        let (processor, _) =
            Room::join(joiner, RoomConfig::default(), &commit.welcome.unwrap()).unwrap();
        let fixture = SottoFixture {
            committer,
            processor,
            counter,
        };
        fixture.check(size);
        fixture
    }

    fn check(&self, size: usize) {
        assert_eq!(self.committer.epoch(), self.processor.epoch());
        assert_eq!(self.committer.members().len(), size);
        assert_eq!(self.processor.members().len(), size);
    }

    /// Adds a fresh member; returns its leaf and the time of invite + confirm + process.
    fn add(&mut self) -> (u32, Duration) {
        let kp = sotto_key_package(&mut self.counter, self.committer.mls_suite());
        let start = Instant::now();
        let commit = self.committer.invite(&[&kp]).unwrap();
        let confirmed = self.committer.confirm_pending().unwrap();
        let processed = self.processor.process(&commit.message).unwrap();
        let elapsed = start.elapsed();
        let leaf = confirmed
            .iter()
            .find_map(|e| match e {
                RoomEvent::MemberAdded { leaf, .. } => Some(*leaf),
                _ => None,
            })
            .unwrap();
        black_box((commit, processed));
        (leaf, elapsed)
    }

    /// Removes `leaf`; returns the time of remove + confirm + process.
    fn remove(&mut self, leaf: u32) -> Duration {
        let start = Instant::now();
        let commit = self.committer.remove(&[leaf]).unwrap();
        let confirmed = self.committer.confirm_pending().unwrap();
        let processed = self.processor.process(&commit.message).unwrap();
        let elapsed = start.elapsed();
        black_box((commit, confirmed, processed));
        elapsed
    }

    fn self_update(&mut self) -> Duration {
        let start = Instant::now();
        let commit = self.committer.self_update().unwrap();
        let confirmed = self.committer.confirm_pending().unwrap();
        let processed = self.processor.process(&commit.message).unwrap();
        let elapsed = start.elapsed();
        black_box((commit, confirmed, processed));
        elapsed
    }
}

// ---------------------------------------------------------------------------------------
// bare openmls

struct MlsMember {
    provider: Provider,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
}

impl MlsMember {
    fn new(counter: &mut u64) -> MlsMember {
        let signer = SignatureKeyPair::new(CS.signature_algorithm()).unwrap();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(pseudonym(counter)).into(),
            signature_key: signer.public().into(),
        };
        MlsMember {
            provider: Provider::new().unwrap(),
            signer,
            credential,
        }
    }

    /// A KeyPackage as an MLS message (the same wire form sotto publishes).
    fn key_package(&self) -> Vec<u8> {
        let bundle = KeyPackage::builder()
            .build(CS, &self.provider, &self.signer, self.credential.clone())
            .unwrap();
        MlsMessageOut::from(bundle.key_package().clone())
            .to_bytes()
            .unwrap()
    }
}

fn mls_key_package(counter: &mut u64) -> Vec<u8> {
    MlsMember::new(counter).key_package()
}

fn parse_key_package(bytes: &[u8], provider: &Provider) -> KeyPackage {
    let MlsMessageBodyIn::KeyPackage(kp) = MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .extract()
    else {
        panic!("not a key package");
    };
    kp.validate(provider.crypto(), ProtocolVersion::Mls10)
        .unwrap()
}

fn mls_process(group: &mut MlsGroup, provider: &Provider, bytes: &[u8]) {
    let message = MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .try_into_protocol_message()
        .unwrap();
    let processed = group.process_message(provider, message).unwrap();
    let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
        panic!("not a commit");
    };
    group.merge_staged_commit(provider, *staged).unwrap();
}

fn leaves(group: &MlsGroup) -> BTreeSet<u32> {
    group.members().map(|m| m.index.u32()).collect()
}

struct MlsFixture {
    committer: MlsMember,
    group: MlsGroup,
    processor: MlsMember,
    processor_group: MlsGroup,
    counter: u64,
}

impl MlsFixture {
    fn new(size: usize) -> MlsFixture {
        let mut counter = 0;
        let committer = MlsMember::new(&mut counter);
        let create = MlsGroupCreateConfig::builder()
            .ciphersuite(CS)
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .build();
        let join = MlsGroupJoinConfig::builder()
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .build();
        let mut group = MlsGroup::new(
            &committer.provider,
            &committer.signer,
            &create,
            committer.credential.clone(),
        )
        .unwrap();
        let throwaway: Vec<Vec<u8>> = (0..size - 2)
            .map(|_| mls_key_package(&mut counter))
            .collect();
        for batch in throwaway.chunks(SETUP_BATCH) {
            let kps: Vec<KeyPackage> = batch
                .iter()
                .map(|b| parse_key_package(b, &committer.provider))
                .collect();
            group
                .add_members(&committer.provider, &committer.signer, &kps)
                .unwrap();
            group.merge_pending_commit(&committer.provider).unwrap();
        }
        let processor = MlsMember::new(&mut counter);
        let kp = parse_key_package(&processor.key_package(), &committer.provider);
        let (_, welcome, _) = group
            .add_members(&committer.provider, &committer.signer, &[kp])
            .unwrap();
        group.merge_pending_commit(&committer.provider).unwrap();
        let welcome_bytes = welcome.to_bytes().unwrap();
        let MlsMessageBodyIn::Welcome(welcome) =
            MlsMessageIn::tls_deserialize_exact(&welcome_bytes)
                .unwrap()
                .extract()
        else {
            panic!("not a welcome");
        };
        let processor_group =
            StagedWelcome::new_from_welcome(&processor.provider, &join, welcome, None)
                .unwrap()
                .into_group(&processor.provider)
                .unwrap();
        let fixture = MlsFixture {
            committer,
            group,
            processor,
            processor_group,
            counter,
        };
        fixture.check(size);
        fixture
    }

    fn check(&self, size: usize) {
        assert_eq!(self.group.epoch(), self.processor_group.epoch());
        assert_eq!(self.group.members().count(), size);
        assert_eq!(self.processor_group.members().count(), size);
    }

    /// Adds a fresh member; returns its leaf and the time of the operation.
    fn add(&mut self) -> (u32, Duration) {
        let kp_bytes = mls_key_package(&mut self.counter);
        let before = leaves(&self.group);
        let p = &self.committer.provider;
        let start = Instant::now();
        let kp = parse_key_package(&kp_bytes, p);
        let (commit, welcome, _) = self
            .group
            .add_members(p, &self.committer.signer, &[kp])
            .unwrap();
        let commit = commit.to_bytes().unwrap();
        let welcome = welcome.to_bytes().unwrap();
        self.group.merge_pending_commit(p).unwrap();
        mls_process(&mut self.processor_group, &self.processor.provider, &commit);
        let elapsed = start.elapsed();
        black_box((commit, welcome));
        let leaf = leaves(&self.group)
            .difference(&before)
            .next()
            .copied()
            .unwrap();
        (leaf, elapsed)
    }

    fn remove(&mut self, leaf: u32) -> Duration {
        let p = &self.committer.provider;
        let start = Instant::now();
        let (commit, welcome, _) = self
            .group
            .remove_members(p, &self.committer.signer, &[LeafNodeIndex::new(leaf)])
            .unwrap();
        let commit = commit.to_bytes().unwrap();
        self.group.merge_pending_commit(p).unwrap();
        mls_process(&mut self.processor_group, &self.processor.provider, &commit);
        let elapsed = start.elapsed();
        black_box((commit, welcome));
        elapsed
    }

    fn self_update(&mut self) -> Duration {
        let p = &self.committer.provider;
        let start = Instant::now();
        let bundle = self
            .group
            .self_update(p, &self.committer.signer, LeafNodeParameters::default())
            .unwrap();
        let commit = bundle.commit().to_bytes().unwrap();
        self.group.merge_pending_commit(p).unwrap();
        mls_process(&mut self.processor_group, &self.processor.provider, &commit);
        let elapsed = start.elapsed();
        black_box((commit, bundle));
        elapsed
    }
}

// ---------------------------------------------------------------------------------------
// room benchmarks

/// Small samples for the big rooms: each iteration there costs milliseconds, and the untimed
/// half of "add" / "remove" costs as much again.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>, size: usize) {
    if size >= 64 {
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
    } else {
        group
            .sample_size(20)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
    }
}

fn sum(iters: u64, mut once: impl FnMut() -> Duration) -> Duration {
    (0..iters).map(|_| once()).sum()
}

fn room(c: &mut Criterion) {
    let mut fixtures: Vec<(usize, SottoFixture, MlsFixture)> = SIZES
        .iter()
        .map(|&n| {
            (
                n,
                SottoFixture::new(n, MlsSuite::Classic),
                MlsFixture::new(n),
            )
        })
        .collect();

    let mut group = c.benchmark_group("room/add");
    for (n, sotto, mls) in &mut fixtures {
        let n = *n;
        configure(&mut group, n);
        group.bench_function(BenchmarkId::new("sotto", n), |b| {
            b.iter_custom(|iters| {
                sum(iters, || {
                    let (leaf, elapsed) = sotto.add();
                    sotto.remove(leaf);
                    elapsed
                })
            })
        });
        group.bench_function(BenchmarkId::new("openmls", n), |b| {
            b.iter_custom(|iters| {
                sum(iters, || {
                    let (leaf, elapsed) = mls.add();
                    mls.remove(leaf);
                    elapsed
                })
            })
        });
        sotto.check(n);
        mls.check(n);
    }
    group.finish();

    let mut group = c.benchmark_group("room/remove");
    for (n, sotto, mls) in &mut fixtures {
        let n = *n;
        configure(&mut group, n);
        group.bench_function(BenchmarkId::new("sotto", n), |b| {
            b.iter_custom(|iters| {
                sum(iters, || {
                    let (leaf, _) = sotto.add();
                    sotto.remove(leaf)
                })
            })
        });
        group.bench_function(BenchmarkId::new("openmls", n), |b| {
            b.iter_custom(|iters| {
                sum(iters, || {
                    let (leaf, _) = mls.add();
                    mls.remove(leaf)
                })
            })
        });
        sotto.check(n);
        mls.check(n);
    }
    group.finish();

    let mut group = c.benchmark_group("room/self_update");
    for (n, sotto, mls) in &mut fixtures {
        let n = *n;
        configure(&mut group, n);
        group.bench_function(BenchmarkId::new("sotto", n), |b| {
            b.iter_custom(|iters| sum(iters, || sotto.self_update()))
        });
        group.bench_function(BenchmarkId::new("openmls", n), |b| {
            b.iter_custom(|iters| sum(iters, || mls.self_update()))
        });
        sotto.check(n);
        mls.check(n);
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------
// media: applying EpochKeys

const SUITE: CipherSuite = CipherSuite::AesCtr128HmacSha256_80;
/// Caller time between epochs: 16 epochs fit well within the 10 s grace period, so the
/// oldest epoch leaves by slot eviction.
const EPOCH_STEP: Duration = Duration::from_millis(100);

fn epoch_keys(rng: &SystemRandom, epoch: u64, members: usize) -> EpochKeys {
    let mut base = vec![0u8; SUITE.key_len()];
    rng.fill(&mut base).unwrap();
    let mut token = [0u8; 16];
    rng.fill(&mut token).unwrap();
    EpochKeys::assume_unique_for_key(
        epoch,
        EpochStatus::Current,
        SUITE,
        KidLayout::default(),
        0,
        (0..u32::try_from(members).unwrap())
            .map(|leaf| MemberId { leaf, tag: 0 })
            .collect(),
        0,
        ChannelToken(token),
        base,
    )
}

fn media(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let slots = KidLayout::default().epoch_slots();
    let mut group = c.benchmark_group("media/apply_epoch_keys");
    for n in SIZES {
        let t0 = Instant::now();
        let at = |epoch: u64| t0 + EPOCH_STEP * u32::try_from(epoch).unwrap();
        let mut session = MediaSession::new(MediaConfig::default());
        // Steady state: every slot holds an epoch, the oldest already evicted once.
        let mut next = 0u64;
        while next < 2 * slots {
            session.apply(epoch_keys(&rng, next, n), at(next)).unwrap();
            next += 1;
        }
        assert_eq!(
            session.ring().unwrap().epochs().len(),
            usize::try_from(slots).unwrap()
        );
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || {
                    let keys = epoch_keys(&rng, next, n);
                    let now = at(next);
                    next += 1;
                    (keys, now)
                },
                |(keys, now)| session.apply(keys, now).unwrap(),
                BatchSize::SmallInput,
            )
        });
        assert_eq!(
            session.ring().unwrap().epochs().len(),
            usize::try_from(slots).unwrap()
        );
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------
// sealed handshake messages

/// `message` sealed the way the call engine does (4 KiB buckets) on `keys`' channel.
#[cfg(feature = "opus")]
fn seal(keys: &EpochKeys, message: &[u8], wire: &mut Vec<u8>) {
    sealed::seal(
        keys.handshake_key().unwrap(),
        &keys.token(),
        message,
        4096,
        MAX_HANDSHAKE,
        wire,
    )
    .unwrap();
}

/// A self-update commit processed by one member, bare (`Room::process`) against sealed the
/// way the call engine carries it (`sealed::seal` under the epoch's handshake key by the
/// committer, `sealed::open` by the member, then `Room::process`); the commit is made and
/// confirmed untimed. Prints the bytes each adds. (The sealing is the call engine's: feature
/// `opus`.)
#[cfg(feature = "opus")]
fn sealed_process(c: &mut Criterion) {
    let mut group = c.benchmark_group("room/sealed_process");
    for n in [2usize, 16, 64] {
        configure(&mut group, n);
        let mut fixture = SottoFixture::new(n, MlsSuite::Classic);
        let mut wire = Vec::new();
        let mut scratch = Vec::new();
        // One commit of each size, for the byte report.
        {
            let keys = fixture.committer.receive_keys().unwrap();
            let commit = fixture.committer.self_update().unwrap();
            seal(&keys, &commit.message, &mut wire);
            eprintln!(
                "room/sealed_process/{n}: self-update commit {} B bare, {} B sealed (+{} B)",
                commit.message.len(),
                wire.len(),
                wire.len() - commit.message.len()
            );
            fixture.committer.confirm_pending().unwrap();
            fixture.processor.process(&commit.message).unwrap();
        }
        group.bench_function(BenchmarkId::new("bare", n), |b| {
            b.iter_custom(|iters| {
                sum(iters, || {
                    let commit = fixture.committer.self_update().unwrap();
                    fixture.committer.confirm_pending().unwrap();
                    let start = Instant::now();
                    let processed = fixture.processor.process(&commit.message).unwrap();
                    let elapsed = start.elapsed();
                    black_box(processed);
                    elapsed
                })
            })
        });
        group.bench_function(BenchmarkId::new("sealed", n), |b| {
            b.iter_custom(|iters| {
                sum(iters, || {
                    let keys = fixture.processor.receive_keys().unwrap();
                    let commit = fixture.committer.self_update().unwrap();
                    fixture.committer.confirm_pending().unwrap();
                    let start = Instant::now();
                    let key = keys.handshake_key().unwrap();
                    seal(&keys, &commit.message, &mut wire);
                    let opened = sealed::open(key, &keys.token(), &wire, &mut scratch).unwrap();
                    let processed = fixture.processor.process(opened).unwrap();
                    let elapsed = start.elapsed();
                    black_box(processed);
                    elapsed
                })
            })
        });
        // What sealing adds, alone: seal + open of a commit of this room's size.
        let keys = fixture.processor.receive_keys().unwrap();
        let commit = fixture.committer.self_update().unwrap();
        group.bench_function(BenchmarkId::new("seal_open_only", n), |b| {
            let key = keys.handshake_key().unwrap();
            b.iter(|| {
                seal(&keys, &commit.message, &mut wire);
                black_box(
                    sealed::open(key, &keys.token(), &wire, &mut scratch)
                        .unwrap()
                        .len(),
                )
            })
        });
        fixture.committer.confirm_pending().unwrap();
        fixture.processor.process(&commit.message).unwrap();
        fixture.check(n);
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------
// post-quantum rooms

/// A self-update commit, timed: made and confirmed by the committer (`commit`), or
/// processed by the other member (`process`); the other half untimed.
#[cfg(feature = "pq")]
fn timed_self_update(f: &mut SottoFixture, time_commit: bool) -> Duration {
    let start = Instant::now();
    let commit = f.committer.self_update().unwrap();
    let confirmed = f.committer.confirm_pending().unwrap();
    let committed = start.elapsed();
    let start = Instant::now();
    let processed = f.processor.process(&commit.message).unwrap();
    let process = start.elapsed();
    black_box((commit, confirmed, processed));
    if time_commit {
        committed
    } else {
        process
    }
}

/// A newcomer joining from its Welcome (`Room::join`, timed); its invite and removal
/// untimed, so the room keeps its size.
#[cfg(feature = "pq")]
fn timed_join(f: &mut SottoFixture) -> Duration {
    let suite = f.committer.mls_suite();
    let joiner = Identity::new(Provider::new().unwrap(), &pseudonym(&mut f.counter)).unwrap();
    let kp = joiner.key_package(suite).unwrap();
    let commit = f.committer.invite(&[&kp.bytes]).unwrap();
    f.committer.confirm_pending().unwrap();
    f.processor.process(&commit.message).unwrap();
    let welcome = commit.welcome.unwrap();
    let start = Instant::now();
    let (joined, keys) = Room::join(joiner, RoomConfig::default(), &welcome).unwrap();
    let elapsed = start.elapsed();
    let leaf = joined.own_leaf();
    black_box((joined, keys));
    f.remove(leaf);
    elapsed
}

/// A room of `size` members who all joined and whose members at odd leaves each made a
/// self-update that every member processed, so every parent node of the tree is set (the
/// state of a room whose members update periodically): a commit then encrypts to one node
/// per level. The fixture keeps the creator (leaf 0) and the member at leaf 1.
#[cfg(feature = "pq")]
fn healthy_fixture(size: usize, suite: MlsSuite) -> SottoFixture {
    let mut counter = 0;
    let config = RoomConfig {
        mls_suite: suite,
        ..RoomConfig::default()
    };
    let creator = Identity::new(Provider::new().unwrap(), &pseudonym(&mut counter)).unwrap();
    let (committer, _) = Room::create(creator, config).unwrap();
    let mut rooms = vec![committer];
    let joiners: Vec<_> = (1..size)
        .map(|_| Identity::new(Provider::new().unwrap(), &pseudonym(&mut counter)).unwrap())
        .collect();
    let kps: Vec<Vec<u8>> = joiners
        .iter()
        .map(|j| j.key_package(suite).unwrap().bytes)
        .collect();
    let refs: Vec<&[u8]> = kps.iter().map(Vec::as_slice).collect();
    let commit = rooms[0].invite(&refs).unwrap();
    rooms[0].confirm_pending().unwrap();
    let welcome = commit.welcome.unwrap();
    for j in joiners {
        rooms.push(Room::join(j, RoomConfig::default(), &welcome).unwrap().0);
    }
    let odd: Vec<usize> = (0..rooms.len())
        .filter(|&i| rooms[i].own_leaf() % 2 == 1)
        .collect();
    for i in odd {
        let commit = rooms[i].self_update().unwrap();
        rooms[i].confirm_pending().unwrap();
        for (k, other) in rooms.iter_mut().enumerate() {
            if k != i {
                other.process(&commit.message).unwrap();
            }
        }
    }
    let processor = rooms.iter().position(|r| r.own_leaf() == 1).unwrap();
    let processor = rooms.swap_remove(processor);
    let committer = rooms.swap_remove(0);
    let fixture = SottoFixture {
        committer,
        processor,
        counter,
    };
    fixture.check(size);
    fixture
}

/// `room/pq/healthy_{commit,process}/{classic,pq}/N` (N = 16, 64): the same self-update
/// in a healthy tree ([`healthy_fixture`]), with the commit's size printed.
#[cfg(feature = "pq")]
fn post_quantum_healthy(c: &mut Criterion) {
    let suites = [("classic", MlsSuite::Classic), ("pq", MlsSuite::HybridPq)];
    for n in [16, 64] {
        let mut fixtures: Vec<(&str, SottoFixture)> = suites
            .iter()
            .map(|&(name, suite)| (name, healthy_fixture(n, suite)))
            .collect();
        for (name, f) in &mut fixtures {
            let update = f.committer.self_update().unwrap();
            f.committer.confirm_pending().unwrap();
            f.processor.process(&update.message).unwrap();
            println!(
                "room/pq/healthy_sizes/{name}/{n}: self_update commit {} B",
                update.message.len()
            );
        }
        for (op, time_commit) in [("healthy_commit", true), ("healthy_process", false)] {
            let mut group = c.benchmark_group(format!("room/pq/{op}"));
            configure(&mut group, n);
            for (name, f) in &mut fixtures {
                group.bench_function(BenchmarkId::new(*name, n), |b| {
                    b.iter_custom(|iters| sum(iters, || timed_self_update(f, time_commit)))
                });
                f.check(n);
            }
            group.finish();
        }
    }
}

/// `room/pq/{commit,process,join}/{classic,pq}/N`: the same operations in a classic and a
/// post-quantum room of N members, built the same way, in one run; the sizes of a
/// KeyPackage, a self-update commit, an add commit and its Welcome printed per N.
#[cfg(feature = "pq")]
fn post_quantum(c: &mut Criterion) {
    let suites = [("classic", MlsSuite::Classic), ("pq", MlsSuite::HybridPq)];
    for &n in &SIZES {
        let mut fixtures: Vec<(&str, SottoFixture)> = suites
            .iter()
            .map(|&(name, suite)| (name, SottoFixture::new(n, suite)))
            .collect();
        for (name, f) in &mut fixtures {
            let suite = f.committer.mls_suite();
            let kp = sotto_key_package(&mut f.counter, suite);
            let update = f.committer.self_update().unwrap();
            f.committer.confirm_pending().unwrap();
            f.processor.process(&update.message).unwrap();
            let add = f.committer.invite(&[&kp]).unwrap();
            let confirmed = f.committer.confirm_pending().unwrap();
            f.processor.process(&add.message).unwrap();
            let leaf = confirmed
                .iter()
                .find_map(|e| match e {
                    RoomEvent::MemberAdded { leaf, .. } => Some(*leaf),
                    _ => None,
                })
                .unwrap();
            f.remove(leaf);
            f.check(n);
            println!(
                "room/pq/sizes/{name}/{n}: key_package {} B, self_update commit {} B, \
                 add commit {} B, welcome {} B",
                kp.len(),
                update.message.len(),
                add.message.len(),
                add.welcome.as_ref().map_or(0, Vec::len),
            );
        }
        for (op, which) in [("commit", 0), ("process", 1), ("join", 2)] {
            let mut group = c.benchmark_group(format!("room/pq/{op}"));
            configure(&mut group, n);
            for (name, f) in &mut fixtures {
                group.bench_function(BenchmarkId::new(*name, n), |b| {
                    b.iter_custom(|iters| {
                        sum(iters, || match which {
                            0 => timed_self_update(f, true),
                            1 => timed_self_update(f, false),
                            _ => timed_join(f),
                        })
                    })
                });
                f.check(n);
            }
            group.finish();
        }
    }
}

#[cfg(all(feature = "opus", feature = "pq"))]
criterion_group!(
    benches,
    room,
    sealed_process,
    media,
    post_quantum,
    post_quantum_healthy
);
#[cfg(all(feature = "opus", not(feature = "pq")))]
criterion_group!(benches, room, sealed_process, media);
#[cfg(all(not(feature = "opus"), feature = "pq"))]
criterion_group!(benches, room, media, post_quantum, post_quantum_healthy);
#[cfg(not(any(feature = "opus", feature = "pq")))]
criterion_group!(benches, room, media);
criterion_main!(benches);
