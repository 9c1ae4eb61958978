//! Where the demo keeps its tasks (server only): a [`Table`] of [`Task`]s.
//!
//! With Redis configured, tasks live in Redis itself, so every instance sharing that Redis sees
//! the same board. Without Redis the app runs as one instance on the embedded broker, and an
//! in-process table is that instance's whole store.

use shared::tasks::Task;
use sse_notify_axum::RedisConnection;

pub use super::table::StoreError;
use super::table::Table;

/// A change to a task: each field that is `Some` is set.
#[derive(Clone, Debug, Default)]
pub struct TaskPatch {
    pub title: Option<String>,
    pub done: Option<bool>,
}

/// The demo's task store; cheap to clone.
#[derive(Clone)]
pub struct TaskStore(Table<Task>);

impl TaskStore {
    pub fn memory() -> Self {
        Self(Table::memory())
    }

    /// A store in Redis under `key_prefix` (the app's `TOPIC_PREFIX` namespace).
    pub fn redis(conn: RedisConnection, key_prefix: &str) -> Self {
        Self(Table::redis(conn, key_prefix, "taskboard:tasks"))
    }

    /// All tasks, oldest first.
    pub async fn list(&self) -> Result<Vec<Task>, StoreError> {
        self.0.list().await
    }

    pub async fn get(&self, id: u64) -> Result<Option<Task>, StoreError> {
        self.0.get(id).await
    }

    /// Creates a task; `title` must already be validated.
    pub async fn create(&self, title: String) -> Result<Task, StoreError> {
        self.0.insert(|id| Task { id, title, done: false }).await
    }

    /// Applies `patch` atomically; `None` when there is no such task.
    pub async fn update(&self, id: u64, patch: TaskPatch) -> Result<Option<Task>, StoreError> {
        let mut changes = serde_json::Map::new();
        if let Some(title) = patch.title {
            changes.insert("title".into(), title.into());
        }
        if let Some(done) = patch.done {
            changes.insert("done".into(), done.into());
        }
        self.0.patch(id, changes).await
    }

    /// Deletes a task; `false` when there was none.
    pub async fn delete(&self, id: u64) -> Result<bool, StoreError> {
        self.0.delete(id).await
    }
}
