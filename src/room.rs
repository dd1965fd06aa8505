//! The control plane: a [`Room`] is one MLS group (RFC 9420, via `openmls`).
//!
//! A room creates, invites, joins, removes, self-updates and processes handshake bytes, and
//! hands the data plane one [`EpochKeys`] value per epoch. It never touches frames.
//!
//! - MLS cipher suite [`MlsSuite::Classic`] (`MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`)
//!   or, with feature `pq`, `MlsSuite::HybridPq`, fixed for the room's life; wire-format policy
//!   PURE_CIPHERTEXT (commits and proposals are MLS PrivateMessages); the ratchet tree
//!   travels in the Welcome, and joiners use the same setting (or the next newcomer would
//!   fail with a missing ratchet tree).
//! - Credentials are basic credentials carrying an app-chosen pseudonym: opaque bytes, never
//!   required to be a user id. The group id is random, never a room name.
//! - Every commit this member makes is *pending* until the relay has ordered it:
//!   [`Room::confirm_pending`] (or receiving its own commit back through
//!   [`Room::process`], also after [`Room::load`]) merges it; [`Room::discard_pending`]
//!   drops it. Its echo is recognised by its exact bytes: the content of an own
//!   PrivateMessage cannot be decrypted by its sender, and any member can write sender
//!   data that names this member's leaf.
//! - Proposals follow the room's policy, not openmls' defaults. An external sender (the
//!   relay) may propose removals only; members may propose adds, removals, updates and group
//!   context extensions (those changing the external senders or required capabilities only
//!   with [`RoomConfig::allow_policy_changes`]); anything else is refused
//!   ([`Rejection::ProposalNotAllowed`]) and not queued. Every commit of this member covers
//!   its own changes plus the queued removals (except of itself) and updates; queued adds and
//!   group context extensions only when the app approves them ([`Room::commit_proposals`]).
//!
//! - The room's media parameters (SFrame suite, KID layout and stream bits, [`RoomParams`])
//!   travel in the group context as sotto's extension, listed in the required
//!   capabilities: the creator chooses them, joiners read them from the Welcome, a member
//!   may move the room to another suite ([`Room::change_suite`]); see [`RoomParams`] for
//!   the layout.
//!
//! Per epoch, the room exports `MLS-Exporter("SFrame 1.0 Base Key", "", Nk)` (RFC 9605 §5.2)
//! and the channel token `MLS-Exporter("sotto 1 channel token", "", 16)`. Receivers of a
//! commit get the new epoch's keys from the staged commit, before merging it.

mod params;

pub use params::{ParamsError, RoomParams, MAX_STREAM_BITS, PARAMS_EXTENSION_TYPE, PARAMS_VERSION};

use std::collections::BTreeMap;

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, Capabilities, Ciphersuite, CredentialWithKey, Extension, ExtensionType,
    Extensions, ExternalSender, GroupContext, GroupId, KeyPackage, KeyPackageBundle, KeyPackageRef,
    LeafNodeIndex, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn,
    MlsMessageIn, MlsMessageOut, ProcessMessageError, ProcessedMessageContent, ProcessedWelcome,
    Proposal, ProposalOrRefType, ProtocolVersion, QueuedProposal, RequiredCapabilitiesExtension,
    Sender, StagedCommit, UnknownExtension, ValidationError, WelcomeError,
    PURE_CIPHERTEXT_WIRE_FORMAT_POLICY,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::storage::{
    traits as storage_traits, Entity, Key, StorageProvider as _, CURRENT_VERSION,
};
use openmls_traits::types::SignatureScheme;
use openmls_traits::OpenMlsProvider;
use ring::digest;

use crate::frame::CipherSuite;
use crate::keys::MemberId;
use crate::media::{
    ChannelToken, EpochKeys, EpochStatus, HandshakeKey, CHANNEL_TOKEN_LEN, HANDSHAKE_KEY_LEN,
};
use zeroize::Zeroizing;

/// The MLS cipher suite of a room: chosen by its creator ([`RoomConfig::mls_suite`]), read
/// by joiners from their Welcome, fixed for the room's life. Every suite signs with
/// Ed25519, so one [`Identity`] serves rooms of every suite; its KeyPackages are made per
/// suite ([`Identity::key_package`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MlsSuite {
    /// `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519` (0x0001, RFC 9420).
    #[default]
    Classic,
    /// `MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519` (0x004F): the classic suite with
    /// its X25519 KEM replaced by X-Wing (X25519 + ML-KEM-768, draft-connolly-cfrg-xwing-kem
    /// -06), so a recording of the handshake cannot be opened later by breaking X25519
    /// alone (harvest now, decrypt later). Feature `pq`.
    ///
    /// **Provisional.** The code point and the KEM come from
    /// draft-ietf-mls-pq-ciphersuites as implemented by openmls 0.9, not from a final IANA
    /// registration. If the draft changes either, rooms of this build will not
    /// interoperate with implementations of the new draft, and a sotto build following it
    /// will not load rooms stored by this one (a new room is needed). Signatures stay
    /// Ed25519: an attacker with a quantum computer *during* the call could still forge
    /// them; the suite protects recordings, not live authentication.
    #[cfg(feature = "pq")]
    HybridPq,
}

impl MlsSuite {
    /// Every suite this build supports.
    pub const ALL: &'static [MlsSuite] = &[
        MlsSuite::Classic,
        #[cfg(feature = "pq")]
        MlsSuite::HybridPq,
    ];

    /// The openmls cipher suite.
    pub fn ciphersuite(self) -> Ciphersuite {
        match self {
            MlsSuite::Classic => Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
            #[cfg(feature = "pq")]
            MlsSuite::HybridPq => Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519,
        }
    }

    /// The RFC 9420 code point.
    pub fn id(self) -> u16 {
        u16::from(self.ciphersuite())
    }

    /// The suite of an RFC 9420 code point, if this build supports it.
    pub fn from_id(id: u16) -> Option<MlsSuite> {
        MlsSuite::ALL.iter().copied().find(|s| s.id() == id)
    }
}

/// Every room signs with Ed25519, whatever its [`MlsSuite`].
const SIGNATURE_SCHEME: SignatureScheme = SignatureScheme::ED25519;

/// Exporter label of the SFrame base key (RFC 9605 §5.2).
pub const SFRAME_EXPORTER_LABEL: &str = "SFrame 1.0 Base Key";
/// Exporter label of the channel token.
pub const TOKEN_EXPORTER_LABEL: &str = "sotto 1 channel token";

/// The exporter label of an epoch's handshake key ([`HandshakeKey`]): the key that hides
/// handshake messages from the relay.
pub const HANDSHAKE_EXPORTER_LABEL: &str = "sotto 1 handshake key";
/// sotto's namespace of exporter labels: [`Room::export_secret`] refuses every label that
/// starts with it, and [`SFRAME_EXPORTER_LABEL`].
pub const RESERVED_LABEL_PREFIX: &str = "sotto ";

const FINGERPRINT_LABEL: &[u8] = b"sotto 1 member fingerprint";
const MEMBER_ID_LABEL: &[u8] = b"sotto 1 member id";

/// The data plane's name for the member at `leaf` with `signature_key`.
pub(crate) fn member_id(leaf: u32, signature_key: &[u8]) -> MemberId {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(MEMBER_ID_LABEL);
    ctx.update(signature_key);
    let digest = ctx.finish();
    let mut tag = [0u8; 8];
    for (t, d) in tag.iter_mut().zip(digest.as_ref()) {
        *t = *d;
    }
    MemberId {
        leaf,
        tag: u64::from_be_bytes(tag),
    }
}

/// Why the room refused handshake bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The bytes are not an MLS message of the expected kind.
    Malformed,
    /// The message is for another group.
    WrongGroup,
    /// The message is for another epoch (late, or ahead of a commit not yet processed).
    WrongEpoch,
    /// The message could not be decrypted or authenticated.
    Undecryptable,
    /// A commit or proposal that fails validation.
    Invalid,
    /// A valid proposal the room's policy refuses: an external sender may propose only
    /// removals, members may propose adds, removals, updates and group context extensions
    /// that keep the external senders and required capabilities (unless
    /// [`RoomConfig::allow_policy_changes`]). It is not stored, so a commit that covers it
    /// is refused too.
    ProposalNotAllowed,
    /// A commit whose (group-keyed, unsigned) sender data names this member's own leaf, and
    /// that is not this instance's pending commit. MLS members cannot decrypt their own
    /// leaf's messages, so its content cannot be checked: either another instance of this
    /// member (loaded from the same storage) committed, and the room moves on without this
    /// one, or a current member forged the sender data. The room is unchanged (acting on it
    /// would let any member stop any other). If it keeps appearing while the room's other
    /// traffic is for later epochs, this instance was superseded: discard it and rejoin.
    FromOwnLeaf,
    /// A commit or proposal that would give the room parameters this build does not
    /// support, or change the KID layout or stream bits (fixed for the room's life).
    Params(ParamsError),
}

