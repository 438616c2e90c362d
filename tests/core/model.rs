//! Random sequences of what phones, servers, the provider and the operator do, run
//! against the core in-process and against a small reference model of PROTOCOL.md's
//! rules. After every step the replies and the stored registrations must agree with the
//! model; the invariants of issue 10 are asserted where they apply:
//! - every IQ get/set on a connection that stays up is answered exactly once, and
//!   nothing else is answered;
//! - an acknowledged registration stays until unregistered, refused by a documented
//!   limit, expired, or reported dead for its exact token by proven credentials;
//! - the first publish after a token change reaches the provider with the new token;
//! - nothing is deleted by an answer that can mean misconfiguration while the
//!   credentials are unproven.
//!
//! `PROPTEST_CASES` sets the number of sequences (default 64, a few seconds).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use p2::config::Limits;
use p2::push::Outcome;
use proptest::prelude::*;

use crate::harness::*;

/// The accounts: three share a domain, so its cap is reached.
const ACCOUNTS: [(&str, &str); 4] = [
    ("a@one.example/phone", "one.example"),
    ("b@one.example/phone", "one.example"),
    ("c@one.example/phone", "one.example"),
    ("d@two.example/phone", "two.example"),
];
/// Two devices, the second one rarely: registrations differ by device too.
const DEVICES: [&str; 2] = ["d0", "d1"];
const TOKENS: [&str; 3] = ["t0", "t1", "t2"];
/// `limits.registrationsPerDomain` in these runs.
const DOMAIN_CAP: usize = 2;
/// The clock's steps: within and beyond the coalescing window, an hour (the rate and
/// log windows), days (the proof window), months (the expiry).
const STEPS: [Duration; 6] = [
    Duration::ZERO,
    Duration::from_millis(400),
    Duration::from_millis(1500),
    Duration::from_secs(3600),
    Duration::from_secs(2 * 86_400),
    Duration::from_secs(100 * 86_400),
];
const COALESCE: Duration = Duration::from_millis(1000);
const DAY: i64 = 86_400;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Delivered,
    Dead,
    DeadUnlessMisconfigured,
    Failed,
}

#[derive(Debug, Clone)]
enum Op {
    Register {
        account: usize,
        device: usize,
        token: usize,
    },
    Unregister {
        account: usize,
        device: usize,
    },
    Publish {
        account: usize,
        device: usize,
    },
    Finish(Kind),
    Reconnect,
    Restart {
        new_credentials: bool,
    },
    Advance(usize),
}

/// Mostly the first account, so that one registration sees long histories.
fn account() -> impl Strategy<Value = usize> {
    prop_oneof![6 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize), 1 => Just(3usize)]
}

fn device() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0usize), 1 => Just(1usize)]
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(Kind::Delivered),
        Just(Kind::Dead),
        Just(Kind::DeadUnlessMisconfigured),
        Just(Kind::Failed),
    ];
    prop_oneof![
        4 => (account(), device(), 0..3usize)
            .prop_map(|(account, device, token)| Op::Register { account, device, token }),
        1 => (account(), device()).prop_map(|(account, device)| Op::Unregister { account, device }),
        6 => (account(), device()).prop_map(|(account, device)| Op::Publish { account, device }),
        5 => kind.prop_map(Op::Finish),
        1 => Just(Op::Reconnect),
        1 => any::<bool>().prop_map(|new_credentials| Op::Restart { new_credentials }),
        3 => prop_oneof![
            3 => (0..3usize).prop_map(Op::Advance),
            1 => (3..STEPS.len()).prop_map(Op::Advance),
        ],
    ]
}

/// A registration as the model knows it.
#[derive(Debug, Clone)]
struct Reg {
    token: String,
    node: String,
    secret: String,
    updated: i64,
    used: Option<i64>,
}

/// A push in flight, as the model knows it.
#[derive(Debug, Clone)]
struct Job {
    id: String,
    key: (usize, usize),
    node: String,
    token: String,
    gen: u64,
    used: Option<i64>,
}

