//! OAuth2 for a Google service account: signs an RS256 JWT and trades it for one cached access token.
//!
//! No SDK: the JWT is built by hand and signed with `ring`, the token endpoint is called with
//! the caller's `ureq::Agent` (PROTOCOL.md §6, "OAuth2 with a Google service account").
//! The access token is shared by every worker thread; only one fetch runs at a time.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use log::debug;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::Value;

/// The OAuth2 scope that allows sending FCM messages.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// Lifetime asked for in the JWT (`exp - iat`); Google accepts at most one hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// A cached token is refreshed once it is this close to its expiry.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// After a failed fetch, no new fetch is tried for this long; callers get the last error.
const FAILURE_BACKOFF: Duration = Duration::from_secs(1);

/// The shortest lifetime taken from a token answer: a shorter `expires_in` would make
/// every push fetch a token (an expired one is renewed after FCM's 401 anyway).
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// The longest lifetime taken from a token answer (Google's are an hour): a remote
/// `expires_in` never meets `Instant` arithmetic unclamped.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Largest token endpoint response body we read.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, form-urlencoded.
const GRANT_TYPE_FORM: &str = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

/// The fields of a Google service-account JSON key file that the daemon needs.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// The Firebase / Google Cloud project id (`project_id`), part of the FCM URL.
    pub project_id: String,
    /// The service account's address (`client_email`), the JWT `iss`.
    pub client_email: String,
    /// The PKCS#8 PEM private key (`private_key`). Secret: never printed.
    pub private_key: String,
    /// The id of that key (`private_key_id`), the JWT header `kid`.
    pub private_key_id: String,
    /// Where the JWT is traded for an access token (`token_uri`), the JWT `aud`.
    pub token_uri: String,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field(
                "private_key",
                &format_args!("<{} bytes>", self.private_key.len()),
            )
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish()
    }
}

impl ServiceAccount {
    /// Reads the fields from the text of a service-account JSON key file.
    ///
    /// Every field must be present as a non-empty string; other fields are ignored. The key
    /// itself is checked later, by [`TokenSource::new`].
    pub fn from_json(text: &str) -> Result<Self, AuthError> {
        let value: Value = serde_json::from_str(text).map_err(|e| AuthError::Json(Arc::new(e)))?;
        let field = |name: &'static str| -> Result<String, AuthError> {
            match value.get(name).and_then(Value::as_str) {
                Some(s) if !s.is_empty() => Ok(s.to_owned()),
                _ => Err(AuthError::MissingField(name)),
            }
        };
        Ok(ServiceAccount {
            project_id: field("project_id")?,
            client_email: field("client_email")?,
            private_key: field("private_key")?,
            private_key_id: field("private_key_id")?,
            token_uri: field("token_uri")?,
        })
    }

    /// Reads a service-account JSON key file.
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::Io {
            path: path.to_owned(),
            source: Arc::new(e),
        })?;
        Self::from_json(&text)
    }
}

/// An OAuth2 access token: cheap to clone; its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    /// The token itself, for the `Authorization: Bearer` header. Secret: never log it.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessToken(<{} bytes>)", self.0.len())
    }
}

/// Why no access token could be had. Messages never contain the key, the JWT or a token.
#[derive(Debug, Clone)]
pub enum AuthError {
    /// The service-account file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: Arc<io::Error>,
    },
    /// The service-account file is not JSON.
    Json(Arc<serde_json::Error>),
    /// The service-account JSON lacks this field (or it is not a non-empty string).
    MissingField(&'static str),
    /// The private key is not a usable PKCS#8 RSA key (or signing with it failed).
    Key(&'static str),
    /// The token endpoint could not be reached or the exchange broke off.
    Http(Arc<ureq::Error>),
    /// The token endpoint answered with an error status.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// Google's OAuth error code (`invalid_grant`, `invalid_client`…), when the body
        /// carried a plausible one. Never the whole body.
        code: Option<String>,
    },
    /// The token endpoint answered 200 with something that is not a token response.
    BadResponse(&'static str),
    /// The push could not wait any longer for the token fetch in progress.
    TimedOut,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Io { path, source } => {
                write!(
                    f,
                    "cannot read service account {}: {source}",
                    path.display()
                )
            }
            AuthError::Json(e) => write!(f, "service account is not valid json: {e}"),
            AuthError::MissingField(name) => {
                write!(f, "service account has no string field `{name}`")
            }
            AuthError::Key(why) => write!(f, "bad private key: {why}"),
            AuthError::Http(e) => write!(f, "token request failed: {e}"),
            AuthError::Rejected { status, code } => {
                write!(f, "token endpoint answered http {status}")?;
                if let Some(code) = code {
                    write!(f, " {code}")?;
                }
                Ok(())
            }
            AuthError::BadResponse(why) => write!(f, "bad token response: {why}"),
            AuthError::TimedOut => f.write_str("no token in time"),
        }
    }
}

