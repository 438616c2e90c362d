//! PROTOCOL.md §5, "our own mistake must never look like a dead token": whether the
//! credentials a provider pushes with have proven good.
//!
//! FCM `SENDER_ID_MISMATCH` and APNs `BadDeviceToken`/`DeviceTokenNotForTopic`
//! ([`Outcome::DeadUnlessMisconfigured`](crate::push::Outcome)) are what one dead token
//! gets, and also what *every* push gets with the service account of another Firebase
//! project, the wrong APNs environment or the wrong bundle id. Such an answer deletes a
//! registration only once the same credentials have delivered a push: since this start,
//! or within [`PROOF_WINDOW`] before it (the time of the last delivery is kept in the
//! database's `meta` table with a fingerprint of the credentials, so a restart keeps
//! the proof and a changed service account, bundle id or environment does not).

use std::collections::HashMap;

use super::event::Service;
use crate::store::{Store, StoreError};

/// How long a delivery recorded before this start still proves the credentials: one
/// week. Long enough to span a restart on a quiet server, short enough that credentials
/// revoked or replaced meanwhile are proven afresh.
pub const PROOF_WINDOW_SECS: i64 = 7 * 86_400;

/// How often the time of the last delivery is written to the database (in seconds):
/// at most once an hour, not once per push.
pub const PROOF_WRITE_EVERY_SECS: i64 = 3600;

/// The `meta` key holding `FINGERPRINT UNIX-SECONDS` of the last recorded delivery.
fn meta_key(service: Service) -> String {
    format!("delivered:{}", service.as_str())
}

/// The proof state of one configured provider.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proof {
    /// The fingerprint of the credentials configured now.
    fingerprint: String,
    /// Whether these credentials delivered a push since this start.
    since_start: bool,
    /// The last delivery recorded in the database with this fingerprint (Unix seconds).
    recorded: Option<i64>,
    /// When this process last wrote the record (Unix seconds).
    written: Option<i64>,
}

/// The proof state of every configured provider.
#[derive(Debug, Default)]
pub struct Credentials {
    proofs: HashMap<Service, Proof>,
}

impl Credentials {
    /// Reads the recorded deliveries of `providers` (service and fingerprint of its
    /// credentials); a record made with other credentials proves nothing.
    pub fn load(store: &Store, providers: &[(Service, String)]) -> Result<Credentials, StoreError> {
        let mut proofs = HashMap::new();
        for (service, fingerprint) in providers {
            let recorded = store.meta(&meta_key(*service))?.and_then(|v| {
                let (fp, at) = v.split_once(' ')?;
                (fp == fingerprint).then(|| at.parse::<i64>().ok())?
            });
            proofs.insert(
                *service,
                Proof {
                    fingerprint: fingerprint.clone(),
                    since_start: false,
                    recorded,
                    written: None,
                },
            );
        }
        Ok(Credentials { proofs })
    }

    /// Whether `service`'s credentials have proven good at `now` (Unix seconds).
    pub fn proven(&self, service: Service, now: i64) -> bool {
        self.proofs.get(&service).is_some_and(|p| {
            p.since_start
                || p.recorded.is_some_and(|at| {
                    // A record from the future (the clock went back) proves nothing.
                    (0..=PROOF_WINDOW_SECS).contains(&now.saturating_sub(at))
                })
        })
    }

    /// `service` delivered a push at `now`. Returns the `meta` entry to write when the
    /// record is due (the first delivery of this process, then hourly).
    pub fn delivered(&mut self, service: Service, now: i64) -> Option<(String, String)> {
        let p = self.proofs.get_mut(&service)?;
        p.since_start = true;
        let due = p
            .written
            .is_none_or(|at| now.saturating_sub(at) >= PROOF_WRITE_EVERY_SECS || now < at);
        if !due {
            return None;
        }
        p.written = Some(now);
        p.recorded = Some(now);
        Some((meta_key(service), format!("{} {now}", p.fingerprint)))
    }
}
