//! The push path's HTTP answer reader on arbitrary bytes, cut into arbitrary reads.
//!
//! The input format and the checks are in `p2::fuzzing::http_answer` (src/fuzzing/), which
//! `cargo test` also runs on every input of `fuzz/corpus/http_answer/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| p2::fuzzing::http_answer(data));
