//! A response cache for the read routes that notifications make clients refetch.
//!
//! "Notify, then fetch" puts the cost in the fetch: when a board changes, every viewer GETs the
//! list again, and the server computes the same answer once per viewer. [`ResponseCache`] is a
//! tower layer for such a route. The route declares what its answer depends on ([`CacheScope`]):
//! the topics whose events change it, and the app's *authorization class*, what decides who may
//! see which answer (`"public"`, or a team). Answers are kept per path, query and class, for as
//! long as no event of those topics has come (the topics' [`Head`](sse_notify_broker::Head) in this
//! process), and requests that arrive while one is being computed wait for it (single-flight):
//! a wave of a thousand refetches computes the answer once.
//!
//! Two rules hold, whatever the timing:
//! - **Never stale for a notified client.** A request whose `Last-Event-ID` header holds the
//!   cursor of the notification that triggered it gets an answer computed after this process
//!   learnt of that event: it waits (briefly) for the event to arrive here, and past that wait it
//!   gets an answer whose computation began after the request arrived (its write was committed
//!   before its event was published, so such an answer holds it). The requests that waited in
//!   vain share such an answer as a wave does: a client that sends cursors no event will ever
//!   match (made up, ahead of the log) costs one computation per key per wait, not one per
//!   request. Without the header, a request gets the answer of
//!   the newest event this process has seen, and a write accepted by this process counts from the
//!   moment it is accepted.
//! - **Never shared across authorization.** Requests share an answer only when their scope's
//!   class is the same; a request whose scope is `None` (the app cannot vouch for it, e.g. a
//!   signed-out user) goes to the handler, which answers it (403, say) itself.
//!
//! Every cached answer carries a weak `ETag` (a hash of its body) and `Cache-Control: private,
//! no-cache`, so a browser asks again each time and a request with a matching `If-None-Match`
//! gets `304 Not Modified` without the body. Only `200` answers of `GET` requests are kept.
//!
//! What it holds is bounded by what it counts: answers and their keys ([`CacheLimits`]); a slot
//! whose answer is not kept is let go at once; and a topic set is followed (a Redis
//! subscription) only once one of its answers proved worth keeping: its first request is
//! answered uncached, so reads of things that do not exist cost neither memory nor Redis work.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use axum::{routing::get, Json, Router};
//! use sse_notify_axum::{Broker, BrokerLimits, CacheScope, ResponseCache};
//! use sse_notify_core::Topic;
//!
//! let broker = Broker::memory(BrokerLimits::default());
//! let cache = ResponseCache::new(broker);
//! let app: Router = Router::new().route(
//!     "/api/tasks",
//!     // The list changes with the `tasks` topic and is the same for everyone.
//!     get(|| async { Json(vec!["write the docs"]) })
//!         .layer(cache.layer(|_| async { Some(CacheScope::public([Topic::new("tasks").unwrap()])) })),
//! );
//! # }
//! ```

mod answer;
mod store;

use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, request::Parts, Method};
use axum::response::Response;
use lru::LruCache;
use sse_notify_core::cursor::Cursor;
use sse_notify_core::Topic;
use tokio::sync::OnceCell;
use tower::{Layer, Service, ServiceExt};

use answer::{keep, not_modified};
use sse_notify_broker::{Broker, TopicWatch};
use store::{EntryKey, Store};

/// What a route's answer to one request depends on: the topics whose events change it, and
/// the authorization class of the requester (requests of one class may share an answer).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheScope {
    topics: Vec<Topic>,
    class: String,
}

impl CacheScope {
    /// An answer that changes with `topics` and that requesters of `class` may share: put in
    /// the class everything the route's authorization looks at (a team id, a role), or the
    /// user's id when every user sees their own.
    pub fn new(topics: impl IntoIterator<Item = Topic>, class: impl Into<String>) -> Self {
        let mut topics: Vec<Topic> = topics.into_iter().collect();
        topics.sort();
        topics.dedup();
        Self { topics, class: class.into() }
    }

