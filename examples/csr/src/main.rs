//! The board's tasks, client-side rendered: a list fetched from `/api/tasks` once, then kept
//! live item by item: each event names its task, whose `/api/tasks/{id}` is fetched and patched
//! into the list (a deleted one's 404 removes it).

use leptos::prelude::*;
use leptos_sse_notify::{sse_event, use_live_list, Topic};
use serde::Deserialize;

sse_event! {
    /// The demo's task events (their wire names), each naming its task.
    #[derive(Clone, Debug, PartialEq)]
    pub enum TaskEvent {
        Created { id: u64 } = "task:created",
        Updated { id: u64 } = "task:updated",
        Deleted { id: u64 } = "task:deleted",
    }
    topics(&self) { vec![Topic::new("tasks").unwrap()] }
}

#[derive(Clone, Debug, Deserialize)]
struct Task {
    id: u64,
    title: String,
}

#[component]
fn Board() -> impl IntoView {
    let tasks = use_live_list::<TaskEvent, Task, u64>(
        Topic::new("tasks").unwrap(),
        "/api/tasks".to_owned(),
        |e| {
            let (TaskEvent::Created { id } | TaskEvent::Updated { id } | TaskEvent::Deleted { id }) = e;
            Some((*id, format!("/api/tasks/{id}")))
        },
        |t| t.id,
    );
    view! {
        <h1>"Tasks (client-side rendered)"</h1>
        <p data-testid="status" data-status=move || tasks.sse.status.get().label()>{move || tasks.sse.status.get().label()}</p>
        <ul>
            {move || {
                tasks.items.get().map(|r| match r {
                    Ok(list) => list
                        .into_iter()
                        .map(|t| view! { <li data-testid="task" data-title=t.title.clone() data-id=t.id>{t.title.clone()}</li> })
                        .collect_view()
                        .into_any(),
                    Err(e) => view! { <li data-testid="fetch-error">{e.to_string()}</li> }.into_any(),
                })
            }}
        </ul>
    }
}

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(Board);
}
