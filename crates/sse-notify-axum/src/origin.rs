//! The writer's origin: which browser tab a write came from, so its event can say so and that
//! tab skips refetching its own change ([`sse_notify_core::origin`]).
//!
//! A write request carries the tab's origin in the `sse-origin` header. [`WriterOriginLayer`]
//! reads it and keeps it for the request being handled ([`current`]), where [`TabPublisher`]
//! (the [`sse_notify_core::Publisher`] that [`crate::SseApp::publisher`] hands server
//! functions) takes it and passes it to the broker ([`crate::Broker::publish_as`]: the broker
//! takes the origin as an argument and knows nothing of requests). It is a task-local, so an
//! event published from a task the handler spawns goes without one (its tabs all refetch, which
//! is safe). [`crate::PublishLayer`] reads the header itself, so REST routes need no more.
//!
//! The layer also answers with the write's position: the events [`TabPublisher`] published
//! while the request was handled leave the latest one's in the answer's `sse-position` header
//! ([`sse_notify_core::write`]), so a server function's caller learns it as a REST client does.
//!
//! ```
//! use axum::{routing::post, Router};
//! use sse_notify_axum::origin::WriterOriginLayer;
//! let app: Router = Router::new()
//!     .route("/api/notes", post(|| async { "saved" })) // and server functions, pages...
//!     .layer(WriterOriginLayer);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{self as http, HeaderMap, HeaderValue};
use sse_notify_core::origin::{is_origin, ORIGIN_HEADER};
use sse_notify_core::write::{WritePosition, POSITION_HEADER};
use tower::{Layer, Service};

/// The write a request makes: its tab's origin, and where the events it published are.
#[derive(Debug, Default)]
struct Write {
    origin: Option<Box<str>>,
    position: Mutex<Option<WritePosition>>,
}

tokio::task_local! {
    static WRITER: Arc<Write>;
}

/// The origin of the request being handled, if it sent a valid one.
pub fn current() -> Option<Box<str>> {
    WRITER.try_with(|w| w.origin.clone()).ok().flatten()
}

/// Runs `work` with `origin` as the writer's origin.
pub async fn scope<F: Future>(origin: Option<Box<str>>, work: F) -> F::Output {
    scope_write(origin, work).await.0
}

/// Runs `work` with `origin` as the writer's origin; also gives the latest position of the
/// events published through [`TabPublisher`] meanwhile.
async fn scope_write<F: Future>(origin: Option<Box<str>>, work: F) -> (F::Output, Option<WritePosition>) {
    let write = Arc::new(Write { origin, position: Mutex::default() });
    let out = WRITER.scope(write.clone(), work).await;
    let position = *write.position.lock().unwrap();
    (out, position)
}

/// Notes that the request being handled published an event at `position`.
fn record(position: WritePosition) {
    let _ = WRITER.try_with(|w| {
        let mut held = w.position.lock().unwrap();
        *held = Some(held.map_or(position, |p| p.later(position)));
    });
}

/// Publishes through the broker on behalf of the tab whose request is being handled
/// ([`current`]): what Leptos server functions get in context ([`crate::SseApp::publisher`]).
#[derive(Clone)]
pub struct TabPublisher(pub sse_notify_broker::Broker);

impl sse_notify_core::Publish for TabPublisher {
    fn publish_json<'a>(
        &'a self,
        topics: &'a [sse_notify_core::Topic],
        event: &'a str,
        data: &'a serde_json::Value,
    ) -> sse_notify_core::publish::PublishFuture<'a> {
        Box::pin(async move {
            let origin = current();
            let position = self.0.publish_or_defer_as(origin.as_deref(), topics, event, data).await?.position();
            record(position);
            Ok(position)
        })
    }
}

/// A request's origin header, when it is a valid origin (anything else is ignored: the event
/// then goes without one).
pub fn from_headers(headers: &HeaderMap) -> Option<Box<str>> {
    let value = headers.get(ORIGIN_HEADER)?.to_str().ok()?;
    is_origin(value).then(|| value.into())
}

/// Makes each request's `sse-origin` the origin of the events published while it is handled,
/// and puts the position of the latest of them in the answer's `sse-position` header.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriterOriginLayer;

impl<S> Layer<S> for WriterOriginLayer {
    type Service = WriterOrigin<S>;
    fn layer(&self, inner: S) -> Self::Service {
        WriterOrigin { inner }
    }
}

/// The service [`WriterOriginLayer`] wraps.
#[derive(Clone, Debug)]
pub struct WriterOrigin<S> {
    inner: S,
}

impl<S, B> Service<Request> for WriterOrigin<S>
where
    S: Service<Request, Response = http::Response<B>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let origin = from_headers(req.headers());
        let handled = self.inner.call(req);
        Box::pin(async move {
            let (answer, position) = scope_write(origin, handled).await;
            let mut answer = answer?;
            if let Some(position) = position {
                // A position is a cursor or `deferred`: always a valid header value.
                if let Ok(value) = HeaderValue::from_str(&position.to_string()) {
                    answer.headers_mut().insert(POSITION_HEADER, value);
                }
            }
            Ok(answer)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_valid_origin_is_taken() {
        let mut headers = HeaderMap::new();
        assert_eq!(from_headers(&headers), None);
        headers.insert(ORIGIN_HEADER, "a-b".parse().unwrap());
        assert_eq!(from_headers(&headers), None);
        headers.insert(ORIGIN_HEADER, "Tab_1".parse().unwrap());
        assert_eq!(from_headers(&headers).as_deref(), Some("Tab_1"));
    }

    #[tokio::test]
    async fn the_origin_holds_inside_its_scope_only() {
        assert_eq!(current(), None);
        assert_eq!(scope(Some("t1".into()), async { current() }).await.as_deref(), Some("t1"));
        assert_eq!(current(), None);
    }
}
