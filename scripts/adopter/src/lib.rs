//! The adopter's app: one typed event, one server function that publishes it, one component
//! that follows it with use_sse.

use leptos::prelude::*;
use leptos_sse_notify::use_sse;
use sse_notify_core::{sse_event, Topic};

sse_event! {
    /// Notes changed.
    #[derive(Clone, Debug, PartialEq)]
    pub enum NoteEvent {
        Saved { id: u64 } = "note:saved",
    }
    topics(&self) { vec![notes_topic()] }
}

/// The topic every note event is published on.
pub fn notes_topic() -> Topic {
    Topic::new("notes").expect("valid topic")
}

/// Saves a note (here: nothing to store) and publishes `note:saved`.
#[server(endpoint = "save_note")]
pub async fn save_note(id: u64) -> Result<(), ServerFnError> {
    leptos_sse_notify::publish(&NoteEvent::Saved { id }).await.map_err(ServerFnError::new)
}

#[component]
pub fn App() -> impl IntoView {
    let live = use_sse::<NoteEvent>(notes_topic());
    view! {
        <h1>"Adopter"</h1>
        <p id="status">{move || live.status.get().label()}</p>
    }
}

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    leptos::mount::hydrate_body(App);
}
