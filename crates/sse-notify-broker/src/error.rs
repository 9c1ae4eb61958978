//! Why the broker or its backend could not do something, the cause kept.
//!
//! Each message ends with its cause's (start-up prints one line, and a log line is read
//! alone); `std::error::Error::source` hands out the cause itself (a `redis::RedisError`, a
//! JSON error), for a caller that tells kinds of failure apart.

use std::sync::Arc;
use std::time::Duration;

use sse_notify_core::MAX_TOPICS_PER_CONNECTION;

/// Why the broker could not start or subscribe.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// Redis could not be reached at start-up, or refused the broker (a wrong password, an ACL
    /// without what the broker needs, a certificate it does not trust).
    #[error("cannot connect to Redis at {url}: {source}")]
    Connect {
        /// The `REDIS_URL` tried, its password hidden.
        url: String,
        /// What the connection attempt said.
        #[source]
        source: BackendError,
    },
    /// The backend refused a subscription or a read (Redis is away; the endpoint answers 503).
    #[error("broker unavailable: {0}")]
    Unavailable(#[source] BackendError),
    /// More distinct topics than one stream may follow (a frame's cursor has a bit per topic).
    #[error("{asked} topics asked; at most {MAX_TOPICS_PER_CONNECTION} per stream")]
    TooManyTopics {
        /// How many distinct topics were asked for.
        asked: usize,
    },
}

/// Why a backend could not do what the broker asked of it.
///
/// ```
/// use sse_notify_broker::BackendError;
/// let e = BackendError::Stopped;
/// assert_eq!(e.to_string(), "the Redis subscriber task stopped");
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// A Redis command, or making a connection, failed; `during` names which.
    #[cfg(feature = "redis")]
    #[error("{during}: {source}")]
    Redis {
        /// The command or step (`SUBSCRIBE`, `the history script`, `connecting`).
        during: &'static str,
        /// What Redis or the connection said.
        #[source]
        source: redis::RedisError,
    },
    /// The Redis user may not run what the broker needs (its ACL); `needed` lists all of it.
    #[error("the Redis user is not allowed {what} (ACL); the broker needs {needed}")]
    Refused {
        /// What was refused, with Redis's reason.
        what: String,
        /// The ACL rules the broker needs.
        needed: String,
        /// The refusal, when one command said it.
        #[cfg(feature = "redis")]
        #[source]
        source: Option<redis::RedisError>,
    },
    /// Redis answered in a shape the broker cannot read (`what` names the part).
    #[error("unexpected answer from Redis: {0}")]
    Reply(&'static str),
    /// No answer in time.
    #[error("{during}: timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        during: &'static str,
        /// How long.
        after: Duration,
    },
    /// Behind Sentinel: no sentinel names a primary for `master` now.
    #[cfg(feature = "redis")]
    #[error("no sentinel names a primary for {master:?}: {source}")]
    NoPrimary {
        /// `REDIS_SENTINEL_MASTER`.
        master: String,
        /// What the sentinels said.
        #[source]
        source: redis::RedisError,
    },
    /// Options that do not go together (a TLS file for a `redis://` URL).
    #[error("{0}")]
    Options(&'static str),
    /// A value the broker writes to Redis could not be encoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why.
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// The Pub/Sub connection is being made again; subscriptions are refused until it is.
    #[error("Redis is unreachable; reconnecting")]
    Reconnecting,
    /// The task that owns the subscriptions ended (the broker is shutting down).
    #[error("the Redis subscriber task stopped")]
    Stopped,
}

#[cfg(feature = "redis")]
impl BackendError {
    /// A Redis failure `during` a command or step (for `map_err`).
    pub(crate) fn redis(during: &'static str) -> impl FnOnce(redis::RedisError) -> Self {
        move |source| Self::Redis { during, source }
    }
}
