//! The broker: one publish/subscribe interface over two backends.
//!
//! - [`Broker::memory`]: in-process, for one instance (the default without `REDIS_URL`).
//! - [`Broker::redis`]: Redis Pub/Sub, so any number of instances share events.
//!
//! Either way an event is encoded to SSE bytes once and the same [`Bytes`] goes to every local
//! subscriber through a per-topic `tokio::sync::broadcast` ring. The ring is the per-subscriber
//! queue bound: a subscriber that falls more than `max_queue_size` events behind on a topic is
//! told so (`Lagged`) and the SSE endpoint disconnects it, so EventSource reconnects. A slow
//! client never blocks the publisher or other clients, and never grows memory past the ring.

mod memory;
mod redis;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sse_notify_core::publish::PublishFuture;
use sse_notify_core::{Publish, PublishError, Publisher, SseEvent, Topic};
use tokio::sync::{broadcast, watch, OnceCell};

use crate::config::SseConfig;
use crate::metrics::{Metrics, SharedMetrics};

use sse_notify_core::wire::RESYNC_EVENT;

/// Why the broker could not start or subscribe.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// Redis did not answer at start-up.
    #[error("cannot connect to Redis at {url}: {reason}")]
    Connect {
        /// The `REDIS_URL` tried.
        url: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The backend refused a subscription (Redis is away; the endpoint answers 503).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// The limits the broker enforces.
#[derive(Clone, Debug)]
pub struct BrokerLimits {
    /// `TOPIC_PREFIX`: put in front of every topic's channel name.
    pub topic_prefix: String,
    /// `SSE_MAX_QUEUE_SIZE`: how far a subscriber may fall behind on one topic.
    pub max_queue_size: usize,
    /// `SSE_MAX_MESSAGE_SIZE`: the largest encoded event, in bytes.
    pub max_message_size: usize,
}

impl From<&SseConfig> for BrokerLimits {
    fn from(c: &SseConfig) -> Self {
        Self {
            topic_prefix: c.topic_prefix.clone(),
            max_queue_size: c.max_queue_size,
            max_message_size: c.max_message_size,
        }
    }
}

impl Default for BrokerLimits {
    fn default() -> Self {
        (&SseConfig::default()).into()
    }
}

/// Publishes events and hands out subscriptions; cheap to clone (one `Arc`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use sse_notify_axum::{Broker, BrokerLimits};
/// use sse_notify_core::Topic;
///
/// let broker = Broker::memory(BrokerLimits::default());
/// let topic = Topic::new("tasks").unwrap();
/// let sub = broker.subscribe(&[topic.clone()]).await.unwrap();
/// broker.publish(&topic, "task:created", &serde_json::json!({"id": 7})).await.unwrap();
/// let (mut receivers, _guard) = sub.split();
/// let frame = receivers[0].recv().await.unwrap();
/// assert!(std::str::from_utf8(&frame).unwrap().ends_with("event: task:created\ndata: {\"id\":7}\n\n"));
/// # }
/// ```
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    limits: BrokerLimits,
    channels: Arc<Channels>,
    backend: Backend,
    connections: AtomicUsize,
    closing: watch::Sender<bool>,
    metrics: SharedMetrics,
}

enum Backend {
    Memory(memory::IdGen),
    Redis(redis::RedisBackend),
}

/// Local subscribers by full channel name (prefix + topic).
#[derive(Default)]
pub(crate) struct Channels {
    map: Mutex<HashMap<String, Channel>>,
}

struct Channel {
    tx: broadcast::Sender<Bytes>,
    /// Set once the backend has confirmed the subscription (Redis SUBSCRIBE answered); left
    /// unset by a failure, so the next subscriber tries again.
    ready: Arc<OnceCell<()>>,
}

impl Channels {
    /// Hands a frame to every local subscriber of `channel` (no-op when there is none).
    pub(crate) fn deliver(&self, channel: &str, frame: Bytes) {
        if let Some(c) = self.map.lock().unwrap().get(channel) {
            let _ = c.tx.send(frame);
        }
    }

    fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    /// Every channel with local subscribers.
    pub(crate) fn names(&self) -> Vec<String> {
        self.map.lock().unwrap().keys().cloned().collect()
    }

    /// Tells every local subscriber that events may have been missed (`event: resync`).
    pub(crate) fn resync_all(&self, reason: &str) {
        let frame = sse_notify_core::wire::encode_event(None, RESYNC_EVENT, &format!("{{\"reason\":\"{reason}\"}}"))
            .expect("valid frame");
        let frame = Bytes::from(frame);
        for c in self.map.lock().unwrap().values() {
            let _ = c.tx.send(frame.clone());
        }
    }
}

