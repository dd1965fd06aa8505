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
