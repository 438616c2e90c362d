//! A small HTTP/1.1 client for the push path: one POST to one endpoint over kept-alive
//! connections (TLS from rustls with Mozilla's roots, or plain HTTP for a test stand-in).
//!
//! The FCM request is the daemon's hottest exchange, and ureq, general and robust, cost
//! most of a worker's instructions and its deepest stack (a 14 KiB frame, 30 KiB in all,
//! resident for every thread ever used), and looked its connections up under one mutex
//! by scanning them all. Here the request is written from a buffer kept with its
//! connection, in one write; the answer is read into the same buffer and parsed by
//! `httparse`; idle connections wait on a stack (the one used last goes first), taken
//! and given back under a lock held for a push or a pop.
//!
//! What it does, all of it: resolving through the shared [`CachingResolver`]; connecting
//! to each address in turn; TLS 1.2/1.3 with ALPN `http/1.1`; `Content-Length`,
//! `chunked` or read-to-close bodies, at most [`MAX_BODY`]; 1xx answers skipped;
//! `Connection: close` honoured; a connection idle longer than [`MAX_IDLE`], or that the
//! server closed (a non-blocking peek sees its end or stray bytes), is not reused. Every
//! read and write is bounded by the exchange's deadline: the socket's timeout is
//! shortened as the deadline nears. No redirects, no proxies (the FCM client uses ureq
//! when a proxy is configured in the environment), no compression.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use ureq::unversioned::resolver::Resolver as _;
use ureq::unversioned::transport::NextTimeout;

use super::resolver::CachingResolver;

/// The largest answer body read (FCM's are a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// The largest answer head read.
pub const MAX_HEAD: usize = 16 * 1024;

/// How long a connection may stay idle and still be used.
pub const MAX_IDLE: Duration = Duration::from_secs(60);

/// The buffer kept with each connection: requests and answers of FCM fit.
const BUFFER: usize = 4 * 1024;

/// The longest chunk-size line read, extensions (which no server we know sends) and
/// CRLF included.
const MAX_CHUNK_LINE: usize = 1024;

/// Headers parsed in an answer head.
const MAX_HEADERS: usize = 48;

/// Why an exchange failed.
#[derive(Debug)]
pub enum Error {
    /// The deadline passed.
    Timeout,
    /// The host could not be resolved.
    Dns(String),
    /// Connecting, reading or writing failed (TLS errors included).
    Io(io::Error),
    /// The server's answer is not HTTP/1.1 as we read it, or too large.
    Protocol(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout => f.write_str("timed out"),
            Error::Dns(e) => write!(f, "dns: {e}"),
            Error::Io(e) => write!(f, "io: {e}"),
            Error::Protocol(what) => write!(f, "protocol: {what}"),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::Timeout,
            _ => Error::Io(e),
        }
    }
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body, lossily as UTF-8.
    pub body: String,
}

/// Where requests go: `https://host[:port]` or `http://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
}

impl Endpoint {
    /// Reads `scheme://host[:port]` (a trailing slash or path is refused).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{url:?} is not an http or https URL"));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty()
            || authority.contains(['/', '?', '#', '@', ' '])
            || !authority.is_ascii()
        {
            return Err(format!("{url:?} is not scheme://host[:port]"));
        }
        let default = if tls { 443 } else { 80 };
        // An IPv6 address is in brackets, and only a port may follow them.
        let (host, port) = match authority.strip_prefix('[') {
            Some(bracketed) => match bracketed.split_once(']') {
                Some((host, "")) => (host, None),
                Some((host, rest)) => match rest.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(format!("{url:?} is not scheme://host[:port]")),
                },
                None => return Err(format!("{url:?}: no ] after [")),
            },
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .map_err(|_| format!("{url:?}: bad port"))?,
            None => default,
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        Ok(Endpoint {
            tls,
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
        })
    }
}

/// A connection and the buffer kept with it.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    idle_since: Instant,
}

enum Stream {
    Plain(Socket),
    Tls(Box<StreamOwned<ClientConnection, Socket>>),
}

