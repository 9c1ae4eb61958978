//! A Redis Cluster of three primaries with a replica each: a prefix's log and channels live on
//! the shard that owns its slot, events fan out with sharded Pub/Sub, and three instances go on
//! through the failover of that shard's primary.

mod common;

use common::cluster::ClusterSet;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_on_a_cluster_and_a_prefix_stays_on_its_shard() {
    let set = ClusterSet::start();
    let a = TestServer::demo(set.config()).await;
    let b = TestServer::demo(set.config()).await;
    assert_eq!(a.sse.broker().backend_name(), "redis-cluster");
    let mut on_a = SseClient::subscribe(&a.base, "tasks").await.started().await;
    let created = http().post(b.url("/api/tasks")).json(&serde_json::json!({"title": "sharded"})).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let task: shared::tasks::Task = created.json().await.unwrap();
    let e = on_a.expect_event().await;
    assert_eq!((e.event.as_str(), e.data.clone()), ("task:created", format!("{{\"id\":{}}}", task.id)));
    let listed: Vec<shared::tasks::Task> = http().get(a.url("/api/tasks")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed, vec![task]);

    // The prefix's log and its subscribers are on one shard: the other primaries hold no key
    // of it and no subscriber of its channel.
    let owner = set.owner_of("sse-log/{sse}").expect("a shard owns the log");
    for node in &set.nodes {
        let mut conn = node.client().get_connection().unwrap();
        let subscribers: Vec<(String, i64)> =
            redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg("{sse}/tasks").query(&mut conn).unwrap();
        let log: i64 = redis::cmd("EXISTS").arg("sse-log/{sse}").query(&mut conn).unwrap_or(0);
        if node.port == owner {
            assert_eq!((subscribers[0].1, log), (1, 1), "the owner holds the log and the subscription");
        } else {
            assert_eq!(subscribers[0].1, 0, "node {} holds no subscriber of the prefix", node.port);
        }
    }
}

/// Closing streams unsubscribes their channels (SUNSUBSCRIBE); the shard's confirmation of that
/// is not a slot move (each once counted as a reconnect and made the instance resubscribe every
/// channel, catch up from the log and reload presence). A real slot move still is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_streams_is_not_a_reconnect_and_a_slot_move_still_is() {
    let set = ClusterSet::start();
    let app = TestServer::demo(set.config()).await;
    let reconnects = || metric_value(&app.sse.render_metrics(), "sse_redis_reconnects_total").unwrap_or(0.0);
    let mut board = SseClient::subscribe(&app.base, "tasks").await.started().await;
    let before = reconnects();
    for n in 0..50 {
        let stream = SseClient::subscribe(&app.base, &format!("task:{}", 9000 + n)).await.started().await;
        drop(stream);
        // The channel is let go once the stream's end reaches the hub.
        let channel = format!("{{sse}}/task:{}", 9000 + n);
        let owner = set.owner_of("sse-log/{sse}").unwrap();
        let node = set.nodes.iter().find(|n| n.port == owner).unwrap();
        let gone = eventually(std::time::Duration::from_secs(5), || {
            let mut conn = node.client().get_connection().unwrap();
            let subs: Vec<(String, i64)> =
                redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(&channel).query(&mut conn).unwrap();
            subs[0].1 == 0
        })
        .await;
        assert!(gone, "{channel} was not unsubscribed");
    }
    // The pushes of those unsubscriptions have been read once an event goes through after them.
    let created = http().post(app.url("/api/tasks")).json(&serde_json::json!({"title": "after"})).send().await.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(board.expect_event().await.event, "task:created");
    assert_eq!(reconnects(), before, "closing 50 streams counted as reconnects");

    // Positive control: the prefix's slot moves, and the instance follows it (counted once).
    let moved = tokio::task::spawn_blocking(move || {
        let (from, to) = set.migrate_slot_of("sse-log/{sse}");
        (set, from, to)
    })
    .await
    .unwrap();
    assert_ne!(moved.1, moved.2);
    assert!(eventually(std::time::Duration::from_secs(15), || reconnects() > before).await, "a slot move is followed");
    let created = http().post(app.url("/api/tasks")).json(&serde_json::json!({"title": "moved"})).send().await.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(board.expect_event().await.event, "task:created", "live again on the slot's new shard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_follow_the_failover_of_the_shard_that_holds_the_log() {
    let set = ClusterSet::start();
    let cfg = set.config();
    common::failover::failover_under_load(cfg, "redis-cluster", "cluster", move || {
        let mut set = set;
        let (_, took) = set.kill_owner_and_wait_for_failover("sse-log/{sse}");
        (set, took)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_follow_the_prefix_when_its_slot_migrates_to_another_shard() {
    let set = ClusterSet::start();
    let cfg = set.config();
    common::failover::failover_under_load(cfg, "redis-cluster", "slot migration", move || {
        let started = std::time::Instant::now();
        let (from, to) = set.migrate_slot_of("sse-log/{sse}");
        assert_eq!(set.owner_of("sse-log/{sse}"), Some(to), "the slot moved from :{from} to :{to}");
        (set, started.elapsed())
    })
    .await;
}
