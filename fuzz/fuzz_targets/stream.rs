//! The incremental stream parser on arbitrary bytes, cut into arbitrary chunks.
//!
//! The input format and the checks are in `p2::fuzzing::stream` (src/fuzzing/), which
//! `cargo test` also runs on every input of `fuzz/corpus/stream/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| p2::fuzzing::stream(data));
