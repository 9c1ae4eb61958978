//! Benchmark: server memory per open SSE connection.
//!
//! Serves the app in this process (embedded broker), then a child process (this same binary,
//! `client` mode) opens N streams on 127.0.0.1 over two topics and holds them. Prints the
//! server's resident memory before and with all N open, and the difference per connection.
//! The clients live in the other process, so their memory is not counted.
//!
//! Run: `cargo run --release -p server --example connections -- 10000`

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use server::SseConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn client(addr: String, n: usize) {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        let topic = if i % 2 == 0 { "tasks" } else { "tasks,board" };
        let req = format!("GET /events?topic={topic} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(s);
    }
    println!("OPEN");
    // Hold until the parent closes stdin.
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().lock().read_line(&mut String::new())).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("client") {
        return client(args[2].clone(), args[3].parse().unwrap()).await;
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let app = TestServer::demo(SseConfig { max_connections: 19_000, heartbeat: None, ..config(None) }).await;
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
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let line = tokio::task::spawn_blocking(move || {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        l
    })
    .await
    .unwrap();
    assert_eq!(line.trim(), "OPEN", "client process failed");
    let opened_in = started.elapsed();
    let broker = app.sse.broker().clone();
    assert!(eventually(Duration::from_secs(30), || broker.connections() == n).await);
    let with = rss_kib();
    println!("{n} SSE connections opened in {opened_in:?}");
    println!(
        "server RSS before {before} KiB, with {n} open {with} KiB: {:.2} KiB per connection",
        (with - before) as f64 / n as f64
    );
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let _ = child.wait();
}
