//! The application core on whatever a peer can send, with a real (in-memory) store.
//!
//! The input format and the checks are in `p2::fuzzing::core` (src/fuzzing/), which
//! `cargo test` also runs on every input of `fuzz/corpus/core/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| p2::fuzzing::core(data));
