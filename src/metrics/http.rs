//! The metrics listener: plain HTTP/1.x on `metrics.listen`, `GET /metrics` (Prometheus
//! text format) and `GET /health`, one request per connection.
//!
//! A slow or hostile client cannot block the daemon or hold more than a few sockets:
//! - the listener is a thread of its own; it reads atomics and its own database
//!   connection, never the core's;
//! - a request head is at most [`MAX_HEAD`] bytes, read within [`READ_TIMEOUT`] from
//!   the connection's start (not per read: trickling bytes does not extend it); a body
//!   is never read; the answer is written with [`WRITE_TIMEOUT`];
//! - at most [`MAX_CONNECTIONS`] connections are held: one more evicts the oldest (its
//!   socket is shut down, which ends its handler at once), so a new request is always
//!   served; at most [`MAX_THREADS`] handler threads exist (evicted ones may still be
//!   finishing): a new connection waits up to [`THREAD_WAIT`] for one of them to end,
//!   and is closed unanswered if none does;
//! - every answer carries `Connection: close`.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::health::Health;
use super::Metrics;

/// Longest request head (request line and header fields) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time from accepting a connection to the end of its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time one write of the answer may block.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections held at once; one more evicts the oldest.
pub const MAX_CONNECTIONS: usize = 4;
/// Handler threads at once.
pub const MAX_THREADS: usize = 2 * MAX_CONNECTIONS;
/// How long a new connection waits for a handler thread to end when there are
/// [`MAX_THREADS`].
pub const THREAD_WAIT: Duration = Duration::from_secs(1);
/// Stack of a handler thread (SQLite needs some; nothing else deep runs there).
const STACK: usize = 256 * 1024;
/// After an answer, input still arriving is read and dropped for at most this long
/// and this much, so that closing does not reset the connection before the client has
/// read the answer.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// The listener's time bounds; [`Bounds::default`] is what the daemon uses (tests
/// shorten them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Time from accepting a connection to the end of its request head. Default
    /// [`READ_TIMEOUT`].
    pub read: Duration,
    /// Time one write of the answer may block. Default [`WRITE_TIMEOUT`].
    pub write: Duration,
    /// How long a new connection waits for a handler thread to end. Default
    /// [`THREAD_WAIT`].
    pub thread_wait: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            read: READ_TIMEOUT,
            write: WRITE_TIMEOUT,
            thread_wait: THREAD_WAIT,
        }
    }
}

/// The running listener; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What every handler shares.
struct Shared {
    metrics: &'static Metrics,
    bounds: Bounds,
    health: Health,
    /// Connections being handled, oldest first: (id, a handle to shut it down).
    open: Mutex<VecDeque<(u64, TcpStream)>>,
    /// Handler threads running.
    threads: Mutex<usize>,
    /// Signalled when a handler thread ends.
    ended: Condvar,
}

impl Server {
    /// Binds `addr` and serves `metrics` and `health` from a thread of its own.
    pub fn start(
        addr: SocketAddr,
        metrics: &'static Metrics,
        health: Health,
    ) -> std::io::Result<Server> {
        Server::start_with(addr, metrics, health, Bounds::default())
    }

    /// The same within other time bounds.
    pub fn start_with(
        addr: SocketAddr,
        metrics: &'static Metrics,
        health: Health,
        bounds: Bounds,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("metrics.listen {addr}: {e}")))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            metrics,
            bounds,
            health,
            open: Mutex::new(VecDeque::new()),
            threads: Mutex::new(0),
            ended: Condvar::new(),
        });
        let accept_stop = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("metrics".into())
            .stack_size(STACK)
            .spawn(move || accept_loop(&listener, &shared, &accept_stop))?;
        log::info!("metrics and health on http://{addr}/metrics and /health");
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the port chosen, when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, stop: &AtomicBool) {
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                // Out of descriptors, or the peer gave up: do not spin.
                log::debug!("metrics: accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        {
            let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
            while open.len() >= MAX_CONNECTIONS {
                if let Some((_, oldest)) = open.pop_front() {
                    let _ = oldest.shutdown(Shutdown::Both);
                }
            }
        }
        {
            let threads = shared.threads.lock().unwrap_or_else(|e| e.into_inner());
            let (mut threads, _) = shared
                .ended
                .wait_timeout_while(threads, shared.bounds.thread_wait, |n| *n >= MAX_THREADS)
                .unwrap_or_else(|e| e.into_inner());
            if *threads >= MAX_THREADS {
                continue; // dropped: closed unanswered
            }
            *threads += 1;
        }
        next_id = next_id.wrapping_add(1);
        let id = next_id;
        shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((id, handle));
        let worker = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("metrics-conn".into())
            .stack_size(STACK)
            .spawn(move || {
                serve(stream, &worker);
                worker.finished(id);
            });
        if spawned.is_err() {
            shared.finished(id);
        }
    }
}

impl Shared {
    fn finished(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(i, _)| *i != id);
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        *threads = threads.saturating_sub(1);
        drop(threads);
        self.ended.notify_one();
    }
}

/// Reads one request, writes its answer, closes.
fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(shared.bounds.write));
    let deadline = Instant::now() + shared.bounds.read;
    let (answer, head_only) = match read_head(&mut stream, deadline) {
        Ok(head) => match parse(&head) {
            Ok(request) => (route(&request, shared), request.method == "HEAD"),
            Err(status) => (Answer::status(status), false),
        },
        Err(HeadError::TooLarge) => (Answer::status(431), false),
        Err(HeadError::TimedOut) => (Answer::status(408), false),
        Err(HeadError::Gone) => return,
    };
    if stream.write_all(&answer.bytes(head_only)).is_ok() {
        linger(&mut stream);
    }
}

