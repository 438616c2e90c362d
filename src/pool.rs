//! Push worker threads fed by a bounded queue, shared fairly between the domains the
//! pushes are for.
//!
//! Workers block on the provider's HTTP exchange, never the core: the core submits with
//! [`Pool::submitter`], which refuses at once when the queue is full, and outcomes come
//! back as [`Event::PushDone`] on the core's channel.
//!
//! **Threads on demand.** The pool starts with one worker and starts another when a job
//! finds none idle, up to its maximum ([`Shares::threads`]); a worker idle for
//! [`IDLE_EXIT`] ends (its kept-alive connection would have expired by then too), but
//! the last one. A job
//! wakes the worker that went idle last: under a light load the same few threads do
//! the work and keep their stacks and connections warm, and a pool configured for a peak
//! costs memory only while the peak lasts. An idle worker sleeps without a timer but its
//! one exit: an idle daemon's workers do not wake.
//!
//! **Fair share.** One domain (the publishing server's) must not starve the others, by
//! flooding publishes or by pushes that fail slowly (a provider answering its tokens
//! late, 5xx with retries). So each domain has a cap on its pushes in flight and on its
//! jobs waiting in the queue ([`Shares`]), and workers take jobs round-robin between the
//! domains that have some waiting and room under their cap. A job over its domain's
//! queue share is refused like one over the whole queue (`Err(job)`, answered `wait`).
//!
//! One domain may use what the configuration gives (`workers` pushes in flight, the
//! queue's capacity), and the pool holds a quarter more of each (at least one) that no
//! single domain can take: a lone domain, the common case of a server running its own
//! p2, gets all the workers it was configured with, and whatever one domain does, the
//! others' pushes find that reserve free and take turns with it for the rest.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::app::{Event, Job, Service};
use crate::metrics::Limit;
#[cfg(feature = "apns")]
use crate::push::apns::ApnsClient;
use crate::push::fcm::FcmClient;
use crate::push::{Cause, Outcome, PushMessage};

/// Stack size of a worker thread: enough for TLS and RSA, small enough for hundreds.
pub const WORKER_STACK: usize = 256 * 1024;

/// How long a worker stays idle before it ends.
pub const IDLE_EXIT: Duration = Duration::from_secs(60);

/// The providers the workers call.
#[derive(Clone, Default)]
pub struct Providers {
    /// FCM, when configured.
    pub fcm: Option<FcmClient>,
    /// APNs, when configured (only in a build with the cargo feature `apns`). One client
    /// serves every worker: its pushes share one HTTP/2 connection.
    #[cfg(feature = "apns")]
    pub apns: Option<ApnsClient>,
}

impl Providers {
    /// Sends one push through the job's provider.
    pub fn send(&self, service: Service, message: &PushMessage) -> Outcome {
        match service {
            Service::Fcm => {
                if let Some(fcm) = &self.fcm {
                    return fcm.send(message);
                }
            }
            #[cfg(feature = "apns")]
            Service::Apns => {
                if let Some(apns) = &self.apns {
                    return apns.send(message);
                }
            }
            #[cfg(not(feature = "apns"))]
            Service::Apns => {}
        }
        Outcome::failed(
            Cause::NotConfigured,
            format!("{} is not configured", service.as_str()),
        )
    }
}

/// How the pool is shared between domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    /// Pushes one domain may have in flight: the configured workers.
    pub in_flight: usize,
    /// Jobs one domain may have waiting: the configured queue capacity.
    pub queued: usize,
    /// Worker threads: a quarter more than one domain may use (at least one more).
    pub threads: usize,
    /// Jobs waiting, all domains together: a quarter more than one domain may queue (at
    /// least one more).
    pub capacity: usize,
}

impl Shares {
    /// The shares of a pool configured with `workers` and a queue of `capacity` (each
    /// at least one).
    pub fn of(workers: usize, capacity: usize) -> Shares {
        let (workers, capacity) = (workers.max(1), capacity.max(1));
        let more = |n: usize| n.saturating_add((n / 4).max(1));
        Shares {
            in_flight: workers,
            queued: capacity,
            threads: more(workers),
            capacity: more(capacity),
        }
    }
}

