//! The APNs client against a loopback HTTP/2 server playing APNs: h2c, and TLS with a test CA and client certificates.
//!
//! Fixtures, made once with openssl (they protect nothing):
//!
//! ```text
//! # the provider token key, a .p8 as Apple hands them out, and its public key
//! openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out apns-token-key.p8
//! openssl pkey -in apns-token-key.p8 -pubout -outform DER -out apns-token-key.pub.der
//! # apns-token-key-apple-form.p8: the same key with the curve also named inside the
//! # ECPrivateKey ([0] parameters), the layout of Apple's own .p8 files (MIGTAgEA…)
//! # a CA, a server certificate for 127.0.0.1 and localhost, an RSA client certificate
//! openssl req -x509 -new -key ca.key -days 36500 -subj "/CN=p2 test APNs CA" \
//!   -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign -out apns-ca.pem
//! openssl x509 -req … -extfile (serverAuth, subjectAltName=IP:127.0.0.1,DNS:localhost) -out apns-server.pem
//! openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out apns-client.key
//! openssl x509 -req … -extfile (clientAuth) -out apns-client.pem
//! openssl rsa -in apns-client.key -traditional -out apns-client.rsa.key   # PKCS#1
//! ```
#![cfg(feature = "apns")]

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use p2::push::apns::{ApnsAuth, ApnsClient, ApnsSettings};
use p2::push::{Outcome, PushMessage};
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

const TOPIC: &str = "org.example.p2test";
const KEY_ID: &str = "ABC123DEFG";
const TEAM_ID: &str = "DEF123GHIJ";
const DEVICE: &str = "2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f";
const CHANNEL: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";
const TOKEN: &str = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad";

const ALERT_BODY: &str = r#"{"aps":{"alert":{"title":"New message"},"sound":"default","mutable-content":1},"account":"2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"}"#;
const BACKGROUND_BODY: &str = r#"{"aps":{"content-available":1},"account":"2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f","channel":"9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"}"#;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn message(has_body: bool) -> PushMessage {
    PushMessage {
        token: TOKEN.to_owned(),
        device: DEVICE.to_owned(),
        channel: String::new(),
        has_body,
    }
}

fn token_auth() -> ApnsAuth {
    ApnsAuth::Token {
        key_file: fixture("apns-token-key.p8"),
        key_id: KEY_ID.to_owned(),
        team_id: TEAM_ID.to_owned(),
    }
}

fn certificate_auth(key: &str) -> ApnsAuth {
    ApnsAuth::Certificate {
        certificate: fixture("apns-client.pem"),
        private_key: fixture(key),
    }
}

/// Short deadlines so that failures finish in seconds.
fn settings(base_url: String, auth: ApnsAuth) -> ApnsSettings {
    ApnsSettings {
        base_url,
        deadline: Duration::from_secs(3),
        request_timeout: Duration::from_secs(2),
        ..ApnsSettings::new(TOPIC, auth)
    }
}

fn client(server: &Apns) -> ApnsClient {
    ApnsClient::new(settings(server.url(), token_auth())).expect("client starts")
}

// ---------------------------------------------------------------------------------------
// The APNs stand-in.

