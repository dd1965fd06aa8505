//! The RTP mapping (`sotto::rtp`) end to end on two media sessions: both payload modes
//! round-trip whole Opus packets through RTP packets, and an SFU that rewrites what it can
//! see (the clear TOC byte, the RTP header, padding, duplicates, RED wrapping) gets
//! nothing past the receiver.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use sotto::frame::CipherSuite;
use sotto::keys::{KeyError, KidLayout, MemberId};
use sotto::media::{ChannelToken, EpochKeys, EpochStatus, MediaConfig, MediaSession};
use sotto::rtp::{
    open_payload, seal_payload, write_packet, PayloadMode, RtpError, RtpHeader, RtpPacket,
    RtpReceiver,
};

const OPUS: u8 = 111;
const RED: u8 = 63;

fn pair(t0: Instant) -> (MediaSession, MediaSession) {
    let suite = CipherSuite::AesGcm128Sha256;
    let keys = |own| {
        EpochKeys::assume_unique_for_key(
            1,
            EpochStatus::Current,
            suite,
            KidLayout::default(),
            0,
            (0..2).map(|leaf| MemberId { leaf, tag: 0 }).collect(),
            own,
            ChannelToken([1; 16]),
            vec![7; suite.key_len()],
        )
    };
    let mut alice = MediaSession::new(MediaConfig::default());
    let mut bob = MediaSession::new(MediaConfig::default());
    // Applied a switch delay before `t0`: keys in use at `t0`.
    let before = t0 - Duration::from_secs(2);
    alice.apply(keys(0), before).unwrap();
    bob.apply(keys(1), before).unwrap();
    (alice, bob)
}

/// An Opus-looking packet: a TOC byte (CELT fullband 20 ms, one frame) and a body.
fn opus(i: u8) -> Vec<u8> {
    let mut p = vec![0xfc];
    p.extend((0..59).map(|k| k ^ i));
    p
}

fn header(sequence: u16) -> RtpHeader {
    RtpHeader {
        marker: sequence == 0,
        payload_type: OPUS,
        sequence,
        timestamp: u32::from(sequence) * 960,
        ssrc: 0x5070_7070,
    }
}

#[test]
fn both_modes_round_trip_opus_packets_through_rtp() {
    let t0 = Instant::now();
    let modes = [
        PayloadMode::Sframe,
        PayloadMode::ClearToc,
        #[cfg(feature = "rtp-sframe")]
        PayloadMode::Draft,
    ];
    for mode in modes {
        let (mut alice, mut bob) = pair(t0);
        let mut rx = RtpReceiver::new(OPUS, None);
        for i in 0..50u8 {
            let now = t0 + Duration::from_millis(20 * u64::from(i));
            let packet = opus(i);
            let mut payload = BytesMut::new();
            let n = seal_payload(mode, &mut alice, &packet, &mut payload, now).unwrap();
            assert_eq!(n, payload.len());
            if mode == PayloadMode::ClearToc {
                assert_eq!(payload[0], 0xfc, "the TOC travels in the clear");
            }
            #[cfg(feature = "rtp-sframe")]
            if mode == PayloadMode::Draft {
                assert_eq!(payload[0], sotto::rtp::DRAFT_DESCRIPTOR);
            }
            let mut wire = BytesMut::new();
            write_packet(&header(u16::from(i)), &payload, &mut wire);
            let got = rx.receive(&wire).unwrap();
            let mut out = BytesMut::new();
            let received = open_payload(mode, &mut bob, got.payload, &mut out, now).unwrap();
            assert_eq!(&out[..], &packet[..]);
            assert_eq!(received.len, packet.len());
            assert_eq!(received.leaf, 0);
        }
    }
}

