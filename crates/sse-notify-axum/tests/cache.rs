//! The response cache on the embedded broker: one computation per change however many ask,
//! never an answer older than the notification that asked for it, never one of another
//! authorization class, `304` by content.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use sse_notify_axum::core::cursor::Cursor;
use sse_notify_axum::{Broker, BrokerLimits, CacheLimits, CacheScope, ResponseCache};
use sse_notify_core::Topic;
use tokio::sync::Notify;
use tower::ServiceExt;

fn topic() -> Topic {
    Topic::new("board").unwrap()
}

/// The data behind the route, how often the handler ran, and a gate that holds it (a slow
/// read) when closed.
#[derive(Clone, Default)]
struct Backing {
    value: Arc<Mutex<String>>,
    calls: Arc<AtomicUsize>,
    slow: Arc<Mutex<Option<Arc<Notify>>>>,
    entered: Arc<Notify>,
}

impl Backing {
    fn set(&self, v: &str) {
        *self.value.lock().unwrap() = v.to_owned();
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    /// From now on reads wait on the returned gate once they have read the value.
    fn hold_reads(&self) -> Arc<Notify> {
        let gate = Arc::new(Notify::new());
        *self.slow.lock().unwrap() = Some(gate.clone());
        gate
    }
}

/// One read of team `a` that has taken its snapshot and is held on the returned gate; reads
/// after it are not held.
async fn slow_read(app: &Router, backing: &Backing) -> (tokio::task::JoinHandle<String>, Arc<Notify>) {
    let gate = backing.hold_reads();
    let read = tokio::spawn({
        let app = app.clone();
        async move { get_as(&app, "a").await.body }
    });
    backing.entered.notified().await;
    *backing.slow.lock().unwrap() = None;
    (read, gate)
}

/// Reads the value first, then (when a gate is set) waits on it: what a slow database read
/// that took its snapshot early looks like.
async fn read(State(b): State<Backing>, headers: HeaderMap) -> Result<String, StatusCode> {
    b.calls.fetch_add(1, Ordering::SeqCst);
    let value = b.value.lock().unwrap().clone();
    let gate = b.slow.lock().unwrap().clone();
    if let Some(gate) = gate {
        b.entered.notify_one();
        gate.notified().await;
    }
    if value == "fail" {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    let team = headers.get("x-team").and_then(|v| v.to_str().ok()).unwrap_or("-");
    Ok(format!("{value} for {team}"))
}

/// `/data` behind the cache: scope `board`, class from `x-team` (none: not shared). The
/// topic is followed from the start (as the demo follows its board), so the first request's
/// answer is kept.
async fn app(broker: &Broker, limits: CacheLimits) -> (Router, Backing, ResponseCache) {
    let backing = Backing::default();
    backing.set("v1");
    let cache = ResponseCache::with_limits(broker.clone(), limits);
    let layer = cache.layer(|parts| {
        let team = parts.headers.get("x-team").and_then(|v| v.to_str().ok()).map(str::to_owned);
        async move { team.map(|t| CacheScope::new([topic()], t)) }
    });
    let router = Router::new()
        .route("/data", get(read).layer(layer.clone()))
        .route("/data/{n}", get(read).layer(layer))
        .with_state(backing.clone());
    cache.follow(&[topic()]).await;
    (router, backing, cache)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn get_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Answer { status: parts.status, headers: parts.headers, body }
}

async fn get_as(app: &Router, team: &str) -> Answer {
    get_with(app, "/data", &[("x-team", team)]).await
}

/// Publishes a change of the topic and returns its cursor, as a client's stream would see it.
async fn publish(broker: &Broker) -> String {
    let mut sub = broker.subscribe(&[topic()], None).await.unwrap();
    sub.next_frame().await.unwrap(); // the opening cursor
    broker.publish(&topic(), "changed", &serde_json::json!({})).await.unwrap();
    let frame = sub.next_frame().await.unwrap();
    let text = std::str::from_utf8(&frame).unwrap();
    text.lines().next().unwrap().strip_prefix("id: ").unwrap().to_owned()
}

fn memory() -> Broker {
    Broker::memory(BrokerLimits::default())
}

#[tokio::test]
async fn a_wave_of_requests_computes_the_answer_once_and_a_change_computes_it_again() {
    let broker = memory();
    let (app, backing, _) = app(&broker, CacheLimits::default()).await;
    let gate = backing.hold_reads();
    let wave: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn({
                let app = app.clone();
                async move { get_as(&app, "a").await.body }
            })
        })
        .collect();
    backing.entered.notified().await;
    tokio::time::sleep(Duration::from_millis(50)).await; // let the wave arrive at the cache
    *backing.slow.lock().unwrap() = None;
    gate.notify_waiters();
    for answer in wave {
        assert_eq!(answer.await.unwrap(), "v1 for a");
    }
    assert_eq!(backing.calls(), 1, "fifty concurrent requests, one computation");
    assert_eq!(get_as(&app, "a").await.body, "v1 for a");
    assert_eq!(backing.calls(), 1, "a later request at the same position is a hit");

