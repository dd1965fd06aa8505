//! Bytes SFrame adds to a 60-byte audio payload, per suite, measured by sealing.
//! README's overhead table is these numbers (`cargo test --test overhead -- --nocapture`).

use bytes::BytesMut;
use sotto::frame::{CipherSuite, FrameSealer};

fn overhead(suite: CipherSuite, kid: u64, ctr: u64) -> usize {
    let mut sealer = FrameSealer::starting_at(suite, kid, b"overhead", ctr).unwrap();
    let mut out = BytesMut::new();
    sealer.seal(b"", &[0u8; 60], &mut out).unwrap();
    out.len() - 60
}

#[test]
fn overhead_per_suite() {
    println!("suite                      KID<8,CTR<8  KID<256,CTR<65536  KID,CTR ~2^64");
    for suite in CipherSuite::ALL {
        let small = overhead(suite, 3, 5);
        let call = overhead(suite, 200, 60_000);
        let max = overhead(suite, u64::MAX, u64::MAX - 1);
        println!("{suite:<26} {small:>11}  {call:>17}  {max:>13}");
        // header is 1 config byte (+1 KID byte, +2 CTR bytes in a 20-minute call), then the tag.
        assert_eq!(small, 1 + suite.tag_len());
        assert_eq!(call, 1 + 1 + 2 + suite.tag_len());
        assert_eq!(max, 17 + suite.tag_len());
    }
    assert_eq!(overhead(CipherSuite::AesCtr128HmacSha256_32, 0, 0), 5);
    assert_eq!(overhead(CipherSuite::AesCtr128HmacSha256_80, 0, 0), 11);
    assert_eq!(overhead(CipherSuite::AesGcm128Sha256, 0, 0), 17);
}

/// Bytes SFrame adds per stream of the default room (S = 16, E = 4, 2 stream bits), at
/// AES_128_CTR_HMAC_SHA256_80 in a 20-minute call (counter 60,000 at 50 frames a second),
/// for the members of a room of up to 16 (leaves 0 to 15): stream 0 (the microphone) keeps
/// the 1-byte KID of a room without streams; the others' KIDs carry the stream above bit
/// 20, so they take 3 bytes.
#[test]
fn overhead_per_stream() {
    use sotto::keys::KidLayout;
    let layout = KidLayout::default();
    let suite = CipherSuite::AesCtr128HmacSha256_80;
    println!("stream  overhead at CTR-80, 20-minute call, leaves 0-15");
    for stream in 0..4u64 {
        let worst = (0..16u64)
            .flat_map(|leaf| (0..16u64).map(move |epoch| (leaf, epoch)))
            .map(|(leaf, epoch)| {
                overhead(suite, layout.compose(stream, leaf, epoch).unwrap(), 60_000)
            })
            .max()
            .unwrap();
        println!("{stream:>6}  {worst:>8}");
        if stream == 0 {
            assert!(worst <= 14, "the microphone's overhead target");
            assert_eq!(worst, 14);
        } else {
            assert_eq!(worst, 16);
        }
    }
}
