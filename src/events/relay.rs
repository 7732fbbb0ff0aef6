//! The relay: publishes pending events in `sequence` order, at least once.
//!
//! - **One publisher among instances.** The relay publishes only while it holds the lease
//!   row (`event_relay_lease`), taken when free or expired and renewed by its holder; the
//!   lease lasts `EVENTS_SINK_TIMEOUT_SECONDS` + 2 s, and the holder renews it before a
//!   publish whenever a second has passed, so a publish always ends inside the lease. If the
//!   holder dies, another instance takes over once the lease expires (its standby relay
//!   looks every second). A lease row holds no session state, so it works through PgBouncer
//!   in transaction mode as well as directly. Marking events delivered checks the lease in
//!   the same statement: a relay that lost it cannot mark what the new holder publishes.
//! - **At least once, in order.** Events are read oldest first and published one at a time;
//!   an event is marked delivered only after the sink took it and every earlier one. A sink
//!   that is down, slow, refusing or timing out is retried, the same event (same `id`) again,
//!   with exponential backoff from 100 ms up to `EVENTS_RETRY_MAX_SECONDS`; nothing behind it
//!   is published meanwhile. A crash between publish and mark publishes the event again
//!   after the restart, with the same `id`: consumers deduplicate on it.
//! - **Requests never wait**: they only ring [`Events::committed`].
//! - Delivered events older than `EVENTS_RETENTION_HOURS` are pruned by the lease holder.

use std::time::{Duration, Instant};

use chrono::Utc;
use uuid::Uuid;

use super::{Events, Lag, RelayRole, record::StoredEvent, sinks::Sink};

/// How many events one read takes.
const BATCH: u32 = 100;
/// How often a standby relay tries for the lease, and the holder renews it.
const RENEW_EVERY: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// How often the backlog is measured for `/ready` and the log.
const MEASURE_EVERY: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Why the relay stopped publishing a batch.
enum Interrupted {
    Stopping,
    LostLease,
}

struct Relay {
    events: Events,
    sink: Sink,
    holder: String,
    /// When the lease was last renewed (before the statement was sent), if held.
    renewed: Option<Instant>,
    measured: Instant,
    pruned: Option<Instant>,
    /// The age last reported as a warning, so that lag is logged when it grows.
    reported_age: f64,
}

pub async fn run(events: Events, sink: Sink) {
    let holder = format!("{}:{}", std::process::id(), Uuid::new_v4().simple());
    tracing::info!(sink = sink.name(), relay = %holder, "event relay started");
    let mut relay = Relay {
        events,
        sink,
        holder,
        renewed: None,
        measured: Instant::now() - MEASURE_EVERY,
        pruned: None,
        reported_age: 0.0,
    };
    relay.run().await;
}

