//! The notes, client-side rendered: the list from the API, kept live item by item, and a form
//! that writes. The API is this page's origin, or the one `?api=http://host:port` names.
use leptos::prelude::*;
use leptos_sse_notify::{
    is_transient, provide_sse_options, send_write, sse_event, use_live_list, FetchError, ListChange, Topic, UseSseOptions,
    WriteOptions,
};
use serde::Deserialize;

sse_event! {
    #[derive(Clone, Debug)]
    pub enum NoteEvent { Saved { id: u64 } = "note:saved" }
    topics(&self) { vec![Topic::new("notes").unwrap()] }
}

#[derive(Clone, Deserialize)]
struct Note {
    id: u64,
    text: String,
}

#[component]
fn App() -> impl IntoView {
    let search = window().location().search().unwrap_or_default();
    let api = search.trim_start_matches('?').split('&').find_map(|p| p.strip_prefix("api=")).unwrap_or_default();
    let api = api.trim_end_matches('/').to_owned();
    // One place says where the events are; every hook below follows it.
    provide_sse_options(UseSseOptions::default().events_path(format!("{api}/events")));
    view! { <Notes api /> }
}

#[component]
fn Notes(api: String) -> impl IntoView {
    let item_url = {
        let api = api.clone();
        move |NoteEvent::Saved { id }: &NoteEvent| Some((*id, format!("{api}/api/notes/{id}")))
    };
    let notes = use_live_list::<NoteEvent, Note, u64>(Topic::new("notes").unwrap(), format!("{api}/api/notes"), item_url, |n| n.id);
    // A write: its note shows here at once (under id 0 until the answer names it), stays until
    // the list holds it, goes (with the error) if the write fails, and is sent again with the
    // same idempotency key while the network fails it. Other pages fetch it on its event.
    let save = notes.write(
        |text: &String| Some(ListChange::Put(Note { id: 0, text: text.clone() })),
        |saved: &Note| Some(ListChange::Put(saved.clone())),
        move |text: String| {
            let (url, body) = (format!("{api}/api/notes"), serde_json::json!({ "text": text }));
            async move {
                let answer = send_write("POST", &url, Some(&body)).await?;
                serde_json::from_str::<Note>(&answer).map_err(|e| FetchError::Decode(e.to_string()))
            }
        },
        WriteOptions::default().retry_when(is_transient),
    );
    let text = RwSignal::new(String::new());
    view! {
        <h1>"Notes"</h1>
        <p data-testid="status" data-status=move || notes.sse.status.get().label()>{move || notes.sse.status.get().label()}</p>
        // Why it is not live, when it is not: a refused stream, an unreachable server.
        <p data-testid="stream-error">{move || notes.sse.error.get().map(|e| e.to_string())}</p>
        <form on:submit=move |ev| {
            ev.prevent_default();
            save.dispatch(text.get_untracked());
            text.set(String::new());
        }>
            <input data-testid="new-note" bind:value=text />
            <button data-testid="save" type="submit">"Save"</button>
        </form>
        <p data-testid="save-error">{move || save.error().get().map(|e| e.to_string())}</p>
        <ul>
            {move || notes.shown().get().map(|list| match list {
                Ok(list) => list.into_iter().map(|n| view! { <li data-testid="note" data-text=n.text.clone()>{n.text.clone()}</li> }).collect_view().into_any(),
                Err(e) => view! { <li data-testid="fetch-error">{e.to_string()}</li> }.into_any(),
            })}
        </ul>
    }
}

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}
