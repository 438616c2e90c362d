//! Operations end to end: graceful stop, systemd notifications, keepalive, the admin
//! subcommands and the import from the Java p2, on the real binary over loopback.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::{cli, Daemon};
use common::http::{Request, Response};
use common::keys;
use common::world::*;
use common::xmpp::{outcome, Answer};

fn ok() -> Response {
    Response::json(200, r#"{"name":"projects/p2-test/messages/1"}"#)
}

#[test]
fn sigterm_lets_pushes_in_flight_finish_then_closes_the_stream() {
    let mut w = start_opts(
        "ops-sigterm",
        Arc::new(|_: &Request| ok().delay(Duration::from_millis(800))),
        Opts::default(),
    );
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    let ids: Vec<String> = (0..10)
        .map(|_| {
            let stanza = publish_stanza("example.net", &node, &secret);
            let id = stanza
                .split("id='")
                .nth(1)
                .unwrap()
                .split('\'')
                .next()
                .unwrap()
                .to_owned();
            w.comp.send(&stanza);
            id
        })
        .collect();
    assert!(
        w.mock.wait_for_requests(3, Duration::from_secs(10)),
        "pushes did not start"
    );
    w.daemon.terminate();
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
    let status = w
        .daemon
        .wait_exit(Duration::from_secs(10))
        .expect("p2 exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert_eq!(w.mock.requests_to(FCM_PATH).len(), 10);
    assert!(w.daemon.log().contains("stopped"));
}

fn notify_socket(dir: &std::path::Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (socket, path.display().to_string())
}

/// Notifications received until `until` says enough or 10 s pass.
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
fn ready_without_an_xmpp_server_then_status_and_watchdog() {
    let dir = keys::scratch_dir("ops-notify");
    let (socket, path) = notify_socket(&dir);
    // A port where nothing listens: the XMPP server is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config =
        serde_json::json!({"host": "127.0.0.1", "port": port, "jid": JID, "sharedSecret": SECRET});
    let daemon = Daemon::start_with_env(
        &dir,
        &config,
        "info",
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "1000000")],
    );
    let seen = notifications(&socket, |s| {
        s.iter().any(|m| m.contains("STATUS=disconnected")) && s.iter().any(|m| m == "WATCHDOG=1")
    });
    assert!(
        seen[0].starts_with("READY=1\nSTATUS=connecting to 127.0.0.1:"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|m| m.contains("STATUS=disconnected")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|m| m == "WATCHDOG=1"), "{seen:?}");
    daemon.terminate();
    let seen = notifications(&socket, |s| s.iter().any(|m| m == "STOPPING=1"));
    assert!(seen.iter().any(|m| m == "STOPPING=1"), "{seen:?}");
}

#[test]
fn status_reports_the_connection() {
    let dir_probe = keys::scratch_dir("ops-status-sock");
    let (socket, path) = notify_socket(&dir_probe);
    let w = start_opts(
        "ops-status",
        Arc::new(|_: &Request| ok()),
        Opts {
            env: vec![("NOTIFY_SOCKET".into(), path)],
            ..Opts::default()
        },
    );
    let seen = notifications(&socket, |s| {
        s.iter().any(|m| m.starts_with("STATUS=connected"))
    });
    assert!(seen[0].starts_with("READY=1"), "{seen:?}");
    assert!(
        seen.iter()
            .any(|m| m.starts_with("STATUS=connected to 127.0.0.1:") && m.ends_with(JID)),
        "{seen:?}"
    );
    drop(w);
}