/// Errors of the control plane. Carries no strings; the room stays usable after any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// Handshake bytes were refused.
    #[error("handshake message rejected: {0:?}")]
    Rejected(Rejection),
    /// The bytes are not a valid sotto KeyPackage (malformed, badly signed, or without
    /// sotto's parameters capability).
    #[error("invalid key package")]
    InvalidKeyPackage,
    /// A KeyPackage of another MLS cipher suite than the room's (whether this build
    /// supports that suite or not): the invitee must make one for the room's suite
    /// ([`Identity::key_package`]).
    #[error("key package for MLS suite {key_package:#06x}, the room's is {room:#06x}")]
    WrongMlsSuite {
        /// The room's suite (RFC 9420 code point).
        room: u16,
        /// The KeyPackage's suite.
        key_package: u16,
    },
    /// A Welcome (or a stored room) of an MLS cipher suite this build does not support (e.g.
    /// a post-quantum room's, in a build without feature `pq`).
    #[error("MLS cipher suite {0:#06x} not supported by this build")]
    UnsupportedMlsSuite(u16),
    /// The bytes are not a Welcome this identity can use.
    #[error("invalid welcome")]
    InvalidWelcome,
    /// The room's parameters (from a Welcome, storage, or [`RoomConfig::params`]) are
    /// missing or not supported by this build: the error names the value.
    #[error("room parameters: {0}")]
    Params(ParamsError),
    /// A commit of this member is already pending.
    #[error("a commit is already pending")]
    CommitPending,
    /// There is no pending commit to confirm.
    #[error("no pending commit")]
    NoPendingCommit,
    /// Proposals are queued and must be committed first
    /// ([`Room::commit_pending_proposals`]). No longer returned: every commit of this
    /// member covers the queued removals and updates.
    #[error("proposals are pending")]
    ProposalsPending,
    /// The leaf is not a member (or is this member, where that is not allowed).
    #[error("no such member")]
    NoSuchMember,
    /// No pending proposal has that reference (it was never queued, was refused, or the
    /// epoch has changed since).
    #[error("no such pending proposal")]
    NoSuchProposal,
    /// This member is no longer in the room.
    #[error("no longer a member")]
    NotAMember,
    /// The exporter label is one of sotto's own ([`SFRAME_EXPORTER_LABEL`], or any label
    /// in the [`RESERVED_LABEL_PREFIX`] namespace): [`Room::export_secret`] does not hand
    /// out the media keys or the channel tokens.
    #[error("reserved exporter label")]
    ReservedLabel,
    /// The room's storage failed.
    #[error("storage error")]
    Storage,
    /// No stored room under that id (or no stored signature key).
    #[error("room not found in storage")]
    NotFound,
    /// An internal MLS or crypto failure.
    #[error("internal MLS error")]
    Internal,
}

/// How a room is made and how this member treats proposals. What every member must agree
/// on (the media parameters, the external senders) is the creator's choice and travels in
/// the group context; a joiner's `params` and `external_senders` are not used (the
/// Welcome's decide), so joiners need no configuration from the creator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomConfig {
    /// The room's media parameters, written into the group context by [`Room::create`]
    /// (see [`RoomParams`]). Default: `AES_128_CTR_HMAC_SHA256_80`, S = 16, E = 4,
    /// 2 stream bits (4 streams per member).
    pub params: RoomParams,
    /// The room's MLS cipher suite, when this member creates it. Default
    /// [`MlsSuite::Classic`]. A joiner's is not used: the Welcome's decides, and the
    /// joiner's KeyPackage must be of that suite ([`Identity::key_package`]).
    pub mls_suite: MlsSuite,
    /// External senders (e.g. a relay that may propose removing a member whose connection
    /// is gone): `(signature public key, credential identity)`. Set at creation only.
    ///
    /// An external sender may propose removals only; any other proposal of its is refused
    /// ([`Rejection::ProposalNotAllowed`]).
    pub external_senders: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether members may propose group context extensions that change the external
    /// senders or the required capabilities (such proposals are refused otherwise, and even
    /// when allowed they are committed only once the app approves them,
    /// [`Room::commit_proposals`]). Default `false`.
    pub allow_policy_changes: bool,
}

/// A member's identity before it is in a room: its MLS provider (storage and crypto), its
/// signature key and its pseudonym.
pub struct Identity<P: OpenMlsProvider> {
    provider: P,
    signer: SignatureKeyPair,
    pseudonym: Vec<u8>,
}

/// A KeyPackage to publish: the bytes for the inviter and their hash reference (the opaque
/// key a relay's Welcome mailbox uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedKeyPackage {
    /// The serialized MLS message carrying the KeyPackage.
    pub bytes: Vec<u8>,
    /// The KeyPackage reference (hash) — no identity in it.
    pub reference: Vec<u8>,
}

impl<P: OpenMlsProvider> Identity<P> {
    /// A new identity with a fresh Ed25519 signature key, stored in the provider's storage
    /// so the room can be reloaded later ([`Room::load`]).
    pub fn new(provider: P, pseudonym: &[u8]) -> Result<Identity<P>, RoomError> {
        let signer = SignatureKeyPair::new(SIGNATURE_SCHEME).map_err(|_| RoomError::Internal)?;
        signer
            .store(provider.storage())
            .map_err(|_| RoomError::Storage)?;
        Ok(Identity {
            provider,
            signer,
            pseudonym: pseudonym.to_vec(),
        })
    }

    /// The identity [`new`](Self::new) stored in `provider`'s storage under
    /// `signature_key`, e.g. after a restart while this member's KeyPackage still waits for
    /// its Welcome (the KeyPackage's private keys are in the same storage). `pseudonym`
    /// must be the one the identity was made with: it goes into new KeyPackages.
    /// [`RoomError::NotFound`] if the storage has no such key.
    pub fn load(
        provider: P,
        signature_key: &[u8],
        pseudonym: &[u8],
    ) -> Result<Identity<P>, RoomError> {
        let signer = SignatureKeyPair::read(provider.storage(), signature_key, SIGNATURE_SCHEME)
            .ok_or(RoomError::NotFound)?;
        Ok(Identity {
            provider,
            signer,
            pseudonym: pseudonym.to_vec(),
        })
    }

    /// The identity's signature public key.
    pub fn signature_key(&self) -> &[u8] {
        self.signer.public()
    }

    /// The pseudonym in the identity's credential.
    pub fn pseudonym(&self) -> &[u8] {
        &self.pseudonym
    }

    /// The provider.
    pub fn provider(&self) -> &P {
        &self.provider
    }

    fn credential(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.pseudonym.clone()).into(),
            signature_key: self.signer.public().into(),
        }
    }

    /// Makes a KeyPackage for an inviter to a room of MLS suite `suite` (an invite with a
    /// KeyPackage of another suite is refused, [`RoomError::WrongMlsSuite`]); its private
    /// keys stay in this identity's storage until a Welcome consumes them.
    pub fn key_package(&self, suite: MlsSuite) -> Result<PublishedKeyPackage, RoomError> {
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(sotto_capabilities())
            .build(
                suite.ciphersuite(),
                &self.provider,
                &self.signer,
                self.credential(),
            )
            .map_err(|_| RoomError::Internal)?;
        let reference = bundle
            .key_package()
            .hash_ref(self.provider.crypto())
            .map_err(|_| RoomError::Internal)?
            .as_slice()
            .to_vec();
        let bytes = MlsMessageOut::from(bundle.key_package().clone())
            .to_bytes()
            .map_err(|_| RoomError::Internal)?;
        Ok(PublishedKeyPackage { bytes, reference })
    }
}

/// A commit this member made: send `message` to the relay (and `welcome`, if any, to the
/// invitees), then [`confirm_pending`](Room::confirm_pending) once the relay ordered it.
#[derive(Debug)]
pub struct Commit {
    /// The MLS commit (a PrivateMessage).
    pub message: Vec<u8>,
    /// The Welcome for invitees, when the commit adds members.
    pub welcome: Option<Vec<u8>>,
    /// References of the KeyPackages this commit adds (the Welcome's mailboxes).
    pub invited: Vec<Vec<u8>>,
    /// The next epoch's keys, `Staged`: apply them now so frames of members who switch
    /// before this member confirms still open.
    pub keys: EpochKeys,
}

/// Something that happened in the room.
#[derive(Debug)]
#[non_exhaustive]
pub enum RoomEvent {
    /// A member joined at `leaf`.
    MemberAdded {
        /// Leaf index.
        leaf: u32,
        /// The pseudonym in its credential.
        pseudonym: Vec<u8>,
    },
    /// The member at `leaf` was removed.
    MemberRemoved {
        /// Leaf index.
        leaf: u32,
    },
    /// The room moved to `epoch`.
    EpochChanged {
        /// The new epoch.
        epoch: u64,
    },
    /// Keys for the data plane: pass them to the member's
    /// [`MediaSession::apply`](crate::media::MediaSession::apply).
    Keys(EpochKeys),
    /// A proposal was queued: what it asks and who asked. Removals and updates are
    /// committed by [`Room::commit_pending_proposals`] (and by every other commit of this
    /// member); adds and group context extensions wait for the app's approval
    /// ([`ProposalInfo::needs_approval`], [`Room::commit_proposals`]).
    ProposalQueued(ProposalInfo),
    /// This member's pending commit lost the race at the relay and was dropped; redo the
    /// operation if it is still wanted.
    PendingCommitDropped,
    /// This member was removed from the room; the room can do nothing more.
    RemovedFromRoom,
}

