//! The component connection: connect, handshake, read, write, detect death, reconnect.
//!
//! The connection thread owns the socket's reading half and the stream parser; the
//! writer thread owns every write after the handshake. Each successful handshake starts
//! a new generation; the writer drops what is addressed to an older one.

use std::io::{BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::app::{Event, Gen, Oversized};
use crate::system::Notifier;
use crate::xmpp::handshake;
use crate::xmpp::ns;
use crate::xmpp::stream::{StreamEvent, StreamParser, DEFAULT_MAX_STANZA_BYTES};

/// How the component reaches its server.
#[derive(Clone)]
pub struct Link {
    /// Server host.
    pub host: String,
    /// Component port.
    pub port: u16,
    /// The component JID.
    pub jid: String,
    /// The shared secret.
    pub secret: String,
    /// Limit on one stanza's bytes. Default [`DEFAULT_MAX_STANZA_BYTES`].
    pub max_stanza_bytes: usize,
    /// Silence after which a ping is sent. Default 60 s.
    pub idle: Duration,
    /// Further silence after the ping before the connection is declared dead. Default 30 s.
    pub dead: Duration,
    /// First reconnect delay, doubled up to `max_backoff`. Default 1 s.
    pub min_backoff: Duration,
    /// Longest reconnect delay. Default 60 s.
    pub max_backoff: Duration,
    /// Where connection state changes are reported to systemd, if anywhere.
    pub notifier: Option<Arc<Notifier>>,
}

impl Link {
    /// A link with the default timings.
    pub fn new(host: String, port: u16, jid: String, secret: String) -> Link {
        Link {
            host,
            port,
            jid,
            secret,
            max_stanza_bytes: DEFAULT_MAX_STANZA_BYTES,
            idle: Duration::from_secs(60),
            dead: Duration::from_secs(30),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            notifier: None,
        }
    }
}

/// What the writer thread is told.
pub enum WriteMsg {
    /// A new connection's writing half.
    Attach(Gen, TcpStream),
    /// Bytes for that connection.
    Send(Gen, String),
    /// Several, in order, each for its connection.
    Batch(Vec<(Gen, String)>),
    /// That connection is gone.
    Detach(Gen),
    /// Shutting down: close the stream properly on the current connection.
    Close,
}

/// The writer thread's loop: writes what is addressed to the current connection,
/// coalescing what is queued into one flush.
pub fn writer_loop(rx: Receiver<WriteMsg>) {
    let mut current: Option<(Gen, BufWriter<TcpStream>)> = None;
    while let Ok(first) = rx.recv() {
        let mut msg = Some(first);
        while let Some(m) = msg {
            match m {
                WriteMsg::Attach(gen, stream) => {
                    current = Some((gen, BufWriter::with_capacity(64 * 1024, stream)))
                }
                WriteMsg::Detach(gen) => {
                    if current.as_ref().is_some_and(|(g, _)| *g == gen) {
                        current = None;
                    }
                }
                WriteMsg::Close => {
                    if let Some((_, mut w)) = current.take() {
                        let _ = w.write_all(handshake::STREAM_CLOSE.as_bytes());
                        let _ = w.flush();
                        let _ = w.get_ref().shutdown(Shutdown::Both);
                    }
                }
                WriteMsg::Send(gen, text) => write_to(&mut current, gen, &text),
                WriteMsg::Batch(texts) => {
                    for (gen, text) in texts {
                        write_to(&mut current, gen, &text);
                    }
                }
            }
            msg = rx.try_recv().ok();
        }
        if let Some((_, w)) = current.as_mut() {
            if let Err(e) = w.flush() {
                log::warn!("write to the server failed: {e}");
                let _ = w.get_ref().shutdown(Shutdown::Both);
                current = None;
            }
        }
    }
}

/// Writes `text` if `gen` is the current connection; a failed write drops it.
fn write_to(current: &mut Option<(Gen, BufWriter<TcpStream>)>, gen: Gen, text: &str) {
    if let Some((g, w)) = current.as_mut() {
        if *g == gen {
            if let Err(e) = w.write_all(text.as_bytes()) {
                log::warn!("write to the server failed: {e}");
                let _ = w.get_ref().shutdown(Shutdown::Both);
                *current = None;
            }
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    Io(std::io::Error),
    Refused(String),
    Protocol(String),
    Closed,
    Dead,
    Stopped,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Io(e) => write!(f, "{e}"),
            End::Refused(why) => write!(f, "handshake rejected: {why}"),
            End::Protocol(why) => write!(f, "{why}"),
            End::Closed => f.write_str("the server closed the stream"),
            End::Dead => f.write_str("no answer from the server, connection presumed dead"),
            End::Stopped => f.write_str("stopping"),
        }
    }
}

/// A small random factor in [0.75, 1.25) for backoff jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    0.75 + f64::from(u16::from_le_bytes(b)) / 65536.0 * 0.5
}

