//! One retry policy for every push provider: what an answer means, and the deadline,
//! backoff, jitter and `Retry-After` loop around the attempts.
//!
//! A provider ([`fcm`](super::fcm), [`apns`](super::apns)) reduces to two things: make one
//! attempt, and classify its answer into a [`Classification`]. [`run`] does the rest, the
//! same way for both:
//!
//! - every attempt fits in what is left of the push's deadline, and none starts with less
//!   than [`MIN_ATTEMPT`] left;
//! - a transient failure waits a jittered backoff (200 ms doubling to 5 s), or longer if
//!   the provider's `Retry-After` asks for it; a wait that would not leave room for
//!   another attempt before the deadline ends the push at once instead;
//! - a request the provider certainly never processed is retried at once, a few times;
//! - an expired credential (our OAuth access token, our APNs provider token) is renewed
//!   once per push;
//! - the provider's [`CoolDown`] is told how each attempt went; while it is open, pushes
//!   are refused without a request, and a push whose attempt failed stops retrying.
//!
//! Every duration that comes from a remote answer is clamped before it meets `Instant`
//! arithmetic (see [`MAX_RETRY_AFTER`]).

use std::time::{Duration, Instant};

use log::debug;

use super::cooldown::{Admission, CoolDown};
use super::{jittered, Cause, Outcome};

/// The least time worth an attempt: with less left of the deadline, the push gives up.
pub const MIN_ATTEMPT: Duration = Duration::from_millis(50);

/// The longest `Retry-After` taken as given; longer ones are cut to this. Any wait this
/// long ends the push at once anyway (deadlines are at most an hour).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What one answer (or one failed exchange) means for the push, whatever the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// The provider took the message.
    Accepted,
    /// The token will never work again.
    DeadToken {
        /// The provider's error code, for the log (never the token).
        reason: String,
        /// When the code is also what every push gets with our own setup wrong (PROTOCOL.md
        /// §5, "our own mistake"): the misconfiguration it would mean. The push is then
        /// [`Outcome::DeadUnlessMisconfigured`].
        suspect: Option<&'static str>,
    },
    /// Our credential (OAuth access token, APNs provider token) has expired or was
    /// revoked: renew it and try again at once, once per push.
    Renew {
        /// The answer, for the log and for the failure if a fresh credential fails too.
        reason: String,
    },
    /// A transient failure: try again within the deadline.
    Retry {
        /// What kind of failure, for the outcome if the retries run out.
        cause: Cause,
        /// A few words for the log, e.g. `fcm http 503`.
        reason: String,
        /// The provider's `Retry-After`, if it sent one (at most [`MAX_RETRY_AFTER`]).
        after: Option<Duration>,
        /// The provider certainly did not process the request (a refused stream, a
        /// GOAWAY): retrying at once, without a backoff, is safe.
        immediate: bool,
    },
    /// A failure that retrying will not cure, but that says nothing against the token.
    Fail {
        /// What kind of failure.
        cause: Cause,
        /// A few words for the log.
        reason: String,
    },
}

impl Classification {
    /// A transient failure of `cause`, with no `Retry-After`, to retry after a backoff.
    pub fn retry(cause: Cause, reason: impl Into<String>) -> Self {
        Classification::Retry {
            cause,
            reason: reason.into(),
            after: None,
            immediate: false,
        }
    }

    /// A failure of `cause` that retrying does not cure.
    pub fn fail(cause: Cause, reason: impl Into<String>) -> Self {
        Classification::Fail {
            cause,
            reason: reason.into(),
        }
    }

    /// A dead token that only the token can cause.
    pub fn dead(reason: impl Into<String>) -> Self {
        Classification::DeadToken {
            reason: reason.into(),
            suspect: None,
        }
    }
}

/// The timing of the retries of one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The provider's name for the log (`fcm`, `apns`).
    pub name: &'static str,
    /// Total time for one push, retries and waits included.
    pub deadline: Duration,
    /// Time for one attempt.
    pub request_timeout: Duration,
    /// The first wait before a retry; it doubles with each retry. Default 200 ms.
    pub first_backoff: Duration,
    /// The longest wait between two attempts when no `Retry-After` asks for more.
    /// Default 5 s.
    pub max_backoff: Duration,
    /// Retries without waiting allowed per push for requests the provider never processed;
    /// past this, they back off too. Default 2.
    pub max_immediate: u32,
}

