//! Operations end to end: graceful stop, systemd notifications, keepalive, the admin
//! subcommands and the import from the Java p2, on the real binary over loopback.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::{cli, Daemon};
use common::http::Request;
use common::world::*;
use common::xmpp::{id_of, outcome, Answer};

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
            w.comp.send(&stanza);
            id_of(&stanza)
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
    let dir = common::scratch::Scratch::new("ops-notify");
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
    let dir_probe = common::scratch::Scratch::new("ops-status-sock");
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
    // To ourselves, so that it stays on our server (PROTOCOL.md §2).
    assert_eq!(ping.attr("from"), Some(JID));
    assert_eq!(ping.attr("to"), Some(JID));
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
    // The design note's golden vector: xiaomia1@jabber.de with DEVICE_ID.
    let device = "ec164939a8485ee6b7f7871071a11c7bb18aead5";
    std::fs::write(dir.join("export.tsv"), export(device)).unwrap();
    // A malformed export is refused whole, naming the line.
    std::fs::write(
        dir.join("bad.tsv"),
        export(device) + "FCM\tnot-a-hash\t\tjabber.de\tt\tn\ts\n",
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
    // The operator sees the effective cap and expiry (the defaults here).
    assert!(
        out.contains("100000 registrations per domain")
            && out.contains(
                "expiry: registrations neither refreshed nor pushed to for 180 days are deleted"
            ),
        "{out}"
    );
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

/// The exports of tests/fixtures/import/, as files a real `mysql --batch` run left.
fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures_dir().join(name)).unwrap()
}

/// A working directory with a config that has neither `fcm` nor `apns`.
fn bare_dir(name: &str) -> common::scratch::Scratch {
    let dir = common::scratch::Scratch::new(name);
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({"jid": JID, "sharedSecret": SECRET}).to_string(),
    )
    .unwrap();
    dir
}

#[test]
fn malformed_exports_are_refused_naming_the_line_and_showing_no_data() {
    let dir = bare_dir("ops-import-bad");
    let good = fixture("java-p2.tsv");
    for (file, message) in [
        (
            "cut.tsv",
            "cut.tsv: line 4: the file ends inside this line (no final newline): it was cut \
             short; export it again; nothing imported",
        ),
        (
            "lossy-domain.tsv",
            "line 3: domain holds '?': the export lost its non-ASCII characters (a client \
             without a UTF-8 locale); export again with `mysql --default-character-set=utf8mb4`",
        ),
        (
            "wrong-lengths.tsv",
            "line 2: node is not 12 base64 characters as the Java p2 makes them",
        ),
        (
            "wrong-lengths.tsv",
            "line 3: secret is not 24 base64 characters as the Java p2 makes them",
        ),
        (
            "latin1-domain.tsv",
            "latin1-domain.tsv: not UTF-8 text (exported in another character set?): export \
             again with `mysql --default-character-set=utf8mb4`; nothing imported",
        ),
        (
            "no-header.tsv",
            "no-header.tsv: line 1: expected the header \
             \"service\\tdevice\\tchannel\\tdomain\\ttoken\\tnode\\tsecret\", found 7 fields, \
             none of them a column name",
        ),
    ] {
        std::fs::copy(fixtures_dir().join(file), dir.join(file)).unwrap();
        let (code, out, err) = cli(&dir, &["import", "-c", "config.json", file]);
        assert_eq!(code, 65, "{file}: {out}{err}");
        assert!(err.contains(message), "{file}: {err}");
        // Not a token, a node or a secret on the terminal (nor in part).
        for row in good.lines().skip(1) {
            for value in row.split('\t').skip(4) {
                assert!(
                    !out.contains(&value[..8]) && !err.contains(&value[..8]),
                    "{file} shows data: {out}{err}"
                );
            }
        }
        let (_, stats, _) = cli(&dir, &["stats", "-c", "config.json"]);
        assert!(stats.contains("registrations: 0"), "{file}: {stats}");
    }
}

