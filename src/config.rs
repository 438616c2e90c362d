//! The Java p2's JSON config file and `P2_*` environment variables, turned once into a
//! validated [`Config`].
//!
//! Precedence: a variable that is set (non-empty) overrides the file's value; without a
//! file, the variables alone configure p2. Every refusal names the key, where it came
//! from, and what is wrong; `main` exits with 78 (`EX_CONFIG`) on it.

use std::fmt;
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
pub const DEFAULT_WORKERS: usize = 32;
/// Default FCM base URL.
pub const DEFAULT_FCM_BASE_URL: &str = "https://fcm.googleapis.com";
/// Default time for one push, retries included, before answering `wait`.
pub const DEFAULT_FCM_DEADLINE: Duration = Duration::from_secs(15);

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
    /// `workers` / `P2_WORKERS`: push worker threads. Default 32.
    pub workers: usize,
    /// `fcm`: the FCM provider, if configured.
    pub fcm: Option<FcmConfig>,
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
            .field("fcm", &self.fcm)
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

/// One setting: its JSON path and its variable.
struct Key {
    json: &'static str,
    env: &'static str,
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

const TOP_KEYS: &[&str] = &[
    "host",
    "port",
    "jid",
    "sharedSecret",
    "debug",
    "database",
    "workers",
    "fcm",
    "apns",
];
const LEGACY_KEYS: &[&str] = &["dbUrl", "dbUsername", "dbPassword"];
const LEGACY_VARS: &[&str] = &[
    "P2_DATABASE_URL",
    "P2_DATABASE_USERNAME",
    "P2_DATABASE_PASSWORD",
];
const FCM_KEYS: &[&str] = &[
    "serviceAccountFile",
    "collapse",
    "baseUrl",
    "priority",
    "ttl",
    "deadline",
];
const APNS_VARS: &[&str] = &[
    "P2_APNS_CERTIFICATE",
    "P2_APNS_PRIVATE_KEY",
    "P2_APNS_BUNDLE_ID",
    "P2_APNS_SANDBOX",
];

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
                let shown = path.display().to_string();
                let err = |problem: String| ConfigError {
                    source: shown.clone(),
                    key: String::new(),
                    problem,
                };
                let text =
                    std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
                let map = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(map)) => map,
                    Ok(_) => return Err(err("must hold a JSON object".into())),
                    Err(e) => return Err(err(format!("invalid JSON: {e}"))),
                };
                for key in map.keys() {
                    if LEGACY_KEYS.contains(&key.as_str()) {
                        warnings.push(format!(
                            "{shown}: {key} is ignored: p2 keeps its registrations in SQLite \
                             (see the `database` key)"
                        ));
                    } else if !TOP_KEYS.contains(&key.as_str()) {
                        warnings.push(format!("{shown}: unknown key {key} is ignored"));
                    }
                }
                if let Some(Value::Object(fcm)) = map.get("fcm") {
                    for key in fcm.keys().filter(|k| !FCM_KEYS.contains(&k.as_str())) {
                        warnings.push(format!("{shown}: unknown key fcm.{key} is ignored"));
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

        if r.json("apns").is_some()
            || APNS_VARS
                .iter()
                .any(|v| env(v).is_some_and(|v| !v.is_empty()))
        {
            let from_env = r.json("apns").is_none();
            return Err(ConfigError {
                source: if from_env {
                    "environment".into()
                } else {
                    r.source()
                },
                key: if from_env {
                    "P2_APNS_*".into()
                } else {
                    "apns".into()
                },
                problem: "APNs is not supported by this build of p2; remove it to run \
                          with FCM only"
                    .into(),
            });
        }

        let jid = r.required(&JID)?;
        match Jid::parse(&jid) {
            Some(j) if j.local.is_none() && j.resource.is_none() => {}
            _ => {
                let from_env = env(JID.env).is_some_and(|v| !v.is_empty());
                return Err(r.error(&JID, from_env, format!("{jid:?} is not a domain JID")));
            }
        }
        let fcm_present = r.json("fcm").is_some()
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
            let from_env = env(FCM_ACCOUNT.env).is_some_and(|v| !v.is_empty());
            let account = r
                .string(&FCM_ACCOUNT)?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    r.error(
                        &FCM_ACCOUNT,
                        r.file.is_none(),
                        "missing (required with fcm)",
                    )
                })?;
            let _ = from_env;
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

        let config = Config {
            source: r.source(),
            host: r.string(&HOST)?.unwrap_or_else(|| DEFAULT_HOST.into()),
            port: r
                .integer(&PORT, 1, 65535)?
                .map_or(DEFAULT_PORT, |p| p as u16),
            jid,
            shared_secret: r.required(&SECRET)?,
            debug: r.boolean(&DEBUG)?.unwrap_or(false),
            database: r
                .string(&DATABASE)?
                .map_or_else(|| PathBuf::from(DEFAULT_DATABASE), PathBuf::from),
            workers: r
                .integer(&WORKERS, 1, 4096)?
                .map_or(DEFAULT_WORKERS, |n| n as usize),
            fcm,
        };
        Ok((config, warnings))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("p2-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(&path, text).unwrap();
        path
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
            r#"{"jid":"p2.x","sharedSecret":"s","apns":{"bundleId":"x"}}"#,
            &[],
            "FILE: apns: APNs is not supported by this build of p2; remove it to run with FCM only",
        );
        check(
            r#"{"jid": "#,
            &[],
            "FILE: invalid JSON: EOF while parsing a value at line 1 column 8",
        );
        check("[]", &[], "FILE: must hold a JSON object");
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
    fn debug_output_hides_the_secret() {
        let path = write("debug", JAVA);
        let (c, _) = Config::load(Some(&path), &env_of(&[])).unwrap();
        assert!(!format!("{c:?}").contains("verysecure"));
    }
}
