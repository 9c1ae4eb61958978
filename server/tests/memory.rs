//! What streams cost in memory, and that it goes back to the system after they close (their own
//! test binary: they read the RSS of the process, which other tests running beside them would
//! disturb; and they run one at a time, see [`ALONE`]).

mod common;

use std::time::Duration;

use common::*;
use sse_notify_axum::{ClientLimits, SseApp, SseConfig};

/// Taken by each test for its whole run: the process's RSS is theirs alone.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The embedded broker's routes with no per-client limits and no heartbeats, in a process that
/// may hold `files` open files.
async fn server_for(files: u64) -> (SseApp, TestServer) {
    ensure_open_files(files);
    let cfg = SseConfig { client_limits: ClientLimits::UNLIMITED, heartbeat: None, ..config(None) };
    let sse = SseApp::new(cfg).await.unwrap();
    let app = TestServer::serve(sse.clone(), sse.routes()).await;
    (sse, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_closed_streams_is_given_back() {
    let _alone = ALONE.lock().await;
    let (sse, app) = server_for(2_500).await;
    drop(SseClient::subscribe(&app.base, "warm-up").await.started().await);
    let before = rss_kib() as i64;

    // 800 streams of 64 topics each, every topic its own: ~51,000 channels.
    let mut streams = Vec::new();
    for chunk in 0..8 {
        let batch = futures::future::join_all((0..100).map(|i| {
            let n = chunk * 100 + i;
            let topics: Vec<String> = (0..64).map(|t| format!("s{n}.t{t}")).collect();
            let base = app.base.clone();
            async move { SseClient::subscribe(&base, &topics.join(",")).await.started().await }
        }))
        .await;
        streams.extend(batch);
    }
    assert!(sse.broker().subscribed_channels() >= 800 * 64);
    let during = rss_kib() as i64;
    drop(streams);
    assert!(eventually(Duration::from_secs(10), || sse.admission().connections() == 0).await, "every stream closed");
    // The broker's watcher trims once it sees the drop (it looks every 5 s).
    let grown = during - before;
    let given_back = eventually(Duration::from_secs(30), || rss_kib() as i64 - before < grown / 3).await;
    let after = rss_kib() as i64;
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
async fn cost_of_streams(
    addr: std::net::SocketAddr,
    count: usize,
    kept_alive: bool,
) -> (f64, Vec<tokio::net::TcpStream>) {
    let before = rss_kib() as f64;
    let mut streams = Vec::new();
    for chunk in 0..count.div_ceil(100) {
        let topics = (0..100.min(count - chunk * 100)).map(|i| format!("{kept_alive}{chunk}x{i}"));
        streams.extend(futures::future::join_all(topics.map(|t| raw_stream(addr, t, kept_alive))).await);
    }
    ((rss_kib() as f64 - before) / count as f64, streams)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_a_kept_alive_connection_costs_what_a_fresh_one_does() {
    let _alone = ALONE.lock().await;
    let (sse, app) = server_for(3_000).await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    // Both ways once, so that what is measured is the streams, not the allocator's first growth.
    drop(cost_of_streams(addr, 200, true).await);
    drop(cost_of_streams(addr, 200, false).await);
    assert!(eventually(Duration::from_secs(10), || sse.admission().connections() == 0).await);
    let (fresh, _fresh) = cost_of_streams(addr, 1000, false).await;
    let (kept, _kept) = cost_of_streams(addr, 1000, true).await;
    assert_eq!(sse.admission().connections(), 2000);
    println!("KiB per stream: on a fresh connection {fresh:.1}, on a kept-alive one {kept:.1}");
    // Left with hyper, a kept-alive stream keeps hyper's buffers: 25 KiB more here.
    assert!(kept < fresh + 8.0, "a kept-alive stream costs {kept:.1} KiB, a fresh one {fresh:.1} KiB");
}
