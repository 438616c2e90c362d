//! Helpers shared by the integration tests: a loopback HTTP server and a test service
//! account, a fake XMPP server, the daemon as a child process, an HTTP/2 APNs stand-in.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

#[cfg(feature = "apns")]
pub mod apns;
pub mod daemon;
pub mod fcm;
pub mod http;
pub mod keys;
pub mod scratch;
pub mod stanzas;
pub mod world;
pub mod xmpp;