/// The text of a `<stream:error/>`: its condition and text, if any.
fn stream_error_text(el: &minidom::Element) -> String {
    let condition = el
        .children()
        .find(|c| c.ns() == ns::STREAM_ERRORS && c.name() != "text")
        .map_or("undefined-condition", |c| c.name());
    match el.get_child("text", ns::STREAM_ERRORS) {
        Some(t) => format!("{condition} ({})", t.text()),
        None => condition.to_owned(),
    }
}

/// Connects and serves forever (until `stop`), reconnecting with exponential backoff and
/// jitter after any loss.
pub fn run(link: &Link, core: &Sender<Event>, writer: &Sender<WriteMsg>, stop: &AtomicBool) {
    let mut gen: Gen = 0;
    let mut backoff = link.min_backoff;
    while !stop.load(Ordering::Relaxed) {
        gen += 1;
        let started = Instant::now();
        let end = connection(link, gen, core, writer, stop);
        if matches!(end, End::Stopped) {
            break;
        }
        if started.elapsed() > link.max_backoff {
            backoff = link.min_backoff;
        }
        let delay = backoff.mul_f64(jitter());
        log::warn!(
            "connection to {}:{} lost: {end}; reconnecting in {:.1} s",
            link.host,
            link.port,
            delay.as_secs_f64()
        );
        if let Some(n) = &link.notifier {
            n.notify(&format!(
                "STATUS=disconnected from {}:{} ({end}); reconnecting",
                link.host, link.port
            ));
        }
        sleep_unless_stopped(delay, stop);
        backoff = (backoff * 2).min(link.max_backoff);
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        thread::sleep((until - now).min(Duration::from_millis(100)));
    }
}

fn connect(link: &Link) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in (link.host.as_str(), link.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(ErrorKind::NotFound, "no address")))
}

