//! A whole APNs answer on arbitrary bytes: classification and retry decision.
//!
//! The input format and the checks are in `p2::fuzzing::apns_classify` (src/fuzzing/), which
//! `cargo test` also runs on every input of `fuzz/corpus/apns_classify/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| p2::fuzzing::apns_classify(data));
