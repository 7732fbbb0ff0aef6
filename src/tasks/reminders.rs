//! The reminder scan: every `REMINDERS_POLL_MILLISECONDS`, each instance sends the
//! `todo.task.reminder` events of tasks whose `remind_at` has passed (see
//! [`TaskService::send_due_reminders`]). The claim of a task and its event commit together,
//! so a reminder is sent once however many instances scan, and one that fell due while no
//! instance ran is sent by the first scan after start.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use super::TaskService;
use crate::error::ApiError;

/// Starts the scan; abort the handle to stop it (a batch being written still commits).
/// `sent` counts the reminders this instance sends (`reminders_sent_total` on `/metrics`).
pub fn spawn(
    service: TaskService,
    poll: Duration,
    sent: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match service.send_due_reminders().await {
                Ok(0) => {}
                Ok(count) => {
                    sent.fetch_add(count as u64, Ordering::Relaxed);
                    tracing::debug!(sent = count, "sent due reminders");
                }
                // The database is away: due reminders wait for it, none is lost.
                Err(ApiError::Unavailable) => {
                    tracing::debug!("could not look for due reminders: database unavailable");
                }
                Err(error) => tracing::warn!(%error, "could not send due reminders"),
            }
        }
    })
}
