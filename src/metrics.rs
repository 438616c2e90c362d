//! What an operator scrapes: counters, gauges and histograms in atomics that any thread
//! updates without a lock, rendered in the Prometheus text exposition format (0.0.4).
//! The listener that serves them and `/health` is [`http`].
//!
//! There is one process-wide set, [`global`]: a hook in the core, the connection, the
//! pool or a provider is one line (`metrics::global().reconnect()`), and nothing has to
//! be handed down through constructors. Each update is one or two relaxed atomic
//! additions; nothing here blocks, allocates or reads the clock except where a duration
//! is measured.
//!
//! Invariants: no label carries a JID, token, node or domain (label values are the
//! fixed names below, nothing else); every counter ends in `_total`; a histogram's
//! `+Inf` bucket equals its `_count` in every rendering (both are read from the same
//! bucket values).

pub mod health;
pub mod http;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::app::Service;
use crate::config::Config;
use crate::push::{Cause, Outcome};

/// Starts the listener when `metrics.listen` is set; it stops when the returned server
/// is dropped.
pub fn serve(config: &Config) -> std::io::Result<Option<http::Server>> {
    let Some(addr) = config.metrics_listen else {
        return Ok(None);
    };
    let health = health::Health::new(
        format!("{}:{}", config.host, config.port),
        config.database.clone(),
    );
    http::Server::start(addr, global(), health).map(Some)
}

/// The process-wide metrics, updated by every thread and read by the listener.
pub fn global() -> &'static Metrics {
    static METRICS: Metrics = Metrics::new();
    &METRICS
}

/// The providers, in label order.
const PROVIDERS: [&str; 2] = ["fcm", "apns"];

fn provider_index(service: Service) -> usize {
    match service {
        Service::Fcm => 0,
        Service::Apns => 1,
    }
}

/// What became of a publish that reached a provider, as the core counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The provider accepted the push.
    Delivered,
    /// The provider said the token is gone; the core deletes the registration.
    DeadToken,
    /// Answered `wait` without delivery.
    Failed(Failure),
}

/// Why a push was answered `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The provider's side, as the provider client classified it.
    Provider(Cause),
    /// The provider called the token dead with a code that our own misconfiguration also
    /// causes; the registration is kept until the credentials have proven good.
    DeadUnconfirmed,
    /// The push queue was full (or the domain over its fair share): never sent.
    QueueFull,
}

impl From<&Outcome> for Pushed {
    fn from(outcome: &Outcome) -> Pushed {
        match outcome {
            Outcome::Delivered => Pushed::Delivered,
            Outcome::DeadToken { .. } => Pushed::DeadToken,
            Outcome::DeadUnlessMisconfigured { .. } => Pushed::Failed(Failure::DeadUnconfirmed),
            Outcome::Failed { cause, .. } => Pushed::Failed(Failure::Provider(*cause)),
        }
    }
}

/// Outcome labels of `p2_pushes_total`, in index order.
const OUTCOMES: [&str; 4] = ["delivered", "coalesced", "dead_token", "failed"];
const DELIVERED: usize = 0;
const COALESCED: usize = 1;
const DEAD_TOKEN: usize = 2;
const FAILED: usize = 3;

/// Cause labels of `p2_push_failures_total`, in index order.
const CAUSES: [&str; 10] = [
    "provider_error",
    "rate_limited",
    "timeout",
    "transport",
    "auth",
    "rejected",
    "not_configured",
    "cooling_down",
    "dead_unconfirmed",
    "queue_full",
];

fn cause_index(failure: Failure) -> usize {
    match failure {
        Failure::Provider(Cause::ProviderError) => 0,
        Failure::Provider(Cause::RateLimited) => 1,
        Failure::Provider(Cause::Timeout) => 2,
        Failure::Provider(Cause::Transport) => 3,
        Failure::Provider(Cause::Auth) => 4,
        Failure::Provider(Cause::Rejected) => 5,
        Failure::Provider(Cause::NotConfigured) => 6,
        Failure::Provider(Cause::CoolingDown) => 7,
        Failure::DeadUnconfirmed => 8,
        Failure::QueueFull => 9,
    }
}