/// A member as listed by [`Room::members`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Leaf index.
    pub leaf: u32,
    /// The data plane's name for the member ([`Received::member`](crate::keys::Received)):
    /// key audio receivers by it, not by leaf.
    pub id: MemberId,
    /// The pseudonym in its credential.
    pub pseudonym: Vec<u8>,
    /// Fingerprint of its signature key and credential.
    pub fingerprint: Fingerprint,
}

/// What a queued proposal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProposalKind {
    /// Add the member of a KeyPackage ([`ProposalInfo::key_package`]).
    Add,
    /// Remove the member at [`ProposalInfo::target`] (a member asking to leave proposes its
    /// own removal).
    Remove,
    /// The sender refreshes its own leaf ([`ProposalInfo::target`]).
    Update,
    /// New group context extensions.
    GroupContextExtensions,
    /// Any other proposal type (never queued: refused as
    /// [`Rejection::ProposalNotAllowed`]).
    Other,
}

/// Who sent a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProposalSender {
    /// The member at this leaf.
    Member(u32),
    /// The external sender at this index of [`RoomConfig::external_senders`].
    External(u32),
}

/// The reference of a queued proposal (an opaque hash, valid for the epoch it was made in).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProposalId(Vec<u8>);

impl ProposalId {
    /// The reference bytes (RFC 9420 `ProposalRef`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A queued proposal, as [`RoomEvent::ProposalQueued`] and [`Room::pending_proposals`] show
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProposalInfo {
    /// Its reference, to approve it with [`Room::commit_proposals`].
    pub id: ProposalId,
    /// What it asks for.
    pub kind: ProposalKind,
    /// Who asked.
    pub sender: ProposalSender,
    /// The leaf it concerns: the removed leaf of a removal, the sender's leaf of an update.
    pub target: Option<u32>,
    /// For an add: the reference of the KeyPackage (where its Welcome would go).
    pub key_package: Option<Vec<u8>>,
    /// For an add: the pseudonym in the KeyPackage's credential.
    pub pseudonym: Option<Vec<u8>>,
    /// Whether only the app's approval commits it (adds and group context extensions);
    /// removals and updates are committed by this member's next commit of any kind.
    pub needs_approval: bool,
}

/// 30 decimal digits, shown as six groups of five.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digits30([u8; 30]);

impl Digits30 {
    /// Six 5-digit groups, each from 5 bytes (a 40-bit number) modulo 100,000.
    fn from_bytes(bytes: &[u8]) -> Digits30 {
        let mut digits = [0u8; 30];
        for (group, chunk) in digits.chunks_exact_mut(5).zip(bytes.chunks(5)) {
            let mut v = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)) % 100_000;
            for d in group.iter_mut().rev() {
                *d = u8::try_from(v % 10).unwrap_or(0);
                v /= 10;
            }
        }
        Digits30(digits)
    }

    /// The digits, 0–9 each.
    pub fn digits(&self) -> &[u8; 30] {
        &self.0
    }
}

impl std::fmt::Display for Digits30 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, group) in self.0.chunks(5).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            for d in group {
                write!(f, "{d}")?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Digits30 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// The room's safety code for one epoch: 30 digits from the MLS epoch authenticator, the
/// same for every member of the epoch. Members compare it out of band.
pub type SafetyCode = Digits30;

/// A member's fingerprint: 30 digits from SHA-256 over its signature key and credential.
pub type Fingerprint = Digits30;

/// The fingerprint of a signature key and credential identity.
pub fn fingerprint(signature_key: &[u8], credential: &[u8]) -> Fingerprint {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(FINGERPRINT_LABEL);
    for part in [signature_key, credential] {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        ctx.update(&len.to_be_bytes());
        ctx.update(part);
    }
    Digits30::from_bytes(ctx.finish().as_ref())
}

struct Pending {
    message: Vec<u8>,
    /// Made by this instance (its fresh randomness is in the commit's path secrets), not
    /// loaded from storage.
    made_here: bool,
}

/// What this instance may do with the epochs it reaches (see [`Room`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Freshness {
    /// The current epoch descends from a contribution made by this instance (the group's
    /// creation, or a commit it made), through no commit from its own leaf that it did
    /// not make: no other instance of this member can have reached it. Epochs are
    /// `Current`.
    Fresh,
    /// Joined from a Welcome: an earlier instance may have joined from the same Welcome
    /// (a storage rollback brings the KeyPackage back, the relay keeps the Welcome), so
    /// epochs are `ReceiveOnly` until this instance's own commit.
    Joined,
    /// Loaded from storage, or another instance of this member committed: an earlier
    /// instance may have reached these very epochs, sealed and opened in them. Epochs are
    /// `Restored` until this instance's own commit.
    Reloaded,
}

/// Where this member's pending commit is recorded in the provider's storage, next to the
/// group, so that after a restart its echo is still recognised ([`Room::load`]).
///
/// The record lives in the PSK table, which openmls leaves to the application: openmls
/// writes nothing there and reads only the PSK ids that commits name, and no PSK id
/// serializes to this key. The record is bound to openmls' pending commit by the epoch
/// authenticator of that commit's epoch (what safety codes show, not a secret), so a stale
/// record (left by a crash between openmls'
/// write and sotto's, or after a merge) never matches another pending commit. Records are
/// overwritten by the next commit and dropped by [`Room::discard_pending`] and
/// [`Room::load`] when they do not match.
#[derive(serde::Serialize)]
struct PendingCommitKey<'a> {
    sotto_pending_commit_of_group: &'a [u8],
}

impl Key<CURRENT_VERSION> for PendingCommitKey<'_> {}
impl storage_traits::PskId<CURRENT_VERSION> for PendingCommitKey<'_> {}

#[derive(serde::Serialize, serde::Deserialize)]
struct PendingCommitRecord {
    /// The epoch authenticator of the pending commit's epoch.
    binding: Vec<u8>,
    /// The commit as sent to the relay.
    #[serde(with = "hex_bytes")]
    message: Vec<u8>,
}

/// A byte string as a byte string to binary formats (sotto's [`Storage`](crate::provider::Storage))
/// and as a lowercase hex string to human-readable ones (JSON). A commit is up to hundreds
/// of KB (a PQ room's UpdatePath), and serde's default for `Vec<u8>`, a sequence of
/// numbers, costs a JSON storage about 20 ns per byte to write. Reading takes any of the
/// three (records written before this change are sequences of numbers).
mod hex_bytes {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    fn hex_digit(nibble: u8) -> u8 {
        match nibble {
            0..=9 => b'0' + nibble,
            _ => b'a' + nibble - 10,
        }
    }

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return serializer.serialize_bytes(bytes);
        }
        let mut text = Vec::with_capacity(bytes.len() * 2);
        for b in bytes {
            text.extend_from_slice(&[hex_digit(b >> 4), hex_digit(b & 0x0f)]);
        }
        let text = String::from_utf8(text).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_any(HexVisitor)
    }

    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }

    struct HexVisitor;

    impl<'de> Visitor<'de> for HexVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a lowercase hex string, a byte string or a sequence of bytes")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            let text = text.as_bytes();
            if !text.len().is_multiple_of(2) {
                return Err(E::custom("odd number of hex digits"));
            }
            text.chunks_exact(2)
                .map(|pair| match pair {
                    &[hi, lo] => match (digit(hi), digit(lo)) {
                        (Some(hi), Some(lo)) => Ok(hi << 4 | lo),
                        _ => Err(E::custom("not a lowercase hex digit")),
                    },
                    _ => Err(E::custom("odd number of hex digits")),
                })
                .collect()
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element::<u8>()? {
                bytes.push(b);
            }
            Ok(bytes)
        }
    }

    #[cfg(test)]
    mod tests {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Record {
            #[serde(with = "super")]
            message: Vec<u8>,
        }

        #[test]
        fn json_gets_hex_and_sotto_storage_gets_bytes() {
            let record = Record {
                message: vec![0x00, 0x7f, 0xff, 0x10],
            };
            let json = serde_json::to_string(&record).unwrap();
            assert_eq!(json, r#"{"message":"007fff10"}"#);
            assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);
            let binary = crate::provider::fuzzing::encode(&record).unwrap();
            assert!(binary.windows(4).any(|w| w == [0x00, 0x7f, 0xff, 0x10]));
            assert_eq!(
                crate::provider::fuzzing::decode_as::<Record>(&binary).unwrap(),
                record
            );
        }

        #[test]
        fn records_of_earlier_builds_still_load_and_bad_hex_is_refused() {
            let old = r#"{"message":[0,127,255,16]}"#;
            assert_eq!(
                serde_json::from_str::<Record>(old).unwrap().message,
                vec![0x00, 0x7f, 0xff, 0x10]
            );
            for bad in [
                r#"{"message":"0"}"#,
                r#"{"message":"zz"}"#,
                r#"{"message":"7F"}"#,
            ] {
                assert!(serde_json::from_str::<Record>(bad).is_err(), "{bad}");
            }
        }
    }
}

impl Entity<CURRENT_VERSION> for PendingCommitRecord {}
impl storage_traits::PskBundle<CURRENT_VERSION> for PendingCommitRecord {}

fn pending_binding(staged: &StagedCommit) -> Result<Vec<u8>, RoomError> {
    staged
        .epoch_authenticator()
        .map(|a| a.as_slice().to_vec())
        .ok_or(RoomError::Internal)
}

