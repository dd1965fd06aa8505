//! sotto's openmls provider: [`Provider`] = [`Crypto`] + [`Storage`].
//!
//! [`Room`](crate::room::Room) takes any `OpenMlsProvider`; this one is what sotto's call
//! engine, examples and C ABI use, and what its benchmarks measure.
//!
//! - [`Crypto`] is openmls' RustCrypto provider (`openmls_rust_crypto`), except that with
//!   feature `pq` the X-Wing KEM of `MlsSuite::HybridPq` (HPKE seal, open, export and key
//!   derivation) goes to openmls' libcrux provider (`openmls_libcrux_crypto`, formally
//!   verified ML-KEM with an AVX2 path chosen at run time). Both implement the same
//!   draft-connolly-cfrg-xwing-kem-06 and derive the same keys from the same secrets, so
//!   members with either provider share rooms (tested). RustCrypto's X-Wing re-derives its
//!   ML-KEM key from the seed on every decapsulation in portable code: 335 µs per HPKE open
//!   against libcrux's 116 µs on the bench machine.
//! - [`Storage`] keeps openmls' state in memory, encoded with a compact binary serde format
//!   (one byte per byte string byte) instead of `openmls_memory_storage`'s JSON (a decimal
//!   number and a comma per byte). A PQ room's ratchet tree holds a 1,216-byte public key per
//!   node, and openmls rewrites the whole tree at every merge: as JSON that was about 0.8 ms
//!   per merge at 64 members.
//!
//! For persistence across restarts, give [`Room`](crate::room::Room) a provider whose
//! storage is durable (e.g. `openmls_sqlite_storage`), as `tests/room_persistence.rs` does.

mod codec;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use openmls_rust_crypto::RustCrypto;
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::storage::{traits, StorageProvider, CURRENT_VERSION};
use openmls_traits::types::{
    AeadType, Ciphersuite, CryptoError, ExporterSecret, HashType, HpkeCiphertext, HpkeConfig,
    HpkeKeyPair, KemOutput, SignatureScheme,
};
use openmls_traits::OpenMlsProvider;
use serde::Serialize;
use zeroize::Zeroizing;

pub use codec::CodecError;

use crate::room::RoomError;

/// sotto's openmls provider (see the [module docs](self)).
pub struct Provider {
    crypto: Crypto,
    storage: Storage,
}

impl Provider {
    /// A provider with empty storage. Fails only if the operating system gives no
    /// randomness to seed the X-Wing provider's generator (feature `pq`).
    pub fn new() -> Result<Provider, RoomError> {
        Provider::with_storage(Storage::default())
    }

    /// A provider over `storage`, e.g. a handle kept from an earlier provider
    /// ([`Storage`] is a shared handle), to [`Room::load`](crate::room::Room::load) a room
    /// again after the objects that held it were dropped.
    pub fn with_storage(storage: Storage) -> Result<Provider, RoomError> {
        Ok(Provider {
            crypto: Crypto::new()?,
            storage,
        })
    }
}

impl OpenMlsProvider for Provider {
    type CryptoProvider = Crypto;
    type RandProvider = RustCrypto;
    type StorageProvider = Storage;

    fn storage(&self) -> &Storage {
        &self.storage
    }

    fn crypto(&self) -> &Crypto {
        &self.crypto
    }

    fn rand(&self) -> &RustCrypto {
        &self.crypto.rust
    }
}

// ---------------------------------------------------------------------------------------
// crypto

/// openmls' RustCrypto provider, with X-Wing from openmls' libcrux provider (feature `pq`).
pub struct Crypto {
    rust: RustCrypto,
    #[cfg(feature = "pq")]
    xwing: openmls_libcrux_crypto::CryptoProvider,
}

impl Crypto {
    fn new() -> Result<Crypto, RoomError> {
        Ok(Crypto {
            rust: RustCrypto::default(),
            #[cfg(feature = "pq")]
            xwing: openmls_libcrux_crypto::CryptoProvider::new()
                .map_err(|_| RoomError::Internal)?,
        })
    }

