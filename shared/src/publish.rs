//! The publishing handle that application code sees.
//!
//! App code (Leptos server functions, in the `client` crate under `ssr`) must publish without
//! depending on the server crate, which depends on it. The server crate implements [`Publish`]
//! for its broker and hands it over through Leptos context; the app only asks for
//! "something that publishes".

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::event::SseEvent;
use crate::topic::Topic;

/// Why a publish did not happen. The event was not accepted: nothing was delivered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("invalid event: {0}")]
    Invalid(String),
    #[error("event is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// The boxed future [`Publish`] returns; boxed so the trait stays object-safe.
pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'a>>;

/// Something that publishes an event (name + JSON data) on a set of topics.
pub trait Publish: Send + Sync + 'static {
    /// Publishes `data` as event `event` on each of `topics`.
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
    pub fn new(inner: impl Publish) -> Self {
        Self(Arc::new(inner))
    }

    /// Publishes a typed event on all of its topics.
    pub async fn publish<E: SseEvent>(&self, event: &E) -> Result<(), PublishError> {
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
    ) -> Result<(), PublishError> {
        self.0.publish_json(topics, event, data).await
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publisher")
    }
}