/// A limit that refused a request (`p2_limit_refusals_total{limit}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A domain's new registrations in the hour (`limits.newRegistrationsPerDomainPerHour`).
    RegistrationRate,
    /// A domain's stored registrations (`limits.registrationsPerDomain`).
    DomainCap,
    /// A stanza over `limits.stanzaBytes`.
    StanzaSize,
    /// A publish node or secret over its length limit.
    FieldSize,
    /// The push queue was full.
    QueueFull,
    /// A domain over its fair share of the workers and the queue.
    FairShare,
}

const LIMITS: [&str; 6] = [
    "registration_rate",
    "domain_cap",
    "stanza_size",
    "field_size",
    "queue_full",
    "fair_share",
];

/// Why a registration was deleted (`p2_registrations_removed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The device unregistered.
    Unregistered,
    /// The provider said its token is dead.
    DeadToken,
    /// Its account went over `limits.registrationsPerAccount`.
    Evicted,
    /// Neither refreshed nor pushed to for `limits.expireAfterDays`.
    Expired,
}

const REMOVALS: [&str; 4] = ["unregistered", "dead_token", "evicted", "expired"];

/// One upper bound of a histogram bucket: microseconds, and its `le` label.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    micros: u64,
    le: &'static str,
}

const fn bound(micros: u64, le: &'static str) -> Bound {
    Bound { micros, le }
}

/// Push latency buckets, 10 ms to 30 s (FCM answers in 30–300 ms; the push deadline is
/// 10 s by default).
const PUSH_BOUNDS: [Bound; 11] = [
    bound(10_000, "0.01"),
    bound(25_000, "0.025"),
    bound(50_000, "0.05"),
    bound(100_000, "0.1"),
    bound(250_000, "0.25"),
    bound(500_000, "0.5"),
    bound(1_000_000, "1"),
    bound(2_500_000, "2.5"),
    bound(5_000_000, "5"),
    bound(10_000_000, "10"),
    bound(30_000_000, "30"),
];

/// Commit latency buckets, 0.5 ms to 2.5 s (an fsync on an SD card takes tens of
/// milliseconds; a lock held by another process delays a commit up to 2 s).
const COMMIT_BOUNDS: [Bound; 12] = [
    bound(500, "0.0005"),
    bound(1_000, "0.001"),
    bound(2_500, "0.0025"),
    bound(5_000, "0.005"),
    bound(10_000, "0.01"),
    bound(25_000, "0.025"),
    bound(50_000, "0.05"),
    bound(100_000, "0.1"),
    bound(250_000, "0.25"),
    bound(500_000, "0.5"),
    bound(1_000_000, "1"),
    bound(2_500_000, "2.5"),
];

/// Most buckets a histogram may have, `+Inf` included.
const MAX_BUCKETS: usize = 16;

/// A histogram of durations: a count per bucket (not cumulative; summed when rendered)
/// and the sum in microseconds.
pub struct Histogram {
    bounds: &'static [Bound],
    counts: [AtomicU64; MAX_BUCKETS],
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new(bounds: &'static [Bound]) -> Histogram {
        assert!(bounds.len() < MAX_BUCKETS);
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; MAX_BUCKETS],
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        let us = micros(d);
        let i = self
            .bounds
            .iter()
            .position(|b| us <= b.micros)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add(us, Relaxed);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Milliseconds since the first call in this process, plus one: 0 is "never".
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let ms = EPOCH.get_or_init(Instant::now).elapsed().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX - 1).saturating_add(1)
}

const fn counters<const N: usize>() -> [AtomicU64; N] {
    [const { AtomicU64::new(0) }; N]
}

