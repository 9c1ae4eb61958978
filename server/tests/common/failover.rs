//! The failover drill shared by the Sentinel and Cluster tests: streams on three instances, a
//! steady publisher, Redis broken mid-run, and what every stream received checked.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use sse_notify_axum::broker::Accepted;
use sse_notify_axum::{BrokerLimits, SseConfig, Subscription};
use sse_notify_core::wire::{ParsedEvent, SseParser};
use sse_notify_core::Topic;

use super::{eventually, SseClient, TestServer};

/// A stream with no overall timeout: it must outlive the failover.
pub async fn long_stream(app: &TestServer) -> SseClient {
    let client = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().unwrap();
    SseClient::open_with(client.get(app.url("/events?topic=tasks"))).await.started().await
}

/// What one stream received: the `n` of each tick in order, the resyncs, and whether any frame
/// (by its id) came twice.
#[derive(Default, Debug)]
pub struct Received {
    pub ticks: Vec<u64>,
    pub resyncs: Vec<String>,
    /// The ticks since the last resync (all of them without one).
    pub since_resync: Vec<u64>,
    pub repeated_ids: Vec<String>,
}

pub async fn drain(sse: &mut SseClient, until_quiet: Duration) -> Received {
    let mut got = Received::default();
    let mut ids = HashSet::new();
    while let Some(e) = sse.next_event(until_quiet).await {
        got.take(e, &mut ids);
    }
    got
}

/// The same, from a broker subscription (the backend, without HTTP).
pub async fn drain_subscription(sub: &mut Subscription, until_quiet: Duration) -> Received {
    let (mut got, mut ids, mut parser) = (Received::default(), HashSet::new(), SseParser::new());
    while let Ok(Some(frame)) = tokio::time::timeout(until_quiet, sub.next_frame()).await {
        for e in parser.feed(&frame) {
            got.take(e, &mut ids);
        }
    }
    got
}

impl Received {
    fn take(&mut self, e: ParsedEvent, ids: &mut HashSet<String>) {
        let got = self;
        match e.event.as_str() {
            "heartbeat" | "" => return,
            "resync" => {
                got.resyncs.push(e.data.clone());
                got.since_resync.clear();
            }
            "tick" => {
                let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
                got.ticks.push(v["n"].as_u64().unwrap());
                got.since_resync.push(v["n"].as_u64().unwrap());
            }
            other => panic!("unexpected event {other}"),
        }
        if let Some(id) = e.id {
            if !ids.insert(id.clone()) {
                got.repeated_ids.push(id);
            }
        }
    }
}

