//! Starts the adopter's binary, opens its SSE stream, calls its server function, and decodes
//! the frame that arrives with its own typed event.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use adopter::app::NoteEvent;
use futures::StreamExt;
use leptos_sse_notify::core::wire::SseParser;
use leptos_sse_notify::SseEvent;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn publish_from_a_server_function_reaches_a_typed_subscriber() {
    let addr = free_addr();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_adopter")).env("LEPTOS_SITE_ADDR", &addr).env("LEPTOS_OUTPUT_NAME", "adopter").env_remove("REDIS_URL").spawn().unwrap(),
    );
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "the adopter app did not answer /health within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let page = http.get(&base).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Adopter") && page.contains("connecting"), "server-rendered page: {page}");

    let stream = reqwest::get(format!("{base}/events?topic=notes")).await.unwrap();
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();
    let mut parser = SseParser::new();
    // The first bytes (comment + retry) arrive at once: the subscription is live after them.
    let first = tokio::time::timeout(Duration::from_secs(5), body.next()).await.unwrap().unwrap().unwrap();
    assert!(parser.feed(&first).is_empty());

    let resp = http
        .post(format!("{base}/api/save_note"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("id=7")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "server function answered {}", resp.status());

    let frame = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next()).await.expect("an event within 5 s");
        let events = parser.feed(&chunk.unwrap().unwrap());
        if let Some(e) = events.into_iter().find(|e| e.event != "heartbeat") {
            break e;
        }
    };
    assert_eq!(NoteEvent::decode(&frame.event, &frame.data).unwrap(), NoteEvent::Saved { id: 7 });
}
