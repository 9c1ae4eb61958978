//! Prometheus metrics (`GET /metrics`), with the `prometheus-client` crate.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Reason = Vec<(&'static str, &'static str)>;

/// Every metric the integration keeps. One per broker, which counts its events into it; the
/// endpoints and the server that use the broker count their connections into the same one.
pub struct Metrics {
    registry: Registry,
    connections: Gauge,
    clients: Gauge,
    channels: Gauge,
    queued: Gauge,
    queued_max: Gauge,
    outbox: Gauge,
    presence_topics: Gauge,
    presence_members: Gauge,
    pub(crate) connections_opened: Counter,
    pub(crate) connections_rejected: Family<Reason, Counter>,
    pub(crate) events_published: Counter,
    pub(crate) publish_errors: Family<Reason, Counter>,
    pub(crate) events_delivered: Counter,
    pub(crate) events_dropped: Counter,
    pub(crate) slow_consumer_disconnects: Counter,
    pub(crate) publish_seconds: Histogram,
    pub(crate) redis_reconnects: Counter,
    pub(crate) events_replayed: Counter,
    pub(crate) events_deferred: Counter,
    pub(crate) events_unconfirmed: Counter,
    pub(crate) resyncs: Family<Reason, Counter>,
    pub(crate) cache_requests: Family<Reason, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sse");
        let m = Metrics {
            connections: Gauge::default(),
            clients: Gauge::default(),
            channels: Gauge::default(),
            queued: Gauge::default(),
            queued_max: Gauge::default(),
            outbox: Gauge::default(),
            presence_topics: Gauge::default(),
            presence_members: Gauge::default(),
            events_deferred: Counter::default(),
            events_unconfirmed: Counter::default(),
            connections_opened: Counter::default(),
            connections_rejected: Family::default(),
            events_published: Counter::default(),
            publish_errors: Family::default(),
            events_delivered: Counter::default(),
            events_dropped: Counter::default(),
            slow_consumer_disconnects: Counter::default(),
            // 50 µs .. ~1.6 s
            publish_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            redis_reconnects: Counter::default(),
            events_replayed: Counter::default(),
            resyncs: Family::default(),
            cache_requests: Family::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Open SSE streams", m.connections.clone());
        registry.register("clients", "Clients (addresses, or client keys) with open SSE streams", m.clients.clone());
        registry.register("channels", "Topics with at least one local subscriber", m.channels.clone());
        registry.register("queued_events", "Events waiting in streams' queues", m.queued.clone());
        registry.register(
            "queued_events_max",
            "Events waiting in the fullest stream's queue (at most SSE_MAX_QUEUE_SIZE)",
            m.queued_max.clone(),
        );
        registry.register(
            "presence_topics",
            "Topics with presence that local streams see or are members of",
            m.presence_topics.clone(),
        );
        registry.register(
            "presence_members",
            "Members on topics with presence through this instance's streams (one per member and topic)",
            m.presence_members.clone(),
        );
        registry.register("connections_opened", "SSE streams opened", m.connections_opened.clone());
        registry.register(
            "connections_rejected",
            "SSE requests refused before streaming, by error code",
            m.connections_rejected.clone(),
        );
        registry.register("events_published", "Events accepted for publishing", m.events_published.clone());
        registry.register("publish_errors", "Publishes refused or failed, by reason", m.publish_errors.clone());
        registry.register("events_delivered", "Event frames handed to SSE streams", m.events_delivered.clone());
        registry.register(
            "events_dropped",
            "Events slow consumers missed before being disconnected",
            m.events_dropped.clone(),
        );
        registry.register(
            "slow_consumer_disconnects",
            "Streams closed because they fell a whole queue behind or stopped reading (SSE_WRITE_TIMEOUT_SECONDS)",
            m.slow_consumer_disconnects.clone(),
        );
        registry.register("publish_duration_seconds", "Time to publish one event", m.publish_seconds.clone());
        registry.register(
            "redis_reconnects",
            "Times the Redis Pub/Sub connection was re-established",
            m.redis_reconnects.clone(),
        );
        registry.register(
            "events_replayed",
            "Event frames sent from history to streams that resumed from a cursor",
            m.events_replayed.clone(),
        );
        registry.register(
            "events_deferred",
            "Events kept in the outbox because the backend was away after a write",
            m.events_deferred.clone(),
        );
        registry.register(
            "events_unconfirmed",
            "Publishes in the log that fewer replicas than SSE_REDIS_MIN_REPLICAS confirmed in time",
            m.events_unconfirmed.clone(),
        );
        registry.register("outbox_events", "Events waiting in the outbox for the backend", m.outbox.clone());
        registry.register("resyncs", "resync frames sent (streams told to refetch), by reason", m.resyncs.clone());
        registry.register(
            "cache_requests",
            "Requests to routes behind the response cache, by result (hit, not_modified, computed, passed)",
            m.cache_requests.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub(crate) fn rejected(&self, code: &'static str) {
        self.connections_rejected.get_or_create(&vec![("reason", code)]).inc();
    }

    pub(crate) fn resynced(&self, reason: sse_notify_core::wire::ResyncReason, streams: u64) {
        self.resyncs.get_or_create(&vec![("reason", reason.as_str())]).inc_by(streams);
    }

    pub(crate) fn publish_failed(&self, reason: &'static str) {
        self.publish_errors.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// The text exposition, with the gauges as they are `now`.
    pub fn render(&self, now: Gauges) -> String {
        self.connections.set(now.connections as i64);
        self.clients.set(now.clients as i64);
        self.channels.set(now.channels as i64);
        self.queued.set(now.queued as i64);
        self.queued_max.set(now.queued_max as i64);
        self.outbox.set(now.outbox as i64);
        self.presence_topics.set(now.presence_topics as i64);
        self.presence_members.set(now.presence_members as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// The values behind the gauges, read when the metrics are rendered
/// ([`crate::health::render_metrics`] reads them from the broker and the admission).
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    /// Open SSE streams.
    pub connections: usize,
    /// Clients with at least one open stream.
    pub clients: usize,
    /// Topics with at least one local stream.
    pub channels: usize,
    /// Events waiting in all streams' queues.
    pub queued: usize,
    /// Events waiting in the fullest stream's queue.
    pub queued_max: usize,
    /// Events waiting in the outbox for the backend.
    pub outbox: usize,
    /// Topics with presence that local streams see or are members of.
    pub presence_topics: usize,
    /// Members through local streams, one per member and topic.
    pub presence_members: usize,
}

/// Keeps the type name short where it is stored.
pub(crate) type SharedMetrics = Arc<Metrics>;
