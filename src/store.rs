//! The registrations in SQLite: the only module with SQL; schema, migrations, queries.
//!
//! Invariants: one row per (service, device, channel); (domain, node) unique; the
//! account JID is never stored (only its domain and the salted device hash); the
//! per-domain count (`domain_count`) is kept by triggers, so every writer (the daemon,
//! `p2 import`, `p2 prune`) keeps it exact. Every write is durable when its call (or the
//! enclosing [`Store::commit`]) returns: WAL with `synchronous=FULL`. The database file
//! is created mode 0600, and SQLite gives its `-wal` and `-shm` files the same mode.
//! The calls the core makes take the time from their caller: nothing here that the core
//! calls reads the clock.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

/// How long a write waits for another process holding the write lock (an admin
/// command) before it fails: the core pays it at most once per batch.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Migrations, one per version step: `MIGRATIONS[n]` takes version n to n + 1.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE registration (
        service TEXT NOT NULL,
        device  TEXT NOT NULL,
        channel TEXT NOT NULL DEFAULT '',
        domain  TEXT NOT NULL,
        token   TEXT NOT NULL,
        node    TEXT NOT NULL,
        secret  TEXT NOT NULL,
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        PRIMARY KEY (service, device, channel)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX registration_domain_node ON registration (domain, node);
",
    "
    ALTER TABLE registration ADD COLUMN account TEXT;
    CREATE INDEX registration_account ON registration (account);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
",
    // `used`: Unix seconds of the last delivered push (written at most once a day per
    // row), NULL before the first; expiry looks at it and at `updated`.
    // `domain_count`: registrations per account domain, kept by triggers, for the
    // per-domain cap.
    "
    ALTER TABLE registration ADD COLUMN used INTEGER;
    CREATE TABLE domain_count (
        domain TEXT PRIMARY KEY,
        n      INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO domain_count (domain, n)
        SELECT domain, count(*) FROM registration GROUP BY domain;
    CREATE TRIGGER registration_counted AFTER INSERT ON registration BEGIN
        INSERT INTO domain_count (domain, n) VALUES (new.domain, 1)
            ON CONFLICT (domain) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER registration_uncounted AFTER DELETE ON registration BEGIN
        UPDATE domain_count SET n = n - 1 WHERE domain = old.domain;
        DELETE FROM domain_count WHERE domain = old.domain AND n <= 0;
    END;
    CREATE TRIGGER registration_moved AFTER UPDATE OF domain ON registration
        WHEN old.domain IS NOT new.domain BEGIN
        UPDATE domain_count SET n = n - 1 WHERE domain = old.domain;
        DELETE FROM domain_count WHERE domain = old.domain AND n <= 0;
        INSERT INTO domain_count (domain, n) VALUES (new.domain, 1)
            ON CONFLICT (domain) DO UPDATE SET n = n + 1;
    END;
",
];

/// A stored registration.
#[derive(Clone, PartialEq, Eq)]
pub struct Registration {
    /// `fcm` or `apns`.
    pub service: String,
    /// SHA-1 hex of `bare JID \0 device id`.
    pub device: String,
    /// `""` or SHA-1 hex of `muc JID \0 device id`.
    pub channel: String,
    /// The domain of the account.
    pub domain: String,
    /// The provider token. Secret.
    pub token: String,
    /// The pubsub node the user's server publishes to.
    pub node: String,
    /// The publish secret. Secret.
    pub secret: String,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("service", &self.service)
            .field("device", &self.device)
            .field("channel", &self.channel)
            .field("domain", &self.domain)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The columns [`Registration::from_row`] reads, in its order.
macro_rules! registration_columns {
    () => {
        "service, device, channel, domain, token, node, secret"
    };
}

impl Registration {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Registration> {
        Ok(Registration {
            service: r.get(0)?,
            device: r.get(1)?,
            channel: r.get(2)?,
            domain: r.get(3)?,
            token: r.get(4)?,
            node: r.get(5)?,
            secret: r.get(6)?,
        })
    }
}

/// A registration found for a publish, with when it was last pushed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The row.
    pub registration: Registration,
    /// Unix seconds of the last delivered push recorded ([`Store::mark_used`]), if any.
    pub used: Option<i64>,
}

/// A registration as the core asks for it.
#[derive(Debug, Clone, Copy)]
pub struct NewRegistration<'a> {
    /// `fcm` or `apns`.
    pub service: &'a str,
    /// The device hash.
    pub device: &'a str,
    /// The channel hash or `""`.
    pub channel: &'a str,
    /// The account's domain.
    pub domain: &'a str,
    /// The provider token.
    pub token: &'a str,
    /// The salted account hash ([`Store::account_key`]), for the per-account cap.
    pub account: Option<&'a str>,
}

/// The limits a registration is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Registrations per account: a new one beyond evicts the least recently refreshed
    /// of that account (at least 1).
    pub per_account: usize,
    /// Registrations per account domain: a new one beyond is refused. 0: no cap.
    pub per_domain: u64,
    /// Whether a new row may be created at all (the core's hourly rate says no when
    /// the domain is over its budget); a renewal always passes.
    pub may_create: bool,
}

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new row, with a fresh node and secret.
    New {
        /// The node.
        node: String,
        /// The secret.
        secret: String,
        /// Older registrations of the same account deleted to respect the cap.
        evicted: usize,
    },
    /// The existing row, refreshed: same node and secret, the new token.
    Renewed {
        /// The node (kept).
        node: String,
        /// The secret (kept).
        secret: String,
        /// Whether the token differs from the one stored before.
        token_changed: bool,
    },
    /// No row existed and none was created.
    Refused(Refusal),
}