/// The pending commit a reloaded group holds, with the message that carried it. A pending
/// commit without a matching record was never handed to the app (the record is written
/// before the commit is returned), so it was never sent: it is dropped.
fn restore_pending<P: OpenMlsProvider>(
    provider: &P,
    group: &mut MlsGroup,
) -> Result<Option<Pending>, RoomError> {
    let storage = provider.storage();
    let group_id = group.group_id().clone();
    let key = PendingCommitKey {
        sotto_pending_commit_of_group: group_id.as_slice(),
    };
    let record: Option<PendingCommitRecord> = storage.psk(&key).map_err(|_| RoomError::Storage)?;
    let binding = group.pending_commit().map(pending_binding).transpose()?;
    let stale = match (record, binding) {
        (Some(record), Some(binding)) if record.binding == binding => {
            return Ok(Some(Pending {
                message: record.message,
                made_here: false,
            }))
        }
        (record, Some(_)) => {
            group
                .clear_pending_commit(storage)
                .map_err(|_| RoomError::Storage)?;
            record.is_some()
        }
        (record, None) => record.is_some(),
    };
    if stale {
        storage.delete_psk(&key).map_err(|_| RoomError::Storage)?;
    }
    Ok(None)
}

/// One room: an MLS group plus this member's signature key and provider (see the
/// [module docs](self)).
///
/// # One sealer per key, across crashes and rollbacks
///
/// An epoch's keys are a deterministic function of the group state: an instance restored
/// from an older storage snapshot that processes the same commit again, or joins from the
/// same Welcome again, gets the very keys an earlier instance sealed with. No record in
/// that storage can prevent it (a rollback takes the record back too). So a room gives
/// `Current` (sealing) keys only for epochs that descend from randomness this instance
/// drew itself: the group it created, or a commit it made. A created room seals at once;
/// a joined room is `ReceiveOnly`, and a loaded room `Restored`, until this instance's
/// first own commit ([`self_update`](Self::self_update) gives one). A commit from this
/// member's own leaf that this instance did not make is refused with
/// [`Rejection::FromOwnLeaf`] and changes nothing.
pub struct Room<P: OpenMlsProvider> {
    provider: P,
    signer: SignatureKeyPair,
    group: MlsGroup,
    config: RoomConfig,
    /// The current epoch's parameters, from the group context.
    params: RoomParams,
    mls_suite: MlsSuite,
    pending: Option<Pending>,
    freshness: Freshness,
}

/// The extension type of sotto's parameters, as openmls names it.
fn params_type() -> ExtensionType {
    ExtensionType::Unknown(PARAMS_EXTENSION_TYPE)
}

/// The capabilities of every leaf sotto makes: the default ones plus sotto's parameters.
fn sotto_capabilities() -> Capabilities {
    Capabilities::new(None, None, Some(&[params_type()]), None, None)
}

/// The group's MLS suite, if this build supports it.
fn group_suite(group: &MlsGroup) -> Result<MlsSuite, RoomError> {
    let id = u16::from(group.ciphersuite());
    MlsSuite::from_id(id).ok_or(RoomError::UnsupportedMlsSuite(id))
}

/// The room parameters in a group context's extensions.
fn group_params(extensions: &Extensions<GroupContext>) -> Result<RoomParams, ParamsError> {
    let ext = extensions
        .unknown(PARAMS_EXTENSION_TYPE)
        .ok_or(ParamsError::Missing)?;
    RoomParams::decode(&ext.0)
}

fn create_config(config: &RoomConfig) -> Result<MlsGroupCreateConfig, RoomError> {
    config.params.check().map_err(RoomError::Params)?;
    let mut extensions = vec![
        Extension::Unknown(
            PARAMS_EXTENSION_TYPE,
            UnknownExtension(config.params.encode()),
        ),
        Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
            &[params_type()],
            &[],
            &[],
        )),
    ];
    if !config.external_senders.is_empty() {
        let senders = config
            .external_senders
            .iter()
            .map(|(key, identity)| {
                ExternalSender::new(
                    key.as_slice().into(),
                    BasicCredential::new(identity.clone()).into(),
                )
            })
            .collect();
        extensions.push(Extension::ExternalSenders(senders));
    }
    let extensions = Extensions::from_vec(extensions).map_err(|_| RoomError::Internal)?;
    Ok(MlsGroupCreateConfig::builder()
        .ciphersuite(config.mls_suite.ciphersuite())
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .capabilities(sotto_capabilities())
        .with_group_context_extensions(extensions)
        .build())
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build()
}

fn rejection<E>(e: &ProcessMessageError<E>) -> RoomError {
    match e {
        ProcessMessageError::StorageError(_) => RoomError::Storage,
        ProcessMessageError::LibraryError(_) => RoomError::Internal,
        ProcessMessageError::ValidationError(v) => RoomError::Rejected(match v {
            ValidationError::WrongGroupId => Rejection::WrongGroup,
            ValidationError::WrongEpoch => Rejection::WrongEpoch,
            ValidationError::UnableToDecrypt(_) => Rejection::Undecryptable,
            _ => Rejection::Invalid,
        }),
        ProcessMessageError::GroupStateError(_) => RoomError::NotAMember,
        _ => RoomError::Rejected(Rejection::Invalid),
    }
}

fn parse_message(bytes: &[u8]) -> Result<MlsMessageBodyIn, RoomError> {
    MlsMessageIn::tls_deserialize_exact(bytes)
        .map(MlsMessageIn::extract)
        .map_err(|_| RoomError::Rejected(Rejection::Malformed))
}

/// The group a Welcome admits this provider's identity to.
///
/// openmls deletes the KeyPackage a Welcome names before it decrypts anything, so a forged
/// Welcome (anyone who knows the reference can drop one in a relay mailbox) would use it up.
/// The KeyPackage is read first and written back when the Welcome failed before its group
/// secrets opened under the KeyPackage's init key. Once they opened, the init key stays
/// deleted even if joining fails later: it has decrypted what may be a genuine joiner
/// secret, and keeping it would let a later compromise read a recorded Welcome.
fn join_group<P: OpenMlsProvider>(provider: &P, welcome: &[u8]) -> Result<MlsGroup, RoomError> {
    check_message_suite(welcome)?;
    let MlsMessageBodyIn::Welcome(welcome) =
        parse_message(welcome).map_err(|_| RoomError::InvalidWelcome)?
    else {
        return Err(RoomError::InvalidWelcome);
    };
    let storage = provider.storage();
    // openmls takes the first named KeyPackage it holds.
    let mut named = None;
    for secrets in welcome.secrets() {
        let reference = secrets.new_member();
        if let Some(bundle) = storage
            .key_package::<KeyPackageRef, KeyPackageBundle>(&reference)
            .map_err(|_| RoomError::Storage)?
        {
            named = Some((reference, bundle));
            break;
        }
    }
    let processed = match ProcessedWelcome::new_from_welcome(provider, &join_config(), welcome) {
        Ok(processed) => processed,
        Err(e) => {
            // Before the HPKE decryption, or it failed, or what it gave was not group
            // secrets (no genuine Welcome decrypts to that): nothing secret came through.
            let opened_nothing = matches!(
                e,
                WelcomeError::GroupSecrets(_)
                    | WelcomeError::JoinerSecretNotFound
                    | WelcomeError::CiphersuiteMismatch
                    | WelcomeError::UnsupportedCiphersuite(_)
                    | WelcomeError::NoMatchingKeyPackage
            );
            if let (true, Some((reference, bundle))) = (opened_nothing, &named) {
                storage
                    .write_key_package(reference, bundle)
                    .map_err(|_| RoomError::Storage)?;
            }
            return Err(RoomError::InvalidWelcome);
        }
    };
    processed
        .into_staged_welcome(provider, None)
        .and_then(|staged| staged.into_group(provider))
        .map_err(|_| RoomError::InvalidWelcome)
}

/// A failed [`Room::join`]: why, and the identity back to try another Welcome with.
pub struct JoinError<P: OpenMlsProvider> {
    /// Why the join failed ([`RoomError::InvalidWelcome`] for any Welcome that does not
    /// admit this identity).
    pub error: RoomError,
    /// The identity. It still holds the KeyPackage the Welcome named unless the Welcome's
    /// group secrets opened under it: a KeyPackage's init key decrypts one Welcome only.
    pub identity: Identity<P>,
}

impl<P: OpenMlsProvider> std::fmt::Debug for JoinError<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<P: OpenMlsProvider> std::fmt::Display for JoinError<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "join failed: {}", self.error)
    }
}

impl<P: OpenMlsProvider> std::error::Error for JoinError<P> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<P: OpenMlsProvider> From<JoinError<P>> for RoomError {
    fn from(e: JoinError<P>) -> RoomError {
        e.error
    }
}

fn leaf_u32(index: LeafNodeIndex) -> u32 {
    index.u32()
}

impl<P: OpenMlsProvider> Room<P> {
    /// Creates a room with this identity as its only member; returns it and the first
    /// epoch's keys (`Current`).
    pub fn create(
        identity: Identity<P>,
        config: RoomConfig,
    ) -> Result<(Room<P>, EpochKeys), RoomError> {
        let credential = identity.credential();
        let group = MlsGroup::new(
            &identity.provider,
            &identity.signer,
            &create_config(&config)?,
            credential,
        )
        .map_err(|_| RoomError::Internal)?;
        let params = config.params;
        let room = Room::entered(identity, group, config, params, Freshness::Fresh)?;
        let keys = room.current_keys(EpochStatus::Current)?;
        Ok((room, keys))
    }