#[test]
fn a_silent_server_is_pinged_then_dropped_and_reconnected() {
    let mut w = start_opts(
        "ops-keepalive",
        Arc::new(|_: &Request| ok()),
        Opts {
            extra: vec![("keepalive", serde_json::json!(1))],
            ..Opts::default()
        },
    );
    let ping = w
        .comp
        .recv(Duration::from_secs(5))
        .expect("no keepalive ping");
    assert_eq!(ping.attr("type"), Some("get"));
    assert_eq!(ping.attr("from"), Some(JID));
    assert!(ping.get_child("ping", "urn:xmpp:ping").is_some());
    // Never answered: the daemon gives up on this connection and opens a new one.
    let started = Instant::now();
    let mut comp = w.server.accept(JID, SECRET, Answer::Accept);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        w.daemon.log().contains("presumed dead"),
        "{}",
        w.daemon.log()
    );
    let reply = comp.iq(&format!(
        "<iq type='get' from='localhost' to='{JID}' id='alive'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    assert_eq!(outcome(&reply), "result");
}

const DEVICE_ID: &str = "92afd7a91cdba9a0";
const JAVA_NODE: &str = "eKxTS5n3bOe0";
const JAVA_SECRET: &str = "KK4+H5WMfpRG/2zCbuKq6wpX";

fn export(device: &str) -> String {
    format!(
        "service\tdevice\tchannel\tdomain\ttoken\tnode\tsecret\n\
         FCM\t{device}\t\tjabber.de\tjava-era-token\t{JAVA_NODE}\t{JAVA_SECRET}\n\
         APNS\t{device}\tNULL\tjabber.de\tapns-token\tAbCdEfGhIjKl\tapnssecretapnssecretapns\n"
    )
}

#[test]
fn imported_registrations_keep_node_and_secret_and_are_pushed() {
    let mut w = start("ops-import", |_| ok());
    let dir = w.daemon.dir.clone();
    w.daemon.kill();
    let device = p2::xmpp::command::hash_with_device("xiaomia1@jabber.de", DEVICE_ID);
    std::fs::write(dir.join("export.tsv"), export(&device)).unwrap();
    // A malformed export is refused whole, naming the line.
    std::fs::write(
        dir.join("bad.tsv"),
        export(&device) + "FCM\tnot-a-hash\t\tjabber.de\tt\tn\ts\n",
    )
    .unwrap();
    let (code, _, err) = cli(&dir, &["import", "-c", "config.json", "bad.tsv"]);
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("line 4: device is not a 40-character lowercase hex hash"),
        "{err}"
    );
    let (_, stats, _) = cli(&dir, &["stats", "-c", "config.json"]);
    assert!(stats.contains("registrations: 0"), "{stats}");

    let (code, out, err) = cli(&dir, &["import", "-c", "config.json", "export.tsv"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("imported 2 rows") && out.contains("2 new"),
        "{out}"
    );
    let (code, out, _) = cli(&dir, &["-c", "config.json", "import", "export.tsv"]);
    assert_eq!(code, 0);
    assert!(out.contains("0 new, 0 updated, 2 unchanged"), "{out}");

    w.daemon = Daemon::start(&dir, &w.config, "debug");
    w.comp = w.server.accept(JID, SECRET, Answer::Accept);
    let reply = publish(&mut w.comp, "jabber.de", JAVA_NODE, JAVA_SECRET);
    assert_eq!(outcome(&reply), "result");
    let body = w.mock.requests_to(FCM_PATH)[0].json().unwrap();
    assert_eq!(body["message"]["token"], "java-era-token");
    assert_eq!(
        body["message"]["data"]["account"],
        "ec164939a8485ee6b7f7871071a11c7bb18aead5"
    );
    // The phone re-registers as it does on every session: same node and secret.
    let (node, secret) = register(
        &mut w.comp,
        "xiaomia1@jabber.de/Conversations.sAdA",
        DEVICE_ID,
        "fresh-token",
    );
    assert_eq!((node.as_str(), secret.as_str()), (JAVA_NODE, JAVA_SECRET));
    // An APNs row without APNs configured: kept, answered wait.
    let reply = publish(
        &mut w.comp,
        "jabber.de",
        "AbCdEfGhIjKl",
        "apnssecretapnssecretapns",
    );
    assert_eq!(outcome(&reply), "error wait internal-server-error");
}

#[test]
fn check_config_stats_and_prune() {
    let mut w = start("ops-admin", |_| ok());
    register(&mut w.comp, "a@one.example/r", "d1", "t1");
    register(&mut w.comp, "b@two.example/r", "d2", "t2");
    register(&mut w.comp, "c@two.example/r", "d3", "t3");
    let dir = w.daemon.dir.clone();

    let (code, out, err) = cli(&dir, &["check-config", "-c", "config.json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("jid: push.localhost") && out.contains("fcm: project p2-test"),
        "{out}"
    );
    assert!(out.ends_with("ok\n"));
    assert!(
        !out.contains(SECRET) && !out.contains("PRIVATE KEY"),
        "{out}"
    );
    // The service account's address, and what a wrong google-services.json would do.
    assert!(
        out.contains("service-account.json (p2-push@p2-test.iam.gserviceaccount.com), "),
        "{out}"
    );
    assert!(
        out.contains(
            "\n  the app's google-services.json must come from Firebase project p2-test: \
             with another project's, FCM answers every push SENDER_ID_MISMATCH, which p2 \
             answers wait (keeping the registration) until these credentials have \
             delivered a push\n"
        ),
        "{out}"
    );

    let (code, out, _) = cli(&dir, &["stats", "-c", "config.json"]);
    assert_eq!(code, 0);
    assert!(out.contains("registrations: 3\n  fcm: 3"), "{out}");
    assert!(out.contains("  two.example: 2\n  one.example: 1"), "{out}");

    // Age one registration by hand, as if untouched for 200 days.
    let db = rusqlite::Connection::open(dir.join("p2.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let old = p2::store::unix_now() - 200 * 86_400;
    db.execute(
        "UPDATE registration SET updated = ?1 WHERE domain = 'one.example'",
        [old],
    )
    .unwrap();
    let (code, out, _) = cli(&dir, &["prune", "-c", "config.json", "--older-than", "180"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("deleted 1 registrations"), "{out}");
    let (_, out, _) = cli(&dir, &["stats", "-c", "config.json"]);
    assert!(out.contains("registrations: 2"), "{out}");

    // A broken service account key: 78, naming the key and the file.
    std::fs::write(
        dir.join("broken.json"),
        r#"{"jid":"p2.x","sharedSecret":"s","fcm":{"serviceAccountFile":"missing.json"}}"#,
    )
    .unwrap();
    let (code, _, err) = cli(&dir, &["check-config", "-c", "broken.json"]);
    assert_eq!(code, 78);
    assert!(
        err.starts_with("p2: broken.json: fcm.serviceAccountFile: "),
        "{err}"
    );
}
