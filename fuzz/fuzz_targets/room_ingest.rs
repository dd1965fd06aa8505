#![no_main]

use std::cell::RefCell;

#[path = "../bodies.rs"]
mod bodies;

thread_local! {
    static STATE: RefCell<bodies::RoomIngest> = RefCell::new(bodies::RoomIngest::default());
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The full usability check (processing a genuine commit afterwards) costs a commit and
    // a restore; run it on a deterministic eighth of the inputs.
    let full = data.len() % 8 == 0;
    STATE.with(|state| bodies::room_ingest(&mut state.borrow_mut(), data, full));
});
