//! RFC 9605 Appendix C.5: the five full-frame test vectors, embedded so that a fresh
//! checkout checks conformance without the shared test-vector file.

use bytes::BytesMut;

use super::{CipherSuite, FrameOpener, FrameSealer, KeyMaterial};

struct Case {
    suite: u16,
    kid: u64,
    ctr: u64,
    base_key: &'static str,
    sframe_secret: &'static str,
    sframe_key: &'static str,
    sframe_salt: &'static str,
    metadata: &'static str,
    nonce: &'static str,
    pt: &'static str,
    ct: &'static str,
}

const CASES: [Case; 5] = [
    Case {
        suite: 1,
        kid: 0x123,
        ctr: 0x4567,
        base_key: "000102030405060708090a0b0c0d0e0f",
        sframe_secret: "d926952ca8b7ec4a95941d1ada3a5203ceff8cceee34f574d23909eb314c40c0",
        sframe_key: "3f7d9a7c83ae8e1c8a11ae695ab59314b367e359fadac7b9c46b2bc6f81f46e16b96f0811868d59402b7e870102720b3",
        sframe_salt: "50b29329a04dc0f184ac3168",
        metadata: "4945544620534672616d65205747",
        nonce: "50b29329a04dc0f184ac740f",
        pt: "64726166742d696574662d736672616d652d656e63",
        ct: "9901234567449408b6f490086165b9d6f62b24ae1a59a56486b4ae8ed036b88912e24f11",
    },
    Case {
        suite: 2,
        kid: 0x123,
        ctr: 0x4567,
        base_key: "000102030405060708090a0b0c0d0e0f",
        sframe_secret: "d926952ca8b7ec4a95941d1ada3a5203ceff8cceee34f574d23909eb314c40c0",
        sframe_key: "e2ec5c797540310483b16bf6e7a570d2a27d192fe869c7ccd8584a8d9dab91549fbe553f5113461ec6aa83bf3865553e",
        sframe_salt: "e68ac8dd3d02fbcd368c5577",
        metadata: "4945544620534672616d65205747",
        nonce: "e68ac8dd3d02fbcd368c1010",
        pt: "64726166742d696574662d736672616d652d656e63",
        ct: "99012345673f31438db4d09434e43afa0f8a2f00867a2be085046a9f5cb4f101d607",
    },
    Case {
        suite: 3,
        kid: 0x123,
        ctr: 0x4567,
        base_key: "000102030405060708090a0b0c0d0e0f",
        sframe_secret: "d926952ca8b7ec4a95941d1ada3a5203ceff8cceee34f574d23909eb314c40c0",
        sframe_key: "2c5703089cbb8c583475e4fc461d97d18809df79b6d550f78eb6d50ffa80d89211d57909934f46f5405e38cd583c69fe",
        sframe_salt: "38c16e4f5159700c00c7f350",
        metadata: "4945544620534672616d65205747",
        nonce: "38c16e4f5159700c00c7b637",
        pt: "64726166742d696574662d736672616d652d656e63",
        ct: "990123456717fc8af28a5a695afcfc6c8df6358a17e26b2fcb3bae32e443",
    },
    Case {
        suite: 4,
        kid: 0x123,
        ctr: 0x4567,
        base_key: "000102030405060708090a0b0c0d0e0f",
        sframe_secret: "d926952ca8b7ec4a95941d1ada3a5203ceff8cceee34f574d23909eb314c40c0",
        sframe_key: "d34f547f4ca4f9a7447006fe7fcbf768",
        sframe_salt: "75234edefe07819026751816",
        metadata: "4945544620534672616d65205747",
        nonce: "75234edefe07819026755d71",
        pt: "64726166742d696574662d736672616d652d656e63",
        ct: "9901234567b7412c2513a1b66dbb48841bbaf17f598751176ad847681a69c6d0b091c07018ce4adb34eb",
    },
    Case {
        suite: 5,
        kid: 0x123,
        ctr: 0x4567,
        base_key: "000102030405060708090a0b0c0d0e0f",
        sframe_secret: "0fc3ea6de6aac97a35f194cf9bed94d4b5230f1cb45a785c9fe5dce9c188938ab6ba005bc4c0a19181599e9d1bcf7b74aca48b60bf5e254e546d809313e083a3",
        sframe_key: "d3e27b0d4a5ae9e55df01a70e6d4d28d969b246e2936f4b7a5d9b494da6b9633",
        sframe_salt: "84991c167b8cd23c93708ec7",
        metadata: "4945544620534672616d65205747",
        nonce: "84991c167b8cd23c9370cba0",
        pt: "64726166742d696574662d736672616d652d656e63",
        ct: "990123456794f509d36e9beacb0e261d99c7d1e972f1fed787d4049f17ca21353c1cc24d56ceabced279",
    },
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn appendix_c5_full_frames() {
    for case in &CASES {
        let suite = CipherSuite::from_id(case.suite).unwrap();
        let base_key = unhex(case.base_key);
        let km = KeyMaterial::derive(suite, case.kid, &base_key).unwrap();
        assert_eq!(
            km.sframe_secret(),
            unhex(case.sframe_secret),
            "suite {}",
            case.suite
        );
        assert_eq!(
            km.sframe_key(),
            unhex(case.sframe_key),
            "suite {}",
            case.suite
        );
        assert_eq!(
            &km.sframe_salt()[..],
            unhex(case.sframe_salt),
            "suite {}",
            case.suite
        );
        assert_eq!(
            &km.nonce(case.ctr)[..],
            unhex(case.nonce),
            "suite {}",
            case.suite
        );

        let metadata = unhex(case.metadata);
        let mut sealer = FrameSealer::starting_at(suite, case.kid, &base_key, case.ctr).unwrap();
        let mut frame = BytesMut::new();
        sealer.seal(&metadata, &unhex(case.pt), &mut frame).unwrap();
        assert_eq!(&frame[..], unhex(case.ct), "suite {}", case.suite);

        let mut opener = FrameOpener::new();
        opener.insert_key(case.kid, suite, &base_key).unwrap();
        let mut plain = BytesMut::new();
        let opened = opener.open(&metadata, &unhex(case.ct), &mut plain).unwrap();
        assert_eq!((opened.kid, opened.ctr), (case.kid, case.ctr));
        assert_eq!(&plain[..], unhex(case.pt), "suite {}", case.suite);
    }
}
