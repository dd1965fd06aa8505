//! Stage rooms: a few speakers, thousands of listeners, end-to-end encrypted.
//!
//! A [`Room`](crate::room::Room) is an MLS group: every member holds the whole ratchet tree
//! and processes every commit. At 10,000 members its Welcome is 1.76 MB and each commit
//! 673 KB (README, "Stage rooms"), far beyond what a listener can download per join or per
//! second. A stage room therefore keys its audience with a **logical key hierarchy** (LKH)
//! run by one designated committer, the [`StageHost`]:
//!
//! - The audience is a binary tree of `capacity` leaves (a power of two). Each listener
//!   holds the 32-byte keys of its leaf and of every node above it (`log2(capacity) + 1`
//!   keys); the root key is the stage's secret for the epoch, from which the audio base
//!   key, the channel token and the handshake key are derived.
//! - Joins and departures are batched: the host [`commit`](StageHost::commit)s them together
//!   (e.g. once a second), making one new epoch. Every key is **ratcheted** one-way into
//!   the new epoch, so a newcomer, who gets its path's keys of the new epoch in its
//!   [`StageWelcome`] (≈ 600 bytes), cannot compute any older key. The path of every
//!   departed listener is **refreshed** with fresh random keys, each sent wrapped under the
//!   new keys of its two children: a departed listener holds none of them.
//! - The [`rekey`](StageCommit::rekey) message carries only the wrapped keys of refreshed
//!   nodes (36 bytes each, about `2 log2(capacity)` per departure), is signed by the host
//!   (Ed25519) and sealed under the previous epoch's handshake key: the relay sees an
//!   opaque blob, not who left or who speaks.
//! - Speakers are audience members with a speaker index; they seal frames under sender
//!   keys derived from the epoch's base key exactly as in a room, and listeners open them
//!   with the same [`MediaSession`](crate::media::MediaSession). The host is speaker 0 and
//!   the only one who may commit; it [`promote`](StageHost::promote)s and
//!   [`demote`](StageHost::demote)s.
//!
//! What this trades away against a room (README, "Stage rooms", threat model): the host
//! holds every listener's keys (it is trusted for confidentiality, like an MLS committer
//! that could always add an eavesdropper, but it can also read without adding anyone; and
//! as it ratchets node keys lazily, a copy of its memory holds some older epochs' keys); a
//! listener's leaf key is only ratcheted, never replaced, so a copy of a listener's state
//! follows the stage until that listener leaves (no post-compromise security for
//! listeners); and, as in a room, sender keys are symmetric, so any holder of an epoch's
//! keys — here any listener — can forge a frame under a speaker's KID for receivers of
//! that epoch.
//!
//! Sans-IO: the host and members return bytes to send and take bytes received; time is a
//! parameter of the media session only.

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _, VLBytes};
use openmls::prelude::{KeyPackage, KeyPackageBundle, KeyPackageRef};
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::storage::StorageProvider as _;
use openmls_traits::types::{Ciphersuite, HpkeCiphertext};
use openmls_traits::OpenMlsProvider;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use ring::{aead, hkdf};
use zeroize::Zeroizing;

use crate::keys::MemberId;
use crate::media::{
    ChannelToken, EpochKeys, EpochStatus, HandshakeKey, CHANNEL_TOKEN_LEN, HANDSHAKE_KEY_LEN,
};
use crate::room::{Identity, MlsSuite, RoomError, RoomParams};

/// Length of every node key of the audience tree.
pub const NODE_KEY_LEN: usize = 32;
/// The largest audience a stage may have (leaves of its tree).
pub const MAX_CAPACITY: u32 = 1 << 16;
/// The most speakers a stage may have at once (the host included).
pub const MAX_SPEAKERS: usize = 16;
/// Version byte of every stage message.
const VERSION: u8 = 1;
const SIGNATURE_LEN: usize = 64;
const NONCE_LEN: usize = 12;
/// The speaker index of the host.
pub const HOST_SPEAKER: u32 = 0;
/// Slot value naming the host in a speaker list (the host has no leaf).
const HOST_SLOT: u32 = u32::MAX;

const LABEL_RATCHET: &[u8] = b"sotto stage ratchet";
const LABEL_WRAP: &[u8] = b"sotto stage wrap";
const LABEL_BASE_KEY: &[u8] = b"sotto stage base key";
const LABEL_TOKEN: &[u8] = b"sotto stage token";
const LABEL_HANDSHAKE: &[u8] = b"sotto stage handshake";
const LABEL_CONFIRM: &[u8] = b"sotto stage confirm";
const CONFIRM_LEN: usize = 16;
const CONTEXT_REKEY: &[u8] = b"sotto stage rekey v1";
const CONTEXT_WELCOME: &[u8] = b"sotto stage welcome v1";
const HPKE_INFO: &[u8] = b"sotto stage welcome";

/// Why a stage operation or message was refused. Carries no strings; the host or member
/// stays usable after any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// The capacity is not a power of two in `2..=MAX_CAPACITY`.
    #[error("stage capacity {0} is not a power of two in 2..=65536")]
    InvalidCapacity(u32),
    /// The media parameters are not supported by this build.
    #[error("stage parameters refused: {0}")]
    Params(crate::room::ParamsError),
    /// Every leaf of the audience tree is taken.
    #[error("the stage is full")]
    Full,
    /// The KeyPackage was refused (see the room error), or its HPKE init key is unusable.
    #[error("key package refused: {0}")]
    KeyPackage(RoomError),
    /// No listener (or pending newcomer) at this slot.
    #[error("no listener at slot {0}")]
    NoSuchSlot(u32),
    /// The slot already has a change pending in this commit.
    #[error("slot {0} already has a change pending")]
    AlreadyPending(u32),
    /// This KeyPackage was added before (KeyPackages are single-use).
    #[error("key package already used")]
    DuplicateKeyPackage,
    /// Promoting would exceed [`MAX_SPEAKERS`], or every speaker index the KID layout has
    /// was used (indices are never reused while the stage lives).
    #[error("the stage already has the most speakers it may have")]
    TooManySpeakers,
    /// Nothing to commit.
    #[error("no change is pending")]
    NothingPending,
    /// The bytes are not a stage message of this version (truncated, oversized, or with
    /// values out of range).
    #[error("malformed stage message")]
    Malformed,
    /// The message is not for this member's epoch: `expected` is the epoch this member can
    /// read. `got` is read before authentication (a relay can make it up): treat it as a
    /// hint only. A member that missed a rekey cannot catch up (rekeys carry changes
    /// only): it needs a new Welcome.
    #[error("stage message for epoch {got}, this member is at {expected}")]
    WrongEpoch {
        /// The epoch this member can process a rekey from.
        expected: u64,
        /// The epoch the message names.
        got: u64,
    },
    /// Decryption failed (not sealed for this member or this epoch, or altered).
    #[error("stage message does not open")]
    Unopenable,
    /// The host's signature does not verify: forged or altered.
    #[error("stage message not signed by the host")]
    BadSignature,
    /// The Welcome names a KeyPackage this identity does not hold (never made, or already
    /// used).
    #[error("no key package for this welcome")]
    UnknownKeyPackage,
    /// This member's path was refreshed without it, or the new root does not match the
    /// host's confirmation: the host removed it.
    #[error("removed from the stage")]
    Removed,
    /// The storage failed.
    #[error("storage error")]
    Storage,
    /// Cryptography failed where it should not (randomness, key generation).
    #[error("internal cryptographic failure")]
    Internal,
}