    /// An answer that is the same for everyone (class `"public"`).
    pub fn public(topics: impl IntoIterator<Item = Topic>) -> Self {
        Self::new(topics, "public")
    }
}

/// How much the cache holds.
#[derive(Clone, Debug)]
pub struct CacheLimits {
    /// Answers kept (least recently used first out).
    pub max_entries: usize,
    /// Bytes kept in all: answer bodies and their keys (path, query and class).
    pub max_bytes: usize,
    /// An answer larger than this is passed on, not kept.
    pub max_body: usize,
    /// Distinct topic sets followed at once.
    pub max_scopes: usize,
    /// How long a request waits for the event its `Last-Event-ID` names to reach this process
    /// before its answer is computed for it alone.
    pub wait: Duration,
}

impl Default for CacheLimits {
    /// 10,000 answers, 64 MiB, 1 MiB each at most, 1,024 topic sets, 200 ms.
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 64 << 20,
            max_body: 1 << 20,
            max_scopes: 1024,
            wait: Duration::from_millis(200),
        }
    }
}

/// Keeps the answers of read routes until their topics change; cheap to clone (one `Arc`).
/// See the [module documentation](self).
#[derive(Clone)]
pub struct ResponseCache {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Broker,
    limits: CacheLimits,
    /// Topic set (sorted, as in a [`CacheScope`]) -> its watch, made once by the first request
    /// that needs it.
    watches: Mutex<LruCache<Vec<Topic>, Followed>>,
    answers: Store,
}

/// A topic set's watch, once made.
type WatchCell = Arc<OnceCell<Arc<TopicWatch>>>;

/// A followed topic set: its watch, and when a request last used it.
struct Followed {
    cell: WatchCell,
    used: Instant,
}

/// A followed topic set used this recently is not let go for another: when every one is, a new
/// one is not followed (its reads are answered uncached). Otherwise a client cycling through
/// more topic sets than `CacheLimits::max_scopes` (more items than that, read in turn) would
/// make every read a Redis subscription, an unsubscription and a head read, and push the
/// board's own list out with them.
const IN_USE: Duration = Duration::from_secs(60);

/// What became of a request, for `sse_cache_requests_total{result}`.
#[derive(Clone, Copy)]
enum Outcome {
    /// Served from a kept answer.
    Hit,
    /// Served `304 Not Modified` from a kept answer.
    NotModified,
    /// Computed by the handler and kept.
    Computed,
    /// Passed to the handler, not kept (not a GET, no scope, the broker away, a topic set not
    /// followed yet, a non-200 or oversized answer).
    Passed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::NotModified => "not_modified",
            Outcome::Computed => "computed",
            Outcome::Passed => "passed",
        }
    }
}

impl ResponseCache {
    /// A cache with the default [`CacheLimits`], following topics through `broker`.
    pub fn new(broker: Broker) -> Self {
        Self::with_limits(broker, CacheLimits::default())
    }

    /// A cache with `limits`.
    pub fn with_limits(broker: Broker, limits: CacheLimits) -> Self {
        let scopes = NonZeroUsize::new(limits.max_scopes.max(1)).expect("at least 1");
        Self {
            inner: Arc::new(Inner {
                broker,
                watches: Mutex::new(LruCache::new(scopes)),
                answers: Store::new(limits.max_entries, limits.max_bytes),
                limits,
            }),
        }
    }

    /// A layer for one read route: `scope` tells, from the request's head, what its answer
    /// depends on (`None`: do not share it; the handler answers).
    pub fn layer<F, Fut>(&self, scope: F) -> CacheLayer<F>
    where
        F: Fn(&Parts) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Option<CacheScope>> + Send + 'static,
    {
        CacheLayer { cache: self.clone(), scope }
    }

