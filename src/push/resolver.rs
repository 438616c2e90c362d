//! A name resolver for ureq that remembers answers for a minute.
//!
//! ureq's default resolver spawns a thread for every lookup when a timeout is set, and
//! it looks the host up before it checks its pool of kept-alive connections: one thread
//! per push. The push providers talk to one or two hosts, so the answer is cached and
//! the lookup (and its thread) happens once a minute at most.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long an answer is reused.
pub const TTL: Duration = Duration::from_secs(60);

/// [`DefaultResolver`] behind a small cache keyed by the URI's scheme and authority.
#[derive(Default)]
pub struct CachingResolver {
    inner: DefaultResolver,
    cache: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl fmt::Debug for CachingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingResolver").finish_non_exhaustive()
    }
}

impl Resolver for CachingResolver {
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
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, addrs)) = cache.get(&key) {
                if at.elapsed() < TTL {
                    return Ok(addrs.clone());
                }
            }
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 64 {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_reused_within_the_ttl() {
        let r = CachingResolver::default();
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
}
