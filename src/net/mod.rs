//! The component connection: the socket around [`machine::Machine`], and the writer.
//!
//! - [`machine`]: the connection's states and decisions (handshake, keepalive, dead peer,
//!   backoff), without a socket or a clock of its own.
//! - this module: the connection thread, a thin shell that connects, reads, writes
//!   the handshake and carries out the machine's actions; it sleeps in poll(2) until
//!   bytes arrive, the machine's next deadline passes, or a stop wakes it
//!   ([`crate::system::wait`]).
//! - [`writer`]: the writer thread, which owns every write after the handshake.
//!
//! Each successful handshake starts a new generation; the writer and the core drop what
//! is addressed to an older one.

pub mod machine;
pub mod writer;

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::Event;
use crate::system::{self, Notifier};
use crate::xmpp::stream::DEFAULT_MAX_STANZA_BYTES;
use machine::{Action, Input, Machine, Settings};
pub use writer::{write_timeout, writer_loop, WriteMsg, WRITE_TIMEOUT};

/// How long one connect attempt to one address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read from the socket at once.
const READ_BUFFER: usize = 16 * 1024;

/// How the component reaches its server.
#[derive(Clone)]
pub struct Link {
    /// Server host.
    pub host: String,
    /// Component port.
    pub port: u16,
    /// What the connection's state machine needs: the JID and secret, the stanza limit,
    /// the keepalive and the backoff.
    pub machine: Settings,
    /// How long a write to the server may block. Default [`WRITE_TIMEOUT`].
    pub write_timeout: Duration,
    /// Where connection state changes are reported to systemd, if anywhere.
    pub notifier: Option<Arc<Notifier>>,
}

impl Link {
    /// A link with the default timings: a stanza limit of [`DEFAULT_MAX_STANZA_BYTES`]
    /// (256 KiB), a ping after 60 s of silence, the peer dead 30 s later, reconnecting
    /// after 1 s doubling to 60 s.
    pub fn new(host: String, port: u16, jid: String, secret: String) -> Link {
        Link {
            machine: Settings {
                peer: format!("{host}:{port}"),
                jid,
                secret,
                max_stanza_bytes: DEFAULT_MAX_STANZA_BYTES,
                idle: Duration::from_secs(60),
                dead: Duration::from_secs(30),
                min_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(60),
            },
            host,
            port,
            write_timeout: WRITE_TIMEOUT,
            notifier: None,
        }
    }
}

/// Connects and serves until `stop` is set, reconnecting after any loss. Blocks on
/// `core` and `writer` when they are full (see ARCHITECTURE.md: neither waits for this
/// thread, so that ends).
pub fn run(
    link: &Link,
    core: &SyncSender<Event>,
    writer: &SyncSender<WriteMsg>,
    stop: &AtomicBool,
) {
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    let mut machine = Machine::new(
        link.machine.clone(),
        u64::from_le_bytes(seed),
        Instant::now(),
    );
    let mut socket: Option<TcpStream> = None;
    let mut buf = vec![0u8; READ_BUFFER];
    let mut todo: VecDeque<Action> = machine.handle(Input::Tick, Instant::now()).into();
    loop {
        while let Some(action) = todo.pop_front() {
            if let Some(input) = perform(action, link, &mut socket, core, writer) {
                todo.extend(machine.handle(input, Instant::now()));
            }
        }
        if machine.stopped() {
            break;
        }
        if stop.load(Ordering::Relaxed) {
            todo.extend(machine.handle(Input::Stop, Instant::now()));
            continue;
        }
        let fd = socket.as_ref().map(AsRawFd::as_raw_fd);
        let timeout = machine
            .deadline()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()));
        let input = match system::wait(fd, timeout) {
            Ok(true) => match socket.as_mut().map(|s| s.read(&mut buf)) {
                Some(Ok(0)) => Input::Eof,
                Some(Ok(n)) => Input::Bytes(&buf[..n]),
                Some(Err(e))
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    Input::Tick
                }
                Some(Err(e)) => Input::Failed(e),
                None => Input::Tick,
            },
            Ok(false) => Input::Tick,
            Err(e) => {
                // poll(2) itself failed: nothing to wait on; do not spin.
                log::error!("waiting on the connection failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                Input::Tick
            }
        };
        todo.extend(machine.handle(input, Instant::now()));
    }
}

/// Carries out one action; returns what it led to, if the machine is to know.
fn perform(
    action: Action,
    link: &Link,
    socket: &mut Option<TcpStream>,
    core: &SyncSender<Event>,
    writer: &SyncSender<WriteMsg>,
) -> Option<Input<'static>> {
    match action {
        Action::Connect => match connect(link) {
            Ok(stream) => {
                *socket = Some(stream);
                Some(Input::Connected)
            }
            Err(e) => Some(Input::Failed(e)),
        },
        Action::Write(text) => {
            let stream = socket.as_mut()?;
            stream.write_all(text.as_bytes()).err().map(Input::Failed)
        }
        Action::Attach(gen) => match socket.as_ref()?.try_clone() {
            Ok(half) => writer
                .send(WriteMsg::Attach(gen, half))
                .err()
                .map(|_| Input::Stop),
            Err(e) => Some(Input::Failed(e)),
        },
        Action::Send(gen, text) => writer
            .send(WriteMsg::Send(gen, text))
            .err()
            .map(|_| Input::Stop),
        Action::Detach(gen) => writer
            .send(WriteMsg::Detach(gen))
            .err()
            .map(|_| Input::Stop),
        // The core is gone only when the daemon is going down.
        Action::Core(event) => {
            match &event {
                Event::Connected(_) => crate::metrics::global().connected(),
                Event::Disconnected(_) => crate::metrics::global().disconnected(),
                _ => {}
            }
            core.send(event).err().map(|_| Input::Stop)
        }
        Action::Close => {
            if let Some(stream) = socket.take() {
                let _ = stream.shutdown(Shutdown::Both);
            }
            None
        }
        Action::Status(text) => {
            if let Some(n) = &link.notifier {
                n.notify(&text);
            }
            None
        }
    }
}

/// Opens a TCP connection to the server, trying each of its addresses, with the
/// timeouts set: writes give up after `link.write_timeout`; reads only follow poll(2),
/// the read timeout is a guard.
fn connect(link: &Link) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in (link.host.as_str(), link.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_write_timeout(Some(link.write_timeout))?;
                stream.set_read_timeout(Some(Duration::from_secs(1)))?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(ErrorKind::NotFound, "no address")))
}
