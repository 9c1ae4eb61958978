//! Benchmark: publishes/s and deliveries/s through each Redis shape, on this machine, in one run.
//!
//! For each shape it starts the Redis servers, then per prefix two brokers (a publishing
//! instance and a subscribing one, as two app instances would be): 100 subscriptions to the
//! prefix's topic on the second, and 16 publishers on the first publishing as fast as Redis
//! answers for a few seconds. Shapes: one Redis over TCP; the same over TLS; a primary with a
//! replica and `SSE_REDIS_MIN_REPLICAS=1` (every publish waits for the replica); a cluster of
//! three primaries with a replica each. Each with one prefix and with four.
//!
//! Run: `cargo run --release -p server --example redis_shapes -- [seconds]` (default 3).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::ClusterSet;
use common::tls::TlsFiles;
use common::*;
use sse_notify_axum::config::RedisSettings;
use sse_notify_axum::{Broker, BrokerLimits, SseConfig};
use sse_notify_core::Topic;

const SUBSCRIBERS: usize = 100;
const PUBLISHERS: usize = 16;

struct Figures {
    publishes: f64,
    deliveries: f64,
    publish_p99_us: f64,
}

/// One prefix: its publishing and subscribing brokers.
async fn brokers(cfg: &SseConfig, prefix: &str) -> (Broker, Broker) {
    let cfg =
        SseConfig { broker: BrokerLimits { topic_prefix: prefix.to_owned(), ..cfg.broker.clone() }, ..cfg.clone() };
    let connect = || sse_notify_axum::setup::connect_broker(&cfg);
    (connect().await.expect("publisher connects"), connect().await.expect("subscriber connects"))
}

async fn run(cfg: &SseConfig, prefixes: usize, seconds: f64) -> Figures {
    let topic = Topic::new("tasks").unwrap();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut pairs = Vec::new();
    let mut holders = Vec::new();
    for p in 0..prefixes {
        let (publisher, subscriber) = brokers(cfg, &format!("bench{p}")).await;
        for _ in 0..SUBSCRIBERS {
            let mut sub = subscriber.subscribe(std::slice::from_ref(&topic), None).await.unwrap();
            let delivered = delivered.clone();
            holders.push(tokio::spawn(async move {
                sub.next_frame().await; // the opening cursor
                while sub.next_frame().await.is_some() {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        pairs.push((publisher, subscriber));
    }
    let warmup = Duration::from_millis(500);
    let run_for = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut publishers = Vec::new();
    for (publisher, _) in &pairs {
        for _ in 0..PUBLISHERS {
            let (publisher, topic) = (publisher.clone(), topic.clone());
            publishers.push(tokio::spawn(async move {
                let (mut counted, mut samples) = (0u64, Vec::new());
                let data = serde_json::json!({ "id": 7 });
                while started.elapsed() < warmup + run_for {
                    let t = Instant::now();
                    publisher.publish(&topic, "task:updated", &data).await.expect("published");
                    if started.elapsed() > warmup {
                        counted += 1;
                        samples.push(t.elapsed());
                    }
                }
                (counted, samples)
            }));
        }
    }
    tokio::time::sleep(warmup).await;
    let before = delivered.load(Ordering::Relaxed);
    tokio::time::sleep(run_for).await;
    let deliveries = delivered.load(Ordering::Relaxed) - before;
    let (mut published, mut samples) = (0, Vec::new());
    for p in publishers {
        let (n, s) = p.await.unwrap();
        published += n;
        samples.extend(s);
    }
    samples.sort();
    let p99 = samples.get(samples.len() * 99 / 100).copied().unwrap_or_default();
    for (publisher, subscriber) in &pairs {
        publisher.close();
        subscriber.close();
    }
    for h in holders {
        let _ = h.await;
    }
    Figures {
        publishes: published as f64 / seconds,
        deliveries: deliveries as f64 / seconds,
        publish_p99_us: p99.as_secs_f64() * 1e6,
    }
}

/// Redis's own time per publish script on the nodes at `ports` (`INFO commandstats`), after
/// `CONFIG RESETSTAT` at the start of the run: what one shard spends on one publish, which
/// bounds one prefix's publish rate at about 1 / that per second of one Redis core.
fn script_us_per_publish(ports: &[u16], reset: bool) -> Option<f64> {
    let mut worst: Option<f64> = None;
    for port in ports {
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?.get_connection().ok()?;
        if reset {
            let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut conn).ok()?;
            continue;
        }
        let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut conn).ok()?;
        let us = stats.lines().find(|l| l.starts_with("cmdstat_evalsha:")).and_then(|l| {
            l.split(',').find_map(|f| f.strip_prefix("usec_per_call=")).and_then(|v| v.parse::<f64>().ok())
        });
        worst = match (worst, us) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    worst
}

async fn report(shape: &str, cfg: &SseConfig, seconds: f64, redis_ports: &[u16]) {
    for prefixes in [1, 4] {
        script_us_per_publish(redis_ports, true);
        let f = run(cfg, prefixes, seconds).await;
        let script = script_us_per_publish(redis_ports, false).map(|us| format!("{us:.1} us")).unwrap_or_default();
        println!(
            "{shape:<34} prefixes={prefixes}  publishes/s={:>8.0}  deliveries/s={:>9.0}  publish p99={:>6.0} us  \
             redis per publish={script}",
            f.publishes, f.deliveries, f.publish_p99_us
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: f64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3.0);
    println!("{PUBLISHERS} publishers and {SUBSCRIBERS} subscriptions per prefix, {seconds} s each, this machine");

    let single = RedisServer::start();
    report("single redis (tcp)", &config(Some(&single)), seconds, &[single.port]).await;
    drop(single);

    let files = TlsFiles::generate("bench");
    let tls = RedisServer::start_tls(&files, &["--tls-auth-clients".into(), "no".into()]);
    let redis = RedisSettings { tls_ca_file: Some(files.ca.clone()), ..Default::default() };
    report("single redis (tls)", &SseConfig { redis, ..config(Some(&tls)) }, seconds, &[]).await;
    drop(tls);

    let primary = RedisServer::start_with(&["--repl-diskless-sync-delay".into(), "0".into()]);
    let _replica = RedisServer::start_with(&["--replicaof".into(), "127.0.0.1".into(), primary.port.to_string()]);
    // A fresh replica acknowledges from its first ACK on (once a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let redis = RedisSettings { min_replicas: 1, ..Default::default() };
    let ports = [primary.port];
    report("primary+replica, min_replicas=1", &SseConfig { redis, ..config(Some(&primary)) }, seconds, &ports).await;
    report("primary+replica, min_replicas=0", &config(Some(&primary)), seconds, &ports).await;
    drop(primary);

    let cluster = ClusterSet::start();
    let owners: Vec<u16> =
        (0..4).map(|p| cluster.owner_of(&format!("sse-log/{{bench{p}}}")).expect("an owner")).collect();
    println!("cluster: the four prefixes' shards (primary ports): {owners:?}");
    let redis = RedisSettings { cluster_nodes: cluster.addresses(), ..Default::default() };
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    report("cluster (3 primaries + 3 replicas)", &SseConfig { redis, ..config(None) }, seconds, &ports).await;
}