/// Why no new row was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// [`Caps::may_create`] was false.
    NotNow,
    /// The domain holds [`Caps::per_domain`] registrations already.
    DomainFull,
}

/// The primary key of a row, where an expiry pass goes on from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowKey {
    service: String,
    device: String,
    channel: String,
}

/// What one chunk of an expiry pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Rows deleted.
    pub deleted: u64,
    /// Where the next chunk starts; `None` when the pass reached the end of the table.
    pub next: Option<RowKey>,
}

/// A storage failure.
#[derive(Debug)]
pub enum StoreError {
    /// SQLite refused (disk full, read-only, corrupt, locked…).
    Sqlite(rusqlite::Error),
    /// The database was written by a newer p2.
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
    },
    /// The OS random source failed.
    Random(getrandom::Error),
    /// Every fresh node drawn for a new registration was taken in its domain.
    NodeCollision,
    /// The database file could not be created.
    Create(PathBuf, std::io::Error),
}

impl StoreError {
    /// Whether another connection held the lock for longer than [`BUSY_TIMEOUT`].
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Sqlite(e) => write!(f, "sqlite: {e}"),
            StoreError::TooNew { path, found } => write!(
                f,
                "{} has schema version {found}, newer than this p2 knows ({SCHEMA_VERSION})",
                path.display()
            ),
            StoreError::Random(e) => write!(f, "random source: {e}"),
            StoreError::NodeCollision => f.write_str("no free node found for a new registration"),
            StoreError::Create(path, e) => write!(f, "cannot create {}: {e}", path.display()),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Sqlite(e) => Some(e),
            StoreError::Create(_, e) => Some(e),
            StoreError::Random(_) | StoreError::TooNew { .. } | StoreError::NodeCollision => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

/// The database connection, owned by the core thread.
pub struct Store {
    conn: Connection,
    /// Random, per database: salts the account hashes so they cannot be reversed by
    /// hashing candidate JIDs.
    salt: String,
    /// Tests: draw every node as this one, to provoke collisions.
    #[cfg(test)]
    fixed_node: Option<String>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `n` random bytes from the OS CSPRNG, base64-encoded with `engine`.
fn random_b64(n: usize, engine: &base64::engine::GeneralPurpose) -> Result<String, StoreError> {
    let mut buf = [0u8; 18];
    let buf = &mut buf[..n];
    getrandom::fill(buf).map_err(StoreError::Random)?;
    Ok(engine.encode(buf))
}

/// Creates the database file with mode 0600 if it does not exist, whatever the umask
/// (SQLite creates the `-wal` and `-shm` files with the database file's mode).
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.as_os_str() == ":memory:" || path.as_os_str().is_empty() {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        // The mode given to open(2) is masked by the umask; 0600 can only lose bits
        // that way, but set it explicitly all the same.
        Ok(file) => file
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::Create(path.to_owned(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Create(path.to_owned(), e)),
    }
}

impl Store {
    /// Opens (creating if needed, mode 0600) the database at `path`, sets WAL and
    /// `synchronous=FULL`, and migrates the schema to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        create_private(path)?;
        let conn = Connection::open(path)?;
        // Another process holding the write lock (an admin command) delays a write at
        // most this long before it fails and its request is answered `wait`.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut store = Store {
            conn,
            salt: String::new(),
            #[cfg(test)]
            fixed_node: None,
        };
        store.migrate(path)?;
        store.salt = store.salt()?;
        let moved = store.normalise_domains()?;
        if moved > 0 {
            log::info!("database: the domain of {moved} registrations put in canonical form");
        }
        Ok(store)
    }

