//! A fixed set of push worker threads fed by a bounded queue.
//!
//! Workers block on the provider's HTTP exchange, never the core: the core submits with
//! [`Pool::submit`], which refuses at once when the queue is full, and outcomes come
//! back as [`Event::PushDone`] on the core's channel.

use std::collections::VecDeque;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};

use crate::app::{Event, Job, Service};
#[cfg(feature = "apns")]
use crate::push::apns::ApnsClient;
use crate::push::fcm::FcmClient;
use crate::push::{Cause, Outcome, PushMessage};

/// Stack size of a worker thread: enough for TLS and RSA, small enough for hundreds.
pub const WORKER_STACK: usize = 256 * 1024;

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

/// The queue shared by the core (producer) and the workers (consumers).
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    capacity: usize,
}

struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
    /// Workers blocked in `take`: a submit wakes one only if there is one (a futex
    /// wake is a system call).
    idle: usize,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a job; `None` once the queue is closed and empty.
    fn take(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                crate::metrics::global().queue_depth(state.jobs.len());
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state.idle += 1;
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
            state.idle -= 1;
        }
    }
}

/// The worker pool.
pub struct Pool {
    queue: Arc<Queue>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `workers` threads taking jobs from a queue of `capacity`, reporting to `done`.
    pub fn start(
        workers: usize,
        capacity: usize,
        providers: Providers,
        done: SyncSender<Event>,
    ) -> std::io::Result<Pool> {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::with_capacity(capacity.min(4096)),
                closed: false,
                idle: 0,
            }),
            ready: Condvar::new(),
            capacity,
        });
        crate::metrics::global().pool(workers, capacity);
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let queue = Arc::clone(&queue);
            let providers = providers.clone();
            let done = done.clone();
            threads.push(
                thread::Builder::new()
                    .name(format!("push-{i}"))
                    .stack_size(WORKER_STACK)
                    .spawn(move || {
                        while let Some(job) = queue.take() {
                            let _busy = crate::metrics::global().busy();
                            let outcome = providers.send(job.service, &job.message);
                            if done
                                .send(Event::PushDone {
                                    job: job.id,
                                    outcome,
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                    })?,
            );
        }
        Ok(Pool { queue, threads })
    }

    /// A submit function for the core: refuses at once when the queue is full.
    pub fn submitter(&self) -> impl FnMut(Job) -> Result<(), Job> + Send + 'static {
        let queue = Arc::clone(&self.queue);
        move |job| {
            let mut state = queue.lock();
            if state.closed || state.jobs.len() >= queue.capacity {
                return Err(job);
            }
            state.jobs.push_back(job);
            crate::metrics::global().queue_depth(state.jobs.len());
            let wake = state.idle > 0;
            drop(state);
            if wake {
                queue.ready.notify_one();
            }
            Ok(())
        }
    }

    /// Closes the queue and waits for the workers to finish the jobs it holds.
    pub fn join(mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
