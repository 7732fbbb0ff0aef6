//! Group commit of task writes, on both databases. Concurrent writes of one kind (creates,
//! or updates) join a queue; whoever takes the store's turn to write that kind
//! next writes the oldest of them (up to [`BATCH_MAX`]) in one transaction, and each write
//! learns its own outcome. What every write pays once whatever its size is then paid once
//! per run: on SQLite the write lock and the hand-offs to the connection's thread (one for a
//! run of creates, two for a run of updates), on PostgreSQL the event log's head row, locked
//! from the event's append to the commit, and on both the commit's flush.
//!
//! Updates are optimistic ([`update_optimistically`]): planned from the task as read, and
//! written only if it is unchanged; updates of one task pass through its lane one at a time.

use std::{
    collections::HashMap,
    ops::Deref,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::{PlanUpdate, Store, StoreError, TaskUpdate};
use crate::{events::record::NewEvent, tasks::domain::Task};

/// The most writes one run writes. SQLite's run of creates, and the first statement of its
/// run of updates, are one text per size, each cached on its connection, so the sizes must
/// stay few; beyond a few dozen, a run's latency grows with no gain in throughput.
pub(crate) const BATCH_MAX: usize = 16;

/// A write that can wait in a [`WriteQueue`].
pub(crate) trait QueuedWrite {
    /// What a run tells the write's caller when the run commits.
    type Outcome;
    /// The task the write changes: one run writes each task at most once.
    fn task_id(&self) -> Uuid;
}

/// A create: the new task and its `todo.task.created` event.
pub(crate) struct Create {
    pub task: Task,
    pub event: NewEvent,
}

impl QueuedWrite for Create {
    type Outcome = ();
    fn task_id(&self) -> Uuid {
        self.task.id
    }
}

/// An update planned from the task as its caller read it, at `expected_version`: a run
/// writes it only if the task is still at that version (compare-and-set), and tells the
/// caller whether it did. A caller told no reads the task again and plans anew.
pub(crate) struct Update {
    pub expected_version: i64,
    /// The task's reminder flag when it was read: a sent reminder sets it without a new
    /// version. (The search keys, which the start-up backfill also writes without one, are
    /// derived from the title, and the update writes them again from its own.)
    pub expected_reminder_sent: bool,
    /// The tags the task had when it was read: its tag rows are rewritten only if they change.
    pub tags_before: crate::tasks::domain::Tags,
    pub update: TaskUpdate,
}

impl QueuedWrite for Update {
    /// Whether the task was still at `expected_version`, and so written.
    type Outcome = bool;
    fn task_id(&self) -> Uuid {
        self.update.task.id
    }
}

/// A write waiting to be written, and where its outcome goes.
pub(crate) struct Queued<W: QueuedWrite> {
    write: W,
    ticket: u64,
    settled: oneshot::Sender<Result<W::Outcome, StoreError>>,
}

impl<W: QueuedWrite> Queued<W> {
    /// Tells the write's caller how its write ended.
    pub fn settle(self, outcome: Result<W::Outcome, StoreError>) {
        // The caller runs to completion (`to_completion`); if it is gone, nobody is owed.
        let _ = self.settled.send(outcome);
    }
}

impl<W: QueuedWrite> Deref for Queued<W> {
    type Target = W;
    fn deref(&self) -> &W {
        &self.write
    }
}

pub(crate) type QueuedCreate = Queued<Create>;
pub(crate) type QueuedUpdate = Queued<Update>;

/// A write in the queue, as its caller holds it. Dropped before a run took the write (its
/// caller gave up), it takes the write back out of the queue, so that nothing is written
/// for a caller that was told nothing.
pub(crate) struct Joined<'a, W: QueuedWrite> {
    queue: &'a WriteQueue<W>,
    ticket: u64,
    outcome: oneshot::Receiver<Result<W::Outcome, StoreError>>,
}

