//! The metrics listener: in the real `p2` binary over loopback, `/metrics` after a push
//! read with an exposition checker of its own (not p2's renderer) and `/health`
//! following the fake XMPP server's handshake; in-process (`metrics::http::Server` with
//! short time bounds), the listener's answers and its limits against idle, trickling,
//! oversized and surplus clients.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::world::*;
use common::xmpp::{outcome, Answer};

const TOKEN: &str = "fcm-token-for-the-metrics-test";

/// The connections the listener holds at once (ARCHITECTURE.md, README "Monitoring").
const CAP: usize = 4;

fn with_metrics() -> Opts {
    Opts {
        extra: vec![("metrics", serde_json::json!({"listen": "127.0.0.1:0"}))],
        ..Opts::default()
    }
}

/// The address the daemon's listener bound (port 0 asked), from its start-up line.
fn metrics_addr(daemon: &Daemon) -> SocketAddr {
    let needle = "metrics and health on http://";
    assert!(
        daemon.wait_log(needle, Duration::from_secs(20)),
        "no listener: {}",
        daemon.log()
    );
    let log = daemon.log();
    let rest = &log[log.find(needle).unwrap() + needle.len()..];
    let addr = &rest[..rest.find('/').unwrap()];
    addr.parse().unwrap()
}

/// One HTTP answer, read to the end of the connection.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Everything the server sends until it closes (bounded: 20 s).
fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the server did not close the connection");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return raw,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return raw,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Parses a whole HTTP/1.1 answer and checks its framing: the status line, header
/// fields, `Content-Length` matching the body, `Connection: close`.
fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8(raw.to_vec()).expect("answer is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status: u16 = parts.next().unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("name: value");
            (n.to_owned(), v.trim().to_owned())
        })
        .collect();
    let reply = Reply {
        status,
        headers,
        body: body.to_owned(),
    };
    assert_eq!(reply.header("connection"), Some("close"));
    reply
}

fn request(addr: SocketAddr, raw: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let reply = parse_reply(&read_all(&mut s));
    if !raw.starts_with("HEAD ") {
        assert_eq!(
            reply.header("content-length"),
            Some(reply.body.len().to_string().as_str())
        );
    }
    reply
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n"),
    )
}

/// Polls `/health` (bounded: 20 s) until it answers `status`.
fn health_becomes(addr: SocketAddr, status: u16) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = get(addr, "/health");
        if reply.status == status || Instant::now() > deadline {
            return reply;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// --- an exposition checker of its own ---------------------------------------------------

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s
            .parse()
            .unwrap_or_else(|_| panic!("not a sample value: {s:?}")),
    }
}