    /// A room this identity just entered (created or joined).
    fn entered(
        identity: Identity<P>,
        group: MlsGroup,
        config: RoomConfig,
        params: RoomParams,
        freshness: Freshness,
    ) -> Result<Room<P>, JoinError<P>> {
        let mls_suite = match group_suite(&group) {
            Ok(suite) => suite,
            Err(error) => return Err(JoinError { error, identity }),
        };
        Ok(Room {
            provider: identity.provider,
            signer: identity.signer,
            group,
            config,
            params,
            mls_suite,
            pending: None,
            freshness,
        })
    }

    /// Joins a room from a Welcome made for one of this identity's KeyPackages. The room's
    /// parameters come from the Welcome (its group context); of `config` only this
    /// member's own policy ([`RoomConfig::allow_policy_changes`]) is used. A Welcome
    /// without sotto's parameters, or with values this build does not support, fails with
    /// [`RoomError::Params`] naming the value (the KeyPackage is used up: its group secrets
    /// opened).
    ///
    /// The keys are `ReceiveOnly`: the member hears the room at once and seals from the
    /// epoch of its first own commit on (call [`self_update`](Self::self_update) to speak;
    /// see [`Room`] for why).
    ///
    /// On failure the identity comes back in the [`JoinError`]. A Welcome whose group
    /// secrets do not open under the KeyPackage (anyone who knows a KeyPackage reference can
    /// forge one naming it) does not use the KeyPackage up, so the genuine Welcome still
    /// works after it; a Welcome that opened but failed later has used it up (see
    /// [`JoinError`]).
    pub fn join(
        identity: Identity<P>,
        config: RoomConfig,
        welcome: &[u8],
    ) -> Result<(Room<P>, EpochKeys), JoinError<P>> {
        let group = match join_group(&identity.provider, welcome) {
            Ok(group) => group,
            Err(error) => return Err(JoinError { error, identity }),
        };
        let pseudonym = identity.pseudonym.clone();
        let params = match group_params(group.extensions()) {
            Ok(params) => params,
            Err(e) => {
                return Err(JoinError {
                    error: RoomError::Params(e),
                    identity,
                })
            }
        };
        let room = Room::entered(identity, group, config, params, Freshness::Joined)?;
        match room.current_keys(EpochStatus::ReceiveOnly) {
            Ok(keys) => Ok((room, keys)),
            Err(error) => Err(JoinError {
                error,
                identity: Identity {
                    provider: room.provider,
                    signer: room.signer,
                    pseudonym,
                },
            }),
        }
    }

    /// Reloads a room from the provider's storage (after a restart). The keys are
    /// `Restored`, and so are the keys of every epoch reached until this instance's first
    /// own commit: an earlier instance (before a crash or a storage rollback) may have
    /// sealed and opened frames in them. Call [`self_update`](Self::self_update) at once to
    /// hear and speak again (see [`Room`]).
    ///
    /// A commit this member made before the restart is still pending: its echo through
    /// [`process`](Self::process) merges it (recognised by its exact bytes, stored with the
    /// group), and [`pending_commit_message`](Self::pending_commit_message) gives it back
    /// to send again. A pending commit that was never returned to the app (a crash inside
    /// the commit call) was never sent, and is dropped. Merging it does not make the room
    /// seal again: an earlier instance made it.
    pub fn load(
        provider: P,
        signature_key: &[u8],
        group_id: &[u8],
        config: RoomConfig,
    ) -> Result<(Room<P>, EpochKeys), RoomError> {
        let signer = SignatureKeyPair::read(provider.storage(), signature_key, SIGNATURE_SCHEME)
            .ok_or(RoomError::NotFound)?;
        let mut group = MlsGroup::load(provider.storage(), &GroupId::from_slice(group_id))
            .map_err(|_| RoomError::Storage)?
            .ok_or(RoomError::NotFound)?;
        let pending = restore_pending(&provider, &mut group)?;
        let params = group_params(group.extensions()).map_err(RoomError::Params)?;
        let mls_suite = group_suite(&group)?;
        let room = Room {
            provider,
            signer,
            group,
            config,
            params,
            mls_suite,
            pending,
            freshness: Freshness::Reloaded,
        };
        let keys = room.current_keys(EpochStatus::Restored)?;
        Ok((room, keys))
    }

    /// This member's signature public key (store it with the group id to
    /// [`load`](Self::load) the room).
    pub fn signature_key(&self) -> &[u8] {
        self.signer.public()
    }

    /// The MLS group id (random bytes; store it to [`load`](Self::load) the room).
    pub fn group_id(&self) -> &[u8] {
        self.group.group_id().as_slice()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.group.epoch().as_u64()
    }

    /// This member's leaf index.
    pub fn own_leaf(&self) -> u32 {
        leaf_u32(self.group.own_leaf_index())
    }

    /// Whether this member is still in the room.
    pub fn is_active(&self) -> bool {
        self.group.is_active()
    }

    /// Whether the epochs this instance merges give it sealing (`Current`) keys: true for a
    /// room it created, or once it has made a commit of its own since it joined or was
    /// loaded (see [`Room`]). A member that should speak and cannot calls
    /// [`self_update`](Self::self_update).
    pub fn can_seal(&self) -> bool {
        self.freshness == Freshness::Fresh
    }

    /// Whether a commit of this member awaits confirmation.
    pub fn has_pending_commit(&self) -> bool {
        self.pending.is_some()
    }

    /// The room configuration this member was given (for the room's parameters, see
    /// [`params`](Self::params)).
    pub fn config(&self) -> &RoomConfig {
        &self.config
    }

    /// The current epoch's media parameters, as the group context carries them.
    pub fn params(&self) -> RoomParams {
        self.params
    }

    /// The room's MLS cipher suite (fixed for its life).
    pub fn mls_suite(&self) -> MlsSuite {
        self.mls_suite
    }

    /// The provider (its storage holds the room's state).
    pub fn provider(&self) -> &P {
        &self.provider
    }