impl<W: QueuedWrite> Joined<'_, W> {
    /// The write's outcome, once a run has decided it (an error if the run was dropped
    /// before it said, which `to_completion` prevents). Safe to drop and await again: the
    /// outcome waits in its channel.
    pub async fn outcome(&mut self) -> Result<W::Outcome, StoreError> {
        (&mut self.outcome)
            .await
            .unwrap_or_else(|gone| Err(StoreError::Other(gone.into())))
    }

    /// Waits for the write's outcome, leading a run whenever the store's turn to write comes
    /// first: [`Leads::lead`] writes the queue's oldest writes in that turn. When it fails
    /// (the writer cannot be had), the write is withdrawn with that error, unless a run has
    /// taken it already.
    pub async fn written<S: Leads<W>>(&mut self, store: &S) -> Result<W::Outcome, StoreError> {
        loop {
            tokio::select! {
                biased;
                outcome = self.outcome() => return outcome,
                turn = store.turn() => {
                    if let Err(error) = store.lead(turn).await
                        && self.withdraw()
                    {
                        return Err(error);
                    }
                }
            }
        }
    }

    /// Takes the write back out of the queue: false if a run has it already (its outcome is
    /// then on its way).
    pub fn withdraw(&self) -> bool {
        let mut queue = self.queue.queued();
        match queue
            .writes
            .iter()
            .position(|queued| queued.ticket == self.ticket)
        {
            Some(at) => {
                queue.writes.remove(at);
                true
            }
            None => false,
        }
    }
}

impl<W: QueuedWrite> Drop for Joined<'_, W> {
    fn drop(&mut self) {
        // Usually a run has taken it already, and this finds nothing.
        self.withdraw();
    }
}

/// The writes waiting for the next run, oldest first.
pub(crate) struct WriteQueue<W: QueuedWrite> {
    queued: Mutex<Queue<W>>,
    /// One lane per task with a write in progress in this process (see [`WriteQueue::lane`]).
    lanes: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<Option<Task>>>>>,
}

/// A task's lane, held from the read of the task to the end of its write.
pub(crate) struct Lane<'a> {
    lanes: &'a Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<Option<Task>>>>>,
    task: Uuid,
    lane: Arc<tokio::sync::Mutex<Option<Task>>>,
    /// The lane, and in it the task as the write before this one in the lane left it.
    held: Option<tokio::sync::OwnedMutexGuard<Option<Task>>>,
}

impl Lane<'_> {
    /// The task as the previous write in this lane wrote it, if that write was written and
    /// others waited behind it (a lane nobody waits in goes, and what it knew with it). The
    /// task may have changed since (another process, a reminder sent): a write planned from
    /// it is compared-and-set like any other.
    fn known(&mut self) -> Option<Task> {
        self.held.as_mut().and_then(|held| held.take())
    }

    /// Leaves `task`, as just written, to the next write in the lane.
    fn remember(&mut self, task: Task) {
        if let Some(held) = self.held.as_mut() {
            **held = Some(task);
        }
    }
}

impl Drop for Lane<'_> {
    fn drop(&mut self) {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        self.held = None;
        // Nobody else waits in it (the map's reference and this one): the lane goes.
        if Arc::strong_count(&self.lane) == 2 {
            lanes.remove(&self.task);
        }
    }
}

struct Queue<W: QueuedWrite> {
    writes: Vec<Queued<W>>,
    next_ticket: u64,
}

impl<W: QueuedWrite> Default for WriteQueue<W> {
    fn default() -> Self {
        Self {
            queued: Mutex::new(Queue {
                writes: Vec::new(),
                next_ticket: 0,
            }),
            lanes: Mutex::default(),
        }
    }
}

pub(crate) type CreateQueue = WriteQueue<Create>;
pub(crate) type UpdateQueue = WriteQueue<Update>;

impl<W: QueuedWrite> WriteQueue<W> {
    /// Waits until no other write of task `task` is in progress in this process, and holds
    /// the task's lane until dropped. Concurrent updates of one task then plan one after
    /// another, each from the task as the one before wrote it, instead of all planning from
    /// the same version and all but one planning again after each run (a hundred clients on
    /// one task cost a hundred reads per write without it: bench/README.md, "Updates").
    pub async fn lane(&self, task: Uuid) -> Lane<'_> {
        let lane = self
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(task)
            .or_default()
            .clone();
        // Made before the wait, so that a caller that gives up waiting still leaves the map
        // as it found it (Lane's Drop).
        let mut lane = Lane {
            lanes: &self.lanes,
            task,
            lane,
            held: None,
        };
        lane.held = Some(lane.lane.clone().lock_owned().await);
        lane
    }

    /// Queues `write`.
    pub fn join(&self, write: W) -> Joined<'_, W> {
        let (settled, outcome) = oneshot::channel();
        let mut queue = self.queued();
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.writes.push(Queued {
            write,
            ticket,
            settled,
        });
        Joined {
            queue: self,
            ticket,
            outcome,
        }
    }

    /// The oldest queued writes, up to [`BATCH_MAX`] and at most one per task, now out of
    /// the queue (a later write of a task already in the run waits for a later run; with
    /// the tasks' lanes, this process never queues two updates of one task, but the
    /// compare-and-set statements rely on it).
    pub fn take(&self) -> Vec<Queued<W>> {
        let mut queue = self.queued();
        let mut run: Vec<Queued<W>> = Vec::new();
        let mut kept = Vec::with_capacity(queue.writes.len());
        for queued in queue.writes.drain(..) {
            let task = queued.task_id();
            if run.len() < BATCH_MAX && run.iter().all(|taken| taken.task_id() != task) {
                run.push(queued);
            } else {
                kept.push(queued);
            }
        }
        queue.writes = kept;
        run
    }

    fn queued(&self) -> MutexGuard<'_, Queue<W>> {
        self.queued.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How one database writes a run of one kind of write.
