//! Benchmark: publish-to-delivery latency, end to end over HTTP.
//!
//! Starts a real redis-server and two app instances on it, holds an SSE stream open on
//! instance A, then times each `POST /api/tasks` sent to instance B until the matching
//! `task:created` frame is read on A. Does the same on the embedded broker (one instance).
//!
//! Run: `cargo run --release -p server --example latency -- [requests]` (default 1000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

async fn measure(label: &str, post_to: &TestServer, listen_on: &TestServer, n: usize) {
    let mut sse = SseClient::subscribe(&listen_on.base, "tasks").await;
    let client = http();
    let url = post_to.url("/api/tasks");
    let mut samples = Vec::with_capacity(n);
    // Warm-up: connections, JIT-free but caches and pools.
    for i in 0..(n / 10).max(10) + n {
        let started = Instant::now();
        let resp = client.post(&url).json(&serde_json::json!({ "title": format!("t{i}") })).send().await.unwrap();
        assert_eq!(resp.status(), 201);
        let id = resp.json::<serde_json::Value>().await.unwrap()["id"].as_u64().unwrap();
        let e = sse.expect_event().await;
        assert_eq!(e.data, format!("{{\"id\":{id}}}"));
        if i >= (n / 10).max(10) {
            samples.push(started.elapsed());
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{label:<44} n={n:<6} p50={:>7.0} us  p90={:>7.0} us  p99={:>7.0} us  max={:>7.0} us",
        us(pct(0.50)),
        us(pct(0.90)),
        us(pct(0.99)),
        us(*samples.last().unwrap())
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    println!("POST -> SSE frame, measured at the client (includes the POST round trip)");
    let redis = RedisServer::start();
    let a = TestServer::demo(config(Some(&redis))).await;
    let b = TestServer::demo(config(Some(&redis))).await;
    measure("redis: POST on instance B, SSE on instance A", &b, &a, n).await;
    measure("redis: POST and SSE on the same instance", &a, &a, n).await;
    let solo = TestServer::demo(config(None)).await;
    measure("embedded broker: one instance", &solo, &solo, n).await;
}
