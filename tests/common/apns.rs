//! A loopback HTTP/2 server playing APNs, for the client tests (`tests/apns.rs`) and the
//! daemon tests (`tests/daemon_apns.rs`): h2c, or TLS with a test CA and client
//! certificates. It checks what Apple checks on authentication and answers from a script.
//!
//! Fixtures in `tests/fixtures`, made once with openssl (they protect nothing):
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

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The bundle id the tests configure (`apns-topic`).
pub const TOPIC: &str = "org.example.p2test";
/// The provider token key's id (JWT `kid`).
pub const KEY_ID: &str = "ABC123DEFG";
/// The developer team's id (JWT `iss`).
pub const TEAM_ID: &str = "DEF123GHIJ";

/// A file in `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with this status and, if not empty, this body.
    Status(u16, &'static str),
    /// Answer after a while.
    Slow(Duration, u16),
    /// Reset the stream with this reason.
    Reset(Reason),
    /// Never answer.
    Hang,
}

/// 200 with no body: accepted.
pub fn accepted() -> Reply {
    Reply::Status(200, "")
}

/// What the server does to its open connections.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    /// GOAWAY, then close once the streams in flight are done.
    GoAway,
    /// Drop the TCP connection.
    Drop,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which connection it came on: 0 for the first accepted.
    pub connection: usize,
    pub method: String,
    pub path: String,
    /// Header names in lowercase.
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// The bearer JWT, if any.
    pub jwt: Option<String>,
    /// Whether the TLS client presented a certificate.
    pub client_certificate: bool,
}

impl Seen {
    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

pub type Script = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

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
pub struct Apns {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
}

impl Apns {
    /// h2c with prior knowledge.
    pub fn start(script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Apns {
        Self::start_with(None, script)
    }

    /// TLS (ALPN h2) with the test server certificate, accepting client certificates
    /// from the test CA (optional unless `require_client_certificate`).
    pub fn start_tls(
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

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn control(&self, control: Control) {
        for conn in self.state.controls.lock().unwrap().iter() {
            let _ = conn.send(control);
        }
    }

    /// Waits (at most 2 s) until the server has closed `n` connections in all.
    pub fn wait_closed(&self, n: usize) {
        let until = Instant::now() + Duration::from_secs(2);
        while self.state.closed.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < until, "connections not closed");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The most requests it has had in flight at once.
    pub fn peak_in_flight(&self) -> usize {
        self.state.peak_in_flight.load(Ordering::SeqCst)
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
pub fn check_jwt(jwt: &str) -> Result<Value, String> {
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
