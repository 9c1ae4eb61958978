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
//! event gets a position in it, is encoded to SSE bytes once, and the same [`Bytes`] go to every
//! local stream that follows at least one of its topics, once per stream. A stream that brings a
//! cursor first gets what it missed from the log, then live events after the last replayed one
//! ([`Subscription`]); when the log cannot prove a complete replay it gets a `resync` naming its
//! topics instead. Each stream's queue is bounded (`max_queue_size`): a stream that falls that
//! far behind is cut off with a `resync`, so a slow client never blocks the publisher or other
//! clients, and never grows memory past its queue.

mod backend;
mod head;
mod hub;
mod log;
mod memory;
pub mod metrics;
mod outbox;
mod presence;
mod redact;
#[cfg(feature = "redis")]
mod redis;

pub use head::Head;
pub(crate) use log::{random_epoch, History, Retention};
pub use outbox::Accepted;
pub use redact::redact_url;
#[cfg(feature = "redis")]
pub use redis::{RedisConnection, RedisOptions};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use sse_notify_core::cursor::{prefix_tag, Cursor, LogId, LogPosition};
use sse_notify_core::presence::{Member, Roster};
use sse_notify_core::publish::PublishFuture;
use sse_notify_core::wire::{Resync, ResyncReason, RESYNC_EVENT};
use sse_notify_core::{Publish, PublishError, Publisher, SseEvent, Topic, MAX_TOPICS_PER_CONNECTION};
use tokio::sync::watch;

use crate::metrics::{BrokerMetrics, SharedMetrics};
use backend::{AppendError, Backend, Follower};
pub use hub::Signals;
use hub::{Delivery, Hub, Inbox};

/// Why the broker could not start or subscribe.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// Redis could not be reached at start-up, or refused the broker (a wrong password, an ACL
    /// without what the broker needs, a certificate it does not trust).
    #[error("cannot connect to Redis at {url}: {reason}")]
    Connect {
        /// The `REDIS_URL` tried, its password hidden.
        url: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The backend refused a subscription (Redis is away; the endpoint answers 503).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// More distinct topics than one stream may follow (a frame's cursor has a bit per topic).
    #[error("{asked} topics asked; at most {MAX_TOPICS_PER_CONNECTION} per stream")]
    TooManyTopics {
        /// How many distinct topics were asked for.
        asked: usize,
    },
}

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
    /// `SSE_OUTBOX_SIZE`: events [`Broker::publish_or_defer`] keeps while the backend is away.
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
    /// The namespace of the prefix's log and channels: the prefix, or `sse` when it is empty.
    fn namespace(&self) -> &str {
        if self.topic_prefix.is_empty() {
            "sse"
        } else {
            &self.topic_prefix
        }
    }

    fn retention(&self) -> Retention {
        Retention { max_events: self.history_size.max(1), max_age_ms: self.history_age.as_millis() as u64 }
    }
}

