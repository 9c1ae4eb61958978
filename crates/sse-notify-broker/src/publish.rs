//! The publish path: an event checked, encoded once, appended to the log, and counted.

use sse_notify_core::cursor::Cursor;
use sse_notify_core::{PublishError, Topic};

use crate::backend::AppendError;
use crate::parts::Parts;

/// How a published event reached the log, and where it is (a cursor whose `matched` is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Appended {
    /// In the log, with as many replicas as asked for (or none asked for).
    Confirmed(Cursor),
    /// In the log and sent to the streams, but fewer replicas than `SSE_REDIS_MIN_REPLICAS`
    /// confirmed it in time.
    Unconfirmed(Cursor),
}

/// Publishes on behalf of the tab `origin` (one [`valid_origin`] let through), and says
/// whether the replicas asked for confirmed the event.
pub(crate) async fn publish(
    parts: &Parts,
    origin: Option<Box<str>>,
    topics: &[Topic],
    event: &str,
    data: &serde_json::Value,
) -> Result<Appended, PublishError> {
    let started = std::time::Instant::now();
    let result = append(parts, topics, event, data, origin).await;
    let m = &parts.metrics;
    match &result {
        Ok(appended) => {
            m.events_published.inc();
            m.publish_seconds.observe(started.elapsed().as_secs_f64());
            if matches!(appended, Appended::Unconfirmed(_)) {
                m.events_unconfirmed.inc();
            }
        }
        Err(PublishError::Invalid { .. } | PublishError::NotConfigured) => m.publish_failed("invalid"),
        Err(PublishError::TooLarge { .. }) => m.publish_failed("too_large"),
        Err(PublishError::Unavailable) => m.publish_failed("unavailable"),
    }
    result
}

async fn append(
    parts: &Parts,
    topics: &[Topic],
    event: &str,
    data: &serde_json::Value,
    origin: Option<Box<str>>,
) -> Result<Appended, PublishError> {
    if topics.is_empty() {
        return Err(PublishError::Invalid { reason: "an event needs at least one topic".into() });
    }
    let data = serde_json::to_string(data).map_err(|e| PublishError::Invalid { reason: e.to_string() })?;
    // Encoded once here; each stream puts its `id:` line in front.
    let body = sse_notify_core::wire::encode_event(None, event, &data)
        .map_err(|e| PublishError::Invalid { reason: e.to_string() })?;
    let limit = parts.limits.max_message_size;
    if body.len() > limit {
        tracing::warn!(event, size = body.len(), limit, "event refused: larger than SSE_MAX_MESSAGE_SIZE");
        return Err(PublishError::TooLarge { size: body.len(), limit });
    }
    let mut names: Vec<String> = Vec::with_capacity(topics.len());
    for t in topics {
        if !names.iter().any(|n| n == t.as_str()) {
            names.push(t.to_string());
        }
    }
    match parts.backend.append(names, body, origin).await {
        Ok(at) => Ok(Appended::Confirmed(at)),
        Err(e @ AppendError::Unconfirmed { at, .. }) => {
            tracing::warn!(event, error = %e, "published, but not confirmed by the replicas asked for");
            Ok(Appended::Unconfirmed(at))
        }
        Err(AppendError::Unavailable(e)) => {
            tracing::warn!(event, error = %e, "publish to the backend failed");
            Err(PublishError::Unavailable)
        }
    }
}

/// `origin` when it is one ([`sse_notify_core::origin::is_origin`]).
pub(crate) fn valid_origin(origin: Option<&str>) -> Option<Box<str>> {
    origin.filter(|o| sse_notify_core::origin::is_origin(o)).map(Into::into)
}