    /// Follows `topics` now, so that the first request of a scope with exactly these topics
    /// already has its answer kept: for the reads an app knows will be asked for at once (a
    /// board's list, say). Otherwise a topic set is followed once one of its answers proved
    /// worth keeping ([module documentation](self)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use sse_notify_axum::{Broker, BrokerLimits, ResponseCache};
    /// use sse_notify_core::Topic;
    ///
    /// let cache = ResponseCache::new(Broker::memory(BrokerLimits::default()));
    /// cache.follow(&[Topic::new("tasks").unwrap()]).await;
    /// # }
    /// ```
    pub async fn follow(&self, topics: &[Topic]) {
        let mut topics = topics.to_vec();
        topics.sort();
        topics.dedup();
        self.inner.follow(&topics).await;
    }

    /// Answers kept now, and the bytes they hold (bodies and keys).
    pub fn size(&self) -> (usize, usize) {
        self.inner.answers.size()
    }
}

impl Inner {
    /// The watch of `topics` if they are followed already (`None`: not yet, see
    /// [`Inner::follow`]); it may still be being made, then this waits for it.
    async fn watch(&self, topics: &[Topic]) -> Option<Option<Arc<TopicWatch>>> {
        // Looked up by the scope's own slice: a hit allocates nothing.
        let cell = {
            let mut watches = self.watches.lock().unwrap();
            let followed = watches.get_mut(topics)?;
            followed.used = Instant::now();
            followed.cell.clone()
        };
        Some(self.made(topics, &cell).await)
    }

    /// Follows `topics` from now on: called once an answer of theirs proved worth keeping.
    /// Following costs the backend work (a Redis subscription and a read of the log's head), so
    /// a topic set's first request does not follow it: a read of something that does not exist
    /// (a `404` of an unseen id) would otherwise cost that work, and a watch, per request.
    async fn follow(&self, topics: &[Topic]) {
        let cell = {
            let mut watches = self.watches.lock().unwrap();
            let full = watches.len() >= watches.cap().get();
            if full && !watches.contains(topics) && watches.peek_lru().is_some_and(|(_, f)| f.used.elapsed() < IN_USE) {
                return;
            }
            let now = Instant::now();
            let followed = watches.get_or_insert_mut(topics.to_vec(), || Followed { cell: Arc::default(), used: now });
            followed.used = now;
            followed.cell.clone()
        };
        self.made(topics, &cell).await;
    }

    async fn made(&self, topics: &[Topic], cell: &WatchCell) -> Option<Arc<TopicWatch>> {
        let made = cell.get_or_try_init(|| async { self.broker.watch(topics).await.map(Arc::new) }).await;
        match made {
            Ok(watch) => Some(watch.clone()),
            Err(e) => {
                // Debug, not warn: during an outage every request would say it (readiness does).
                tracing::debug!(error = %e, "response cache: cannot follow its topics; answering uncached");
                None
            }
        }
    }

    fn count(&self, outcome: Outcome) {
        crate::metrics::of(&self.broker).cache_requests.get_or_create(&vec![("result", outcome.label())]).inc();
    }
}

/// The layer [`ResponseCache::layer`] makes.
#[derive(Clone)]
pub struct CacheLayer<F> {
    cache: ResponseCache,
    scope: F,
}

impl<S, F: Clone> Layer<S> for CacheLayer<F> {
    type Service = CacheService<S, F>;
    fn layer(&self, inner: S) -> Self::Service {
        CacheService { inner, cache: self.cache.clone(), scope: self.scope.clone() }
    }
}

/// The service [`CacheLayer`] wraps a route in.
#[derive(Clone)]
pub struct CacheService<S, F> {
    inner: S,
    cache: ResponseCache,
    scope: F,
}