/// One connection from connect to loss.
fn connection(
    link: &Link,
    gen: Gen,
    core: &Sender<Event>,
    writer: &Sender<WriteMsg>,
    stop: &AtomicBool,
) -> End {
    let mut stream = match connect(link) {
        Ok(s) => s,
        Err(e) => return End::Io(e),
    };
    let _ = stream.set_nodelay(true);
    if let Err(e) = stream.write_all(handshake::stream_header(&link.jid).as_bytes()) {
        return End::Io(e);
    }
    let tick = Duration::from_millis(250);
    if let Err(e) = stream.set_read_timeout(Some(tick)) {
        return End::Io(e);
    }
    let mut parser = StreamParser::new(link.max_stanza_bytes);
    let mut buf = vec![0u8; 16 * 1024];
    let mut authenticated = false;
    let mut last_rx = Instant::now();
    let mut pinged = false;
    let mut pings = 0u64;
    let handshake_deadline = Instant::now() + Duration::from_secs(20);

    let end = 'read: loop {
        if stop.load(Ordering::Relaxed) {
            break End::Stopped;
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => break End::Closed,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let silent = last_rx.elapsed();
                if !authenticated && Instant::now() > handshake_deadline {
                    break End::Protocol("no handshake answer within 20 s".into());
                }
                if authenticated && silent > link.idle + link.dead {
                    break End::Dead;
                }
                if authenticated && silent > link.idle && !pinged {
                    pinged = true;
                    pings += 1;
                    let domain = link
                        .jid
                        .split_once('.')
                        .map_or(link.jid.as_str(), |(_, d)| d);
                    let _ = writer.send(WriteMsg::Send(
                        gen,
                        format!(
                            "<iq type='get' id='keepalive-{gen}-{pings}' from='{}' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
                            crate::xmpp::stanza::escape(&link.jid),
                            crate::xmpp::stanza::escape(domain)
                        ),
                    ));
                }
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => break End::Io(e),
        };
        last_rx = Instant::now();
        pinged = false;
        let events = match parser.feed(&buf[..n]) {
            Ok(events) => events,
            Err(e) => {
                let _ = stream.write_all(
                    b"<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>",
                );
                break End::Protocol(format!("invalid XML from the server: {e}"));
            }
        };
        let mut stanzas = Vec::new();
        let mut stop: Option<End> = None;
        for event in events {
            let ended = match event {
                StreamEvent::Open { .. } if authenticated => {
                    Some(End::Protocol("second stream header".into()))
                }
                StreamEvent::Open { id: None, .. } => {
                    Some(End::Protocol("stream header without an id".into()))
                }
                StreamEvent::Open { id: Some(id), .. } => stream
                    .write_all(handshake::handshake(&id, &link.secret).as_bytes())
                    .err()
                    .map(End::Io),
                StreamEvent::Stanza(el) if el.is("error", ns::STREAM) => {
                    let text = stream_error_text(&el);
                    Some(if authenticated {
                        End::Protocol(format!("stream error: {text}"))
                    } else {
                        End::Refused(text)
                    })
                }
                StreamEvent::Stanza(el) if !authenticated => {
                    if el.is("handshake", ns::COMPONENT) {
                        match stream.try_clone() {
                            Ok(half) => {
                                authenticated = true;
                                let _ = writer.send(WriteMsg::Attach(gen, half));
                                let _ = core.send(Event::Connected(gen));
                                log::info!(
                                    "connected to {}:{} as {}",
                                    link.host,
                                    link.port,
                                    link.jid
                                );
                                if let Some(n) = &link.notifier {
                                    n.notify(&format!(
                                        "STATUS=connected to {}:{} as {}",
                                        link.host, link.port, link.jid
                                    ));
                                }
                                None
                            }
                            Err(e) => Some(End::Io(e)),
                        }
                    } else {
                        Some(End::Protocol(format!(
                            "unexpected <{}/> before the handshake",
                            el.name()
                        )))
                    }
                }
                StreamEvent::Stanza(el) => {
                    stanzas.push(el);
                    None
                }
                StreamEvent::Oversized {
                    name,
                    id,
                    from,
                    to,
                    kind,
                    why,
                } => {
                    // In order: what came before it first.
                    let before = std::mem::take(&mut stanzas);
                    if !before.is_empty() {
                        let _ = core.send(Event::Stanzas(gen, before));
                    }
                    let _ = core.send(Event::Oversized(
                        gen,
                        Oversized {
                            name,
                            id,
                            from,
                            to,
                            kind,
                            limit: link.max_stanza_bytes,
                            why,
                        },
                    ));
                    None
                }
                StreamEvent::Close => Some(End::Closed),
            };
            if ended.is_some() {
                stop = ended;
                break;
            }
        }
        if !stanzas.is_empty() && core.send(Event::Stanzas(gen, stanzas)).is_err() {
            break 'read End::Stopped;
        }
        if let Some(end) = stop {
            break 'read end;
        }
    };
    if matches!(end, End::Stopped) {
        // The writer keeps the connection to send the replies of the pushes in flight,
        // then closes the stream (WriteMsg::Close).
        if !authenticated {
            let _ = stream.write_all(handshake::STREAM_CLOSE.as_bytes());
            let _ = stream.shutdown(Shutdown::Both);
        }
        return end;
    }
    if authenticated {
        let _ = writer.send(WriteMsg::Detach(gen));
        let _ = core.send(Event::Disconnected(gen));
    }
    let _ = stream.shutdown(Shutdown::Both);
    end
}
