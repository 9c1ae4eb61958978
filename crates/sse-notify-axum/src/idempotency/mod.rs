//! Retried writes happen once: a tower layer that remembers each write's `Idempotency-Key` for a
//! while, and answers a repeat of it with the first answer instead of running the handler again
//! (so nothing is written or published twice).
//!
//! A browser retries a write whose answer it lost (a dropped connection, a proxy's timeout); the
//! first attempt may well have been written. With a key per write ([`IDEMPOTENCY_KEY_HEADER`],
//! which `leptos_sse_notify::write` sends), the retry gets the first attempt's status, headers
//! (`sse-position` included) and body, marked `idempotent-replayed: true`. The rules, as
//! Stripe's and the IETF draft's:
//! - Keys are remembered per **scope**, which the app names for each request (the signed-in
//!   user, or `"public"`): a key is a secret of the write, and no one outside its scope can
//!   replay, or even probe, another's. A request whose scope is `None` runs unprotected.
//! - A repeat whose request differs (method, path, query or body) is refused: `422
//!   idempotency_key_reused`.
//! - A repeat that arrives while the first attempt runs waits for its answer (up to
//!   [`IdempotencyLimits::wait`]), then gets `409 idempotency_key_in_use`.
//! - A first attempt answered `5xx` is forgotten: nothing was written, a retry runs again.
//! - With Redis, keys live there (any instance sees them); otherwise in the process. Either way
//!   they are bounded by time ([`IdempotencyLimits::ttl`], 24 h) and count
//!   ([`IdempotencyLimits::max_keys`]); an answer larger than [`IdempotencyLimits::max_answer`]
//!   is not kept (its repeat gets `409 idempotent_answer_not_kept`, and runs nothing).
//! - If the store cannot be reached, a keyed write is refused (`503`) rather than run without
//!   the protection it asked for.
//!
//! ```
//! use axum::{routing::post, Router};
//! use sse_notify_axum::{Broker, BrokerLimits, IdempotencyLayer};
//!
//! let broker = Broker::memory(BrokerLimits::default());
//! let app: Router = Router::new()
//!     .route("/api/notes", post(|| async { "saved" }))
//!     // Everyone's writes in one scope here; name the signed-in user when there is one.
//!     .layer(IdempotencyLayer::new(&broker, |_| async { Some("public".to_owned()) }));
//! ```

mod record;
mod store;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, request::Parts, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::future::Either;
use http_body_util::{BodyExt, Limited};
use sha2::{Digest, Sha256};
use sse_notify_broker::Broker;
use sse_notify_core::write::{is_idempotency_key, IDEMPOTENCY_KEY_HEADER, IDEMPOTENT_REPLAY_HEADER};
use tower::{Layer, Service};

use crate::error::ApiError;
use record::{Answer, Fingerprint, Record};
use store::{Begin, MemoryStore, ScopeKey, Store, StoreKey};

/// How long and how much the layer remembers.
#[derive(Clone, Debug)]
pub struct IdempotencyLimits {
    /// How long a key is remembered after its first attempt answered.
    pub ttl: Duration,
    /// Keys remembered at most in all: past that, a new key is refused (`503
    /// idempotency_full`) rather than someone else's forgotten.
    pub max_keys: usize,
    /// Keys one scope holds at most: past that, the scope's own oldest go (a scope can push
    /// out only its own keys).
    pub max_keys_per_scope: usize,
    /// Bytes of records held at most in all (in Redis, or in the process with their
    /// bookkeeping): past that, a new key is refused.
    pub max_bytes: usize,
    /// A larger answer is passed on but not kept (its repeat is `409
    /// idempotent_answer_not_kept`).
    pub max_answer: usize,
    /// A keyed request's body is read up to this size to fingerprint it; a larger one is
    /// refused (`413`).
    pub max_request: usize,
    /// ... and within this time, however slowly it comes (`408`).
    pub read_within: Duration,
    /// How long a repeat waits for the first attempt's answer.
    pub wait: Duration,
    /// How long a first attempt holds its key before it answers; past that, an instance that
    /// died while handling it no longer blocks the key (a retry runs it).
    pub pending: Duration,
}

