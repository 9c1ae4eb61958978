//! Writes: a write that publishes answers with its event's position (`sse-position`), which is
//! the position in the event's frame id on every stream, on every backend, for REST routes and
//! for server functions alike.

mod common;

use common::*;
use leptos::server_fn::ServerFn;
use sse_notify_core::cursor::Cursor;
use sse_notify_core::write::{WritePosition, IDEMPOTENCY_KEY_HEADER, IDEMPOTENT_REPLAY_HEADER, POSITION_HEADER};

/// The answer's position, as a cursor (it must be one: nothing here is deferred).
fn position_of(resp: &reqwest::Response) -> Cursor {
    let value = resp.headers().get(POSITION_HEADER).expect("a write that published says where").to_str().unwrap();
    match value.parse::<WritePosition>() {
        Ok(WritePosition::At(at)) => at,
        other => panic!("{POSITION_HEADER}: {value:?} is {other:?}"),
    }
}

/// The frame id's log and position (its matched topics and echo tag aside).
fn frame_position(id: &str) -> Cursor {
    Cursor { matched: 0, ..id.parse::<Cursor>().unwrap_or_else(|_| panic!("{id} is a cursor")) }
}

async fn answers_carry_their_events_position(writer: &TestServer, reader: &TestServer) {
    let mut sse = SseClient::subscribe(&reader.base, "tasks").await.started().await;

    let created = http().post(writer.url("/api/tasks")).json(&serde_json::json!({"title": "p"})).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let at = position_of(&created);
    let id = created.json::<shared::tasks::Task>().await.unwrap().id;
    let e = sse.expect_event().await;
    assert_eq!(e.event, "task:created");
    assert_eq!(frame_position(&e.id.unwrap()), at, "a REST write's answer names its event");

    // A server function's answer too (the app-wide WriterOriginLayer).
    let done = http()
        .post(writer.url(client::app::api::SetTaskDone::PATH))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("id={id}&done=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let done_at = position_of(&done);
    let e = sse.expect_event().await;
    assert_eq!(e.event, "task:updated");
    assert_eq!(frame_position(&e.id.unwrap()), done_at, "a server function's answer names its event");
    assert!(done_at.position > at.position, "positions grow with the log");

    // Sent back as Last-Event-ID, a position resumes a stream right after the write.
    let deleted = http().delete(writer.url(&format!("/api/tasks/{id}"))).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let mut resumed = SseClient::open_with(
        streaming().get(reader.url("/events?topic=tasks")).header("last-event-id", done_at.to_string()),
    )
    .await;
    let next = resumed.expect_event().await;
    assert_eq!(next.event, "task:deleted", "exactly what followed the write, no resync");
    assert_eq!(frame_position(&next.id.unwrap()), position_of(&deleted));

    // A read publishes nothing and says no position; a refused write neither.
    let read = http().get(writer.url("/api/tasks")).send().await.unwrap();
    assert!(read.headers().get(POSITION_HEADER).is_none());
    let refused = http().post(writer.url("/api/tasks")).json(&serde_json::json!({"title": ""})).send().await.unwrap();
    assert!(refused.status().is_client_error() && refused.headers().get(POSITION_HEADER).is_none());
}

on_every_backend! {
async fn a_write_answers_with_its_events_position_on_every_backend(cfg) {
    let writer = TestServer::demo(cfg.clone()).await;
    // Through Redis, the reader is another instance.
    let reader = writer.another(cfg).await;
    answers_carry_their_events_position(&writer, reader.as_ref().unwrap_or(&writer)).await;
}
}

/// A task created with `key` on `app`: status, body, whether it was a replay, its position.
async fn create_keyed(app: &TestServer, key: &str, title: &str) -> (u16, String, bool, Option<String>) {
    let resp = http()
        .post(app.url("/api/tasks"))
        .header(IDEMPOTENCY_KEY_HEADER, key)
        .json(&serde_json::json!({ "title": title }))
        .send()
        .await
        .unwrap();
    let replayed = resp.headers().get(IDEMPOTENT_REPLAY_HEADER).is_some();
    let position = resp.headers().get(POSITION_HEADER).map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), resp.text().await.unwrap(), replayed, position)
}