#[test]
fn imported_idn_rows_answer_either_spelling_and_missing_providers_are_named() {
    let mut w = start("ops-import-idn", |_| ok());
    let dir = w.daemon.dir.clone();
    w.daemon.kill();
    std::fs::write(dir.join("java-p2.tsv"), fixture("java-p2.tsv")).unwrap();
    let (code, out, err) = cli(&dir, &["import", "-c", "config.json", "java-p2.tsv"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("imported 3 rows into p2.sqlite: 3 new"),
        "{out}"
    );
    // The config has FCM; the APNs row is imported and the operator told why it waits.
    let apns = if cfg!(feature = "apns") {
        "warning: 1 APNs registration was imported, but `apns` is not configured: \
         publishes to it are answered `wait` until it is\n"
    } else {
        "warning: 1 APNs registration was imported, but this build has no APNs (cargo \
         feature `apns`): publishes to it are answered `wait` until it is\n"
    };
    assert!(out.contains(apns), "{out}");
    assert!(!out.contains("FCM registration"), "{out}");
    assert!(
        out.ends_with(
            "now delete java-p2.tsv (and any copy): it holds every push token and publish \
             secret\n"
        ),
        "{out}"
    );

    w.daemon = Daemon::start(&dir, &w.config, "debug");
    w.comp = w.server.accept(JID, SECRET, Answer::Accept);
    // The Java p2 stored the Unicode form; the user's server may stamp either.
    for from in [
        "xn--e1afmkfd.xn--p1ai",
        "пример.рф",
        "XN--E1AFMKFD.xn--P1AI.",
    ] {
        let reply = publish(
            &mut w.comp,
            from,
            "twV50HbUmSgk",
            "eviLlBrcdeNchE3iGwfQ6gca",
        );
        assert_eq!(outcome(&reply), "result", "{from}");
    }
    let body = &fcm_sends(&w.mock)[0];
    // printf 'user@пример.рф\000''92afd7a91cdba9a0' | sha1sum
    assert_eq!(
        body["message"]["data"]["account"],
        "6d175fd22ee38513e7c615407eab942c8603aa9f"
    );
    // The phone re-registers through a server that stamps the ACE form, in capitals:
    // the same device hash, so the imported node and secret.
    let (node, secret) = register(
        &mut w.comp,
        "User@XN--E1AFMKFD.xn--p1ai/Conversations.a b",
        DEVICE_ID,
        "fresh-token",
    );
    assert_eq!(
        (node.as_str(), secret.as_str()),
        ("twV50HbUmSgk", "eviLlBrcdeNchE3iGwfQ6gca")
    );
}

#[test]
fn import_names_rows_whose_provider_is_not_configured() {
    let dir = bare_dir("ops-import-nofcm");
    std::fs::write(dir.join("java-p2.tsv"), fixture("java-p2.tsv")).unwrap();
    let (code, out, err) = cli(&dir, &["import", "-c", "config.json", "java-p2.tsv"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "warning: 2 FCM registrations were imported, but `fcm` is not configured \
             (fcm.serviceAccountFile): publishes to them are answered `wait` until it is\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("warning: 1 APNs registration was imported"),
        "{out}"
    );
}

#[test]
fn sigterm_is_prompt_while_connected_and_idle() {
    // The default keepalive: the connection thread has no timer for 60 s.
    let mut w = start("ops-idle-stop", |_| ok());
    let reply = w.comp.iq(&format!(
        "<iq type='get' from='localhost' to='{JID}' id='up'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    assert_eq!(outcome(&reply), "result");
    std::thread::sleep(Duration::from_millis(300));
    w.daemon.terminate();
    let status = w
        .daemon
        .wait_exit(Duration::from_secs(10))
        .expect("p2 exits after SIGTERM without waiting for its keepalive");
    assert_eq!(status.code(), Some(0));
    assert!(w.comp.closed_within(Duration::from_secs(5)));
}