    fn migrate(&mut self, path: &Path) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: version,
            });
        }
        let done = usize::try_from(version).unwrap_or(0);
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(
                None,
                "user_version",
                i64::try_from(from + 1).unwrap_or(i64::MAX),
            )?;
            tx.commit()?;
            log::info!("database migrated to schema version {}", from + 1);
        }
        Ok(())
    }

    /// Puts every stored `domain` in its canonical form ([`normalise_domain`]: case-folded,
    /// no trailing dot, an IDN in its Unicode form), as publishes are looked up by the
    /// canonical domain of their sender. Rows written before JIDs were normalised kept the
    /// domain as the user's server stamped it (`xn--` or Unicode, whatever case). Idempotent
    /// and cheap once done (one pass over the distinct domains, on the index); returns
    /// how many rows changed. A node stored under two spellings of one domain (a 1 in
    /// 2^72 chance) keeps the most recently refreshed row. A domain that is no domain is
    /// left alone: no sender can match it.
    ///
    /// [`normalise_domain`]: crate::xmpp::jid::normalise_domain
    pub fn normalise_domains(&mut self) -> Result<usize, StoreError> {
        let domains: Vec<String> = self
            .conn
            .prepare("SELECT DISTINCT domain FROM registration")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let changes: Vec<(String, String)> = domains
            .into_iter()
            .filter_map(|old| {
                let canonical = crate::xmpp::jid::normalise_domain(&old).ok()?;
                (canonical != old).then_some((old, canonical))
            })
            .collect();
        if changes.is_empty() {
            return Ok(0);
        }
        let tx = self.conn.transaction()?;
        let mut moved = 0;
        for (old, canonical) in &changes {
            tx.execute(
                "DELETE FROM registration AS o WHERE o.domain = ?1 AND EXISTS (
                   SELECT 1 FROM registration AS c
                   WHERE c.domain = ?2 AND c.node = o.node AND c.updated >= o.updated)",
                params![old, canonical],
            )?;
            tx.execute(
                "DELETE FROM registration AS c WHERE c.domain = ?2 AND EXISTS (
                   SELECT 1 FROM registration AS o
                   WHERE o.domain = ?1 AND o.node = c.node AND o.updated > c.updated)",
                params![old, canonical],
            )?;
            moved += tx.execute(
                "UPDATE registration SET domain = ?2 WHERE domain = ?1",
                params![old, canonical],
            )?;
        }
        tx.commit()?;
        Ok(moved)
    }

    /// The database's account salt, created on first use.
    fn salt(&mut self) -> Result<String, StoreError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(StoreError::Random)?;
        let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('account_salt', ?1)",
            params![fresh],
        )?;
        Ok(self.conn.query_row(
            "SELECT value FROM meta WHERE key = 'account_salt'",
            [],
            |r| r.get(0),
        )?)
    }

    /// The salted hash of an account's bare JID that groups its registrations for the
    /// per-account cap: hex SHA-256 of the database's random salt and the JID. Without
    /// the salt (kept in the database) the JID cannot be recovered from it.
    pub fn account_key(&self, bare_jid: &str) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(self.salt.as_bytes());
        ctx.update(b"\0");
        ctx.update(bare_jid.as_bytes());
        ctx.finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Starts a transaction grouping the writes until [`Store::commit`]. Waits at most
    /// [`BUSY_TIMEOUT`] for another connection's write lock.
    pub fn begin(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    /// Commits the open transaction: its writes are on disk when this returns `Ok`.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    /// Abandons the open transaction, if any.
    pub fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                log::warn!("rollback failed: {e}");
            }
        }
    }

    /// Whether a transaction is open. SQLite rolls a whole transaction back by itself
    /// on some errors (disk full, I/O): after a failed write this tells whether the
    /// writes before it are still there to commit.
    pub fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// Marks a point in the open transaction that [`Store::rollback_to`] returns to:
    /// one request's writes, undone alone when one of them fails.
    pub fn savepoint(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("SAVEPOINT request")?;
        Ok(())
    }

    /// Keeps the writes since [`Store::savepoint`] in the open transaction.
    pub fn release(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("RELEASE request")?;
        Ok(())
    }

    /// Undoes the writes since [`Store::savepoint`], keeping the transaction open.
    pub fn rollback_to(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("ROLLBACK TO request; RELEASE request")?;
        Ok(())
    }

    /// Sets how long a write waits for another connection's lock (default
    /// [`BUSY_TIMEOUT`]).
    pub fn set_busy_timeout(&mut self, wait: Duration) -> Result<(), StoreError> {
        self.conn.busy_timeout(wait)?;
        Ok(())
    }

    /// A fresh node: 12 characters, base64url of 9 random bytes.
    fn fresh_node(&self) -> Result<String, StoreError> {
        #[cfg(test)]
        if let Some(node) = &self.fixed_node {
            return Ok(node.clone());
        }
        random_b64(9, &base64::engine::general_purpose::URL_SAFE)
    }

    /// Registers or refreshes (service, device, channel) at `now` (Unix seconds): an
    /// existing row keeps its node and secret and gets the new token and domain; a new
    /// row gets a random node and secret, if `caps` allow one. A new row beyond
    /// `caps.per_account` registrations of its account evicts the least recently
    /// refreshed ones of that account.
    pub fn register(
        &mut self,
        r: NewRegistration<'_>,
        caps: Caps,
        now: i64,
    ) -> Result<Registered, StoreError> {
        let existing = self
            .conn
            .prepare_cached(
                "SELECT node, secret, token FROM registration
                 WHERE service = ?1 AND device = ?2 AND channel = ?3",
            )?
            .query_row(params![r.service, r.device, r.channel], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .optional()?;
        if let Some((node, secret, token)) = existing {
            self.conn
                .prepare_cached(
                    "UPDATE registration SET token = ?4, domain = ?5, updated = ?6,
                     account = coalesce(?7, account)
                     WHERE service = ?1 AND device = ?2 AND channel = ?3",
                )?
                .execute(params![
                    r.service, r.device, r.channel, r.token, r.domain, now, r.account
                ])?;
            return Ok(Registered::Renewed {
                node,
                secret,
                token_changed: token != r.token,
            });
        }
        if !caps.may_create {
            return Ok(Registered::Refused(Refusal::NotNow));
        }
        if caps.per_domain > 0 && self.domain_count(r.domain)? >= caps.per_domain {
            return Ok(Registered::Refused(Refusal::DomainFull));
        }
        let secret = random_b64(18, &base64::engine::general_purpose::STANDARD)?;
        // A node collision within a domain is astronomically unlikely (72 random bits);
        // retry a few times, then fail rather than hand out a node that is not ours.
        let mut node = None;
        for _ in 0..5 {
            let candidate = self.fresh_node()?;
            let inserted = self
                .conn
                .prepare_cached(
                    "INSERT INTO registration
                     (service, device, channel, domain, token, node, secret, created, updated, account)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)
                     ON CONFLICT (domain, node) DO NOTHING",
                )?
                .execute(params![
                    r.service, r.device, r.channel, r.domain, r.token, candidate, secret, now,
                    r.account
                ])?;
            if inserted == 1 {
                node = Some(candidate);
                break;
            }
        }
        let node = node.ok_or(StoreError::NodeCollision)?;
        let mut evicted = 0;
        if let Some(account) = r.account {
            let count: i64 = self
                .conn
                .prepare_cached("SELECT count(*) FROM registration WHERE account = ?1")?
                .query_row(params![account], |row| row.get(0))?;
            let cap = i64::try_from(caps.per_account.max(1)).unwrap_or(i64::MAX);
            let excess = count.saturating_sub(cap);
            if excess > 0 {
                evicted = self
                    .conn
                    .prepare_cached(
                        "DELETE FROM registration WHERE (service, device, channel) IN (
                           SELECT service, device, channel FROM registration
                           WHERE account = ?1 AND NOT (service = ?2 AND device = ?3 AND channel = ?4)
                           ORDER BY updated, created LIMIT ?5)",
                    )?
                    .execute(params![account, r.service, r.device, r.channel, excess])?;
            }
        }
        Ok(Registered::New {
            node,
            secret,
            evicted,
        })
    }

    /// The registrations stored for the accounts of `domain`.
    pub fn domain_count(&self, domain: &str) -> Result<u64, StoreError> {
        let n: Option<i64> = self
            .conn
            .prepare_cached("SELECT n FROM domain_count WHERE domain = ?1")?
            .query_row(params![domain], |r| r.get(0))
            .optional()?;
        Ok(n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    /// Stores a registration with its node and secret unchanged (migration from the
    /// Java p2); replaces the row of the same (service, device, channel).
    pub fn put(&mut self, r: &Registration) -> Result<(), StoreError> {
        let now = now();
        self.conn
            .prepare_cached(
                "INSERT INTO registration
                 (service, device, channel, domain, token, node, secret, created, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT (service, device, channel) DO UPDATE SET
                 domain = excluded.domain, token = excluded.token, node = excluded.node,
                 secret = excluded.secret, updated = excluded.updated",
            )?
            .execute(params![
                r.service, r.device, r.channel, r.domain, r.token, r.node, r.secret, now
            ])?;
        Ok(())
    }

    /// Deletes (service, device, channel); `false` when there was nothing to delete.
    pub fn unregister(
        &mut self,
        service: &str,
        device: &str,
        channel: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM registration WHERE service = ?1 AND device = ?2 AND channel = ?3",
            )?
            .execute(params![service, device, channel])?;
        Ok(n > 0)
    }

    /// The registration published to as `node` by `domain`, with its last use.
    pub fn lookup(&self, domain: &str, node: &str) -> Result<Option<Found>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                registration_columns!(),
                ", used FROM registration WHERE domain = ?1 AND node = ?2"
            ))?
            .query_row(params![domain, node], |r| {
                Ok(Found {
                    registration: Registration::from_row(r)?,
                    used: r.get(7)?,
                })
            })
            .optional()?)
    }

    /// Records that a push to (domain, node) was delivered at `now` (Unix seconds): the
    /// registration is in use and does not expire.
    pub fn mark_used(&mut self, domain: &str, node: &str, now: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE registration SET used = ?3 WHERE domain = ?1 AND node = ?2")?
            .execute(params![domain, node, now])?;
        Ok(())
    }

    /// Deletes the registration (domain, node) if it still has `token`: a token the
    /// provider called dead. A registration refreshed meanwhile with a new token stays.
    pub fn delete_dead(
        &mut self,
        domain: &str,
        node: &str,
        token: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM registration WHERE domain = ?1 AND node = ?2 AND token = ?3",
            )?
            .execute(params![domain, node, token])?;
        Ok(n > 0)
    }

    /// One chunk of an expiry pass: looks at up to `rows` registrations in key order
    /// after `after` (from the start when `None`) and deletes those neither refreshed
    /// nor pushed to since `cutoff` (Unix seconds). Bounded work per call, so a pass
    /// over a large table never holds the core for long.
    pub fn expire_chunk(
        &mut self,
        after: Option<&RowKey>,
        cutoff: i64,
        rows: usize,
    ) -> Result<Expired, StoreError> {
        let limit = i64::try_from(rows.max(1)).unwrap_or(i64::MAX);
        let read = |r: &rusqlite::Row<'_>| {
            Ok((
                RowKey {
                    service: r.get(0)?,
                    device: r.get(1)?,
                    channel: r.get(2)?,
                },
                r.get::<_, i64>(3)?,
            ))
        };
        let mut chunk: Vec<(RowKey, i64)> = match after {
            None => self
                .conn
                .prepare_cached(
                    "SELECT service, device, channel, max(updated, coalesce(used, 0))
                     FROM registration ORDER BY service, device, channel LIMIT ?1",
                )?
                .query_map(params![limit], read)?
                .collect::<Result<_, _>>()?,
            Some(k) => self
                .conn
                .prepare_cached(
                    "SELECT service, device, channel, max(updated, coalesce(used, 0))
                     FROM registration WHERE (service, device, channel) > (?1, ?2, ?3)
                     ORDER BY service, device, channel LIMIT ?4",
                )?
                .query_map(params![k.service, k.device, k.channel, limit], read)?
                .collect::<Result<_, _>>()?,
        };
        let mut deleted = 0;
        for (key, seen) in &chunk {
            if *seen < cutoff {
                deleted += self
                    .conn
                    .prepare_cached(
                        "DELETE FROM registration
                         WHERE service = ?1 AND device = ?2 AND channel = ?3",
                    )?
                    .execute(params![key.service, key.device, key.channel])?
                    as u64;
            }
        }
        let next = if chunk.len() < rows.max(1) {
            None
        } else {
            chunk.pop().map(|(key, _)| key)
        };
        Ok(Expired { deleted, next })
    }

    /// A value of the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row(params![key], |r| r.get(0))
            .optional()?)
    }

    /// Sets a value of the `meta` table.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, value])?;
        Ok(())
    }

    /// The number of registrations.
    pub fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM registration", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The number of registrations per service (for the metrics).
    pub fn count_per_service(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT service, count(*) FROM registration GROUP BY service")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether this connection could write now: takes the write lock (waiting at most
    /// the busy timeout) and releases it at once, changing nothing. Fails when the file
    /// or its directory is read-only, or another process holds the lock too long.
    pub fn probe_write(&self) -> Result<(), StoreError> {
        if self.conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                Some("the database is open read-only".into()),
            )));
        }
        let begun = self.conn.execute_batch("BEGIN IMMEDIATE");
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK")?;
        }
        Ok(begun?)
    }
}

