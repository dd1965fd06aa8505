//! No allocation per frame through the C ABI: once warm, seal + open of a frame through
//! `sotto_media_seal`/`sotto_media_open` makes no heap allocation.

#[path = "../../tests/common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/pair.rs"]
mod pair;

use counting_alloc::allocations_in;
use sotto_ffi::*;

#[test]
fn seal_and_open_through_the_c_abi_allocate_nothing() {
    let (a, b, rooms, now_ms) = pair::c_pair();
    let payload = [0x5a_u8; 60];
    let mut sealed = [0u8; 256];
    let mut opened = [0u8; 256];
    let mut round = |t: u64| {
        let (mut sealed_len, mut opened_len, mut leaf) = (0, 0, 0);
        // SAFETY: live handles from `c_pair`; buffers of the stated sizes.
        unsafe {
            assert_eq!(
                sotto_media_seal(
                    a,
                    0,
                    payload.as_ptr(),
                    60,
                    sealed.as_mut_ptr(),
                    256,
                    &mut sealed_len,
                    t
                ),
                SottoStatus::SOTTO_OK
            );
            assert_eq!(
                sotto_media_open(
                    b,
                    sealed.as_ptr(),
                    sealed_len,
                    opened.as_mut_ptr(),
                    256,
                    &mut opened_len,
                    &mut leaf,
                    t
                ),
                SottoStatus::SOTTO_OK
            );
        }
        assert_eq!(&opened[..opened_len], &payload);
    };
    // Warm-up: the sealer and the sender's key are made on the first frame.
    for i in 0..10 {
        round(now_ms + i * 20);
    }
    let n = allocations_in(|| {
        for i in 10..1010 {
            round(now_ms + i * 20);
        }
    });
    assert_eq!(n, 0, "{n} allocations in 1,000 frames");
    // The error path too: a replayed frame is refused, and reporting it allocates nothing
    // once the thread's message buffer has grown (the first refusal).
    let mut sealed_len = 0;
    let mut opened_len = 0;
    let t = now_ms + 1010 * 20;
    // SAFETY: live handles; buffers of the stated sizes.
    unsafe {
        assert_eq!(
            sotto_media_seal(
                a,
                0,
                payload.as_ptr(),
                60,
                sealed.as_mut_ptr(),
                256,
                &mut sealed_len,
                t
            ),
            SottoStatus::SOTTO_OK
        );
    }
    let mut replay = || {
        // SAFETY: live handles; buffers of the stated sizes.
        unsafe {
            sotto_media_open(
                b,
                sealed.as_ptr(),
                sealed_len,
                opened.as_mut_ptr(),
                256,
                &mut opened_len,
                std::ptr::null_mut(),
                t,
            )
        }
    };
    assert_eq!(replay(), SottoStatus::SOTTO_OK);
    assert_eq!(replay(), SottoStatus::SOTTO_REPLAYED);
    let n = allocations_in(|| {
        for _ in 0..1000 {
            assert_eq!(replay(), SottoStatus::SOTTO_REPLAYED);
        }
    });
    assert_eq!(n, 0, "{n} allocations in 1,000 refused replays");
    // SAFETY: live handles, freed once.
    unsafe {
        sotto_media_free(a);
        sotto_media_free(b);
        for room in rooms {
            sotto_room_free(room);
        }
    }
}
