//! The application core on whatever a peer can send, with a real (in-memory) store.
//!
//! Input: byte 0 seeds the push outcomes (delivered, dead token, dead unless
//! misconfigured, failed) and the clock's steps between batches, byte 1 the batch sizes
//! and the queue-full answers, byte 2 the length N of the reason a failed push comes back
//! with (the next N bytes: what a provider or its transport said is not ours to trust
//! either), the rest is the component stream after the server's header.
//! The store holds one registration matching the Prosody publish of PROTOCOL.md §5
//! (`localhost`, node `4VS_xOP4xeyO`, secret `G4yJr4P6XSecKI6H4Jt8AxUm`), so publishes
//! reach the worker path. Checks the core's first invariant (src/app/mod.rs): every IQ
//! get/set gets exactly one reply, a `result` or an `error` with its id; nothing else is
//! answered; every reply parses back as XML. And the publish fast path: the same stream
//! read with it (publishes as `Received::Publish`) gives the same replies, in the same
//! order, and the same pushes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::{App, Event, Job, Now, Provider, Received, Service, Settings};
use crate::config::Limits;
use crate::push::Outcome;
use crate::store::{Registration, Store};
use crate::xmpp::stanza::{Iq, IqType};
use crate::xmpp::stream::{StreamEvent, StreamParser, DEFAULT_MAX_STANZA_BYTES};

const HEADER: &str = "<stream:stream xmlns='jabber:component:accept' \
                      xmlns:stream='http://etherx.jabber.org/streams' id='x'>";

struct XorShift(u32);

