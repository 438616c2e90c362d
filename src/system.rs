//! The daemon's contact with the system: stop signals and systemd notifications.
//!
//! Both use only std and two libc symbols: `signal(2)` to set a flag on SIGTERM and
//! SIGINT, and a Unix datagram socket to `$NOTIFY_SOCKET` (sd_notify(3)'s protocol,
//! readiness, status and watchdog), so no dependency is needed for either.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

extern "C" fn on_signal(_: i32) {
    // Only an atomic store: async-signal-safe.
    if let Some(stop) = STOP.get() {
        stop.store(true, Ordering::SeqCst);
    }
}

/// Sets `stop` when SIGTERM or SIGINT arrives. Call once, before starting threads.
pub fn stop_on_signals(stop: Arc<AtomicBool>) {
    if STOP.set(stop).is_err() {
        return;
    }
    // SAFETY: `on_signal` only performs an atomic store on a value initialised above,
    // which is async-signal-safe; `signal` is the libc function of that name.
    unsafe {
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
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

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("p2-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
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
