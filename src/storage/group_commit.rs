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

/// A create in the queue, as its caller holds it. Dropped before a run took the create (its
/// caller gave up), it takes the create back out of the queue, so that nothing is written
/// for a caller that was told nothing.
pub(crate) struct Joined<'a> {
    queue: &'a CreateQueue,
    id: Uuid,
    outcome: oneshot::Receiver<Result<(), StoreError>>,
}

impl Joined<'_> {
    /// The create's outcome, once a run has written it (an error if the run was dropped
    /// before it said, which `to_completion` prevents). Safe to drop and await again: the
    /// outcome waits in its channel.
    pub async fn outcome(&mut self) -> Result<(), StoreError> {
        (&mut self.outcome)
            .await
            .unwrap_or_else(|gone| Err(StoreError::Other(gone.into())))
    }
}

impl Drop for Joined<'_> {
    fn drop(&mut self) {
        // Usually a run has taken it already, and this finds nothing.
        self.queue.withdraw(self.id);
    }
}

/// The creates waiting for the next run, oldest first.
#[derive(Default)]
pub(crate) struct CreateQueue {
    queued: Mutex<Vec<QueuedCreate>>,
}

impl CreateQueue {
    /// Queues the create of `task` with its `event`.
    pub fn join(&self, task: &Task, event: &NewEvent) -> Joined<'_> {
        let (written, outcome) = oneshot::channel();
        self.queued().push(QueuedCreate {
            task: task.clone(),
            event: event.clone(),
            written,
        });
        Joined {
            queue: self,
            id: task.id,
            outcome,
        }
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

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::{events::record::EventType, tasks::domain::Priority};

    fn task() -> Task {
        let now = Utc::now();
        Task {
            id: Uuid::now_v7(),
            user_id: "owner".into(),
            title: "a task".into(),
            description: None,
            completed: false,
            created_at: now,
            updated_at: now,
            priority: Priority::default(),
            tags: Default::default(),
            due_at: None,
            remind_at: None,
            recurrence: None,
            next_task_id: None,
            version: 1,
            reminder_sent: false,
        }
    }

    fn queued(queue: &CreateQueue) -> usize {
        queue.queued().len()
    }

    #[test]
    fn a_create_given_up_before_a_run_took_it_leaves_the_queue() {
        let queue = CreateQueue::default();
        let (first, second) = (task(), task());
        let kept = queue.join(&first, &NewEvent::new(EventType::Created, "s", &first));
        let given_up = queue.join(&second, &NewEvent::new(EventType::Created, "s", &second));
        drop(given_up);
        assert_eq!(queued(&queue), 1);
        let run = queue.take();
        assert_eq!(run.len(), 1);
        assert_eq!(run[0].task.id, first.id);
        // Taken by a run, it stays the run's: dropping its caller takes nothing out.
        let third = task();
        let _waiting = queue.join(&third, &NewEvent::new(EventType::Created, "s", &third));
        drop(kept);
        assert_eq!(queued(&queue), 1);
    }

    #[test]
    fn a_run_takes_the_oldest_creates_up_to_its_size() {
        let queue = CreateQueue::default();
        let tasks: Vec<Task> = (0..BATCH_MAX + 3).map(|_| task()).collect();
        let _joined: Vec<Joined<'_>> = tasks
            .iter()
            .map(|task| queue.join(task, &NewEvent::new(EventType::Created, "s", task)))
            .collect();
        let run: Vec<Uuid> = queue.take().iter().map(|queued| queued.task.id).collect();
        let oldest: Vec<Uuid> = tasks[..BATCH_MAX].iter().map(|task| task.id).collect();
        assert_eq!(run, oldest);
        assert_eq!(queued(&queue), 3);
    }
}