impl Default for IdempotencyLimits {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            max_keys: 100_000,
            max_keys_per_scope: 100,
            max_bytes: 64 << 20,
            max_answer: 16 << 10,
            max_request: 1 << 20,
            read_within: Duration::from_secs(30),
            wait: Duration::from_secs(10),
            pending: Duration::from_secs(60),
        }
    }
}

type ScopeFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;
type ScopeFn = dyn Fn(&Parts) -> ScopeFuture + Send + Sync;

/// Answers a repeated `Idempotency-Key` with the first attempt's answer (see the module docs).
#[derive(Clone)]
pub struct IdempotencyLayer {
    store: Arc<dyn Store>,
    scope: Arc<ScopeFn>,
    limits: Arc<IdempotencyLimits>,
}

impl IdempotencyLayer {
    /// Keys kept where the broker keeps its log (Redis, or this process), per the scope
    /// `scope` names for each request, with the default [`IdempotencyLimits`].
    pub fn new<F, Fut>(broker: &Broker, scope: F) -> Self
    where
        F: Fn(&Parts) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<String>> + Send + 'static,
    {
        Self::with_limits(broker, scope, IdempotencyLimits::default())
    }

    /// [`IdempotencyLayer::new`] with other limits.
    pub fn with_limits<F, Fut>(broker: &Broker, scope: F, limits: IdempotencyLimits) -> Self
    where
        F: Fn(&Parts) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<String>> + Send + 'static,
    {
        let store = store_for(broker, &limits);
        let scope: Arc<ScopeFn> = Arc::new(move |parts| Box::pin(scope(parts)));
        Self { store, scope, limits: Arc::new(limits) }
    }

    /// Keys remembered now.
    pub async fn len(&self) -> usize {
        self.store.len().await.unwrap_or(0)
    }

    /// Whether no key is remembered now.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

fn store_for(broker: &Broker, limits: &IdempotencyLimits) -> Arc<dyn Store> {
    #[cfg(feature = "redis")]
    if let Some(conn) = broker.redis_connection() {
        return Arc::new(store::RedisStore::new(conn, broker.limits().namespace(), limits));
    }
    let _ = broker;
    Arc::new(MemoryStore::new(limits))
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Idempotency { inner, layer: self.clone() }
    }
}

/// The service [`IdempotencyLayer`] wraps.
#[derive(Clone)]
pub struct Idempotency<S> {
    inner: S,
    layer: IdempotencyLayer,
}

/// Any request body is taken (a body timeout's, say, so the two can be one `ServiceBuilder`
/// stack) and passed on as axum's [`Body`] (which a `Body` already is, at no cost).
impl<S, B> Service<axum::http::Request<B>> for Idempotency<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let req = req.map(Body::new);
        let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE);
        let Some(key) = req.headers().get(IDEMPOTENCY_KEY_HEADER).filter(|_| !safe).cloned() else {
            // Nothing to remember: the inner service, made ready by `poll_ready`, answers as it
            // is, neither cloned nor boxed (every read takes this path: the clone and the box
            // were ~1 µs of each cached refetch, measured with perf).
            return Either::Left(self.inner.call(req));
        };
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Either::Right(Box::pin(async move {
            Ok(layer.handle(inner, key, req).await.unwrap_or_else(IntoResponse::into_response))
        }))
    }
}

