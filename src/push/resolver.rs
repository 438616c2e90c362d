//! A name resolver for ureq that remembers answers for a minute, and serves the last
//! good one for up to ten minutes while DNS fails.
//!
//! ureq's default resolver spawns a thread for every lookup when a timeout is set, and
//! it looks the host up before it checks its pool of kept-alive connections: one thread
//! per push. The push providers talk to one or two hosts, so the answer is cached and
//! the lookup (and its thread) happens once a minute at most.
//!
//! Clones share the cache, so that every worker's HTTP agent uses one. While one caller
//! looks a host up again, the others go on with the answer they have (a minute old):
//! a thousand workers do not all look it up, each on a thread of its own, at once.
//!
//! A failed lookup does not fail every push while the provider itself is fine: the last
//! good answer is used for up to [`STALE_LIMIT`] after it was got, and the lookup is
//! tried again every [`RETRY_AFTER_FAILURE`] meanwhile (not on every push, each of which
//! would wait for the failing DNS server).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::warn;
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long an answer is reused.
pub const TTL: Duration = Duration::from_secs(60);

/// How long after it was got the last good answer still serves while lookups fail.
pub const STALE_LIMIT: Duration = Duration::from_secs(10 * 60);

/// While lookups fail and a stale answer serves, how often the lookup is tried again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// Most hosts remembered; past this, the cache starts over.
const MAX_HOSTS: usize = 64;

/// A remembered answer.
struct Entry {
    addrs: ResolvedSocketAddrs,
    /// When the lookup that gave it succeeded.
    resolved: Instant,
    /// From here on, the next caller looks the host up again.
    next_lookup: Instant,
}

/// A resolver behind a small cache keyed by the URI's scheme and authority, shared by
/// its clones. `R` is [`DefaultResolver`] in the daemon.
#[derive(Default)]
pub struct CachingResolver<R = DefaultResolver> {
    inner: Arc<R>,
    cache: Arc<Mutex<HashMap<String, Entry>>>,
}

impl<R> Clone for CachingResolver<R> {
    fn clone(&self) -> Self {
        CachingResolver {
            inner: Arc::clone(&self.inner),
            cache: Arc::clone(&self.cache),
        }
    }
}

impl<R> fmt::Debug for CachingResolver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingResolver").finish_non_exhaustive()
    }
}

impl<R> CachingResolver<R> {
    /// A cache in front of `inner`.
    pub fn new(inner: R) -> Self {
        CachingResolver {
            inner: Arc::new(inner),
            cache: Arc::default(),
        }
    }

    /// The answer for `key` at `now`: the cached one while fresh, else `lookup`'s, or the
    /// last good one while `lookup` fails and it is younger than [`STALE_LIMIT`].
    fn answer(
        &self,
        key: String,
        now: Instant,
        lookup: impl FnOnce() -> Result<ResolvedSocketAddrs, ureq::Error>,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = cache.get_mut(&key) {
                if now < entry.next_lookup {
                    return Ok(entry.addrs.clone());
                }
                // This caller looks the host up again; until it is done (or for as long
                // as a failed lookup waits before the next), the others keep this answer.
                if now.saturating_duration_since(entry.resolved) < STALE_LIMIT {
                    entry.next_lookup =
                        (now + RETRY_AFTER_FAILURE).min(entry.resolved + STALE_LIMIT);
                }
            }
        }
        let looked_up = lookup();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match looked_up {
            Ok(addrs) => {
                if cache.len() >= MAX_HOSTS && !cache.contains_key(&key) {
                    cache.clear();
                }
                cache.insert(
                    key,
                    Entry {
                        addrs: addrs.clone(),
                        resolved: now,
                        next_lookup: now + TTL,
                    },
                );
                Ok(addrs)
            }
            Err(e) => match cache.get_mut(&key) {
                Some(entry) if now.saturating_duration_since(entry.resolved) < STALE_LIMIT => {
                    warn!(
                        "cannot resolve {key} ({e}); using its addresses of {} s ago",
                        now.saturating_duration_since(entry.resolved).as_secs()
                    );
                    entry.next_lookup =
                        (now + RETRY_AFTER_FAILURE).min(entry.resolved + STALE_LIMIT);
                    Ok(entry.addrs.clone())
                }
                _ => {
                    cache.remove(&key);
                    Err(e)
                }
            },
        }
    }
}

