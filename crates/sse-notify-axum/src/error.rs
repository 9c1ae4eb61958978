//! The one error type of the HTTP surface: every 4xx/5xx is `{"error": code, "message": text}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sse_notify_core::PublishError;

/// An error answer: a status, a stable machine-readable code and a human message.
///
/// Messages are for the client: a 500 never carries internal error text (use
/// [`ApiError::internal`], which logs the cause and answers a generic message).
///
/// ```
/// use axum::response::IntoResponse;
/// use sse_notify_axum::ApiError;
///
/// let resp = ApiError::bad_request("missing_topic", "give at least one ?topic=").into_response();
/// assert_eq!(resp.status(), 400);
/// let hidden = ApiError::internal("redis: connection refused (os error 111)");
/// assert_eq!((hidden.code, hidden.message.as_str()), ("internal", "internal server error"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code clients can match on (`missing_topic`, `forbidden`, ...).
    pub code: &'static str,
    /// What went wrong, for a human.
    pub message: String,
}

impl ApiError {
    /// Any status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 503 with `code`.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
    /// 500 `internal`: logs `cause` and answers a generic message, so no internal detail
    /// (backend errors, paths, queries) reaches the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error")
    }
}

impl ApiError {
    /// The JSON body every refusal carries.
    pub(crate) fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.code, "message": self.message })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// A refused publish keeps its kind: 413 `event_too_large`, 503 `broker_unavailable`, and 500
/// for what only a bug causes (an invalid event, no publisher).
impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.code(), e.to_string()),
            PublishError::Unavailable => ApiError::unavailable(e.code(), e.to_string()),
            PublishError::Invalid { .. } | PublishError::NotConfigured => ApiError::internal(e),
        }
    }
}

/// A fallback for unknown paths: a JSON 404 like every other error.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// A fallback for a known path asked with a method it does not take
/// (`Router::method_not_allowed_fallback`): a JSON 405 like every other error (axum's own has an
/// empty body).
///
/// ```
/// use axum::{routing::get, Router};
/// let app: Router = Router::new()
///     .route("/api/tasks", get(|| async { "[]" }))
///     .method_not_allowed_fallback(sse_notify_axum::error::method_not_allowed);
/// ```
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