/// A listener's role on the stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opens the speakers' frames; seals nothing.
    Listener,
    /// Seals frames under its speaker index.
    Speaker(u32),
}

/// Timing and media parameters of a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageConfig {
    /// Leaves of the audience tree: the most listeners at once. A power of two up to
    /// [`MAX_CAPACITY`]. Each listener holds `log2(capacity) + 1` keys.
    pub capacity: u32,
    /// SFrame suite, KID layout and stream bits of the audio (as in a room; carried in each
    /// Welcome).
    pub params: RoomParams,
    /// The MLS suite of the KeyPackages listeners join with (their HPKE init key).
    pub mls_suite: MlsSuite,
}

impl Default for StageConfig {
    fn default() -> Self {
        StageConfig {
            capacity: 1 << 14,
            params: RoomParams::default(),
            mls_suite: MlsSuite::Classic,
        }
    }
}

impl StageConfig {
    fn depth(&self) -> usize {
        self.capacity.trailing_zeros() as usize
    }
}

/// A speaker: its index (the KID's sender field), its slot ([`None`] for the host) and the
/// data plane's tag for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Speaker {
    /// Speaker index: the sender in the KID.
    pub index: u32,
    /// Its leaf in the audience tree; `None` for the host.
    pub slot: Option<u32>,
    /// The tag of its [`MemberId`].
    pub tag: u64,
}

impl Speaker {
    fn member_id(&self) -> MemberId {
        MemberId {
            leaf: self.index,
            tag: self.tag,
        }
    }
}

/// One node key of the host's tree, with the epoch it is valid in (keys are ratcheted
/// forward lazily, when needed).
struct NodeKey {
    key: Zeroizing<[u8; NODE_KEY_LEN]>,
    epoch: u64,
}

enum Slot {
    Free,
    /// A newcomer of the pending commit: its validated KeyPackage.
    Joining(Box<KeyPackage>),
    Member {
        tag: u64,
    },
}

/// One newcomer's join material: send `bytes` to the holder of the KeyPackage whose hash
/// reference is `reference` (the relay's Welcome mailbox for it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageWelcome {
    /// The newcomer's slot.
    pub slot: u32,
    /// Hash reference of the newcomer's KeyPackage.
    pub reference: Vec<u8>,
    /// The sealed Welcome.
    pub bytes: Vec<u8>,
}

/// What one [`StageHost::commit`] produced.
#[derive(Debug)]
pub struct StageCommit {
    /// The new epoch.
    pub epoch: u64,
    /// The rekey for every member of the previous epoch (broadcast on its channel).
    pub rekey: Vec<u8>,
    /// One Welcome per newcomer.
    pub welcomes: Vec<StageWelcome>,
    /// The host's own keys of the new epoch (`Current`: it seals as speaker 0).
    pub keys: EpochKeys,
}

/// The designated committer of a stage: holds the audience tree, admits and removes
/// listeners, assigns speakers, and commits the batched changes (see the
/// [module docs](self)).
pub struct StageHost {
    config: StageConfig,
    signer: Ed25519KeyPair,
    host_tag: u64,
    rng: SystemRandom,
    epoch: u64,
    /// Heap-ordered: root at 1, the children of `n` at `2n` and `2n + 1`, leaf `s` at
    /// `capacity + s`. Index 0 unused.
    nodes: Vec<NodeKey>,
    /// Listeners (members and newcomers) under each node.
    occupied: Vec<u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    joining: Vec<u32>,
    departing: Vec<u32>,
    /// Speaker index → slot, for index 1.. (the host is index 0).
    speakers: Vec<Option<u32>>,
    roles_changed: bool,
    /// Speaker indices demoted or removed since the last commit.
    retired: Vec<u32>,
    /// References of every KeyPackage ever added (each is single-use).
    seen: std::collections::BTreeSet<Vec<u8>>,
}

fn random_key(rng: &SystemRandom) -> Result<Zeroizing<[u8; NODE_KEY_LEN]>, StageError> {
    let mut key = Zeroizing::new([0u8; NODE_KEY_LEN]);
    rng.fill(key.as_mut()).map_err(|_| StageError::Internal)?;
    Ok(key)
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(key: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), StageError> {
    hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, key)
        .expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| StageError::Internal)
}

/// The node key of the next epoch, for a node not refreshed.
fn ratchet(key: &[u8; NODE_KEY_LEN]) -> Result<Zeroizing<[u8; NODE_KEY_LEN]>, StageError> {
    let mut next = Zeroizing::new([0u8; NODE_KEY_LEN]);
    expand(key, &[LABEL_RATCHET], next.as_mut())?;
    Ok(next)
}

