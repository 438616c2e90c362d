//! The core: one thread owns the store, turns stanzas and push outcomes into replies.
//!
//! Invariants:
//! - every IQ get/set that arrives on the current connection gets exactly one reply;
//!   IQ results and errors, messages and presences get none;
//! - a reply that changes the store is sent only after the store committed it;
//! - a reply meant for an older connection is dropped, never sent on a new one;
//! - the core never waits for a push provider: pushes go to the worker pool and come
//!   back as [`Event::PushDone`].

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use minidom::Element;

use crate::config::Limits;
use crate::push::{Outcome, PushMessage};
use crate::store::{NewRegistration, Store, StoreError};
use crate::xmpp::command::{self, Action, Command, CommandNode, DeviceFields};
use crate::xmpp::jid::Jid;
use crate::xmpp::publish::Publish;
use crate::xmpp::stanza::{render, Condition, ErrorType, Iq, NotIq, ReplyTo, StanzaError};
pub use crate::xmpp::stream::SkipReason;
use crate::xmpp::{disco, ns};

/// A connection generation: increases with every successful handshake.
pub type Gen = u64;

/// What reaches the core thread.
#[derive(Debug)]
pub enum Event {
    /// A connection completed its handshake; replies may go to it.
    Connected(Gen),
    /// That connection is gone; pending replies for it are dropped.
    Disconnected(Gen),
    /// A top-level element received on that connection.
    Stanza(Gen, Element),
    /// Several, in order (what one read from the socket completed).
    Stanzas(Gen, Vec<Element>),
    /// A top-level element skipped by the parser (over the size or depth limit, or with
    /// a namespace error).
    Oversized(Gen, Oversized),
    /// A worker finished job `job`.
    PushDone {
        /// The job id given in [`Job::id`].
        job: u64,
        /// What the provider said.
        outcome: Outcome,
    },
    /// Stop: no more events will be handled.
    Shutdown,
}

/// What is known of a stanza the parser skipped: its start tag's addressing, when the
/// start tag itself was whole, and why it was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversized {
    /// Its local name (`iq`, `message`, …).
    pub name: String,
    /// Its `id`.
    pub id: Option<String>,
    /// Its `from`.
    pub from: Option<String>,
    /// Its `to`.
    pub to: Option<String>,
    /// Its `type`.
    pub kind: Option<String>,
    /// The stanza size limit, in bytes (the limit it exceeded when `why` is
    /// [`SkipReason::Size`]).
    pub limit: usize,
    /// Why it was skipped: its size, its depth or a namespace error, with the limit.
    pub why: SkipReason,
}

/// A push provider known to p2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Firebase Cloud Messaging (HTTP v1).
    Fcm,
    /// Apple Push Notification service.
    Apns,
}

impl Service {
    /// The name used in command nodes and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Fcm => "fcm",
            Service::Apns => "apns",
        }
    }

    /// The service named in a command node or a stored row.
    pub fn from_name(name: &str) -> Option<Service> {
        match name {
            "fcm" => Some(Service::Fcm),
            "apns" => Some(Service::Apns),
            _ => None,
        }
    }
}

/// A push for a worker.
#[derive(Debug, Clone)]
pub struct Job {
    /// Identifies the outcome coming back.
    pub id: u64,
    /// Which provider.
    pub service: Service,
    /// The account domain the push is for (the publishing server's), for sharing the
    /// workers fairly between domains.
    pub domain: String,
    /// What to send.
    pub message: PushMessage,
}

/// Hands a job to the worker pool; gives it back when the queue is full.
pub type Submit = Box<dyn FnMut(Job) -> Result<(), Job> + Send>;

/// A push waiting for its provider.
struct Pending {
    gen: Gen,
    reply: ReplyTo,
    domain: String,
    node: String,
    token: String,
    started: Instant,
}

