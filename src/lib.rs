//! p2: an XEP-0357 push app server. It runs as an XMPP component (XEP-0114), lets
//! devices register their push token through ad-hoc commands, and relays a content-free
//! wake-up to them through FCM HTTP v1 (or, with the cargo feature `apns`, Apple's APNs)
//! when their XMPP server publishes to their node.
//!
//! See ARCHITECTURE.md for the threads and the invariants of each module.

pub mod admin;
pub mod app;
pub mod civil;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod import;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod push;
pub mod store;
pub mod system;
pub mod xmpp;

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use app::{App, Event, Now, Provider, Service, Settings};
use config::{ApnsConfig, ApnsCredentials, Config, ConfigError};
use pool::{Pool, Providers};
#[cfg(feature = "apns")]
use push::apns::{ApnsAuth, ApnsClient, ApnsError, ApnsSettings};
use push::fcm::{FcmClient, FcmSettings};
use push::google_auth::ServiceAccount;
use store::{Store, StoreError};

/// Why the daemon cannot run.
#[derive(Debug)]
pub enum Error {
    /// The configuration is invalid (exit code 78).
    Config(ConfigError),
    /// The database cannot be opened or migrated.
    Store(StoreError),
    /// A thread could not be started.
    Io(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "{e}"),
            Error::Store(e) => write!(f, "database: {e}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Store(e) => Some(e),
            Error::Io(e) => Some(e),
        }
    }
}

/// The FCM client the configuration asks for, or `None`.
pub fn fcm_client(config: &Config) -> Result<Option<FcmClient>, Error> {
    Ok(fcm_client_and_fingerprint(config)?.map(|(client, _)| client))
}

/// A short hash naming a set of credentials: the first 16 hex digits of the SHA-256 of
/// `parts`. It tells whether the credentials changed without revealing them.
fn fingerprint(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        ctx.update(part);
    }
    ctx.finish().as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The fingerprint of FCM credentials: the project, the service account and its key.
pub fn fcm_fingerprint(account: &ServiceAccount) -> String {
    fingerprint(&[
        b"fcm",
        account.project_id.as_bytes(),
        account.client_email.as_bytes(),
        account.private_key_id.as_bytes(),
    ])
}

/// The fingerprint of APNs credentials: the endpoint (production, sandbox or another
/// URL), the bundle id, and the key id and team id of a provider token or the contents
/// of the client certificate.
pub fn apns_fingerprint(apns: &ApnsConfig) -> String {
    let endpoint = match (&apns.base_url, apns.sandbox) {
        (Some(url), _) => url.clone(),
        (None, false) => "production".to_owned(),
        (None, true) => "sandbox".to_owned(),
    };
    match &apns.credentials {
        ApnsCredentials::Token {
            key_id, team_id, ..
        } => fingerprint(&[
            b"apns-token",
            endpoint.as_bytes(),
            apns.bundle_id.as_bytes(),
            key_id.as_bytes(),
            team_id.as_bytes(),
        ]),
        ApnsCredentials::Certificate { certificate, .. } => {
            let cert = std::fs::read(certificate)
                .unwrap_or_else(|_| certificate.as_os_str().as_encoded_bytes().to_vec());
            fingerprint(&[
                b"apns-certificate",
                endpoint.as_bytes(),
                apns.bundle_id.as_bytes(),
                &cert,
            ])
        }
    }
}

/// The FCM client the configuration asks for with the fingerprint of its credentials.
pub(crate) fn fcm_client_and_fingerprint(
    config: &Config,
) -> Result<Option<(FcmClient, String)>, Error> {
    let Some(fcm) = &config.fcm else {
        return Ok(None);
    };
    let account = ServiceAccount::from_file(&fcm.service_account_file)
        .map_err(|e| Error::Config(config.service_account_error(e.to_string())))?;
    let fingerprint = fcm_fingerprint(&account);
    let settings = FcmSettings {
        base_url: fcm.base_url.clone(),
        priority: fcm.priority,
        ttl: fcm.ttl,
        collapse: fcm.collapse,
        deadline: fcm.deadline,
        // One kept-alive connection per worker thread, the reserve's included.
        max_connections: pool::Shares::of(config.workers, 1).threads,
        ..FcmSettings::default()
    };
    FcmClient::new(settings, account)
        .map(|client| Some((client, fingerprint)))
        .map_err(|e| Error::Config(config.service_account_error(e.to_string())))
}

