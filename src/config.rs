//! The Java p2's JSON config file and `P2_*` environment variables, turned once into a
//! validated [`Config`].
//!
//! Precedence: a variable that is set (non-empty) overrides the file's value; without a
//! file, the variables alone configure p2. Every refusal names the key, where it came
//! from, and what is wrong; `main` exits with 78 (`EX_CONFIG`) on it.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::push::fcm::Priority;
use crate::xmpp::jid::Jid;

/// Default XMPP server host.
pub const DEFAULT_HOST: &str = "localhost";
/// Default component port (XEP-0114 custom: Prosody and ejabberd examples use 5347).
pub const DEFAULT_PORT: u16 = 5347;
/// Default SQLite file, relative to the working directory.
pub const DEFAULT_DATABASE: &str = "p2.sqlite";
/// Default number of push worker threads.
pub const DEFAULT_WORKERS: usize = 100;
/// Default FCM base URL.
pub const DEFAULT_FCM_BASE_URL: &str = "https://fcm.googleapis.com";
/// Default silence from the server after which a ping is sent.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);
/// Default time for one push, retries included, before answering `wait`.
pub const DEFAULT_FCM_DEADLINE: Duration = Duration::from_secs(15);
/// Default time for one APNs push, retries included, before answering `wait`.
pub const DEFAULT_APNS_DEADLINE: Duration = Duration::from_secs(15);

/// The FCM provider's settings (`fcm` object).
#[derive(Debug, Clone, PartialEq)]
pub struct FcmConfig {
    /// `fcm.serviceAccountFile` / `P2_SERVICE_ACCOUNT_FILE`: the Google service account
    /// JSON key. Required when `fcm` is present.
    pub service_account_file: PathBuf,
    /// `fcm.collapse` / `P2_FCM_COLLAPSE`: send a collapse key. Default `true`.
    pub collapse: bool,
    /// `fcm.baseUrl` / `P2_FCM_BASE_URL`. Default `https://fcm.googleapis.com`.
    pub base_url: String,
    /// `fcm.priority` / `P2_FCM_PRIORITY`: `high` (default) or `normal`.
    pub priority: Priority,
    /// `fcm.ttl` / `P2_FCM_TTL`: message time to live in seconds. Default: FCM's (4 weeks).
    pub ttl: Option<u32>,
    /// `fcm.deadline` / `P2_FCM_DEADLINE`: seconds for one push, retries included.
    /// Default 15.
    pub deadline: Duration,
}

/// The APNs provider's settings (`apns` object, or the `P2_APNS_*` variables).
///
/// Parsed in every build; only a build with the cargo feature `apns` can use them (the
/// others refuse to start with them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsConfig {
    /// Where the APNs settings came from: the file, when it has an `apns` object, or
    /// `environment`. Later refusals (an unreadable key file) name the key accordingly.
    pub source: String,
    /// `apns.bundleId` / `P2_APNS_BUNDLE_ID`: the app's bundle id, sent as `apns-topic`.
    /// Required.
    pub bundle_id: String,
    /// `apns.sandbox` / `P2_APNS_SANDBOX`: push through Apple's development endpoint
    /// (apps built from Xcode) instead of the production one. Default `false`.
    pub sandbox: bool,
    /// `apns.baseUrl` / `P2_APNS_BASE_URL`: the APNs endpoint, overriding the one
    /// `sandbox` picks (for tests and proxies). Default none.
    pub base_url: Option<String>,
    /// How p2 authenticates to Apple: a client certificate or a provider token.
    pub credentials: ApnsCredentials,
    /// `apns.caFile` / `P2_APNS_CA_FILE`: a PEM file of root certificates trusted besides
    /// the built-in ones (for tests and TLS-intercepting proxies). Default none.
    pub ca_file: Option<PathBuf>,
    /// `apns.deadline` / `P2_APNS_DEADLINE`: seconds for one push, retries included.
    /// Default 15.
    pub deadline: Duration,
}

/// How p2 authenticates to APNs: exactly one of the two modes is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApnsCredentials {
    /// The Java p2's TLS client certificate for the bundle id.
    Certificate {
        /// `apns.certificate` / `P2_APNS_CERTIFICATE`: PEM file with the certificate,
        /// optionally followed by its intermediates.
        certificate: PathBuf,
        /// `apns.privateKey` / `P2_APNS_PRIVATE_KEY`: PEM file with its unencrypted key:
        /// PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1
        /// (`BEGIN EC PRIVATE KEY`).
        private_key: PathBuf,
    },
    /// A provider token (ES256 JWT) signed with a key from the Apple developer account.
    Token {
        /// `apns.keyFile` / `P2_APNS_KEY_FILE`: the `.p8` file Apple hands out, a PKCS#8
        /// PEM EC P-256 private key.
        key_file: PathBuf,
        /// `apns.keyId` / `P2_APNS_KEY_ID`: the key's id (10 characters, JWT `kid`).
        key_id: String,
        /// `apns.teamId` / `P2_APNS_TEAM_ID`: the developer team's id (10 characters,
        /// JWT `iss`).
        team_id: String,
    },
}

/// Limits on what the federated network may ask of p2 (`limits` object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `limits.registrationsPerAccount` / `P2_LIMIT_REGISTRATIONS_PER_ACCOUNT`: devices one
    /// account may register; a new one beyond it evicts the least recently refreshed.
    /// Default 10.
    pub registrations_per_account: usize,
    /// `limits.newRegistrationsPerDomainPerHour` /
    /// `P2_LIMIT_NEW_REGISTRATIONS_PER_DOMAIN`: new registrations accepted from the
    /// accounts of one domain in an hour (renewals are not counted). Default 1000.
    pub new_registrations_per_domain_hour: u32,
    /// `limits.coalesceMillis` / `P2_LIMIT_COALESCE_MILLIS`: after a delivered push, more
    /// publishes to the same node within this window are answered `result` without
    /// another provider request (the phone is already being woken). 0 turns it off.
    /// Default 1000.
    pub coalesce: Duration,
    /// `limits.registrationsPerDomain` / `P2_LIMIT_REGISTRATIONS_PER_DOMAIN`: registrations
    /// stored for the accounts of one domain, counted in the database; a new one beyond
    /// it is refused `wait` `resource-constraint` (renewals always pass). 0: no cap.
    /// Default 100,000.
    pub registrations_per_domain: u64,
    /// `limits.expireAfterDays` / `P2_LIMIT_EXPIRE_AFTER_DAYS`: a registration neither
    /// refreshed by its device nor pushed to for this many days is deleted. 0: never.
    /// Default 180.
    pub expire_after_days: u32,
    /// `limits.stanzaBytes` / `P2_LIMIT_STANZA_BYTES`: the largest stanza read from the
    /// server; a larger one is skipped, and an IQ get/set answered `wait`
    /// `policy-violation`. Default 262,144 (256 KiB, what servers allow clients).
    pub stanza_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            registrations_per_account: 10,
            new_registrations_per_domain_hour: 1000,
            coalesce: Duration::from_millis(1000),
            registrations_per_domain: 100_000,
            expire_after_days: 180,
            stanza_bytes: 256 * 1024,
        }
    }
}