/// Wraps (or unwraps) `parent`'s new key under its child's key of `epoch`. Each child key
/// value wraps one parent key only (it is fresh or ratcheted every epoch), so the pad is
/// used once; integrity comes from the host's signature over the whole rekey.
fn wrap(
    child_key: &[u8; NODE_KEY_LEN],
    parent: u32,
    epoch: u64,
    value: &[u8; NODE_KEY_LEN],
) -> Result<[u8; NODE_KEY_LEN], StageError> {
    let mut pad = Zeroizing::new([0u8; NODE_KEY_LEN]);
    expand(
        child_key,
        &[LABEL_WRAP, &epoch.to_be_bytes(), &parent.to_be_bytes()],
        pad.as_mut(),
    )?;
    let mut out = [0u8; NODE_KEY_LEN];
    for ((o, v), p) in out.iter_mut().zip(value).zip(pad.iter()) {
        *o = v ^ p;
    }
    Ok(out)
}

/// Keys of an epoch derived from its root key.
struct EpochSecrets {
    epoch: u64,
    base_key: Zeroizing<Vec<u8>>,
    token: ChannelToken,
    handshake: Zeroizing<[u8; HANDSHAKE_KEY_LEN]>,
    /// Key confirmation: members check the root they computed against the host's.
    confirm: [u8; CONFIRM_LEN],
}

fn epoch_secrets(
    root: &[u8; NODE_KEY_LEN],
    epoch: u64,
    params: &RoomParams,
) -> Result<EpochSecrets, StageError> {
    let e = epoch.to_be_bytes();
    let mut base_key = Zeroizing::new(vec![0u8; params.suite.key_len()]);
    expand(root, &[LABEL_BASE_KEY, &e], base_key.as_mut_slice())?;
    let mut token = [0u8; CHANNEL_TOKEN_LEN];
    expand(root, &[LABEL_TOKEN, &e], &mut token)?;
    let mut handshake = Zeroizing::new([0u8; HANDSHAKE_KEY_LEN]);
    expand(root, &[LABEL_HANDSHAKE, &e], handshake.as_mut())?;
    let mut confirm = [0u8; CONFIRM_LEN];
    expand(root, &[LABEL_CONFIRM, &e], &mut confirm)?;
    Ok(EpochSecrets {
        epoch,
        base_key,
        token: ChannelToken(token),
        handshake,
        confirm,
    })
}

fn epoch_keys(
    secrets: EpochSecrets,
    status: EpochStatus,
    params: &RoomParams,
    speakers: &[Speaker],
    own_index: u32,
    retired: &[u32],
    removal: bool,
) -> EpochKeys {
    let keys = EpochKeys::assume_unique_for_key(
        secrets.epoch,
        status,
        params.suite,
        params.layout,
        params.stream_bits,
        speakers.iter().map(Speaker::member_id).collect(),
        own_index,
        secrets.token,
        secrets.base_key.to_vec(),
    )
    .with_handshake_key(HandshakeKey::from_exported(*secrets.handshake))
    .with_departed(retired.to_vec());
    if removal {
        keys.with_removal()
    } else {
        keys
    }
}

/// The tag of a speaker's [`MemberId`]: from its signature key, as in a room.
fn tag_of(signature_key: &[u8]) -> u64 {
    crate::room::member_id(0, signature_key).tag
}

/// Seals `body` under an epoch's handshake key: `version ‖ epoch ‖ nonce ‖ ciphertext`.
fn seal_rekey(
    rng: &SystemRandom,
    handshake: &[u8; HANDSHAKE_KEY_LEN],
    epoch: u64,
    body: &[u8],
) -> Result<Vec<u8>, StageError> {
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_128_GCM, handshake).map_err(|_| StageError::Internal)?,
    );
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| StageError::Internal)?;
    let mut out = Vec::with_capacity(1 + 8 + NONCE_LEN + body.len() + 16);
    out.push(VERSION);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&nonce);
    let mut sealed = body.to_vec();
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(rekey_aad(epoch)),
        &mut sealed,
    )
    .map_err(|_| StageError::Internal)?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn rekey_aad(epoch: u64) -> Vec<u8> {
    let mut aad = CONTEXT_REKEY.to_vec();
    aad.extend_from_slice(&epoch.to_be_bytes());
    aad
}