    backing.set("v2");
    publish(&broker).await;
    assert_eq!(get_as(&app, "a").await.body, "v2 for a");
    assert_eq!(backing.calls(), 2, "the change computed it again");
    let gauges = sse_notify_axum::metrics::Gauges { broker: broker.gauges(), ..Default::default() };
    let metrics = sse_notify_axum::metrics::of(&broker).render(gauges);
    assert!(metrics.contains("sse_cache_requests_total{result=\"hit\"} 50"), "{metrics}");
}

#[tokio::test]
async fn a_refetch_for_an_event_never_gets_an_answer_computed_before_it() {
    let broker = memory();
    let (app, backing, _) = app(&broker, CacheLimits::default()).await;
    // A slow read starts before the write and has read the old value.
    let (early, gate) = slow_read(&app, &backing).await;
    // The write lands, and its notification reaches a client, which refetches.
    backing.set("v2");
    let cursor = publish(&broker).await;
    let claim = [("x-team", "a"), ("last-event-id", cursor.as_str())];
    let refetch = match tokio::time::timeout(Duration::from_secs(2), get_with(&app, "/data", &claim)).await {
        Ok(answer) => answer.body,
        Err(_) => {
            // It waited for the early read: let that finish, and see what it was given.
            gate.notify_waiters();
            get_with(&app, "/data", &claim).await.body
        }
    };
    gate.notify_waiters();
    assert_eq!(refetch, "v2 for a", "the refetch after the notification got an answer computed before the write");
    assert_eq!(early.await.unwrap(), "v1 for a");
    // A request without a cursor after the early read ended gets the new answer too.
    assert_eq!(get_as(&app, "a").await.body, "v2 for a");
}

#[tokio::test]
async fn a_cursor_not_yet_seen_here_waits_for_its_event_and_those_never_seen_share_an_answer_made_after_them() {
    let broker = memory();
    let limits = CacheLimits { wait: Duration::from_millis(300), ..CacheLimits::default() };
    let (app, backing, _) = app(&broker, limits).await;
    assert_eq!(get_as(&app, "a").await.body, "v1 for a");
    // A cursor just past the head: the event it names arrives 100 ms later (on another
    // instance, its notification can overtake it).
    let head: Cursor = broker.head_cursor().await.unwrap().parse().unwrap();
    let ahead = Cursor {
        position: sse_notify_axum::core::cursor::LogPosition { seq: head.position.seq + 1, ..head.position },
        ..head
    };
    let writer = tokio::spawn({
        let (broker, backing) = (broker.clone(), backing.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            backing.set("v2");
            broker.publish(&topic(), "changed", &serde_json::json!({})).await.unwrap();
        }
    });
    let started = Instant::now();
    let answer = get_with(&app, "/data", &[("x-team", "a"), ("last-event-id", &ahead.to_string())]).await;
    writer.await.unwrap();
    assert_eq!(answer.body, "v2 for a", "answered before its event arrived");
    assert!(started.elapsed() >= Duration::from_millis(90), "it waited for the event");
    assert_eq!(backing.calls(), 2);

    // A cursor far ahead (forged, or of a log this process cannot follow) is never proven: a
    // request that holds one gets, after the wait, an answer computed since it arrived (here it
    // sees a write whose event never came), and the requests that waited together share it:
    // forging cursors costs one computation per wait, not one per request.
    let head: Cursor = broker.head_cursor().await.unwrap().parse().unwrap();
    let forged = Cursor {
        position: sse_notify_axum::core::cursor::LogPosition { ms: head.position.ms + 3_600_000, seq: 0 },
        ..head
    };
    backing.set("v3");
    let started = Instant::now();
    let claim = [("x-team", "a"), ("last-event-id", &forged.to_string())];
    let wave = (0..20).map(|_| get_with(&app, "/data", &claim));
    for answer in futures::future::join_all(wave).await {
        assert_eq!(answer.body, "v3 for a", "computed after it arrived");
    }
    assert!(started.elapsed() >= Duration::from_millis(290), "they waited for the event");
    assert_eq!(backing.calls(), 3, "20 forged cursors, one computation");
    let answer = get_with(&app, "/data", &[("x-team", "a"), ("last-event-id", &forged.to_string())]).await;
    assert_eq!((answer.body.as_str(), backing.calls()), ("v3 for a", 4), "a later one: computed again, after it");
    assert_eq!(get_as(&app, "a").await.body, "v3 for a");
    assert_eq!(backing.calls(), 4, "and kept for the head: fresher than the head needs");
    let forged = forged.to_string();
    // Not a cursor, or another prefix's: no claim, a plain request.
    let other = Cursor { log: sse_notify_axum::core::cursor::LogId::new("another-app", 1), ..forged.parse().unwrap() };
    for claim in ["garbage", &other.to_string()] {
        assert_eq!(get_with(&app, "/data", &[("x-team", "a"), ("last-event-id", claim)]).await.body, "v3 for a");
    }
    assert_eq!(backing.calls(), 4);
}

