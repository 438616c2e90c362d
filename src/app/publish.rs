//! PROTOCOL.md §5: the pubsub publish, and what each push outcome does to the store and
//! the reply.
//!
//! | outcome | store | reply |
//! |---|---|---|
//! | delivered | marks the row used (at most daily) | `result` |
//! | dead token, row still holds it | row deleted | `cancel` `item-not-found` (after commit) |
//! | dead token, row has a new token since | nothing | `wait` `internal-server-error` |
//! | dead unless misconfigured, credentials proven | as a dead token | as a dead token |
//! | dead unless misconfigured, not proven | nothing; one warning an hour | `wait` `internal-server-error` |
//! | failed | nothing | `wait` `internal-server-error` |

use super::{limits, reply, App, Gen, Job, Now, Reply, Service};
use crate::metrics::{Failure, Limit, Pushed, Removal};
use crate::push::{Cause, Outcome, PushMessage};
use crate::store::Found;
use crate::xmpp::jid::Jid;
use crate::xmpp::publish::Publish;
use crate::xmpp::stanza::{render, ReplyTo, StanzaError};

/// How old a registration's recorded use may get before a delivered push records it
/// again: one day, so a busy node costs one write a day, not one per push.
pub const USED_EVERY_SECS: i64 = 86_400;

/// A push waiting for its provider.
pub(super) struct Pending {
    gen: Gen,
    reply: ReplyTo,
    service: Service,
    domain: String,
    node: String,
    token: String,
    /// The row's recorded use when it was looked up.
    used: Option<i64>,
    started: std::time::Instant,
}

/// The domain a publish comes from: its sender must be a domain or a bare JID.
fn publisher_domain(from: Option<&str>) -> Result<String, StanzaError> {
    let from = from.unwrap_or("");
    match Jid::parse(from) {
        Ok(j) if !j.is_full() => Ok(j.domain().to_owned()),
        Ok(_) => Err(reply::forbidden("publish from a full JID")),
        Err(_) if from.is_empty() => Err(reply::forbidden("publish without a sender")),
        Err(_) => Err(reply::forbidden("publish from an invalid JID")),
    }
}

impl App {
    /// Looks the node up, checks the secret, and hands the push to a worker (or answers
    /// at once: coalesced, refused).
    pub(super) fn publish(
        &mut self,
        now: Now,
        gen: Gen,
        from: Option<&str>,
        reply: &ReplyTo,
        publish: Publish,
    ) -> Result<Reply, StanzaError> {
        let domain = publisher_domain(from)?;
        let node = publish
            .node
            .as_deref()
            .ok_or_else(|| reply::forbidden("publish without a node"))?;
        let secret = publish
            .secret
            .as_deref()
            .ok_or_else(|| reply::forbidden("publish without a secret"))?;
        if node.len() > limits::MAX_NODE_BYTES || secret.len() > limits::MAX_SECRET_BYTES {
            self.counters.limited += 1;
            crate::metrics::global().refused(Limit::FieldSize);
            if self
                .limits
                .first_this_hour("publish field size", &domain, now.mono)
            {
                log::warn!("{domain}: publish with an oversized node or secret refused");
            }
            return Err(reply::forbidden("node or secret too long"));
        }
        let found = self.store.lookup(&domain, node).map_err(|e| {
            log::error!("database: {e}");
            reply::storage_failure()
        })?;
        let Found {
            registration: row,
            used,
        } = found.ok_or_else(|| reply::not_found("no such node"))?;
        if !limits::secret_eq(secret, &row.secret) {
            return Err(reply::forbidden("wrong secret"));
        }
        if self.limits.coalesced(node, &domain, &row.token, now.mono) {
            // The phone is being woken already; the provider would collapse this one.
            self.counters.coalesced += 1;
            crate::metrics::global().coalesced(&row.service);
            return Ok(Reply::Now(None));
        }
        let service = Service::from_name(&row.service)
            .filter(|s| self.services.contains(s))
            .ok_or_else(|| {
                crate::metrics::global()
                    .unsent(&row.service, Failure::Provider(Cause::NotConfigured));
                reply::service_not_configured()
            })?;
        let id = self.next_job;
        self.next_job = self.next_job.wrapping_add(1);
        let job = Job {
            id,
            service,
            domain: row.domain.clone(),
            message: PushMessage {
                token: row.token.clone(),
                device: row.device,
                channel: row.channel,
                has_body: publish.has_body,
            },
        };
        if (self.submit)(job).is_err() {
            self.counters.failed += 1;
            crate::metrics::global().queue_full(service);
            return Err(reply::queue_full());
        }
        self.pending.insert(
            id,
            Pending {
                gen,
                reply: reply.clone(),
                service,
                domain: row.domain,
                node: row.node,
                token: row.token,
                used,
                started: now.mono,
            },
        );
        Ok(Reply::Later)
    }

