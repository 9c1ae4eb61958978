//! Typed events: what an event is called on the wire, where it is published, what it carries.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::topic::Topic;

/// Why a received `(name, data)` pair did not decode into an event type.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The event name is not one of the type's [`SseEvent::NAMES`].
    #[error("unknown event name {0:?}")]
    UnknownEvent(String),
    /// The data is not the payload this event carries.
    #[error("bad payload for {event:?}: {source}")]
    BadPayload {
        /// The event name.
        event: String,
        /// What the JSON decoder said.
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
/// `(name, data)` and [`SseEvent::decode`] turns it into the typed value again. Declare types
/// with [`sse_event!`](crate::sse_event) to write each wire name once; implement the trait by
/// hand for payloads that are not simply the fields.
///
/// ```
/// use sse_notify_core::{DecodeError, SseEvent, Topic};
///
/// /// A bare counter as the payload: `data: 5`.
/// #[derive(Debug, PartialEq)]
/// struct Visitors(u64);
///
/// impl SseEvent for Visitors {
///     const NAMES: &'static [&'static str] = &["visitors"];
///     fn name(&self) -> &'static str { "visitors" }
///     fn topics(&self) -> Vec<Topic> { vec![Topic::new("stats").unwrap()] }
///     fn payload(&self) -> serde_json::Value { self.0.into() }
///     fn decode(name: &str, data: &str) -> Result<Self, DecodeError> {
///         match name {
///             "visitors" => serde_json::from_str(data).map(Visitors).map_err(|e| DecodeError::payload(name, e)),
///             other => Err(DecodeError::UnknownEvent(other.to_owned())),
///         }
///     }
/// }
///
/// assert_eq!(Visitors::decode("visitors", "5").unwrap(), Visitors(5));
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

/// A payload as a JSON object of named fields: what [`sse_event!`](crate::sse_event) builds
/// and reads. Public only for the macro's expansion.
#[doc(hidden)]
#[derive(Default)]
pub struct PayloadFields {
    event: String,
    map: Map<String, Value>,
}

#[doc(hidden)]
impl PayloadFields {
    /// Adds field `name`.
    pub fn put(&mut self, name: &str, value: &impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or_else(|e| panic!("event field `{name}` must serialize: {e}"));
        self.map.insert(name.to_owned(), value);
    }

    /// The finished payload.
    pub fn into_value(self) -> Value {
        Value::Object(self.map)
    }

    /// Reads the payload of event `event`, which must be a JSON object.
    pub fn parse(event: &str, data: &str) -> Result<Self, DecodeError> {
        match serde_json::from_str(data).map_err(|e| DecodeError::payload(event, e))? {
            Value::Object(map) => Ok(Self { event: event.to_owned(), map }),
            _ => Err(DecodeError::payload(event, serde::de::Error::custom("expected a JSON object"))),
        }
    }

    /// Takes field `name`; a missing field reads as `null` (fine for an `Option`, an error otherwise).
    pub fn take<T: DeserializeOwned>(&mut self, name: &str) -> Result<T, DecodeError> {
        let value = self.map.remove(name).unwrap_or(Value::Null);
        serde_json::from_value(value)
            .map_err(|e| DecodeError::payload(&self.event, serde::de::Error::custom(format!("field `{name}`: {e}"))))
    }
}