impl std::error::Error for AuthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AuthError::Io { source, .. } => Some(&**source),
            AuthError::Json(e) => Some(&**e),
            AuthError::Http(e) => Some(&**e),
            _ => None,
        }
    }
}

/// A token in the cache, with the instants that govern its use.
pub(crate) struct Cached {
    pub(crate) token: AccessToken,
    /// From here on, the next caller fetches a new token.
    pub(crate) refresh_at: Instant,
    /// From here on, the token is not handed out at all.
    pub(crate) expires_at: Instant,
}

/// The last failed fetch.
struct Failure {
    error: AuthError,
    at: Instant,
    /// The `generation` this failure ended.
    generation: u64,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    /// A fetch is in progress (by some thread, without the lock held).
    fetching: bool,
    /// Counts finished fetches, so waiters know theirs is over.
    generation: u64,
    failure: Option<Failure>,
}

/// Hands out one cached access token to many threads, fetching a new one when needed.
///
/// `Send + Sync`: share it through an `Arc`. At most one fetch runs at a time; callers
/// arriving meanwhile wait for its result. The agent's global timeout bounds each fetch,
/// and so does the time the caller that starts it can wait.
pub struct TokenSource {
    key: RsaKeyPair,
    rng: SystemRandom,
    client_email: String,
    private_key_id: String,
    token_uri: String,
    agent: ureq::Agent,
    state: Mutex<State>,
    fetched: Condvar,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// Checks the account's private key and prepares the source; fetches nothing yet.
    ///
    /// A key that is not a PKCS#8 PEM RSA key is an [`AuthError::Key`] here, not at first use.
    pub fn new(account: ServiceAccount, agent: ureq::Agent) -> Result<Self, AuthError> {
        let der = pem_to_der(&account.private_key)?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| AuthError::Key("not a pkcs#8 rsa private key ring accepts"))?;
        Ok(TokenSource {
            key,
            rng: SystemRandom::new(),
            client_email: account.client_email,
            private_key_id: account.private_key_id,
            token_uri: account.token_uri,
            agent,
            state: Mutex::new(State::default()),
            fetched: Condvar::new(),
        })
    }

    /// Returns the cached token, fetching a new one when there is none or it is within
    /// five minutes of expiry.
    ///
    /// Only one fetch runs at a time: concurrent callers wait for it and share its result
    /// (the token or the error). After a failed fetch, calls within one second get that
    /// error (or the old token while it is still valid) without a new fetch.
    pub fn token(&self) -> Result<AccessToken, AuthError> {
        self.token_within(Duration::MAX)
    }

    /// [`token`](Self::token), waiting at most `within` (for a fetch of its own, or for
    /// another caller's): a push does not wait for a token past its own deadline.
    ///
    /// A fetch cut short by a caller's short `within` does not hold back the next fetch
    /// as a failure of the token endpoint does.
    pub fn token_within(&self, within: Duration) -> Result<AccessToken, AuthError> {
        self.get(within, true)
    }

    /// Fetches a token now unless one is cached, waiting at most `within`, for no push in
    /// particular (at start). Callers waiting for it meanwhile share its result, but a
    /// failure does not hold back the next fetch: the first push asks again at once.
    pub fn prefetch(&self, within: Duration) -> Result<(), AuthError> {
        self.get(within, false).map(drop)
    }

    /// [`token_within`](Self::token_within); `hold_back`: whether a failure of this
    /// fetch is served to the callers of the next second instead of fetching again.
    fn get(&self, within: Duration, hold_back: bool) -> Result<AccessToken, AuthError> {
        let called = Instant::now();
        let until = called.checked_add(within);
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            if let Some(c) = &st.cached {
                if now < c.refresh_at {
                    return Ok(c.token.clone());
                }
            }
            // Still valid, though due for a refresh: good enough while we cannot refresh.
            let usable = st
                .cached
                .as_ref()
                .filter(|c| now < c.expires_at)
                .map(|c| c.token.clone());

            if st.fetching {
                if let Some(token) = usable {
                    return Ok(token);
                }
                let generation = st.generation;
                let busy = |s: &mut State| s.fetching && s.generation == generation;
                st = match until.map(|u| u.saturating_duration_since(now)) {
                    None => self
                        .fetched
                        .wait_while(st, busy)
                        .unwrap_or_else(PoisonError::into_inner),
                    Some(left) if left.is_zero() => return Err(AuthError::TimedOut),
                    Some(left) => {
                        self.fetched
                            .wait_timeout_while(st, left, busy)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                };
                if st.generation != generation {
                    // The fetch we waited for is over: share its result.
                    if let Some(f) = st
                        .failure
                        .as_ref()
                        .filter(|f| f.generation == st.generation)
                    {
                        return Err(f.error.clone());
                    }
                    if let Some(c) = &st.cached {
                        return Ok(c.token.clone());
                    }
                }
                // Invalidated meanwhile, or another fetch started: look again.
                continue;
            }

            if let Some(f) = &st.failure {
                if now.duration_since(f.at) < FAILURE_BACKOFF {
                    return usable.ok_or_else(|| f.error.clone());
                }
            }

            // The agent's own timeout, or less if the caller cannot wait that long.
            let left = until.map(|u| u.saturating_duration_since(now));
            if left == Some(Duration::ZERO) {
                return usable.ok_or(AuthError::TimedOut);
            }
            let cut_short = match (left, self.agent.config().timeouts().global) {
                (Some(left), Some(full)) => left < full,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let timeout = if cut_short { left } else { None };
            st.fetching = true;
            drop(st);
            let mut flight = Flight {
                source: self,
                done: false,
            };
            let result = self.fetch(timeout);
            crate::metrics::global().oauth_refresh(result.is_ok());
            flight.done = true;
            let mut st = self.lock();
            st.fetching = false;
            st.generation += 1;
            let outcome = match result {
                Ok(cached) => {
                    let token = cached.token.clone();
                    st.cached = Some(cached);
                    st.failure = None;
                    Ok(token)
                }
                // A fetch that ran out of its caller's time says nothing about the token
                // endpoint: the next caller fetches again at once.
                Err(error) if cut_short && error.is_timeout() => usable.ok_or(error),
                // A fetch for no push in particular: the next caller fetches again.
                Err(error) if !hold_back => usable.ok_or(error),
                Err(error) => {
                    st.failure = Some(Failure {
                        error: error.clone(),
                        at: Instant::now(),
                        generation: st.generation,
                    });
                    usable.ok_or(error)
                }
            };
            drop(st);
            self.fetched.notify_all();
            return outcome;
        }
    }

    /// Drops the cached token if it is still `stale` (FCM answered 401 with it), so the
    /// next [`token`](Self::token) fetches a new one. A newer token is kept.
    pub fn invalidate(&self, stale: &AccessToken) {
        let mut st = self.lock();
        if st.cached.as_ref().is_some_and(|c| c.token == *stale) {
            st.cached = None;
            // A 401 is news: let the next caller fetch even right after a failure.
            st.failure = None;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The signed JWT assertion for `iat` = `now` (seconds since the Unix epoch).
    fn assertion(&self, now: u64) -> Result<String, AuthError> {
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "kid": self.private_key_id,
        });
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": FCM_SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now.saturating_add(ASSERTION_LIFETIME_SECS),
        });
        let mut jwt = URL_SAFE_NO_PAD.encode(header.to_string());
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, jwt.as_bytes(), &mut signature)
            .map_err(|_| AuthError::Key("signing failed"))?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(&signature));
        Ok(jwt)
    }

    /// One exchange with the token endpoint, without the lock held, bounded by `timeout`
    /// if given, else by the agent's own timeout.
    fn fetch(&self, timeout: Option<Duration>) -> Result<Cached, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let body = format!("{GRANT_TYPE_FORM}&assertion={}", self.assertion(now)?);
        let started = Instant::now();
        let mut request = self
            .agent
            .post(&self.token_uri)
            .content_type("application/x-www-form-urlencoded");
        if let Some(timeout) = timeout {
            request = request.config().timeout_global(Some(timeout)).build();
        }
        let mut response = request.send(body).map_err(|e| match e {
            ureq::Error::StatusCode(status) => AuthError::Rejected { status, code: None },
            e => AuthError::Http(Arc::new(e)),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| AuthError::Http(Arc::new(e)))?;
        debug!(
            "oauth token request: http {status}, {} ms",
            started.elapsed().as_millis()
        );
        if status != 200 {
            return Err(AuthError::Rejected {
                status,
                code: oauth_error_code(&text),
            });
        }
        cached_from(started, &text)
    }
}