    /// A worker's outcome for job `job`: the reply, and what it does to the store.
    pub(super) fn push_done(
        &mut self,
        now: Now,
        job: u64,
        outcome: Outcome,
        out: &mut Vec<(Gen, String)>,
    ) {
        let Some(p) = self.pending.remove(&job) else {
            return;
        };
        let elapsed = now.mono.saturating_duration_since(p.started);
        let pushed = match &outcome {
            Outcome::DeadUnlessMisconfigured { .. }
                if self.credentials.proven(p.service, now.unix) =>
            {
                Pushed::DeadToken
            }
            outcome => outcome.into(),
        };
        crate::metrics::global().push_done(p.service, pushed, elapsed);
        let ms = elapsed.as_millis();
        match outcome {
            Outcome::Delivered => {
                log::debug!("push for {}: delivered in {ms} ms", p.domain);
                self.delivered(now, &p);
                out.push((p.gen, p.reply.empty_result()));
            }
            Outcome::DeadToken { reason } => {
                log::debug!("push for {}: token dead ({reason}) in {ms} ms", p.domain);
                self.dead(now, p, &reason, out);
            }
            Outcome::DeadUnlessMisconfigured { reason, suspect } => {
                if self.credentials.proven(p.service, now.unix) {
                    log::debug!("push for {}: token dead ({reason}) in {ms} ms", p.domain);
                    self.dead(now, p, &reason, out);
                } else {
                    self.unproven(now, p, &reason, suspect, out);
                }
            }
            Outcome::Failed { reason, .. } => {
                self.counters.failed += 1;
                // One warning when pushes start failing, not one per push.
                if !self.failing {
                    self.failing = true;
                    log::warn!("pushes are failing: {reason}");
                }
                log::debug!("push for {}: failed ({reason}) in {ms} ms", p.domain);
                out.push((p.gen, render(&p.reply.error(&reply::not_delivered()))));
            }
        }
    }

    /// A delivered push: opens the node's coalescing window for this token, proves the
    /// credentials, and records the registration as used (at most daily).
    fn delivered(&mut self, now: Now, p: &Pending) {
        self.counters.delivered += 1;
        self.limits
            .delivered(&p.node, &p.domain, &p.token, now.mono);
        if self.failing {
            self.failing = false;
            log::info!("pushes are delivered again");
        }
        if let Some((key, value)) = self.credentials.delivered(p.service, now.unix) {
            self.write_quietly(now, |store| store.set_meta(&key, &value));
        }
        let stale = p
            .used
            .is_none_or(|at| now.unix.saturating_sub(at) >= USED_EVERY_SECS || now.unix < at);
        if stale {
            self.write_quietly(now, |store| store.mark_used(&p.domain, &p.node, now.unix));
        }
    }

    /// The provider says the token is dead: delete the registration if it still holds
    /// that token (`item-not-found` once committed); if the device registered a new
    /// token meanwhile, keep it and answer `wait`.
    fn dead(&mut self, now: Now, p: Pending, reason: &str, out: &mut Vec<(Gen, String)>) {
        self.limits.end_coalescing(&p.node, &p.domain);
        match self.write(now, |store| store.delete_dead(&p.domain, &p.node, &p.token)) {
            Ok(true) => {
                self.counters.dead += 1;
                crate::metrics::global().removed(Removal::DeadToken, 1);
                log::info!(
                    "push for {}: token dead ({reason}), registration deleted",
                    p.domain
                );
                self.deferred.push(super::Deferred {
                    gen: p.gen,
                    stanza: p.reply.error(&reply::dead_token()),
                    reply: p.reply,
                });
            }
            Ok(false) => {
                self.counters.failed += 1;
                log::info!(
                    "push for {}: token dead ({reason}), but the registration has another token or is gone: kept",
                    p.domain
                );
                out.push((p.gen, render(&p.reply.error(&reply::not_delivered()))));
            }
            Err(e) => out.push((p.gen, render(&p.reply.error(&e)))),
        }
    }

    /// A refusal that may be our own misconfiguration, before the credentials proved
    /// good: keep the registration, answer `wait`, warn once an hour naming the likely
    /// cause.
    fn unproven(
        &mut self,
        now: Now,
        p: Pending,
        reason: &str,
        suspect: &str,
        out: &mut Vec<(Gen, String)>,
    ) {
        self.counters.unproven += 1;
        if self
            .limits
            .first_this_hour("unproven credentials", p.service.as_str(), now.mono)
        {
            log::warn!(
                "{} refuses pushes with {reason} and these credentials have not delivered a push yet: \
                 is {suspect}? Registrations are kept (answered wait) until a push is delivered",
                p.service.display_name()
            );
        }
        out.push((p.gen, render(&p.reply.error(&reply::not_delivered()))));
    }
}