#[tokio::test]
async fn an_answer_is_shared_only_within_its_class_and_a_request_without_one_is_never_cached() {
    let broker = memory();
    let (app, backing, _) = app(&broker, CacheLimits::default()).await;
    assert_eq!(get_as(&app, "acme").await.body, "v1 for acme");
    assert_eq!(get_as(&app, "acme").await.body, "v1 for acme");
    assert_eq!(backing.calls(), 1, "positive control: the class shares its answer");
    assert_eq!(get_as(&app, "globex").await.body, "v1 for globex", "another class got a shared answer");
    assert_eq!(backing.calls(), 2);
    for _ in 0..2 {
        assert_eq!(get_with(&app, "/data", &[]).await.body, "v1 for -");
    }
    assert_eq!(backing.calls(), 4, "no scope: the handler answers every time");
}

#[tokio::test]
async fn a_browser_that_holds_the_answer_gets_304_until_the_content_changes() {
    let broker = memory();
    let (app, backing, _) = app(&broker, CacheLimits::default()).await;
    let first = get_as(&app, "a").await;
    let etag = first.headers.get("etag").expect("an ETag").to_str().unwrap().to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    assert_eq!(first.headers.get("cache-control").unwrap(), "private, no-cache");
    let again = get_with(&app, "/data", &[("x-team", "a"), ("if-none-match", &etag)]).await;
    assert_eq!((again.status, again.body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    assert_eq!(again.headers.get("etag").unwrap().to_str().unwrap(), etag);
    // An event that did not change this answer: computed again, same content, still 304.
    publish(&broker).await;
    let same = get_with(&app, "/data", &[("x-team", "a"), ("if-none-match", &etag)]).await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert_eq!(backing.calls(), 2);
    // A change: the old validator gets the new answer.
    backing.set("v2");
    publish(&broker).await;
    let changed = get_with(&app, "/data", &[("x-team", "a"), ("if-none-match", &etag)]).await;
    assert_eq!((changed.status, changed.body.as_str()), (StatusCode::OK, "v2 for a"));
    assert_ne!(changed.headers.get("etag").unwrap().to_str().unwrap(), etag);
}

#[tokio::test]
async fn an_answer_that_finishes_after_a_newer_one_is_not_counted_as_kept() {
    let broker = memory();
    let (app, backing, cache) = app(&broker, CacheLimits::default()).await;
    let (slow, gate) = slow_read(&app, &backing).await;
    backing.set("v2");
    publish(&broker).await;
    assert_eq!(get_as(&app, "a").await.body, "v2 for a");
    gate.notify_waiters();
    assert_eq!(slow.await.unwrap(), "v1 for a");
    let (entries, bytes) = cache.size();
    let body = "v2 for a".len();
    assert_eq!(entries, 1, "only the newer answer is kept");
    assert!((body + "/data".len()..body + 1024).contains(&bytes), "and counted once, with its key: {bytes}");
}

#[tokio::test]
async fn an_answer_meant_for_its_requester_alone_is_never_shared() {
    use axum::http::{header, HeaderValue};
    let broker = memory();
    let cache = ResponseCache::new(broker.clone());
    cache.follow(&[topic()]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let route = |name: header::HeaderName, value: &'static str| {
        let calls = calls.clone();
        get(move |headers: HeaderMap| {
            let calls = calls.clone();
            let (name, user) = (name.clone(), headers.get("x-user").cloned());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let mut resp = axum::response::Response::new(Body::from("answer"));
                let value = if name == header::SET_COOKIE {
                    HeaderValue::from_str(&format!("session={}", user.unwrap().to_str().unwrap())).unwrap()
                } else {
                    HeaderValue::from_static(value)
                };
                resp.headers_mut().insert(name, value);
                resp
            }
        })
        .layer(cache.layer(|_| async { Some(CacheScope::public([topic()])) }))
    };
    let app = Router::new()
        .route("/cookie", route(header::SET_COOKIE, ""))
        .route("/no-store", route(header::CACHE_CONTROL, "no-store"))
        .route("/private", route(header::CACHE_CONTROL, "max-age=0, Private"))
        .route("/vary", route(header::VARY, "accept-language"))
        .route("/plain", route(header::CONTENT_LANGUAGE, "en"));
    let bob = get_with(&app, "/cookie", &[("x-user", "bob")]).await;
    let carol = get_with(&app, "/cookie", &[("x-user", "carol")]).await;
    assert_eq!(carol.headers.get("set-cookie").unwrap(), "session=carol", "carol got bob's cookie");
    assert_eq!(bob.headers.get("set-cookie").unwrap(), "session=bob");
    for path in ["/no-store", "/private", "/vary"] {
        get_with(&app, path, &[("x-user", "bob")]).await;
        get_with(&app, path, &[("x-user", "carol")]).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 8, "each of those answered by the handler every time");
    get_with(&app, "/plain", &[]).await;
    get_with(&app, "/plain", &[]).await;
    assert_eq!(calls.load(Ordering::SeqCst), 9, "positive control: a plain answer is shared");
}

#[tokio::test]
async fn failures_are_not_kept_and_the_cache_stays_within_its_bounds() {
    let broker = memory();
    let limits = CacheLimits { max_entries: 2, ..CacheLimits::default() };
    let (app, backing, cache) = app(&broker, limits).await;
    backing.set("fail");
    assert_eq!(get_as(&app, "a").await.status, StatusCode::SERVICE_UNAVAILABLE);
    backing.set("v1");
    assert_eq!(get_as(&app, "a").await.body, "v1 for a", "a failure was served from the cache");
    for n in 0..5 {
        assert_eq!(get_with(&app, &format!("/data/{n}"), &[("x-team", "a")]).await.status, StatusCode::OK);
    }
    assert_eq!(cache.size().0, 2, "at most max_entries kept");
    let (body, bytes) = ("v1 for a".len(), cache.size().1);
    assert!((2 * body + 2 * "/data/4".len()..2 * body + 1024).contains(&bytes), "bodies and keys counted: {bytes}");
}

#[tokio::test]
async fn keys_count_in_the_byte_bound_and_an_answer_not_kept_leaves_nothing() {
    let broker = memory();
    let limits = CacheLimits { max_bytes: 64 * 1024, ..CacheLimits::default() };
    let (app, backing, cache) = app(&broker, limits).await;
    // A thousand answers of a few bytes under keys of 4 KB each: the keys fill the bound.
    let pad = "k".repeat(4096);
    for n in 0..1000 {
        assert_eq!(get_with(&app, &format!("/data/{n}?pad={pad}"), &[("x-team", "a")]).await.status, StatusCode::OK);
    }
    let (entries, bytes) = cache.size();
    assert!(bytes <= 64 * 1024, "{bytes} bytes kept over a bound of 64 KiB");
    assert!((1..=16).contains(&entries), "{entries} answers of 4 KB keys within 64 KiB");
    // Answers that are not kept (a failure, whatever its query) leave no slot behind.
    backing.set("fail");
    for n in 0..1000 {
        let path = format!("/data/x{n}?pad={pad}");
        assert_eq!(get_with(&app, &path, &[("x-team", "b")]).await.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // (A new slot makes room for its key at once, so a kept answer may have gone for it.)
    assert!(cache.size().0 <= entries, "slots of answers not kept stayed: {:?}", cache.size());
    assert!(cache.size().1 <= bytes);
}
