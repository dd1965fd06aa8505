#![no_main]

use std::cell::RefCell;

#[path = "../bodies.rs"]
mod bodies;

thread_local! {
    // One live call for the whole run: building a room costs far more than an input.
    static STATE: RefCell<bodies::CallFuzz> = RefCell::new(bodies::CallFuzz::new());
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    STATE.with(|state| bodies::call_datagram(&mut state.borrow_mut(), data));
});
