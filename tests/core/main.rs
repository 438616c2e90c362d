//! The core in-process: `check` tests over the real stanzas of PROTOCOL.md, and a
//! model-based test of random sequences against a reference model. No sockets, no
//! sleeps: the clock is the test's.

#[path = "../common/mod.rs"]
mod common;

mod check;
mod harness;
mod model;
