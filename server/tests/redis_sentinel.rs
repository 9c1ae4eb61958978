//! Redis behind Sentinel: three instances follow the primary through a failover while events
//! flow. Every stream gets every acknowledged event, or an honest resync naming its topics, and
//! never one frame twice; writes answered as successes during the failover are not lost.

mod common;

use common::sentinel::SentinelSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_follow_a_failover_without_losing_an_acknowledged_event() {
    failover_under_load(1, 0).await;
}

/// With `SSE_REDIS_MIN_REPLICAS=1` every publish waits for a replica; two replicas, so that one
/// is left to confirm after the other is promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_min_replicas_every_acknowledged_event_survives_the_failover() {
    failover_under_load(2, 1).await;
}

async fn failover_under_load(replicas: usize, min_replicas: usize) {
    let set = SentinelSet::start(replicas);
    let cfg = set.config(min_replicas);
    let label = format!("sentinel min_replicas={min_replicas}");
    common::failover::failover_under_load(cfg, "redis-sentinel", &label, move || {
        let mut set = set;
        let took = set.kill_primary_and_wait_for_failover();
        (set, took)
    })
    .await;
}
