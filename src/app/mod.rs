//! The core: one thread owns the store, turns stanzas and push outcomes into replies.
//!
//! Where each rule lives:
//! - [`event`]: what comes in (stanzas, push outcomes) and goes to the workers (jobs);
//! - this file: the batch and its transaction, dispatch of each IQ;
//! - [`register`]: PROTOCOL.md §4, `register-push-*` and `unregister-push-*`;
//! - [`publish`]: PROTOCOL.md §5, the publish and what each push outcome does;
//! - [`credentials`]: when a "dead unless misconfigured" answer may delete;
//! - [`limits`]: rate budget, coalescing, field sizes, log-once;
//! - [`expiry`]: the automatic expiry, `limits.expireAfterDays`;
//! - [`disco`]: disco#info, disco#items, ping, version;
//! - [`reply`]: every error reply and its generic text;
//! - [`run`]: the core thread's loop (the only code here that reads the clock).
//!
//! Invariants:
//! - every IQ get/set that arrives on the current connection gets exactly one reply;
//!   IQ results and errors, messages and presences get none;
//! - a reply that changes the store is sent only after the store committed it;
//! - each request's writes sit in a savepoint of the batch's transaction: one failed
//!   write undoes and answers (`wait`) only its own request; once the transaction could
//!   not start (another process holds the lock), the batch's other writes fail at once;
//! - a reply meant for an older connection is dropped, never sent on a new one;
//! - the core never waits for a push provider: pushes go to the worker pool and come
//!   back as [`Event::PushDone`];
//! - time is an argument ([`Now`]): nothing here but [`run`] reads a clock.

mod credentials;
mod disco;
pub mod event;
mod expiry;
pub mod limits;
mod publish;
mod register;
pub mod reply;
pub mod run;

use std::collections::HashMap;
use std::time::Instant;

use minidom::Element;

use self::credentials::Credentials;
pub use self::credentials::{PROOF_WINDOW_SECS, PROOF_WRITE_EVERY_SECS};
pub use self::event::{Event, Gen, Job, Oversized, Received, Service, Submit};
use self::expiry::Expiry;
pub use self::expiry::{EXPIRY_CHUNK, EXPIRY_EVERY, EXPIRY_FIRST};
use self::limits::Limiter;
pub use self::limits::{MAX_NODE_BYTES, MAX_SECRET_BYTES};
use self::publish::Pending;
use crate::config::Limits;
use crate::store::{Store, StoreError};
use crate::xmpp::command::Command;
use crate::xmpp::ns;
use crate::xmpp::publish::{Publish, PublishIq};
use crate::xmpp::stanza::{render, Iq, IqType, NotIq, ReplyTo, StanzaError};
pub use crate::xmpp::stream::SkipReason;

/// The time of an event, as the caller read it: the core never reads a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// The monotonic instant, for windows and timers.
    pub mono: Instant,
    /// The wall clock in Unix seconds, for what is stored.
    pub unix: i64,
}

/// A configured push provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// Which one.
    pub service: Service,
    /// A short hash of the credentials it pushes with (FCM: project, service account,
    /// key id; APNs: endpoint, bundle id, key or certificate). A change of it means the
    /// credentials must prove good again (see [`PROOF_WINDOW_SECS`]).
    pub fingerprint: String,
}

/// What the core is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The component's JID: `from` of replies, `jid` of registrations.
    pub jid: String,
    /// The providers configured, with their credentials' fingerprints.
    pub providers: Vec<Provider>,
    /// The limits (`limits` of the configuration).
    pub limits: Limits,
}

/// What happened since the counters were last taken, for the periodic log line and the
/// metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Pushes the provider accepted.
    pub delivered: u64,
    /// Publishes answered without a provider request (a push to the node was just
    /// delivered).
    pub coalesced: u64,
    /// Requests refused by a limit (sizes, rates, the per-domain cap).
    pub limited: u64,
    /// New registrations refused because their domain holds
    /// `limits.registrationsPerDomain` already (also counted in `limited`).
    pub domain_full: u64,
    /// Registrations deleted because the provider said their token is dead.
    pub dead: u64,
    /// Pushes answered `wait` (provider failing, queue full, a dead answer for a token
    /// that changed meanwhile).
    pub failed: u64,
    /// Pushes answered `wait` because the provider's answer may mean our own
    /// misconfiguration and the credentials have not proven good yet.
    pub unproven: u64,
    /// New registrations.
    pub registered: u64,
    /// Refreshed registrations.
    pub renewed: u64,
    /// Unregistrations.
    pub unregistered: u64,
    /// Registrations deleted by the automatic expiry.
    pub expired: u64,
    /// Writes that failed because another process held the database's write lock for
    /// longer than the busy timeout (each one such wait).
    pub busy: u64,
}

