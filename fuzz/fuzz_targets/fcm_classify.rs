//! A whole FCM answer on arbitrary bytes: classification, `Retry-After`, retry decision.
//!
//! The input format and the checks are in `p2::fuzzing::fcm_classify` (src/fuzzing/), which
//! `cargo test` also runs on every input of `fuzz/corpus/fcm_classify/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| p2::fuzzing::fcm_classify(data));
