//! The adopter's app, as in leptos's start-axum template: `shell` and `App`, plus one typed
//! event, one server function that publishes it, and one component that follows it.

use leptos::prelude::*;
use leptos_sse_notify::{sse_event, use_sse, Topic};

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

/// The page's document, as the template has it.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <HydrationScripts options />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    let live = use_sse::<NoteEvent>(notes_topic());
    view! {
        <h1>"Adopter"</h1>
        <p id="status">{move || live.status.get().label()}</p>
    }
}
