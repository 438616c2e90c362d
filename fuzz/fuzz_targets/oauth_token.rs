//! The OAuth token endpoint's answer on arbitrary bytes, as far as the token cache.
//!
//! The input format and the checks are in `p2::fuzzing::oauth_token` (src/fuzzing/), which
//! `cargo test` also runs on every input of `fuzz/corpus/oauth_token/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| p2::fuzzing::oauth_token(data));
