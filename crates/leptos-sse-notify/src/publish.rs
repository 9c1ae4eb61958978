//! Publishing from Leptos server functions.

use leptos::prelude::*;
use sse_notify_core::{PublishError, Publisher, SseEvent};

/// Publishes a typed event from inside a `#[server]` function.
///
/// The server puts a [`Publisher`] in Leptos context (`sse_notify_axum::Broker::publisher`,
/// provided with `leptos_routes_with_context`); without one this is
/// [`PublishError::NotConfigured`] rather than a silent no-op. Call it after the write it reports:
/// if the broker's backend is away for a moment, the event waits in its outbox and is published
/// once it is back (`sse_notify_axum::Broker::publish_or_defer`), so the server function can
/// answer the success its write was. The error keeps its kind, so a server function's own error
/// type can tell "too large" from "outbox full".
///
/// The server's `WriterOriginLayer` puts the event's position in the server function's answer
/// (`sse-position`), where the caller's [`write`](crate::write) reads it.
///
/// ```no_run
/// use leptos::prelude::*;
/// use sse_notify_core::{sse_event, Topic};
///
/// sse_event! {
///     pub enum NoteEvent { Saved { id: u64 } = "note:saved" }
///     topics(&self) { vec![Topic::new("notes").unwrap()] }
/// }
///
/// #[server]
/// async fn save_note(id: u64) -> Result<(), ServerFnError> {
///     // ... store the note, then:
///     leptos_sse_notify::publish(&NoteEvent::Saved { id }).await.map_err(ServerFnError::new)
/// }
/// ```
pub async fn publish<E: SseEvent>(event: &E) -> Result<(), PublishError> {
    let publisher = use_context::<Publisher>().ok_or(PublishError::NotConfigured)?;
    publisher.publish(event).await.map(drop)
}
