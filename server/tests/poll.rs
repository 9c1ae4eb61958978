//! Polls (`GET /events?topic=..&poll=N`): the same frames and cursor contract as a stream, in
//! answers that end, for clients behind proxies that hold a response back until it ends, and
//! for the fetch-based transport that carries headers (`Authorization`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use sse_notify_core::wire::{ParsedEvent, SseParser};
use sse_notify_core::Topic;

/// One poll: its status, its events, the cursor to go on from, and how long it took.
async fn poll(base: &str, query: &str, cursor: Option<&str>) -> (u16, Vec<ParsedEvent>, String, Duration) {
    let started = Instant::now();
    let mut req = http().get(format!("{base}/events?{query}"));
    if let Some(cursor) = cursor {
        req = req.header("last-event-id", cursor);
    }
    let resp = tokio::time::timeout(Duration::from_secs(70), req.send()).await.expect("answered").unwrap();
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(70), resp.bytes()).await.expect("the answer ends").unwrap();
    let mut parser = SseParser::new();
    let events = parser.feed(&body);
    (status, events, parser.last_event_id().to_owned(), started.elapsed())
}

on_both_backends! {
    async fn a_poll_answers_what_is_there_or_waits_for_it_and_ends(cfg) {
        let app = TestServer::demo(cfg).await;
        let broker = app.sse.broker().clone();
        let tasks = Topic::new("tasks").unwrap();

        // Without a cursor: the cursor to start from, at once.
        let (status, events, start, took) = poll(&app.base, "topic=tasks&poll=20", None).await;
        assert_eq!((status, events.len()), (200, 0), "{events:?}");
        assert!(!start.is_empty() && took < Duration::from_secs(5), "{start:?} after {took:?}");

        // What was published since: at once, with its cursor, and the answer ends.
        broker.publish(&tasks, "task:created", &serde_json::json!({"id": 1})).await.unwrap();
        broker.publish(&tasks, "task:created", &serde_json::json!({"id": 2})).await.unwrap();
        let (_, events, after_two, took) = poll(&app.base, "topic=tasks&poll=20", Some(&start)).await;
        let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, [r#"{"id":1}"#, r#"{"id":2}"#]);
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(events[1].id.as_deref(), Some(after_two.as_str()));

        // Nothing new: it waits, and a publish meanwhile ends it at once.
        let waiting = tokio::spawn({
            let (base, cursor) = (app.base.clone(), after_two.clone());
            async move { poll(&base, "topic=tasks&poll=20", Some(&cursor)).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.publish(&tasks, "task:deleted", &serde_json::json!({"id": 1})).await.unwrap();
        let (_, events, _, took) = waiting.await.unwrap();
        assert_eq!(events.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(), ["task:deleted"]);
        assert!(took < Duration::from_secs(5), "woken by the publish, not the deadline: {took:?}");

        // Nothing at all within the wait: an answer with no event, after it.
        let (_, latest_events, latest, _) = poll(&app.base, "topic=tasks&poll=20", Some(&after_two)).await;
        assert_eq!(latest_events.len(), 1);
        let (status, events, _, took) = poll(&app.base, "topic=tasks&poll=1", Some(&latest)).await;
        assert_eq!((status, events.len()), (200, 0));
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");

        // A presence summary, which every new subscription starts with, does not end a poll
        // by itself (else a page that shows presence would poll without pause): it comes
        // with the answer at the wait's end.
        let (_, events, _, took) = poll(&app.base, "topic=tasks&presence=tasks&poll=1", Some(&latest)).await;
        // (On Redis the state may come twice: again once the topic's members are loaded.)
        assert!(!events.is_empty() && events.iter().all(|e| e.event == "presence:state"), "{events:?}");
        assert!(took >= Duration::from_millis(900), "{took:?}");

        // Counted apart from streams: what clients use says what their networks allow.
        let page = http().get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metric_value(&page, "sse_polls_total").is_some_and(|n| n >= 6.0), "{page}");

        // A poll's wait is bounded; a bad one is a 400 naming it.
        for bad in ["0", "56", "x", ""] {
            let resp = http().get(app.url(&format!("/events?topic=tasks&poll={bad}"))).send().await.unwrap();
            assert_eq!(error_code(resp, 400).await, "invalid_poll", "poll={bad}");
        }
    }
}
