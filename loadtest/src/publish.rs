//! Publishing the events to measure: through the demo's REST API, or into Redis with the broker
//! library as another server instance would.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sse_notify_axum::{Broker, BrokerLimits, SseConfig};
use sse_notify_core::Topic;
use tokio::sync::Semaphore;

use crate::protocol::unix_us;

/// Where events go.
pub enum Publisher {
    /// `POST {base}/api/tasks`: the event's id is the new task's id.
    Rest { http: reqwest::Client, base: String },
    /// `PUT {base}/api/tasks/{id}` over the board's tasks in turn (a new title each time): the
    /// board keeps its size, and each change is a real one. The event names the task, so events
    /// are told apart by their order (one publish at a time: the streams get them in order).
    RestUpdate { http: reqwest::Client, base: String, tasks: Vec<u64> },
    /// The broker library on Redis: the event's id is its index, and its data carries `filler`.
    Redis { broker: Broker, topics: Vec<Topic>, event: String, filler: String },
}

/// What publishing did.
pub struct Published {
    /// Event id -> Unix µs just before its publish started.
    pub sent_us: HashMap<u64, u64>,
    pub failed: usize,
    pub first_error: Option<String>,
    pub first_sent_us: u64,
    /// From the first publish's start to the last one's answer.
    pub elapsed: Duration,
    /// From the first publish's start to the last one's.
    pub started: Duration,
    /// At a paced rate: how late the latest-starting publish started after its time in the
    /// schedule (a publish waits for a free publisher: a slow answer holds the next one back).
    pub max_lag: Duration,
}