/// A write whose answer was lost is retried with its key, on another instance when there are
/// two: one task, one event, and the retry gets the first answer (its position included).
async fn a_retried_write_happens_once(first: &TestServer, retry: &TestServer) {
    let mut sse = SseClient::subscribe(&first.base, "tasks").await.started().await;
    let title = format!("once {}", std::process::id());
    let a = create_keyed(first, "retry-key-1", &title).await;
    let b = create_keyed(retry, "retry-key-1", &title).await;
    assert_eq!((a.0, a.2), (201, false));
    assert_eq!((b.0, &b.1, b.2), (201, &a.1, true), "the first answer, marked as replayed");
    assert_eq!(b.3, a.3, "with the first answer's position");

    // One event: the next one is the marker written after.
    let created = sse.expect_event().await;
    assert_eq!(created.event, "task:created");
    create_keyed(first, "retry-key-2", "marker").await;
    let next = sse.expect_event().await;
    assert_ne!(next.data, created.data, "the retry published nothing: the next event is the marker's");
    let tasks: Vec<shared::tasks::Task> =
        http().get(retry.url("/api/tasks")).send().await.unwrap().json().await.unwrap();
    assert_eq!(tasks.iter().filter(|t| t.title == title).count(), 1, "one task");

    // The key with another body: refused with the JSON error, nothing written.
    let reused = create_keyed(retry, "retry-key-1", "another title").await;
    assert_eq!(reused.0, 422);
    assert!(reused.1.contains("\"error\":\"idempotency_key_reused\""), "{}", reused.1);
    // A signed-in user's keys are theirs: the visitor's key, sent by them, is a new write.
    let cookie = crm_sign_in(first, 1).await;
    let theirs = http()
        .post(retry.url("/api/tasks"))
        .header("cookie", cookie)
        .header(IDEMPOTENCY_KEY_HEADER, "retry-key-1")
        .json(&serde_json::json!({ "title": title }))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 201);
    assert!(theirs.headers().get(IDEMPOTENT_REPLAY_HEADER).is_none(), "another scope's key is not theirs");
}

on_both_backends! {
async fn a_retried_write_happens_once_on_any_instance(cfg) {
    let first = TestServer::demo(cfg.clone()).await;
    let retry = first.another(cfg).await;
    a_retried_write_happens_once(&first, retry.as_ref().unwrap_or(&first)).await;
}
}

