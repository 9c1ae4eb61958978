//! Gap-free delivery (DESIGN.md section 3): cursors, exact replay from `Last-Event-ID` and
//! `?last_event_id=`, once-per-stream frames, honest resync, and reconnects under a steady
//! publisher, on the embedded broker and on a real redis-server.

mod common;

use std::time::Duration;

use common::*;
use sse_notify_axum::{Broker, BrokerLimits, SseConfig};
use sse_notify_core::cursor::{Cursor, LogId};
use sse_notify_core::wire::ParsedEvent;
use sse_notify_core::Topic;

fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap()
}

async fn publish_n(broker: &Broker, topics: &[Topic], range: std::ops::Range<u64>) {
    for n in range {
        broker.publish_to(topics, "tick", &serde_json::json!({ "n": n })).await.unwrap();
    }
}

fn n_of(e: &ParsedEvent) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
    v["n"].as_u64().unwrap_or_else(|| panic!("not a tick: {e:?}"))
}

/// Reads `count` non-heartbeat events (5 s each at most).
async fn events(sse: &mut SseClient, count: usize) -> Vec<ParsedEvent> {
    let mut out = Vec::new();
    while out.len() < count {
        out.push(sse.expect_event().await);
    }
    out
}

/// Opens `/events?topic=<topics>` resuming from `cursor`, by header or by query.
async fn resume(base: &str, topics: &str, cursor: &str, by_header: bool) -> SseClient {
    let c = if by_header {
        SseClient::open_with(streaming().get(format!("{base}/events?topic={topics}")).header("last-event-id", cursor))
            .await
    } else {
        SseClient::open(&format!("{base}/events?topic={topics}&last_event_id={cursor}")).await
    };
    assert_eq!(c.status, 200, "a resumed stream is a 200 stream whatever its cursor");
    c
}

/// Asserts nothing but heartbeats arrives within `wait`, on a stream still open then (a stream
/// the server closed is not quiet, it is gone).
async fn quiet_for(sse: &mut SseClient, wait: Duration) {
    let until = tokio::time::Instant::now() + wait;
    while let Some(left) = until.checked_duration_since(tokio::time::Instant::now()) {
        match sse.next_event(left).await {
            Some(e) if e.event == "heartbeat" => continue,
            Some(e) => panic!("expected nothing more, got {e:?}"),
            None => break,
        }
    }
    assert!(!sse.closed, "the stream was closed, not quiet");
}

on_every_backend! {
async fn resume_by_header_and_by_query_replays_exactly_what_was_missed(cfg) {
    let app = TestServer::demo(cfg.clone()).await;
    let broker = app.sse.broker().clone();
    for by_header in [true, false] {
        let mut first = SseClient::subscribe(&app.base, "tasks").await.started().await;
        publish_n(&broker, &[topic("tasks")], 0..2).await;
        assert_eq!(events(&mut first, 2).await.iter().map(n_of).collect::<Vec<_>>(), [0, 1]);
        let cursor = first.cursor();
        drop(first);
        // Missed while away: three events on the topic and one on another topic.
        publish_n(&broker, &[topic("tasks")], 2..4).await;
        publish_n(&broker, &[topic("task:1")], 100..101).await;
        publish_n(&broker, &[topic("tasks")], 4..5).await;
        let mut back = resume(&app.base, "tasks", &cursor, by_header).await;
        let replayed = events(&mut back, 3).await;
        assert_eq!(replayed.iter().map(n_of).collect::<Vec<_>>(), [2, 3, 4], "by_header={by_header}");
        // Then live, with nothing replayed twice.
        publish_n(&broker, &[topic("tasks")], 5..6).await;
        assert_eq!(n_of(&back.expect_event().await), 5);
        quiet_for(&mut back, Duration::from_millis(300)).await;
        // The cursor of the last frame resumes after it: nothing again.
        let mut again = resume(&app.base, "tasks", &back.cursor(), by_header).await;
        quiet_for(&mut again, Duration::from_millis(300)).await;
    }
    // The opening cursor of a stream that saw no event resumes too (EventSource keeps it).
    let quiet = SseClient::subscribe(&app.base, "task:77").await.started().await;
    let cursor = quiet.cursor();
    drop(quiet);
    publish_n(&broker, &[topic("task:77")], 7..8).await;
    let mut back = resume(&app.base, "task:77", &cursor, true).await;
    assert_eq!(n_of(&back.expect_event().await), 7);
}
}