/// Every metric p2 keeps. Use [`global`]; a separate instance is for tests.
pub struct Metrics {
    pushes: [[AtomicU64; OUTCOMES.len()]; PROVIDERS.len()],
    failures: [[AtomicU64; CAUSES.len()]; PROVIDERS.len()],
    push_seconds: [Histogram; PROVIDERS.len()],
    refusals: [AtomicU64; LIMITS.len()],
    created: [AtomicU64; PROVIDERS.len()],
    renewed: [AtomicU64; PROVIDERS.len()],
    removed: [AtomicU64; REMOVALS.len()],
    queue_depth: AtomicU64,
    queue_capacity: AtomicU64,
    workers: AtomicU64,
    workers_busy: AtomicU64,
    connected: AtomicBool,
    reconnects: AtomicU64,
    oauth_ok: AtomicU64,
    oauth_error: AtomicU64,
    commit_seconds: Histogram,
    commit_failures: AtomicU64,
    /// Commits so far; numbers the two below.
    commits: AtomicU64,
    /// The number of the last successful commit, 0 if none.
    commit_ok: AtomicU64,
    /// The number of the last failed commit, 0 if none.
    commit_failed: AtomicU64,
    /// [`now_ms`] of the last failed commit.
    commit_failed_at: AtomicU64,
    /// Why the last failed commit failed (written only on failure).
    commit_error: Mutex<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All zero, disconnected.
    pub const fn new() -> Metrics {
        Metrics {
            pushes: [counters(), counters()],
            failures: [counters(), counters()],
            push_seconds: [Histogram::new(&PUSH_BOUNDS), Histogram::new(&PUSH_BOUNDS)],
            refusals: counters(),
            created: counters(),
            renewed: counters(),
            removed: counters(),
            queue_depth: AtomicU64::new(0),
            queue_capacity: AtomicU64::new(0),
            workers: AtomicU64::new(0),
            workers_busy: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            oauth_ok: AtomicU64::new(0),
            oauth_error: AtomicU64::new(0),
            commit_seconds: Histogram::new(&COMMIT_BOUNDS),
            commit_failures: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            commit_ok: AtomicU64::new(0),
            commit_failed: AtomicU64::new(0),
            commit_failed_at: AtomicU64::new(0),
            commit_error: Mutex::new(String::new()),
        }
    }

    // --- hooks ------------------------------------------------------------------------

    /// A push's outcome reached the core `elapsed` after it was handed to the pool.
    pub fn push_done(&self, service: Service, pushed: Pushed, elapsed: Duration) {
        let p = provider_index(service);
        self.push_seconds[p].observe(elapsed);
        self.count_push(p, pushed);
    }

    /// A publish to a registration of `service` (its stored name) answered without a
    /// provider request, a push to the node having just been delivered.
    pub fn coalesced(&self, service: &str) {
        if let Some(p) = PROVIDERS.iter().position(|s| *s == service) {
            self.pushes[p][COALESCED].fetch_add(1, Relaxed);
        }
    }

    /// A publish to a registration of `service` (its stored name) answered `wait` for
    /// `failure` before it reached a worker.
    pub fn unsent(&self, service: &str, failure: Failure) {
        if let Some(p) = PROVIDERS.iter().position(|s| *s == service) {
            self.count_push(p, Pushed::Failed(failure));
        }
    }

    /// A publish answered `wait` because the push queue (or its domain's share of it) was
    /// full: a failed push. The pool counts the refusal by its limit (`queue_full` or
    /// `fair_share`).
    pub fn queue_full(&self, service: Service) {
        self.count_push(provider_index(service), Pushed::Failed(Failure::QueueFull));
    }

    fn count_push(&self, p: usize, pushed: Pushed) {
        let outcome = match pushed {
            Pushed::Delivered => DELIVERED,
            Pushed::DeadToken => DEAD_TOKEN,
            Pushed::Failed(f) => {
                self.failures[p][cause_index(f)].fetch_add(1, Relaxed);
                FAILED
            }
        };
        self.pushes[p][outcome].fetch_add(1, Relaxed);
    }

