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
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("{url:?}: bad port"))?;
                (host, port)
            }
            _ => (authority, default),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
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
            if conn.idle_since.elapsed() > MAX_IDLE || conn.stream.socket().gone() {
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
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            match TcpStream::connect_timeout(&addr, left) {
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
fn read_answer(stream: &mut impl Read, buf: &mut Vec<u8>) -> Result<(Answer, bool), Error> {
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
                            let n = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<usize>().ok())
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
                    let framing = match (chunked, length) {
                        (true, _) => Framing::Chunked,
                        (false, Some(n)) => Framing::Length(n),
                        _ if status == 204 || status == 304 || (100..200).contains(&status) => {
                            Framing::Length(0)
                        }
                        _ => Framing::Close,
                    };
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
                while fill(stream, buf, limit + 1)? {}
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
            match httparse::parse_chunk_size(&buf[at..]) {
                Ok(httparse::Status::Complete((len, size))) => break (at + len, size),
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
            at = start;
            loop {
                match buf[at..].windows(2).position(|w| w == b"\r\n") {
                    Some(0) => return Ok((String::from_utf8_lossy(&body).into_owned(), at + 2)),
                    Some(line) => at += line + 2,
                    None => {
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
