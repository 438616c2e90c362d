//! The load benchmark of p2 (issue 4): the release daemon as a real process, a load
//! generator playing the user's XMPP server, and an FCM + OAuth stand-in, all on loopback.
//!
//! ```text
//! cargo bench --bench load                          # one run: FCM 0 ms, 100 in flight
//! cargo bench --bench load -- --scenario all        # the issue's scenarios, one by one
//! cargo bench --bench load -- --scenario long       # memory over 1,000,000 pushes
//! cargo bench --bench load -- --workers 256 --inflight 256 --fcm-ms 50 --pushes 50000
//! cargo bench --bench load -- --help
//! ```
//!
//! `cargo bench` builds the release daemon (`target/release/p2`) before running this.
//! One run:
//!
//! 1. (`--stored N`) N registrations are written into the database with the daemon's own
//!    store before it starts, so that lookups run against a big table. The file is built
//!    once and cached under `target/tmp/p2-bench-cache/`.
//! 2. The daemon starts in a scratch directory under `target/tmp/` with a config naming
//!    the generator's component port, the stand-in as FCM and token endpoint, `workers`
//!    and `fcm.deadline`; its log goes to `p2.log` there.
//! 3. The generator accepts the component and checks its XEP-0114 handshake, then
//!    registers `--registrations` devices through the `register-push-fcm` command
//!    (`--reg-inflight` at once), keeping each node and secret.
//! 4. It sends `--pushes` publishes (the Prosody one of PROTOCOL.md §5), spread uniformly
//!    over every registration in the table (the registered and the stored ones), keeping
//!    `--inflight` unanswered at once, and checks that each is answered `result`.
//! 5. It prints the figures: rates, reply latency, the daemon's CPU per push (from
//!    /proc/PID/stat, per thread too) and memory (/proc/PID/status), what the stand-in saw,
//!    and every wrong, missing, duplicate or unexpected reply.
//!
//! Reading the figures:
//!
//! - The generator is a closed loop: `--inflight` is a window, a new publish leaves as
//!   each reply comes in, so the offered load follows the daemon. With `--inflight` at
//!   most `--workers`, no publish waits for a worker; above it, the excess queues.
//! - Reply latency runs from the write of a publish to the read of its reply by the
//!   generator; rates run from the first request of a phase to its last reply.
//! - Daemon CPU is utime + stime of all its threads over the push phase (/proc counts
//!   10 ms ticks; the ± is that resolution per push), divided by the publishes answered.
//!   By thread: `p2` is the main thread (the component connection's reader), `core` the
//!   store and decisions, `writer` the socket writer, `push-*` the workers, and
//!   `(unattributed)` what the process's total holds beyond the threads' own figures:
//!   threads that ended during the phase, and each thread's figure rounded down to
//!   whole clock ticks (with many short-lived busy threads, a good part).
//! - Bench CPU is this process (generator and stand-in); other CPU is what the rest of
//!   the machine used meanwhile (from /proc/stat): on a busy machine the rates drop.
//! - Memory: `VmRSS` after the handshake (start), after the registrations (idle), the
//!   highest sampled every 50 ms during the pushes (peak), one second after the last
//!   reply (after), and the kernel's `VmHWM`.
//!
//! Exit status: 0 when every request got the expected reply, 1 when some did not,
//! 2 when a run could not finish (timeout, daemon gone, setup failure).

#[path = "load/fcm.rs"]
mod fcm;
#[path = "load/procfs.rs"]
mod procfs;
#[path = "load/xmpp.rs"]
mod xmpp;

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use argh::FromArgs;
use base64::Engine as _;
use serde_json::{json, Value};

use p2::store::{Registration, Store};
use xmpp::{Registered, Stop, Targets};

/// The committed test key (it protects nothing) signs the daemon's OAuth assertions.
const TEST_KEY_PEM: &str = include_str!("../tests/fixtures/test-key.pk8.pem");

/// Load benchmark of p2: the release daemon against a fake XMPP server and an FCM
/// stand-in on loopback. Options override the scenario's settings.
#[derive(FromArgs)]
struct Args {
    /// a named set of settings (see --list), or `all` for every short one in turn
    #[argh(option)]
    scenario: Option<String>,
    /// list the scenarios and exit
    #[argh(switch)]
    list: bool,
    /// daemon push worker threads, its `workers` setting (default 32, the daemon's own)
    #[argh(option)]
    workers: Option<usize>,
    /// publishes unanswered at once (default 100)
    #[argh(option)]
    inflight: Option<u64>,
    /// milliseconds the FCM stand-in waits before answering a send or a token request
    /// (default 0)
    #[argh(option)]
    fcm_ms: Option<u64>,
    /// devices registered through the ad-hoc command (default 1000)
    #[argh(option)]
    registrations: Option<u64>,
    /// registrations unanswered at once (default 100)
    #[argh(option)]
    reg_inflight: Option<u64>,
    /// publishes to send (default 20000)
    #[argh(option)]
    pushes: Option<u64>,
    /// registrations written into the database before the daemon starts (default 0);
    /// the file is built once and kept in target/tmp/p2-bench-cache (for 1,000,000:
    /// about 420 MB, a minute to build)
    #[argh(option)]
    stored: Option<u64>,
    /// the daemon's `fcm.deadline`, seconds (default 15, the daemon's own)
    #[argh(option)]
    deadline: Option<u64>,
    /// print memory every this many answered pushes (default: 100000 when pushes are
    /// at least 200000, else never)
    #[argh(option)]
    checkpoint: Option<u64>,
    /// seconds a run may take from the daemon's start, after which it reports what it
    /// has and fails (default 120, 900 for `long`)
    #[argh(option)]
    timeout: Option<u64>,
    /// the daemon binary (default: the target/release/p2 that cargo bench builds)
    #[argh(option)]
    daemon: Option<PathBuf>,
    /// `RUST_LOG` for the daemon (default: unset, so its config's level: info)
    #[argh(option)]
    log: Option<String>,
    /// keep the scratch directory (config, database, log) after the run
    #[argh(switch)]
    keep: bool,
    /// run the daemon under valgrind's callgrind, counting instructions only during the
    /// push phase, and print the instructions per push (valgrind must be installed;
    /// rates and latencies of such a run mean nothing)
    #[argh(switch)]
    profile: bool,
    /// run each chosen scenario this many times (default 1): on a shared machine the
    /// spread between runs says how far to trust one
    #[argh(option, default = "1")]
    repeat: u32,
    /// print one JSON object per run instead of text
    #[argh(switch)]
    json: bool,
    /// ignored: `cargo bench` passes it
    #[argh(switch)]
    #[allow(dead_code)]
    bench: bool,
}