/// What the server does with one request.
#[derive(Debug, Clone)]
enum Reply {
    /// Answer with this status and, if not empty, this body.
    Status(u16, &'static str),
    /// Answer after a while.
    Slow(Duration, u16),
    /// Reset the stream with this reason.
    Reset(Reason),
    /// Never answer.
    Hang,
}

fn ok() -> Reply {
    Reply::Status(200, "")
}

/// What the server does to its open connections.
#[derive(Debug, Clone, Copy)]
enum Control {
    /// GOAWAY, then close once the streams in flight are done.
    GoAway,
    /// Drop the TCP connection.
    Drop,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// Which connection it came on: 0 for the first accepted.
    connection: usize,
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
    /// The bearer JWT, if any.
    jwt: Option<String>,
    /// Whether the TLS client presented a certificate.
    client_certificate: bool,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

type Script = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

struct State {
    script: Box<Script>,
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
    closed: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    controls: Mutex<Vec<UnboundedSender<Control>>>,
}

/// An HTTP/2 server on 127.0.0.1 that checks what APNs checks and answers from a script.
///
/// It enforces what Apple enforces on authentication: with a bearer token, a valid ES256
/// signature by the test key, `kid` and `iss` as configured and a recent `iat` (else 403
/// `InvalidProviderToken`); without one, a TLS client certificate (else 403
/// `MissingProviderToken`). Everything else is checked by the tests on [`Seen`].
struct Apns {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
}

impl Apns {
    /// h2c with prior knowledge.
    fn start(script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Apns {
        Self::start_with(None, script)
    }

    /// TLS (ALPN h2) with the test server certificate, accepting client certificates
    /// from the test CA (optional unless `require_client_certificate`).
    fn start_tls(
        require_client_certificate: bool,
        script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static,
    ) -> Apns {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(fixture("apns-ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        );
        let verifier = if require_client_certificate {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        let chain = CertificateDer::pem_file_iter(fixture("apns-server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(fixture("apns-server.key")).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier.build().unwrap())
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self::start_with(
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
            script,
        )
    }

    fn start_with(
        tls: Option<tokio_rustls::TlsAcceptor>,
        script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static,
    ) -> Apns {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            script: Box::new(script),
            seen: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            controls: Mutex::new(Vec::new()),
        });
        let server = Apns {
            addr,
            tls: tls.is_some(),
            state: state.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        thread::spawn(move || runtime.block_on(accept_loop(listener, tls, state)));
        server
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    fn control(&self, control: Control) {
        for conn in self.state.controls.lock().unwrap().iter() {
            let _ = conn.send(control);
        }
    }

    /// Waits (at most 2 s) until the server has closed `n` connections in all.
    fn wait_closed(&self, n: usize) {
        let until = Instant::now() + Duration::from_secs(2);
        while self.state.closed.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < until, "connections not closed");
            thread::sleep(Duration::from_millis(5));
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let id = state.connections.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve(tcp, id, false, &state).await,
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let has_cert = stream.get_ref().1.peer_certificates().is_some();
                        serve(stream, id, has_cert, &state).await;
                    }
                }
            }
            state.closed.fetch_add(1, Ordering::SeqCst);
        });
    }
}

enum Next {
    Control(Control),
    Request(Box<(http::Request<RecvStream>, SendResponse<Bytes>)>),
    End,
}

async fn serve<T>(io: T, id: usize, client_certificate: bool, state: &Arc<State>)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    let (control_tx, mut control_rx) = unbounded_channel();
    state.controls.lock().unwrap().push(control_tx);
    loop {
        let next = poll_fn(|cx| {
            if let Poll::Ready(Some(c)) = control_rx.poll_recv(cx) {
                return Poll::Ready(Next::Control(c));
            }
            conn.poll_accept(cx).map(|accepted| match accepted {
                Some(Ok(pair)) => Next::Request(Box::new(pair)),
                _ => Next::End,
            })
        })
        .await;
        match next {
            Next::Control(Control::GoAway) => conn.graceful_shutdown(),
            Next::Control(Control::Drop) => return,
            Next::Request(pair) => {
                let (request, respond) = *pair;
                let state = state.clone();
                tokio::spawn(handle(request, respond, id, client_certificate, state));
            }
            Next::End => return,
        }
    }
}

async fn handle(
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    connection: usize,
    client_certificate: bool,
    state: Arc<State>,
) {
    let (parts, mut body) = request.into_parts();
    let mut bytes = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let jwt = headers
        .get("authorization")
        .map(|v| v.strip_prefix("bearer ").unwrap_or("not bearer").to_owned());
    let seen = Seen {
        connection,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers,
        body: String::from_utf8(bytes).unwrap(),
        jwt,
        client_certificate,
    };
    let index = {
        let mut all = state.seen.lock().unwrap();
        all.push(seen.clone());
        all.len() - 1
    };
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    let reply = match (&seen.jwt, client_certificate) {
        (Some(jwt), _) => match check_jwt(jwt) {
            Ok(_) => (state.script)(index, &seen),
            Err(_) => Reply::Status(403, r#"{"reason":"InvalidProviderToken"}"#),
        },
        (None, true) => (state.script)(index, &seen),
        (None, false) => Reply::Status(403, r#"{"reason":"MissingProviderToken"}"#),
    };
    let (status, body) = match reply {
        Reply::Status(status, body) => (status, body),
        Reply::Slow(wait, status) => {
            tokio::time::sleep(wait).await;
            (status, "")
        }
        Reply::Reset(reason) => {
            respond.send_reset(reason);
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
    };
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let response = http::Response::builder()
        .status(status)
        .header("apns-id", "eabeae54-14a8-11e5-b60b-1697f925ec7b")
        .body(())
        .unwrap();
    if let Ok(mut stream) = respond.send_response(response, body.is_empty()) {
        if !body.is_empty() {
            let _ = stream.send_data(Bytes::from_static(body.as_bytes()), true);
        }
    }
}

/// Verifies an ES256 provider token with the test key's public key; returns its claims.
fn check_jwt(jwt: &str) -> Result<Value, String> {
    let spki = std::fs::read(fixture("apns-token-key.pub.der")).unwrap();
    let point = &spki[spki.len() - 65..]; // the uncompressed point ends the SPKI
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err("not three parts".to_owned());
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| e.to_string())?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(format!("{header}.{claims}").as_bytes(), &signature)
        .map_err(|_| "bad signature".to_owned())?;
    let json = |p: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD.decode(p).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let header = json(header)?;
    let claims = json(claims)?;
    if header != serde_json::json!({"alg": "ES256", "kid": KEY_ID}) {
        return Err(format!("bad header {header}"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = claims["iat"].as_u64().ok_or("no iat")?;
    if claims["iss"] != TEAM_ID || iat.abs_diff(now) > 60 || claims.as_object().unwrap().len() != 2
    {
        return Err(format!("bad claims {claims}"));
    }
    Ok(claims)
}

fn dead(reason: &str) -> Outcome {
    Outcome::DeadToken {
        reason: reason.to_owned(),
    }
}

fn failed(reason: &str) -> Outcome {
    Outcome::Failed {
        reason: reason.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Requests.

#[test]
fn alert_push_sends_headers_path_and_body() {
    let server = Apns::start(|_, _| ok());
    let outcome = client(&server).send(&message(true));
    assert_eq!(outcome, Outcome::Delivered);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, format!("/3/device/{TOKEN}"));
    assert_eq!(req.header("apns-topic"), Some(TOPIC));
    assert_eq!(req.header("apns-push-type"), Some("alert"));
    assert_eq!(req.header("apns-priority"), Some("10"));
    assert_eq!(req.header("apns-expiration"), None);
    let jwt = req.jwt.as_deref().expect("bearer token");
    check_jwt(jwt).expect("valid provider token");
    assert_eq!(req.header("authorization"), Some(&*format!("bearer {jwt}")));
    assert_eq!(req.body, ALERT_BODY);
    assert!(!req.client_certificate);
}

#[test]
fn background_push_sends_headers_body_and_expiration() {
    let server = Apns::start(|_, _| ok());
    let client = ApnsClient::new(ApnsSettings {
        expiration: Some(Duration::from_secs(3600)),
        ..settings(server.url(), token_auth())
    })
    .unwrap();
    let msg = PushMessage {
        channel: CHANNEL.to_owned(),
        ..message(false)
    };
    assert_eq!(client.send(&msg), Outcome::Delivered);
    let req = &server.seen()[0];
    assert_eq!(req.path, format!("/3/device/{TOKEN}"));
    assert_eq!(req.header("apns-topic"), Some(TOPIC));
    assert_eq!(req.header("apns-push-type"), Some("background"));
    assert_eq!(req.header("apns-priority"), Some("5"));
    assert_eq!(req.body, BACKGROUND_BODY);
    let expiration: u64 = req.header("apns-expiration").unwrap().parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        expiration.abs_diff(now + 3600) < 10,
        "{expiration} vs {now}"
    );
}

#[test]
fn provider_token_is_reused_across_pushes() {
    let server = Apns::start(|_, _| ok());
    let client = client(&server);
    for _ in 0..3 {
        assert_eq!(client.send(&message(true)), Outcome::Delivered);
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.jwt == seen[0].jwt));
    assert_eq!(server.connections(), 1);
}

#[test]
fn token_that_is_not_hex_is_dead_without_a_request() {
    let server = Apns::start(|_, _| ok());
    let msg = PushMessage {
        token: "../../3/device/x".to_owned(),
        ..message(true)
    };
    assert_eq!(client(&server).send(&msg), dead("BadDeviceToken"));
    assert!(server.seen().is_empty());
    assert_eq!(server.connections(), 0);
}

// ---------------------------------------------------------------------------------------
// Outcomes.

#[test]
fn gone_token_is_dead_at_once() {
    let server = Apns::start(|_, _| {
        Reply::Status(
            410,
            r#"{"reason":"Unregistered","timestamp":1712345678901}"#,
        )
    });
    assert_eq!(client(&server).send(&message(true)), dead("Unregistered"));
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn bad_device_token_is_dead_at_once() {
    for reason in ["BadDeviceToken", "DeviceTokenNotForTopic"] {
        let body: &'static str = Box::leak(format!(r#"{{"reason":"{reason}"}}"#).into_boxed_str());
        let server = Apns::start(move |_, _| Reply::Status(400, body));
        assert_eq!(client(&server).send(&message(false)), dead(reason));
        assert_eq!(server.seen().len(), 1);
    }
}

#[test]
fn configuration_errors_fail_at_once_and_keep_the_token() {
    let cases = [
        (400, r#"{"reason":"BadTopic"}"#, "apns http 400 BadTopic"),
        (
            403,
            r#"{"reason":"InvalidProviderToken"}"#,
            "apns http 403 InvalidProviderToken",
        ),
        (404, r#"{"reason":"BadPath"}"#, "apns http 404 BadPath"),
    ];
    for (status, body, reason) in cases {
        let server = Apns::start(move |_, _| Reply::Status(status, body));
        assert_eq!(client(&server).send(&message(true)), failed(reason));
        assert_eq!(server.seen().len(), 1);
    }
}

#[test]
fn too_many_requests_then_success_is_delivered() {
    let server = Apns::start(|i, _| match i {
        0 => Reply::Status(429, r#"{"reason":"TooManyRequests"}"#),
        _ => ok(),
    });
    assert_eq!(client(&server).send(&message(true)), Outcome::Delivered);
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn internal_server_error_then_success_is_delivered() {
    let server = Apns::start(|i, _| match i {
        0 => Reply::Status(500, r#"{"reason":"InternalServerError"}"#),
        _ => ok(),
    });
    assert_eq!(client(&server).send(&message(true)), Outcome::Delivered);
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn permanent_unavailability_fails_within_the_deadline() {
    let server = Apns::start(|_, _| Reply::Status(503, r#"{"reason":"ServiceUnavailable"}"#));
    let client = ApnsClient::new(ApnsSettings {
        deadline: Duration::from_millis(1500),
        ..settings(server.url(), token_auth())
    })
    .unwrap();
    let started = Instant::now();
    let outcome = client.send(&message(true));
    let elapsed = started.elapsed();
    assert_eq!(outcome, failed("apns http 503 ServiceUnavailable"));
    assert!(elapsed < Duration::from_millis(1700), "{elapsed:?}");
    let attempts = server.seen().len();
    assert!((2..=8).contains(&attempts), "{attempts} attempts");
}

#[test]
fn expired_provider_token_is_replaced_once() {
    let server = Apns::start(|i, _| match i {
        0 => Reply::Status(403, r#"{"reason":"ExpiredProviderToken"}"#),
        _ => ok(),
    });
    let client = client(&server);
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let (first, second) = (seen[0].jwt.clone().unwrap(), seen[1].jwt.clone().unwrap());
    assert_ne!(first, second, "a new token after ExpiredProviderToken");
    check_jwt(&second).unwrap();
    // The new token is the one kept.
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    assert_eq!(server.seen()[2].jwt.as_deref(), Some(&*second));
}

#[test]
fn expired_provider_token_twice_fails() {
    let server = Apns::start(|_, _| Reply::Status(403, r#"{"reason":"ExpiredProviderToken"}"#));
    assert_eq!(
        client(&server).send(&message(true)),
        failed("apns http 403 ExpiredProviderToken with a fresh token")
    );
    assert_eq!(server.seen().len(), 2);
}

// ---------------------------------------------------------------------------------------
// The connection.

#[test]
fn hundred_concurrent_pushes_share_one_connection() {
    let server = Apns::start(|_, _| Reply::Slow(Duration::from_millis(50), 200));
    let client = client(&server);
    // One push first, so that the connection is up before the crowd arrives.
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    let barrier = Arc::new(Barrier::new(100));
    let started = Instant::now();
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                client.send(&message(i % 2 == 0))
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Outcome::Delivered);
    }
    let elapsed = started.elapsed();
    let seen = server.seen();
    assert_eq!(seen.len(), 101);
    assert_eq!(server.connections(), 1);
    assert!(seen.iter().all(|s| s.connection == 0));
    // 100 answers that take 50 ms each, in well under 100 × 50 ms: they overlapped.
    let peak = server.state.peak_in_flight.load(Ordering::SeqCst);
    assert!(peak >= 10, "peak of {peak} streams in flight");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn pushes_arriving_before_the_connection_is_up_share_it() {
    let server = Apns::start(|_, _| ok());
    let client = client(&server);
    let barrier = Arc::new(Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                client.send(&message(true))
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Outcome::Delivered);
    }
    assert_eq!(server.seen().len(), 20);
    assert_eq!(server.connections(), 1);
}

fn reconnects_after(control: Control) {
    let server = Apns::start(|_, _| ok());
    let client = client(&server);
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    server.control(control);
    server.wait_closed(1);
    let started = Instant::now();
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(server.connections(), 2);
    let seen = server.seen();
    assert_eq!(seen.last().unwrap().connection, 1);
}

#[test]
fn goaway_between_pushes_reconnects() {
    reconnects_after(Control::GoAway);
}

#[test]
fn dropped_connection_between_pushes_reconnects() {
    reconnects_after(Control::Drop);
}

#[test]
fn goaway_noticed_late_reconnects() {
    // The client has not read the GOAWAY yet when it sends: the push must still succeed.
    for _ in 0..5 {
        let server = Apns::start(|_, _| ok());
        let client = client(&server);
        assert_eq!(client.send(&message(true)), Outcome::Delivered);
        server.control(Control::GoAway);
        assert_eq!(client.send(&message(true)), Outcome::Delivered);
    }
}

#[test]
fn refused_stream_is_retried_at_once() {
    let server = Apns::start(|i, _| match i {
        0 => Reply::Reset(Reason::REFUSED_STREAM),
        _ => ok(),
    });
    let started = Instant::now();
    assert_eq!(client(&server).send(&message(true)), Outcome::Delivered);
    // No backoff (at least 100 ms) for a request that was never processed.
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.seen().len(), 2);
    assert_eq!(server.connections(), 1);
}

#[test]
fn other_stream_reset_is_retried_after_a_backoff() {
    let server = Apns::start(|i, _| match i {
        0 => Reply::Reset(Reason::INTERNAL_ERROR),
        _ => ok(),
    });
    assert_eq!(client(&server).send(&message(true)), Outcome::Delivered);
    assert_eq!(server.seen().len(), 2);
    assert_eq!(server.connections(), 1);
}

#[test]
fn unanswered_request_times_out_and_the_next_attempt_reconnects() {
    let server = Apns::start(|i, _| match i {
        0 => Reply::Hang,
        _ => ok(),
    });
    let client = ApnsClient::new(ApnsSettings {
        request_timeout: Duration::from_millis(300),
        ..settings(server.url(), token_auth())
    })
    .unwrap();
    let started = Instant::now();
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[0].connection, seen[1].connection), (0, 1));
    // The abandoned connection is closed by the client once nothing uses it.
    server.wait_closed(1);
}

#[test]
fn request_cut_short_by_the_deadline_keeps_the_connection() {
    let server = Apns::start(|i, _| match i {
        1 => Reply::Hang,
        _ => ok(),
    });
    let client = ApnsClient::new(ApnsSettings {
        deadline: Duration::from_millis(400),
        request_timeout: Duration::from_secs(2),
        ..settings(server.url(), token_auth())
    })
    .unwrap();
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    let started = Instant::now();
    assert_eq!(
        client.send(&message(true)),
        failed("apns request timed out")
    );
    assert!(started.elapsed() < Duration::from_millis(600));
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    assert_eq!(server.connections(), 1);
}

#[test]
fn dropping_the_client_closes_the_connection() {
    let server = Apns::start(|_, _| ok());
    let client = client(&server);
    let other = client.clone();
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    drop(client);
    assert_eq!(other.send(&message(true)), Outcome::Delivered);
    drop(other);
    server.wait_closed(1);
    assert_eq!(server.connections(), 1);
}

#[test]
fn unreachable_server_fails_within_the_deadline() {
    // A port that was just free: connecting is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = ApnsClient::new(ApnsSettings {
        deadline: Duration::from_millis(1000),
        ..settings(format!("http://127.0.0.1:{port}"), token_auth())
    })
    .unwrap();
    let started = Instant::now();
    let outcome = client.send(&message(true));
    assert!(started.elapsed() < Duration::from_millis(1200));
    match outcome {
        Outcome::Failed { reason } => assert!(reason.starts_with("apns tcp connect: "), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn concurrent_pushes_to_an_unreachable_server_all_fail_in_time() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = ApnsClient::new(ApnsSettings {
        deadline: Duration::from_millis(800),
        ..settings(format!("http://127.0.0.1:{port}"), token_auth())
    })
    .unwrap();
    let started = Instant::now();
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            thread::spawn(move || client.send(&message(true)))
        })
        .collect();
    for t in threads {
        assert!(matches!(t.join().unwrap(), Outcome::Failed { .. }));
    }
    assert!(started.elapsed() < Duration::from_millis(1200));
}

#[test]
fn tls_handshake_that_never_completes_times_out() {
    // Accepted by the kernel, never answered: the TLS handshake hangs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", silent.local_addr().unwrap());
    let client = ApnsClient::new(ApnsSettings {
        extra_roots: vec![fixture("apns-ca.pem")],
        deadline: Duration::from_millis(1000),
        request_timeout: Duration::from_millis(300),
        ..settings(url, token_auth())
    })
    .unwrap();
    let started = Instant::now();
    assert_eq!(
        client.send(&message(true)),
        failed("apns connect timed out")
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_millis(1200),
        "{elapsed:?}"
    );
    drop(silent);
}

#[test]
fn client_survives_a_server_that_comes_back() {
    let server = Apns::start(|_, _| ok());
    let client = client(&server);
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    server.control(Control::Drop);
    server.wait_closed(1);
    assert_eq!(client.send(&message(false)), Outcome::Delivered);
    server.control(Control::GoAway);
    server.wait_closed(2);
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    assert_eq!(server.connections(), 3);
}

// ---------------------------------------------------------------------------------------
// TLS.

fn tls_settings(server: &Apns, auth: ApnsAuth) -> ApnsSettings {
    ApnsSettings {
        extra_roots: vec![fixture("apns-ca.pem")],
        ..settings(server.url(), auth)
    }
}

#[test]
fn tls_with_client_certificate() {
    for key in ["apns-client.key", "apns-client.rsa.key"] {
        let server = Apns::start_tls(true, |_, _| ok());
        let client = ApnsClient::new(tls_settings(&server, certificate_auth(key))).unwrap();
        assert_eq!(client.send(&message(true)), Outcome::Delivered, "{key}");
        assert_eq!(client.send(&message(false)), Outcome::Delivered, "{key}");
        let seen = server.seen();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|s| s.client_certificate && s.jwt.is_none()));
        assert_eq!(seen[0].header("apns-push-type"), Some("alert"));
        assert_eq!(seen[0].body, ALERT_BODY);
        assert_eq!(server.connections(), 1);
    }
}

#[test]
fn tls_with_provider_token() {
    let server = Apns::start_tls(false, |_, _| ok());
    let client = ApnsClient::new(tls_settings(&server, token_auth())).unwrap();
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    let req = &server.seen()[0];
    assert!(!req.client_certificate);
    check_jwt(req.jwt.as_deref().unwrap()).unwrap();
}

#[test]
fn tls_server_not_trusted_fails() {
    let server = Apns::start_tls(false, |_, _| ok());
    let client = ApnsClient::new(ApnsSettings {
        extra_roots: Vec::new(),
        deadline: Duration::from_millis(800),
        ..settings(server.url(), token_auth())
    })
    .unwrap();
    match client.send(&message(true)) {
        Outcome::Failed { reason } => {
            assert!(
                reason.starts_with("apns tls: invalid peer certificate"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(server.seen().is_empty());
}

#[test]
fn tls_server_requiring_a_certificate_refuses_token_clients() {
    let server = Apns::start_tls(true, |_, _| ok());
    let client = ApnsClient::new(ApnsSettings {
        deadline: Duration::from_millis(800),
        ..tls_settings(&server, token_auth())
    })
    .unwrap();
    assert!(matches!(
        client.send(&message(true)),
        Outcome::Failed { .. }
    ));
    assert!(server.seen().is_empty());
}

// ---------------------------------------------------------------------------------------
// Construction.

fn construction_error(settings: ApnsSettings) -> String {
    ApnsClient::new(settings)
        .expect_err("construction refused")
        .to_string()
}

#[test]
fn bad_files_and_settings_are_refused_at_construction() {
    let dir = std::env::temp_dir().join(format!("p2-apns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.p8");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let encrypted = dir.join("encrypted.key");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjAp\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let url = "http://127.0.0.1:9".to_owned();
    let token = |key_file: PathBuf| ApnsAuth::Token {
        key_file,
        key_id: KEY_ID.to_owned(),
        team_id: TEAM_ID.to_owned(),
    };
    let certificate = |certificate: PathBuf, private_key: PathBuf| ApnsAuth::Certificate {
        certificate,
        private_key,
    };
    let https = "https://127.0.0.1:9".to_owned();
    let d = |p: &PathBuf| p.display().to_string();
    let cases = [
        (
            settings(url.clone(), token(garbage.clone())),
            format!("bad private key in {}: ", d(&garbage)),
        ),
        (
            settings(url.clone(), token(dir.join("missing.p8"))),
            format!("cannot read {}: ", d(&dir.join("missing.p8"))),
        ),
        (
            settings(url.clone(), token(fixture("apns-client.key"))),
            format!(
                "bad private key in {}: not an EC P-256 key",
                d(&fixture("apns-client.key"))
            ),
        ),
        (
            settings(url.clone(), token(encrypted.clone())),
            format!("bad private key in {}: the key is encrypted", d(&encrypted)),
        ),
        (
            settings(
                https.clone(),
                certificate(fixture("apns-client.pem"), fixture("apns-server.key")),
            ),
            format!(
                "bad private key in {}: does not belong to {}",
                d(&fixture("apns-server.key")),
                d(&fixture("apns-client.pem"))
            ),
        ),
        (
            settings(
                https.clone(),
                certificate(empty.clone(), fixture("apns-client.key")),
            ),
            format!("bad certificate in {}: no PEM certificate found", d(&empty)),
        ),
        (
            settings(
                https.clone(),
                certificate(fixture("apns-client.pem"), fixture("apns-client.pem")),
            ),
            format!(
                "bad private key in {}: no PEM private key",
                d(&fixture("apns-client.pem"))
            ),
        ),
        (
            ApnsSettings {
                extra_roots: vec![empty.clone()],
                ..settings(https.clone(), token_auth())
            },
            format!("bad certificate in {}: no PEM certificate found", d(&empty)),
        ),
        (
            ApnsSettings {
                topic: " ".to_owned(),
                ..settings(url.clone(), token_auth())
            },
            "bad apns topic: is empty".to_owned(),
        ),
        (
            settings("api.push.apple.com".to_owned(), token_auth()),
            "bad apns base_url: \"api.push.apple.com\" must start with https://".to_owned(),
        ),
    ];
    for (settings, expected) in cases {
        let error = construction_error(settings);
        assert!(
            error.starts_with(&expected),
            "{error:?} should start with {expected:?}"
        );
        assert!(!error.contains("BEGIN"), "{error}");
    }
    // An Apple-shaped .p8 (curve named inside the key too) is accepted.
    let apple = ApnsAuth::Token {
        key_file: fixture("apns-token-key-apple-form.p8"),
        key_id: KEY_ID.to_owned(),
        team_id: TEAM_ID.to_owned(),
    };
    ApnsClient::new(settings(url, apple)).expect("apple-form key loads");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn default_settings() {
    let s = ApnsSettings::new(TOPIC, token_auth());
    assert_eq!(s.base_url, "https://api.push.apple.com");
    assert_eq!(
        p2::push::apns::SANDBOX_URL,
        "https://api.sandbox.push.apple.com"
    );
    assert_eq!(s.deadline, Duration::from_secs(15));
    assert_eq!(s.request_timeout, Duration::from_secs(10));
    assert_eq!(s.expiration, None);
    assert!(s.extra_roots.is_empty());
    // Made without connecting: a client for Apple's real host starts without the network.
    ApnsClient::new(s).expect("client starts");
}
