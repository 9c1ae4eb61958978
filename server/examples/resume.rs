//! Benchmark: what resuming a stream costs.
//!
//! 1. Replay: a stream that missed 1,000 events comes back with its cursor; time from sending
//!    the request to reading the last replayed event (median of 5, both backends).
//! 2. Frame overhead: bytes of one event frame, `id:` included, on streams following 1 and 64
//!    topics.
//! 3. Reconnect storm: N streams (default 10,000) on `tasks` over two instances on one Redis,
//!    each instance its own process; instance A is stopped (SIGTERM, as in a deploy), 20 events
//!    are published while it is down, and it is started again on the same port. Every client
//!    reconnects with its `Last-Event-ID`. Prints the time from A's restart until every stream
//!    has every event, the Redis commands issued per resumed stream (`INFO commandstats`), and
//!    the `resync` frames received (each one would be a refetch; none are expected).
//!
//! 4. Retention: Redis memory per retained event (`MEMORY USAGE` of the log after 10,000 events
//!    of the demo's shape, `task:updated {"id":N}` on `tasks` and `task:N`).
//!
//! Run: `cargo run --release -p server --example resume -- 10000`

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sse_notify_axum::{Broker, BrokerLimits, SseApp, SseConfig};
use sse_notify_core::wire::SseParser;
use sse_notify_core::Topic;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tasks() -> Topic {
    Topic::new("tasks").unwrap()
}

async fn publish_ticks(broker: &Broker, range: std::ops::Range<u64>) {
    for n in range {
        broker.publish(&tasks(), "tick", &serde_json::json!({ "n": n })).await.unwrap();
    }
}

/// 1. Time to replay 1,000 missed events.
async fn replay(label: &str, cfg: SseConfig) {
    let app = TestServer::demo(cfg).await;
    let broker = app.sse.broker().clone();
    let mut samples = Vec::new();
    for round in 0..5u64 {
        let sse = SseClient::subscribe(&app.base, "tasks").await.started().await;
        let cursor = sse.cursor();
        drop(sse);
        publish_ticks(&broker, round * 1000..round * 1000 + 1000).await;
        let started = Instant::now();
        let req = http().get(app.url("/events?topic=tasks")).header("last-event-id", cursor);
        let mut back = SseClient::open_with(req).await;
        let mut last = 0;
        for _ in 0..1000 {
            let e = back.expect_event().await;
            last = serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["n"].as_u64().unwrap();
        }
        samples.push(started.elapsed());
        assert_eq!(last, round * 1000 + 999);
    }
    samples.sort();
    println!(
        "replay of 1,000 missed events, {label:<9}: median {:?} (min {:?}, max {:?})",
        samples[2], samples[0], samples[4]
    );
}

/// 2. Bytes per frame.
async fn frame_bytes() {
    let app = TestServer::demo(config(None)).await;
    let broker = app.sse.broker().clone();
    let many: Vec<String> = (0..64).map(|i| format!("task:{}", 100_000 + i)).collect();
    for (label, topics, publish_on) in [
        ("1 topic", "task:7".to_owned(), vec![Topic::new("task:7").unwrap()]),
        ("64 topics", many.join(","), vec![Topic::new(&many[63]).unwrap(), Topic::new(&many[0]).unwrap()]),
    ] {
        let mut sse = SseClient::subscribe(&app.base, &topics).await.started().await;
        let before = sse.raw.len();
        broker.publish_to(&publish_on, "task:created", &serde_json::json!({ "id": 7 })).await.unwrap();
        let e = sse.expect_event().await;
        let frame = &sse.raw[before..];
        println!(
            "frame on a stream of {label:<9}: {} bytes, of which `id: <cursor>\\n` {} ({:?})",
            frame.len(),
            e.id.as_ref().unwrap().len() + 5,
            e.id.unwrap()
        );
    }
}

/// 4. Redis memory per retained event.
async fn retention(redis: &RedisServer) {
    let cfg = config(Some(redis));
    let cfg = SseConfig { broker: BrokerLimits { topic_prefix: "retention".into(), ..cfg.broker.clone() }, ..cfg };
    let broker = sse_notify_axum::setup::connect_broker(&cfg).await.unwrap();
    let n = 10_000u64;
    for id in 0..n {
        let topics = [tasks(), Topic::new(format!("task:{id}")).unwrap()];
        broker.publish_to(&topics, "task:updated", &serde_json::json!({ "id": id })).await.unwrap();
    }
    let mut conn = redis.client().get_connection().unwrap();
    let (len, bytes): (u64, u64) = redis::pipe()
        .cmd("XLEN")
        .arg("sse-log/retention")
        .cmd("MEMORY")
        .arg("USAGE")
        .arg("sse-log/retention")
        .arg("SAMPLES")
        .arg(0)
        .query(&mut conn)
        .unwrap();
    println!("retention: {len} events retained in {} KiB of Redis = {} bytes per event", bytes / 1024, bytes / len);
}

/// An instance of the SSE routes in its own process (this binary in `serve` mode).
fn spawn_instance(port: u16, redis: &str) -> Instance {
    Instance(
        Command::new(std::env::current_exe().unwrap())
            .args(["serve", &port.to_string(), redis])
            .spawn()
            .expect("instance starts"),
    )
}

async fn serve(port: u16, redis: String) {
    // Every stream comes from this machine's address: no per-client limit.
    let cfg = SseConfig {
        redis_url: Some(redis),
        max_connections: 19_000,
        client_limits: sse_notify_axum::ClientLimits::UNLIMITED,
        heartbeat: None,
        ..SseConfig::default()
    };
    let sse = SseApp::new(cfg).await.expect("instance connects to Redis");
    let app = sse.routes();
    sse.serve(app, format!("127.0.0.1:{port}").parse().unwrap()).await.unwrap();
}

