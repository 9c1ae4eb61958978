//! The Leptos side of sse-notify: live, typed Server-Sent Events notifications as signals.
//!
//! The idiom is "notify, then fetch": an event says *what* changed (`task:created {"id":7}`),
//! your server functions or REST routes stay the source of truth, and a `Resource` keyed on
//! [`SseSignal::version`] refetches when something of its topic changes.
//!
//! - [`use_sse`] / [`use_sse_with_options`]: subscribe a component to a topic (reactive), get
//!   the latest typed event, a version to key Resources on, the stream status and errors.
//! - [`use_live_json`]: the REST side of the idiom: GET JSON from a URL (with gloo-net) and get
//!   it again on every matched notification.
//! - [`use_sse_with_handler`]: every event of a topic, in order (an inbox), beside the signals.
//! - [`provide_sse_options`]: the app's options, once (where the events are, credentials,
//!   a bearer token), under every hook's own.
//! - [`use_live_list`]: a REST list kept live item by item: an event naming an item refetches
//!   that item and patches the list, instead of the whole list.
//! - `publish` (feature `ssr`): publish a typed event from a `#[server]` function.
//! - [`use_presence`]: who else is on a topic, live (and in the server-rendered page);
//!   [`use_presence_count`]: how many, also in rooms too large to list.
//! - [`OriginClient`]: server functions that say which tab called them, so the events they
//!   publish do not make that tab refetch its own change.
//!
//! Every `use_sse` call of every tab of the browser that uses the same events path shares ONE
//! `EventSource` whose URL carries the union of all their topics (`/events?topic=a,b`): it is
//! reopened when that set changes and closed when no component needs it. One tab holds it (a
//! leader elected with Web Locks) and sends its frames to the others over a `BroadcastChannel`,
//! so six tabs do not take the six HTTP/1.1 connections a browser allows an origin; when that
//! tab closes another takes over from the last cursor. Browsers without those APIs keep a stream
//! per tab.
//!
//! Features: `ssr` (server rendering; the stream is opened by the browser after hydration),
//! `hydrate` and `csr` (the browser side, for hydrated and client-side-rendered apps).
//!
//! ```no_run
//! use leptos::prelude::*;
//! use leptos_sse_notify::{sse_event, use_sse, Topic};
//!
//! sse_event! {
//!     #[derive(Clone, Debug)]
//!     pub enum NoteEvent { Saved { id: u64 } = "note:saved" }
//!     topics(&self) { vec![Topic::new("notes").unwrap()] }
//! }
//!
//! #[server]
//! async fn count_notes() -> Result<usize, ServerFnError> {
//!     Ok(0) // read your database here
//! }
//!
//! #[component]
//! fn Notes() -> impl IntoView {
//!     let live = use_sse::<NoteEvent>(Topic::new("notes").unwrap());
//!     let count = Resource::new(move || live.version.get(), |_| count_notes());
//!     view! {
//!         <span>{move || live.status.get().label()}</span>
//!         <Transition>{move || count.get().map(|n| n.unwrap_or(0))}</Transition>
//!     }
//! }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

// Used by the browser code; built everywhere so its property tests run natively.
#[cfg_attr(not(feature = "browser"), allow(dead_code))]
mod decode;
mod fetch;
#[cfg(feature = "browser")]
mod hub;
mod live_json;
mod live_list;
mod origin;
mod presence;
#[cfg(feature = "ssr")]
mod publish;
mod recover;
mod status;
#[cfg(feature = "browser")]
mod tabs;
mod use_sse;
mod write;

pub use fetch::FetchError;
pub use live_json::{use_live_json, use_live_json_with_options, LiveJson};
pub use live_list::{use_live_list, use_live_list_with_options, ListChange, LiveList};
pub use origin::{origin_header, tab_origin, OriginClient, ORIGIN_HEADER};
#[cfg(feature = "ssr")]
pub use presence::PresenceSnapshot;
pub use presence::{use_presence, use_presence_count, use_presence_count_with_options, use_presence_with_options};
#[cfg(feature = "ssr")]
pub use publish::publish;
pub use recover::{is_transient, refetch_with_retry};
/// The core crate (wire format, cursors), re-exported so that versions always match.
pub use sse_notify_core as core;
pub use sse_notify_core::presence::{Member, Roster};
/// What a component needs from the core crate, so that the app's shared code depends on this
/// crate alone: declare events with [`sse_event!`], name topics with [`Topic`] or
/// [`TopicBuilder`].
pub use sse_notify_core::{sse_event, DecodeError, SseEvent, Topic, TopicBuilder, DEFAULT_EVENTS_PATH};
pub use status::{ConnectionStatus, SseError};
pub use use_sse::{provide_sse_options, use_sse, use_sse_with_handler, use_sse_with_options, SseSignal, UseSseOptions};
pub use write::{send_write, use_write, Floor, LiveWrite, OwnChanges, WriteOptions, WritePosition};

// The crate's README, whose examples are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
