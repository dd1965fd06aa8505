//! Rooms that describe themselves: the media parameters travel in the MLS group context
//! (sotto's private-use extension), joiners read them from the Welcome, a member may move
//! the room to another SFrame suite mid-call, and nobody else can change them.

mod common;

use sotto::room::MlsSuite;
use std::time::{Duration, Instant};

use common::{deliver_commit, exchange_all, identity, room_of, Member};
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{
    BasicCredential, Capabilities, CredentialWithKey, Extension, ExtensionType, Extensions,
    GroupContext, KeyPackage, MlsGroup, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn,
    ProcessedMessageContent, ProtocolVersion, RequiredCapabilitiesExtension, StagedWelcome,
    UnknownExtension, PURE_CIPHERTEXT_WIRE_FORMAT_POLICY,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use sotto::frame::CipherSuite;
use sotto::keys::{KidLayout, StreamId};
use sotto::media::MediaConfig;
use sotto::room::{
    ParamsError, Rejection, Room, RoomConfig, RoomError, RoomParams, PARAMS_EXTENSION_TYPE,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The creator's parameters reach a joiner whose own configuration says something else
/// entirely; frames open both ways.
#[test]
fn a_joiner_with_another_local_config_still_joins_and_opens() {
    let params = RoomParams {
        suite: CipherSuite::AesGcm128Sha256,
        layout: KidLayout::new(8, 6).unwrap(),
        stream_bits: 3,
    };
    let t0 = Instant::now();
    let creator = RoomConfig {
        params,
        ..RoomConfig::default()
    };
    let mut m = vec![Member::create("alice", creator, MediaConfig::default(), t0)];
    let bob = identity("bob");
    let kp = bob.key_package(MlsSuite::Classic).unwrap();
    let commit = m[0].room.invite(&[&kp.bytes]).unwrap();
    let welcome = commit.welcome.clone().unwrap();
    deliver_commit(&mut m, 0, commit, t0);
    // Bob's configuration names another suite, layout and stream bits: not used.
    let local = RoomConfig {
        params: RoomParams {
            suite: CipherSuite::AesCtr128HmacSha256_32,
            layout: KidLayout::new(16, 4).unwrap(),
            stream_bits: 0,
        },
        ..RoomConfig::default()
    };
    m.push(Member::join(
        bob,
        local,
        MediaConfig::default(),
        &welcome,
        t0,
    ));
    assert_eq!(m[1].room.params(), params);
    let commit = m[1].room.self_update().unwrap();
    deliver_commit(&mut m, 1, commit, t0);
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(exchange_all(&mut m, t1), 2);
    // Bob may send the room's 2^3 streams (his own configuration said 1): stream 5's KID
    // carries 5 above S + E = 14 bits, and alice opens it as stream 5.
    let mut frame = bytes::BytesMut::new();
    m[1].media
        .seal(StreamId(5), b"stream five", &mut frame, t1)
        .unwrap();
    let (header, _) = sotto::frame::Header::parse(&frame).unwrap();
    assert_eq!(header.kid >> 14, 5);
    let (received, payload) = m[0].open(&frame, t1).unwrap();
    assert_eq!(
        (received.stream, payload.as_slice()),
        (StreamId(5), &b"stream five"[..])
    );
}

/// A client of another build, speaking openmls directly, makes a room whose parameters
/// name a suite sotto does not implement (or carries none): sotto's joiner refuses its
/// Welcome with the typed error that names the value.
#[test]
fn a_welcome_with_unsupported_or_missing_params_is_refused_by_name() {
    let mut unsupported = RoomParams::default().encode();
    unsupported[1..3].copy_from_slice(&0x0009u16.to_be_bytes());
    let mut wrong_version = RoomParams::default().encode();
    wrong_version[0] = 7;
    let cases: [(Option<Vec<u8>>, ParamsError); 3] = [
        (Some(unsupported), ParamsError::UnsupportedSuite(9)),
        (Some(wrong_version), ParamsError::UnsupportedVersion(7)),
        (None, ParamsError::Missing),
    ];
    for (content, expected) in cases {
        let provider = OpenMlsRustCrypto::default();
        let signer =
            SignatureKeyPair::new(MlsSuite::Classic.ciphersuite().signature_algorithm()).unwrap();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(b"other build".to_vec()).into(),
            signature_key: signer.public().into(),
        };
        let mut extensions = Vec::new();
        if let Some(content) = content {
            extensions.push(Extension::Unknown(
                PARAMS_EXTENSION_TYPE,
                UnknownExtension(content),
            ));
            extensions.push(Extension::RequiredCapabilities(
                RequiredCapabilitiesExtension::new(
                    &[ExtensionType::Unknown(PARAMS_EXTENSION_TYPE)],
                    &[],
                    &[],
                ),
            ));
        }
        let mut group = MlsGroup::builder()
            .ciphersuite(MlsSuite::Classic.ciphersuite())
            .use_ratchet_tree_extension(true)
            .with_wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .with_capabilities(Capabilities::new(
                None,
                None,
                Some(&[ExtensionType::Unknown(PARAMS_EXTENSION_TYPE)]),
                None,
                None,
            ))
            .with_group_context_extensions(
                Extensions::<GroupContext>::from_vec(extensions).unwrap(),
            )
            .build(&provider, &signer, credential)
            .unwrap();
        let joiner = identity("bob");
        let published = joiner.key_package(MlsSuite::Classic).unwrap();
        let MlsMessageBodyIn::KeyPackage(kp) =
            MlsMessageIn::tls_deserialize_exact(&published.bytes)
                .unwrap()
                .extract()
        else {
            panic!("a KeyPackage")
        };
        let kp = kp
            .validate(provider.crypto(), ProtocolVersion::Mls10)
            .unwrap();
        let (_, welcome, _) = group.add_members(&provider, &signer, &[kp]).unwrap();
        let welcome = welcome.to_bytes().unwrap();
        let error = Room::join(joiner, RoomConfig::default(), &welcome)
            .map(|_| ())
            .unwrap_err()
            .error;
        assert_eq!(error, RoomError::Params(expected));
    }
}

/// A member moves the room to another SFrame suite mid-call while everyone speaks: the
/// change applies at the epoch change with the switch delay, frames of the old epoch
/// (old suite) still open in their grace period, and not one frame is lost.
#[test]
fn a_member_changes_the_suite_mid_call_and_no_frame_is_lost() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob", "carol"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let mut now = t0 + Duration::from_secs(1);
    let mut opened = 0;
    for _ in 0..20 {
        opened += exchange_all(&mut m, now);
        now += ms(20);
    }
    let before = m[0].room.epoch();
    // Bob changes the suite; carol processes the commit 300 ms late and keeps sealing in
    // the old epoch meanwhile.
    let commit = m[1]
        .room
        .change_suite(CipherSuite::AesGcm256Sha512)
        .unwrap();
    assert_eq!(commit.keys.suite(), CipherSuite::AesGcm256Sha512);
    m[1].apply_staged(commit.keys, now);
    m[0].process(&commit.message, now);
    m[1].confirm(now);
    let late = commit.message.clone();
    let carol_at = now + ms(300);
    for _ in 0..100 {
        if now == carol_at {
            m[2].process(&late, now);
        }
        opened += exchange_all(&mut m, now);
        now += ms(20);
    }
    assert_eq!(opened, 120 * 6);
    for x in &m {
        assert_eq!(x.room.epoch(), before + 1);
        assert_eq!(x.room.params().suite, CipherSuite::AesGcm256Sha512);
        assert_eq!(x.media.sending_epoch(), Some(before + 1));
        assert_eq!(x.room.safety_code(), m[0].room.safety_code());
    }
    // AES-256-GCM frames carry a 16-byte tag, as the new suite says.
    let frame = m[0].seal(b"x", now);
    assert_eq!(frame.len(), 2 + 1 + 16);
}