/// Whether a tree of `capacity` leaves is supported: a power of two in 2..=MAX_CAPACITY.
fn valid_capacity(capacity: u32) -> bool {
    capacity.is_power_of_two() && (2..=MAX_CAPACITY).contains(&capacity)
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StageError> {
        if self.0.len() < n {
            return Err(StageError::Malformed);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, StageError> {
        self.take(1)?.first().copied().ok_or(StageError::Malformed)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StageError> {
        self.take(N)?.try_into().map_err(|_| StageError::Malformed)
    }
    fn u16(&mut self) -> Result<u16, StageError> {
        self.array().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Result<u32, StageError> {
        self.array().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Result<u64, StageError> {
        self.array().map(u64::from_be_bytes)
    }
    /// Refuses trailing bytes.
    fn end(self) -> Result<(), StageError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(StageError::Malformed)
        }
    }
    fn rest(self) -> &'a [u8] {
        self.0
    }
}

fn write_speakers(out: &mut Vec<u8>, speakers: &[Speaker]) {
    // At most MAX_SPEAKERS, so the count fits a byte.
    out.push(u8::try_from(speakers.len()).unwrap_or(u8::MAX));
    for s in speakers {
        out.extend_from_slice(&s.index.to_be_bytes());
        out.extend_from_slice(&s.slot.unwrap_or(HOST_SLOT).to_be_bytes());
        out.extend_from_slice(&s.tag.to_be_bytes());
    }
}

fn read_speakers(r: &mut Reader<'_>, capacity: u32) -> Result<Vec<Speaker>, StageError> {
    let n = usize::from(r.u8()?);
    if n == 0 || n > MAX_SPEAKERS {
        return Err(StageError::Malformed);
    }
    let mut speakers: Vec<Speaker> = Vec::with_capacity(n);
    for _ in 0..n {
        let index = r.u32()?;
        let slot = match r.u32()? {
            HOST_SLOT => None,
            s if s < capacity => Some(s),
            _ => return Err(StageError::Malformed),
        };
        let tag = r.u64()?;
        // The host first, then indices strictly increasing: no speaker named twice.
        let valid = match speakers.last() {
            None => slot.is_none() && index == HOST_SPEAKER,
            Some(last) => slot.is_some() && index > last.index && index < 1 << 16,
        };
        if !valid {
            return Err(StageError::Malformed);
        }
        speakers.push(Speaker { index, slot, tag });
    }
    Ok(speakers)
}

/// Reads the body of a rekey whose signature has been checked.
struct Rekey {
    epoch: u64,
    confirm: [u8; CONFIRM_LEN],
    speakers: Vec<Speaker>,
    /// Speaker indices demoted or removed by this commit.
    retired: Vec<u32>,
    /// (child node, wrapped parent key), strictly increasing by child.
    entries: Vec<(u32, [u8; NODE_KEY_LEN])>,
    removal: bool,
}

fn parse_rekey_body(body: &[u8], capacity: u32) -> Result<Rekey, StageError> {
    let mut r = Reader(body);
    if r.u8()? != VERSION {
        return Err(StageError::Malformed);
    }
    let epoch = r.u64()?;
    if r.u32()? != capacity {
        return Err(StageError::Malformed);
    }
    let removal = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(StageError::Malformed),
    };
    let confirm: [u8; CONFIRM_LEN] = r.array()?;
    let speakers = read_speakers(&mut r, capacity)?;
    let n_retired = usize::from(r.u8()?);
    let mut retired: Vec<u32> = Vec::with_capacity(n_retired);
    for _ in 0..n_retired {
        let index = r.u32()?;
        // Never the host, never a current speaker, strictly increasing.
        if index == HOST_SPEAKER
            || retired.last().is_some_and(|l| *l >= index)
            || speakers.iter().any(|s| s.index == index)
        {
            return Err(StageError::Malformed);
        }
        retired.push(index);
    }
    let n = usize::try_from(r.u32()?).map_err(|_| StageError::Malformed)?;
    // Each entry is 36 bytes: a count beyond what the bytes hold is refused before any
    // allocation.
    if n > r.0.len() / (4 + NODE_KEY_LEN) {
        return Err(StageError::Malformed);
    }
    let mut entries: Vec<(u32, [u8; NODE_KEY_LEN])> = Vec::with_capacity(n);
    for _ in 0..n {
        let child = r.u32()?;
        let key = r.array()?;
        if child < 2
            || child >= capacity.saturating_mul(2)
            || entries.last().is_some_and(|(c, _)| *c >= child)
        {
            return Err(StageError::Malformed);
        }
        entries.push((child, key));
    }
    r.end()?;
    Ok(Rekey {
        epoch,
        confirm,
        speakers,
        retired,
        entries,
        removal,
    })
}

/// The body of a Welcome whose signature has been checked.
struct WelcomeBody {
    params: RoomParams,
    epoch: u64,
    capacity: u32,
    slot: u32,
    speakers: Vec<Speaker>,
    path: Vec<Zeroizing<[u8; NODE_KEY_LEN]>>,
}

fn parse_welcome_body(body: &[u8]) -> Result<WelcomeBody, StageError> {
    let mut r = Reader(body);
    if r.u8()? != VERSION {
        return Err(StageError::Malformed);
    }
    let params = RoomParams::decode(r.take(6)?).map_err(|_| StageError::Malformed)?;
    let epoch = r.u64()?;
    let capacity = r.u32()?;
    if !valid_capacity(capacity) {
        return Err(StageError::Malformed);
    }
    let slot = r.u32()?;
    if slot >= capacity {
        return Err(StageError::Malformed);
    }
    let speakers = read_speakers(&mut r, capacity)?;
    let depth = capacity.trailing_zeros() as usize;
    let mut path = Vec::with_capacity(depth + 1);
    for _ in 0..=depth {
        path.push(Zeroizing::new(r.array()?));
    }
    r.end()?;
    Ok(WelcomeBody {
        params,
        epoch,
        capacity,
        slot,
        speakers,
        path,
    })
}

/// The parsers of signed stage bodies, for the fuzz targets (signatures and encryption
/// keep untrusted bytes from reaching them otherwise). Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use super::{parse_rekey_body, parse_welcome_body, StageError};

    /// Parses a rekey body for a tree of `capacity` leaves; returns its entry count.
    pub fn rekey_body(body: &[u8], capacity: u32) -> Result<usize, StageError> {
        parse_rekey_body(body, capacity).map(|r| r.entries.len())
    }

    /// Parses a Welcome body; returns its slot and path length.
    pub fn welcome_body(body: &[u8]) -> Result<(u32, usize), StageError> {
        parse_welcome_body(body).map(|w| (w.slot, w.path.len()))
    }
}

/// What the host signs: `context ‖ len(prefix) u16 ‖ prefix ‖ body` (zeroized: a Welcome's
/// body holds path keys).
fn signed_message(
    context: &[u8],
    prefix: &[u8],
    body: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StageError> {
    let mut message = Zeroizing::new(Vec::with_capacity(
        context.len() + 2 + prefix.len() + body.len(),
    ));
    message.extend_from_slice(context);
    message.extend_from_slice(
        &u16::try_from(prefix.len())
            .map_err(|_| StageError::Malformed)?
            .to_be_bytes(),
    );
    message.extend_from_slice(prefix);
    message.extend_from_slice(body);
    Ok(message)
}

/// Splits `signed` into (body, signature) and verifies the host's signature.
fn verify<'a>(
    host_key: &[u8],
    context: &[u8],
    prefix: &[u8],
    signed: &'a [u8],
) -> Result<&'a [u8], StageError> {
    let at = signed
        .len()
        .checked_sub(SIGNATURE_LEN)
        .ok_or(StageError::Malformed)?;
    let (body, sig) = signed.split_at(at);
    let message = signed_message(context, prefix, body)?;
    signature::UnparsedPublicKey::new(&signature::ED25519, host_key)
        .verify(&message, sig)
        .map_err(|_| StageError::BadSignature)?;
    Ok(body)
}