/// A named set of settings from the issue.
struct Scenario {
    name: &'static str,
    about: &'static str,
    workers: Option<usize>,
    inflight: u64,
    fcm_ms: u64,
    pushes: u64,
    stored: u64,
    /// Part of `all`.
    short: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "fcm-0ms",
        about: "FCM answers at once: the daemon's own cost dominates (default workers)",
        workers: None,
        inflight: 100,
        fcm_ms: 0,
        pushes: 20_000,
        stored: 0,
        short: true,
    },
    Scenario {
        name: "fcm-50ms-w64",
        about: "FCM takes 50 ms, 64 workers, 64 in flight: capacity 1,280/s",
        workers: Some(64),
        inflight: 64,
        fcm_ms: 50,
        pushes: 20_000,
        stored: 0,
        short: true,
    },
    Scenario {
        name: "fcm-50ms-w256",
        about: "FCM takes 50 ms, 256 workers, 256 in flight: capacity 5,120/s",
        workers: Some(256),
        inflight: 256,
        fcm_ms: 50,
        pushes: 20_000,
        stored: 0,
        short: true,
    },
    Scenario {
        name: "fcm-50ms-w512",
        about: "FCM takes 50 ms, 512 workers, 512 in flight: capacity 10,240/s",
        workers: Some(512),
        inflight: 512,
        fcm_ms: 50,
        pushes: 40_000,
        stored: 0,
        short: true,
    },
    Scenario {
        name: "fcm-50ms-1000",
        about: "FCM takes 50 ms, 1,000 workers, 1,000 in flight: capacity 20,000/s",
        workers: Some(1000),
        inflight: 1000,
        fcm_ms: 50,
        pushes: 40_000,
        stored: 0,
        short: true,
    },
    Scenario {
        name: "fcm-0ms-1000",
        about: "FCM answers at once, 1,000 workers, 1,000 in flight",
        workers: Some(1000),
        inflight: 1000,
        fcm_ms: 0,
        pushes: 20_000,
        stored: 0,
        short: true,
    },
    Scenario {
        name: "fcm-50ms-default",
        about: "FCM takes 50 ms, default workers (100), 200 in flight: capacity 2,000/s",
        workers: None,
        inflight: 200,
        fcm_ms: 50,
        pushes: 20_000,
        stored: 0,
        short: true,
    },
    Scenario {
        name: "stored-1k",
        about: "FCM 0 ms, 100 in flight, 1,000 rows stored beforehand",
        workers: None,
        inflight: 100,
        fcm_ms: 0,
        pushes: 20_000,
        stored: 1_000,
        short: true,
    },
    Scenario {
        name: "stored-1m",
        about: "FCM 0 ms, 100 in flight, 1,000,000 rows stored beforehand",
        workers: None,
        inflight: 100,
        fcm_ms: 0,
        pushes: 20_000,
        stored: 1_000_000,
        short: true,
    },
    Scenario {
        name: "long",
        about: "FCM 0 ms, 100 in flight, 1,000,000 pushes, memory every 100,000",
        workers: None,
        inflight: 100,
        fcm_ms: 0,
        pushes: 1_000_000,
        stored: 0,
        short: false,
    },
];

/// The settings of one run.
#[derive(Debug, Clone)]
struct Settings {
    scenario: String,
    workers: usize,
    inflight: u64,
    fcm_ms: u64,
    registrations: u64,
    reg_inflight: u64,
    pushes: u64,
    stored: u64,
    deadline: u64,
    checkpoint: u64,
    timeout: u64,
    daemon: PathBuf,
    log: Option<String>,
    keep: bool,
    profile: bool,
}

impl Settings {
    fn new(args: &Args, scenario: Option<&Scenario>) -> Settings {
        let pushes = args.pushes.or(scenario.map(|s| s.pushes)).unwrap_or(20_000);
        let long = pushes >= 200_000;
        Settings {
            scenario: scenario.map_or("custom", |s| s.name).to_owned(),
            workers: args
                .workers
                .or(scenario.and_then(|s| s.workers))
                .unwrap_or(p2::config::DEFAULT_WORKERS),
            inflight: args
                .inflight
                .or(scenario.map(|s| s.inflight))
                .unwrap_or(100),
            fcm_ms: args.fcm_ms.or(scenario.map(|s| s.fcm_ms)).unwrap_or(0),
            registrations: args.registrations.unwrap_or(1000),
            reg_inflight: args.reg_inflight.unwrap_or(100),
            pushes,
            stored: args.stored.or(scenario.map(|s| s.stored)).unwrap_or(0),
            deadline: args
                .deadline
                .unwrap_or(p2::config::DEFAULT_FCM_DEADLINE.as_secs()),
            checkpoint: args.checkpoint.unwrap_or(if long { 100_000 } else { 0 }),
            timeout: args.timeout.unwrap_or(if long { 900 } else { 120 }),
            daemon: args
                .daemon
                .clone()
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_p2"))),
            log: args.log.clone(),
            keep: args.keep,
            profile: args.profile,
        }
    }
}

/// Memory, threads and CPU of the daemon at one moment of the push phase.
#[derive(Debug, Clone)]
struct Checkpoint {
    answered: u64,
    seconds: f64,
    rate: f64,
    cpu_us_per_push: f64,
    status: procfs::Status,
}