impl IdempotencyLayer {
    async fn handle<S>(&self, mut inner: S, key: HeaderValue, req: Request) -> Result<Response, ApiError>
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
    {
        let bad_key = || {
            ApiError::bad_request(
                "bad_idempotency_key",
                "Idempotency-Key must be one header of 1-128 visible ASCII characters",
            )
        };
        if req.headers().get_all(IDEMPOTENCY_KEY_HEADER).iter().count() > 1 {
            return Err(bad_key());
        }
        let key = key.to_str().ok().filter(|k| is_idempotency_key(k)).ok_or_else(bad_key)?;
        let (parts, body) = req.into_parts();
        let Some(scope) = (self.scope)(&parts).await else {
            // The app vouches for no scope (e.g. signed out): the handler answers as it would.
            return Ok(inner.call(Request::from_parts(parts, body)).await.unwrap_or_else(|e| match e {}));
        };
        let body = read_body(body, &self.limits).await?;
        let fingerprint = fingerprint(&parts, &body);
        let (scope, store_key) = (scope_key(&scope), store_key(&scope, key));
        // From here on, all of it (the key taken, the handler, its answer kept) runs in a task of
        // its own: a client that goes away (the lost answer this layer is for) would otherwise
        // cancel it midway, between taking the key and running the handler, or between the
        // handler and its answer kept, and leave the key pending with nothing to answer its
        // retry.
        let layer = self.clone();
        let request = Request::from_parts(parts, Body::from(body));
        let task = tokio::spawn(async move { layer.keyed(inner, scope, store_key, fingerprint, request).await });
        task.await.unwrap_or_else(|e| Err(ApiError::internal(format!("a keyed write's task failed: {e}"))))
    }

    /// A keyed write, its body read: the first attempt, or a repeat.
    async fn keyed<S>(
        &self,
        mut inner: S,
        scope: ScopeKey,
        key: StoreKey,
        fingerprint: Fingerprint,
        request: Request,
    ) -> Result<Response, ApiError>
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
    {
        let unavailable = |e: store::Unavailable| {
            tracing::warn!(error = %e, "idempotency store unavailable: keyed write refused");
            ApiError::unavailable("idempotency_unavailable", "the write's Idempotency-Key cannot be checked now; retry")
        };
        let pending = Record::Pending(fingerprint).encode();
        match self.store.begin(scope, key, pending).await.map_err(unavailable)? {
            Begin::First => {}
            Begin::Held(held) => return self.repeat(key, &fingerprint, held).await,
            Begin::Full => {
                tracing::warn!("idempotency store full (IdempotencyLimits::max_keys / max_bytes): keyed write refused");
                return Err(ApiError::unavailable(
                    "idempotency_full",
                    "no more Idempotency-Keys can be kept now; retry later",
                ));
            }
        }
        let handled = std::panic::AssertUnwindSafe(inner.call(request));
        let answer = match futures::FutureExt::catch_unwind(handled).await {
            Ok(answer) => answer.unwrap_or_else(|e| match e {}),
            Err(_) => {
                // The handler panicked: nothing to vouch for, a retry may run.
                let _ = self.store.abandon(scope, key).await;
                return Err(ApiError::internal("a keyed write's handler panicked"));
            }
        };
        first_attempt(&*self.store, &self.limits, scope, key, fingerprint, answer).await
    }

    /// A repeat of a key: the first attempt's answer, once there is one.
    async fn repeat(&self, key: StoreKey, fingerprint: &Fingerprint, mut held: Bytes) -> Result<Response, ApiError> {
        let deadline = Instant::now() + self.limits.wait;
        loop {
            let Some(record) = Record::decode(&held) else {
                return Err(ApiError::internal("an idempotency record that is not one"));
            };
            if record.fingerprint() != fingerprint {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for another request",
                ));
            }
            match record {
                Record::Done(_, answer) => return Ok(replay(answer)),
                Record::NotKept(_) => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "idempotent_answer_not_kept",
                        "the first request with this Idempotency-Key was answered, with an answer that is not kept \
                         (too large, or meant for that request alone); it is not run again",
                    ))
                }
                Record::Pending(_) if Instant::now() >= deadline => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "idempotency_key_in_use",
                        "the first request with this Idempotency-Key is still being handled; retry",
                    ))
                }
                Record::Pending(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
            held = match self.store.get(key).await {
                Ok(Some(held)) => held,
                // Forgotten (its first attempt failed): the client may send it again.
                Ok(None) => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "idempotency_key_in_use",
                        "the first request with this Idempotency-Key failed; retry",
                    ))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "idempotency store unavailable");
                    return Err(ApiError::unavailable("idempotency_unavailable", "retry"));
                }
            };
        }
    }
}

