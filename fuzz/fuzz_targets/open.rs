#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // A fresh opener per input keeps every run reproducible from its input alone.
    let mut opener = bodies::open_opener();
    bodies::open(&mut opener, data);
});
