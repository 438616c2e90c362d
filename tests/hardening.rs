//! Hostile input, faults and load, end to end on the real binary over loopback: limits,
//! provider and token-endpoint failures, server restarts, SIGKILL, a locked database,
//! overload, and what the log must never contain.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fcm::{UNAUTHENTICATED, UNREGISTERED};

use common::http::{Request, Response};
use common::keys;
use common::world::*;
use common::xmpp::{error_text, id_of, outcome, Answer};

/// An FCM registration token as Conversations hands it over (the design note's).
const TOKEN: &str = "eeDXSJjASJY:APA91bEKxhXK54-vHhY9O55JmU2R0nDJL2rRENm-W9uPY6x3jHi0i0OyvPu6js9jVPZqDeX9ZQydZCBZE19o7a0kK4_n88fCgufXjaOlvalh9VibB2zOI7dQRTaDNB3H5s4dicpWD0m4";

fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn an_account_keeps_at_most_its_cap_of_registrations() {
    let mut w = start_opts(
        "hard-cap",
        Arc::new(|_: &Request| ok()),
        Opts::limits(serde_json::json!({"registrationsPerAccount": 2})),
    );
    let first = register(&mut w.comp, "alice@example.com/a", "d1", "t1");
    let bob = register(&mut w.comp, "bob@example.com/a", "b1", "tb");
    register(&mut w.comp, "alice@example.com/b", "d2", "t2");
    // Refreshing d1 makes d2 the least recently refreshed.
    register(&mut w.comp, "alice@example.com/a", "d1", "t1");
    register(&mut w.comp, "alice@example.com/c", "d3", "t3");
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.com", &first.0, &first.1)),
        "result"
    );
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.com", &bob.0, &bob.1)),
        "result"
    );
    let (_, stats, _) = common::daemon::cli(&w.daemon.dir, &["stats", "-c", "config.json"]);
    assert!(stats.contains("registrations: 3"), "{stats}");
}

#[test]
fn new_registrations_per_domain_are_rate_limited_and_logged_once() {
    let mut w = start_opts(
        "hard-rate",
        Arc::new(|_: &Request| ok()),
        Opts::limits(serde_json::json!({"newRegistrationsPerDomainPerHour": 2})),
    );
    register(&mut w.comp, "a@busy.example/r", "d1", "t");
    register(&mut w.comp, "b@busy.example/r", "d2", "t");
    for device in ["d3", "d4"] {
        let reply = w.comp.iq(&register_stanza(
            "c@busy.example/r",
            "register-push-fcm",
            &(field("token", "t") + &field("device-id", device)),
        ));
        assert_eq!(outcome(&reply), "error wait resource-constraint");
        assert!(error_text(&reply)
            .unwrap()
            .contains("too many new registrations"));
    }
    // Renewals go on; other domains are not affected.
    register(&mut w.comp, "a@busy.example/r", "d1", "t-new");
    register(&mut w.comp, "a@calm.example/r", "d1", "t");
    assert!(w.daemon.wait_log(
        "busy.example: more than 2 new registrations",
        Duration::from_secs(5)
    ));
    assert_eq!(
        w.daemon.log().matches("busy.example: more than 2").count(),
        1
    );
}

#[test]
fn a_publish_flood_to_one_node_is_coalesced() {
    let mut w = start("hard-coalesce", |_| ok());
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    for _ in 0..5 {
        assert_eq!(
            outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
            "result"
        );
    }
    assert_eq!(w.mock.requests_to(FCM_PATH).len(), 1);
    // A wrong secret is still refused inside the window.
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, "nope")),
        "error auth forbidden"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "result"
    );
    assert_eq!(w.mock.requests_to(FCM_PATH).len(), 2);

    let mut w = start_opts(
        "hard-coalesce-off",
        Arc::new(|_: &Request| ok()),
        Opts::limits(serde_json::json!({"coalesceMillis": 0})),
    );
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    for _ in 0..3 {
        assert_eq!(
            outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
            "result"
        );
    }
    assert_eq!(w.mock.requests_to(FCM_PATH).len(), 3);
}

#[test]
fn oversized_fields_are_refused() {
    let mut w = start("hard-fields", |_| ok());
    let (node, _) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    let reply = publish(&mut w.comp, "example.net", &node, &"s".repeat(300));
    assert_eq!(outcome(&reply), "error auth forbidden");
    assert_eq!(
        error_text(&reply).as_deref(),
        Some("node or secret too long")
    );
    let reply = w.comp.iq(&register_stanza(
        "c@example.net/x",
        "register-push-fcm",
        &(field("token", &"t".repeat(5000)) + &field("device-id", "d")),
    ));
    assert_eq!(outcome(&reply), "error modify bad-request");
    assert_eq!(
        error_text(&reply).as_deref(),
        Some("field 'token' is longer than 4096 bytes")
    );
}

