//! Task events leave the service through a transactional outbox.
//!
//! - [`record`]: the event record and its CloudEvents 1.0 form. Every committed task change
//!   writes one, in the change's own transaction (the store does it; [`crate::tasks::TaskService`]
//!   decides which event a change makes), so there is no change without its event and no event
//!   without its change.
//! - `relay`: a background worker that publishes pending events in `sequence` order to the
//!   configured sink, at least once, retrying with capped exponential backoff; one instance
//!   at a time holds the relay lease.
//! - `sinks`: `log`, `dapr` (a Dapr sidecar's publish API) and `http` (any webhook).
//! - `feed`: `GET /api/{user_id}/events`, as JSON pages or Server-Sent Events.
//!
//! [`Events`] is the handle the rest of the service holds: requests tell it that something
//! was committed (so the relay and the live feeds look at once, never waiting for the sink),
//! `/ready` reads the relay's lag from it, and shutdown goes through it.

mod feed;
pub mod record;
mod relay;
pub mod settings;
mod sinks;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use crate::{app::AppState, storage::Store};

pub use settings::{EventSettings, SinkSettings};

/// The `/api/{user_id}/events` feed.
pub fn router() -> OpenApiRouter<AppState> {
    feed::router()
}

/// The relay's lag, as `/ready` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct Lag {
    /// Events committed and not yet delivered to the sink.
    pub pending: u64,
    /// Age of the oldest undelivered event, in seconds (0 when none).
    pub oldest_pending_age_seconds: f64,
    /// Whether this instance's relay holds the lease and publishes (`leader`), waits for it
    /// (`standby`), or has not looked yet (`starting`).
    pub relay: RelayRole,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RelayRole {
    #[default]
    Starting,
    Leader,
    Standby,
}

/// The handle to the outbox's moving parts; cheap to clone.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    settings: EventSettings,
    /// Rung after every local commit, so the relay publishes without waiting for its poll.
    relay_wake: Notify,
    /// Rung after every local commit, so the live feeds' head is read at once.
    feed_wake: Notify,
    /// The newest committed sequence this instance knows of; live feeds wait on it.
    head: watch::Sender<i64>,
    /// Becomes true when the service stops: streams end, the relay gives up its lease.
    stopping: watch::Sender<bool>,
    lag: Mutex<Lag>,
    /// Open live feeds per user.
    streams: Mutex<HashMap<String, usize>>,
}

impl Events {
    pub fn new(store: Arc<dyn Store>, settings: EventSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                settings,
                relay_wake: Notify::new(),
                feed_wake: Notify::new(),
                head: watch::Sender::new(0),
                stopping: watch::Sender::new(false),
                lag: Mutex::new(Lag::default()),
                streams: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts the relay and the live feeds' head watcher; they run until [`Events::stop`].
    pub fn start(&self) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let sink = sinks::Sink::new(&self.inner.settings)?;
        Ok(vec![
            tokio::spawn(relay::run(self.clone(), sink)),
            tokio::spawn(watch_head(self.clone())),
        ])
    }

    /// The CloudEvents `source` of new events.
    pub fn source(&self) -> &str {
        &self.inner.settings.source
    }

    /// Says that a change and its event were committed here: the relay and the live feeds
    /// look now rather than at their next poll. Never waits.
    pub fn committed(&self) {
        self.inner.relay_wake.notify_one();
        self.inner.feed_wake.notify_one();
    }

    /// The relay's lag as last measured (about once a second), for `/ready` and metrics.
    pub fn lag(&self) -> Lag {
        *self.inner.lag.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_lag(&self, lag: Lag) {
        *self.inner.lag.lock().unwrap_or_else(|e| e.into_inner()) = lag;
    }

    /// Ends the live feeds and stops the relay (which gives up its lease).
    pub fn stop(&self) {
        self.inner.stopping.send_replace(true);
    }

    fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.stopping.subscribe()
    }

    fn settings(&self) -> &EventSettings {
        &self.inner.settings
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// A place for one more live feed of `user_id`; `None` at the per-user cap.
    fn open_stream(&self, user_id: &str) -> Option<StreamSlot> {
        let mut streams = self.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
        let open = streams.entry(user_id.to_owned()).or_default();
        if *open >= self.inner.settings.streams_per_user {
            return None;
        }
        *open += 1;
        Some(StreamSlot {
            events: self.clone(),
            user_id: user_id.to_owned(),
        })
    }
}

/// One open live feed, counted against its user's cap until dropped.
struct StreamSlot {
    events: Events,
    user_id: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self
            .events
            .inner
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(open) = streams.get_mut(&self.user_id) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(&self.user_id);
            }
        }
    }
}

/// Keeps `head` at the newest committed sequence while live feeds listen: at once after a
/// local commit, and every poll interval for commits made through other instances. Polling
/// one row works through any pooler, where `LISTEN` needs a session of its own.
async fn watch_head(events: Events) {
    let mut stopping = events.stopping();
    let interval = events.settings().poll_interval;
    loop {
        tokio::select! {
            () = events.inner.feed_wake.notified() => {}
            () = tokio::time::sleep(interval) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        if events.inner.head.receiver_count() == 0 {
            continue;
        }
        match events.store().last_sequence().await {
            Ok(sequence) => {
                events.inner.head.send_if_modified(|head| {
                    let newer = sequence > *head;
                    if newer {
                        *head = sequence;
                    }
                    newer
                });
            }
            Err(error) => {
                tracing::debug!(%error, "could not read the event log's head");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
