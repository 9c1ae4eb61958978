//! The broker: one publish/subscribe interface over peer backends.
//!
//! - [`Broker::memory`]: in-process, for one instance (the default without `REDIS_URL`).
//! - [`Broker::redis`]: Redis Pub/Sub, so any number of instances share events.
//!
//! The broker knows nothing of HTTP (its dependencies hold no HTTP crate): who may open a
//! stream is the endpoint layer's decision (`sse-notify-axum`), and the backends sit behind one
//! internal interface (`backend::Backend`), so each is held to the same tests.
//!
//! Either way every prefix has one ordered event log (a Redis stream, or a ring in memory): each
//! event gets a position in it, is encoded to SSE bytes once, and the same [`Bytes`](bytes::Bytes) go to every
//! local stream that follows at least one of its topics, once per stream. A stream that brings a
//! cursor first gets what it missed from the log, then live events after the last replayed one
//! ([`Subscription`]); when the log cannot prove a complete replay it gets a `resync` naming its
//! topics instead. Each stream's queue is bounded (`max_queue_size`): a stream that falls that
//! far behind is cut off with a `resync`, so a slow client never blocks the publisher or other
//! clients, and never grows memory past its queue.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod error;
mod hub;
mod limits;
mod log;
mod memory;
pub mod metrics;
mod outbox;
mod parts;
mod presence;
mod publish;
mod redact;
#[cfg(feature = "redis")]
mod redis;
mod subscription;
mod topic_head;
mod topic_watch;

pub use error::{BackendError, BrokerError};
pub use hub::Signals;
pub use limits::{distinct_topics, BrokerLimits};
pub use outbox::Accepted;
pub use redact::redact_url;
#[cfg(feature = "redis")]
pub use redis::{RedisConnection, RedisOptions};
pub use subscription::Subscription;
pub use topic_head::Head;
pub use topic_watch::TopicWatch;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sse_notify_core::cursor::{prefix_tag, LogId};
use sse_notify_core::presence::{Member, Roster};
use sse_notify_core::publish::PublishFuture;
use sse_notify_core::{Publish, PublishError, Publisher, SseEvent, Topic};
use tokio::sync::watch;

use backend::Backend;
use hub::Hub;
use log::random_epoch;
use metrics::{BrokerMetrics, SharedMetrics};
use outbox::Outbox;
use parts::Parts;
use publish::{publish, valid_origin, Appended};

/// Publishes events and hands out subscriptions; cheap to clone (one `Arc`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use sse_notify_broker::{Broker, BrokerLimits};
/// use sse_notify_core::Topic;
///
/// let broker = Broker::memory(BrokerLimits::default());
/// let topic = Topic::new("tasks").unwrap();
/// let mut sub = broker.subscribe(&[topic.clone()], None).await.unwrap();
/// broker.publish(&topic, "task:created", &serde_json::json!({"id": 7})).await.unwrap();
/// let hello = sub.next_frame().await.unwrap(); // `id: <cursor>`: where this stream starts
/// let frame = sub.next_frame().await.unwrap();
/// let text = std::str::from_utf8(&frame).unwrap();
/// assert!(text.starts_with("id: ") && text.ends_with("\nevent: task:created\ndata: {\"id\":7}\n\n"));
///
/// // A stream that comes back with the id of the last frame it saw gets what it missed.
/// let cursor = text.lines().next().unwrap()["id: ".len()..].to_owned();
/// broker.publish(&topic, "task:deleted", &serde_json::json!({"id": 7})).await.unwrap();
/// let mut resumed = broker.subscribe(&[topic], Some(&cursor)).await.unwrap();
/// let missed = resumed.next_frame().await.unwrap();
/// assert!(std::str::from_utf8(&missed).unwrap().contains("event: task:deleted\n"));
/// # let _ = hello;
/// # }
/// ```
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    parts: Arc<Parts>,
    outbox: Arc<Outbox>,
    /// The last stream group handed out ([`Broker::new_group`]).
    groups: AtomicU32,
    /// What other layers keep per broker ([`Broker::extension`]).
    extensions: std::sync::Mutex<Vec<Arc<dyn std::any::Any + Send + Sync>>>,
    closing: watch::Sender<bool>,
    /// The Redis backend's command connection, handed to the app ([`Broker::redis_connection`]).
    #[cfg(feature = "redis")]
    redis: std::sync::OnceLock<RedisConnection>,
}