/// The APNs client the configuration asks for, or `None`. Loads the keys and
/// certificates; an unusable one is a configuration error naming its key.
#[cfg(feature = "apns")]
pub fn apns_client(config: &Config) -> Result<Option<ApnsClient>, Error> {
    let Some(apns) = &config.apns else {
        return Ok(None);
    };
    let auth: ApnsAuth = apns.credentials.clone();
    let settings = ApnsSettings {
        base_url: apns_endpoint(apns),
        extra_roots: apns.ca_file.iter().cloned().collect(),
        deadline: apns.deadline,
        ..ApnsSettings::new(apns.bundle_id.clone(), auth)
    };
    ApnsClient::new(settings)
        .map(Some)
        .map_err(|e| Error::Config(apns_config_error(config, apns, e)))
}

/// Without the cargo feature `apns`: `None`, or a configuration error when the
/// configuration asks for APNs.
#[cfg(not(feature = "apns"))]
pub fn apns_client(config: &Config) -> Result<Option<std::convert::Infallible>, Error> {
    match &config.apns {
        None => Ok(None),
        Some(_) => Err(Error::Config(config.apns_error(
            "apns",
            "this build of p2 lacks APNs (built without the `apns` cargo feature); \
             rebuild it with `cargo build --release --features apns`, or remove the \
             APNs settings to run with FCM only",
        ))),
    }
}

/// The APNs endpoint: `apns.baseUrl`, or Apple's production or sandbox host.
#[cfg(feature = "apns")]
fn apns_endpoint(apns: &ApnsConfig) -> String {
    match (&apns.base_url, apns.sandbox) {
        (Some(url), _) => url.clone(),
        (None, false) => push::apns::PRODUCTION_URL.to_owned(),
        (None, true) => push::apns::SANDBOX_URL.to_owned(),
    }
}

/// The configuration error for a refused APNs client, naming the key whose value is at
/// fault.
#[cfg(feature = "apns")]
fn apns_config_error(config: &Config, apns: &ApnsConfig, e: ApnsError) -> ConfigError {
    let file_key = |path: &std::path::Path| {
        let mut files = vec![("apns.caFile", apns.ca_file.as_deref())];
        match &apns.credentials {
            ApnsCredentials::Certificate {
                certificate,
                private_key,
            } => {
                files.push(("apns.certificate", Some(certificate)));
                files.push(("apns.privateKey", Some(private_key)));
            }
            ApnsCredentials::Token { key_file, .. } => files.push(("apns.keyFile", Some(key_file))),
        }
        files
            .into_iter()
            .find(|(_, p)| *p == Some(path))
            .map_or("apns", |(key, _)| key)
    };
    match &e {
        ApnsError::Read { path, .. }
        | ApnsError::Key { path, .. }
        | ApnsError::Certificate { path, .. } => config.apns_error(file_key(path), e.to_string()),
        ApnsError::Setting { name, reason } => {
            let key = match *name {
                "topic" => "apns.bundleId",
                "base_url" => "apns.baseUrl",
                "key_id" => "apns.keyId",
                "team_id" => "apns.teamId",
                _ => "apns",
            };
            config.apns_error(key, reason.clone())
        }
        _ => config.apns_error("apns", e.to_string()),
    }
}

