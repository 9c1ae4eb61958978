//! What the broker counts (Prometheus, with the `prometheus-client` crate): events published,
//! delivered, replayed, deferred; Redis reconnects; resyncs; and the gauges it can read at any
//! time. The HTTP side registers them with its own ([`BrokerMetrics::register`]) and renders
//! them all at `GET /metrics`.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A metric's labels (e.g. `reason`).
pub type Labels = Vec<(&'static str, &'static str)>;

/// The broker's counters: one set per broker, shared by everything that counts into it.
pub struct BrokerMetrics {
    pub events_published: Counter,
    pub publish_errors: Family<Labels, Counter>,
    pub events_delivered: Counter,
    pub events_dropped: Counter,
    /// Streams cut as slow consumers: by the broker (a whole queue behind) and by whatever
    /// writes the streams (their client stopped reading).
    pub slow_consumer_disconnects: Counter,
    pub publish_seconds: Histogram,
    pub redis_reconnects: Counter,
    pub events_replayed: Counter,
    pub events_deferred: Counter,
    pub events_unconfirmed: Counter,
    pub resyncs: Family<Labels, Counter>,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        Self {
            events_published: Counter::default(),
            publish_errors: Family::default(),
            events_delivered: Counter::default(),
            events_dropped: Counter::default(),
            slow_consumer_disconnects: Counter::default(),
            // 50 µs .. ~1.6 s
            publish_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            redis_reconnects: Counter::default(),
            events_replayed: Counter::default(),
            events_deferred: Counter::default(),
            events_unconfirmed: Counter::default(),
            resyncs: Family::default(),
        }
    }
}

impl BrokerMetrics {
    /// Adds the counters to `registry`, under their documented names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("events_published", "Events accepted for publishing", self.events_published.clone());
        registry.register("publish_errors", "Publishes refused or failed, by reason", self.publish_errors.clone());
        registry.register("events_delivered", "Event frames handed to SSE streams", self.events_delivered.clone());
        registry.register(
            "events_dropped",
            "Events slow consumers missed before being disconnected",
            self.events_dropped.clone(),
        );
        registry.register(
            "slow_consumer_disconnects",
            "Streams closed because they fell a whole queue behind or stopped reading (SSE_WRITE_TIMEOUT_SECONDS)",
            self.slow_consumer_disconnects.clone(),
        );
        registry.register("publish_duration_seconds", "Time to publish one event", self.publish_seconds.clone());
        registry.register(
            "redis_reconnects",
            "Times the Redis Pub/Sub connection was re-established",
            self.redis_reconnects.clone(),
        );
        registry.register(
            "events_replayed",
            "Event frames sent from history to streams that resumed from a cursor",
            self.events_replayed.clone(),
        );
        registry.register(
            "events_deferred",
            "Events kept in the outbox because the backend was away after a write",
            self.events_deferred.clone(),
        );
        registry.register(
            "events_unconfirmed",
            "Publishes in the log that fewer replicas than SSE_REDIS_MIN_REPLICAS confirmed in time",
            self.events_unconfirmed.clone(),
        );
        registry.register("resyncs", "resync frames sent (streams told to refetch), by reason", self.resyncs.clone());
    }

    pub(crate) fn resynced(&self, reason: sse_notify_core::wire::ResyncReason, streams: u64) {
        self.resyncs.get_or_create(&vec![("reason", reason.as_str())]).inc_by(streams);
    }

    pub(crate) fn publish_failed(&self, reason: &'static str) {
        self.publish_errors.get_or_create(&vec![("reason", reason)]).inc();
    }
}

/// What the broker's gauges read now ([`crate::Broker::gauges`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct BrokerGauges {
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
pub(crate) type SharedMetrics = Arc<BrokerMetrics>;
