//! What streams cost the server in memory, and that it goes back to the system after they
//! close. The server is the real binary in its own process, so what is measured is its memory
//! alone, not the test's clients beside it.

mod common;

use std::time::Duration;

use common::process::ServerProcess;
use common::*;

/// The server binary on the embedded broker with no per-client limits and no heartbeats, which
/// may hold `files` open files.
async fn server_for(files: u64) -> ServerProcess {
    ensure_open_files(files);
    let unlimited = "1000000000";
    ServerProcess::start(&[
        ("SSE_HEARTBEAT_SECONDS", "0"),
        ("SSE_MAX_STREAMS_PER_CLIENT", unlimited),
        ("SSE_MAX_TOPICS_PER_CLIENT", unlimited),
        ("SSE_MAX_CONNECTIONS", unlimited),
        ("RUST_LOG", "warn"),
    ])
    .await
}

/// Waits (bounded) until the server's `sse_connections` gauge is `open`.
async fn connections_become(server: &ServerProcess, open: f64) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if server.metric("sse_connections").await == open {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_closed_streams_is_given_back() {
    let server = server_for(2_500).await;
    drop(SseClient::subscribe(&server.base, "tasks").await.started().await);
    let before = server.rss_kib() as i64;

    // 800 streams of 64 topics each, every topic its own: ~51,000 channels.
    let mut streams = Vec::new();
    for chunk in 0..8 {
        let batch = futures::future::join_all((0..100).map(|i| {
            let n = chunk * 100 + i;
            // Topics the demo lets anyone follow, each its own.
            let topics: Vec<String> = (0..64).map(|t| format!("task:{}", n * 64 + t + 1)).collect();
            let base = server.base.clone();
            async move { SseClient::subscribe(&base, &topics.join(",")).await.started().await }
        }))
        .await;
        streams.extend(batch);
    }
    assert!(server.metric("sse_channels").await >= 800.0 * 64.0);
    let during = server.rss_kib() as i64;
    drop(streams);
    assert!(connections_become(&server, 0.0).await, "every stream closed");
    // The broker's watcher trims once it sees the drop (it looks every 5 s).
    let grown = during - before;
    let given_back = eventually(Duration::from_secs(30), || server.rss_kib() as i64 - before < grown / 3).await;
    let after = server.rss_kib() as i64;
    println!("RSS before {before} KiB, with 800 x 64-topic streams {during} KiB, after they closed {after} KiB");
    assert!(grown > 10_000, "the streams cost memory to begin with ({grown} KiB)");
    assert!(given_back, "at least two thirds of {grown} KiB given back; still {} KiB above the start", after - before);
}

/// Opens a raw stream to `topic`. With `kept_alive`, on a connection that first served another
/// request (a browser's stream usually comes on a connection kept alive after the page's
/// files): `GET /health`, read whole, then `GET /events` on the same socket. Returns the socket
/// once the stream's first bytes came.
async fn raw_stream(addr: std::net::SocketAddr, topic: String, kept_alive: bool) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1024];
    if kept_alive {
        socket.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        // The whole first response: its head, then `content-length` bytes.
        let complete = |got: &[u8]| {
            let text = String::from_utf8_lossy(got).to_ascii_lowercase();
            let Some(end) = text.find("\r\n\r\n") else { return false };
            let length = text[..end].lines().find_map(|l| l.strip_prefix("content-length:")).expect("a length");
            got.len() >= end + 4 + length.trim().parse::<usize>().unwrap()
        };
        while !complete(&got) {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the first response came whole");
            got.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200") && !head.contains("connection: close"), "{head}");
    }
    socket.write_all(format!("GET /events?topic={topic} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(": ok") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream answered");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    socket
}

/// RSS growth per stream, in KiB, for `count` raw streams opened 100 at a time; the streams are
/// returned so they stay open.
/// Streams opened on `server` so far, to give every new one a topic of its own.
async fn stream_count(server: &ServerProcess) -> usize {
    server.metric("sse_connections_opened_total").await as usize
}

async fn cost_of_streams(server: &ServerProcess, count: usize, kept_alive: bool) -> (f64, Vec<tokio::net::TcpStream>) {
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let before = server.rss_kib() as f64;
    let mut streams = Vec::new();
    for chunk in 0..count.div_ceil(100) {
        // Topics the demo lets anyone follow, each its own.
        let first = if kept_alive { 1_000_000 } else { 1 } + stream_count(server).await * 10;
        let topics = (0..100.min(count - chunk * 100)).map(|i| format!("task:{}", first + chunk * 100 + i));
        streams.extend(futures::future::join_all(topics.map(|t| raw_stream(addr, t, kept_alive))).await);
    }
    ((server.rss_kib() as f64 - before) / count as f64, streams)
}

/// RSS growth per stream of 1,000 streams, on a server process of their own that first opened
/// and closed 200 the same way (so that both kinds meet the allocator in the same state).
async fn cost_per_stream(kept_alive: bool) -> f64 {
    let server = server_for(3_000).await;
    drop(cost_of_streams(&server, 200, kept_alive).await);
    assert!(connections_become(&server, 0.0).await);
    let (cost, streams) = cost_of_streams(&server, 1000, kept_alive).await;
    assert_eq!(server.metric("sse_connections").await, 1000.0);
    drop(streams);
    cost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_a_kept_alive_connection_costs_what_a_fresh_one_does() {
    let fresh = cost_per_stream(false).await;
    let kept = cost_per_stream(true).await;
    println!("KiB per stream: on a fresh connection {fresh:.1}, on a kept-alive one {kept:.1}");
    // Left with hyper, a kept-alive stream keeps hyper's buffers: 25 KiB more here.
    assert!(kept < fresh + 8.0, "a kept-alive stream costs {kept:.1} KiB, a fresh one {fresh:.1} KiB");
}
