//! The APNs client: builds the wake-up, signs the provider token, sends over HTTP/2 with bounded retries and classifies the answer.
//!
//! PROTOCOL.md §7. Apple's push service speaks only HTTP/2, which ureq cannot, so this
//! module (behind the cargo feature `apns`) runs one dedicated thread with a
//! current-thread tokio runtime holding one HTTP/2 connection (`conn`), on which every
//! push is a stream. Callers stay synchronous: [`ApnsClient::send`] hands one exchange at
//! a time over a channel and waits for its answer; the retries, their backoff and the
//! provider token live on the caller's side, as in the FCM client.
//!
//! Authentication is either the Java p2's TLS client certificate or a token: an ES256 JWT
//! signed with the team's `.p8` key, reused for 40 minutes (Apple refuses new tokens more
//! often than every 20 minutes and tokens older than 60).
//!
//! The payload carries only the device (and channel) hash, never message content. The
//! device token, the JWT and keys are never logged.

mod conn;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use log::debug;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::Value;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use self::conn::{Answer, Endpoint, ExchangeError, Job};
use super::cooldown::{CoolDown, CoolDownSettings};
use super::retry::{self, Attempts, Classification, Policy};
use super::{Cause, Outcome, PushMessage};

/// What `BadDeviceToken` means when every push gets it.
pub const BAD_DEVICE_TOKEN_SUSPECT: &str =
    "apns.sandbox does not match the app build (sandbox or production)";

/// What `DeviceTokenNotForTopic` means when every push gets it.
pub const NOT_FOR_TOPIC_SUSPECT: &str = "apns.bundleId is not the app's bundle id";

/// Apple's production endpoint, for apps installed from the App Store or TestFlight.
pub const PRODUCTION_URL: &str = "https://api.push.apple.com";

/// Apple's development endpoint, for apps built and installed from Xcode.
pub const SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";

/// The alert title shown when the publish carried a message body. The Java p2 showed the
/// same; the app replaces it (`mutable-content`) after fetching the message itself.
pub const ALERT_TITLE: &str = "New message";

/// How long one provider token (JWT) is reused before a new one is signed. Apple answers
/// `TooManyProviderTokenUpdates` to tokens renewed more often than every 20 minutes and
/// `ExpiredProviderToken` to tokens older than 60.
pub const TOKEN_REUSE: Duration = Duration::from_secs(40 * 60);

/// Largest APNs response body we read (error bodies are a few dozen bytes).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How the client proves to Apple that it may push to the app: the configuration's
/// [`ApnsCredentials`](crate::config::ApnsCredentials), one type for both.
pub use crate::config::ApnsCredentials as ApnsAuth;

/// How the APNs client connects and sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsSettings {
    /// Scheme, host and port of the APNs API, without a path. Default [`PRODUCTION_URL`];
    /// [`SANDBOX_URL`] for development builds of the app. An `http://` URL speaks HTTP/2
    /// without TLS (h2c with prior knowledge): for tests only, Apple accepts only TLS.
    pub base_url: String,
    /// The app's bundle id, sent as `apns-topic` (`apns.bundleId`). Required.
    pub topic: String,
    /// Certificate or token authentication. Required.
    pub auth: ApnsAuth,
    /// Extra PEM files of root certificates trusted besides the built-in Mozilla roots,
    /// for tests and private deployments behind a proxy. Default none.
    pub extra_roots: Vec<PathBuf>,
    /// How long APNs keeps trying to reach an offline device (`apns-expiration`, counted
    /// from each send). `None` sends no header, which leaves it to Apple (it stores the
    /// notification and retries for some time). Default `None`.
    pub expiration: Option<Duration>,
    /// Total time for one push, retries, waits and reconnects included. Default 15 s.
    pub deadline: Duration,
    /// Time for one attempt: connecting (TCP, TLS and the HTTP/2 handshake, when no
    /// connection is up) plus the exchange itself. Default 10 s.
    pub request_timeout: Duration,
    /// Time for connecting to one of the host's addresses (TCP, TLS and the HTTP/2
    /// handshake) before the next address is tried, within the request timeout.
    /// Default 4 s.
    pub connect_timeout: Duration,
    /// When APNs counts as down and is left alone for a while. Default
    /// [`CoolDownSettings::default`]: after 10 failed attempts in a row, 5 s doubling to 60 s.
    pub cool_down: CoolDownSettings,
}

