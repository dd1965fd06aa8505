#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The full usability check (processing a genuine commit afterwards) costs a commit; run
    // it on a deterministic eighth of the inputs.
    let full = data.len() % 8 == 0;
    bodies::room_ingest(data, full);
});