    /// The provider of `config`'s KEM.
    fn hpke(&self, config: &HpkeConfig) -> &dyn OpenMlsCryptoHpke {
        #[cfg(feature = "pq")]
        if config.0 == openmls_traits::types::HpkeKemType::XWingKemDraft6 {
            return &self.xwing;
        }
        let _ = config;
        &self.rust
    }
}

/// The HPKE half of `OpenMlsCrypto`, object-safe, so [`Crypto::hpke`] can pick a provider.
trait OpenMlsCryptoHpke {
    fn seal(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        aad: &[u8],
        ptxt: &[u8],
    ) -> Result<HpkeCiphertext, CryptoError>;
    fn open(
        &self,
        config: HpkeConfig,
        input: &HpkeCiphertext,
        sk_r: &[u8],
        info: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError>;
    fn sender_export(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        context: &[u8],
        length: usize,
    ) -> Result<(KemOutput, ExporterSecret), CryptoError>;
    fn receiver_export(
        &self,
        config: HpkeConfig,
        enc: &[u8],
        sk_r: &[u8],
        info: &[u8],
        context: &[u8],
        length: usize,
    ) -> Result<ExporterSecret, CryptoError>;
    fn derive(&self, config: HpkeConfig, ikm: &[u8]) -> Result<HpkeKeyPair, CryptoError>;
}

impl<C: OpenMlsCrypto> OpenMlsCryptoHpke for C {
    fn seal(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        aad: &[u8],
        ptxt: &[u8],
    ) -> Result<HpkeCiphertext, CryptoError> {
        self.hpke_seal(config, pk_r, info, aad, ptxt)
    }

    fn open(
        &self,
        config: HpkeConfig,
        input: &HpkeCiphertext,
        sk_r: &[u8],
        info: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.hpke_open(config, input, sk_r, info, aad)
    }

    fn sender_export(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        context: &[u8],
        length: usize,
    ) -> Result<(KemOutput, ExporterSecret), CryptoError> {
        self.hpke_setup_sender_and_export(config, pk_r, info, context, length)
    }

    fn receiver_export(
        &self,
        config: HpkeConfig,
        enc: &[u8],
        sk_r: &[u8],
        info: &[u8],
        context: &[u8],
        length: usize,
    ) -> Result<ExporterSecret, CryptoError> {
        self.hpke_setup_receiver_and_export(config, enc, sk_r, info, context, length)
    }

    fn derive(&self, config: HpkeConfig, ikm: &[u8]) -> Result<HpkeKeyPair, CryptoError> {
        self.derive_hpke_keypair(config, ikm)
    }
}

type Secret = openmls::prelude::tls_codec::SecretVLBytes;

impl OpenMlsCrypto for Crypto {
    fn supports(&self, ciphersuite: Ciphersuite) -> Result<(), CryptoError> {
        self.rust.supports(ciphersuite)
    }

    fn supported_ciphersuites(&self) -> Vec<Ciphersuite> {
        self.rust.supported_ciphersuites()
    }

    fn hkdf_extract(&self, hash: HashType, salt: &[u8], ikm: &[u8]) -> Result<Secret, CryptoError> {
        self.rust.hkdf_extract(hash, salt, ikm)
    }

    fn hmac(&self, hash: HashType, key: &[u8], message: &[u8]) -> Result<Secret, CryptoError> {
        self.rust.hmac(hash, key, message)
    }

    fn hkdf_expand(
        &self,
        hash: HashType,
        prk: &[u8],
        info: &[u8],
        okm_len: usize,
    ) -> Result<Secret, CryptoError> {
        self.rust.hkdf_expand(hash, prk, info, okm_len)
    }

    fn hash(&self, hash: HashType, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.rust.hash(hash, data)
    }

    fn aead_encrypt(
        &self,
        alg: AeadType,
        key: &[u8],
        data: &[u8],
        nonce: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.rust.aead_encrypt(alg, key, data, nonce, aad)
    }

    fn aead_decrypt(
        &self,
        alg: AeadType,
        key: &[u8],
        ct_tag: &[u8],
        nonce: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.rust.aead_decrypt(alg, key, ct_tag, nonce, aad)
    }