on_every_backend! {
async fn an_event_on_several_followed_topics_arrives_once_naming_each(cfg) {
    let app = TestServer::demo(cfg.clone()).await;
    let broker = app.sse.broker().clone();
    let mut sse = SseClient::subscribe(&app.base, "tasks,task:1,task:2").await.started().await;
    let start = sse.cursor();
    broker.publish_to(&[topic("tasks"), topic("task:1")], "tick", &serde_json::json!({"n": 0})).await.unwrap();
    broker.publish_to(&[topic("task:3")], "tick", &serde_json::json!({"n": 1})).await.unwrap();
    broker.publish_to(&[topic("task:2"), topic("task:9")], "tick", &serde_json::json!({"n": 2})).await.unwrap();
    broker.publish_to(&[topic("task:1"), topic("tasks")], "tick", &serde_json::json!({"n": 3})).await.unwrap();
    let live = events(&mut sse, 3).await;
    let seen: Vec<(u64, u64)> = live.iter().map(|e| (n_of(e), matched(e.id.as_deref()))).collect();
    assert_eq!(seen, [(0, 0b011), (2, 0b100), (3, 0b011)]);
    quiet_for(&mut sse, Duration::from_millis(300)).await;
    // A resume of the same topics in another order: same events, bits in the new order.
    let mut back = resume(&app.base, "task:2,task:1,tasks", &start, true).await;
    let replayed = events(&mut back, 3).await;
    let seen: Vec<(u64, u64)> = replayed.iter().map(|e| (n_of(e), matched(e.id.as_deref()))).collect();
    assert_eq!(seen, [(0, 0b110), (2, 0b001), (3, 0b110)]);
    for e in live.iter().chain(&replayed) {
        assert!(e.id.as_ref().unwrap().len() <= 64);
    }
    // 64 topics: the cursor stays within 64 bytes and names the last one.
    let many: Vec<String> = (0..64).map(|i| format!("task:{}", 1000 + i)).collect();
    let mut wide = SseClient::subscribe(&app.base, &many.join(",")).await.started().await;
    broker.publish_to(&[topic("task:1063"), topic("task:1000")], "tick", &serde_json::json!({"n": 9})).await.unwrap();
    let e = wide.expect_event().await;
    assert!(e.id.as_ref().unwrap().len() <= 64, "{:?}", e.id);
    assert_eq!(matched(e.id.as_deref()), 1 | (1 << 63));
}
}

/// The `resync` that opens a stream: its topics, reason and cursor.
async fn expect_resync(sse: &mut SseClient, reason: &str, topics: &[&str]) -> String {
    let e = sse.expect_event().await;
    assert_eq!(e.event, "resync", "{e:?}");
    let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(data, serde_json::json!({ "reason": reason, "topics": topics }));
    let id = e.id.expect("a resync carries the cursor to go on from");
    id.parse::<Cursor>().expect("a cursor");
    id
}

