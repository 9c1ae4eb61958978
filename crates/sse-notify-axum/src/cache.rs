//! A response cache for the read routes that notifications make clients refetch.
//!
//! "Notify, then fetch" puts the cost in the fetch: when a board changes, every viewer GETs the
//! list again, and the server computes the same answer once per viewer. [`ResponseCache`] is a
//! tower layer for such a route. The route declares what its answer depends on ([`CacheScope`]):
//! the topics whose events change it, and the app's *authorization class*, what decides who may
//! see which answer (`"public"`, or a team). Answers are kept per path, query and class, for as
//! long as no event of those topics has come (the topics' [`Head`](crate::broker::Head) in this
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

use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use lru::LruCache;
use sse_notify_core::cursor::Cursor;
use sse_notify_core::Topic;
use tokio::sync::OnceCell;
use tower::{Layer, Service, ServiceExt};

use crate::broker::{Broker, TopicWatch};

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
    entries: Mutex<Entries>,
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

struct Entries {
    slots: LruCache<EntryKey, Slot>,
    bytes: usize,
}

impl Entries {
    /// Whether `slot` is still the one kept under `key` (not replaced by a newer generation,
    /// nor let go).
    fn holds(&self, key: &EntryKey, slot: &Slot) -> bool {
        self.slots.peek(key).is_some_and(|kept| Arc::ptr_eq(&kept.answer, &slot.answer))
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct EntryKey {
    path_and_query: String,
    class: String,
}

impl EntryKey {
    /// What the key holds, counted in `CacheLimits::max_bytes` with the answers: its two
    /// strings and their bookkeeping.
    fn cost(&self) -> usize {
        self.path_and_query.len() + self.class.len() + std::mem::size_of::<(EntryKey, Slot)>()
    }
}

/// An answer of one generation of its topics' head, or the computation of it.
#[derive(Clone)]
struct Slot {
    generation: u64,
    /// When it was made: its answer is computed after that (by the first request that needs
    /// it), so it holds every write committed before.
    made: Instant,
    answer: Arc<OnceCell<Arc<Answer>>>,
    /// What it holds, counted in `Entries::bytes`: its key, and its answer's body once computed.
    size: Arc<AtomicUsize>,
}

/// A kept `200` answer.
struct Answer {
    headers: HeaderMap,
    body: Bytes,
    etag: HeaderValue,
}

impl Answer {
    /// Whether a request's `If-None-Match` names this answer (it then gets a `304`).
    fn revalidated_by(&self, if_none_match: Option<&HeaderValue>) -> bool {
        if_none_match.is_some_and(|v| etag_matches(v, &self.etag))
    }

    fn response(&self) -> Response {
        let mut resp = Response::new(Body::from(self.body.clone()));
        *resp.headers_mut() = self.headers.clone();
        resp
    }
}

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
                entries: Mutex::new(Entries { slots: LruCache::unbounded(), bytes: 0 }),
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
        let e = self.inner.entries.lock().unwrap();
        (e.slots.len(), e.bytes)
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

    /// The slot of `key` for `generation`: the one kept if it is of that generation, else a new
    /// one that replaces it. A new slot counts its key's bytes at once (a key is what a client
    /// chooses: a long query, say), and may push the least recently used answers out.
    ///
    /// With `arrived` (a request whose cursor could not be proven seen here), only a slot made
    /// since is taken: one made before is replaced by a new one.
    fn slot(&self, key: &EntryKey, generation: u64, arrived: Option<Instant>) -> Slot {
        let mut e = self.entries.lock().unwrap();
        let fresh = |s: &&mut Slot| s.generation == generation && arrived.is_none_or(|at| s.made >= at);
        if let Some(slot) = e.slots.get_mut(key).filter(fresh) {
            return slot.clone();
        }
        let size = key.cost();
        let made = Instant::now();
        let slot = Slot { generation, made, answer: Arc::default(), size: Arc::new(AtomicUsize::new(size)) };
        if let Some(old) = e.slots.put(key.clone(), slot.clone()) {
            e.bytes -= old.size.load(Ordering::Relaxed);
        }
        e.bytes += size;
        self.trim(&mut e);
        slot
    }

    /// Counts a computed answer's bytes, and lets go of the least recently used answers past
    /// the limits. An answer whose slot was replaced or let go meanwhile is not kept, so not
    /// counted.
    fn account(&self, key: &EntryKey, slot: &Slot, size: usize) {
        let mut e = self.entries.lock().unwrap();
        if !e.holds(key, slot) {
            return;
        }
        slot.size.fetch_add(size, Ordering::Relaxed);
        e.bytes += size;
        self.trim(&mut e);
    }

    /// Lets go of `slot` (still under `key`) when its answer turned out not to be one to keep: a
    /// `404` of an id that does not exist, say, must not hold its key (and its room in the
    /// count of entries) until the least recently used order reaches it.
    fn forget(&self, key: &EntryKey, slot: &Slot) {
        let mut e = self.entries.lock().unwrap();
        if e.holds(key, slot) {
            e.slots.pop(key);
            e.bytes -= slot.size.swap(0, Ordering::Relaxed);
        }
    }

    fn trim(&self, e: &mut Entries) {
        while e.slots.len() > self.limits.max_entries.max(1) || e.bytes > self.limits.max_bytes {
            let Some((_, old)) = e.slots.pop_lru() else { break };
            e.bytes -= old.size.swap(0, Ordering::Relaxed);
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
            let slot = cache.slot(&key, head.generation, (!proven).then_some(arrived));
            let computing = AtomicBool::new(false);
            let answer = slot
                .answer
                .get_or_try_init(|| async {
                    computing.store(true, Ordering::Relaxed);
                    let Ok(resp) = inner.oneshot(Request::from_parts(parts, body)).await;
                    let answer = keep(resp, cache.limits.max_body).await?;
                    cache.account(&key, &slot, answer.body.len());
                    Ok(Arc::new(answer))
                })
                .await;
            let answer = match answer {
                Ok(answer) => answer.clone(),
                Err(resp) => {
                    // Not one to keep: this request's own answer, passed on as it came, and its
                    // slot let go.
                    cache.forget(&key, &slot);
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
async fn settled_head(cache: &Inner, watch: &TopicWatch, parts: &Parts) -> (crate::broker::Head, bool) {
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

/// The answer to keep, or the response itself when it is not one to keep, passed on untouched:
/// - not a `200`;
/// - a body whose size is not known to be within `max_body` (a stream, say);
/// - one that is this requester's alone: it sets a cookie (a shared copy would hand one user's
///   cookie to the next), says `Cache-Control: no-store` or `private` itself, or varies on a
///   request header (`Vary`: the cache's key is the path, query and class; put what the answer
///   depends on in the class).
async fn keep(resp: Response, max_body: usize) -> Result<Answer, Response> {
    use axum::body::HttpBody as _;
    let small = resp.body().size_hint().upper().is_some_and(|n| n <= max_body as u64);
    let headers = resp.headers();
    let own = headers.contains_key(header::SET_COOKIE)
        || headers.contains_key(header::VARY)
        || headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',').any(|d| matches!(d.trim().to_ascii_lowercase().as_str(), "no-store" | "private"))
            })
        });
    if resp.status() != StatusCode::OK || !small || own {
        return Err(resp);
    }
    let (mut parts, body) = resp.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Err(crate::ApiError::internal(format!("reading the answer failed: {e}")).into_response()),
    };
    let etag = etag_of(&body);
    parts.headers.insert(header::ETAG, etag.clone());
    parts.headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("private, no-cache"));
    Ok(Answer { headers: parts.headers, body, etag })
}

