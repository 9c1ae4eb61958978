//! The demo's cached reads over HTTP: a CRM thread's answer is shared within its team and never
//! reaches anyone else, and a refetch never gets an answer older than its notification, on
//! another instance or right after a write (Redis brings the write's event back later), on one
//! Redis, Sentinel and a Cluster.

mod common;

use common::*;
use leptos::server_fn::ServerFn;

use client::app::crm::api::AddComment;
use common::crm_sign_in as sign_in;

async fn read(app: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = http().get(app.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// `sse_cache_requests_total{result="<result>"}` now (0 before the first of its kind).
async fn cache_count(app: &TestServer, result: &str) -> u64 {
    let name = format!("sse_cache_requests_total{{result=\"{result}\"}}");
    metric_value(&app.metrics().await, &name).map_or(0, |n| n as u64)
}

on_both_backends! {
async fn a_threads_answer_is_shared_within_its_team_and_dave_never_gets_it(cfg) {
    let app = TestServer::demo(cfg).await;
    let (bob, carol, dave) = (sign_in(&app, 2).await, sign_in(&app, 3).await, sign_in(&app, 4).await);
    let added = http()
        .post(app.url(AddComment::PATH))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", &bob)
        .body("thread=1&text=acme+secret")
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200);

    let path = "/api/crm/threads/1/comments";
    let (status, for_bob) = read(&app, path, &[("cookie", &bob)]).await;
    assert_eq!(status, 200);
    assert!(for_bob.contains("acme secret"), "{for_bob}");
    // A thread's first read follows its topic; from the second on its answer is kept.
    assert_eq!(read(&app, path, &[("cookie", &bob)]).await, (200, for_bob.clone()));
    let hits = cache_count(&app, "hit").await;
    assert_eq!(read(&app, path, &[("cookie", &carol)]).await, (200, for_bob.clone()));
    assert_eq!(cache_count(&app, "hit").await, hits + 1, "positive control: carol, same team, shares bob's answer");

    // Dave (Globex) reads his own thread; Acme's, which the cache holds, never.
    let (status, own) = read(&app, "/api/crm/threads/3/comments", &[("cookie", &dave)]).await;
    assert_eq!((status, own.as_str()), (200, "[]"), "positive control: dave is signed in and reads");
    for _ in 0..3 {
        let (status, body) = read(&app, path, &[("cookie", &dave)]).await;
        assert_eq!(status, 403, "dave got {body}");
        assert!(!body.contains("acme secret"));
    }
    let (status, body) = read(&app, path, &[]).await;
    assert_eq!(status, 401, "signed out got {body}");
}
}

on_backends! {
[redis, redis_sentinel, redis_cluster]
async fn a_refetch_on_another_instance_or_after_a_write_is_never_older_than_the_change(cfg) {
    let (a, b) = (TestServer::demo(cfg.clone()).await, TestServer::demo(cfg).await);
    let mut events = SseClient::subscribe(&a.base, "tasks").await;
    let created = http().post(a.url("/api/tasks")).json(&serde_json::json!({"title": "round 0"})).send().await.unwrap();
    let id = created.json::<serde_json::Value>().await.unwrap()["id"].as_u64().unwrap();
    events.expect_event().await;
    for round in 1..=20 {
        // Both instances hold the list as it was.
        assert!(read(&b, "/api/tasks", &[]).await.1.contains(&format!("round {}", round - 1)));
        assert!(read(&a, "/api/tasks", &[]).await.1.contains(&format!("round {}", round - 1)));
        let title = format!("round {round}");
        let put = http().put(a.url(&format!("/api/tasks/{id}"))).json(&serde_json::json!({"title": title})).send();
        assert_eq!(put.await.unwrap().status(), 200);
        // The writer reads at once, before the event has come back from Redis.
        let (_, on_a) = read(&a, "/api/tasks", &[]).await;
        assert!(on_a.contains(&title), "round {round}: the writer's instance answered {on_a}");
        // A viewer notified through A refetches from B.
        let event = events.expect_event().await;
        let cursor = event.id.expect("an event id");
        let (_, on_b) = read(&b, "/api/tasks", &[("last-event-id", &cursor)]).await;
        assert!(on_b.contains(&title), "round {round}: the other instance answered {on_b}");
    }
    assert!(cache_count(&b, "hit").await + cache_count(&b, "computed").await > 0, "the reads went through the cache");
}
}

/// A write accepted while Redis is away: its event waits in the outbox, and the answers kept
/// from before it must not be served meanwhile (the writer reads its own write at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_event_waits_in_the_outbox_is_not_hidden_by_a_kept_answer() {
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::routing::get;
    use sse_notify_axum::broker::Accepted;
    use sse_notify_axum::{Broker, BrokerLimits, CacheScope, ResponseCache};
    use sse_notify_core::Topic;

    let mut redis = RedisServer::start();
    let broker = Broker::redis(&redis.url, BrokerLimits::default()).await.unwrap();
    let cache = ResponseCache::new(broker.clone());
    let value = Arc::new(Mutex::new("v1".to_owned()));
    let topic = Topic::new("board").unwrap();
    let app = axum::Router::new()
        .route(
            "/data",
            get(|State(v): State<Arc<Mutex<String>>>| async move { v.lock().unwrap().clone() })
                .layer(cache.layer(|_| async { Some(CacheScope::public([Topic::new("board").unwrap()])) })),
        )
        .with_state(value.clone());
    let read = || async {
        use tower::ServiceExt;
        let req = axum::http::Request::get("/data").body(axum::body::Body::empty()).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        String::from_utf8(axum::body::to_bytes(resp.into_body(), 1024).await.unwrap().to_vec()).unwrap()
    };
    assert_eq!(read().await, "v1");
    assert_eq!(read().await, "v1");

    redis.stop();
    *value.lock().unwrap() = "v2".to_owned();
    let accepted = broker.publish_or_defer(&[topic], "changed", &serde_json::json!({})).await.unwrap();
    assert!(matches!(accepted, Accepted::Deferred), "Redis is away: the event waits");
    assert_eq!(read().await, "v2", "the kept answer from before the write was served");
}