/// In Redis, keys are bounded by time (their `PX`), per scope (a scope pushes out its own oldest
/// only: the attacker's flood leaves the victim's key) and in all, in count and in bytes (a
/// new key is refused, no one's forgotten). The scope here is the `x-user` header.
#[tokio::test]
async fn keys_kept_in_redis_are_bounded_per_scope_and_in_all() {
    use axum::routing::post;
    use sse_notify_axum::{IdempotencyLayer, IdempotencyLimits};
    let redis = RedisServer::start();
    let app = TestServer::demo(config(Some(&redis))).await;
    let limits = IdempotencyLimits {
        max_keys: 1000,
        max_keys_per_scope: 50,
        max_bytes: 4 << 20,
        max_answer: 16 << 10,
        ttl: std::time::Duration::from_secs(30),
        ..Default::default()
    };
    let scope = |parts: &axum::http::request::Parts| {
        let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned);
        async move { user }
    };
    let layer = IdempotencyLayer::with_limits(app.sse.broker(), scope, limits);
    let router = axum::Router::new().route("/w", post(|body: String| async move { body })).layer(layer.clone());
    let small = TestServer::serve(app.sse.clone(), router).await;
    let write = |user: &str, key: String, body: String| {
        http().post(small.url("/w")).header("x-user", user).header(IDEMPOTENCY_KEY_HEADER, key).body(body).send()
    };
    assert_eq!(write("victim", "theirs".into(), "v".into()).await.unwrap().status(), 200);
    for n in 0..200 {
        assert_eq!(write("attacker", format!("k{n}"), "a".into()).await.unwrap().status(), 200);
    }
    assert_eq!(layer.len().await, 51, "the attacker's newest 50, and the victim's");
    let victim = write("victim", "theirs".into(), "v".into()).await.unwrap();
    assert!(victim.headers().get(IDEMPOTENT_REPLAY_HEADER).is_some(), "the victim's key outlived the flood");
    let mut conn = redis.client().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("sse-idem/*").query(&mut conn).unwrap();
    assert_eq!(keys.len(), 51, "the records of pushed-out keys are gone too");
    let ttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query(&mut conn).unwrap();
    assert!((1..=30_000).contains(&ttl), "each record expires: {ttl} ms");

    // Bytes: 16 KB answers from many scopes fill the 4 MiB; then a new key is refused (JSON
    // 503), and every key held still replays.
    let big = "x".repeat(16_000);
    let mut refused = None;
    for n in 0..400 {
        let resp = write(&format!("user{n}"), "big".into(), big.clone()).await.unwrap();
        if resp.status() != 200 {
            refused = Some((n, resp.status().as_u16(), resp.text().await.unwrap()));
            break;
        }
    }
    let (n, status, body) = refused.expect("the byte bound refuses a key at last");
    assert!((200..=260).contains(&n), "refused after {n} answers of 16 KB");
    assert_eq!(status, 503);
    assert!(body.contains("\"error\":\"idempotency_full\""), "{body}");
    let bytes: i64 = redis::cmd("GET").arg("sse-idem-bytes/{sse}").query(&mut conn).unwrap();
    assert!(bytes <= 4 << 20, "the byte count stays under the bound: {bytes}");
    assert!(write("victim", "theirs".into(), "v".into())
        .await
        .unwrap()
        .headers()
        .get(IDEMPOTENT_REPLAY_HEADER)
        .is_some());
}

/// Redis away: the write stands, its event waits in the outbox, and its answer says its position
/// is not known yet (`deferred`), for REST (`PublishLayer`) and for what a handler publishes
/// through the app's publisher (`WriterOriginLayer`); once Redis is back the events go out.
#[tokio::test]
async fn a_deferred_write_says_so_and_its_event_follows() {
    use axum::routing::post;
    use sse_notify_axum::origin::WriterOriginLayer;
    use sse_notify_axum::{Broker, BrokerLimits, PublishLayer};
    let port = free_port();
    let mut redis = RedisServer::start_on(port);
    let broker = Broker::redis(&redis.url, BrokerLimits::default()).await.unwrap();
    let publisher = sse_notify_core::Publisher::new(sse_notify_axum::origin::TabPublisher(broker.clone()));
    let topic = sse_notify_core::Topic::new("board").unwrap();
    let rest = PublishLayer::new(broker.clone(), "changed").topic(topic.clone());
    let app = axum::Router::new()
        .route("/rest", post(|| async { axum::Json(serde_json::json!({ "id": 1 })) }).layer(rest))
        .route(
            "/handler",
            post(move || {
                let (publisher, topic) = (publisher.clone(), topic.clone());
                async move {
                    publisher.publish_json(&[topic], "changed", &serde_json::json!({ "id": 2 })).await.unwrap();
                    "done"
                }
            }),
        )
        .layer(WriterOriginLayer);
    let position = |path: &'static str| {
        let app = app.clone();
        async move {
            use tower::ServiceExt;
            let req = axum::http::Request::post(path).body(axum::body::Body::empty()).unwrap();
            let resp = app.oneshot(req).await.unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            resp.headers().get(POSITION_HEADER).map(|v| v.to_str().unwrap().parse::<WritePosition>().unwrap())
        }
    };
    assert!(matches!(position("/rest").await, Some(WritePosition::At(_))));
    assert!(matches!(position("/handler").await, Some(WritePosition::At(_))));

    redis.stop();
    assert_eq!(position("/rest").await, Some(WritePosition::Deferred));
    assert_eq!(position("/handler").await, Some(WritePosition::Deferred));
    assert_eq!(broker.outbox_len(), 2, "both events wait");
    let _redis = RedisServer::start_on(port);
    let drained = eventually(std::time::Duration::from_secs(20), || broker.outbox_len() == 0).await;
    assert!(drained, "the deferred events go out once Redis is back");
}

