//! Writes: a write that publishes answers with its event's position (`sse-position`), which is
//! the position in the event's frame id on every stream, on every backend, for REST routes and
//! for server functions alike.

mod common;

use common::*;
use leptos::server_fn::ServerFn;
use sse_notify_core::cursor::Cursor;
use sse_notify_core::write::{WritePosition, POSITION_HEADER};

/// The answer's position, as a cursor (it must be one: nothing here is deferred).
fn position_of(resp: &reqwest::Response) -> Cursor {
    let value = resp.headers().get(POSITION_HEADER).expect("a write that published says where").to_str().unwrap();
    match value.parse::<WritePosition>() {
        Ok(WritePosition::At(at)) => at,
        other => panic!("{POSITION_HEADER}: {value:?} is {other:?}"),
    }
}

/// The frame id's log and position (its matched topics and echo tag aside).
fn frame_position(id: &str) -> Cursor {
    Cursor { matched: 0, ..id.parse::<Cursor>().unwrap_or_else(|_| panic!("{id} is a cursor")) }
}

async fn answers_carry_their_events_position(writer: &TestServer, reader: &TestServer) {
    let mut sse = SseClient::subscribe(&reader.base, "tasks").await.started().await;

    let created = http().post(writer.url("/api/tasks")).json(&serde_json::json!({"title": "p"})).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let at = position_of(&created);
    let id = created.json::<shared::tasks::Task>().await.unwrap().id;
    let e = sse.expect_event().await;
    assert_eq!(e.event, "task:created");
    assert_eq!(frame_position(&e.id.unwrap()), at, "a REST write's answer names its event");

    // A server function's answer too (the app-wide WriterOriginLayer).
    let done = http()
        .post(writer.url(client::app::api::SetTaskDone::PATH))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("id={id}&done=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let done_at = position_of(&done);
    let e = sse.expect_event().await;
    assert_eq!(e.event, "task:updated");
    assert_eq!(frame_position(&e.id.unwrap()), done_at, "a server function's answer names its event");
    assert!(done_at.position > at.position, "positions grow with the log");

    // Sent back as Last-Event-ID, a position resumes a stream right after the write.
    let deleted = http().delete(writer.url(&format!("/api/tasks/{id}"))).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let mut resumed = SseClient::open_with(
        streaming().get(reader.url("/events?topic=tasks")).header("last-event-id", done_at.to_string()),
    )
    .await;
    let next = resumed.expect_event().await;
    assert_eq!(next.event, "task:deleted", "exactly what followed the write, no resync");
    assert_eq!(frame_position(&next.id.unwrap()), position_of(&deleted));

    // A read publishes nothing and says no position; a refused write neither.
    let read = http().get(writer.url("/api/tasks")).send().await.unwrap();
    assert!(read.headers().get(POSITION_HEADER).is_none());
    let refused = http().post(writer.url("/api/tasks")).json(&serde_json::json!({"title": ""})).send().await.unwrap();
    assert!(refused.status().is_client_error() && refused.headers().get(POSITION_HEADER).is_none());
}

on_every_backend! {
async fn a_write_answers_with_its_events_position_on_every_backend(cfg) {
    let writer = TestServer::demo(cfg.clone()).await;
    // Through Redis, the reader is another instance.
    let reader = writer.another(cfg).await;
    answers_carry_their_events_position(&writer, reader.as_ref().unwrap_or(&writer)).await;
}
}
