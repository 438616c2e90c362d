//! The APNs connection thread: one current-thread tokio runtime, one HTTP/2 connection, one stream per exchange.
//!
//! Jobs arrive on an unbounded channel; each becomes a task that sends its request on the
//! shared connection and answers on the job's own channel. The connection is opened
//! lazily by the first job that finds none, and replaced by the next job after it is
//! lost: the peer closed it or sent GOAWAY, an I/O error, or a request timed out on it.
//! Jobs queued while a connect attempt failed get that failure at once instead of trying
//! again each, so a down server costs one attempt per wave of jobs, not one per job.
//! The thread ends when every sender of jobs is dropped.
//!
//! Connecting tries the host's addresses one after the other, each with its own timeout
//! (TCP, TLS and the HTTP/2 handshake), starting after the last one that failed; a
//! failed DNS lookup uses the last good answer for up to ten minutes.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

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
    /// Time for connecting to one address, before the next one is tried.
    pub connect_timeout: Duration,
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
#[derive(Debug, Clone)]
pub(super) enum ExchangeError {
    /// The server certainly did not process the request: the connection was already
    /// gone, the stream was refused, or it was above a GOAWAY's last stream. Retrying at
    /// once, on a new connection, is safe.
    NotSent(String),
    /// Connecting failed, or the connection broke during the exchange.
    Failed(String),
    /// Connecting or the exchange took longer than its time.
    TimedOut(String),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::NotSent(why)
            | ExchangeError::Failed(why)
            | ExchangeError::TimedOut(why) => f.write_str(why),
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
    let mut addresses = Addresses::default();
    // The last failed connect attempt: when it ended, and why.
    let mut failure: Option<(Instant, ExchangeError)> = None;
    while let Some(job) = jobs.recv().await {
        if job.deadline <= Instant::now() {
            answer(
                job,
                Err(ExchangeError::TimedOut(
                    "timed out before sending".to_owned(),
                )),
            );
            continue;
        }
        if !connection.as_ref().is_some_and(Connection::usable) {
            connection = None;
            if let Some((at, why)) = &failure {
                if job.queued <= *at {
                    answer(job, Err(why.clone()));
                    continue;
                }
            }
            let attempt = tokio::time::timeout_at(
                job.deadline.into(),
                connect(&endpoint, &mut addresses, job.deadline),
            )
            .await;
            let (error, cut_short) = match attempt {
                Ok(Ok(new)) => {
                    failure = None;
                    connection = Some(new);
                    (None, false)
                }
                Ok(Err(error)) => (Some(error), false),
                Err(_) => (
                    Some(ExchangeError::TimedOut("connect timed out".to_owned())),
                    true,
                ),
            };
            if let Some(error) = error {
                warn!("apns: cannot connect to {}: {error}", endpoint.host);
                // A connect cut short by the end of a push's own deadline says nothing
                // about the server: the jobs behind it still try.
                if job.full_timeout || !cut_short {
                    failure = Some((Instant::now(), error.clone()));
                }
                answer(job, Err(error));
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

/// The host's addresses as last resolved, and where the next connect starts.
#[derive(Default)]
struct Addresses {
    /// The last good DNS answer and when it came.
    last_good: Option<(Instant, Vec<SocketAddr>)>,
    /// The address to try first: the one that last worked, or the one after the last
    /// that failed.
    next: usize,
}

impl Addresses {
    /// The addresses to try: a fresh DNS answer, or the last good one for up to
    /// [`STALE_LIMIT`](crate::push::resolver::STALE_LIMIT) when the lookup fails.
    async fn resolve(&mut self, endpoint: &Endpoint) -> Result<Vec<SocketAddr>, ExchangeError> {
        if let Ok(ip) = endpoint.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, endpoint.port)]);
        }
        let looked_up = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
            .await
            .map(Iterator::collect::<Vec<_>>);
        let why = match looked_up {
            Ok(found) if !found.is_empty() => {
                if self.last_good.as_ref().is_none_or(|(_, old)| *old != found) {
                    self.next = 0;
                }
                self.last_good = Some((Instant::now(), found.clone()));
                return Ok(found);
            }
            Ok(_) => "no address".to_owned(),
            Err(e) => e.to_string(),
        };
        match &self.last_good {
            Some((at, old)) if at.elapsed() < crate::push::resolver::STALE_LIMIT => {
                warn!(
                    "apns: cannot resolve {} ({why}); using its addresses of {} s ago",
                    endpoint.host,
                    at.elapsed().as_secs()
                );
                Ok(old.clone())
            }
            _ => Err(ExchangeError::Failed(format!("dns: {why}"))),
        }
    }
}

/// Opens a connection to one of the host's addresses, starting with the one that worked
/// last (or the one after the last that failed).
async fn connect(
    endpoint: &Endpoint,
    addresses: &mut Addresses,
    deadline: Instant,
) -> Result<Connection, ExchangeError> {
    let addrs = addresses.resolve(endpoint).await?;
    match connect_any(endpoint, &addrs, addresses.next, deadline).await {
        Ok((connection, used)) => {
            addresses.next = used;
            Ok(connection)
        }
        Err((error, tried)) => {
            addresses.next = addresses.next.wrapping_add(tried);
            Err(error)
        }
    }
}

