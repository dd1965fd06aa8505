#![no_main]

use std::cell::RefCell;

#[path = "../bodies.rs"]
mod bodies;

thread_local! {
    static OPENER: RefCell<sotto::frame::FrameOpener> = RefCell::new(bodies::open_opener());
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    OPENER.with(|opener| {
        let mut opener = opener.borrow_mut();
        // Every input starts from the pristine opener: it is rebuilt whenever an input
        // opened a frame (which changed its replay state).
        if bodies::open(&mut opener, data) {
            *opener = bodies::open_opener();
        }
    });
});
