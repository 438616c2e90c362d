//! The FCM and Google OAuth stand-in: an HTTP/1.1 server on 127.0.0.1 with keep-alive,
//! one thread per connection, that accepts every push after a set latency and counts
//! what it saw.
//!
//! It shares the machine with the daemon, so it does the least work that still checks
//! the exchange: the request line, `Content-Length` (or chunked) bodies, the bearer token
//! on sends and the grant type on token requests. Everything else is ignored.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The Firebase project of the bench service account.
pub const PROJECT_ID: &str = "p2-bench";
/// The access token the stand-in hands out.
pub const ACCESS_TOKEN: &str = "ya29.bench";

const SEND_PATH: &str = "/v1/projects/p2-bench/messages:send";
const TOKEN_PATH: &str = "/token";
const TOKEN_BODY: &str = r#"{"access_token":"ya29.bench","expires_in":3599,"token_type":"Bearer"}"#;
const SEND_BODY: &str = r#"{"name":"projects/p2-bench/messages/1"}"#;
const NOT_FOUND_BODY: &str = r#"{"error":{"code":404,"message":"not found","status":"NOT_FOUND"}}"#;
const UNAUTHENTICATED_BODY: &str =
    r#"{"error":{"code":401,"message":"bad token","status":"UNAUTHENTICATED"}}"#;
const BAD_GRANT_BODY: &str = r#"{"error":"invalid_grant","error_description":"grant_type"}"#;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;
/// Stack of a connection thread: it only parses a head and sleeps.
const STACK: usize = 64 * 1024;

/// What the stand-in counted.
#[derive(Debug, Default)]
pub struct Counters {
    /// `POST /token` answered 200.
    pub tokens: AtomicU64,
    /// `POST …/messages:send` answered 200.
    pub sends: AtomicU64,
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Most connections open at once.
    pub max_open: AtomicU64,
    /// Requests refused: wrong path or method, missing bearer token, wrong grant type,
    /// unparsable head or body.
    pub bad: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// See [`Counters::tokens`].
    pub tokens: u64,
    /// See [`Counters::sends`].
    pub sends: u64,
    /// See [`Counters::connections`].
    pub connections: u64,
    /// See [`Counters::max_open`].
    pub max_open: u64,
    /// See [`Counters::bad`].
    pub bad: u64,
}

/// The running stand-in; stops accepting when dropped (open connections end when the
/// daemon closes them).
pub struct StandIn {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    /// The first few refused requests, for the report.
    pub samples: Arc<Mutex<Vec<String>>>,
}