/// Clients that send a keyed write and go away at once (the lost answer), on Redis: each key's
/// write is made once, its retry gets an answer (never a key left pending with nothing behind
/// it), and the byte count stays the sum of what is held.
#[tokio::test]
async fn writes_whose_clients_went_away_are_made_once_and_leave_no_key_pending() {
    use tokio::io::AsyncWriteExt;
    let redis = RedisServer::start();
    let app = TestServer::demo(config(Some(&redis))).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let title = format!("gone {}", std::process::id());
    for n in 0..40 {
        let body = format!("{{\"title\":\"{title} {n}\"}}");
        let request = format!(
            "POST /api/tasks HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\nidempotency-key: gone-{n}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
        raw.write_all(request.as_bytes()).await.unwrap();
        drop(raw); // gone before any answer
        if n % 2 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(n % 7)).await;
        }
        let retry = http()
            .post(app.url("/api/tasks"))
            .header(IDEMPOTENCY_KEY_HEADER, format!("gone-{n}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(retry.status(), 201, "the retry of gone-{n} is answered: {}", retry.text().await.unwrap());
    }
    let tasks: Vec<shared::tasks::Task> = http().get(app.url("/api/tasks")).send().await.unwrap().json().await.unwrap();
    for n in 0..40 {
        let made = tasks.iter().filter(|t| t.title == format!("{title} {n}")).count();
        assert_eq!(made, 1, "gone-{n} was made {made} times");
    }
    let mut conn = redis.client().get_connection().unwrap();
    let bytes: i64 = redis::cmd("GET").arg("sse-idem-bytes/{sse}").query(&mut conn).unwrap();
    let sizes: Vec<i64> = redis::cmd("HVALS").arg("sse-idem-size/{sse}").query(&mut conn).unwrap();
    assert_eq!(bytes, sizes.iter().sum::<i64>(), "the byte count is what is held");
}

/// A key in flight is not pushed out by its scope's newer keys that answer first (its answer
/// would not be kept, and its retry would make the write again), on Redis.
#[tokio::test]
async fn a_key_in_flight_outlives_its_scopes_newer_keys() {
    use axum::routing::post;
    use sse_notify_axum::{IdempotencyLayer, IdempotencyLimits};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let redis = RedisServer::start();
    let app = TestServer::demo(config(Some(&redis))).await;
    let limits = IdempotencyLimits { max_keys_per_scope: 5, ..Default::default() };
    let layer = IdempotencyLayer::with_limits(app.sse.broker(), |_| async { Some("one".to_owned()) }, limits);
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = runs.clone();
        move |body: String| {
            let runs = runs.clone();
            async move {
                if body == "slow" {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                runs.fetch_add(1, Ordering::SeqCst);
                body
            }
        }
    };
    let router = axum::Router::new().route("/w", post(handler)).layer(layer);
    let small = TestServer::serve(app.sse.clone(), router).await;
    let write = |key: String, body: &'static str| {
        http().post(small.url("/w")).header(IDEMPOTENCY_KEY_HEADER, key).body(body).send()
    };
    let slow = tokio::spawn(write("slow".into(), "slow"));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for n in 0..10 {
        assert_eq!(write(format!("fast{n}"), "fast").await.unwrap().status(), 200);
    }
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    let again = write("slow".into(), "slow").await.unwrap();
    assert!(again.headers().get(IDEMPOTENT_REPLAY_HEADER).is_some(), "the slow write's answer was kept");
    assert_eq!(runs.load(Ordering::SeqCst), 11, "and it ran once");
}
