//! `use_sse`: live, typed SSE notifications as Leptos signals.
//!
//! Every `use_sse` call in a browser tab shares ONE `EventSource` whose URL carries the union of
//! all the topics in use (`/events?topic=a,b`). It is reopened when that set changes and closed
//! when no component needs it, so a page with many live widgets stays far below the browser's
//! six-connections-per-host limit.
//!
//! The idiom is "notify, then fetch": key a `Resource` on [`SseSignal::version`], which moves on
//! every event of the topic *and* every time the stream (re)opens, because events sent while
//! the tab was disconnected are not replayed to it.
//!
//! ```no_run
//! use client::sse::use_sse;
//! use leptos::prelude::*;
//! use shared::tasks::{Task, TaskEvent};
//!
//! async fn list_tasks() -> Result<Vec<Task>, ServerFnError> {
//!     Ok(vec![]) // a #[server] function in a real app
//! }
//!
//! #[component]
//! fn Board() -> impl IntoView {
//!     let live = use_sse::<TaskEvent>(TaskEvent::board_topic());
//!     let tasks = Resource::new(move || live.version.get(), |_| list_tasks());
//!     view! {
//!         <span>{move || live.status.get().label()}</span>
//!         <Transition>{move || tasks.get().map(|t| t.map(|t| t.len()).unwrap_or(0))}</Transition>
//!     }
//! }
//! ```

#[cfg(feature = "hydrate")]
mod hub;
#[cfg(feature = "ssr")]
mod server;

#[cfg(feature = "ssr")]
pub use server::publish;

use leptos::prelude::*;
use shared::{SseEvent, Topic};

/// The default stream path (the server's `/events` route).
pub const DEFAULT_EVENTS_PATH: &str = "/events";

/// The state of the tab's shared stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// Opening, or the browser is retrying after a drop.
    Connecting,
    /// The stream is open: events arrive as they are published.
    Live,
    /// The stream failed; the browser (or `use_sse`) is retrying in the background.
    Offline,
}

impl ConnectionStatus {
    /// A short lower-case word for the UI and tests: `connecting`, `live`, `offline`.
    pub fn label(self) -> &'static str {
        match self {
            ConnectionStatus::Connecting => "connecting",
            ConnectionStatus::Live => "live",
            ConnectionStatus::Offline => "offline",
        }
    }
}

/// What [`use_sse`] returns.
pub struct SseSignal<E: Send + Sync + 'static> {
    /// The latest event received on the topic (None until one arrives).
    pub latest: ReadSignal<Option<E>>,
    /// Moves on every event of the topic, every time the stream (re)opens, and when the server
    /// sends `resync` (events may have been missed): key Resources on it.
    pub version: ReadSignal<u64>,
    /// The tab's stream status (shared by all `use_sse` calls).
    pub status: Signal<ConnectionStatus>,
}

impl<E: Send + Sync + 'static> Clone for SseSignal<E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E: Send + Sync + 'static> Copy for SseSignal<E> {}

/// Subscribes the current component to `topic` for events of type `E`.
///
/// The subscription ends when the component's owner is cleaned up. On the server (SSR) it
/// renders as `Connecting` with no event; the browser takes over after hydration.
pub fn use_sse<E>(topic: Topic) -> SseSignal<E>
where
    E: SseEvent + Clone + Send + Sync,
{
    let (latest, set_latest) = signal(None::<E>);
    let (version, set_version) = signal(0u64);

    #[cfg(feature = "hydrate")]
    let status = {
        let topic_for_filter = topic.clone();
        let id = hub::subscribe(hub::Subscriber {
            topic,
            names: E::NAMES,
            on_event: std::rc::Rc::new(move |name: &str, data: &str| {
                // One tab stream carries many topics and the frame does not say which one it came
                // on: a typed event knows its topics, so keep only those that belong to ours.
                let Ok(event) = E::decode(name, data) else {
                    return;
                };
                if !event.topics().contains(&topic_for_filter) {
                    return;
                }
                set_latest.try_set(Some(event));
                set_version.try_update(|v| *v += 1);
            }),
            on_resync: std::rc::Rc::new(move || {
                set_version.try_update(|v| *v += 1);
            }),
        });
        on_cleanup(move || hub::unsubscribe(id));
        let status = hub::status();
        Signal::derive(move || status.get())
    };

    #[cfg(not(feature = "hydrate"))]
    let status = {
        let _ = (topic, set_latest, set_version);
        Signal::stored(ConnectionStatus::Connecting)
    };

    SseSignal { latest, version, status }
}

/// Sets the stream URL path for `use_sse` in this tab (default [`DEFAULT_EVENTS_PATH`]).
/// Call it before the first `use_sse`, e.g. at the top of your `App`.
pub fn set_events_path(path: &str) {
    #[cfg(feature = "hydrate")]
    hub::set_path(path);
    #[cfg(not(feature = "hydrate"))]
    let _ = path;
}
