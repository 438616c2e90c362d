//! What only the real `p2` binary shows, over loopback: the wiring from config to
//! providers, systemd's notifications and SIGTERM's drain, reconnecting, SIGKILL's
//! durability, a stanza that must not cost the connection, a server that stops
//! reading, exit codes, and the log at trace level. Everything the core decides is
//! proven in-process by tests/core (one line per rule, time moved by the test); the
//! provider clients by tests/fcm.rs and tests/apns.rs; the metrics listener by
//! tests/metrics.rs; the package by tests/packaging.rs.

mod common;

use std::collections::HashSet;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::{cli, Daemon};
use common::fcm::{UNAUTHENTICATED, UNREGISTERED};
use common::http::{Request, Response};
use common::keys;
use common::scratch::Scratch;
use common::stanzas::{publish_to, with_id, EJABBERD_PUBLISH_EMPTY};
use common::world::*;
use common::xmpp::{error_text, id_of, outcome, Answer, Component};

/// An FCM registration token as Conversations hands it over (the design note's).
const TOKEN: &str = "eeDXSJjASJY:APA91bEKxhXK54-vHhY9O55JmU2R0nDJL2rRENm-W9uPY6x3jHi0i0OyvPu6js9jVPZqDeX9ZQydZCBZE19o7a0kK4_n88fCgufXjaOlvalh9VibB2zOI7dQRTaDNB3H5s4dicpWD0m4";
/// printf 'xiaomia1@jabber.de\000''92afd7a91cdba9a0' | sha1sum (PROTOCOL.md §4).
const DEVICE_HASH: &str = "ec164939a8485ee6b7f7871071a11c7bb18aead5";

