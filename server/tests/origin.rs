//! The writer's origin: a write that names its tab's origin publishes an event whose frame id
//! carries it (live and replayed, embedded and through Redis), and nothing else changes.

mod common;

use common::*;
use leptos::server_fn::ServerFn;
use sse_notify_core::cursor::{origin_of, Cursor};
use sse_notify_core::origin::ORIGIN_HEADER;

async fn create(app: &TestServer, origin: Option<&str>) -> u64 {
    let mut req = http().post(app.url("/api/tasks")).json(&serde_json::json!({"title": "t"}));
    if let Some(o) = origin {
        req = req.header(ORIGIN_HEADER, o);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<shared::tasks::Task>().await.unwrap().id
}

async fn writes_carry_their_tabs_origin(writer: &TestServer, reader: &TestServer) {
    let mut sse = SseClient::subscribe(&reader.base, "tasks").await.started().await;
    let start = sse.cursor();

    let id = create(writer, Some("TabA_1")).await;
    let e = sse.expect_event().await;
    let frame_id = e.id.clone().unwrap();
    assert_eq!((e.event.as_str(), e.data), ("task:created", format!("{{\"id\":{id}}}")), "data untouched");
    assert_eq!(origin_of(&frame_id), Some("TabA_1"));
    assert!(frame_id.parse::<Cursor>().is_ok(), "still a cursor: {frame_id}");

    // A server function's event carries it too (the app-wide layer).
    let resp = http()
        .post(writer.url(client::app::api::SetTaskDone::PATH))
        .header(ORIGIN_HEADER, "TabB")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("id={id}&done=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(origin_of(&sse.expect_event().await.id.unwrap()), Some("TabB"));

    // No origin, or one that is not an origin: none.
    create(writer, None).await;
    assert_eq!(origin_of(&sse.expect_event().await.id.unwrap()), None);
    create(writer, Some("not-an-origin")).await;
    assert_eq!(origin_of(&sse.expect_event().await.id.unwrap()), None);

    // Resuming from an id that carries an origin replays exactly what followed, and replayed
    // frames keep their origins.
    let mut resumed = SseClient::open_with(
        streaming().get(reader.url("/events?topic=tasks")).header("last-event-id", frame_id.as_str()),
    )
    .await;
    assert_eq!(resumed.status, 200);
    let replayed = resumed.expect_event().await;
    assert_eq!(replayed.event, "task:updated", "the event after the cursor, no resync");
    assert_eq!(origin_of(&replayed.id.unwrap()), Some("TabB"));
    let mut from_start = SseClient::open_with(
        streaming().get(reader.url("/events?topic=tasks")).header("last-event-id", start.as_str()),
    )
    .await;
    assert_eq!(origin_of(&from_start.expect_event().await.id.unwrap()), Some("TabA_1"));
}

on_every_backend! {
async fn a_write_names_its_tab_on_every_backend(cfg) {
    let writer = TestServer::demo(cfg.clone()).await;
    // Through Redis, the reader is another instance.
    let reader = writer.another(cfg).await;
    writes_carry_their_tabs_origin(&writer, reader.as_ref().unwrap_or(&writer)).await;
}
}