/// The application core. Feed it events with [`App::handle_batch`]; it returns the
/// stanzas to write, each tagged with its connection.
pub struct App {
    jid: String,
    store: Store,
    services: Vec<Service>,
    submit: Submit,
    current: Option<Gen>,
    next_job: u64,
    pending: HashMap<u64, Pending>,
    counters: Counters,
    /// Whether the last push outcome was a failure (for state-change logging).
    failing: bool,
    limits: Limits,
    /// New registrations per domain in the current hour: (window start, count).
    new_per_domain: HashMap<String, (Instant, u32)>,
    /// Last delivered push per (domain, node), for coalescing floods.
    delivered_at: HashMap<String, Instant>,
    /// Limit refusals already logged this hour, per (kind, source domain).
    logged: HashMap<(&'static str, String), Instant>,
    /// Replies held until the open transaction commits.
    deferred: Vec<Deferred>,
    in_tx: bool,
}

/// Longest publish node accepted (p2's own are 12 characters).
pub const MAX_NODE_BYTES: usize = 256;
/// Longest publish secret accepted (p2's own are 24 characters).
pub const MAX_SECRET_BYTES: usize = 256;

/// Constant-time equality of two secrets (the length is not hidden).
fn secret_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn wait_error(text: &str) -> StanzaError {
    StanzaError::new(ErrorType::Wait, Condition::InternalServerError, text)
}

fn session_id() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
        .to_string()
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

/// What happened since the counters were last taken, for the periodic log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Pushes the provider accepted.
    pub delivered: u64,
    /// Publishes answered without a provider request (a push to the node was just
    /// delivered).
    pub coalesced: u64,
    /// Requests refused by a limit (sizes, rates).
    pub limited: u64,
    /// Pushes whose token was dead (registration deleted).
    pub dead: u64,
    /// Pushes answered `wait` (provider failing, queue full).
    pub failed: u64,
    /// New registrations.
    pub registered: u64,
    /// Refreshed registrations.
    pub renewed: u64,
    /// Unregistrations.
    pub unregistered: u64,
}

/// A reply held until the open transaction commits.
struct Deferred {
    gen: Gen,
    reply: ReplyTo,
    stanza: Element,
}

impl App {
    /// A core answering as `jid`, with the providers in `services` configured.
    pub fn new(
        jid: String,
        store: Store,
        services: Vec<Service>,
        limits: Limits,
        submit: Submit,
    ) -> App {
        App {
            jid,
            store,
            services,
            submit,
            current: None,
            next_job: 0,
            pending: HashMap::new(),
            counters: Counters::default(),
            failing: false,
            limits,
            new_per_domain: HashMap::new(),
            delivered_at: HashMap::new(),
            logged: HashMap::new(),
            deferred: Vec::new(),
            in_tx: false,
        }
    }

    /// The number of pushes waiting for a provider.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether a limit refusal of `kind` for `domain` should be logged: once per hour
    /// per source at most.
    fn first_this_hour(&mut self, kind: &'static str, domain: &str) -> bool {
        let hour = std::time::Duration::from_secs(3600);
        let now = Instant::now();
        if self.logged.len() > 10_000 {
            self.logged.retain(|_, t| now.duration_since(*t) < hour);
        }
        match self.logged.get(&(kind, domain.to_owned())) {
            Some(t) if now.duration_since(*t) < hour => false,
            _ => {
                self.logged.insert((kind, domain.to_owned()), now);
                true
            }
        }
    }

    /// Counts a new registration for `domain`; `false` when the domain is over its
    /// hourly budget.
    fn new_registration_allowed(&mut self, domain: &str) -> bool {
        let hour = std::time::Duration::from_secs(3600);
        let now = Instant::now();
        if self.new_per_domain.len() > 100_000 {
            self.new_per_domain
                .retain(|_, (start, _)| now.duration_since(*start) < hour);
        }
        let entry = self
            .new_per_domain
            .entry(domain.to_owned())
            .or_insert((now, 0));
        if now.duration_since(entry.0) >= hour {
            *entry = (now, 0);
        }
        entry.1 < self.limits.new_registrations_per_domain_hour
    }

    /// The counters since the last call, reset.
    pub fn take_counters(&mut self) -> Counters {
        std::mem::take(&mut self.counters)
    }

