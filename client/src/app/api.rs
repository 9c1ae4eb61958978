//! The task board's server functions. Each mutation publishes its `TaskEvent` after it succeeds.

use leptos::prelude::*;
use shared::tasks::Task;

#[cfg(feature = "ssr")]
mod backend {
    use leptos::prelude::*;
    use shared::tasks::{normalize_title, Task, TaskEvent};

    use crate::app::store::{TaskPatch, TaskStore};

    pub fn store() -> Result<TaskStore, ServerFnError> {
        crate::app::from_context()
    }

    pub fn title(raw: &str) -> Result<String, ServerFnError> {
        normalize_title(raw).map_err(ServerFnError::new)
    }

    pub fn failed(e: impl std::fmt::Display) -> ServerFnError {
        ServerFnError::new(e.to_string())
    }

    pub async fn patch(id: u64, patch: TaskPatch) -> Result<Task, ServerFnError> {
        let task = store()?
            .update(id, patch)
            .await
            .map_err(failed)?
            .ok_or_else(|| ServerFnError::new(format!("no task {id}")))?;
        crate::sse::publish(&TaskEvent::Updated { id }).await?;
        Ok(task)
    }
}

/// All tasks, oldest first.
#[server]
pub async fn list_tasks() -> Result<Vec<Task>, ServerFnError> {
    backend::store()?.list().await.map_err(backend::failed)
}

/// One task, or `None` when there is no such task (any more).
#[server]
pub async fn get_task(id: u64) -> Result<Option<Task>, ServerFnError> {
    backend::store()?.get(id).await.map_err(backend::failed)
}

/// Creates a task and publishes `task:created`.
#[server]
pub async fn create_task(title: String) -> Result<Task, ServerFnError> {
    use shared::tasks::TaskEvent;
    let title = backend::title(&title)?;
    let task = backend::store()?.create(title).await.map_err(backend::failed)?;
    crate::sse::publish(&TaskEvent::Created { id: task.id }).await?;
    Ok(task)
}

/// Renames a task and publishes `task:updated`.
#[server]
pub async fn rename_task(id: u64, title: String) -> Result<Task, ServerFnError> {
    let title = backend::title(&title)?;
    backend::patch(id, crate::app::store::TaskPatch { title: Some(title), done: None }).await
}

/// Marks a task done or not done and publishes `task:updated`.
#[server]
pub async fn set_task_done(id: u64, done: bool) -> Result<Task, ServerFnError> {
    backend::patch(id, crate::app::store::TaskPatch { title: None, done: Some(done) }).await
}

/// Deletes a task and publishes `task:deleted`.
#[server]
pub async fn delete_task(id: u64) -> Result<(), ServerFnError> {
    use shared::tasks::TaskEvent;
    if !backend::store()?.delete(id).await.map_err(backend::failed)? {
        return Err(ServerFnError::new(format!("no task {id}")));
    }
    crate::sse::publish(&TaskEvent::Deleted { id }).await
}