    /// The members, by leaf, with their pseudonyms and fingerprints.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.group
            .members()
            .map(|m| {
                let pseudonym = m.credential.serialized_content().to_vec();
                MemberInfo {
                    leaf: leaf_u32(m.index),
                    id: member_id(leaf_u32(m.index), &m.signature_key),
                    fingerprint: fingerprint(&m.signature_key, &pseudonym),
                    pseudonym,
                }
            })
            .collect()
    }

    /// The safety code of the current epoch.
    pub fn safety_code(&self) -> SafetyCode {
        Digits30::from_bytes(self.group.epoch_authenticator().as_slice())
    }

    /// The channel token of the current epoch.
    pub fn channel_token(&self) -> Result<ChannelToken, RoomError> {
        token_from(self.group.export_secret(
            self.provider.crypto(),
            TOKEN_EXPORTER_LABEL,
            &[],
            CHANNEL_TOKEN_LEN,
        ))
    }

    /// `MLS-Exporter(label, context, len)` of the current epoch, for application secrets
    /// bound to the room. Use a label of your own: sotto's labels
    /// ([`SFRAME_EXPORTER_LABEL`], and every label starting with [`RESERVED_LABEL_PREFIX`]
    /// such as [`TOKEN_EXPORTER_LABEL`]) are refused with [`RoomError::ReservedLabel`].
    pub fn export_secret(
        &self,
        label: &str,
        context: &[u8],
        len: usize,
    ) -> Result<Vec<u8>, RoomError> {
        if label == SFRAME_EXPORTER_LABEL || label.starts_with(RESERVED_LABEL_PREFIX) {
            return Err(RoomError::ReservedLabel);
        }
        self.group
            .export_secret(self.provider.crypto(), label, context, len)
            .map_err(|_| RoomError::NotAMember)
    }

    /// The current epoch's keys with `status` (`Restored` gives receive-only keys, e.g. for
    /// a new media session of a running room).
    fn current_keys(&self, status: EpochStatus) -> Result<EpochKeys, RoomError> {
        let crypto = self.provider.crypto();
        let base = self
            .group
            .export_secret(
                crypto,
                SFRAME_EXPORTER_LABEL,
                &[],
                self.params.suite.key_len(),
            )
            .map_err(|_| RoomError::NotAMember)?;
        let token = self.channel_token()?;
        let handshake = handshake_key_from(self.group.export_secret(
            crypto,
            HANDSHAKE_EXPORTER_LABEL,
            &[],
            HANDSHAKE_KEY_LEN,
        ))?;
        let members = self
            .group
            .members()
            .map(|m| member_id(leaf_u32(m.index), &m.signature_key))
            .collect();
        Ok(self
            .epoch_keys(self.epoch(), status, self.params, members, token, base)
            .with_handshake_key(handshake))
    }

    /// `Restored` keys of the current epoch, for a media session started while the room
    /// runs (the running session keeps the only permission to seal; the new one has no
    /// replay history for the epoch, so it opens from the next epoch on).
    pub fn receive_keys(&self) -> Result<EpochKeys, RoomError> {
        self.current_keys(EpochStatus::Restored)
    }

    /// The status of an epoch this instance merged into (see [`Room`]).
    fn merged_status(&self) -> EpochStatus {
        match self.freshness {
            Freshness::Fresh => EpochStatus::Current,
            Freshness::Joined => EpochStatus::ReceiveOnly,
            Freshness::Reloaded => EpochStatus::Restored,
        }
    }

    fn epoch_keys(
        &self,
        epoch: u64,
        status: EpochStatus,
        params: RoomParams,
        members: Vec<MemberId>,
        token: ChannelToken,
        base: Vec<u8>,
    ) -> EpochKeys {
        EpochKeys::assume_unique_for_key(
            epoch,
            status,
            params.suite,
            params.layout,
            params.stream_bits,
            members,
            self.own_leaf(),
            token,
            base,
        )
    }

    /// `Staged` keys of the pending commit's epoch. Members follow RFC 9420 §12.3: removed
    /// leaves go, then each add takes the leftmost blank leaf. (A member whose signature key
    /// the commit changes keeps its old tag until the merged keys replace these.)
    fn staged_keys(&self, staged: &StagedCommit) -> Result<EpochKeys, RoomError> {
        let crypto = self.provider.crypto();
        let params = self.next_params(staged)?;
        let base = staged
            .export_secret(crypto, SFRAME_EXPORTER_LABEL, &[], params.suite.key_len())
            .map_err(|_| RoomError::Internal)?;
        let token =
            token_from(staged.export_secret(crypto, TOKEN_EXPORTER_LABEL, &[], CHANNEL_TOKEN_LEN))?;
        let handshake = handshake_key_from(staged.export_secret(
            crypto,
            HANDSHAKE_EXPORTER_LABEL,
            &[],
            HANDSHAKE_KEY_LEN,
        ))?;
        let removed: Vec<u32> = staged
            .remove_proposals()
            .map(|r| leaf_u32(r.remove_proposal().removed()))
            .collect();
        let mut members: Vec<MemberId> = self
            .group
            .members()
            .map(|m| member_id(leaf_u32(m.index), &m.signature_key))
            .filter(|m| !removed.contains(&m.leaf))
            .collect();
        members.sort_unstable();
        let mut candidate = 0u32;
        for add in staged.add_proposals() {
            let key = add
                .add_proposal()
                .key_package()
                .leaf_node()
                .signature_key()
                .as_slice();
            while members.binary_search_by_key(&candidate, |m| m.leaf).is_ok() {
                candidate = candidate.saturating_add(1);
            }
            if let Err(at) = members.binary_search_by_key(&candidate, |m| m.leaf) {
                members.insert(at, member_id(candidate, key));
            }
        }
        Ok(self
            .epoch_keys(
                staged.epoch().as_u64(),
                EpochStatus::Staged,
                params,
                members,
                token,
                base,
            )
            .with_handshake_key(handshake))
    }

    /// The parameters of a staged commit's epoch, refused if this build does not support
    /// them or they change the KID layout or context.
    fn next_params(&self, staged: &StagedCommit) -> Result<RoomParams, RoomError> {
        self.allowed_params(staged.group_context().extensions())
            .map_err(|e| RoomError::Rejected(Rejection::Params(e)))
    }

    /// Parameters the room may move to from its current ones: supported, and with the same
    /// KID layout and context (a receiver reads a frame's epoch from its KID, so the
    /// layout cannot change with the epoch).
    fn allowed_params(
        &self,
        extensions: &Extensions<GroupContext>,
    ) -> Result<RoomParams, ParamsError> {
        let next = group_params(extensions)?;
        if next.layout != self.params.layout || next.stream_bits != self.params.stream_bits {
            return Err(ParamsError::Fixed);
        }
        Ok(next)
    }

    fn ensure_can_commit(&self) -> Result<(), RoomError> {
        if !self.group.is_active() {
            return Err(RoomError::NotAMember);
        }
        if self.pending.is_some() {
            return Err(RoomError::CommitPending);
        }
        Ok(())
    }

    /// The staged commit becomes this member's pending commit: recorded in storage (see
    /// [`PendingCommitKey`]) before it is returned, or dropped on any failure.
    fn finish_commit(
        &mut self,
        message: &MlsMessageOut,
        welcome: Option<&MlsMessageOut>,
    ) -> Result<Commit, RoomError> {
        let commit = self.pending_commit_of(message, welcome);
        if commit.is_err() {
            // Best effort: the error reported is the first one.
            let _ = self.group.clear_pending_commit(self.provider.storage());
        }
        let commit = commit?;
        self.pending = Some(Pending {
            message: commit.message.clone(),
            made_here: true,
        });
        Ok(commit)
    }

    fn pending_commit_of(
        &self,
        message: &MlsMessageOut,
        welcome: Option<&MlsMessageOut>,
    ) -> Result<Commit, RoomError> {
        let message = message.to_bytes().map_err(|_| RoomError::Internal)?;
        let welcome = welcome
            .map(|w| w.to_bytes().map_err(|_| RoomError::Internal))
            .transpose()?;
        let staged = self.group.pending_commit().ok_or(RoomError::Internal)?;
        let keys = self.staged_keys(staged)?;
        // Every KeyPackage the commit adds, whichever path made it: the Welcome's mailboxes.
        let crypto = self.provider.crypto();
        let invited = staged
            .add_proposals()
            .map(|add| {
                add.add_proposal()
                    .key_package()
                    .hash_ref(crypto)
                    .map(|r| r.as_slice().to_vec())
                    .map_err(|_| RoomError::Internal)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let record = PendingCommitRecord {
            binding: pending_binding(staged)?,
            message,
        };
        self.provider
            .storage()
            .write_psk(&self.pending_key(), &record)
            .map_err(|_| RoomError::Storage)?;
        Ok(Commit {
            message: record.message,
            welcome,
            invited,
            keys,
        })
    }

    fn pending_key(&self) -> PendingCommitKey<'_> {
        PendingCommitKey {
            sotto_pending_commit_of_group: self.group.group_id().as_slice(),
        }
    }

    /// The commit message of this member's pending commit, e.g. to send it again after
    /// [`load`](Self::load) (the relay orders it, or refuses it as late).
    pub fn pending_commit_message(&self) -> Option<&[u8]> {
        self.pending.as_ref().map(|p| p.message.as_slice())
    }

    /// Invites the members whose KeyPackages are given (as published by
    /// [`Identity::key_package`]). The commit also covers the queued removals and updates
    /// (see [`commit_pending_proposals`](Self::commit_pending_proposals)), never a queued
    /// add or group context extension. The commit is pending until confirmed.
    pub fn invite(&mut self, key_packages: &[&[u8]]) -> Result<Commit, RoomError> {
        self.ensure_can_commit()?;
        let mut packages = Vec::with_capacity(key_packages.len());
        let room = self.group.ciphersuite();
        for bytes in key_packages {
            match message_suite(bytes, WIRE_FORMAT_KEY_PACKAGE) {
                Some(id) if id != u16::from(room) => {
                    return Err(RoomError::WrongMlsSuite {
                        room: u16::from(room),
                        key_package: id,
                    })
                }
                _ => {}
            }
            packages.push(parse_key_package(bytes, room, self.provider.crypto())?);
        }
        let (commit, welcome) = self
            .build_commit(packages, Vec::new(), &[], None)
            .map_err(|_| RoomError::InvalidKeyPackage)?;
        self.finish_commit(&commit, welcome.as_ref())
    }

    /// Removes the members at `leaves`. The commit also covers the queued removals and
    /// updates, never a queued add or group context extension. The commit is pending until
    /// confirmed.
    pub fn remove(&mut self, leaves: &[u32]) -> Result<Commit, RoomError> {
        self.ensure_can_commit()?;
        let own = self.own_leaf();
        let present: Vec<u32> = self.group.members().map(|m| leaf_u32(m.index)).collect();
        if leaves.is_empty() || leaves.iter().any(|l| *l == own || !present.contains(l)) {
            return Err(RoomError::NoSuchMember);
        }
        let indices: Vec<LeafNodeIndex> = leaves.iter().map(|l| LeafNodeIndex::new(*l)).collect();
        let (commit, welcome) = self.build_commit(Vec::new(), indices, &[], None)?;
        self.finish_commit(&commit, welcome.as_ref())
    }

    /// Refreshes this member's leaf keys (post-compromise security) in a new epoch. The
    /// commit also covers the queued removals and updates, never a queued add or group
    /// context extension. The commit is pending until confirmed.
    pub fn self_update(&mut self) -> Result<Commit, RoomError> {
        self.ensure_can_commit()?;
        let (commit, welcome) = self.build_commit(Vec::new(), Vec::new(), &[], None)?;
        self.finish_commit(&commit, welcome.as_ref())
    }

    /// Moves the room to another SFrame suite from the next epoch on: a commit (with a
    /// GroupContextExtensions proposal of this member's own, and an update path) that every
    /// member applies at the epoch change like any key change, so the switch delay and the
    /// grace period of the older epochs work as always (frames sealed under the old suite
    /// still open). Only a member can make it; an external sender's proposal of group
    /// context extensions is always refused. Members whose build does not support the
    /// suite refuse the commit ([`Rejection::Params`]) and fall out of the room. The commit
    /// also covers the queued removals and updates. Pending until confirmed.
    pub fn change_suite(&mut self, suite: CipherSuite) -> Result<Commit, RoomError> {
        self.ensure_can_commit()?;
        let params = RoomParams {
            suite,
            ..self.params
        };
        let mut extensions = self.group.extensions().clone();
        extensions
            .add_or_replace(Extension::Unknown(
                PARAMS_EXTENSION_TYPE,
                UnknownExtension(params.encode()),
            ))
            .map_err(|_| RoomError::Internal)?;
        let (commit, welcome) = self.build_commit(Vec::new(), Vec::new(), &[], Some(extensions))?;
        self.finish_commit(&commit, welcome.as_ref())
    }

    /// Commits the queued removals (members who asked to leave, removals proposed by a
    /// member or by an external sender) and updates. A removal of this member is left for
    /// another member to commit. Queued adds and group context extensions are not included:
    /// they need [`commit_proposals`](Self::commit_proposals). The commit is pending until
    /// confirmed.
    pub fn commit_pending_proposals(&mut self) -> Result<Commit, RoomError> {
        self.commit_proposals(&[])
    }

    /// The queued proposals of the current epoch (those the room's policy let through).
    pub fn pending_proposals(&self) -> Result<Vec<ProposalInfo>, RoomError> {
        self.group
            .pending_proposals()
            .map(|p| self.proposal_info(p))
            .collect()
    }

    /// Commits the queued proposals the app approved (`approved`, by
    /// [`ProposalInfo::id`]: adds and group context extensions) together with everything
    /// [`commit_pending_proposals`](Self::commit_pending_proposals) commits. Fails with
    /// [`RoomError::NoSuchProposal`] if an id is not queued. The commit is pending until
    /// confirmed.
    pub fn commit_proposals(&mut self, approved: &[ProposalId]) -> Result<Commit, RoomError> {
        self.ensure_can_commit()?;
        for id in approved {
            if !self
                .group
                .pending_proposals()
                .any(|p| p.proposal_reference_ref().as_slice() == id.as_bytes())
            {
                return Err(RoomError::NoSuchProposal);
            }
        }
        let (commit, welcome) = self.build_commit(Vec::new(), Vec::new(), approved, None)?;
        self.finish_commit(&commit, welcome.as_ref())
    }

    /// Builds and stages a commit of this member: its own `adds` and `removes`, plus the
    /// queued proposals [`committable`] lets through (never openmls' default of every
    /// stored proposal), always with an UpdatePath. MLS lets a commit of adds go without
    /// one, but such a commit draws no randomness: its epoch secret follows from the
    /// previous epoch and the commit's (deterministic) content, so an instance rolled back
    /// to before it that made it again would reach the same epoch keys — and seal in them,
    /// being their maker (`tests/attack_pathless_commit.rs`). The path's fresh secret makes
    /// every commit of this instance lead to keys no other instance holds.
    fn build_commit(
        &mut self,
        adds: Vec<KeyPackage>,
        removes: Vec<LeafNodeIndex>,
        approved: &[ProposalId],
        extensions: Option<Extensions<GroupContext>>,
    ) -> Result<(MlsMessageOut, Option<MlsMessageOut>), RoomError> {
        let own = self.group.own_leaf_index();
        let mut builder = self
            .group
            .commit_builder()
            .consume_proposal_store(true)
            .propose_adds(adds)
            .propose_removals(removes);
        if let Some(extensions) = extensions {
            builder = builder
                .propose_group_context_extensions(extensions)
                .map_err(|_| RoomError::Internal)?;
        }
        let bundle = builder
            .force_self_update(true)
            .load_psks(self.provider.storage())
            .map_err(|_| RoomError::Internal)?
            // openmls would also make (and sign) a GroupInfo with the whole ratchet tree
            // for every commit, for external joins sotto does not offer; the Welcome's
            // GroupInfo is made regardless.
            .create_group_info(false)
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |p| committable(p, own, approved),
            )
            .map_err(|_| RoomError::Internal)?
            .stage_commit(&self.provider)
            .map_err(|_| RoomError::Internal)?;
        let (commit, welcome, _) = bundle.into_messages();
        Ok((commit, welcome))
    }

    /// Whether the room's policy lets a received proposal be queued (see
    /// [`Rejection::ProposalNotAllowed`]).
    fn proposal_allowed(&self, proposal: &QueuedProposal) -> bool {
        match (proposal.sender(), proposal.proposal()) {
            (Sender::External(_), Proposal::Remove(_)) => true,
            (Sender::Member(_), Proposal::Add(_) | Proposal::Remove(_) | Proposal::Update(_)) => {
                true
            }
            (Sender::Member(_), Proposal::GroupContextExtensions(gce)) => {
                (self.config.allow_policy_changes || !self.changes_policy(gce.extensions()))
                    && self.allowed_params(gce.extensions()).is_ok()
            }
            _ => false,
        }
    }

    /// Whether new group context extensions change the external senders or the required
    /// capabilities.
    fn changes_policy(&self, new: &Extensions<GroupContext>) -> bool {
        let current = self.group.extensions();
        current.external_senders() != new.external_senders()
            || current.required_capabilities() != new.required_capabilities()
    }

    fn proposal_info(&self, proposal: &QueuedProposal) -> Result<ProposalInfo, RoomError> {
        let sender = match proposal.sender() {
            Sender::Member(leaf) => ProposalSender::Member(leaf_u32(*leaf)),
            Sender::External(index) => {
                let bytes = index
                    .tls_serialize_detached()
                    .map_err(|_| RoomError::Internal)?;
                let bytes: [u8; 4] = bytes.try_into().map_err(|_| RoomError::Internal)?;
                ProposalSender::External(u32::from_be_bytes(bytes))
            }
            _ => return Err(RoomError::Rejected(Rejection::ProposalNotAllowed)),
        };
        let mut info = ProposalInfo {
            id: ProposalId(proposal.proposal_reference_ref().as_slice().to_vec()),
            kind: ProposalKind::Other,
            sender,
            target: None,
            key_package: None,
            pseudonym: None,
            needs_approval: true,
        };
        match proposal.proposal() {
            Proposal::Add(add) => {
                let kp = add.key_package();
                info.kind = ProposalKind::Add;
                info.key_package = Some(
                    kp.hash_ref(self.provider.crypto())
                        .map_err(|_| RoomError::Internal)?
                        .as_slice()
                        .to_vec(),
                );
                info.pseudonym = Some(kp.leaf_node().credential().serialized_content().to_vec());
            }
            Proposal::Remove(remove) => {
                info.kind = ProposalKind::Remove;
                info.target = Some(leaf_u32(remove.removed()));
                info.needs_approval = false;
            }
            Proposal::Update(_) => {
                info.kind = ProposalKind::Update;
                if let ProposalSender::Member(leaf) = sender {
                    info.target = Some(leaf);
                }
                info.needs_approval = false;
            }
            Proposal::GroupContextExtensions(_) => info.kind = ProposalKind::GroupContextExtensions,
            _ => {}
        }
        Ok(info)
    }

    /// Asks to leave: returns a proposal for the relay; another member commits it.
    pub fn leave(&mut self) -> Result<Vec<u8>, RoomError> {
        self.ensure_can_commit()?;
        self.group
            .leave_group(&self.provider, &self.signer)
            .map_err(|_| RoomError::Internal)?
            .to_bytes()
            .map_err(|_| RoomError::Internal)
    }

    /// Merges this member's pending commit (the relay ordered it). Returns the events,
    /// including the new epoch's `Current` keys.
    pub fn confirm_pending(&mut self) -> Result<Vec<RoomEvent>, RoomError> {
        let Some(made_here) = self.pending.as_ref().map(|p| p.made_here) else {
            return Err(RoomError::NoPendingCommit);
        };
        let before = self.member_map();
        self.group
            .merge_pending_commit(&self.provider)
            .map_err(|_| RoomError::Storage)?;
        self.pending = None;
        if made_here {
            // The new epoch holds this instance's fresh path secret: no other instance of
            // this member can have reached it.
            self.freshness = Freshness::Fresh;
        }
        self.after_merge(before)
    }

    /// Drops this member's pending commit (the relay refused it, or another commit won).
    pub fn discard_pending(&mut self) -> Result<(), RoomError> {
        if self.pending.take().is_none() {
            return Err(RoomError::NoPendingCommit);
        }
        self.group
            .clear_pending_commit(self.provider.storage())
            .map_err(|_| RoomError::Storage)?;
        self.provider
            .storage()
            .delete_psk(&self.pending_key())
            .map_err(|_| RoomError::Storage)
    }

    fn member_map(&self) -> BTreeMap<u32, (Vec<u8>, Vec<u8>)> {
        self.group
            .members()
            .map(|m| {
                (
                    leaf_u32(m.index),
                    (m.signature_key, m.credential.serialized_content().to_vec()),
                )
            })
            .collect()
    }

    /// Events for a merge: membership changes, the new epoch, and its `Current` keys.
    fn after_merge(
        &mut self,
        before: BTreeMap<u32, (Vec<u8>, Vec<u8>)>,
    ) -> Result<Vec<RoomEvent>, RoomError> {
        // Checked before the merge (a commit with parameters this build cannot use is
        // refused, and this member's own commits only make allowed ones).
        self.params = group_params(self.group.extensions()).map_err(RoomError::Params)?;
        let after = self.member_map();
        let mut events = Vec::new();
        for (leaf, (key, _)) in &before {
            if after.get(leaf).is_none_or(|(k, _)| k != key) {
                events.push(RoomEvent::MemberRemoved { leaf: *leaf });
            }
        }
        for (leaf, (key, pseudonym)) in &after {
            if before.get(leaf).is_none_or(|(k, _)| k != key) {
                events.push(RoomEvent::MemberAdded {
                    leaf: *leaf,
                    pseudonym: pseudonym.clone(),
                });
            }
        }
        events.push(RoomEvent::EpochChanged {
            epoch: self.epoch(),
        });
        let departed = events
            .iter()
            .filter_map(|e| match e {
                RoomEvent::MemberRemoved { leaf } => Some(*leaf),
                _ => None,
            })
            .collect();
        let keys = self.current_keys(self.merged_status())?;
        events.push(RoomEvent::Keys(keys.with_departed(departed)));
        Ok(events)
    }

    /// Processes handshake bytes from the relay (commits, proposals, or this member's own
    /// commit coming back). Any error leaves the room as it was.
    pub fn process(&mut self, bytes: &[u8]) -> Result<Vec<RoomEvent>, RoomError> {
        if !self.group.is_active() {
            return Err(RoomError::NotAMember);
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|p| !p.message.is_empty() && p.message == bytes)
        {
            return self.confirm_pending();
        }
        let message = match parse_message(bytes)? {
            MlsMessageBodyIn::PrivateMessage(m) => openmls::prelude::ProtocolMessage::from(m),
            MlsMessageBodyIn::PublicMessage(m) => openmls::prelude::ProtocolMessage::from(m),
            _ => return Err(RoomError::Rejected(Rejection::Malformed)),
        };
        let is_commit = message.content_type() == openmls::prelude::ContentType::Commit;
        let processed = self
            .group
            .process_message(&self.provider, message)
            .map_err(|e| rejection(&e))?;
        let own_leaf = openmls::prelude::Sender::Member(self.group.own_leaf_index());
        let from_own_leaf = *processed.sender() == own_leaf;
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                self.merge_foreign(*staged, from_own_leaf)
            }
            ProcessedMessageContent::ProposalMessage(proposal) => {
                if !self.proposal_allowed(&proposal) {
                    return Err(RoomError::Rejected(Rejection::ProposalNotAllowed));
                }
                let info = self.proposal_info(&proposal)?;
                self.group
                    .store_pending_proposal(self.provider.storage(), *proposal)
                    .map_err(|_| RoomError::Storage)?;
                Ok(vec![RoomEvent::ProposalQueued(info)])
            }
            ProcessedMessageContent::OwnPrivateMessage if is_commit => {
                Err(RoomError::Rejected(Rejection::FromOwnLeaf))
            }
            ProcessedMessageContent::OwnPrivateMessage
            | ProcessedMessageContent::OwnPendingCommit => Ok(Vec::new()),
            _ => Err(RoomError::Rejected(Rejection::Invalid)),
        }
    }

    /// Merges a commit this instance did not make. `from_own_leaf`: it was signed for this
    /// member's own leaf, so another instance of this member exists (loaded from the same
    /// storage) and may seal in the epochs from here on.
    fn merge_foreign(
        &mut self,
        staged: StagedCommit,
        from_own_leaf: bool,
    ) -> Result<Vec<RoomEvent>, RoomError> {
        // Parameters this build cannot use: refused before anything changes.
        self.next_params(&staged)?;
        if from_own_leaf {
            self.freshness = Freshness::Reloaded;
        }
        let mut events = Vec::new();
        if self.pending.take().is_some() {
            self.group
                .clear_pending_commit(self.provider.storage())
                .map_err(|_| RoomError::Storage)?;
            events.push(RoomEvent::PendingCommitDropped);
        }
        if staged.self_removed() {
            self.group
                .merge_staged_commit(&self.provider, staged)
                .map_err(|_| RoomError::Storage)?;
            events.push(RoomEvent::RemovedFromRoom);
            return Ok(events);
        }
        // The new epoch's secrets come from the staged commit, before merging.
        let staged_keys = self.staged_keys(&staged)?;
        let before = self.member_map();
        self.group
            .merge_staged_commit(&self.provider, staged)
            .map_err(|_| RoomError::Storage)?;
        let mut merged = self.after_merge(before)?;
        // The merged epoch's exporter must equal what the staged commit gave.
        if let Some(RoomEvent::Keys(keys)) = merged.last() {
            if keys.expose_base_key() != staged_keys.expose_base_key()
                || keys.token() != staged_keys.token()
                || keys.suite() != staged_keys.suite()
            {
                return Err(RoomError::Internal);
            }
        }
        events.append(&mut merged);
        Ok(events)
    }
}

