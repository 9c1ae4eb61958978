//! Several instances on one real redis-server: shared events, shared tasks, one Pub/Sub
//! subscription per channel per instance, and clear failures when Redis is missing.

mod common;

use std::time::Duration;

use common::*;
use leptos::server_fn::ServerFn;
use redis::Commands;
use sse_notify_axum::{SseApp, SseConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_events_and_tasks() {
    let redis = RedisServer::start();
    let a = TestServer::demo(config(Some(&redis))).await;
    let b = TestServer::demo(config(Some(&redis))).await;
    assert_eq!(a.sse.broker().backend_name(), "redis");

    let mut on_a = SseClient::subscribe(&a.base, "tasks").await;
    // REST publish on B reaches the subscriber on A.
    let resp = http().post(b.url("/api/tasks")).json(&serde_json::json!({"title": "shared"})).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let task: shared::tasks::Task = resp.json().await.unwrap();
    let e = on_a.expect_event().await;
    assert_eq!(e.event, "task:created");
    assert_eq!(e.data, format!("{{\"id\":{}}}", task.id));
    assert_eq!(matched(e.id.as_deref()), 1, "a cursor naming the stream's only topic: {:?}", e.id);

    // The store is shared too: A lists what B created.
    let listed: Vec<shared::tasks::Task> = http().get(a.url("/api/tasks")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed, vec![task.clone()]);

    // A server function on B reaches A as well, and an update on A is seen on B's resource topic.
    let mut one_on_b = SseClient::subscribe(&b.base, &format!("task:{}", task.id)).await;
    let resp = http()
        .post(b.url(client::app::api::SetTaskDone::PATH))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("id={}&done=true", task.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for sub in [&mut on_a, &mut one_on_b] {
        let e = sub.expect_event().await;
        assert_eq!((e.event.as_str(), e.data.clone()), ("task:updated", format!("{{\"id\":{}}}", task.id)));
    }
    let seen: shared::tasks::Task =
        http().get(a.url(&format!("/api/tasks/{}", task.id))).send().await.unwrap().json().await.unwrap();
    assert!(seen.done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_subscription_per_channel_per_instance() {
    let redis = RedisServer::start();
    let app = TestServer::demo(config(Some(&redis))).await;
    let mut conn = redis.client().get_connection().unwrap();
    let numsub = |conn: &mut redis::Connection, ch: &str| -> i64 {
        let v: Vec<(String, i64)> = redis::cmd("PUBSUB").arg("NUMSUB").arg(ch).query(conn).unwrap();
        v[0].1
    };
    let clients: Vec<_> = futures::future::join_all((0..20).map(|_| SseClient::subscribe(&app.base, "tasks"))).await;
    assert_eq!(numsub(&mut conn, "{sse}/tasks"), 1, "20 local clients share one Redis subscription");
    let pubsub_clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
    let subscribers = pubsub_clients.lines().filter(|l| l.contains("sub=1")).count();
    assert_eq!(subscribers, 1, "one Pub/Sub connection for the instance:\n{pubsub_clients}");
    drop(clients);
    let mut released = false;
    for _ in 0..250 {
        if numsub(&mut conn, "{sse}/tasks") == 0 {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(released, "the channel is unsubscribed after the last local client left");
    let _: () = conn.set("probe", 1).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_fails_start_up_clearly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = SseConfig { redis_url: Some(format!("redis://127.0.0.1:{port}")), ..SseConfig::default() };
    let err = SseApp::new(cfg).await.err().expect("start-up must fail without Redis").to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.to_lowercase().contains("redis"), "{err}");
}

// Found from outside: a Redis that asks for a password, given none, was reported as an ACL that
// refuses PING, which sends an operator to the wrong fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_password_is_said_to_be_one_not_an_acl() {
    let redis = RedisServer::start_with(&["--requirepass".to_owned(), "Pw_1".to_owned()]);
    let err = SseApp::new(config(Some(&redis))).await.err().expect("start-up must fail without the password");
    let err = err.to_string();
    assert!(err.contains("password") && !err.contains("ACL"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis() {
    let mut redis = RedisServer::start();
    let app = TestServer::demo(config(Some(&redis))).await;
    assert_eq!(status_of(&app.url("/health/ready")).await, 200);
    redis.stop();
    let resp = http().get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(error_code(resp, 503).await, "not_ready");
    assert_eq!(status_of(&app.url("/health")).await, 200, "liveness is not readiness");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_loss_and_return_under_open_streams() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let app = TestServer::demo(config(Some(&redis))).await;
    let broker = app.sse.broker().clone();
    let mut stream = SseClient::subscribe(&app.base, "tasks").await;
    let topic = sse_notify_core::Topic::new("tasks").unwrap();

    redis.stop();
    // Down: not ready, publishing is a clear error, the REST layer answers 503, the process is up.
    assert_eq!(error_code(http().get(app.url("/health/ready")).send().await.unwrap(), 503).await, "not_ready");
    let err = broker.publish(&topic, "x", &serde_json::json!({})).await.unwrap_err();
    assert!(matches!(err, sse_notify_core::PublishError::Unavailable), "{err:?}");
    let resp = http().post(app.url("/api/tasks")).json(&serde_json::json!({"title": "lost?"})).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(status_of(&app.url("/health")).await, 200);
    // A new stream cannot be served without Redis: 503 JSON, not a silent dead stream.
    let refused = http().get(app.url("/events?topic=task:9002")).send().await.unwrap();
    assert_eq!(error_code(refused, 503).await, "broker_unavailable");

    // Back, empty (this redis-server keeps no data): the broker reconnects by itself,
    // resubscribes, finds the log gone, and tells open streams to resync every topic they follow.
    let _redis = RedisServer::start_on(port);
    let resync = loop {
        let e = stream.next_event(Duration::from_secs(15)).await.expect("resync within 15 s of Redis returning");
        if e.event != "heartbeat" {
            break e;
        }
    };
    assert_eq!(resync.event, "resync");
    assert_eq!(resync.data, r#"{"reason":"broker_reconnected","topics":["tasks"]}"#);
    assert_eq!(broker.redis_reconnects(), 1);
    // New events flow again on the old stream, without restarting anything.
    let resp = http().post(app.url("/api/tasks")).json(&serde_json::json!({"title": "back"})).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(stream.expect_event().await.event, "task:created");
    assert_eq!(status_of(&app.url("/health/ready")).await, 200);
    // And new streams are served again.
    let mut fresh = SseClient::subscribe(&app.base, "task:9002").await;
    broker
        .publish(&sse_notify_core::Topic::new("task:9002").unwrap(), "ping", &serde_json::json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(fresh.expect_event().await.data, r#"{"n":1}"#);
}

/// A write whose event cannot be published at once (Redis refuses the publish script, as it
/// would for a moment while failing over) is still the success it was: 201, stored once, and
/// the event reaches subscribers, in order, once Redis takes scripts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_publish_fails_is_answered_as_done_and_its_event_follows() {
    let redis = RedisServer::start();
    let app = TestServer::demo(config(Some(&redis))).await;
    let mut sub = SseClient::subscribe(&app.base, "tasks").await.started().await;
    let mut admin = redis.client().get_connection().unwrap();
    let acl = |conn: &mut redis::Connection, rules: &[&str]| {
        redis::cmd("ACL").arg("SETUSER").arg("default").arg(rules).query::<()>(conn).unwrap();
    };
    // The store's commands (INCR, HSET) still work; the broker's publish script does not.
    acl(&mut admin, &["-eval", "-evalsha"]);
    let mut ids = Vec::new();
    for title in ["first during the outage", "second during the outage"] {
        let resp =
            http().post(app.url("/api/tasks")).json(&serde_json::json!({ "title": title })).send().await.unwrap();
        assert_eq!(resp.status(), 201, "the write happened, so it is answered as done");
        ids.push(resp.json::<shared::tasks::Task>().await.unwrap().id);
    }
    let listed: Vec<shared::tasks::Task> =
        http().get(app.url("/api/tasks")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.iter().map(|t| t.id).collect::<Vec<_>>(), ids, "stored once each");
    let metrics = app.metrics().await;
    assert!(has_line(&metrics, "sse_events_deferred_total 2"), "{metrics}");
    assert!(has_line(&metrics, "sse_outbox_events 2"), "{metrics}");
    let early = sub.next_event(Duration::from_millis(300)).await;
    assert!(early.as_ref().is_none_or(|e| e.event == "heartbeat"), "nothing published while refused: {early:?}");

    acl(&mut admin, &["+@all"]);
    for id in &ids {
        let e = sub.expect_event().await;
        assert_eq!((e.event.as_str(), e.data.clone()), ("task:created", format!("{{\"id\":{id}}}")), "in order");
    }
    assert!(eventually(Duration::from_secs(5), || app.sse.broker().outbox_len() == 0).await);
}

/// Redis takes the Pub/Sub connection but refuses its channels (an ACL without them): the
/// broker retries with backoff instead of reconnecting in a tight loop, and once the channels
/// are allowed again it resubscribes and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_resubscribe_is_retried_with_backoff_not_at_once() {
    use sse_notify_axum::{Broker, BrokerLimits};
    let redis = RedisServer::start();
    let broker = Broker::redis(&redis.url, BrokerLimits::default()).await.unwrap();
    let topic = sse_notify_core::Topic::new("tasks").unwrap();
    let mut sub = broker.subscribe(std::slice::from_ref(&topic), None).await.unwrap();
    sub.next_frame().await.unwrap(); // the opening cursor

    let mut admin = redis.client().get_connection().unwrap();
    let connections = |conn: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("stats").query(conn).unwrap();
        let line = info.lines().find(|l| l.starts_with("total_connections_received:")).unwrap();
        line.split(':').nth(1).unwrap().trim().parse().unwrap()
    };
    let _: () = redis::cmd("ACL").arg("SETUSER").arg("default").arg("resetchannels").query(&mut admin).unwrap();
    let before = connections(&mut admin);
    let _: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query(&mut admin).unwrap();
    // Bounded: 1.5 s of refusals. With backoff (100, 200, 400, 800 ms) that is about 4
    // reconnects; without, thousands.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reconnects = connections(&mut admin) - before;
    assert!(reconnects <= 8, "{reconnects} connections in 1.5 s: the resubscribe is retried without backoff");
    assert!(reconnects >= 2, "{reconnects} connections: the resubscribe was not retried at all");

    let _: () = redis::cmd("ACL").arg("SETUSER").arg("default").arg("allchannels").query(&mut admin).unwrap();
    // Back within the backoff's cap (5 s); then a publish reaches the stream again.
    assert!(
        eventually(Duration::from_secs(8), || broker.redis_reconnects() >= 1).await,
        "the broker resubscribed once the channels were allowed"
    );
    broker.publish(&topic, "task:created", &serde_json::json!({"id": 1})).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let f = sub.next_frame().await.expect("stream open");
            if std::str::from_utf8(&f).unwrap().contains("event: task:created") {
                return f;
            }
        }
    })
    .await
    .expect("the event after the resubscribe");
    assert!(std::str::from_utf8(&frame).unwrap().contains("data: {\"id\":1}"));
}

/// An event near `SSE_MAX_MESSAGE_SIZE` (60 KiB of data, the default limit is 64 KiB) crosses
/// Redis from one instance to a stream on another whole, and a resume replays it whole from the
/// log; one over the limit is refused at publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_kib_event_crosses_redis_and_the_log_whole() {
    let redis = RedisServer::start();
    let a = TestServer::demo(config(Some(&redis))).await;
    let b = TestServer::demo(config(Some(&redis))).await;
    let mut stream = SseClient::subscribe(&a.base, "tasks").await.started().await;
    let start = stream.cursor();
    let topic = sse_notify_core::Topic::new("tasks").unwrap();
    // Not one repeated byte: a cut or a doubled chunk anywhere would show.
    let filler: String = (0..60 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let data = serde_json::json!({ "id": 1, "filler": filler });
    b.sse.broker().publish(&topic, "task:updated", &data).await.expect("60 KiB is under the limit");
    let e = stream.expect_event().await;
    assert_eq!(e.event, "task:updated");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&e.data).unwrap(), data, "the data arrived whole");

    let mut resumed =
        SseClient::open_with(streaming().get(b.url("/events?topic=tasks")).header("last-event-id", start.as_str()))
            .await;
    let replayed = resumed.expect_event().await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&replayed.data).unwrap(), data, "replayed whole");

    let over = serde_json::json!({ "id": 2, "filler": "x".repeat(65 * 1024) });
    assert!(matches!(
        b.sse.broker().publish(&topic, "task:updated", &over).await,
        Err(sse_notify_core::PublishError::TooLarge { .. })
    ));
}