/// How a published event reached the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Appended {
    /// In the log, with as many replicas as asked for (or none asked for).
    Confirmed,
    /// In the log and sent to the streams, but fewer replicas than `SSE_REDIS_MIN_REPLICAS`
    /// confirmed it in time.
    Unconfirmed,
}

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
    limits: BrokerLimits,
    log_tag: u16,
    hub: Arc<Hub>,
    /// Who is on the topics with presence, and which local streams see it.
    presence: Arc<presence::PresenceBook>,
    backend: Box<dyn Backend>,
    /// The last stream group handed out ([`Broker::new_group`]).
    groups: AtomicU32,
    /// What other layers keep per broker ([`Broker::extension`]).
    extensions: std::sync::Mutex<Vec<Arc<dyn std::any::Any + Send + Sync>>>,
    outbox: outbox::Outbox,
    closing: watch::Sender<bool>,
    metrics: SharedMetrics,
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
        let ns = limits.namespace();
        // Boxed: the connect future (TLS, Sentinel, Cluster, the ACL check) is deep enough that
        // an app's `main` awaiting it inline overflowed rustc 1.95's query depth.
        let connect = redis::RedisBackend::connect(
            options,
            redis::Keys::new(ns),
            prefix_tag(ns),
            limits.retention(),
            limits.presence_ttl,
            hub.clone(),
            presence.clone(),
            metrics.clone(),
        );
        let backend =
            Box::pin(connect).await.map_err(|e| BrokerError::Connect { url: redact_url(options.url()), reason: e })?;
        Ok(Self::with_backend(limits, hub, presence, metrics, Box::new(backend)))
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
        let outbox = outbox::Outbox::new(limits.outbox_size.max(1));
        Self {
            inner: Arc::new(Inner {
                limits,
                log_tag,
                hub,
                presence,
                backend,
                groups: AtomicU32::new(0),
                extensions: std::sync::Mutex::default(),
                outbox,
                closing,
                metrics,
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
        &self.inner.metrics
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &BrokerLimits {
        &self.inner.limits
    }

    /// `"redis"` or `"memory"`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// The Redis command connection, for app data that must be shared like the events are.
    #[cfg(feature = "redis")]
    pub fn redis_connection(&self) -> Option<RedisConnection> {
        self.inner.backend.redis_connection()
    }

    /// A [`Publisher`] handle for app code that names no writer tab. For Leptos server
    /// functions in an HTTP app, hand them `sse_notify_axum::SseApp::publisher` instead, which names
    /// the tab of the request being handled.
    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.clone())
    }

    /// Whether the backend answers (always true in-process).
    pub async fn is_ready(&self) -> bool {
        self.inner.backend.ping().await
    }

    /// How many times the Redis Pub/Sub connection was re-established (0 in-process).
    pub fn redis_reconnects(&self) -> u64 {
        self.inner.metrics.redis_reconnects.get()
    }

    /// The broker's gauges, read now (the HTTP side adds its own, connections and clients).
    pub fn gauges(&self) -> metrics::BrokerGauges {
        let (queued, queued_max) = self.queued_events();
        let (presence_topics, presence_members) = self.inner.presence.counts();
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
        self.inner.hub.queued()
    }

    /// Topics with at least one local subscriber.
    pub fn subscribed_channels(&self) -> usize {
        self.inner.hub.len()
    }

    /// The cursor of the newest event now: a page that reads its data after taking it and
    /// resumes its stream from it misses nothing published in between (the server-rendering
    /// handoff).
    pub async fn head_cursor(&self) -> Result<String, BrokerError> {
        Ok(self.history(None).await?.head_cursor().to_string())
    }

    async fn history(&self, after: Option<LogPosition>) -> Result<History, BrokerError> {
        self.inner.backend.history(after).await.map_err(BrokerError::Unavailable)
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
        match self.publish_appended(valid_origin(origin), topics, event, data).await? {
            Appended::Confirmed => Ok(()),
            Appended::Unconfirmed => Err(PublishError::Unavailable),
        }
    }

    /// Publishes on behalf of the tab `origin`, and says whether the replicas asked for
    /// confirmed the event.
    pub(crate) async fn publish_appended(
        &self,
        origin: Option<Box<str>>,
        topics: &[Topic],
        event: &str,
        data: &serde_json::Value,
    ) -> Result<Appended, PublishError> {
        let started = std::time::Instant::now();
        let result = self.append(topics, event, data, origin).await;
        let m = &self.inner.metrics;
        match &result {
            Ok(appended) => {
                m.events_published.inc();
                m.publish_seconds.observe(started.elapsed().as_secs_f64());
                if *appended == Appended::Unconfirmed {
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
        &self,
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
        let limit = self.inner.limits.max_message_size;
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
        match self.inner.backend.append(names, body, origin).await {
            Ok(()) => Ok(Appended::Confirmed),
            Err(AppendError::Unconfirmed(e)) => {
                tracing::warn!(event, error = %e, "published, but not confirmed by the replicas asked for");
                Ok(Appended::Unconfirmed)
            }
            Err(AppendError::Unavailable(e)) => {
                tracing::warn!(event, error = %e, "publish to the backend failed");
                Err(PublishError::Unavailable)
            }
        }
    }

    /// Follows where `topics` stand in the log ([`Head`]), as the response cache needs: returns
    /// once they are live, so no later event of theirs passes unseen.
    pub async fn watch(&self, topics: &[Topic]) -> Result<TopicWatch, BrokerError> {
        let topics = distinct_topics(topics.iter().cloned());
        if topics.len() > MAX_TOPICS_PER_CONNECTION {
            return Err(BrokerError::TooManyTopics { asked: topics.len() });
        }
        let head = Arc::new(head::TopicHead::new());
        let ready = self.inner.hub.register_head(&head, &topics);
        let watch = TopicWatch { state: head.subscribe(), head, topics, broker: self.clone() };
        for (topic, ready) in &ready {
            let follow = || self.inner.backend.follow(topic, Follower::Watch);
            ready.get_or_try_init(follow).await.map_err(BrokerError::Unavailable)?;
        }
        watch.head.start(self.history(None).await?.head_cursor());
        Ok(watch)
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
        // Bit `i` of every frame's mask, live or replayed, is the `i`-th of these.
        let topics = distinct_topics(topics.iter().cloned());
        if topics.len() > MAX_TOPICS_PER_CONNECTION {
            return Err(BrokerError::TooManyTopics { asked: topics.len() });
        }
        let registration = self.inner.hub.register(group, &topics, self.inner.limits.max_queue_size);
        // From here on the guard cleans up, even if this future is dropped or fails.
        let mut guard =
            SubscriptionGuard { broker: self.clone(), inbox: registration.inbox, topics, presence: Vec::new() };
        for (topic, ready) in &registration.ready {
            if !ready.initialized() {
                self.inner.backend.hurry(topic); // a watch may have asked for it first
            }
            let follow = || self.inner.backend.follow(topic, Follower::Stream);
            ready.get_or_try_init(follow).await.map_err(BrokerError::Unavailable)?;
        }
        // Followed first: a Redis topic's members are loaded once its changes flow.
        let mut states = Vec::new();
        for (topic, member) in presence {
            let entered = self.inner.presence.enter(topic.as_str(), &guard.inbox, member.as_ref());
            if entered.load {
                self.inner.backend.presence_load(topic.as_str());
            }
            if let Some(member) = entered.join {
                self.inner.backend.presence_join(topic.as_str(), member);
            }
            // In the guard before the read below: if this future is dropped there, the stream
            // still leaves the topic.
            guard.presence.push((topic.clone(), member.map(|m| m.id)));
            // The state goes after the replay and before anything live. Members still loading
            // (the first stream of a Redis topic here) are read for this stream now; the load,
            // when it lands, sends every follower the state again (a reload, as the contract
            // allows), and the changes after it.
            let state = match entered.state.or_else(|| self.inner.presence.loaded_state(topic.as_str())) {
                Some(state) => Some(state),
                None => match self.inner.backend.presence_members(topic.as_str()).await {
                    Ok(members) => {
                        Some(presence::summary_frame(topic.as_str(), members, self.inner.limits.presence_max_listed))
                    }
                    Err(e) => {
                        tracing::debug!(topic = topic.as_str(), error = %e, "presence: state comes with the load");
                        None
                    }
                },
            };
            states.extend(state);
        }
        let mut sub = Subscription {
            first: VecDeque::new(),
            batch: VecDeque::new(),
            after: LogPosition::START,
            done: false,
            metrics: self.inner.metrics.clone(),
            guard,
        };
        // Subscribed before the log is read: whatever the read misses is already queued live,
        // and live events at or before what was replayed are skipped. One read serves every
        // case: the head for a fresh start or a resync, the events after a cursor of this log.
        let cursor = last_event_id.map(str::parse::<Cursor>);
        let after = match &cursor {
            Some(Ok(c)) if c.log.tag == self.inner.log_tag => Some(c.position),
            _ => None,
        };
        let h = self.history(after).await?;
        let resync = match cursor {
            None => {
                sub.first.push_back(Bytes::from(format!("id: {}\n\n", h.head_cursor())));
                None
            }
            Some(Err(_)) => Some(ResyncReason::MalformedCursor),
            Some(Ok(c)) if c.log.tag != self.inner.log_tag => Some(ResyncReason::ForeignCursor),
            Some(Ok(c)) if !h.covers(c.log, c.position) => Some(ResyncReason::UnknownCursor),
            Some(Ok(_)) if !h.complete => Some(ResyncReason::CursorTrimmed),
            Some(Ok(c)) => {
                sub.after = c.position;
                let mut replayed = 0;
                for event in &h.events {
                    let mask = sub.mask(&event.topics);
                    if mask != 0 {
                        sub.first.push_back(event.frame(mask));
                        replayed += 1;
                    }
                    sub.after = event.position;
                }
                self.inner.metrics.events_replayed.inc_by(replayed);
                self.inner.metrics.events_delivered.inc_by(replayed);
                None
            }
        };
        if let Some(reason) = resync {
            sub.first.push_back(resync_frame(reason, Some(&h.head_cursor().to_string()), sub.topics()));
            sub.after = h.head;
            self.inner.metrics.resynced(reason, 1);
        }
        sub.first.extend(states);
        Ok(sub)
    }

    /// Who is on `topic` now (presence), as the streams that see it are told: its members, or
    /// only their number above `SSE_PRESENCE_MAX_LISTED`. For a page the server renders with
    /// them in it.
    pub async fn presence_roster(&self, topic: &Topic) -> Result<Roster, BrokerError> {
        if let Some(roster) = self.inner.presence.roster(topic.as_str()) {
            return Ok(roster);
        }
        let members = self.inner.backend.presence_members(topic.as_str()).await.map_err(BrokerError::Unavailable)?;
        Ok(Roster::of(members, self.inner.limits.presence_max_listed))
    }

    /// Waits up to `within` for the presence changes still on their way to the backend (at
    /// shutdown: the members of the streams just closed leave now, not at the TTL); returns
    /// how many are still on their way.
    pub async fn flush_presence(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        while self.inner.backend.presence_pending() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.backend.presence_pending()
    }

    /// Asks every open stream to end, and every stream opened from now on (used at shutdown).
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
        self.inner.hub.close();
    }

    /// A new stream group: the streams of one endpoint, which its heartbeat and re-check
    /// tickers signal together.
    pub fn new_group(&self) -> u32 {
        self.inner.groups.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Raises `signals` on every local stream of `group`.
    pub fn raise(&self, group: u32, signals: Signals) {
        self.inner.hub.raise(group, signals);
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
        Box::pin(async move { self.publish_or_defer(topics, event, data).await.map(|_| ()) })
    }
}

/// `origin` when it is one ([`sse_notify_core::origin::is_origin`]).
fn valid_origin(origin: Option<&str>) -> Option<Box<str>> {
    origin.filter(|o| sse_notify_core::origin::is_origin(o)).map(Into::into)
}

/// Each topic once, in first-seen order.
pub fn distinct_topics(topics: impl IntoIterator<Item = Topic>) -> Vec<Topic> {
    let mut seen = std::collections::HashSet::new();
    topics.into_iter().filter(|t| seen.insert(t.clone())).collect()
}

/// `event: resync` naming `topics`, with the cursor to go on from.
fn resync_frame(reason: ResyncReason, head: Option<&str>, topics: &[Topic]) -> Bytes {
    let data = Resync::new(reason, topics.iter().map(Topic::as_str)).to_json();
    Bytes::from(sse_notify_core::wire::encode_event(head, RESYNC_EVENT, &data).expect("valid frame"))
}

/// One stream's events: first what it missed (or a `resync`), then live ones, each once.
pub struct Subscription {
    first: VecDeque<Bytes>,
    /// Deliveries taken from the inbox in one go, sent one by one.
    batch: VecDeque<Delivery>,
    /// Live events at or before this position were replayed or are covered by a resync.
    after: LogPosition,
    done: bool,
    metrics: SharedMetrics,
    /// Also holds the stream's inbox and its topics (their one copy).
    guard: SubscriptionGuard,
}

impl Subscription {
    /// The topics, in the order their bits appear in each frame's cursor.
    pub fn topics(&self) -> &[Topic] {
        &self.guard.topics
    }

    fn mask(&self, event_topics: &[String]) -> u64 {
        let mut mask = 0;
        for (bit, t) in self.topics().iter().enumerate() {
            if event_topics.iter().any(|e| e == t.as_str()) {
                mask |= 1 << bit;
            }
        }
        mask
    }

    /// The next frame; `None` after the stream was cut off for reading too slowly.
    pub async fn next_frame(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_frame(cx)).await
    }

    /// Takes the heartbeat and re-check signals raised for this stream since the last call.
    pub fn take_signals(&self) -> Signals {
        self.guard.inbox.take_signals()
    }

    /// Polls for the next frame (see [`Subscription::next_frame`]). Ends when the broker is
    /// closed.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.done || self.guard.inbox.is_closed() {
            self.done = true;
            return Poll::Ready(None);
        }
        if let Some((head, dropped)) = self.guard.inbox.overflowed() {
            // Too slow: what is queued is dropped. The resync covers everything up to the first
            // event that did not fit (the client refetches after receiving it), and its id
            // resumes right after that event.
            self.done = true;
            let dropped = dropped + self.batch.len() as u64;
            tracing::info!(dropped, "slow SSE consumer cut off");
            self.metrics.events_dropped.inc_by(dropped);
            self.metrics.slow_consumer_disconnects.inc();
            self.metrics.resynced(ResyncReason::SlowConsumer, 1);
            // (No event to name when what overflowed was a resync: then the client resumes from
            // its last id, and a replay may repeat a few events; a duplicate refetch, not a miss.)
            let head = (!head.is_empty()).then(|| format!("{head}0"));
            return Poll::Ready(Some(resync_frame(ResyncReason::SlowConsumer, head.as_deref(), self.topics())));
        }
        if let Some(frame) = self.first.pop_front() {
            return Poll::Ready(Some(frame));
        }
        loop {
            let Some(next) = self.batch.pop_front() else {
                match self.guard.inbox.poll_take(&mut self.batch, cx) {
                    Poll::Ready(()) if self.batch.is_empty() => {
                        // A signal is waiting.
                        if self.guard.inbox.is_closed() {
                            self.done = true;
                            return Poll::Ready(None);
                        }
                        // A heartbeat or re-check, for the endpoint that takes them: poll again
                        // at once (a plain subscription's group is never signalled).
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Poll::Ready(()) => continue,
                    Poll::Pending => return Poll::Pending,
                }
            };
            return match next {
                Delivery::Event(position, frame) => {
                    if position <= self.after {
                        continue;
                    }
                    self.after = position;
                    self.metrics.events_delivered.inc();
                    Poll::Ready(Some(frame))
                }
                Delivery::Resync(reason, head) => {
                    self.after = head.position;
                    Poll::Ready(Some(resync_frame(reason, Some(&head.to_string()), self.topics())))
                }
                // Positions up to `kept` are the same events in both epochs, and the new
                // epoch's go on above `kept`: a stream at or before it goes on comparing. One
                // past it (it replayed from the log what this instance had not delivered yet)
                // saw events the new log lost, whose positions the new epoch may issue again:
                // comparing would drop new events as seen.
                Delivery::Forked { kept, .. } if self.after <= kept => continue,
                Delivery::Forked { head, .. } => {
                    self.after = head.position;
                    let reason = ResyncReason::BrokerReconnected;
                    Poll::Ready(Some(resync_frame(reason, Some(&head.to_string()), self.topics())))
                }
                Delivery::Presence(frame) => Poll::Ready(Some(frame)),
            };
        }
    }
}

/// Where some topics stand ([`Broker::watch`]); they are followed until it is dropped.
pub struct TopicWatch {
    head: Arc<head::TopicHead>,
    state: watch::Receiver<Head>,
    topics: Vec<Topic>,
    broker: Broker,
}

impl TopicWatch {
    /// The head now.
    pub fn now(&self) -> Head {
        *self.state.borrow()
    }

    /// Waits until `ready(head)` holds, for at most `limit`; the head then.
    pub async fn wait_for(&self, limit: Duration, ready: impl Fn(&Head) -> bool) -> Option<Head> {
        let mut state = self.state.clone();
        let waited = tokio::time::timeout(limit, state.wait_for(|h| ready(h))).await;
        waited.ok().and_then(Result::ok).map(|h| *h)
    }
}

impl Drop for TopicWatch {
    fn drop(&mut self) {
        let inner = &self.broker.inner;
        inner.hub.release_head(&self.head, &self.topics, |topic| inner.backend.unfollow(topic));
    }
}

/// Removes the stream from the hub, and unsubscribes topics no stream follows any more; the
/// stream's member leaves the topics it was the last stream of here.
struct SubscriptionGuard {
    broker: Broker,
    inbox: Arc<Inbox>,
    topics: Vec<Topic>,
    /// Topics whose presence the stream sees, and the member it is there.
    presence: Vec<(Topic, Option<String>)>,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        let inner = &self.broker.inner;
        for (topic, member) in &self.presence {
            if let Some(id) = inner.presence.exit(topic.as_str(), self.inbox.id(), member.as_deref()) {
                inner.backend.presence_leave(topic.as_str(), id);
            }
        }
        inner.hub.release(&self.inbox, &self.topics, |topic| inner.backend.unfollow(topic));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Vec<Topic> {
        names.iter().map(|n| Topic::new(*n).unwrap()).collect()
    }

    fn mask(frame: &Bytes) -> u64 {
        let text = std::str::from_utf8(frame).unwrap();
        let id = text.lines().next().and_then(|l| l.strip_prefix("id: ")).expect("an id line");
        id.parse::<Cursor>().unwrap().matched
    }

    #[test]
    fn a_forked_log_covers_an_old_epoch_up_to_its_fork_and_nothing_past_the_head() {
        let at = |ms| LogPosition { ms, seq: 0 };
        let (now, before, other) = (LogId { tag: 1, epoch: 9 }, LogId { tag: 1, epoch: 7 }, LogId { tag: 2, epoch: 9 });
        let h = History { log: now, head: at(50), complete: true, events: Vec::new(), forks: vec![(7, at(30))] };
        assert!(h.covers(now, at(50)) && !h.covers(now, at(51)), "this epoch: up to the head");
        assert!(h.covers(before, at(30)) && !h.covers(before, at(31)), "the forked epoch: up to its fork");
        assert!(!h.covers(LogId { tag: 1, epoch: 8 }, at(1)), "an epoch this log never had");
        assert!(!h.covers(other, at(1)), "another prefix's log");
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
            broker.inner.hub.deliver(&event(old, ms));
            past.next_frame().await.unwrap();
        }
        let mut within = broker.subscribe(&board, None).await.unwrap();
        within.next_frame().await.unwrap(); // at the (empty) log's head, before the fork
        let head = Cursor { log: new, position: at(60), matched: 0 };
        broker.inner.hub.forked_all(at(50), head);
        broker.inner.hub.deliver(&event(new, 70));
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
