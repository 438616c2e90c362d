//! The worker pool with the real FCM client against a loopback FCM stand-in: one domain's
//! hanging pushes leave the other domains' pushes their workers.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::http::MockServer;
use common::keys;
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

#[test]
fn a_domain_whose_pushes_hang_does_not_hold_every_worker() {
    let gate = Arc::new(Gate::default());
    let g = Arc::clone(&gate);
    let server = MockServer::start(move |req| {
        if req.path == "/token" {
            return keys::token_endpoint(req);
        }
        // FCM answers the slow domain's tokens only once the gate opens.
        if req.body_str().contains(r#""token":"slow-"#) {
            g.wait();
        }
        common::fcm::ok()
    });
    let dir = common::scratch::Scratch::new("pool-fair");
    let path = keys::write_service_account(&dir, &format!("{}/token", server.url()));
    let account = ServiceAccount::from_file(&path).unwrap();
    let client = FcmClient::new(
        FcmSettings {
            base_url: server.url(),
            deadline: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            ..FcmSettings::default()
        },
        account,
    )
    .unwrap();
    let (done, outcomes) = mpsc::sync_channel(64);
    let providers = Providers {
        fcm: Some(client),
        #[cfg(feature = "apns")]
        apns: None,
    };
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
    let until = Instant::now() + Duration::from_secs(10);
    while pushes_to(&server, "slow-") < 3 {
        assert!(Instant::now() < until, "the slow pushes never reached FCM");
        std::thread::sleep(Duration::from_millis(5));
    }

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