    fn signature_key_gen(&self, alg: SignatureScheme) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        self.rust.signature_key_gen(alg)
    }

    fn verify_signature(
        &self,
        alg: SignatureScheme,
        data: &[u8],
        pk: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.rust.verify_signature(alg, data, pk, signature)
    }

    fn sign(&self, alg: SignatureScheme, data: &[u8], key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.rust.sign(alg, data, key)
    }

    fn hpke_seal(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        aad: &[u8],
        ptxt: &[u8],
    ) -> Result<HpkeCiphertext, CryptoError> {
        self.hpke(&config).seal(config, pk_r, info, aad, ptxt)
    }

    fn hpke_open(
        &self,
        config: HpkeConfig,
        input: &HpkeCiphertext,
        sk_r: &[u8],
        info: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.hpke(&config).open(config, input, sk_r, info, aad)
    }

    fn hpke_setup_sender_and_export(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        exporter_context: &[u8],
        exporter_length: usize,
    ) -> Result<(KemOutput, ExporterSecret), CryptoError> {
        self.hpke(&config)
            .sender_export(config, pk_r, info, exporter_context, exporter_length)
    }

    fn hpke_setup_receiver_and_export(
        &self,
        config: HpkeConfig,
        enc: &[u8],
        sk_r: &[u8],
        info: &[u8],
        exporter_context: &[u8],
        exporter_length: usize,
    ) -> Result<ExporterSecret, CryptoError> {
        self.hpke(&config).receiver_export(
            config,
            enc,
            sk_r,
            info,
            exporter_context,
            exporter_length,
        )
    }

    fn derive_hpke_keypair(
        &self,
        config: HpkeConfig,
        ikm: &[u8],
    ) -> Result<HpkeKeyPair, CryptoError> {
        self.hpke(&config).derive(config, ikm)
    }
}

// ---------------------------------------------------------------------------------------
// storage

/// What a [`Storage`] call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// A value could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A thread panicked while holding the storage's lock.
    #[error("storage lock poisoned")]
    Poisoned,
}

/// openmls' state in memory, compactly encoded (see the [module docs](self)).
///
/// A shared handle: clones see and change the same records (so a room can be reloaded
/// from a clone kept by the app). Every record is keyed by its kind and its encoded key;
/// lists (own leaf nodes, queued proposal references) are kept as lists of encoded items.
#[derive(Clone, Default)]
pub struct Storage {
    records: Arc<Mutex<Records>>,
}

/// Values are zeroized when overwritten, deleted or dropped (they hold the group's secrets
/// and this member's private keys).
#[derive(Default)]
struct Records {
    values: HashMap<Vec<u8>, Zeroizing<Vec<u8>>>,
    lists: HashMap<Vec<u8>, Vec<Zeroizing<Vec<u8>>>>,
}

/// The kinds of records (the first byte of a record's key).
#[derive(Clone, Copy)]
#[repr(u8)]
enum Kind {
    JoinConfig,
    OwnLeafNodes,
    Proposal,
    ProposalRefs,
    Tree,
    InterimTranscriptHash,
    Context,
    ConfirmationTag,
    GroupState,
    MessageSecrets,
    ResumptionPskStore,
    OwnLeafIndex,
    EpochSecrets,
    SignatureKeyPair,
    EncryptionKeyPair,
    EpochKeyPairs,
    KeyPackage,
    Psk,
}

fn record_key<K: Serialize + ?Sized>(kind: Kind, key: &K) -> Result<Vec<u8>, StorageError> {
    let mut out = vec![kind as u8];
    out.extend_from_slice(&codec::to_vec(key)?);
    Ok(out)
}

fn decode<V: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<V, StorageError> {
    Ok(codec::from_slice(bytes)?)
}

impl Storage {
    /// An independent copy of every record (a checkpoint: what a member that crashed now
    /// would restart from).
    pub fn snapshot(&self) -> Result<Storage, StorageError> {
        let records = self.lock()?;
        Ok(Storage {
            records: Arc::new(Mutex::new(Records {
                values: records.values.clone(),
                lists: records.lists.clone(),
            })),
        })
    }

