//! The worker pool with the real FCM client against a loopback FCM stand-in: one domain's
//! hanging pushes leave the other domains' pushes their workers; workers start as jobs
//! come, the same few do the work of a light load, a domain never starts more than its
//! share, and idle ones end but the last; joining finishes the queued jobs.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::http::MockServer;
use common::keys;
use common::scratch::Scratch;
use p2::app::{Event, Job, Service};
use p2::pool::{Pool, Providers, Shares};
use p2::push::fcm::{FcmClient, FcmSettings};
use p2::push::google_auth::ServiceAccount;
use p2::push::{Outcome, PushMessage};

/// A gate the stand-in's answers to some tokens wait at, until it opens (or 20 s pass).
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let open = self.open.lock().unwrap();
        let _ = self
            .opened
            .wait_timeout_while(open, Duration::from_secs(20), |open| !*open)
            .unwrap();
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// The FCM and token stand-in: pushes to tokens starting with `hang` wait at the gate,
/// the others are delivered at once.
fn stand_in(hang: &'static str) -> (MockServer, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let g = Arc::clone(&gate);
    let server = MockServer::start(move |req| {
        if req.path == "/token" {
            return keys::token_endpoint(req);
        }
        if req.body_str().contains(&format!(r#""token":"{hang}"#)) {
            g.wait();
        }
        common::fcm::ok()
    });
    (server, gate)
}

/// The real FCM client for `server`, with deadlines longer than any gate holds a push;
/// the scratch directory holds its service account.
fn providers(server: &MockServer, name: &str) -> (Providers, Scratch) {
    let dir = Scratch::new(name);
    let path = keys::write_service_account(&dir, &format!("{}/token", server.url()));
    let client = FcmClient::new(
        FcmSettings {
            base_url: server.url(),
            deadline: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            ..FcmSettings::default()
        },
        ServiceAccount::from_file(&path).unwrap(),
    )
    .unwrap();
    let providers = Providers {
        fcm: Some(client),
        #[cfg(feature = "apns")]
        apns: None,
    };
    (providers, dir)
}

fn job(id: u64, domain: &str, token: &str) -> Job {
    Job {
        id,
        service: Service::Fcm,
        domain: domain.to_owned(),
        message: PushMessage {
            token: token.to_owned(),
            device: "2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f".to_owned(),
            channel: String::new(),
            has_body: true,
        },
    }
}

/// The requests for tokens starting with `prefix` that the stand-in received.
fn pushes_to(server: &MockServer, prefix: &str) -> usize {
    let needle = format!(r#""token":"{prefix}"#);
    server
        .requests_to("/v1/")
        .iter()
        .filter(|r| r.body_str().contains(&needle))
        .count()
}

/// Waits (at most 10 s) until `done` holds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < until, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The next outcome: job id and what FCM said.
fn outcome(outcomes: &mpsc::Receiver<Event>) -> (u64, Outcome) {
    match outcomes.recv_timeout(Duration::from_secs(10)) {
        Ok(Event::PushDone { job, outcome }) => (job, outcome),
        Ok(_) => panic!("not a push outcome"),
        Err(e) => panic!("no outcome: {e}"),
    }
}

#[test]
fn a_domain_whose_pushes_hang_does_not_hold_every_worker() {
    // FCM answers the slow domain's tokens only once the gate opens.
    let (server, gate) = stand_in("slow-");
    let (providers, _dir) = providers(&server, "pool-fair");
    let (done, outcomes) = mpsc::sync_channel(64);
    // 3 workers for one domain, and one more that no single domain can take.
    let pool = Pool::start(3, 48, providers, done).unwrap();
    assert_eq!(
        pool.shares(),
        Shares {
            in_flight: 3,
            queued: 48,
            threads: 4,
            capacity: 60
        }
    );
    let mut submit = pool.submitter();

    // The slow domain queues 8 pushes; 3 of them (its share of the 4 threads) reach FCM
    // and hang.
    for id in 0..8 {
        submit(job(id, "slow.example", &format!("slow-{id}"))).unwrap();
    }
    eventually("the slow pushes never reached FCM", || {
        pushes_to(&server, "slow-") >= 3
    });

    // Another domain's 10 pushes all come back, while every slow one still hangs.
    for id in 100..110 {
        submit(job(id, "fast.example", &format!("fast-{id}"))).unwrap();
    }
    for _ in 0..10 {
        let event = outcomes
            .recv_timeout(Duration::from_secs(10))
            .expect("the other domain's pushes are not held up");
        let Event::PushDone { job, outcome } = event else {
            panic!("not a push outcome");
        };
        assert!(job >= 100, "slow push {job} came back first");
        assert_eq!(outcome, Outcome::Delivered);
    }
    assert_eq!(pushes_to(&server, "fast-"), 10);
    assert_eq!(pushes_to(&server, "slow-"), 3, "never more than its share");

    // Released, the slow domain's pushes all go through, three at a time.
    gate.open();
    let mut slow = Vec::new();
    for _ in 0..8 {
        match outcomes.recv_timeout(Duration::from_secs(10)) {
            Ok(Event::PushDone { job, outcome }) => {
                assert_eq!(outcome, Outcome::Delivered);
                slow.push(job);
            }
            other => panic!("{:?}", other.is_ok()),
        }
    }
    slow.sort_unstable();
    assert_eq!(slow, (0..8).collect::<Vec<u64>>());
    pool.join();
}

#[test]
fn workers_start_as_jobs_come_and_end_when_idle() {
    let (server, gate) = stand_in("hang-");
    let (providers, _dir) = providers(&server, "pool-threads");
    let (done, outcomes) = mpsc::sync_channel(64);
    // 4 workers for one domain, and one more for the others; idle ones end after 300 ms.
    let pool = Pool::with_idle_exit(4, 48, providers, done, Duration::from_millis(300)).unwrap();
    assert_eq!(pool.shares().threads, 5);
    assert_eq!(pool.threads(), 1, "one worker before the first job");
    let mut submit = pool.submitter();

    // One push at a time: the worker that went idle last takes the next, so one does all.
    for id in 0..6 {
        submit(job(id, "a.example", &format!("t-{id}"))).unwrap();
        assert_eq!(outcome(&outcomes), (id, Outcome::Delivered));
    }
    assert_eq!(pool.threads(), 1);

    // Six pushes that hang: one domain starts its share of workers (4), no more; the
    // other two wait in the queue.
    for id in 10..16 {
        submit(job(id, "a.example", &format!("hang-{id}"))).unwrap();
    }
    let hanging = |n: usize| server.requests_to("/v1/").len() == 6 + n;
    eventually("four pushes reach FCM", || hanging(4));
    std::thread::sleep(Duration::from_millis(50));
    assert!(hanging(4), "never more than the domain's share");
    assert_eq!(pool.threads(), 4);

    // Another domain's push starts the reserve worker, and comes back.
    submit(job(20, "b.example", "t-20")).unwrap();
    assert_eq!(outcome(&outcomes), (20, Outcome::Delivered));
    assert_eq!(pool.threads(), 5);

    // Released, the six come back; then the workers, idle, end but the last.
    gate.open();
    let mut ids: Vec<u64> = (0..6).map(|_| outcome(&outcomes).0).collect();
    ids.sort_unstable();
    assert_eq!(ids, (10..16).collect::<Vec<_>>());
    eventually("idle workers end", || pool.threads() == 1);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(pool.threads(), 1, "the last one stays");

    // It takes the next push, and more start again for more.
    submit(job(30, "a.example", "t-30")).unwrap();
    assert_eq!(outcome(&outcomes), (30, Outcome::Delivered));
    assert_eq!(pool.threads(), 1);
    pool.join();
}

#[test]
fn joining_finishes_the_queued_jobs() {
    let (server, _gate) = stand_in("hang-");
    let (providers, _dir) = providers(&server, "pool-join");
    let (done, outcomes) = mpsc::sync_channel(64);
    let pool = Pool::start(2, 48, providers, done).unwrap();
    let mut submit = pool.submitter();
    for id in 0..20 {
        submit(job(id, "a.example", &format!("t-{id}"))).unwrap();
    }
    pool.join();
    let mut ids: Vec<u64> = outcomes
        .try_iter()
        .map(|e| match e {
            Event::PushDone { job, outcome } => {
                assert_eq!(outcome, Outcome::Delivered);
                job
            }
            _ => panic!("not a push outcome"),
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
}