/// A keyed write's body, whole: up to `max_request` bytes, within `read_within`.
async fn read_body(body: Body, limits: &IdempotencyLimits) -> Result<Bytes, ApiError> {
    let read = tokio::time::timeout(limits.read_within, Limited::new(body, limits.max_request).collect()).await;
    match read {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a keyed write's body is read whole, up to {} bytes", limits.max_request),
        )),
        // A body timeout outside this layer (`SseApp::body_timeout`) ends a body that stalls;
        // the deadline here, one that trickles.
        _ => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_incomplete",
            "the request body did not arrive whole in time",
        )),
    }
}

/// Keeps the first attempt's answer (or forgets the key when it failed), and gives the answer,
/// always whole: an answer that is not kept, or could not be, is still the client's (the write
/// happened; a key the store did not hear the end of stays pending until `pending` passes).
async fn first_attempt(
    store: &dyn Store,
    limits: &IdempotencyLimits,
    scope: ScopeKey,
    key: StoreKey,
    fingerprint: Fingerprint,
    answer: Response,
) -> Result<Response, ApiError> {
    let kept = |e: store::Unavailable| tracing::warn!(error = %e, "idempotency store unavailable: an answer not kept");
    if answer.status().is_server_error() {
        // Nothing was done (or nothing the app vouches for): a retry runs again.
        store.abandon(scope, key).await.unwrap_or_else(kept);
        return Ok(answer);
    }
    let (head, body) = answer.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            // The handler's body failed midway: the write happened (its status said so); its
            // repeat must not run it again.
            store.finish(scope, key, Record::NotKept(fingerprint).encode()).await.unwrap_or_else(kept);
            return Err(ApiError::internal(format!("a keyed write's answer failed midway: {e}")));
        }
    };
    // Not kept: one too large (headers counted: a header may echo the request), and one meant
    // for its requester alone (a cookie, a token marked `no-store`), which a repeat (by anyone
    // in the scope, for a day) must not get.
    let private = head.headers.contains_key(header::SET_COOKIE)
        || head.headers.get_all(header::CACHE_CONTROL).iter().any(|v| v.to_str().is_ok_and(|v| v.contains("no-store")));
    let done = Record::Done(
        fingerprint,
        Answer { status: head.status, headers: Answer::kept_headers(&head.headers), body: body.clone() },
    )
    .encode();
    let record = if private || done.len() > limits.max_answer { Record::NotKept(fingerprint).encode() } else { done };
    store.finish(scope, key, record).await.unwrap_or_else(kept);
    Ok(Response::from_parts(head, Body::from(body)))
}

fn replay(answer: Answer) -> Response {
    let mut resp = Response::new(Body::from(answer.body));
    *resp.status_mut() = answer.status;
    for (name, value) in answer.headers {
        resp.headers_mut().append(name, value);
    }
    resp.headers_mut().insert(IDEMPOTENT_REPLAY_HEADER, HeaderValue::from_static("true"));
    resp
}

/// What makes two requests the same write: method, path and query, content type, body.
fn fingerprint(parts: &Parts, body: &Bytes) -> Fingerprint {
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update([0]);
    h.update(parts.uri.path_and_query().map_or("", |p| p.as_str()));
    h.update([0]);
    // The same bytes as another type are another request (a form is not JSON).
    h.update(parts.headers.get(header::CONTENT_TYPE).map_or(&b""[..], |v| v.as_bytes()));
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

/// A scope's place in the store: a hash of its name.
fn scope_key(scope: &str) -> ScopeKey {
    let mut h = Sha256::new();
    h.update(b"scope\0");
    h.update(scope);
    h.finalize().into()
}

/// Where a key is kept: a hash of its scope and itself, so neither is stored, and keys of two
/// scopes never meet.
fn store_key(scope: &str, key: &str) -> StoreKey {
    let mut h = Sha256::new();
    h.update((scope.len() as u64).to_be_bytes());
    h.update(scope);
    h.update(key);
    h.finalize().into()
}