pub(crate) trait Runs<W: QueuedWrite> {
    /// Writes every one of `batch` in one transaction, or none of them; the outcome of each,
    /// in `batch`'s order.
    async fn run(&mut self, batch: &[Queued<W>]) -> Result<Vec<W::Outcome>, sqlx::Error>;

    /// Whether a failed run failed on one write's own data (a constraint or a trigger
    /// refusing it, a value out of range), so that the others may succeed without it.
    fn concerns_one_write(error: &sqlx::Error) -> bool;
}

/// How a store takes its turn to write a run of `W`, and writes one.
pub(crate) trait Leads<W: QueuedWrite> {
    /// The turn, held while a run is written.
    type Turn;
    /// The writes of kind `W` waiting for a run.
    fn queue(&self) -> &WriteQueue<W>;
    /// Waits for the store's turn to write a run of `W`.
    async fn turn(&self) -> Self::Turn;
    /// Writes a run of the oldest queued writes in `turn` ([`write_in_runs`]); an error only
    /// when the writer cannot be had.
    async fn lead(&self, turn: Self::Turn) -> Result<(), StoreError>;
}

/// Creates `task` with its `event` in the next run of the store's creates.
pub(crate) async fn create<S: Leads<Create>>(
    store: &S,
    task: &Task,
    event: &NewEvent,
) -> Result<(), StoreError> {
    store
        .queue()
        .join(Create {
            task: task.clone(),
            event: event.clone(),
        })
        .written(store)
        .await
}

/// Updates `owner`'s task `id` as `plan` decides, only if `version` (when given) is the
/// task's, optimistically: the task is read and the update planned outside any transaction;
/// the update joins the store's queue, and a run ([`Joined::written`]) writes it only if the
/// task is still as it was read (compare-and-set on its version and its reminder flag). When
/// it is not, the task is read and planned again, so that the outcome is that of updates
/// applied one after another. `None` when no such task (at that version) exists.
pub(crate) async fn update_optimistically<S: Store + Leads<Update>>(
    store: &S,
    owner: &str,
    id: Uuid,
    version: Option<i64>,
    plan: &PlanUpdate<'_>,
) -> Result<Option<Task>, StoreError> {
    let mut lane = store.queue().lane(id).await;
    loop {
        // Under contention, the task as the update before this one wrote it, without a read.
        let (before, known) = match lane.known() {
            Some(task) => (task, true),
            None => match store.get_task(owner, id).await? {
                Some(task) => (task, false),
                None => return Ok(None),
            },
        };
        if version.is_some_and(|version| version != before.version) {
            if known {
                // Only the stored task says whether `version` is stale.
                continue;
            }
            return Ok(None);
        }
        let update = plan(&before).map_err(StoreError::Refused)?;
        let task = update.task.clone();
        let mut joined = store.queue().join(Update {
            expected_version: before.version,
            expected_reminder_sent: before.reminder_sent,
            tags_before: before.tags,
            update,
        });
        if joined.written(store).await? {
            lane.remember(task.clone());
            return Ok(Some(task));
        }
    }
}