impl StageHost {
    /// A new stage at epoch 0 with no listeners; the host (speaker 0) signs with a fresh
    /// Ed25519 key, whose public half listeners must learn from the app
    /// ([`signature_key`](Self::signature_key)), as they learn who hosts the stage. Returns
    /// the host and its keys of epoch 0.
    pub fn new(config: StageConfig) -> Result<(StageHost, EpochKeys), StageError> {
        if !valid_capacity(config.capacity) {
            return Err(StageError::InvalidCapacity(config.capacity));
        }
        config.params.check().map_err(StageError::Params)?;
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| StageError::Internal)?;
        let signer =
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| StageError::Internal)?;
        let host_tag = tag_of(signer.public_key().as_ref());
        let size = config.capacity as usize * 2;
        let mut nodes = Vec::with_capacity(size);
        for _ in 0..size {
            nodes.push(NodeKey {
                key: random_key(&rng)?,
                epoch: 0,
            });
        }
        let host = StageHost {
            config,
            signer,
            host_tag,
            rng,
            epoch: 0,
            nodes,
            occupied: vec![0; size],
            slots: (0..config.capacity).map(|_| Slot::Free).collect(),
            free: (0..config.capacity).rev().collect(),
            joining: Vec::new(),
            departing: Vec::new(),
            speakers: Vec::new(),
            roles_changed: false,
            retired: Vec::new(),
            seen: std::collections::BTreeSet::new(),
        };
        let keys = host.own_keys(&[], false)?;
        Ok((host, keys))
    }

    /// The host's Ed25519 public key: listeners verify every Welcome and rekey with it.
    pub fn signature_key(&self) -> &[u8] {
        self.signer.public_key().as_ref()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The configuration.
    pub fn config(&self) -> &StageConfig {
        &self.config
    }

    /// Listeners in the stage (speakers other than the host included), newcomers of the
    /// pending commit included.
    pub fn listeners(&self) -> u32 {
        self.occupied.get(1).copied().unwrap_or(0)
    }

    /// The speakers of the current (or pending) speaker list, the host first.
    pub fn speakers(&self) -> Vec<Speaker> {
        let mut list = vec![Speaker {
            index: HOST_SPEAKER,
            slot: None,
            tag: self.host_tag,
        }];
        for (i, slot) in self.speakers.iter().enumerate() {
            if let (Some(slot), Ok(i)) = (slot, u32::try_from(i + 1)) {
                if let Some(Slot::Member { tag }) = self.slots.get(*slot as usize) {
                    list.push(Speaker {
                        index: i,
                        slot: Some(*slot),
                        tag: *tag,
                    });
                }
            }
        }
        list
    }

    /// Admits the holder of `key_package` (an MLS KeyPackage message of the stage's MLS
    /// suite, validated: signature, lifetime, suite, and an init key HPKE can seal to) at
    /// the next commit; returns its slot.
    pub fn add(
        &mut self,
        crypto: &impl OpenMlsCrypto,
        key_package: &[u8],
    ) -> Result<u32, StageError> {
        let suite = self.config.mls_suite.ciphersuite();
        let kp = crate::room::parse_key_package(key_package, suite, crypto)
            .map_err(StageError::KeyPackage)?;
        let reference = kp
            .hash_ref(crypto)
            .map_err(|_| StageError::Internal)?
            .as_slice()
            .to_vec();
        if self.seen.contains(&reference) {
            return Err(StageError::DuplicateKeyPackage);
        }
        // The signature does not vouch for the init key: one HPKE cannot seal to (a bad
        // length, a low-order point) would otherwise fail the commit after it changed the
        // tree. Refused here, before anything changes.
        crypto
            .hpke_seal(
                suite.hpke_config(),
                kp.hpke_init_key().as_slice(),
                HPKE_INFO,
                &reference,
                &[],
            )
            .map_err(|_| StageError::KeyPackage(RoomError::InvalidKeyPackage))?;
        if self.free.is_empty() {
            return Err(StageError::Full);
        }
        let slot = self.free.pop().ok_or(StageError::Full)?;
        self.seen.insert(reference);
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = Slot::Joining(Box::new(kp));
        }
        self.count(slot, true);
        self.joining.push(slot);
        Ok(slot)
    }

    /// Removes the listener (or speaker) at `slot` at the next commit, which refreshes its
    /// path. A newcomer not yet committed is simply dropped.
    pub fn remove(&mut self, slot: u32) -> Result<(), StageError> {
        match self.slots.get(slot as usize) {
            Some(Slot::Member { .. }) if !self.departing.contains(&slot) => {
                self.departing.push(slot);
                if self.speakers.contains(&Some(slot)) {
                    self.demote(slot)?;
                }
                Ok(())
            }
            Some(Slot::Member { .. }) => Err(StageError::AlreadyPending(slot)),
            Some(Slot::Joining(_)) => {
                self.joining.retain(|s| *s != slot);
                self.release(slot);
                Ok(())
            }
            _ => Err(StageError::NoSuchSlot(slot)),
        }
    }

    /// Makes the listener at `slot` a speaker from the next commit; returns its speaker
    /// index. A speaker index is never reused while the stage lives, so a demoted
    /// speaker's old frames never open as another speaker's.
    pub fn promote(&mut self, slot: u32) -> Result<u32, StageError> {
        if !matches!(self.slots.get(slot as usize), Some(Slot::Member { .. }))
            || self.departing.contains(&slot)
        {
            return Err(StageError::NoSuchSlot(slot));
        }
        if let Some(at) = self.speakers.iter().position(|s| *s == Some(slot)) {
            return u32::try_from(at + 1).map_err(|_| StageError::Internal);
        }
        if self.speakers.iter().filter(|s| s.is_some()).count() + 1 >= MAX_SPEAKERS {
            return Err(StageError::TooManySpeakers);
        }
        let index = u32::try_from(self.speakers.len() + 1).map_err(|_| StageError::Internal)?;
        if index >= 1 << self.config.params.layout.sender_bits().min(16) {
            return Err(StageError::TooManySpeakers);
        }
        self.speakers.push(Some(slot));
        self.roles_changed = true;
        Ok(index)
    }

    /// Makes the speaker at `slot` a listener again from the next commit.
    pub fn demote(&mut self, slot: u32) -> Result<(), StageError> {
        let at = self
            .speakers
            .iter()
            .position(|s| *s == Some(slot))
            .ok_or(StageError::NoSuchSlot(slot))?;
        if let Some(s) = self.speakers.get_mut(at) {
            *s = None;
        }
        self.retired
            .push(u32::try_from(at + 1).map_err(|_| StageError::Internal)?);
        self.roles_changed = true;
        Ok(())
    }

    /// Commits every pending join, departure and role change as one new epoch: ratchets
    /// every key, refreshes every departed listener's path, and returns the signed, sealed
    /// rekey for the previous epoch's members, one Welcome per newcomer, and the host's
    /// keys of the new epoch.
    pub fn commit(&mut self, crypto: &impl OpenMlsCrypto) -> Result<StageCommit, StageError> {
        if self.joining.is_empty() && self.departing.is_empty() && !self.roles_changed {
            return Err(StageError::NothingPending);
        }
        let old_handshake = self.own_secrets()?.handshake;
        let epoch = self.epoch.checked_add(1).ok_or(StageError::Internal)?;
        let capacity = self.config.capacity;
        // Departures: free the leaf, mark the path for refresh.
        let mut refresh: Vec<u32> = Vec::new();
        let departing = std::mem::take(&mut self.departing);
        for &slot in &departing {
            if let Some(s) = self.slots.get_mut(slot as usize) {
                *s = Slot::Free;
            }
            self.count(slot, false);
            self.free.push(slot);
            let mut n = (capacity + slot) / 2;
            while n >= 1 {
                refresh.push(n);
                n /= 2;
            }
        }
        refresh.sort_unstable_by(|a, b| b.cmp(a));
        refresh.dedup();
        // Newcomers get a fresh leaf key of the new epoch.
        let joining = std::mem::take(&mut self.joining);
        let mut newcomers = Vec::with_capacity(joining.len());
        for &slot in &joining {
            let kp = match self.slots.get_mut(slot as usize) {
                Some(s @ Slot::Joining(_)) => match std::mem::replace(s, Slot::Member { tag: 0 }) {
                    Slot::Joining(kp) => kp,
                    _ => return Err(StageError::Internal),
                },
                _ => return Err(StageError::Internal),
            };
            let tag = tag_of(kp.leaf_node().signature_key().as_slice());
            if let Some(s) = self.slots.get_mut(slot as usize) {
                *s = Slot::Member { tag };
            }
            self.set(capacity + slot, random_key(&self.rng)?, epoch)?;
            newcomers.push((slot, kp));
        }
        // Refreshed nodes, bottom-up (children have larger indices), each wrapped under
        // the new key of every child with a listener under it.
        for &n in &refresh {
            self.set(n, random_key(&self.rng)?, epoch)?;
        }
        let mut entries: Vec<(u32, [u8; NODE_KEY_LEN])> = Vec::new();
        for &p in &refresh {
            let parent_key = self.key(p, epoch)?;
            for child in [2 * p, 2 * p + 1] {
                // Only subtrees with a member of the previous epoch need the key: the
                // newcomers of this commit get their path in their Welcome.
                let level = capacity.ilog2() - child.ilog2();
                let fresh = joining
                    .iter()
                    .filter(|s| (capacity + **s) >> level == child)
                    .count();
                let under = self.occupied.get(child as usize).copied().unwrap_or(0) as usize;
                if under <= fresh {
                    continue;
                }
                let child_key = self.key(child, epoch)?;
                entries.push((child, wrap(&child_key, p, epoch, &parent_key)?));
            }
        }
        entries.sort_unstable_by_key(|(c, _)| *c);
        // Speakers whose slot departed were demoted in `remove`.
        self.roles_changed = false;
        let mut retired = std::mem::take(&mut self.retired);
        retired.sort_unstable();
        retired.dedup();
        self.epoch = epoch;
        let speakers = self.speakers();
        let confirm = self.own_secrets()?.confirm;
        let removal = !departing.is_empty();
        // The rekey.
        let mut body = Vec::with_capacity(32 + speakers.len() * 16 + entries.len() * 36);
        body.push(VERSION);
        body.extend_from_slice(&epoch.to_be_bytes());
        body.extend_from_slice(&capacity.to_be_bytes());
        body.push(u8::from(removal));
        body.extend_from_slice(&confirm);
        write_speakers(&mut body, &speakers);
        // A commit names at most 255 retired indices (more only if the host promoted and
        // demoted over 255 times in one interval); any beyond are still cut off with the
        // older epochs, one switch delay plus the skew after the rekey.
        let shown = retired.len().min(usize::from(u8::MAX));
        body.push(u8::try_from(shown).unwrap_or(u8::MAX));
        for index in retired.iter().take(shown) {
            body.extend_from_slice(&index.to_be_bytes());
        }
        body.extend_from_slice(
            &u32::try_from(entries.len())
                .map_err(|_| StageError::Internal)?
                .to_be_bytes(),
        );
        for (child, key) in &entries {
            body.extend_from_slice(&child.to_be_bytes());
            body.extend_from_slice(key);
        }
        self.sign_into(CONTEXT_REKEY, &[], &mut body)?;
        let rekey = seal_rekey(&self.rng, &old_handshake, epoch - 1, &body)?;
        // Welcomes.
        let mut welcomes = Vec::with_capacity(newcomers.len());
        for (slot, kp) in newcomers {
            welcomes.push(self.welcome(crypto, slot, &kp, &speakers)?);
        }
        let keys = self.own_keys(&retired, removal)?;
        Ok(StageCommit {
            epoch,
            rekey,
            welcomes,
            keys,
        })
    }

    fn welcome(
        &mut self,
        crypto: &impl OpenMlsCrypto,
        slot: u32,
        kp: &KeyPackage,
        speakers: &[Speaker],
    ) -> Result<StageWelcome, StageError> {
        let reference = kp
            .hash_ref(crypto)
            .map_err(|_| StageError::Internal)?
            .as_slice()
            .to_vec();
        let mut body = Zeroizing::new(Vec::with_capacity(
            32 + 1 + speakers.len() * 16 + (self.config.depth() + 1) * NODE_KEY_LEN + SIGNATURE_LEN,
        ));
        body.push(VERSION);
        body.extend_from_slice(&self.config.params.encode());
        body.extend_from_slice(&self.epoch.to_be_bytes());
        body.extend_from_slice(&self.config.capacity.to_be_bytes());
        body.extend_from_slice(&slot.to_be_bytes());
        write_speakers(&mut body, speakers);
        let epoch = self.epoch;
        let mut n = self.config.capacity + slot;
        while n >= 1 {
            let key = self.key(n, epoch)?;
            body.extend_from_slice(key.as_ref());
            n /= 2;
        }
        self.sign_into(CONTEXT_WELCOME, &reference, &mut body)?;
        let suite = self.config.mls_suite.ciphersuite();
        let sealed = crypto
            .hpke_seal(
                suite.hpke_config(),
                kp.hpke_init_key().as_slice(),
                HPKE_INFO,
                &reference,
                &body,
            )
            .map_err(|_| StageError::Internal)?;
        let mut bytes = Vec::with_capacity(8 + reference.len() + body.len() + 64);
        bytes.push(VERSION);
        let kem = sealed.kem_output.as_slice();
        let ct = sealed.ciphertext.as_slice();
        for part in [reference.as_slice(), kem] {
            bytes.extend_from_slice(
                &u16::try_from(part.len())
                    .map_err(|_| StageError::Internal)?
                    .to_be_bytes(),
            );
            bytes.extend_from_slice(part);
        }
        bytes.extend_from_slice(ct);
        Ok(StageWelcome {
            slot,
            reference,
            bytes,
        })
    }

    /// Appends the host's signature over [`signed_message`] to `body`.
    fn sign_into(
        &self,
        context: &[u8],
        prefix: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<(), StageError> {
        let message = signed_message(context, prefix, body)?;
        body.extend_from_slice(self.signer.sign(&message).as_ref());
        Ok(())
    }

    fn own_secrets(&mut self) -> Result<EpochSecrets, StageError> {
        let root = self.key(1, self.epoch)?;
        epoch_secrets(&root, self.epoch, &self.config.params)
    }

    fn own_keys(&self, retired: &[u32], removal: bool) -> Result<EpochKeys, StageError> {
        let root = self.peek(1)?;
        let secrets = epoch_secrets(&root, self.epoch, &self.config.params)?;
        Ok(epoch_keys(
            secrets,
            EpochStatus::Current,
            &self.config.params,
            &self.speakers(),
            HOST_SPEAKER,
            retired,
            removal,
        ))
    }

    /// The key of node `n` in the current epoch without storing the ratchet steps.
    fn peek(&self, n: u32) -> Result<Zeroizing<[u8; NODE_KEY_LEN]>, StageError> {
        let node = self.nodes.get(n as usize).ok_or(StageError::Internal)?;
        let mut key = node.key.clone();
        for _ in node.epoch..self.epoch {
            key = ratchet(&key)?;
        }
        Ok(key)
    }

    /// The key of node `n` in `epoch`, ratcheting the stored key forward.
    fn key(&mut self, n: u32, epoch: u64) -> Result<Zeroizing<[u8; NODE_KEY_LEN]>, StageError> {
        let node = self.nodes.get_mut(n as usize).ok_or(StageError::Internal)?;
        while node.epoch < epoch {
            node.key = ratchet(&node.key)?;
            node.epoch += 1;
        }
        Ok(node.key.clone())
    }

    fn set(
        &mut self,
        n: u32,
        key: Zeroizing<[u8; NODE_KEY_LEN]>,
        epoch: u64,
    ) -> Result<(), StageError> {
        let node = self.nodes.get_mut(n as usize).ok_or(StageError::Internal)?;
        *node = NodeKey { key, epoch };
        Ok(())
    }

    /// Counts a listener in (or out of) every node above `slot`.
    fn count(&mut self, slot: u32, add: bool) {
        let mut n = self.config.capacity + slot;
        while n >= 1 {
            if let Some(c) = self.occupied.get_mut(n as usize) {
                *c = if add {
                    c.saturating_add(1)
                } else {
                    c.saturating_sub(1)
                };
            }
            n /= 2;
        }
    }

    fn release(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = Slot::Free;
        }
        self.count(slot, false);
        self.free.push(slot);
    }
}