/// The commit policy over queued proposals: this member's own (inline) proposals; queued
/// removals (except of this member, which another member commits) and updates; queued adds
/// and group context extensions only when the app approved them. Everything else, including
/// what the receive policy would refuse, stays out.
fn committable(proposal: &QueuedProposal, own: LeafNodeIndex, approved: &[ProposalId]) -> bool {
    if proposal.proposal_or_ref_type() == ProposalOrRefType::Proposal {
        return matches!(proposal.sender(), Sender::Member(leaf) if *leaf == own);
    }
    let is_approved = || {
        approved
            .iter()
            .any(|id| id.as_bytes() == proposal.proposal_reference_ref().as_slice())
    };
    match (proposal.sender(), proposal.proposal()) {
        (Sender::External(_) | Sender::Member(_), Proposal::Remove(remove)) => {
            remove.removed() != own
        }
        (Sender::Member(leaf), Proposal::Update(_)) => *leaf != own,
        (Sender::Member(_), Proposal::Add(_) | Proposal::GroupContextExtensions(_)) => {
            is_approved()
        }
        _ => false,
    }
}

/// RFC 9420 wire formats of the messages whose suite [`message_suite`] reads.
const WIRE_FORMAT_WELCOME: u16 = 3;
const WIRE_FORMAT_KEY_PACKAGE: u16 = 5;

