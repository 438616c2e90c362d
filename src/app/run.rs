//! The core thread's loop: reads events in batches, hands the replies to the writer,
//! and wakes only for the next timer (the systemd watchdog at half its interval, the
//! hourly counters, the expiry, the shutdown deadline), never on a fixed tick. The only
//! code of the core that reads the clocks.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{App, Event, Now};
use crate::net::WriteMsg;
use crate::system::Notifier;

/// How often the core logs its counters.
pub const STATS_EVERY: Duration = Duration::from_secs(3600);

/// Most events handled in one batch (one transaction, one hand-off to the writer).
pub const MAX_BATCH: usize = 512;

impl Now {
    /// The clocks now.
    pub fn from_clock() -> Now {
        Now {
            mono: Instant::now(),
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        }
    }
}

/// Runs the core until the channel closes or, after [`Event::Shutdown`], until the
/// pushes in flight are answered (at most `drain_time`).
pub fn run(
    mut app: App,
    rx: mpsc::Receiver<Event>,
    writer: mpsc::SyncSender<WriteMsg>,
    notifier: Option<Arc<Notifier>>,
    drain_time: Duration,
) {
    let watchdog = notifier.as_ref().and_then(|n| n.watchdog_interval());
    let mut timers = Timers::new(Instant::now(), watchdog);
    loop {
        let wake = timers.next(app.next_timer());
        let mut batch = Vec::new();
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(first) => batch.push(first),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        while !batch.is_empty() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let now = Now::from_clock();
        if timers.drain.is_none() && batch.iter().any(|e| matches!(e, Event::Shutdown)) {
            if app.pending() > 0 {
                log::info!("waiting for {} pushes in flight", app.pending());
            }
            timers.drain = Some(now.mono + drain_time);
        }
        if !batch.is_empty() {
            let replies = app.handle_batch(now, batch);
            if !replies.is_empty() {
                let _ = writer.send(WriteMsg::Batch(replies));
            }
        }
        if let (Some(n), Some((every, at))) = (&notifier, timers.watchdog) {
            if now.mono >= at {
                n.notify("WATCHDOG=1");
                timers.watchdog = Some((every, now.mono + every));
            }
        }
        if now.mono >= timers.stats {
            timers.stats = now.mono + STATS_EVERY;
            log_counters(&mut app);
        }
        if let Some(until) = timers.drain {
            if app.pending() == 0 {
                break;
            }
            if now.mono >= until {
                log::warn!(
                    "{} pushes still in flight at shutdown; their replies are lost",
                    app.pending()
                );
                break;
            }
        } else if app.next_timer().is_some_and(|t| now.mono >= t) {
            app.tick(now);
        }
    }
}

/// When the loop has something to do without an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timers {
    /// The watchdog's period (half the interval systemd expects, so one late wake-up
    /// is no miss) and when it is next due.
    watchdog: Option<(Duration, Instant)>,
    /// The next counters line.
    stats: Instant,
    /// The end of the shutdown's wait for pushes in flight.
    drain: Option<Instant>,
}

impl Timers {
    fn new(start: Instant, watchdog: Option<Duration>) -> Timers {
        let watchdog = watchdog.map(|w| {
            let every = (w / 2).max(Duration::from_millis(100));
            (every, start + every)
        });
        Timers {
            watchdog,
            stats: start + STATS_EVERY,
            drain: None,
        }
    }

    /// The earliest of the loop's timers and the core's own (`app`).
    fn next(&self, app: Option<Instant>) -> Instant {
        [self.watchdog.map(|(_, at)| at), app, self.drain]
            .into_iter()
            .flatten()
            .fold(self.stats, Instant::min)
    }
}

/// The hourly log line.
fn log_counters(app: &mut App) {
    let c = app.take_counters();
    log::info!(
        "last hour: {} pushes delivered, {} coalesced, {} dead tokens, {} failed, {} kept for unproven credentials; \
         {} new registrations, {} renewed, {} removed, {} expired; {} refused by limits ({} by the per-domain cap); {} writes failed on a locked database; {} in flight",
        c.delivered,
        c.coalesced,
        c.dead,
        c.failed,
        c.unproven,
        c.registered,
        c.renewed,
        c.unregistered,
        c.expired,
        c.limited,
        c.domain_full,
        c.busy,
        app.pending()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_core_sleeps_until_its_next_timer() {
        let start = Instant::now();
        // No watchdog, no expiry: the hourly counters.
        let t = Timers::new(start, None);
        assert_eq!(t.next(None), start + Duration::from_secs(3600));
        // The expiry, a minute after the start.
        let expiry = start + Duration::from_secs(60);
        assert_eq!(t.next(Some(expiry)), expiry);
        // systemd's WatchdogSec=30: every 15 s.
        let t = Timers::new(start, Some(Duration::from_secs(30)));
        assert_eq!(t.next(Some(expiry)), start + Duration::from_secs(15));
        // A shutdown's deadline.
        let mut t = Timers::new(start, None);
        t.drain = Some(start + Duration::from_secs(17));
        assert_eq!(t.next(Some(expiry)), start + Duration::from_secs(17));
    }
}
