//! Helpers shared by the integration tests: a loopback HTTP server and a test service account.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod daemon;
pub mod http;
pub mod keys;
pub mod world;
pub mod xmpp;