/// Everything one run measured.
#[derive(Debug, Default)]
struct Report {
    settings: Option<Settings>,
    /// Why the run stopped early.
    failure: Option<String>,
    timed_out: bool,
    preload_seconds: Option<f64>,
    startup_ms: Option<f64>,
    register: Option<xmpp::RegisterResult>,
    register_cpu_us: Option<f64>,
    push: Option<xmpp::PushResult>,
    /// Daemon CPU seconds over the push phase.
    push_cpu: Option<f64>,
    /// Daemon CPU seconds per thread group over the push phase.
    push_threads_cpu: BTreeMap<String, f64>,
    /// This process's CPU seconds (generator and stand-in) over the push phase.
    bench_cpu: Option<f64>,
    /// The generator thread's CPU seconds over the push phase.
    generator_cpu: Option<f64>,
    /// CPU seconds the whole machine was busy over the push phase.
    machine_cpu: Option<f64>,
    /// Processes and threads created on the machine over the push phase.
    machine_forks: Option<u64>,
    /// The 1-minute load average before the daemon started.
    load_before: Option<f64>,
    status_start: Option<procfs::Status>,
    status_idle: Option<procfs::Status>,
    /// Highest sampled `VmRSS` and thread count during the push phase.
    peak_rss_kb: u64,
    peak_threads: u64,
    /// Distinct daemon threads seen by the sampler during the push phase.
    threads_seen: u64,
    status_after: Option<procfs::Status>,
    checkpoints: Vec<Checkpoint>,
    /// Instructions the daemon executed during the push phase (`--profile`).
    push_instructions: Option<u64>,
    fcm: fcm::Counts,
    fcm_samples: Vec<String>,
    pings: u64,
}

impl Report {
    /// 0: every reply right; 1: some wrong or missing; 2: the run did not finish.
    fn exit_code(&self) -> u8 {
        if self.failure.is_some() || self.timed_out {
            return 2;
        }
        let errors = self.register.as_ref().map_or(0, |r| r.errors.total())
            + self.push.as_ref().map_or(0, |p| p.errors.total())
            + self.fcm.bad;
        u8::from(errors > 0)
    }
}

/// The daemon child process, stopped when dropped: SIGTERM as systemd would send (the
/// daemon closes its stream and exits), SIGKILL if it has not exited after 10 s.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err` with the exit status and the end of its log once it has exited.
    fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "the daemon exited ({status}); its log ends with:\n{}",
                self.log_tail(15)
            )),
            Err(e) => Err(format!("cannot watch the daemon: {e}")),
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples the daemon's memory and threads every 50 ms, keeping the highest values and
/// the set of thread ids seen (a lower bound of the threads that existed).
struct Sampler {
    stop: Arc<AtomicBool>,
    peak_rss: Arc<AtomicU64>,
    peak_threads: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<usize>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_rss = Arc::new(AtomicU64::new(0));
        let peak_threads = Arc::new(AtomicU64::new(0));
        let shared = (
            Arc::clone(&stop),
            Arc::clone(&peak_rss),
            Arc::clone(&peak_threads),
        );
        let thread = thread::Builder::new()
            .name("sampler".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let (stop, rss, threads) = shared;
                let mut seen = std::collections::HashSet::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(s) = procfs::status(pid) {
                        rss.fetch_max(s.rss_kb, Ordering::Relaxed);
                        threads.fetch_max(s.threads, Ordering::Relaxed);
                    }
                    seen.extend(procfs::thread_ids(pid));
                    thread::sleep(Duration::from_millis(50));
                }
                seen.len()
            })
            .ok();
        Sampler {
            stop,
            peak_rss,
            peak_threads,
            thread,
        }
    }

    /// Stops and returns (peak RSS KiB, peak threads, distinct threads seen).
    fn finish(mut self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0);
        (
            self.peak_rss.load(Ordering::Relaxed),
            self.peak_threads.load(Ordering::Relaxed),
            seen as u64,
        )
    }
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut sha = sha1_smol::Sha1::new();
    for p in parts {
        sha.update(p);
    }
    sha.digest().bytes()
}

/// The node and secret of preloaded row `i` (derived, so the generator knows them).
fn stored_credentials(i: u64, node: &mut String, secret: &mut String) {
    let n = sha1(&[b"p2-bench node ", &i.to_le_bytes()]);
    let s = sha1(&[b"p2-bench secret ", &i.to_le_bytes()]);
    node.clear();
    secret.clear();
    base64::engine::general_purpose::URL_SAFE.encode_string(&n[..9], node);
    base64::engine::general_purpose::STANDARD.encode_string(&s[..18], secret);
}

