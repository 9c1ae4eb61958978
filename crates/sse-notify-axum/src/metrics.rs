//! Prometheus metrics (`GET /metrics`), with the `prometheus-client` crate: the broker's counters
//! ([`sse_notify_broker::metrics::BrokerMetrics`]) and the HTTP side's, on one page.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sse_notify_broker::metrics::{BrokerGauges, Labels};

use sse_notify_broker::Broker;

/// The HTTP side's metrics, one set per broker ([`of`]), and the registry that renders them
/// with the broker's.
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
    pub(crate) polls: Counter,
    pub(crate) connections_rejected: Family<Labels, Counter>,
    pub(crate) cache_requests: Family<Labels, Counter>,
}

/// The metrics of everything that uses `broker` (made on first use, then shared).
pub fn of(broker: &Broker) -> Arc<Metrics> {
    broker.extension(|| Metrics::new(broker))
}

impl Metrics {
    fn new(broker: &Broker) -> Self {
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
            connections_opened: Counter::default(),
            polls: Counter::default(),
            connections_rejected: Family::default(),
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
            "polls",
            "Polls answered (`?poll=`: streams carried by polls, for clients that send headers or sit behind a proxy that buffers)",
            m.polls.clone(),
        );
        registry.register(
            "connections_rejected",
            "SSE requests refused before streaming, by error code",
            m.connections_rejected.clone(),
        );
        broker.metrics().register(&mut registry);
        registry.register("outbox_events", "Events waiting in the outbox for the backend", m.outbox.clone());
        registry.register(
            "cache_requests",
            "Requests to routes behind the response cache, by result (hit, not_modified, computed, passed)",
            m.cache_requests.clone(),
        );
        Metrics { registry, ..m }
    }

    pub(crate) fn rejected(&self, code: &'static str) {
        self.connections_rejected.get_or_create(&vec![("reason", code)]).inc();
    }

    /// The text exposition, with the gauges as they are `now`.
    pub fn render(&self, now: Gauges) -> String {
        self.connections.set(now.connections as i64);
        self.clients.set(now.clients as i64);
        self.channels.set(now.broker.channels as i64);
        self.queued.set(now.broker.queued as i64);
        self.queued_max.set(now.broker.queued_max as i64);
        self.outbox.set(now.broker.outbox as i64);
        self.presence_topics.set(now.broker.presence_topics as i64);
        self.presence_members.set(now.broker.presence_members as i64);
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
    /// The broker's: topics, queues, outbox, presence.
    pub broker: BrokerGauges,
}
