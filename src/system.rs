//! The daemon's contact with the system: stop signals, waiting on a socket, and systemd
//! notifications.
//!
//! All use only std and a few libc symbols: `signal(2)` to set a flag on SIGTERM and
//! SIGINT and wake the threads that wait, `poll(2)` to wait on a socket and that wake-up
//! at once, and a Unix datagram socket to `$NOTIFY_SOCKET` (sd_notify(3)'s protocol,
//! readiness, status and watchdog), so no dependency is needed for any of them.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The two ends of the stop wake-up: a byte written to the second makes the first
/// readable, for good (it is never read), so every [`wait`] from then on returns at once.
static WAKE: OnceLock<(UnixStream, UnixStream)> = OnceLock::new();

/// The writing end's descriptor, for the signal handler (-1 until [`WAKE`] is set).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

const POLLIN: i16 = 0x001;

#[cfg(target_os = "linux")]
const MSG_PEEK: i32 = 0x02;
#[cfg(target_os = "linux")]
const MSG_DONTWAIT: i32 = 0x40;

/// `struct pollfd` of poll(2).
#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

extern "C" {
    fn recv(fd: i32, buf: *mut u8, len: usize, flags: i32) -> isize;
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn poll(fds: *mut PollFd, nfds: std::ffi::c_ulong, timeout: i32) -> i32;
}

#[cfg(target_os = "linux")]
extern "C" {
    fn __errno_location() -> *mut i32;
}

extern "C" fn on_signal(_: i32) {
    // Only an atomic store and write(2): async-signal-safe. write(2) may set errno, which
    // the interrupted thread may be about to read: keep it.
    #[cfg(target_os = "linux")]
    // SAFETY: __errno_location returns the calling thread's errno, always valid.
    let errno = unsafe { *__errno_location() };
    if let Some(stop) = STOP.get() {
        stop.store(true, Ordering::SeqCst);
    }
    wake_raw();
    #[cfg(target_os = "linux")]
    // SAFETY: as above.
    unsafe {
        *__errno_location() = errno
    };
}

/// Writes one byte to the wake-up, if there is one. Async-signal-safe.
fn wake_raw() {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: `fd` is the non-blocking writing end kept open in WAKE for the life of
        // the process; the buffer is one valid byte. A full socket (a wake-up is already
        // pending) or any error is fine to ignore.
        unsafe {
            write(fd, b"s".as_ptr(), 1);
        }
    }
}

/// Whether the peer of a connected socket has sent something or closed it, without
/// waiting and without taking anything from it: one recv(2) with `MSG_PEEK` and
/// `MSG_DONTWAIT`. An error other than "nothing yet" counts as closed.
#[cfg(target_os = "linux")]
pub fn peer_spoke(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: `fd` is a socket the caller owns; the buffer is one valid byte.
    let n = unsafe { recv(fd, &mut byte, 1, MSG_PEEK | MSG_DONTWAIT) };
    if n >= 0 {
        return true;
    }
    let e = io::Error::last_os_error();
    !matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Makes the wake-up, once. Fails only when the system cannot make a socket pair.
fn wake_pair() -> io::Result<&'static (UnixStream, UnixStream)> {
    if let Some(pair) = WAKE.get() {
        return Ok(pair);
    }
    let (read, write) = UnixStream::pair()?;
    write.set_nonblocking(true)?;
    let fd = write.as_raw_fd();
    if WAKE.set((read, write)).is_ok() {
        WAKE_FD.store(fd, Ordering::SeqCst);
    }
    Ok(WAKE.get().expect("set just above"))
}

/// Sets `stop` when SIGTERM or SIGINT arrives, and wakes every thread waiting in
/// [`wait`]. Call once, before starting threads.
pub fn stop_on_signals(stop: Arc<AtomicBool>) {
    if let Err(e) = wake_pair() {
        log::warn!("no stop wake-up ({e}): a stop may wait for the next timer");
    }
    if STOP.set(stop).is_err() {
        return;
    }
    // SAFETY: `on_signal` only performs an atomic store, reads and restores errno and
    // calls write(2) on a descriptor set up above, all async-signal-safe; `signal` is the
    // libc function of that name.
    unsafe {
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
    }
}

