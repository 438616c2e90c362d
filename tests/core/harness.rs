//! The core in-process under the test's control: real stanzas in (parsed by the real
//! stream parser), a fake provider whose outcomes the test chooses, a clock the test
//! moves, a real SQLite file. Replies are read back with an XML parser of their own
//! (roxmltree), never with p2's.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use p2::app::{App, Event, Gen, Job, Now, Oversized, Provider, Service, Settings};
use p2::config::Limits;
use p2::push::{Cause, Outcome};
use p2::store::{Registration, Store};
use p2::xmpp::stream::{StreamEvent, StreamParser};

pub use crate::common::scratch::Scratch;
pub use crate::common::stanzas::*;

/// The fingerprint the harness's FCM credentials have.
pub const FINGERPRINT: &str = "0123456789abcdef";

const HEADER: &str = "<stream:stream xmlns='jabber:component:accept' \
                      xmlns:stream='http://etherx.jabber.org/streams' id='x'>";

/// Parses one stanza as it would come off the component stream.
pub fn element(stanza: &str) -> minidom::Element {
    let mut parser = StreamParser::new(1 << 20);
    parser.feed(HEADER.as_bytes()).unwrap();
    let events = parser.feed(stanza.as_bytes()).unwrap();
    let mut stanzas = events.into_iter().filter_map(|e| match e {
        StreamEvent::Stanza(el) => Some(el),
        _ => None,
    });
    let el = stanzas.next().expect("one stanza");
    assert!(stanzas.next().is_none(), "more than one stanza");
    el
}

/// A reply read with roxmltree: `result`, or `error TYPE CONDITION`.
pub fn summary(reply: &str) -> String {
    let doc = roxmltree::Document::parse(reply).unwrap_or_else(|e| panic!("{e}: {reply}"));
    let iq = doc.root_element();
    assert_eq!(iq.tag_name().name(), "iq", "{reply}");
    assert_eq!(
        iq.tag_name().namespace(),
        Some("jabber:component:accept"),
        "{reply}"
    );
    match iq.attribute("type") {
        Some("result") => "result".into(),
        Some("error") => {
            let error = iq
                .children()
                .find(|c| c.has_tag_name(("jabber:component:accept", "error")))
                .unwrap_or_else(|| panic!("no <error/> in the component namespace: {reply}"));
            let condition = error
                .children()
                .find(|c| {
                    c.is_element()
                        && c.tag_name().namespace() == Some("urn:ietf:params:xml:ns:xmpp-stanzas")
                        && c.tag_name().name() != "text"
                })
                .unwrap_or_else(|| panic!("no condition: {reply}"));
            format!(
                "error {} {}",
                error.attribute("type").unwrap_or("?"),
                condition.tag_name().name()
            )
        }
        other => panic!("a reply of type {other:?}: {reply}"),
    }
}

/// The `<text/>` of an error reply.
pub fn error_text(reply: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(reply).unwrap();
    doc.descendants()
        .find(|n| n.has_tag_name(("urn:ietf:params:xml:ns:xmpp-stanzas", "text")))
        .and_then(|n| n.text().map(str::to_owned))
}

/// An attribute of the reply's `<iq/>`.
pub fn iq_attr(reply: &str, name: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(reply).unwrap();
    doc.root_element().attribute(name).map(str::to_owned)
}

/// The node and secret a registration reply gives.
pub fn node_and_secret(reply: &str) -> (String, String) {
    let doc = roxmltree::Document::parse(reply).unwrap_or_else(|e| panic!("{e}: {reply}"));
    let value = |var: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name(("jabber:x:data", "field")) && n.attribute("var") == Some(var))
            .and_then(|f| {
                f.children()
                    .find(|c| c.has_tag_name(("jabber:x:data", "value")))
            })
            .and_then(|v| v.text())
            .unwrap_or_else(|| panic!("no {var} in {reply}"))
            .to_owned()
    };
    (value("node"), value("secret"))
}

/// A provider failure with a reason full of details that must stay in the log.
pub fn failed() -> Outcome {
    Outcome::failed(
        Cause::ProviderError,
        "fcm http 503 UNAVAILABLE projects/p2-secret",
    )
}