/// The queue shared by the core (producer) and the workers (consumers), and the workers
/// themselves.
struct Queue {
    state: Mutex<QueueState>,
    shares: Shares,
    /// How long an idle worker waits before it ends.
    idle_exit: Duration,
    /// What a new worker needs: its providers and the core's channel.
    spawn: Mutex<Option<Spawn>>,
}

/// What starts a worker.
struct Spawn {
    providers: Providers,
    done: SyncSender<Event>,
    /// The workers started, ended or not (pruned as they end).
    handles: Vec<JoinHandle<()>>,
    /// Workers started so far, for their names.
    started: usize,
}

/// One domain's part of the queue.
#[derive(Default)]
struct DomainQueue {
    jobs: VecDeque<Job>,
    in_flight: usize,
}

/// Invariants: a domain is in `turns` exactly when it has jobs waiting; it has an entry
/// in `domains` exactly when it has jobs waiting or pushes in flight; `queued` is the
/// sum of the jobs waiting.
#[derive(Default)]
struct QueueState {
    domains: HashMap<String, DomainQueue>,
    /// The domains with jobs waiting, in the order they take their turns.
    turns: VecDeque<String>,
    queued: usize,
    closed: bool,
    /// The workers waiting for a job, the one that went idle last at the end: a job
    /// wakes that one (a futex wake is a system call; none when nobody waits).
    idle: Vec<Idle>,
    /// Workers alive (started and not ended).
    threads: usize,
    /// Workers that will look at the queue without being woken: started, woken, or
    /// reporting an outcome to the core. A job submitted meanwhile is theirs to take; a
    /// worker is woken or started only for runnable jobs beyond them.
    coming: usize,
}

/// A worker waiting for a job.
struct Idle {
    thread: Thread,
    /// Whether it is in `QueueState::idle`: set by the worker, cleared by whoever takes
    /// it off (and then wakes it), both under the queue's lock.
    listed: Arc<AtomicBool>,
}

impl Idle {
    /// Takes it off the idle list and returns the thread to wake.
    fn wake(self) -> Thread {
        self.listed.store(false, Ordering::Relaxed);
        self.thread
    }
}

/// What a submit asks of the workers once the queue's lock is released.
enum Wake {
    Nobody,
    Idle(Thread),
    /// No worker is idle and the pool may grow.
    Start,
}