#[test]
fn a_full_queue_answers_wait_at_once() {
    let mut w = start_opts(
        "hard-queue",
        Arc::new(|_: &Request| ok().delay(Duration::from_secs(2))),
        Opts {
            workers: 1,
            deadline: 5,
            ..Opts::default()
        },
    );
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    let started = Instant::now();
    let mut batch = String::new();
    for _ in 0..1100 {
        batch.push_str(&publish_stanza("example.net", &node, &secret));
    }
    w.comp.send(&batch);
    let mut full = 0;
    while full < 70 && started.elapsed() < Duration::from_secs(10) {
        if let Some(reply) = w.comp.recv(Duration::from_millis(500)) {
            if error_text(&reply).as_deref() == Some("push queue full") {
                assert_eq!(outcome(&reply), "error wait internal-server-error");
                full += 1;
            }
        }
    }
    assert!(full >= 70, "only {full} queue-full replies");
    // Waiting for room in the queue would take 2 s per place (one worker, FCM at 2 s).
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "queue-full replies were not immediate: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_hanging_provider_is_answered_wait_without_piling_up_and_recovers() {
    let hang = Arc::new(AtomicBool::new(true));
    let h = Arc::clone(&hang);
    let mut w = start_opts(
        "hard-hang",
        Arc::new(move |_: &Request| {
            if h.load(Ordering::SeqCst) {
                ok().delay(Duration::from_secs(4))
            } else {
                ok()
            }
        }),
        Opts {
            deadline: 1,
            workers: 4,
            ..Opts::default()
        },
    );
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    let threads = threads_of(w.daemon.pid());
    let started = Instant::now();
    let ids: Vec<String> = (0..12)
        .map(|_| {
            let s = publish_stanza("example.net", &node, &secret);
            w.comp.send(&s);
            id_of(&s)
        })
        .collect();
    for id in &ids {
        let reply = w.comp.reply(id, Duration::from_secs(10)).expect("reply");
        assert_eq!(outcome(&reply), "error wait internal-server-error");
    }
    // 12 pushes on 4 workers, each bounded by the 1 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(threads_of(w.daemon.pid()), threads, "threads piled up");
    hang.store(false, Ordering::SeqCst);
    // Ten timeouts in a row cool FCM down for a few seconds: once that has passed, a
    // publish goes through as the probe, and delivers.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = publish(&mut w.comp, "example.net", &node, &secret);
        if outcome(&reply) == "result" {
            break;
        }
        assert_eq!(outcome(&reply), "error wait internal-server-error");
        assert!(Instant::now() < until, "pushes never went again");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "result"
    );
}

#[test]
fn a_failing_token_endpoint_is_answered_wait_and_named_in_the_log() {
    let failing = Arc::new(AtomicBool::new(true));
    let f = Arc::clone(&failing);
    let World {
        mock,
        daemon,
        mut comp,
        server: _server,
        scratch: _scratch,
        ..
    } = start_opts(
        "hard-oauth",
        Arc::new(|_: &Request| ok()),
        Opts {
            deadline: 2,
            level: "info",
            token: Arc::new(move |req: &Request| {
                if f.load(Ordering::SeqCst) {
                    Response::json(500, r#"{"error":"internal_failure"}"#)
                } else {
                    keys::token_endpoint(req)
                }
            }),
            ..Opts::default()
        },
    );
    let (node, secret) = register(&mut comp, "c@example.net/x", "d", "tok");
    let reply = publish(&mut comp, "example.net", &node, &secret);
    assert_eq!(outcome(&reply), "error wait internal-server-error");
    // The cause goes to the log; remote servers get a short generic text.
    assert_eq!(error_text(&reply).as_deref(), Some("push not delivered"));
    assert!(
        daemon.wait_log(
            "pushes are failing: oauth: token endpoint answered http 500",
            Duration::from_secs(5)
        ),
        "{}",
        daemon.log()
    );
    assert!(mock.requests_to(FCM_PATH).is_empty());
    failing.store(false, Ordering::SeqCst);
    // The token source waits a moment after a failure before asking again.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        outcome(&publish(&mut comp, "example.net", &node, &secret)),
        "result"
    );
    assert!(daemon.wait_log("pushes are delivered again", Duration::from_secs(5)));
}