on_every_backend! {
async fn bad_foreign_unknown_and_trimmed_cursors_resync_their_topics_then_go_live(cfg) {
    let app = TestServer::demo(SseConfig { broker: BrokerLimits { history_size: 5, ..cfg.broker.clone() }, ..cfg.clone() }).await;
    let broker = app.sse.broker().clone();
    let head: Cursor = broker.head_cursor().await.unwrap().parse().unwrap();
    let foreign = Cursor { log: LogId::new("another-app", head.log.epoch), ..head }.to_string();
    let unknown = Cursor { log: LogId { epoch: head.log.epoch.wrapping_add(1), ..head.log }, ..head }.to_string();
    let future = Cursor { position: sse_notify_core::cursor::LogPosition { ms: u64::MAX / 2, seq: 0 }, ..head };
    for (cursor, reason) in [
        ("not-a-cursor".to_owned(), "malformed_cursor"),
        ("1700000000000-0".to_owned(), "malformed_cursor"),
        (foreign, "foreign_cursor"),
        (unknown, "unknown_cursor"),
        (future.to_string(), "unknown_cursor"),
    ] {
        let mut sse = resume(&app.base, "tasks,task:5", &cursor, true).await;
        expect_resync(&mut sse, reason, &["tasks", "task:5"]).await;
        publish_n(&broker, &[topic("task:5")], 1..2).await;
        assert_eq!(n_of(&sse.expect_event().await), 1, "live after the resync ({reason})");
    }
    // Trimmed: more events than the history holds were published after the cursor.
    let old = broker.head_cursor().await.unwrap();
    publish_n(&broker, &[topic("tasks")], 0..300).await;
    let mut sse = resume(&app.base, "tasks", &old, false).await;
    let go_on = expect_resync(&mut sse, "cursor_trimmed", &["tasks"]).await;
    publish_n(&broker, &[topic("tasks")], 300..301).await;
    assert_eq!(n_of(&sse.expect_event().await), 300, "nothing replayed after a resync, then live");
    // The resync's own cursor resumes exactly: only what came after it.
    let mut back = resume(&app.base, "tasks", &go_on, true).await;
    assert_eq!(n_of(&back.expect_event().await), 300);
    let metrics = app.sse.render_metrics();
    for line in [r#"sse_resyncs_total{reason="malformed_cursor"} 2"#, r#"sse_resyncs_total{reason="cursor_trimmed"} 1"#] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
}
}

on_every_backend! {
async fn reconnecting_in_the_middle_of_a_steady_publisher_loses_and_repeats_nothing(cfg) {
    let app = TestServer::demo(cfg.clone()).await;
    let broker = app.sse.broker().clone();
    let total = 600u64;
    let mut sse = SseClient::subscribe(&app.base, "tasks,task:4").await.started().await;
    let publisher = tokio::spawn({
        let broker = broker.clone();
        async move {
            for n in 0..total {
                let topics = if n % 3 == 0 { vec![topic("tasks"), topic("task:4")] } else { vec![topic("tasks")] };
                broker.publish_to(&topics, "tick", &serde_json::json!({ "n": n })).await.unwrap();
                if n % 20 == 0 {
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    });
    let mut got = Vec::new();
    let mut reconnects = 0;
    while got.len() < total as usize {
        got.push(n_of(&sse.expect_event().await));
        // Hang up every 50 events and come back with the last id, alternating header and query.
        if got.len() % 50 == 0 {
            let cursor = sse.cursor();
            drop(sse);
            reconnects += 1;
            // Back once something was published meanwhile (or the publisher is done), so that
            // every resume has something to replay.
            let away = cursor.parse::<Cursor>().unwrap().position;
            for _ in 0..200 {
                let head = broker.head_cursor().await.unwrap().parse::<Cursor>().unwrap().position;
                if head > away || publisher.is_finished() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sse = resume(&app.base, "tasks,task:4", &cursor, reconnects % 2 == 0).await;
        }
    }
    publisher.await.unwrap();
    assert_eq!(got, (0..total).collect::<Vec<_>>(), "every event once, in order, across {reconnects} reconnects");
    quiet_for(&mut sse, Duration::from_millis(300)).await;
    // Events were published while the stream was away, and came back from the log: the
    // resumes really replayed (a test whose resumes had nothing to replay would pass above too).
    let replayed = app.sse.render_metrics();
    let replayed = metric_value(&replayed, "sse_events_replayed_total").expect("the counter") as u64;
    assert!(replayed > 0, "some events were replayed on resume");
    println!("{replayed} events replayed across {reconnects} reconnects");
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_one_instance_resumes_on_another() {
    let redis = RedisServer::start();
    let a = TestServer::demo(config(Some(&redis))).await;
    let b = TestServer::demo(config(Some(&redis))).await;
    let mut on_a = SseClient::subscribe(&a.base, "tasks").await.started().await;
    publish_n(b.sse.broker(), &[topic("tasks")], 0..1).await;
    assert_eq!(n_of(&on_a.expect_event().await), 0);
    let cursor = on_a.cursor();
    drop(on_a);
    publish_n(a.sse.broker(), &[topic("tasks")], 1..3).await;
    publish_n(b.sse.broker(), &[topic("tasks")], 3..4).await;
    let mut on_b = resume(&b.base, "tasks", &cursor, true).await;
    assert_eq!(events(&mut on_b, 3).await.iter().map(n_of).collect::<Vec<_>>(), [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_pubsub_link_is_caught_up_from_the_log_without_resync() {
    let redis = RedisServer::start();
    let a = TestServer::demo(config(Some(&redis))).await;
    let b = TestServer::demo(config(Some(&redis))).await;
    let mut on_a = SseClient::subscribe(&a.base, "tasks").await.started().await;
    publish_n(b.sse.broker(), &[topic("tasks")], 0..10).await;
    let mut conn = redis.client().get_connection().unwrap();
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
    let connected = clients.lines().count();
    // Cut A's Pub/Sub link (B subscribes nothing) and keep it from coming back for a while (Redis
    // refuses connections past maxclients), while B goes on publishing on its command connection.
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxclients").arg(connected - 1).query(&mut conn).unwrap();
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query(&mut conn).unwrap();
    assert_eq!(killed, 1);
    publish_n(b.sse.broker(), &[topic("tasks")], 10..40).await;
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxclients").arg(10_000).query(&mut conn).unwrap();
    // A reconnects, reads what it missed from the log, and goes on live.
    let broker = a.sse.broker().clone();
    assert!(eventually(Duration::from_secs(10), || broker.redis_reconnects() == 1).await);
    publish_n(b.sse.broker(), &[topic("tasks")], 40..50).await;
    let mut got = Vec::new();
    while got.len() < 50 {
        let e = on_a.expect_event().await;
        assert_ne!(e.event, "resync", "everything missed is still in the log: {e:?}");
        got.push(n_of(&e));
    }
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    let metrics = a.sse.render_metrics();
    assert!(metrics.lines().any(|l| l == "sse_events_replayed_total 30"), "{metrics}");
}