    /// The store, for the start-up summary.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Handles a batch of events. Writes of the batch share one transaction, committed
    /// before any reply that depends on it is returned. Returns the stanzas to send,
    /// each with the connection it is for.
    pub fn handle_batch(&mut self, events: impl IntoIterator<Item = Event>) -> Vec<(Gen, String)> {
        let mut out = Vec::new();
        for event in events {
            self.handle(event, &mut out);
        }
        if self.in_tx {
            self.in_tx = false;
            let committed = self.store.commit();
            if let Err(e) = &committed {
                log::error!("database commit failed: {e}");
                self.store.rollback();
            }
            for d in std::mem::take(&mut self.deferred) {
                let stanza = match &committed {
                    Ok(()) => d.stanza,
                    Err(_) => d.reply.error(&wait_error("storage failure")),
                };
                out.push((d.gen, render(&stanza)));
            }
        }
        out.retain(|(gen, _)| Some(*gen) == self.current);
        out
    }

    fn handle(&mut self, event: Event, out: &mut Vec<(Gen, String)>) {
        match event {
            Event::Connected(gen) => self.current = Some(gen),
            Event::Disconnected(gen) => {
                if self.current == Some(gen) {
                    self.current = None;
                }
            }
            Event::Stanza(gen, el) => {
                if Some(gen) == self.current {
                    self.stanza(gen, el, out);
                }
            }
            Event::Oversized(gen, o) => {
                if Some(gen) == self.current {
                    self.oversized(gen, o, out);
                }
            }
            Event::Stanzas(gen, els) => {
                if Some(gen) == self.current {
                    for el in els {
                        self.stanza(gen, el, out);
                    }
                }
            }
            Event::PushDone { job, outcome } => self.push_done(job, outcome, out),
            Event::Shutdown => {}
        }
    }

