//! Memory goes back to the system after streams close (its own test binary: it reads the RSS
//! of the process, which other tests running beside it would disturb).

mod common;

use std::time::Duration;

use common::*;
use sse_notify_axum::{ClientLimits, SseApp, SseConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_closed_streams_is_given_back() {
    ensure_open_files(2_500);
    let cfg = SseConfig { client_limits: ClientLimits::UNLIMITED, heartbeat: None, ..config(None) };
    let sse = SseApp::new(cfg).await.unwrap();
    let app = TestServer::serve(sse.clone(), sse.routes()).await;
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
    assert!(eventually(Duration::from_secs(10), || sse.broker().connections() == 0).await, "every stream closed");
    // The broker's watcher trims once it sees the drop (it looks every 5 s).
    let grown = during - before;
    let given_back = eventually(Duration::from_secs(30), || rss_kib() as i64 - before < grown / 3).await;
    let after = rss_kib() as i64;
    println!("RSS before {before} KiB, with 800 x 64-topic streams {during} KiB, after they closed {after} KiB");
    assert!(grown > 10_000, "the streams cost memory to begin with ({grown} KiB)");
    assert!(given_back, "at least two thirds of {grown} KiB given back; still {} KiB above the start", after - before);
}
