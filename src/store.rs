//! The registrations in SQLite: the only module with SQL; schema, migrations, queries.
//!
//! Invariants: one row per (service, device, channel); (domain, node) unique; the
//! account JID is never stored (only its domain and the salted device hash). Every
//! write is durable when its call (or the enclosing [`Store::commit`]) returns: WAL
//! with `synchronous=FULL`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use rusqlite::{params, Connection, OptionalExtension};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

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

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The node (kept on re-registration).
    pub node: String,
    /// The secret (kept on re-registration).
    pub secret: String,
    /// `true` for a new row, `false` when an existing one got its token updated.
    pub created: bool,
    /// Older registrations of the same account deleted to respect the cap.
    pub evicted: usize,
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
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Sqlite(e) => Some(e),
            StoreError::Random(_) | StoreError::TooNew { .. } => None,
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
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `n` random bytes from the OS CSPRNG, base64-encoded with `engine`.
fn random_b64(n: usize, engine: &base64::engine::GeneralPurpose) -> Result<String, StoreError> {
    let mut buf = [0u8; 18];
    let buf = &mut buf[..n];
    getrandom::fill(buf).map_err(StoreError::Random)?;
    Ok(engine.encode(buf))
}

impl Store {
    /// Opens (creating if needed) the database at `path`, sets WAL and
    /// `synchronous=FULL`, and migrates the schema to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        // Another process holding the write lock (an admin command) delays the core at most
        // this long before the request is answered `wait`.
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut store = Store {
            conn,
            salt: String::new(),
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
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", from as i64 + 1)?;
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

    /// Starts a transaction grouping the writes until [`Store::commit`].
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

    /// Registers or refreshes (service, device, channel): a new row gets a random node
    /// and secret; an existing one keeps them and gets the new token and domain. A new
    /// row beyond `cap` registrations of its account evicts the least recently refreshed
    /// ones of that account.
    pub fn register(
        &mut self,
        r: NewRegistration<'_>,
        cap: usize,
    ) -> Result<Registered, StoreError> {
        let now = now();
        let existing = self
            .conn
            .prepare_cached(
                "SELECT node, secret FROM registration
                 WHERE service = ?1 AND device = ?2 AND channel = ?3",
            )?
            .query_row(params![r.service, r.device, r.channel], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .optional()?;
        if let Some((node, secret)) = existing {
            self.conn
                .prepare_cached(
                    "UPDATE registration SET token = ?4, domain = ?5, updated = ?6,
                     account = coalesce(?7, account)
                     WHERE service = ?1 AND device = ?2 AND channel = ?3",
                )?
                .execute(params![
                    r.service, r.device, r.channel, r.token, r.domain, now, r.account
                ])?;
            return Ok(Registered {
                node,
                secret,
                created: false,
                evicted: 0,
            });
        }
        let secret = random_b64(18, &base64::engine::general_purpose::STANDARD)?;
        // A node collision within a domain is astronomically unlikely (72 random bits);
        // retry a few times rather than fail on it.
        let mut attempt = 0;
        let node = loop {
            let node = random_b64(9, &base64::engine::general_purpose::URL_SAFE)?;
            let inserted = self
                .conn
                .prepare_cached(
                    "INSERT INTO registration
                     (service, device, channel, domain, token, node, secret, created, updated, account)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)
                     ON CONFLICT (domain, node) DO NOTHING",
                )?
                .execute(params![
                    r.service, r.device, r.channel, r.domain, r.token, node, secret, now, r.account
                ])?;
            attempt += 1;
            if inserted == 1 || attempt >= 5 {
                break node;
            }
        };
        let mut evicted = 0;
        if let Some(account) = r.account {
            let count: i64 = self
                .conn
                .prepare_cached("SELECT count(*) FROM registration WHERE account = ?1")?
                .query_row(params![account], |row| row.get(0))?;
            let excess = count - cap.max(1) as i64;
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
        Ok(Registered {
            node,
            secret,
            created: true,
            evicted,
        })
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

    /// The registration published to as `node` by `domain`.
    pub fn lookup(&self, domain: &str, node: &str) -> Result<Option<Registration>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                registration_columns!(),
                " FROM registration WHERE domain = ?1 AND node = ?2"
            ))?
            .query_row(params![domain, node], Registration::from_row)
            .optional()?)
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

