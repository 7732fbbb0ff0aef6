//! [`TaskService`]: task reads and writes for one owner, each write announced once committed.

use std::sync::Arc;

use uuid::Uuid;

use super::{
    domain::{ListQuery, NewTask, Task, TaskChange, TaskPage, now_millis},
    events::{TaskEvent, TaskEvents},
};
use crate::{error::ApiError, storage::Store};

const TASK_NOT_FOUND: ApiError = ApiError::NotFound("no such task");

#[derive(Clone)]
pub struct TaskService {
    store: Arc<dyn Store>,
    events: Arc<dyn TaskEvents>,
}

impl TaskService {
    pub fn new(store: Arc<dyn Store>, events: Arc<dyn TaskEvents>) -> Self {
        Self { store, events }
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
        };
        self.store.insert_task(&task).await?;
        self.events.publish(TaskEvent::Created(task.clone()));
        Ok(task)
    }

    pub async fn list(&self, owner: &str, query: &ListQuery) -> Result<TaskPage, ApiError> {
        let (items, total) = self.store.list_tasks(owner, query).await?;
        Ok(TaskPage::new(items, total, query))
    }

    pub async fn get(&self, owner: &str, id: Uuid) -> Result<Task, ApiError> {
        self.store.get_task(owner, id).await?.ok_or(TASK_NOT_FOUND)
    }

    pub async fn update(
        &self,
        owner: &str,
        id: Uuid,
        change: &TaskChange,
    ) -> Result<Task, ApiError> {
        let task = self
            .store
            .update_task(owner, id, change, now_millis())
            .await?
            .ok_or(TASK_NOT_FOUND)?;
        self.events.publish(TaskEvent::Updated(task.clone()));
        Ok(task)
    }

    pub async fn delete(&self, owner: &str, id: Uuid) -> Result<Task, ApiError> {
        let task = self
            .store
            .delete_task(owner, id)
            .await?
            .ok_or(TASK_NOT_FOUND)?;
        self.events.publish(TaskEvent::Deleted(task.clone()));
        Ok(task)
    }
}
