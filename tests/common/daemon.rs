//! The real `p2` binary as a child process, with its config file, database and log in a
//! scratch directory; killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running daemon.
pub struct Daemon {
    child: Child,
    /// Its working directory (database, config, log).
    pub dir: PathBuf,
}

impl Daemon {
    /// Writes `config` to `dir/config.json` and starts `p2 -c config.json` in `dir`,
    /// with `RUST_LOG` at `level`, the log going to `dir/p2.log`.
    pub fn start(dir: &Path, config: &serde_json::Value, level: &str) -> Daemon {
        Daemon::start_with_env(dir, config, level, &[])
    }

    /// As [`Daemon::start`], with extra environment variables.
    pub fn start_with_env(
        dir: &Path,
        config: &serde_json::Value,
        level: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("p2.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_p2"))
            .arg("-c")
            .arg("config.json")
            .current_dir(dir)
            .env("RUST_LOG", level)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start p2");
        Daemon {
            child,
            dir: dir.to_owned(),
        }
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("p2.log")).unwrap_or_default()
    }

    /// Waits (bounded) until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits (bounded) for the daemon to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as systemd does on stop.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `p2 ARGS` in `dir` to completion (bounded by the command itself) and returns
/// its exit code, stdout and stderr.
pub fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_p2"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run p2");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