impl ApnsSettings {
    /// Settings for `topic` and `auth` with every default: production endpoint, no extra
    /// roots, no expiration, a 15 s deadline, a 10 s request timeout, 4 s per address
    /// to connect, the default cool-down.
    pub fn new(topic: impl Into<String>, auth: ApnsAuth) -> Self {
        ApnsSettings {
            base_url: PRODUCTION_URL.to_owned(),
            topic: topic.into(),
            auth,
            extra_roots: Vec::new(),
            expiration: None,
            deadline: Duration::from_secs(15),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(4),
            cool_down: CoolDownSettings::default(),
        }
    }
}

/// Why the APNs client cannot be made. Messages never contain a key or a token.
#[derive(Debug)]
pub enum ApnsError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A private key file holds no usable key.
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate file holds no usable certificate, or the key does not belong to it.
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting is unusable (empty topic, key id or team id; a bad base URL).
    Setting {
        /// The setting's field name in [`ApnsSettings`] or [`ApnsAuth`].
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The APNs thread or its runtime could not be started.
    Thread(io::Error),
}

impl fmt::Display for ApnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApnsError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            ApnsError::Key { path, reason } => {
                write!(f, "bad private key in {}: {reason}", path.display())
            }
            ApnsError::Certificate { path, reason } => {
                write!(f, "bad certificate in {}: {reason}", path.display())
            }
            ApnsError::Setting { name, reason } => write!(f, "bad apns {name}: {reason}"),
            ApnsError::Thread(e) => write!(f, "cannot start the apns thread: {e}"),
        }
    }
}

impl std::error::Error for ApnsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApnsError::Read { source, .. } | ApnsError::Thread(source) => Some(source),
            _ => None,
        }
    }
}

/// The kind of push, from whether the publish carried a message body (PROTOCOL.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushType {
    /// A visible notification (`apns-push-type: alert`, `apns-priority: 10`).
    Alert,
    /// A silent wake-up (`apns-push-type: background`, `apns-priority: 5`, the only
    /// priority Apple allows for it).
    Background,
}

impl PushType {
    /// `Alert` when the publish carried `last-message-body`, else `Background`.
    pub fn of(msg: &PushMessage) -> Self {
        if msg.has_body {
            PushType::Alert
        } else {
            PushType::Background
        }
    }

    /// The `apns-push-type` header value.
    pub fn header(self) -> &'static str {
        match self {
            PushType::Alert => "alert",
            PushType::Background => "background",
        }
    }

    /// The `apns-priority` header value.
    pub fn priority(self) -> &'static str {
        match self {
            PushType::Alert => "10",
            PushType::Background => "5",
        }
    }
}