/// Preloaded row `i`, shaped like a real registration of a `bench.example` account.
fn stored_row(i: u64) -> Registration {
    let device_id = format!("{:016x}", i.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let account = format!("stored{i}@{}", xmpp::DOMAIN);
    let device: String = sha1(&[account.as_bytes(), b"\0", device_id.as_bytes()])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (mut node, mut secret) = (String::new(), String::new());
    stored_credentials(i, &mut node, &mut secret);
    Registration {
        service: "fcm".into(),
        device,
        channel: String::new(),
        domain: xmpp::DOMAIN.into(),
        token: format!(
            "s{i:010}:APA91bHPRgkFLJu4VGMaJjmGvnYsTMgUVlVsh1r2Uk5vD9OeAkbVbNTpUvYgX3YmyE7tBKuB\
             fF8pZ9xjRWb7wcGmMsFUnvWiPTJyErp8qn54eE2QH1dPHQDRtx4qVdM_0sXNlFmo3LqeLXGrAyYqTnR"
        ),
        node,
        secret,
    }
}

/// Copies into `db` a database holding `n` preloaded registrations, building it once
/// (with the daemon's own store, in one transaction) into the cache directory.
fn preload(n: u64, db: &Path) -> Result<(), String> {
    let cache_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("p2-bench-cache");
    fs::create_dir_all(&cache_dir).map_err(|e| format!("{}: {e}", cache_dir.display()))?;
    let cached = cache_dir.join(format!(
        "stored-{n}-schema{}-v1.sqlite",
        p2::store::SCHEMA_VERSION
    ));
    if !cached.exists() {
        let partial = cached.with_extension("partial");
        let _ = fs::remove_file(&partial);
        eprintln!("writing {n} registrations into {} (once)", cached.display());
        let err = |e: p2::store::StoreError| format!("preload: {e}");
        let mut store = Store::open(&partial).map_err(err)?;
        store.begin().map_err(err)?;
        for i in 0..n {
            store.put(&stored_row(i)).map_err(err)?;
        }
        store.commit().map_err(err)?;
        // Closing the last connection folds the WAL into the file.
        drop(store);
        fs::rename(&partial, &cached).map_err(|e| format!("{}: {e}", cached.display()))?;
    }
    fs::copy(&cached, db).map_err(|e| format!("copy {}: {e}", cached.display()))?;
    Ok(())
}

/// The target of each publish: uniform over the registered devices and the stored rows.
struct Mix {
    registered: Vec<Registered>,
    stored: u64,
}

/// A 64-bit mix (splitmix64's finaliser): the target of publish `seq`.
fn mix64(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Targets for Mix {
    fn target(&self, seq: u64, node: &mut String, secret: &mut String) {
        let total = self.registered.len() as u64 + self.stored;
        let t = mix64(seq) % total;
        match self.registered.get(t as usize) {
            Some(r) => {
                node.clone_from(&r.node);
                secret.clone_from(&r.secret);
            }
            None => stored_credentials(t - self.registered.len() as u64, node, secret),
        }
    }
}

/// A fresh scratch directory under the cargo target directory.
fn scratch_dir(name: &str) -> Result<PathBuf, String> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "p2-bench-{name}-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn cpu_self_thread() -> Option<f64> {
    procfs::cpu_seconds("/proc/thread-self/stat")
}

fn cpu_self() -> Option<f64> {
    procfs::cpu_seconds("/proc/self/stat")
}

/// One run from start to report. Never panics on a daemon problem: it reports it.
fn run(settings: &Settings) -> Report {
    let mut report = Report {
        settings: Some(settings.clone()),
        ..Default::default()
    };
    if let Err(e) = run_into(settings, &mut report) {
        match e {
            Stop::Timeout => report.timed_out = true,
            Stop::Broken(why) => report.failure = Some(why),
        }
    }
    report
}

fn run_into(s: &Settings, report: &mut Report) -> Result<(), Stop> {
    if !s.daemon.exists() {
        return Err(Stop::Broken(format!(
            "no daemon at {}: run `cargo build --release` or pass --daemon",
            s.daemon.display()
        )));
    }
    let dir = scratch_dir(&s.scenario).map_err(Stop::Broken)?;
    let result = run_in(s, &dir, report);
    if s.keep {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(s: &Settings, dir: &Path, report: &mut Report) -> Result<(), Stop> {
    let broken = |what: &'static str| move |e: std::io::Error| Stop::Broken(format!("{what}: {e}"));
    if s.stored > 0 {
        let t = Instant::now();
        preload(s.stored, &dir.join("p2.sqlite")).map_err(Stop::Broken)?;
        report.preload_seconds = Some(t.elapsed().as_secs_f64());
    }
    let stand_in =
        fcm::StandIn::start(Duration::from_millis(s.fcm_ms)).map_err(broken("fcm stand-in"))?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(broken("bind the component port"))?;
    let port = listener
        .local_addr()
        .map_err(broken("component port"))?
        .port();

    let account = dir.join("service-account.json");
    let account_json = json!({
        "type": "service_account",
        "project_id": fcm::PROJECT_ID,
        "private_key_id": "0b1e5c0d2a4f6e8d0c2b4a6f8e0d2c4b6a8f0e2d",
        "private_key": TEST_KEY_PEM,
        "client_email": "p2-bench@p2-bench.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "token_uri": format!("{}/token", stand_in.url()),
    });
    fs::write(&account, account_json.to_string()).map_err(broken("write the service account"))?;
    let config = json!({
        "host": "127.0.0.1",
        "port": port,
        "jid": xmpp::JID,
        "sharedSecret": xmpp::SECRET,
        "database": "p2.sqlite",
        "workers": s.workers,
        // Every publish must reach the stand-in (no coalescing of repeated pushes to a
        // node), and all registrations come from one domain (no hourly budget, no cap).
        "limits": {
            "coalesceMillis": 0,
            "newRegistrationsPerDomainPerHour": 100_000_000,
            "registrationsPerDomain": 0,
        },
        "fcm": {
            "serviceAccountFile": account,
            "baseUrl": stand_in.url(),
            "deadline": s.deadline,
        }
    });
    fs::write(dir.join("config.json"), config.to_string()).map_err(broken("write the config"))?;

    let log_path = dir.join("p2.log");
    let log = fs::File::create(&log_path).map_err(broken("create the daemon log"))?;
    // The daemon runs in the scratch directory: a relative path must not be read there.
    let daemon = fs::canonicalize(&s.daemon).map_err(broken("find the daemon"))?;
    let mut command = match s.profile {
        false => Command::new(&daemon),
        true => {
            let mut valgrind = Command::new("valgrind");
            valgrind
                .arg("--tool=callgrind")
                .arg("--instr-atstart=no")
                .arg(format!("--callgrind-out-file={CALLGRIND_OUT}"))
                .arg(daemon);
            valgrind
        }
    };
    command
        .arg("-c")
        .arg("config.json")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(broken("daemon log"))?)
        .stderr(log);
    match &s.log {
        Some(level) => command.env("RUST_LOG", level),
        None => command.env_remove("RUST_LOG"),
    };
    report.load_before = procfs::load_average();
    let started = Instant::now();
    let child = command.spawn().map_err(broken("start the daemon"))?;
    let mut daemon = Daemon {
        child,
        log: log_path,
    };
    let pid = daemon.pid();
    let deadline = started + Duration::from_secs(s.timeout);
    let mut alive = || daemon.alive();

    // Connection and handshake.
    let mut conn = xmpp::accept(&listener, deadline, &mut alive)?;
    conn.handshake(deadline, &mut alive)?;
    report.startup_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    thread::sleep(Duration::from_millis(200));
    report.status_start = procfs::status(pid);

    // Registrations.
    let cpu0 = procfs::process_cpu(pid);
    let (registered, reg) = xmpp::register(
        &mut conn,
        s.registrations,
        s.reg_inflight,
        deadline,
        &mut alive,
    );
    let cpu1 = procfs::process_cpu(pid);
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        if reg.ok > 0 {
            report.register_cpu_us = Some((b - a) * 1e6 / reg.ok as f64);
        }
    }
    let stopped = reg.stopped.clone();
    let registered: Vec<Registered> = registered.into_iter().flatten().collect();
    report.register = Some(reg);
    if let Some(stop) = stopped {
        return Err(stop);
    }
    if registered.is_empty() && s.stored == 0 {
        return Err(Stop::Broken(
            "no registration succeeded: nothing to push to".into(),
        ));
    }

    // Idle.
    thread::sleep(Duration::from_millis(500));
    report.status_idle = procfs::status(pid);

    // Pushes.
    let targets = Mix {
        registered,
        stored: s.stored,
    };
    let sampler = Sampler::start(pid);
    let threads0 = procfs::thread_cpu(pid);
    let cpu0 = procfs::process_cpu(pid);
    let (bench0, gen0) = (cpu_self(), cpu_self_thread());
    let machine0 = procfs::machine_busy();
    let forks0 = procfs::machine_forks();
    if s.profile {
        callgrind_control(pid, "--instr=on").map_err(Stop::Broken)?;
    }
    let push_started = Instant::now();
    let mut checkpoints = Vec::new();
    let mut last = (0u64, push_started, cpu0.unwrap_or(0.0));
    let mut on_checkpoint = |answered: u64| {
        let now = Instant::now();
        let cpu = procfs::process_cpu(pid).unwrap_or(0.0);
        let Some(status) = procfs::status(pid) else {
            return;
        };
        let pushes = (answered - last.0).max(1) as f64;
        let c = Checkpoint {
            answered,
            seconds: now.duration_since(push_started).as_secs_f64(),
            rate: pushes / now.duration_since(last.1).as_secs_f64().max(1e-9),
            cpu_us_per_push: (cpu - last.2) * 1e6 / pushes,
            status,
        };
        eprintln!(
            "  {:>9} pushes  {:>7.1} s  {:>7.0}/s  {:>5.1} µs/push  RSS {:>6.1} MB  HWM {:>6.1} MB  {} threads",
            c.answered,
            c.seconds,
            c.rate,
            c.cpu_us_per_push,
            mb(c.status.rss_kb),
            mb(c.status.hwm_kb),
            c.status.threads
        );
        checkpoints.push(c);
        last = (answered, now, cpu);
    };
    let grace = Duration::from_secs(s.deadline + 5);
    let push = xmpp::push(
        &mut conn,
        &targets,
        &xmpp::Load {
            pushes: s.pushes,
            window: s.inflight,
            grace,
            deadline,
        },
        &mut alive,
        xmpp::Checkpoints {
            every: s.checkpoint,
            call: &mut on_checkpoint,
        },
    );
    if s.profile {
        // The costs since instrumentation began, written now; nothing is counted after.
        callgrind_control(pid, "--dump").map_err(Stop::Broken)?;
        callgrind_control(pid, "--instr=off").map_err(Stop::Broken)?;
        report.push_instructions = Some(callgrind_total(dir).map_err(Stop::Broken)?);
    }
    let cpu1 = procfs::process_cpu(pid);
    let threads1 = procfs::thread_cpu(pid);
    let (bench1, gen1) = (cpu_self(), cpu_self_thread());
    let machine1 = procfs::machine_busy();
    let forks1 = procfs::machine_forks();
    let (peak_rss, peak_threads, threads_seen) = sampler.finish();
    report.threads_seen = threads_seen;
    report.checkpoints = checkpoints;
    report.push_cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
    report.bench_cpu = bench0.zip(bench1).map(|(a, b)| b - a);
    report.generator_cpu = gen0.zip(gen1).map(|(a, b)| b - a);
    report.machine_cpu = machine0.zip(machine1).map(|(a, b)| b - a);
    report.machine_forks = forks0.zip(forks1).map(|(a, b)| b - a);
    report.push_threads_cpu = threads1
        .iter()
        .map(|(k, v)| (k.clone(), v - threads0.get(k).copied().unwrap_or(0.0)))
        .collect();
    // Threads that ended during the phase are in the process's total but in no
    // snapshot, and each thread's figure is rounded down to whole ticks: show the
    // difference as one more group.
    if let Some(total) = report.push_cpu {
        let named: f64 = report.push_threads_cpu.values().sum();
        if total - named > 0.005 {
            report
                .push_threads_cpu
                .insert("(unattributed)".into(), total - named);
        }
    }
    report.peak_rss_kb = peak_rss;
    report.peak_threads = peak_threads;
    let stopped = push.stopped.clone();
    report.push = Some(push);
    report.pings = conn.pings;

    // After.
    if stopped.is_none() {
        thread::sleep(Duration::from_secs(1));
    }
    report.status_after = procfs::status(pid);
    report.fcm = stand_in.counts();
    report.fcm_samples = stand_in
        .samples
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    drop(daemon);
    match stopped {
        Some(stop) => Err(stop),
        None => Ok(()),
    }
}

/// Where callgrind writes its counts (`--profile`), in the run's directory.
const CALLGRIND_OUT: &str = "callgrind.out";

/// Runs `callgrind_control ARG PID`, which waits for the daemon under callgrind to act.
fn callgrind_control(pid: u32, arg: &str) -> Result<(), String> {
    let status = Command::new("callgrind_control")
        .arg(arg)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("callgrind_control: {e} (is valgrind installed?)"))?;
    match status.success() {
        true => Ok(()),
        false => Err(format!("callgrind_control {arg} {pid}: {status}")),
    }
}