    /// The bytes of every key and value held (what the records weigh, without the maps'
    /// own overhead).
    pub fn stored_bytes(&self) -> Result<usize, StorageError> {
        let records = self.lock()?;
        let values: usize = records.values.iter().map(|(k, v)| k.len() + v.len()).sum();
        let lists: usize = records
            .lists
            .iter()
            .map(|(k, items)| k.len() + items.iter().map(|i| i.len()).sum::<usize>())
            .sum();
        Ok(values + lists)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Records>, StorageError> {
        self.records.lock().map_err(|_| StorageError::Poisoned)
    }

    fn write<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &self,
        kind: Kind,
        key: &K,
        value: &V,
    ) -> Result<(), StorageError> {
        let key = record_key(kind, key)?;
        let value = Zeroizing::new(codec::to_vec(value)?);
        self.lock()?.values.insert(key, value);
        Ok(())
    }

    fn read<K: Serialize + ?Sized, V: serde::de::DeserializeOwned>(
        &self,
        kind: Kind,
        key: &K,
    ) -> Result<Option<V>, StorageError> {
        let key = record_key(kind, key)?;
        let records = self.lock()?;
        records.values.get(&key).map(|v| decode(v)).transpose()
    }

    fn delete<K: Serialize + ?Sized>(&self, kind: Kind, key: &K) -> Result<(), StorageError> {
        let key = record_key(kind, key)?;
        self.lock()?.values.remove(&key);
        Ok(())
    }

    fn append<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &self,
        kind: Kind,
        key: &K,
        item: &V,
    ) -> Result<(), StorageError> {
        let key = record_key(kind, key)?;
        let item = Zeroizing::new(codec::to_vec(item)?);
        self.lock()?.lists.entry(key).or_default().push(item);
        Ok(())
    }

    fn list<K: Serialize + ?Sized, V: serde::de::DeserializeOwned>(
        &self,
        kind: Kind,
        key: &K,
    ) -> Result<Vec<V>, StorageError> {
        let key = record_key(kind, key)?;
        let records = self.lock()?;
        records
            .lists
            .get(&key)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|item| decode(item))
            .collect()
    }

    fn delete_list<K: Serialize + ?Sized>(&self, kind: Kind, key: &K) -> Result<(), StorageError> {
        let key = record_key(kind, key)?;
        self.lock()?.lists.remove(&key);
        Ok(())
    }
}

/// The key of a group's proposal: the group id and the proposal reference.
fn proposal_key<G: Serialize, R: Serialize>(
    group_id: &G,
    proposal_ref: &R,
) -> Result<Vec<u8>, StorageError> {
    Ok(codec::to_vec(&(group_id, proposal_ref))?)
}

/// The key of one leaf's encryption key pairs in one epoch of a group.
#[derive(Serialize)]
struct EpochKeyPairsKey<'a, G, E> {
    group_id: &'a G,
    epoch: &'a E,
    leaf_index: u32,
}

impl StorageProvider<CURRENT_VERSION> for Storage {
    type Error = StorageError;