impl AuthError {
    /// Whether the token request ran out of time.
    fn is_timeout(&self) -> bool {
        match self {
            AuthError::TimedOut => true,
            AuthError::Http(e) => match &**e {
                ureq::Error::Timeout(_) => true,
                ureq::Error::Io(io) => io.kind() == io::ErrorKind::TimedOut,
                _ => false,
            },
            _ => false,
        }
    }
}

/// The cache entry for a token answer (`body`) to a request sent at `started`: the token,
/// refreshed five minutes (or half its lifetime) before it expires.
pub(crate) fn cached_from(started: Instant, body: &[u8]) -> Result<Cached, AuthError> {
    let (token, lifetime) = parse_token_response(body)?;
    Ok(Cached {
        token,
        refresh_at: started + lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2)),
        expires_at: started + lifetime,
    })
}

/// Ends a fetch that unwound without finishing, so waiters are not stuck forever.
struct Flight<'a> {
    source: &'a TokenSource,
    done: bool,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.source.lock();
        st.fetching = false;
        st.generation += 1;
        st.failure = Some(Failure {
            error: AuthError::BadResponse("token fetch aborted"),
            at: Instant::now(),
            generation: st.generation,
        });
        drop(st);
        self.source.fetched.notify_all();
    }
}

/// Decodes the body of a `-----BEGIN PRIVATE KEY-----` PEM block.
fn pem_to_der(pem: &str) -> Result<Vec<u8>, AuthError> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let start = match pem.find(BEGIN) {
        Some(i) => i + BEGIN.len(),
        None if pem.contains("-----BEGIN RSA PRIVATE KEY-----") => {
            return Err(AuthError::Key(
                "pkcs#1 key, expected pkcs#8 (BEGIN PRIVATE KEY)",
            ))
        }
        None => return Err(AuthError::Key("no BEGIN PRIVATE KEY line")),
    };
    let len = pem[start..]
        .find(END)
        .ok_or(AuthError::Key("no END PRIVATE KEY line"))?;
    let b64: String = pem[start..start + len]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD
        .decode(b64)
        .map_err(|_| AuthError::Key("pem body is not base64"))
}

