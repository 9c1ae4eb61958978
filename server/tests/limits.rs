//! Production limits and operations: connection cap, slow consumers, message size, CORS,
//! TOPIC_PREFIX isolation, metrics, and shutdown under many open streams.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sse_notify_axum::{BrokerLimits, ClientLimits, SseConfig};
use sse_notify_core::Topic;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

on_both_backends! {
async fn connection_limit_answers_503_before_streaming(cfg) {
    let app = TestServer::demo(SseConfig { max_connections: 2, ..cfg.clone() }).await;
    let first = SseClient::subscribe(&app.base, "tasks").await;
    let _second = SseClient::subscribe(&app.base, "tasks").await;
    let full = http().get(app.url("/events?topic=tasks")).send().await.unwrap();
    assert_eq!(error_code(full, 503).await, "too_many_connections");
    drop(first);
    assert!(eventually(Duration::from_secs(5), || app.sse.admission().connections() == 1).await);
    let _third = SseClient::subscribe(&app.base, "tasks").await;
    let metrics = app.metrics().await;
    assert!(has_line(&metrics, r#"sse_connections_rejected_total{reason="too_many_connections"} 1"#), "{metrics}");
    assert!(has_line(&metrics, "sse_connections 2"), "{metrics}");
}
}

/// Opens a stream on a raw socket and returns it without reading the body: a client that
/// never reads.
/// A stream opened from source address `from` (one of 127.0.0.x).
async fn open_from(app: &TestServer, from: &str, topics: &str) -> SseClient {
    let client = reqwest::Client::builder().local_address(from.parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    SseClient::open_with(client.get(app.url(&format!("/events?topic={topics}")))).await
}

/// The metric line `name` exactly, e.g. `sse_clients 2` (not a prefix of `sse_clients 20`).
async fn metric_line(app: &TestServer, line: &str) -> bool {
    has_line(&app.metrics().await, line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_is_held_to_its_streams_and_topics_and_others_are_not() {
    let limits = ClientLimits { max_streams: 3, max_topics: 5 };
    let app = TestServer::demo(SseConfig { client_limits: limits, ..config(None) }).await;
    let mut held = Vec::new();
    for topics in ["tasks,task:1", "tasks,task:2", "task:3"] {
        let s = open_from(&app, "127.0.0.1", topics).await;
        assert_eq!(s.status, 200, "{topics}");
        held.push(s);
    }
    // A fourth stream from the same address: 429, whatever it asks for.
    let fourth = http().get(app.url("/events?topic=tasks")).send().await.unwrap();
    assert_eq!(error_code(fourth, 429).await, "too_many_streams_per_client");
    let mut streams_refused = 1;
    // Another address is another client.
    let other = open_from(&app, "127.0.0.2", "tasks").await;
    assert_eq!(other.status, 200);
    assert!(metric_line(&app, "sse_clients 2").await);

    // Closing a stream gives its place back (the server notices the close asynchronously).
    drop(held.pop());
    let mut reopened = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while reopened.is_none() && Instant::now() < deadline {
        let s = open_from(&app, "127.0.0.1", "task:3,task:4").await;
        if s.status == 200 {
            reopened = Some(s);
        } else {
            assert_eq!(s.status, 429);
            streams_refused += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(reopened.is_some(), "a closed stream's place was given back");
    // Streams: tasks,task:1 + tasks,task:2 + task:3,task:4. Once the second closes, 4 distinct
    // topics are followed: two more is one too many even with a place free, and topics already
    // followed cost nothing.
    drop(held.pop());
    let mut topics_refused = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while topics_refused.is_none() && Instant::now() < deadline {
        let resp = http().get(app.url("/events?topic=task:98,task:99")).send().await.unwrap();
        match resp.status().as_u16() {
            429 => {
                let body: serde_json::Value = resp.json().await.unwrap();
                match body["error"].as_str() {
                    Some("too_many_topics_per_client") => topics_refused = Some(body),
                    Some("too_many_streams_per_client") => streams_refused += 1,
                    other => panic!("unexpected refusal {other:?}"),
                }
            }
            status => panic!("a sixth distinct topic was answered {status}"),
        }
        if topics_refused.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let body = topics_refused.expect("the sixth distinct topic is refused once a place is free");
    assert!(body["message"].as_str().unwrap().contains('5'), "names the limit: {body}");
    let known = open_from(&app, "127.0.0.1", "tasks,task:1").await;
    assert_eq!(known.status, 200, "topics the client already follows cost nothing new");
    let line = format!("sse_connections_rejected_total{{reason=\"too_many_streams_per_client\"}} {streams_refused}");
    assert!(metric_line(&app, &line).await, "{line}");
    assert!(metric_line(&app, "sse_connections_rejected_total{reason=\"too_many_topics_per_client\"} 1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_client_is_the_address_the_proxy_names() {
    let cfg = SseConfig {
        client_limits: ClientLimits { max_streams: 1, max_topics: 64 },
        client_ip_header: Some(reqwest::header::HeaderName::from_static("x-forwarded-for")),
        ..config(None)
    };
    let app = TestServer::demo(cfg).await;
    let via_proxy = |forwarded: &'static str| {
        SseClient::open_with(streaming().get(app.url("/events?topic=tasks")).header("x-forwarded-for", forwarded))
    };
    // The proxy appends the address it saw: a client cannot escape its limit by sending its own.
    let first = via_proxy("203.0.113.9, 198.51.100.1").await;
    assert_eq!(first.status, 200);
    let same = via_proxy("10.9.9.9, 198.51.100.1").await;
    assert_eq!(same.status, 429, "the last address is the client's");
    let other = via_proxy("198.51.100.2").await;
    assert_eq!(other.status, 200, "another address behind the same proxy is another client");
}

async fn stalled_stream(app: &TestServer, topic: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let req = format!(
        "GET /events?topic={topic} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
        app.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    s
}

on_both_backends! {
async fn a_client_that_never_reads_is_cut_off_with_resync_and_delays_nobody(cfg) {
    // The write timeout far away: this is the queue bound's test (the client reads again).
    let app = TestServer::demo(SseConfig {
        broker: BrokerLimits { max_queue_size: 64, ..cfg.broker.clone() },
        write_timeout: Duration::from_secs(600),
        ..cfg.clone()
    }).await;
    let broker = app.sse.broker().clone();
    let topic = Topic::new("task:9001").unwrap();
    let mut stalled = stalled_stream(&app, "task:9001").await;
    let mut fast = SseClient::subscribe(&app.base, "task:9001").await;

    // 20,000 events of ~2 KB (40 MB): far more than the kernel's socket buffers can hide.
    let text = "x".repeat(2000);
    let total = 20_000;
    let mut fullest = 0;
    for batch in 0..(total / 50) {
        for i in 0..50 {
            let n = batch * 50 + i;
            broker.publish(&topic, "tick", &serde_json::json!({ "n": n, "pad": text })).await.unwrap();
        }
        // The server's own accounting: no stream ever holds more than its bound.
        let (_, max) = broker.queued_events();
        assert!(max <= 64, "a stream holds {max} queued events, over its bound of 64");
        fullest = fullest.max(max);
        // The fast client keeps up: it reads each batch as it comes and misses nothing.
        for i in 0..50 {
            let e = fast.expect_event().await;
            assert_eq!(e.event, "tick", "fast client was cut off");
            let n: serde_json::Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(n["n"], batch * 50 + i);
        }
    }

    // Now the stalled client reads: some events that were already in socket buffers, then an
    // explicit resync, then the end of the stream (EventSource would reconnect).
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        assert!(Instant::now() < deadline, "stalled stream did not end");
        let n = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf)).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    assert!(fullest >= 32, "the stalled stream's queue did fill up ({fullest}), so the bound was exercised");
    assert_eq!(broker.queued_events(), (0, 0), "nothing is left queued once the slow stream is gone");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.contains("event: resync\ndata: {\"reason\":\"slow_consumer\",\"topics\":[\"task:9001\"]}\n"),
        "the slow client is told which topics to refetch: {}",
        &text[text.len().saturating_sub(300)..]
    );
    let delivered = text.matches("event: tick\n").count();
    assert!(delivered < total, "the slow client cannot have got everything ({delivered})");
    let metrics = app.sse.render_metrics();
    assert!(has_line(&metrics, "sse_slow_consumer_disconnects_total 1"), "{metrics}");
    assert!(has_line(&metrics, &format!("sse_events_published_total {total}")), "{metrics}");
}
}

/// A client with a tiny receive buffer that reads its head and never reads again: its writes
/// stop making progress, and the stream is cut within `SSE_WRITE_TIMEOUT_SECONDS`, everything
/// it held freed, while a client that reads gets every event. (Before the bound, its queue sat
/// full and its slot taken until shutdown: the queue's overflow cut is seen only by a writer
/// that gets to read its queue again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_for_good_is_cut_within_the_write_timeout() {
    cut_within_the_write_timeout(b"GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\n\r\n").await;
}

/// The same for a stream that hyper writes (a request with a body, as `Content-Length: 0`
/// makes it, is not taken from hyper): it was never cut, and held its queue, its slot and
/// megabytes of kernel buffer for as long as its client held the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_hyper_writes_is_cut_within_the_write_timeout_too() {
    cut_within_the_write_timeout(b"GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await;
}

async fn cut_within_the_write_timeout(request: &[u8]) {
    let write_timeout = Duration::from_secs(1);
    let app = TestServer::demo(SseConfig { write_timeout, ..config(None) }).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut never_reads = socket.connect(app.addr).await.unwrap();
    never_reads.write_all(request).await.unwrap();
    let mut head = [0u8; 12];
    never_reads.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut reads = SseClient::subscribe(&app.base, "tasks").await.started().await;
    assert!(eventually(Duration::from_secs(5), || app.sse.admission().connections() == 2).await);

    // 1,000 events of 16 KB: far more than the kernel's buffers and the stream's queue hold.
    // Published in batches the reading client keeps up with (it reads each before the next).
    let (broker, tasks, pad) = (app.sse.broker().clone(), Topic::new("tasks").unwrap(), "x".repeat(16 * 1024));
    for batch in 0..20 {
        for i in 0..50 {
            broker.publish(&tasks, "tick", &serde_json::json!({ "n": batch * 50 + i, "pad": pad })).await.unwrap();
        }
        for i in 0..50 {
            let e = reads.expect_event().await;
            assert_eq!(e.event, "tick", "the reading client was cut off");
            assert_eq!(serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["n"], batch * 50 + i);
        }
    }
    let published = Instant::now();

    // Cut within the bound (plus the time a loaded machine takes to notice), and counted.
    let cut = eventually(write_timeout + Duration::from_secs(4), || app.sse.admission().connections() == 1).await;
    assert!(cut, "the stream that never reads still holds its slot {:?} after publishing ended", published.elapsed());
    assert_eq!(app.sse.broker().queued_events(), (0, 0), "its queue is freed");
    let metrics = app.sse.render_metrics();
    assert!(has_line(&metrics, "sse_slow_consumer_disconnects_total 1"), "{metrics}");
    assert!(has_line(&metrics, "sse_connections 1"), "{metrics}");
    drop(never_reads);
}

/// A poll whose client sent bytes after its request (a stray CRLF, as some clients send) gets
/// its whole answer and the last chunk: the connection is closed after what the client sent is
/// read. It was closed with those bytes unread, and then the kernel sends a reset instead of a
/// close, which throws away what the client had not read yet of the answer (half of a 3,000
/// event answer, measured from outside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_answer_arrives_whole_when_its_client_sent_more_after_its_request() {
    let app = TestServer::demo(config(None)).await;
    let (broker, tasks) = (app.sse.broker().clone(), Topic::new("tasks").unwrap());
    let mut first = SseClient::subscribe(&app.base, "tasks").await.started().await;
    broker.publish(&tasks, "tick", &serde_json::json!({ "n": 0 })).await.unwrap();
    let cursor = first.expect_event().await.id.expect("an event's frame has its id");
    drop(first);
    // Far more than the kernel's buffers of a small receive window hold.
    let pad = "x".repeat(1024);
    for n in 1..=1500 {
        broker.publish(&tasks, "tick", &serde_json::json!({ "n": n, "pad": pad })).await.unwrap();
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = socket.connect(app.addr).await.unwrap();
    let request = format!("GET /events?topic=tasks&poll=5 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {cursor}\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.write_all(b"\r\n").await.unwrap();
    // The server writes what the window takes and waits; the client then reads it all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut answer)).await;
    let read = read.expect("the answer ends");
    assert!(read.is_ok(), "the connection was reset after {} bytes: {read:?}", answer.len());
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(text.matches("event: tick").count(), 1500, "every event missed is in the answer");
    assert!(
        text.ends_with("\r\n0\r\n\r\n"),
        "the answer ends with the last chunk: {:?}",
        text.get(text.len().saturating_sub(40)..).unwrap_or(&text)
    );
}

on_both_backends! {
async fn oversized_events_are_a_clear_error_to_the_publisher(cfg) {
    // "event: task:created\ndata: {"id":1}\n\n" is 37 bytes: over a 30-byte limit.
    let app = TestServer::demo(SseConfig { broker: BrokerLimits { max_message_size: 30, ..cfg.broker.clone() }, ..cfg.clone() }).await;
    let resp = http().post(app.url("/api/tasks")).json(&serde_json::json!({"title": "big"})).send().await.unwrap();
    assert_eq!(error_code(resp, 413).await, "event_too_large");
    assert_eq!(status_of(&app.url("/health")).await, 200);
    let metrics = app.metrics().await;
    assert!(has_line(&metrics, r#"sse_publish_errors_total{reason="too_large"} 1"#), "{metrics}");
}
}

on_both_backends! {
async fn cors_allows_only_the_listed_origins_with_credentials(cfg) {
    let cfg = SseConfig { cors_origins: vec!["http://allowed.test".into()], ..cfg.clone() };
    let app = TestServer::demo(cfg).await;
    let preflight = |origin: &'static str| {
        http()
            .request(reqwest::Method::OPTIONS, app.url("/api/tasks"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let ok = preflight("http://allowed.test").await.unwrap();
    assert_eq!(ok.headers()["access-control-allow-origin"], "http://allowed.test");
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    let other = preflight("http://evil.test").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let stream =
        SseClient::open_with(streaming().get(app.url("/events?topic=tasks")).header("origin", "http://allowed.test")).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.headers["access-control-allow-origin"], "http://allowed.test");
}
}

#[tokio::test]
async fn cors_is_off_when_unset() {
    let app = TestServer::demo(config(None)).await;
    let resp = http().get(app.url("/api/tasks")).header("origin", "http://allowed.test").send().await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_prefixes_isolate_two_apps_on_one_redis() {
    let redis = RedisServer::start();
    let prefixed = |prefix: &str| {
        let cfg = config(Some(&redis));
        SseConfig { broker: BrokerLimits { topic_prefix: prefix.into(), ..cfg.broker.clone() }, ..cfg }
    };
    let one = TestServer::demo(prefixed("app1:")).await;
    let two = TestServer::demo(prefixed("app2:")).await;
    let unprefixed = TestServer::demo(config(Some(&redis))).await;
    let mut on_one = SseClient::subscribe(&one.base, "tasks").await;
    let mut on_two = SseClient::subscribe(&two.base, "tasks").await;
    // An app without a prefix whose client names the other app's prefix in a topic: with the
    // prefix and topic simply concatenated, "" + "app1:tasks" was app1's channel for "tasks".
    let mut spy = unprefixed.sse.broker().subscribe(&[Topic::new("app1:tasks").unwrap()], None).await.unwrap();
    assert!(spy.next_frame().await.is_some_and(|f| f.starts_with(b"id: ")), "opening cursor");
    let tasks = Topic::new("tasks").unwrap();
    two.sse.broker().publish(&tasks, "note", &serde_json::json!({"from": "two"})).await.unwrap();
    one.sse.broker().publish(&tasks, "note", &serde_json::json!({"from": "one"})).await.unwrap();
    // Each sees only its own app's event first: the other's never crossed over.
    assert_eq!(on_one.expect_event().await.data, r#"{"from":"one"}"#);
    assert_eq!(on_two.expect_event().await.data, r#"{"from":"two"}"#);
    let mut conn = redis.client().get_connection().unwrap();
    let mut channels: Vec<String> = redis::cmd("PUBSUB").arg("CHANNELS").query(&mut conn).unwrap();
    channels.sort();
    assert_eq!(channels, ["{app1:}/tasks", "{app2:}/tasks", "{sse}/app1:tasks"]);
    let spied = tokio::time::timeout(Duration::from_millis(300), spy.next_frame()).await;
    assert!(spied.is_err(), "no event of app1 reached a topic named after its prefix: {spied:?}");
    // The demo's data is namespaced too: each app has its own board.
    let resp =
        http().post(one.url("/api/tasks")).json(&serde_json::json!({"title": "only in one"})).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let on_two_board: Vec<serde_json::Value> =
        http().get(two.url("/api/tasks")).send().await.unwrap().json().await.unwrap();
    assert!(on_two_board.is_empty());
}

on_both_backends! {
async fn shutdown_ends_a_thousand_open_streams_promptly(cfg) {
    ensure_open_files(2_500); // 1,000 client and 1,000 server sockets in this process
    // All from one address: past the per-client limit, which is not what this test is about.
    let mut app = TestServer::demo(SseConfig { client_limits: ClientLimits::UNLIMITED, ..cfg.clone() }).await;
    let mut streams = Vec::new();
    for chunk in 0..10 {
        let batch = futures::future::join_all((0..100).map(|i| {
            let topic = format!("tasks,task:{}", chunk * 100 + i);
            let base = app.base.clone();
            async move { SseClient::subscribe(&base, &topic).await }
        }))
        .await;
        streams.extend(batch);
    }
    assert_eq!(app.sse.admission().connections(), 1000);
    let took = app.shutdown().await;
    println!("graceful shutdown with 1000 open streams took {took:?}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    for s in &mut streams {
        assert!(s.ended_within(Duration::from_secs(2)).await, "every stream ended");
    }
}
}

on_both_backends! {
async fn metrics_count_the_event_flow(cfg) {
    let app = TestServer::demo(cfg.clone()).await;
    let mut sse = SseClient::subscribe(&app.base, "tasks").await;
    for title in ["a", "b", "c"] {
        let resp = http().post(app.url("/api/tasks")).json(&serde_json::json!({"title": title})).send().await.unwrap();
        assert_eq!(resp.status(), 201);
        sse.expect_event().await;
    }
    let _ = http().get(app.url("/events")).send().await.unwrap();
    let resp = http().get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = resp.text().await.unwrap();
    for line in [
        "sse_connections 1",
        "sse_channels 1",
        "sse_connections_opened_total 1",
        r#"sse_connections_rejected_total{reason="missing_topic"} 1"#,
        "sse_events_published_total 3",
        "sse_events_delivered_total 3",
        "sse_publish_duration_seconds_count 3",
        "sse_redis_reconnects_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}
}

/// Reads until the server closes `s` (EOF or reset); false if it is still open after `wait`.
async fn closed_by_server(s: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // e.g. a 408 answer before the close
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slowloris_clients_are_closed_while_health_and_streams_go_on() {
    let cfg = SseConfig { header_timeout: Duration::from_secs(1), heartbeat: None, ..config(None) };
    let app = TestServer::demo(cfg).await;
    let mut stream = SseClient::subscribe(&app.base, "tasks").await.started().await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(tokio::net::TcpStream::connect(app.addr).await.unwrap());
    }
    // Slowloris: a request head that never ends, one byte every 100 ms.
    let slow: Vec<_> = (0..100)
        .map(|_| {
            let addr = app.addr;
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
                let started = Instant::now();
                for _ in 0..100 {
                    if s.write_all(b"a").await.is_err() {
                        return started.elapsed();
                    }
                    let mut buf = [0u8; 256];
                    match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
                        _ => {}
                    }
                }
                started.elapsed()
            })
        })
        .collect();
    // Meanwhile the server answers at once.
    let started = Instant::now();
    assert_eq!(status_of(&app.url("/health")).await, 200);
    println!("/health under 200 stuck connections answered in {:?}", started.elapsed());
    for s in &mut silent {
        assert!(closed_by_server(s, Duration::from_secs(5)).await, "a silent connection outlived the 1 s head timeout");
    }
    for task in slow {
        let lasted = task.await.unwrap();
        assert!(lasted < Duration::from_secs(5), "a slowloris connection lasted {lasted:?} with a 1 s head timeout");
    }
    // The stream opened before them is past its head: it lives on and still delivers.
    app.sse.broker().publish(&Topic::new("tasks").unwrap(), "tick", &serde_json::json!({})).await.unwrap();
    assert_eq!(stream.expect_event().await.event, "tick");
}

/// Sends `head` and `first` bytes of a body on a new connection, then `more` one byte at a time
/// `every` apart (until the server answers); gives the answer and how long it took.
async fn slow_body(app: &TestServer, head: &str, first: &[u8], every: Duration) -> (String, Duration) {
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(first).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Bounded: the body timeout is 1 s here; 5 s without an answer is the failure.
    while started.elapsed() < Duration::from_secs(5) {
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                    break;
                }
            }
            // A byte more, as a trickling client sends (ignored once the server stopped reading).
            Err(_) if every < Duration::from_secs(5) => {
                let _ = s.write_all(b" ").await;
            }
            Err(_) => {}
        }
    }
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_never_finishes_gets_408_in_time() {
    use leptos::server_fn::ServerFn;
    let cfg = SseConfig { body_timeout: Duration::from_secs(1), ..config(None) };
    let app = TestServer::demo(cfg).await;
    let rest = "POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    let keyed = "POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: k1\r\nContent-Length: 100\r\n\r\n";
    let server_fn = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 50\r\n\r\n",
        client::app::crm::api::SignIn::PATH
    );
    let never = Duration::from_secs(10);
    let trickle = Duration::from_millis(300);
    for (what, head, every, code) in [
        ("a REST body that stops", rest, never, "body_timeout"),
        ("a keyed REST body that stops", keyed, never, "body_incomplete"),
        ("a server function's body that stops", server_fn.as_str(), never, "body_timeout"),
        // A byte every 0.3 s: no gap comes near the 1 s timeout, the whole body never arrives.
        ("a REST body that trickles", rest, trickle, "body_timeout"),
        ("a server function's body that trickles", server_fn.as_str(), trickle, "body_timeout"),
    ] {
        let first: &[u8] = if head.contains("json") { b"{\"title\": \"slo" } else { b"user=" };
        let (text, took) = slow_body(&app, head, first, every).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{what}: {text}");
        assert!(text.contains(&format!("\"error\":\"{code}\"")), "{what}: a JSON error, {text}");
        assert!(took < Duration::from_secs(3), "{what}: answered after {took:?}");
        println!("{what}: 408 after {took:?}");
    }
    // Nothing was created.
    let tasks: Vec<serde_json::Value> = http().get(app.url("/api/tasks")).send().await.unwrap().json().await.unwrap();
    assert!(tasks.is_empty());
}

#[tokio::test]
async fn no_stream_starts_once_shutdown_has_begun() {
    let app = TestServer::demo(config(None)).await;
    let client = http();
    // A kept-alive connection, as a browser holds one, used again after shutdown began.
    assert_eq!(client.get(app.url("/health")).send().await.unwrap().status(), 200);
    app.sse.broker().close();
    let resp = client.get(app.url("/events?topic=tasks")).send().await.unwrap();
    assert_eq!(error_code(resp, 503).await, "shutting_down");
}

/// A stream that waits for its socket to take a large frame holds that frame shared with every
/// other stream, not a copy of its own (a large room's `presence:state`, ~600 KB for 10,000
/// members, was copied into each stream's write buffer: a burst of slow streams held it once
/// each). 300 clients read their head and then nothing, with a small receive buffer and a small
/// segment size (so that the server's send buffer stays near 130 KB); 8 events of 60 KB reach
/// them all: the process grows by far less than a copy per stream would take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_wait_to_write_a_large_frame_share_it_rather_than_copy_it() {
    use std::os::fd::AsRawFd;
    let app = TestServer::demo(SseConfig { client_limits: ClientLimits::UNLIMITED, ..config(None) }).await;
    let mut held = Vec::new();
    for _ in 0..300 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(1024).unwrap();
        let mss: libc::c_int = 536;
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_MAXSEG,
                &mss as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "TCP_MAXSEG");
        let mut s = socket.connect(app.addr).await.unwrap();
        s.write_all(b"GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(s);
    }
    assert!(eventually(Duration::from_secs(5), || app.sse.admission().connections() == 300).await);
    let before = rss_kib();
    let (broker, tasks, pad) = (app.sse.broker().clone(), Topic::new("tasks").unwrap(), "x".repeat(60 * 1024));
    for n in 0..8 {
        broker.publish(&tasks, "big", &serde_json::json!({ "n": n, "pad": pad })).await.unwrap();
    }
    // Every stream has taken what its socket accepted and waits with the rest.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert_eq!(app.sse.admission().connections(), 300, "all still open (they are within the write timeout)");
    // A copy per stream of what its socket has not taken: 300 x ~350 KB, about 100 MiB.
    println!("300 waiting streams grew the process by {grown_mib} MiB");
    assert!(grown_mib < 30, "300 waiting streams grew the process by {grown_mib} MiB");
    drop(held);
}
