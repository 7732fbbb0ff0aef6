//! Refused requests (429 and 503) in the log without a line each: the first refusal of a
//! kind (status and reason) after a quiet period is logged at once, later ones are counted,
//! and [`RefusalLog::flush`] — every [`SUMMARY_INTERVAL`] — writes one summary line per kind
//! that had any: "N requests refused with 503 (database unavailable) in the last 10 s". A
//! login flood or an outage then costs a few lines every ten seconds, not one per request.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

/// How often suppressed refusals are summarised.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct RefusalLog {
    /// The kinds refused since the last summary (the others are quiet), each with the
    /// refusals counted but not logged one by one. Reasons are static strings, so the map
    /// stays small whatever the traffic.
    kinds: Mutex<HashMap<(u16, &'static str), u64>>,
}

impl RefusalLog {
    /// Records one refusal; `true` when it should be logged on its own line (the first of
    /// its kind in a quiet period), `false` when it is counted for the next summary.
    pub fn record(&self, status: u16, reason: &'static str) -> bool {
        let mut kinds = self
            .kinds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match kinds.get_mut(&(status, reason)) {
            Some(suppressed) => {
                *suppressed += 1;
                false
            }
            None => {
                kinds.insert((status, reason), 0);
                true
            }
        }
    }

    /// Logs one summary line per kind with suppressed refusals, and marks kinds that had
    /// none as quiet, so that their next refusal is logged at once again.
    pub fn flush(&self) {
        let mut kinds = self
            .kinds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        kinds.retain(|&(status, reason), suppressed| {
            if *suppressed == 0 {
                return false;
            }
            let refused = std::mem::take(suppressed);
            let seconds = SUMMARY_INTERVAL.as_secs();
            let message = format!(
                "{refused} requests refused with {status} ({reason}) in the last {seconds} s"
            );
            if status >= 500 {
                tracing::warn!(
                    status,
                    reason,
                    refused,
                    interval_seconds = seconds,
                    "{message}"
                );
            } else {
                tracing::info!(
                    status,
                    reason,
                    refused,
                    interval_seconds = seconds,
                    "{message}"
                );
            }
            true
        });
    }

    /// Flushes every [`SUMMARY_INTERVAL`] on a task of its own, until the log is dropped.
    pub fn summarise_periodically(log: &Arc<Self>) {
        let log: Weak<Self> = Arc::downgrade(log);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SUMMARY_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match log.upgrade() {
                    Some(log) => log.flush(),
                    None => break,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_of_a_kind_is_logged_and_the_rest_are_counted() {
        let log = RefusalLog::default();
        assert!(log.record(503, "database unavailable"));
        assert!(!log.record(503, "database unavailable"));
        assert!(
            log.record(503, "password hashing at capacity"),
            "another kind"
        );
        assert!(log.record(429, "rate limit"));
        log.flush();
        // Still active after a summary with refusals: the flood goes on being counted.
        assert!(!log.record(503, "database unavailable"));
        // A kind whose only refusal was logged on its own line is quiet again.
        assert!(log.record(503, "password hashing at capacity"));
        log.flush();
        log.flush();
        // A whole interval without refusals: the next one is logged at once.
        assert!(log.record(503, "database unavailable"));
    }
}
