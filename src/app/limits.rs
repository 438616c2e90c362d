//! The core's limits on what the federated network may ask (README "Limits"): the
//! hourly budget of new registrations per domain, publish coalescing, the sizes of
//! publish fields, and logging each refusal once an hour per domain. Every window is
//! measured on the monotonic instant the caller passes in; the state lives in memory
//! and starts afresh with the process.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::config;

/// Longest publish node accepted (p2's own are 12 characters).
pub const MAX_NODE_BYTES: usize = 256;
/// Longest publish secret accepted (p2's own are 24 characters).
pub const MAX_SECRET_BYTES: usize = 256;

/// The window of the registration budget and of log-once.
pub const HOUR: Duration = Duration::from_secs(3600);

/// Bound on each map before stale entries are swept (a flood of distinct domains or
/// nodes cannot grow memory without bound).
const SWEEP_ABOVE: usize = 100_000;

/// The windows and counters behind the limits.
pub struct Limiter {
    /// The configured limits.
    pub config: config::Limits,
    /// New registrations per domain in the current hour: (window start, count). Kept
    /// here, in memory: a restart gives every domain a fresh hour.
    new_per_domain: HashMap<String, (Instant, u32)>,
    /// Last delivered push per (node, domain), with a hash of the token it went to.
    delivered: HashMap<String, (Instant, u64)>,
    /// Refusals already logged this hour, per (kind, source domain).
    logged: HashMap<(&'static str, String), Instant>,
}

impl Limiter {
    /// Limits from the configuration, every window empty.
    pub fn new(config: config::Limits) -> Limiter {
        Limiter {
            config,
            new_per_domain: HashMap::new(),
            delivered: HashMap::new(),
            logged: HashMap::new(),
        }
    }

    /// Whether a refusal of `kind` for `domain` should be logged: once per hour per
    /// source at most.
    pub fn first_this_hour(&mut self, kind: &'static str, domain: &str, now: Instant) -> bool {
        if self.logged.len() > SWEEP_ABOVE {
            self.logged
                .retain(|_, t| now.saturating_duration_since(*t) < HOUR);
        }
        match self.logged.get(&(kind, domain.to_owned())) {
            Some(t) if now.saturating_duration_since(*t) < HOUR => false,
            _ => {
                self.logged.insert((kind, domain.to_owned()), now);
                true
            }
        }
    }

    /// Whether `domain` may create another registration this hour.
    pub fn may_create(&mut self, domain: &str, now: Instant) -> bool {
        if self.new_per_domain.len() > SWEEP_ABOVE {
            self.new_per_domain
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < HOUR);
        }
        match self.new_per_domain.get(domain) {
            Some((start, n)) if now.saturating_duration_since(*start) < HOUR => {
                *n < self.config.new_registrations_per_domain_hour
            }
            _ => true,
        }
    }

    /// Counts a registration `domain` created.
    pub fn created(&mut self, domain: &str, now: Instant) {
        let entry = self
            .new_per_domain
            .entry(domain.to_owned())
            .or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= HOUR {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Whether a publish to (node, domain), whose registration holds `token`, is
    /// answered without a provider request: a push to that same token was delivered
    /// within `limits.coalesceMillis`. A new token is never coalesced away, even when a
    /// push to the old one is delivered after the token changed.
    pub fn coalesced(&self, node: &str, domain: &str, token: &str, now: Instant) -> bool {
        // Empty when coalescing is off: no key is built then.
        if self.delivered.is_empty() {
            return false;
        }
        match self.delivered.get(&key(node, domain)) {
            Some((at, hash)) => {
                *hash == token_hash(token)
                    && now.saturating_duration_since(*at) < self.config.coalesce
            }
            None => false,
        }
    }

    /// Opens the coalescing window of (node, domain) for `token`: a push to it was
    /// delivered.
    pub fn delivered(&mut self, node: &str, domain: &str, token: &str, now: Instant) {
        if self.config.coalesce.is_zero() {
            return;
        }
        if self.delivered.len() > SWEEP_ABOVE {
            let window = self.config.coalesce;
            self.delivered
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < window);
        }
        self.delivered
            .insert(key(node, domain), (now, token_hash(token)));
    }

    /// Ends the coalescing window of (node, domain): its token changed or died.
    pub fn end_coalescing(&mut self, node: &str, domain: &str) {
        if !self.delivered.is_empty() {
            self.delivered.remove(&key(node, domain));
        }
    }
}

/// The key of a node in the map of recent deliveries.
fn key(node: &str, domain: &str) -> String {
    format!("{node}\0{domain}")
}

/// A token's hash, to tell whether a window belongs to the token stored now without
/// keeping tokens (up to 4 KiB each) in memory.
fn token_hash(token: &str) -> u64 {
    let mut h = DefaultHasher::new();
    token.hash(&mut h);
    h.finish()
}

/// Constant-time equality of two secrets (the length is not hidden).
pub fn secret_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_value() {
        assert!(secret_eq(
            "G4yJr4P6XSecKI6H4Jt8AxUm",
            "G4yJr4P6XSecKI6H4Jt8AxUm"
        ));
        assert!(!secret_eq(
            "G4yJr4P6XSecKI6H4Jt8AxUm",
            "G4yJr4P6XSecKI6H4Jt8AxUn"
        ));
        assert!(!secret_eq(
            "G4yJr4P6XSecKI6H4Jt8AxUm",
            "G4yJr4P6XSecKI6H4Jt8AxU"
        ));
    }
}
