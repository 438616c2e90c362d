//! The cool-down of a provider that keeps refusing: after a run of failed attempts, pushes
//! are answered at once instead of holding a worker each for the whole deadline.
//!
//! A failed attempt is a transient failure (429, 5xx, a timeout, a transport error: a
//! [`Classification::Retry`], or a rate limit not worth retrying within the deadline, such
//! as FCM's `QUOTA_EXCEEDED` without `Retry-After`). After [`CoolDownSettings::after_failures`] of them in a row,
//! with no push accepted (or refused as a dead token) in between, the cool-down opens for
//! [`CoolDownSettings::first`]: pushes are refused without a request
//! ([`Cause::CoolingDown`](super::Cause::CoolingDown), which the core answers `wait`) and
//! pushes in flight stop retrying after their current attempt. Once it has passed, one
//! push at a time goes through as a probe: if the provider answers it, the cool-down ends
//! and its length goes back to the first; if it fails again, the cool-down opens again for
//! twice as long, up to [`CoolDownSettings::longest`]. So a provider that is down sees
//! one request per cool-down period, not one per publish.
//!
//! Answers that are neither (a refused request of ours, an expired credential) neither
//! count nor reset: they say nothing about the provider's health.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use log::{info, warn};

use super::retry::{later, Classification};
use super::Cause;

/// When a provider's cool-down opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoolDownSettings {
    /// Failed attempts in a row that open the cool-down. Default 10: more than one push
    /// makes within a deadline of up to 15 s, so a short outage during one push does not
    /// hold back the next (every push refused is a wake-up lost: servers do not retry),
    /// while many pushes failing at once open it within their first attempts. 0 never
    /// opens it.
    pub after_failures: u32,
    /// The first cool-down. Default 5 s.
    pub first: Duration,
    /// The longest cool-down, reached by doubling while probes keep failing. Default 60 s.
    pub longest: Duration,
}

impl Default for CoolDownSettings {
    fn default() -> Self {
        CoolDownSettings {
            after_failures: 10,
            first: Duration::from_secs(5),
            longest: Duration::from_secs(60),
        }
    }
}

/// May a push go to the provider?
#[derive(Debug)]
pub enum Admission<'a> {
    /// Yes; report each attempt's answer on the ticket.
    Go(Ticket<'a>),
    /// No: the provider is cooling down for this long still (zero while a probe is out).
    Refused(Duration),
}

/// The cool-down state of one provider, shared by every worker that pushes to it.
#[derive(Debug)]
pub struct CoolDown {
    name: &'static str,
    settings: CoolDownSettings,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Failed attempts since the last success, while closed.
    failures: u32,
    /// Open until then; past it, one probe may go.
    open_until: Option<Instant>,
    /// The length of the next cool-down.
    length: Duration,
    /// A probe is out.
    probing: bool,
}

