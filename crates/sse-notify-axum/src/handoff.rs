//! The server-rendering handoff: a page carries the stream cursor taken before its data was read.
//!
//! [`start_cursor`] is a middleware for the routes that render pages: before the handler runs it
//! reads the broker's head cursor and puts it in the request's extensions as a
//! [`StartCursor`]. `leptos_sse_notify::use_sse` reads it while rendering and hands it to the
//! browser, which opens its stream from it: an event published after the cursor was taken (while
//! the page's data was read, rendered, sent and hydrated) is replayed to the page.

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use sse_notify_core::cursor::StartCursor;

use sse_notify_broker::Broker;

/// Puts the current [`StartCursor`] in the extensions of `GET` requests that accept HTML (the
/// page loads; assets, API calls and server functions skip the broker round trip). When the
/// broker cannot answer the page renders without one and the browser refetches on open.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use axum::{routing::get, Extension, Router};
/// use sse_notify_axum::{handoff, Broker, BrokerLimits};
/// use sse_notify_core::cursor::StartCursor;
///
/// let broker = Broker::memory(BrokerLimits::default());
/// let pages: Router = Router::new()
///     .route("/", get(|c: Option<Extension<StartCursor>>| async move { c.map(|c| c.0 .0).unwrap_or_default() }))
///     .layer(axum::middleware::from_fn_with_state(broker, handoff::start_cursor));
/// # }
/// ```
pub async fn start_cursor(State(broker): State<Broker>, mut req: Request, next: Next) -> Response {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if req.method() == Method::GET && wants_html {
        match broker.head_cursor().await {
            Ok(cursor) => {
                req.extensions_mut().insert(StartCursor(cursor));
            }
            Err(e) => tracing::warn!(error = %e, "no start cursor for this page; the browser refetches on open"),
        }
    }
    next.run(req).await
}