/// The APNs request body for `msg`: compact JSON with only the account (and channel)
/// hash besides `aps`, never any message content.
///
/// Alert: `{"aps":{"alert":{"title":"New message"},"sound":"default","mutable-content":1},"account":D[,"channel":C]}`.
/// Background: `{"aps":{"content-available":1},"account":D[,"channel":C]}`.
///
/// The Java p2 sent `{"aps":{"alert":{"title":"New message"},"sound":"default"}}` and
/// `{"aps":{"content-available":1}}`, both without the hashes and both as
/// `apns-push-type: alert`. Here the hashes tell the app which account to reconnect (as
/// FCM's data does), `mutable-content` lets its notification service extension replace
/// the generic title, and a background push is declared as one, as Apple requires.
pub fn payload(msg: &PushMessage) -> String {
    let mut out = String::with_capacity(160);
    match PushType::of(msg) {
        PushType::Alert => {
            out.push_str(r#"{"aps":{"alert":{"title":"#);
            push_json_string(&mut out, ALERT_TITLE);
            out.push_str(r#"},"sound":"default","mutable-content":1}"#);
        }
        PushType::Background => out.push_str(r#"{"aps":{"content-available":1}"#),
    }
    out.push_str(r#","account":"#);
    push_json_string(&mut out, &msg.device);
    if !msg.channel.is_empty() {
        out.push_str(r#","channel":"#);
        push_json_string(&mut out, &msg.channel);
    }
    out.push('}');
    out
}

fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&Value::from(s).to_string());
}

/// Whether `token` can be an APNs device token: hexadecimal, as Apple hands them out
/// (32 bytes today, 64 hex digits; longer ones are allowed for the future).
pub fn is_plausible_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= 400 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Decides what an APNs answer means, from its status and the `reason` of its JSON body
/// (`{"reason":"BadDeviceToken"}`).
///
/// 200 → accepted. 410 (whatever the reason, normally `Unregistered` or `ExpiredToken`)
/// → dead token; 400 `BadDeviceToken` or `DeviceTokenNotForTopic` → dead token that may
/// be our own mistake (the wrong environment, the wrong bundle id). 403
/// `ExpiredProviderToken` → renew the provider token. 429 → retry, rate limited; 500,
/// 502, 503, 504 → retry (Apple sends no `Retry-After`). Any other 403 → fail
/// ([`Cause::Auth`]: our certificate or provider token); anything else → fail
/// ([`Cause::Rejected`]), the token kept: a 400 `BadTopic` is our configuration's
/// fault, not the device's.
pub fn classify(status: u16, body: &str) -> Classification {
    let reason = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_owned))
        .filter(|r| is_code_like(r));
    let described = || match &reason {
        Some(r) => format!("apns http {status} {r}"),
        None => format!("apns http {status}"),
    };
    let suspect = |r: &str| match r {
        "BadDeviceToken" => BAD_DEVICE_TOKEN_SUSPECT,
        _ => NOT_FOR_TOPIC_SUSPECT,
    };
    match (status, reason.as_deref()) {
        (200, _) => Classification::Accepted,
        (410, r) => Classification::dead(r.unwrap_or("http 410")),
        (400, Some(r @ ("BadDeviceToken" | "DeviceTokenNotForTopic"))) => {
            Classification::DeadToken {
                reason: r.to_owned(),
                suspect: Some(suspect(r)),
            }
        }
        (403, Some("ExpiredProviderToken")) => Classification::Renew {
            reason: described(),
        },
        (429, _) => Classification::retry(Cause::RateLimited, described()),
        (500 | 502 | 503 | 504, _) => Classification::retry(Cause::ProviderError, described()),
        (403, _) => Classification::fail(Cause::Auth, described()),
        _ => Classification::fail(Cause::Rejected, described()),
    }
}

/// A reason word such as `BadDeviceToken`: safe and short enough for a log line.
fn is_code_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A transport failure, as the retry loop sees it: a request never processed is retried
/// at once.
fn transport_class(e: &ExchangeError) -> Classification {
    match e {
        ExchangeError::NotSent(why) => Classification::Retry {
            cause: Cause::Transport,
            reason: format!("apns {why}"),
            after: None,
            immediate: true,
        },
        ExchangeError::Failed(why) => {
            Classification::retry(Cause::Transport, format!("apns {why}"))
        }
        ExchangeError::TimedOut(why) => {
            Classification::retry(Cause::Timeout, format!("apns {why}"))
        }
    }
}

/// Sends wake-ups through APNs over one multiplexed HTTP/2 connection.
///
/// `Clone + Send + Sync`: clones share the connection thread and the provider token, so
/// one client serves every worker thread. The thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct ApnsClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for ApnsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsClient")
            .field("base_url", &self.inner.base_url)
            .field("topic", &self.inner.settings.topic)
            .finish_non_exhaustive()
    }
}

struct Inner {
    settings: ApnsSettings,
    /// `settings.base_url` without a trailing slash.
    base_url: String,
    /// The provider token, with token authentication.
    signer: Option<TokenSigner>,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    cool_down: CoolDown,
}

impl ApnsClient {
    /// Checks the settings, loads the keys and certificates, and starts the connection
    /// thread. Does not connect: the first push does.
    ///
    /// Every unreadable or unusable file is an error here, naming the file and what is
    /// wrong with it, so that a bad configuration stops the daemon at start.
    pub fn new(settings: ApnsSettings) -> Result<Self, ApnsError> {
        if settings.topic.trim().is_empty() {
            return Err(setting("topic", "is empty"));
        }
        let base_url = settings.base_url.trim_end_matches('/').to_owned();
        let target = parse_base_url(&base_url)?;
        let signer = match &settings.auth {
            ApnsAuth::Token {
                key_file,
                key_id,
                team_id,
            } => Some(TokenSigner::new(key_file, key_id, team_id)?),
            ApnsAuth::Certificate { .. } => None,
        };
        let tls = if target.tls {
            Some(Arc::new(tls_config(&settings)?))
        } else {
            None
        };
        let endpoint = Endpoint {
            host: target.host,
            port: target.port,
            tls,
            connect_timeout: settings.connect_timeout,
        };
        let jobs = conn::start(endpoint).map_err(ApnsError::Thread)?;
        let cool_down = CoolDown::new("apns", settings.cool_down);
        Ok(ApnsClient {
            inner: Arc::new(Inner {
                settings,
                base_url,
                signer,
                jobs,
                cool_down,
            }),
        })
    }

