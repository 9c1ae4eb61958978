//! The task board's server functions. Each mutation publishes its `TaskEvent` after it succeeds,
//! and names the calling tab ([`OriginClient`]): that tab has the change from the answer, so
//! the event does not make it refetch.

use leptos::prelude::*;
use leptos_sse_notify::OriginClient;
use shared::tasks::Task;

use crate::app::error::AppError;

#[cfg(feature = "ssr")]
mod backend {
    use leptos_sse_notify::publish;
    use shared::tasks::{normalize_title, Task, TaskEvent};

    use crate::app::error::AppError;
    use crate::app::store::{TaskPatch, TaskStore};

    pub fn store() -> Result<TaskStore, AppError> {
        crate::app::from_context()
    }

    pub fn title(raw: &str) -> Result<String, AppError> {
        normalize_title(raw).map_err(|m| AppError::new("invalid_title", m))
    }

    pub fn no_such_task(id: u64) -> AppError {
        AppError::not_found(format!("no task {id}"))
    }

    pub async fn patch(id: u64, patch: TaskPatch) -> Result<Task, AppError> {
        let task = store()?.update(id, patch).await?.ok_or_else(|| no_such_task(id))?;
        publish(&TaskEvent::Updated { id }).await?;
        Ok(task)
    }
}

/// All tasks, oldest first.
#[server]
pub async fn list_tasks() -> Result<Vec<Task>, AppError> {
    Ok(backend::store()?.list().await?)
}

/// One task, or `None` when there is no such task (any more).
#[server]
pub async fn get_task(id: u64) -> Result<Option<Task>, AppError> {
    Ok(backend::store()?.get(id).await?)
}

/// Creates a task and publishes `task:created`.
#[server(client = OriginClient)]
pub async fn create_task(title: String) -> Result<Task, AppError> {
    use shared::tasks::TaskEvent;
    let title = backend::title(&title)?;
    let task = backend::store()?.create(title).await?;
    leptos_sse_notify::publish(&TaskEvent::Created { id: task.id }).await?;
    Ok(task)
}

/// Renames a task and publishes `task:updated`.
#[server(client = OriginClient)]
pub async fn rename_task(id: u64, title: String) -> Result<Task, AppError> {
    let title = backend::title(&title)?;
    backend::patch(id, crate::app::store::TaskPatch { title: Some(title), done: None }).await
}

/// Marks a task done or not done and publishes `task:updated`.
#[server(client = OriginClient)]
pub async fn set_task_done(id: u64, done: bool) -> Result<Task, AppError> {
    backend::patch(id, crate::app::store::TaskPatch { title: None, done: Some(done) }).await
}

/// Deletes a task and publishes `task:deleted`; answers the id it deleted.
#[server(client = OriginClient)]
pub async fn delete_task(id: u64) -> Result<u64, AppError> {
    use shared::tasks::TaskEvent;
    if !backend::store()?.delete(id).await? {
        return Err(backend::no_such_task(id));
    }
    leptos_sse_notify::publish(&TaskEvent::Deleted { id }).await?;
    Ok(id)
}
