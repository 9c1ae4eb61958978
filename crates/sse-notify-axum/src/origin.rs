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
//! ```
//! use axum::{routing::post, Router};
//! use sse_notify_axum::origin::WriterOriginLayer;
//! let app: Router = Router::new()
//!     .route("/api/notes", post(|| async { "saved" })) // and server functions, pages...
//!     .layer(WriterOriginLayer);
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::HeaderMap;
use sse_notify_core::origin::{is_origin, ORIGIN_HEADER};
use tower::{Layer, Service};

tokio::task_local! {
    static WRITER: Option<Box<str>>;
}

/// The origin of the request being handled, if it sent a valid one.
pub fn current() -> Option<Box<str>> {
    WRITER.try_with(Clone::clone).ok().flatten()
}

/// Runs `work` with `origin` as the writer's origin.
pub async fn scope<F: Future>(origin: Option<Box<str>>, work: F) -> F::Output {
    WRITER.scope(origin, work).await
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
            self.0.publish_or_defer_as(origin.as_deref(), topics, event, data).await.map(|_| ())
        })
    }
}

/// A request's origin header, when it is a valid origin (anything else is ignored: the event
/// then goes without one).
pub fn from_headers(headers: &HeaderMap) -> Option<Box<str>> {
    let value = headers.get(ORIGIN_HEADER)?.to_str().ok()?;
    is_origin(value).then(|| value.into())
}

/// Makes each request's `sse-origin` the origin of the events published while it is handled.
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

impl<S> Service<Request> for WriterOrigin<S>
where
    S: Service<Request> + Send,
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
        Box::pin(scope(origin, handled))
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