/// Half-closes, then reads and drops what the client still sends, briefly: closing
/// with unread input would reset the connection and could destroy the answer in flight.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + LINGER;
    let mut buf = [0u8; 4096];
    let mut drained = 0usize;
    while drained < LINGER_BYTES {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained = drained.saturating_add(n),
        }
    }
}

/// Why no request head was read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// Longer than [`MAX_HEAD`].
    TooLarge,
    /// Not complete within the deadline.
    TimedOut,
    /// The client closed or the socket failed (or was shut down by an eviction).
    Gone,
}

/// Reads up to the blank line ending a request head, by `deadline`.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, HeadError> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::TimedOut);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| HeadError::Gone)?;
        let Some(free) = buf.get_mut(len..) else {
            return Err(HeadError::TooLarge);
        };
        if free.is_empty() {
            return Err(HeadError::TooLarge);
        }
        match stream.read(free) {
            Ok(0) => return Err(HeadError::Gone),
            Ok(n) => {
                // Look for the end from just before the new bytes.
                let from = len.saturating_sub(3);
                len = len.saturating_add(n).min(MAX_HEAD);
                if let Some(end) = head_end(&buf[from..len]) {
                    buf.truncate(from + end);
                    return Ok(buf);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(HeadError::TimedOut)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(HeadError::Gone),
        }
    }
}

/// Where the head ends (after its blank line: CRLF CRLF, or bare LF LF), if it does.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A parsed request line (header fields are read but not used).
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    /// The path, without the query.
    path: &'a str,
}

/// The request line of a head: `METHOD SP request-target SP HTTP/1.x`. Empty lines
/// before it are skipped (RFC 9112 §2.2). Errors are the status to answer.
fn parse(head: &[u8]) -> Result<Request<'_>, u16> {
    let text = std::str::from_utf8(head).map_err(|_| 400u16)?;
    let line = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .find(|l| !l.is_empty())
        .ok_or(400u16)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(method) || !target.starts_with('/') {
        return Err(400);
    }
    if !version.starts_with("HTTP/") {
        return Err(400);
    }
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(505);
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Request { method, path })
}

/// An answer: status, content type and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
    allow: bool,
}

impl Answer {
    fn text(status: u16, body: String) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
            allow: false,
        }
    }

    /// An error answer whose body is its reason phrase.
    fn status(status: u16) -> Answer {
        Answer::text(status, format!("{}\n", reason(status)))
    }

    fn bytes(&self, head_only: bool) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nDate: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            http_date(SystemTime::now()),
            self.content_type,
            self.body.len()
        );
        if self.allow {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

fn route(request: &Request<'_>, shared: &Shared) -> Answer {
    let known = matches!(request.path, "/metrics" | "/health");
    if !known {
        return Answer::status(404);
    }
    if !matches!(request.method, "GET" | "HEAD") {
        let mut a = Answer::status(405);
        a.allow = true;
        return a;
    }
    if request.path == "/metrics" {
        let figures = shared.health.figures();
        return Answer {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: shared.metrics.render(&figures),
            allow: false,
        };
    }
    match shared.health.check(shared.metrics) {
        Ok(()) => Answer::text(200, "ok\n".into()),
        Err(why) => Answer::text(503, format!("{why}\n")),
    }
}

/// An IMF-fixdate (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = crate::civil::from_days(i64::try_from(days).unwrap_or(i64::MAX));
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize % 12],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        for (head, expected) in [
            (
                "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Ok(("GET", "/metrics")),
            ),
            ("GET /health?x=1 HTTP/1.0\n\n", Ok(("GET", "/health"))),
            ("\r\nHEAD /health HTTP/1.1\r\n\r\n", Ok(("HEAD", "/health"))),
            ("POST /metrics HTTP/1.1\r\n\r\n", Ok(("POST", "/metrics"))),
            ("GET /metrics HTTP/2.0\r\n\r\n", Err(505)),
            ("GET /metrics\r\n\r\n", Err(400)),
            ("GET  /metrics HTTP/1.1\r\n\r\n", Err(400)),
            ("GET http://x/metrics HTTP/1.1\r\n\r\n", Err(400)),
            ("G(T /metrics HTTP/1.1\r\n\r\n", Err(400)),
            ("GET /metrics FTP/1.1\r\n\r\n", Err(400)),
            ("\r\n\r\n", Err(400)),
        ] {
            let got = parse(head.as_bytes()).map(|r| (r.method, r.path));
            assert_eq!(got, expected, "{head:?}");
        }
        assert_eq!(parse(b"GET /\xff HTTP/1.1\r\n\r\n"), Err(400));
    }

    #[test]
    fn head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nbody"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn dates_are_imf_fixdate() {
        // RFC 9110 §5.6.7's example.
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        // 2024-02-29 12:00:00 UTC, a leap day.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_208_000);
        assert_eq!(http_date(t), "Thu, 29 Feb 2024 12:00:00 GMT");
    }

    #[test]
    fn answers_say_close_and_their_length() {
        let a = Answer::text(200, "ok\n".into());
        let text = String::from_utf8(a.bytes(false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 3\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nok\n"));
        let head = String::from_utf8(a.bytes(true)).unwrap();
        assert!(head.ends_with(
            "\r\nContent-Length: 3\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        ));
        let mut a = Answer::status(405);
        a.allow = true;
        let text = String::from_utf8(a.bytes(false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"));
    }
}