/// Figures for `p2 stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// All registrations.
    pub total: u64,
    /// Registrations per service.
    pub per_service: Vec<(String, u64)>,
    /// Registrations per account domain, most first.
    pub per_domain: Vec<(String, u64)>,
    /// Oldest and newest creation time (Unix seconds).
    pub created: Option<(i64, i64)>,
    /// Oldest and newest refresh time (Unix seconds).
    pub updated: Option<(i64, i64)>,
    /// Size of the database file in bytes (pages in use and free).
    pub bytes: u64,
}

impl Store {
    /// The registration of (service, device, channel), if any.
    pub fn get(
        &self,
        service: &str,
        device: &str,
        channel: &str,
    ) -> Result<Option<Registration>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                registration_columns!(),
                " FROM registration WHERE service = ?1 AND device = ?2 AND channel = ?3"
            ))?
            .query_row(params![service, device, channel], Registration::from_row)
            .optional()?)
    }

    /// Counts per service and domain, age range, file size.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        let group = |sql: &str| -> Result<Vec<(String, u64)>, StoreError> {
            let mut stmt = self.conn.prepare(sql)?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        let range = |col: &str| -> Result<Option<(i64, i64)>, StoreError> {
            let (lo, hi): (Option<i64>, Option<i64>) = self.conn.query_row(
                &format!("SELECT min({col}), max({col}) FROM registration"),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(lo.zip(hi))
        };
        let pages: i64 = self
            .conn
            .pragma_query_value(None, "page_count", |r| r.get(0))?;
        let page_size: i64 = self
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))?;
        Ok(Stats {
            total: self.count()?,
            per_service: group(
                "SELECT service, count(*) FROM registration GROUP BY service ORDER BY service",
            )?,
            per_domain: group(
                "SELECT domain, count(*) AS n FROM registration GROUP BY domain
                 ORDER BY n DESC, domain",
            )?,
            created: range("created")?,
            updated: range("updated")?,
            bytes: u64::try_from(pages.saturating_mul(page_size)).unwrap_or(0),
        })
    }

    /// Deletes the registrations not refreshed since `cutoff` (Unix seconds); returns
    /// how many.
    pub fn prune(&mut self, cutoff: i64) -> Result<u64, StoreError> {
        let n = self.conn.execute(
            "DELETE FROM registration WHERE updated < ?1",
            params![cutoff],
        )?;
        Ok(n as u64)
    }

    /// Checks the database file (`PRAGMA integrity_check`); `Ok(None)` when sound,
    /// else the first problem reported.
    pub fn integrity_check(&self) -> Result<Option<String>, StoreError> {
        let verdict: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        Ok((verdict != "ok").then_some(verdict))
    }
}