/// Reads `access_token` and `expires_in` from a 200 answer of the token endpoint. The
/// lifetime is clamped to [`MIN_TOKEN_LIFETIME`]..=[`MAX_TOKEN_LIFETIME`].
fn parse_token_response(body: &[u8]) -> Result<(AccessToken, Duration), AuthError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| AuthError::BadResponse("not json"))?;
    let token = value
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::BadResponse("no access_token"))?;
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::BadResponse("access_token is not a header value"));
    }
    if let Some(kind) = value.get("token_type").and_then(Value::as_str) {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::BadResponse("token_type is not bearer"));
        }
    }
    // A number (integer or not, in range or not) or a string of digits.
    let expires_in = value
        .get("expires_in")
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .or_else(|| {
                    let s = v.as_str()?.trim();
                    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| s.parse().unwrap_or(u64::MAX))
                })
        })
        .ok_or(AuthError::BadResponse("no expires_in"))?;
    let lifetime =
        Duration::from_secs(expires_in.min(MAX_TOKEN_LIFETIME.as_secs())).max(MIN_TOKEN_LIFETIME);
    Ok((AccessToken(token.into()), lifetime))
}

/// The `error` field of an OAuth error body, if it looks like an error code.
pub(crate) fn oauth_error_code(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let code = value.get("error")?.as_str()?;
    let plausible = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    plausible.then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_PEM: &str = include_str!("../../tests/fixtures/test-key.pk8.pem");
    const PUBLIC_DER: &[u8] = include_bytes!("../../tests/fixtures/test-key.pub.pkcs1.der");

    fn account() -> ServiceAccount {
        ServiceAccount {
            project_id: "p2-test".into(),
            client_email: "p2@p2-test.iam.gserviceaccount.com".into(),
            private_key: KEY_PEM.into(),
            private_key_id: "0123abcd".into(),
            token_uri: "http://127.0.0.1:9/token".into(),
        }
    }

    fn source() -> TokenSource {
        TokenSource::new(account(), ureq::Agent::new_with_defaults()).expect("fixture key is valid")
    }

    fn decode_part(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn assertion_has_header_claims_and_valid_signature() {
        let jwt = source().assertion(1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(!jwt.contains('='), "no padding");
        assert_eq!(
            decode_part(parts[0]),
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "0123abcd"})
        );
        assert_eq!(
            decode_part(parts[1]),
            serde_json::json!({
                "iss": "p2@p2-test.iam.gserviceaccount.com",
                "scope": "https://www.googleapis.com/auth/firebase.messaging",
                "aud": "http://127.0.0.1:9/token",
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
            })
        );
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = &jwt[..parts[0].len() + 1 + parts[1].len()];
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            PUBLIC_DER,
        )
        .verify(signed.as_bytes(), &signature)
        .expect("signature verifies");
    }

    #[test]
    fn from_json_reads_fields_and_names_the_missing_one() {
        let full = serde_json::json!({
            "type": "service_account",
            "project_id": "p2-test",
            "private_key_id": "0123abcd",
            "private_key": KEY_PEM,
            "client_email": "p2@p2-test.iam.gserviceaccount.com",
            "token_uri": "http://127.0.0.1:9/token",
        });
        assert_eq!(
            ServiceAccount::from_json(&full.to_string()).unwrap(),
            account()
        );
        for field in [
            "project_id",
            "client_email",
            "private_key",
            "private_key_id",
            "token_uri",
        ] {
            let mut partial = full.clone();
            partial.as_object_mut().unwrap().remove(field);
            let err = ServiceAccount::from_json(&partial.to_string()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("service account has no string field `{field}`")
            );
        }
        let err = ServiceAccount::from_json("{not json").unwrap_err();
        assert!(matches!(err, AuthError::Json(_)), "{err:?}");
    }

    #[test]
    fn debug_never_prints_the_key() {
        let shown = format!("{:?}", account());
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("p2-test"));
        let token = AccessToken("ya29.secret".into());
        assert_eq!(format!("{token:?}"), "AccessToken(<11 bytes>)");
    }

    #[test]
    fn bad_keys_are_refused_at_construction() {
        let agent = ureq::Agent::new_with_defaults();
        let cases = [
            ("", "bad private key: no BEGIN PRIVATE KEY line"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "bad private key: pkcs#1 key, expected pkcs#8 (BEGIN PRIVATE KEY)",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA",
                "bad private key: no END PRIVATE KEY line",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\n!!secret!!\n-----END PRIVATE KEY-----\n",
                "bad private key: pem body is not base64",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "bad private key: not a pkcs#8 rsa private key ring accepts",
            ),
        ];
        for (pem, expected) in cases {
            let mut acc = account();
            acc.private_key = pem.into();
            let err = TokenSource::new(acc, agent.clone()).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }

    #[test]
    fn token_response_parsing() {
        let (token, lifetime) = parse_token_response(
            br#"{"access_token":"ya29.abc","expires_in":3599,"token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(token.secret(), "ya29.abc");
        assert_eq!(lifetime, Duration::from_secs(3599));
        for (body, why) in [
            (&b"<html>"[..], "not json"),
            (br#"{"expires_in":3599}"#, "no access_token"),
            (
                br#"{"access_token":"a b","expires_in":1}"#,
                "access_token is not a header value",
            ),
            (
                br#"{"access_token":"x","expires_in":1,"token_type":"mac"}"#,
                "token_type is not bearer",
            ),
            (br#"{"access_token":"x"}"#, "no expires_in"),
            (br#"{"access_token":"x","expires_in":-1}"#, "no expires_in"),
            (
                br#"{"access_token":"x","expires_in":"-1"}"#,
                "no expires_in",
            ),
            (
                br#"{"access_token":"x","expires_in":"soon"}"#,
                "no expires_in",
            ),
            (br#"{"access_token":"x","expires_in":""}"#, "no expires_in"),
            (
                br#"{"access_token":"x","expires_in":null}"#,
                "no expires_in",
            ),
        ] {
            let err = parse_token_response(body).unwrap_err();
            assert_eq!(err.to_string(), format!("bad token response: {why}"));
        }
    }

    #[test]
    fn token_lifetimes_are_clamped() {
        let cases: [(&str, u64); 9] = [
            ("3599", 3599),
            (r#""3599""#, 3599),
            ("3599.9", 3599),
            ("0", 60),
            ("59", 60),
            ("86401", 86_400),
            ("18446744073709551615", 86_400),
            (r#""99999999999999999999999999""#, 86_400),
            ("1e300", 86_400),
        ];
        for (expires_in, secs) in cases {
            let body = format!(r#"{{"access_token":"ya29.x","expires_in":{expires_in}}}"#);
            let (_, lifetime) = parse_token_response(body.as_bytes()).unwrap();
            assert_eq!(lifetime, Duration::from_secs(secs), "{expires_in}");
            // The cache entry is computed without overflowing the clock.
            let started = Instant::now();
            let cached = cached_from(started, body.as_bytes()).unwrap();
            assert_eq!(cached.expires_at - started, Duration::from_secs(secs));
            assert!(cached.refresh_at > started && cached.refresh_at < cached.expires_at);
        }
    }

    #[test]
    fn oauth_error_code_is_taken_only_when_plausible() {
        let body = br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
        assert_eq!(oauth_error_code(body).as_deref(), Some("invalid_grant"));
        assert_eq!(oauth_error_code(br#"{"error":"has spaces in it"}"#), None);
        assert_eq!(oauth_error_code(b"not json"), None);
        assert_eq!(oauth_error_code(br#"{"error":{"code":400}}"#), None);
        let err = AuthError::Rejected {
            status: 400,
            code: Some("invalid_grant".into()),
        };
        assert_eq!(
            err.to_string(),
            "token endpoint answered http 400 invalid_grant"
        );
    }

    #[test]
    fn invalidate_drops_only_the_same_token() {
        let src = source();
        let far = Instant::now() + Duration::from_secs(3600);
        let current = AccessToken("new".into());
        src.lock().cached = Some(Cached {
            token: current.clone(),
            refresh_at: far,
            expires_at: far,
        });
        src.invalidate(&AccessToken("old".into()));
        assert_eq!(src.token().unwrap(), current);
        src.invalidate(&current);
        assert!(src.lock().cached.is_none());
    }

    #[test]
    fn token_source_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<TokenSource>();
        check::<AccessToken>();
        check::<AuthError>();
    }
}