/// A weak validator: a 64-bit hash of the body, the same on every instance.
fn etag_of(body: &[u8]) -> HeaderValue {
    let hash = xxhash_rust::xxh3::xxh3_64(body);
    HeaderValue::from_str(&format!("W/\"{hash:016x}\"")).expect("ASCII")
}

/// Whether `If-None-Match` names `etag` (weak comparison, RFC 9110 section 13.1.2). By hand
/// rather than with the `headers` crate's `IfNoneMatch`: axum 0.8 no longer brings that crate,
/// and this one comparison (property-tested below) is all the cache needs of it.
fn etag_matches(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    fn opaque(tag: &str) -> &str {
        tag.trim().trim_start_matches("W/")
    }
    let (Ok(list), Ok(ours)) = (if_none_match.to_str(), etag.to_str()) else { return false };
    list.split(',').any(|tag| tag.trim() == "*" || opaque(tag) == opaque(ours))
}

fn not_modified(answer: &Answer) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    for name in [header::ETAG, header::CACHE_CONTROL, header::VARY] {
        if let Some(v) = answer.headers.get(&name) {
            resp.headers_mut().insert(name, v.clone());
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn if_none_match_names_the_tag_weakly_in_a_list_or_as_a_star() {
        let tag = etag_of(b"[1,2]");
        let quoted = tag.to_str().unwrap().trim_start_matches("W/").to_owned();
        for header in [tag.to_str().unwrap().to_owned(), quoted.clone(), format!("\"x\", {quoted}"), "*".into()] {
            assert!(etag_matches(&HeaderValue::from_str(&header).unwrap(), &tag), "{header}");
        }
        for header in ["\"x\"", "", "W/", "\"0000000000000000\""] {
            assert!(!etag_matches(&HeaderValue::from_str(header).unwrap(), &tag), "{header}");
        }
        assert_eq!(etag_of(b"[1,2]"), tag, "the same body, the same tag (on every instance)");
    }

    proptest! {
        /// Whatever bytes a client sends as `If-None-Match`, the comparison answers (no panic),
        /// and only a list naming the tag, or `*`, matches.
        #[test]
        fn any_if_none_match_is_answered(raw in proptest::collection::vec(any::<u8>(), 0..96)) {
            let tag = etag_of(b"body");
            if let Ok(header) = HeaderValue::from_bytes(&raw) {
                let matched = etag_matches(&header, &tag);
                let text = String::from_utf8_lossy(&raw);
                if matched {
                    prop_assert!(text.contains('*') || text.contains(tag.to_str().unwrap().trim_start_matches("W/")));
                }
            }
        }
    }
}
