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
    writer: mpsc::Sender<WriteMsg>,
    notifier: Option<Arc<Notifier>>,
    drain_time: Duration,
) {
    let start = Instant::now();
    // Notified at half the interval systemd expects, so one late wake-up is no miss.
    let watchdog = notifier
        .as_ref()
        .and_then(|n| n.watchdog_interval())
        .map(|w| (w / 2).max(Duration::from_millis(100)));
    let mut next_watchdog = watchdog.map(|w| start + w);
    let mut next_stats = start + STATS_EVERY;
    let mut drain_until: Option<Instant> = None;
    loop {
        let wake = [
            Some(next_stats),
            next_watchdog,
            app.next_timer(),
            drain_until,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(next_stats);
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
        if drain_until.is_none() && batch.iter().any(|e| matches!(e, Event::Shutdown)) {
            if app.pending() > 0 {
                log::info!("waiting for {} pushes in flight", app.pending());
            }
            drain_until = Some(now.mono + drain_time);
        }
        if !batch.is_empty() {
            let replies = app.handle_batch(now, batch);
            if !replies.is_empty() {
                let _ = writer.send(WriteMsg::Batch(replies));
            }
        }
        if let (Some(n), Some(every), Some(at)) = (&notifier, watchdog, next_watchdog) {
            if now.mono >= at {
                n.notify("WATCHDOG=1");
                next_watchdog = Some(now.mono + every);
            }
        }
        if now.mono >= next_stats {
            next_stats = now.mono + STATS_EVERY;
            log_counters(&mut app);
        }
        if let Some(until) = drain_until {
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
