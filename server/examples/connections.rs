//! Benchmark: server memory per open SSE connection, then fan-out throughput.
//!
//! Serves the app in this process (embedded broker), then a child process (this same binary,
//! `client` mode) opens N streams on 127.0.0.1, all on topic `tasks` (half also on `task:1`), and
//! holds them. Prints the server's resident memory before and with all N open, and the
//! difference per connection (the clients live in the other process, so their memory is not
//! counted). Then publishes M events on `tasks` and times until every stream has read all M:
//! N x M deliveries, with the reading clients on the same two cores.
//!
//! Run: `cargo run --release -p server --example connections -- 10000 100`
//! (`ROUTER=sse|authorize|recheck` serves only the SSE routes, to compare with the whole demo;
//! `UNIQUE_TOPICS=64` makes every stream follow 63 topics of its own besides `tasks`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sse_notify_axum::SseConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts `event: tick` frames on one stream until `want`, across chunk boundaries.
async fn count_ticks(mut s: tokio::net::TcpStream, want: usize) {
    let needle = b"event: tick\n";
    let mut seen = 0;
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while seen < want {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "stream ended early");
        carry.extend_from_slice(&buf[..n]);
        seen += carry.windows(needle.len()).filter(|w| w == needle).count();
        let keep = carry.len().min(needle.len() - 1);
        carry.drain(..carry.len() - keep);
    }
}

async fn client(addr: String, n: usize) {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        // UNIQUE_TOPICS=k: each stream also follows k-1 topics no other stream follows (the
        // hostile-client case: every one of them is a channel of its own).
        let unique: usize = std::env::var("UNIQUE_TOPICS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        let topic = if unique > 0 {
            let mut t = vec!["tasks".to_owned()];
            t.extend((1..unique).map(|k| format!("u{i}.{k}")));
            t.join(",")
        } else if i % 2 == 0 {
            "tasks".to_owned()
        } else {
            "tasks,task:1".to_owned()
        };
        let req = format!("GET /events?topic={topic} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(s);
    }
    println!("OPEN");
    // The parent says how many events to expect, then publishes them.
    let line = tokio::task::spawn_blocking(|| {
        let mut l = String::new();
        std::io::stdin().lock().read_line(&mut l).unwrap();
        l
    })
    .await
    .unwrap();
    let want: usize = line.trim().parse().unwrap_or(0);
    println!("READY");
    let readers: Vec<_> = held.into_iter().map(|s| tokio::spawn(count_ticks(s, want))).collect();
    for r in readers {
        r.await.unwrap();
    }
    println!("DONE");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("client") {
        return client(args[2].clone(), args[3].parse().unwrap()).await;
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let m: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    // Every stream comes from this machine's address: no per-client limit.
    let cfg = SseConfig {
        max_connections: 19_000,
        client_limits: sse_notify_axum::ClientLimits::UNLIMITED,
        heartbeat: None,
        ..config(None)
    };
    // ROUTER=demo (default): the whole demo app; sse: only `SseApp::routes`; authorize / recheck:
    // those routes with an always-yes `authorize`, without / with `recheck_authorization`.
    let router = std::env::var("ROUTER").unwrap_or_else(|_| "demo".into());
    let app = if router == "demo" {
        TestServer::demo(cfg).await
    } else {
        let sse = sse_notify_axum::SseApp::new(cfg).await.unwrap();
        let endpoint = match router.as_str() {
            "sse" => sse.endpoint(),
            "authorize" => sse.endpoint().authorize(|_, _| async { true }),
            "recheck" => sse.endpoint().authorize(|_, _| async { true }).recheck_authorization(Duration::from_secs(30)),
            other => panic!("ROUTER={other}: use demo, sse, authorize or recheck"),
        };
        let routes = axum::Router::new().merge(sse.routes_with(endpoint));
        TestServer::serve(sse, routes).await
    };
    println!("ROUTER={router}");
    // Warm up: one stream, so code paths and the allocator are initialised.
    drop(SseClient::subscribe(&app.base, "tasks").await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();

    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["client", &app.addr.to_string(), &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || loop {
        let mut l = String::new();
        if out.read_line(&mut l).unwrap_or(0) == 0 || lines_tx.send(l.trim().to_owned()).is_err() {
            break;
        }
    });
    assert_eq!(lines.recv().await.as_deref(), Some("OPEN"), "client process failed");
    let opened_in = started.elapsed();
    let broker = app.sse.broker().clone();
    assert!(eventually(Duration::from_secs(30), || app.sse.admission().connections() == n).await);
    let with = rss_kib();
    println!("{n} SSE connections opened in {opened_in:?}");
    println!(
        "server RSS before {before} KiB, with {n} open {with} KiB: {:.2} KiB per connection",
        (with - before) as f64 / n as f64
    );

    // Fan-out: M events on `tasks`, every stream reads them all.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{m}\n").as_bytes()).unwrap();
    assert_eq!(lines.recv().await.as_deref(), Some("READY"));
    let topic = sse_notify_core::Topic::new("tasks").unwrap();
    let started = Instant::now();
    for i in 0..m {
        broker.publish(&topic, "tick", &serde_json::json!({ "n": i })).await.unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(lines.recv().await.as_deref(), Some("DONE"));
    let took = started.elapsed();
    let deliveries = n * m;
    println!(
        "{m} events to {n} streams: {deliveries} deliveries in {took:?} = {:.0} deliveries/s (clients on the same 2 cores)",
        deliveries as f64 / took.as_secs_f64()
    );
    let _ = child.wait();
    // The clients are gone: what the server gives back.
    assert!(eventually(Duration::from_secs(30), || app.sse.admission().connections() == 0).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "server RSS after all {n} closed {} KiB ({} topics still subscribed)",
        rss_kib(),
        broker.subscribed_channels()
    );
}