fn sotto_capabilities() -> Capabilities {
    Capabilities::new(
        None,
        None,
        Some(&[ExtensionType::Unknown(PARAMS_EXTENSION_TYPE)]),
        None,
        None,
    )
}

/// Group context extensions of a sotto room with these parameter bytes.
fn with_params(content: Vec<u8>) -> Extensions<GroupContext> {
    Extensions::from_vec(vec![
        Extension::Unknown(PARAMS_EXTENSION_TYPE, UnknownExtension(content)),
        Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
            &[ExtensionType::Unknown(PARAMS_EXTENSION_TYPE)],
            &[],
            &[],
        )),
    ])
    .unwrap()
}

/// A member speaking openmls directly (another implementation, or a malicious member
/// with its own client): it can propose and commit whatever MLS allows.
struct RawMember {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    group: MlsGroup,
}

impl RawMember {
    /// Invited by `m[0]` and joined from the Welcome.
    fn join(m: &mut [Member], now: Instant) -> RawMember {
        let provider = OpenMlsRustCrypto::default();
        let signer =
            SignatureKeyPair::new(MlsSuite::Classic.ciphersuite().signature_algorithm()).unwrap();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(b"erin".to_vec()).into(),
            signature_key: signer.public().into(),
        };
        let kp = KeyPackage::builder()
            .leaf_node_capabilities(sotto_capabilities())
            .build(
                MlsSuite::Classic.ciphersuite(),
                &provider,
                &signer,
                credential,
            )
            .unwrap();
        let bytes = openmls::prelude::MlsMessageOut::from(kp.key_package().clone())
            .to_bytes()
            .unwrap();
        let commit = m[0].room.invite(&[&bytes]).unwrap();
        let welcome = commit.welcome.clone().unwrap();
        deliver_commit(m, 0, commit, now);
        let MlsMessageBodyIn::Welcome(welcome) = MlsMessageIn::tls_deserialize_exact(&welcome)
            .unwrap()
            .extract()
        else {
            panic!("a Welcome")
        };
        let config = MlsGroupJoinConfig::builder()
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .build();
        let group = StagedWelcome::new_from_welcome(&provider, &config, welcome, None)
            .unwrap()
            .into_group(&provider)
            .unwrap();
        RawMember {
            provider,
            signer,
            group,
        }
    }

    /// The group's current extensions (external senders and all) with these parameter
    /// bytes.
    fn with_params(&self, content: Vec<u8>) -> Extensions<GroupContext> {
        let mut extensions = self.group.extensions().clone();
        extensions
            .add_or_replace(Extension::Unknown(
                PARAMS_EXTENSION_TYPE,
                UnknownExtension(content),
            ))
            .unwrap();
        extensions
    }

    fn propose(&mut self, extensions: Extensions<GroupContext>) -> Vec<u8> {
        let (proposal, _) = self
            .group
            .propose_group_context_extensions(&self.provider, extensions, &self.signer)
            .unwrap();
        proposal.to_bytes().unwrap()
    }

    fn commit(&mut self, extensions: Extensions<GroupContext>) -> Vec<u8> {
        // Its own earlier proposals stay out (MLS allows one such proposal per commit).
        self.group
            .clear_pending_proposals(self.provider.storage())
            .unwrap();
        let (commit, _, _) = self
            .group
            .update_group_context_extensions(&self.provider, extensions, &self.signer)
            .unwrap();
        self.group
            .clear_pending_commit(self.provider.storage())
            .unwrap();
        commit.to_bytes().unwrap()
    }

    fn take(&mut self, message: &[u8]) {
        let message = MlsMessageIn::tls_deserialize_exact(message)
            .unwrap()
            .try_into_protocol_message()
            .unwrap();
        match self
            .group
            .process_message(&self.provider, message)
            .unwrap()
            .into_content()
        {
            ProcessedMessageContent::StagedCommitMessage(staged) => self
                .group
                .merge_staged_commit(&self.provider, *staged)
                .unwrap(),
            _ => panic!("a commit"),
        }
    }
}

