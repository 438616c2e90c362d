//! The APNs connection thread: one current-thread tokio runtime, one HTTP/2 connection, one stream per exchange.
//!
//! Jobs arrive on an unbounded channel; each becomes a task that sends its request on the
//! shared connection and answers on the job's own channel. The connection is opened
//! lazily by the first job that finds none, and replaced by the next job after it is
//! lost: the peer closed it or sent GOAWAY, an I/O error, or a request timed out on it.
//! Jobs queued while a connect attempt failed get that failure at once instead of trying
//! again each, so a down server costs one attempt per wave of jobs, not one per job.
//! The thread ends when every sender of jobs is dropped.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use bytes::Bytes;
use h2::client::SendRequest;
use log::{debug, info, warn};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

/// Where to connect, and how.
pub(super) struct Endpoint {
    /// Host name or IP address (without brackets).
    pub host: String,
    pub port: u16,
    /// TLS with this configuration (ALPN `h2` set), or `None` for h2c (tests only).
    pub tls: Option<Arc<ClientConfig>>,
}

/// One exchange for the connection thread.
pub(super) struct Job {
    /// The request head; its URI is absolute.
    pub request: http::Request<()>,
    pub body: Bytes,
    /// When the caller handed the job over.
    pub queued: Instant,
    /// When the caller stops waiting: connecting and the exchange must be done by then.
    pub deadline: Instant,
    /// Whether `deadline` allows a whole request timeout. Only then does running out of
    /// it condemn the connection: a request cut short by the end of the push's own
    /// deadline says nothing about the connection's health.
    pub full_timeout: bool,
    /// Response body bytes kept; the rest is not read.
    pub max_body: usize,
    pub reply: SyncSender<Result<Answer, ExchangeError>>,
}

/// The answer to one exchange.
#[derive(Debug)]
pub(super) struct Answer {
    pub status: u16,
    /// The body, lossily decoded, at most `max_body` bytes.
    pub body: String,
}

/// Why an exchange brought no answer.
#[derive(Debug)]
pub(super) enum ExchangeError {
    /// The server certainly did not process the request: the connection was already
    /// gone, the stream was refused, or it was above a GOAWAY's last stream. Retrying at
    /// once, on a new connection, is safe.
    NotSent(String),
    /// Connecting failed, the connection broke during the exchange, or it timed out.
    Failed(String),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::NotSent(why) | ExchangeError::Failed(why) => f.write_str(why),
        }
    }
}

/// Starts the connection thread; jobs sent to the returned sender are carried out there.
pub(super) fn start(endpoint: Endpoint) -> io::Result<UnboundedSender<Job>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let (jobs, receiver) = tokio::sync::mpsc::unbounded_channel();
    thread::Builder::new()
        .name("apns".to_owned())
        .spawn(move || runtime.block_on(dispatch(Arc::new(endpoint), receiver)))?;
    Ok(jobs)
}

/// One HTTP/2 connection: the handle to open streams and whether it is still usable.
struct Connection {
    sender: SendRequest<Bytes>,
    dead: Arc<AtomicBool>,
}

impl Connection {
    fn usable(&self) -> bool {
        !self.dead.load(Ordering::Acquire)
    }
}

/// The thread's main loop: hands each job to a task on the current connection.
async fn dispatch(endpoint: Arc<Endpoint>, mut jobs: UnboundedReceiver<Job>) {
    let mut connection: Option<Connection> = None;
    // The last failed connect attempt: when it ended, and why.
    let mut failure: Option<(Instant, String)> = None;
    while let Some(job) = jobs.recv().await {
        if job.deadline <= Instant::now() {
            answer(
                job,
                Err(ExchangeError::Failed("timed out before sending".to_owned())),
            );
            continue;
        }
        if !connection.as_ref().is_some_and(Connection::usable) {
            connection = None;
            if let Some((at, why)) = &failure {
                if job.queued <= *at {
                    answer(job, Err(ExchangeError::Failed(why.clone())));
                    continue;
                }
            }
            let attempt = tokio::time::timeout_at(job.deadline.into(), connect(&endpoint)).await;
            let (why, timed_out) = match attempt {
                Ok(Ok(new)) => {
                    failure = None;
                    connection = Some(new);
                    (None, false)
                }
                Ok(Err(why)) => (Some(why), false),
                Err(_) => (Some("connect timed out".to_owned()), true),
            };
            if let Some(why) = why {
                warn!("apns: cannot connect to {}: {why}", endpoint.host);
                // A connect cut short by the end of a push's own deadline says nothing
                // about the server: the jobs behind it still try.
                if job.full_timeout || !timed_out {
                    failure = Some((Instant::now(), why.clone()));
                }
                answer(job, Err(ExchangeError::Failed(why)));
                continue;
            }
        }
        let current = connection.as_ref().expect("connected above");
        tokio::spawn(exchange(current.sender.clone(), current.dead.clone(), job));
    }
    debug!("apns: client dropped, connection thread ends");
}