    /// A request refused by `limit`.
    pub fn refused(&self, limit: Limit) {
        let i = match limit {
            Limit::RegistrationRate => 0,
            Limit::DomainCap => 1,
            Limit::StanzaSize => 2,
            Limit::FieldSize => 3,
            Limit::QueueFull => 4,
            Limit::FairShare => 5,
        };
        self.refusals[i].fetch_add(1, Relaxed);
    }

    /// A registration of `service` stored: new (`created`) or renewed; `evicted` older
    /// ones of its account deleted for the per-account cap.
    pub fn registered(&self, service: Service, created: bool, evicted: usize) {
        let p = provider_index(service);
        if created {
            self.created[p].fetch_add(1, Relaxed);
        } else {
            self.renewed[p].fetch_add(1, Relaxed);
        }
        if evicted > 0 {
            self.removed(Removal::Evicted, evicted as u64);
        }
    }

    /// `n` registrations deleted for `reason`.
    pub fn removed(&self, reason: Removal, n: u64) {
        let i = match reason {
            Removal::Unregistered => 0,
            Removal::DeadToken => 1,
            Removal::Evicted => 2,
            Removal::Expired => 3,
        };
        self.removed[i].fetch_add(n, Relaxed);
    }

    /// The pool's size: `workers` threads on a queue of `capacity`.
    pub fn pool(&self, workers: usize, capacity: usize) {
        self.workers.store(workers as u64, Relaxed);
        self.queue_capacity.store(capacity as u64, Relaxed);
    }

    /// The push queue now holds `depth` jobs.
    pub fn queue_depth(&self, depth: usize) {
        self.queue_depth.store(depth as u64, Relaxed);
    }