/// The current time in Unix seconds, as stored in `created` and `updated`.
pub fn unix_now() -> i64 {
    now()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A scratch directory, removed when the test that made it passes (kept when it
    /// fails, to look at).
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> TempDir {
            static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("p2-store-{name}-{}-{seq}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub(crate) fn db(&self) -> PathBuf {
            self.0.join("p2.sqlite")
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const CAPS: Caps = Caps {
        per_account: 10,
        per_domain: 0,
        may_create: true,
    };

    fn reg(
        s: &mut Store,
        service: &str,
        device: &str,
        channel: &str,
        domain: &str,
        token: &str,
    ) -> Result<Registered, StoreError> {
        s.register(
            NewRegistration {
                service,
                device,
                channel,
                domain,
                token,
                account: None,
            },
            CAPS,
            1_000_000,
        )
    }

    fn new_node(r: Registered) -> (String, String) {
        match r {
            Registered::New { node, secret, .. } => (node, secret),
            other => panic!("expected a new registration, got {other:?}"),
        }
    }

    #[test]
    fn register_keeps_node_and_secret_and_updates_token() {
        let dir = TempDir::new("register");
        let mut s = Store::open(&dir.db()).unwrap();
        let (node, secret) = new_node(reg(&mut s, "fcm", "dev", "", "jabber.de", "t1").unwrap());
        assert_eq!(node.len(), 12);
        assert_eq!(secret.len(), 24);
        let b = reg(&mut s, "fcm", "dev", "", "jabber.de", "t2").unwrap();
        assert_eq!(
            b,
            Registered::Renewed {
                node: node.clone(),
                secret: secret.clone(),
                token_changed: true
            }
        );
        let same = reg(&mut s, "fcm", "dev", "", "jabber.de", "t2").unwrap();
        assert!(matches!(
            same,
            Registered::Renewed {
                token_changed: false,
                ..
            }
        ));
        let r = s.lookup("jabber.de", &node).unwrap().unwrap();
        assert_eq!(r.registration.token, "t2");
        assert_eq!(r.used, None);
        assert_eq!(s.lookup("other.de", &node).unwrap(), None);
        // Another channel or service is another registration.
        let c = new_node(reg(&mut s, "fcm", "dev", "chan", "jabber.de", "t1").unwrap());
        new_node(reg(&mut s, "apns", "dev", "", "jabber.de", "t1").unwrap());
        assert_ne!(c.0, node);
        assert_eq!(s.count().unwrap(), 3);
    }

    #[test]
    fn survives_reopen_and_deletes() {
        let dir = TempDir::new("reopen");
        let node = {
            let mut s = Store::open(&dir.db()).unwrap();
            new_node(reg(&mut s, "fcm", "dev", "", "d", "tok").unwrap()).0
        };
        let mut s = Store::open(&dir.db()).unwrap();
        assert_eq!(s.count().unwrap(), 1);
        assert!(!s.delete_dead("d", &node, "other-token").unwrap());
        assert!(s.delete_dead("d", &node, "tok").unwrap());
        assert_eq!(s.count().unwrap(), 0);
        reg(&mut s, "fcm", "dev", "", "d", "tok").unwrap();
        assert!(s.unregister("fcm", "dev", "").unwrap());
        assert!(!s.unregister("fcm", "dev", "").unwrap());
        let mode: String = s
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn batch_commits_all_and_rollback_drops_all() {
        let dir = TempDir::new("batch");
        let mut s = Store::open(&dir.db()).unwrap();
        s.begin().unwrap();
        reg(&mut s, "fcm", "a", "", "d", "t").unwrap();
        reg(&mut s, "fcm", "b", "", "d", "t").unwrap();
        s.commit().unwrap();
        s.begin().unwrap();
        reg(&mut s, "fcm", "c", "", "d", "t").unwrap();
        s.rollback();
        assert_eq!(s.count().unwrap(), 2);
    }

    #[test]
    fn a_savepoint_undoes_one_request_and_keeps_the_others() {
        let dir = TempDir::new("savepoint");
        let mut s = Store::open(&dir.db()).unwrap();
        s.begin().unwrap();
        s.savepoint().unwrap();
        reg(&mut s, "fcm", "a", "", "d", "t").unwrap();
        s.release().unwrap();
        s.savepoint().unwrap();
        reg(&mut s, "fcm", "b", "", "d", "t").unwrap();
        s.rollback_to().unwrap();
        assert!(s.in_transaction());
        s.savepoint().unwrap();
        reg(&mut s, "fcm", "c", "", "d", "t").unwrap();
        s.release().unwrap();
        s.commit().unwrap();
        assert!(!s.in_transaction());
        assert!(s.get("fcm", "a", "").unwrap().is_some());
        assert!(s.get("fcm", "b", "").unwrap().is_none());
        assert!(s.get("fcm", "c", "").unwrap().is_some());
        assert_eq!(s.domain_count("d").unwrap(), 2);
    }

    #[test]
    fn a_locked_database_fails_begin_once_it_has_waited() {
        let dir = TempDir::new("busy");
        let mut s = Store::open(&dir.db()).unwrap();
        s.set_busy_timeout(Duration::from_millis(50)).unwrap();
        let other = Connection::open(dir.db()).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let e = s.begin().unwrap_err();
        assert!(e.is_busy(), "{e}");
        // Reads go on under WAL while another connection writes.
        assert_eq!(s.count().unwrap(), 0);
        other.execute_batch("COMMIT").unwrap();
        s.begin().unwrap();
        s.commit().unwrap();
    }

    #[test]
    fn a_node_collision_is_an_error_not_a_node() {
        let dir = TempDir::new("collision");
        let mut s = Store::open(&dir.db()).unwrap();
        s.fixed_node = Some("AAAAAAAAAAAA".into());
        let (node, _) = new_node(reg(&mut s, "fcm", "a", "", "d", "t").unwrap());
        assert_eq!(node, "AAAAAAAAAAAA");
        // The same node in another domain is no collision.
        new_node(reg(&mut s, "fcm", "b", "", "e", "t").unwrap());
        match reg(&mut s, "fcm", "c", "", "d", "t") {
            Err(StoreError::NodeCollision) => {}
            other => panic!("expected NodeCollision, got {other:?}"),
        }
        assert!(s.get("fcm", "c", "").unwrap().is_none());
        assert_eq!(s.count().unwrap(), 2);
    }

    #[test]
    fn the_domain_count_follows_every_write_and_caps_new_rows() {
        let dir = TempDir::new("domain-cap");
        let mut s = Store::open(&dir.db()).unwrap();
        let caps = Caps {
            per_domain: 2,
            ..CAPS
        };
        let r = |s: &mut Store, device: &str, domain: &str, caps: Caps| {
            s.register(
                NewRegistration {
                    service: "fcm",
                    device,
                    channel: "",
                    domain,
                    token: "t",
                    account: None,
                },
                caps,
                1_000,
            )
            .unwrap()
        };
        new_node(r(&mut s, "a", "one.example", caps));
        new_node(r(&mut s, "b", "one.example", caps));
        assert_eq!(
            r(&mut s, "c", "one.example", caps),
            Registered::Refused(Refusal::DomainFull)
        );
        // Renewals pass; other domains have their own count.
        assert!(matches!(
            r(&mut s, "a", "one.example", caps),
            Registered::Renewed { .. }
        ));
        new_node(r(&mut s, "c", "two.example", caps));
        assert_eq!(
            r(
                &mut s,
                "d",
                "two.example",
                Caps {
                    may_create: false,
                    ..caps
                }
            ),
            Registered::Refused(Refusal::NotNow)
        );
        assert_eq!(s.domain_count("one.example").unwrap(), 2);
        assert_eq!(s.domain_count("two.example").unwrap(), 1);
        // A delete frees a place.
        assert!(s.unregister("fcm", "b", "").unwrap());
        assert_eq!(s.domain_count("one.example").unwrap(), 1);
        new_node(r(&mut s, "e", "one.example", caps));
        // A row moving domain, and the import's upsert, are counted too.
        assert!(matches!(
            r(&mut s, "c", "one.example", CAPS),
            Registered::Renewed { .. }
        ));
        assert_eq!(s.domain_count("one.example").unwrap(), 3);
        assert_eq!(s.domain_count("two.example").unwrap(), 0);
        s.put(&Registration {
            service: "fcm".into(),
            device: "f".into(),
            channel: String::new(),
            domain: "three.example".into(),
            token: "t".into(),
            node: "n".into(),
            secret: "s".into(),
        })
        .unwrap();
        assert_eq!(s.domain_count("three.example").unwrap(), 1);
        let counted: i64 = s
            .conn
            .query_row("SELECT sum(n) FROM domain_count", [], |r| r.get(0))
            .unwrap();
        assert_eq!(counted, 4);
        assert_eq!(s.count().unwrap(), 4);
    }

    #[test]
    fn expiry_deletes_what_was_neither_refreshed_nor_used_in_chunks() {
        let dir = TempDir::new("expire");
        let mut s = Store::open(&dir.db()).unwrap();
        for i in 0..10 {
            let device = format!("dev{i}");
            s.register(
                NewRegistration {
                    service: "fcm",
                    device: &device,
                    channel: "",
                    domain: "d",
                    token: "t",
                    account: None,
                },
                CAPS,
                // dev0..dev4 refreshed at 100, dev5..dev9 at 1000.
                if i < 5 { 100 } else { 1000 },
            )
            .unwrap();
        }
        // dev0 was pushed to at 2000: in use.
        let node = s.lookup_device("dev0");
        s.mark_used("d", &node, 2000).unwrap();
        assert_eq!(s.lookup("d", &node).unwrap().unwrap().used, Some(2000));
        let mut deleted = 0;
        let mut after = None;
        let mut chunks = 0;
        loop {
            let e = s.expire_chunk(after.as_ref(), 500, 3).unwrap();
            deleted += e.deleted;
            chunks += 1;
            match e.next {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        assert_eq!(deleted, 4);
        assert_eq!(chunks, 4);
        assert_eq!(s.count().unwrap(), 6);
        assert!(s.get("fcm", "dev0", "").unwrap().is_some());
        assert!(s.get("fcm", "dev1", "").unwrap().is_none());
        assert!(s.get("fcm", "dev5", "").unwrap().is_some());
        assert_eq!(s.domain_count("d").unwrap(), 6);
    }

    #[test]
    fn meta_values_are_kept() {
        let dir = TempDir::new("meta");
        {
            let mut s = Store::open(&dir.db()).unwrap();
            assert_eq!(s.meta("proof:fcm").unwrap(), None);
            s.set_meta("proof:fcm", "a 1").unwrap();
            s.set_meta("proof:fcm", "b 2").unwrap();
        }
        let s = Store::open(&dir.db()).unwrap();
        assert_eq!(s.meta("proof:fcm").unwrap().as_deref(), Some("b 2"));
    }

    impl Store {
        fn lookup_device(&self, device: &str) -> String {
            self.conn
                .query_row(
                    "SELECT node FROM registration WHERE device = ?1",
                    params![device],
                    |r| r.get(0),
                )
                .unwrap()
        }
    }

    #[test]
    fn stats_and_prune() {
        let dir = TempDir::new("stats");
        let mut s = Store::open(&dir.db()).unwrap();
        reg(&mut s, "fcm", "a", "", "one.example", "t").unwrap();
        reg(&mut s, "fcm", "b", "", "two.example", "t").unwrap();
        reg(&mut s, "apns", "c", "", "two.example", "t").unwrap();
        let st = s.stats().unwrap();
        assert_eq!(st.total, 3);
        assert_eq!(st.per_service, vec![("apns".into(), 1), ("fcm".into(), 2)]);
        assert_eq!(st.per_domain[0], ("two.example".into(), 2));
        assert!(st.created.is_some() && st.bytes > 0);
        assert_eq!(s.integrity_check().unwrap(), None);
        s.conn
            .execute(
                "UPDATE registration SET updated = 1000 WHERE device = 'a'",
                [],
            )
            .unwrap();
        assert_eq!(s.prune(500_000).unwrap(), 1);
        assert_eq!(s.count().unwrap(), 2);
        assert!(s.get("fcm", "b", "").unwrap().is_some());
        assert!(s.get("fcm", "a", "").unwrap().is_none());
    }

    #[test]
    fn the_per_account_cap_evicts_the_least_recently_refreshed() {
        let dir = TempDir::new("cap");
        let mut s = Store::open(&dir.db()).unwrap();
        let alice = s.account_key("alice@example.com");
        assert_eq!(alice.len(), 64);
        assert_ne!(alice, s.account_key("bob@example.com"));
        let mut nodes = Vec::new();
        for i in 0..4 {
            let device = format!("dev{i}");
            let r = s
                .register(
                    NewRegistration {
                        service: "fcm",
                        device: &device,
                        channel: "",
                        domain: "example.com",
                        token: "t",
                        account: Some(&alice),
                    },
                    Caps {
                        per_account: 3,
                        ..CAPS
                    },
                    // Refreshed in order: dev0 oldest.
                    1000 + i,
                )
                .unwrap();
            let Registered::New { node, evicted, .. } = r else {
                panic!("{r:?}");
            };
            assert_eq!(evicted, usize::from(i == 3));
            nodes.push(node);
        }
        assert_eq!(s.count().unwrap(), 3);
        assert!(s.lookup("example.com", &nodes[0]).unwrap().is_none());
        assert!(s.lookup("example.com", &nodes[3]).unwrap().is_some());
        // The salt is kept: the same JID gives the same key after reopening.
        drop(s);
        let s = Store::open(&dir.db()).unwrap();
        assert_eq!(s.account_key("alice@example.com"), alice);
        // And another database gives another key.
        let other_dir = TempDir::new("cap-other");
        let other = Store::open(&other_dir.db()).unwrap();
        assert_ne!(other.account_key("alice@example.com"), alice);
    }

    #[test]
    fn migrates_a_version_1_database() {
        let dir = TempDir::new("v1");
        {
            let c = Connection::open(dir.db()).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute(
                "INSERT INTO registration VALUES ('fcm','d','','x.org','t','n','s',1,1)",
                [],
            )
            .unwrap();
        }
        let s = Store::open(&dir.db()).unwrap();
        let v: i64 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let found = s.lookup("x.org", "n").unwrap().unwrap();
        assert_eq!(found.registration.token, "t");
        assert_eq!(found.used, None);
        // The rows already there are counted.
        assert_eq!(s.domain_count("x.org").unwrap(), 1);
    }

    #[test]
    fn stored_domains_are_put_in_canonical_form_on_open() {
        let dir = TempDir::new("domains");
        let path = dir.db();
        let s = Store::open(&path).unwrap();
        let row = |device: &str, domain: &str, node: &str, updated: i64| {
            format!(
                "INSERT INTO registration (service, device, channel, domain, token, node, \
                 secret, created, updated) VALUES ('fcm', '{device}', '', '{domain}', \
                 'tok-{device}', '{node}', 's', 1, {updated})"
            )
        };
        for sql in [
            row("a", "xn--e1afmkfd.xn--p1ai", "node-a", 10),
            row("b", "Jabber.DE", "node-b", 10),
            row("c", "jabber.de.", "node-c", 10),
            row("d", "jabber.de", "node-d", 10),
            // One node under two spellings: the more recently refreshed row stays.
            row("e", "JABBER.de", "node-e", 30),
            row("f", "jabber.de", "node-e", 20),
            row("g", "not a domain", "node-g", 10),
        ] {
            s.conn.execute(&sql, []).unwrap();
        }
        drop(s);
        let mut s = Store::open(&path).unwrap();
        let at = |s: &Store, domain: &str, node: &str| {
            s.lookup(domain, node)
                .unwrap()
                .map(|r| r.registration.device)
        };
        assert_eq!(at(&s, "пример.рф", "node-a").as_deref(), Some("a"));
        assert_eq!(at(&s, "jabber.de", "node-b").as_deref(), Some("b"));
        assert_eq!(at(&s, "jabber.de", "node-c").as_deref(), Some("c"));
        assert_eq!(at(&s, "jabber.de", "node-d").as_deref(), Some("d"));
        assert_eq!(at(&s, "jabber.de", "node-e").as_deref(), Some("e"));
        assert_eq!(at(&s, "not a domain", "node-g").as_deref(), Some("g"));
        assert_eq!(s.count().unwrap(), 6);
        assert_eq!(s.normalise_domains().unwrap(), 0);
        // The other way round: the canonical row is the newer one.
        s.conn
            .execute(&row("h", "Example.ORG", "node-h", 10), [])
            .unwrap();
        s.conn
            .execute(&row("i", "example.org", "node-h", 20), [])
            .unwrap();
        assert_eq!(s.normalise_domains().unwrap(), 0);
        assert_eq!(at(&s, "example.org", "node-h").as_deref(), Some("i"));
        assert_eq!(s.count().unwrap(), 7);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = TempDir::new("newer");
        {
            let c = Connection::open(dir.db()).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        match Store::open(&dir.db()) {
            Err(StoreError::TooNew { found: 99, .. }) => {}
            other => panic!("expected TooNew, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn counts_per_service_and_probes_the_write_lock() {
        let dir = TempDir::new("probe");
        let path = dir.db();
        let mut s = Store::open(&path).unwrap();
        reg(&mut s, "fcm", "a", "", "d", "t").unwrap();
        reg(&mut s, "fcm", "b", "", "d", "t").unwrap();
        reg(&mut s, "apns", "a", "", "d", "t").unwrap();
        let mut counts = s.count_per_service().unwrap();
        counts.sort();
        assert_eq!(counts, [("apns".to_owned(), 1), ("fcm".to_owned(), 2)]);

        let other = Store::open(&path).unwrap();
        other.probe_write().unwrap();
        // The probe changed nothing and left no transaction open.
        assert_eq!(other.count().unwrap(), 3);
        reg(&mut s, "fcm", "c", "", "d", "t").unwrap();
        // While another connection holds the write lock, the probe fails (after the busy
        // timeout) and holds nothing afterwards.
        s.begin().unwrap();
        let err = other.probe_write().unwrap_err();
        assert!(err.to_string().contains("locked"), "{err}");
        s.rollback();
        other.probe_write().unwrap();
    }
}