#[test]
fn an_sfu_cannot_change_the_clear_toc_or_replay_or_smuggle() {
    let t0 = Instant::now();
    let (mut alice, mut bob) = pair(t0);
    let mut rx = RtpReceiver::new(OPUS, Some(RED));
    let mut sealed = Vec::new();
    for i in 0..4u8 {
        let mut payload = BytesMut::new();
        seal_payload(
            PayloadMode::ClearToc,
            &mut alice,
            &opus(i),
            &mut payload,
            t0,
        )
        .unwrap();
        sealed.push(payload.to_vec());
    }
    let mut out = BytesMut::new();
    // Every other TOC value: refused by SFrame, nothing written.
    for toc in (0..=255u8).filter(|t| *t != 0xfc) {
        let mut forged = sealed[0].clone();
        forged[0] = toc;
        assert_eq!(
            open_payload(PayloadMode::ClearToc, &mut bob, &forged, &mut out, t0),
            Err(RtpError::Key(KeyError::Frame(
                sotto::frame::FrameError::AuthenticationFailed
            )))
        );
        assert!(out.is_empty());
    }
    // A clear-TOC payload read as a plain SFrame payload (or the reverse) does not open.
    assert!(open_payload(PayloadMode::Sframe, &mut bob, &sealed[0], &mut out, t0).is_err());
    assert!(open_payload(
        PayloadMode::ClearToc,
        &mut bob,
        &sealed[0][1..],
        &mut out,
        t0
    )
    .is_err());
    assert!(out.is_empty());
    // The genuine one still opens after all that.
    open_payload(PayloadMode::ClearToc, &mut bob, &sealed[0], &mut out, t0).unwrap();
    assert_eq!(&out[..], &opus(0)[..]);

    // Padding the SFU adds is stripped; the same packet again is a duplicate.
    let mut padded = BytesMut::new();
    write_packet(&header(1), &sealed[1], &mut padded);
    padded[0] |= 0x20;
    padded.extend_from_slice(&[0, 0, 0, 4]);
    let got = rx.receive(&padded).unwrap();
    assert_eq!(got.payload, &sealed[1][..]);
    assert_eq!(rx.receive(&padded), Err(RtpError::Duplicate(1)));
    // A RED packet wrapping it, under a new sequence number, is unwrapped; SFrame's replay
    // window refuses the frame itself once it opened.
    out.clear();
    open_payload(PayloadMode::ClearToc, &mut bob, got.payload, &mut out, t0).unwrap();
    let mut red = vec![OPUS];
    red.extend_from_slice(&sealed[1]);
    let mut wire = BytesMut::new();
    write_packet(
        &RtpHeader {
            payload_type: RED,
            ..header(2)
        },
        &red,
        &mut wire,
    );
    let got = rx.receive(&wire).unwrap();
    assert_eq!(got.payload, &sealed[1][..]);
    out.clear();
    assert!(matches!(
        open_payload(PayloadMode::ClearToc, &mut bob, got.payload, &mut out, t0),
        Err(RtpError::Key(KeyError::Frame(
            sotto::frame::FrameError::Replayed
        )))
    ));
    // Rewriting the RTP header (SSRC, timestamp, marker) changes nothing SFrame binds: the
    // payload still opens as what alice sealed, and only what alice sealed.
    let mut wire = BytesMut::new();
    write_packet(
        &RtpHeader {
            ssrc: 1,
            timestamp: 0,
            marker: true,
            ..header(3)
        },
        &sealed[2],
        &mut wire,
    );
    let parsed = RtpPacket::parse(&wire).unwrap();
    out.clear();
    open_payload(
        PayloadMode::ClearToc,
        &mut bob,
        parsed.payload,
        &mut out,
        t0,
    )
    .unwrap();
    assert_eq!(&out[..], &opus(2)[..]);
}

#[test]
fn an_empty_opus_packet_cannot_be_sealed_with_a_clear_toc() {
    let t0 = Instant::now();
    let (mut alice, _) = pair(t0);
    let mut out = BytesMut::new();
    assert_eq!(
        seal_payload(PayloadMode::ClearToc, &mut alice, &[], &mut out, t0),
        Err(RtpError::Empty)
    );
    assert!(out.is_empty());
}