impl Stream {
    fn socket(&mut self) -> &mut Socket {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &mut t.sock,
        }
    }

    /// Whether the server closed the connection, or sent something unasked, while it
    /// was idle: a peek at the socket and, with TLS, at what TLS already read and
    /// decrypted (records that came with the answer, which no peek sees).
    fn gone(&mut self) -> bool {
        match self {
            Stream::Plain(s) => s.gone(),
            Stream::Tls(t) => {
                t.sock.gone()
                    || !matches!(
                        t.conn.process_new_packets(),
                        Ok(state) if state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed()
                    )
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// A TCP stream whose reads and writes end by a deadline: before each, the socket's
/// timeout is shortened to what is left when that is less than it is set to.
struct Socket {
    tcp: TcpStream,
    deadline: Instant,
    /// The timeout set on the socket (reads and writes).
    timeout: Duration,
}

impl Socket {
    fn new(tcp: TcpStream, deadline: Instant) -> io::Result<Socket> {
        tcp.set_nodelay(true)?;
        let mut socket = Socket {
            tcp,
            deadline,
            timeout: Duration::MAX,
        };
        socket.bound()?;
        Ok(socket)
    }

    /// Makes the socket's timeout end no later than the deadline (allowing 10 ms, so
    /// that a fast exchange sets nothing).
    fn bound(&mut self) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        if left + Duration::from_millis(10) < self.timeout {
            self.tcp.set_read_timeout(Some(left))?;
            self.tcp.set_write_timeout(Some(left))?;
            self.timeout = left;
        }
        Ok(())
    }

    /// A new deadline for the next exchange: the timeout is set again when it is longer
    /// than what the exchange has.
    fn until(&mut self, deadline: Instant, timeout: Duration) -> io::Result<()> {
        self.deadline = deadline;
        if timeout > self.timeout + Duration::from_millis(10) {
            // Lengthen it only by a setting of its own; `bound` only shortens.
            self.tcp.set_read_timeout(Some(timeout))?;
            self.tcp.set_write_timeout(Some(timeout))?;
            self.timeout = timeout;
        }
        self.bound()
    }

    /// Whether the server closed the connection, or sent something unasked, while it
    /// was idle: one non-blocking peek.
    fn gone(&self) -> bool {
        crate::system::peer_spoke(self.tcp.as_raw_fd())
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.bound()?;
        self.tcp.read(buf)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bound()?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The client: an endpoint and its idle connections. Clones share them.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

struct Shared {
    endpoint: Endpoint,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    resolver: CachingResolver,
    user_agent: &'static str,
    /// The idle connections, the one used last at the end.
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("http::Client")
            .field("endpoint", &self.shared.endpoint)
            .finish_non_exhaustive()
    }
}

/// A request: path, bearer token and JSON body.
pub struct Post<'a> {
    /// The path (and query) of the request.
    pub path: &'a str,
    /// The `Authorization: Bearer` credential.
    pub bearer: &'a str,
    /// The `application/json` body.
    pub body: &'a str,
}

impl Client {
    /// A client for `endpoint`, keeping at most `max_idle` idle connections, resolving
    /// through `resolver`, trusting `tls` (for https).
    pub fn new(
        endpoint: Endpoint,
        tls: Arc<ClientConfig>,
        resolver: CachingResolver,
        user_agent: &'static str,
        max_idle: usize,
    ) -> Result<Client, String> {
        let tls = match endpoint.tls {
            true => {
                let name = ServerName::try_from(endpoint.host.clone())
                    .map_err(|e| format!("{}: {e}", endpoint.host))?;
                Some((tls, name))
            }
            false => None,
        };
        Ok(Client {
            shared: Arc::new(Shared {
                endpoint,
                tls,
                resolver,
                user_agent,
                idle: Mutex::new(Vec::new()),
                max_idle: max_idle.max(1),
            }),
        })
    }

    /// Idle connections held now.
    pub fn idle_connections(&self) -> usize {
        self.idle().len()
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// One POST, its whole answer read within `timeout`.
    pub fn post(&self, request: &Post<'_>, timeout: Duration) -> Result<Answer, Error> {
        let deadline = Instant::now() + timeout;
        let mut conn = match self.reuse(deadline, timeout)? {
            Some(conn) => conn,
            None => self.connect(deadline)?,
        };
        let (answer, reusable) = self.exchange(&mut conn, request)?;
        if reusable {
            if conn.buf.capacity() > 4 * BUFFER {
                conn.buf = Vec::with_capacity(BUFFER);
            }
            conn.idle_since = Instant::now();
            let mut idle = self.idle();
            if idle.len() < self.shared.max_idle {
                idle.push(conn);
            }
        }
        Ok(answer)
    }

    /// The idle connection used last, if one is fresh and open.
    fn reuse(&self, deadline: Instant, timeout: Duration) -> Result<Option<Conn>, Error> {
        loop {
            let popped = {
                let mut idle = self.idle();
                let conn = idle.pop();
                if conn
                    .as_ref()
                    .is_some_and(|c| c.idle_since.elapsed() > MAX_IDLE)
                {
                    // The others went idle earlier still.
                    idle.clear();
                }
                conn
            };
            let Some(mut conn) = popped else {
                return Ok(None);
            };
            if conn.idle_since.elapsed() > MAX_IDLE || conn.stream.gone() {
                continue;
            }
            conn.stream.socket().until(deadline, timeout)?;
            return Ok(Some(conn));
        }
    }

    /// A new connection (TLS not yet negotiated: the first write does).
    fn connect(&self, deadline: Instant) -> Result<Conn, Error> {
        let endpoint = &self.shared.endpoint;
        let addrs = self.resolve(deadline)?;
        let mut last = None;
        for (i, addr) in addrs.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            let budget = connect_budget(left, addrs.len() - i - 1);
            match TcpStream::connect_timeout(addr, budget) {
                Ok(tcp) => {
                    let socket = Socket::new(tcp, deadline)?;
                    let stream = match &self.shared.tls {
                        None => Stream::Plain(socket),
                        Some((config, name)) => {
                            let tls = ClientConnection::new(Arc::clone(config), name.clone())
                                .map_err(|e| Error::Io(io::Error::other(e)))?;
                            Stream::Tls(Box::new(StreamOwned::new(tls, socket)))
                        }
                    };
                    return Ok(Conn {
                        stream,
                        buf: Vec::with_capacity(BUFFER),
                        idle_since: Instant::now(),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(
            || Error::Dns(format!("no address for {}", endpoint.host)),
            Error::from,
        ))
    }

    fn resolve(&self, deadline: Instant) -> Result<Vec<SocketAddr>, Error> {
        let endpoint = &self.shared.endpoint;
        let uri: ureq::http::Uri = format!(
            "{}://{}/",
            if endpoint.tls { "https" } else { "http" },
            endpoint.authority
        )
        .parse()
        .map_err(|_| Error::Dns(format!("bad host {}", endpoint.host)))?;
        let timeout = NextTimeout {
            after: deadline.saturating_duration_since(Instant::now()).into(),
            reason: ureq::Timeout::Resolve,
            ..NextTimeout::default()
        };
        let config = ureq::config::Config::default();
        self.shared
            .resolver
            .resolve(&uri, &config, timeout)
            .map(|addrs| addrs.iter().copied().collect())
            .map_err(|e| match e {
                ureq::Error::Timeout(_) => Error::Timeout,
                e => Error::Dns(e.to_string()),
            })
    }

    /// Writes the request and reads the answer; whether the connection may be used again.
    fn exchange(&self, conn: &mut Conn, request: &Post<'_>) -> Result<(Answer, bool), Error> {
        let Conn { stream, buf, .. } = conn;
        buf.clear();
        let endpoint = &self.shared.endpoint;
        for part in [
            "POST ",
            request.path,
            " HTTP/1.1\r\nHost: ",
            &endpoint.authority,
            "\r\nAuthorization: Bearer ",
            request.bearer,
            "\r\nContent-Type: application/json\r\nUser-Agent: ",
            self.shared.user_agent,
            "\r\nAccept: */*\r\nContent-Length: ",
        ] {
            buf.extend_from_slice(part.as_bytes());
        }
        let _ = write!(buf, "{}\r\n\r\n", request.body.len());
        buf.extend_from_slice(request.body.as_bytes());
        stream.write_all(buf)?;
        stream.flush()?;
        buf.clear();
        read_answer(stream, buf)
    }
}

/// How long one connection attempt may take with `left` before the deadline and `more`
/// addresses still to try after it: an address that does not answer (a host whose IPv6
/// route is a black hole) leaves the others time, and the last has all that is left.
fn connect_budget(left: Duration, more: usize) -> Duration {
    match more {
        0 => left,
        _ => left.min(CONNECT_PER_ADDRESS).min(left / 2),
    }
}

/// The longest a connection attempt may take while other addresses wait.
const CONNECT_PER_ADDRESS: Duration = Duration::from_secs(3);

/// Reads more into `buf` (up to `limit` bytes in all); false at the end of the stream.
fn fill(stream: &mut impl Read, buf: &mut Vec<u8>, limit: usize) -> Result<bool, Error> {
    let len = buf.len();
    if len >= limit {
        return Err(Error::Protocol("answer too large"));
    }
    let room = (limit - len)
        .min(buf.capacity().max(BUFFER) - len)
        .max(1024.min(limit - len));
    buf.resize(len + room, 0);
    let read = loop {
        match stream.read(&mut buf[len..]) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    match read {
        Ok(n) => {
            buf.truncate(len + n);
            Ok(n > 0)
        }
        Err(e) => {
            buf.truncate(len);
            Err(e.into())
        }
    }
}

/// How the body of an answer ends.
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// Reads an answer (skipping 1xx ones) from `stream`, with `buf` as its buffer; whether
/// the connection may be used again.
pub(crate) fn read_answer(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
) -> Result<(Answer, bool), Error> {
    loop {
        // The head.
        let (head_len, status, retry_after, framing, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.ok_or(Error::Protocol("no status"))?;
                    let version = response.version.unwrap_or(0);
                    let mut retry_after = None;
                    let mut length = None;
                    let mut chunked = false;
                    let mut close = version == 0;
                    for h in response.headers.iter() {
                        let value = || String::from_utf8_lossy(h.value).trim().to_owned();
                        if h.name.eq_ignore_ascii_case("content-length") {
                            // Digits only: `parse` would take a sign too.
                            let n = std::str::from_utf8(h.value)
                                .ok()
                                .map(str::trim)
                                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                                .and_then(|v| v.parse::<usize>().ok())
                                .ok_or(Error::Protocol("bad content-length"))?;
                            if length.is_some_and(|l| l != n) {
                                return Err(Error::Protocol("two content-lengths"));
                            }
                            length = Some(n);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            let v = value();
                            if !v.eq_ignore_ascii_case("chunked") {
                                return Err(Error::Protocol("unknown transfer-encoding"));
                            }
                            chunked = true;
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            let v = value();
                            if v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
                                close = true;
                            }
                        } else if h.name.eq_ignore_ascii_case("retry-after") {
                            retry_after = Some(value());
                        }
                    }
                    // These have no body, whatever their head says (a 304's length is
                    // that of what it did not send): RFC 9112, section 6.3.
                    let bodiless = status == 204 || status == 304 || (100..200).contains(&status);
                    let framing = match (chunked, length) {
                        _ if bodiless => Framing::Length(0),
                        (true, _) => Framing::Chunked,
                        (false, Some(n)) => Framing::Length(n),
                        _ => Framing::Close,
                    };
                    // Both a length and chunks: the chunks frame the body, and the
                    // connection, whose framing is in doubt, is not used again (RFC 9112,
                    // section 6.1).
                    let close = close || (chunked && length.is_some());
                    break (len, status, retry_after, framing, close);
                }
                Ok(httparse::Status::Partial) => {
                    if !fill(stream, buf, MAX_HEAD)? {
                        return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Err(_) => return Err(Error::Protocol("malformed answer head")),
            }
        };
        if (100..200).contains(&status) {
            // An interim answer (103 Early Hints, an unasked 100 Continue): the real one
            // follows.
            buf.drain(..head_len);
            continue;
        }
        buf.drain(..head_len);
        let limit = MAX_BODY;
        let (body, reusable) = match framing {
            Framing::Length(n) => {
                if n > limit {
                    return Err(Error::Protocol("answer too large"));
                }
                while buf.len() < n {
                    if !fill(stream, buf, n)? {
                        return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                let extra = buf.len() > n;
                (
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                    !close && !extra,
                )
            }
            Framing::Chunked => {
                let (body, used) = dechunk(stream, buf, limit)?;
                let extra = buf.len() > used;
                (body, !close && !extra)
            }
            Framing::Close => {
                loop {
                    match fill(stream, buf, limit + 1) {
                        Ok(true) => {}
                        Ok(false) => break,
                        // TLS closed without close_notify, as many servers close: the
                        // body may be cut short, but no length was promised, and what
                        // the push path reads in it is JSON, which a cut breaks.
                        Err(Error::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                        Err(e) => return Err(e),
                    }
                }
                if buf.len() > limit {
                    return Err(Error::Protocol("answer too large"));
                }
                (String::from_utf8_lossy(buf).into_owned(), false)
            }
        };
        return Ok((
            Answer {
                status,
                retry_after,
                body,
            },
            reusable,
        ));
    }
}

/// Decodes a chunked body at the start of `buf`, reading more as needed; returns the
/// body and how many bytes of `buf` it took (trailers included).
fn dechunk(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<(String, usize), Error> {
    // Room for the chunk framing around a body at the limit.
    let raw_limit = limit + MAX_HEAD;
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (start, size) = loop {
            // Parsed again from its start as it grows, so kept short.
            let line = &buf[at..buf.len().min(at + MAX_CHUNK_LINE)];
            match httparse::parse_chunk_size(line) {
                // httparse reads a line without digits as size 0.
                Ok(httparse::Status::Complete(_)) if !line[0].is_ascii_hexdigit() => {
                    return Err(Error::Protocol("bad chunk size"));
                }
                Ok(httparse::Status::Complete((len, size))) => break (at + len, size),
                Ok(httparse::Status::Partial) if line.len() == MAX_CHUNK_LINE => {
                    return Err(Error::Protocol("chunk line too long"));
                }
                Ok(httparse::Status::Partial) => {
                    if !fill(stream, buf, raw_limit)? {
                        return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Err(_) => return Err(Error::Protocol("bad chunk size")),
            }
        };
        let size = usize::try_from(size).map_err(|_| Error::Protocol("answer too large"))?;
        if body.len().saturating_add(size) > limit {
            return Err(Error::Protocol("answer too large"));
        }
        if size == 0 {
            // Trailers (ignored), then an empty line.
            // Each byte is looked at once or twice, however the lines arrive.
            at = start;
            let mut scanned = at;
            loop {
                match buf[scanned..].windows(2).position(|w| w == b"\r\n") {
                    Some(i) if scanned + i == at => {
                        return Ok((String::from_utf8_lossy(&body).into_owned(), at + 2));
                    }
                    Some(i) => {
                        at = scanned + i + 2;
                        scanned = at;
                    }
                    None => {
                        scanned = buf.len().saturating_sub(1).max(at);
                        if !fill(stream, buf, raw_limit)? {
                            return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
                        }
                    }
                }
            }
        }
        let end = start + size;
        while buf.len() < end + 2 {
            if !fill(stream, buf, raw_limit)? {
                return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(Error::Protocol("bad chunk end"));
        }
        body.extend_from_slice(&buf[start..end]);
        at = end + 2;
    }
}

/// The TLS configuration for https endpoints: Mozilla's roots and `extra` (PEM
/// certificates, for tests), TLS 1.2 and 1.3 by ring, ALPN `http/1.1`.
pub fn tls_config(extra: &[Vec<u8>]) -> Result<Arc<ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for pem in extra {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| e.to_string())?;
            roots.add(cert).map_err(|e| e.to_string())?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use std::io::BufRead as _;
    use std::net::{Shutdown, TcpListener};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::thread;

    use rustls::{ServerConfig, ServerConnection};
    use ureq::unversioned::resolver::DefaultResolver;

    use super::*;
    use crate::push::testing::fixture;

    // --- Answers from memory ---

    /// A reader that hands out at most `step` bytes per read.
    struct Drip<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Drip<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// A reader that hands out `data[..at]` in its first read, then the rest.
    struct Split<'a> {
        data: &'a [u8],
        at: usize,
    }

    impl Read for Split<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = match self.at {
                0 => self.data.len(),
                _ => std::mem::take(&mut self.at).min(self.data.len()),
            }
            .min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn read_from(stream: &mut impl Read) -> Result<(Answer, bool), Error> {
        read_answer(stream, &mut Vec::new())
    }

    /// What the answer reads as, as text, so that errors compare too.
    fn shown(result: &Result<(Answer, bool), Error>) -> String {
        format!("{result:?}")
    }

    /// Reads `input` whole, one byte per read, and cut in two at every byte: the same
    /// result every way.
    fn read(input: &[u8]) -> Result<(Answer, bool), Error> {
        let whole = read_from(&mut &input[..]);
        let bytewise = read_from(&mut Drip {
            data: input,
            step: 1,
        });
        assert_eq!(shown(&bytewise), shown(&whole), "one byte per read");
        for at in 1..input.len() {
            let split = read_from(&mut Split { data: input, at });
            assert_eq!(shown(&split), shown(&whole), "cut at {at}");
        }
        whole
    }

    fn answer(status: u16, retry_after: Option<&str>, body: &str) -> Answer {
        Answer {
            status,
            retry_after: retry_after.map(str::to_owned),
            body: body.to_owned(),
        }
    }

    /// The `Protocol` error's text, or a panic.
    fn protocol(result: Result<(Answer, bool), Error>) -> &'static str {
        match result {
            Err(Error::Protocol(what)) => what,
            other => panic!("not a protocol error: {other:?}"),
        }
    }

    fn eof(result: Result<(Answer, bool), Error>) {
        match result {
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            other => panic!("not an unexpected end: {other:?}"),
        }
    }

    /// FCM's body for a message sent.
    const FCM_SENT: &str =
        "{\n  \"name\": \"projects/p2-test/messages/0:1500415314455276%31bd1c9631bd1c96\"\n}\n";

    /// FCM's body for a token no longer registered.
    const FCM_UNREGISTERED: &str = "{\n  \"error\": {\n    \"code\": 404,\n    \
        \"message\": \"Requested entity was not found.\",\n    \"status\": \"NOT_FOUND\",\n    \
        \"details\": [\n      {\n        \
        \"@type\": \"type.googleapis.com/google.firebase.fcm.v1.FcmError\",\n        \
        \"errorCode\": \"UNREGISTERED\"\n      }\n    ]\n  }\n}\n";

    /// The head of FCM's answers, as Google's front end sends them.
    const GOOGLE_HEAD: &str = "Content-Type: application/json; charset=UTF-8\r\n\
        Vary: Origin\r\nVary: X-Origin\r\nVary: Referer\r\n\
        Date: Tue, 01 Jul 2025 10:00:00 GMT\r\n\
        Server: scaffolding on HTTPServer2\r\n\
        Cache-Control: private\r\n\
        X-XSS-Protection: 0\r\nX-Frame-Options: SAMEORIGIN\r\n\
        X-Content-Type-Options: nosniff\r\n\
        Alt-Svc: h3=\":443\"; ma=2592000,h3-29=\":443\"; ma=2592000\r\n";

    #[test]
    fn a_content_length_answer() {
        let input = format!(
            "HTTP/1.1 200 OK\r\n{GOOGLE_HEAD}Content-Length: {}\r\n\r\n{FCM_SENT}",
            FCM_SENT.len()
        );
        let (got, reusable) = read(input.as_bytes()).unwrap();
        assert_eq!(got, answer(200, None, FCM_SENT));
        assert!(reusable);
    }

    #[test]
    fn a_chunked_answer() {
        // Cut in chunks of 100 bytes, the last one shorter.
        let chunks: String = FCM_UNREGISTERED
            .as_bytes()
            .chunks(100)
            .map(|c| format!("{:x}\r\n{}\r\n", c.len(), std::str::from_utf8(c).unwrap()))
            .collect();
        let input = format!(
            "HTTP/1.1 404 Not Found\r\n{GOOGLE_HEAD}Transfer-Encoding: chunked\r\n\r\n{chunks}0\r\n\r\n"
        );
        let (got, reusable) = read(input.as_bytes()).unwrap();
        assert_eq!(got, answer(404, None, FCM_UNREGISTERED));
        assert!(reusable);
    }

    #[test]
    fn chunks_with_extensions_and_trailers() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n\
            3;name=value\r\nabc\r\n\
            0A ; a=\"b;c\"\r\n0123456789\r\n\
            0\r\nExpires: never\r\nX-Trailer: 1\r\n\r\n";
        let (got, reusable) = read(input).unwrap();
        assert_eq!(got, answer(200, None, "abc0123456789"));
        assert!(reusable);
    }

    #[test]
    fn chunk_sizes_near_the_largest() {
        for size in ["FFFFFFFFFFFFFFFF", "8000000000000000", "10001"] {
            let input =
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nab");
            assert_eq!(
                protocol(read(input.as_bytes())),
                "answer too large",
                "{size}"
            );
        }
        // Seventeen digits do not fit in 64 bits.
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n";
        assert_eq!(protocol(read(input)), "bad chunk size");
        // Chunks of MAX_BODY in all are read; one byte more is not.
        let at_limit = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n1\r\nb\r\n0\r\n\r\n",
            MAX_BODY - 1,
            "a".repeat(MAX_BODY - 1)
        );
        let (got, _) = read_from(&mut at_limit.as_bytes()).unwrap();
        assert_eq!(got.body.len(), MAX_BODY);
        let over = at_limit.replace("\r\n1\r\nb\r\n", "\r\n2\r\nbb\r\n");
        assert_eq!(
            protocol(read_from(&mut over.as_bytes())),
            "answer too large"
        );
    }

    #[test]
    fn long_chunk_lines_are_refused() {
        // Extensions up to a line of MAX_CHUNK_LINE are skipped; a longer line, which
        // would be parsed again from its start after each read, is refused.
        let line = |ext: usize| format!("5;{}\r\n", "e".repeat(ext));
        let chunked = |line: &str| {
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{line}hello\r\n0\r\n\r\n")
        };
        assert_eq!(line(MAX_CHUNK_LINE - 4).len(), MAX_CHUNK_LINE);
        let fits = chunked(&line(MAX_CHUNK_LINE - 4));
        assert_eq!(read(fits.as_bytes()).unwrap().0.body, "hello");
        let long = chunked(&line(MAX_CHUNK_LINE - 3));
        assert_eq!(protocol(read(long.as_bytes())), "chunk line too long");
        let long = chunked(&line(60_000));
        let bytewise = read_from(&mut Drip {
            data: long.as_bytes(),
            step: 1,
        });
        assert_eq!(protocol(bytewise), "chunk line too long");
    }

    #[test]
    fn long_trailers() {
        let trailer = format!("X-Long: {}\r\n", "t".repeat(30_000));
        let input = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n{trailer}{trailer}\r\n"
        );
        let (got, reusable) = read_from(&mut Drip {
            data: input.as_bytes(),
            step: 1,
        })
        .unwrap();
        assert_eq!(got, answer(200, None, "ok"));
        assert!(reusable);
        let (got, reusable) = read_from(&mut Split {
            data: input.as_bytes(),
            at: input.len() - 1,
        })
        .unwrap();
        assert_eq!(got, answer(200, None, "ok"));
        assert!(reusable);
    }

    #[test]
    fn bad_chunks() {
        for (chunks, what) in [
            ("zz\r\n", "bad chunk size"),
            ("3\r\nabcd\r\n0\r\n\r\n", "bad chunk end"),
            ("-1\r\n", "bad chunk size"),
            ("3\rabc", "bad chunk size"),
            // No size at all, which httparse reads as 0.
            ("\r\n\r\n", "bad chunk size"),
            (";ext\r\n\r\n", "bad chunk size"),
        ] {
            let input = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}");
            assert_eq!(protocol(read(input.as_bytes())), what, "{chunks:?}");
        }
    }

    #[test]
    fn a_retry_after() {
        let input = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After:  30 \r\n\
            Content-Type: application/json; charset=UTF-8\r\nContent-Length: 2\r\n\r\n{}";
        let (got, reusable) = read(input).unwrap();
        assert_eq!(got, answer(429, Some("30"), "{}"));
        assert!(reusable);
    }

    #[test]
    fn interim_answers_are_skipped() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (got, reusable) = read(input).unwrap();
        assert_eq!(got, answer(200, None, "ok"));
        assert!(reusable);
    }

    #[test]
    fn answers_without_a_body() {
        for status in ["204 No Content", "304 Not Modified"] {
            let input = format!("HTTP/1.1 {status}\r\nDate: x\r\n\r\n");
            let (got, reusable) = read(input.as_bytes()).unwrap();
            assert_eq!(got.body, "");
            assert!(reusable, "{status}");
        }
        // Whatever their head says: a 304's length is that of what was not sent.
        for head in [
            "304 Not Modified\r\nContent-Length: 120",
            "204 No Content\r\nContent-Length: 5",
            "204 No Content\r\nTransfer-Encoding: chunked",
        ] {
            let input = format!("HTTP/1.1 {head}\r\n\r\n");
            let (got, reusable) = read(input.as_bytes()).unwrap();
            assert_eq!(got.body, "", "{head}");
            assert!(reusable, "{head}");
        }
    }

    #[test]
    fn an_address_that_does_not_answer_leaves_the_others_time() {
        let s = Duration::from_secs;
        assert_eq!(connect_budget(s(10), 0), s(10));
        assert_eq!(connect_budget(s(10), 1), s(3));
        assert_eq!(connect_budget(s(4), 2), s(2));
        assert_eq!(
            connect_budget(Duration::from_millis(100), 1),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn connection_close_is_honoured() {
        for header in ["Connection: close", "connection: Keep-Alive, CLOSE"] {
            let input = format!("HTTP/1.1 200 OK\r\n{header}\r\nContent-Length: 2\r\n\r\nok");
            let (got, reusable) = read(input.as_bytes()).unwrap();
            assert_eq!(got, answer(200, None, "ok"));
            assert!(!reusable, "{header}");
        }
    }

    #[test]
    fn http_1_0_answers_end_their_connection() {
        let (got, reusable) = read(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!(got, answer(200, None, "ok"));
        assert!(!reusable);
        // Without a length, the body ends with the connection.
        let (got, reusable) = read(b"HTTP/1.0 500 Oops\r\n\r\nto the end").unwrap();
        assert_eq!(got, answer(500, None, "to the end"));
        assert!(!reusable);
    }

    #[test]
    fn a_body_read_to_the_end() {
        let (got, reusable) = read(b"HTTP/1.1 502 Bad Gateway\r\n\r\n<html>").unwrap();
        assert_eq!(got, answer(502, None, "<html>"));
        assert!(!reusable);
        let at_limit = format!("HTTP/1.1 200 OK\r\n\r\n{}", "a".repeat(MAX_BODY));
        let (got, _) = read_from(&mut at_limit.as_bytes()).unwrap();
        assert_eq!(got.body.len(), MAX_BODY);
        let over = format!("{at_limit}a");
        assert_eq!(
            protocol(read_from(&mut over.as_bytes())),
            "answer too large"
        );
    }

    #[test]
    fn bodies_at_most_max_body() {
        let over = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(protocol(read(over.as_bytes())), "answer too large");
        let huge = "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(protocol(read(huge.as_bytes())), "bad content-length");
        let at_limit = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {MAX_BODY}\r\n\r\n{}",
            "a".repeat(MAX_BODY)
        );
        let (got, reusable) = read_from(&mut at_limit.as_bytes()).unwrap();
        assert_eq!(got.body.len(), MAX_BODY);
        assert!(reusable);
    }

    #[test]
    fn heads_at_most_max_head() {
        let header = format!("X-Filler: {}\r\n", "f".repeat(1000));
        let long = format!(
            "HTTP/1.1 200 OK\r\n{}Content-Length: 0\r\n\r\n",
            header.repeat(MAX_HEAD / header.len() + 1)
        );
        assert_eq!(
            protocol(read_from(&mut long.as_bytes())),
            "answer too large"
        );
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(protocol(read(many.as_bytes())), "malformed answer head");
    }

    #[test]
    fn content_lengths() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(protocol(read(two)), "two content-lengths");
        let same = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length:  2\r\n\r\nab";
        assert_eq!(read(same).unwrap().0.body, "ab");
        for bad in ["-1", "+2", "", "2, 2", "0x2", "two", "2 2"] {
            let input = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\nab");
            assert_eq!(
                protocol(read(input.as_bytes())),
                "bad content-length",
                "{bad}"
            );
        }
        let gzip = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(protocol(read(gzip)), "unknown transfer-encoding");
    }

    #[test]
    fn a_length_and_chunks() {
        // The chunks frame the body; the length hints at a smuggling attempt, so the
        // connection is not used again (RFC 9112, section 6.1).
        for head in [
            "Content-Length: 2\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked\r\nContent-Length: 100",
        ] {
            let input = format!("HTTP/1.1 200 OK\r\n{head}\r\n\r\n5\r\nchunk\r\n0\r\n\r\n");
            let (got, reusable) = read(input.as_bytes()).unwrap();
            assert_eq!(got, answer(200, None, "chunk"));
            assert!(!reusable, "{head}");
        }
    }

    #[test]
    fn malformed_heads() {
        for input in [
            &b"HTTP/2 200\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"<html>\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nNo colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n",
        ] {
            assert_eq!(
                protocol(read(input)),
                "malformed answer head",
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn an_end_too_soon() {
        eof(read(b""));
        eof(read(b"HTTP/1.1 200 OK\r\nContent-Len"));
        eof(read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc"));
        eof(read(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        ));
        eof(read(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
        ));
        eof(read(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: b\r\n",
        ));
        eof(read(b"HTTP/1.1 100 Continue\r\n\r\n"));
    }

    #[test]
    fn bytes_after_the_body_end_the_connection() {
        // Read with the answer, they are seen at once; arriving later, the idle check
        // sees them (a loopback test below).
        for input in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"[..],
            b"HTTP/1.1 204 No Content\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nx",
        ] {
            let (got, reusable) = read_from(&mut &input[..]).unwrap();
            assert_eq!(got.status / 100, 2);
            assert!(!reusable, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn interrupted_reads_are_retried() {
        struct Interrupting<'a>(&'a [u8], bool);
        impl Read for Interrupting<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1 = !self.1;
                if self.1 {
                    return Err(io::ErrorKind::Interrupted.into());
                }
                self.0.read(buf)
            }
        }
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (got, _) = read_from(&mut Interrupting(input, false)).unwrap();
        assert_eq!(got, answer(200, None, "ok"));
    }

    #[test]
    fn endpoints() {
        let ok = |url: &str, tls, host: &str, port, authority: &str| {
            assert_eq!(
                Endpoint::parse(url),
                Ok(Endpoint {
                    tls,
                    host: host.into(),
                    port,
                    authority: authority.into()
                }),
                "{url}"
            );
        };
        ok(
            "https://fcm.googleapis.com",
            true,
            "fcm.googleapis.com",
            443,
            "fcm.googleapis.com",
        );
        ok(
            "https://fcm.googleapis.com/",
            true,
            "fcm.googleapis.com",
            443,
            "fcm.googleapis.com",
        );
        ok(
            "http://127.0.0.1:8080",
            false,
            "127.0.0.1",
            8080,
            "127.0.0.1:8080",
        );
        ok("http://[::1]:8080", false, "::1", 8080, "[::1]:8080");
        ok("https://[::1]", true, "::1", 443, "[::1]");
        ok(
            "https://[2001:db8::1]/",
            true,
            "2001:db8::1",
            443,
            "[2001:db8::1]",
        );
        for bad in [
            "ftp://x",
            "https://",
            "https://x/path",
            "https://x:port",
            "https://x:99999",
            "https://u@x",
            "https://:80",
            "https://::1",
            "https://[::1]x",
            "https://[::1",
            "https://[]:80",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    // --- Servers on loopback ---

    /// The test server's TLS configuration: a certificate for 127.0.0.1 from the test CA.
    fn server_tls() -> Arc<ServerConfig> {
        crate::push::testing::server_tls(&[])
    }

    /// The client's TLS configuration, trusting the test CA.
    fn client_tls() -> Arc<ClientConfig> {
        tls_config(&[std::fs::read(fixture("apns-ca.pem")).unwrap()]).unwrap()
    }

    /// Generous bounds on every wait of a test, so that a bug fails it instead of
    /// hanging it.
    const GUARD: Duration = Duration::from_secs(10);

    /// A server's side of a connection.
    enum Served {
        Plain(TcpStream),
        Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    }

    impl Served {
        fn tcp(&self) -> &TcpStream {
            match self {
                Served::Plain(s) => s,
                Served::Tls(t) => &t.sock,
            }
        }
    }

    impl Read for Served {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self {
                Served::Plain(s) => s.read(buf),
                Served::Tls(t) => t.read(buf),
            }
        }
    }

    impl Write for Served {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match self {
                Served::Plain(s) => s.write(buf),
                Served::Tls(t) => t.write(buf),
            }
        }

        fn flush(&mut self) -> io::Result<()> {
            match self {
                Served::Plain(s) => s.flush(),
                Served::Tls(t) => t.flush(),
            }
        }
    }

    /// What a handler does after answering.
    #[derive(PartialEq)]
    enum Then {
        /// Reads the next request.
        Keep,
        /// Closes the connection.
        Close,
    }

    /// A server on 127.0.0.1: each connection in a thread of its own, each request read
    /// whole and answered by the handler, given the request's number (from 0, over all
    /// connections).
    struct Server {
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
        requests: mpsc::Receiver<String>,
    }

    impl Server {
        fn start(
            tls: Option<Arc<ServerConfig>>,
            handler: impl Fn(usize, &mut Served) -> Then + Send + Sync + 'static,
        ) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = Arc::new(AtomicUsize::new(0));
            let (sent, requests) = mpsc::channel();
            let handler = Arc::new(handler);
            let count = Arc::clone(&accepted);
            let numbers = Arc::new(AtomicUsize::new(0));
            thread::spawn(move || {
                for tcp in listener.incoming() {
                    let Ok(tcp) = tcp else { return };
                    count.fetch_add(1, Ordering::SeqCst);
                    tcp.set_read_timeout(Some(GUARD)).unwrap();
                    tcp.set_write_timeout(Some(GUARD)).unwrap();
                    let mut served = match &tls {
                        None => Served::Plain(tcp),
                        Some(config) => {
                            let conn = ServerConnection::new(Arc::clone(config)).unwrap();
                            Served::Tls(Box::new(StreamOwned::new(conn, tcp)))
                        }
                    };
                    let (handler, sent, numbers) =
                        (Arc::clone(&handler), sent.clone(), Arc::clone(&numbers));
                    thread::spawn(move || {
                        while let Some(request) = read_request(&mut served) {
                            let _ = sent.send(request);
                            let n = numbers.fetch_add(1, Ordering::SeqCst);
                            if handler(n, &mut served) == Then::Close {
                                break;
                            }
                        }
                    });
                }
            });
            Server {
                addr,
                accepted,
                requests,
            }
        }

        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::SeqCst)
        }

        /// The next request the server read, whole.
        fn request(&self) -> String {
            self.requests.recv_timeout(GUARD).expect("a request")
        }

        fn client(&self, tls: Option<Arc<ClientConfig>>, max_idle: usize) -> Client {
            let url = match tls {
                Some(_) => format!("https://localhost:{}", self.addr.port()),
                None => format!("http://127.0.0.1:{}", self.addr.port()),
            };
            Client::new(
                Endpoint::parse(&url).unwrap(),
                tls.unwrap_or_else(client_tls),
                CachingResolver::new(DefaultResolver::default()),
                "p2-test",
                max_idle,
            )
            .unwrap()
        }
    }

    /// A request's head and its `Content-Length` body, or `None` at the end of the
    /// connection (or on an error).
    fn read_request(stream: &mut Served) -> Option<String> {
        let mut reader = io::BufReader::with_capacity(1, stream);
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().ok()?;
                }
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        Some(head + &String::from_utf8(body).ok()?)
    }

    fn ok_answer(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    const POST: Post<'static> = Post {
        path: "/v1/projects/p2-test/messages:send",
        bearer: "ya29.token",
        body: "{\"message\":{}}",
    };

    #[test]
    fn a_post_and_its_connection_reused() {
        let server = Server::start(None, |n, s| {
            s.write_all(ok_answer(&format!("answer {n}")).as_bytes())
                .unwrap();
            Then::Keep
        });
        let client = server.client(None, 4);
        let got = client.post(&POST, GUARD).unwrap();
        assert_eq!(got, answer(200, None, "answer 0"));
        let port = server.addr.port();
        assert_eq!(
            server.request(),
            format!(
                "POST /v1/projects/p2-test/messages:send HTTP/1.1\r\n\
                 Host: 127.0.0.1:{port}\r\n\
                 Authorization: Bearer ya29.token\r\n\
                 Content-Type: application/json\r\n\
                 User-Agent: p2-test\r\n\
                 Accept: */*\r\n\
                 Content-Length: 14\r\n\r\n\
                 {{\"message\":{{}}}}"
            )
        );
        assert_eq!(client.idle_connections(), 1);
        assert_eq!(client.post(&POST, GUARD).unwrap().body, "answer 1");
        assert_eq!(server.accepted(), 1);
        assert_eq!(client.idle_connections(), 1);
    }

    #[test]
    fn a_connection_closed_while_idle_is_not_used() {
        let (closed, was_closed) = mpsc::channel();
        let server = Server::start(None, move |n, s| {
            s.write_all(ok_answer(&format!("answer {n}")).as_bytes())
                .unwrap();
            if n == 0 {
                s.tcp().shutdown(Shutdown::Both).unwrap();
                closed.send(()).unwrap();
                return Then::Close;
            }
            Then::Keep
        });
        let client = server.client(None, 4);
        assert_eq!(client.post(&POST, GUARD).unwrap().body, "answer 0");
        was_closed.recv_timeout(GUARD).unwrap();
        assert_eq!(client.post(&POST, GUARD).unwrap().body, "answer 1");
        assert_eq!(server.accepted(), 2);
    }

    #[test]
    fn connection_close_is_not_reused() {
        let server = Server::start(None, |n, s| {
            let body = format!("answer {n}");
            let answer = format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(answer.as_bytes()).unwrap();
            // Left open: the client is to close it.
            Then::Keep
        });
        let client = server.client(None, 4);
        assert_eq!(client.post(&POST, GUARD).unwrap().body, "answer 0");
        assert_eq!(client.idle_connections(), 0);
        assert_eq!(client.post(&POST, GUARD).unwrap().body, "answer 1");
        assert_eq!(server.accepted(), 2);
    }

    #[test]
    fn bytes_after_an_answer_are_not_taken_for_the_next() {
        let (sent, was_sent) = mpsc::channel();
        let server = Server::start(None, move |n, s| {
            s.write_all(ok_answer(&format!("answer {n}")).as_bytes())
                .unwrap();
            if n == 0 {
                // After the answer was read.
                thread::sleep(Duration::from_millis(100));
                s.write_all(ok_answer("stray").as_bytes()).unwrap();
                sent.send(()).unwrap();
            }
            Then::Keep
        });
        let client = server.client(None, 4);
        assert_eq!(client.post(&POST, GUARD).unwrap().body, "answer 0");
        was_sent.recv_timeout(GUARD).unwrap();
        assert_eq!(client.post(&POST, GUARD).unwrap().body, "answer 1");
        assert_eq!(server.accepted(), 2);
    }

    #[test]
    fn chunked_answers_keep_their_connection() {
        let server = Server::start(None, |n, s| {
            let answer = format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                 7\r\nanswer \r\n1\r\n{n}\r\n0\r\n\r\n"
            );
            s.write_all(answer.as_bytes()).unwrap();
            Then::Keep
        });
        let client = server.client(None, 4);
        assert_eq!(client.post(&POST, GUARD).unwrap().body, "answer 0");
        assert_eq!(client.post(&POST, GUARD).unwrap().body, "answer 1");
        assert_eq!(server.accepted(), 1);
    }

    #[test]
    fn an_expired_idle_connection_is_not_used() {
        let server = Server::start(None, |n, s| {
            s.write_all(ok_answer(&format!("answer {n}")).as_bytes())
                .unwrap();
            Then::Keep
        });
        let client = server.client(None, 4);
        client.post(&POST, GUARD).unwrap();
        for conn in client.idle().iter_mut() {
            conn.idle_since = Instant::now()
                .checked_sub(MAX_IDLE + Duration::from_secs(1))
                .unwrap();
        }
        assert_eq!(client.post(&POST, GUARD).unwrap().body, "answer 1");
        assert_eq!(server.accepted(), 2);
    }

    #[test]
    fn at_most_max_idle_connections_wait() {
        // Three requests at once, on three connections, all answered when the third
        // arrives; two of the connections are kept.
        let waiting = Arc::new((Mutex::new(0), std::sync::Condvar::new()));
        let server = Server::start(None, move |_, s| {
            let (count, arrived) = &*waiting;
            let mut count = count.lock().unwrap();
            *count += 1;
            arrived.notify_all();
            let (count, timeout) = arrived
                .wait_timeout_while(count, GUARD, |count| *count < 3)
                .unwrap();
            assert!(!timeout.timed_out());
            drop(count);
            s.write_all(ok_answer("ok").as_bytes()).unwrap();
            Then::Keep
        });
        let client = server.client(None, 2);
        let posts: Vec<_> = (0..3)
            .map(|_| {
                let client = client.clone();
                thread::spawn(move || client.post(&POST, GUARD).map(|a| a.body))
            })
            .collect();
        for post in posts {
            assert_eq!(post.join().unwrap().unwrap(), "ok");
        }
        assert_eq!(server.accepted(), 3);
        assert_eq!(client.idle_connections(), 2);
        // The kept ones serve the next two.
        client.post(&POST, GUARD).unwrap();
        client.post(&POST, GUARD).unwrap();
        assert_eq!(server.accepted(), 3);
    }

    /// A post to a server that answers one byte per 100 ms, from `start` on, for ever.
    fn drip(start: &'static str) {
        let server = Server::start(None, move |_, s| {
            let answer = start.bytes().chain(std::iter::repeat(b'a'));
            for byte in answer {
                if s.write_all(&[byte]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
            Then::Close
        });
        let client = server.client(None, 4);
        let timeout = Duration::from_millis(800);
        let started = Instant::now();
        let result = client.post(&POST, timeout);
        let took = started.elapsed();
        assert!(
            matches!(result, Err(Error::Timeout)),
            "{start:?}: {result:?}"
        );
        assert!(took >= timeout, "{took:?}");
        assert!(
            took < 3 * timeout + Duration::from_secs(1),
            "{start:?}: {took:?}"
        );
    }

    #[test]
    fn a_slow_drip_ends_by_the_deadline() {
        // In the head, in a body of a given length, in a chunk, to the end.
        drip("HTTP/1.1 200 OK\r\nX-Slow: ");
        drip("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        drip("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n");
        drip("HTTP/1.1 200 OK\r\n\r\n");
    }

    #[test]
    fn a_silent_server_ends_by_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for tls in [None, Some(client_tls())] {
            let url = match tls {
                Some(_) => format!("https://127.0.0.1:{port}"),
                None => format!("http://127.0.0.1:{port}"),
            };
            let client = Client::new(
                Endpoint::parse(&url).unwrap(),
                tls.unwrap_or_else(client_tls),
                CachingResolver::new(DefaultResolver::default()),
                "p2-test",
                4,
            )
            .unwrap();
            let timeout = Duration::from_millis(300);
            let started = Instant::now();
            let result = client.post(&POST, timeout);
            assert!(matches!(result, Err(Error::Timeout)), "{url}: {result:?}");
            assert!(started.elapsed() < GUARD);
        }
    }

    #[test]
    fn tls_posts_reuse_their_connection() {
        let server = Server::start(Some(server_tls()), |n, s| {
            s.write_all(ok_answer(&format!("answer {n}")).as_bytes())
                .unwrap();
            s.flush().unwrap();
            Then::Keep
        });
        let client = server.client(Some(client_tls()), 4);
        assert_eq!(
            client.post(&POST, GUARD).unwrap(),
            answer(200, None, "answer 0")
        );
        assert!(server
            .request()
            .starts_with("POST /v1/projects/p2-test/messages:send HTTP/1.1\r\n"));
        assert_eq!(client.post(&POST, GUARD).unwrap().body, "answer 1");
        assert_eq!(server.accepted(), 1);
    }

    #[test]
    fn tls_bytes_after_an_answer_are_not_taken_for_the_next() {
        // A long answer and a stray one in records of their own, sent together: the
        // client's TLS reads both, its buffer takes the first in two reads and leaves
        // the stray one decrypted in TLS, where no peek at the socket sees it.
        let long = "a".repeat(6000);
        let server = Server::start(Some(server_tls()), move |n, s| {
            let Served::Tls(tls) = s else { unreachable!() };
            let first = match n {
                0 => ok_answer(&long),
                n => ok_answer(&format!("answer {n}")),
            };
            tls.conn.writer().write_all(first.as_bytes()).unwrap();
            if n == 0 {
                tls.conn
                    .writer()
                    .write_all(ok_answer("stray").as_bytes())
                    .unwrap();
            }
            while tls.conn.wants_write() {
                tls.conn.write_tls(&mut tls.sock).unwrap();
            }
            Then::Keep
        });
        let client = server.client(Some(client_tls()), 4);
        assert_eq!(client.post(&POST, GUARD).unwrap().body.len(), 6000);
        assert_eq!(client.post(&POST, GUARD).unwrap().body, "answer 1");
        assert_eq!(server.accepted(), 2);
    }

    #[test]
    fn tls_bodies_read_to_the_end() {
        // With close_notify, and without, as many servers end: the body is whole either
        // way, its head having said nothing of its length.
        for notify in [true, false] {
            let server = Server::start(Some(server_tls()), move |_, s| {
                s.write_all(b"HTTP/1.1 503 Unavailable\r\n\r\nto the end")
                    .unwrap();
                let Served::Tls(tls) = s else { unreachable!() };
                if notify {
                    tls.conn.send_close_notify();
                }
                tls.flush().unwrap();
                tls.sock.shutdown(Shutdown::Both).unwrap();
                Then::Close
            });
            let client = server.client(Some(client_tls()), 4);
            let got = client.post(&POST, GUARD);
            assert_eq!(
                got.unwrap(),
                answer(503, None, "to the end"),
                "close_notify: {notify}"
            );
            assert_eq!(client.idle_connections(), 0);
        }
    }

    #[test]
    fn tls_without_the_root_fails() {
        let server = Server::start(Some(server_tls()), |_, s| {
            s.write_all(ok_answer("never").as_bytes()).unwrap();
            Then::Keep
        });
        let client = server.client(Some(tls_config(&[]).unwrap()), 4);
        match client.post(&POST, GUARD) {
            Err(Error::Io(e)) => assert!(e.to_string().contains("certificate"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(client.idle_connections(), 0);
    }
}