fn threads_of(pid: u32) -> usize {
    proc_status(pid, "Threads:")
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> usize {
    proc_status(pid, "VmRSS:")
}

fn proc_status(pid: u32, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A ping IQ get from a remote domain with `inner` inside the ping element.
/// Sends `n` publishes from example.net to `node` without waiting; their ids.
fn send_publishes(comp: &mut Component, n: usize, node: &str, secret: &str) -> Vec<String> {
    (0..n)
        .map(|_| {
            let stanza = publish_stanza("example.net", node, secret);
            comp.send(&stanza);
            id_of(&stanza)
        })
        .collect()
}

fn ping_holding(id: &str, inner: &str) -> String {
    format!(
        "<iq type='get' from='x@remote.example/r' to='{JID}' id='{id}'>\
         <ping xmlns='urn:xmpp:ping'>{inner}</ping></iq>"
    )
}

#[cfg(feature = "apns")]
mod apns {
    pub use crate::common::apns::{accepted, check_jwt, fixture, Apns, KEY_ID, TEAM_ID, TOPIC};

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
fn a_registration_and_a_publish_reach_the_providers() {
    #[cfg(feature = "apns")]
    let apns_server = apns::Apns::start(|_, _| apns::accepted());
    #[cfg(feature = "apns")]
    let extra = vec![("apns", apns::config(&apns_server))];
    #[cfg(not(feature = "apns"))]
    let extra = Vec::new();
    let mut w = start_opts(
        "daemon-push",
        Arc::new(|_: &Request| ok()),
        Opts {
            extra,
            ..Opts::default()
        },
    );
    // The access token is fetched at start, before any push asks for it.
    assert!(
        w.mock.wait_for_requests(1, Duration::from_secs(10)),
        "no token request at start"
    );
    assert_eq!(w.mock.requests()[0].path, "/token");
    assert!(
        w.daemon
            .wait_log("fcm: access token fetched", Duration::from_secs(10)),
        "{}",
        w.daemon.log()
    );
    // Conversations registers (PROTOCOL.md §4), Prosody publishes (§5).
    let (node, secret) = register(
        &mut w.comp,
        "xiaomia1@jabber.de/Conversations.sAdA",
        "92afd7a91cdba9a0",
        TOKEN,
    );
    let reply = publish(&mut w.comp, "jabber.de", &node, &secret);
    assert_eq!(outcome(&reply), "result");
    assert_eq!(
        (reply.attr("from"), reply.attr("to")),
        (Some(JID), Some("jabber.de"))
    );
    let sends = w.mock.requests_to(FCM_PATH);
    assert_eq!(sends.len(), 1);
    assert_eq!(
        sends[0].header("authorization"),
        Some(format!("Bearer {}", keys::access_token_for(0)).as_str())
    );
    assert_eq!(
        sends[0].json().unwrap(),
        serde_json::json!({"message": {
            "token": TOKEN,
            "data": {"account": DEVICE_HASH},
            "android": {"priority": "high", "collapse_key": "ec1649"}
        }})
    );
    // One token request, the one at start, which the stand-in verified (signature,
    // claims); the push used its token.
    assert_eq!(w.mock.requests_to("/token").len(), 1);
    let log = w.daemon.log();
    assert!(
        log.contains("providers: fcm (project p2-test, credentials "),
        "start-up line: {log}"
    );

    #[cfg(feature = "apns")]
    {
        // Siskin registers for APNs; ejabberd publishes without a body: a background push.
        let (node, secret) = register_with(
            &mut w.comp,
            "xiaomia1@jabber.de/Siskin.4f2a",
            "register-push-apns",
            &(field("token", apns::TOKEN) + &field("device-id", "92afd7a91cdba9a0")),
        );
        let stanza = publish_to(EJABBERD_PUBLISH_EMPTY, "jabber.de", &node, &secret);
        let reply = w.comp.iq(&with_id(&stanza, &next_id()));
        assert_eq!(outcome(&reply), "result");
        let seen = apns_server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, format!("/3/device/{}", apns::TOKEN));
        assert_eq!(seen[0].header("apns-topic"), Some(apns::TOPIC));
        assert_eq!(seen[0].header("apns-push-type"), Some("background"));
        assert_eq!(seen[0].header("apns-priority"), Some("5"));
        let claims = apns::check_jwt(seen[0].jwt.as_deref().expect("bearer token")).unwrap();
        assert_eq!(claims["iss"], apns::TEAM_ID);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&seen[0].body).unwrap(),
            serde_json::json!({"aps": {"content-available": 1}, "account": DEVICE_HASH})
        );
        assert!(
            log.contains(&format!(
                "), apns (topic {}, endpoint {}, provider token from",
                apns::TOPIC,
                apns_server.url()
            )),
            "start-up line: {log}"
        );
    }
    #[cfg(not(feature = "apns"))]
    let _ = (publish_to, with_id, EJABBERD_PUBLISH_EMPTY);
}

/// A datagram socket in `dir` standing in for systemd's notify socket.
#[test]
fn a_token_refused_at_start_is_reported_and_pushes_ask_again() {
    // The first token request (the one at start) is refused as Google refuses a key it
    // does not know; the next ones get a token.
    let refused = Arc::new(AtomicBool::new(false));
    let first = Arc::clone(&refused);
    let mut w = start_opts(
        "daemon-token-start",
        Arc::new(|_: &Request| ok()),
        Opts {
            token: Arc::new(move |req: &Request| {
                if !first.swap(true, Ordering::SeqCst) {
                    return Response::json(
                        400,
                        r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
                    );
                }
                keys::token_endpoint(req)
            }),
            ..Opts::default()
        },
    );
    assert!(
        w.daemon.wait_log(
            "fcm: no access token at start (token endpoint answered http 400 invalid_grant); \
             pushes will ask again",
            Duration::from_secs(10)
        ),
        "{}",
        w.daemon.log()
    );
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    let reply = publish(&mut w.comp, "example.net", &node, &secret);
    assert_eq!(outcome(&reply), "result");
    assert!(refused.load(Ordering::SeqCst));
    assert_eq!(w.mock.requests_to("/token").len(), 2);
    assert_eq!(w.mock.requests_to(FCM_PATH).len(), 1);
}

fn notify_socket(dir: &std::path::Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    (socket, path.display().to_string())
}

