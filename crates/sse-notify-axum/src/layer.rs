//! A tower layer that publishes a route's successful JSON response as an event: the Axum form of
//! fastapi-sse-events' `@publish_event(topic, event, extract_data)`.
//!
//! The handler runs first; only a 2xx answer publishes. When no topic is given, it is inferred
//! from the matched route (`/api/v1/threads/{id}/comments` -> `threads.comments`). The handler's
//! write has happened by then, so the client gets its success even when the backend is away for
//! a moment: the event waits in the broker's outbox and is published once it is back
//! ([`Broker::publish_or_defer`]); only a full outbox answers 503. An event the broker can never
//! take (larger than `SSE_MAX_MESSAGE_SIZE`) answers its error. The event carries the writing
//! tab's origin when the request said it (the `sse-origin` header, [`crate::origin`]).
//!
//! The answer says where the event is in the log, in its `sse-position` header (a cursor, or
//! `deferred`: [`sse_notify_core::write`]), so the page that wrote can tell when the data it
//! holds includes its write.
//!
//! A write whose event did not simply go out says so in its answer's [`PUBLISH_HEADER`]:
//! `deferred` (waiting in the outbox for the backend) or `unconfirmed` (in the log, but fewer
//! replicas than `SSE_REDIS_MIN_REPLICAS` confirmed it; published once more a moment later).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::Value;
use sse_notify_core::write::POSITION_HEADER;
use sse_notify_core::{SseEvent, Topic};
use tower::{Layer, Service};

use crate::error::ApiError;
use sse_notify_broker::{Accepted, Broker};

/// The answer header of a write whose event was `deferred` or `unconfirmed` (absent when it
/// went out as usual).
pub const PUBLISH_HEADER: &str = "sse-publish";

/// What a publish rule sees: the route's path parameters and the handler's JSON answer.
#[derive(Debug)]
pub struct PublishContext {
    /// The matched route template, e.g. `/api/tasks/{id}`.
    pub route: Option<String>,
    /// Path parameters by name, from the route template and the request path.
    pub params: HashMap<String, String>,
    /// The response body as JSON, when it was JSON.
    pub body: Option<Value>,
}

impl PublishContext {
    /// A path parameter, e.g. `ctx.param("id")`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A number from the path parameter `name`, or else from the response body's field `name`.
    pub fn id(&self, name: &str) -> Option<u64> {
        self.param(name).and_then(|v| v.parse().ok()).or_else(|| self.body.as_ref()?.get(name)?.as_u64())
    }
}

/// The event a rule decided to publish.
struct Outgoing {
    topics: Vec<Topic>,
    event: String,
    data: Value,
}

type Rule = dyn Fn(&PublishContext) -> Option<Outgoing> + Send + Sync;
type TopicFn = dyn Fn(&PublishContext) -> Option<Topic> + Send + Sync;
type ExtractFn = dyn Fn(&PublishContext) -> Value + Send + Sync;

/// Publishes the wrapped route's successful responses.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use axum::{routing::post, Json, Router};
/// use sse_notify_axum::{Broker, BrokerLimits, PublishLayer};
/// use sse_notify_core::TopicBuilder;
///
/// let broker = Broker::memory(BrokerLimits::default());
/// let app: Router = Router::new().route(
///     "/api/threads/{id}/comments",
///     post(|| async { Json(serde_json::json!({"id": 5, "text": "hi"})) }).layer(
///         // topic inferred: "threads.comments"; data: just the id; also on "comment:5".
///         PublishLayer::new(broker, "comment:created")
///             .extract_data(|ctx| serde_json::json!({ "id": ctx.id("id") }))
///             .also_topic(|ctx| ctx.body.as_ref()?.get("id")?.as_u64().map(TopicBuilder::comment)),
///     ),
/// );
/// # }
/// ```
#[derive(Clone)]
pub struct PublishLayer {
    broker: Broker,
    rule: Arc<Rule>,
}

/// Builder state for [`PublishLayer::new`].
#[derive(Clone)]
pub struct PublishRule {
    broker: Broker,
    event: String,
    topic: Option<Topic>,
    also: Vec<Arc<TopicFn>>,
    extract: Option<Arc<ExtractFn>>,
}

impl PublishLayer {
    /// Publishes event `event` with the response body as data, on the topic inferred from the
    /// route. Refine with [`PublishRule::topic`], [`PublishRule::also_topic`] and
    /// [`PublishRule::extract_data`].
    #[allow(clippy::new_ret_no_self)]
    pub fn new(broker: Broker, event: impl Into<String>) -> PublishRule {
        PublishRule { broker, event: event.into(), topic: None, also: Vec::new(), extract: None }
    }

    /// Publishes a typed event built from the context (`None` = publish nothing).
    pub fn typed<E, F>(broker: Broker, make: F) -> Self
    where
        E: SseEvent,
        F: Fn(&PublishContext) -> Option<E> + Send + Sync + 'static,
    {
        let rule = move |ctx: &PublishContext| {
            let e = make(ctx)?;
            Some(Outgoing { topics: e.topics(), event: e.name().to_owned(), data: e.payload() })
        };
        Self { broker, rule: Arc::new(rule) }
    }
}

impl PublishRule {
    /// Publishes on `topic` instead of the inferred one.
    pub fn topic(mut self, topic: Topic) -> Self {
        self.topic = Some(topic);
        self
    }

    /// Also publishes on the topic `f` returns (e.g. the resource topic `task:{id}`).
    pub fn also_topic(mut self, f: impl Fn(&PublishContext) -> Option<Topic> + Send + Sync + 'static) -> Self {
        self.also.push(Arc::new(f));
        self
    }