/// `{a="x",b="y"}` → labels; the rest of the line after the closing brace.
fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').unwrap();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let eq = rest.find('=').expect("label name=");
        let name = &rest[..eq];
        assert!(
            is_name(name) && !name.contains(':'),
            "bad label name {name:?}"
        );
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .expect("quoted label value");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().expect("unterminated label value") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("escape").1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => panic!("bad escape \\{c}"),
                },
                (_, c) => value.push(c),
            }
        };
        assert!(
            labels.insert(name.to_owned(), value).is_none(),
            "label {name} twice"
        );
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Checks the text format (0.0.4) and returns the samples: every line a `# HELP`, a
/// `# TYPE` or `name{labels} value`; every sample's family typed before it, once;
/// counters named `_total`; every histogram's buckets cumulative in increasing `le`,
/// ending with `+Inf` equal to `_count`, with a `_sum`.
fn check_exposition(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "the last line ends with a line feed");
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("# HELP name text");
            assert!(is_name(name));
            assert!(!help.is_empty());
            assert!(
                helps.insert(name.to_owned(), help.to_owned()).is_none(),
                "HELP {name} twice"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            assert!(is_name(name));
            assert!(
                matches!(kind, "counter" | "gauge" | "histogram"),
                "type {kind}"
            );
            assert!(
                samples.iter().all(|s: &Sample| s.name != name),
                "TYPE {name} after its samples"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE {name} twice"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} not named _total");
            }
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let name = &line[..name_end];
        assert!(is_name(name), "bad metric name {name:?}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..])
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value = rest.strip_prefix(' ').expect("one space before the value");
        assert!(!value.contains(' '), "a timestamp or junk after {line:?}");
        let family = if types.contains_key(name) {
            name
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or_else(|| panic!("no # TYPE for {name}"))
        };
        assert!(helps.contains_key(family), "no # HELP for {family}");
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value: parse_value(value),
        });
    }
    // Histograms.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let mut key = s.labels.clone();
            let le = key.remove("le").expect("a bucket has le");
            series
                .entry(key)
                .or_default()
                .push((parse_value(&le), s.value));
        }
        assert!(!series.is_empty(), "histogram {family} without buckets");
        for (key, buckets) in series {
            for pair in buckets.windows(2) {
                assert!(pair[0].0 < pair[1].0, "{family}{key:?}: le not increasing");
                assert!(pair[0].1 <= pair[1].1, "{family}{key:?}: not cumulative");
            }
            let last = buckets.last().unwrap();
            assert_eq!(
                last.0,
                f64::INFINITY,
                "{family}{key:?}: last le is not +Inf"
            );
            let find = |suffix: &str| {
                samples
                    .iter()
                    .find(|s| s.name == format!("{family}{suffix}") && s.labels == key)
                    .unwrap_or_else(|| panic!("{family}{suffix}{key:?} missing"))
                    .value
            };
            assert_eq!(last.1, find("_count"), "{family}{key:?}: +Inf != _count");
            assert!(find("_sum") >= 0.0);
        }
    }
    samples
}

/// The value of the sample `name` with exactly `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
        .value
}

/// Runs `promtool check metrics` on `text` when promtool is installed (CI installs it
/// and sets P2_PROMTOOL_REQUIRED).
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            assert!(
                std::env::var_os("P2_PROMTOOL_REQUIRED").is_none(),
                "promtool is not installed"
            );
            eprintln!("promtool not installed: skipping its check");
            return;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- the binary --------------------------------------------------------------------------

#[test]
fn the_daemon_serves_metrics_and_health() {
    let Launched {
        mut server,
        mut daemon,
        mock,
        scratch: _scratch,
        ..
    } = launch("metrics-daemon", Arc::new(|_| ok()), with_metrics());
    let addr = metrics_addr(&daemon);
    let not_connected = format!("not connected to 127.0.0.1:{}\n", server.port());
    // The daemon may have opened its TCP connection, but no handshake was accepted.
    let reply = get(addr, "/health");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, not_connected.as_str())
    );
    let mut comp = server.accept(JID, SECRET, Answer::Accept);
    let reply = health_becomes(addr, 200);
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));

    // Idle clients beyond the cap hold nothing the daemon needs: a push goes through.
    let idle: Vec<TcpStream> = (0..3 * CAP)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let (node, secret) = register(&mut comp, "alice@example.net/phone", "dev-1", TOKEN);
    assert_eq!(
        outcome(&publish(&mut comp, "example.net", &node, &secret)),
        "result"
    );
    assert_eq!(mock.requests_to(FCM_PATH).len(), 1);
    drop(idle);

    let reply = get(addr, "/metrics");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let samples = check_exposition(&reply.body);
    let fcm = [("provider", "fcm")];
    let delivered = [("provider", "fcm"), ("outcome", "delivered")];
    assert_eq!(value(&samples, "p2_pushes_total", &delivered), 1.0);
    assert_eq!(value(&samples, "p2_push_duration_seconds_count", &fcm), 1.0);
    assert_eq!(
        value(
            &samples,
            "p2_pushes_total",
            &[("provider", "fcm"), ("outcome", "failed")]
        ),
        0.0
    );
    assert_eq!(value(&samples, "p2_registrations", &fcm), 1.0);
    assert_eq!(value(&samples, "p2_registrations_created_total", &fcm), 1.0);
    assert_eq!(value(&samples, "p2_xmpp_connected", &[]), 1.0);
    assert_eq!(
        value(&samples, "p2_oauth_refreshes_total", &[("result", "ok")]),
        1.0
    );
    // `workers: 4` for one domain, and a quarter more (at least one) for the others.
    assert_eq!(value(&samples, "p2_push_workers", &[]), 5.0);
    // The registration was committed: one commit at least.
    assert!(value(&samples, "p2_db_commit_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(
        value(
            &samples,
            "p2_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                (
                    "apns",
                    if cfg!(feature = "apns") {
                        "true"
                    } else {
                        "false"
                    }
                )
            ]
        ),
        1.0
    );
    // Nothing of the account, node, secret or token in any label.
    for s in &samples {
        for v in s.labels.values() {
            for private in ["alice", "example.net", &node, &secret, TOKEN, "@"] {
                assert!(!v.contains(private), "{} leaks {private:?}", s.name);
            }
        }
    }
    promtool_check(&reply.body);
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics-after-push.prom"),
        &reply.body,
    );

    // The connection goes: 503, and the gauge and counter say so.
    comp.close();
    drop(comp);
    let reply = health_becomes(addr, 503);
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, not_connected.as_str())
    );
    let samples = check_exposition(&get(addr, "/metrics").body);
    assert_eq!(value(&samples, "p2_xmpp_connected", &[]), 0.0);
    assert!(value(&samples, "p2_xmpp_reconnects_total", &[]) >= 1.0);

    // SIGTERM stops the listener with the rest.
    daemon.terminate();
    let status = daemon.wait_exit(Duration::from_secs(30)).expect("p2 exits");
    assert_eq!(status.code(), Some(0));
    assert!(TcpStream::connect(addr).is_err(), "still listening");
}

