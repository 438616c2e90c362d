//! What /proc says about a process: CPU time (in total and per thread name), resident
//! memory, thread count.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;

/// Clock ticks per second of the `utime`/`stime` fields (`getconf CLK_TCK`, read once;
/// 100 on Linux when it cannot be asked).
pub fn ticks_per_second() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// `(thread or process name, utime + stime in ticks)` from the text of a `stat` file.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    // The name is in parentheses and may itself hold spaces and parentheses.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    let mut fields = text.get(close + 2..)?.split_ascii_whitespace();
    // After the name: state (field 3) … utime (field 14), stime (field 15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// CPU seconds (user + system) used so far by the process or thread whose `stat` file
/// is at `path` (`/proc/PID/stat`, `/proc/thread-self/stat`); `None` once it is gone.
pub fn cpu_seconds(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let (_, ticks) = parse_stat(&text)?;
    Some(ticks as f64 / ticks_per_second())
}

/// CPU seconds of a process, all its threads (living and exited) included.
pub fn process_cpu(pid: u32) -> Option<f64> {
    cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// A thread name with its trailing number replaced by `*` (`push-12` → `push-*`), so
/// that a pool shows as one group.
fn group_name(name: &str) -> String {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if trimmed.len() < name.len() && trimmed.ends_with(['-', '_']) {
        format!("{trimmed}*")
    } else {
        name.to_owned()
    }
}

/// CPU seconds per thread group of a living process (threads that have exited are
/// missing: compare two snapshots only for long-lived threads).
pub fn thread_cpu(pid: u32) -> BTreeMap<String, f64> {
    let mut groups = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, ticks)) = parse_stat(&text) {
            *groups.entry(group_name(&name)).or_insert(0.0) += ticks as f64 / ticks_per_second();
        }
    }
    groups
}

/// CPU seconds all processors spent busy (not idle, not waiting for I/O) since boot,
/// from the first line of `/proc/stat`.
pub fn machine_busy() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_ascii_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
    Some((total - idle) as f64 / ticks_per_second())
}

/// Processes and threads created on the whole machine since boot (the `processes` line
/// of `/proc/stat`).
pub fn machine_forks() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("processes ")?.trim().parse().ok())
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The ids of the living threads of a process.
pub fn thread_ids(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| t.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Memory and threads from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// Resident set size now (`VmRSS`), KiB.
    pub rss_kb: u64,
    /// Peak resident set size since the process started (`VmHWM`), KiB.
    pub hwm_kb: u64,
    /// Number of threads.
    pub threads: u64,
}

/// Reads `/proc/PID/status`; `None` once the process is gone.
pub fn status(pid: u32) -> Option<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut s = Status::default();
    for line in text.lines() {
        let value = |prefix: &str| -> Option<u64> {
            line.strip_prefix(prefix)?
                .split_ascii_whitespace()
                .next()?
                .parse()
                .ok()
        };
        if let Some(v) = value("VmRSS:") {
            s.rss_kb = v;
        } else if let Some(v) = value("VmHWM:") {
            s.hwm_kb = v;
        } else if let Some(v) = value("Threads:") {
            s.threads = v;
        }
    }
    Some(s)
}
