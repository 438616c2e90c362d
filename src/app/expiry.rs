//! Automatic expiry (`limits.expireAfterDays`, default 180, 0 = never): registrations
//! neither refreshed by their device nor pushed to for that many days are deleted, about
//! hourly, in chunks of bounded work so the core never stalls on a large table.
//!
//! Why 180 days is safe: Conversations sends `register-push-fcm` every time it binds a
//! new XMPP session (`registerPushTokenOnServer` on bind, whenever push is available),
//! so an installation that is used at all refreshes its row far more often than twice a
//! year; a registration that is pushed to is marked in use (`used`, at most once a day)
//! and does not expire either. A row untouched on both counts for six months belongs to
//! an installation that is gone; FCM itself treats a token unused for 270 days as
//! expired.

use std::time::{Duration, Instant};

use super::{App, Now};
use crate::store::RowKey;

/// How often an expiry pass starts.
pub const EXPIRY_EVERY: Duration = Duration::from_secs(3600);
/// How long after the start the first pass runs (the start stays quick).
pub const EXPIRY_FIRST: Duration = Duration::from_secs(60);
/// Rows looked at per chunk; the loop handles events between chunks.
pub const EXPIRY_CHUNK: usize = 1000;
/// How long to wait after a chunk failed (the database locked by an admin command).
pub const EXPIRY_RETRY: Duration = Duration::from_secs(60);

/// Where the expiry stands.
pub struct Expiry {
    /// When the next chunk is due.
    pub due: Instant,
    /// The pass under way: where it goes on from, and what it deleted so far.
    pass: Option<(Option<RowKey>, u64)>,
}

impl Expiry {
    /// The first pass shortly after `start`.
    pub fn new(start: Instant) -> Expiry {
        Expiry {
            due: start + EXPIRY_FIRST,
            pass: None,
        }
    }
}

impl App {
    /// One chunk of the expiry pass, if due at `now`.
    pub(super) fn expire(&mut self, now: Now) {
        let days = self.limits.config.expire_after_days;
        if days == 0 || now.mono < self.expiry.due {
            return;
        }
        let cutoff = now
            .unix
            .saturating_sub(i64::from(days).saturating_mul(86_400));
        let (after, so_far) = self.expiry.pass.take().unwrap_or((None, 0));
        let chunk = self.store.begin().and_then(|()| {
            let r = self
                .store
                .expire_chunk(after.as_ref(), cutoff, EXPIRY_CHUNK);
            match r {
                Ok(e) => self.store.commit().map(|()| e),
                Err(e) => {
                    self.store.rollback();
                    Err(e)
                }
            }
        });
        match chunk {
            Ok(e) => {
                self.counters.expired = self.counters.expired.saturating_add(e.deleted);
                crate::metrics::global().removed(crate::metrics::Removal::Expired, e.deleted);
                let deleted = so_far.saturating_add(e.deleted);
                match e.next {
                    Some(next) => {
                        self.expiry.pass = Some((Some(next), deleted));
                        self.expiry.due = now.mono;
                    }
                    None => {
                        if deleted > 0 {
                            log::info!(
                                "expired {deleted} registrations neither refreshed nor pushed to for {days} days"
                            );
                        }
                        self.expiry.due = now.mono + EXPIRY_EVERY;
                    }
                }
            }
            Err(e) => {
                log::warn!("expiry postponed: database: {e}");
                self.store.rollback();
                self.expiry.pass = Some((after, so_far));
                self.expiry.due = now.mono + EXPIRY_RETRY;
            }
        }
    }
}
