//! The Redis backend: one stream per prefix as the ordered event log, Pub/Sub for fan-out.
//!
//! Per instance there is exactly one subscription connection, shared by all local streams, and
//! one multiplexed command connection. A publish is one script: `XADD` to the prefix's log
//! (which assigns the position), trim it, then `PUBLISH` the same message on each topic's
//! channel. The message carries the log epoch, the position and all topics of the event, so an
//! instance that receives it on two channels delivers it once, and every stream learns which
//! topics it matched.
//!
//! The shapes of deployment (one server, Sentinel, Cluster) are peers behind one interface
//! ([`shape::Shape`]): each says how it connects, subscribes and notices a gap; the log
//! (`event_log.rs`), catch-up (`follow.rs`), presence and the asks of the subscriber loop
//! (`control.rs`) are the same for all.

mod access;
mod cluster;
mod connection;
mod control;
mod event_log;
mod follow;
mod keys;
mod presence;
mod primary;
mod shape;
mod single;

pub use access::RedisOptions;
pub use connection::RedisConnection;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use sse_notify_core::cursor::{prefix_tag, Cursor, LogPosition};
use sse_notify_core::presence::Member;

use crate::backend::{AppendError, Backend, Follower};
use crate::error::BackendError;
use crate::hub::Hub;
use crate::log::{History, Retention};
use crate::metrics::SharedMetrics;
use crate::presence::PresenceBook;
use access::Deployment;
use event_log::EventLog;
use follow::Follow;
use keys::Keys;
use shape::Shape;

/// How long start-up waits for Redis to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the broker sets a Redis backend up with.
pub(crate) struct Setup {
    /// The prefix's namespace ([`crate::BrokerLimits`]).
    pub(crate) namespace: String,
    pub(crate) retention: Retention,
    pub(crate) presence_ttl: Duration,
    pub(crate) hub: Arc<Hub>,
    pub(crate) book: Arc<PresenceBook>,
    pub(crate) metrics: SharedMetrics,
}

pub(super) struct RedisBackend {
    log: EventLog,
    /// Whether the shape's subscriptions are up and caught up ([`Follow::set_up`]).
    subscribed: Arc<AtomicBool>,
    control: control::Asks,
    /// `"redis"`, `"redis-sentinel"` or `"redis-cluster"`.
    name: &'static str,
    /// Told of each write accepted here: its event comes back through Pub/Sub later.
    hub: Arc<Hub>,
    presence: Arc<presence::RedisPresence>,
}

impl RedisBackend {
    /// Connects to the deployment `options` name, checks that the Redis user may do what the
    /// broker needs, and starts following the log.
    pub(super) async fn connect(options: &RedisOptions, setup: Setup) -> Result<Self, BackendError> {
        match options.deployment() {
            Deployment::Single => Self::connect_as::<single::Single>(options, setup).await,
            Deployment::Cluster => Self::connect_as::<cluster::Cluster>(options, setup).await,
        }
    }

    async fn connect_as<S: Shape>(options: &RedisOptions, setup: Setup) -> Result<Self, BackendError> {
        let Setup { namespace, retention, presence_ttl, hub, book, metrics } = setup;
        let (keys, log_tag) = (Keys::new(&namespace), prefix_tag(&namespace));
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, S::connect(options));
        let connected =
            connect.await.map_err(|_| BackendError::Timeout { during: "connecting", after: CONNECT_TIMEOUT });
        let (conn, mut shape) = connected??;
        access::check_acl(&conn, &keys, S::FANOUT).await?;
        shape.probe_channels(&keys).await?;
        let name = shape.name();
        let presence = presence::RedisPresence::new(conn.clone(), keys.clone(), S::FANOUT, presence_ttl, book);
        let log = EventLog::new(conn, keys, log_tag, retention, S::FANOUT, options.replicas_to_wait_for());
        // Where this instance stands in the log: a gap later is caught up from here.
        let subscribed = Arc::new(AtomicBool::new(false));
        let follow = Follow::start(log.clone(), hub.clone(), metrics, presence.clone(), subscribed.clone()).await?;
        let (control, commands) = control::channel();
        tokio::spawn(shape.run(follow, commands));
        Ok(Self { log, subscribed, control, name, hub, presence })
    }

    /// The command connection, which the broker hands to the app for its own shared data.
    pub(crate) fn connection(&self) -> RedisConnection {
        self.log.conn.clone()
    }

    async fn subscribe(&self, channel: String, follower: Follower) -> Result<(), BackendError> {
        let answer = self.control.subscribe(channel, follower);
        answer.await.map_err(|_| BackendError::Stopped)?
    }

    /// Whether Redis answers commands, and the subscriptions are up.
    async fn ping_now(&self) -> bool {
        if !self.subscribed.load(Ordering::Acquire) {
            return false;
        }
        let mut conn = self.log.conn.clone();
        let ping = redis::cmd("PING");
        let answer = tokio::time::timeout(Duration::from_secs(1), ping.query_async::<String>(&mut conn)).await;
        matches!(answer, Ok(Ok(_)))
    }
}

impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    fn append(
        &self,
        topics: Vec<String>,
        body: String,
        origin: Option<Box<str>>,
    ) -> BoxFuture<'_, Result<Cursor, AppendError>> {
        async move {
            let appended = self.log.append(&topics, body, origin.as_deref()).await;
            if !matches!(appended, Err(AppendError::Unavailable(_))) {
                // In the log (confirmed or not): answers kept from before it are stale now.
                self.hub.touch(&topics);
            }
            appended
        }
        .boxed()
    }

    fn history(&self, after: Option<LogPosition>) -> BoxFuture<'_, Result<History, BackendError>> {
        self.log.history(after).boxed()
    }

    fn follow<'a>(&'a self, topic: &'a str, follower: Follower) -> BoxFuture<'a, Result<(), BackendError>> {
        self.subscribe(self.log.keys.channel(topic), follower).boxed()
    }

    fn hurry(&self, topic: &str) {
        self.control.hurry(&self.log.keys.channel(topic));
    }

    fn unfollow(&self, topic: &str) {
        self.control.unsubscribe(self.log.keys.channel(topic));
    }

    fn presence_load(&self, topic: &str) {
        // An instance whose streams watch presence sweeps out dead instances' members too.
        self.presence.start_reporting();
        self.control.load_presence(topic.to_owned());
    }

    fn presence_join(&self, topic: &str, member: Member) {
        self.presence.spawn_join(topic, member);
    }

    fn presence_leave(&self, topic: &str, id: String) {
        self.presence.spawn_leave(topic, id);
    }

    fn presence_pending(&self) -> usize {
        self.presence.pending()
    }

    fn presence_members<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Vec<Member>, BackendError>> {
        // An instance that shows presence (a page it renders) sweeps out dead instances'
        // members too, as one whose streams watch it does: else, with no such stream here,
        // its pages would list a crashed instance's members for good.
        self.presence.start_reporting();
        self.presence.members(topic).boxed()
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        self.ping_now().boxed()
    }
}