/// Nobody outside the room's members changes its parameters, and no member changes them
/// to what cannot work: an external sender's GroupContextExtensions proposal is refused;
/// a member's proposal that changes the KID layout (fixed for the room's life), names a
/// suite this build lacks, or drops the parameters is refused; such a member's *commit*
/// is refused too and changes nothing. A valid suite change proposed by a member waits for
/// the app's approval.
#[test]
fn parameters_cannot_be_changed_from_outside_or_to_what_cannot_work() {
    use openmls::prelude::{ExternalProposal, GroupEpoch, GroupId, SenderExtensionIndex};
    let t0 = Instant::now();
    let relay =
        SignatureKeyPair::new(MlsSuite::Classic.ciphersuite().signature_algorithm()).unwrap();
    // The relay is the room's external sender: openmls takes its proposal, sotto's policy
    // refuses it.
    let config = RoomConfig {
        external_senders: vec![(relay.public().to_vec(), b"relay".to_vec())],
        ..RoomConfig::default()
    };
    let mut m = room_of(&["alice", "bob"], config, MediaConfig::default(), t0);
    let mut erin = RawMember::join(&mut m, t0);
    let gcm = RoomParams {
        suite: CipherSuite::AesGcm128Sha256,
        ..RoomParams::default()
    };
    let proposal = ExternalProposal::new_group_context_extensions::<OpenMlsRustCrypto>(
        with_params(gcm.encode()),
        GroupId::from_slice(m[0].room.group_id()),
        GroupEpoch::from(m[0].room.epoch()),
        &relay,
        SenderExtensionIndex::new(0),
    )
    .unwrap()
    .to_bytes()
    .unwrap();
    for x in m.iter_mut() {
        assert_eq!(
            x.room.process(&proposal).map(|_| ()),
            Err(RoomError::Rejected(Rejection::ProposalNotAllowed))
        );
    }

    let relayout = RoomParams {
        layout: KidLayout::new(8, 6).unwrap(),
        ..RoomParams::default()
    };
    let mut unknown_suite = RoomParams::default().encode();
    unknown_suite[1..3].copy_from_slice(&0x0042u16.to_be_bytes());
    let no_params = Extensions::<GroupContext>::empty();
    let bad = [
        erin.with_params(relayout.encode()),
        erin.with_params(unknown_suite),
        no_params,
    ];
    for extensions in bad.iter().cloned() {
        let proposal = erin.propose(extensions);
        for x in m.iter_mut() {
            assert_eq!(
                x.room.process(&proposal).map(|_| ()),
                Err(RoomError::Rejected(Rejection::ProposalNotAllowed))
            );
        }
    }
    let safety = m[0].room.safety_code();
    let epoch = m[0].room.epoch();
    let expected = [
        ParamsError::Fixed,
        ParamsError::UnsupportedSuite(0x42),
        ParamsError::Missing,
    ];
    for (extensions, error) in bad.into_iter().zip(expected) {
        let commit = erin.commit(extensions);
        for x in m.iter_mut() {
            assert_eq!(
                x.room.process(&commit).map(|_| ()),
                Err(RoomError::Rejected(Rejection::Params(error)))
            );
            assert_eq!((x.room.epoch(), x.room.safety_code()), (epoch, safety));
            assert_eq!(x.room.params(), RoomParams::default());
        }
    }
    // A valid change from a member: queued, and only the app's approval commits it.
    let proposal = erin.propose(erin.with_params(gcm.encode()));
    for x in m.iter_mut() {
        let events = x.room.process(&proposal).unwrap();
        let info = events
            .iter()
            .find_map(|e| match e {
                sotto::room::RoomEvent::ProposalQueued(info) => Some(info.clone()),
                _ => None,
            })
            .unwrap();
        assert!(info.needs_approval);
    }
    let commit = m[0].room.self_update().unwrap();
    let message = commit.message.clone();
    deliver_commit(&mut m, 0, commit, t0);
    erin.take(&message);
    assert_eq!(m[1].room.params(), RoomParams::default());
    let proposal = erin.propose(erin.with_params(gcm.encode()));
    for x in m.iter_mut() {
        x.room.process(&proposal).unwrap();
    }
    let queued = m[0].room.pending_proposals().unwrap();
    let commit = m[0].room.commit_proposals(&[queued[0].id.clone()]).unwrap();
    let message = commit.message.clone();
    deliver_commit(&mut m, 0, commit, t0);
    erin.take(&message);
    assert_eq!(m[1].room.params(), gcm);
    assert_eq!(
        sotto::room::RoomParams::decode(
            &erin
                .group
                .extensions()
                .unknown(PARAMS_EXTENSION_TYPE)
                .unwrap()
                .0
        ),
        Ok(gcm)
    );
}