/// A description of the APNs settings for the start-up summary and `check-config`:
/// endpoint, topic and authentication, without secrets.
pub fn describe_apns(apns: &ApnsConfig) -> String {
    // Apple's hosts, spelled out here too: this runs in builds without the client.
    let endpoint = match (&apns.base_url, apns.sandbox) {
        (Some(url), _) => url.as_str(),
        (None, false) => "https://api.push.apple.com (production)",
        (None, true) => "https://api.sandbox.push.apple.com (sandbox)",
    };
    let auth = match &apns.credentials {
        ApnsCredentials::Certificate {
            certificate,
            private_key,
        } => format!(
            "client certificate {} with key {}",
            certificate.display(),
            private_key.display()
        ),
        ApnsCredentials::Token {
            key_file,
            key_id,
            team_id,
        } => format!(
            "provider token from {} (key id {key_id}, team id {team_id})",
            key_file.display()
        ),
    };
    format!("topic {}, endpoint {endpoint}, {auth}", apns.bundle_id)
}

/// Fetches FCM's access token on a short-lived thread of its own, so that the first push
/// after a start does not wait for Google's token endpoint, and a key it refuses is
/// reported at once. Pushes that come meanwhile wait for this fetch (one at a time);
/// a failure is only logged: pushes ask again.
fn warm_up(client: FcmClient) {
    let started = thread::Builder::new()
        .name("fcm-token".into())
        .spawn(move || match client.warm_up(Duration::from_secs(30)) {
            Ok(()) => log::info!("fcm: access token fetched"),
            Err(e) => log::warn!("fcm: no access token at start ({e}); pushes will ask again"),
        });
    if let Err(e) = started {
        log::warn!("fcm: cannot start the token fetch: {e}");
    }
}

