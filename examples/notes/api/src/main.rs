//! A plain axum JSON API for notes, with live updates for any frontend: `GET /api/notes`,
//! `GET /api/notes/{id}`, `POST /api/notes {"text"}` (publishes `note:saved {"id"}` on `notes`),
//! and the stream at `GET /events?topic=notes`. A write answers with its event's position
//! (`sse-position`), and one retried with its `Idempotency-Key` happens once.
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sse_notify_axum::core::{sse_event, Topic};
use sse_notify_axum::core::Publisher;
use sse_notify_axum::origin::WriterOriginLayer;
use sse_notify_axum::{ApiError, IdempotencyLayer, SseApp};

sse_event! {
    #[derive(Clone, Debug)]
    pub enum NoteEvent { Saved { id: u64 } = "note:saved" }
    topics(&self) { vec![Topic::new("notes").unwrap()] }
}

#[derive(Clone, Serialize)]
struct Note {
    id: u64,
    text: String,
}

#[derive(Deserialize)]
struct NewNote {
    text: String,
}

#[derive(Clone)]
struct Api {
    notes: Arc<Mutex<Vec<Note>>>,
    publisher: Publisher,
}

async fn list(State(api): State<Api>) -> Json<Vec<Note>> {
    Json(api.notes.lock().unwrap().clone())
}

async fn one(State(api): State<Api>, Path(id): Path<u64>) -> Result<Json<Note>, ApiError> {
    let found = api.notes.lock().unwrap().iter().find(|n| n.id == id).cloned();
    found.map(Json).ok_or_else(|| ApiError::not_found(format!("no note {id}")))
}

async fn create(State(api): State<Api>, Json(new): Json<NewNote>) -> Result<(StatusCode, Json<Note>), ApiError> {
    let note = {
        let mut notes = api.notes.lock().unwrap();
        let note = Note { id: notes.len() as u64 + 1, text: new.text };
        notes.push(note.clone());
        note
    };
    api.publisher.publish(&NoteEvent::Saved { id: note.id }).await?; // every open page is told
    Ok((StatusCode::CREATED, Json(note)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    sse_notify_axum::init_logging();
    let sse = SseApp::from_env().await?; // REDIS_URL unset: the embedded broker
    // The publisher names the writing tab (its events do not refetch what it shows already).
    let api = Api { notes: Arc::default(), publisher: sse.publisher() };
    let mut app = Router::new()
        .route("/api/notes", get(list).post(create))
        .route("/api/notes/{id}", get(one))
        .with_state(api)
        // A write answers with its event's position, and is made once however often it is sent
        // with its Idempotency-Key (everyone's keys in one scope here: there are no users).
        .layer(WriterOriginLayer)
        .layer(IdempotencyLayer::new(sse.broker(), |_| async { Some("everyone".to_owned()) }))
        .merge(sse.routes()); // GET /events, /health, /health/ready, /metrics
    // The frontend on the same origin: its files from NOTES_FILES (e.g. web/dist).
    if let Ok(dir) = std::env::var("NOTES_FILES") {
        app = app.fallback_service(tower_http::services::ServeDir::new(dir));
    }
    // The frontend on another origin: CORS_ORIGINS lists it (e.g. http://127.0.0.1:8080).
    if let Some(cors) = sse.cors() {
        app = app.layer(cors.allow_methods([Method::GET, Method::POST]));
    }
    let addr = std::env::var("NOTES_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    sse.serve(app, addr.parse()?).await?;
    Ok(())
}
