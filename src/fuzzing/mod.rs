//! The checks of the fuzz targets, one function per target, so that `cargo fuzz` and
//! `cargo test` run the same code: each `fuzz/fuzz_targets/TARGET.rs` calls its function
//! here, and `tests/fuzz_corpus.rs` replays every committed input of
//! `fuzz/corpus/TARGET/` through it, so a bug a fuzzer found stays fixed.
//!
//! Not an API: each function panics when its input breaks an invariant, which is what a
//! fuzzer looks for.

mod apns_classify;
mod app;
mod config;
mod fcm_classify;
mod http_answer;
mod oauth_token;
mod stanza;
mod stream;

#[cfg(feature = "apns")]
pub use self::apns_classify::apns_classify;
pub use self::app::core;
pub use self::config::config;
pub use self::fcm_classify::fcm_classify;
pub use self::http_answer::http_answer;
pub use self::oauth_token::oauth_token;
pub use self::stanza::stanza;
pub use self::stream::stream;

use std::time::{Duration, Instant};

use crate::push::retry::{Classification, Policy, Retries, Step, MIN_ATTEMPT};
use crate::push::Outcome;

/// A target's check: panics when the input breaks an invariant.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name, with their checks (`apns_classify` only in a build with the
/// cargo feature `apns`).
pub fn targets() -> Vec<(&'static str, Check)> {
    let all: Vec<(&'static str, Check)> = vec![
        ("stream", stream),
        ("stanza", stanza),
        ("core", core),
        ("config", config),
        ("fcm_classify", fcm_classify),
        ("oauth_token", oauth_token),
        ("http_answer", http_answer),
    ];
    #[cfg(feature = "apns")]
    let all = {
        let mut all = all;
        all.push(("apns_classify", apns_classify as Check));
        all
    };
    all
}

/// The reasons a classification gives go to the log: a few ASCII words, never a body.
fn check_reason(reason: &str) {
    assert!(
        reason.len() <= 80 && reason.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
        "{reason:?}"
    );
}

/// What the shared retry loop makes of a provider's classified answer, at the start of
/// a push, near its 15 s deadline, at it, and long after: a wait always leaves room for
/// one more attempt, delivery only for an accepted answer, never an immediate retry.
fn check_retry_step(provider: &'static str, class: &Classification) {
    let policy = Policy::new(provider, Duration::from_secs(15), Duration::from_secs(10));
    let started = Instant::now();
    for elapsed in [0, 14_000, 14_900, 15_000, 3_600_000] {
        let now = started + Duration::from_millis(elapsed);
        let mut retries = Retries::new(policy, started);
        match retries.after(class.clone(), now, false) {
            Step::Wait(wait) => {
                assert!(wait.saturating_add(MIN_ATTEMPT) < retries.remaining(now));
            }
            Step::Done(Outcome::Delivered) => assert_eq!(*class, Classification::Accepted),
            Step::Done(_) | Step::Renew => {}
            Step::Again => panic!("an answer is never retried at once"),
        }
    }
}

/// The status line of an input: a decimal number, or else its first two bytes as a
/// big-endian u16.
fn status(line: &str, data: &[u8]) -> u16 {
    line.trim().parse::<u16>().unwrap_or_else(|_| {
        let byte = |i: usize| data.get(i).copied().unwrap_or(0);
        u16::from_be_bytes([byte(0), byte(1)])
    })
}