#[test]
fn replies_for_a_lost_connection_never_reach_the_next_one() {
    let mut w = start_opts(
        "hard-restart",
        Arc::new(|_: &Request| ok().delay(Duration::from_millis(500))),
        Opts::limits(serde_json::json!({"coalesceMillis": 0})),
    );
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    let old: HashSet<String> = (0..20)
        .map(|_| {
            let s = publish_stanza("example.net", &node, &secret);
            w.comp.send(&s);
            id_of(&s)
        })
        .collect();
    assert!(w.mock.wait_for_requests(2, Duration::from_secs(5)));
    w.comp.close();
    w.comp = w.server.accept(JID, SECRET, Answer::Accept);
    // Everything the old pushes produce arrives while this connection is up.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        if let Some(el) = w.comp.recv(Duration::from_millis(200)) {
            let id = el.attr("id").unwrap_or_default().to_owned();
            assert!(
                !old.contains(&id),
                "reply {id} crossed to the new connection"
            );
        }
    }
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "result"
    );
    // Two connections: the one the server closed and this one.
    assert_eq!(w.server.accepted(), 2);
}

#[test]
fn every_acknowledged_registration_survives_sigkill() {
    let mut w = start("hard-kill", |_| ok());
    let mut sent = HashMap::new();
    let mut batch = String::new();
    for i in 0..400 {
        let device = format!("dev{i}");
        let s = register_stanza(
            &format!("user{i}@storm.example/r"),
            "register-push-fcm",
            &(field("token", &format!("tok{i}")) + &field("device-id", &device)),
        );
        sent.insert(id_of(&s), device);
        batch.push_str(&s);
    }
    w.comp.send(&batch);
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.len() < 100 && Instant::now() < deadline {
        if let Some(reply) = w.comp.recv(Duration::from_millis(500)) {
            assert_eq!(outcome(&reply), "result");
            let form = reply.clone();
            acked.push(form.form_value("node").unwrap().to_owned());
        }
    }
    w.daemon.kill();
    assert!(acked.len() >= 100, "only {} acknowledged", acked.len());
    let db = rusqlite::Connection::open(w.daemon.dir.join("p2.sqlite")).unwrap();
    let verdict: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(verdict, "ok");
    for node in &acked {
        let n: i64 = db
            .query_row(
                "SELECT count(*) FROM registration WHERE domain = 'storm.example' AND node = ?1",
                [node],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "acknowledged registration {node} lost");
    }
}

#[test]
fn a_locked_database_refuses_registrations_but_serves_pushes() {
    let mut w = start("hard-locked", |_| ok());
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    // Another process holds the write lock (as an import would), standing in for a
    // database that cannot be written (read-only, disk full): the same error path.
    let db = rusqlite::Connection::open(w.daemon.dir.join("p2.sqlite")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let reply = w.comp.iq(&register_stanza(
        "c@example.net/x",
        "register-push-fcm",
        &(field("token", "t2") + &field("device-id", "other")),
    ));
    assert_eq!(outcome(&reply), "error wait internal-server-error");
    assert_eq!(error_text(&reply).as_deref(), Some("storage failure"));
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "result"
    );
    db.execute_batch("ROLLBACK").unwrap();
    register(&mut w.comp, "c@example.net/x", "other", "t2");
}

#[cfg(feature = "apns")]
mod apns {
    pub use crate::common::apns::{accepted, fixture, Apns, KEY_ID, TEAM_ID, TOPIC};

    /// An APNs device token as iOS hands it out: 32 bytes, hex.
    pub const TOKEN: &str = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad";

    /// The `apns` object for token authentication against `server`.
    pub fn config(server: &Apns) -> serde_json::Value {
        serde_json::json!({
            "bundleId": TOPIC,
            "baseUrl": server.url(),
            "keyFile": fixture("apns-token-key.p8"),
            "keyId": KEY_ID,
            "teamId": TEAM_ID,
            "deadline": 3,
        })
    }
}

