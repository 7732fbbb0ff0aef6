//! Group commit of creates, on both databases. Concurrent creates join a queue; whoever
//! takes the store's turn to write creates next writes the oldest of them (up to
//! [`BATCH_MAX`]) in one transaction, and each create learns its own outcome. What every
//! write pays once whatever its size is then paid once per run: on SQLite the write lock
//! and the hand-off to the connection's thread, on PostgreSQL the event log's head row,
//! locked from the event's append to the commit, and on both the commit's flush.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::StoreError;
use crate::{events::record::NewEvent, tasks::domain::Task};

/// The most creates one run writes. SQLite's run is one text per size, each cached on its
/// connection, so the sizes must stay few; beyond a few dozen, a run's latency grows with
/// no gain in throughput.
pub(crate) const BATCH_MAX: usize = 16;

/// A create waiting to be written, and where its outcome goes.
pub(crate) struct QueuedCreate {
    pub task: Task,
    pub event: NewEvent,
    written: oneshot::Sender<Result<(), StoreError>>,
}

impl QueuedCreate {
    /// Tells the create's caller how its write ended.
    pub fn settle(self, outcome: Result<(), StoreError>) {
        // The caller runs to completion (`to_completion`); if it is gone, nobody is owed.
        let _ = self.written.send(outcome);
    }
}

/// A create's outcome, as its caller waits for it.
pub(crate) type Outcome = oneshot::Receiver<Result<(), StoreError>>;

/// The creates waiting for the next run, oldest first.
#[derive(Default)]
pub(crate) struct CreateQueue {
    queued: Mutex<Vec<QueuedCreate>>,
}

impl CreateQueue {
    /// Queues the create of `task` with its `event`.
    pub fn join(&self, task: &Task, event: &NewEvent) -> Outcome {
        let (written, outcome) = oneshot::channel();
        self.queued().push(QueuedCreate {
            task: task.clone(),
            event: event.clone(),
            written,
        });
        outcome
    }

    /// The oldest queued creates, up to [`BATCH_MAX`], now out of the queue.
    pub fn take(&self) -> Vec<QueuedCreate> {
        let mut queue = self.queued();
        let taken = queue.len().min(BATCH_MAX);
        queue.drain(..taken).collect()
    }

    /// Takes the create of task `id` back out of the queue: false if a run has it already
    /// (its outcome is then on its way).
    pub fn withdraw(&self, id: Uuid) -> bool {
        let mut queue = self.queued();
        match queue.iter().position(|queued| queued.task.id == id) {
            Some(at) => {
                queue.remove(at);
                true
            }
            None => false,
        }
    }

    fn queued(&self) -> MutexGuard<'_, Vec<QueuedCreate>> {
        self.queued.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The outcome a queued create received (an error if its run was dropped unsent, which
/// `to_completion` prevents).
pub(crate) fn received(
    outcome: Result<Result<(), StoreError>, oneshot::error::RecvError>,
) -> Result<(), StoreError> {
    outcome.unwrap_or_else(|gone| Err(StoreError::Other(gone.into())))
}

/// How one database writes a run of creates.
pub(crate) trait CreateRuns {
    /// Writes every one of `creates` (task, tags, event) in one transaction, or none of them.
    async fn run(&mut self, creates: &[QueuedCreate]) -> Result<(), sqlx::Error>;

    /// Whether a failed run failed on one create's own data (a constraint or a trigger
    /// refusing it, a value out of range), so that the others may succeed without it.
    fn concerns_one_create(error: &sqlx::Error) -> bool;
}

/// Writes `batch` in one run and settles each create. When the run fails on one create's
/// data, each is written again in a run of its own, so that only that one fails; any other
/// failure (a lock held by another process past the timeout, a full disk, a lost
/// connection) would fail each of them alike, so all get it at once, without a retry apiece.
pub(crate) async fn write_in_runs<R: CreateRuns>(runs: &mut R, batch: Vec<QueuedCreate>) {
    if batch.len() > 1 {
        match runs.run(&batch).await {
            Ok(()) => {
                for queued in batch {
                    queued.settle(Ok(()));
                }
                return;
            }
            Err(error) if !R::concerns_one_create(&error) => {
                for queued in batch {
                    queued.settle(Err(StoreError::each_of(&error)));
                }
                return;
            }
            Err(_) => {}
        }
    }
    for queued in batch {
        let outcome = runs.run(std::slice::from_ref(&queued)).await;
        queued.settle(outcome.map_err(StoreError::from));
    }
}