impl Publisher {
    pub async fn new(args: &crate::Args) -> Result<Self, String> {
        match args.publish.as_str() {
            "rest" if args.payload_kib > 0 => Err("--payload-kib needs --publish redis".into()),
            "rest" => Ok(Publisher::Rest { http: http()?, base: args.urls[0].trim_end_matches('/').to_owned() }),
            "rest-update" => {
                let (http, base) = (http()?, args.urls[0].trim_end_matches('/').to_owned());
                let tasks = board(&http, &base, args.board).await?;
                Ok(Publisher::RestUpdate { http, base, tasks })
            }
            "redis" => {
                // The servers' own Redis settings, so that a Sentinel or Cluster shape is
                // followed through a failover as they follow it.
                let env = SseConfig::from_env().map_err(|e| e.to_string())?;
                let broker = BrokerLimits { topic_prefix: args.topic_prefix.clone(), ..env.broker.clone() };
                let cfg = SseConfig { redis_url: args.redis.clone().or(env.redis_url.clone()), broker, ..env };
                if cfg.redis_options().map_err(|e| e.to_string())?.is_none() {
                    return Err("--publish redis needs --redis URL (or REDIS_SENTINELS, REDIS_CLUSTER_NODES)".into());
                }
                let broker = sse_notify_axum::setup::connect_broker(&cfg).await.map_err(|e| e.to_string())?;
                let topics = args
                    .topics
                    .split(',')
                    .map(|t| Topic::new(t).map_err(|e| format!("topic {t:?}: {e}")))
                    .collect::<Result<_, _>>()?;
                // Letters only: nothing in it looks like the `"id":` the readers look for.
                let filler = (0..args.payload_kib * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
                Ok(Publisher::Redis { broker, topics, event: args.event.clone(), filler })
            }
            other => Err(format!("--publish {other:?}: use rest, rest-update or redis")),
        }
    }

    /// Publishes event `index`; returns its id.
    async fn one(&self, index: u64) -> Result<u64, String> {
        match self {
            Publisher::Rest { http, base } => {
                let resp = http
                    .post(format!("{base}/api/tasks"))
                    .json(&serde_json::json!({ "title": format!("load {index}") }))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if resp.status() != 201 {
                    return Err(format!("POST /api/tasks answered {}", resp.status()));
                }
                let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
                body.get("id").and_then(|v| v.as_u64()).ok_or_else(|| format!("no id in {body}"))
            }
            Publisher::RestUpdate { http, base, tasks } => {
                let id = tasks[index as usize % tasks.len()];
                let resp = http
                    .put(format!("{base}/api/tasks/{id}"))
                    .json(&serde_json::json!({ "title": format!("change {index}") }))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if resp.status() != 200 {
                    return Err(format!("PUT /api/tasks/{id} answered {}", resp.status()));
                }
                Ok(index)
            }
            Publisher::Redis { broker, topics, event, filler } => {
                let data = if filler.is_empty() {
                    serde_json::json!({ "id": index })
                } else {
                    serde_json::json!({ "id": index, "filler": filler })
                };
                // As an app after its write: kept in the outbox while Redis fails over.
                broker.publish_or_defer(topics, event, &data).await.map_err(|e| e.to_string())?;
                Ok(index)
            }
        }
    }

    /// Publishes `count` events: open-loop at `rate` per second, or back to back with
    /// `in_flight` at once when `rate` is 0.
    pub async fn run(self: Arc<Self>, count: usize, rate: f64, in_flight: usize) -> Published {
        let gate = Arc::new(Semaphore::new(in_flight.max(1)));
        let started = Instant::now();
        let first_sent_us = unix_us();
        let mut tasks = Vec::with_capacity(count);
        let mut max_lag = Duration::ZERO;
        for i in 0..count as u64 {
            let due = started + if rate > 0.0 { Duration::from_secs_f64(i as f64 / rate) } else { Duration::ZERO };
            if rate > 0.0 {
                tokio::time::sleep_until(due.into()).await;
            }
            let permit = gate.clone().acquire_owned().await.expect("the gate stays open");
            if rate > 0.0 {
                max_lag = max_lag.max(due.elapsed());
            }
            let publisher = self.clone();
            tasks.push(tokio::spawn(async move {
                let at = unix_us();
                let result = publisher.one(i).await;
                drop(permit);
                result.map(|id| (id, at))
            }));
        }
        let last_started = started.elapsed();
        let mut out = Published {
            sent_us: HashMap::new(),
            failed: 0,
            first_error: None,
            first_sent_us,
            elapsed: Duration::ZERO,
            started: last_started,
            max_lag,
        };
        for t in tasks {
            match t.await.map_err(|e| e.to_string()).and_then(|r| r) {
                Ok((id, at)) => {
                    out.sent_us.insert(id, at);
                }
                Err(e) => {
                    out.failed += 1;
                    out.first_error.get_or_insert(e);
                }
            }
        }
        out.elapsed = started.elapsed();
        out
    }
}

fn http() -> Result<reqwest::Client, String> {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| e.to_string())
}

/// The ids of the board's first `size` tasks, creating as many as are missing.
async fn board(http: &reqwest::Client, base: &str, size: usize) -> Result<Vec<u64>, String> {
    let list: Vec<serde_json::Value> = http
        .get(format!("{base}/api/tasks"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let mut ids: Vec<u64> = list.iter().filter_map(|t| t.get("id")?.as_u64()).take(size.max(1)).collect();
    while ids.len() < size.max(1) {
        let title = format!("board task {}", ids.len() + 1);
        let resp = http
            .post(format!("{base}/api/tasks"))
            .json(&serde_json::json!({ "title": title }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let task: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
        ids.push(task.get("id").and_then(|v| v.as_u64()).ok_or_else(|| format!("no id in {task}"))?);
    }
    Ok(ids)
}

/// Redis's own CPU time so far (`INFO cpu`: user + system, in ms).
pub async fn redis_cpu_ms(url: &str) -> Option<u64> {
    let client = sse_notify_axum::redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = sse_notify_axum::redis::cmd("INFO").arg("cpu").query_async(&mut conn).await.ok()?;
    let field = |name: &str| -> Option<f64> {
        info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
    };
    Some(((field("used_cpu_user")? + field("used_cpu_sys")?) * 1000.0) as u64)
}
