//! The limits a broker enforces, declared once: `sse-notify-axum`'s configuration reads them
//! from the environment into this.

use std::time::Duration;

use sse_notify_core::{Topic, MAX_TOPICS_PER_CONNECTION};

use crate::error::BrokerError;
use crate::log::Retention;

/// The limits the broker enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerLimits {
    /// `TOPIC_PREFIX`: keeps this app's events apart from other apps on the same Redis.
    pub topic_prefix: String,
    /// `SSE_MAX_QUEUE_SIZE`: how far a stream may fall behind before it is cut off.
    pub max_queue_size: usize,
    /// `SSE_MAX_MESSAGE_SIZE`: the largest encoded event, in bytes.
    pub max_message_size: usize,
    /// `SSE_HISTORY_SIZE`: events of the prefix kept for replay.
    pub history_size: usize,
    /// `SSE_HISTORY_SECONDS`: how long an event is kept for replay.
    pub history_age: Duration,
    /// `SSE_OUTBOX_SIZE`: events `Broker::publish_or_defer` keeps while the backend is away.
    pub outbox_size: usize,
    /// `SSE_PRESENCE_TTL_SECONDS`: with Redis, how long the members of an instance that stopped
    /// answering stay (the others sweep them out within a third more).
    pub presence_ttl: Duration,
    /// `SSE_PRESENCE_MAX_LISTED`: a topic with more members than this is counted, not listed
    /// (streams get `presence:count` at most once a second instead of its state, joins and leaves).
    pub presence_max_listed: usize,
}

impl Default for BrokerLimits {
    /// No prefix, 256 queued events per stream, 64 KiB events, the last 10,000 events and 24 h
    /// kept for replay, 10,000 events in the outbox, members of a silent instance kept 15 s,
    /// rooms of more than 100 members counted.
    fn default() -> Self {
        Self {
            topic_prefix: String::new(),
            max_queue_size: 256,
            max_message_size: 64 * 1024,
            history_size: 10_000,
            history_age: Duration::from_secs(24 * 3600),
            outbox_size: 10_000,
            presence_ttl: Duration::from_secs(15),
            presence_max_listed: 100,
        }
    }
}

impl BrokerLimits {
    /// The namespace of the prefix's Redis keys and channels (the log's, idempotency keys'): the
    /// prefix, or `sse` when it is empty.
    pub fn namespace(&self) -> &str {
        if self.topic_prefix.is_empty() {
            "sse"
        } else {
            &self.topic_prefix
        }
    }

    pub(crate) fn retention(&self) -> Retention {
        Retention { max_events: self.history_size.max(1), max_age_ms: self.history_age.as_millis() as u64 }
    }
}

/// Each topic once, in first-seen order.
///
/// ```
/// use sse_notify_broker::distinct_topics;
/// use sse_notify_core::Topic;
/// let [a, b] = ["a", "b"].map(|t| Topic::new(t).unwrap());
/// assert_eq!(distinct_topics([a.clone(), b.clone(), a.clone()]), [a, b]);
/// ```
pub fn distinct_topics(topics: impl IntoIterator<Item = Topic>) -> Vec<Topic> {
    let mut seen = std::collections::HashSet::new();
    topics.into_iter().filter(|t| seen.insert(t.clone())).collect()
}

/// The topics one stream or watch follows: each once, at most 64 (bit `i` of every frame's mask
/// is the `i`-th of them).
pub(crate) fn checked_topics(topics: &[Topic]) -> Result<Vec<Topic>, BrokerError> {
    let mut topics = distinct_topics(topics.iter().cloned());
    if topics.len() > MAX_TOPICS_PER_CONNECTION {
        return Err(BrokerError::TooManyTopics { asked: topics.len() });
    }
    // Kept for the stream's whole life: without the room `collect` left (4 topics' worth for
    // one), ~70 B less per idle stream.
    topics.shrink_to_fit();
    Ok(topics)
}