/// Tries `addrs` in turn from index `first` (wrapping), each for at most the endpoint's
/// connect timeout and all by `deadline`. Returns the connection and the index of the
/// address that gave it, or the last failure and how many addresses were tried.
async fn connect_any(
    endpoint: &Endpoint,
    addrs: &[SocketAddr],
    first: usize,
    deadline: Instant,
) -> Result<(Connection, usize), (ExchangeError, usize)> {
    let mut last = ExchangeError::Failed("no address".to_owned());
    for tried in 0..addrs.len() {
        let index = first.wrapping_add(tried) % addrs.len();
        let now = Instant::now();
        if now >= deadline {
            return Err((
                ExchangeError::TimedOut("connect timed out".to_owned()),
                tried,
            ));
        }
        let until = deadline.min(super::super::retry::later(now, endpoint.connect_timeout));
        let attempt = tokio::time::timeout_at(until.into(), connect_one(endpoint, addrs[index]));
        last = match attempt.await {
            Ok(Ok(connection)) => return Ok((connection, index)),
            Ok(Err(why)) => ExchangeError::Failed(why),
            Err(_) => ExchangeError::TimedOut("connect timed out".to_owned()),
        };
        if addrs.len() > 1 {
            debug!("apns: cannot connect to {}: {last}", addrs[index]);
        }
    }
    Err((last, addrs.len()))
}

/// Opens a connection to `addr`: TCP, TLS with ALPN `h2` (unless h2c), the HTTP/2
/// handshake, and a task that drives it and marks it dead when it ends.
async fn connect_one(endpoint: &Endpoint, addr: SocketAddr) -> Result<Connection, String> {
    let tcp = TcpStream::connect(addr)
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
        "apns: connected to {} ({addr}){}",
        endpoint.host,
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
            Err(ExchangeError::TimedOut("request timed out".to_owned()))
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

#[cfg(test)]
mod tests {
    use tokio_rustls::rustls;

    use super::*;
    use crate::push::apns::{ApnsAuth, ApnsSettings};
    use crate::push::testing::fixture;

    /// The client's TLS configuration, trusting the test CA.
    fn client_config() -> Arc<ClientConfig> {
        let auth = ApnsAuth::Token {
            key_file: fixture("apns-token-key.p8"),
            key_id: "ABC123DEFG".into(),
            team_id: "DEF123GHIJ".into(),
        };
        let settings = ApnsSettings {
            extra_roots: vec![fixture("apns-ca.pem")],
            ..ApnsSettings::new("org.example.p2test", auth)
        };
        Arc::new(crate::push::apns::tls_config(&settings).expect("test tls config"))
    }

    /// The test server certificate for 127.0.0.1, ALPN h2.
    fn server_config() -> Arc<rustls::ServerConfig> {
        crate::push::testing::server_tls(&[b"h2"])
    }

    #[test]
    fn each_address_has_its_own_connect_timeout() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Accepted by the kernel, never answered: the TLS handshake hangs there.
            let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let good = listener.local_addr().unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(server_config());
            tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let tls = acceptor.accept(tcp).await.unwrap();
                let mut connection = h2::server::handshake(tls).await.unwrap();
                while connection.accept().await.is_some() {}
            });
            let endpoint = Endpoint {
                host: "127.0.0.1".to_owned(),
                port: 443,
                tls: Some(client_config()),
                connect_timeout: Duration::from_millis(300),
            };
            let addrs = [silent.local_addr().unwrap(), good];
            // A whole request timeout for both: one timeout for all addresses would spend
            // it on the first.
            let deadline = Instant::now() + Duration::from_secs(10);
            let connected = connect_any(&endpoint, &addrs, 0, deadline).await;
            let (connection, used) = connected.map_err(|(e, _)| e.to_string()).unwrap();
            assert_eq!(used, 1);
            assert!(connection.usable());
            // Every address failing: the last failure, and how many were tried.
            let silent_again = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addrs = [
                silent.local_addr().unwrap(),
                silent_again.local_addr().unwrap(),
            ];
            match connect_any(&endpoint, &addrs, 1, deadline).await {
                Err((ExchangeError::TimedOut(why), tried)) => {
                    assert_eq!((why.as_str(), tried), ("connect timed out", 2));
                }
                Err((e, _)) => panic!("{e}"),
                Ok(_) => panic!("connected to a silent address"),
            }
        });
    }

    #[test]
    fn an_ip_address_needs_no_lookup() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let endpoint = Endpoint {
            host: "::1".to_owned(),
            port: 2197,
            tls: None,
            connect_timeout: Duration::from_secs(1),
        };
        let mut addresses = Addresses::default();
        let found = runtime.block_on(addresses.resolve(&endpoint)).unwrap();
        assert_eq!(found, ["[::1]:2197".parse::<SocketAddr>().unwrap()]);
        assert!(addresses.last_good.is_none());
    }
}