    /// Publishes what `f` returns instead of the whole response body.
    pub fn extract_data(mut self, f: impl Fn(&PublishContext) -> Value + Send + Sync + 'static) -> Self {
        self.extract = Some(Arc::new(f));
        self
    }
}

impl<S> Layer<S> for PublishRule {
    type Service = PublishService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PublishLayer::from(self.clone()).layer(inner)
    }
}

impl From<PublishRule> for PublishLayer {
    fn from(r: PublishRule) -> Self {
        let broker = r.broker.clone();
        let rule = move |ctx: &PublishContext| {
            let main = match &r.topic {
                Some(t) => t.clone(),
                None => infer_topic(ctx.route.as_deref()?)?,
            };
            let mut topics = vec![main];
            topics.extend(r.also.iter().filter_map(|f| f(ctx)));
            let data = match &r.extract {
                Some(f) => f(ctx),
                None => ctx.body.clone().unwrap_or(Value::Null),
            };
            Some(Outgoing { topics, event: r.event.clone(), data })
        };
        Self { broker, rule: Arc::new(rule) }
    }
}

impl<S> Layer<S> for PublishLayer {
    type Service = PublishService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PublishService { inner, layer: self.clone() }
    }
}

/// The service [`PublishLayer`] wraps a route in.
#[derive(Clone)]
pub struct PublishService<S> {
    inner: S,
    layer: PublishLayer,
}

impl<S> Service<Request> for PublishService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The clone that was driven to readiness serves this call (tower's documented idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
        let origin = crate::origin::from_headers(req.headers());
        Box::pin(async move {
            let (mut head, body) = req.into_parts();
            // Percent-decoded by axum; a route without parameters (or with invalid UTF-8 in
            // one, which the handler's own extractor refuses) gives none.
            let params: HashMap<String, String> = match RawPathParams::from_request_parts(&mut head, &()).await {
                Ok(raw) => raw.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
                Err(_) => HashMap::new(),
            };
            let resp = inner.call(Request::from_parts(head, body)).await?;
            if !resp.status().is_success() {
                return Ok(resp);
            }
            let (mut parts, body) = resp.into_parts();
            let bytes = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return Ok(ApiError::internal(format!("reading the response failed: {e}")).into_response()),
            };
            let ctx = PublishContext { route, params, body: serde_json::from_slice(&bytes).ok() };
            if let Some(out) = (layer.rule)(&ctx) {
                let published = layer.broker.publish_or_defer_as(origin.as_deref(), &out.topics, &out.event, &out.data);
                match published.await {
                    // The write stands; its answer says where its event is, and how it went
                    // when it did not simply go out.
                    Ok(accepted) => {
                        if let Ok(position) = HeaderValue::from_str(&accepted.position().to_string()) {
                            parts.headers.insert(POSITION_HEADER, position);
                        }
                        let how = match accepted {
                            Accepted::Published(_) => None,
                            Accepted::Deferred => Some("deferred"),
                            Accepted::Unconfirmed(_) => Some("unconfirmed"),
                        };
                        if let Some(how) = how {
                            parts.headers.insert(PUBLISH_HEADER, HeaderValue::from_static(how));
                        }
                    }
                    Err(e) => {
                        tracing::error!(event = out.event, error = %e, "publish after a successful handler failed");
                        return Ok(ApiError::from(e).into_response());
                    }
                }
            }
            Ok(Response::from_parts(parts, Body::from(bytes)))
        })
    }
}

/// Is this route segment a parameter (`{id}`, `{*rest}`, or the old `:id` / `*rest`)?
fn param_name(segment: &str) -> Option<&str> {
    segment
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .map(|s| s.trim_start_matches('*'))
        .or_else(|| segment.strip_prefix(':'))
        .or_else(|| segment.strip_prefix('*'))
}

/// Infers a topic from a route template: static segments joined with `.`, skipping parameters,
/// numeric segments, `api` and version segments (`v1`, `v2`, ...).
///
/// ```
/// use sse_notify_axum::layer::infer_topic;
/// assert_eq!(infer_topic("/threads/{id}/comments").unwrap().as_str(), "threads.comments");
/// assert_eq!(infer_topic("/api/v1/tasks/{id}").unwrap().as_str(), "tasks");
/// ```
pub fn infer_topic(route: &str) -> Option<Topic> {
    let is_version = |s: &str| s.len() > 1 && s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = route
        .split('/')
        .filter(|s| !s.is_empty())
        .filter(|s| param_name(s).is_none())
        .filter(|s| !s.bytes().all(|b| b.is_ascii_digit()))
        .filter(|s| *s != "api" && !is_version(s))
        .collect();
    Topic::new(parts.join(".")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_topics_from_routes() {
        let cases = [
            ("/threads/{id}/comments", Some("threads.comments")),
            ("/api/tasks", Some("tasks")),
            ("/api/tasks/{id}", Some("tasks")),
            ("/api/v1/workspaces/{ws}/tasks/{id}", Some("workspaces.tasks")),
            ("/v2/users/:id/notes", Some("users.notes")),
            ("/files/{*path}", Some("files")),
            ("/api/2024/reports", Some("reports")),
            ("/", None),
            ("/api/{id}", None),
        ];
        for (route, want) in cases {
            assert_eq!(infer_topic(route).map(|t| t.to_string()).as_deref(), want, "{route}");
        }
    }

    #[test]
    fn ids_from_params_or_body() {
        let p = HashMap::from([("id".to_owned(), "7".to_owned())]);
        let ctx = PublishContext { route: None, params: p, body: Some(serde_json::json!({"n": 3})) };
        assert_eq!(ctx.id("id"), Some(7));
        assert_eq!(ctx.id("n"), Some(3));
        assert_eq!(ctx.id("missing"), None);
    }
}