/// Three instances on `cfg`, an HTTP stream on each (and a broker subscription on the second,
/// the backend without HTTP) and a steady publisher on the first; after half a second `fail`
/// (on a blocking thread) breaks Redis and returns once it is whole again, with what must stay
/// alive and how long that took. Then every stream must hold every acknowledged event or a
/// resync naming its topics, and never a frame twice. `label` names the case in the figures
/// printed.
pub async fn failover_under_load<S: Send + 'static>(
    cfg: SseConfig,
    backend: &str,
    label: &str,
    fail: impl FnOnce() -> (S, Duration) + Send + 'static,
) {
    // The events deferred while Redis fails over (100/s for up to a few seconds) reach every
    // stream in one burst once the new primary takes writes: a queue of 2,048 holds the burst,
    // so what this checks is the failover's replay, not the slow-consumer cut (`limits.rs`
    // has that; with the default 256 a loaded machine sometimes cut a stream here).
    let broker = BrokerLimits { max_queue_size: cfg.broker.max_queue_size.max(2048), ..cfg.broker };
    let cfg = SseConfig { broker, ..cfg };
    let instances =
        [TestServer::demo(cfg.clone()).await, TestServer::demo(cfg.clone()).await, TestServer::demo(cfg).await];
    assert_eq!(instances[0].sse.broker().backend_name(), backend);
    // Each stream is read as it comes, as a browser reads it (one nobody reads is cut off once
    // its queue is full), until five quiet seconds, longer than any failover here.
    let quiet = Duration::from_secs(5);
    let mut streams = Vec::new();
    for (i, app) in instances.iter().enumerate() {
        let mut sse = long_stream(app).await;
        streams.push((format!("stream {i}"), tokio::spawn(async move { drain(&mut sse, quiet).await })));
    }
    let tasks = Topic::new("tasks").unwrap();
    let mut backend = instances[1].sse.broker().subscribe(std::slice::from_ref(&tasks), None).await.unwrap();
    let backend = tokio::spawn(async move { drain_subscription(&mut backend, quiet).await });
    streams.push(("the backend subscription".to_owned(), backend));

    // Publish a tick every 10 ms from the first instance, the way an app does after a write
    // (the outbox keeps what Redis cannot take), and note which were acknowledged.
    let broker = instances[0].sse.broker().clone();
    let publisher = tokio::spawn(async move {
        let topic = [Topic::new("tasks").unwrap()];
        let mut acknowledged = Vec::new();
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_secs(8) {
            match broker.publish_or_defer(&topic, "tick", &serde_json::json!({ "n": n })).await {
                Ok(accepted) => acknowledged.push((n, accepted, Instant::now())),
                Err(e) => panic!("publish {n} refused: {e}"),
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        acknowledged
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    let failover = tokio::task::spawn_blocking(fail);
    let published = publisher.await.unwrap();
    let (_set, failover_took) = failover.await.unwrap();
    // Writes go straight through again: the first publish after the kill that was not deferred.
    let deferred = published.iter().filter(|(_, a, _)| *a == Accepted::Deferred).count();
    let last_deferred = published.iter().rposition(|(_, a, _)| *a == Accepted::Deferred);
    let writes_back = last_deferred.and_then(|i| published.get(i + 1)).map(|(_, _, at)| at.duration_since(killed));
    let acknowledged: Vec<u64> = published.iter().map(|(n, _, _)| *n).collect();
    assert!(
        eventually(Duration::from_secs(15), || instances[0].sse.broker().outbox_len() == 0).await,
        "the outbox drains once the new primary takes writes"
    );

    let mut received = Vec::new();
    for (name, stream) in streams {
        received.push((name, stream.await.unwrap()));
    }
    let last = *acknowledged.last().expect("events were published");
    for (i, got) in &received {
        assert!(got.repeated_ids.is_empty(), "{i} got frames twice: {:?}", got.repeated_ids);
        let seen: BTreeSet<u64> = got.ticks.iter().copied().collect();
        let missing: Vec<u64> = acknowledged.iter().copied().filter(|n| !seen.contains(n)).collect();
        for resync in &got.resyncs {
            assert!(resync.ends_with(r#""topics":["tasks"]}"#), "a resync names the stream's topics: {resync}");
        }
        // What a stream missed must be covered by a resync, and after its last resync it must
        // go on live: every event from its first one then to the last published.
        match got.since_resync.first() {
            _ if got.resyncs.is_empty() => assert!(
                missing.is_empty(),
                "{i} missed {} acknowledged events ({:?}...) without a resync",
                missing.len(),
                &missing[..missing.len().min(10)]
            ),
            None => panic!("{i} got a resync and then nothing: {:?}", got.resyncs),
            Some(&first) => {
                let gap: Vec<&u64> = missing.iter().filter(|&&n| n >= first).collect();
                assert!(gap.is_empty() && seen.contains(&last), "{i} missed {gap:?} after its resync (last {last})");
            }
        }
        eprintln!(
            "{label} {i}: {} ticks ({} distinct) of {} acknowledged, {} resyncs, {} missing; \
             Redis whole again after {failover_took:?}, {deferred} publishes deferred, direct again {writes_back:?} \
             after the kill",
            got.ticks.len(),
            seen.len(),
            acknowledged.len(),
            got.resyncs.len(),
            missing.len()
        );
    }
}