    /// Sends one wake-up and waits for the outcome, retrying transient failures with
    /// backoff and jitter within [`ApnsSettings::deadline`] (the shared policy of
    /// [`retry::run`]).
    ///
    /// 200 → [`Outcome::Delivered`]; 410 → [`Outcome::DeadToken`], as is a token that is
    /// not hexadecimal (never sent); 400 `BadDeviceToken`, `DeviceTokenNotForTopic` →
    /// [`Outcome::DeadUnlessMisconfigured`]; 429, 5xx, timeouts and connection failures
    /// are retried, then [`Outcome::Failed`]; a 403 `ExpiredProviderToken` signs a new JWT
    /// once and retries; any other error is [`Outcome::Failed`] at once. A lost
    /// connection, a GOAWAY or a refused stream reconnects on the next attempt, at once
    /// for a request the server never processed. While APNs is cooling down (see
    /// [`CoolDownSettings`]), returns at once.
    pub fn send(&self, msg: &PushMessage) -> Outcome {
        if !is_plausible_token(&msg.token) {
            debug!("apns push: device token is not hexadecimal; not sent");
            return Outcome::DeadToken {
                reason: "BadDeviceToken".to_owned(),
            };
        }
        let settings = &self.inner.settings;
        let attempt = Attempt {
            client: self,
            push_type: PushType::of(msg),
            body: Bytes::from(payload(msg)),
            uri: format!("{}/3/device/{}", self.inner.base_url, msg.token),
        };
        let policy = Policy::new("apns", settings.deadline, settings.request_timeout);
        retry::run(policy, &self.inner.cool_down, &attempt)
    }

    /// The request head for one attempt.
    fn request(
        &self,
        uri: &str,
        push_type: PushType,
        jwt: Option<&str>,
    ) -> Result<http::Request<()>, http::Error> {
        let settings = &self.inner.settings;
        let mut builder = http::Request::post(uri)
            .header("apns-topic", settings.topic.as_str())
            .header("apns-push-type", push_type.header())
            .header("apns-priority", push_type.priority());
        if let Some(ttl) = settings.expiration {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            builder = builder.header(
                "apns-expiration",
                now.saturating_add(ttl).as_secs().to_string(),
            );
        }
        if let Some(jwt) = jwt {
            let mut value = http::HeaderValue::try_from(format!("bearer {jwt}"))?;
            value.set_sensitive(true);
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        builder.body(())
    }

    /// One exchange on the connection thread, waited for at most `timeout` (and a little
    /// more, in case that thread is stuck).
    fn exchange(
        &self,
        request: http::Request<()>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, ExchangeError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let now = Instant::now();
        let job = Job {
            request,
            body,
            queued: now,
            deadline: retry::later(now, timeout),
            full_timeout: timeout >= self.inner.settings.request_timeout,
            max_body: MAX_RESPONSE_BYTES,
            reply,
        };
        if self.inner.jobs.send(job).is_err() {
            return Err(ExchangeError::Failed(
                "connection thread stopped".to_owned(),
            ));
        }
        match answer.recv_timeout(timeout.saturating_add(Duration::from_secs(1))) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(ExchangeError::TimedOut(
                "connection thread did not answer".to_owned(),
            )),
            Err(RecvTimeoutError::Disconnected) => Err(ExchangeError::Failed(
                "connection thread stopped".to_owned(),
            )),
        }
    }
}

/// One push's attempts: its request, sent with the shared provider token (if any).
struct Attempt<'a> {
    client: &'a ApnsClient,
    push_type: PushType,
    body: Bytes,
    uri: String,
}

impl Attempts for Attempt<'_> {
    type Credential = Option<Arc<str>>;

    fn credential(&self, _within: Duration) -> Result<Option<Arc<str>>, (Cause, String)> {
        match &self.client.inner.signer {
            Some(signer) => signer
                .current()
                .map(Some)
                .map_err(|why| (Cause::Auth, format!("apns provider token: {why}"))),
            None => Ok(None),
        }
    }

    fn attempt(&self, jwt: &Option<Arc<str>>, timeout: Duration, attempt: u32) -> Classification {
        let request = match self
            .client
            .request(&self.uri, self.push_type, jwt.as_deref())
        {
            Ok(request) => request,
            Err(e) => return Classification::fail(Cause::Rejected, format!("apns request: {e}")),
        };
        let started = Instant::now();
        match self.client.exchange(request, self.body.clone(), timeout) {
            Ok(answer) => {
                debug!(
                    "apns push: http {}, attempt {attempt}, {} ms",
                    answer.status,
                    started.elapsed().as_millis()
                );
                match classify(answer.status, &answer.body) {
                    // With a client certificate there is no provider token to renew.
                    Classification::Renew { reason } if jwt.is_none() => {
                        Classification::fail(Cause::Auth, reason)
                    }
                    class => class,
                }
            }
            Err(e) => {
                debug!(
                    "apns push: {e}, attempt {attempt}, {} ms",
                    started.elapsed().as_millis()
                );
                transport_class(&e)
            }
        }
    }

    fn renew(&self, stale: &Option<Arc<str>>) {
        if let (Some(signer), Some(jwt)) = (&self.client.inner.signer, stale) {
            signer.invalidate(jwt);
        }
    }
}