impl<S, F, Fut> Service<Request> for CacheService<S, F>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    F: Fn(&Parts) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Option<CacheScope>> + Send + 'static,
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
        let inner = std::mem::replace(&mut self.inner, clone);
        let cache = self.cache.inner.clone();
        let scope = self.scope.clone();
        Box::pin(async move {
            let arrived = Instant::now();
            let (parts, body) = req.into_parts();
            let scope = if parts.method == Method::GET { scope(&parts).await } else { None };
            let Some(scope) = scope else {
                cache.count(Outcome::Passed);
                return inner.oneshot(Request::from_parts(parts, body)).await;
            };
            let if_none_match = parts.headers.get(header::IF_NONE_MATCH).cloned();
            let Some(watch) = cache.watch(&scope.topics).await else {
                // Not followed yet: this answer is computed for this request alone, and, if it
                // is one to keep, the topics are followed from now on (the next request's
                // answer is kept).
                cache.count(Outcome::Passed);
                let Ok(resp) = inner.oneshot(Request::from_parts(parts, body)).await;
                return Ok(match keep(resp, cache.limits.max_body).await {
                    Ok(answer) => {
                        cache.follow(&scope.topics).await;
                        match answer.revalidated_by(if_none_match.as_ref()) {
                            true => not_modified(&answer),
                            false => answer.response(),
                        }
                    }
                    Err(resp) => resp,
                });
            };
            let Some(watch) = watch else {
                cache.count(Outcome::Passed);
                return inner.oneshot(Request::from_parts(parts, body)).await;
            };
            let (head, proven) = settled_head(&cache, &watch, &parts).await;
            let key = EntryKey {
                path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
                class: scope.class,
            };
            // The event the client was notified of has not reached this process (or is of a
            // log epoch it cannot compare): an answer kept here may predate it, one computed
            // since the request arrived does not.
            let slot = cache.answers.slot(&key, head.generation, (!proven).then_some(arrived));
            let computing = AtomicBool::new(false);
            let answer = slot
                .answer
                .get_or_try_init(|| async {
                    computing.store(true, Ordering::Relaxed);
                    let Ok(resp) = inner.oneshot(Request::from_parts(parts, body)).await;
                    let answer = keep(resp, cache.limits.max_body).await?;
                    cache.answers.account(&key, &slot, answer.body.len());
                    Ok(Arc::new(answer))
                })
                .await;
            let answer = match answer {
                Ok(answer) => answer.clone(),
                Err(resp) => {
                    // Not one to keep: this request's own answer, passed on as it came, and its
                    // slot let go.
                    cache.answers.forget(&key, &slot);
                    cache.count(Outcome::Passed);
                    return Ok(resp);
                }
            };
            if answer.revalidated_by(if_none_match.as_ref()) {
                cache.count(Outcome::NotModified);
                return Ok(not_modified(&answer));
            }
            cache.count(if computing.load(Ordering::Relaxed) { Outcome::Computed } else { Outcome::Hit });
            Ok(answer.response())
        })
    }
}

/// The head to serve a request at: now, or, for a request whose `Last-Event-ID` names an event
/// not yet seen here, once it is (at most `CacheLimits::wait`); and whether the cursor was proven
/// seen (`false`: it was not within the wait, or is of a log epoch this process cannot compare).
/// A cursor of another prefix, or not a cursor, proves nothing and is ignored.
async fn settled_head(cache: &Inner, watch: &TopicWatch, parts: &Parts) -> (sse_notify_broker::Head, bool) {
    let head = watch.now();
    let cursor = parts
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<Cursor>().ok())
        .filter(|c| head.log.is_some_and(|log| log.tag == c.log.tag));
    let Some(cursor) = cursor else { return (head, true) };
    match head.has_seen(&cursor) {
        Some(true) => (head, true),
        Some(false) => match watch.wait_for(cache.limits.wait, |h| h.has_seen(&cursor) != Some(false)).await {
            Some(h) if h.has_seen(&cursor) == Some(true) => (h, true),
            _ => (watch.now(), false),
        },
        None => (head, false),
    }
}