impl CoolDown {
    /// A closed cool-down for the provider `name` (for the log).
    pub fn new(name: &'static str, settings: CoolDownSettings) -> Self {
        CoolDown {
            name,
            settings,
            state: Mutex::new(State {
                failures: 0,
                open_until: None,
                length: settings.first,
                probing: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a push may go at `now`: always while closed; while open, only one probe at
    /// a time once the cool-down period has passed.
    pub fn admit(&self, now: Instant) -> Admission<'_> {
        let mut st = self.lock();
        let probe = match st.open_until {
            None => false,
            Some(until) if now < until => return Admission::Refused(until - now),
            Some(_) if st.probing => return Admission::Refused(Duration::ZERO),
            Some(_) => {
                st.probing = true;
                true
            }
        };
        Admission::Go(Ticket {
            cool_down: self,
            probe,
        })
    }

    /// Whether the cool-down is open (a push whose attempt failed then stops retrying).
    pub fn is_open(&self) -> bool {
        self.lock().open_until.is_some()
    }

    fn record(&self, class: &Classification, probe: bool, now: Instant) {
        let mut st = self.lock();
        match health(class) {
            Some(true) => {
                if st.open_until.is_some() {
                    info!("{}: answering again, cool-down over", self.name);
                }
                st.failures = 0;
                st.open_until = None;
                st.length = self.settings.first;
                st.probing = false;
            }
            Some(false) if probe => {
                st.length = st.length.saturating_mul(2).min(self.settings.longest);
                let length = st.length;
                st.open_until = Some(later(now, length));
                st.probing = false;
                warn!(
                    "{}: still failing, no pushes for {} s but one probe",
                    self.name,
                    length.as_secs()
                );
            }
            Some(false) if st.open_until.is_none() => {
                st.failures = st.failures.saturating_add(1);
                if self.settings.after_failures > 0 && st.failures >= self.settings.after_failures {
                    let length = st.length;
                    st.open_until = Some(later(now, length));
                    warn!(
                        "{}: {} failed attempts in a row, no pushes for {} s but one probe",
                        self.name,
                        st.failures,
                        length.as_secs()
                    );
                }
            }
            // A failure of a push that started before the cool-down opened, or an answer
            // that says nothing about the provider's health.
            _ => {}
        }
    }
}

/// What an answer says about the provider's health: up (it took or judged the push),
/// down (a transient failure, a rate limit), or nothing (our own request or credential).
fn health(class: &Classification) -> Option<bool> {
    match class {
        Classification::Accepted | Classification::DeadToken { .. } => Some(true),
        Classification::Retry { .. } => Some(false),
        Classification::Fail { cause, .. } => match cause {
            Cause::ProviderError | Cause::RateLimited | Cause::Timeout | Cause::Transport => {
                Some(false)
            }
            _ => None,
        },
        Classification::Renew { .. } => None,
    }
}

/// A push's permission to go, on which it reports each attempt. Dropping a probe's ticket
/// without a verdict lets the next push probe.
#[derive(Debug)]
pub struct Ticket<'a> {
    cool_down: &'a CoolDown,
    probe: bool,
}

impl Ticket<'_> {
    /// Reports one attempt's answer.
    pub fn record(&self, class: &Classification, now: Instant) {
        self.cool_down.record(class, self.probe, now);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.cool_down.lock().probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Classification {
        Classification::retry(Cause::ProviderError, "fcm http 503")
    }

    fn settings() -> CoolDownSettings {
        CoolDownSettings {
            after_failures: 3,
            first: Duration::from_secs(5),
            longest: Duration::from_secs(20),
        }
    }

    fn goes(c: &CoolDown, now: Instant) -> Option<bool> {
        match c.admit(now) {
            Admission::Go(t) => Some(t.probe),
            Admission::Refused(_) => None,
        }
    }

    #[test]
    fn opens_after_a_run_of_failures_and_a_success_resets_the_count() {
        let c = CoolDown::new("fcm", settings());
        let t0 = Instant::now();
        let Admission::Go(ticket) = c.admit(t0) else {
            panic!("closed at first");
        };
        ticket.record(&failed(), t0);
        ticket.record(&failed(), t0);
        ticket.record(&Classification::Accepted, t0);
        ticket.record(
            &Classification::fail(Cause::RateLimited, "fcm QUOTA_EXCEEDED"),
            t0,
        );
        ticket.record(&failed(), t0);
        assert!(!c.is_open(), "the success broke the run");
        // Neither a refusal of ours nor an expired credential counts or resets.
        ticket.record(&Classification::fail(Cause::Rejected, "fcm http 400"), t0);
        ticket.record(
            &Classification::Renew {
                reason: "401".into(),
            },
            t0,
        );
        assert!(!c.is_open());
        ticket.record(&failed(), t0);
        assert!(c.is_open());
        drop(ticket);
        let admission = c.admit(t0 + Duration::from_secs(1));
        match admission {
            Admission::Refused(left) => assert_eq!(left, Duration::from_secs(4)),
            Admission::Go(_) => panic!("open"),
        }
    }

    #[test]
    fn one_probe_at_a_time_after_the_period_then_doubling_up_to_the_longest() {
        let c = CoolDown::new("apns", settings());
        let t0 = Instant::now();
        let Admission::Go(ticket) = c.admit(t0) else {
            panic!("closed at first");
        };
        for _ in 0..3 {
            ticket.record(&failed(), t0);
        }
        drop(ticket);
        let mut now = t0;
        for length in [5u64, 10, 20, 20] {
            assert_eq!(
                goes(
                    &c,
                    now + Duration::from_secs(length) - Duration::from_millis(1)
                ),
                None
            );
            now += Duration::from_secs(length);
            let Admission::Go(probe) = c.admit(now) else {
                panic!("no probe after {length} s");
            };
            assert!(probe.probe);
            assert_eq!(goes(&c, now), None, "one probe at a time");
            probe.record(&failed(), now);
        }
        // A probe that ends without an answer lets the next push probe.
        now += Duration::from_secs(20);
        assert_eq!(goes(&c, now), Some(true));
        assert_eq!(goes(&c, now), Some(true));
        // A probe answered: closed, and the next cool-down starts short again.
        let Admission::Go(probe) = c.admit(now) else {
            panic!("no probe");
        };
        probe.record(&Classification::Accepted, now);
        drop(probe);
        assert!(!c.is_open());
        assert_eq!(goes(&c, now), Some(false));
        let Admission::Go(ticket) = c.admit(now) else {
            panic!("closed");
        };
        for _ in 0..3 {
            ticket.record(&failed(), now);
        }
        assert_eq!(goes(&c, now + Duration::from_secs(5)), Some(true));
    }

    #[test]
    fn failures_of_pushes_in_flight_do_not_lengthen_an_open_cool_down() {
        let c = CoolDown::new("fcm", settings());
        let t0 = Instant::now();
        let Admission::Go(ticket) = c.admit(t0) else {
            panic!("closed at first");
        };
        for _ in 0..10 {
            ticket.record(&failed(), t0);
        }
        assert_eq!(goes(&c, t0 + Duration::from_secs(5)), Some(true));
    }

    #[test]
    fn zero_failures_never_opens() {
        let c = CoolDown::new(
            "fcm",
            CoolDownSettings {
                after_failures: 0,
                ..settings()
            },
        );
        let t0 = Instant::now();
        let Admission::Go(ticket) = c.admit(t0) else {
            panic!("closed");
        };
        for _ in 0..100 {
            ticket.record(&failed(), t0);
        }
        assert!(!c.is_open());
    }
}