impl Broker {
    /// An in-process broker: one instance, no Redis.
    pub fn memory(limits: BrokerLimits) -> Self {
        let log = LogId::new(limits.namespace(), random_epoch());
        let hub = Arc::<Hub>::default();
        let presence = presence::PresenceBook::new(limits.presence_max_listed);
        let backend = memory::MemoryLog::new(log, limits.retention(), hub.clone(), presence.clone());
        Self::with_backend(limits, hub, presence, Arc::default(), Box::new(backend))
    }

    /// A Redis-backed broker: one Pub/Sub connection for all topics plus one command connection.
    #[cfg(feature = "redis")]
    pub async fn redis(url: &str, limits: BrokerLimits) -> Result<Self, BrokerError> {
        Self::redis_with(&RedisOptions::new(url), limits).await
    }

    /// [`Broker::redis`] over TLS, or as an ACL user whose password comes from elsewhere.
    /// Fails, naming what was refused, when the user may not run what the broker needs.
    #[cfg(feature = "redis")]
    pub async fn redis_with(options: &RedisOptions, limits: BrokerLimits) -> Result<Self, BrokerError> {
        let hub = Arc::<Hub>::default();
        let presence = presence::PresenceBook::new(limits.presence_max_listed);
        let metrics = SharedMetrics::default();
        let setup = redis::Setup {
            namespace: limits.namespace().to_owned(),
            retention: limits.retention(),
            presence_ttl: limits.presence_ttl,
            hub: hub.clone(),
            book: presence.clone(),
            metrics: metrics.clone(),
        };
        // Boxed: the connect future (TLS, Sentinel, Cluster, the ACL check) is deep enough that
        // an app's `main` awaiting it inline overflowed rustc 1.95's query depth.
        let connect = Box::pin(redis::RedisBackend::connect(options, setup));
        let backend =
            connect.await.map_err(|source| BrokerError::Connect { url: redact_url(options.url()), source })?;
        let connection = backend.connection();
        let broker = Self::with_backend(limits, hub, presence, metrics, Box::new(backend));
        let _ = broker.inner.redis.set(connection);
        Ok(broker)
    }

