//! The publishing handle that application code sees.
//!
//! App code (Leptos server functions, built for the server and the browser alike) must publish
//! without depending on the server crate. `sse-notify-axum` implements [`Publish`] for its
//! broker and the app hands a [`Publisher`] to its server functions through Leptos context;
//! they only ask for "something that publishes".

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::event::SseEvent;
use crate::topic::Topic;
use crate::write::WritePosition;

/// Why a publish did not happen. The event was not accepted: nothing was delivered.
///
/// Serializable, so a server function's error type can carry it to the browser with its kind.
/// The texts say what went wrong without backend details (those are logged where they happen).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PublishError {
    /// The event cannot be sent as an SSE frame (e.g. a line break in its name).
    #[error("invalid event: {reason}")]
    Invalid {
        /// What is wrong with it.
        reason: String,
    },
    /// The encoded event is larger than `SSE_MAX_MESSAGE_SIZE`.
    #[error("event is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Its encoded size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The broker's backend (Redis) did not accept it.
    #[error("the event broker is unavailable")]
    Unavailable,
    /// No [`Publisher`] was provided to this code (e.g. missing from Leptos context).
    #[error("no publisher is configured here")]
    NotConfigured,
}

impl PublishError {
    /// A stable machine-readable code, the same one the HTTP error bodies use:
    /// `invalid_event`, `event_too_large`, `broker_unavailable`, `publisher_missing`.
    pub fn code(&self) -> &'static str {
        match self {
            PublishError::Invalid { .. } => "invalid_event",
            PublishError::TooLarge { .. } => "event_too_large",
            PublishError::Unavailable => "broker_unavailable",
            PublishError::NotConfigured => "publisher_missing",
        }
    }
}

/// The boxed future [`Publish`] returns; boxed so the trait stays object-safe.
pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<WritePosition, PublishError>> + Send + 'a>>;

/// Something that publishes an event (name + JSON data) on a set of topics.
pub trait Publish: Send + Sync + 'static {
    /// Publishes `data` as event `event` on each of `topics`, and says where it is in the log.
    fn publish_json<'a>(
        &'a self,
        topics: &'a [Topic],
        event: &'a str,
        data: &'a serde_json::Value,
    ) -> PublishFuture<'a>;
}

/// A cheap, clonable handle around any [`Publish`] implementation.
#[derive(Clone)]
pub struct Publisher(Arc<dyn Publish>);

impl Publisher {
    /// Wraps a [`Publish`] implementation (the server crate's broker).
    pub fn new(inner: impl Publish) -> Self {
        Self(Arc::new(inner))
    }

    /// Publishes a typed event on all of its topics, and says where it is in the log (the
    /// position a write answers with, [`crate::write`]).
    pub async fn publish<E: SseEvent>(&self, event: &E) -> Result<WritePosition, PublishError> {
        let topics = event.topics();
        let data = event.payload();
        self.0.publish_json(&topics, event.name(), &data).await
    }

    /// Publishes an untyped event.
    pub async fn publish_json(
        &self,
        topics: &[Topic],
        event: &str,
        data: &serde_json::Value,
    ) -> Result<WritePosition, PublishError> {
        self.0.publish_json(topics, event, data).await
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publisher")
    }
}
