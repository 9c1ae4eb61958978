//! GETs of the app's own REST side (the refetches of the hooks): the body, or why there is
//! none, in the terms of the JSON error body every route of the server answers with.

/// The app's own headers for the stream's requests, asked for before each one
/// (`UseSseOptions::headers`). Equal only to itself: two options with the same headers function
/// share a stream.
#[derive(Clone)]
pub(crate) struct RequestHeaders(pub(crate) std::sync::Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>);

impl PartialEq for RequestHeaders {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for RequestHeaders {}

impl std::fmt::Debug for RequestHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values: a header may be a token.
        f.write_str("RequestHeaders(..)")
    }
}

/// How a data fetch is sent: with the page's cookies to another origin, with the app's headers.
#[derive(Clone, Debug, Default)]
#[cfg_attr(not(feature = "browser"), allow(dead_code))]
pub(crate) struct FetchOptions {
    pub(crate) with_credentials: bool,
    pub(crate) headers: Option<RequestHeaders>,
}

/// Why [`use_live_json`](crate::use_live_json) has no value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The server answered with an error status; `code` and `message` come from a JSON error
    /// body (`{"error": .., "message": ..}`) when it had one.
    #[error("{status} {code}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The `error` code of the JSON body (empty if none).
        code: String,
        /// The `message` of the JSON body, or the status text.
        message: String,
    },
    /// The request did not complete (network down, CORS refused).
    #[error("request failed: {0}")]
    Network(String),
    /// The answer was not the JSON that was expected.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// The body of a GET of `url` (an error status as its JSON error), sent with `cursor` as
/// `Last-Event-ID`, and as `how` says.
#[cfg(feature = "browser")]
pub(crate) async fn get_text(url: String, cursor: Option<String>, how: FetchOptions) -> Result<String, FetchError> {
    let mut req = gloo_net::http::Request::get(&url).header("accept", "application/json");
    if let Some(cursor) = &cursor {
        req = req.header("last-event-id", cursor);
    }
    for (name, value) in how.headers.as_ref().map(|h| (h.0)()).unwrap_or_default() {
        req = req.header(&name, &value);
    }
    if how.with_credentials {
        req = req.credentials(web_sys::RequestCredentials::Include);
    }
    let resp = req.send().await.map_err(|e| FetchError::Network(e.to_string()))?;
    if !resp.ok() {
        let status = resp.status();
        let (code, message) = error_body(&resp).await;
        return Err(FetchError::Status { status, code, message: message.unwrap_or_else(|| resp.status_text()) });
    }
    resp.text().await.map_err(|e| FetchError::Network(e.to_string()))
}

/// Sends a write (`method` to `url`, with a JSON `body`) with the origin and idempotency key of
/// the write being made, if any ([`crate::write`]), as `how` says; notes the answer's position.
#[cfg(feature = "browser")]
pub(crate) async fn send_write(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
    how: FetchOptions,
) -> Result<String, FetchError> {
    let method = method.parse::<gloo_net::http::Method>().map_err(|e| FetchError::Network(e.to_string()))?;
    let mut req = gloo_net::http::RequestBuilder::new(url).method(method).header("accept", "application/json");
    match crate::write::current_headers() {
        Some((origin, key)) => {
            req = req.header(crate::ORIGIN_HEADER, &origin).header(crate::write::IDEMPOTENCY_KEY_HEADER, &key);
        }
        None => {
            if let Some((name, value)) = crate::origin_header() {
                req = req.header(name, value);
            }
        }
    }
    for (name, value) in how.headers.as_ref().map(|h| (h.0)()).unwrap_or_default() {
        req = req.header(&name, &value);
    }
    if how.with_credentials {
        req = req.credentials(web_sys::RequestCredentials::Include);
    }
    let sent = match body {
        Some(body) => req.json(body).map_err(|e| FetchError::Decode(e.to_string()))?.send().await,
        None => req.build().map_err(|e| FetchError::Network(e.to_string()))?.send().await,
    };
    let resp = sent.map_err(|e| FetchError::Network(e.to_string()))?;
    if !resp.ok() {
        let status = resp.status();
        let (code, message) = error_body(&resp).await;
        return Err(FetchError::Status { status, code, message: message.unwrap_or_else(|| resp.status_text()) });
    }
    crate::write::current_answered(resp.headers().get(crate::write::POSITION_HEADER).as_deref());
    resp.text().await.map_err(|e| FetchError::Network(e.to_string()))
}

/// The `error` code and `message` of a JSON error body (`{"error": .., "message": ..}`);
/// an empty code and no message when the body is something else.
#[cfg(feature = "browser")]
pub(crate) async fn error_body(resp: &gloo_net::http::Response) -> (String, Option<String>) {
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let text = |field: &str| body.get(field).and_then(|v| v.as_str()).map(str::to_owned);
    (text("error").unwrap_or_default(), text("message"))
}

/// Outside the browser a `LocalResource` never runs its fetcher; this only has to compile.
#[cfg(not(feature = "browser"))]
pub(crate) async fn get_text(url: String, cursor: Option<String>, how: FetchOptions) -> Result<String, FetchError> {
    let _ = (url, cursor, how);
    std::future::pending().await
}
