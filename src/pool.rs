//! A fixed set of push worker threads fed by a bounded queue.
//!
//! Workers block on the provider's HTTP exchange, never the core: the core submits with
//! [`Pool::submit`], which refuses at once when the queue is full, and outcomes come
//! back as [`Event::PushDone`] on the core's channel.

use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use crate::app::{Event, Job, Service};
#[cfg(feature = "apns")]
use crate::push::apns::ApnsClient;
use crate::push::fcm::FcmClient;
use crate::push::{Outcome, PushMessage};

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
        Outcome::Failed {
            reason: format!("{} is not configured", service.as_str()),
        }
    }
}

/// The worker pool.
pub struct Pool {
    queue: Option<SyncSender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `workers` threads taking jobs from a queue of `capacity`, reporting to `done`.
    pub fn start(
        workers: usize,
        capacity: usize,
        providers: Providers,
        done: Sender<Event>,
    ) -> std::io::Result<Pool> {
        let (tx, rx) = mpsc::sync_channel::<Job>(capacity);
        let rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let rx = Arc::clone(&rx);
            let providers = providers.clone();
            let done = done.clone();
            threads.push(
                thread::Builder::new()
                    .name(format!("push-{i}"))
                    .stack_size(WORKER_STACK)
                    .spawn(move || loop {
                        let job = {
                            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
                            rx.recv()
                        };
                        let Ok(job) = job else { return };
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
                    })?,
            );
        }
        Ok(Pool {
            queue: Some(tx),
            threads,
        })
    }

    /// A submit function for the core: refuses at once when the queue is full.
    pub fn submitter(&self) -> impl FnMut(Job) -> Result<(), Job> + Send + 'static {
        let queue = self.queue.clone().expect("pool is running");
        move |job| match queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => Err(job),
        }
    }

    /// Closes the queue and waits for the workers to finish the jobs they hold.
    pub fn join(mut self) {
        self.queue.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