/// FCM `UNREGISTERED`.
pub fn dead() -> Outcome {
    Outcome::DeadToken {
        reason: "UNREGISTERED".into(),
    }
}

/// FCM `SENDER_ID_MISMATCH`.
pub fn mismatch() -> Outcome {
    Outcome::DeadUnlessMisconfigured {
        reason: "SENDER_ID_MISMATCH".into(),
        suspect: "fcm.serviceAccountFile of another Firebase project",
    }
}

/// A stored row, read through a connection of the test's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub device: String,
    pub domain: String,
    pub token: String,
    pub node: String,
    pub secret: String,
}

/// The core, its store in a scratch file, the jobs it handed out, the test's clock.
pub struct Core {
    pub app: App,
    pub dir: Scratch,
    /// Jobs handed to the fake provider and not yet finished, oldest first.
    pub jobs: Arc<Mutex<VecDeque<Job>>>,
    /// Every job ever handed out.
    pub submitted: Arc<Mutex<Vec<Job>>>,
    /// When set, the fake pool refuses jobs (queue full).
    pub queue_full: Arc<Mutex<bool>>,
    pub now: Now,
    pub gen: Gen,
    pub settings: Settings,
    pub busy_timeout: Option<Duration>,
}

impl Core {
    /// A core with the default limits, FCM configured, and the registrations the
    /// publishes of PROTOCOL.md go to.
    pub fn new() -> Core {
        Core::with_limits(Limits::default())
    }

    /// The same with other limits.
    pub fn with_limits(limits: Limits) -> Core {
        Core::build(
            limits,
            "push.localhost",
            &[Service::Fcm],
            Scratch::in_memory("core"),
        )
    }

    /// The same answering as `jid`.
    pub fn with_jid(jid: &str) -> Core {
        Core::build(
            Limits::default(),
            jid,
            &[Service::Fcm],
            Scratch::in_memory("core"),
        )
    }

    /// The same with these providers configured (their fingerprint [`FINGERPRINT`]).
    pub fn with_providers(services: &[Service]) -> Core {
        Core::build(
            Limits::default(),
            "push.localhost",
            services,
            Scratch::in_memory("core"),
        )
    }

    /// The same with its database in `dir`.
    pub fn in_dir(limits: Limits, dir: Scratch) -> Core {
        Core::build(limits, "push.localhost", &[Service::Fcm], dir)
    }

    fn build(limits: Limits, jid: &str, services: &[Service], dir: Scratch) -> Core {
        capture::start();
        let db = dir.join("p2.sqlite");
        {
            let mut store = Store::open(&db).unwrap();
            // printf 'alice@localhost\0prosody' | sha1sum, and with ejabberd.
            let devices = [
                "42c8a5231ea8fc42a9e434c050de72cc71d330e1",
                "3341ab3dc54d1c395efb82e187329d0d70734841",
            ];
            for ((domain, node, secret), device) in
                [PROSODY_NODE, EJABBERD_NODE].into_iter().zip(devices)
            {
                store
                    .put(&Registration {
                        service: "fcm".into(),
                        device: device.into(),
                        channel: String::new(),
                        domain: domain.into(),
                        token: format!("token-of-{node}"),
                        node: node.into(),
                        secret: secret.into(),
                    })
                    .unwrap();
            }
        }
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let now = Now {
            mono: Instant::now(),
            unix,
        };
        let settings = Settings {
            jid: jid.into(),
            providers: services
                .iter()
                .map(|&service| Provider {
                    service,
                    fingerprint: FINGERPRINT.into(),
                })
                .collect(),
            limits,
        };
        let jobs: Arc<Mutex<VecDeque<Job>>> = Arc::default();
        let submitted: Arc<Mutex<Vec<Job>>> = Arc::default();
        let queue_full: Arc<Mutex<bool>> = Arc::default();
        let app = start(&db, &settings, now, &jobs, &submitted, &queue_full, None);
        let mut core = Core {
            app,
            dir,
            jobs,
            submitted,
            queue_full,
            now,
            gen: 0,
            settings,
            busy_timeout: None,
        };
        core.connect();
        core
    }

    pub fn db(&self) -> PathBuf {
        self.dir.join("p2.sqlite")
    }

