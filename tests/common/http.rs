//! A small real HTTP/1.1 server on 127.0.0.1 for tests: records every request and answers from a script.
//!
//! Std only: one thread per connection, keep-alive, `Content-Length` and chunked request
//! bodies. The script is a closure from [`Request`] to [`Response`]; one server can play
//! several services at once (FCM and Google's token endpoint), told apart by path.
//!
//! ```ignore
//! let server = MockServer::start(|req| match req.path.as_str() {
//!     "/token" => Response::json(200, r#"{"access_token":"t","expires_in":3599}"#),
//!     _ => Response::new(404),
//! });
//! let url = server.url(); // http://127.0.0.1:PORT
//! ```

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// An idle connection is closed after this long, so no thread outlives a test for long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`…
    pub method: String,
    /// The request target as sent: path and query, e.g. `/v1/projects/p/messages:send`.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Header names lower-cased, values trimmed, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Which TCP connection it came on: 0 for the first one accepted, and so on.
    pub connection: usize,
    /// Its place among all requests to this server, from 0.
    pub seq: usize,
}

impl Request {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn body_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The percent-decoded value of field `name` of an `application/x-www-form-urlencoded` body.
    pub fn form(&self, name: &str) -> Option<String> {
        self.body_str().split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the script answers. `Content-Length` is added; the connection stays open unless
/// [`close`](Self::close) is set or the client asked to close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Extra headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// How long to wait before answering (cut short when the server stops).
    pub delay: Duration,
    /// Close the connection after this answer.
    pub close: bool,
}

impl Response {
    /// An empty answer with this status.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
            close: false,
        }
    }

    /// A JSON answer (`Content-Type: application/json; charset=UTF-8`).
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Response::new(status)
            .header("Content-Type", "application/json; charset=UTF-8")
            .body(body.into())
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status)
            .header("Content-Type", "text/plain; charset=UTF-8")
            .body(body.into())
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Waits this long before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Closes the connection after answering.
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

struct Shared {
    handler: Box<Handler>,
    requests: Mutex<Vec<Request>>,
    connections: AtomicUsize,
    stopping: AtomicBool,
    /// Clones of every accepted stream, to cut them when the server stops.
    streams: Mutex<Vec<TcpStream>>,
    /// Messages of handler panics, reported when the server is dropped.
    panics: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running test server on `127.0.0.1:<free port>`; stops when dropped.
///
/// Dropping it also fails the test if the script panicked (the client only saw a 500).
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Binds `127.0.0.1:0` and serves every request with `handler`.
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound socket has an address");
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
            panics: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("mock-http-accept".into())
                .spawn(move || accept_loop(listener, shared))
                .expect("spawn acceptor")
        };
        MockServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }

    /// The requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Request> {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// How many TCP connections were accepted so far.
    pub fn connections_opened(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived; false if `timeout` passed first.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if lock(&self.shared.requests).len() >= n {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for stream in lock(&self.shared.streams).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Wake the acceptor, which then sees `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let panics = lock(&self.shared.panics).clone();
        if !panics.is_empty() && !thread::panicking() {
            panic!("mock http handler panicked: {}", panics.join("; "));
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let index = shared.connections.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.streams).push(clone);
        }
        let shared = Arc::clone(&shared);
        let _ = thread::Builder::new()
            .name(format!("mock-http-conn-{index}"))
            .spawn(move || {
                let _ = serve_connection(stream, index, &shared);
            });
    }
}

fn serve_connection(stream: TcpStream, index: usize, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let Some(mut request) = read_request(&mut reader, index)? else {
            return Ok(());
        };
        {
            let mut requests = lock(&shared.requests);
            request.seq = requests.len();
            requests.push(request.clone());
        }
        let response = match panic::catch_unwind(AssertUnwindSafe(|| (shared.handler)(&request))) {
            Ok(response) => response,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "non-string panic".to_owned());
                lock(&shared.panics).push(message);
                Response::text(500, "mock handler panicked").close()
            }
        };
        if !sleep_unless_stopping(response.delay, shared) {
            return Ok(());
        }
        let client_closes = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || (request.version == "HTTP/1.0"
                && !request
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")));
        let close = response.close || client_closes;
        write_response(&mut writer, &response, close)?;
        if close {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// Sleeps for `delay` in small steps; false if the server began stopping.
fn sleep_unless_stopping(delay: Duration, shared: &Shared) -> bool {
    let end = Instant::now() + delay;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return false;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        thread::sleep(left.min(Duration::from_millis(10)));
    }
}

/// Reads one request; `None` when the client closed the connection between requests.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    connection: usize,
) -> io::Result<Option<Request>> {
    let mut head_len = 0;
    let mut line = String::new();
    // Tolerate empty lines before the request line (RFC 9112 §2.2).
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        head_len += line.len();
        if !line.trim().is_empty() {
            break;
        }
        if head_len > MAX_HEAD {
            return Err(bad("request head too large"));
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("bad request line"));
    };
    let (method, path, version) = (method.to_owned(), path.to_owned(), version.to_owned());

    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside the head"));
        }
        head_len += line.len();
        if head_len > MAX_HEAD {
            return Err(bad("request head too large"));
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed
            .split_once(':')
            .ok_or_else(|| bad("bad header line"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v): &(String, String)| v.clone())
    };

    let body =
        if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            read_chunked(reader)?
        } else if let Some(len) = find("content-length") {
            let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
            if len > MAX_BODY {
                return Err(bad("body too large"));
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body)?;
            body
        } else {
            Vec::new()
        };
    Ok(Some(Request {
        method,
        path,
        version,
        headers,
        body,
        connection,
        seq: 0,
    }))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        if body.len() + size > MAX_BODY {
            return Err(bad("body too large"));
        }
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(&mut line)?; // CRLF after the chunk
    }
}

fn write_response(out: &mut TcpStream, response: &Response, close: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason_phrase(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let has = |name: &str| {
        response
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    let bodiless = matches!(response.status, 100..=199 | 204 | 304);
    if !bodiless && !has("content-length") {
        head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    }
    if close && !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if !bodiless {
        bytes.extend_from_slice(&response.body);
    }
    out.write_all(&bytes)?;
    out.flush()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}
