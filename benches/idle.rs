//! How often an idle p2 wakes up: the daemon connected to a server that says nothing.
//!
//! ```text
//! cargo bench --bench idle                     # 10 s window, the default keepalive (60 s)
//! cargo bench --bench idle -- 30               # a 30 s window
//! ```
//!
//! The daemon (the binary cargo built with this bench) runs in a scratch directory under
//! `target/tmp/` against a stand-in for the XMPP server on 127.0.0.1 that completes the
//! XEP-0114 handshake and then stays silent (it answers nothing and sends nothing). After
//! two seconds of settling, the bench sums `voluntary_ctxt_switches` of every thread in
//! /proc/PID/task/*/status at the start and at the end of the window: each voluntary
//! switch is one time a thread went to sleep, so the difference over the window is how
//! many times the daemon's threads woke up. It prints the total per second and the
//! figure of each thread.
//!
//! Nothing is asserted: the figures are printed. Exit status 2 when the run could not
//! be set up.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const JID: &str = "push.localhost";
const SECRET: &str = "idle-secret";

/// Voluntary context switches per thread (`name/tid`), from /proc/PID/task/*/status.
fn switches(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
        };
        let name = field("Name:").unwrap_or_default();
        let count = field("voluntary_ctxt_switches:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        out.insert(
            format!("{name}/{}", task.file_name().to_string_lossy()),
            count,
        );
    }
    out
}

/// Reads from `stream` until `done` holds for what was read, within 10 s.
fn read_until(stream: &mut TcpStream, done: impl Fn(&str) -> bool) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&raw).into_owned();
        if done(&text) {
            return Ok(text);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("timed out; got {text:?}"));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => return Err("the daemon closed the connection".into()),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fn run(window: Duration) -> Result<(), String> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("p2-bench-idle");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let config = format!(
        r#"{{"host":"127.0.0.1","port":{port},"jid":"{JID}","sharedSecret":"{SECRET}","database":"p2.sqlite"}}"#
    );
    std::fs::write(dir.join("config.json"), config).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("p2.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2"))
        .args(["-c", "config.json"])
        .current_dir(&dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start p2: {e}"))?;
    let pid = child.id();
    let result = (|| {
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(format!("the daemon did not connect: {e}")),
            }
        };
        stream.set_nonblocking(false).map_err(|e| e.to_string())?;
        read_until(&mut stream, |t| t.contains("'>") || t.contains("\">"))?;
        let id = "idle-1";
        stream
            .write_all(format!(
                "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
                 xmlns='jabber:component:accept' id='{id}' from='{JID}'>"
            ).as_bytes())
            .map_err(|e| e.to_string())?;
        read_until(&mut stream, |t| t.contains("</handshake>"))?;
        stream
            .write_all(b"<handshake/>")
            .map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_secs(2));
        let before = switches(pid);
        let started = Instant::now();
        std::thread::sleep(window);
        let after = switches(pid);
        let seconds = started.elapsed().as_secs_f64();
        let mut total = 0;
        let mut quiet = 0;
        println!(
            "voluntary context switches of p2's threads over {seconds:.1} s, connected and idle:"
        );
        for (thread, count) in &after {
            let woke = count.saturating_sub(before.get(thread).copied().unwrap_or(0));
            total += woke;
            if woke == 0 {
                quiet += 1;
                continue;
            }
            println!("  {thread:<16} {woke:>6}  ({:.2}/s)", woke as f64 / seconds);
        }
        println!("  {:<16} {:>6}  (threads that never woke)", "others", quiet);
        println!(
            "  {:<16} {total:>6}  ({:.2}/s)",
            "all threads",
            total as f64 / seconds
        );
        drop(stream);
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn main() -> ExitCode {
    let window = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse::<u64>().ok())
        .map_or(Duration::from_secs(10), Duration::from_secs);
    match run(window) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idle bench: {e}");
            ExitCode::from(2)
        }
    }
}