impl<R: Resolver> Resolver for CachingResolver<R> {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or_default(),
            uri.authority().map(|a| a.as_str()).unwrap_or_default()
        );
        self.answer(key, Instant::now(), || {
            self.inner.resolve(uri, config, timeout)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn answers_are_reused_within_the_ttl() {
        let r = CachingResolver::<DefaultResolver>::default();
        let uri: Uri = "http://127.0.0.1:4000/x".parse().unwrap();
        let config = Config::default();
        let first = r.resolve(&uri, &config, NextTimeout::default()).unwrap();
        assert_eq!(first[0], "127.0.0.1:4000".parse().unwrap());
        assert_eq!(r.cache.lock().unwrap().len(), 1);
        let again = r.resolve(&uri, &config, NextTimeout::default()).unwrap();
        assert_eq!(first[..], again[..]);
        let other: Uri = "http://127.0.0.1:4001/x".parse().unwrap();
        r.resolve(&other, &config, NextTimeout::default()).unwrap();
        assert_eq!(r.cache.lock().unwrap().len(), 2);
    }

    #[test]
    fn while_one_caller_looks_up_again_the_others_keep_the_answer() {
        let r = CachingResolver::<DefaultResolver>::default();
        let uri: Uri = "http://127.0.0.1:4000/x".parse().unwrap();
        let config = Config::default();
        let key = "http://127.0.0.1:4000".to_owned();
        let lookup = || DefaultResolver::default().resolve(&uri, &config, NextTimeout::default());
        let t0 = Instant::now();
        let first = r.answer(key.clone(), t0, lookup).unwrap();
        let stale = t0 + TTL;
        let (started, go) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|scope| {
            let slow = scope.spawn(|| {
                r.answer(key.clone(), stale, || {
                    started.wait();
                    go.wait();
                    lookup()
                })
            });
            started.wait();
            // The lookup is under way: another caller (a clone, as another worker's agent
            // holds) gets the answer it had, without a lookup of its own.
            let clone = r.clone();
            let again = clone.answer(key.clone(), stale, || panic!("a second lookup"));
            assert_eq!(again.unwrap()[..], first[..]);
            go.wait();
            assert_eq!(slow.join().unwrap().unwrap()[..], first[..]);
        });
        assert_eq!(r.cache.lock().unwrap()[&key].next_lookup, stale + TTL);
    }

    /// A resolver whose lookups fail while `down` is set: a DNS server gone away.
    #[derive(Debug, Default)]
    struct Flaky {
        down: AtomicBool,
        lookups: AtomicUsize,
    }

    impl Resolver for Flaky {
        fn resolve(
            &self,
            uri: &Uri,
            config: &Config,
            timeout: NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(ureq::Error::HostNotFound);
            }
            DefaultResolver::default().resolve(uri, config, timeout)
        }
    }

    #[test]
    fn a_failing_lookup_serves_the_last_good_answer_for_ten_minutes() {
        let r = CachingResolver::new(Flaky::default());
        let uri: Uri = "http://127.0.0.1:4000/x".parse().unwrap();
        let config = Config::default();
        let key = "http://127.0.0.1:4000".to_owned();
        let lookup = || r.inner.resolve(&uri, &config, NextTimeout::default());
        let expected: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(r.answer(key.clone(), t0, lookup).unwrap()[0], expected);
        r.inner.down.store(true, Ordering::SeqCst);
        let lookups = |n| assert_eq!(r.inner.lookups.load(Ordering::SeqCst), n);
        // Fresh for a minute: no lookup.
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(r.answer(key.clone(), at(59), lookup).unwrap()[0], expected);
        lookups(1);
        // Then DNS fails: the old answer serves, and the lookup waits 10 s to be tried again.
        assert_eq!(r.answer(key.clone(), at(60), lookup).unwrap()[0], expected);
        lookups(2);
        assert_eq!(r.answer(key.clone(), at(69), lookup).unwrap()[0], expected);
        lookups(2);
        assert_eq!(r.answer(key.clone(), at(70), lookup).unwrap()[0], expected);
        lookups(3);
        assert_eq!(r.answer(key.clone(), at(599), lookup).unwrap()[0], expected);
        lookups(4);
        // Ten minutes after the last good answer, the failure shows.
        assert!(matches!(
            r.answer(key.clone(), at(600), lookup),
            Err(ureq::Error::HostNotFound)
        ));
        assert!(matches!(
            r.answer(key.clone(), at(601), lookup),
            Err(ureq::Error::HostNotFound)
        ));
        lookups(6);
        // DNS back: answers again.
        r.inner.down.store(false, Ordering::SeqCst);
        assert_eq!(r.answer(key.clone(), at(602), lookup).unwrap()[0], expected);
    }
}
