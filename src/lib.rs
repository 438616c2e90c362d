//! p2: an XEP-0357 push app server. It runs as an XMPP component (XEP-0114), lets
//! devices register their push token through ad-hoc commands, and relays a content-free
//! wake-up to them through FCM HTTP v1 when their XMPP server publishes to their node.
//!
//! See ARCHITECTURE.md for the threads and the invariants of each module.

pub mod admin;
pub mod app;
pub mod config;
pub mod import;
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
use std::time::{Duration, Instant};

use app::{App, Event, Service};
use config::{Config, ConfigError};
use pool::{Pool, Providers};
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
    let Some(fcm) = &config.fcm else {
        return Ok(None);
    };
    let account = ServiceAccount::from_file(&fcm.service_account_file)
        .map_err(|e| Error::Config(config.service_account_error(e.to_string())))?;
    let settings = FcmSettings {
        base_url: fcm.base_url.clone(),
        priority: fcm.priority,
        ttl: fcm.ttl,
        collapse: fcm.collapse,
        deadline: fcm.deadline,
        max_connections: config.workers,
        ..FcmSettings::default()
    };
    FcmClient::new(settings, account)
        .map(Some)
        .map_err(|e| Error::Config(config.service_account_error(e.to_string())))
}

/// Runs the daemon until `stop` is set: opens the database, starts the workers, the
/// core and the writer, and keeps the component connection up. On stop it reads no more
/// stanzas, lets the pushes in flight finish (within the push deadline), sends their
/// replies, closes the stream and returns.
pub fn run(config: &Config, stop: Arc<AtomicBool>) -> Result<(), Error> {
    let notifier = system::Notifier::from_env().map(Arc::new);
    let fcm = fcm_client(config)?;
    let store = Store::open(&config.database).map_err(Error::Store)?;
    let count = store.count().map_err(Error::Store)?;
    let mut services = Vec::new();
    if fcm.is_some() {
        services.push(Service::Fcm);
    }
    log::info!(
        "p2 {} as {} via {}:{}; database {} ({count} registrations); providers: {}; {} workers",
        env!("CARGO_PKG_VERSION"),
        config.jid,
        config.host,
        config.port,
        config.database.display(),
        match &fcm {
            Some(f) => format!("fcm (project {})", f.project_id()),
            None => "none (every publish is answered wait)".into(),
        },
        config.workers
    );
    let drain_time = config
        .fcm
        .as_ref()
        .map_or(config::DEFAULT_FCM_DEADLINE, |f| f.deadline)
        + Duration::from_secs(2);

    let (core_tx, core_rx) = mpsc::channel::<Event>();
    let (writer_tx, writer_rx) = mpsc::channel();
    let capacity = (config.workers * 16).max(1024);
    let pool = Pool::start(config.workers, capacity, Providers { fcm }, core_tx.clone())
        .map_err(Error::Io)?;
    let app = App::new(
        config.jid.clone(),
        store,
        services,
        config.limits,
        Box::new(pool.submitter()),
    );
    let writer = thread::Builder::new()
        .name("writer".into())
        .spawn(move || net::writer_loop(writer_rx))
        .map_err(Error::Io)?;
    let core_writer = writer_tx.clone();
    let core_notifier = notifier.clone();
    let core = thread::Builder::new()
        .name("core".into())
        .spawn(move || core_loop(app, core_rx, core_writer, core_notifier, drain_time))
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
    link.idle = config.keepalive;
    link.dead = config.keepalive / 2;
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

/// How often the core logs its counters.
const STATS_EVERY: Duration = Duration::from_secs(3600);

/// The core thread: batches events into the app, hands replies to the writer, keeps
/// the systemd watchdog fed, and on shutdown waits (at most `drain_time`) for the pushes
/// in flight.
fn core_loop(
    mut app: App,
    rx: mpsc::Receiver<Event>,
    writer: mpsc::Sender<net::WriteMsg>,
    notifier: Option<Arc<system::Notifier>>,
    drain_time: Duration,
) {
    let watchdog = notifier.as_ref().and_then(|n| n.watchdog_interval());
    let tick = watchdog
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(1));
    let mut last_watchdog = Instant::now();
    let mut last_stats = Instant::now();
    let mut drain_until: Option<Instant> = None;
    loop {
        let mut batch = Vec::new();
        match rx.recv_timeout(tick) {
            Ok(first) => batch.push(first),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        while !batch.is_empty() && batch.len() < 512 {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        if drain_until.is_none() && batch.iter().any(|e| matches!(e, Event::Shutdown)) {
            if app.pending() > 0 {
                log::info!("waiting for {} pushes in flight", app.pending());
            }
            drain_until = Some(Instant::now() + drain_time);
        }
        if !batch.is_empty() {
            let replies = app.handle_batch(batch);
            if !replies.is_empty() {
                let _ = writer.send(net::WriteMsg::Batch(replies));
            }
        }
        if let (Some(n), Some(every)) = (&notifier, watchdog) {
            if last_watchdog.elapsed() >= every {
                n.notify("WATCHDOG=1");
                last_watchdog = Instant::now();
            }
        }
        if last_stats.elapsed() >= STATS_EVERY {
            last_stats = Instant::now();
            let c = app.take_counters();
            log::info!(
                "last hour: {} pushes delivered, {} coalesced, {} dead tokens, {} failed; {} new registrations, {} renewed, {} removed; {} refused by limits; {} in flight",
                c.delivered, c.coalesced, c.dead, c.failed, c.registered, c.renewed, c.unregistered, c.limited, app.pending()
            );
        }
        if let Some(until) = drain_until {
            if app.pending() == 0 {
                break;
            }
            if Instant::now() >= until {
                log::warn!(
                    "{} pushes still in flight at shutdown; their replies are lost",
                    app.pending()
                );
                break;
            }
        }
    }
}