impl Policy {
    /// The policy for `name` with this deadline and request timeout, and the default
    /// backoff (200 ms doubling to 5 s) and immediate retries (2).
    pub fn new(name: &'static str, deadline: Duration, request_timeout: Duration) -> Self {
        Policy {
            name,
            deadline,
            request_timeout,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_immediate: 2,
        }
    }
}

/// `now + d`, for durations from settings: never panics (a duration too long for the
/// clock is cut to a hundred years).
pub fn later(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 86_400);
    now.checked_add(d.min(FAR)).unwrap_or(now)
}

/// What the loop does next, after one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The push is over.
    Done(Outcome),
    /// Try again at once (a request never processed).
    Again,
    /// Renew the credential, then try again at once.
    Renew,
    /// Wait this long, then try again.
    Wait(Duration),
}

/// The state of one push's retries: the decisions of [`run`], with the clock passed in.
#[derive(Debug, Clone)]
pub struct Retries {
    policy: Policy,
    started: Instant,
    deadline: Instant,
    backoff: Duration,
    immediate: u32,
    renewed: bool,
    attempts: u32,
    /// The last transient failure, for the outcome when the deadline ends the push.
    last: Option<(Cause, String)>,
}

impl Retries {
    /// The retries of a push that starts at `now`.
    pub fn new(policy: Policy, now: Instant) -> Self {
        Retries {
            policy,
            started: now,
            deadline: later(now, policy.deadline),
            backoff: policy.first_backoff,
            immediate: 0,
            renewed: false,
            attempts: 0,
            last: None,
        }
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// What is left of the deadline at `now`.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    /// The time the next attempt may take, or the outcome if too little is left.
    pub fn timeout(&self, now: Instant) -> Result<Duration, Outcome> {
        let remaining = self.remaining(now);
        if remaining < MIN_ATTEMPT {
            return Err(self.give_up());
        }
        Ok(remaining.min(self.policy.request_timeout))
    }

    /// The outcome when the push ends before its next attempt (the deadline, a cool-down):
    /// the last failure, or a timeout.
    pub fn give_up(&self) -> Outcome {
        match &self.last {
            Some((cause, reason)) => Outcome::failed(*cause, reason.clone()),
            None => Outcome::failed(
                Cause::Timeout,
                format!("{} deadline passed", self.policy.name),
            ),
        }
    }

    /// Decides what follows an attempt answered `class` at `now`; `cooling` says whether
    /// the provider's cool-down is open (then a failed push stops retrying).
    pub fn after(&mut self, class: Classification, now: Instant, cooling: bool) -> Step {
        self.attempts = self.attempts.saturating_add(1);
        match class {
            Classification::Accepted => Step::Done(Outcome::Delivered),
            Classification::DeadToken {
                reason,
                suspect: None,
            } => Step::Done(Outcome::DeadToken { reason }),
            Classification::DeadToken {
                reason,
                suspect: Some(suspect),
            } => Step::Done(Outcome::DeadUnlessMisconfigured { reason, suspect }),
            Classification::Fail { cause, reason } => Step::Done(Outcome::failed(cause, reason)),
            Classification::Renew { reason } if self.renewed => Step::Done(Outcome::failed(
                Cause::Auth,
                format!("{reason} with a fresh token"),
            )),
            Classification::Renew { .. } => {
                self.renewed = true;
                Step::Renew
            }
            Classification::Retry {
                cause,
                reason,
                after,
                immediate,
            } => {
                if cooling {
                    return Step::Done(Outcome::failed(cause, reason));
                }
                if immediate && self.immediate < self.policy.max_immediate {
                    self.immediate += 1;
                    self.last = Some((cause, reason));
                    return Step::Again;
                }
                let after = after.unwrap_or_default().min(MAX_RETRY_AFTER);
                let wait = jittered(self.backoff).max(after);
                self.backoff = self.backoff.saturating_mul(2).min(self.policy.max_backoff);
                if wait.saturating_add(MIN_ATTEMPT) >= self.remaining(now) {
                    debug!(
                        "{} push: giving up after attempt {}, {} ms: {reason}",
                        self.policy.name,
                        self.attempts,
                        now.saturating_duration_since(self.started).as_millis()
                    );
                    return Step::Done(Outcome::failed(cause, reason));
                }
                self.last = Some((cause, reason));
                Step::Wait(wait)
            }
        }
    }
}

/// One provider, as the retry loop sees it: a credential, one attempt, a renewal.
pub trait Attempts {
    /// What an attempt authenticates with (an OAuth access token, an APNs provider token).
    type Credential;