/// How long writes no reply waits for are skipped after the database was found locked.
const BUSY_BACKOFF: std::time::Duration = std::time::Duration::from_secs(10);

/// The state of the batch's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tx {
    /// No write yet in this batch.
    Idle,
    /// Open; each request writes in a savepoint of it.
    Open,
    /// It could not start, or SQLite rolled it back: the batch's writes fail at once
    /// and its held replies become `wait`.
    Failed,
}

/// The answer to one request.
enum Reply {
    /// A result with this payload, sent at once.
    Now(Option<Element>),
    /// A result with this payload, sent when the batch's transaction has committed.
    AfterCommit(Option<Element>),
    /// A push went to a worker; the reply comes with its outcome.
    Later,
}

/// A reply held until the open transaction commits.
struct Deferred {
    gen: Gen,
    reply: ReplyTo,
    stanza: Element,
}

/// The application core. Feed it events with [`App::handle_batch`] and call
/// [`App::tick`] when [`App::next_timer`] is due; it returns the stanzas to write, each
/// tagged with its connection.
pub struct App {
    jid: String,
    store: Store,
    services: Vec<Service>,
    submit: Submit,
    current: Option<Gen>,
    next_job: u64,
    next_session: u64,
    pending: HashMap<u64, Pending>,
    counters: Counters,
    /// Whether the last push outcome was a failure (for state-change logging).
    failing: bool,
    limits: Limiter,
    credentials: Credentials,
    expiry: Expiry,
    /// Replies held until the open transaction commits.
    deferred: Vec<Deferred>,
    tx: Tx,
    /// Until when writes that no reply waits for (marking a registration used,
    /// recording a delivery) are skipped: the database was locked by another process.
    busy_until: Option<Instant>,
}

impl App {
    /// A core answering as `settings.jid` with `store`, handing pushes to `submit`,
    /// started at `now`. Reads the credentials' recorded deliveries from the store.
    pub fn new(
        settings: Settings,
        store: Store,
        submit: Submit,
        now: Now,
    ) -> Result<App, StoreError> {
        let fingerprints: Vec<(Service, String)> = settings
            .providers
            .iter()
            .map(|p| (p.service, p.fingerprint.clone()))
            .collect();
        let credentials = Credentials::load(&store, &fingerprints)?;
        Ok(App {
            jid: settings.jid,
            store,
            services: settings.providers.iter().map(|p| p.service).collect(),
            submit,
            current: None,
            next_job: 0,
            next_session: 0,
            pending: HashMap::new(),
            counters: Counters::default(),
            failing: false,
            limits: Limiter::new(settings.limits),
            credentials,
            expiry: Expiry::new(now.mono),
            deferred: Vec::new(),
            tx: Tx::Idle,
            busy_until: None,
        })
    }

    /// The number of pushes waiting for a provider.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The counters since the last call, reset.
    pub fn take_counters(&mut self) -> Counters {
        std::mem::take(&mut self.counters)
    }

    /// The store, for the start-up summary and tests.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// When [`App::tick`] has work next (the expiry), if ever.
    pub fn next_timer(&self) -> Option<Instant> {
        (self.limits.config.expire_after_days > 0).then_some(self.expiry.due)
    }

    /// Runs the timers due at `now`: one chunk of the expiry pass. Never called with a
    /// batch open.
    pub fn tick(&mut self, now: Now) {
        self.expire(now);
    }

    /// Handles a batch of events at `now`. Writes of the batch share one transaction,
    /// committed before any reply that depends on it is returned. Returns the stanzas
    /// to send, each with the connection it is for.
    pub fn handle_batch(
        &mut self,
        now: Now,
        events: impl IntoIterator<Item = Event>,
    ) -> Vec<(Gen, String)> {
        let mut out = Vec::new();
        for event in events {
            self.handle(now, event, &mut out);
        }
        self.finish_batch(&mut out);
        out.retain(|(gen, _)| Some(*gen) == self.current);
        out
    }

