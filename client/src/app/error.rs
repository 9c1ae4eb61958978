//! The app's one error type for server functions: the same `{"error": code, "message": text}`
//! shape and codes as the REST routes' JSON errors, so the UI and REST clients see one model.

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};
use sse_notify_core::PublishError;

/// An error a server function answers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AppError {
    /// A stable code, as in the REST error bodies (`invalid_title`, `not_found`, ...).
    #[serde(rename = "error")]
    pub code: String,
    /// What went wrong, for a human; never internal detail.
    pub message: String,
}

impl AppError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("not_found", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new("forbidden", message)
    }

    pub fn not_signed_in() -> Self {
        Self::new("not_signed_in", "sign in first")
    }

    /// The HTTP status a server function answers this error with: the one its REST twin
    /// answers for the same code (server functions answer 500 for any error otherwise, which
    /// tells a client, a proxy or a retry policy that its own mistake was the server's).
    pub fn status(&self) -> u16 {
        match self.code.as_str() {
            "invalid_arguments" | "request_failed" => 400,
            "body_timeout" => 408,
            "not_signed_in" => 401,
            "forbidden" => 403,
            "not_found" => 404,
            "event_too_large" => 413,
            code if code.starts_with("invalid_") || code == "empty_update" => 422,
            "broker_unavailable" | "store_unavailable" => 503,
            _ => 500,
        }
    }

    /// Whether trying again may succeed: the request did not get through, or the server (or a
    /// proxy in front of it) could not serve it now. What a refetch retries
    /// (`leptos_sse_notify::refetch_with_retry`).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code.as_str(),
            "request_failed" | "body_timeout" | "server_fn" | "store_unavailable" | "broker_unavailable"
        )
    }

    /// Logs `cause` on the server and answers a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        #[cfg(feature = "ssr")]
        tracing::error!(error = %cause, "server function failed");
        #[cfg(not(feature = "ssr"))]
        let _ = cause;
        Self::new("internal", "internal server error")
    }
}

/// A refused publish keeps its kind (`event_too_large`, `broker_unavailable`).
impl From<PublishError> for AppError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::TooLarge { .. } | PublishError::Unavailable => Self::new(e.code(), e.to_string()),
            PublishError::Invalid { .. } | PublishError::NotConfigured => Self::internal(e),
        }
    }
}

#[cfg(feature = "ssr")]
impl From<crate::app::table::StoreError> for AppError {
    fn from(e: crate::app::table::StoreError) -> Self {
        use crate::app::table::StoreError;
        match e {
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "store unavailable");
                Self::new("store_unavailable", "the data store is unavailable")
            }
            StoreError::Corrupt(_) => Self::internal(e),
        }
    }
}

/// Transport and argument errors of the server-function machinery itself; and, where an error
/// becomes the server function's answer, its status ([`AppError::status`]).
impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn ser(&self) -> leptos::server_fn::Bytes {
        // A plain HTML form post (no JavaScript) is sent back to its page, as leptos_axum
        // does: a status here would replace that redirect with a page of JSON.
        #[cfg(feature = "ssr")]
        if let Some(response) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
            let request = leptos::prelude::use_context::<http::request::Parts>();
            let accept = request.as_ref().and_then(|r| r.headers.get(http::header::ACCEPT)?.to_str().ok());
            if !accept.is_some_and(|a| a.contains("text/html")) {
                if let Ok(status) = http::StatusCode::from_u16(self.status()) {
                    response.set_status(status);
                }
            }
        }
        use leptos::server_fn::Encodes;
        JsonEncoding::encode(self).unwrap_or_else(|e| {
            let failed = Self::from_server_fn_error(ServerFnErrorErr::Serialization(e.to_string()));
            JsonEncoding::encode(&failed).expect("an AppError is JSON")
        })
    }

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        // A body that did not arrive in time (`SseApp::body_timeout`) reaches a server function
        // only as the text of its body read's error, which is the deadline's own: the client's
        // slowness, not the server's failure. Matched whole, so no other text can pass for it.
        #[cfg(feature = "ssr")]
        if matches!(&value, ServerFnErrorErr::Deserialization(text) if text == sse_notify_axum::BodyTimeout::MESSAGE) {
            return Self::new("body_timeout", sse_notify_axum::BodyTimeout::MESSAGE);
        }
        let code = match value {
            ServerFnErrorErr::Request(_) => "request_failed",
            ServerFnErrorErr::Args(_) | ServerFnErrorErr::MissingArg(_) => "invalid_arguments",
            _ => "server_fn",
        };
        Self::new(code, value.to_string())
    }
}