/// The validated configuration.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// Where it came from: the file path, or `environment`.
    pub source: String,
    /// `host` / `P2_HOSTNAME`: the XMPP server to connect to. Default `localhost`.
    pub host: String,
    /// `port` / `P2_PORT`: its component port. Default 5347.
    pub port: u16,
    /// `jid` / `P2_JABBER_ID`: the component's JID (a domain). Required.
    pub jid: String,
    /// `sharedSecret` / `P2_SHARED_SECRET`: the component password. Required.
    pub shared_secret: String,
    /// `debug` / `P2_DEBUG`: log at debug level. Default `false`.
    pub debug: bool,
    /// `database` / `P2_DATABASE`: the SQLite file. Default `p2.sqlite`.
    pub database: PathBuf,
    /// `workers` / `P2_WORKERS`: pushes in flight at once for one domain; worker threads
    /// start as pushes need them and end after a minute idle. Default 100.
    pub workers: usize,
    /// `keepalive` / `P2_KEEPALIVE`: seconds of silence from the server before p2 pings
    /// it; no answer within half as long again and the connection is dropped and
    /// reopened. A server that takes no bytes for a third of it (at most 20 s) is dropped
    /// too. Default 60.
    pub keepalive: Duration,
    /// `fcm`: the FCM provider, if configured.
    pub fcm: Option<FcmConfig>,
    /// `apns`: the APNs provider, if configured.
    pub apns: Option<ApnsConfig>,
    /// `limits`: see [`Limits`].
    pub limits: Limits,
    /// `metrics.listen` / `P2_METRICS_LISTEN`: the address (`127.0.0.1:9090`) serving
    /// `GET /metrics` (Prometheus text format) and `GET /health` over plain HTTP. Default
    /// none: no listener.
    pub metrics_listen: Option<SocketAddr>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("source", &self.source)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("jid", &self.jid)
            .field("shared_secret", &"<hidden>")
            .field("debug", &self.debug)
            .field("database", &self.database)
            .field("workers", &self.workers)
            .field("keepalive", &self.keepalive)
            .field("fcm", &self.fcm)
            .field("apns", &self.apns)
            .field("limits", &self.limits)
            .field("metrics_listen", &self.metrics_listen)
            .finish()
    }
}