    /// The number of registrations.
    pub fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM registration", [], |r| r.get(0))?;
        Ok(n as u64)
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
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
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
            bytes: (pages * page_size) as u64,
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
mod tests {
    use super::*;

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
            10,
        )
    }

    pub(crate) fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "p2-store-{}-{}-{}",
            name,
            std::process::id(),
            now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("p2.sqlite")
    }

    #[test]
    fn register_keeps_node_and_secret_and_updates_token() {
        let path = temp_db("register");
        let mut s = Store::open(&path).unwrap();
        let a = reg(&mut s, "fcm", "dev", "", "jabber.de", "t1").unwrap();
        assert!(a.created);
        assert_eq!(a.node.len(), 12);
        assert_eq!(a.secret.len(), 24);
        let b = reg(&mut s, "fcm", "dev", "", "jabber.de", "t2").unwrap();
        assert_eq!(
            (b.node.as_str(), b.secret.as_str(), b.created),
            (a.node.as_str(), a.secret.as_str(), false)
        );
        let r = s.lookup("jabber.de", &a.node).unwrap().unwrap();
        assert_eq!(r.token, "t2");
        assert_eq!(s.lookup("other.de", &a.node).unwrap(), None);
        // Another channel or service is another registration.
        let c = reg(&mut s, "fcm", "dev", "chan", "jabber.de", "t1").unwrap();
        let d = reg(&mut s, "apns", "dev", "", "jabber.de", "t1").unwrap();
        assert!(c.created && d.created);
        assert_ne!(c.node, a.node);
        assert_eq!(s.count().unwrap(), 3);
    }

    #[test]
    fn survives_reopen_and_deletes() {
        let path = temp_db("reopen");
        let node = {
            let mut s = Store::open(&path).unwrap();
            reg(&mut s, "fcm", "dev", "", "d", "tok").unwrap().node
        };
        let mut s = Store::open(&path).unwrap();
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
        let path = temp_db("batch");
        let mut s = Store::open(&path).unwrap();
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
    fn stats_and_prune() {
        let path = temp_db("stats");
        let mut s = Store::open(&path).unwrap();
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
        assert_eq!(s.prune(unix_now() - 86_400).unwrap(), 1);
        assert_eq!(s.count().unwrap(), 2);
        assert!(s.get("fcm", "b", "").unwrap().is_some());
        assert!(s.get("fcm", "a", "").unwrap().is_none());
    }

    #[test]
    fn the_per_account_cap_evicts_the_least_recently_refreshed() {
        let path = temp_db("cap");
        let mut s = Store::open(&path).unwrap();
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
                    3,
                )
                .unwrap();
            // Make the refresh order explicit: dev0 oldest.
            s.conn
                .execute(
                    "UPDATE registration SET updated = ?1 WHERE device = ?2",
                    params![1000 + i, device],
                )
                .unwrap();
            assert_eq!(r.evicted, usize::from(i == 3));
            nodes.push(r.node);
        }
        assert_eq!(s.count().unwrap(), 3);
        assert!(s.lookup("example.com", &nodes[0]).unwrap().is_none());
        assert!(s.lookup("example.com", &nodes[3]).unwrap().is_some());
        // The salt is kept: the same JID gives the same key after reopening.
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.account_key("alice@example.com"), alice);
        // And another database gives another key.
        let other = Store::open(&temp_db("cap-other")).unwrap();
        assert_ne!(other.account_key("alice@example.com"), alice);
    }

    #[test]
    fn migrates_a_version_1_database() {
        let path = temp_db("v1");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute(
                "INSERT INTO registration VALUES ('fcm','d','','x.org','t','n','s',1,1)",
                [],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let v: i64 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        assert_eq!(s.lookup("x.org", "n").unwrap().unwrap().token, "t");
    }

    #[test]
    fn stored_domains_are_put_in_canonical_form_on_open() {
        let path = temp_db("domains");
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
        let at =
            |s: &Store, domain: &str, node: &str| s.lookup(domain, node).unwrap().map(|r| r.device);
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
        let path = temp_db("newer");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        match Store::open(&path) {
            Err(StoreError::TooNew { found: 99, .. }) => {}
            other => panic!("expected TooNew, got {:?}", other.map(|_| ())),
        }
    }
}
