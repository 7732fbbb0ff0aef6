//! The seam where task changes leave the service.
//!
//! Every successful create, update and delete is published here, after it is committed. Today
//! the only sink logs the event; a Kafka producer or a Dapr pub/sub client implements
//! [`TaskEvents`] and is handed to [`crate::Application`] instead, with no handler touched.

use serde::Serialize;

use super::domain::Task;

/// A committed change to a task, with the task as it is afterwards (or was, when deleted).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", content = "task")]
pub enum TaskEvent {
    #[serde(rename = "task.created")]
    Created(Task),
    #[serde(rename = "task.updated")]
    Updated(Task),
    #[serde(rename = "task.deleted")]
    Deleted(Task),
}

impl TaskEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Created(_) => "task.created",
            Self::Updated(_) => "task.updated",
            Self::Deleted(_) => "task.deleted",
        }
    }

    pub fn task(&self) -> &Task {
        match self {
            Self::Created(task) | Self::Updated(task) | Self::Deleted(task) => task,
        }
    }
}

/// Receives task events. `publish` must not block: a sink that talks to a broker queues
/// the event and sends it from a task of its own.
pub trait TaskEvents: Send + Sync + 'static {
    fn publish(&self, event: TaskEvent);
}

/// Logs each event at debug level (ids only, never content).
pub struct LogEvents;

impl TaskEvents for LogEvents {
    fn publish(&self, event: TaskEvent) {
        let task = event.task();
        tracing::debug!(event = event.name(), task_id = %task.id, user_id = %task.user_id, "task event");
    }
}
