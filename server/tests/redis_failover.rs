//! When Redis loses its newest writes: a replica promoted by a failover, or a server that comes
//! back with older data. Streams that saw the lost events are told to resync before anything
//! else; cursors into what was lost get a resync, cursors before it resume exactly; and the
//! positions issued afterwards carry a new log epoch, so none of them passes for a lost one.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sse_notify_axum::Broker;
use sse_notify_core::cursor::Cursor;
use sse_notify_core::Topic;

fn tasks() -> Topic {
    Topic::new("tasks").unwrap()
}

async fn publish_n(broker: &Broker, range: std::ops::Range<u64>) {
    for n in range {
        broker.publish(&tasks(), "tick", &serde_json::json!({ "n": n })).await.unwrap();
    }
}

fn n_of(e: &sse_notify_core::wire::ParsedEvent) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
    v["n"].as_u64().unwrap_or_else(|| panic!("not a tick: {e:?}"))
}

fn query<T: redis::FromRedisValue>(redis: &RedisServer, cmd: &mut redis::Cmd) -> T {
    let mut conn = redis.client().get_connection().unwrap();
    cmd.query(&mut conn).unwrap()
}

/// Waits until `redis` says `field:value` in its `INFO replication` (with a `value` ending in
/// `=`, a line starting so).
fn wait_for_replication(redis: &RedisServer, field: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = format!("{field}:{value}");
    loop {
        let info: String = query(redis, redis::cmd("INFO").arg("replication"));
        if info.lines().any(|l| l.trim() == line || (value.ends_with('=') && l.trim().starts_with(&line))) {
            return;
        }
        assert!(Instant::now() < deadline, "no {line} within 10 s:\n{info}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads events until one that is not a heartbeat.
async fn next(sse: &mut SseClient) -> sse_notify_core::wire::ParsedEvent {
    sse.expect_event().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_comes_back_without_its_last_writes_forks_the_log() {
    // `primary` serves the app throughout; `replica` holds a copy that stops at event 4.
    let primary = RedisServer::start_with(&["--repl-diskless-sync-delay".into(), "0".into()]);
    let replica = RedisServer::start_with(&[
        "--replicaof".into(),
        "127.0.0.1".into(),
        primary.port.to_string(),
        "--repl-diskless-sync-delay".into(),
        "0".into(),
    ]);
    wait_for_replication(&replica, "master_link_status", "up");
    let app = TestServer::demo(config(Some(&primary))).await;
    let broker = app.sse.broker().clone();

    let mut live = SseClient::subscribe(&app.base, "tasks").await.started().await;
    publish_n(&broker, 0..5).await;
    let mut cursors = Vec::new();
    for n in 0..5 {
        let e = next(&mut live).await;
        assert_eq!(n_of(&e), n);
        cursors.push(e.id.unwrap());
    }
    // The replica holds events 0..5 (WAIT would not do: it counts a connection's own writes).
    let offset = |redis: &RedisServer| -> String {
        let info: String = query(redis, redis::cmd("INFO").arg("replication"));
        info.lines().find_map(|l| l.trim().strip_prefix("master_repl_offset:").map(str::to_owned)).unwrap()
    };
    let target = offset(&primary);
    wait_for_replication(&replica, "master_repl_offset", &target);
    // The replica goes its own way; events 5..8 exist only on the primary.
    let _: () = query(&replica, redis::cmd("REPLICAOF").arg("NO").arg("ONE"));
    publish_n(&broker, 5..8).await;
    for n in 5..8 {
        let e = next(&mut live).await;
        assert_eq!(n_of(&e), n);
        cursors.push(e.id.unwrap());
    }
    // The primary comes back with the replica's data (what a failover to it would serve):
    // events 5..8 are lost, and the primary has a new replication id.
    let _: () = query(&primary, redis::cmd("REPLICAOF").arg("127.0.0.1").arg(replica.port));
    wait_for_replication(&primary, "master_link_status", "up");
    let _: () = query(&primary, redis::cmd("REPLICAOF").arg("NO").arg("ONE"));
    let len: i64 = query(&primary, redis::cmd("XLEN").arg("sse-log/{sse}"));
    assert_eq!(len, 5, "the log lost events 5..8");

    // The next publish forks the log; the live stream saw lost events, so it resyncs first.
    publish_n(&broker, 8..9).await;
    let resync = next(&mut live).await;
    assert_eq!(resync.event, "resync", "{resync:?}");
    assert_eq!(resync.data, r#"{"reason":"broker_reconnected","topics":["tasks"]}"#);
    publish_n(&broker, 9..10).await;
    let after = next(&mut live).await;
    assert_eq!(n_of(&after), 9, "live again after the resync (8 is covered by it)");
    let (old, new) = (cursors[4].parse::<Cursor>().unwrap(), after.id.as_deref().unwrap().parse::<Cursor>().unwrap());
    assert_ne!(old.log.epoch, new.log.epoch, "positions issued after the fork carry a new epoch");
    assert!(new.position > old.position);

    // A cursor the log still holds resumes exactly, across the fork; one into what was lost
    // gets a resync naming its topics, never the events 8 and 9 as if nothing had happened.
    let resume = |cursor: &str| {
        let req = streaming().get(app.url("/events?topic=tasks")).header("last-event-id", cursor);
        SseClient::open_with(req)
    };
    let mut kept = resume(&cursors[3]).await;
    assert_eq!([next(&mut kept).await, next(&mut kept).await, next(&mut kept).await].map(|e| n_of(&e)), [4, 8, 9]);
    for lost in &cursors[5..8] {
        let mut sse = resume(lost).await;
        let e = next(&mut sse).await;
        assert_eq!(
            (e.event.as_str(), e.data.as_str()),
            ("resync", r#"{"reason":"unknown_cursor","topics":["tasks"]}"#)
        );
        publish_n(&broker, 10..11).await;
        // (Each loop publishes one more; only the newest is live for this stream.)
        assert_eq!(next(&mut sse).await.event, "tick");
    }
}

/// A primary with one replica in sync, and the config of an app on the primary that waits up
/// to 300 ms for that replica to confirm each publish (`SSE_REDIS_MIN_REPLICAS=1`).
fn primary_with_a_replica() -> (RedisServer, RedisServer, sse_notify_axum::SseConfig) {
    let primary = RedisServer::start_with(&["--repl-diskless-sync-delay".into(), "0".into()]);
    let replica = RedisServer::start_with(&["--replicaof".into(), "127.0.0.1".into(), primary.port.to_string()]);
    wait_for_replication(&replica, "master_link_status", "up");
    let mut redis = config(Some(&primary)).redis;
    redis.min_replicas = 1;
    redis.min_replicas_wait = Duration::from_millis(300);
    let waiting = sse_notify_axum::SseConfig { redis, ..config(Some(&primary)) };
    (primary, replica, waiting)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_min_replicas_a_publish_no_replica_confirms_is_not_acknowledged() {
    let (primary, mut replica, waiting) = primary_with_a_replica();
    let waiting = sse_notify_axum::setup::connect_broker(&waiting).await.unwrap();
    let not_waiting = sse_notify_axum::setup::connect_broker(&config(Some(&primary))).await.unwrap();
    let tick = serde_json::json!({ "n": 0 });
    // A freshly synced replica acknowledges once its first ACK is in (Redis sends them once a
    // second), so the first publishes may not be confirmed yet.
    let deadline = Instant::now() + Duration::from_secs(5);
    while waiting.publish(&tasks(), "tick", &tick).await.is_err() {
        assert!(Instant::now() < deadline, "the replica never confirmed a publish");
    }

    replica.stop();
    let started = Instant::now();
    let refused = waiting.publish(&tasks(), "tick", &tick).await;
    assert_eq!(refused, Err(sse_notify_core::PublishError::Unavailable), "no replica holds it: not acknowledged");
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited for a replica first");
    not_waiting
        .publish(&tasks(), "tick", &tick)
        .await
        .expect("without SSE_REDIS_MIN_REPLICAS, the primary's word is enough");
    // An app's write is still answered, and told its event went out unconfirmed.
    let accepted = waiting.publish_or_defer(&[tasks()], "tick", &tick).await.unwrap();
    assert!(matches!(accepted, sse_notify_axum::broker::Accepted::Unconfirmed(_)));
}

/// With `SSE_REDIS_MIN_REPLICAS=1` and the replica stopped, a write's event is in the log but
/// unconfirmed: it reaches a stream at most twice (published once more a moment later), and the
/// writes after it still arrive; the answers and the metrics say so. (Before, the outbox
/// published the first one again and again, 15 times in 10 s, each a new position and refetch
/// wave, and the writes behind it reached no stream until the replica came back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_write_reaches_a_stream_at_most_twice_and_later_writes_still_arrive() {
    let (_primary, mut replica, waiting) = primary_with_a_replica();
    let app = TestServer::demo(waiting).await;
    let mut sse = SseClient::subscribe(&app.base, "tasks").await.started().await;
    let create = |title: &'static str| {
        let url = app.url("/api/tasks");
        async move {
            let resp = http().post(url).json(&serde_json::json!({ "title": title })).send().await.unwrap();
            assert_eq!(resp.status(), 201, "the write itself stands");
            let said = resp.headers().get("sse-publish").map(|v| v.to_str().unwrap().to_owned());
            (resp.json::<shared::tasks::Task>().await.unwrap().id, said)
        }
    };
    // Positive control: once the replica acknowledges (its first ACK comes within a second), a
    // write's answer says nothing.
    let deadline = Instant::now() + Duration::from_secs(5);
    while create("warm").await.1.is_some() {
        assert!(Instant::now() < deadline, "the replica never confirmed a write");
    }

    replica.stop();
    let (first, said) = create("first").await;
    assert_eq!(said.as_deref(), Some("unconfirmed"));
    let (second, said) = create("second").await;
    assert_eq!(said.as_deref(), Some("unconfirmed"), "the next write is not held behind the first");
    // Everything the stream gets in the next 3 s (the second publish comes after 1 s).
    let mut seen = std::collections::HashMap::<u64, usize>::new();
    let until = Instant::now() + Duration::from_secs(3);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let Some(e) = sse.next_event(left).await else { break };
        if e.event == "task:created" {
            let id = serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["id"].as_u64().unwrap();
            *seen.entry(id).or_default() += 1;
        }
    }
    for (name, id) in [("first", first), ("second", second)] {
        let times = seen.get(&id).copied().unwrap_or(0);
        assert!((1..=2).contains(&times), "the {name} write reached the stream {times} times: {seen:?}");
    }
    let unconfirmed = metric_value(&app.sse.render_metrics(), "sse_events_unconfirmed_total").unwrap_or(0.0);
    assert!(unconfirmed >= 2.0, "the metrics say so: {unconfirmed}");
}