    fn handle(&mut self, now: Now, event: Event, out: &mut Vec<(Gen, String)>) {
        match event {
            Event::Connected(gen) => self.current = Some(gen),
            Event::Disconnected(gen) => {
                if self.current == Some(gen) {
                    self.current = None;
                }
            }
            Event::Stanza(gen, el) => {
                if Some(gen) == self.current {
                    self.stanza(now, gen, el, out);
                }
            }
            Event::Stanzas(gen, els) => {
                if Some(gen) == self.current {
                    for received in els {
                        match received {
                            Received::Element(el) => self.stanza(now, gen, el, out),
                            Received::Publish(p) => self.publish_iq(now, gen, p, out),
                        }
                    }
                }
            }
            Event::Oversized(gen, o) => {
                if Some(gen) == self.current {
                    self.oversized(now, gen, o, out);
                }
            }
            Event::PushDone { job, outcome } => self.push_done(now, job, outcome, out),
            Event::Shutdown => {}
        }
    }

    /// Commits the batch's transaction and releases the replies held for it: as they
    /// are when the commit succeeded, `wait` when it failed or never started.
    fn finish_batch(&mut self, out: &mut Vec<(Gen, String)>) {
        let committed = match self.tx {
            Tx::Idle => true,
            Tx::Open => match crate::metrics::global().commit(|| self.store.commit()) {
                Ok(()) => true,
                Err(e) => {
                    log::error!("database commit failed: {e}");
                    self.store.rollback();
                    false
                }
            },
            Tx::Failed => {
                self.store.rollback();
                false
            }
        };
        self.tx = Tx::Idle;
        for d in std::mem::take(&mut self.deferred) {
            let stanza = if committed {
                d.stanza
            } else {
                d.reply.error(&reply::storage_failure())
            };
            out.push((d.gen, render(&stanza)));
        }
    }