/// The instructions counted in every callgrind dump in `dir`: the `summary:` (or
/// `totals:`) line of each file whose name starts with [`CALLGRIND_OUT`].
fn callgrind_total(dir: &Path) -> Result<u64, String> {
    let mut total = 0;
    let mut files = 0;
    for entry in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(CALLGRIND_OUT)
        {
            continue;
        }
        let text = fs::read_to_string(entry.path()).map_err(|e| e.to_string())?;
        let line = text.lines().find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        });
        if let Some(n) = line.and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok()) {
            total += n;
            files += 1;
        }
    }
    match files {
        0 => Err(format!("no callgrind counts in {}", dir.display())),
        _ => Ok(total),
    }
}

/// The resolution of a CPU time per item over `n` items: /proc counts whole clock ticks.
fn tick_us(n: u64) -> f64 {
    1e6 / procfs::ticks_per_second() / n.max(1) as f64
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// The per-push and per-second figures derived from a report.
struct Derived {
    push_rate: Option<f64>,
    reg_rate: Option<f64>,
    cpu_us_per_push: Option<f64>,
    daemon_cores: Option<f64>,
    bench_us_per_push: Option<f64>,
    bench_cores: Option<f64>,
    generator_us_per_push: Option<f64>,
    /// Cores used by other processes of the machine during the pushes.
    other_cores: Option<f64>,
    capacity: Option<f64>,
}

fn derive(r: &Report) -> Derived {
    let s = r.settings.as_ref().expect("a report has its settings");
    let push = r.push.as_ref();
    let secs = push.map(|p| p.elapsed.as_secs_f64()).filter(|t| *t > 0.0);
    let answered = push.map_or(0, |p| p.answered);
    let per_push = |cpu: Option<f64>| {
        cpu.filter(|_| answered > 0)
            .map(|c| c * 1e6 / answered as f64)
    };
    Derived {
        push_rate: secs.map(|t| answered as f64 / t),
        reg_rate: r
            .register
            .as_ref()
            .filter(|g| g.elapsed.as_secs_f64() > 0.0)
            .map(|g| g.ok as f64 / g.elapsed.as_secs_f64()),
        cpu_us_per_push: per_push(r.push_cpu),
        daemon_cores: r.push_cpu.zip(secs).map(|(c, t)| c / t),
        bench_us_per_push: per_push(r.bench_cpu),
        bench_cores: r.bench_cpu.zip(secs).map(|(c, t)| c / t),
        generator_us_per_push: per_push(r.generator_cpu),
        other_cores: match (r.machine_cpu, r.push_cpu, r.bench_cpu, secs) {
            (Some(m), Some(d), Some(b), Some(t)) => Some(((m - d - b) / t).max(0.0)),
            _ => None,
        },
        capacity: (s.fcm_ms > 0).then(|| s.workers as f64 * 1000.0 / s.fcm_ms as f64),
    }
}

/// Where the time seems to go, from the CPU figures.
fn hints(r: &Report, d: &Derived) -> Vec<String> {
    let mut hints = Vec::new();
    let cores = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if let Some(other) = d.other_cores.filter(|c| *c > 0.1) {
        hints.push(format!(
            "other processes kept {other:.2} cores busy during the pushes: \
             the figures are disturbed, run again on a quiet machine"
        ));
    }
    let secs = r
        .push
        .as_ref()
        .map_or(0.0, |p| p.elapsed.as_secs_f64())
        .max(1e-9);
    if let (Some(dc), Some(bc)) = (d.daemon_cores, d.bench_cores) {
        let oc = d.other_cores.unwrap_or(0.0);
        if dc + bc + oc > 0.9 * cores && dc + bc > 0.6 * cores {
            hints.push(format!(
                "the machine's {cores:.0} cores are busy ({dc:.2} daemon + {bc:.2} bench + \
                 {oc:.2} others): throughput is CPU-bound; the daemon's CPU per push is \
                 what tuning can lower"
            ));
        }
    }
    for (name, cpu) in &r.push_threads_cpu {
        let busy = cpu / secs;
        if !name.ends_with('*') && !name.starts_with('(') && busy > 0.85 {
            hints.push(format!(
                "daemon thread {name:?} was busy {busy:.2} of a core: a single-thread bound"
            ));
        }
    }
    if let (Some(forks), Some(p)) = (r.machine_forks, &r.push) {
        let per_push = forks as f64 / p.answered.max(1) as f64;
        if per_push > 0.2 {
            hints.push(format!(
                "{per_push:.2} threads or processes were created per push on the machine: \
                 if the daemon creates them, it spawns threads on the push path"
            ));
        }
    }
    if let (Some(cap), Some(rate)) = (d.capacity, d.push_rate) {
        let s = r.settings.as_ref().expect("settings");
        if s.inflight >= s.workers as u64 && rate < 0.9 * cap {
            hints.push(format!(
                "{rate:.0}/s is {:.0}% of workers ÷ FCM latency ({cap:.0}/s)",
                rate * 100.0 / cap
            ));
        }
    }
    hints
}

fn opt(x: Option<f64>, digits: i32) -> Value {
    x.map_or(Value::Null, |v| json!(round(v, digits)))
}

fn status_json(s: Option<procfs::Status>) -> Value {
    s.map_or(
        Value::Null,
        |s| json!({"rss_kb": s.rss_kb, "hwm_kb": s.hwm_kb, "threads": s.threads}),
    )
}

fn errors_json(e: &xmpp::Errors) -> Value {
    json!({
        "wrong": e.wrong_total(),
        "wrong_by_kind": e.wrong,
        "missing": e.missing,
        "duplicate": e.duplicate,
        "unexpected": e.unexpected,
        "samples": e.samples,
    })
}

fn to_json(r: &Report) -> Value {
    let s = r.settings.as_ref().expect("a report has its settings");
    let d = derive(r);
    let push = r.push.as_ref();
    let reg = r.register.as_ref();
    json!({
        "scenario": s.scenario,
        "settings": {
            "workers": s.workers,
            "inflight": s.inflight,
            "fcm_latency_ms": s.fcm_ms,
            "registrations": s.registrations,
            "registration_inflight": s.reg_inflight,
            "pushes": s.pushes,
            "stored": s.stored,
            "fcm_deadline_s": s.deadline,
            "timeout_s": s.timeout,
            "daemon": s.daemon.display().to_string(),
            "rust_log": s.log,
            "profile": s.profile,
            "cores": thread::available_parallelism().map_or(1, |n| n.get()),
        },
        "ok": r.exit_code() == 0,
        "failure": r.failure,
        "timed_out": r.timed_out,
        "preload_s": opt(r.preload_seconds, 2),
        "startup_ms": opt(r.startup_ms, 1),
        "registrations": reg.map(|g| json!({
            "ok": g.ok,
            "seconds": round(g.elapsed.as_secs_f64(), 3),
            "per_second": opt(d.reg_rate, 0),
            "daemon_cpu_us_per_registration": opt(r.register_cpu_us, 1),
            "errors": errors_json(&g.errors),
        })),
        "pushes": push.map(|p| json!({
            "sent": p.sent,
            "answered": p.answered,
            "ok": p.ok,
            "seconds": round(p.elapsed.as_secs_f64(), 3),
            "per_second": opt(d.push_rate, 0),
            "capacity_per_second": opt(d.capacity, 0),
            "latency_ms": {
                "p50": opt(p.percentile_ms(50.0), 2),
                "p99": opt(p.percentile_ms(99.0), 2),
                "max": opt(p.percentile_ms(100.0), 2),
            },
            "errors": errors_json(&p.errors),
        })),
        "instructions_per_push": r.push_instructions.zip(push)
            .filter(|(_, p)| p.answered > 0)
            .map(|(i, p)| i / p.answered),
        "daemon_cpu": {
            "us_per_push": opt(d.cpu_us_per_push, 1),
            "cores": opt(d.daemon_cores, 2),
            "seconds_by_thread": r.push_threads_cpu.iter()
                .map(|(k, v)| (k.clone(), json!(round(*v, 3))))
                .collect::<serde_json::Map<_, _>>(),
        },
        "bench_cpu": {
            "us_per_push": opt(d.bench_us_per_push, 1),
            "cores": opt(d.bench_cores, 2),
            "generator_us_per_push": opt(d.generator_us_per_push, 1),
        },
        "other_processes_cores": opt(d.other_cores, 2),
        "load_average_before": r.load_before,
        "memory": {
            "start": status_json(r.status_start),
            "idle": status_json(r.status_idle),
            "peak_rss_kb": r.peak_rss_kb,
            "peak_threads": r.peak_threads,
            "threads_seen_during_pushes": r.threads_seen,
            "machine_tasks_created_during_pushes": r.machine_forks,
            "after": status_json(r.status_after),
        },
        "checkpoints": r.checkpoints.iter().map(|c| json!({
            "answered": c.answered,
            "seconds": round(c.seconds, 2),
            "per_second": round(c.rate, 0),
            "cpu_us_per_push": round(c.cpu_us_per_push, 1),
            "rss_kb": c.status.rss_kb,
            "hwm_kb": c.status.hwm_kb,
            "threads": c.status.threads,
        })).collect::<Vec<_>>(),
        "fcm": {
            "connections": r.fcm.connections,
            "max_open_connections": r.fcm.max_open,
            "sends": r.fcm.sends,
            "token_requests": r.fcm.tokens,
            "bad_requests": r.fcm.bad,
            "bad_samples": r.fcm_samples,
        },
        "daemon_pings": r.pings,
        "hints": hints(r, &d),
    })
}

fn print_errors(what: &str, e: &xmpp::Errors) {
    println!(
        "  {what:<10} {} wrong, {} missing, {} duplicate, {} unexpected",
        e.wrong_total(),
        e.missing,
        e.duplicate,
        e.unexpected
    );
    for (kind, n) in &e.wrong {
        println!("  {:<10} {n} × {kind}", "");
    }
    for sample in &e.samples {
        println!("  {:<10} e.g. {sample}", "");
    }
}

fn print_text(r: &Report) {
    let s = r.settings.as_ref().expect("a report has its settings");
    let d = derive(r);
    let f1 = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let f0 = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.0}"));
    let mem = |st: Option<procfs::Status>| {
        st.map_or("-".to_owned(), |st| format!("{:.1} MB", mb(st.rss_kb)))
    };
    println!("== p2 load: {}", s.scenario);
    println!(
        "settings      workers {}, in flight {}, FCM latency {} ms, fcm.deadline {} s, \
         registrations {} ({} in flight), pushes {}, stored rows {}",
        s.workers,
        s.inflight,
        s.fcm_ms,
        s.deadline,
        s.registrations,
        s.reg_inflight,
        s.pushes,
        s.stored
    );
    println!(
        "              daemon {}, RUST_LOG {}, {} cores",
        s.daemon.display(),
        s.log.as_deref().unwrap_or("unset"),
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    if let Some(load) = r.load_before {
        println!("              load average before the run {load:.2}");
    }
    if let Some(t) = r.preload_seconds {
        println!("preload       {} rows in place in {t:.1} s", s.stored);
    }
    println!("startup       {} ms to the handshake", f0(r.startup_ms));
    if let Some(g) = &r.register {
        println!(
            "registrations {} of {} in {:.2} s: {}/s, daemon CPU {} ± {:.0} µs each",
            g.ok,
            g.asked,
            g.elapsed.as_secs_f64(),
            f0(d.reg_rate),
            f0(r.register_cpu_us),
            tick_us(g.ok)
        );
    }
    if let Some(p) = &r.push {
        println!(
            "pushes        {} ok of {} sent ({} asked) in {:.2} s: {}/s{}",
            p.ok,
            p.sent,
            p.asked,
            p.elapsed.as_secs_f64(),
            f0(d.push_rate),
            d.capacity
                .map(|c| format!(" (workers ÷ FCM latency = {c:.0}/s)"))
                .unwrap_or_default()
        );
        println!(
            "latency       p50 {} ms, p99 {} ms, max {} ms",
            p.percentile_ms(50.0)
                .map_or("-".into(), |v| format!("{v:.2}")),
            p.percentile_ms(99.0)
                .map_or("-".into(), |v| format!("{v:.2}")),
            p.percentile_ms(100.0)
                .map_or("-".into(), |v| format!("{v:.2}")),
        );
        let secs = p.elapsed.as_secs_f64().max(1e-9);
        let threads: Vec<String> = r
            .push_threads_cpu
            .iter()
            .filter(|(_, v)| **v > 0.0)
            .map(|(k, v)| format!("{k} {:.2}", v / secs))
            .collect();
        println!(
            "daemon CPU    {} ± {:.1} µs/push, {} cores busy (by thread, cores: {})",
            f1(d.cpu_us_per_push),
            tick_us(p.answered),
            d.daemon_cores.map_or("-".into(), |c| format!("{c:.2}")),
            threads.join(", ")
        );
        if let Some(instructions) = r.push_instructions.filter(|_| p.answered > 0) {
            println!(
                "instructions  {} per push in the daemon, push phase only (callgrind: {} in all)",
                thousands(instructions / p.answered),
                thousands(instructions)
            );
        }
        println!(
            "bench CPU     {} µs/push, {} cores busy (generator thread {} µs/push; the rest is the FCM stand-in)",
            f1(d.bench_us_per_push),
            d.bench_cores.map_or("-".into(), |c| format!("{c:.2}")),
            f1(d.generator_us_per_push)
        );
        println!(
            "other CPU     {} cores busy with other processes of the machine",
            d.other_cores.map_or("-".into(), |c| format!("{c:.2}"))
        );
    }
    println!(
        "memory        RSS at start {}, idle {}, peak {} (sampled), after {}; VmHWM {}",
        mem(r.status_start),
        mem(r.status_idle),
        if r.peak_rss_kb > 0 {
            format!("{:.1} MB", mb(r.peak_rss_kb))
        } else {
            "-".into()
        },
        mem(r.status_after),
        r.status_after
            .map_or("-".into(), |st| format!("{:.1} MB", mb(st.hwm_kb)))
    );
    println!(
        "threads       idle {}, peak {}, {} distinct seen during the pushes (sampled every 50 ms)",
        r.status_idle
            .map_or("-".into(), |st| st.threads.to_string()),
        r.peak_threads,
        r.threads_seen
    );
    if let (Some(forks), Some(p)) = (r.machine_forks, &r.push) {
        println!(
            "              {forks} threads and processes created on the machine during the pushes \
             ({:.2} per push; /proc/stat counts every process, the stand-in's connections too)",
            forks as f64 / p.answered.max(1) as f64
        );
    }
    if !r.checkpoints.is_empty() {
        println!("checkpoints   answered  seconds   rate/s  µs/push  RSS MB  HWM MB  threads");
        for c in &r.checkpoints {
            println!(
                "              {:>8}  {:>7.1}  {:>7.0}  {:>7.1}  {:>6.1}  {:>6.1}  {:>7}",
                c.answered,
                c.seconds,
                c.rate,
                c.cpu_us_per_push,
                mb(c.status.rss_kb),
                mb(c.status.hwm_kb),
                c.status.threads
            );
        }
    }
    println!(
        "FCM stand-in  {} connections opened (at most {} open), {} sends, {} token requests, {} bad requests",
        r.fcm.connections, r.fcm.max_open, r.fcm.sends, r.fcm.tokens, r.fcm.bad
    );
    for sample in &r.fcm_samples {
        println!("              e.g. {sample}");
    }
    println!("errors");
    if let Some(g) = &r.register {
        print_errors("register", &g.errors);
    }
    if let Some(p) = &r.push {
        print_errors("push", &p.errors);
    }
    if r.pings > 0 {
        println!("  daemon pings answered: {}", r.pings);
    }
    for hint in hints(r, &d) {
        println!("hint          {hint}");
    }
    if r.timed_out {
        println!(
            "FAILED        the run passed its {} s timeout; the figures above are partial",
            s.timeout
        );
    }
    if let Some(why) = &r.failure {
        println!("FAILED        {why}");
    }
    println!();
}

fn print_summary(reports: &[Report]) {
    println!("== summary (others: cores used by other processes of the machine meanwhile)");
    println!(
        "{:<15} {:>7} {:>6} {:>4} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>6} {:>5} {:>6} {:>6}",
        "scenario",
        "workers",
        "flight",
        "ms",
        "stored",
        "push/s",
        "p50 ms",
        "p99 ms",
        "µs/push",
        "idle MB",
        "peak MB",
        "conns",
        "tok",
        "errors",
        "others"
    );
    for r in reports {
        let s = r.settings.as_ref().expect("settings");
        let d = derive(r);
        let p = r.push.as_ref();
        let errors = r.register.as_ref().map_or(0, |g| g.errors.total())
            + p.map_or(0, |p| p.errors.total())
            + r.fcm.bad;
        println!(
            "{:<15} {:>7} {:>6} {:>4} {:>9} {:>8.0} {:>8.2} {:>8.2} {:>8.1} {:>7.1} {:>7.1} {:>6} {:>5} {:>6} {:>6.2}{}",
            s.scenario,
            s.workers,
            s.inflight,
            s.fcm_ms,
            s.stored,
            d.push_rate.unwrap_or(0.0),
            p.and_then(|p| p.percentile_ms(50.0)).unwrap_or(0.0),
            p.and_then(|p| p.percentile_ms(99.0)).unwrap_or(0.0),
            d.cpu_us_per_push.unwrap_or(0.0),
            r.status_idle.map_or(0.0, |st| mb(st.rss_kb)),
            mb(r.peak_rss_kb),
            r.fcm.connections,
            r.fcm.tokens,
            errors,
            d.other_cores.unwrap_or(0.0),
            if r.exit_code() == 2 { "  FAILED" } else { "" }
        );
    }
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    if args.list {
        for s in SCENARIOS {
            println!("{:<15} {}", s.name, s.about);
        }
        println!(
            "{:<15} every scenario above but `long`, one after the other",
            "all"
        );
        return ExitCode::SUCCESS;
    }
    let chosen: Vec<Option<&Scenario>> = match args.scenario.as_deref() {
        None => vec![SCENARIOS.first()],
        Some("all") => SCENARIOS.iter().filter(|s| s.short).map(Some).collect(),
        Some(name) => match SCENARIOS.iter().find(|s| s.name == name) {
            Some(s) => vec![Some(s)],
            None => {
                eprintln!("unknown scenario {name:?}; --list shows them");
                return ExitCode::from(2);
            }
        },
    };
    let chosen: Vec<Option<&Scenario>> = chosen
        .into_iter()
        .flat_map(|s| std::iter::repeat_n(s, args.repeat.max(1) as usize))
        .collect();
    let mut reports = Vec::new();
    for scenario in chosen {
        let settings = Settings::new(&args, scenario);
        if !args.json {
            eprintln!(
                "running {}: {}",
                settings.scenario,
                scenario.map_or("settings from the command line", |s| s.about)
            );
        }
        let report = run(&settings);
        if args.json {
            println!("{}", to_json(&report));
        } else {
            print_text(&report);
        }
        reports.push(report);
    }
    if reports.len() > 1 && !args.json {
        print_summary(&reports);
    }
    let code = reports.iter().map(Report::exit_code).max().unwrap_or(0);
    ExitCode::from(code)
}
