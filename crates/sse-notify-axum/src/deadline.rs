//! A request body's deadline: the whole body must arrive within a time counted from when its
//! request's head did, or reading it fails with [`BodyTimeout`] (which the app answers with 408).
//!
//! tower-http's `RequestBodyTimeoutLayer` bounds the wait *between* frames: a client that sends
//! a byte just before each bound holds its request, its connection and whatever the handler
//! keeps meanwhile for as long as it likes. This bounds the whole body, which is what
//! `HTTP_BODY_TIMEOUT_SECONDS` promises; tower-http has no such layer, hence this one.
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::post, Router};
//! use sse_notify_axum::deadline::BodyDeadlineLayer;
//! let app: Router = Router::new()
//!     .route("/api/notes", post(|body: String| async move { body }))
//!     .layer(BodyDeadlineLayer::new(Duration::from_secs(30))); // `SseApp::body_timeout` makes one
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::HttpBody;
use axum::http::Request;
use bytes::Buf;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// A request body that did not arrive whole within its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyTimeout;

impl BodyTimeout {
    /// What it says: also the text a reader that keeps only an error's text (a Leptos server
    /// function's) can recognise it by.
    pub const MESSAGE: &'static str = "the request body did not arrive in time";

    /// Whether `error`, or an error it was caused by, is a [`BodyTimeout`] (axum's rejections
    /// keep the body's error as their source).
    pub fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut source = Some(error);
        while let Some(e) = source {
            if e.is::<BodyTimeout>() {
                return true;
            }
            source = e.source();
        }
        false
    }
}

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Self::MESSAGE)
    }
}

impl std::error::Error for BodyTimeout {}

/// Gives each request's body `timeout` to arrive, counted from when the request reaches it.
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadlineLayer {
    timeout: Duration,
}

impl BodyDeadlineLayer {
    /// Each body gets `timeout` to arrive whole.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for BodyDeadlineLayer {
    type Service = BodyDeadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BodyDeadline { inner, timeout: self.timeout }
    }
}

/// The service [`BodyDeadlineLayer`] wraps.
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> Service<Request<B>> for BodyDeadline<S>
where
    S: Service<Request<DeadlineBody<B>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> S::Future {
        let deadline = Instant::now() + self.timeout;
        self.inner.call(req.map(|body| DeadlineBody { body, deadline, timer: None }))
    }
}

pin_project_lite::pin_project! {
    /// A body that fails with [`BodyTimeout`] once its deadline passes before its end.
    pub struct DeadlineBody<B> {
        #[pin]
        body: B,
        deadline: Instant,
        // Made on the first wait only: a body that is there at once (every GET's empty one)
        // costs no timer.
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody,
    B::Data: Buf,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = *this.deadline;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use futures::StreamExt;
    use http_body_util::BodyExt;

    /// A body that sends a byte every `every`, `count` times.
    fn trickle(every: Duration, count: usize) -> Body {
        Body::from_stream(futures::stream::iter(0..count).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x"))
        }))
    }

    fn within(timeout: Duration, body: Body) -> DeadlineBody<Body> {
        DeadlineBody { body, deadline: Instant::now() + timeout, timer: None }
    }

    #[tokio::test]
    async fn a_body_that_trickles_past_its_deadline_fails_though_no_gap_is_long() {
        let started = Instant::now();
        let err = within(Duration::from_millis(300), trickle(Duration::from_millis(90), 10)).collect().await.err();
        let err = err.expect("ten bytes 90 ms apart do not arrive within 300 ms");
        assert!(started.elapsed() < Duration::from_millis(800), "cut at its deadline, not at the end");
        assert!(BodyTimeout::caused(&*err), "{err}");
        assert_eq!(err.to_string(), BodyTimeout::MESSAGE);
    }

    #[tokio::test]
    async fn a_body_within_its_deadline_arrives_whole() {
        let got = within(Duration::from_secs(2), trickle(Duration::from_millis(20), 10)).collect().await.unwrap();
        assert_eq!(got.to_bytes().len(), 10);
        let empty = within(Duration::from_secs(3), Body::empty());
        assert!(empty.is_end_stream());
        assert!(empty.collect().await.unwrap().to_bytes().is_empty());
    }
}