impl Relay {
    async fn run(&mut self) {
        let mut stopping = self.events.stopping();
        loop {
            if *stopping.borrow() {
                break;
            }
            self.measure().await;
            if !self.hold_lease().await {
                self.wait(RENEW_EVERY, &mut stopping).await;
                continue;
            }
            self.prune().await;
            let batch = match self.events.store().pending_events(BATCH).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "event relay could not read pending events");
                    self.wait(RENEW_EVERY, &mut stopping).await;
                    continue;
                }
            };
            if batch.is_empty() {
                let interval = self.events.settings().poll_interval.min(RENEW_EVERY);
                self.wait(interval, &mut stopping).await;
                continue;
            }
            match self.publish_batch(&batch, &mut stopping).await {
                Ok(()) | Err(Interrupted::LostLease) => {}
                Err(Interrupted::Stopping) => break,
            }
        }
        if self.renewed.is_some()
            && let Err(error) = self.events.store().release_relay_lease(&self.holder).await
        {
            tracing::warn!(%error, "event relay could not release its lease");
        }
        tracing::info!("event relay stopped");
    }

    /// Publishes `batch` in order, each event until the sink takes it, and marks what was
    /// delivered (also before each backoff, so a long outage does not hold marks back).
    async fn publish_batch(
        &mut self,
        batch: &[StoredEvent],
        stopping: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), Interrupted> {
        let mut delivered: Option<i64> = None;
        let result = async {
            for event in batch {
                let mut delay = FIRST_RETRY;
                let mut attempt = 1u32;
                loop {
                    if *stopping.borrow() {
                        return Err(Interrupted::Stopping);
                    }
                    if !self.hold_lease().await {
                        return Err(Interrupted::LostLease);
                    }
                    match self.sink.publish(event).await {
                        Ok(()) => break,
                        Err(error) => {
                            tracing::warn!(
                                sink = self.sink.name(),
                                event_id = %event.id,
                                sequence = event.sequence,
                                attempt,
                                retry_in_ms = delay.as_millis() as u64,
                                %error,
                                "publishing a task event failed; retrying"
                            );
                            if let Some(through) = delivered.take() {
                                self.mark(through).await;
                            }
                            self.measure().await;
                            // Commits do not cut a backoff short: the sink needs the rest.
                            tokio::select! {
                                () = tokio::time::sleep(delay) => {}
                                _ = stopping.wait_for(|stop| *stop) => {}
                            }
                            delay = (delay * 2).min(self.events.settings().retry_max);
                            attempt += 1;
                        }
                    }
                }
                delivered = Some(event.sequence);
            }
            Ok(())
        }
        .await;
        if let Some(through) = delivered {
            self.mark(through).await;
        }
        result
    }

    async fn mark(&mut self, through: i64) {
        // A failure here only means the events are published again later, same ids.
        match self
            .events
            .store()
            .mark_delivered(through, &self.holder)
            .await
        {
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, through, "event relay could not mark events delivered")
            }
        }
    }

    /// Takes or renews the lease when a second has passed since the last renewal; whether
    /// it is held now, with enough time left for one publish.
    async fn hold_lease(&mut self) -> bool {
        if let Some(renewed) = self.renewed
            && renewed.elapsed() < RENEW_EVERY
        {
            return true;
        }
        let started = Instant::now();
        let ttl = self.events.settings().lease_ttl();
        let held = match self
            .events
            .store()
            .hold_relay_lease(&self.holder, ttl)
            .await
        {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(%error, "event relay could not renew its lease");
                false
            }
        };
        let was_leader = self.renewed.is_some();
        self.renewed = held.then_some(started);
        if held != was_leader {
            if held {
                tracing::info!(relay = %self.holder, "event relay holds the lease; publishing");
            } else {
                tracing::info!(relay = %self.holder, "event relay is on standby");
            }
        }
        held
    }

    async fn prune(&mut self) {
        if self.pruned.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
            return;
        }
        self.pruned = Some(Instant::now());
        let retention = self.events.settings().retention;
        let cutoff = Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
        match self.events.store().prune_delivered(cutoff).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned delivered task events"),
            Err(error) => tracing::warn!(%error, "could not prune delivered task events"),
        }
    }

    /// Measures the backlog (about once a second) for `/ready`, and logs it when it grows.
    async fn measure(&mut self) {
        if self.measured.elapsed() < MEASURE_EVERY {
            return;
        }
        self.measured = Instant::now();
        let backlog = match self.events.store().event_backlog().await {
            Ok(backlog) => backlog,
            Err(error) => {
                tracing::debug!(%error, "could not measure the event backlog");
                return;
            }
        };
        let age = backlog
            .oldest
            .map(|oldest| ((Utc::now() - oldest).num_milliseconds().max(0) as f64) / 1000.0)
            .unwrap_or(0.0);
        let relay = if self.renewed.is_some() {
            RelayRole::Leader
        } else {
            RelayRole::Standby
        };
        self.events.set_lag(Lag {
            pending: backlog.pending,
            oldest_pending_age_seconds: age,
            relay,
        });
        // Logged when it grows: past 5 s, then each time it doubles.
        if age >= 5.0 && age >= self.reported_age * 2.0 {
            tracing::warn!(
                pending = backlog.pending,
                oldest_pending_age_seconds = age,
                "task events are waiting to be published"
            );
            self.reported_age = age;
        } else if backlog.pending == 0 && self.reported_age > 0.0 {
            tracing::info!("the event relay has caught up");
            self.reported_age = 0.0;
        }
    }

    /// Sleeps up to `bound`, waking early for a local commit or for shutdown.
    async fn wait(&self, bound: Duration, stopping: &mut tokio::sync::watch::Receiver<bool>) {
        tokio::select! {
            () = tokio::time::sleep(bound) => {}
            () = self.events.inner.relay_wake.notified() => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }
}
