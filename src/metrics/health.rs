//! The listener's view of the daemon: whether it is healthy, and the figures it reads
//! from the database itself.
//!
//! Healthy means: the component connection is up (an atomic the connection thread
//! sets), the core's last commit did not fail (or failed more than
//! [`COMMIT_FAILURE_WINDOW`] ago, or a later one succeeded), and a probe on the
//! listener's own database connection can take the write lock. The core's commits are
//! the real evidence but go stale when nothing is written; the probe covers the quiet
//! times (a read-only file or file system, a lock held by another process) without
//! writing anything, at most every [`PROBE_EVERY`] (every [`REPROBE_FAILED_EVERY`]
//! while it fails). It never touches the core's thread or connection.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Figures, Metrics};
use crate::store::Store;

/// How long a failed commit of the core keeps `/health` at 503 when no later commit
/// succeeds.
pub const COMMIT_FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// How long a successful write probe is trusted.
pub const PROBE_EVERY: Duration = Duration::from_secs(10);
/// How long a failed write probe is trusted.
pub const REPROBE_FAILED_EVERY: Duration = Duration::from_secs(1);
/// How long registration counts are reused between scrapes (bounds the database work
/// a client can cause).
pub const COUNT_EVERY: Duration = Duration::from_secs(5);

/// What the listener knows about the daemon beyond the atomics.
pub struct Health {
    /// `host:port` of the XMPP server, for the reason text.
    server: String,
    /// The database file.
    database: PathBuf,
    /// The process's start, Unix seconds.
    start_time: u64,
    /// How long the probe waits for another connection's write lock.
    busy_timeout: Duration,
    db: Mutex<Db>,
}

/// The listener's own database connection and what it last read.
#[derive(Default)]
struct Db {
    store: Option<Store>,
    counts: Option<(Instant, Vec<(String, u64)>)>,
    probe: Option<(Instant, Result<(), String>)>,
}

impl Health {
    /// For a daemon connecting to `server` (`host:port`) with its database at `database`.
    /// Opens nothing yet.
    pub fn new(server: String, database: PathBuf) -> Health {
        Health {
            server,
            database,
            start_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            busy_timeout: crate::store::BUSY_TIMEOUT,
            db: Mutex::new(Db::default()),
        }
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Ok` when healthy, else the one-line reason.
    pub fn check(&self, metrics: &Metrics) -> Result<(), String> {
        self.check_at(metrics, Instant::now())
    }

    /// The same at `now`.
    fn check_at(&self, metrics: &Metrics, now: Instant) -> Result<(), String> {
        if !metrics.is_connected() {
            return Err(format!("not connected to {}", self.server));
        }
        if let Some(e) = metrics.commit_failure(COMMIT_FAILURE_WINDOW) {
            return Err(format!("database not writable: {}", one_line(&e)));
        }
        self.probe(now)
            .map_err(|e| format!("database not writable: {}", one_line(&e)))
    }

    /// The write probe's verdict at `now`, fresh or remembered.
    fn probe(&self, now: Instant) -> Result<(), String> {
        let mut db = self.db();
        if let Some((at, verdict)) = &db.probe {
            let trusted = if verdict.is_ok() {
                PROBE_EVERY
            } else {
                REPROBE_FAILED_EVERY
            };
            if now.saturating_duration_since(*at) < trusted {
                return verdict.clone();
            }
        }
        let verdict = self.open(&mut db).and_then(|s| {
            s.probe_write().map_err(|e| {
                log::debug!("metrics: database write probe failed: {e}");
                e.to_string()
            })
        });
        db.probe = Some((now, verdict.clone()));
        verdict
    }

    /// The figures for a rendering: registrations counted at most every
    /// [`COUNT_EVERY`].
    pub fn figures(&self) -> Figures {
        let mut db = self.db();
        let fresh = db
            .counts
            .as_ref()
            .filter(|(at, _)| at.elapsed() < COUNT_EVERY)
            .map(|(_, c)| c.clone());
        let registrations = fresh.or_else(|| {
            let counted = self
                .open(&mut db)
                .and_then(|s| s.count_per_service().map_err(|e| e.to_string()));
            match counted {
                Ok(c) => {
                    db.counts = Some((Instant::now(), c.clone()));
                    Some(c)
                }
                Err(e) => {
                    log::debug!("metrics: cannot count registrations: {e}");
                    None
                }
            }
        });
        Figures {
            registrations,
            start_time: self.start_time,
        }
    }

    /// The listener's database connection, opened on first use.
    fn open<'a>(&self, db: &'a mut Db) -> Result<&'a Store, String> {
        if db.store.is_none() {
            let mut store = Store::open(&self.database).map_err(|e| e.to_string())?;
            store
                .set_busy_timeout(self.busy_timeout)
                .map_err(|e| e.to_string())?;
            db.store = Some(store);
        }
        db.store.as_ref().ok_or_else(|| "no database".to_owned())
    }
}

/// `text` with line breaks replaced: a reason is one line.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::TempDir;

    #[test]
    fn a_database_locked_by_another_process_is_seen_within_the_probe_interval() {
        let dir = TempDir::new("health");
        drop(Store::open(&dir.db()).unwrap());
        let mut health = Health::new("127.0.0.1:5347".into(), dir.db());
        health.busy_timeout = Duration::from_millis(20);
        let metrics = Metrics::new();
        let start = Instant::now();
        assert_eq!(
            health.check_at(&metrics, start),
            Err("not connected to 127.0.0.1:5347".into())
        );
        metrics.connected();
        assert_eq!(health.check_at(&metrics, start), Ok(()));

        // Another process (as `p2 import` would) takes the write lock: the good verdict
        // is trusted for PROBE_EVERY, then the probe sees the lock.
        let other = rusqlite::Connection::open(dir.db()).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let almost = start + PROBE_EVERY - Duration::from_millis(1);
        assert_eq!(health.check_at(&metrics, almost), Ok(()));
        let locked = start + PROBE_EVERY;
        let verdict = health.check_at(&metrics, locked).unwrap_err();
        assert_eq!(verdict, "database not writable: sqlite: database is locked");
        // A failed verdict is trusted for REPROBE_FAILED_EVERY only.
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(health.check_at(&metrics, locked), Err(verdict));
        assert_eq!(
            health.check_at(&metrics, locked + REPROBE_FAILED_EVERY),
            Ok(())
        );
        // The probe wrote nothing.
        let n: i64 = other
            .query_row("SELECT count(*) FROM registration", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        // The connection flag comes first.
        metrics.disconnected();
        assert_eq!(
            health.check_at(&metrics, locked + REPROBE_FAILED_EVERY),
            Err("not connected to 127.0.0.1:5347".into())
        );
    }
}
