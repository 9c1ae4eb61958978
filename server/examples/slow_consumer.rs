//! Benchmark: server memory while a client never reads and 20,000 events are published.
//!
//! Serves the app in this process on the embedded broker, opens one stream on a raw socket that
//! is never read, publishes 20,000 events of ~2 KB (40 MB in all) to its topic, and prints the
//! process's resident memory before, at its peak during, and after. The per-topic ring bounds
//! what the server keeps (SSE_MAX_QUEUE_SIZE frames); the rest is dropped for that client, which
//! is sent `resync` and disconnected once it reads again.
//!
//! Run: `cargo run --release -p server --example slow_consumer`

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use sse_notify_core::Topic;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cfg = config(None);
    let queue = cfg.broker.max_queue_size;
    let app = TestServer::demo(cfg).await;
    let broker = app.sse.broker().clone();
    let topic = Topic::new("flood").unwrap();
    let pad = "x".repeat(2000);
    // Warm up allocator and code paths with a reading client, so the baseline is fair.
    {
        let mut warm = SseClient::subscribe(&app.base, "flood").await;
        for n in 0..(queue * 2) {
            broker.publish(&topic, "tick", &serde_json::json!({ "n": n, "pad": pad })).await.unwrap();
            warm.expect_event().await;
        }
    }
    let mut sock = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let req = format!("GET /events?topic=flood HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", app.addr);
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    sock.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    let before = rss_kib();
    let mut peak = before;
    let total = 20_000;
    for n in 0..total {
        broker.publish(&topic, "tick", &serde_json::json!({ "n": n, "pad": pad })).await.unwrap();
        if n % 100 == 0 {
            tokio::task::yield_now().await;
            peak = peak.max(rss_kib());
        }
    }
    let after = rss_kib();
    let mut rest = Vec::new();
    sock.read_to_end(&mut rest).await.unwrap();
    let text = String::from_utf8_lossy(&rest);
    println!("SSE_MAX_QUEUE_SIZE={queue}, {total} events of ~2 KB published to a client that never reads");
    println!("RSS before {before} KiB, peak during {peak} KiB (+{} KiB), after {after} KiB", peak - before);
    println!(
        "then the client read: {} events from socket buffers, resync sent: {}, stream ended",
        text.matches("event: tick\n").count(),
        text.contains("event: resync\n")
    );
}