    /// The credential for the next attempt, got within `within`; or why there is none.
    fn credential(&self, within: Duration) -> Result<Self::Credential, (Cause, String)>;

    /// One attempt with `credential`, bounded by `timeout`, classified. `attempt` counts
    /// from 1, for the log.
    fn attempt(
        &self,
        credential: &Self::Credential,
        timeout: Duration,
        attempt: u32,
    ) -> Classification;

    /// Drops `stale` (the provider said it expired), so the next
    /// [`credential`](Self::credential) is a fresh one.
    fn renew(&self, stale: &Self::Credential);
}

/// Sends one push through `provider` under `policy`, consulting and feeding `cool_down`.
///
/// Blocks for at most about `policy.deadline`; returns at once, without a request, while
/// the cool-down refuses pushes.
pub fn run<P: Attempts>(policy: Policy, cool_down: &CoolDown, provider: &P) -> Outcome {
    let ticket = match cool_down.admit(Instant::now()) {
        Admission::Refused(left) => {
            return Outcome::failed(
                Cause::CoolingDown,
                format!(
                    "{} keeps failing: not asked for another {} ms",
                    policy.name,
                    left.as_millis()
                ),
            )
        }
        Admission::Go(ticket) => ticket,
    };
    let mut retries = Retries::new(policy, Instant::now());
    loop {
        if let Err(outcome) = retries.timeout(Instant::now()) {
            return outcome;
        }
        let credential = match provider.credential(retries.remaining(Instant::now())) {
            Ok(credential) => credential,
            Err((cause, reason)) => {
                debug!(
                    "{} push: attempt {}, no credential: {reason}",
                    policy.name,
                    retries.attempts() + 1
                );
                return Outcome::failed(cause, reason);
            }
        };
        let timeout = match retries.timeout(Instant::now()) {
            Ok(timeout) => timeout,
            Err(outcome) => return outcome,
        };
        let class = provider.attempt(&credential, timeout, retries.attempts() + 1);
        let now = Instant::now();
        ticket.record(&class, now);
        match retries.after(class, now, cool_down.is_open()) {
            Step::Done(outcome) => return outcome,
            Step::Renew => provider.renew(&credential),
            step => {
                if let Step::Wait(wait) = step {
                    std::thread::sleep(wait);
                }
                // Opened meanwhile by other pushes' failures: no more attempts.
                if cool_down.is_open() {
                    return retries.give_up();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new("fcm", Duration::from_secs(15), Duration::from_secs(10))
    }

    fn retry(after: Option<u64>, immediate: bool) -> Classification {
        Classification::Retry {
            cause: Cause::ProviderError,
            reason: "fcm http 503".into(),
            after: after.map(Duration::from_secs),
            immediate,
        }
    }

    #[test]
    fn final_answers_end_the_push() {
        let now = Instant::now();
        let cases = [
            (Classification::Accepted, Outcome::Delivered),
            (
                Classification::dead("UNREGISTERED"),
                Outcome::DeadToken {
                    reason: "UNREGISTERED".into(),
                },
            ),
            (
                Classification::DeadToken {
                    reason: "SENDER_ID_MISMATCH".into(),
                    suspect: Some("another project"),
                },
                Outcome::DeadUnlessMisconfigured {
                    reason: "SENDER_ID_MISMATCH".into(),
                    suspect: "another project",
                },
            ),
            (
                Classification::fail(Cause::Rejected, "fcm http 404 NOT_FOUND"),
                Outcome::failed(Cause::Rejected, "fcm http 404 NOT_FOUND"),
            ),
        ];
        for (class, expected) in cases {
            let mut r = Retries::new(policy(), now);
            assert_eq!(r.after(class, now, false), Step::Done(expected));
            assert_eq!(r.attempts(), 1);
        }
    }

    #[test]
    fn renew_once_then_fail() {
        let now = Instant::now();
        let mut r = Retries::new(policy(), now);
        let renew = || Classification::Renew {
            reason: "fcm http 401".into(),
        };
        assert_eq!(r.after(renew(), now, false), Step::Renew);
        assert_eq!(
            r.after(renew(), now, false),
            Step::Done(Outcome::failed(
                Cause::Auth,
                "fcm http 401 with a fresh token"
            ))
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum() {
        let now = Instant::now();
        let mut r = Retries::new(
            Policy::new("fcm", Duration::from_secs(3600), Duration::from_secs(10)),
            now,
        );
        // Jitter: each wait is its backoff × [0.5, 1.5).
        for base in [200u64, 400, 800, 1600, 3200, 5000, 5000] {
            let Step::Wait(wait) = r.after(retry(None, false), now, false) else {
                panic!("no wait");
            };
            let base = Duration::from_millis(base);
            assert!(
                wait >= base / 2 && wait < base * 3 / 2,
                "{wait:?} for {base:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_a_lower_bound_and_too_long_ends_the_push() {
        let now = Instant::now();
        let mut r = Retries::new(policy(), now);
        assert_eq!(
            r.after(retry(Some(2), false), now, false),
            Step::Wait(Duration::from_secs(2))
        );
        // 20 s does not fit in the 15 s deadline: no point waiting.
        let mut r = Retries::new(policy(), now);
        assert_eq!(
            r.after(retry(Some(20), false), now, false),
            Step::Done(Outcome::failed(Cause::ProviderError, "fcm http 503"))
        );
        // Absurd values from a remote answer are clamped, not added.
        let mut r = Retries::new(policy(), now);
        let absurd = Classification::Retry {
            cause: Cause::RateLimited,
            reason: "fcm http 429".into(),
            after: Some(Duration::MAX),
            immediate: false,
        };
        assert_eq!(
            r.after(absurd, now, false),
            Step::Done(Outcome::failed(Cause::RateLimited, "fcm http 429"))
        );
    }

    #[test]
    fn never_processed_requests_are_retried_at_once_twice() {
        let now = Instant::now();
        let mut r = Retries::new(policy(), now);
        assert_eq!(r.after(retry(None, true), now, false), Step::Again);
        assert_eq!(r.after(retry(None, true), now, false), Step::Again);
        assert!(matches!(
            r.after(retry(None, true), now, false),
            Step::Wait(_)
        ));
    }

    #[test]
    fn an_open_cool_down_stops_the_retries() {
        let now = Instant::now();
        let mut r = Retries::new(policy(), now);
        assert_eq!(
            r.after(retry(None, true), now, true),
            Step::Done(Outcome::failed(Cause::ProviderError, "fcm http 503"))
        );
    }

    #[test]
    fn the_deadline_ends_the_push_with_the_last_failure() {
        let now = Instant::now();
        let mut r = Retries::new(policy(), now);
        assert_eq!(r.timeout(now), Ok(Duration::from_secs(10)));
        let late = now + Duration::from_millis(14_960);
        assert_eq!(
            r.timeout(late),
            Err(Outcome::failed(Cause::Timeout, "fcm deadline passed"))
        );
        assert!(matches!(
            r.after(retry(None, false), now, false),
            Step::Wait(_)
        ));
        assert_eq!(
            r.timeout(late),
            Err(Outcome::failed(Cause::ProviderError, "fcm http 503"))
        );
        assert_eq!(
            r.timeout(now + Duration::from_secs(10)),
            Ok(Duration::from_secs(5))
        );
    }

    #[test]
    fn settings_too_long_for_the_clock_do_not_panic() {
        let now = Instant::now();
        let r = Retries::new(Policy::new("apns", Duration::MAX, Duration::MAX), now);
        assert!(r.remaining(now) > Duration::from_secs(365 * 86_400));
        assert_eq!(later(now, Duration::ZERO), now);
    }
}