// --- the listener in-process -----------------------------------------------------------

/// The read bound of the in-process listener (the daemon's is 5 s).
const READ: Duration = Duration::from_millis(1000);

/// A listener on 127.0.0.1:0 with metrics of its own (connected) and a database in a
/// scratch directory, within [`READ`].
struct Listener {
    server: p2::metrics::http::Server,
    metrics: &'static p2::metrics::Metrics,
    _dir: common::scratch::Scratch,
}

impl Listener {
    fn start(name: &str) -> Listener {
        let dir = common::scratch::Scratch::new(name);
        let db = dir.join("p2.sqlite");
        drop(p2::store::Store::open(&db).unwrap());
        let metrics: &'static p2::metrics::Metrics =
            Box::leak(Box::new(p2::metrics::Metrics::new()));
        metrics.connected();
        let health = p2::metrics::health::Health::new("127.0.0.1:5347".into(), db);
        let server = p2::metrics::http::Server::start_with(
            "127.0.0.1:0".parse().unwrap(),
            metrics,
            health,
            p2::metrics::http::Bounds {
                read: READ,
                write: READ,
                ..Default::default()
            },
        )
        .unwrap();
        Listener {
            server,
            metrics,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

#[test]
fn health_names_what_is_wrong_and_metrics_render() {
    let l = Listener::start("listener-health");
    let reply = get(l.addr(), "/health");
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
    l.metrics.disconnected();
    let reply = get(l.addr(), "/health");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, "not connected to 127.0.0.1:5347\n")
    );
    let samples = check_exposition(&get(l.addr(), "/metrics").body);
    assert_eq!(value(&samples, "p2_xmpp_connected", &[]), 0.0);
    // HEAD: the same head, no body.
    let head = request(l.addr(), "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let length: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(length > 1000, "{length}");
}

#[test]
fn other_paths_methods_and_versions() {
    let l = Listener::start("listener-404");
    let addr = l.addr();
    for path in ["/", "/metrics/", "/healthz", "/favicon.ico"] {
        assert_eq!(get(addr, path).status, 404, "{path}");
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        for path in ["/metrics", "/health"] {
            let reply = request(addr, &format!("{method} {path} HTTP/1.1\r\n\r\n"));
            assert_eq!(reply.status, 405, "{method} {path}");
            assert_eq!(reply.header("allow"), Some("GET, HEAD"));
        }
    }
    // A query string is not part of the path.
    assert_eq!(get(addr, "/health?verbose=1").status, 200);
    assert_eq!(request(addr, "GET /health HTTP/1.0\r\n\r\n").status, 200);
    assert_eq!(request(addr, "BREW /pot\r\n\r\n").status, 400);
    assert_eq!(request(addr, "GET /metrics HTTP/2.0\r\n\r\n").status, 505);
}

#[test]
fn a_silent_client_is_dropped_and_others_are_served_meanwhile() {
    let l = Listener::start("listener-silent");
    let addr = l.addr();
    // Connects and sends nothing.
    let mut silent = TcpStream::connect(addr).unwrap();
    assert_eq!(get(addr, "/health").status, 200);
    assert_eq!(get(addr, "/metrics").status, 200);
    // The silent one is still open: nothing to read yet, no end of stream. (Served
    // within the read bound: a slower machine only skips this look.)
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1];
    let peek = silent.peek(&mut buf);
    silent.set_nonblocking(false).unwrap();
    assert!(
        matches!(&peek, Err(e) if e.kind() == ErrorKind::WouldBlock)
            || matches!(peek, Ok(n) if n > 0),
        "{peek:?}"
    );
    // Then it gets 408 and the end of the connection (read_all's hang guard: 20 s).
    let reply = parse_reply(&read_all(&mut silent));
    assert_eq!(reply.status, 408);
}

#[test]
fn a_trickling_client_does_not_extend_the_read_bound() {
    let l = Listener::start("listener-trickle");
    let mut reader = TcpStream::connect(l.addr()).unwrap();
    let mut writer = reader.try_clone().unwrap();
    let trickling = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&trickling);
    // One byte of a request head every 20 ms, for at most 3 × the bound.
    let trickler = std::thread::spawn(move || {
        let head: Vec<u8> = b"GET /metrics HTTP/1.1\r\nX-Slow: "
            .iter()
            .copied()
            .chain(std::iter::repeat_n(b'a', 100))
            .collect();
        let started = Instant::now();
        for byte in head.iter().cycle() {
            if started.elapsed() > 3 * READ || writer.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        flag.store(false, Ordering::SeqCst);
    });
    let reply = parse_reply(&read_all(&mut reader));
    // Closed while bytes were still coming: the bound counts from the connection's
    // start, not from the last byte.
    assert!(
        trickling.load(Ordering::SeqCst),
        "closed only after the client gave up"
    );
    assert_eq!(reply.status, 408);
    drop(reader);
    trickler.join().unwrap();
}

#[test]
fn an_oversized_request_head_is_refused_and_closed() {
    let l = Listener::start("listener-big");
    let addr = l.addr();
    // Just under 8 KiB of head: served.
    let filler = format!("X-Filler: {}\r\n", "a".repeat(100));
    let head = format!(
        "GET /health HTTP/1.1\r\n{}\r\n",
        filler.repeat(8 * 1024 / filler.len() - 1)
    );
    assert!(head.len() < 8 * 1024);
    assert_eq!(request(addr, &head).status, 200);

    // 64 KiB of header fields that never end: 431, then closed.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    let mut sent = 0;
    while sent < 64 * 1024 {
        if s.write_all(filler.as_bytes()).is_err() {
            break; // closed by the server
        }
        sent += filler.len();
    }
    let reply = parse_reply(&read_all(&mut s));
    assert_eq!(reply.status, 431);
}

#[test]
fn idle_connections_beyond_the_cap_cannot_block_health() {
    let l = Listener::start("listener-flood");
    let addr = l.addr();
    let idle: Vec<TcpStream> = (0..3 * CAP)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Served at once, though the idle ones were there first.
    let reply = get(addr, "/health");
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
    // At most CAP of the idle connections were kept (they end with 408 at the read
    // bound); the others were closed unanswered to make room.
    let answered = idle
        .into_iter()
        .map(|mut s| read_all(&mut s))
        .filter(|raw| !raw.is_empty())
        .inspect(|raw| assert_eq!(parse_reply(raw).status, 408))
        .count();
    assert!(answered <= CAP, "{answered} idle connections were held");
}
