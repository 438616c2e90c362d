//! The configuration loader on an arbitrary config file (and environment).
//!
//! The input format and the checks are in `p2::fuzzing::config` (src/fuzzing/), which
//! `cargo test` also runs on every input of `fuzz/corpus/config/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| p2::fuzzing::config(data));