    /// A worker is busy until the returned guard is dropped.
    pub fn busy(&self) -> Busy<'_> {
        self.workers_busy.fetch_add(1, Relaxed);
        Busy(&self.workers_busy)
    }

    /// The component connection completed its handshake.
    pub fn connected(&self) {
        self.connected.store(true, Relaxed);
    }

    /// The component connection ended (or failed before its handshake); a reconnect
    /// follows.
    pub fn disconnected(&self) {
        self.connected.store(false, Relaxed);
        self.reconnects.fetch_add(1, Relaxed);
    }

    /// Whether the component connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    /// An OAuth access-token fetch finished.
    pub fn oauth_refresh(&self, ok: bool) {
        if ok {
            self.oauth_ok.fetch_add(1, Relaxed);
        } else {
            self.oauth_error.fetch_add(1, Relaxed);
        }
    }

    /// Runs the core's `commit`, recording how long it took and whether it failed.
    pub fn commit<E: std::fmt::Display>(
        &self,
        commit: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let started = Instant::now();
        let result = commit();
        self.commit_seconds.observe(started.elapsed());
        let n = self.commits.fetch_add(1, Relaxed).wrapping_add(1);
        match &result {
            Ok(()) => self.commit_ok.store(n, Relaxed),
            Err(e) => {
                self.commit_failures.fetch_add(1, Relaxed);
                if let Ok(mut text) = self.commit_error.lock() {
                    *text = e.to_string();
                }
                self.commit_failed_at.store(now_ms(), Relaxed);
                self.commit_failed.store(n, Relaxed);
            }
        }
        result
    }

    /// Why the core's writes fail, if its last commit failed within `window` and none
    /// succeeded since.
    pub fn commit_failure(&self, window: Duration) -> Option<String> {
        let failed = self.commit_failed.load(Relaxed);
        if failed == 0 || self.commit_ok.load(Relaxed) > failed {
            return None;
        }
        let age = now_ms().saturating_sub(self.commit_failed_at.load(Relaxed));
        if u128::from(age) >= window.as_millis() {
            return None;
        }
        Some(
            self.commit_error
                .lock()
                .map(|t| t.clone())
                .unwrap_or_default(),
        )
    }

    // --- rendering --------------------------------------------------------------------

    /// The text exposition (format 0.0.4) of every metric, with what the listener read
    /// from the database and the process's start time.
    pub fn render(&self, extra: &Figures) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let w = &mut out;

        family(
            w,
            "p2_build_info",
            "gauge",
            "The running p2: its version and whether it was built with APNs; always 1.",
        );
        let _ = writeln!(
            w,
            "p2_build_info{{version=\"{}\",apns=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            cfg!(feature = "apns")
        );
        family(
            w,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
        );
        let _ = writeln!(w, "process_start_time_seconds {}", extra.start_time);

        family(
            w,
            "p2_xmpp_connected",
            "gauge",
            "1 while the component connection to the XMPP server is up (handshake \
             accepted), else 0.",
        );
        let _ = writeln!(
            w,
            "p2_xmpp_connected {}",
            u8::from(self.connected.load(Relaxed))
        );
        family(
            w,
            "p2_xmpp_reconnects_total",
            "counter",
            "Component connections lost or refused, each followed by a reconnect attempt.",
        );
        let _ = writeln!(
            w,
            "p2_xmpp_reconnects_total {}",
            self.reconnects.load(Relaxed)
        );

        family(
            w,
            "p2_pushes_total",
            "counter",
            "Publishes for a registration, by provider and outcome: delivered, coalesced \
             (answered without a provider request, a push to the node having just been \
             delivered), dead_token (registration deleted), failed (answered wait; see \
             p2_push_failures_total).",
        );
        for (p, provider) in PROVIDERS.iter().enumerate() {
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    w,
                    "p2_pushes_total{{provider=\"{provider}\",outcome=\"{outcome}\"}} {}",
                    self.pushes[p][o].load(Relaxed)
                );
            }
        }
        family(
            w,
            "p2_push_failures_total",
            "counter",
            "Pushes answered wait without delivery, by provider and cause.",
        );
        for (p, provider) in PROVIDERS.iter().enumerate() {
            for (c, cause) in CAUSES.iter().enumerate() {
                let _ = writeln!(
                    w,
                    "p2_push_failures_total{{provider=\"{provider}\",cause=\"{cause}\"}} {}",
                    self.failures[p][c].load(Relaxed)
                );
            }
        }
        family(
            w,
            "p2_push_duration_seconds",
            "histogram",
            "Time from handing a push to the workers until its outcome reached the core \
             (queueing, the provider's answer and its retries), by provider.",
        );
        for (p, provider) in PROVIDERS.iter().enumerate() {
            histogram(
                w,
                "p2_push_duration_seconds",
                &format!("provider=\"{provider}\""),
                &self.push_seconds[p],
            );
        }

        family(
            w,
            "p2_limit_refusals_total",
            "counter",
            "Requests refused by a limit: registration_rate, domain_cap, stanza_size, \
             field_size, queue_full, fair_share.",
        );
        for (i, limit) in LIMITS.iter().enumerate() {
            let _ = writeln!(
                w,
                "p2_limit_refusals_total{{limit=\"{limit}\"}} {}",
                self.refusals[i].load(Relaxed)
            );
        }

        if let Some(counts) = &extra.registrations {
            family(
                w,
                "p2_registrations",
                "gauge",
                "Registrations stored, by provider (counted in the database; their sum \
                 is the total).",
            );
            for provider in PROVIDERS {
                let n: u64 = counts
                    .iter()
                    .filter(|(s, _)| s == provider)
                    .map(|(_, n)| *n)
                    .sum();
                let _ = writeln!(w, "p2_registrations{{provider=\"{provider}\"}} {n}");
            }
            let other: u64 = counts
                .iter()
                .filter(|(s, _)| !PROVIDERS.contains(&s.as_str()))
                .map(|(_, n)| *n)
                .sum();
            if other > 0 {
                let _ = writeln!(w, "p2_registrations{{provider=\"other\"}} {other}");
            }
        }
        family(
            w,
            "p2_registrations_created_total",
            "counter",
            "New registrations, by provider.",
        );
        for (p, provider) in PROVIDERS.iter().enumerate() {
            let _ = writeln!(
                w,
                "p2_registrations_created_total{{provider=\"{provider}\"}} {}",
                self.created[p].load(Relaxed)
            );
        }
        family(
            w,
            "p2_registrations_renewed_total",
            "counter",
            "Registrations refreshed by their device (same device, token updated), by \
             provider.",
        );
        for (p, provider) in PROVIDERS.iter().enumerate() {
            let _ = writeln!(
                w,
                "p2_registrations_renewed_total{{provider=\"{provider}\"}} {}",
                self.renewed[p].load(Relaxed)
            );
        }
        family(
            w,
            "p2_registrations_removed_total",
            "counter",
            "Registrations deleted by the daemon, by reason: unregistered (by the \
             device), dead_token, evicted (its account over the per-account cap), expired.",
        );
        for (i, reason) in REMOVALS.iter().enumerate() {
            let _ = writeln!(
                w,
                "p2_registrations_removed_total{{reason=\"{reason}\"}} {}",
                self.removed[i].load(Relaxed)
            );
        }

        for (name, help, value) in [
            (
                "p2_push_queue_depth",
                "Pushes waiting for a worker.",
                &self.queue_depth,
            ),
            (
                "p2_push_queue_capacity",
                "Pushes the queue holds at most; a publish beyond it is answered wait.",
                &self.queue_capacity,
            ),
            (
                "p2_push_workers",
                "Push worker threads at most (they start on demand).",
                &self.workers,
            ),
            (
                "p2_push_workers_busy",
                "Push workers sending a push now.",
                &self.workers_busy,
            ),
        ] {
            family(w, name, "gauge", help);
            let _ = writeln!(w, "{name} {}", value.load(Relaxed));
        }

        family(
            w,
            "p2_oauth_refreshes_total",
            "counter",
            "Google OAuth access-token fetches for FCM, by result (ok, error).",
        );
        let _ = writeln!(
            w,
            "p2_oauth_refreshes_total{{result=\"ok\"}} {}",
            self.oauth_ok.load(Relaxed)
        );
        let _ = writeln!(
            w,
            "p2_oauth_refreshes_total{{result=\"error\"}} {}",
            self.oauth_error.load(Relaxed)
        );

        family(
            w,
            "p2_db_commit_duration_seconds",
            "histogram",
            "Time the core's database commits take (one per batch of writes, fsync \
             included).",
        );
        histogram(w, "p2_db_commit_duration_seconds", "", &self.commit_seconds);
        family(
            w,
            "p2_db_commit_failures_total",
            "counter",
            "Database commits that failed (their replies were answered wait).",
        );
        let _ = writeln!(
            w,
            "p2_db_commit_failures_total {}",
            self.commit_failures.load(Relaxed)
        );
        out
    }
}

