#![no_main]

#[path = "../bodies.rs"]
mod bodies;

// A fresh router per input (inside the body) keeps every run reproducible from its input.
libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::relay_wire(data));