    /// A new process: the store reopened from its file, a new core (what was in
    /// flight is lost with the old one), a new connection.
    pub fn restart(&mut self) {
        self.jobs.lock().unwrap().clear();
        self.app = start(
            &self.db(),
            &self.settings,
            self.now,
            &self.jobs,
            &self.submitted,
            &self.queue_full,
            self.busy_timeout,
        );
        self.connect();
    }

    /// `p2 import` of `text` (a Java p2 export) into the store, while stopped, then a
    /// restart: what the operator does at migration.
    pub fn import(&mut self, text: &str) -> p2::import::Report {
        let mut store = Store::open(&self.db()).unwrap();
        let report = p2::import::import(&mut store, text).unwrap();
        drop(store);
        self.restart();
        report
    }

    /// The first connection of a process comes up.
    fn connect(&mut self) {
        self.gen = 1;
        let out = self.app.handle_batch(self.now, [Event::Connected(1)]);
        assert!(out.is_empty());
    }

    /// The connection drops and a new one comes up.
    pub fn reconnect(&mut self) {
        let old = self.gen;
        self.gen += 1;
        let out = self.app.handle_batch(
            self.now,
            [Event::Disconnected(old), Event::Connected(self.gen)],
        );
        assert!(out.is_empty());
    }

    /// Moves the clock on by `d` and runs the timers that are due.
    pub fn advance(&mut self, d: Duration) {
        self.now.mono += d;
        self.now.unix += d.as_secs() as i64;
        while self.app.next_timer().is_some_and(|t| t <= self.now.mono) {
            self.app.tick(self.now);
        }
    }

    /// Sends `stanzas` in one batch; the replies that come out of it.
    pub fn send(&mut self, stanzas: &[&str]) -> Vec<String> {
        let events: Vec<Event> = stanzas
            .iter()
            .map(|s| Event::Stanza(self.gen, element(s)))
            .collect();
        self.batch(events)
    }

    /// Handles raw events in one batch.
    pub fn batch(&mut self, events: Vec<Event>) -> Vec<String> {
        self.app
            .handle_batch(self.now, events)
            .into_iter()
            .map(|(gen, text)| {
                assert_eq!(gen, self.gen, "a reply for another connection: {text}");
                text
            })
            .collect()
    }

    /// Sends one stanza and returns its one reply.
    pub fn one(&mut self, stanza: &str) -> String {
        let mut out = self.send(&[stanza]);
        assert_eq!(out.len(), 1, "{out:?}");
        out.remove(0)
    }

    /// The oldest job handed out and not finished.
    pub fn next_job(&self) -> Option<Job> {
        self.jobs.lock().unwrap().front().cloned()
    }

    /// The number of jobs in flight at the fake provider.
    pub fn in_flight(&self) -> usize {
        self.jobs.lock().unwrap().len()
    }

    /// The fake provider answers the oldest job with `outcome`.
    pub fn finish(&mut self, outcome: Outcome) -> Vec<String> {
        let job = self
            .jobs
            .lock()
            .unwrap()
            .pop_front()
            .expect("a job in flight");
        self.batch(vec![Event::PushDone {
            job: job.id,
            outcome,
        }])
    }

    /// Oversized stanza events, as the parser reports them.
    pub fn oversized(&mut self, name: &str, kind: Option<&str>, id: &str) -> Vec<String> {
        let o = Oversized {
            name: name.into(),
            id: Some(id.into()),
            from: Some("localhost".into()),
            to: Some("push.localhost".into()),
            kind: kind.map(str::to_owned),
            limit: 262_144,
            why: p2::app::SkipReason::Size(262_144),
        };
        self.batch(vec![Event::Oversized(self.gen, o)])
    }

    /// Registers as `from` with `device` and `token`; the node and secret.
    pub fn register(&mut self, from: &str, device: &str, token: &str) -> (String, String) {
        let reply = self.one(&register_as(from, device, token));
        assert_eq!(summary(&reply), "result", "{reply}");
        node_and_secret(&reply)
    }