/// A client whose KeyPackage does not declare sotto's parameters extension could not read
/// the room's media parameters: inviting it is refused with a typed error, and nothing is
/// committed.
#[test]
fn a_key_package_without_the_parameters_capability_is_refused() {
    let t0 = Instant::now();
    let mut m = [Member::create(
        "alice",
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    )];
    let provider = OpenMlsRustCrypto::default();
    let signer =
        SignatureKeyPair::new(MlsSuite::Classic.ciphersuite().signature_algorithm()).unwrap();
    let credential = || CredentialWithKey {
        credential: BasicCredential::new(b"plain mls".to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let published = |kp: openmls::prelude::KeyPackageBundle| {
        openmls::prelude::MlsMessageOut::from(kp.key_package().clone())
            .to_bytes()
            .unwrap()
    };
    let without = KeyPackage::builder()
        .build(
            MlsSuite::Classic.ciphersuite(),
            &provider,
            &signer,
            credential(),
        )
        .unwrap();
    assert_eq!(
        m[0].room.invite(&[&published(without)]).map(|_| ()),
        Err(RoomError::InvalidKeyPackage)
    );
    assert!(!m[0].room.has_pending_commit());
    // The same client declaring the extension is invited.
    let with = KeyPackage::builder()
        .leaf_node_capabilities(sotto_capabilities())
        .build(
            MlsSuite::Classic.ciphersuite(),
            &provider,
            &signer,
            credential(),
        )
        .unwrap();
    assert!(m[0].room.invite(&[&published(with)]).is_ok());
}

/// A crashed-and-restored member: a room reloaded from storage after a suite change has
/// the changed suite, whatever the loader's configuration says, and its keys open what
/// the others seal in it once it has made its own commit.
#[test]
fn a_restored_member_reads_the_parameters_from_its_storage() {
    let t0 = Instant::now();
    let mut m = room_of(
        &["alice", "bob"],
        RoomConfig::default(),
        MediaConfig::default(),
        t0,
    );
    let commit = m[0]
        .room
        .change_suite(CipherSuite::AesGcm128Sha256)
        .unwrap();
    deliver_commit(&mut m, 0, commit, t0);
    let provider = common::storage_copy(&m[1].room);
    let key = m[1].room.signature_key().to_vec();
    let group = m[1].room.group_id().to_vec();
    // The loader's configuration names another suite: not used.
    let local = RoomConfig {
        params: RoomParams {
            suite: CipherSuite::AesCtr128HmacSha256_32,
            ..RoomParams::default()
        },
        ..RoomConfig::default()
    };
    let (room, keys) = Room::load(provider, &key, &group, local).unwrap();
    assert_eq!(room.params().suite, CipherSuite::AesGcm128Sha256);
    assert_eq!(keys.suite(), CipherSuite::AesGcm128Sha256);
    let mut media = sotto::media::MediaSession::new(MediaConfig::default());
    media.apply(keys, t0).unwrap();
    m[1].room = room;
    m[1].media = media;
    // Its own commit makes it speak again; everyone opens everyone under the suite.
    let commit = m[1].room.self_update().unwrap();
    deliver_commit(&mut m, 1, commit, t0);
    assert_eq!(m[0].room.params().suite, CipherSuite::AesGcm128Sha256);
    assert_eq!(exchange_all(&mut m, t0 + Duration::from_secs(1)), 2);
}