#[test]
fn the_log_holds_no_secret_even_at_trace_level() {
    #[cfg(feature = "apns")]
    let apns_server = apns::Apns::start(|i, _| match i {
        0 => apns::accepted(),
        _ => common::apns::Reply::Status(410, r#"{"reason":"Unregistered"}"#),
    });
    #[allow(unused_mut)]
    let mut extra = vec![("limits", serde_json::json!({"coalesceMillis": 0}))];
    #[cfg(feature = "apns")]
    extra.push(("apns", apns::config(&apns_server)));
    let mut w = start_opts(
        "daemon-privacy",
        // An expired access token, then delivered, then a dead token.
        Arc::new(scripted(vec![
            Response::json(401, UNAUTHENTICATED),
            ok(),
            Response::json(404, UNREGISTERED),
        ])),
        Opts {
            extra,
            env: vec![("RUST_LOG".into(), "trace".into())],
            ..Opts::default()
        },
    );
    let account = "privateperson@example.org/phone";
    let (node, secret) = register(&mut w.comp, account, "privatedevice1", TOKEN);
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.org", &node, &secret)),
        "result"
    );
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.org", &node, &secret)),
        "error cancel item-not-found"
    );
    let reply = w.comp.iq(&register_stanza(
        account,
        "unregister-push-fcm",
        &field("device-id", "privatedevice1"),
    ));
    assert_eq!(outcome(&reply), "error cancel item-not-found");
    #[allow(unused_mut)]
    let mut secrets: Vec<String> = vec![
        TOKEN.into(),
        secret,
        SECRET.into(),
        "privateperson".into(),
        "privatedevice1".into(),
        "New Message!".into(),
        "ya29.test".into(),
        "PRIVATE KEY".into(),
        "eyJ".into(), // any JWT
    ];
    #[cfg(feature = "apns")]
    {
        let (node, secret) = register_with(
            &mut w.comp,
            account,
            "register-push-apns",
            &(field("token", apns::TOKEN) + &field("device-id", "privatedevice2")),
        );
        assert_eq!(
            outcome(&publish(&mut w.comp, "example.org", &node, &secret)),
            "result"
        );
        assert_eq!(
            outcome(&publish(&mut w.comp, "example.org", &node, &secret)),
            "error cancel item-not-found"
        );
        secrets.extend([
            apns::TOKEN.into(),
            secret,
            "privatedevice2".into(),
            apns_server.seen()[0].jwt.clone().unwrap(),
        ]);
    }
    let log = w.daemon.log();
    // The level in force is trace (RUST_LOG overrides `debug`): p2 says so itself.
    assert!(log.contains("DEBUG [p2] log level TRACE\n"), "{log}");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "the log holds {secret:?}");
    }
}