    /// Every stored registration, through a connection of the test's own.
    pub fn rows(&self) -> Vec<Row> {
        let c = rusqlite::Connection::open(self.db()).unwrap();
        let mut stmt = c
            .prepare("SELECT device, domain, token, node, secret FROM registration ORDER BY node")
            .unwrap();
        stmt.query_map([], |r| {
            Ok(Row {
                device: r.get(0)?,
                domain: r.get(1)?,
                token: r.get(2)?,
                node: r.get(3)?,
                secret: r.get(4)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// The stored registration (domain, node), if any.
    pub fn row(&self, domain: &str, node: &str) -> Option<Row> {
        self.rows()
            .into_iter()
            .find(|r| r.domain == domain && r.node == node)
    }
}

/// What the core logged on this thread since the last call, one `LEVEL message` per
/// line (every level: the capture runs at trace).
pub fn logs() -> Vec<String> {
    capture::start();
    capture::LINES.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// A logger that keeps each thread's lines apart: the core runs on the test's thread,
/// so a test reads its own core's lines and no other test's.
mod capture {
    use std::cell::RefCell;

    thread_local! {
        pub static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }

        fn log(&self, record: &log::Record) {
            let line = format!("{} {}", record.level(), record.args());
            LINES.with(|l| l.borrow_mut().push(line));
        }

        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture;

    /// Installs the logger (once per test binary).
    pub fn start() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            log::set_logger(&CAPTURE).expect("no other logger");
            log::set_max_level(log::LevelFilter::Trace);
        });
    }
}

/// A core on the store in `db`, handing its jobs to the fake provider.
fn start(
    db: &std::path::Path,
    settings: &Settings,
    now: Now,
    jobs: &Arc<Mutex<VecDeque<Job>>>,
    submitted: &Arc<Mutex<Vec<Job>>>,
    full: &Arc<Mutex<bool>>,
    busy_timeout: Option<Duration>,
) -> App {
    let mut store = Store::open(db).unwrap();
    if let Some(t) = busy_timeout {
        store.set_busy_timeout(t).unwrap();
    }
    let (jobs, submitted, full) = (Arc::clone(jobs), Arc::clone(submitted), Arc::clone(full));
    let submit = Box::new(move |job: Job| {
        if *full.lock().unwrap() {
            return Err(job);
        }
        submitted.lock().unwrap().push(job.clone());
        jobs.lock().unwrap().push_back(job);
        Ok(())
    });
    App::new(settings.clone(), store, submit, now).unwrap()
}

/// Sends `stanzas` in one batch to a fresh core, lets the fake provider answer each
/// push with the next of `outcomes` (then `Delivered`), and compares each request's one
/// reply, in request order, with `expected` (`result` or `error TYPE CONDITION`).
/// Returns the core, for a look at the store.
pub fn check_with(outcomes: &[Outcome], stanzas: &[&str], expected: &[&str]) -> Core {
    let mut core = Core::new();
    let mut replies = core.send(stanzas);
    let mut outcomes = outcomes.iter().cloned();
    while core.in_flight() > 0 {
        replies.extend(core.finish(outcomes.next().unwrap_or(Outcome::Delivered)));
    }
    let got = match_replies(stanzas, replies);
    assert_eq!(got, expected, "replies to {} stanzas", stanzas.len());
    core
}

/// [`check_with`] with every push delivered.
pub fn check(stanzas: &[&str], expected: &[&str]) -> Core {
    check_with(&[], stanzas, expected)
}

/// Pairs each request (get or set) with its one reply, checking the addressing, and
/// summarises them in request order. Panics on a reply to nothing or a second reply.
pub fn match_replies(stanzas: &[&str], mut replies: Vec<String>) -> Vec<String> {
    let mut got = Vec::new();
    for stanza in stanzas {
        let doc = roxmltree::Document::parse(stanza).unwrap();
        let iq = doc.root_element();
        if iq.tag_name().name() != "iq" || !matches!(iq.attribute("type"), Some("get" | "set")) {
            continue;
        }
        let id = iq.attribute("id").unwrap();
        let i = replies
            .iter()
            .position(|r| iq_attr(r, "id").as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no reply to {id}"));
        let reply = replies.remove(i);
        assert_eq!(
            iq_attr(&reply, "to").as_deref(),
            iq.attribute("from"),
            "{reply}"
        );
        assert_eq!(
            iq_attr(&reply, "from").as_deref(),
            iq.attribute("to"),
            "{reply}"
        );
        got.push(summary(&reply));
    }
    assert!(replies.is_empty(), "replies to nothing: {replies:?}");
    got
}
