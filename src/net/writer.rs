//! The writer thread: every write to the server after the handshake.
//!
//! It owns the current connection's writing half (a clone of the socket) and writes what
//! is addressed to it, coalescing what is queued into one write. A write that has not
//! gone through within its timeout ([`WRITE_TIMEOUT`], or less with a short
//! `keepalive`: a server that stopped reading) drops the connection: the socket is shut down, which the connection thread reads as the end of
//! the connection and reconnects, and everything queued for it is discarded. So the
//! writer never blocks longer than that, and neither does the core on its bounded
//! channel.

use std::io::{self, ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::app::Gen;
use crate::xmpp::handshake;

/// The longest one flush to the server may take, however it is cut into writes: well
/// under systemd's watchdog (60 s in `p2.service`, fed every 30 s by the core, which may
/// be waiting for the writer's channel meanwhile). A third of `keepalive` when that is
/// shorter ([`write_timeout`]).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// The write timeout for a `keepalive`: a server that takes no bytes for a third of the
/// silence after which p2 would ping it is as dead as a silent one; never more than
/// [`WRITE_TIMEOUT`], never less than a second.
pub fn write_timeout(keepalive: Duration) -> Duration {
    (keepalive / 3).clamp(Duration::from_secs(1), WRITE_TIMEOUT)
}

/// Bytes gathered before a flush even while more messages are queued.
const FLUSH_AT: usize = 256 * 1024;

/// Room kept in the buffer between flushes.
const KEEP: usize = 64 * 1024;

/// What the writer thread is told.
#[derive(Debug)]
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

/// The connection being written to.
struct Conn {
    gen: Gen,
    stream: TcpStream,
    buf: Vec<u8>,
    /// The longest one flush may take.
    timeout: Duration,
}

impl Conn {
    /// Writes out the buffer within `timeout` in all (the socket's own write timeout,
    /// set when it was connected, bounds each write; a partial write is followed by one
    /// bounded by what is left).
    fn flush(&mut self) -> io::Result<()> {
        let started = Instant::now();
        let mut written = 0;
        let mut shortened = false;
        let result = loop {
            if written == self.buf.len() {
                break Ok(());
            }
            if written > 0 {
                let left = self.timeout.saturating_sub(started.elapsed());
                if left.is_zero() {
                    break Err(ErrorKind::TimedOut.into());
                }
                if let Err(e) = self.stream.set_write_timeout(Some(left)) {
                    break Err(e);
                }
                shortened = true;
            }
            match self.stream.write(&self.buf[written..]) {
                Ok(0) => break Err(ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if shortened && result.is_ok() {
            let _ = self.stream.set_write_timeout(Some(self.timeout));
        }
        self.buf.clear();
        self.buf.shrink_to(KEEP);
        result
    }
}

/// The writer thread's loop: writes what is addressed to the current connection,
/// coalescing what is queued into one flush taking at most `timeout`, until every
/// sender is gone.
pub fn writer_loop(rx: Receiver<WriteMsg>, timeout: Duration) {
    let mut current: Option<Conn> = None;
    while let Ok(first) = rx.recv() {
        let mut msg = Some(first);
        while let Some(m) = msg {
            match m {
                WriteMsg::Attach(gen, stream) => {
                    current = Some(Conn {
                        gen,
                        stream,
                        buf: Vec::with_capacity(KEEP),
                        timeout,
                    })
                }
                WriteMsg::Detach(gen) => {
                    if current.as_ref().is_some_and(|c| c.gen == gen) {
                        current = None;
                    }
                }
                WriteMsg::Close => {
                    if let Some(mut c) = current.take() {
                        c.buf.extend_from_slice(handshake::STREAM_CLOSE.as_bytes());
                        let _ = c.flush();
                        let _ = c.stream.shutdown(Shutdown::Both);
                    }
                }
                WriteMsg::Send(gen, text) => queue(&mut current, gen, &text),
                WriteMsg::Batch(texts) => {
                    for (gen, text) in texts {
                        queue(&mut current, gen, &text);
                    }
                }
            }
            if current.as_ref().is_some_and(|c| c.buf.len() >= FLUSH_AT) {
                flush(&mut current);
            }
            msg = rx.try_recv().ok();
        }
        flush(&mut current);
    }
}

/// Adds `text` to the buffer if `gen` is the current connection.
fn queue(current: &mut Option<Conn>, gen: Gen, text: &str) {
    if let Some(c) = current.as_mut() {
        if c.gen == gen {
            c.buf.extend_from_slice(text.as_bytes());
        }
    }
}

/// Writes out what is buffered; a failed or timed-out write drops the connection.
fn flush(current: &mut Option<Conn>) {
    let Some(c) = current.as_mut() else {
        return;
    };
    if c.buf.is_empty() {
        return;
    }
    if let Err(e) = c.flush() {
        log::warn!("write to the server failed: {e}; dropping the connection");
        let _ = c.stream.shutdown(Shutdown::Both);
        *current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_timeout_is_a_third_of_keepalive_from_1_to_20_s() {
        let s = Duration::from_secs;
        assert_eq!(write_timeout(s(60)), s(20));
        assert_eq!(write_timeout(s(600)), s(20));
        assert_eq!(write_timeout(s(30)), s(10));
        assert_eq!(write_timeout(s(3)), s(1));
        assert_eq!(write_timeout(s(1)), s(1));
    }
}