impl StandIn {
    /// Binds 127.0.0.1:0 and serves, answering sends and token requests after `latency`.
    pub fn start(latency: Duration) -> io::Result<StandIn> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        widen_backlog(&listener);
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let shared = (
            Arc::clone(&counters),
            Arc::clone(&stop),
            Arc::clone(&samples),
        );
        thread::Builder::new()
            .name("fcm-accept".into())
            .stack_size(STACK)
            .spawn(move || {
                let (counters, stop, samples) = shared;
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    counters.connections.fetch_add(1, Ordering::Relaxed);
                    let open = counters.open.fetch_add(1, Ordering::Relaxed) + 1;
                    counters.max_open.fetch_max(open, Ordering::Relaxed);
                    let counters = Arc::clone(&counters);
                    let samples = Arc::clone(&samples);
                    let spawned = thread::Builder::new()
                        .name("fcm-conn".into())
                        .stack_size(STACK)
                        .spawn(move || {
                            let _ = serve(conn, latency, &counters, &samples);
                            counters.open.fetch_sub(1, Ordering::Relaxed);
                        });
                    if spawned.is_err() {
                        eprintln!("fcm stand-in: cannot start a connection thread");
                    }
                }
            })?;
        Ok(StandIn {
            addr,
            counters,
            stop,
            samples,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What was counted so far.
    pub fn counts(&self) -> Counts {
        let c = &self.counters;
        Counts {
            tokens: c.tokens.load(Ordering::Relaxed),
            sends: c.sends.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
            max_open: c.max_open.load(Ordering::Relaxed),
            bad: c.bad.load(Ordering::Relaxed),
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the acceptor so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Lets `listener` hold as many connections not yet accepted as the system allows (std
/// listens with a backlog of 128): a thousand workers connect at once when the daemon
/// starts, and Google's front ends do not turn them away, so the stand-in must not
/// either (a full backlog resets connections, which the daemon takes for FCM failing).
fn widen_backlog(listener: &TcpListener) {
    extern "C" {
        fn listen(fd: i32, backlog: i32) -> i32;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a socket we own that listens already only changes its
    // backlog; the kernel caps it at net.core.somaxconn.
    let _ = unsafe { listen(listener.as_raw_fd(), 4096) };
}

/// The position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The value of header `name` (lower case, with the colon) in a request head.
fn header<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        (line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name))
            .then(|| line[name.len()..].trim_ascii())
    })
}

fn respond(conn: &mut TcpStream, status: &str, body: &str, close: bool) -> io::Result<()> {
    let text = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=UTF-8\r\n\
         Content-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    conn.write_all(text.as_bytes())
}

/// Reads more bytes into `buf`; `Ok(false)` at end of stream.
fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let len = buf.len();
    buf.resize(len + 8192, 0);
    let n = conn.read(&mut buf[len..]);
    buf.truncate(len + *n.as_ref().unwrap_or(&0));
    Ok(n? > 0)
}

/// Decodes a chunked body starting at `buf[start..]`, reading more as needed; returns
/// the body and the offset just past it.
fn chunked(conn: &mut TcpStream, buf: &mut Vec<u8>, start: usize) -> io::Result<(Vec<u8>, usize)> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    let mut body = Vec::new();
    let mut at = start;
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf[at..], b"\r\n") {
                break at + i;
            }
            if buf.len() - at > 1024 || !fill(conn, buf)? {
                return Err(bad("chunk size line"));
            }
        };
        let size_text = std::str::from_utf8(&buf[at..line_end]).map_err(|_| bad("chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("chunk size"))?;
        at = line_end + 2;
        if size == 0 {
            // No trailers from the daemon: just the final CRLF.
            while buf.len() < at + 2 {
                if !fill(conn, buf)? {
                    return Err(bad("chunked end"));
                }
            }
            return Ok((body, at + 2));
        }
        if body.len() + size > MAX_BODY {
            return Err(bad("body too large"));
        }
        while buf.len() < at + size + 2 {
            if !fill(conn, buf)? {
                return Err(bad("chunk data"));
            }
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

fn refuse(counters: &Counters, samples: &Mutex<Vec<String>>, what: String) {
    counters.bad.fetch_add(1, Ordering::Relaxed);
    let mut s = samples.lock().unwrap_or_else(|e| e.into_inner());
    if s.len() < 5 {
        s.push(what);
    }
}

/// Serves one keep-alive connection until the peer closes it.
fn serve(
    mut conn: TcpStream,
    latency: Duration,
    counters: &Counters,
    samples: &Mutex<Vec<String>>,
) -> io::Result<()> {
    let _ = conn.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        // The head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                refuse(counters, samples, "request head too large".into());
                return Ok(());
            }
            if !fill(&mut conn, &mut buf)? {
                return Ok(());
            }
        };
        let head = &buf[..head_end];
        let line_end = find(head, b"\r\n").unwrap_or(0);
        let line = String::from_utf8_lossy(&head[..line_end]).into_owned();
        let mut parts = line.split(' ');
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let length = header(head, b"content-length:")
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok());
        let is_chunked =
            header(head, b"transfer-encoding:").is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
        let close = header(head, b"connection:").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
        let authorized = header(head, b"authorization:")
            .is_some_and(|v| v == format!("Bearer {ACCESS_TOKEN}").as_bytes());
        let (method, path) = (method.to_owned(), path.to_owned());
        // The body.
        let (body, end) = if is_chunked {
            chunked(&mut conn, &mut buf, head_end)?
        } else {
            let len = length.unwrap_or(0);
            if len > MAX_BODY {
                refuse(
                    counters,
                    samples,
                    format!("{method} {path}: body too large"),
                );
                return Ok(());
            }
            while buf.len() < head_end + len {
                if !fill(&mut conn, &mut buf)? {
                    return Ok(());
                }
            }
            (buf[head_end..head_end + len].to_vec(), head_end + len)
        };
        buf.drain(..end);

        let (status, answer) = match (method.as_str(), path.as_str()) {
            ("POST", SEND_PATH) if authorized && body.starts_with(b"{") => {
                thread::sleep(latency);
                counters.sends.fetch_add(1, Ordering::Relaxed);
                ("200 OK", SEND_BODY)
            }
            ("POST", SEND_PATH) => {
                refuse(
                    counters,
                    samples,
                    format!("send without the bearer token or a JSON body: {line}"),
                );
                ("401 Unauthorized", UNAUTHENTICATED_BODY)
            }
            ("POST", TOKEN_PATH)
                if find(
                    &body,
                    b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
                )
                .is_some()
                    && find(&body, b"assertion=").is_some() =>
            {
                thread::sleep(latency);
                counters.tokens.fetch_add(1, Ordering::Relaxed);
                ("200 OK", TOKEN_BODY)
            }
            ("POST", TOKEN_PATH) => {
                refuse(
                    counters,
                    samples,
                    format!("token request without the jwt-bearer grant: {line}"),
                );
                ("400 Bad Request", BAD_GRANT_BODY)
            }
            _ => {
                refuse(counters, samples, format!("unexpected request: {line}"));
                ("404 Not Found", NOT_FOUND_BODY)
            }
        };
        respond(&mut conn, status, answer, close)?;
        if close {
            let _ = conn.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}