impl std::fmt::Debug for StageHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageHost")
            .field("epoch", &self.epoch)
            .field("listeners", &self.listeners())
            .field("speakers", &self.speakers().len())
            .finish_non_exhaustive()
    }
}

/// A listener (or speaker) of a stage: the keys of its path in the audience tree.
pub struct StageMember {
    params: RoomParams,
    capacity: u32,
    host_key: Vec<u8>,
    epoch: u64,
    slot: u32,
    /// Keys of the leaf and every node above it, leaf first.
    path: Vec<Zeroizing<[u8; NODE_KEY_LEN]>>,
    speakers: Vec<Speaker>,
    handshake: Zeroizing<[u8; HANDSHAKE_KEY_LEN]>,
}

impl StageMember {
    /// Joins with a [`StageWelcome`]'s bytes, sealed to one of `identity`'s KeyPackages
    /// (which this consumes), signed by the host whose key is `host_key`. Returns the
    /// member and its keys of the Welcome's epoch (`Current` for a speaker,
    /// `ReceiveOnly` for a listener).
    pub fn join<P: OpenMlsProvider>(
        identity: &Identity<P>,
        host_key: &[u8],
        welcome: &[u8],
    ) -> Result<(StageMember, EpochKeys), StageError> {
        let mut r = Reader(welcome);
        if r.u8()? != VERSION {
            return Err(StageError::Malformed);
        }
        let len = usize::from(r.u16()?);
        let reference = r.take(len)?;
        let len = usize::from(r.u16()?);
        let kem_output = r.take(len)?;
        let ciphertext = r.rest();
        let provider = identity.provider();
        let hash_ref = key_package_ref(reference)?;
        let bundle: KeyPackageBundle = provider
            .storage()
            .key_package(&hash_ref)
            .map_err(|_| StageError::Storage)?
            .ok_or(StageError::UnknownKeyPackage)?;
        let suite: Ciphersuite = bundle.key_package().ciphersuite();
        let sealed = HpkeCiphertext {
            kem_output: kem_output.to_vec().into(),
            ciphertext: ciphertext.to_vec().into(),
        };
        let body = Zeroizing::new(
            provider
                .crypto()
                .hpke_open(
                    suite.hpke_config(),
                    &sealed,
                    bundle.init_private_key(),
                    HPKE_INFO,
                    reference,
                )
                .map_err(|_| StageError::Unopenable)?,
        );
        let body = verify(host_key, CONTEXT_WELCOME, reference, &body)?;
        let WelcomeBody {
            params,
            epoch,
            capacity,
            slot,
            speakers,
            path,
        } = parse_welcome_body(body)?;
        // The KeyPackage is single-use: a second Welcome for it finds nothing.
        provider
            .storage()
            .delete_key_package(&hash_ref)
            .map_err(|_| StageError::Storage)?;
        let mut member = StageMember {
            params,
            capacity,
            host_key: host_key.to_vec(),
            epoch,
            slot,
            path,
            speakers,
            handshake: Zeroizing::new([0; HANDSHAKE_KEY_LEN]),
        };
        let keys = member.keys(&[], false)?;
        Ok((member, keys))
    }