    fn write_mls_join_config<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MlsGroupJoinConfig: traits::MlsGroupJoinConfig<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        config: &MlsGroupJoinConfig,
    ) -> Result<(), StorageError> {
        self.write(Kind::JoinConfig, group_id, config)
    }

    fn append_own_leaf_node<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNode: traits::LeafNode<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        leaf_node: &LeafNode,
    ) -> Result<(), StorageError> {
        self.append(Kind::OwnLeafNodes, group_id, leaf_node)
    }

    fn queue_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
        proposal: &QueuedProposal,
    ) -> Result<(), StorageError> {
        let key = proposal_key(group_id, proposal_ref)?;
        self.write(Kind::Proposal, &key, proposal)?;
        self.append(Kind::ProposalRefs, group_id, proposal_ref)
    }

    fn write_tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        tree: &TreeSync,
    ) -> Result<(), StorageError> {
        self.write(Kind::Tree, group_id, tree)
    }

    fn write_interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        interim_transcript_hash: &InterimTranscriptHash,
    ) -> Result<(), StorageError> {
        self.write(
            Kind::InterimTranscriptHash,
            group_id,
            interim_transcript_hash,
        )
    }

    fn write_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_context: &GroupContext,
    ) -> Result<(), StorageError> {
        self.write(Kind::Context, group_id, group_context)
    }

    fn write_confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        confirmation_tag: &ConfirmationTag,
    ) -> Result<(), StorageError> {
        self.write(Kind::ConfirmationTag, group_id, confirmation_tag)
    }

    fn write_group_state<
        GroupState: traits::GroupState<CURRENT_VERSION>,
        GroupId: traits::GroupId<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_state: &GroupState,
    ) -> Result<(), StorageError> {
        self.write(Kind::GroupState, group_id, group_state)
    }

    fn write_message_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MessageSecrets: traits::MessageSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        message_secrets: &MessageSecrets,
    ) -> Result<(), StorageError> {
        self.write(Kind::MessageSecrets, group_id, message_secrets)
    }

    fn write_resumption_psk_store<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ResumptionPskStore: traits::ResumptionPskStore<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        resumption_psk_store: &ResumptionPskStore,
    ) -> Result<(), StorageError> {
        self.write(Kind::ResumptionPskStore, group_id, resumption_psk_store)
    }

    fn write_own_leaf_index<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNodeIndex: traits::LeafNodeIndex<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        own_leaf_index: &LeafNodeIndex,
    ) -> Result<(), StorageError> {
        self.write(Kind::OwnLeafIndex, group_id, own_leaf_index)
    }

    fn write_group_epoch_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupEpochSecrets: traits::GroupEpochSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_epoch_secrets: &GroupEpochSecrets,
    ) -> Result<(), StorageError> {
        self.write(Kind::EpochSecrets, group_id, group_epoch_secrets)
    }

    fn write_signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
        SignatureKeyPair: traits::SignatureKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
        signature_key_pair: &SignatureKeyPair,
    ) -> Result<(), StorageError> {
        self.write(Kind::SignatureKeyPair, public_key, signature_key_pair)
    }

    fn write_encryption_key_pair<
        EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &EncryptionKey,
        key_pair: &HpkeKeyPair,
    ) -> Result<(), StorageError> {
        self.write(Kind::EncryptionKeyPair, public_key, key_pair)
    }

    fn write_encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
        key_pairs: &[HpkeKeyPair],
    ) -> Result<(), StorageError> {
        let key = EpochKeyPairsKey {
            group_id,
            epoch,
            leaf_index,
        };
        self.write(Kind::EpochKeyPairs, &key, key_pairs)
    }

    fn write_key_package<
        HashReference: traits::HashReference<CURRENT_VERSION>,
        KeyPackage: traits::KeyPackage<CURRENT_VERSION>,
    >(
        &self,
        hash_ref: &HashReference,
        key_package: &KeyPackage,
    ) -> Result<(), StorageError> {
        self.write(Kind::KeyPackage, hash_ref, key_package)
    }

    fn write_psk<
        PskId: traits::PskId<CURRENT_VERSION>,
        PskBundle: traits::PskBundle<CURRENT_VERSION>,
    >(
        &self,
        psk_id: &PskId,
        psk: &PskBundle,
    ) -> Result<(), StorageError> {
        self.write(Kind::Psk, psk_id, psk)
    }

    fn mls_group_join_config<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MlsGroupJoinConfig: traits::MlsGroupJoinConfig<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<MlsGroupJoinConfig>, StorageError> {
        self.read(Kind::JoinConfig, group_id)
    }

    fn own_leaf_nodes<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNode: traits::LeafNode<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<LeafNode>, StorageError> {
        self.list(Kind::OwnLeafNodes, group_id)
    }

    fn queued_proposal_refs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<ProposalRef>, StorageError> {
        self.list(Kind::ProposalRefs, group_id)
    }

    fn queued_proposals<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<(ProposalRef, QueuedProposal)>, StorageError> {
        let refs: Vec<ProposalRef> = self.list(Kind::ProposalRefs, group_id)?;
        refs.into_iter()
            .filter_map(|proposal_ref| {
                let proposal = proposal_key(group_id, &proposal_ref)
                    .and_then(|key| self.read(Kind::Proposal, &key))
                    .transpose()?;
                Some(proposal.map(|proposal| (proposal_ref, proposal)))
            })
            .collect()
    }

    fn tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<TreeSync>, StorageError> {
        self.read(Kind::Tree, group_id)
    }

    fn group_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupContext>, StorageError> {
        self.read(Kind::Context, group_id)
    }

    fn interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<InterimTranscriptHash>, StorageError> {
        self.read(Kind::InterimTranscriptHash, group_id)
    }

    fn confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<ConfirmationTag>, StorageError> {
        self.read(Kind::ConfirmationTag, group_id)
    }

    fn group_state<
        GroupState: traits::GroupState<CURRENT_VERSION>,
        GroupId: traits::GroupId<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupState>, StorageError> {
        self.read(Kind::GroupState, group_id)
    }

    fn message_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MessageSecrets: traits::MessageSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<MessageSecrets>, StorageError> {
        self.read(Kind::MessageSecrets, group_id)
    }

    fn resumption_psk_store<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ResumptionPskStore: traits::ResumptionPskStore<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<ResumptionPskStore>, StorageError> {
        self.read(Kind::ResumptionPskStore, group_id)
    }

    fn own_leaf_index<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNodeIndex: traits::LeafNodeIndex<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<LeafNodeIndex>, StorageError> {
        self.read(Kind::OwnLeafIndex, group_id)
    }

    fn group_epoch_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupEpochSecrets: traits::GroupEpochSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupEpochSecrets>, StorageError> {
        self.read(Kind::EpochSecrets, group_id)
    }

    fn signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
        SignatureKeyPair: traits::SignatureKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
    ) -> Result<Option<SignatureKeyPair>, StorageError> {
        self.read(Kind::SignatureKeyPair, public_key)
    }

    fn encryption_key_pair<
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
        EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>,
    >(
        &self,
        public_key: &EncryptionKey,
    ) -> Result<Option<HpkeKeyPair>, StorageError> {
        self.read(Kind::EncryptionKeyPair, public_key)
    }

    fn encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
    ) -> Result<Vec<HpkeKeyPair>, StorageError> {
        let key = EpochKeyPairsKey {
            group_id,
            epoch,
            leaf_index,
        };
        Ok(self.read(Kind::EpochKeyPairs, &key)?.unwrap_or_default())
    }

    fn key_package<
        KeyPackageRef: traits::HashReference<CURRENT_VERSION>,
        KeyPackage: traits::KeyPackage<CURRENT_VERSION>,
    >(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> Result<Option<KeyPackage>, StorageError> {
        self.read(Kind::KeyPackage, hash_ref)
    }

    fn psk<PskBundle: traits::PskBundle<CURRENT_VERSION>, PskId: traits::PskId<CURRENT_VERSION>>(
        &self,
        psk_id: &PskId,
    ) -> Result<Option<PskBundle>, StorageError> {
        self.read(Kind::Psk, psk_id)
    }

    fn remove_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
    ) -> Result<(), StorageError> {
        let refs_key = record_key(Kind::ProposalRefs, group_id)?;
        let item = codec::to_vec(proposal_ref)?;
        let proposal = record_key(Kind::Proposal, &proposal_key(group_id, proposal_ref)?)?;
        let mut records = self.lock()?;
        if let Some(list) = records.lists.get_mut(&refs_key) {
            list.retain(|r| **r != item);
        }
        records.values.remove(&proposal);
        Ok(())
    }

    fn delete_own_leaf_nodes<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StorageError> {
        self.delete_list(Kind::OwnLeafNodes, group_id)
    }

    fn delete_group_config<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StorageError> {
        self.delete(Kind::JoinConfig, group_id)
    }

    fn delete_tree<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StorageError> {
        self.delete(Kind::Tree, group_id)
    }

    fn delete_confirmation_tag<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StorageError> {
        self.delete(Kind::ConfirmationTag, group_id)
    }

    fn delete_group_state<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StorageError> {
        self.delete(Kind::GroupState, group_id)
    }

    fn delete_context<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StorageError> {
        self.delete(Kind::Context, group_id)
    }

    fn delete_interim_transcript_hash<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StorageError> {
        self.delete(Kind::InterimTranscriptHash, group_id)
    }

    fn delete_message_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StorageError> {
        self.delete(Kind::MessageSecrets, group_id)
    }

    fn delete_all_resumption_psk_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StorageError> {
        self.delete(Kind::ResumptionPskStore, group_id)
    }

    fn delete_own_leaf_index<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StorageError> {
        self.delete(Kind::OwnLeafIndex, group_id)
    }

    fn delete_group_epoch_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StorageError> {
        self.delete(Kind::EpochSecrets, group_id)
    }

    fn clear_proposal_queue<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<(), StorageError> {
        let refs: Vec<ProposalRef> = self.list(Kind::ProposalRefs, group_id)?;
        for proposal_ref in &refs {
            self.delete(Kind::Proposal, &proposal_key(group_id, proposal_ref)?)?;
        }
        self.delete_list(Kind::ProposalRefs, group_id)
    }

    fn delete_signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
    ) -> Result<(), StorageError> {
        self.delete(Kind::SignatureKeyPair, public_key)
    }

    fn delete_encryption_key_pair<EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>>(
        &self,
        public_key: &EncryptionKey,
    ) -> Result<(), StorageError> {
        self.delete(Kind::EncryptionKeyPair, public_key)
    }

    fn delete_encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
    ) -> Result<(), StorageError> {
        let key = EpochKeyPairsKey {
            group_id,
            epoch,
            leaf_index,
        };
        self.delete(Kind::EpochKeyPairs, &key)
    }

    fn delete_key_package<KeyPackageRef: traits::HashReference<CURRENT_VERSION>>(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> Result<(), StorageError> {
        self.delete(Kind::KeyPackage, hash_ref)
    }

    fn delete_psk<PskKey: traits::PskId<CURRENT_VERSION>>(
        &self,
        psk_id: &PskKey,
    ) -> Result<(), StorageError> {
        self.delete(Kind::Psk, psk_id)
    }
}

