//! The writer's origin: a write that names its tab's origin publishes an event whose frame id
//! ends with that origin's echo tag (live and replayed, embedded and through Redis), so the tab
//! knows its own echo, and nothing else changes; no one else can make a tab skip their event.

mod common;

use common::*;
use leptos::server_fn::ServerFn;
use sse_notify_core::cursor::{echo_tag_of, Cursor};
use sse_notify_core::origin::{is_echo_of, ORIGIN_HEADER};

async fn create(app: &TestServer, origin: Option<&str>) -> u64 {
    let mut req = http().post(app.url("/api/tasks")).json(&serde_json::json!({"title": "t"}));
    if let Some(o) = origin {
        req = req.header(ORIGIN_HEADER, o);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<shared::tasks::Task>().await.unwrap().id
}

/// Marks task `id` done through the server function, sending `origin` as the tab's.
async fn set_done(app: &TestServer, id: u64, origin: &str) {
    let resp = http()
        .post(app.url(client::app::api::SetTaskDone::PATH))
        .header(ORIGIN_HEADER, origin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("id={id}&done=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

async fn writes_carry_their_tabs_origin(writer: &TestServer, reader: &TestServer) {
    let mut sse = SseClient::subscribe(&reader.base, "tasks").await.started().await;
    let start = sse.cursor();

    let id = create(writer, Some("TabA_1")).await;
    let e = sse.expect_event().await;
    let frame_id = e.id.clone().unwrap();
    assert_eq!((e.event.as_str(), e.data), ("task:created", format!("{{\"id\":{id}}}")), "data untouched");
    assert!(is_echo_of(&frame_id, "TabA_1"), "{frame_id}");
    assert!(!frame_id.contains("TabA_1"), "the id never shows the origin: {frame_id}");
    assert!(frame_id.parse::<Cursor>().is_ok(), "still a cursor: {frame_id}");

    // A server function's event carries it too (the app-wide layer).
    set_done(writer, id, "TabB").await;
    let by_b = sse.expect_event().await.id.unwrap();
    assert!(is_echo_of(&by_b, "TabB") && !is_echo_of(&by_b, "TabA_1"));

    // No origin, or one that is not an origin: none.
    create(writer, None).await;
    assert_eq!(echo_tag_of(&sse.expect_event().await.id.unwrap()), None);
    create(writer, Some("not-an-origin")).await;
    assert_eq!(echo_tag_of(&sse.expect_event().await.id.unwrap()), None);

    // Resuming from an id that carries an origin replays exactly what followed, and replayed
    // frames keep their origins.
    let mut resumed = SseClient::open_with(
        streaming().get(reader.url("/events?topic=tasks")).header("last-event-id", frame_id.as_str()),
    )
    .await;
    assert_eq!(resumed.status, 200);
    let replayed = resumed.expect_event().await;
    assert_eq!(replayed.event, "task:updated", "the event after the cursor, no resync");
    assert!(is_echo_of(&replayed.id.unwrap(), "TabB"));
    let mut from_start = SseClient::open_with(
        streaming().get(reader.url("/events?topic=tasks")).header("last-event-id", start.as_str()),
    )
    .await;
    assert!(is_echo_of(&from_start.expect_event().await.id.unwrap(), "TabA_1"));
}

/// The attacker follows the topic, reads every id of the victim's writes, and writes with any
/// `sse-origin` it likes (the victim's tags, pieces of its ids, its own), by REST and by server
/// function: none of its events is the victim's echo, so the victim's tab refetches for each.
async fn no_one_else_makes_a_tab_skip_their_change(writer: &TestServer, reader: &TestServer) {
    const VICTIM: &str = "VictimTab001";
    let mut sse = SseClient::subscribe(&reader.base, "tasks").await.started().await;
    let id = create(writer, Some(VICTIM)).await;
    let seen = sse.expect_event().await.id.unwrap();
    assert!(is_echo_of(&seen, VICTIM), "positive control: the victim's own write");
    let tag = echo_tag_of(&seen).unwrap().to_owned();
    let parts: Vec<&str> = seen.split('-').collect();
    let mut sent: Vec<String> = vec![tag, VICTIM.to_lowercase(), "attacker".into()];
    sent.extend(parts.iter().map(|p| p.to_string()));
    for origin in &sent {
        let rest = http()
            .put(writer.url(&format!("/api/tasks/{id}")))
            .header(ORIGIN_HEADER, origin.as_str())
            .json(&serde_json::json!({"title": format!("by {origin}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(rest.status(), 200);
        let by_rest = sse.expect_event().await.id.unwrap();
        assert!(!is_echo_of(&by_rest, VICTIM), "a REST write with sse-origin {origin:?} passed for the victim's");
        set_done(writer, id, origin).await;
        let by_fn = sse.expect_event().await.id.unwrap();
        assert!(!is_echo_of(&by_fn, VICTIM), "a server function with sse-origin {origin:?} passed for the victim's");
    }
}

on_every_backend! {
async fn a_write_names_its_tab_on_every_backend(cfg) {
    let writer = TestServer::demo(cfg.clone()).await;
    // Through Redis, the reader is another instance.
    let reader = writer.another(cfg).await;
    writes_carry_their_tabs_origin(&writer, reader.as_ref().unwrap_or(&writer)).await;
    no_one_else_makes_a_tab_skip_their_change(&writer, reader.as_ref().unwrap_or(&writer)).await;
}
}
