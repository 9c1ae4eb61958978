//! The shared stream's state and its errors, as components see them.

/// The state of the tab's shared stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// What went wrong with a subscription, for the UI to show (never silently dropped).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum SseError {
    /// A frame of one of this type's event names did not decode (client and server disagree
    /// on the payload).
    #[error("event {event:?} did not decode: {message}")]
    Decode {
        /// The event name.
        event: String,
        /// What the decoder said.
        message: String,
    },
    /// The server refused the stream with an HTTP error, e.g. 403 `forbidden` naming a topic or
    /// 503 `too_many_connections`. `use_sse` retries every few seconds.
    #[error("the stream was refused with {status} {code}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The JSON body's `error` code (empty when the body was not the JSON error body).
        code: String,
        /// The JSON body's `message`.
        message: String,
    },
    /// The server could not be reached at all.
    #[error("the server is unreachable: {0}")]
    Unreachable(String),
    /// Streams opened but nothing came through them: something on the way holds the response
    /// back until it ends (a proxy that buffers). The tab polls instead, which gets through.
    #[error("the stream is held back on the way (a proxy that buffers responses?); polling instead")]
    HeldBack,
}