/// The MLS cipher suite named by a serialized MLS 1.0 message of `wire_format` (a Welcome
/// or a KeyPackage), read from its fixed position (RFC 9420 §6: version, wire format, then
/// the Welcome's suite, or the KeyPackage's version and suite), so a suite this build
/// cannot parse is still named. `None` for anything else.
fn message_suite(bytes: &[u8], wire_format: u16) -> Option<u16> {
    let field = |at: usize| {
        bytes
            .get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_be_bytes)
    };
    if field(0)? != 1 || field(2)? != wire_format {
        return None;
    }
    match wire_format {
        WIRE_FORMAT_WELCOME => field(4),
        WIRE_FORMAT_KEY_PACKAGE => field(6),
        _ => None,
    }
}

/// Refuses a Welcome whose MLS suite this build does not support.
fn check_message_suite(bytes: &[u8]) -> Result<(), RoomError> {
    match message_suite(bytes, WIRE_FORMAT_WELCOME) {
        Some(id) if MlsSuite::from_id(id).is_none() => Err(RoomError::UnsupportedMlsSuite(id)),
        _ => Ok(()),
    }
}

/// Parses and validates a KeyPackage message for a group of MLS suite `room`: signature,
/// lifetime, suite, and sotto's parameters capability.
pub(crate) fn parse_key_package(
    bytes: &[u8],
    room: Ciphersuite,
    crypto: &impl OpenMlsCrypto,
) -> Result<KeyPackage, RoomError> {
    let MlsMessageBodyIn::KeyPackage(kp) =
        parse_message(bytes).map_err(|_| RoomError::InvalidKeyPackage)?
    else {
        return Err(RoomError::InvalidKeyPackage);
    };
    let kp = kp
        .validate(crypto, ProtocolVersion::Mls10)
        .map_err(|_| RoomError::InvalidKeyPackage)?;
    if kp.ciphersuite() != room {
        return Err(RoomError::WrongMlsSuite {
            room: u16::from(room),
            key_package: u16::from(kp.ciphersuite()),
        });
    }
    // The room requires sotto's parameters extension: a client that does not declare it
    // could not read the room's media parameters.
    if !kp
        .leaf_node()
        .capabilities()
        .extensions()
        .contains(&params_type())
    {
        return Err(RoomError::InvalidKeyPackage);
    }
    Ok(kp)
}

fn handshake_key_from<E>(exported: Result<Vec<u8>, E>) -> Result<HandshakeKey, RoomError> {
    let exported = Zeroizing::new(exported.map_err(|_| RoomError::Internal)?);
    let bytes: [u8; HANDSHAKE_KEY_LEN] = exported
        .as_slice()
        .try_into()
        .map_err(|_| RoomError::Internal)?;
    Ok(HandshakeKey::from_exported(bytes))
}

fn token_from<E>(exported: Result<Vec<u8>, E>) -> Result<ChannelToken, RoomError> {
    let bytes = exported.map_err(|_| RoomError::NotAMember)?;
    let token: [u8; CHANNEL_TOKEN_LEN] = bytes.try_into().map_err(|_| RoomError::Internal)?;
    Ok(ChannelToken(token))
}

impl<P: OpenMlsProvider> std::fmt::Debug for Room<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("epoch", &self.epoch())
            .field("own_leaf", &self.own_leaf())
            .field("pending", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}