impl Queue {
    fn new(shares: Shares) -> Queue {
        Queue {
            state: Mutex::new(QueueState::default()),
            shares,
            idle_exit: IDLE_EXIT,
            spawn: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`, unless the queue or the domain's share of it is full or the queue is
    /// closed; wakes the worker idle last, or starts one if none is idle.
    fn submit(self: &Arc<Self>, job: Job) -> Result<(), Job> {
        let mut state = self.lock();
        if state.closed || state.queued >= self.shares.capacity {
            crate::metrics::global().refused(Limit::QueueFull);
            return Err(job);
        }
        let st = &mut *state;
        if !st.domains.contains_key(&job.domain) {
            st.domains
                .insert(job.domain.clone(), DomainQueue::default());
        }
        let Some(domain) = st.domains.get_mut(&job.domain) else {
            return Err(job); // not reached: inserted above
        };
        if domain.jobs.len() >= self.shares.queued {
            crate::metrics::global().refused(Limit::FairShare);
            return Err(job);
        }
        if domain.jobs.is_empty() {
            st.turns.push_back(job.domain.clone());
        }
        domain.jobs.push_back(job);
        // Whether it can run once the domain's jobs before it have started.
        let runnable = domain.in_flight + domain.jobs.len() <= self.shares.in_flight;
        st.queued += 1;
        crate::metrics::global().queue_depth(st.queued);
        let wake = if !runnable || st.queued <= st.coming {
            Wake::Nobody
        } else if let Some(worker) = st.idle.pop() {
            st.coming += 1;
            Wake::Idle(worker.wake())
        } else if st.threads < self.shares.threads {
            st.threads += 1;
            st.coming += 1;
            Wake::Start
        } else {
            Wake::Nobody
        };
        drop(state);
        match wake {
            Wake::Nobody => {}
            Wake::Idle(worker) => worker.unpark(),
            Wake::Start => {
                // The jobs it was for wait for the workers there are (at least one).
                let _ = self.start_worker();
            }
        }
        Ok(())
    }

    /// Starts a worker (counted in `threads` and `coming` already).
    fn start_worker(self: &Arc<Self>) -> std::io::Result<()> {
        let mut spawn = self.spawn.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(spawn) = spawn.as_mut() else {
            // The pool is joining: no new workers.
            self.ended();
            return Ok(());
        };
        spawn.handles.retain(|h| !h.is_finished());
        let queue = Arc::clone(self);
        let providers = spawn.providers.clone();
        let done = spawn.done.clone();
        let started = thread::Builder::new()
            .name(format!("push-{}", spawn.started))
            .stack_size(WORKER_STACK)
            .spawn(move || queue.work(&providers, &done));
        spawn.started += 1;
        match started {
            Ok(handle) => {
                spawn.handles.push(handle);
                Ok(())
            }
            Err(e) => {
                log::warn!("cannot start a push worker: {e}");
                self.ended();
                Err(e)
            }
        }
    }

    /// A worker's life: jobs until the queue closes, or until it was idle for
    /// `idle_exit`.
    fn work(&self, providers: &Providers, done: &SyncSender<Event>) {
        // Counted as coming when started, and again after each push.
        while let Some(job) = self.take(true) {
            let busy = crate::metrics::global().busy();
            let outcome = providers.send(job.service, &job.message);
            drop(busy);
            self.done(&job.domain);
            let event = Event::PushDone {
                job: job.id,
                outcome,
            };
            if done.send(event).is_err() {
                let mut state = self.lock();
                state.coming = state.coming.saturating_sub(1);
                state.threads = state.threads.saturating_sub(1);
                return;
            }
        }
    }

    /// The next job by turns among the domains under their share of workers, counted in
    /// flight; `None` if there is none.
    fn try_take(&self, st: &mut QueueState) -> Option<Job> {
        for _ in 0..st.turns.len() {
            let name = st.turns.pop_front()?;
            let Some(domain) = st.domains.get_mut(&name) else {
                continue; // not reached: a domain in turns has an entry
            };
            if domain.in_flight >= self.shares.in_flight {
                st.turns.push_back(name);
                continue;
            }
            let Some(job) = domain.jobs.pop_front() else {
                continue; // not reached: a domain in turns has jobs
            };
            domain.in_flight += 1;
            if !domain.jobs.is_empty() {
                st.turns.push_back(name);
            }
            st.queued -= 1;
            return Some(job);
        }
        None
    }

    /// Waits for a job; `None` once the queue is closed and empty, or after `idle_exit`
    /// without one (the worker then ends, and is no longer counted). `coming`: the
    /// worker is counted in `QueueState::coming` (started, or back from a push).
    fn take(&self, coming: bool) -> Option<Job> {
        let listed = Arc::new(AtomicBool::new(false));
        let mut idle_since = None;
        let mut state = self.lock();
        if coming {
            state.coming = state.coming.saturating_sub(1);
        }
        loop {
            if let Some(job) = self.try_take(&mut state) {
                crate::metrics::global().queue_depth(state.queued);
                if listed.load(Ordering::Relaxed) {
                    // Woken by a spurious wake-up or the timeout while a job came.
                    state.idle.retain(|w| !Arc::ptr_eq(&w.listed, &listed));
                    listed.store(false, Ordering::Relaxed);
                }
                let wake = match state.closed && state.queued == 0 {
                    // Workers waiting for a capped domain's jobs can end now.
                    true => std::mem::take(&mut state.idle),
                    false => Vec::new(),
                };
                state.coming += wake.len();
                drop(state);
                wake.into_iter().for_each(|w| w.wake().unpark());
                return Some(job);
            }
            let waited = idle_since.get_or_insert_with(Instant::now).elapsed();
            // The last worker stays, so that a job never waits for one to start.
            let last = state.threads <= 1;
            if (state.closed && state.queued == 0) || (waited >= self.idle_exit && !last) {
                if listed.load(Ordering::Relaxed) {
                    state.idle.retain(|w| !Arc::ptr_eq(&w.listed, &listed));
                }
                state.threads = state.threads.saturating_sub(1);
                return None;
            }
            if !listed.load(Ordering::Relaxed) {
                listed.store(true, Ordering::Relaxed);
                state.idle.push(Idle {
                    thread: thread::current(),
                    listed: Arc::clone(&listed),
                });
            }
            drop(state);
            // Woken by a submit (which took us off the idle list), a close, or the
            // timeout; a spurious wake-up only loops. The last worker has no timeout.
            match last {
                true => thread::park(),
                false => thread::park_timeout(self.idle_exit.saturating_sub(waited)),
            }
            state = self.lock();
            if !listed.load(Ordering::Relaxed) {
                // Taken off the idle list by whoever woke us, and counted as coming.
                state.coming = state.coming.saturating_sub(1);
            }
        }
    }

    /// A push of `domain` is over: its worker is free for the domain's next job, and
    /// takes it (or another) once it has reported the outcome.
    fn done(&self, domain: &str) {
        let mut state = self.lock();
        state.coming += 1;
        let Some(d) = state.domains.get_mut(domain) else {
            return;
        };
        d.in_flight = d.in_flight.saturating_sub(1);
        if d.jobs.is_empty() && d.in_flight == 0 {
            state.domains.remove(domain);
        }
    }

    /// A worker did not start.
    fn ended(&self) {
        let mut state = self.lock();
        state.threads = state.threads.saturating_sub(1);
        state.coming = state.coming.saturating_sub(1);
    }

    /// Closes the queue: workers finish what it holds, then end.
    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let idle = std::mem::take(&mut state.idle);
        state.coming += idle.len();
        drop(state);
        idle.into_iter().for_each(|w| w.wake().unpark());
    }
}

/// The worker pool.
pub struct Pool {
    queue: Arc<Queue>,
}

impl Pool {
    /// The pool and its queue of [`Shares::of`] `workers` and `capacity`: one domain may
    /// have `workers` pushes in flight and `capacity` waiting, and the pool holds a
    /// quarter more of each for the other domains. Workers start as jobs come (see the
    /// module's documentation); their outcomes go to `done`. Fails if not even the first
    /// worker starts.
    pub fn start(
        workers: usize,
        capacity: usize,
        providers: Providers,
        done: SyncSender<Event>,
    ) -> std::io::Result<Pool> {
        Pool::with_idle_exit(workers, capacity, providers, done, IDLE_EXIT)
    }

    /// [`Pool::start`] with another idle time before a worker ends (for tests).
    pub fn with_idle_exit(
        workers: usize,
        capacity: usize,
        providers: Providers,
        done: SyncSender<Event>,
        idle_exit: Duration,
    ) -> std::io::Result<Pool> {
        let shares = Shares::of(workers, capacity);
        let queue = Arc::new(Queue {
            idle_exit,
            spawn: Mutex::new(Some(Spawn {
                providers,
                done,
                handles: Vec::new(),
                started: 0,
            })),
            ..Queue::new(shares)
        });
        crate::metrics::global().pool(shares.threads, shares.capacity);
        {
            let mut state = queue.lock();
            state.threads = 1;
            state.coming = 1;
        }
        queue.start_worker()?;
        Ok(Pool { queue })
    }

    /// How this pool is shared between domains.
    pub fn shares(&self) -> Shares {
        self.queue.shares
    }

    /// The workers alive now (started, not ended).
    pub fn threads(&self) -> usize {
        self.queue.lock().threads
    }

    /// A submit function for the core: refuses at once when the queue, or the job's
    /// domain's share of it, is full.
    pub fn submitter(&self) -> impl FnMut(Job) -> Result<(), Job> + Send + 'static {
        let queue = Arc::clone(&self.queue);
        move |job| queue.submit(job)
    }

    /// Closes the queue and waits for the workers to finish the jobs it holds.
    pub fn join(self) {
        let spawn = self
            .queue
            .spawn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.queue.close();
        for handle in spawn.map(|s| s.handles).unwrap_or_default() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, domain: &str) -> Job {
        Job {
            id,
            service: Service::Fcm,
            domain: domain.to_owned(),
            message: PushMessage {
                token: "t".into(),
                device: "d".into(),
                channel: String::new(),
                has_body: false,
            },
        }
    }

    /// The jobs a queue hands out now, without waiting, as (domain, id).
    fn take_all(q: &Queue) -> Vec<(String, u64)> {
        let mut st = q.lock();
        std::iter::from_fn(|| q.try_take(&mut st))
            .map(|j| (j.domain, j.id))
            .collect()
    }

    fn taken(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(d, i)| ((*d).to_owned(), *i)).collect()
    }

    #[test]
    fn one_domain_gets_the_configured_pool_and_the_others_a_quarter_more() {
        let cases = [
            ((1, 1), (1, 1, 2, 2)),
            ((2, 1024), (2, 1024, 3, 1280)),
            ((3, 4), (3, 4, 4, 5)),
            ((32, 1024), (32, 1024, 40, 1280)),
            ((256, 4096), (256, 4096, 320, 5120)),
            ((0, 0), (1, 1, 2, 2)),
        ];
        for ((workers, capacity), (in_flight, queued, threads, total)) in cases {
            assert_eq!(
                Shares::of(workers, capacity),
                Shares {
                    in_flight,
                    queued,
                    threads,
                    capacity: total
                },
                "{workers} workers, {capacity} places"
            );
        }
    }

    #[test]
    fn domains_take_turns() {
        let q = Arc::new(Queue::new(Shares::of(100, 100)));
        for (id, domain) in [(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "c"), (6, "b")] {
            q.submit(job(id, domain)).unwrap();
        }
        assert_eq!(
            take_all(&q),
            taken(&[("a", 1), ("b", 4), ("c", 5), ("a", 2), ("b", 6), ("a", 3)])
        );
        assert_eq!(q.lock().queued, 0);
    }

    #[test]
    fn a_domain_at_its_share_of_workers_waits_and_others_go_first() {
        // 3 workers (and one more in reserve): a domain may have 3 pushes in flight.
        let q = Arc::new(Queue::new(Shares::of(3, 100)));
        for id in 1..=5 {
            q.submit(job(id, "slow.example")).unwrap();
        }
        assert_eq!(
            take_all(&q),
            taken(&[
                ("slow.example", 1),
                ("slow.example", 2),
                ("slow.example", 3)
            ])
        );
        q.submit(job(6, "fast.example")).unwrap();
        q.submit(job(7, "fast.example")).unwrap();
        assert_eq!(
            take_all(&q),
            taken(&[("fast.example", 6), ("fast.example", 7)])
        );
        q.done("fast.example");
        q.done("fast.example");
        assert!(!q.lock().domains.contains_key("fast.example"), "forgotten");
        q.done("slow.example");
        assert_eq!(take_all(&q), taken(&[("slow.example", 4)]));
        q.done("slow.example");
        q.done("slow.example");
        assert_eq!(take_all(&q), taken(&[("slow.example", 5)]));
    }

    #[test]
    fn a_domain_over_its_share_of_the_queue_is_refused_and_others_are_not() {
        // 8 places, and 2 more in reserve: a domain may have 8 waiting.
        let q = Arc::new(Queue::new(Shares::of(1, 8)));
        for id in 1..=8 {
            q.submit(job(id, "flood.example")).unwrap();
        }
        let refused = q.submit(job(7, "flood.example")).unwrap_err();
        assert_eq!((refused.id, refused.domain.as_str()), (7, "flood.example"));
        q.submit(job(8, "other.example")).unwrap();
        q.submit(job(9, "third.example")).unwrap();
        // The whole queue is full now.
        assert_eq!(q.submit(job(10, "fourth.example")).unwrap_err().id, 10);
        assert!(!q.lock().domains.contains_key("fourth.example"));
        // One worker per domain: one push in flight each, everyone in turn.
        assert_eq!(
            take_all(&q),
            taken(&[
                ("flood.example", 1),
                ("other.example", 8),
                ("third.example", 9)
            ])
        );
        q.done("flood.example");
        assert_eq!(take_all(&q), taken(&[("flood.example", 2)]));
    }

    #[test]
    fn closing_lets_the_workers_drain_the_queue() {
        let q = Arc::new(Queue::new(Shares::of(1, 100)));
        for id in 1..=4 {
            q.submit(job(id, "a")).unwrap();
        }
        q.close();
        assert!(q.submit(job(5, "a")).is_err(), "closed");
        q.lock().threads = 2;
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let q = Arc::clone(&q);
                thread::spawn(move || {
                    let mut ids = Vec::new();
                    let mut coming = false;
                    while let Some(job) = q.take(coming) {
                        ids.push(job.id);
                        q.done(&job.domain);
                        coming = true;
                    }
                    ids
                })
            })
            .collect();
        let mut ids: Vec<u64> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3, 4]);
        let state = q.lock();
        assert_eq!((state.threads, state.coming), (0, 0));
    }
}
