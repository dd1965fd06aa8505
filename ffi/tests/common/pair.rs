//! Two members' data planes made through the C ABI only (a room of Alice and Bob), for the
//! benchmark and the allocation test.

use sotto_ffi::*;

/// Alice's and Bob's media handles (sealing in epoch 1 from `now_ms` on), their rooms,
/// and that `now_ms`.
pub fn c_pair() -> (*mut SottoMedia, *mut SottoMedia, [*mut SottoRoom; 2], u64) {
    // SAFETY: every pointer passed is a live handle made just before or a local buffer of
    // the stated size.
    unsafe {
        let mut alice = std::ptr::null_mut();
        let mut bob = std::ptr::null_mut();
        assert_eq!(
            sotto_identity_new(b"alice".as_ptr(), 5, &mut alice),
            SottoStatus::SOTTO_OK
        );
        assert_eq!(
            sotto_identity_new(b"bob".as_ptr(), 3, &mut bob),
            SottoStatus::SOTTO_OK
        );
        let mut kp = vec![0u8; 4096];
        let mut kp_len = 0;
        assert_eq!(
            sotto_identity_key_package(bob, kp.as_mut_ptr(), kp.len(), &mut kp_len),
            SottoStatus::SOTTO_OK
        );
        let mut room_a = std::ptr::null_mut();
        assert_eq!(sotto_room_create(alice, &mut room_a), SottoStatus::SOTTO_OK);
        let kps = [kp.as_ptr()];
        let lens = [kp_len];
        assert_eq!(
            sotto_room_invite(room_a, kps.as_ptr(), lens.as_ptr(), 1),
            SottoStatus::SOTTO_OK
        );
        assert_eq!(sotto_room_confirm(room_a), SottoStatus::SOTTO_OK);
        let mut welcome = vec![0u8; 65536];
        let mut welcome_len = 0;
        sotto_room_welcome(
            room_a,
            welcome.as_mut_ptr(),
            welcome.len(),
            &mut welcome_len,
        );
        let mut room_b = std::ptr::null_mut();
        assert_eq!(
            sotto_room_join(bob, welcome.as_ptr(), welcome_len, &mut room_b),
            SottoStatus::SOTTO_OK
        );
        let mut media = [std::ptr::null_mut(); 2];
        for (m, room) in media.iter_mut().zip([room_a, room_b]) {
            assert_eq!(sotto_media_new(m), SottoStatus::SOTTO_OK);
            loop {
                let mut keys = std::ptr::null_mut();
                if sotto_room_take_keys(room, &mut keys) != SottoStatus::SOTTO_OK {
                    break;
                }
                assert_eq!(sotto_media_apply(*m, keys, 0), SottoStatus::SOTTO_OK);
                sotto_keys_free(keys);
            }
        }
        sotto_identity_free(alice);
        sotto_identity_free(bob);
        (media[0], media[1], [room_a, room_b], 2000)
    }
}
