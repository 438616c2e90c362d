//! The FCM HTTP v1 client: builds the wake-up message, sends it with bounded retries and classifies the answer.
//!
//! PROTOCOL.md §6. The message carries only the device (and channel) hashes, never content.
//! Answers are decided on the `FcmError` detail's `errorCode` first and on the HTTP status
//! only when there is none, so a wrong project id (404 without detail) never deletes tokens.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::debug;
use serde_json::Value;

use super::cooldown::{CoolDown, CoolDownSettings};
use super::google_auth::{AccessToken, AuthError, ServiceAccount, TokenSource};
use super::http::{self, Answer};
use super::resolver::CachingResolver;
use super::retry::{self, Attempts, Classification, Policy, MAX_RETRY_AFTER};
use super::{Cause, Outcome, PushMessage};
use ureq::unversioned::resolver::DefaultResolver;

/// What `SENDER_ID_MISMATCH` means when every push gets it.
pub const SENDER_ID_SUSPECT: &str =
    "fcm.serviceAccountFile belongs to another Firebase project than the app's";

/// The `@type` of the detail that carries FCM's own error code.
const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";

/// The `@type` of the detail that names the offending request fields.
const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";

/// Largest FCM response body we read (they are a few hundred bytes).
const MAX_RESPONSE_BYTES: u64 = http::MAX_BODY as u64;

/// The Android delivery priority of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// `"high"`: wakes a dozing phone at once. The default.
    #[default]
    High,
    /// `"normal"`: may be delayed until the phone wakes (what the Java p2 sent).
    Normal,
}

impl Priority {
    fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
        }
    }
}

/// How the FCM client builds and sends messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcmSettings {
    /// Scheme, host and port of the FCM API, without a trailing path.
    /// Default `https://fcm.googleapis.com`.
    pub base_url: String,
    /// Android priority of each message. Default [`Priority::High`].
    pub priority: Priority,
    /// Android time to live in seconds; `None` leaves FCM's default (four weeks).
    /// Default `None`.
    pub ttl: Option<u32>,
    /// Whether to set a `collapse_key`, so that queued wake-ups for one account collapse
    /// into one. Default `true`.
    pub collapse: bool,
    /// Total time for one push, retries and waits included. Default 15 s.
    pub deadline: Duration,
    /// Time for one HTTP exchange (connect, send, receive the whole answer); also bounds
    /// each OAuth token request. Default 10 s.
    pub request_timeout: Duration,
    /// Idle keep-alive connections kept per host. Default 64.
    pub max_connections: usize,
    /// When FCM counts as down and is left alone for a while. Default
    /// [`CoolDownSettings::default`]: after 10 failed attempts in a row, 5 s doubling to 60 s.
    pub cool_down: CoolDownSettings,
}

impl Default for FcmSettings {
    fn default() -> Self {
        FcmSettings {
            base_url: "https://fcm.googleapis.com".to_owned(),
            priority: Priority::High,
            ttl: None,
            collapse: true,
            deadline: Duration::from_secs(15),
            request_timeout: Duration::from_secs(10),
            max_connections: 64,
            cool_down: CoolDownSettings::default(),
        }
    }
}