    /// A stanza skipped for its size: an IQ get/set still gets its one reply,
    /// `modify` `policy-violation`; anything else is dropped. Logged once an hour per
    /// source domain.
    fn oversized(&mut self, gen: Gen, o: Oversized, out: &mut Vec<(Gen, String)>) {
        self.counters.limited += 1;
        let domain = o.from.as_deref().map_or("?", domain_of).to_owned();
        if self.first_this_hour("stanza size", &domain) {
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
        let error = StanzaError::new(
            ErrorType::Modify,
            Condition::PolicyViolation,
            format!("stanza {}", o.why),
        );
        out.push((gen, render(&reply.error(&error))));
    }

    /// Opens the batch's transaction if it is not open yet.
    fn write_begin(&mut self) -> Result<(), StoreError> {
        if !self.in_tx {
            self.store.begin()?;
            self.in_tx = true;
        }
        Ok(())
    }

    fn stanza(&mut self, gen: Gen, el: Element, out: &mut Vec<(Gen, String)>) {
        let started = Instant::now();
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
        let (kind, answer) = self.request(&iq, &reply);
        let outcome = match &answer {
            Ok(Reply::Later) => "queued".to_owned(),
            Ok(_) => "result".to_owned(),
            Err(e) => e.to_string(),
        };
        log::debug!(
            "iq {kind} from {}: {outcome} in {} ms",
            iq.from.as_deref().map_or("-", domain_of),
            started.elapsed().as_millis()
        );
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
    fn request(&mut self, iq: &Iq, reply: &ReplyTo) -> (&'static str, Result<Reply, StanzaError>) {
        let unavailable = || StanzaError::bare(ErrorType::Cancel, Condition::ServiceUnavailable);
        let Some(payload) = &iq.payload else {
            return ("empty", Err(unavailable()));
        };
        let get = iq.kind == crate::xmpp::stanza::IqType::Get;
        match (payload.name(), payload.ns().as_str(), get) {
            ("query", ns::DISCO_INFO, true) => {
                ("disco#info", self.disco_info(payload.attr("node")))
            }
            ("query", ns::DISCO_ITEMS, true) => {
                ("disco#items", self.disco_items(payload.attr("node")))
            }
            ("ping", ns::PING, true) => ("ping", Ok(Reply::Now(None))),
            ("query", ns::VERSION, true) => (
                "version",
                Ok(Reply::Now(Some(disco::version(
                    "p2",
                    env!("CARGO_PKG_VERSION"),
                )))),
            ),
            ("command", ns::COMMANDS, false) => match Command::from_element(payload) {
                Some(cmd) => ("command", self.command(iq, &cmd)),
                None => (
                    "command",
                    Err(StanzaError::new(
                        ErrorType::Modify,
                        Condition::BadRequest,
                        "command without a node",
                    )),
                ),
            },
            ("pubsub", ns::PUBSUB, false) => match Publish::from_element(payload) {
                Some(publish) => ("publish", self.publish(iq, reply, publish)),
                None => ("pubsub", Err(unavailable())),
            },
            _ => ("unsupported", Err(unavailable())),
        }
    }

    /// The commands usable now: `(node, name)`.
    fn commands(&self) -> Vec<(String, String)> {
        let mut list = Vec::new();
        for s in &self.services {
            let name = match s {
                Service::Fcm => "FCM",
                Service::Apns => "APNs",
            };
            list.push((
                format!("register-push-{}", s.as_str()),
                format!("Register a device for {name} push"),
            ));
            list.push((
                format!("unregister-push-{}", s.as_str()),
                format!("Unregister a device from {name} push"),
            ));
        }
        list
    }

    fn disco_info(&self, node: Option<&str>) -> Result<Reply, StanzaError> {
        match node {
            None => Ok(Reply::Now(Some(disco::component_info()))),
            Some(node) => match self.commands().into_iter().find(|(n, _)| n == node) {
                Some((node, name)) => Ok(Reply::Now(Some(disco::command_info(&node, &name)))),
                None => Err(StanzaError::bare(
                    ErrorType::Cancel,
                    Condition::ItemNotFound,
                )),
            },
        }
    }

    fn disco_items(&self, node: Option<&str>) -> Result<Reply, StanzaError> {
        match node {
            None => Ok(Reply::Now(Some(disco::no_items(None)))),
            Some(ns::COMMANDS) => {
                let commands = self.commands();
                let list: Vec<(&str, &str)> = commands
                    .iter()
                    .map(|(n, name)| (n.as_str(), name.as_str()))
                    .collect();
                Ok(Reply::Now(Some(disco::command_items(&self.jid, &list))))
            }
            Some(_) => Err(StanzaError::bare(
                ErrorType::Cancel,
                Condition::ItemNotFound,
            )),
        }
    }

    /// PROTOCOL.md §4: `register-push-SERVICE` and `unregister-push-SERVICE`.
    fn command(&mut self, iq: &Iq, cmd: &Command) -> Result<Reply, StanzaError> {
        let (register, service_name) = match CommandNode::parse(&cmd.node) {
            Some(CommandNode::Register(s)) => (true, s),
            Some(CommandNode::Unregister(s)) => (false, s),
            None => {
                return Err(StanzaError::new(
                    ErrorType::Cancel,
                    Condition::ItemNotFound,
                    format!("unknown command {:?}", cmd.node),
                ))
            }
        };
        let service = Service::from_name(service_name).ok_or_else(|| {
            StanzaError::new(
                ErrorType::Cancel,
                Condition::ItemNotFound,
                format!("unknown push service {service_name:?}"),
            )
        })?;
        if !self.services.contains(&service) {
            return Err(StanzaError::new(
                ErrorType::Cancel,
                Condition::ServiceUnavailable,
                format!("{} is not configured on this app server", service.as_str()),
            ));
        }
        let sessionid = cmd.sessionid.clone().unwrap_or_else(session_id);
        match &cmd.action {
            Action::Execute => {}
            Action::Cancel => {
                return Ok(Reply::Now(Some(command::canceled(&cmd.node, &sessionid))))
            }
            Action::Other(a) => {
                return Err(StanzaError::new(
                    ErrorType::Modify,
                    Condition::BadRequest,
                    format!("action {a:?} is not supported by this command"),
                ))
            }
        }
        let from = iq.from.as_deref().unwrap_or("");
        let account = match Jid::parse(from) {
            Some(j) if j.local.is_some() => j,
            _ => {
                return Err(StanzaError::new(
                    ErrorType::Auth,
                    Condition::Forbidden,
                    "registration needs an account JID as sender",
                ))
            }
        };
        let fields = DeviceFields::from_form(cmd.form.as_ref(), register)?;
        #[cfg(feature = "apns")]
        if register
            && service == Service::Apns
            && !crate::push::apns::is_plausible_token(fields.token.as_deref().unwrap_or_default())
        {
            return Err(StanzaError::new(
                ErrorType::Modify,
                Condition::BadRequest,
                "field 'token' is not an APNs device token",
            ));
        }
        let device = command::hash_with_device(account.bare(from), &fields.device_id);
        let channel = fields.channel();
        let storage = |e: StoreError| {
            log::error!("database: {e}");
            wait_error("storage failure")
        };
        self.write_begin().map_err(storage)?;
        if register {
            let token = fields.token.as_deref().unwrap_or_default();
            let domain = account.domain;
            if !self.new_registration_allowed(domain) {
                // Over budget: renewals go on, new devices wait.
                let known = self
                    .store
                    .get(service.as_str(), &device, &channel)
                    .map_err(storage)?
                    .is_some();
                if !known {
                    self.counters.limited += 1;
                    if self.first_this_hour("registration rate", domain) {
                        log::warn!(
                            "{domain}: more than {} new registrations this hour; refusing more",
                            self.limits.new_registrations_per_domain_hour
                        );
                    }
                    return Err(StanzaError::new(
                        ErrorType::Wait,
                        Condition::ResourceConstraint,
                        "too many new registrations from this domain; try again later",
                    ));
                }
            }
            let account_key = self.store.account_key(account.bare(from));
            let r = self
                .store
                .register(
                    NewRegistration {
                        service: service.as_str(),
                        device: &device,
                        channel: &channel,
                        domain,
                        token,
                        account: Some(&account_key),
                    },
                    self.limits.registrations_per_account,
                )
                .map_err(storage)?;
            if r.created {
                if let Some(entry) = self.new_per_domain.get_mut(domain) {
                    entry.1 += 1;
                }
            }
            if r.evicted > 0 {
                log::debug!(
                    "{domain}: an account went over {} registrations; {} oldest removed",
                    self.limits.registrations_per_account,
                    r.evicted
                );
            }
            if r.created {
                self.counters.registered += 1;
            } else {
                self.counters.renewed += 1;
            }
            log::debug!(
                "{} {} registration for {}",
                if r.created { "new" } else { "renewed" },
                service.as_str(),
                account.domain
            );
            Ok(Reply::AfterCommit(Some(command::registered(
                &cmd.node, &sessionid, &self.jid, &r.node, &r.secret,
            ))))
        } else {
            let deleted = self
                .store
                .unregister(service.as_str(), &device, &channel)
                .map_err(storage)?;
            if deleted {
                self.counters.unregistered += 1;
                log::debug!(
                    "{} registration removed for {}",
                    service.as_str(),
                    account.domain
                );
                Ok(Reply::AfterCommit(Some(command::completed(
                    &cmd.node, &sessionid,
                ))))
            } else {
                Err(StanzaError::new(
                    ErrorType::Cancel,
                    Condition::ItemNotFound,
                    "no such registration",
                ))
            }
        }
    }

    /// PROTOCOL.md §5: look up, check the secret, hand to a worker.
    fn publish(
        &mut self,
        iq: &Iq,
        reply: &ReplyTo,
        publish: Publish,
    ) -> Result<Reply, StanzaError> {
        let forbidden = |text: &str| StanzaError::new(ErrorType::Auth, Condition::Forbidden, text);
        let from = iq.from.as_deref().unwrap_or("");
        let domain = match Jid::parse(from) {
            Some(j) if !j.is_full() => j.domain,
            Some(_) => return Err(forbidden("publish from a full JID")),
            None => return Err(forbidden("publish without a sender")),
        };
        let node = publish
            .node
            .as_deref()
            .ok_or_else(|| forbidden("publish without a node"))?;
        let secret = publish
            .secret
            .as_deref()
            .ok_or_else(|| forbidden("publish without a secret"))?;
        if node.len() > MAX_NODE_BYTES || secret.len() > MAX_SECRET_BYTES {
            self.counters.limited += 1;
            if self.first_this_hour("publish field size", domain) {
                log::warn!("{domain}: publish with an oversized node or secret refused");
            }
            return Err(forbidden("node or secret too long"));
        }
        let row = self.store.lookup(domain, node).map_err(|e| {
            log::error!("database: {e}");
            wait_error("storage failure")
        })?;
        let row = row.ok_or_else(|| {
            StanzaError::new(ErrorType::Cancel, Condition::ItemNotFound, "no such node")
        })?;
        if !secret_eq(secret, &row.secret) {
            return Err(forbidden("wrong secret"));
        }
        // Empty when coalescing is off: no key is built then.
        if !self.delivered_at.is_empty() {
            if let Some(at) = self.delivered_at.get(&coalesce_key(node, domain)) {
                if at.elapsed() < self.limits.coalesce {
                    // The phone is being woken already; FCM would collapse this one anyway.
                    self.counters.coalesced += 1;
                    return Ok(Reply::Now(None));
                }
            }
        }
        let service = Service::from_name(&row.service)
            .filter(|s| self.services.contains(s))
            .ok_or_else(|| wait_error(&format!("{} is not configured", row.service)))?;
        let id = self.next_job;
        self.next_job += 1;
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
            return Err(wait_error("push queue full"));
        }
        self.pending.insert(
            id,
            Pending {
                gen: self.current.unwrap_or_default(),
                reply: reply.clone(),
                domain: row.domain,
                node: row.node,
                token: row.token,
                started: Instant::now(),
            },
        );
        Ok(Reply::Later)
    }

    fn push_done(&mut self, job: u64, outcome: Outcome, out: &mut Vec<(Gen, String)>) {
        let Some(p) = self.pending.remove(&job) else {
            return;
        };
        let ms = p.started.elapsed().as_millis();
        let stanza = match &outcome {
            Outcome::Delivered => {
                self.counters.delivered += 1;
                if !self.limits.coalesce.is_zero() {
                    let now = Instant::now();
                    if self.delivered_at.len() > 100_000 {
                        let window = self.limits.coalesce;
                        self.delivered_at
                            .retain(|_, at| now.duration_since(*at) < window);
                    }
                    self.delivered_at
                        .insert(coalesce_key(&p.node, &p.domain), now);
                }
                if self.failing {
                    self.failing = false;
                    log::info!("pushes are delivered again");
                }
                log::debug!("push for {}: delivered in {ms} ms", p.domain);
                out.push((p.gen, p.reply.empty_result()));
                return;
            }
            Outcome::DeadToken { reason } => {
                self.counters.dead += 1;
                self.delivered_at.remove(&coalesce_key(&p.node, &p.domain));
                log::info!(
                    "push for {}: token dead ({reason}) in {ms} ms, registration deleted",
                    p.domain
                );
                let deleted = self
                    .write_begin()
                    .and_then(|()| self.store.delete_dead(&p.domain, &p.node, &p.token));
                if let Err(e) = deleted {
                    log::error!("database: {e}");
                }
                let err = StanzaError::new(
                    ErrorType::Cancel,
                    Condition::ItemNotFound,
                    "the device is no longer registered with its push service",
                );
                if self.in_tx {
                    self.deferred.push(Deferred {
                        gen: p.gen,
                        stanza: p.reply.error(&err),
                        reply: p.reply,
                    });
                    return;
                }
                p.reply.error(&err)
            }
            Outcome::DeadUnlessMisconfigured { reason, suspect } => {
                // Until the credentials have proven good, this may be our own mistake:
                // keep the registration and answer wait.
                self.counters.failed += 1;
                if !self.failing {
                    self.failing = true;
                    log::warn!("pushes are refused with {reason}: is {suspect}?");
                }
                p.reply.error(&wait_error("push not delivered"))
            }
            Outcome::Failed { reason, .. } => {
                self.counters.failed += 1;
                // One warning when pushes start failing, not one per push.
                if !self.failing {
                    self.failing = true;
                    log::warn!("pushes are failing: {reason}");
                }
                log::debug!("push for {}: failed ({reason}) in {ms} ms", p.domain);
                p.reply
                    .error(&wait_error(&format!("push not delivered: {reason}")))
            }
        };
        out.push((p.gen, render(&stanza)));
    }
}

/// The key of a node in the map of recent deliveries.
fn coalesce_key(node: &str, domain: &str) -> String {
    format!("{node}\0{domain}")
}

/// The domain of a JID string, for logs (never the local part).
fn domain_of(jid: &str) -> &str {
    Jid::parse(jid).map_or("?", |j| j.domain)
}