    /// Processes the host's rekey out of this member's epoch; returns the new epoch's
    /// keys. [`StageError::Removed`] when the host refreshed this member's path without it.
    ///
    /// Rekeys must be processed in order, each exactly once: one missed leaves the member
    /// unable to follow ([`StageError::WrongEpoch`]); it then needs a new Welcome. A member
    /// whose [`role`](Self::role) became [`Role::Listener`] should call
    /// [`MediaSession::stop_sending`](crate::media::MediaSession::stop_sending): receivers
    /// refuse its older-epoch frames one switch delay after they apply these keys anyway.
    pub fn process(&mut self, rekey: &[u8]) -> Result<EpochKeys, StageError> {
        let mut r = Reader(rekey);
        if r.u8()? != VERSION {
            return Err(StageError::Malformed);
        }
        let from = r.u64()?;
        if from != self.epoch {
            return Err(StageError::WrongEpoch {
                expected: self.epoch,
                got: from,
            });
        }
        let nonce: [u8; NONCE_LEN] = r.array()?;
        let key = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::AES_128_GCM, self.handshake.as_ref())
                .map_err(|_| StageError::Internal)?,
        );
        let mut body = r.rest().to_vec();
        let body = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(rekey_aad(from)),
                &mut body,
            )
            .map_err(|_| StageError::Unopenable)?;
        let body = verify(&self.host_key, CONTEXT_REKEY, &[], body)?;
        let rekey = parse_rekey_body(body, self.capacity)?;
        let expected = self.epoch.checked_add(1).ok_or(StageError::Malformed)?;
        if rekey.epoch != expected {
            return Err(StageError::WrongEpoch {
                expected: self.epoch,
                got: rekey.epoch.saturating_sub(1),
            });
        }
        let find = |child: u32| {
            rekey
                .entries
                .binary_search_by_key(&child, |(c, _)| *c)
                .ok()
                .and_then(|i| rekey.entries.get(i))
        };
        let mut path = Vec::with_capacity(self.path.len());
        let mut n = self.capacity + self.slot;
        let leaf = self.path.first().ok_or(StageError::Internal)?;
        path.push(ratchet(leaf)?);
        for old in self.path.iter().skip(1) {
            let parent = n / 2;
            let child_key = path.last().ok_or(StageError::Internal)?;
            let next = if let Some((_, wrapped)) = find(n) {
                Zeroizing::new(wrap(child_key, parent, expected, wrapped)?)
            } else if find(n ^ 1).is_some() {
                return Err(StageError::Removed);
            } else {
                ratchet(old)?
            };
            path.push(next);
            n = parent;
        }
        // Key confirmation: a member whose path was refreshed without it in a way the
        // entries do not show (it was the last listener under every refreshed node) gets
        // a root that does not match.
        let root = path.last().ok_or(StageError::Internal)?;
        let secrets = epoch_secrets(root, expected, &self.params)?;
        if !subtle_eq(&secrets.confirm, &rekey.confirm) {
            return Err(StageError::Removed);
        }
        self.path = path;
        self.epoch = expected;
        self.speakers = rekey.speakers;
        self.keys(&rekey.retired, rekey.removal)
    }

    /// The keys of the current epoch; `retired` speakers' frames of older epochs are
    /// refused one switch delay after they are applied.
    fn keys(&mut self, retired: &[u32], removal: bool) -> Result<EpochKeys, StageError> {
        let root = self.path.last().ok_or(StageError::Internal)?;
        let secrets = epoch_secrets(root, self.epoch, &self.params)?;
        self.handshake = secrets.handshake.clone();
        let (status, own) = match self.role() {
            Role::Speaker(i) => (EpochStatus::Current, i),
            // A listener seals nothing; its "own" index names no speaker.
            Role::Listener => (EpochStatus::ReceiveOnly, u32::MAX),
        };
        Ok(epoch_keys(
            secrets,
            status,
            &self.params,
            &self.speakers,
            own,
            retired,
            removal,
        ))
    }

    /// This member's role in the current epoch.
    pub fn role(&self) -> Role {
        self.speakers
            .iter()
            .find(|s| s.slot == Some(self.slot))
            .map_or(Role::Listener, |s| Role::Speaker(s.index))
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// This member's slot (leaf) in the audience tree.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The speakers of the current epoch, the host first.
    pub fn speakers(&self) -> &[Speaker] {
        &self.speakers
    }

    /// The stage's media parameters (from the Welcome).
    pub fn params(&self) -> RoomParams {
        self.params
    }
}

impl std::fmt::Debug for StageMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageMember")
            .field("epoch", &self.epoch)
            .field("slot", &self.slot)
            .field("role", &self.role())
            .finish_non_exhaustive()
    }
}

/// Constant-time equality of two confirmation tags.
fn subtle_eq(a: &[u8; CONFIRM_LEN], b: &[u8; CONFIRM_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The KeyPackage reference named by a Welcome's bytes.
fn key_package_ref(reference: &[u8]) -> Result<KeyPackageRef, StageError> {
    let encoded = VLBytes::new(reference.to_vec())
        .tls_serialize_detached()
        .map_err(|_| StageError::Malformed)?;
    KeyPackageRef::tls_deserialize_exact(encoded).map_err(|_| StageError::Malformed)
}