/// Notifications received until `until` says enough, or 10 s (a hang guard).
fn notifications(socket: &UnixDatagram, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline && !until(&seen) {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    seen
}

#[test]
fn systemd_hears_ready_status_and_watchdog_and_sigterm_drains_the_pushes() {
    let sock_dir = Scratch::new("daemon-notify");
    let (socket, path) = notify_socket(&sock_dir);
    let launched = launch(
        "daemon-stop",
        Arc::new(|_: &Request| ok().delay(Duration::from_millis(800))),
        Opts {
            env: vec![
                ("NOTIFY_SOCKET".into(), path),
                ("WATCHDOG_USEC".into(), "1000000".into()),
            ],
            ..Opts::default()
        },
    );
    let port = launched.server.port();
    // Ready once the store is open, before any handshake (the watchdog may come
    // between).
    let seen = notifications(&socket, |s| s.iter().any(|m| m.starts_with("READY=")));
    let seen: Vec<&String> = seen.iter().filter(|m| *m != "WATCHDOG=1").collect();
    assert_eq!(
        seen,
        [&format!("READY=1\nSTATUS=connecting to 127.0.0.1:{port}")]
    );
    // A rejected handshake is logged plainly and retried.
    let mut w = launched.accept(Answer::NotAuthorized);
    let seen = notifications(&socket, |s| s.iter().any(|m| m.starts_with("STATUS=")));
    assert!(
        seen.contains(&format!(
            "STATUS=disconnected from 127.0.0.1:{port} (handshake rejected: not-authorized); reconnecting"
        )),
        "{seen:?}"
    );
    assert!(
        w.daemon.wait_log(
            "handshake rejected: not-authorized",
            Duration::from_secs(10)
        ),
        "{}",
        w.daemon.log()
    );
    w.comp = w.server.accept(JID, SECRET, Answer::Accept);
    let seen = notifications(&socket, |s| {
        s.iter().any(|m| m.starts_with("STATUS=connected")) && s.iter().any(|m| m == "WATCHDOG=1")
    });
    assert!(
        seen.contains(&format!("STATUS=connected to 127.0.0.1:{port} as {JID}")),
        "{seen:?}"
    );
    assert!(seen.contains(&"WATCHDOG=1".to_owned()), "{seen:?}");

    // Ten pushes, each taking 0.8 s at FCM, four workers: SIGTERM while they are out.
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    let threads = threads_of(w.daemon.pid());
    let ids = send_publishes(&mut w.comp, 10, &node, &secret);
    assert!(
        w.mock.wait_for_requests(3, Duration::from_secs(10)),
        "pushes did not start"
    );
    // Workers start on demand: one was there before, four at most run the domain's
    // pushes and one more is kept for other domains; ten pushes out start no more.
    let during = threads_of(w.daemon.pid());
    assert!(
        during <= threads + 4,
        "a thread per push: {threads} before, {during} with ten pushes out"
    );
    w.daemon.terminate();
    // The connection thread wakes at once (its keepalive timer is 60 s away), the core
    // waits for the pushes in flight, their replies are written, then the stream ends.
    for id in &ids {
        let reply = w
            .comp
            .reply(id, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("reply to {id} lost at shutdown"));
        assert_eq!(outcome(&reply), "result");
    }
    assert!(
        w.comp.closed_within(Duration::from_secs(10)),
        "stream not closed"
    );
    assert!(w.comp.stream_ended(), "no </stream:stream>");
    let status = w
        .daemon
        .wait_exit(Duration::from_secs(10))
        .expect("p2 exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert_eq!(w.mock.requests_to(FCM_PATH).len(), 10);
    let seen = notifications(&socket, |s| s.iter().any(|m| m == "STOPPING=1"));
    assert!(seen.contains(&"STOPPING=1".to_owned()), "{seen:?}");
}

#[test]
fn replies_for_a_lost_connection_never_reach_the_next_one() {
    let mut w = start_opts(
        "daemon-lost",
        Arc::new(|_: &Request| ok().delay(Duration::from_millis(500))),
        Opts::limits(serde_json::json!({"coalesceMillis": 0})),
    );
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    let old: HashSet<String> = send_publishes(&mut w.comp, 8, &node, &secret)
        .into_iter()
        .collect();
    assert!(w.mock.wait_for_requests(2, Duration::from_secs(10)));
    // The server goes away while the pushes are out; the daemon reconnects.
    w.comp.close();
    w.comp = w.server.accept(JID, SECRET, Answer::Accept);
    // Every one of those pushes came back to the core (its debug line for each) ...
    let delivered = |log: &str| log.matches("push for example.net: delivered in ").count();
    let until = Instant::now() + Duration::from_secs(20);
    while delivered(&w.daemon.log()) < old.len() {
        assert!(Instant::now() < until, "{}", w.daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // ... and what the daemon wrote since, up to the reply to a ping, holds none of
    // their replies.
    let reply = w.comp.iq(&ping_holding("after", ""));
    assert_eq!(outcome(&reply), "result");
    while let Some(el) = w.comp.recv(Duration::ZERO) {
        let id = el.attr("id").unwrap_or_default();
        assert!(
            !old.contains(id),
            "reply {id} crossed to the new connection"
        );
    }
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "result"
    );
    assert_eq!(w.server.accepted(), 2);
}

#[test]
fn a_silent_server_is_pinged_then_dropped_and_reconnected() {
    let mut w = start_opts(
        "daemon-keepalive",
        Arc::new(|_: &Request| ok()),
        Opts {
            extra: vec![("keepalive", serde_json::json!(1))],
            ..Opts::default()
        },
    );
    // A hang guard of three times keepalive and a half.
    let ping = w
        .comp
        .recv(Duration::from_secs(5))
        .expect("no keepalive ping");
    assert_eq!(ping.attr("type"), Some("get"));
    // To ourselves, so that it stays on our server (PROTOCOL.md §2).
    assert_eq!((ping.attr("from"), ping.attr("to")), (Some(JID), Some(JID)));
    assert!(ping.get_child("ping", "urn:xmpp:ping").is_some());
    // Never answered: the daemon gives up on this connection and opens a new one.
    let mut comp = w.server.accept(JID, SECRET, Answer::Accept);
    assert_eq!(w.server.accepted(), 2);
    assert!(w.comp.closed_within(Duration::from_secs(5)));
    let reply = comp.iq(&ping_holding("alive", ""));
    assert_eq!(outcome(&reply), "result");
}

#[test]
fn every_acknowledged_registration_survives_sigkill_and_a_restart() {
    let mut w = start("daemon-kill", |_| ok());
    let mut batch = String::new();
    for i in 0..400 {
        batch.push_str(&register_fixture(
            &format!("user{i}@storm.example/r"),
            &format!("dev{i}"),
            &format!("tok{i}"),
        ));
    }
    w.comp.send(&batch);
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.len() < 100 && Instant::now() < deadline {
        if let Some(reply) = w.comp.recv(Duration::from_millis(500)) {
            assert_eq!(outcome(&reply), "result", "{}", reply.xml);
            let (node, secret) = (reply.form_value("node"), reply.form_value("secret"));
            acked.push((node.unwrap().to_owned(), secret.unwrap().to_owned()));
        }
    }
    w.daemon.kill();
    assert!(acked.len() >= 100, "only {} acknowledged", acked.len());
    let db = rusqlite::Connection::open(w.scratch.join("p2.sqlite")).unwrap();
    let verdict: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(verdict, "ok");
    for (node, _) in &acked {
        let n: i64 = db
            .query_row(
                "SELECT count(*) FROM registration WHERE domain = 'storm.example' AND node = ?1",
                [node],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "acknowledged registration {node} lost");
    }
    drop(db);
    // The next process serves them.
    w.restart();
    let (node, secret) = &acked[acked.len() - 1];
    assert_eq!(
        outcome(&publish(&mut w.comp, "storm.example", node, secret)),
        "result"
    );
}

#[test]
fn one_stanza_never_costs_the_connection() {
    // limits.stanzaBytes reaches the parser.
    let mut w = start_opts(
        "daemon-one-stanza",
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
    // A message gets no reply.
    w.comp.send(&format!(
        "<message from='a@big.example/r' to='{JID}'><body>{big}</body></message>"
    ));
    let deep = |levels: usize| format!("{}{}", "<a>".repeat(levels), "</a>".repeat(levels));
    // 65 levels in all (iq, ping and 63 below): one over the limit, answered on its own.
    let reply = w.comp.iq(&ping_holding("deep", &deep(63)));
    assert_eq!(outcome(&reply), "error wait policy-violation");
    assert_eq!(reply.attr("to"), Some("x@remote.example/r"));
    // 64 levels: within the limit, a ping.
    let reply = w.comp.iq(&ping_holding("at-limit", &deep(62)));
    assert_eq!(outcome(&reply), "result");
    // Far deeper, in a message (no reply), and a prefix declared nowhere (as ejabberd
    // relays one declared on the sending server's stream header).
    w.comp.send(&format!(
        "<message from='x@remote.example/r' to='{JID}'>{}</message>",
        deep(10_000)
    ));
    let reply = w.comp.iq(&ping_holding("prefix", "<db:x db:a='1'/>"));
    assert_eq!(outcome(&reply), "error wait policy-violation");
    // All on the first connection, which still works.
    register(&mut w.comp, "c@big.example/x", "d", "tok");
    let reply = w.comp.iq(&ping_holding("after", ""));
    assert_eq!(outcome(&reply), "result");
    assert_eq!(w.server.accepted(), 1);
}

#[test]
fn a_server_that_stops_reading_is_dropped_and_memory_stays_bounded() {
    // keepalive 3 s: the daemon gives up on a server that takes no bytes for 1 s.
    let w = start_opts(
        "daemon-no-reader",
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
    let pushed_back = Arc::new(AtomicBool::new(false));
    let flooder = {
        let (flooding, sent, pushed_back) = (
            Arc::clone(&flooding),
            Arc::clone(&sent),
            Arc::clone(&pushed_back),
        );
        std::thread::spawn(move || {
            use std::io::{ErrorKind, Write};
            let batch: String = (0..100)
                .map(|i| ping_holding(&format!("f{i}"), ""))
                .collect();
            // A hang guard.
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut at = 0;
            while flooding.load(Ordering::SeqCst) && Instant::now() < deadline {
                // Whole stanzas: a write cut short goes on where it stopped.
                match stream.write(&batch.as_bytes()[at..]) {
                    Ok(n) => {
                        at = (at + n) % batch.len();
                        sent.fetch_add(n, Ordering::SeqCst);
                    }
                    // The daemon stopped reading: TCP pushes back.
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        pushed_back.store(true, Ordering::SeqCst)
                    }
                    // The daemon dropped the connection.
                    Err(_) => break,
                }
            }
        })
    };
    let sampler = {
        let flooding = Arc::clone(&flooding);
        std::thread::spawn(move || {
            let mut peak = 0;
            while flooding.load(Ordering::SeqCst) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    // The daemon gives up on the connection and opens a new one; meanwhile its memory
    // stays bounded.
    let mut comp = server.accept_within(JID, SECRET, Answer::Accept, Duration::from_secs(30));
    flooding.store(false, Ordering::SeqCst);
    flooder.join().unwrap();
    let peak = sampler.join().unwrap().max(start_rss);
    println!(
        "sent {} KiB of pings without reading; daemon RSS {start_rss} KiB at start, {peak} KiB at most",
        sent.load(Ordering::SeqCst) / 1024
    );
    // The flood reached the daemon's bounds: it stopped reading before it let go.
    assert!(pushed_back.load(Ordering::SeqCst), "the daemon read it all");
    assert_eq!(server.accepted(), 2);
    assert!(peak < 200 * 1024, "RSS reached {peak} KiB");
    // The new connection works.
    let reply = comp.iq(&ping_holding("after", ""));
    assert_eq!(outcome(&reply), "result");
    drop(daemon);
}

#[test]
fn exit_codes_name_the_problem() {
    let dir = Scratch::new("daemon-exit");
    let (code, out, _) = cli(&dir, &["--version"]);
    assert_eq!(
        (code, out),
        (0, format!("p2 {}\n", env!("CARGO_PKG_VERSION")))
    );

    // 78: the daemon with an invalid config, naming key and file, in its log.
    let mut daemon = Daemon::start(
        &dir,
        &serde_json::json!({"jid": "push.localhost", "port": 99999, "sharedSecret": "x"}),
        "info",
    );
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("p2 exits on a bad config");
    assert_eq!(status.code(), Some(78));
    assert_eq!(
        daemon.log().trim(),
        "p2: config.json: port: must be a whole number from 1 to 65535"
    );

    // 78: check-config with a service account file that is not there.
    std::fs::write(
        dir.join("broken.json"),
        r#"{"jid":"p2.x","sharedSecret":"s","fcm":{"serviceAccountFile":"missing.json"}}"#,
    )
    .unwrap();
    let (code, _, err) = cli(&dir, &["check-config", "-c", "broken.json"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.starts_with("p2: broken.json: fcm.serviceAccountFile: "),
        "{err}"
    );

    // 65: an import of a malformed export, naming the line.
    std::fs::write(
        dir.join("bare.json"),
        serde_json::json!({"jid": JID, "sharedSecret": SECRET}).to_string(),
    )
    .unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import/cut.tsv"),
        dir.join("cut.tsv"),
    )
    .unwrap();
    let (code, out, err) = cli(&dir, &["import", "-c", "bare.json", "cut.tsv"]);
    assert_eq!(code, 65, "{out}{err}");
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.starts_with("p2: cut.tsv: line 4: ")),
        "{err}"
    );

    // 1: anything else, such as a database that cannot be opened.
    std::fs::create_dir(dir.join("a-directory")).unwrap();
    let mut daemon = Daemon::start(
        &dir,
        &serde_json::json!({"jid": JID, "sharedSecret": SECRET, "database": "a-directory"}),
        "info",
    );
    let status = daemon.wait_exit(Duration::from_secs(10)).expect("p2 exits");
    assert_eq!(status.code(), Some(1), "{}", daemon.log());
    assert!(
        daemon.log().contains("ERROR [p2] database: "),
        "{}",
        daemon.log()
    );

    // 78: a build without the cargo feature `apns` refuses APNs settings, saying why.
    #[cfg(not(feature = "apns"))]
    {
        const LACKS: &str = "this build of p2 lacks APNs (built without the `apns` cargo \
                             feature); rebuild it with `cargo build --release --features \
                             apns`, or remove the APNs settings to run with FCM only";
        let config = serde_json::json!({
            "jid": "push.localhost", "sharedSecret": "x",
            "apns": {"certificate": "apns.pem", "privateKey": "apns.key",
                     "bundleId": "im.conversations.test", "sandbox": false}
        });
        let mut daemon = Daemon::start(&dir, &config, "info");
        let status = daemon.wait_exit(Duration::from_secs(10)).expect("p2 exits");
        assert_eq!(status.code(), Some(78));
        assert!(
            daemon
                .log()
                .ends_with(&format!("ERROR [p2] config.json: apns: {LACKS}\n")),
            "{}",
            daemon.log()
        );
        let (code, _, err) = cli(&dir, &["check-config", "-c", "config.json"]);
        assert_eq!(code, 78);
        assert_eq!(err.trim(), format!("p2: config.json: apns: {LACKS}"));
        // The Java p2's variables alone.
        let dir = Scratch::new("daemon-exit-env");
        let mut daemon = Daemon::start_with_env(
            &dir,
            &serde_json::json!({"jid": "push.localhost", "sharedSecret": "x"}),
            "info",
            &[
                ("P2_APNS_BUNDLE_ID", "im.conversations.test"),
                ("P2_APNS_CERTIFICATE", "apns.pem"),
                ("P2_APNS_PRIVATE_KEY", "apns.key"),
            ],
        );
        let status = daemon.wait_exit(Duration::from_secs(10)).expect("p2 exits");
        assert_eq!(status.code(), Some(78));
        assert_eq!(
            daemon.log().trim(),
            format!("ERROR [p2] environment: P2_APNS_*: {LACKS}")
        );
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