struct Totals {
    /// Streams open right now.
    open: AtomicUsize,
    /// Events read, per client.
    seen: Vec<AtomicU64>,
    resyncs: AtomicUsize,
    reconnects: AtomicUsize,
}

impl Totals {
    fn all_have(&self, events: u64) -> bool {
        self.seen.iter().all(|s| s.load(Ordering::Acquire) >= events)
    }
}

/// One client: a raw HTTP/1.1 stream that reconnects with its cursor whenever it ends.
async fn client(port: u16, me: usize, totals: Arc<Totals>) {
    let mut parser = SseParser::new();
    let mut buf = vec![0u8; 8 * 1024];
    for attempt in 0..600 {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if attempt > 0 {
            totals.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let resume = match parser.last_event_id() {
            "" => String::new(),
            id => format!("Last-Event-ID: {id}\r\n"),
        };
        let req = format!("GET /events?topic=tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n{resume}\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            continue;
        }
        // Skip the response head, then feed the (chunked) body to the parser as it comes; the
        // chunk-size lines are not SSE fields ("1f" has no colon) and are ignored as such.
        let mut head = Vec::new();
        let mut body_started = false;
        loop {
            let n = match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut chunk = &buf[..n];
            if !body_started {
                head.extend_from_slice(chunk);
                let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
                body_started = true;
                totals.open.fetch_add(1, Ordering::AcqRel);
                let rest = head.split_off(end + 4);
                for e in parser.feed(&rest) {
                    count(&e, me, &totals);
                }
                chunk = &[];
            }
            for e in parser.feed(chunk) {
                count(&e, me, &totals);
            }
        }
        if body_started {
            totals.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn count(e: &sse_notify_core::wire::ParsedEvent, me: usize, totals: &Totals) {
    match e.event.as_str() {
        "tick" => {
            let n = serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["n"].as_u64().unwrap();
            let seen = totals.seen[me].load(Ordering::Relaxed);
            assert_eq!(n, seen, "events arrive once each, in order");
            totals.seen[me].store(seen + 1, Ordering::Release);
        }
        "resync" => {
            totals.resyncs.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

fn commandstats(conn: &mut redis::Connection) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

async fn wait_until(what: &str, within: Duration, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// 3. The reconnect storm.
async fn storm(n: usize) {
    let redis = RedisServer::start();
    let (port_a, port_b) = free_port_pair();
    let mut a = spawn_instance(port_a, &redis.url);
    let _b = spawn_instance(port_b, &redis.url);
    for port in [port_a, port_b] {
        wait_up(port).await;
    }
    let publisher = Broker::redis(&redis.url, Default::default()).await.unwrap();
    let totals = Arc::new(Totals {
        open: AtomicUsize::new(0),
        seen: (0..n).map(|_| AtomicU64::new(0)).collect(),
        resyncs: AtomicUsize::new(0),
        reconnects: AtomicUsize::new(0),
    });
    let started = Instant::now();
    for i in 0..n {
        let port = if i % 2 == 0 { port_a } else { port_b };
        tokio::spawn(client(port, i, totals.clone()));
    }
    let open = |t: &Totals| t.open.load(Ordering::Acquire);
    let took = wait_until("all streams open", Duration::from_secs(60), || open(&totals) == n).await;
    println!("storm: {n} streams open over two instances in {took:?}");
    publish_ticks(&publisher, 0..10).await;
    wait_until("first events", Duration::from_secs(60), || totals.all_have(10)).await;

    let mut conn = redis.client().get_connection().unwrap();
    let before = commandstats(&mut conn);
    // A deploy: SIGTERM ends A's streams; 20 events are published while A is down.
    let restart_began = Instant::now();
    let pid = a.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    a.0.wait().unwrap();
    publish_ticks(&publisher, 10..30).await;
    let _restarted = spawn_instance(port_a, &redis.url);
    let took =
        wait_until("every stream caught up", Duration::from_secs(120), || open(&totals) == n && totals.all_have(30))
            .await;
    let after = commandstats(&mut conn);
    let resumed = n / 2;
    let delta: HashMap<&str, u64> = after
        .iter()
        .map(|(k, v)| (k.as_str(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect();
    let total: u64 = delta.values().sum();
    let mut by_command: Vec<_> = delta.into_iter().collect();
    by_command.sort();
    println!(
        "storm: instance A restarted with {resumed} streams; every stream live and caught up {took:?} after it was \
         started again ({:?} since the restart began)",
        restart_began.elapsed()
    );
    println!(
        "storm: Redis commands during the restart: {total} ({:.2} per resumed stream) {by_command:?}; \
         the 20 publishes account for 20 evalsha",
        total as f64 / resumed as f64
    );
    println!(
        "storm: reconnects {}, resync frames received (refetches caused) {}",
        totals.reconnects.load(Ordering::Relaxed),
        totals.resyncs.load(Ordering::Relaxed)
    );
    println!("storm: whole run {:?}", started.elapsed());
}

fn free_port_pair() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

/// Waits (at most 20 s) until the instance on `port` answers `/health`.
async fn wait_up(port: u16) {
    let url = format!("http://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http().get(&url).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "instance on {port} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed when dropped, so a failed run leaves no instance behind.
struct Instance(Child);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve(args[2].parse().unwrap(), args[3].clone()).await;
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let redis = RedisServer::start();
    replay("embedded", config(None)).await;
    replay("redis", config(Some(&redis))).await;
    frame_bytes().await;
    retention(&redis).await;
    storm(n).await;
}
