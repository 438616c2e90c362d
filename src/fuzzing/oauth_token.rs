//! The OAuth token endpoint's answer on arbitrary bytes, as far as the token cache.
//!
//! Input: the body of the token endpoint's answer. Checks: no panic (no overflow either,
//! whatever the `expires_in`); an accepted token is a non-empty header value and its
//! cache entry lies within the clamped lifetime, refreshed before it expires; an error
//! code taken from an error answer is a short plausible word.

use std::time::Instant;

use crate::push::google_auth::{
    cached_from, oauth_error_code, MAX_TOKEN_LIFETIME, MIN_TOKEN_LIFETIME,
};

/// Checks one input (see the module's documentation).
pub fn oauth_token(data: &[u8]) {
    let started = Instant::now();
    if let Ok(cached) = cached_from(started, data) {
        let secret = cached.token.secret();
        assert!(!secret.is_empty() && secret.bytes().all(|b| b.is_ascii_graphic()));
        let lifetime = cached.expires_at - started;
        assert!((MIN_TOKEN_LIFETIME..=MAX_TOKEN_LIFETIME).contains(&lifetime));
        assert!(started < cached.refresh_at && cached.refresh_at < cached.expires_at);
    }
    if let Some(code) = oauth_error_code(data) {
        assert!(!code.is_empty() && code.len() <= 64 && code.is_ascii());
    }
}