/// Takes the oldest writes of `queue`, writes them in one run and settles each. When the
/// run fails on one write's data, each is written again in a run of its own, so that only
/// that one fails; any other failure (a lock held by another process past the timeout, a
/// full disk, a lost connection) would fail each of them alike, so all get it at once,
/// without a retry apiece.
pub(crate) async fn write_in_runs<W: QueuedWrite, R: Runs<W>>(runs: &mut R, queue: &WriteQueue<W>) {
    let batch = queue.take();
    if batch.len() > 1 {
        match runs.run(&batch).await {
            Ok(outcomes) => {
                for (queued, outcome) in batch.into_iter().zip(outcomes) {
                    queued.settle(Ok(outcome));
                }
                return;
            }
            Err(error) if !R::concerns_one_write(&error) => {
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
        let outcome = outcome.map_err(StoreError::from).and_then(|mut outcomes| {
            outcomes
                .pop()
                .ok_or_else(|| StoreError::Other(anyhow::anyhow!("a run of one said nothing")))
        });
        queued.settle(outcome);
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

    fn queued<W: QueuedWrite>(queue: &WriteQueue<W>) -> usize {
        queue.queued().writes.len()
    }

    fn create(task: &Task) -> Create {
        Create {
            task: task.clone(),
            event: NewEvent::new(EventType::Created, "s", task),
        }
    }

    fn update(task: &Task) -> Update {
        Update {
            expected_version: task.version,
            expected_reminder_sent: task.reminder_sent,
            tags_before: task.tags.clone(),
            update: TaskUpdate {
                task: task.clone(),
                created: None,
                events: Vec::new(),
            },
        }
    }

    #[test]
    fn a_create_given_up_before_a_run_took_it_leaves_the_queue() {
        let queue = CreateQueue::default();
        let (first, second) = (task(), task());
        let kept = queue.join(create(&first));
        let given_up = queue.join(create(&second));
        drop(given_up);
        assert_eq!(queued(&queue), 1);
        let run = queue.take();
        assert_eq!(run.len(), 1);
        assert_eq!(run[0].task.id, first.id);
        // Taken by a run, it stays the run's: dropping its caller takes nothing out.
        let third = task();
        let _waiting = queue.join(create(&third));
        drop(kept);
        assert_eq!(queued(&queue), 1);
    }

    #[test]
    fn a_run_takes_the_oldest_creates_up_to_its_size() {
        let queue = CreateQueue::default();
        let tasks: Vec<Task> = (0..BATCH_MAX + 3).map(|_| task()).collect();
        let _joined: Vec<Joined<'_, Create>> =
            tasks.iter().map(|task| queue.join(create(task))).collect();
        let run: Vec<Uuid> = queue.take().iter().map(|queued| queued.task.id).collect();
        let oldest: Vec<Uuid> = tasks[..BATCH_MAX].iter().map(|task| task.id).collect();
        assert_eq!(run, oldest);
        assert_eq!(queued(&queue), 3);
    }

    #[test]
    fn a_run_writes_each_task_once_and_a_given_up_update_of_it_leaves_only_its_own_place() {
        let queue = UpdateQueue::default();
        let (shared, other) = (task(), task());
        let _first = queue.join(update(&shared));
        let given_up = queue.join(update(&shared));
        let _third = queue.join(update(&shared));
        let _other = queue.join(update(&other));
        // Two updates of one task wait in the queue: dropping one leaves the other.
        drop(given_up);
        assert_eq!(queued(&queue), 3);
        let run: Vec<Uuid> = queue.take().iter().map(|queued| queued.task_id()).collect();
        assert_eq!(run, [shared.id, other.id]);
        let next: Vec<Uuid> = queue.take().iter().map(|queued| queued.task_id()).collect();
        assert_eq!(
            next,
            [shared.id],
            "the later update of the task waits for the next run"
        );
    }

    #[tokio::test]
    async fn writes_of_one_task_hold_its_lane_one_after_another_and_the_lane_goes_with_the_last() {
        let queue = UpdateQueue::default();
        let (task, other) = (Uuid::now_v7(), Uuid::now_v7());
        let first = queue.lane(task).await;
        let _elsewhere = queue.lane(other).await;
        let mut second = std::pin::pin!(queue.lane(task));
        assert!(
            futures_util::poll!(second.as_mut()).is_pending(),
            "the second write of the task waits"
        );
        drop(first);
        let second = second.await;
        drop(second);
        let given_up = {
            let _third = queue.lane(task).await;
            let mut waiting = Box::pin(queue.lane(task));
            assert!(futures_util::poll!(waiting.as_mut()).is_pending());
            drop(waiting);
            queue.lanes.lock().unwrap().len()
        };
        assert_eq!(given_up, 2, "both tasks' lanes while the third holds one");
        assert_eq!(
            queue.lanes.lock().unwrap().keys().collect::<Vec<_>>(),
            [&other],
            "a lane nobody holds or waits for is gone"
        );
    }
}