    fn with_backend(
        limits: BrokerLimits,
        hub: Arc<Hub>,
        presence: Arc<presence::PresenceBook>,
        metrics: SharedMetrics,
        backend: Box<dyn Backend>,
    ) -> Self {
        let (closing, _) = watch::channel(false);
        let log_tag = prefix_tag(limits.namespace());
        let outbox_size = limits.outbox_size;
        let parts = Arc::new(Parts { limits, log_tag, hub, presence, backend, metrics });
        let outbox = Outbox::new(outbox_size, parts.clone());
        Self {
            inner: Arc::new(Inner {
                parts,
                outbox,
                groups: AtomicU32::new(0),
                extensions: std::sync::Mutex::default(),
                closing,
                #[cfg(feature = "redis")]
                redis: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The `T` another layer keeps with this broker, made by `make` the first time it is asked
    /// for (the HTTP side's counters, which count into the same page as the broker's): one per
    /// broker and type, whoever asks.
    ///
    /// ```
    /// use sse_notify_broker::{Broker, BrokerLimits};
    /// #[derive(Default)]
    /// struct Counted(std::sync::atomic::AtomicUsize);
    /// let broker = Broker::memory(BrokerLimits::default());
    /// broker.extension(Counted::default).0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    /// assert_eq!(broker.extension(Counted::default).0.load(std::sync::atomic::Ordering::Relaxed), 1);
    /// ```
    pub fn extension<T: Send + Sync + 'static>(&self, make: impl FnOnce() -> T) -> Arc<T> {
        let mut kept = self.inner.extensions.lock().unwrap();
        if let Some(found) = kept.iter().find_map(|e| e.clone().downcast::<T>().ok()) {
            return found;
        }
        let made = Arc::new(make());
        kept.push(made.clone());
        made
    }

    /// The broker's counters (the HTTP side renders them at `GET /metrics` with its own).
    pub fn metrics(&self) -> &BrokerMetrics {
        &self.inner.parts.metrics
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &BrokerLimits {
        &self.inner.parts.limits
    }

    /// `"redis"` or `"memory"`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.parts.backend.name()
    }

    /// The Redis command connection, for app data that must be shared like the events are.
    #[cfg(feature = "redis")]
    pub fn redis_connection(&self) -> Option<RedisConnection> {
        self.inner.redis.get().cloned()
    }

    /// A [`Publisher`] handle for app code that names no writer tab. For Leptos server
    /// functions in an HTTP app, hand them `sse_notify_axum::SseApp::publisher` instead, which names
    /// the tab of the request being handled.
    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.clone())
    }

    /// Whether the backend answers (always true in-process).
    pub async fn is_ready(&self) -> bool {
        self.inner.parts.backend.ping().await
    }

    /// How many times the Redis Pub/Sub connection was re-established (0 in-process).
    pub fn redis_reconnects(&self) -> u64 {
        self.inner.parts.metrics.redis_reconnects.get()
    }

    /// The broker's gauges, read now (the HTTP side adds its own, connections and clients).
    pub fn gauges(&self) -> metrics::BrokerGauges {
        let (queued, queued_max) = self.queued_events();
        let (presence_topics, presence_members) = self.inner.parts.presence.counts();
        metrics::BrokerGauges {
            outbox: self.inner.outbox.len(),
            channels: self.subscribed_channels(),
            queued,
            queued_max,
            presence_topics,
            presence_members,
        }
    }

    /// Events waiting in the streams' queues of this process: `(in all, in the fullest)`. Each
    /// stream's queue holds at most `SSE_MAX_QUEUE_SIZE` (its frames are shared `Bytes`, so this
    /// bounds what a slow client costs).
    pub fn queued_events(&self) -> (usize, usize) {
        self.inner.parts.hub.queued()
    }

    /// Topics with at least one local subscriber.
    pub fn subscribed_channels(&self) -> usize {
        self.inner.parts.hub.len()
    }

    /// The cursor of the newest event now: a page that reads its data after taking it and
    /// resumes its stream from it misses nothing published in between (the server-rendering
    /// handoff).
    pub async fn head_cursor(&self) -> Result<String, BrokerError> {
        Ok(self.inner.parts.history(None).await?.head_cursor().to_string())
    }

    /// Publishes `data` as event `event` on `topic`.
    pub async fn publish(&self, topic: &Topic, event: &str, data: &serde_json::Value) -> Result<(), PublishError> {
        self.publish_to(std::slice::from_ref(topic), event, data).await
    }

    /// Publishes a typed event on all of its topics.
    pub async fn publish_event<E: SseEvent>(&self, event: &E) -> Result<(), PublishError> {
        self.publish_to(&event.topics(), event.name(), &event.payload()).await
    }

    /// Publishes one event on several topics: one log entry, delivered once to each stream that
    /// follows any of them. It names no writer tab (every tab refetches); see
    /// [`Broker::publish_as`]. An event the replicas did not confirm (`SSE_REDIS_MIN_REPLICAS`)
    /// is `Unavailable` here, although it is in the log: [`Broker::publish_or_defer`] tells the
    /// two apart.
    pub async fn publish_to(
        &self,
        topics: &[Topic],
        event: &str,
        data: &serde_json::Value,
    ) -> Result<(), PublishError> {
        self.publish_as(None, topics, event, data).await
    }

    /// [`Broker::publish_to`] on behalf of the browser tab `origin` (its `sse-origin`, as
    /// `sse_notify_axum::origin::from_headers` reads it): the event's id carries that tab's echo tag, and
    /// the tab does not refetch for its own change. An origin that is not one is left out.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use sse_notify_broker::{Broker, BrokerLimits};
    /// let broker = Broker::memory(BrokerLimits::default());
    /// let board = [sse_notify_core::Topic::new("board").unwrap()];
    /// let mut sub = broker.subscribe(&board, None).await.unwrap();
    /// sub.next_frame().await.unwrap(); // the opening cursor
    /// broker.publish_as(Some("tabA"), &board, "moved", &serde_json::json!({})).await.unwrap();
    /// let frame = String::from_utf8(sub.next_frame().await.unwrap().to_vec()).unwrap();
    /// let id = frame.lines().next().unwrap().trim_start_matches("id: ");
    /// assert!(sse_notify_core::origin::is_echo_of(id, "tabA"));
    /// # }
    /// ```
    pub async fn publish_as(
        &self,
        origin: Option<&str>,
        topics: &[Topic],
        event: &str,
        data: &serde_json::Value,
    ) -> Result<(), PublishError> {
        match publish(&self.inner.parts, valid_origin(origin), topics, event, data).await? {
            Appended::Confirmed(_) => Ok(()),
            Appended::Unconfirmed(_) => Err(PublishError::Unavailable),
        }
    }

    /// Publishes an event that reports a write already made: if the backend cannot take it now,
    /// it waits in the outbox (bounded by `SSE_OUTBOX_SIZE`, in order) and is published as soon
    /// as the backend is back, so the write is answered as the success it was and subscribers
    /// still hear of it. `Err(Unavailable)` only when the outbox is full; other errors (too
    /// large, invalid) are the caller's and are returned as they are.
    ///
    /// `sse_notify_axum::PublishLayer` and the [`sse_notify_core::Publisher`] handed to server functions
    /// publish this way.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use sse_notify_broker::Accepted;
    /// use sse_notify_broker::{Broker, BrokerLimits};
    /// let broker = Broker::memory(BrokerLimits::default());
    /// let topics = [sse_notify_core::Topic::new("tasks").unwrap()];
    /// let done = broker.publish_or_defer(&topics, "task:created", &serde_json::json!({"id": 1})).await;
    /// assert!(matches!(done.unwrap(), Accepted::Published(_))); // the embedded broker is never away
    /// # }
    /// ```
    pub async fn publish_or_defer(
        &self,
        topics: &[Topic],
        event: &str,
        data: &serde_json::Value,
    ) -> Result<Accepted, PublishError> {
        self.publish_or_defer_as(None, topics, event, data).await
    }

    /// [`Broker::publish_or_defer`] on behalf of the browser tab `origin` (see
    /// [`Broker::publish_as`]).
    pub async fn publish_or_defer_as(
        &self,
        origin: Option<&str>,
        topics: &[Topic],
        event: &str,
        data: &serde_json::Value,
    ) -> Result<Accepted, PublishError> {
        self.inner.outbox.publish_or_defer(origin, topics, event, data).await
    }

    /// Events waiting in the outbox for the backend.
    pub fn outbox_len(&self) -> usize {
        self.inner.outbox.len()
    }

    /// Waits up to `within` for the outbox to empty (at shutdown); returns how many events are
    /// still waiting.
    pub async fn flush_outbox(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        while self.outbox_len() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.outbox_len()
    }

    /// Follows where `topics` stand in the log ([`Head`]), as the response cache needs: returns
    /// once they are live, so no later event of theirs passes unseen.
    pub async fn watch(&self, topics: &[Topic]) -> Result<TopicWatch, BrokerError> {
        topic_watch::open(&self.inner.parts, topics).await
    }

    /// Subscribes to `topics` (duplicates are followed once; at most 64 distinct, else
    /// [`BrokerError::TooManyTopics`]), resuming from `last_event_id` when given.
    ///
    /// Returns once every topic is live (Redis has confirmed SUBSCRIBE), so an event published
    /// after this returns is delivered. With a cursor the subscription first yields every event
    /// after it on these topics, in order, then live ones after the last replayed; with a bad,
    /// foreign or trimmed cursor it first yields a `resync` naming all `topics`. Without one it
    /// first yields an `id:`-only frame holding the current cursor, so a client that reconnects
    /// before any event still resumes from where it started.
    pub async fn subscribe(&self, topics: &[Topic], last_event_id: Option<&str>) -> Result<Subscription, BrokerError> {
        self.subscribe_in(0, topics, last_event_id).await
    }

    /// [`Broker::subscribe`] for a stream of `group` (from [`Broker::new_group`]), whose
    /// tickers [`Broker::raise`] signals on.
    pub(crate) async fn subscribe_in(
        &self,
        group: u32,
        topics: &[Topic],
        last_event_id: Option<&str>,
    ) -> Result<Subscription, BrokerError> {
        self.subscribe_present(group, topics, last_event_id, Vec::new()).await
    }

    /// [`Broker::subscribe`], also seeing the presence of each topic of `presence` (a topic of
    /// `topics`), as its member when one is given: the subscription first yields the topic's
    /// `presence:state`, then its joins and leaves (frames without an id); the member is there
    /// until the subscription is dropped. `sse_notify_axum::SseEndpoint::presence` does this for HTTP
    /// streams.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use sse_notify_broker::{Broker, BrokerLimits};
    /// use sse_notify_core::{presence::Member, Topic};
    /// let broker = Broker::memory(BrokerLimits::default());
    /// let board = Topic::new("board").unwrap();
    /// let bob = Some(Member::new("bob", serde_json::json!({"name": "Bob"})));
    /// let mut sub = broker.subscribe_with_presence(&[board.clone()], None, vec![(board, bob)]).await.unwrap();
    /// sub.next_frame().await.unwrap(); // the opening cursor
    /// let mut frames = String::new();
    /// while !frames.contains("presence:join") {
    ///     frames.push_str(std::str::from_utf8(&sub.next_frame().await.unwrap()).unwrap());
    /// }
    /// assert!(frames.starts_with("event: presence:state\n"));
    /// assert!(frames.contains(r#"data: {"topic":"board","member":{"id":"bob","info":{"name":"Bob"}}}"#));
    /// # }
    /// ```
    pub async fn subscribe_with_presence(
        &self,
        topics: &[Topic],
        last_event_id: Option<&str>,
        presence: Vec<(Topic, Option<Member>)>,
    ) -> Result<Subscription, BrokerError> {
        self.subscribe_present(0, topics, last_event_id, presence).await
    }

    /// [`Broker::subscribe_with_presence`] for a stream of `group`.
    pub async fn subscribe_present(
        &self,
        group: u32,
        topics: &[Topic],
        last_event_id: Option<&str>,
        presence: Vec<(Topic, Option<Member>)>,
    ) -> Result<Subscription, BrokerError> {
        subscription::open(&self.inner.parts, group, topics, last_event_id, presence).await
    }

    /// Who is on `topic` now (presence), as the streams that see it are told: its members, or
    /// only their number above `SSE_PRESENCE_MAX_LISTED`. For a page the server renders with
    /// them in it.
    pub async fn presence_roster(&self, topic: &Topic) -> Result<Roster, BrokerError> {
        if let Some(roster) = self.inner.parts.presence.roster(topic.as_str()) {
            return Ok(roster);
        }
        let members =
            self.inner.parts.backend.presence_members(topic.as_str()).await.map_err(BrokerError::Unavailable)?;
        Ok(Roster::of(members, self.inner.parts.limits.presence_max_listed))
    }

    /// Waits up to `within` for the presence changes still on their way to the backend (at
    /// shutdown: the members of the streams just closed leave now, not at the TTL); returns
    /// how many are still on their way.
    pub async fn flush_presence(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        while self.inner.parts.backend.presence_pending() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.parts.backend.presence_pending()
    }

    /// Asks every open stream to end, and every stream opened from now on (used at shutdown).
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
        self.inner.parts.hub.close();
    }

