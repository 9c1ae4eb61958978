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

/// Transport and argument errors of the server-function machinery itself.
impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        let code = match value {
            ServerFnErrorErr::Request(_) => "request_failed",
            ServerFnErrorErr::Args(_) | ServerFnErrorErr::MissingArg(_) => "invalid_arguments",
            _ => "server_fn",
        };
        Self::new(code, value.to_string())
    }
}
