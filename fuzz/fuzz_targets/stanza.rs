//! The typed stanza parsers and reply builders on whatever a peer can send.
//!
//! The input format and the checks are in `p2::fuzzing::stanza` (src/fuzzing/), which
//! `cargo test` also runs on every input of `fuzz/corpus/stanza/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| p2::fuzzing::stanza(data));