impl Broker {
    /// An in-process broker: one instance, no Redis.
    pub fn memory(limits: BrokerLimits) -> Self {
        Self::with_backend(limits, Arc::default(), Arc::default(), Backend::Memory(memory::IdGen::default()))
    }

    /// A Redis-backed broker: one Pub/Sub connection for all topics plus one command connection.
    pub async fn redis(url: &str, limits: BrokerLimits) -> Result<Self, BrokerError> {
        let channels = Arc::<Channels>::default();
        let metrics = SharedMetrics::default();
        let backend = redis::RedisBackend::connect(url, channels.clone(), metrics.clone())
            .await
            .map_err(|e| BrokerError::Connect { url: url.to_owned(), reason: e })?;
        Ok(Self::with_backend(limits, channels, metrics, Backend::Redis(backend)))
    }

    /// The broker the configuration asks for: Redis when `redis_url` is set, else in-process.
    pub async fn from_config(config: &SseConfig) -> Result<Self, BrokerError> {
        match &config.redis_url {
            Some(url) => Self::redis(url, config.into()).await,
            None => Ok(Self::memory(config.into())),
        }
    }

    fn with_backend(limits: BrokerLimits, channels: Arc<Channels>, metrics: SharedMetrics, backend: Backend) -> Self {
        let (closing, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner { limits, channels, backend, connections: AtomicUsize::new(0), closing, metrics }),
        }
    }

    /// The broker's metrics (rendered by `GET /metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &BrokerLimits {
        &self.inner.limits
    }

    /// `"redis"` or `"memory"`.
    pub fn backend_name(&self) -> &'static str {
        match self.inner.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// The Redis command connection, for app data that must be shared like the events are.
    pub fn redis_connection(&self) -> Option<::redis::aio::ConnectionManager> {
        match &self.inner.backend {
            Backend::Redis(r) => Some(r.connection()),
            Backend::Memory(_) => None,
        }
    }

    /// A [`Publisher`] handle for app code (e.g. Leptos server functions via context).
    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.clone())
    }

    /// Whether the backend answers (always true in-process).
    pub async fn is_ready(&self) -> bool {
        match &self.inner.backend {
            Backend::Memory(_) => true,
            Backend::Redis(r) => r.ping().await,
        }
    }

    /// How many times the Redis Pub/Sub connection was re-established (0 in-process).
    pub fn redis_reconnects(&self) -> u64 {
        self.inner.metrics.redis_reconnects.get()
    }

    /// Topics with at least one local subscriber.
    pub fn subscribed_channels(&self) -> usize {
        self.inner.channels.len()
    }

    fn channel_name(&self, topic: &Topic) -> String {
        format!("{}{}", self.inner.limits.topic_prefix, topic)
    }

    /// Publishes `data` as event `event` on `topic`.
    pub async fn publish(&self, topic: &Topic, event: &str, data: &serde_json::Value) -> Result<(), PublishError> {
        self.publish_to(std::slice::from_ref(topic), event, data).await
    }

    /// Publishes a typed event on all of its topics.
    pub async fn publish_event<E: SseEvent>(&self, event: &E) -> Result<(), PublishError> {
        self.publish_to(&event.topics(), event.name(), &event.payload()).await
    }

    /// Publishes one event on several topics (each topic gets its own frame and id).
    pub async fn publish_to(
        &self,
        topics: &[Topic],
        event: &str,
        data: &serde_json::Value,
    ) -> Result<(), PublishError> {
        let started = std::time::Instant::now();
        let result = self.publish_frames(topics, event, data).await;
        let m = &self.inner.metrics;
        match &result {
            Ok(()) => {
                m.events_published.inc();
                m.publish_seconds.observe(started.elapsed().as_secs_f64());
            }
            Err(PublishError::Invalid { .. } | PublishError::NotConfigured) => m.publish_failed("invalid"),
            Err(PublishError::TooLarge { .. }) => m.publish_failed("too_large"),
            Err(PublishError::Unavailable) => m.publish_failed("unavailable"),
        }
        result
    }

    async fn publish_frames(
        &self,
        topics: &[Topic],
        event: &str,
        data: &serde_json::Value,
    ) -> Result<(), PublishError> {
        let data = serde_json::to_string(data).map_err(|e| PublishError::Invalid { reason: e.to_string() })?;
        // Encoded once here; the id line is put in front per topic.
        let body = sse_notify_core::wire::encode_event(None, event, &data)
            .map_err(|e| PublishError::Invalid { reason: e.to_string() })?;
        let limit = self.inner.limits.max_message_size;
        if body.len() > limit {
            tracing::warn!(event, size = body.len(), limit, "event refused: larger than SSE_MAX_MESSAGE_SIZE");
            return Err(PublishError::TooLarge { size: body.len(), limit });
        }
        let channels: Vec<String> = topics.iter().map(|t| self.channel_name(t)).collect();
        match &self.inner.backend {
            Backend::Memory(ids) => {
                for channel in &channels {
                    let frame = format!("id: {}\n{body}", ids.next());
                    self.inner.channels.deliver(channel, Bytes::from(frame));
                }
                Ok(())
            }
            Backend::Redis(r) => r.publish(&channels, &body).await.map_err(|e| {
                tracing::warn!(event, error = %e, "publish to Redis failed");
                PublishError::Unavailable
            }),
        }
    }

    /// Subscribes to `topics`; returns once every topic is live (Redis has confirmed SUBSCRIBE),
    /// so an event published after this returns is delivered.
    pub async fn subscribe(&self, topics: &[Topic]) -> Result<Subscription, BrokerError> {
        let mut receivers = Vec::with_capacity(topics.len());
        let mut pending = Vec::with_capacity(topics.len());
        let mut names = Vec::with_capacity(topics.len());
        {
            let mut map = self.inner.channels.map.lock().unwrap();
            for topic in topics {
                let name = self.channel_name(topic);
                let channel = map.entry(name.clone()).or_insert_with(|| Channel {
                    tx: broadcast::channel(self.inner.limits.max_queue_size).0,
                    ready: Arc::default(),
                });
                receivers.push(channel.tx.subscribe());
                pending.push((name.clone(), channel.ready.clone()));
                names.push(name);
            }
        }
        // From here on the guard cleans up, even if this future is dropped or fails.
        let guard = SubscriptionGuard { broker: self.clone(), channels: names };
        if let Backend::Redis(r) = &self.inner.backend {
            for (name, ready) in pending {
                ready.get_or_try_init(|| r.subscribe(name)).await.map_err(BrokerError::Unavailable)?;
            }
        }
        Ok(Subscription { receivers, guard })
    }

    /// Takes one of `max` connection slots, or `None` when all are in use.
    pub fn try_acquire_connection(&self, max: usize) -> Option<ConnectionSlot> {
        let inner = &self.inner;
        inner
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| ConnectionSlot { broker: self.clone() })
    }

    /// Open SSE connections right now.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Acquire)
    }

    /// Asks every open stream to end (used at shutdown).
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    /// A receiver that changes to `true` when [`Broker::close`] is called.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    fn release(&self, channels: &[String]) {
        let mut map = self.inner.channels.map.lock().unwrap();
        for name in channels {
            let unused = map.get(name).is_some_and(|c| c.tx.receiver_count() == 0);
            if unused {
                map.remove(name);
                // Sent while holding the lock, so an UNSUBSCRIBE is always queued before the
                // SUBSCRIBE of a subscriber that comes back for the same channel.
                if let Backend::Redis(r) = &self.inner.backend {
                    r.unsubscribe(name.clone());
                }
            }
        }
    }
}

impl Publish for Broker {
    fn publish_json<'a>(
        &'a self,
        topics: &'a [Topic],
        event: &'a str,
        data: &'a serde_json::Value,
    ) -> PublishFuture<'a> {
        Box::pin(self.publish_to(topics, event, data))
    }
}

/// Live subscriptions to a set of topics: one broadcast receiver per topic, in the order asked.
pub struct Subscription {
    receivers: Vec<broadcast::Receiver<Bytes>>,
    guard: SubscriptionGuard,
}

impl Subscription {
    /// The receivers, and the guard that unsubscribes when dropped. Drop the receivers first.
    pub fn split(self) -> (Vec<broadcast::Receiver<Bytes>>, SubscriptionGuard) {
        (self.receivers, self.guard)
    }
}

/// Unsubscribes unused channels when dropped.
pub struct SubscriptionGuard {
    broker: Broker,
    channels: Vec<String>,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.broker.release(&self.channels);
    }
}

/// One of the process's `SSE_MAX_CONNECTIONS` slots; freed when dropped.
pub struct ConnectionSlot {
    broker: Broker,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.broker.inner.connections.fetch_sub(1, Ordering::AcqRel);
    }
}