/// The reference model.
#[derive(Default)]
struct Model {
    regs: HashMap<(usize, usize), Reg>,
    /// The last node and secret handed out for a key, kept after it is deleted.
    nodes: HashMap<(usize, usize), (String, String)>,
    jobs: VecDeque<Job>,
    gen: u64,
    mono: Duration,
    unix: i64,
    /// Coalescing: node → (when delivered, token delivered to).
    delivered: HashMap<String, (Duration, String)>,
    /// Keys whose token changed and whose device has not been pushed to with the new
    /// token since (a push that carried it and was delivered after the change counts,
    /// even if it was sent before: the token went A, B, A).
    changed: HashSet<(usize, usize)>,
    next_expiry: Duration,
    credentials: u32,
    since_start: bool,
    /// The delivery recorded in the database: (credentials, when).
    recorded: Option<(u32, i64)>,
    written: Option<i64>,
}

impl Model {
    fn proven(&self) -> bool {
        self.since_start
            || self.recorded.is_some_and(|(c, at)| {
                c == self.credentials && (0..=7 * DAY).contains(&(self.unix - at))
            })
    }

    fn in_domain(&self, domain: &str) -> usize {
        self.regs
            .keys()
            .filter(|(a, _)| ACCOUNTS[*a].1 == domain)
            .count()
    }

    fn expire(&mut self) {
        if self.mono < self.next_expiry {
            return;
        }
        let cutoff = self.unix - 180 * DAY;
        self.regs
            .retain(|_, r| r.updated.max(r.used.unwrap_or(0)) >= cutoff);
        self.next_expiry = self.mono + Duration::from_secs(3600);
    }
}