/// Polls `GET url` every 100 ms until it answers `status`, for at most `within`.
async fn status_within(url: &str, status: u16, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if status_of(url).await == status {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

// Found from outside: after Redis refused the broker's login once (the password changed, an ACL
// user not loaded yet after a restart), the instance never recovered, since its command
// connection kept the failed login for good. It logs in again once the login works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_refused_for_a_while_is_made_again_once_it_works() {
    let redis = RedisServer::start_with(&["--requirepass".to_owned(), "Pw_Right_1".to_owned()]);
    let url = |pw: &str| format!("redis://:{pw}@127.0.0.1:{}", redis.port);
    let app = TestServer::demo(SseConfig { redis_url: Some(url("Pw_Right_1")), ..config(None) }).await;
    let mut stream = SseClient::subscribe(&app.base, "tasks").await.started().await;
    let mut admin = redis::Client::open(url("Pw_Right_1")).unwrap().get_connection().unwrap();

    // The password changes under the running instance, and its connections are cut.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("requirepass").arg("Pw_Other_2").query(&mut admin).unwrap();
    for kind in ["normal", "pubsub"] {
        let _: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg(kind).query(&mut admin).unwrap_or(0);
    }
    assert!(status_within(&app.url("/health/ready"), 503, Duration::from_secs(10)).await, "not ready while refused");
    // Writes tried while refused, for 3 s (the Pub/Sub loop meanwhile fails to catch up with
    // its reconnects): each one refused, cleanly.
    for _ in 0..15 {
        let refused = http().post(app.url("/api/tasks")).json(&serde_json::json!({"title": "refused"})).send().await;
        assert_eq!(refused.unwrap().status(), 503);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The right password again: the instance recovers by itself.
    let mut admin = redis::Client::open(url("Pw_Other_2")).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("requirepass").arg("Pw_Right_1").query(&mut admin).unwrap();
    let mut created = None;
    for _ in 0..100 {
        let resp = http().post(app.url("/api/tasks")).json(&serde_json::json!({"title": "back"})).send().await.unwrap();
        if resp.status() == 201 {
            created = Some(resp.json::<shared::tasks::Task>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created = created.expect("writes work again within 10 s of the login working");
    assert!(status_within(&app.url("/health/ready"), 200, Duration::from_secs(10)).await, "ready again");
    let e = loop {
        let e = stream.next_event(Duration::from_secs(10)).await.expect("the open stream hears the write");
        if e.event == "task:created" {
            break e;
        }
    };
    assert_eq!(e.data, format!("{{\"id\":{}}}", created.id));
}

// Found from outside: with the Pub/Sub connection down (here: its user may no longer
// SUBSCRIBE), readiness said ready while new streams got 503 and open ones heard nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_says_not_ready_while_the_subscriptions_are_down() {
    let redis = RedisServer::start();
    let app = TestServer::demo(config(Some(&redis))).await;
    let _stream = SseClient::subscribe(&app.base, "tasks").await.started().await;
    assert_eq!(status_of(&app.url("/health/ready")).await, 200);
    let mut admin = redis.client().get_connection().unwrap();

    let _: () = redis::cmd("ACL").arg("SETUSER").arg("default").arg("-subscribe").query(&mut admin).unwrap();
    let _: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query(&mut admin).unwrap();
    assert!(
        status_within(&app.url("/health/ready"), 503, Duration::from_secs(5)).await,
        "not ready while Pub/Sub cannot subscribe"
    );
    let _: () = redis::cmd("ACL").arg("SETUSER").arg("default").arg("+subscribe").query(&mut admin).unwrap();
    assert!(status_within(&app.url("/health/ready"), 200, Duration::from_secs(10)).await, "ready again");
}
