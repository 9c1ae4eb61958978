//! The CRM's REST surface, for readers other than the Leptos page:
//! - `GET /api/crm/threads/{id}/comments`: a thread's comments as JSON. Its answers are shared,
//!   through the response cache, only among users the thread's visibility rule treats alike (the
//!   thread's team).
//! - `POST /api/crm/token`: a short-lived bearer token for the user signed in by cookie, for a
//!   page that sends `Authorization` rather than cookies (`{"token": "...", "expires_in": 900}`);
//!   it ends when that sign-in does, and a token cannot ask for another.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use client::app::session::Sessions;
use client::app::table::Table;
use shared::crm::{can_view_thread, find_thread, thread_topic, Comment, Thread, User};
use sse_notify_axum::{ApiError, CacheScope, ResponseCache};

#[derive(Clone)]
struct Crm {
    sessions: Sessions,
    comments: Table<Comment>,
}

pub fn routes(sessions: Sessions, comments: Table<Comment>, cache: Option<ResponseCache>) -> Router {
    let read = get(thread_comments);
    let read = match cache {
        Some(cache) => {
            let sessions = sessions.clone();
            read.layer(cache.layer(move |parts| {
                let (sessions, headers, path) = (sessions.clone(), parts.headers.clone(), parts.uri.path().to_owned());
                async move {
                    let user = sessions.user(&headers).await?;
                    let thread = path.split('/').nth(4)?.parse().ok().and_then(find_thread)?;
                    // Only a user who may read the thread shares its answer, and only with the
                    // others of its team's class; everyone else is answered by the handler.
                    can_view_thread(&user, &thread)
                        .then(|| CacheScope::new([thread_topic(thread.id)], format!("team:{}", thread.team)))
                }
            }))
        }
        None => read,
    };
    Router::new()
        .route("/api/crm/threads/{id}/comments", read)
        .route("/api/crm/token", post(issue_token))
        .with_state(Crm { sessions, comments })
}

/// A bearer token for the signed-in cookie's user. `no-store`: a secret of this answer alone (no
/// cache keeps it, nor the idempotency layer replays it to a repeat).
async fn issue_token(
    State(crm): State<Crm>,
    headers: HeaderMap,
) -> Result<([(axum::http::HeaderName, &'static str); 1], Json<serde_json::Value>), ApiError> {
    let issued = crm.sessions.issue_token(&headers).await.map_err(|e| {
        tracing::warn!(error = %e, "session store unavailable");
        ApiError::unavailable("store_unavailable", "the data store is unavailable")
    })?;
    // Only a signed-in cookie issues tokens: a token cannot renew itself past its expiry.
    let (token, lasts) = issued.ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "signed_out", "sign in (with the session cookie) to get a token")
    })?;
    let body = Json(serde_json::json!({ "token": token, "expires_in": lasts.as_secs() }));
    Ok(([(axum::http::header::CACHE_CONTROL, "no-store")], body))
}

async fn thread_comments(
    State(crm): State<Crm>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Vec<Comment>>, ApiError> {
    let user = crm.sessions.user(&headers).await.ok_or_else(signed_out)?;
    let thread = visible_thread(&user, &id)?;
    let all = crm.comments.list().await.map_err(|e| {
        tracing::warn!(error = %e, "comment store unavailable");
        ApiError::unavailable("store_unavailable", "the data store is unavailable")
    })?;
    Ok(Json(all.into_iter().filter(|c| c.thread == thread.id).collect()))
}

fn signed_out() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "signed_out", "sign in first")
}

fn visible_thread(user: &User, raw_id: &str) -> Result<Thread, ApiError> {
    let thread = raw_id.parse().ok().and_then(find_thread);
    match thread {
        Some(t) if can_view_thread(user, &t) => Ok(t),
        Some(t) => Err(ApiError::forbidden(format!("{} may not read thread {}", user.name, t.id))),
        None => Err(ApiError::not_found(format!("no thread {raw_id:?}"))),
    }
}