/// One run of `ops`: the core and the model side by side.
fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    // A real SQLite file, on tmpfs where there is one: on disk every batch's commit
    // is an fsync (synchronous=FULL), and hundreds of sequences would take minutes.
    let mut core = Core::in_dir(
        Limits {
            registrations_per_domain: DOMAIN_CAP as u64,
            ..Limits::default()
        },
        Scratch::in_memory("model"),
    );
    let mut m = Model {
        gen: 1,
        unix: core.now.unix,
        next_expiry: Duration::from_secs(60),
        ..Model::default()
    };
    // Requests sent and not yet answered, with the connection they came on.
    let mut open: HashMap<String, u64> = HashMap::new();
    for (n, op) in ops.iter().enumerate() {
        let id = format!("op{n}");
        // (request id, expected summary) for the replies of this step.
        let mut expect: Vec<(String, String)> = Vec::new();
        let mut registered: Option<((usize, usize), String)> = None;
        let replies = match op {
            &Op::Register {
                account,
                device,
                token,
            } => {
                let key = (account, device);
                let (from, domain) = ACCOUNTS[account];
                let token = TOKENS[token];
                if let Some(r) = m.regs.get_mut(&key) {
                    if r.token != token {
                        m.delivered.remove(&r.node);
                        m.changed.insert(key);
                    }
                    r.token = token.into();
                    r.updated = m.unix;
                    expect.push((id.clone(), "result".into()));
                    registered = Some((key, id.clone()));
                } else if m.in_domain(domain) >= DOMAIN_CAP {
                    expect.push((id.clone(), "error wait resource-constraint".into()));
                } else {
                    expect.push((id.clone(), "result".into()));
                    registered = Some((key, id.clone()));
                }
                open.insert(id.clone(), m.gen);
                core.send(&[&with_id(&register_as(from, DEVICES[device], token), &id)])
            }
            &Op::Unregister { account, device } => {
                let key = (account, device);
                let expected = if m.regs.remove(&key).is_some() {
                    "result"
                } else {
                    "error cancel item-not-found"
                };
                expect.push((id.clone(), expected.into()));
                open.insert(id.clone(), m.gen);
                core.send(&[&with_id(
                    &unregister_as(ACCOUNTS[account].0, DEVICES[device]),
                    &id,
                )])
            }
            &Op::Publish { account, device } => {
                let key = (account, device);
                let domain = ACCOUNTS[account].1;
                let (node, secret) = m
                    .nodes
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| ("nonexistent0".into(), "secret".into()));
                open.insert(id.clone(), m.gen);
                let before = core.submitted.lock().unwrap().len();
                let replies = core.send(&[&with_id(
                    &publish_to(PROSODY_PUBLISH, domain, &node, &secret),
                    &id,
                )]);
                let submitted = core.submitted.lock().unwrap()[before..].to_vec();
                match m.regs.get(&key).filter(|r| r.node == node) {
                    None => {
                        expect.push((id.clone(), "error cancel item-not-found".into()));
                        prop_assert!(submitted.is_empty());
                    }
                    Some(r) => {
                        let coalesced = m
                            .delivered
                            .get(&node)
                            .is_some_and(|(at, t)| *t == r.token && m.mono - *at < COALESCE);
                        if m.changed.contains(&key) {
                            // The first publish after a token change reaches the
                            // provider, with the new token.
                            prop_assert!(!coalesced);
                            prop_assert_eq!(submitted.len(), 1);
                            prop_assert_eq!(&submitted[0].message.token, &r.token);
                            m.changed.remove(&key);
                        }
                        if coalesced {
                            expect.push((id.clone(), "result".into()));
                            prop_assert!(submitted.is_empty());
                        } else {
                            prop_assert_eq!(submitted.len(), 1);
                            prop_assert_eq!(&submitted[0].message.token, &r.token);
                            m.jobs.push_back(Job {
                                id: id.clone(),
                                key,
                                node: node.clone(),
                                token: r.token.clone(),
                                gen: m.gen,
                                used: r.used,
                            });
                        }
                    }
                }
                replies
            }
            Op::Finish(kind) => {
                let Some(job) = m.jobs.pop_front() else {
                    prop_assert_eq!(core.in_flight(), 0);
                    continue;
                };
                let real = core.next_job().expect("the core's job");
                prop_assert_eq!(&real.message.token, &job.token);
                let outcome = match kind {
                    Kind::Delivered => Outcome::Delivered,
                    Kind::Dead => dead(),
                    Kind::DeadUnlessMisconfigured => mismatch(),
                    Kind::Failed => failed(),
                };
                let holds_token = |m: &Model| {
                    m.regs
                        .get(&job.key)
                        .is_some_and(|r| r.node == job.node && r.token == job.token)
                };
                let reply = match kind {
                    Kind::Delivered => {
                        m.since_start = true;
                        if m.written.is_none_or(|w| m.unix - w >= 3600 || m.unix < w) {
                            m.written = Some(m.unix);
                            m.recorded = Some((m.credentials, m.unix));
                        }
                        let stale = job.used.is_none_or(|u| m.unix - u >= DAY || m.unix < u);
                        if let Some(r) = m.regs.get_mut(&job.key).filter(|r| r.node == job.node) {
                            if stale {
                                r.used = Some(m.unix);
                            }
                        }
                        m.delivered
                            .insert(job.node.clone(), (m.mono, job.token.clone()));
                        if holds_token(&m) {
                            m.changed.remove(&job.key);
                        }
                        "result"
                    }
                    Kind::Dead => {
                        m.delivered.remove(&job.node);
                        if holds_token(&m) {
                            m.regs.remove(&job.key);
                            "error cancel item-not-found"
                        } else {
                            "error wait internal-server-error"
                        }
                    }
                    Kind::DeadUnlessMisconfigured if m.proven() => {
                        m.delivered.remove(&job.node);
                        if holds_token(&m) {
                            m.regs.remove(&job.key);
                            "error cancel item-not-found"
                        } else {
                            "error wait internal-server-error"
                        }
                    }
                    Kind::DeadUnlessMisconfigured | Kind::Failed => {
                        "error wait internal-server-error"
                    }
                };
                if job.gen == m.gen {
                    expect.push((job.id.clone(), reply.into()));
                }
                core.finish(outcome)
            }
            Op::Reconnect => {
                m.gen += 1;
                core.reconnect();
                Vec::new()
            }
            &Op::Restart { new_credentials } => {
                if new_credentials {
                    m.credentials += 1;
                    core.settings.providers[0].fingerprint = format!("{:016x}", m.credentials);
                }
                m.jobs.clear();
                m.delivered.clear();
                m.since_start = false;
                m.written = None;
                m.gen = 1;
                m.next_expiry = m.mono + Duration::from_secs(60);
                open.clear();
                core.restart();
                Vec::new()
            }
            &Op::Advance(step) => {
                m.mono += STEPS[step];
                m.unix += STEPS[step].as_secs() as i64;
                core.advance(STEPS[step]);
                m.expire();
                Vec::new()
            }
        };
        // Every reply answers an open request of the current connection, once, as the
        // model says.
        let mut got: Vec<(String, String)> = Vec::new();
        for reply in &replies {
            let rid = iq_attr(reply, "id").unwrap();
            let gen = open.remove(&rid);
            prop_assert_eq!(gen, Some(m.gen), "a reply to nothing open: {}", reply);
            got.push((rid, summary(reply)));
        }
        got.sort();
        expect.sort();
        prop_assert_eq!(&got, &expect, "step {}: {:?}", n, op);
        if let Some((key, rid)) = registered {
            let reply = replies
                .iter()
                .find(|r| iq_attr(r, "id").as_deref() == Some(rid.as_str()))
                .unwrap();
            let (node, secret) = node_and_secret(reply);
            match m.regs.get(&key) {
                // A renewal keeps node and secret.
                Some(r) => {
                    prop_assert_eq!((&r.node, &r.secret), (&node, &secret));
                }
                None => {
                    let Op::Register { token, .. } = *op else {
                        unreachable!()
                    };
                    m.regs.insert(
                        key,
                        Reg {
                            token: TOKENS[token].into(),
                            node: node.clone(),
                            secret: secret.clone(),
                            updated: m.unix,
                            used: None,
                        },
                    );
                }
            }
            m.nodes.insert(key, (node, secret));
        }
        // What is stored is what the model holds: nothing lost, nothing left behind.
        let mut stored: Vec<(String, String, String)> = core
            .rows()
            .into_iter()
            .filter(|r| r.domain != "localhost")
            .map(|r| (r.node, r.secret, r.token))
            .collect();
        stored.sort();
        let mut modelled: Vec<(String, String, String)> = m
            .regs
            .values()
            .map(|r| (r.node.clone(), r.secret.clone(), r.token.clone()))
            .collect();
        modelled.sort();
        prop_assert_eq!(stored, modelled, "step {}: {:?}", n, op);
    }
    // Every request still open on the current connection is answered once its push
    // comes back.
    while core.in_flight() > 0 {
        for reply in core.finish(failed()) {
            let rid = iq_attr(&reply, "id").unwrap();
            prop_assert_eq!(open.remove(&rid), Some(m.gen));
        }
    }
    open.retain(|_, gen| *gen == m.gen);
    prop_assert!(open.is_empty(), "never answered: {:?}", open);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_core_agrees_with_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops)?;
    }
}

/// The sequences the model test must be able to tell apart, run as they are.
#[test]
fn known_sequences() {
    use Op::*;
    let r = |token| Register {
        account: 0,
        device: 0,
        token,
    };
    let p = Publish {
        account: 0,
        device: 0,
    };
    run(&[r(0), p.clone(), Finish(Kind::Delivered), r(1), p.clone()]).unwrap();
    run(&[r(0), p.clone(), r(1), Finish(Kind::Delivered), p.clone()]).unwrap();
    run(&[r(0), p.clone(), r(1), Finish(Kind::Dead), p.clone()]).unwrap();
    run(&[
        r(0),
        p.clone(),
        Finish(Kind::DeadUnlessMisconfigured),
        p.clone(),
    ])
    .unwrap();
    // The token goes 1, 0, 1 while a push to 1 is out: once that push is delivered, the
    // device with the current token has been woken, and the next publish is coalesced.
    run(&[r(1), p.clone(), r(0), r(1), Finish(Kind::Delivered), p]).unwrap();
}