/// The parts of the base URL the connection needs.
struct Target {
    tls: bool,
    host: String,
    port: u16,
}

/// Checks the base URL: `https://` or `http://`, a host, an optional port, no path.
fn parse_base_url(url: &str) -> Result<Target, ApnsError> {
    let bad = |reason: &str| setting("base_url", &format!("{url:?} {reason}"));
    let uri: http::Uri = url.parse().map_err(|_| bad("is not a url"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("must start with https:// (or http:// for tests)")),
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("must not have a path"));
    }
    let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() || authority.as_str().contains('@') {
        return Err(bad("has no usable host"));
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(Target {
        tls,
        host: host.to_owned(),
        port,
    })
}

fn setting(name: &'static str, reason: &str) -> ApnsError {
    ApnsError::Setting {
        name,
        reason: reason.to_owned(),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, ApnsError> {
    std::fs::read(path).map_err(|source| ApnsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The private key in a PEM file, with an error naming the file and what is wrong.
fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ApnsError> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let reason = if contains(&pem, b"ENCRYPTED PRIVATE KEY") {
            "the key is encrypted; decrypt it with `openssl pkey -in KEY -out KEY.pem`".to_owned()
        } else if matches!(e, rustls::pki_types::pem::Error::NoItemsFound) {
            "no PEM private key (PKCS#8, PKCS#1 or SEC1) found".to_owned()
        } else {
            e.to_string()
        };
        ApnsError::Key {
            path: path.to_owned(),
            reason,
        }
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every certificate in a PEM file; at least one.
fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ApnsError> {
    let pem = read_file(path)?;
    let bad = |reason: String| ApnsError::Certificate {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate found".to_owned()));
    }
    Ok(certs)
}

/// The TLS configuration: Mozilla's roots plus `extra_roots`, ALPN `h2`, and the client
/// certificate when authenticating with one.
fn tls_config(settings: &ApnsSettings) -> Result<rustls::ClientConfig, ApnsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in &settings.extra_roots {
        for cert in load_certificates(path)? {
            roots.add(cert).map_err(|e| ApnsError::Certificate {
                path: path.clone(),
                reason: format!("not a usable root: {e}"),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots);
    let mut config = match &settings.auth {
        ApnsAuth::Certificate {
            certificate,
            private_key,
        } => {
            let chain = load_certificates(certificate)?;
            let key = load_private_key(private_key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => ApnsError::Key {
                        path: private_key.clone(),
                        reason: format!("does not belong to {}", certificate.display()),
                    },
                    rustls::Error::General(_) => ApnsError::Key {
                        path: private_key.clone(),
                        reason: format!("not a usable key: {e}"),
                    },
                    _ => ApnsError::Certificate {
                        path: certificate.clone(),
                        reason: e.to_string(),
                    },
                })?
        }
        ApnsAuth::Token { .. } => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Signs and caches the provider token (ES256 JWT).
struct TokenSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    key_id: String,
    team_id: String,
    cache: Mutex<Option<CachedJwt>>,
}

struct CachedJwt {
    jwt: Arc<str>,
    signed_at: Instant,
}

impl TokenSigner {
    fn new(path: &Path, key_id: &str, team_id: &str) -> Result<Self, ApnsError> {
        if key_id.trim().is_empty() {
            return Err(setting("key_id", "is empty"));
        }
        if team_id.trim().is_empty() {
            return Err(setting("team_id", "is empty"));
        }
        let bad = |reason: String| ApnsError::Key {
            path: path.to_owned(),
            reason,
        };
        let der = match load_private_key(path)? {
            PrivateKeyDer::Pkcs8(der) => der,
            _ => {
                return Err(bad(
                    "not a PKCS#8 key (BEGIN PRIVATE KEY), as Apple's .p8 files are".to_owned(),
                ))
            }
        };
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| bad(format!("not an EC P-256 key with its public key ({e})")))?;
        let signer = TokenSigner {
            key,
            rng,
            key_id: key_id.trim().to_owned(),
            team_id: team_id.trim().to_owned(),
            cache: Mutex::new(None),
        };
        signer
            .sign(0)
            .map_err(|_| bad("signing a test token failed".to_owned()))?;
        Ok(signer)
    }

    /// The token to send: the cached one while younger than [`TOKEN_REUSE`], else a new one.
    fn current(&self) -> Result<Arc<str>, &'static str> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = &*cache {
            if cached.signed_at.elapsed() < TOKEN_REUSE {
                return Ok(cached.jwt.clone());
            }
        }
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the clock is before 1970")?
            .as_secs();
        let jwt: Arc<str> = self.sign(iat).map_err(|_| "signing failed")?.into();
        *cache = Some(CachedJwt {
            jwt: jwt.clone(),
            signed_at: Instant::now(),
        });
        debug!("apns: signed a new provider token");
        Ok(jwt)
    }

    /// Drops `used` from the cache, if it is still the cached token, so that the next
    /// [`current`](Self::current) signs a new one. A token already replaced by another
    /// thread stays replaced: Apple refuses tokens renewed too often.
    fn invalidate(&self, used: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.as_ref().is_some_and(|c| &*c.jwt == used) {
            *cache = None;
        }
    }

    /// `base64url(header).base64url(claims).base64url(signature)` for issue time `iat`.
    fn sign(&self, iat: u64) -> Result<String, ring::error::Unspecified> {
        let header = format!(r#"{{"alg":"ES256","kid":{}}}"#, Value::from(&*self.key_id));
        let claims = format!(r#"{{"iss":{},"iat":{iat}}}"#, Value::from(&*self.team_id));
        let mut jwt = URL_SAFE_NO_PAD.encode(header);
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let signature = self.key.sign(&self.rng, jwt.as_bytes())?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(jwt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::testing::fixture;
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    const DEVICE: &str = "2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f";
    const CHANNEL: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";
    const TOKEN: &str = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad";

    #[test]
    fn a_request_never_sent_is_retried_at_once_and_others_after_a_backoff() {
        let immediate = |e: ExchangeError| match transport_class(&e) {
            Classification::Retry { immediate, .. } => immediate,
            other => panic!("{other:?}"),
        };
        assert!(immediate(ExchangeError::NotSent("stream refused".into())));
        assert!(!immediate(ExchangeError::Failed("http/2: reset".into())));
        assert!(!immediate(ExchangeError::TimedOut(
            "request timed out".into()
        )));
    }

    fn msg(channel: &str, has_body: bool) -> PushMessage {
        PushMessage {
            token: TOKEN.to_owned(),
            device: DEVICE.to_owned(),
            channel: channel.to_owned(),
            has_body,
        }
    }

    #[test]
    fn payload_exact() {
        let cases = [
            (
                msg("", true),
                r#"{"aps":{"alert":{"title":"New message"},"sound":"default","mutable-content":1},"account":"2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"}"#,
            ),
            (
                msg(CHANNEL, true),
                r#"{"aps":{"alert":{"title":"New message"},"sound":"default","mutable-content":1},"account":"2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f","channel":"9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"}"#,
            ),
            (
                msg("", false),
                r#"{"aps":{"content-available":1},"account":"2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"}"#,
            ),
            (
                msg(CHANNEL, false),
                r#"{"aps":{"content-available":1},"account":"2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f","channel":"9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"}"#,
            ),
        ];
        for (m, expected) in cases {
            assert_eq!(payload(&m), expected);
            serde_json::from_str::<Value>(expected).expect("valid json");
        }
    }

    #[test]
    fn payload_escapes() {
        let m = PushMessage {
            device: "a\"b\\c".to_owned(),
            ..msg("", false)
        };
        let parsed: Value = serde_json::from_str(&payload(&m)).unwrap();
        assert_eq!(parsed["account"], "a\"b\\c");
    }

    #[test]
    fn push_type_headers() {
        assert_eq!(PushType::of(&msg("", true)), PushType::Alert);
        assert_eq!(PushType::of(&msg("", false)), PushType::Background);
        assert_eq!(
            (PushType::Alert.header(), PushType::Alert.priority()),
            ("alert", "10")
        );
        assert_eq!(
            (
                PushType::Background.header(),
                PushType::Background.priority()
            ),
            ("background", "5")
        );
    }

    fn reason(r: &str) -> String {
        format!(r#"{{"reason":"{r}"}}"#)
    }

    #[test]
    fn classify_documented_answers() {
        let dead = |r: &str| Classification::dead(r);
        let suspect = |r: &str, suspect| Classification::DeadToken {
            reason: r.to_owned(),
            suspect: Some(suspect),
        };
        let retry = |r: &str| Classification::retry(Cause::ProviderError, r);
        let limited = |r: &str| Classification::retry(Cause::RateLimited, r);
        let fail = |r: &str| Classification::fail(Cause::Rejected, r);
        let auth = |r: &str| Classification::fail(Cause::Auth, r);
        let unregistered = r#"{"reason":"Unregistered","timestamp":1712345678901}"#;
        let cases = [
            (200, String::new(), Classification::Accepted),
            (200, "{}".to_owned(), Classification::Accepted),
            (410, unregistered.to_owned(), dead("Unregistered")),
            (410, reason("ExpiredToken"), dead("ExpiredToken")),
            (410, String::new(), dead("http 410")),
            (
                400,
                reason("BadDeviceToken"),
                suspect("BadDeviceToken", BAD_DEVICE_TOKEN_SUSPECT),
            ),
            (
                400,
                reason("DeviceTokenNotForTopic"),
                suspect("DeviceTokenNotForTopic", NOT_FOR_TOPIC_SUSPECT),
            ),
            (
                403,
                reason("ExpiredProviderToken"),
                Classification::Renew {
                    reason: "apns http 403 ExpiredProviderToken".to_owned(),
                },
            ),
            (
                429,
                reason("TooManyRequests"),
                limited("apns http 429 TooManyRequests"),
            ),
            (
                429,
                reason("TooManyProviderTokenUpdates"),
                limited("apns http 429 TooManyProviderTokenUpdates"),
            ),
            (
                500,
                reason("InternalServerError"),
                retry("apns http 500 InternalServerError"),
            ),
            (
                503,
                reason("ServiceUnavailable"),
                retry("apns http 503 ServiceUnavailable"),
            ),
            (503, reason("Shutdown"), retry("apns http 503 Shutdown")),
            (
                502,
                "<html>Bad Gateway</html>".to_owned(),
                retry("apns http 502"),
            ),
            (504, String::new(), retry("apns http 504")),
            (400, reason("BadTopic"), fail("apns http 400 BadTopic")),
            (
                400,
                reason("MissingTopic"),
                fail("apns http 400 MissingTopic"),
            ),
            (
                400,
                reason("TopicDisallowed"),
                fail("apns http 400 TopicDisallowed"),
            ),
            (
                400,
                reason("PayloadEmpty"),
                fail("apns http 400 PayloadEmpty"),
            ),
            (
                400,
                reason("InvalidPushType"),
                fail("apns http 400 InvalidPushType"),
            ),
            (400, String::new(), fail("apns http 400")),
            (
                403,
                reason("InvalidProviderToken"),
                auth("apns http 403 InvalidProviderToken"),
            ),
            (
                403,
                reason("BadCertificate"),
                auth("apns http 403 BadCertificate"),
            ),
            (
                403,
                reason("BadCertificateEnvironment"),
                auth("apns http 403 BadCertificateEnvironment"),
            ),
            (
                403,
                reason("MissingProviderToken"),
                auth("apns http 403 MissingProviderToken"),
            ),
            (404, reason("BadPath"), fail("apns http 404 BadPath")),
            (
                405,
                reason("MethodNotAllowed"),
                fail("apns http 405 MethodNotAllowed"),
            ),
            (
                413,
                reason("PayloadTooLarge"),
                fail("apns http 413 PayloadTooLarge"),
            ),
            (
                400,
                reason("has spaces and is long enough to be anything at all"),
                fail("apns http 400"),
            ),
            (400, r#"{"reason":42}"#.to_owned(), fail("apns http 400")),
            (400, "[".to_owned(), fail("apns http 400")),
        ];
        for (status, body, expected) in cases {
            assert_eq!(classify(status, &body), expected, "{status} {body}");
        }
    }

    #[test]
    fn plausible_tokens() {
        assert!(is_plausible_token(TOKEN));
        assert!(is_plausible_token(&TOKEN.to_uppercase()));
        assert!(is_plausible_token(&"ab".repeat(100)));
        for bad in [
            "",
            "abc/def",
            "ab cd",
            "abc?x=1",
            "xyz",
            "é",
            &"ab".repeat(201),
        ] {
            assert!(!is_plausible_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn base_urls() {
        let ok = |url: &str| {
            let t = parse_base_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            (t.tls, t.host, t.port)
        };
        assert_eq!(
            ok(PRODUCTION_URL),
            (true, "api.push.apple.com".to_owned(), 443)
        );
        assert_eq!(
            ok(SANDBOX_URL),
            (true, "api.sandbox.push.apple.com".to_owned(), 443)
        );
        assert_eq!(
            ok("https://api.push.apple.com:2197"),
            (true, "api.push.apple.com".to_owned(), 2197)
        );
        assert_eq!(
            ok("http://127.0.0.1:8080"),
            (false, "127.0.0.1".to_owned(), 8080)
        );
        assert_eq!(ok("http://[::1]:8080"), (false, "::1".to_owned(), 8080));
        assert_eq!(ok("http://localhost/"), (false, "localhost".to_owned(), 80));
        let cases = [
            ("", "bad apns base_url: \"\" is not a url"),
            (
                "api.push.apple.com",
                "bad apns base_url: \"api.push.apple.com\" must start with https:// (or http:// for tests)",
            ),
            (
                "ftp://api.push.apple.com",
                "bad apns base_url: \"ftp://api.push.apple.com\" must start with https:// (or http:// for tests)",
            ),
            (
                "https://api.push.apple.com/3/device",
                "bad apns base_url: \"https://api.push.apple.com/3/device\" must not have a path",
            ),
            (
                "https://user@api.push.apple.com",
                "bad apns base_url: \"https://user@api.push.apple.com\" has no usable host",
            ),
        ];
        for (url, expected) in cases {
            match parse_base_url(url) {
                Ok(_) => panic!("{url} accepted"),
                Err(e) => assert_eq!(e.to_string(), expected),
            }
        }
    }

    fn signer(file: &str) -> TokenSigner {
        TokenSigner::new(&fixture(file), "ABC123DEFG", "DEF123GHIJ").expect("test key loads")
    }

    /// Checks `jwt` with the fixture's public key; returns its header and claims.
    fn verify(jwt: &str) -> (Value, Value) {
        let spki = std::fs::read(fixture("apns-token-key.pub.der")).unwrap();
        let point = &spki[spki.len() - 65..];
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{jwt}");
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("signature verifies");
        let part = |p: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
        (part(parts[0]), part(parts[1]))
    }

    #[test]
    fn jwt_is_es256_with_kid_iss_iat() {
        for file in ["apns-token-key.p8", "apns-token-key-apple-form.p8"] {
            let jwt = signer(file).sign(1_712_345_678).unwrap();
            let (header, claims) = verify(&jwt);
            assert_eq!(header.to_string(), r#"{"alg":"ES256","kid":"ABC123DEFG"}"#);
            assert_eq!(
                claims.to_string(),
                r#"{"iat":1712345678,"iss":"DEF123GHIJ"}"#
            );
            // Exactly as serialised: `iss` before `iat`, no padding.
            assert!(jwt.starts_with(&format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"ABC123DEFG"}"#),
                URL_SAFE_NO_PAD.encode(r#"{"iss":"DEF123GHIJ","iat":1712345678}"#)
            )));
            assert!(!jwt.contains('='));
        }
    }

    #[test]
    fn jwt_is_reused_until_invalidated() {
        let signer = signer("apns-token-key.p8");
        let first = signer.current().unwrap();
        assert_eq!(signer.current().unwrap(), first);
        let (_, claims) = verify(&first);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(claims["iat"].as_u64().unwrap().abs_diff(now) < 5);
        // Invalidating a token that is no longer the cached one changes nothing.
        signer.invalidate("an.older.token");
        assert_eq!(signer.current().unwrap(), first);
        signer.invalidate(&first);
        let second = signer.current().unwrap();
        assert_ne!(second, first);
        verify(&second);
    }

    #[test]
    fn jwt_expires_after_reuse_period() {
        let signer = signer("apns-token-key.p8");
        let first = signer.current().unwrap();
        {
            let mut cache = signer.cache.lock().unwrap();
            let cached = cache.as_mut().unwrap();
            match Instant::now().checked_sub(TOKEN_REUSE) {
                Some(then) => cached.signed_at = then,
                None => return, // a machine up for less than 40 minutes: nothing to see
            }
        }
        assert_ne!(signer.current().unwrap(), first);
    }

    #[test]
    fn token_key_errors_name_the_file() {
        let err = |file: &str, key_id: &str, team_id: &str| {
            TokenSigner::new(&fixture(file), key_id, team_id)
                .err()
                .expect("refused")
                .to_string()
        };
        let dir = fixture("");
        let dir = dir.display();
        assert_eq!(
            err("apns-client.key", "K", "T"),
            format!("bad private key in {dir}apns-client.key: not an EC P-256 key with its public key (WrongAlgorithm)")
        );
        assert_eq!(
            err("apns-client.rsa.key", "K", "T"),
            format!("bad private key in {dir}apns-client.rsa.key: not a PKCS#8 key (BEGIN PRIVATE KEY), as Apple's .p8 files are")
        );
        assert_eq!(
            err("apns-ca.pem", "K", "T"),
            format!("bad private key in {dir}apns-ca.pem: no PEM private key (PKCS#8, PKCS#1 or SEC1) found")
        );
        assert!(err("no-such.p8", "K", "T").starts_with(&format!("cannot read {dir}no-such.p8: ")));
        assert_eq!(
            err("apns-token-key.p8", " ", "T"),
            "bad apns key_id: is empty"
        );
        assert_eq!(
            err("apns-token-key.p8", "K", ""),
            "bad apns team_id: is empty"
        );
    }

    #[test]
    fn client_is_clone_send_sync() {
        fn check<T: Clone + Send + Sync>() {}
        check::<ApnsClient>();
    }
}