/// A refused configuration: one line naming the key, the source and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or `environment`.
    pub source: String,
    /// The key or variable (`fcm.serviceAccountFile`, `P2_PORT`); empty for the file itself.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.problem)
        } else {
            write!(f, "{}: {}: {}", self.source, self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

/// One setting: its key in the file (a JSON path, `fcm.collapse`) and its variable.
#[derive(Debug, PartialEq, Eq)]
pub struct Key {
    /// The key in the JSON file, sections joined with `.`: `fcm.serviceAccountFile`.
    pub json: &'static str,
    /// The environment variable: `P2_SERVICE_ACCOUNT_FILE`.
    pub env: &'static str,
}

const HOST: Key = Key {
    json: "host",
    env: "P2_HOSTNAME",
};
const PORT: Key = Key {
    json: "port",
    env: "P2_PORT",
};
const JID: Key = Key {
    json: "jid",
    env: "P2_JABBER_ID",
};
const SECRET: Key = Key {
    json: "sharedSecret",
    env: "P2_SHARED_SECRET",
};
const DEBUG: Key = Key {
    json: "debug",
    env: "P2_DEBUG",
};
const DATABASE: Key = Key {
    json: "database",
    env: "P2_DATABASE",
};
const WORKERS: Key = Key {
    json: "workers",
    env: "P2_WORKERS",
};
const LIMIT_PER_ACCOUNT: Key = Key {
    json: "limits.registrationsPerAccount",
    env: "P2_LIMIT_REGISTRATIONS_PER_ACCOUNT",
};
const LIMIT_PER_DOMAIN: Key = Key {
    json: "limits.newRegistrationsPerDomainPerHour",
    env: "P2_LIMIT_NEW_REGISTRATIONS_PER_DOMAIN",
};
const LIMIT_COALESCE: Key = Key {
    json: "limits.coalesceMillis",
    env: "P2_LIMIT_COALESCE_MILLIS",
};
const LIMIT_DOMAIN_TOTAL: Key = Key {
    json: "limits.registrationsPerDomain",
    env: "P2_LIMIT_REGISTRATIONS_PER_DOMAIN",
};
const LIMIT_EXPIRE: Key = Key {
    json: "limits.expireAfterDays",
    env: "P2_LIMIT_EXPIRE_AFTER_DAYS",
};
const LIMIT_STANZA: Key = Key {
    json: "limits.stanzaBytes",
    env: "P2_LIMIT_STANZA_BYTES",
};
const METRICS_LISTEN: Key = Key {
    json: "metrics.listen",
    env: "P2_METRICS_LISTEN",
};
const KEEPALIVE: Key = Key {
    json: "keepalive",
    env: "P2_KEEPALIVE",
};
const FCM_ACCOUNT: Key = Key {
    json: "fcm.serviceAccountFile",
    env: "P2_SERVICE_ACCOUNT_FILE",
};
const FCM_COLLAPSE: Key = Key {
    json: "fcm.collapse",
    env: "P2_FCM_COLLAPSE",
};
const FCM_BASE_URL: Key = Key {
    json: "fcm.baseUrl",
    env: "P2_FCM_BASE_URL",
};
const FCM_PRIORITY: Key = Key {
    json: "fcm.priority",
    env: "P2_FCM_PRIORITY",
};
const FCM_TTL: Key = Key {
    json: "fcm.ttl",
    env: "P2_FCM_TTL",
};
const FCM_DEADLINE: Key = Key {
    json: "fcm.deadline",
    env: "P2_FCM_DEADLINE",
};

const APNS_BUNDLE_ID: Key = Key {
    json: "apns.bundleId",
    env: "P2_APNS_BUNDLE_ID",
};
const APNS_SANDBOX: Key = Key {
    json: "apns.sandbox",
    env: "P2_APNS_SANDBOX",
};
const APNS_BASE_URL: Key = Key {
    json: "apns.baseUrl",
    env: "P2_APNS_BASE_URL",
};
const APNS_CERTIFICATE: Key = Key {
    json: "apns.certificate",
    env: "P2_APNS_CERTIFICATE",
};
const APNS_PRIVATE_KEY: Key = Key {
    json: "apns.privateKey",
    env: "P2_APNS_PRIVATE_KEY",
};
const APNS_KEY_FILE: Key = Key {
    json: "apns.keyFile",
    env: "P2_APNS_KEY_FILE",
};
const APNS_KEY_ID: Key = Key {
    json: "apns.keyId",
    env: "P2_APNS_KEY_ID",
};
const APNS_TEAM_ID: Key = Key {
    json: "apns.teamId",
    env: "P2_APNS_TEAM_ID",
};
const APNS_CA_FILE: Key = Key {
    json: "apns.caFile",
    env: "P2_APNS_CA_FILE",
};
const APNS_DEADLINE: Key = Key {
    json: "apns.deadline",
    env: "P2_APNS_DEADLINE",
};
/// Every APNs setting; any of its variables being set configures APNs.
const APNS_SETTINGS: &[&Key] = &[
    &APNS_BUNDLE_ID,
    &APNS_SANDBOX,
    &APNS_BASE_URL,
    &APNS_CERTIFICATE,
    &APNS_PRIVATE_KEY,
    &APNS_KEY_FILE,
    &APNS_KEY_ID,
    &APNS_TEAM_ID,
    &APNS_CA_FILE,
    &APNS_DEADLINE,
];

/// Every setting p2 reads, in the order of the documentation (README, `man p2`). A key
/// in the file that is not here (nor a legacy key) is warned about as unknown.
pub const KEYS: &[&Key] = &[
    &HOST,
    &PORT,
    &JID,
    &SECRET,
    &DEBUG,
    &DATABASE,
    &WORKERS,
    &KEEPALIVE,
    &FCM_ACCOUNT,
    &FCM_COLLAPSE,
    &FCM_PRIORITY,
    &FCM_TTL,
    &FCM_BASE_URL,
    &FCM_DEADLINE,
    &LIMIT_PER_ACCOUNT,
    &LIMIT_PER_DOMAIN,
    &LIMIT_COALESCE,
    &LIMIT_DOMAIN_TOTAL,
    &LIMIT_EXPIRE,
    &LIMIT_STANZA,
    &METRICS_LISTEN,
    &APNS_BUNDLE_ID,
    &APNS_SANDBOX,
    &APNS_CERTIFICATE,
    &APNS_PRIVATE_KEY,
    &APNS_KEY_FILE,
    &APNS_KEY_ID,
    &APNS_TEAM_ID,
    &APNS_BASE_URL,
    &APNS_CA_FILE,
    &APNS_DEADLINE,
];

/// The Java p2's MariaDB keys: accepted with a warning and ignored.
pub const LEGACY_KEYS: &[&str] = &["dbUrl", "dbUsername", "dbPassword"];
/// The Java p2's MariaDB variables: accepted with a warning and ignored.
pub const LEGACY_VARS: &[&str] = &[
    "P2_DATABASE_URL",
    "P2_DATABASE_USERNAME",
    "P2_DATABASE_PASSWORD",
];

/// Whether `path` (`fcm`, `fcm.collapse`) is a key of [`KEYS`] or a section holding one.
fn known_key(path: &str) -> bool {
    KEYS.iter().any(|k| {
        k.json == path
            || k.json
                .strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// systemd credential (`LoadCredential=shared-secret:…`) used when `sharedSecret` is unset.
pub const CREDENTIAL_SECRET: &str = "shared-secret";
/// systemd credential (`LoadCredential=service-account.json:…`) used when
/// `fcm.serviceAccountFile` is unset; its presence enables FCM.
pub const CREDENTIAL_ACCOUNT: &str = "service-account.json";

/// The `jid` of `p2.conf.example`: refused until replaced by the component's domain.
/// Under `.invalid` (RFC 2606), so it can be nobody's real component.
pub const PLACEHOLDER_JID: &str = "p2.replace-me.invalid";
/// The `sharedSecret` of `p2.conf.example`: refused until replaced by the component's
/// password. (The Java p2's example secret, `verysecure`, is accepted: real setups kept it.)
pub const PLACEHOLDER_SECRET: &str = "REPLACE-ME: the component password of your XMPP server";

/// Reads the config file: its name as shown in messages, and its JSON object.
fn read_file(path: &Path) -> Result<(String, Map<String, Value>), ConfigError> {
    let shown = path.display().to_string();
    let err = |problem: String| ConfigError {
        source: shown.clone(),
        key: String::new(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok((shown, map)),
        Ok(_) => Err(err("must hold a JSON object".into())),
        Err(e) => Err(err(format!("invalid JSON: {e}"))),
    }
}

/// The path of systemd credential `name`, if `$CREDENTIALS_DIRECTORY` holds it.
fn credential(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<PathBuf> {
    let dir = env("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty())?;
    let path = Path::new(&dir).join(name);
    path.is_file().then_some(path)
}

/// Reads settings from the file (if any) and the environment, the latter winning.
struct Reader<'a> {
    file: Option<(String, Map<String, Value>)>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

/// A raw value with where it came from.
enum Raw {
    Json(Value),
    Env(String),
}

impl Reader<'_> {
    fn source(&self) -> String {
        match &self.file {
            Some((path, _)) => path.clone(),
            None => "environment".into(),
        }
    }

    /// Refuses the placeholders of `p2.conf.example` still in `jid` or `sharedSecret`, in
    /// one line that says what to set (both, when both are left).
    fn placeholders(&self) -> Result<(), ConfigError> {
        let jid = matches!(self.string(&JID), Ok(Some(v)) if v.trim() == PLACEHOLDER_JID);
        let secret = matches!(self.string(&SECRET), Ok(Some(v)) if v == PLACEHOLDER_SECRET);
        let declared = "as declared for p2 in your XMPP server (see man p2)";
        match (jid, secret) {
            (false, false) => Ok(()),
            (true, false) => Err(self.error(
                &JID,
                self.in_env(&JID),
                format!(
                    "{PLACEHOLDER_JID:?} is the example's placeholder: set the component's \
                     domain, {declared}"
                ),
            )),
            (false, true) => Err(self.error(
                &SECRET,
                self.in_env(&SECRET),
                format!("is the example's placeholder: set the component's password, {declared}"),
            )),
            (true, true) => {
                let secret_key = if self.in_env(&SECRET) {
                    SECRET.env
                } else {
                    SECRET.json
                };
                let jid_key = if self.in_env(&JID) { JID.env } else { JID.json };
                Err(self.error(
                    &JID,
                    self.in_env(&JID),
                    format!(
                        "{PLACEHOLDER_JID:?} is the example's placeholder, and so is \
                         {secret_key}: set {jid_key} to the component's domain and \
                         {secret_key} to its password, {declared}"
                    ),
                ))
            }
        }
    }

    fn error(&self, key: &Key, from_env: bool, problem: impl Into<String>) -> ConfigError {
        if from_env {
            ConfigError {
                source: "environment".into(),
                key: key.env.into(),
                problem: problem.into(),
            }
        } else {
            ConfigError {
                source: self.source(),
                key: key.json.into(),
                problem: problem.into(),
            }
        }
    }

    fn json(&self, path: &str) -> Option<&Value> {
        let (_, map) = self.file.as_ref()?;
        let mut parts = path.split('.');
        let mut v = map.get(parts.next()?)?;
        for p in parts {
            v = v.as_object()?.get(p)?;
        }
        (!v.is_null()).then_some(v)
    }

    fn raw(&self, key: &Key) -> Option<Raw> {
        if let Some(v) = (self.env)(key.env).filter(|v| !v.is_empty()) {
            return Some(Raw::Env(v));
        }
        self.json(key.json).cloned().map(Raw::Json)
    }

    fn string(&self, key: &Key) -> Result<Option<String>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Raw::Env(s)) => Ok(Some(s)),
            Some(Raw::Json(Value::String(s))) => Ok(Some(s)),
            Some(Raw::Json(_)) => Err(self.error(key, false, "must be a string")),
        }
    }

    fn required(&self, key: &Key) -> Result<String, ConfigError> {
        match self.string(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(self.error(key, self.file.is_none(), "missing (required)")),
        }
    }

    fn boolean(&self, key: &Key) -> Result<Option<bool>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Raw::Json(Value::Bool(b))) => Ok(Some(b)),
            Some(Raw::Json(_)) => Err(self.error(key, false, "must be true or false")),
            Some(Raw::Env(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(self.error(key, true, format!("must be true or false, not {s:?}"))),
            },
        }
    }

    fn integer(&self, key: &Key, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        let (n, from_env) = match self.raw(key) {
            None => return Ok(None),
            Some(Raw::Json(Value::Number(n))) => (n.as_u64(), false),
            // The Java p2's Gson also took numbers written as strings.
            Some(Raw::Json(Value::String(s))) => (s.trim().parse().ok(), false),
            Some(Raw::Json(_)) => (None, false),
            Some(Raw::Env(s)) => (s.trim().parse().ok(), true),
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(self.error(
                key,
                from_env,
                format!("must be a whole number from {min} to {max}"),
            )),
        }
    }

    /// Whether `key`'s variable is set (non-empty), so that its value comes from there.
    fn in_env(&self, key: &Key) -> bool {
        (self.env)(key.env).is_some_and(|v| !v.is_empty())
    }

    /// A string setting that must not be blank when given: `None` when absent or blank.
    fn text(&self, key: &Key) -> Result<Option<String>, ConfigError> {
        Ok(self.string(key)?.filter(|s| !s.trim().is_empty()))
    }

    /// The `apns` settings: present when the file has an `apns` object or any
    /// `P2_APNS_*` variable is set. Exactly one authentication mode must be complete.
    fn apns(&self) -> Result<Option<ApnsConfig>, ConfigError> {
        let in_file = self.json("apns").is_some();
        if !in_file && !APNS_SETTINGS.iter().any(|k| self.in_env(k)) {
            return Ok(None);
        }
        // A key that has no value is named as the section was written.
        let section_from_env = !in_file;
        let name = |key: &Key| if section_from_env { key.env } else { key.json };
        let missing = |key: &Key, problem: String| self.error(key, section_from_env, problem);

        let bundle_id = self
            .text(&APNS_BUNDLE_ID)?
            .ok_or_else(|| missing(&APNS_BUNDLE_ID, "missing (required with apns)".into()))?;
        let bundle_id = bundle_id.trim().to_owned();
        if !bundle_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(self.error(
                &APNS_BUNDLE_ID,
                self.in_env(&APNS_BUNDLE_ID),
                format!("{bundle_id:?} is not a bundle id (letters, digits, '-' and '.')"),
            ));
        }

        let certificate = self.text(&APNS_CERTIFICATE)?;
        let private_key = self.text(&APNS_PRIVATE_KEY)?;
        let key_file = self.text(&APNS_KEY_FILE)?;
        let key_id = self.text(&APNS_KEY_ID)?;
        let team_id = self.text(&APNS_TEAM_ID)?;
        let certificate_keys = [
            (&APNS_CERTIFICATE, certificate.is_some()),
            (&APNS_PRIVATE_KEY, private_key.is_some()),
        ];
        let token_keys = [
            (&APNS_KEY_FILE, key_file.is_some()),
            (&APNS_KEY_ID, key_id.is_some()),
            (&APNS_TEAM_ID, team_id.is_some()),
        ];
        let first_given = |keys: &[(&'static Key, bool)]| {
            keys.iter().find(|(_, given)| *given).map(|(key, _)| *key)
        };
        let modes = format!(
            "configure a client certificate ({} and {}) or a provider token ({}, {} and {})",
            name(&APNS_CERTIFICATE),
            name(&APNS_PRIVATE_KEY),
            name(&APNS_KEY_FILE),
            name(&APNS_KEY_ID),
            name(&APNS_TEAM_ID)
        );
        let credentials = match (first_given(&certificate_keys), first_given(&token_keys)) {
            (Some(certificate_key), Some(token_key)) => {
                return Err(self.error(
                    token_key,
                    self.in_env(token_key),
                    format!(
                        "cannot be combined with {}: {modes}, not both",
                        name(certificate_key)
                    ),
                ))
            }
            (None, None) => return Err(missing(&APNS_CERTIFICATE, format!("missing: {modes}"))),
            (Some(given), None) => {
                let (Some(certificate), Some(private_key)) = (certificate, private_key) else {
                    let absent = first_missing(&certificate_keys);
                    return Err(missing(
                        absent,
                        format!("missing (required with {})", name(given)),
                    ));
                };
                ApnsCredentials::Certificate {
                    certificate: PathBuf::from(certificate),
                    private_key: PathBuf::from(private_key),
                }
            }
            (None, Some(given)) => {
                let (Some(key_file), Some(key_id), Some(team_id)) = (key_file, key_id, team_id)
                else {
                    let absent = first_missing(&token_keys);
                    return Err(missing(
                        absent,
                        format!("missing (required with {})", name(given)),
                    ));
                };
                ApnsCredentials::Token {
                    key_file: PathBuf::from(key_file),
                    key_id: key_id.trim().to_owned(),
                    team_id: team_id.trim().to_owned(),
                }
            }
        };

        let base_url = match self.text(&APNS_BASE_URL)? {
            None => None,
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                Some(url.trim_end_matches('/').to_owned())
            }
            Some(_) => {
                return Err(self.error(
                    &APNS_BASE_URL,
                    self.in_env(&APNS_BASE_URL),
                    "must be an http(s) URL",
                ))
            }
        };
        Ok(Some(ApnsConfig {
            source: if in_file {
                self.source()
            } else {
                "environment".into()
            },
            bundle_id,
            sandbox: self.boolean(&APNS_SANDBOX)?.unwrap_or(false),
            base_url,
            credentials,
            ca_file: self.text(&APNS_CA_FILE)?.map(PathBuf::from),
            deadline: self
                .integer(&APNS_DEADLINE, 1, 3600)?
                .map_or(DEFAULT_APNS_DEADLINE, Duration::from_secs),
        }))
    }
}

/// The first of `keys` not given.
fn first_missing(keys: &[(&'static Key, bool)]) -> &'static Key {
    keys.iter()
        .find(|(_, given)| !*given)
        .map(|(key, _)| *key)
        .expect("called with a key missing")
}

impl Config {
    /// Loads the configuration from `file` (if any) and the environment given by `env`
    /// (`|name| std::env::var(name).ok()` in the daemon). Returns it with the warnings
    /// to log (legacy and unknown keys).
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        let file = match file {
            None => None,
            Some(path) => {
                let (shown, map) = read_file(path)?;
                for key in map.keys() {
                    if LEGACY_KEYS.contains(&key.as_str()) {
                        warnings.push(format!(
                            "{shown}: {key} is ignored: p2 keeps its registrations in SQLite \
                             (see the `database` key)"
                        ));
                    } else if !known_key(key) {
                        warnings.push(format!("{shown}: unknown key {key} is ignored"));
                    }
                }
                for (section, value) in &map {
                    let Value::Object(object) = value else {
                        continue;
                    };
                    if !known_key(section) {
                        continue;
                    }
                    for key in object.keys() {
                        let path = format!("{section}.{key}");
                        if !known_key(&path) {
                            warnings.push(format!("{shown}: unknown key {path} is ignored"));
                        }
                    }
                }
                Some((shown, map))
            }
        };
        for var in LEGACY_VARS {
            if env(var).is_some_and(|v| !v.is_empty()) {
                warnings.push(format!(
                    "environment: {var} is ignored: p2 keeps its registrations in SQLite \
                     (see P2_DATABASE)"
                ));
            }
        }
        let r = Reader { file, env };
        r.placeholders()?;

        let jid = r.required(&JID)?;
        match Jid::parse(&jid) {
            Ok(j) if !j.has_local() && !j.is_full() => {}
            _ => {
                let from_env = env(JID.env).is_some_and(|v| !v.is_empty());
                return Err(r.error(&JID, from_env, format!("{jid:?} is not a domain JID")));
            }
        }
        let fcm_present = r.json("fcm").is_some()
            || credential(env, CREDENTIAL_ACCOUNT).is_some()
            || [
                &FCM_ACCOUNT,
                &FCM_COLLAPSE,
                &FCM_BASE_URL,
                &FCM_PRIORITY,
                &FCM_TTL,
                &FCM_DEADLINE,
            ]
            .iter()
            .any(|k| env(k.env).is_some_and(|v| !v.is_empty()));
        let fcm = if fcm_present {
            if r.json("fcm.authKey").is_some() {
                warnings.push(format!(
                    "{}: fcm.authKey is ignored: the legacy FCM API was shut down in 2024; \
                     use fcm.serviceAccountFile",
                    r.source()
                ));
            }
            let account = match r.string(&FCM_ACCOUNT)?.filter(|s| !s.is_empty()) {
                Some(path) => path,
                None => credential(env, CREDENTIAL_ACCOUNT)
                    .map(|p| p.display().to_string())
                    .ok_or_else(|| {
                        r.error(
                            &FCM_ACCOUNT,
                            r.file.is_none(),
                            "missing (required with fcm)",
                        )
                    })?,
            };
            let priority = match r.string(&FCM_PRIORITY)?.as_deref() {
                None | Some("high") => Priority::High,
                Some("normal") => Priority::Normal,
                Some(other) => {
                    let from_env = env(FCM_PRIORITY.env).is_some_and(|v| !v.is_empty());
                    return Err(r.error(
                        &FCM_PRIORITY,
                        from_env,
                        format!("must be \"high\" or \"normal\", not {other:?}"),
                    ));
                }
            };
            let base_url = r
                .string(&FCM_BASE_URL)?
                .unwrap_or_else(|| DEFAULT_FCM_BASE_URL.into());
            // Something must follow the scheme: `https://` alone would become `https:`.
            let trimmed = base_url.trim_end_matches('/');
            let host = trimmed
                .strip_prefix("https://")
                .or_else(|| trimmed.strip_prefix("http://"));
            if host.is_none_or(str::is_empty) {
                let from_env = env(FCM_BASE_URL.env).is_some_and(|v| !v.is_empty());
                return Err(r.error(&FCM_BASE_URL, from_env, "must be an http(s) URL"));
            }
            Some(FcmConfig {
                service_account_file: PathBuf::from(account),
                collapse: r.boolean(&FCM_COLLAPSE)?.unwrap_or(true),
                base_url: base_url.trim_end_matches('/').to_owned(),
                priority,
                // FCM's limit: 28 days.
                ttl: r.integer(&FCM_TTL, 0, 2_419_200)?.map(|n| n as u32),
                deadline: r
                    .integer(&FCM_DEADLINE, 1, 3600)?
                    .map(Duration::from_secs)
                    .unwrap_or(DEFAULT_FCM_DEADLINE),
            })
        } else {
            None
        };

        let apns = r.apns()?;

        let config = Config {
            source: r.source(),
            host: r.string(&HOST)?.unwrap_or_else(|| DEFAULT_HOST.into()),
            port: r
                .integer(&PORT, 1, 65535)?
                .map_or(DEFAULT_PORT, |p| p as u16),
            jid,
            shared_secret: match credential(env, CREDENTIAL_SECRET) {
                Some(path) if r.string(&SECRET)?.is_none() => std::fs::read_to_string(&path)
                    .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                    .map_err(|e| ConfigError {
                        source: path.display().to_string(),
                        key: SECRET.json.into(),
                        problem: format!("cannot read the credential: {e}"),
                    })?,
                _ => r.required(&SECRET)?,
            },
            debug: r.boolean(&DEBUG)?.unwrap_or(false),
            database: r
                .string(&DATABASE)?
                .map_or_else(|| PathBuf::from(DEFAULT_DATABASE), PathBuf::from),
            workers: r
                .integer(&WORKERS, 1, 4096)?
                .map_or(DEFAULT_WORKERS, |n| n as usize),
            keepalive: r
                .integer(&KEEPALIVE, 1, 3600)?
                .map_or(DEFAULT_KEEPALIVE, Duration::from_secs),
            fcm,
            apns,
            limits: Limits {
                registrations_per_account: r
                    .integer(&LIMIT_PER_ACCOUNT, 1, 10_000)?
                    .map_or(Limits::default().registrations_per_account, |n| n as usize),
                new_registrations_per_domain_hour: r
                    .integer(&LIMIT_PER_DOMAIN, 1, 100_000_000)?
                    .map_or(Limits::default().new_registrations_per_domain_hour, |n| {
                        n as u32
                    }),
                coalesce: r
                    .integer(&LIMIT_COALESCE, 0, 60_000)?
                    .map_or(Limits::default().coalesce, Duration::from_millis),
                registrations_per_domain: r
                    .integer(&LIMIT_DOMAIN_TOTAL, 0, 1_000_000_000)?
                    .unwrap_or(Limits::default().registrations_per_domain),
                expire_after_days: r
                    .integer(&LIMIT_EXPIRE, 0, 36_500)?
                    .map_or(Limits::default().expire_after_days, |n| n as u32),
                stanza_bytes: r
                    .integer(&LIMIT_STANZA, 4096, 16 * 1024 * 1024)?
                    .map_or(Limits::default().stanza_bytes, |n| n as usize),
            },
            metrics_listen: match r.string(&METRICS_LISTEN)?.filter(|s| !s.is_empty()) {
                None => None,
                Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                    let from_env = env(METRICS_LISTEN.env).is_some_and(|v| !v.is_empty());
                    r.error(
                        &METRICS_LISTEN,
                        from_env,
                        format!("{text:?} is not an address and port such as 127.0.0.1:9090"),
                    )
                })?),
            },
        };
        Ok((config, warnings))
    }

    /// Only the check for the example's placeholders of [`Config::load`]: `Err` with the
    /// same line when `jid` or `sharedSecret` still holds one, `Ok` otherwise, even when
    /// the file cannot be read or is invalid (`load` reports that). For the unit's
    /// `ExecCondition=`: an unedited config keeps the service stopped without failing it,
    /// while any other problem is left to the daemon, which fails the unit with it.
    pub fn placeholders(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let file = match file.map(read_file) {
            Some(Ok(file)) => Some(file),
            Some(Err(_)) => return Ok(()),
            None => None,
        };
        Reader { file, env }.placeholders()
    }

    /// The error for a problem found later in the value of `fcm.serviceAccountFile`
    /// (unreadable file, invalid key), named as the operator wrote it.
    pub fn service_account_error(&self, problem: impl Into<String>) -> ConfigError {
        let from_file = self.source != "environment";
        ConfigError {
            source: self.source.clone(),
            key: if from_file {
                FCM_ACCOUNT.json
            } else {
                FCM_ACCOUNT.env
            }
            .into(),
            problem: problem.into(),
        }
    }

    /// The error for a problem found later in an APNs setting (an unreadable key file, a
    /// certificate that does not belong to its key), naming the key as the operator
    /// wrote it: `json_key` is its name in the file (`apns.keyFile`), replaced by its
    /// variable when the APNs settings came from the environment.
    pub fn apns_error(&self, json_key: &str, problem: impl Into<String>) -> ConfigError {
        let source = self
            .apns
            .as_ref()
            .map_or_else(|| self.source.clone(), |a| a.source.clone());
        let key = if source == "environment" {
            APNS_SETTINGS
                .iter()
                .find(|k| k.json == json_key)
                .map_or("P2_APNS_*", |k| k.env)
        } else {
            json_key
        };
        ConfigError {
            source,
            key: key.into(),
            problem: problem.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::TempDir;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// A config file in a scratch directory of its own, removed with it when the test
    /// passes.
    struct Written {
        _dir: TempDir,
        path: PathBuf,
    }

    impl std::ops::Deref for Written {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.path
        }
    }

    fn write(name: &str, text: &str) -> Written {
        let dir = TempDir::new(&format!("config-{name}"));
        let path = dir.path().join("config.json");
        std::fs::write(&path, text).unwrap();
        Written { _dir: dir, path }
    }

    const JAVA: &str = r#"{
        "host": "127.0.0.1", "port": 5347, "jid": "p2.example.net",
        "sharedSecret": "verysecure", "debug": false,
        "dbUrl": "jdbc:mariadb://localhost/p2", "dbUsername": "p2", "dbPassword": "x",
        "fcm": {"serviceAccountFile": "/etc/p2/sa.json", "collapse": true}
    }"#;

    #[test]
    fn reads_the_java_config_unchanged() {
        let path = write("java", JAVA);
        let (c, warnings) = Config::load(Some(&path), &env_of(&[])).unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 5347);
        assert_eq!(c.jid, "p2.example.net");
        assert_eq!(c.shared_secret, "verysecure");
        assert_eq!(c.database, PathBuf::from("p2.sqlite"));
        assert_eq!(c.workers, DEFAULT_WORKERS);
        let fcm = c.fcm.unwrap();
        assert_eq!(fcm.service_account_file, PathBuf::from("/etc/p2/sa.json"));
        assert!(fcm.collapse);
        assert_eq!(fcm.priority, Priority::High);
        assert_eq!(fcm.base_url, DEFAULT_FCM_BASE_URL);
        assert_eq!(fcm.ttl, None);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert_eq!(c.limits, Limits::default());
        assert!(warnings.iter().any(|w| w.contains("dbUrl is ignored")));
    }

    #[test]
    fn environment_alone_and_overriding() {
        let env = env_of(&[
            ("P2_HOSTNAME", "xmpp.local"),
            ("P2_PORT", "5348"),
            ("P2_JABBER_ID", "push.example.org"),
            ("P2_SHARED_SECRET", "s3"),
            ("P2_SERVICE_ACCOUNT_FILE", "sa.json"),
            ("P2_FCM_COLLAPSE", "0"),
            ("P2_FCM_PRIORITY", "normal"),
            ("P2_FCM_BASE_URL", "http://127.0.0.1:9/"),
            ("P2_DATABASE", "/var/lib/p2/p2.sqlite"),
            ("P2_WORKERS", "8"),
            ("P2_DATABASE_URL", "jdbc:x"),
        ]);
        let (c, warnings) = Config::load(None, &env).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("xmpp.local", 5348));
        assert_eq!(c.source, "environment");
        assert_eq!(c.workers, 8);
        let fcm = c.fcm.unwrap();
        assert!(!fcm.collapse);
        assert_eq!(fcm.priority, Priority::Normal);
        assert_eq!(fcm.base_url, "http://127.0.0.1:9");
        assert_eq!(warnings.len(), 1);

        let path = write("override", JAVA);
        let (c, _) = Config::load(Some(&path), &env_of(&[("P2_PORT", "6000")])).unwrap();
        assert_eq!(c.port, 6000);
        assert_eq!(c.host, "127.0.0.1");
    }

    #[test]
    fn refusals_name_key_and_source() {
        let check = |text: &str, env: &[(&str, &str)], expected: &str| {
            let path = write("refuse", text);
            let err = Config::load(Some(&path), &env_of(env)).unwrap_err();
            assert_eq!(
                err.to_string(),
                expected.replace("FILE", &path.display().to_string())
            );
        };
        check(
            r#"{"sharedSecret":"s"}"#,
            &[],
            "FILE: jid: missing (required)",
        );
        check(
            r#"{"jid":"p2.x"}"#,
            &[],
            "FILE: sharedSecret: missing (required)",
        );
        check(
            r#"{"jid":"a@p2.x","sharedSecret":"s"}"#,
            &[],
            "FILE: jid: \"a@p2.x\" is not a domain JID",
        );
        check(
            r#"{"jid":"p2.x","sharedSecret":"s","port":"http"}"#,
            &[],
            "FILE: port: must be a whole number from 1 to 65535",
        );
        check(
            r#"{"jid":"p2.x","sharedSecret":"s"}"#,
            &[("P2_PORT", "70000")],
            "environment: P2_PORT: must be a whole number from 1 to 65535",
        );
        check(
            r#"{"jid":"p2.x","sharedSecret":"s","fcm":{"collapse":true}}"#,
            &[],
            "FILE: fcm.serviceAccountFile: missing (required with fcm)",
        );
        check(
            r#"{"jid":"p2.x","sharedSecret":"s","fcm":{"serviceAccountFile":"a","priority":"max"}}"#,
            &[],
            "FILE: fcm.priority: must be \"high\" or \"normal\", not \"max\"",
        );
        check(
            r#"{"jid":"p2.x","sharedSecret":"s","debug":"yes"}"#,
            &[],
            "FILE: debug: must be true or false",
        );
        check(
            r#"{"jid": "#,
            &[],
            "FILE: invalid JSON: EOF while parsing a value at line 1 column 8",
        );
        check("[]", &[], "FILE: must hold a JSON object");
        check(
            r#"{"jid":"p2.x","sharedSecret":"s","limits":{"registrationsPerAccount":0}}"#,
            &[],
            "FILE: limits.registrationsPerAccount: must be a whole number from 1 to 10000",
        );
        check(
            r#"{"jid":"p2.x","sharedSecret":"s","limits":{"stanzaBytes":1000}}"#,
            &[],
            "FILE: limits.stanzaBytes: must be a whole number from 4096 to 16777216",
        );
        check(
            r#"{"jid":"p2.x","sharedSecret":"s","metrics":{"listen":"localhost"}}"#,
            &[],
            "FILE: metrics.listen: \"localhost\" is not an address and port such as 127.0.0.1:9090",
        );
        check(
            r#"{"jid":"p2.x","sharedSecret":"s"}"#,
            &[("P2_LIMIT_EXPIRE_AFTER_DAYS", "-1")],
            "environment: P2_LIMIT_EXPIRE_AFTER_DAYS: must be a whole number from 0 to 36500",
        );
        let err = Config::load(None, &env_of(&[("P2_JABBER_ID", "p2.x")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment: P2_SHARED_SECRET: missing (required)"
        );
        let err = Config::load(Some(Path::new("/nonexistent/p2.json")), &env_of(&[])).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("/nonexistent/p2.json: cannot read: "));
    }

    #[test]
    fn limits_and_metrics_from_file_and_environment() {
        let path = write(
            "limits",
            r#"{"jid":"p2.x","sharedSecret":"s","metrics":{"listen":"127.0.0.1:9090"},
                "limits":{"registrationsPerDomain":0,"expireAfterDays":30,"stanzaBytes":65536}}"#,
        );
        let (c, warnings) = Config::load(Some(&path), &env_of(&[])).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.limits.registrations_per_domain, 0);
        assert_eq!(c.limits.expire_after_days, 30);
        assert_eq!(c.limits.stanza_bytes, 65536);
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9090".parse().unwrap()));
        let env = env_of(&[
            ("P2_LIMIT_REGISTRATIONS_PER_DOMAIN", "500"),
            ("P2_LIMIT_EXPIRE_AFTER_DAYS", "0"),
            ("P2_LIMIT_STANZA_BYTES", "1048576"),
            ("P2_METRICS_LISTEN", "[::1]:9100"),
        ]);
        let (c, _) = Config::load(Some(&path), &env).unwrap();
        assert_eq!(c.limits.registrations_per_domain, 500);
        assert_eq!(c.limits.expire_after_days, 0);
        assert_eq!(c.limits.stanza_bytes, 1_048_576);
        assert_eq!(c.metrics_listen, Some("[::1]:9100".parse().unwrap()));
        // The defaults.
        let (c, _) = Config::load(
            None,
            &env_of(&[("P2_JABBER_ID", "p2.x"), ("P2_SHARED_SECRET", "s")]),
        )
        .unwrap();
        assert_eq!(
            (
                c.limits.registrations_per_domain,
                c.limits.expire_after_days,
                c.limits.stanza_bytes
            ),
            (100_000, 180, 262_144)
        );
        assert_eq!(c.metrics_listen, None);
    }

    #[test]
    fn an_fcm_base_url_needs_more_than_its_scheme() {
        // `https://` was accepted and trimmed to `https:` (found by fuzz/config).
        let path = write("base-url", r#"{"jid":"p2.x","sharedSecret":"s"}"#);
        for url in ["https://", "http:///", "https:", "ftp://x"] {
            let env = env_of(&[
                ("P2_SERVICE_ACCOUNT_FILE", "/sa.json"),
                ("P2_FCM_BASE_URL", url),
            ]);
            let err = Config::load(Some(&path), &env).unwrap_err();
            assert_eq!(
                err.to_string(),
                "environment: P2_FCM_BASE_URL: must be an http(s) URL",
                "{url}"
            );
        }
        let env = env_of(&[
            ("P2_SERVICE_ACCOUNT_FILE", "/sa.json"),
            ("P2_FCM_BASE_URL", "http://127.0.0.1:8080/"),
        ]);
        let (c, _) = Config::load(Some(&path), &env).unwrap();
        assert_eq!(c.fcm.unwrap().base_url, "http://127.0.0.1:8080");
    }

    #[test]
    fn unknown_keys_are_named() {
        let path = write(
            "unknown",
            r#"{"jid":"p2.x","sharedSecret":"s","fcmAuthKey":"k","fcm":{"serviceAccountFile":"a","colapse":false}}"#,
        );
        let (_, warnings) = Config::load(Some(&path), &env_of(&[])).unwrap();
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].ends_with("unknown key fcmAuthKey is ignored"));
        assert!(warnings[1].ends_with("unknown key fcm.colapse is ignored"));
    }

    #[test]
    fn secrets_from_systemd_credentials() {
        let path = write("cred", r#"{"jid":"p2.x"}"#);
        let dir = path.parent().unwrap().join("creds");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("shared-secret"), "from-credential\n").unwrap();
        std::fs::write(dir.join("service-account.json"), "{}").unwrap();
        let dir_s = dir.display().to_string();
        let (c, _) =
            Config::load(Some(&path), &env_of(&[("CREDENTIALS_DIRECTORY", &dir_s)])).unwrap();
        assert_eq!(c.shared_secret, "from-credential");
        assert_eq!(
            c.fcm.unwrap().service_account_file,
            dir.join("service-account.json")
        );
        // A value in the file wins over the credential.
        let path = write("cred2", r#"{"jid":"p2.x","sharedSecret":"in-file"}"#);
        let (c, _) =
            Config::load(Some(&path), &env_of(&[("CREDENTIALS_DIRECTORY", &dir_s)])).unwrap();
        assert_eq!(c.shared_secret, "in-file");
    }

    /// The Java p2's file with its `apns` object (client certificate authentication).
    const JAVA_APNS: &str = r#"{
        "host": "127.0.0.1", "port": 5347, "jid": "p2.example.net",
        "sharedSecret": "verysecure",
        "fcm": {"serviceAccountFile": "/etc/p2/sa.json", "collapse": true},
        "apns": {"certificate": "/etc/p2/apns.pem", "privateKey": "/etc/p2/apns.key",
                 "bundleId": "im.monal.p2test", "sandbox": true}
    }"#;

    #[test]
    fn reads_the_java_apns_settings() {
        let path = write("java-apns", JAVA_APNS);
        let (c, warnings) = Config::load(Some(&path), &env_of(&[])).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(c.fcm.is_some());
        assert_eq!(
            c.apns,
            Some(ApnsConfig {
                source: path.display().to_string(),
                bundle_id: "im.monal.p2test".into(),
                sandbox: true,
                base_url: None,
                credentials: ApnsCredentials::Certificate {
                    certificate: "/etc/p2/apns.pem".into(),
                    private_key: "/etc/p2/apns.key".into(),
                },
                ca_file: None,
                deadline: DEFAULT_APNS_DEADLINE,
            })
        );
        // Without an apns object or variable, APNs is off.
        let path = write("no-apns", JAVA);
        assert_eq!(
            Config::load(Some(&path), &env_of(&[])).unwrap().0.apns,
            None
        );
    }

    #[test]
    fn apns_token_settings_from_the_environment() {
        let (c, _) = Config::load(
            None,
            &env_of(&[
                ("P2_JABBER_ID", "p2.x"),
                ("P2_SHARED_SECRET", "s"),
                ("P2_APNS_BUNDLE_ID", "org.example.app"),
                ("P2_APNS_KEY_FILE", "/etc/p2/AuthKey_ABC123DEFG.p8"),
                ("P2_APNS_KEY_ID", "ABC123DEFG"),
                ("P2_APNS_TEAM_ID", "DEF123GHIJ"),
                ("P2_APNS_BASE_URL", "http://127.0.0.1:9/"),
                ("P2_APNS_CA_FILE", "/etc/p2/ca.pem"),
                ("P2_APNS_DEADLINE", "5"),
                ("P2_APNS_SANDBOX", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(c.fcm, None);
        let apns = c.apns.clone().unwrap();
        assert_eq!(apns.source, "environment");
        assert_eq!(apns.bundle_id, "org.example.app");
        assert!(!apns.sandbox);
        assert_eq!(apns.base_url.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(apns.ca_file, Some(PathBuf::from("/etc/p2/ca.pem")));
        assert_eq!(apns.deadline, Duration::from_secs(5));
        assert_eq!(
            apns.credentials,
            ApnsCredentials::Token {
                key_file: "/etc/p2/AuthKey_ABC123DEFG.p8".into(),
                key_id: "ABC123DEFG".into(),
                team_id: "DEF123GHIJ".into(),
            }
        );
        assert_eq!(
            c.apns_error("apns.keyFile", "cannot read it").to_string(),
            "environment: P2_APNS_KEY_FILE: cannot read it"
        );

        // A variable overrides the file's value; later errors name the file's key.
        let path = write("apns-override", JAVA_APNS);
        let (c, _) = Config::load(
            Some(&path),
            &env_of(&[("P2_APNS_BUNDLE_ID", "org.example.other")]),
        )
        .unwrap();
        assert_eq!(c.apns.as_ref().unwrap().bundle_id, "org.example.other");
        assert_eq!(
            c.apns_error("apns.privateKey", "bad").to_string(),
            format!("{}: apns.privateKey: bad", path.display())
        );
    }

    #[test]
    fn apns_refusals_name_key_and_source() {
        let check = |apns: &str, env: &[(&str, &str)], expected: &str| {
            let text = format!(r#"{{"jid":"p2.x","sharedSecret":"s","apns":{apns}}}"#);
            let path = write("apns-refuse", &text);
            let err = Config::load(Some(&path), &env_of(env)).unwrap_err();
            assert_eq!(
                err.to_string(),
                expected.replace("FILE", &path.display().to_string()),
                "{apns}"
            );
        };
        check(
            r#"{"certificate":"c.pem","privateKey":"k.pem"}"#,
            &[],
            "FILE: apns.bundleId: missing (required with apns)",
        );
        check(
            r#"{"bundleId":"org.example app","keyFile":"k.p8","keyId":"K","teamId":"T"}"#,
            &[],
            "FILE: apns.bundleId: \"org.example app\" is not a bundle id (letters, digits, '-' and '.')",
        );
        check(
            r#"{"bundleId":"org.example.app"}"#,
            &[],
            "FILE: apns.certificate: missing: configure a client certificate (apns.certificate \
             and apns.privateKey) or a provider token (apns.keyFile, apns.keyId and apns.teamId)",
        );
        check(
            r#"{"bundleId":"org.example.app","certificate":"c.pem"}"#,
            &[],
            "FILE: apns.privateKey: missing (required with apns.certificate)",
        );
        check(
            r#"{"bundleId":"org.example.app","privateKey":"k.pem"}"#,
            &[],
            "FILE: apns.certificate: missing (required with apns.privateKey)",
        );
        check(
            r#"{"bundleId":"org.example.app","keyFile":"k.p8","teamId":"T"}"#,
            &[],
            "FILE: apns.keyId: missing (required with apns.keyFile)",
        );
        check(
            r#"{"bundleId":"org.example.app","keyId":"K","teamId":""}"#,
            &[],
            "FILE: apns.keyFile: missing (required with apns.keyId)",
        );
        check(
            r#"{"bundleId":"org.example.app","certificate":"c.pem","privateKey":"k.pem","keyFile":"k.p8"}"#,
            &[],
            "FILE: apns.keyFile: cannot be combined with apns.certificate: configure a client \
             certificate (apns.certificate and apns.privateKey) or a provider token \
             (apns.keyFile, apns.keyId and apns.teamId), not both",
        );
        check(
            r#"{"bundleId":"org.example.app","certificate":"c.pem","privateKey":"k.pem"}"#,
            &[("P2_APNS_TEAM_ID", "T")],
            "environment: P2_APNS_TEAM_ID: cannot be combined with apns.certificate: configure \
             a client certificate (apns.certificate and apns.privateKey) or a provider token \
             (apns.keyFile, apns.keyId and apns.teamId), not both",
        );
        check(
            r#"{"bundleId":"org.example.app","certificate":"c.pem","privateKey":"k.pem","baseUrl":"api.push.apple.com"}"#,
            &[],
            "FILE: apns.baseUrl: must be an http(s) URL",
        );
        check(
            r#"{"bundleId":"org.example.app","certificate":"c.pem","privateKey":"k.pem","sandbox":"yes"}"#,
            &[],
            "FILE: apns.sandbox: must be true or false",
        );
        check(
            r#"{"bundleId":"org.example.app","certificate":"c.pem","privateKey":"k.pem"}"#,
            &[("P2_APNS_DEADLINE", "0")],
            "environment: P2_APNS_DEADLINE: must be a whole number from 1 to 3600",
        );
        check(
            r#"{"bundleId":"org.example.app","certificate":["c.pem"],"privateKey":"k.pem"}"#,
            &[],
            "FILE: apns.certificate: must be a string",
        );

        // Only variables: the missing ones are named as variables.
        let err = Config::load(
            None,
            &env_of(&[
                ("P2_JABBER_ID", "p2.x"),
                ("P2_SHARED_SECRET", "s"),
                ("P2_APNS_BUNDLE_ID", "org.example.app"),
                ("P2_APNS_CERTIFICATE", "c.pem"),
            ]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment: P2_APNS_PRIVATE_KEY: missing (required with P2_APNS_CERTIFICATE)"
        );
        let err = Config::load(
            None,
            &env_of(&[
                ("P2_JABBER_ID", "p2.x"),
                ("P2_SHARED_SECRET", "s"),
                ("P2_APNS_SANDBOX", "true"),
            ]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment: P2_APNS_BUNDLE_ID: missing (required with apns)"
        );
    }

    #[test]
    fn unknown_apns_keys_are_named() {
        let path = write(
            "apns-unknown",
            r#"{"jid":"p2.x","sharedSecret":"s","apns":{"bundleId":"a.b","keyFile":"k","keyId":"K","teamId":"T","topic":"a.b"}}"#,
        );
        let (c, warnings) = Config::load(Some(&path), &env_of(&[])).unwrap();
        assert!(c.apns.is_some());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].ends_with("unknown key apns.topic is ignored"));
    }

    #[test]
    fn the_shipped_example_is_refused_until_edited() {
        let example = include_str!("../p2.conf.example");
        let path = write("example", example);
        let file = path.display().to_string();
        let both = format!(
            "{file}: jid: \"p2.replace-me.invalid\" is the example's placeholder, and so is \
             sharedSecret: set jid to the component's domain and sharedSecret to its \
             password, as declared for p2 in your XMPP server (see man p2)"
        );
        let err = Config::load(Some(&path), &env_of(&[])).unwrap_err();
        assert_eq!(err.to_string(), both);
        assert_eq!(
            Config::placeholders(Some(&path), &env_of(&[])).unwrap_err(),
            err
        );

        // Only the secret left.
        let path = write(
            "example-secret",
            &example.replace("p2.replace-me.invalid", "p2.example.net"),
        );
        let err = Config::load(Some(&path), &env_of(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: sharedSecret: is the example's placeholder: set the component's \
                 password, as declared for p2 in your XMPP server (see man p2)",
                path.display()
            )
        );
        // A variable that replaces it is enough; the refusal then goes on to the
        // service account file, which is checked later.
        let env = env_of(&[("P2_SHARED_SECRET", "s3cret")]);
        assert!(Config::placeholders(Some(&path), &env).is_ok());
        let (c, _) = Config::load(Some(&path), &env).unwrap();
        assert_eq!(c.shared_secret, "s3cret");
        assert_eq!(c.database, PathBuf::from("/var/lib/p2/p2.sqlite"));

        // Only the jid left, or set to it by a variable.
        let path = write(
            "example-jid",
            &example.replace(PLACEHOLDER_SECRET, "s3cret"),
        );
        let jid_only = |file: &str, key: &str| {
            format!(
                "{file}: {key}: \"p2.replace-me.invalid\" is the example's placeholder: set \
                 the component's domain, as declared for p2 in your XMPP server (see man p2)"
            )
        };
        let err = Config::load(Some(&path), &env_of(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            jid_only(&path.display().to_string(), "jid")
        );
        let env = env_of(&[
            ("P2_JABBER_ID", "p2.replace-me.invalid"),
            ("P2_SHARED_SECRET", "s"),
        ]);
        let err = Config::load(None, &env).unwrap_err();
        assert_eq!(err.to_string(), jid_only("environment", "P2_JABBER_ID"));

        // Other problems are not placeholders: left to `load`.
        let path = write("example-broken", "{");
        assert!(Config::placeholders(Some(&path), &env_of(&[])).is_ok());
        assert!(
            Config::placeholders(Some(Path::new("/nonexistent/p2.json")), &env_of(&[])).is_ok()
        );
    }

    #[test]
    fn the_java_examples_values_are_accepted() {
        // The Java p2's README example: real setups kept its jid and secret.
        let path = write(
            "java-example",
            r#"{"host":"127.0.0.1","port":5347,"jid":"p2.yourserver.tld",
                "sharedSecret":"verysecure"}"#,
        );
        let (c, warnings) = Config::load(Some(&path), &env_of(&[])).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            (c.jid.as_str(), c.shared_secret.as_str()),
            ("p2.yourserver.tld", "verysecure")
        );
        assert!(Config::placeholders(Some(&path), &env_of(&[])).is_ok());
    }

    #[test]
    fn every_key_of_the_table_is_known_and_read() {
        // Each key of the table is read: a value of the wrong type is refused naming it.
        let base = r#"{"jid":"p2.x","sharedSecret":"s","fcm":{"serviceAccountFile":"a"},
            "apns":{"bundleId":"a.b","keyFile":"k","keyId":"K","teamId":"T"}}"#;
        for key in KEYS {
            assert!(known_key(key.json), "{}", key.json);
            assert!(key.env.starts_with("P2_"), "{}", key.env);
            let mut json: Value = serde_json::from_str(base).unwrap();
            let mut at = &mut json;
            let parts: Vec<&str> = key.json.split('.').collect();
            for part in &parts[..parts.len() - 1] {
                at = &mut at[*part];
            }
            at[parts[parts.len() - 1]] = serde_json::json!([1]);
            let path = write("table", &json.to_string());
            let err = Config::load(Some(&path), &env_of(&[])).unwrap_err();
            assert_eq!(err.key, key.json, "{err}");
        }
        let mut names: Vec<&str> = KEYS.iter().map(|k| k.json).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KEYS.len(), "a key listed twice");
        assert!(!known_key("fcm.colapse"));
        assert!(!known_key("fc"));
        assert!(!known_key("limits.coalesce"));
        assert!(known_key("limits"));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let path = write("debug", JAVA);
        let (c, _) = Config::load(Some(&path), &env_of(&[])).unwrap();
        assert!(!format!("{c:?}").contains("verysecure"));
    }
}