/// Sets `stop` and wakes every thread waiting in [`wait`], as a stop signal does: for a
/// daemon run in-process.
pub fn request_stop(stop: &AtomicBool) {
    stop.store(true, Ordering::SeqCst);
    let _ = wake_pair();
    wake_raw();
}

/// Waits until `socket` (if any) is readable, `timeout` (if any) has passed, or a stop
/// was requested ([`stop_on_signals`], [`request_stop`]), whichever comes first; without
/// a timeout it may wait for ever. Returns whether the socket is readable (or closed, or
/// in error: a read will tell). A stop is not reported: check the flag.
pub fn wait(socket: Option<RawFd>, timeout: Option<Duration>) -> io::Result<bool> {
    let wake = wake_pair().ok().map(|(read, _)| read.as_raw_fd());
    let mut fds = [socket, wake].map(|fd| PollFd {
        fd: fd.unwrap_or(-1),
        events: POLLIN,
        revents: 0,
    });
    // Rounded up: waking a fraction of a millisecond early would only wait again.
    let millis = match timeout {
        None => -1,
        Some(t) => i32::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
    };
    // poll(2) skips entries whose descriptor is negative.
    // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
    let ready = unsafe { poll(fds.as_mut_ptr(), 2, millis) };
    match ready {
        -1 => {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => Ok(false),
                _ => Err(e),
            }
        }
        _ => Ok(socket.is_some() && fds[0].revents != 0),
    }
}

/// The systemd notification socket, when running under `Type=notify`.
pub struct Notifier {
    socket: UnixDatagram,
    addr: String,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`; `None` when not run by systemd.
    pub fn from_env() -> Option<Notifier> {
        let addr = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|a| !a.is_empty())?;
        let socket = UnixDatagram::unbound().ok()?;
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0)
            .map(Duration::from_micros);
        Some(Notifier {
            socket,
            addr,
            watchdog,
        })
    }

    /// Sends one notification (`READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`).
    pub fn notify(&self, state: &str) {
        let sent = if let Some(name) = self.addr.strip_prefix('@') {
            abstract_send(&self.socket, name.as_bytes(), state.as_bytes())
        } else {
            self.socket
                .send_to(state.as_bytes(), &self.addr)
                .map(|_| ())
        };
        if let Err(e) = sent {
            log::debug!("systemd notification failed: {e}");
        }
    }

    /// How often to send `WATCHDOG=1`: half the unit's `WatchdogSec`, if set.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }
}

#[cfg(target_os = "linux")]
fn abstract_send(socket: &UnixDatagram, name: &[u8], data: &[u8]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(data, &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn abstract_send(_: &UnixDatagram, _: &[u8], _: &[u8]) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets need Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    #[test]
    fn wait_returns_on_data_on_the_timeout_and_on_a_stop() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let fd = Some(server.as_raw_fd());
        // Nothing to read: the timeout.
        let started = Instant::now();
        assert!(!wait(fd, Some(Duration::from_millis(50))).unwrap());
        assert!(started.elapsed() >= Duration::from_millis(50));
        // Data.
        client.write_all(b"x").unwrap();
        assert!(wait(fd, Some(Duration::from_secs(10))).unwrap());
        // A stop wakes a wait that has neither data nor a timeout, from another thread,
        // and every wait after it.
        let stop = Arc::new(AtomicBool::new(false));
        let other = server.try_clone().unwrap();
        let mut buf = [0u8; 1];
        use std::io::Read;
        (&other).read_exact(&mut buf).unwrap();
        let flag = Arc::clone(&stop);
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            request_stop(&flag);
        });
        assert!(!wait(Some(other.as_raw_fd()), None).unwrap());
        assert!(stop.load(Ordering::SeqCst));
        waker.join().unwrap();
        assert!(!wait(None, None).unwrap());
    }

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = crate::store::tests::TempDir::new("notify");
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            addr: path.display().to_string(),
            watchdog: Some(Duration::from_secs(30)),
        };
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
    }

    #[test]
    fn notifications_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("p2-test-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            addr: format!("@{name}"),
            watchdog: None,
        };
        n.notify("STATUS=connected");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=connected");
    }
}