impl XorShift {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

fn store() -> Store {
    let mut store = Store::open(Path::new(":memory:")).expect("an in-memory store opens");
    store
        .put(&Registration {
            service: "fcm".into(),
            device: "ec164939a8485ee6b7f7871071a11c7bb18aead5".into(),
            channel: String::new(),
            domain: "localhost".into(),
            token: "FCM-TOKEN".into(),
            node: "4VS_xOP4xeyO".into(),
            secret: "G4yJr4P6XSecKI6H4Jt8AxUm".into(),
        })
        .expect("the registration is stored");
    store
}

/// The id and type of a reply, which must be one IQ stanza.
fn reply_id(text: &str) -> String {
    let mut parser = StreamParser::new(usize::MAX);
    parser.feed(HEADER.as_bytes()).expect("the header parses");
    let events = parser
        .feed(text.as_bytes())
        .unwrap_or_else(|e| panic!("a reply does not parse ({e}): {text}"));
    let [StreamEvent::Stanza(el)] = events.as_slice() else {
        panic!("a reply parses to {events:?}: {text}");
    };
    let iq = Iq::from_element(el.clone()).unwrap_or_else(|e| panic!("{e:?}: {text}"));
    assert!(
        matches!(iq.kind, IqType::Result | IqType::Error),
        "a reply that is not a result or an error: {text}"
    );
    iq.id
}

/// A reply with the random node and secret of a registration blanked out.
fn unrandom((gen, text): &(u64, String)) -> (u64, String) {
    let mut out = text.clone();
    for var in ["node", "secret"] {
        let field = format!("var='{var}'><value>");
        if let Some(at) = out.find(&field) {
            let start = at + field.len();
            if let Some(len) = out[start..].find('<') {
                out.replace_range(start..start + len, "*");
            }
        }
    }
    (*gen, out)
}

/// A push handed out: (domain, token, has_body).
type Pushed = (String, String, bool);

/// Runs the core on `stanzas` (see the module's documentation); returns the replies and
/// the pushes handed out, as (domain, token, has_body).
fn run(
    data: &[u8],
    reason: &str,
    start: Instant,
    stanzas: Vec<Received>,
) -> (Vec<(u64, String)>, Vec<Pushed>) {
    let mut outcomes = XorShift(u32::from(data[0]) | 0x1_0000);
    let batch = 1 + usize::from(data[1] % 16);
    let jobs: Arc<Mutex<Vec<Job>>> = Arc::default();
    let queue = Arc::clone(&jobs);
    let full = Arc::new(Mutex::new(XorShift(u32::from(data[1]) | 0x2_0000)));
    let submit = Box::new(move |job: Job| {
        if full.lock().unwrap().next().is_multiple_of(5) {
            return Err(job);
        }
        queue.lock().unwrap().push(job);
        Ok(())
    });
    let mut now = Now {
        mono: start,
        unix: 1_700_000_000,
    };
    let settings = Settings {
        jid: "p2.example.net".into(),
        providers: vec![Provider {
            service: Service::Fcm,
            fingerprint: "0123456789abcdef".into(),
        }],
        limits: Limits::default(),
    };
    let mut app = App::new(settings, store(), submit, now).expect("the core starts");

    let mut replies = Vec::new();
    let mut pushes = Vec::new();
    let mut input = stanzas.into_iter().map(|s| Event::Stanzas(1, vec![s]));
    let mut first = vec![Event::Connected(1)];
    loop {
        // The outcomes of the pushes handed out so far arrive with the next stanzas.
        let mut events: Vec<Event> = std::mem::take(&mut first);
        for job in jobs.lock().unwrap().drain(..) {
            pushes.push((job.domain, job.message.token, job.message.has_body));
            let outcome = match outcomes.next() % 4 {
                0 => Outcome::Delivered,
                1 => Outcome::DeadToken {
                    reason: reason.to_owned(),
                },
                2 => Outcome::DeadUnlessMisconfigured {
                    reason: reason.to_owned(),
                    suspect: "the service account of another project",
                },
                _ => Outcome::Failed {
                    cause: crate::push::Cause::ProviderError,
                    reason: reason.to_owned(),
                },
            };
            events.push(Event::PushDone {
                job: job.id,
                outcome,
            });
        }
        events.extend(input.by_ref().take(batch));
        if events.is_empty() {
            break;
        }
        // The clock moves on between batches: coalescing windows open and close.
        now.mono += Duration::from_millis(u64::from(outcomes.next() % 1500));
        now.unix += 1;
        replies.extend(app.handle_batch(now, events));
        app.tick(now);
    }
    assert_eq!(app.pending(), 0, "every push came back");
    (replies, pushes)
}

/// Checks one input (see the module's documentation).
pub fn core(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let (reason, stream) = data[3..].split_at(usize::from(data[2]).min(data.len() - 3));
    let reason = String::from_utf8_lossy(reason).into_owned();

    let mut parser = StreamParser::new(DEFAULT_MAX_STANZA_BYTES);
    parser.feed(HEADER.as_bytes()).expect("the header parses");
    let Ok(events) = parser.feed(stream) else {
        return;
    };
    let stanzas: Vec<_> = events
        .into_iter()
        .filter_map(|e| match e {
            StreamEvent::Stanza(el) => Some(el),
            _ => None,
        })
        .collect();

    // Every get or set with an id expects one reply.
    let mut expected: HashMap<String, usize> = HashMap::new();
    for el in &stanzas {
        if let Ok(iq) = Iq::from_element(el.clone()) {
            if iq.wants_reply() {
                *expected.entry(iq.id).or_default() += 1;
            }
        }
    }

    let start = Instant::now();
    let elements = stanzas.into_iter().map(Received::Element).collect();
    let (replies, pushes) = run(data, &reason, start, elements);

    // The same stream with the fast path (from the first child on: a handshake comes
    // first in a session, so here too).
    let mut parser = StreamParser::new(DEFAULT_MAX_STANZA_BYTES);
    parser.feed(HEADER.as_bytes()).expect("the header parses");
    parser.feed(b"<handshake/>").expect("a handshake parses");
    parser.read_publishes();
    let events = parser
        .feed(stream)
        .expect("the fast path fails as the full parser");
    let received = events
        .into_iter()
        .filter_map(|e| match e {
            StreamEvent::Stanza(el) => Some(Received::Element(el)),
            StreamEvent::Publish(p) => Some(Received::Publish(p)),
            _ => None,
        })
        .collect();
    let (fast_replies, fast_pushes) = run(data, &reason, start, received);
    assert_eq!(
        fast_replies.iter().map(unrandom).collect::<Vec<_>>(),
        replies.iter().map(unrandom).collect::<Vec<_>>(),
        "the fast path changes the replies"
    );
    assert_eq!(fast_pushes, pushes, "the fast path changes the pushes");

    let mut got: HashMap<String, usize> = HashMap::new();
    for (gen, text) in &replies {
        assert_eq!(*gen, 1);
        *got.entry(reply_id(text)).or_default() += 1;
    }
    assert_eq!(got, expected, "one reply per get or set");
}