#[test]
fn an_oversized_stanza_is_refused_and_the_stream_stays_up() {
    // The limit from the config reaches the parser.
    let mut w = start_opts(
        "hard-oversized",
        Arc::new(|_: &Request| ok()),
        Opts::limits(serde_json::json!({"stanzaBytes": 65536})),
    );
    let big = "x".repeat(100 * 1024);
    let reply = w.comp.iq(&register_stanza(
        "c@big.example/x",
        "register-push-fcm",
        &(field("token", &big) + &field("device-id", "d")),
    ));
    // `wait`: ejabberd drops a user's push registration on any other type, and the
    // start tag cannot tell whether it was a publish.
    assert_eq!(outcome(&reply), "error wait policy-violation");
    assert_eq!(
        error_text(&reply).as_deref(),
        Some("stanza too large or too deeply nested")
    );
    // A message gets no reply; the stream goes on.
    w.comp.send(&format!(
        "<message from='a@big.example/r' to='{JID}'><body>{big}</body></message>"
    ));
    let reply = w.comp.iq(&format!(
        "<iq type='get' from='localhost' to='{JID}' id='still-up'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    assert_eq!(outcome(&reply), "result");
    register(&mut w.comp, "c@big.example/x", "d", "tok");
    // The stream stayed up: everything went over the first connection.
    assert_eq!(w.server.accepted(), 1);
    let log = w.daemon.log();
    assert_eq!(log.matches("big.example: <").count(), 1, "{log}");
}

/// A ping IQ get from a remote domain with `inner` inside the ping element.
fn ping_holding(id: &str, inner: &str) -> String {
    format!(
        "<iq type='get' from='x@remote.example/r' to='{JID}' id='{id}'>\
         <ping xmlns='urn:xmpp:ping'>{inner}</ping></iq>"
    )
}

#[test]
fn the_default_stanza_limit_is_256_kib() {
    let mut w = start("hard-default-limit", |_| ok());
    // 200 KiB: read and answered as a ping.
    let pad = format!("<pad>{}</pad>", "x".repeat(200 * 1024));
    let reply = w.comp.iq(&ping_holding("under", &pad));
    assert_eq!(outcome(&reply), "result");
    // 300 KiB: skipped, answered with an error of its own.
    let pad = format!("<pad>{}</pad>", "x".repeat(300 * 1024));
    let reply = w.comp.iq(&ping_holding("over", &pad));
    let answer = outcome(&reply);
    assert!(
        answer.starts_with("error ") && answer.ends_with(" policy-violation"),
        "{answer}"
    );
    assert_eq!(w.server.accepted(), 1);
}

#[test]
fn a_stanza_too_deep_or_with_an_undeclared_prefix_is_answered_and_the_stream_stays_up() {
    let mut w = start("hard-deep", |_| ok());
    let deep = |levels: usize| format!("{}{}", "<a>".repeat(levels), "</a>".repeat(levels));
    // 65 levels in all (iq, ping and 63 below): one over the limit.
    let reply = w.comp.iq(&ping_holding("deep", &deep(63)));
    let answer = outcome(&reply);
    assert!(
        answer.starts_with("error ") && answer.ends_with(" policy-violation"),
        "{answer}"
    );
    assert_eq!(reply.attr("to"), Some("x@remote.example/r"));
    // 64 levels: within the limit, a ping.
    let reply = w.comp.iq(&ping_holding("at-limit", &deep(62)));
    assert_eq!(outcome(&reply), "result");
    // Far deeper, and in a message (no reply), and a prefix declared nowhere (as ejabberd
    // relays one declared on the sending server's stream header).
    w.comp.send(&format!(
        "<message from='x@remote.example/r' to='{JID}'>{}</message>",
        deep(10_000)
    ));
    w.comp.send(&ping_holding("prefix", "<db:x db:a='1'/>"));
    let reply = w
        .comp
        .reply("prefix", Duration::from_secs(20))
        .expect("an answer");
    let answer = outcome(&reply);
    assert!(answer.starts_with("error "), "{answer}");
    // Every time on the same connection, and no other was opened.
    let reply = w.comp.iq(&ping_holding("after", ""));
    assert_eq!(outcome(&reply), "result");
    assert_eq!(w.server.accepted(), 1);
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_server_that_stops_reading_is_dropped_and_memory_stays_bounded() {
    // keepalive 3 s: the daemon gives up on a server that takes no bytes for 1 s.
    let w = start_opts(
        "hard-no-reader",
        Arc::new(|_: &Request| ok()),
        Opts {
            extra: vec![("keepalive", serde_json::json!(3))],
            ..Opts::default()
        },
    );
    let World {
        mut server,
        comp,
        daemon,
        ..
    } = w;
    let pid = daemon.pid();
    let start_rss = rss_kib(pid);
    // Pings as fast as the socket takes them, never reading a reply.
    let mut stream = comp.into_stream();
    stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let flooding = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicUsize::new(0));
    let flooder = {
        let flooding = Arc::clone(&flooding);
        let sent = Arc::clone(&sent);
        std::thread::spawn(move || {
            use std::io::{ErrorKind, Write};
            let batch: String = (0..100)
                .map(|i| ping_holding(&format!("f{i}"), ""))
                .collect();
            let deadline = Instant::now() + Duration::from_secs(90);
            let mut at = 0;
            while flooding.load(Ordering::SeqCst) && Instant::now() < deadline {
                // Whole stanzas: a write cut short goes on where it stopped.
                match stream.write(&batch.as_bytes()[at..]) {
                    Ok(n) => {
                        at = (at + n) % batch.len();
                        sent.fetch_add(n, Ordering::SeqCst);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    // The daemon dropped the connection.
                    Err(_) => break,
                }
            }
        })
    };
    // The daemon gives up on the connection (its writes time out after 1 s) and opens
    // a new one; meanwhile its memory stays bounded.
    let mut peak = start_rss;
    let sampler = {
        let flooding = Arc::clone(&flooding);
        std::thread::spawn(move || {
            let mut peak = 0;
            while flooding.load(Ordering::SeqCst) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let mut comp = server.accept_within(JID, SECRET, Answer::Accept, Duration::from_secs(60));
    flooding.store(false, Ordering::SeqCst);
    flooder.join().unwrap();
    peak = peak.max(sampler.join().unwrap());
    println!(
        "sent {} KiB of pings without reading; daemon RSS {start_rss} KiB at start, {peak} KiB at most",
        sent.load(Ordering::SeqCst) / 1024
    );
    assert_eq!(server.accepted(), 2);
    assert!(peak < 200 * 1024, "RSS reached {peak} KiB");
    // The new connection works.
    let reply = comp.iq(&ping_holding("after", ""));
    assert_eq!(outcome(&reply), "result");
    drop(daemon);
}