    /// A new stream group: the streams of one endpoint, which its heartbeat and re-check
    /// tickers signal together.
    pub fn new_group(&self) -> u32 {
        self.inner.groups.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Raises `signals` on every local stream of `group`.
    pub fn raise(&self, group: u32, signals: Signals) {
        self.inner.parts.hub.raise(group, signals);
    }

    /// A receiver that changes to `true` when [`Broker::close`] is called.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }
}

/// Publishes as [`Broker::publish_or_defer`], naming no writer tab (see
/// `sse_notify_axum::origin::TabPublisher` for the one that names the request's).
impl Publish for Broker {
    fn publish_json<'a>(
        &'a self,
        topics: &'a [Topic],
        event: &'a str,
        data: &'a serde_json::Value,
    ) -> PublishFuture<'a> {
        Box::pin(async move { self.publish_or_defer(topics, event, data).await.map(|a| a.position()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sse_notify_core::cursor::{Cursor, LogPosition};

    fn topics(names: &[&str]) -> Vec<Topic> {
        names.iter().map(|n| Topic::new(*n).unwrap()).collect()
    }

    fn mask(frame: &Bytes) -> u64 {
        let text = std::str::from_utf8(frame).unwrap();
        let id = text.lines().next().and_then(|l| l.strip_prefix("id: ")).expect("an id line");
        id.parse::<Cursor>().unwrap().matched
    }

    // A failover forked the log at (50, 0); this stream had replayed up to (100, 0) from the
    // old log, and the new primary's clock is behind: its events come at (70, 0). Comparing
    // positions across the fork dropped them as seen; the stream resyncs and gets them.
    #[tokio::test]
    async fn a_stream_past_a_fork_resyncs_and_gets_the_new_epochs_events_whatever_their_positions() {
        let broker = Broker::memory(BrokerLimits::default());
        let board = topics(&["board"]);
        let old = broker.head_cursor().await.unwrap().parse::<Cursor>().unwrap().log;
        let new = LogId { epoch: old.epoch.wrapping_add(1), ..old };
        let at = |ms| LogPosition { ms, seq: 0 };
        let event = |log, ms| hub::LogEvent::new(log, at(ms), vec!["board".into()], Bytes::from_static(b"{}"), None);
        let mut past = broker.subscribe(&board, None).await.unwrap();
        past.next_frame().await.unwrap(); // the opening cursor
        for ms in [40, 100] {
            broker.inner.parts.hub.deliver(&event(old, ms));
            past.next_frame().await.unwrap();
        }
        let mut within = broker.subscribe(&board, None).await.unwrap();
        within.next_frame().await.unwrap(); // at the (empty) log's head, before the fork
        let head = Cursor { log: new, position: at(60), matched: 0 };
        broker.inner.parts.hub.forked_all(at(50), head);
        broker.inner.parts.hub.deliver(&event(new, 70));
        let text = |frame: Result<Option<Bytes>, _>| match frame {
            Ok(Some(frame)) => String::from_utf8(frame.to_vec()).unwrap(),
            _ => panic!("no frame within 2 s"),
        };
        let resync = text(tokio::time::timeout(Duration::from_secs(2), past.next_frame()).await);
        assert!(resync.contains("event: resync") && resync.contains(&head.to_string()), "{resync}");
        let seventy = format!("id: {}", Cursor { position: at(70), matched: 1, ..head });
        let next = text(tokio::time::timeout(Duration::from_secs(2), past.next_frame()).await);
        assert!(next.starts_with(&seventy), "{next}");
        let next = text(tokio::time::timeout(Duration::from_secs(2), within.next_frame()).await);
        assert!(next.starts_with(&seventy), "no resync within the fork: {next}");
    }

    #[tokio::test]
    async fn a_topic_asked_twice_is_one_bit_in_replayed_and_live_frames_alike() {
        let broker = Broker::memory(BrokerLimits::default());
        let start = broker.head_cursor().await.unwrap();
        let data = serde_json::json!({});
        broker.publish(&topics(&["a"])[0], "x", &data).await.unwrap();
        let mut sub = broker.subscribe(&topics(&["a", "b", "a"]), Some(&start)).await.unwrap();
        assert_eq!(sub.topics(), topics(&["a", "b"]));
        let replayed = sub.next_frame().await.unwrap();
        broker.publish(&topics(&["a"])[0], "x", &data).await.unwrap();
        let live = sub.next_frame().await.unwrap();
        assert_eq!((mask(&replayed), mask(&live)), (1, 1));
    }

    #[tokio::test]
    async fn more_than_64_distinct_topics_are_refused_and_64_with_repeats_are_not() {
        let broker = Broker::memory(BrokerLimits::default());
        let names: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        let many: Vec<Topic> = names.iter().map(|n| Topic::new(n.as_str()).unwrap()).collect();
        match broker.subscribe(&many, None).await {
            Err(BrokerError::TooManyTopics { asked: 65 }) => {}
            other => panic!("expected TooManyTopics, got {:?}", other.map(|_| ())),
        }
        let mut repeated = many[..64].to_vec();
        repeated.extend_from_slice(&many[..64]);
        let mut sub = broker.subscribe(&repeated, None).await.unwrap();
        assert_eq!(sub.topics().len(), 64);
        sub.next_frame().await.unwrap(); // the opening cursor
        broker.publish(&many[63], "x", &serde_json::json!({})).await.unwrap();
        assert_eq!(mask(&sub.next_frame().await.unwrap()), 1 << 63);
        assert_eq!(broker.subscribed_channels(), 64);
    }
}

// The crate's README, whose examples are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