/// Marks a worker busy while it lives ([`Metrics::busy`]).
pub struct Busy<'a>(&'a AtomicU64);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// What the listener adds to a rendering: figures not kept in atomics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Registrations per stored service name, if the database could be read.
    pub registrations: Option<Vec<(String, u64)>>,
    /// The process's start, Unix seconds.
    pub start_time: u64,
}

fn family(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}");
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

/// The `_bucket` (cumulative), `_sum` and `_count` lines of one histogram; `labels` are
/// its other labels, without braces.
fn histogram(w: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0u64;
    for (i, b) in h.bounds.iter().enumerate() {
        cumulative = cumulative.wrapping_add(h.counts[i].load(Relaxed));
        let _ = writeln!(
            w,
            "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}",
            b.le
        );
    }
    cumulative = cumulative.wrapping_add(h.counts[h.bounds.len()].load(Relaxed));
    let _ = writeln!(w, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
    let sum = h.sum_micros.load(Relaxed) as f64 / 1e6;
    let braced = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(w, "{name}_sum{braced} {sum}");
    let _ = writeln!(w, "{name}_count{braced} {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_fresh_set_renders_zeros_and_build_info() {
        let m = Metrics::new();
        let text = m.render(&Figures {
            registrations: Some(vec![("fcm".into(), 3), ("apns".into(), 2)]),
            start_time: 1_700_000_000,
        });
        assert!(text.contains("\np2_xmpp_connected 0\n"));
        assert!(text.contains(&format!(
            "\np2_build_info{{version=\"{}\",apns=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            cfg!(feature = "apns")
        )));
        assert!(text.contains("\nprocess_start_time_seconds 1700000000\n"));
        assert!(text.contains("\np2_registrations{provider=\"fcm\"} 3\n"));
        assert!(text.contains("\np2_registrations{provider=\"apns\"} 2\n"));
        assert!(!text.contains("provider=\"other\""));
        assert_eq!(
            lines(&text, "p2_pushes_total{provider=\"fcm\""),
            [
                "p2_pushes_total{provider=\"fcm\",outcome=\"delivered\"} 0",
                "p2_pushes_total{provider=\"fcm\",outcome=\"coalesced\"} 0",
                "p2_pushes_total{provider=\"fcm\",outcome=\"dead_token\"} 0",
                "p2_pushes_total{provider=\"fcm\",outcome=\"failed\"} 0",
            ]
        );
    }

    #[test]
    fn push_outcomes_land_in_their_series() {
        let m = Metrics::new();
        m.push_done(
            Service::Fcm,
            (&Outcome::Delivered).into(),
            Duration::from_millis(40),
        );
        m.push_done(
            Service::Fcm,
            (&Outcome::failed(Cause::RateLimited, "429")).into(),
            Duration::from_millis(3000),
        );
        m.push_done(
            Service::Apns,
            (&Outcome::DeadToken {
                reason: "Unregistered".into(),
            })
                .into(),
            Duration::from_millis(100),
        );
        m.push_done(
            Service::Fcm,
            (&Outcome::DeadUnlessMisconfigured {
                reason: "SENDER_ID_MISMATCH".into(),
                suspect: "x",
            })
                .into(),
            Duration::from_millis(100),
        );
        m.queue_full(Service::Apns);
        m.refused(Limit::QueueFull);
        m.unsent("apns", Failure::Provider(Cause::NotConfigured));
        m.unsent("xmpp", Failure::QueueFull); // not a provider: ignored
        m.coalesced("fcm");
        m.coalesced("gcm"); // not a provider: ignored
        let text = m.render(&Figures::default());
        for line in [
            "p2_pushes_total{provider=\"fcm\",outcome=\"delivered\"} 1",
            "p2_pushes_total{provider=\"fcm\",outcome=\"coalesced\"} 1",
            "p2_pushes_total{provider=\"fcm\",outcome=\"failed\"} 2",
            "p2_pushes_total{provider=\"apns\",outcome=\"dead_token\"} 1",
            "p2_pushes_total{provider=\"apns\",outcome=\"failed\"} 2",
            "p2_push_failures_total{provider=\"apns\",cause=\"not_configured\"} 1",
            "p2_push_failures_total{provider=\"fcm\",cause=\"rate_limited\"} 1",
            "p2_push_failures_total{provider=\"fcm\",cause=\"dead_unconfirmed\"} 1",
            "p2_push_failures_total{provider=\"apns\",cause=\"queue_full\"} 1",
            "p2_limit_refusals_total{limit=\"queue_full\"} 1",
            // 40 ms: first in the 0.05 bucket; 100 ms in 0.1; 3 s in 5.
            "p2_push_duration_seconds_bucket{provider=\"fcm\",le=\"0.025\"} 0",
            "p2_push_duration_seconds_bucket{provider=\"fcm\",le=\"0.05\"} 1",
            "p2_push_duration_seconds_bucket{provider=\"fcm\",le=\"0.1\"} 2",
            "p2_push_duration_seconds_bucket{provider=\"fcm\",le=\"2.5\"} 2",
            "p2_push_duration_seconds_bucket{provider=\"fcm\",le=\"5\"} 3",
            "p2_push_duration_seconds_bucket{provider=\"fcm\",le=\"+Inf\"} 3",
            "p2_push_duration_seconds_sum{provider=\"fcm\"} 3.14",
            "p2_push_duration_seconds_count{provider=\"fcm\"} 3",
            "p2_push_duration_seconds_count{provider=\"apns\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // A queue-full push never reached a provider: no latency observed for it.
        assert!(text
            .lines()
            .any(|l| l == "p2_push_duration_seconds_bucket{provider=\"apns\",le=\"+Inf\"} 1"));
    }

    #[test]
    fn a_bucket_bound_is_inclusive_and_beyond_the_last_is_inf() {
        let h = Histogram::new(&PUSH_BOUNDS);
        h.observe(Duration::from_millis(10));
        h.observe(Duration::from_secs(31));
        h.observe(Duration::MAX);
        let mut text = String::new();
        histogram(&mut text, "x", "", &h);
        assert!(text.starts_with("x_bucket{le=\"0.01\"} 1\nx_bucket{le=\"0.025\"} 1\n"));
        assert!(text.contains("\nx_bucket{le=\"30\"} 1\nx_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.ends_with("\nx_count 3\n"));
    }

    #[test]
    fn registrations_connection_pool_oauth_and_commits() {
        let m = Metrics::new();
        m.registered(Service::Fcm, true, 0);
        m.registered(Service::Fcm, false, 2);
        m.removed(Removal::Unregistered, 1);
        m.removed(Removal::Expired, 7);
        m.refused(Limit::RegistrationRate);
        m.refused(Limit::StanzaSize);
        m.pool(32, 1024);
        m.queue_depth(5);
        let busy = m.busy();
        m.connected();
        m.disconnected();
        m.connected();
        m.oauth_refresh(true);
        m.oauth_refresh(false);
        assert_eq!(m.commit(|| Ok::<(), String>(())), Ok(()));
        let text = m.render(&Figures {
            registrations: Some(vec![("fcm".into(), 4), ("xmpp".into(), 1)]),
            start_time: 0,
        });
        drop(busy);
        for line in [
            "p2_registrations_created_total{provider=\"fcm\"} 1",
            "p2_registrations_renewed_total{provider=\"fcm\"} 1",
            "p2_registrations_removed_total{reason=\"unregistered\"} 1",
            "p2_registrations_removed_total{reason=\"evicted\"} 2",
            "p2_registrations_removed_total{reason=\"expired\"} 7",
            "p2_registrations{provider=\"fcm\"} 4",
            "p2_registrations{provider=\"apns\"} 0",
            "p2_registrations{provider=\"other\"} 1",
            "p2_limit_refusals_total{limit=\"registration_rate\"} 1",
            "p2_limit_refusals_total{limit=\"stanza_size\"} 1",
            "p2_push_workers 32",
            "p2_push_queue_capacity 1024",
            "p2_push_queue_depth 5",
            "p2_push_workers_busy 1",
            "p2_xmpp_connected 1",
            "p2_xmpp_reconnects_total 1",
            "p2_oauth_refreshes_total{result=\"ok\"} 1",
            "p2_oauth_refreshes_total{result=\"error\"} 1",
            "p2_db_commit_duration_seconds_count 1",
            "p2_db_commit_failures_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(m
            .render(&Figures::default())
            .lines()
            .any(|l| l == "p2_push_workers_busy 0"));
    }

    #[test]
    fn a_failed_commit_is_reported_until_one_succeeds() {
        let m = Metrics::new();
        let window = Duration::from_secs(300);
        assert_eq!(m.commit_failure(window), None);
        assert_eq!(
            m.commit(|| Err::<(), _>("sqlite: database or disk is full")),
            Err("sqlite: database or disk is full")
        );
        assert_eq!(
            m.commit_failure(window).as_deref(),
            Some("sqlite: database or disk is full")
        );
        assert!(m
            .render(&Figures::default())
            .lines()
            .any(|l| l == "p2_db_commit_failures_total 1"));
        // Old news past the window.
        assert_eq!(m.commit_failure(Duration::ZERO), None);
        m.commit(|| Ok::<(), &str>(())).unwrap();
        assert_eq!(m.commit_failure(window), None);
    }
}
