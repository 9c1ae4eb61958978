//! Typed events: what an event is called on the wire, where it is published, what it carries.

use crate::topic::Topic;

/// Why a received `(name, data)` pair did not decode into an event type.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event name {0:?}")]
    UnknownEvent(String),
    #[error("bad payload for {event:?}: {source}")]
    BadPayload {
        event: String,
        #[source]
        source: serde_json::Error,
    },
}

impl DecodeError {
    /// Wraps a JSON error for event `event`.
    pub fn payload(event: &str, source: serde_json::Error) -> Self {
        Self::BadPayload { event: event.to_owned(), source }
    }
}

/// An event type with a fixed set of wire names, e.g. an enum whose variants are `task:created`,
/// `task:updated`, `task:deleted`.
///
/// The server publishes `payload()` on every topic in `topics()`; the browser gets back
/// `(name, data)` and [`SseEvent::decode`] turns it into the typed value again.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use shared::{DecodeError, SseEvent, Topic, TopicBuilder};
///
/// #[derive(Clone, Debug, PartialEq)]
/// enum NoteEvent { Saved { id: u64 } }
///
/// #[derive(Serialize, Deserialize)]
/// struct Id { id: u64 }
///
/// impl SseEvent for NoteEvent {
///     const NAMES: &'static [&'static str] = &["note:saved"];
///     fn name(&self) -> &'static str { "note:saved" }
///     fn topics(&self) -> Vec<Topic> {
///         let NoteEvent::Saved { id } = self;
///         vec![Topic::new("notes").unwrap(), TopicBuilder::custom("note", id).unwrap()]
///     }
///     fn payload(&self) -> serde_json::Value {
///         let NoteEvent::Saved { id } = self;
///         serde_json::json!({ "id": id })
///     }
///     fn decode(name: &str, data: &str) -> Result<Self, DecodeError> {
///         match name {
///             "note:saved" => serde_json::from_str::<Id>(data)
///                 .map(|p| NoteEvent::Saved { id: p.id })
///                 .map_err(|e| DecodeError::payload(name, e)),
///             other => Err(DecodeError::UnknownEvent(other.to_owned())),
///         }
///     }
/// }
///
/// let e = NoteEvent::Saved { id: 3 };
/// let back = NoteEvent::decode(e.name(), &e.payload().to_string()).unwrap();
/// assert_eq!(back, e);
/// ```
pub trait SseEvent: Sized + 'static {
    /// Every wire name this type can decode; the browser listens for exactly these.
    const NAMES: &'static [&'static str];

    /// The wire name of this value (`event:` line).
    fn name(&self) -> &'static str;

    /// The topics this value is published on.
    fn topics(&self) -> Vec<Topic>;

    /// The JSON payload (`data:` line), exactly what clients `JSON.parse`.
    fn payload(&self) -> serde_json::Value;

    /// Rebuilds a value from a received frame.
    fn decode(name: &str, data: &str) -> Result<Self, DecodeError>;
}