/// The storage codec's decoder, for the fuzz target `storage_codec`.
#[doc(hidden)]
pub mod fuzzing {
    use openmls::prelude::{GroupContext, KeyPackage};

    use super::codec;

    /// Decodes `data` as any value, as a KeyPackage and as a GroupContext (types openmls
    /// stores). A typed value that decodes must encode and decode back to an equal value.
    /// Returns how many typed decodes succeeded, or which round trip changed a value.
    pub fn decode(data: &[u8]) -> Result<usize, &'static str> {
        let _ = codec::from_slice::<serde::de::IgnoredAny>(data);
        let mut decoded = 0;
        if let Ok(kp) = codec::from_slice::<KeyPackage>(data) {
            let again = codec::to_vec(&kp).map_err(|_| "a decoded KeyPackage does not encode")?;
            if codec::from_slice::<KeyPackage>(&again).ok() != Some(kp) {
                return Err("a KeyPackage changed in a round trip");
            }
            decoded += 1;
        }
        if let Ok(context) = codec::from_slice::<GroupContext>(data) {
            let again =
                codec::to_vec(&context).map_err(|_| "a decoded GroupContext does not encode")?;
            if codec::from_slice::<GroupContext>(&again).ok() != Some(context) {
                return Err("a GroupContext changed in a round trip");
            }
            decoded += 1;
        }
        Ok(decoded)
    }

    /// `value` encoded (to write seeds).
    pub fn encode<T: serde::Serialize>(value: &T) -> Option<Vec<u8>> {
        codec::to_vec(value).ok()
    }

    /// `data` decoded as a `T`.
    pub fn decode_as<T: serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
        codec::from_slice(data).ok()
    }
}
