//! The part of sse-notify that both the server and the browser need: real-time "notify, then
//! fetch" updates over Server-Sent Events.
//!
//! - [`topic`]: validated [`Topic`] names and the [`TopicBuilder`] conventions.
//! - [`event`]: the [`SseEvent`] trait that gives an event type its wire name, topics and
//!   payload, and the [`sse_event!`] macro that implements it with each wire name written once.
//! - [`cursor`]: the frame ids from which a stream resumes exactly.
//! - [`wire`]: the SSE frame encoder and an incremental parser (the wire contract).
//! - [`origin`]: which tab wrote a change, so it does not refetch its own echo.
//! - [`presence`]: who else follows a topic, and the `presence:*` frames that keep it live.
//! - [`publish`]: the object-safe [`Publish`] handle that app code publishes through without
//!   depending on the server crate.
//!
//! This crate has no async runtime and builds for `wasm32-unknown-unknown` as well as native.
//! The server side is `sse-notify-axum`, the browser side `leptos-sse-notify`.
//!
//! ```
//! use sse_notify_core::{sse_event, SseEvent, Topic, TopicBuilder};
//!
//! sse_event! {
//!     /// What happened to a note.
//!     #[derive(Clone, Debug, PartialEq)]
//!     pub enum NoteEvent {
//!         Saved { id: u64 } = "note:saved",
//!         Deleted { id: u64 } = "note:deleted",
//!     }
//!     topics(&self) {
//!         let (NoteEvent::Saved { id } | NoteEvent::Deleted { id }) = self;
//!         vec![Topic::new("notes").unwrap(), TopicBuilder::custom("note", id).unwrap()]
//!     }
//! }
//!
//! let e = NoteEvent::Saved { id: 7 };
//! assert_eq!(e.name(), "note:saved");
//! assert_eq!(e.payload().to_string(), r#"{"id":7}"#);
//! assert_eq!(NoteEvent::decode("note:saved", r#"{"id":7}"#).unwrap(), e);
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod cursor;
pub mod event;
mod macros;
pub mod origin;
pub mod presence;
pub mod publish;
pub mod topic;
pub mod wire;
pub mod write;

pub use event::{DecodeError, SseEvent};
pub use publish::{Publish, PublishError, Publisher};
pub use topic::{NumericId, Topic, TopicBuilder, TopicError};

/// Where the stream endpoint is mounted unless the app says otherwise (`GET /events`).
pub const DEFAULT_EVENTS_PATH: &str = "/events";

/// Seconds between heartbeats unless configured otherwise (`SSE_HEARTBEAT_SECONDS`).
pub const DEFAULT_HEARTBEAT_SECONDS: u64 = 30;

/// Most topics one stream may follow.
pub const MAX_TOPICS_PER_CONNECTION: usize = 64;

/// What [`sse_event!`] expands to needs; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use serde_json;
}

// The crate's README, whose examples are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