fn answer(job: Job, result: Result<Answer, ExchangeError>) {
    // The caller may have given up already; then nobody wants the answer.
    let _ = job.reply.try_send(result);
}

/// Opens a connection: TCP, TLS with ALPN `h2` (unless h2c), the HTTP/2 handshake, and a
/// task that drives it and marks it dead when it ends.
async fn connect(endpoint: &Endpoint) -> Result<Connection, String> {
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("tcp connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let dead = Arc::new(AtomicBool::new(false));
    let sender = match &endpoint.tls {
        Some(config) => {
            let name = ServerName::try_from(endpoint.host.clone())
                .map_err(|e| format!("bad host name: {e}"))?;
            let tls = TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls: {e}"))?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err("the server does not speak http/2 (alpn)".to_owned());
            }
            handshake(tls, dead.clone()).await?
        }
        None => handshake(tcp, dead.clone()).await?,
    };
    info!(
        "apns: connected to {}:{}{}",
        endpoint.host,
        endpoint.port,
        if endpoint.tls.is_some() { "" } else { " (h2c)" }
    );
    Ok(Connection { sender, dead })
}

/// The HTTP/2 handshake over `io`; the connection is then driven by its own task.
async fn handshake<T>(io: T, dead: Arc<AtomicBool>) -> Result<SendRequest<Bytes>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = h2::client::handshake(io)
        .await
        .map_err(|e| format!("http/2 handshake: {e}"))?;
    tokio::spawn(async move {
        match connection.await {
            Ok(()) => debug!("apns: connection closed"),
            Err(e) => debug!("apns: connection lost: {e}"),
        }
        dead.store(true, Ordering::Release);
    });
    Ok(sender)
}

/// One request on the connection, bounded by the job's deadline; the answer goes back on
/// the job's channel.
async fn exchange(sender: SendRequest<Bytes>, dead: Arc<AtomicBool>, job: Job) {
    let Job {
        request,
        body,
        deadline,
        full_timeout,
        max_body,
        reply,
        ..
    } = job;
    let result =
        tokio::time::timeout_at(deadline.into(), round_trip(sender, request, body, max_body)).await;
    let result = match result {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err((error, connection_lost))) => {
            if connection_lost {
                dead.store(true, Ordering::Release);
            }
            Err(error)
        }
        Err(_) => {
            // A connection on which a request gets no answer in a whole request timeout is
            // not trusted with the next one; requests in flight on it finish there.
            if full_timeout {
                dead.store(true, Ordering::Release);
            }
            Err(ExchangeError::Failed("request timed out".to_owned()))
        }
    };
    let _ = reply.try_send(result);
}

/// Sends the request and reads the whole (bounded) answer. An error says whether the
/// connection is lost with it.
async fn round_trip(
    sender: SendRequest<Bytes>,
    request: http::Request<()>,
    body: Bytes,
    max_body: usize,
) -> Result<Answer, (ExchangeError, bool)> {
    let not_sent = |e: h2::Error| {
        (
            ExchangeError::NotSent(format!("connection gone: {e}")),
            true,
        )
    };
    let mut sender = sender.ready().await.map_err(not_sent)?;
    let (response, mut stream) = sender.send_request(request, false).map_err(not_sent)?;
    stream.send_data(body, true).map_err(|e| stream_error(&e))?;
    let response = response.await.map_err(|e| stream_error(&e))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                let room = max_body.saturating_sub(bytes.len());
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if bytes.len() >= max_body {
                    break;
                }
            }
            // The status decides; a body cut short only loses the reason.
            Err(e) => {
                debug!("apns: reading the answer's body failed: {e}");
                break;
            }
        }
    }
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// What an HTTP/2 error on a stream means: whether the request can have been processed,
/// and whether the connection is lost.
fn stream_error(e: &h2::Error) -> (ExchangeError, bool) {
    if e.reason() == Some(h2::Reason::REFUSED_STREAM) && e.is_reset() {
        // RFC 9113 §8.7: a refused stream was not processed.
        return (
            ExchangeError::NotSent(format!("stream refused: {e}")),
            false,
        );
    }
    if e.is_go_away() && e.is_remote() {
        // Streams above the GOAWAY's last stream id were not processed.
        return (ExchangeError::NotSent(format!("goaway: {e}")), true);
    }
    let connection_lost = !e.is_reset();
    (
        ExchangeError::Failed(format!("http/2: {e}")),
        connection_lost,
    )
}
