//! `/api/tasks`: the board as plain JSON REST. Mutations publish through [`PublishLayer`].

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, State};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use client::app::store::{StoreError, TaskPatch, TaskStore};
use serde::Deserialize;
use shared::tasks::{normalize_title, Task, TaskEvent};

use sse_notify_axum::core::TopicBuilder;
use sse_notify_axum::{ApiError, Broker, CacheScope, PublishLayer, ResponseCache};

/// The routes; with `cache`, the two reads are answered from it until their topics change
/// (the board is the same for everyone).
pub fn routes(broker: Broker, store: TaskStore, cache: Option<ResponseCache>) -> Router {
    let created = PublishLayer::typed(broker.clone(), |ctx| ctx.id("id").map(|id| TaskEvent::Created { id }));
    let updated = PublishLayer::typed(broker.clone(), |ctx| ctx.id("id").map(|id| TaskEvent::Updated { id }));
    let deleted = PublishLayer::typed(broker, |ctx| ctx.id("id").map(|id| TaskEvent::Deleted { id }));
    let (list, read) = match cache {
        Some(cache) => (
            get(list).layer(cache.layer(|_| async { Some(CacheScope::public([TaskEvent::board_topic()])) })),
            get(read).layer(cache.layer(|parts| {
                // `/api/tasks/{id}` changes with `task:{id}`; an id that is not one is the
                // handler's 400.
                let id = parts.uri.path().rsplit('/').next().and_then(|id| id.parse::<u64>().ok());
                async move { id.map(|id| CacheScope::public([TopicBuilder::task(id)])) }
            })),
        ),
        None => (get(list), get(read)),
    };
    Router::new()
        .route("/api/tasks", list.post(create.layer(created)))
        .route("/api/tasks/{id}", read.put(update.layer(updated)).delete(delete.layer(deleted)))
        .with_state(store)
}

/// `axum::Json` whose rejections are our JSON errors (400 bad JSON, 422 wrong shape, 415 ...).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(BodyError))]
struct ApiJson<T>(T);

/// axum's JSON rejections as our JSON error (its texts describe the request, not the server).
struct BodyError(ApiError);

impl From<JsonRejection> for BodyError {
    fn from(r: JsonRejection) -> Self {
        if body_timed_out(&r) {
            return Self(ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body did not arrive in time",
            ));
        }
        Self(ApiError::new(r.status(), "invalid_body", r.body_text()))
    }
}

/// Whether the body did not arrive in time (`SseApp::body_timeout`) rather than being bad JSON.
fn body_timed_out(r: &JsonRejection) -> bool {
    sse_notify_axum::BodyTimeout::caused(r)
}

impl axum::response::IntoResponse for BodyError {
    fn into_response(self) -> axum::response::Response {
        self.0.into_response()
    }
}

/// A task id from the path; anything but a non-negative integer is a 400.
struct TaskId(u64);

impl<S: Send + Sync> FromRequestParts<S> for TaskId {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e: PathRejection| ApiError::bad_request("invalid_id", e.body_text()))?;
        raw.parse()
            .map(TaskId)
            .map_err(|_| ApiError::bad_request("invalid_id", format!("task id {raw:?} is not a number")))
    }
}

/// The store's failures without their backend text (logged here, not sent).
fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(cause) => {
            tracing::warn!(error = %cause, "task store unavailable");
            ApiError::unavailable("store_unavailable", "the data store is unavailable")
        }
        StoreError::Corrupt(_) => ApiError::internal(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTask {
    title: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateTask {
    title: Option<String>,
    done: Option<bool>,
}

fn valid_title(raw: &str) -> Result<String, ApiError> {
    normalize_title(raw).map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_title", m))
}

fn no_such_task(id: u64) -> ApiError {
    ApiError::not_found(format!("no task {id}"))
}

async fn list(State(store): State<TaskStore>) -> Result<Json<Vec<Task>>, ApiError> {
    Ok(Json(store.list().await.map_err(store_error)?))
}

async fn create(
    State(store): State<TaskStore>,
    ApiJson(new): ApiJson<NewTask>,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let task = store.create(valid_title(&new.title)?).await.map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(task)))
}

async fn read(State(store): State<TaskStore>, TaskId(id): TaskId) -> Result<Json<Task>, ApiError> {
    store.get(id).await.map_err(store_error)?.map(Json).ok_or_else(|| no_such_task(id))
}

async fn update(
    State(store): State<TaskStore>,
    TaskId(id): TaskId,
    ApiJson(change): ApiJson<UpdateTask>,
) -> Result<Json<Task>, ApiError> {
    if change.title.is_none() && change.done.is_none() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "empty_update", "give \"title\" and/or \"done\""));
    }
    let patch = TaskPatch { title: change.title.as_deref().map(valid_title).transpose()?, done: change.done };
    store.update(id, patch).await.map_err(store_error)?.map(Json).ok_or_else(|| no_such_task(id))
}

async fn delete(State(store): State<TaskStore>, TaskId(id): TaskId) -> Result<StatusCode, ApiError> {
    if store.delete(id).await.map_err(store_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_such_task(id))
    }
}
