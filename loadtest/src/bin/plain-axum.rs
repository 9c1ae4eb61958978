//! The reference the stream benchmarks are held to: a plain axum 0.8 SSE server, written as
//! axum's own `sse` example would be (one `tokio::sync::broadcast` channel, `Sse` with the
//! default keep-alive), serving the routes the load tool drives:
//!
//! - `GET /events`: an SSE stream of every event (`event: task:created`, `id`, `data: {"id":N}`),
//!   whatever the query says;
//! - `POST /api/tasks`: publishes the next event and answers `201` with `{"id":N}`.
//!
//! ```text
//! plain-axum 127.0.0.1:3990
//! loadtest --url http://127.0.0.1:3990 --streams 19000 --hold 1 --pid $PID
//! ```
//!
//! It has none of the product: no log, no resume, no per-stream bound, no authorization. It is
//! what an app gets from axum alone, kept beside the load tool so that both are measured in the
//! same run on the same box.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::Stream;
use tokio::sync::broadcast;

/// What every route shares: the channel and the next event's id.
#[derive(Clone)]
struct Events {
    sender: broadcast::Sender<u64>,
    next: Arc<AtomicU64>,
}

/// Each stream follows the channel; a receiver that lags past its capacity skips what it missed.
async fn events(State(events): State<Events>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = events.sender.subscribe();
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(id) => {
                    let event =
                        Event::default().event("task:created").id(id.to_string()).data(format!("{{\"id\":{id}}}"));
                    return Some((Ok(event), receiver));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn publish(State(events): State<Events>) -> (StatusCode, Json<serde_json::Value>) {
    let id = events.next.fetch_add(1, Ordering::Relaxed) + 1;
    // No stream yet is not an error: the event simply reaches no one.
    let _ = events.sender.send(id);
    (StatusCode::CREATED, Json(serde_json::json!({ "id": id })))
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3990".into());
    let (sender, _) = broadcast::channel(1024);
    let state = Events { sender, next: Arc::new(AtomicU64::new(0)) };
    let app = Router::new().route("/events", get(events)).route("/api/tasks", post(publish)).with_state(state);
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("plain axum SSE server on http://{addr}");
    axum::serve(listener, app).await.expect("serve");
}
