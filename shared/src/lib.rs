//! The parts of leptos-sse that both the server and the browser need.
//!
//! - [`topic`]: validated [`Topic`] names and the [`TopicBuilder`] conventions.
//! - [`event`]: the [`SseEvent`] trait that gives an event type its wire name, topics and payload.
//! - [`wire`]: the SSE frame encoder and an incremental parser (the wire contract).
//! - [`publish`]: the object-safe [`Publish`] handle that app code uses to publish without
//!   depending on the server crate.
//! - [`tasks`]: the demo task board's events and DTOs (app code, not the integration).
//!
//! This crate has no async runtime and builds for `wasm32-unknown-unknown` as well as native.

pub mod crm;
pub mod event;
pub mod publish;
pub mod tasks;
pub mod topic;
pub mod wire;

pub use event::{DecodeError, SseEvent};
pub use publish::{Publish, PublishError, Publisher};
pub use topic::{Topic, TopicBuilder, TopicError};