/// Calls of each Redis command so far (`INFO commandstats`).
fn redis_calls(redis: &RedisServer, commands: &[&str]) -> u64 {
    let mut conn = redis.client().get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut conn).unwrap();
    let calls = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    commands.iter().map(|c| calls(c)).sum()
}

/// Every one of `paths`, 16 at a time; each must answer `status`.
async fn read_all(app: &TestServer, paths: impl Iterator<Item = String>, status: u16) {
    use futures::StreamExt;
    futures::stream::iter(paths)
        .map(|path| {
            let url = app.url(&path);
            async move { http().get(url).send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(16)
        .for_each(|got| {
            assert_eq!(got, status);
            std::future::ready(())
        })
        .await;
}

/// Anonymous reads of things that do not exist: 10,000 `404`s each with its own 20 KB query
/// (each once pinned a cache slot and its key: 5,000 held 120 MB), then 10,000 ids never seen
/// (each once cost a topic watch: a Redis SUBSCRIBE, an EVALSHA, and an UNSUBSCRIBE once 1,024
/// were held). Now they cost the process no memory that stays and Redis no work per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_what_does_not_exist_cost_neither_memory_nor_redis_work() {
    let redis = RedisServer::start();
    let app = TestServer::demo(config(Some(&redis))).await;
    let watching = ["subscribe", "ssubscribe", "unsubscribe", "sunsubscribe", "evalsha", "eval"];
    let pad = "p".repeat(20 * 1024);
    // Warm: the process's own first-use allocations are not what is measured.
    read_all(&app, (0..100).map(|i| format!("/api/tasks/18446744073709551615?p={i}&pad={pad}")), 404).await;
    let (rss, calls) = (rss_kib(), redis_calls(&redis, &watching));

    read_all(&app, (0..10_000).map(|i| format!("/api/tasks/18446744073709551615?p={i}&pad={pad}")), 404).await;
    read_all(&app, (0..10_000).map(|i| format!("/api/tasks/{}", 1_000_000 + i)), 404).await;

    let grown_mib = rss_kib().saturating_sub(rss) / 1024;
    assert!(
        grown_mib < 40,
        "20,000 reads of nothing left the process {grown_mib} MiB larger (200 MB of queries went by)"
    );
    let spent = redis_calls(&redis, &watching) - calls;
    assert!(spent <= 10, "20,000 reads of nothing cost Redis {spent} subscription and script calls");

    // Positive control: a task that exists is followed, and its second read is kept.
    let created = http().post(app.url("/api/tasks")).json(&serde_json::json!({"title": "real"})).send().await.unwrap();
    let id = created.json::<shared::tasks::Task>().await.unwrap().id;
    let path = format!("/api/tasks/{id}");
    let computed = cache_count(&app, "computed").await;
    let (first, second) = (read(&app, &path, &[]).await, read(&app, &path, &[]).await);
    assert_eq!((first.0, &first.1), (200, &second.1));
    assert!(redis_calls(&redis, &watching) > calls + spent, "a real task's topic is followed");
    assert_eq!(cache_count(&app, "computed").await, computed + 1, "its second read is kept");
}

/// A client reads more items in turn than the cache follows topic sets (1,024): once the table
/// is full of sets in use, the rest are answered uncached instead of each read letting one go
/// and following another (every read was then a Redis SUBSCRIBE, an UNSUBSCRIBE and a head
/// read, and the board's own list was pushed out with them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_more_items_than_the_cache_follows_costs_redis_no_churn() {
    use futures::StreamExt;
    let redis = RedisServer::start();
    let app = TestServer::demo(config(Some(&redis))).await;
    let ids: Vec<u64> = futures::stream::iter(0..1_100)
        .map(|_| {
            let url = app.url("/api/tasks");
            async move {
                let resp = http().post(url).json(&serde_json::json!({"title": "t"})).send().await.unwrap();
                resp.json::<shared::tasks::Task>().await.unwrap().id
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    // The board's list, followed and kept (its second read is computed and kept).
    let (list, _) = (read(&app, "/api/tasks", &[]).await, read(&app, "/api/tasks", &[]).await);
    assert_eq!(list.0, 200);
    // Two rounds over every item: the first fills the table, the second would churn it.
    let paths = || ids.iter().map(|id| format!("/api/tasks/{id}"));
    read_all(&app, paths(), 200).await;
    let churn = ["subscribe", "unsubscribe", "ssubscribe", "sunsubscribe", "evalsha"];
    let before = redis_calls(&redis, &churn);
    read_all(&app, paths(), 200).await;
    let spent = redis_calls(&redis, &churn) - before;
    assert!(spent <= 20, "a second round of 1,100 reads cost Redis {spent} subscription and script calls");
    // The board's list is still followed: a read after a change is computed once, then kept.
    let hits = cache_count(&app, "hit").await;
    read(&app, "/api/tasks", &[]).await;
    assert_eq!(cache_count(&app, "hit").await, hits + 1, "the board's list was pushed out");
}

/// The response cache's follows and the streams' subscriptions share one Pub/Sub connection:
/// 1,000 read routes' topic sets followed at once (each a SUBSCRIBE and a head read) do not
/// stand in front of a stream that opens after them. Before, the asks were one queue in arrival
/// order, and the stream's subscription came after all 1,000 (Redis held 1,001 channels when it
/// was live; 220 ms against 2 ms here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_the_caches_follows_does_not_delay_a_streams_subscription() {
    use std::sync::Arc;

    use sse_notify_axum::{Broker, BrokerLimits, CacheLimits, ResponseCache};
    use sse_notify_core::Topic;

    let redis = RedisServer::start();
    let probe = redis.client().get_multiplexed_async_connection().await.unwrap();
    let channels = |mut c: redis::aio::MultiplexedConnection| async move {
        let all: Vec<String> = redis::cmd("PUBSUB").arg("CHANNELS").query_async(&mut c).await.unwrap();
        all.len()
    };
    let broker = Broker::redis(&redis.url, BrokerLimits::default()).await.unwrap();
    let cache = ResponseCache::with_limits(broker.clone(), CacheLimits { max_scopes: 2_000, ..CacheLimits::default() });
    let cache = Arc::new(cache);
    let follows: Vec<_> = (0..1_000)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.follow(&[Topic::new(format!("item:{i}")).unwrap()]).await })
        })
        .collect();
    // The follows are asking (the first is live).
    while channels(probe.clone()).await == 0 {
        tokio::task::yield_now().await;
    }
    let stream = broker.subscribe(&[Topic::new("board").unwrap()], None).await.unwrap();
    let live_then = channels(probe.clone()).await;
    for f in follows {
        f.await.unwrap();
    }
    assert_eq!(channels(probe.clone()).await, 1_001, "all followed in the end");
    assert!(live_then < 500, "the stream was live once Redis held {live_then} channels, the watches' first");
    drop(stream);
}
