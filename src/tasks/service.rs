//! [`TaskService`]: task reads and writes for one owner. It is the one place that decides
//! which event a change makes; the store writes that event in the change's own transaction.

use std::sync::Arc;

use uuid::Uuid;

use super::domain::{ListQuery, NewTask, TagCount, Task, TaskChange, TaskPage, now_millis};
use crate::{
    auth::revocation::Revocation,
    error::ApiError,
    events::{
        Events,
        record::{EventType, NewEvent},
    },
    extract::IfMatch,
    storage::{Listing, Store, TaskUpdate, to_completion},
};

const TASK_NOT_FOUND: ApiError = ApiError::NotFound("no such task");

/// What [`TaskService::list`] found.
pub enum Listed {
    /// The owner's tasks are still at the revision the caller knew: its page is current.
    Unchanged,
    /// The page, and the revision of the owner's tasks it is of, if it has one.
    Page {
        page: TaskPage,
        revision: Option<i64>,
    },
}

#[derive(Clone)]
pub struct TaskService {
    store: Arc<dyn Store>,
    events: Events,
}

impl TaskService {
    pub fn new(store: Arc<dyn Store>, events: Events) -> Self {
        Self { store, events }
    }

    fn event(&self, event_type: EventType, task: &Task) -> NewEvent {
        NewEvent::new(event_type, self.events.source(), task)
    }

    pub async fn create(&self, owner: &str, new: NewTask) -> Result<Task, ApiError> {
        let now = now_millis();
        let task = Task {
            id: Uuid::now_v7(),
            user_id: owner.to_owned(),
            title: new.title.as_str().to_owned(),
            description: new.description.map(|d| d.as_str().to_owned()),
            completed: new.completed,
            created_at: now,
            updated_at: now,
            priority: new.priority,
            tags: new.tags,
            due_at: new.due_at,
            remind_at: new.remind_at,
            recurrence: new.recurrence,
            next_task_id: None,
            version: 1,
            reminder_sent: false,
        };
        let event = self.event(EventType::Created, &task);
        let store = self.store.clone();
        let written = task.clone();
        to_completion(async move { store.insert_task(&written, &event).await }).await?;
        self.events.committed();
        Ok(task)
    }

    /// One page of the owner's tasks, and the revision of the owner's tasks it is of (see
    /// [`Listing::revision`]); [`Listed::Unchanged`] when they are still at `known`, the
    /// revision of a page the caller has.
    pub async fn list(
        &self,
        owner: &str,
        query: &ListQuery,
        known: Option<i64>,
    ) -> Result<Listed, ApiError> {
        let Listing {
            tasks,
            total,
            revision,
        } = self.store.list_tasks(owner, query, known).await?;
        Ok(match tasks {
            None => Listed::Unchanged,
            Some(items) => Listed::Page {
                page: TaskPage::new(items, total, query),
                revision,
            },
        })
    }

    pub async fn get(&self, owner: &str, id: Uuid) -> Result<Task, ApiError> {
        self.store.get_task(owner, id).await?.ok_or(TASK_NOT_FOUND)
    }

    pub async fn update(
        &self,
        owner: &str,
        id: Uuid,
        change: &TaskChange,
        condition: Option<&IfMatch>,
    ) -> Result<Task, ApiError> {
        let version = self.expected_version(owner, id, condition).await?;
        let service = self.clone();
        let (owner, change) = (owner.to_owned(), change.clone());
        let task = to_completion(async move {
            let plan = |before: &Task| service.plan(before, &change);
            service.store.update_task(&owner, id, version, &plan).await
        })
        .await?
        .ok_or_else(|| missing(version))?;
        self.events.committed();
        Ok(task)
    }

    pub async fn delete(
        &self,
        owner: &str,
        id: Uuid,
        condition: Option<&IfMatch>,
    ) -> Result<Task, ApiError> {
        let version = self.expected_version(owner, id, condition).await?;
        let service = self.clone();
        let owner = owner.to_owned();
        let task = to_completion(async move {
            let event = |task: &Task| service.event(EventType::Deleted, task);
            service.store.delete_task(&owner, id, version, &event).await
        })
        .await?
        .ok_or_else(|| missing(version))?;
        self.events.committed();
        Ok(task)
    }

    /// What `change` writes to `before`. A change that sets `completed` from false to true
    /// is a completion; any other change (un-completing, retitling, completing again) is an
    /// update. Completing a recurring task that has no next occurrence yet creates it, with
    /// its own `todo.task.created` event after the completion's.
    fn plan(
        &self,
        before: &Task,
        change: &TaskChange,
    ) -> Result<TaskUpdate, super::domain::Refusal> {
        let now = now_millis();
        let mut task = change.apply(before, now)?;
        let completion = !before.completed && task.completed;
        let created = (completion && task.next_task_id.is_none())
            .then(|| task.next_occurrence(now))
            .flatten();
        if let Some(next) = &created {
            task.next_task_id = Some(next.id);
        }
        let event_type = if completion {
            EventType::Completed
        } else {
            EventType::Updated
        };
        let mut events = vec![self.event(event_type, &task)];
        events.extend(
            created
                .iter()
                .map(|next| self.event(EventType::Created, next)),
        );
        Ok(TaskUpdate {
            task,
            created,
            events,
        })
    }

    /// Every tag of the owner's tasks with its counts, most used first.
    pub async fn tags(&self, owner: &str) -> Result<Vec<TagCount>, ApiError> {
        Ok(self.store.tag_counts(owner).await?)
    }

    /// Sends every reminder due now, in batches, each batch one transaction with its events;
    /// how many were sent.
    pub async fn send_due_reminders(&self) -> Result<usize, ApiError> {
        const BATCH: u32 = 500;
        let mut sent = 0;
        loop {
            let service = self.clone();
            let batch = to_completion(async move {
                let event = |task: &Task| service.event(EventType::Reminder, task);
                service
                    .store
                    .send_due_reminders(now_millis(), BATCH, &event)
                    .await
            })
            .await?;
            if batch > 0 {
                self.events.committed();
            }
            sent += batch;
            if batch < BATCH as usize {
                return Ok(sent);
            }
        }
    }

    /// Deletes the local account `id` and all its tasks in one transaction, with a
    /// `todo.task.deleted` event for each task, and revokes its tokens; `None` when there is
    /// no such account.
    pub async fn delete_account(&self, id: Uuid) -> Result<Option<Revocation>, ApiError> {
        let service = self.clone();
        let revocation = to_completion(async move {
            let event = |task: &Task| service.event(EventType::Deleted, task);
            service.store.delete_account(id, now_millis(), &event).await
        })
        .await?;
        if revocation.is_some() {
            self.events.committed();
        }
        Ok(revocation)
    }

    /// The version a conditional write must find: the current one, if `condition` accepts
    /// it. The write checks it again, so a change in between is a 412, never a lost update.
    async fn expected_version(
        &self,
        owner: &str,
        id: Uuid,
        condition: Option<&IfMatch>,
    ) -> Result<Option<i64>, ApiError> {
        let Some(condition) = condition else {
            return Ok(None);
        };
        let current = self.get(owner, id).await?;
        if condition.matches(&current.etag()) {
            Ok(Some(current.version))
        } else {
            Err(ApiError::PreconditionFailed)
        }
    }
}

/// A write that found no row: no such task, or (when conditional) one changed meanwhile.
fn missing(version: Option<i64>) -> ApiError {
    if version.is_some() {
        ApiError::PreconditionFailed
    } else {
        TASK_NOT_FOUND
    }
}