/// Runs the daemon until `stop` is set: opens the database, starts the workers, the
/// core and the writer, and keeps the component connection up. On stop it reads no more
/// stanzas, lets the pushes in flight finish (within the push deadline), sends their
/// replies, closes the stream and returns.
pub fn run(config: &Config, stop: Arc<AtomicBool>) -> Result<(), Error> {
    let notifier = system::Notifier::from_env().map(Arc::new);
    let fcm = fcm_client_and_fingerprint(config)?;
    let apns = apns_client(config)?;
    let store = Store::open(&config.database).map_err(Error::Store)?;
    let count = store.count().map_err(Error::Store)?;
    let mut services = Vec::new();
    let mut providers = Vec::new();
    if let Some((f, fp)) = &fcm {
        services.push(Provider {
            service: Service::Fcm,
            fingerprint: fp.clone(),
        });
        providers.push(format!(
            "fcm (project {}, credentials {fp})",
            f.project_id()
        ));
    }
    if let (Some(_), Some(a)) = (&apns, &config.apns) {
        let fp = apns_fingerprint(a);
        providers.push(format!("apns ({}, credentials {fp})", describe_apns(a)));
        services.push(Provider {
            service: Service::Apns,
            fingerprint: fp,
        });
    }
    let fcm = fcm.map(|(client, _)| client);
    if let Some(client) = &fcm {
        warm_up(client.clone());
    }
    log::info!(
        "p2 {} as {} via {}:{}; database {} ({count} registrations); providers: {}; {} workers per domain, {} in all",
        env!("CARGO_PKG_VERSION"),
        config.jid,
        config.host,
        config.port,
        config.database.display(),
        if providers.is_empty() {
            "none (every publish is answered wait)".into()
        } else {
            providers.join(", ")
        },
        config.workers,
        pool::Shares::of(config.workers, 1).threads
    );
    let _metrics = metrics::serve(config).map_err(Error::Io)?;
    let push_deadline = [
        config.fcm.as_ref().map(|f| f.deadline),
        config.apns.as_ref().map(|a| a.deadline),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(config::DEFAULT_FCM_DEADLINE);
    let drain_time = push_deadline + Duration::from_secs(2);

    // Bounded, so that a server that stops reading cannot grow memory: the writer gives
    // up on it within net::write_timeout, and no thread waits on one that waits on it
    // (ARCHITECTURE.md, "Bounded channels").
    let (core_tx, core_rx) = mpsc::sync_channel::<Event>(CORE_QUEUE);
    let (writer_tx, writer_rx) = mpsc::sync_channel(WRITER_QUEUE);
    let capacity = (config.workers * 16).max(1024);
    let providers = Providers {
        fcm,
        #[cfg(feature = "apns")]
        apns,
    };
    let pool =
        Pool::start(config.workers, capacity, providers, core_tx.clone()).map_err(Error::Io)?;
    let settings = Settings {
        jid: config.jid.clone(),
        providers: services,
        limits: config.limits,
    };
    let app = App::new(
        settings,
        store,
        Box::new(pool.submitter()),
        Now::from_clock(),
    )
    .map_err(Error::Store)?;
    let write_timeout = net::write_timeout(config.keepalive);
    let writer = thread::Builder::new()
        .name("writer".into())
        .spawn(move || net::writer_loop(writer_rx, write_timeout))
        .map_err(Error::Io)?;
    let core_writer = writer_tx.clone();
    let core_notifier = notifier.clone();
    let core = thread::Builder::new()
        .name("core".into())
        .spawn(move || app::run::run(app, core_rx, core_writer, core_notifier, drain_time))
        .map_err(Error::Io)?;
    if let Some(n) = &notifier {
        n.notify(&format!(
            "READY=1\nSTATUS=connecting to {}:{}",
            config.host, config.port
        ));
    }

    let mut link = net::Link::new(
        config.host.clone(),
        config.port,
        config.jid.clone(),
        config.shared_secret.clone(),
    );
    link.machine.idle = config.keepalive;
    link.machine.dead = config.keepalive / 2;
    link.machine.max_stanza_bytes = config.limits.stanza_bytes;
    link.write_timeout = write_timeout;
    link.notifier = notifier.clone();
    net::run(&link, &core_tx, &writer_tx, &stop);

    log::info!("stopping");
    if let Some(n) = &notifier {
        n.notify("STOPPING=1");
    }
    let _ = core_tx.send(Event::Shutdown);
    let _ = core.join();
    let _ = writer_tx.send(net::WriteMsg::Close);
    drop(writer_tx);
    let _ = writer.join();
    drop(core_tx);
    pool.join();
    log::info!("stopped");
    Ok(())
}

/// Messages waiting for the core: reads of the connection thread (each one read of the
/// socket, at most 16 KiB) and outcomes of the workers.
const CORE_QUEUE: usize = 64;

/// Messages waiting for the writer: the replies of one core batch each, the keepalive
/// ping, connection changes.
const WRITER_QUEUE: usize = 16;

#[cfg(all(test, feature = "apns"))]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn apns_endpoint_and_description_agree_with_the_client() {
        let mut apns = ApnsConfig {
            source: "p2.json".into(),
            bundle_id: "org.example.app".into(),
            sandbox: false,
            base_url: None,
            credentials: ApnsCredentials::Token {
                key_file: PathBuf::from("AuthKey.p8"),
                key_id: "ABC123DEFG".into(),
                team_id: "DEF123GHIJ".into(),
            },
            ca_file: None,
            deadline: config::DEFAULT_APNS_DEADLINE,
        };
        assert_eq!(apns_endpoint(&apns), push::apns::PRODUCTION_URL);
        assert_eq!(
            describe_apns(&apns),
            format!(
                "topic org.example.app, endpoint {} (production), provider token from \
                 AuthKey.p8 (key id ABC123DEFG, team id DEF123GHIJ)",
                push::apns::PRODUCTION_URL
            )
        );
        apns.sandbox = true;
        assert_eq!(apns_endpoint(&apns), push::apns::SANDBOX_URL);
        assert!(describe_apns(&apns)
            .contains(&format!("endpoint {} (sandbox)", push::apns::SANDBOX_URL)));
        apns.base_url = Some("http://127.0.0.1:9".into());
        assert_eq!(apns_endpoint(&apns), "http://127.0.0.1:9");
        assert!(describe_apns(&apns).contains("endpoint http://127.0.0.1:9,"));
    }
}