/// The FCM v1 request body for `msg`: compact JSON with only the account (and channel)
/// hash as data, never any message content.
///
/// `{"message":{"token":T,"data":{"account":D[,"channel":C]},"android":{"priority":P[,"collapse_key":K][,"ttl":"Ns"]}}}`;
/// the collapse key is the first 6 characters of the channel, or else of the device hash.
pub fn message_body(msg: &PushMessage, settings: &FcmSettings) -> String {
    let mut out = String::with_capacity(256 + msg.token.len());
    out.push_str(r#"{"message":{"token":"#);
    push_json_string(&mut out, &msg.token);
    out.push_str(r#","data":{"account":"#);
    push_json_string(&mut out, &msg.device);
    if !msg.channel.is_empty() {
        out.push_str(r#","channel":"#);
        push_json_string(&mut out, &msg.channel);
    }
    out.push_str(r#"},"android":{"priority":""#);
    out.push_str(settings.priority.as_str());
    out.push('"');
    if settings.collapse {
        let source = if msg.channel.is_empty() {
            &msg.device
        } else {
            &msg.channel
        };
        let key: String = source.chars().take(6).collect();
        out.push_str(r#","collapse_key":"#);
        push_json_string(&mut out, &key);
    }
    if let Some(ttl) = settings.ttl {
        let _ = write!(out, r#","ttl":"{ttl}s""#);
    }
    out.push_str("}}}");
    out
}

/// Appends `s` as a JSON string (RFC 8259 §7: quote, backslash and control characters
/// escaped).
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Tokens and hashes: nothing to escape.
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Decides what an FCM answer means, from its status, `Retry-After` header and body.
///
/// The `FcmError` detail's `errorCode` decides when there is one: `UNREGISTERED`,
/// `INVALID_ARGUMENT` → dead token (but see below); `SENDER_ID_MISMATCH` → dead token
/// that may be our own mistake ([`SENDER_ID_SUSPECT`]); `UNAVAILABLE`, `INTERNAL` →
/// retry; `QUOTA_EXCEEDED` → rate limited; `THIRD_PARTY_AUTH_ERROR`, `APNS_AUTH_ERROR` →
/// fail (the Firebase project's APNs credentials). Otherwise the status: 200 → accepted,
/// 401 → renew our access token, 429 → rate limited, 500, 502, 503, 504 → retry, 403 →
/// fail ([`Cause::Auth`]: the service account may not send), everything else (404 wrong
/// project, 400) → fail ([`Cause::Rejected`]).
///
/// Rate limited (`QUOTA_EXCEEDED` or 429) is retried only when `Retry-After` says when:
/// without it Google asks for at least a minute of backoff, longer than any deadline, so
/// the push fails at once ([`Cause::RateLimited`]) instead of holding a worker.
///
/// `INVALID_ARGUMENT` is a dead token only when the request's fault is the token: if a
/// `google.rpc.BadRequest` detail names offending fields and none is `message.token`,
/// the fault is in our message and the answer is a failure, not a dead token.
///
/// Reads the clock only to turn an HTTP-date `Retry-After` into a wait.
pub fn classify(status: u16, retry_after: Option<&str>, body: &str) -> Classification {
    if status == 200 {
        return Classification::Accepted;
    }
    let after = || retry_after.and_then(|v| parse_retry_after(v, SystemTime::now()));
    let retry = |cause, reason: String| Classification::Retry {
        cause,
        reason,
        after: after(),
        immediate: false,
    };
    let rate_limited = |reason: String| match after() {
        Some(after) => Classification::Retry {
            cause: Cause::RateLimited,
            reason,
            after: Some(after),
            immediate: false,
        },
        None => Classification::fail(Cause::RateLimited, reason),
    };
    let error = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").cloned());
    let details = error
        .as_ref()
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let fcm_code = details
        .iter()
        .find(|d| d.get("@type").and_then(Value::as_str) == Some(FCM_ERROR_TYPE))
        .map(|d| d.get("errorCode").and_then(Value::as_str).unwrap_or(""));

    if let Some(code) = fcm_code {
        match code {
            "UNREGISTERED" => return Classification::dead(code),
            "SENDER_ID_MISMATCH" => {
                return Classification::DeadToken {
                    reason: code.to_owned(),
                    suspect: Some(SENDER_ID_SUSPECT),
                }
            }
            "INVALID_ARGUMENT" => {
                return if blames_other_fields(details) {
                    Classification::fail(Cause::Rejected, "fcm INVALID_ARGUMENT in message")
                } else {
                    Classification::dead(code)
                };
            }
            "QUOTA_EXCEEDED" => return rate_limited(format!("fcm {code}")),
            "UNAVAILABLE" | "INTERNAL" => {
                return retry(Cause::ProviderError, format!("fcm {code}"))
            }
            "THIRD_PARTY_AUTH_ERROR" | "APNS_AUTH_ERROR" => {
                return Classification::fail(Cause::Auth, format!("fcm {code}"))
            }
            _ => {} // UNSPECIFIED_ERROR or a code newer than us: go by the status.
        }
    }

    let mut reason = format!("fcm http {status}");
    if let Some(s) = error
        .as_ref()
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .filter(|s| is_code_like(s))
    {
        reason.push(' ');
        reason.push_str(s);
    }
    match status {
        401 if fcm_code.is_none() => Classification::Renew { reason },
        429 => rate_limited(reason),
        500 | 502 | 503 | 504 => retry(Cause::ProviderError, reason),
        401 | 403 => Classification::fail(Cause::Auth, reason),
        _ => Classification::fail(Cause::Rejected, reason),
    }
}

/// Whether a `google.rpc.BadRequest` detail names offending fields, none of them the token.
fn blames_other_fields(details: &[Value]) -> bool {
    let fields: Vec<&str> = details
        .iter()
        .filter(|d| d.get("@type").and_then(Value::as_str) == Some(BAD_REQUEST_TYPE))
        .filter_map(|d| d.get("fieldViolations").and_then(Value::as_array))
        .flatten()
        .filter_map(|v| v.get("field").and_then(Value::as_str))
        .collect();
    !fields.is_empty() && !fields.contains(&"message.token")
}

/// An enum-like word such as `NOT_FOUND`: safe and short enough for a log line.
fn is_code_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

/// Reads a `Retry-After` value: delta-seconds, or an IMF-fixdate HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`) turned into the wait from `now` (zero if past).
/// Anything else is `None`. Waits longer than [`MAX_RETRY_AFTER`] are cut to it: the
/// caller gives up on them anyway, and no remote number meets clock arithmetic unclamped.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let secs = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse().unwrap_or(u64::MAX)
    } else {
        let at = parse_http_date(value)?;
        let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
        at.saturating_sub(now)
    };
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Seconds since the Unix epoch of an IMF-fixdate (RFC 9110 §5.6.7).
fn parse_http_date(s: &str) -> Option<u64> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // "Wed, 21 Oct 2015 07:28:00 GMT"; ASCII first, so that slicing by byte index is safe.
    let b = s.as_bytes();
    if !s.is_ascii() || b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    if !DAYS.contains(&&s[..3]) || b[7] != b' ' || b[11] != b' ' || b[16] != b' ' {
        return None;
    }
    if b[19] != b':' || b[22] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let part = &s[range];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let day = num(5..7)?;
    let month = MONTHS.iter().position(|m| *m == &s[8..11])? as u64 + 1;
    let year = num(12..16)?;
    let (hour, minute, second) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if !(1..=31).contains(&day) || year < 1970 || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to the given date (Howard Hinnant's algorithm), year ≥ 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Sends wake-ups through FCM HTTP v1.
///
/// `Clone + Send + Sync`: clones share one connection pool and one [`TokenSource`], so one
/// client serves every worker thread.
#[derive(Clone)]
pub struct FcmClient {
    inner: Arc<Inner>,
}

struct Inner {
    settings: FcmSettings,
    project_id: String,
    client_email: String,
    url: String,
    /// The path of the send request.
    path: String,
    /// The push path's own HTTP client ([`http`]), unless a proxy is configured in the
    /// environment or the URL is not one it reads: then ureq's `agent` sends.
    http: Option<http::Client>,
    /// ureq: the OAuth token requests, and the sends when `http` is `None`.
    agent: ureq::Agent,
    tokens: TokenSource,
    cool_down: CoolDown,
}

impl fmt::Debug for FcmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FcmClient")
            .field("project_id", &self.inner.project_id)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// The ureq agent: keep-alive pool, per-request timeout, names from `resolver`.
fn agent(settings: &FcmSettings, resolver: &CachingResolver) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        // Error statuses carry the body that tells UNREGISTERED from a wrong project.
        .http_status_as_error(false)
        .timeout_global(Some(settings.request_timeout))
        .max_idle_connections_per_host(settings.max_connections)
        // FCM and the token endpoint.
        .max_idle_connections(settings.max_connections.saturating_mul(2))
        .max_idle_age(http::MAX_IDLE)
        // Neither Google endpoint redirects; a redirect is an answer to classify.
        .max_redirects(0)
        .max_redirects_will_error(false)
        .user_agent(USER_AGENT)
        // FCM's answers are a few hundred bytes: small buffers keep hundreds of
        // kept-alive connections cheap (ureq's default is 128 KiB each way).
        .input_buffer_size(16 * 1024)
        .output_buffer_size(16 * 1024)
        .build();
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::new(),
        resolver.clone(),
    )
}

/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("p2/", env!("CARGO_PKG_VERSION"));

/// The push path's HTTP client for `base_url`, unless a proxy is configured in the
/// environment (ureq honours `HTTPS_PROXY` and its kin; this client does not) or the URL
/// is not `scheme://host[:port]`.
fn push_client(settings: &FcmSettings, resolver: &CachingResolver) -> Option<http::Client> {
    if ureq::Proxy::try_from_env().is_some() {
        log::info!("fcm: a proxy is configured in the environment: pushes go through it");
        return None;
    }
    let endpoint = http::Endpoint::parse(&settings.base_url).ok()?;
    let tls = match http::tls_config(&[]) {
        Ok(tls) => tls,
        Err(e) => {
            log::warn!("fcm: TLS configuration: {e}");
            return None;
        }
    };
    http::Client::new(
        endpoint,
        tls,
        resolver.clone(),
        USER_AGENT,
        settings.max_connections,
    )
    .ok()
}

impl FcmClient {
    /// Builds the client: one HTTP agent (keep-alive pool, per-request timeout) shared with
    /// the OAuth [`TokenSource`]. Fails if the account's private key is unusable.
    pub fn new(settings: FcmSettings, account: ServiceAccount) -> Result<Self, AuthError> {
        let resolver = CachingResolver::new(DefaultResolver::default());
        let agent = agent(&settings, &resolver);
        let http = push_client(&settings, &resolver);
        let project_id = account.project_id.clone();
        let client_email = account.client_email.clone();
        let path = format!("/v1/projects/{project_id}/messages:send");
        let url = format!("{}{path}", settings.base_url.trim_end_matches('/'));
        let tokens = TokenSource::new(account, agent.clone())?;
        let cool_down = CoolDown::new("fcm", settings.cool_down);
        Ok(FcmClient {
            inner: Arc::new(Inner {
                settings,
                project_id,
                client_email,
                url,
                path,
                http,
                agent,
                tokens,
                cool_down,
            }),
        })
    }

    /// Whether pushes go through the push path's own HTTP client (not ureq).
    pub fn uses_own_http(&self) -> bool {
        self.inner.http.is_some()
    }

    /// Fetches the access token now, waiting at most `within`, so that the first push
    /// does not wait for Google's token endpoint (and a key it refuses shows at start).
    pub fn warm_up(&self, within: Duration) -> Result<(), AuthError> {
        self.inner.tokens.prefetch(within)
    }

    /// The Firebase project the messages are sent to (the service account's
    /// `project_id`).
    pub fn project_id(&self) -> &str {
        &self.inner.project_id
    }

    /// The service account the messages are sent as (its `client_email`).
    pub fn client_email(&self) -> &str {
        &self.inner.client_email
    }

    /// Sends one wake-up, retrying transient failures with backoff until the deadline
    /// (the shared policy of [`retry::run`]).
    ///
    /// Blocks for at most about [`FcmSettings::deadline`], an OAuth token fetch included.
    /// While FCM is cooling down (see [`CoolDownSettings`]), returns at once.
    pub fn send(&self, msg: &PushMessage) -> Outcome {
        let settings = &self.inner.settings;
        let policy = Policy {
            max_immediate: 0,
            ..Policy::new("fcm", settings.deadline, settings.request_timeout)
        };
        let attempt = Attempt {
            inner: &self.inner,
            body: message_body(msg, settings),
        };
        retry::run(policy, &self.inner.cool_down, &attempt)
    }
}

/// One push's attempts: its body, sent with the shared access token.
struct Attempt<'a> {
    inner: &'a Inner,
    body: String,
}

impl Attempts for Attempt<'_> {
    type Credential = AccessToken;

    fn credential(&self, within: Duration) -> Result<AccessToken, (Cause, String)> {
        self.inner
            .tokens
            .token_within(within)
            .map_err(|e| (Cause::Auth, format!("oauth: {e}")))
    }

    fn attempt(&self, token: &AccessToken, timeout: Duration, attempt: u32) -> Classification {
        let started = Instant::now();
        let answer = match &self.inner.http {
            Some(http) => {
                let post = http::Post {
                    path: &self.inner.path,
                    bearer: token.secret(),
                    body: &self.body,
                };
                http.post(&post, timeout).map_err(|e| {
                    let class = match e {
                        http::Error::Timeout => {
                            Classification::retry(Cause::Timeout, format!("fcm transport: {e}"))
                        }
                        _ => Classification::retry(Cause::Transport, format!("fcm transport: {e}")),
                    };
                    (e.to_string(), class)
                })
            }
            None => self
                .exchange(token, timeout)
                .map_err(|e| (e.to_string(), transport_class(&e))),
        };
        match answer {
            Ok(answer) => {
                debug!(
                    "fcm push: http {}, attempt {attempt}, {} ms",
                    answer.status,
                    started.elapsed().as_millis()
                );
                classify(answer.status, answer.retry_after.as_deref(), &answer.body)
            }
            Err((e, class)) => {
                debug!(
                    "fcm push: transport error, attempt {attempt}, {} ms: {e}",
                    started.elapsed().as_millis()
                );
                class
            }
        }
    }

    fn renew(&self, stale: &AccessToken) {
        self.inner.tokens.invalidate(stale);
    }
}

impl Attempt<'_> {
    /// One POST to FCM through ureq; reads the whole (bounded) answer so the connection
    /// is reused.
    fn exchange(&self, token: &AccessToken, timeout: Duration) -> Result<Answer, ureq::Error> {
        let mut response = self
            .inner
            .agent
            .post(&self.inner.url)
            .header("Authorization", format!("Bearer {}", token.secret()))
            .content_type("application/json")
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send(self.body.as_str())?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = match response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
        {
            Ok(bytes) => bytes,
            // The status decides a 200; for errors an unread body reads as "no detail".
            Err(e) if status == 200 => {
                debug!("fcm push: reading the 200 body failed: {e}");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        Ok(Answer {
            status,
            retry_after,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

/// What a transport error means: a retry unless the request itself cannot be made; a
/// timeout apart from other failures.
pub fn transport_class(e: &ureq::Error) -> Classification {
    match e {
        ureq::Error::BadUri(_)
        | ureq::Error::Http(_)
        | ureq::Error::InvalidProxyUrl
        | ureq::Error::RequireHttpsOnly(_) => {
            Classification::fail(Cause::Rejected, format!("fcm request: {e}"))
        }
        ureq::Error::Timeout(_) => {
            Classification::retry(Cause::Timeout, format!("fcm transport: {e}"))
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            Classification::retry(Cause::Timeout, format!("fcm transport: {e}"))
        }
        _ => Classification::retry(Cause::Transport, format!("fcm transport: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped_as_serde_json_does() {
        for text in [
            "plain",
            "q\"uote",
            "back\\slash",
            "new\nline\r\t",
            "\u{1}\u{1f}",
            "é🎉",
            "",
        ] {
            let mut out = String::new();
            push_json_string(&mut out, text);
            assert_eq!(out, Value::from(text).to_string(), "{text:?}");
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), text);
        }
    }

    fn fcm_error(status: u16, status_name: &str, message: &str, code: &str) -> String {
        format!(
            r#"{{"error":{{"code":{status},"message":"{message}","status":"{status_name}","details":[{{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"{code}"}}]}}}}"#
        )
    }

    fn retry(after: Option<u64>, reason: &str) -> Classification {
        Classification::Retry {
            cause: Cause::ProviderError,
            reason: reason.to_owned(),
            after: after.map(Duration::from_secs),
            immediate: false,
        }
    }

    /// Rate limited: retried only after the `Retry-After` given.
    fn limited(after: Option<u64>, reason: &str) -> Classification {
        match after {
            Some(after) => Classification::Retry {
                cause: Cause::RateLimited,
                reason: reason.to_owned(),
                after: Some(Duration::from_secs(after)),
                immediate: false,
            },
            None => Classification::fail(Cause::RateLimited, reason),
        }
    }

    fn fail(reason: &str) -> Classification {
        Classification::fail(Cause::Rejected, reason)
    }

    fn auth(reason: &str) -> Classification {
        Classification::fail(Cause::Auth, reason)
    }

    fn renew(reason: &str) -> Classification {
        Classification::Renew {
            reason: reason.to_owned(),
        }
    }

    fn dead(code: &str) -> Classification {
        Classification::dead(code)
    }

    #[test]
    fn classify_documented_fcm_errors() {
        let cases = [
            (
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                "UNREGISTERED",
                dead("UNREGISTERED"),
            ),
            (
                403,
                "PERMISSION_DENIED",
                "SenderId mismatch",
                "SENDER_ID_MISMATCH",
                Classification::DeadToken {
                    reason: "SENDER_ID_MISMATCH".to_owned(),
                    suspect: Some(SENDER_ID_SUSPECT),
                },
            ),
            (
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
                dead("INVALID_ARGUMENT"),
            ),
            (
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric",
                "QUOTA_EXCEEDED",
                limited(None, "fcm QUOTA_EXCEEDED"),
            ),
            (
                503,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                "UNAVAILABLE",
                retry(None, "fcm UNAVAILABLE"),
            ),
            (
                500,
                "INTERNAL",
                "Internal error encountered.",
                "INTERNAL",
                retry(None, "fcm INTERNAL"),
            ),
            (
                401,
                "UNAUTHENTICATED",
                "Auth error from APNS or Web Push Service",
                "THIRD_PARTY_AUTH_ERROR",
                auth("fcm THIRD_PARTY_AUTH_ERROR"),
            ),
            (
                401,
                "UNAUTHENTICATED",
                "Auth error from APNS or Web Push Service",
                "APNS_AUTH_ERROR",
                auth("fcm APNS_AUTH_ERROR"),
            ),
            (
                500,
                "INTERNAL",
                "Unknown",
                "UNSPECIFIED_ERROR",
                retry(None, "fcm http 500 INTERNAL"),
            ),
            (
                400,
                "FAILED_PRECONDITION",
                "new",
                "SOMETHING_NEW",
                fail("fcm http 400 FAILED_PRECONDITION"),
            ),
            (
                401,
                "UNAUTHENTICATED",
                "new",
                "SOMETHING_NEW",
                auth("fcm http 401 UNAUTHENTICATED"),
            ),
        ];
        for (status, name, message, code, expected) in cases {
            let body = fcm_error(status, name, message, code);
            assert_eq!(classify(status, None, &body), expected, "{body}");
        }
    }

    #[test]
    fn classify_real_invalid_token_answer_with_bad_request_detail() {
        // What FCM answers for a malformed token: FcmError plus a BadRequest on message.token.
        let body = r#"{"error":{"code":400,"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"},{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token","description":"The registration token is not a valid FCM registration token"}]}]}}"#;
        assert_eq!(classify(400, None, body), dead("INVALID_ARGUMENT"));
        // The same error about our own message must not cost the user the registration.
        let body = r#"{"error":{"code":400,"message":"Invalid value at 'message.android.ttl'","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"},{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.android.ttl","description":"Invalid value"}]}]}}"#;
        assert_eq!(
            classify(400, None, body),
            fail("fcm INVALID_ARGUMENT in message")
        );
    }

    #[test]
    fn classify_without_fcm_error_goes_by_status() {
        let wrong_project = r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND"}}"#;
        let unauthenticated = r#"{"error":{"code":401,"message":"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.","status":"UNAUTHENTICATED"}}"#;
        let bad_request = r#"{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"description":"Invalid JSON payload received."}]}]}}"#;
        let denied = r#"{"error":{"code":403,"message":"Permission 'cloudmessaging.messages.create' denied on resource","status":"PERMISSION_DENIED"}}"#;
        let cases = [
            (
                200,
                r#"{"name":"projects/p2-test/messages/0:1500415314455276%31bd1c9631bd1c96"}"#,
                Classification::Accepted,
            ),
            (200, "", Classification::Accepted),
            (404, wrong_project, fail("fcm http 404 NOT_FOUND")),
            (401, unauthenticated, renew("fcm http 401 UNAUTHENTICATED")),
            (401, "", renew("fcm http 401")),
            (400, bad_request, fail("fcm http 400 INVALID_ARGUMENT")),
            (403, denied, auth("fcm http 403 PERMISSION_DENIED")),
            (429, "", limited(None, "fcm http 429")),
            (500, "", retry(None, "fcm http 500")),
            (502, "<html>Bad Gateway</html>", retry(None, "fcm http 502")),
            (503, "Service Unavailable", retry(None, "fcm http 503")),
            (504, "{", retry(None, "fcm http 504")),
            (418, "[]", fail("fcm http 418")),
            (302, "", fail("fcm http 302")),
            (201, "", fail("fcm http 201")),
            (404, r#"{"error":"not an object"}"#, fail("fcm http 404")),
            (
                404,
                r#"{"error":{"status":"lower case or spaced"}}"#,
                fail("fcm http 404"),
            ),
            (
                404,
                r#"{"error":{"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError"}]}}"#,
                fail("fcm http 404"),
            ),
            (404, r#"{"error":{"details":"oops"}}"#, fail("fcm http 404")),
        ];
        for (status, body, expected) in cases {
            assert_eq!(classify(status, None, body), expected, "{status} {body}");
        }
    }

    #[test]
    fn classify_reads_retry_after() {
        let body = fcm_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded",
            "QUOTA_EXCEEDED",
        );
        assert_eq!(
            classify(429, Some("30"), &body),
            limited(Some(30), "fcm QUOTA_EXCEEDED")
        );
        assert_eq!(
            classify(429, Some("soon"), &body),
            limited(None, "fcm QUOTA_EXCEEDED")
        );
        assert_eq!(
            classify(429, Some("2"), ""),
            limited(Some(2), "fcm http 429")
        );
        assert_eq!(classify(503, Some("2"), ""), retry(Some(2), "fcm http 503"));
        assert_eq!(classify(503, Some("soon"), ""), retry(None, "fcm http 503"));
        // A date in the past means: now.
        assert_eq!(
            classify(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"), ""),
            retry(Some(0), "fcm http 503")
        );
    }

    #[test]
    fn retry_after_values() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_400); // 2015-10-21 07:26:40 UTC
        let cases = [
            ("0", Some(0)),
            ("1", Some(1)),
            (" 120 ", Some(120)),
            ("99999999999999999999999", Some(86_400)),
            ("18446744073709551615", Some(86_400)),
            ("86401", Some(86_400)),
            ("Wed, 21 Oct 2015 07:28:00 GMT", Some(80)),
            ("Wed, 21 Oct 2015 07:26:40 GMT", Some(0)),
            ("Tue, 20 Oct 2015 07:28:00 GMT", Some(0)),
            ("Thu, 22 Oct 2015 07:28:00 GMT", Some(86_400)),
            ("Thu, 22 Oct 2015 07:26:39 GMT", Some(86_399)),
            ("Fri, 31 Dec 9999 23:59:59 GMT", Some(86_400)),
            ("", None),
            ("-1", None),
            ("1.5", None),
            ("+5", None),
            ("soon", None),
            ("Wed, 21 Oct 2015 07:28:00 UTC", None),
            ("Wednesday, 21-Oct-15 07:28:00 GMT", None),
            ("Wed Oct 21 07:28:00 2015", None),
            ("Wed, 32 Oct 2015 07:28:00 GMT", None),
            ("Wed, 21 Foo 2015 07:28:00 GMT", None),
            ("Wed, 21 Oct 2015 24:28:00 GMT", None),
            ("Wed, 21 Oct 1969 07:28:00 GMT", None),
            ("Xyz, 21 Oct 2015 07:28:00 GMT", None),
            ("Wed, 2a Oct 2015 07:28:00 GMT", None),
            ("Wed, +1 Oct 2015 07:28:00 GMT", None),
            ("Wed, 21 Oct 2015 07:28:00 GMTé", None),
            ("Wed, 2é Oct 2015 07:28:00 GMT", None),
            ("Wed, 21 Oé 2015 07:28:00 GMT", None),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse_retry_after(value, now),
                expected.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }

    #[test]
    fn http_dates_match_known_epochs() {
        let cases = [
            ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
            ("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_777),
            ("Tue, 29 Feb 2000 12:00:00 GMT", 951_825_600),
            ("Wed, 21 Oct 2015 07:28:00 GMT", 1_445_412_480),
            ("Fri, 31 Dec 2100 23:59:59 GMT", 4_133_980_799),
        ];
        for (date, epoch) in cases {
            assert_eq!(parse_http_date(date), Some(epoch), "{date}");
        }
    }

    fn msg(channel: &str) -> PushMessage {
        PushMessage {
            token: "fcm-token:APA91b".to_owned(),
            device: "2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f".to_owned(),
            channel: channel.to_owned(),
            has_body: true,
        }
    }

    #[test]
    fn message_body_exact() {
        let default = FcmSettings::default();
        let channel = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";
        let no_collapse = FcmSettings {
            collapse: false,
            ..FcmSettings::default()
        };
        let ttl_normal = FcmSettings {
            ttl: Some(300),
            priority: Priority::Normal,
            ..FcmSettings::default()
        };
        let cases = [
            (
                msg(""),
                &default,
                r#"{"message":{"token":"fcm-token:APA91b","data":{"account":"2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"},"android":{"priority":"high","collapse_key":"2b0e0a"}}}"#,
            ),
            (
                msg(channel),
                &default,
                r#"{"message":{"token":"fcm-token:APA91b","data":{"account":"2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f","channel":"9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"},"android":{"priority":"high","collapse_key":"9f8e7d"}}}"#,
            ),
            (
                msg(""),
                &no_collapse,
                r#"{"message":{"token":"fcm-token:APA91b","data":{"account":"2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"},"android":{"priority":"high"}}}"#,
            ),
            (
                msg(channel),
                &ttl_normal,
                r#"{"message":{"token":"fcm-token:APA91b","data":{"account":"2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f","channel":"9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"},"android":{"priority":"normal","collapse_key":"9f8e7d","ttl":"300s"}}}"#,
            ),
        ];
        for (m, settings, expected) in cases {
            assert_eq!(message_body(&m, settings), expected);
        }
    }

    #[test]
    fn message_body_escapes_and_is_valid_json() {
        let m = PushMessage {
            token: "a\"b\\c\u{1}".to_owned(),
            device: "ab".to_owned(),
            channel: String::new(),
            has_body: false,
        };
        let body = message_body(&m, &FcmSettings::default());
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["message"]["token"], "a\"b\\c\u{1}");
        assert_eq!(parsed["message"]["android"]["collapse_key"], "ab");
    }

    #[test]
    fn client_is_clone_send_sync() {
        fn check<T: Clone + Send + Sync>() {}
        check::<FcmClient>();
    }
}
