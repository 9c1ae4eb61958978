//! Bytes an attacker would send (loopback only, every loop bounded), each the probe that found
//! a hole, on the direct path and on a connection hyper kept alive and gave up (taken over).

mod common;

use std::time::{Duration, Instant};

use common::raw::{Framing, Raw, Read};
use common::*;
use sse_notify_axum::SseConfig;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
/// A topic the demo refuses without a session (403).
const FORBIDDEN: &[u8] = b"GET /events?topic=comment_thread:1 HTTP/1.1\r\nHost: x\r\n\r\n";

fn with_head_timeout(secs: u64) -> SseConfig {
    SseConfig { header_timeout: Duration::from_secs(secs), ..config(None) }
}

fn response(read: Read) -> common::raw::Response {
    match read {
        Read::Response(r) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

/// A stream asked for on a fresh connection (the direct path) and on one that served a request
/// first (taken over from hyper); the connection after the stream's head and first bytes.
async fn stream_both_ways(app: &TestServer, request: &[u8]) -> Vec<(&'static str, Raw, common::raw::Response)> {
    let mut out = Vec::new();
    for (way, first) in [("direct", None), ("taken over", Some(HEALTH))] {
        let mut raw = Raw::connect(app.addr).await;
        if let Some(first) = first {
            raw.send(first).await;
            assert_eq!(response(raw.read(Duration::from_secs(5)).await).status, 200, "{way}: /health first");
        }
        raw.send(request).await;
        let resp = response(raw.read(Duration::from_secs(5)).await);
        out.push((way, raw, resp));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_prefix_of_the_http2_preface_is_closed_at_the_head_deadline() {
    let app = TestServer::demo(with_head_timeout(1)).await;
    let probes = [18, 22, 24].map(|n| {
        let addr = app.addr;
        tokio::spawn(async move {
            let started = Instant::now();
            let mut raw = Raw::connect(addr).await;
            raw.send(&H2_PREFACE[..n]).await;
            // 18 and 22 bytes end in a blank line; 24 is the whole preface, then silence.
            let closed = raw.closed_within(Duration::from_secs(4)).await;
            (n, closed, started.elapsed())
        })
    });
    for probe in probes {
        let (n, closed, took) = probe.await.unwrap();
        assert!(closed, "{n} bytes of the HTTP/2 preface: still open after 4 s (the head deadline is 1 s)");
        assert!(took >= Duration::from_millis(900), "{n} bytes: closed after {took:?}, before the deadline");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_split_between_the_reader_and_hyper_gets_one_deadline_in_all() {
    let app = TestServer::demo(with_head_timeout(2)).await;
    let started = Instant::now();
    let mut raw = Raw::connect(app.addr).await;
    raw.send(b"GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nX-Pad: ").await;
    // Over 8 KiB, slowly: the direct reader holds it for ~1.6 s, then hyper takes it over. It
    // must not start a deadline of its own (that closed it at ~3.6 s).
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_millis(180)).await;
        raw.send(&[b'a'; 1024]).await;
    }
    while started.elapsed() < Duration::from_millis(2500) {
        if !raw.send(b"a").await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(raw.closed_within(Duration::from_secs(3)).await, "closed in the end");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2900),
        "closed {took:?} after connecting: the head got more than its one 2 s deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_waiting_for_a_head_are_bounded_per_address() {
    let app = TestServer::demo(SseConfig { max_pending_per_client: 4, ..with_head_timeout(20) }).await;
    // One silent connection at a time, each given time to be counted (after 250 ms of
    // silence) before the next: the first four wait, the fifth is refused. (Opened at once, the
    // fifth could be counted before one of the four, which would then be the one refused.)
    let mut silent = Vec::new();
    let refused = loop {
        let mut raw = Raw::connect(app.addr).await;
        match raw.read(Duration::from_millis(600)).await {
            Read::Silent => silent.push(raw),
            Read::Response(r) => break r,
            other => panic!("a silent connection: {other:?}"),
        }
        assert!(silent.len() <= 4, "more than four waiting connections from one address were taken");
    };
    assert_eq!(silent.len(), 4, "a fifth waiting connection is refused");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(body["error"], "too_many_pending_connections");
    for raw in &mut silent {
        assert!(matches!(raw.read(Duration::from_millis(50)).await, Read::Silent), "the first four still wait");
    }
    // Another address is another client.
    let mut other = Raw::connect_from("127.0.0.2", app.addr).await;
    assert!(other.usable().await, "another address");
    // A waiting connection that finishes its head gives its place back.
    assert!(silent[0].usable().await, "a waiting connection completes its head");
    let mut again = Raw::connect(app.addr).await;
    assert!(matches!(again.read(Duration::from_millis(600)).await, Read::Silent), "its place is free again");
    // (Read in process: a new connection from this address would now be refused.)
    let metrics = app.sse.render_metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sse_connections_rejected_total{reason=\"too_many_pending_connections\"} ")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_cursor_gets_a_resync_not_a_dropped_connection() {
    let app = TestServer::demo(config(None)).await;
    let requests: [&[u8]; 2] = [
        // A two-byte character across byte 4 of the cursor's first part.
        b"GET /events?topic=tasks&last_event_id=abc%C3%A91234567-1-0-1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nLast-Event-ID: \xff\xfe1234567-1-0-1\r\n\r\n",
    ];
    for request in requests {
        for (way, mut raw, resp) in stream_both_ways(&app, request).await {
            assert_eq!((resp.status, resp.framing.clone()), (200, Framing::Stream), "{way}");
            let resync = "event: resync\ndata: {\"reason\":\"malformed_cursor\",\"topics\":[\"tasks\"]}\n";
            let mut seen = resp.body_text();
            let deadline = Instant::now() + Duration::from_secs(5);
            while !seen.contains(resync) && Instant::now() < deadline {
                seen.push_str(&String::from_utf8_lossy(&raw.more(Duration::from_millis(200)).await));
                assert!(!raw.is_closed(), "{way}: the stream was dropped: {seen:?}");
            }
            assert!(seen.contains(resync), "{way}: {seen:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_client_that_keeps_sending_is_closed() {
    let app = TestServer::demo(config(None)).await;
    for (way, mut raw, resp) in stream_both_ways(&app, b"GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\n\r\n").await {
        assert_eq!(resp.framing, Framing::Stream, "{way}");
        // Up to 8 MiB, in 64 KiB writes: the server closes long before (4 KiB after the request).
        let junk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < 8 << 20 && raw.send(&junk).await {
            sent += junk.len();
        }
        assert!(raw.closed_within(Duration::from_secs(5)).await, "{way}: still open after {sent} bytes");
        assert!(sent < 8 << 20, "{way}: the server took all {sent} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_hyper_answers_are_answered_at_once_on_the_direct_path_too() {
    // A 10 s head deadline: an unanswered head would wait that long.
    let app = TestServer::demo(with_head_timeout(10)).await;
    for head in [&b"GET /health HTTP/1.1\nHost: x\n\n"[..], b"GET /health HTTP/1.1\nHost: x\n\r\n"] {
        let mut raw = Raw::connect(app.addr).await;
        raw.send(head).await;
        let resp = response(raw.read(Duration::from_secs(2)).await);
        assert_eq!(resp.status, 200, "{:?}", String::from_utf8_lossy(head));
        assert!(raw.usable().await, "and the connection goes on");
    }
    // A TLS ClientHello on the plain port: 400 at once, as hyper answers bad bytes.
    let mut raw = Raw::connect(app.addr).await;
    raw.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x9a\x8f\xa7\x1c").await;
    let started = Instant::now();
    let read = raw.read(Duration::from_secs(3)).await;
    assert!(matches!(&read, Read::Response(r) if r.status == 400), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_request_leaves_the_connection_usable() {
    let app = TestServer::demo(config(None)).await;
    for request in [FORBIDDEN, b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n"] {
        for (way, mut raw, resp) in stream_both_ways(&app, request).await {
            assert!(matches!(resp.status, 400 | 403), "{way}: {}", resp.status);
            assert!(matches!(resp.framing, Framing::Length(_)), "{way}: {:?}", resp.framing);
            let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
            assert!(body["error"].is_string(), "{way}: {body}");
            assert!(raw.usable().await, "{way}: the connection serves the next request, as with hyper");
        }
    }
    // Unless the client asked to close.
    let mut raw = Raw::connect(app.addr).await;
    raw.send(b"GET /events?topic=comment_thread:1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let resp = response(raw.read(Duration::from_secs(5)).await);
    assert_eq!((resp.status, resp.header("connection")), (403, Some("close")));
    assert!(raw.closed_within(Duration::from_secs(2)).await);
}