    /// Runs one request's writes in a savepoint of the batch's transaction (opened on
    /// the first write). A failure undoes that request's writes alone and is answered
    /// `wait`; after the transaction failed to start, or was rolled back by SQLite,
    /// every further write of the batch fails at once.
    fn write<T>(
        &mut self,
        now: Now,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StanzaError> {
        match self.tx {
            Tx::Failed => return Err(reply::storage_failure()),
            Tx::Open => {}
            Tx::Idle => match self.store.begin() {
                Ok(()) => self.tx = Tx::Open,
                Err(e) => {
                    self.write_failed(now, "cannot start a transaction", &e);
                    self.tx = Tx::Failed;
                    return Err(reply::storage_failure());
                }
            },
        }
        if let Err(e) = self.store.savepoint() {
            self.write_failed(now, "savepoint", &e);
            self.tx = Tx::Failed;
            return Err(reply::storage_failure());
        }
        match f(&mut self.store) {
            Ok(v) => match self.store.release() {
                Ok(()) => Ok(v),
                Err(e) => {
                    self.write_failed(now, "release", &e);
                    self.tx = Tx::Failed;
                    Err(reply::storage_failure())
                }
            },
            Err(e) => {
                self.write_failed(now, "write", &e);
                if self.store.rollback_to().is_err() || !self.store.in_transaction() {
                    self.tx = Tx::Failed;
                }
                Err(reply::storage_failure())
            }
        }
    }

    /// Logs a failed write; a lock held by another process is counted, and writes no
    /// reply waits for pause for [`BUSY_BACKOFF`].
    fn write_failed(&mut self, now: Now, what: &str, e: &StoreError) {
        log::error!("database: {what}: {e}");
        if e.is_busy() {
            self.counters.busy += 1;
            self.busy_until = Some(now.mono + BUSY_BACKOFF);
        }
    }

    /// A write no reply waits for (marking a registration used, recording a delivery):
    /// skipped for [`BUSY_BACKOFF`] after the database was found locked, so a long
    /// `p2 import` does not cost every batch a busy wait; a failure is only logged.
    fn write_quietly(&mut self, now: Now, f: impl FnOnce(&mut Store) -> Result<(), StoreError>) {
        if self.busy_until.is_some_and(|until| now.mono < until) {
            return;
        }
        let _ = self.write(now, f);
    }

    fn stanza(&mut self, now: Now, gen: Gen, el: Element, out: &mut Vec<(Gen, String)>) {
        let iq = match Iq::from_element(el) {
            Ok(iq) => iq,
            Err(NotIq::Other) => return,
            Err(NotIq::Malformed(why)) => {
                log::debug!("dropped: {why}");
                return;
            }
        };
        if !iq.wants_reply() {
            return;
        }
        let reply = iq.reply_to(&self.jid);
        let (kind, answer) = self.request(now, gen, &iq, &reply);
        log_answer(kind, iq.from.as_deref(), &answer);
        self.answer(gen, reply, answer, out);
    }

    /// A publish read by the stream parser's fast path: what [`App::stanza`] does with
    /// the IQ it stands for.
    fn publish_iq(&mut self, now: Now, gen: Gen, iq: PublishIq, out: &mut Vec<(Gen, String)>) {
        let reply = ReplyTo {
            id: iq.id,
            to: iq.from,
            from: iq.to.unwrap_or_else(|| self.jid.clone()),
        };
        let answer = self.publish(now, gen, reply.to.as_deref(), &reply, iq.publish);
        log_answer("publish", reply.to.as_deref(), &answer);
        self.answer(gen, reply, answer, out);
    }

    /// Hands the answer to a request on: now, after the commit, or later.
    fn answer(
        &mut self,
        gen: Gen,
        reply: ReplyTo,
        answer: Result<Reply, StanzaError>,
        out: &mut Vec<(Gen, String)>,
    ) {
        match answer {
            Ok(Reply::Now(None)) => out.push((gen, reply.empty_result())),
            Ok(Reply::Now(payload)) => out.push((gen, render(&reply.result(payload)))),
            Ok(Reply::AfterCommit(payload)) => self.deferred.push(Deferred {
                gen,
                stanza: reply.result(payload),
                reply,
            }),
            Ok(Reply::Later) => {}
            Err(e) => out.push((gen, render(&reply.error(&e)))),
        }
    }

    /// Dispatches on the payload. Returns a name for the log and the answer.
    fn request(
        &mut self,
        now: Now,
        gen: Gen,
        iq: &Iq,
        reply: &ReplyTo,
    ) -> (&'static str, Result<Reply, StanzaError>) {
        let Some(payload) = &iq.payload else {
            return ("empty", Err(reply::unsupported()));
        };
        let get = iq.kind == IqType::Get;
        match (payload.name(), payload.ns().as_str(), get) {
            ("query", ns::DISCO_INFO, true) => {
                ("disco#info", self.disco_info(payload.attr("node")))
            }
            ("query", ns::DISCO_ITEMS, true) => {
                ("disco#items", self.disco_items(payload.attr("node")))
            }
            ("ping", ns::PING, true) => ("ping", Ok(Reply::Now(None))),
            ("query", ns::VERSION, true) => ("version", Ok(disco::version())),
            ("command", ns::COMMANDS, false) => match Command::from_element(payload) {
                Some(cmd) => ("command", self.command(now, iq, &cmd)),
                None => ("command", Err(reply::bad_request("command without a node"))),
            },
            ("pubsub", ns::PUBSUB, false) => match Publish::from_element(payload) {
                Some(publish) => (
                    "publish",
                    self.publish(now, gen, iq.from.as_deref(), reply, publish),
                ),
                None => ("pubsub", Err(reply::unsupported())),
            },
            _ => ("unsupported", Err(reply::unsupported())),
        }
    }

    /// A stanza the parser skipped for its size or depth: an IQ get/set still gets its
    /// one reply, `wait` `policy-violation`; anything else is dropped. Logged once an
    /// hour per source domain.
    fn oversized(&mut self, now: Now, gen: Gen, o: Oversized, out: &mut Vec<(Gen, String)>) {
        self.counters.limited += 1;
        crate::metrics::global().refused(crate::metrics::Limit::StanzaSize);
        let domain = o.from.as_deref().map_or("?", domain_of).to_owned();
        if self
            .limits
            .first_this_hour("stanza size", &domain, now.mono)
        {
            log::warn!("{domain}: <{}/> {} skipped", o.name, o.why);
        }
        let wants_reply = o.name == "iq" && matches!(o.kind.as_deref(), Some("get" | "set"));
        let Some(id) = o.id.filter(|_| wants_reply) else {
            return;
        };
        let reply = ReplyTo {
            id,
            to: o.from,
            from: o.to.unwrap_or_else(|| self.jid.clone()),
        };
        out.push((gen, render(&reply.error(&reply::oversized()))));
    }
}

/// The debug line of an answered request.
fn log_answer(kind: &str, from: Option<&str>, answer: &Result<Reply, StanzaError>) {
    log::debug!(
        "iq {kind} from {}: {}",
        from.map_or("-", domain_of),
        match answer {
            Ok(Reply::Later) => "queued".to_owned(),
            Ok(_) => "result".to_owned(),
            Err(e) => e.to_string(),
        }
    );
}

/// The domain of a JID string, for logs (never the local part).
fn domain_of(jid: &str) -> &str {
    crate::xmpp::jid::raw_domain(jid).unwrap_or("?")
}
