//! The Redis backend: one stream per prefix as the ordered event log, Pub/Sub for fan-out.
//!
//! Per instance there is exactly one Pub/Sub connection, shared by all local streams, and one
//! multiplexed command connection. A publish is one script: `XADD` to the prefix's log (which
//! assigns the position), trim it, then `PUBLISH` the same message on each topic's channel. The
//! message carries the log epoch, the position and all topics of the event, so an instance that
//! receives it on two channels delivers it once, and every stream learns which topics it matched.
//!
//! One log per prefix rather than a stream per topic: a single position resumes any set of
//! topics (a cursor stays 63 bytes for 64 topics), replay is one `XRANGE`, and live events merge
//! with replayed ones by comparing positions.

mod access;
mod cluster;
mod control;
mod presence;
mod primary;

pub use access::RedisOptions;
pub use primary::RedisConnection;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use futures::StreamExt;
use redis::Value;
use sse_notify_core::cursor::{LogId, LogPosition};
use sse_notify_core::origin::is_origin;
use sse_notify_core::wire::ResyncReason;
use std::collections::HashSet;

use super::backend::{AppendError, Backend, Follower};
use super::hub::{Hub, LogEvent};
use super::presence::PresenceBook;
use crate::log::{random_epoch, unix_ms, History, Retention};
use crate::metrics::SharedMetrics;
use control::{Commands, Control};

/// Both scripts begin by reading the log's epoch (KEYS[2]), creating it from the caller's random
/// candidate (ARGV[1]) when the log is new or Redis lost it, and by making sure the server they
/// run on is the one that wrote the log.
///
/// A replica promoted by a failover (or a server restarted from an older snapshot) holds the log
/// up to some position and may have lost entries after it that streams already saw. Its
/// replication id (`master_replid`) differs from the one recorded with the log (KEYS[5]), so the
/// first script to run on it forks the log: the old epoch is recorded (KEYS[4], a hash from old
/// epoch to the last position the new server holds of it) and a new epoch starts. A cursor of
/// the old epoch up to that position still resumes exactly (those entries are here); one past it
/// points into what was lost and gets a resync; and positions issued from now on carry the new
/// epoch, so they never pass for lost ones, whatever the new server's clock says. A fork caps
/// older forks at its position too (the lost entries may go back further than theirs), and
/// only the newest 32 are kept.
macro_rules! with_epoch {
    ($body:literal) => {
        concat!(
            r#"
local function older(a, b)
  local ams, aseq = string.match(a, '(%d+)-(%d+)')
  local bms, bseq = string.match(b, '(%d+)-(%d+)')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end
local epoch = redis.call('GET', KEYS[2])
local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)')
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  redis.call('SET', KEYS[5], replid)
elseif redis.call('GET', KEYS[5]) ~= replid then
  local head = redis.call('GET', KEYS[3]) or '0-0'
  local forks = redis.call('HGETALL', KEYS[4])
  local oldest, oldest_at = nil, nil
  for i = 1, #forks, 2 do
    if older(head, forks[i + 1]) then
      redis.call('HSET', KEYS[4], forks[i], head)
      forks[i + 1] = head
    end
    if not oldest or older(forks[i + 1], oldest_at) then
      oldest, oldest_at = forks[i], forks[i + 1]
    end
  end
  if #forks >= 64 then
    redis.call('HDEL', KEYS[4], oldest)
  end
  redis.call('HSET', KEYS[4], epoch, head)
  local next = ARGV[1]
  if next == epoch then
    next = tostring((tonumber(epoch) + 1) % 4294967296)
  end
  epoch = next
  redis.call('SET', KEYS[2], epoch)
  redis.call('SET', KEYS[5], replid)
end
"#,
            $body
        )
    };
}

/// KEYS: log, epoch, head, forks, writer.
/// ARGV: epoch candidate, frame body, topics (comma-separated), max events, oldest ms kept,
/// `PUBLISH` or `SPUBLISH` (a cluster's sharded Pub/Sub), the writer's origin ('' = none),
/// channel1, channel2, ... (channels are
/// not keys: an ACL user needs key patterns for the log's keys only, and channel patterns for
/// the channels).
/// Each entry links back to the one before it (`p`): trimming only ever removes the oldest
/// entries, so history after a position is complete exactly when the first entry after it still
/// links back to it. (`XINFO`'s `max-deleted-entry-id` does not follow trimming.)
/// Returns the number of Pub/Sub receivers.
const PUBLISH_SCRIPT: &str = with_epoch!(
    r#"
local prev = redis.call('GET', KEYS[3]) or '0-0'
local id
local msg
if ARGV[7] == '' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 't', ARGV[3], 'p', prev, 'f', ARGV[2])
  msg = epoch .. ' ' .. id .. ' ' .. ARGV[3] .. '\n' .. ARGV[2]
else
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 't', ARGV[3], 'p', prev, 'f', ARGV[2], 'o', ARGV[7])
  msg = epoch .. ' ' .. id .. ' ' .. ARGV[3] .. ' ' .. ARGV[7] .. '\n' .. ARGV[2]
end
redis.call('SET', KEYS[3], id)
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[5])
local n = 0
for i = 8, #ARGV do
  n = n + redis.call(ARGV[6], ARGV[i], msg)
end
return n
"#
);

/// KEYS: log, epoch, head, forks, writer.  ARGV: epoch candidate, position to read after
/// ('' = none), max entries.
/// Returns {epoch, head, entries after the position, forks (old epoch, position, ...)}, atomically.
const HISTORY_SCRIPT: &str = with_epoch!(
    r#"
local head = redis.call('GET', KEYS[3]) or '0-0'
local entries = {}
if ARGV[2] ~= '' then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[3])
end
return {epoch, head, entries, redis.call('HGETALL', KEYS[4])}
"#
);

/// How events fan out to instances: plain Pub/Sub, or a cluster's sharded Pub/Sub, where a
/// channel lives on the shard that owns its slot (plain `PUBLISH` in a cluster reaches every
/// node).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Fanout {
    Plain,
    Sharded,
}

impl Fanout {
    fn publish_command(self) -> &'static str {
        match self {
            Fanout::Plain => "PUBLISH",
            Fanout::Sharded => "SPUBLISH",
        }
    }
}

/// Waits between reconnect attempts: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Redis names of one prefix: its log, the log's epoch, head, forks and writer, and its
/// channels. The namespace and the topic are joined by `/`, which no topic or prefix may contain,
/// so no topic a client can name is a channel of another prefix; an empty prefix is the
/// namespace `sse`. The namespace is each name's hash tag (`{...}`): in a Redis Cluster all of a
/// prefix's keys and channels live in one slot, so a publish stays one script on one shard with
/// its log entry, and different prefixes spread over the shards.
#[derive(Clone)]
pub(super) struct Keys {
    namespace: String,
}

impl Keys {
    pub(super) fn new(namespace: &str) -> Self {
        Self { namespace: namespace.to_owned() }
    }

    pub(super) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(super) fn log(&self) -> String {
        format!("sse-log/{{{}}}", self.namespace)
    }

    pub(super) fn epoch(&self) -> String {
        format!("sse-epoch/{{{}}}", self.namespace)
    }

    pub(super) fn head(&self) -> String {
        format!("sse-head/{{{}}}", self.namespace)
    }

    pub(super) fn forks(&self) -> String {
        format!("sse-forks/{{{}}}", self.namespace)
    }

    pub(super) fn writer(&self) -> String {
        format!("sse-writer/{{{}}}", self.namespace)
    }

    /// The keys every script takes, in order: log, epoch, head, forks, writer.
    pub(super) fn all(&self) -> [String; 5] {
        [self.log(), self.epoch(), self.head(), self.forks(), self.writer()]
    }

    /// Adds [`Keys::all`] to a script call.
    pub(super) fn script_keys(&self, inv: &mut redis::ScriptInvocation<'_>) {
        for key in self.all() {
            inv.key(key);
        }
    }

    pub(super) fn channel(&self, topic: &str) -> String {
        format!("{{{}}}/{topic}", self.namespace)
    }
}

#[derive(Clone)]
struct Shared {
    conn: RedisConnection,
    keys: Keys,
    log_tag: u16,
    retention: Retention,
    history_script: redis::Script,
}

impl Shared {
    /// The log's head and, with `after`, what follows it (at most what is retained).
    async fn history(&self, after: Option<LogPosition>) -> Result<History, String> {
        let limit = self.retention.max_events + 1000;
        let mut inv = self.history_script.prepare_invoke();
        self.keys.script_keys(&mut inv);
        inv.arg(random_epoch()).arg(after.map(|p| p.to_string()).unwrap_or_default()).arg(limit);
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = inv.invoke_async(&mut conn).await.map_err(|e| e.to_string())?;
        let [epoch, head, entries, forks] = <[Value; 4]>::try_from(reply).map_err(|_| "bad history reply")?;
        let epoch: u32 = text(&epoch).and_then(|s| s.parse().ok()).ok_or("bad epoch")?;
        let head: LogPosition = text(&head).and_then(|s| s.parse().ok()).ok_or("bad stream id")?;
        let log = LogId { tag: self.log_tag, epoch };
        let Value::Array(entries) = entries else { return Err("bad entries".into()) };
        let entries = entries.iter().map(|e| entry_event(log, e)).collect::<Option<Vec<_>>>().ok_or("bad entry")?;
        let complete = match (after, entries.first()) {
            (None, _) => true,
            // Nothing between the position and the first retained entry after it was trimmed.
            (Some(after), Some((_, prev))) => *prev == after && entries.len() < limit,
            // Nothing after it retained: complete if it is the head. (A position past the head
            // was lost with a server's last writes.)
            (Some(after), None) => head == after,
        };
        let Value::Array(forks) = forks else { return Err("bad forks".into()) };
        let forks = forks
            .chunks(2)
            .map(|pair| Some((text(&pair[0])?.parse().ok()?, text(pair.get(1)?)?.parse().ok()?)))
            .collect::<Option<Vec<_>>>()
            .ok_or("bad fork")?;
        Ok(History { log, head, complete, events: entries.into_iter().map(|(e, _)| e).collect(), forks })
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// One `XRANGE` entry (`[id, ['t', topics, 'p', previous id, 'f', body, ('o', origin)]]`) as an event, and the
/// position of the entry before it.
fn entry_event(log: LogId, entry: &Value) -> Option<(Arc<LogEvent>, LogPosition)> {
    let Value::Array(parts) = entry else { return None };
    let [id, Value::Array(fields)] = parts.as_slice() else { return None };
    let position: LogPosition = text(id)?.parse().ok()?;
    let (mut topics, mut prev, mut body, mut origin) = (None, None, None, None);
    for pair in fields.chunks(2) {
        match (text(&pair[0])?.as_str(), pair.get(1)) {
            ("t", Some(v)) => topics = text(v),
            ("p", Some(v)) => prev = text(v).and_then(|p| p.parse().ok()),
            ("f", Some(Value::BulkString(b))) => body = Some(Bytes::copy_from_slice(b)),
            ("o", Some(v)) => origin = text(v).filter(|o| is_origin(o)),
            _ => {}
        }
    }
    let topics = topics?.split(',').map(str::to_owned).collect();
    let event = LogEvent::new(log, position, topics, body?, origin.as_deref());
    Some((Arc::new(event), prev?))
}

/// A Pub/Sub message (`<epoch> <position> <topics>[ <origin>]\n<body>`) as an event of its log.
fn message_event(log_tag: u16, payload: &[u8]) -> Option<(LogId, Arc<LogEvent>)> {
    let newline = payload.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&payload[..newline]).ok()?;
    let mut parts = head.splitn(4, ' ');
    let epoch: u32 = parts.next()?.parse().ok()?;
    let position: LogPosition = parts.next()?.parse().ok()?;
    let topics = parts.next()?.split(',').map(str::to_owned).collect();
    let origin = parts.next().filter(|o| is_origin(o));
    let log = LogId { tag: log_tag, epoch };
    let body = Bytes::copy_from_slice(&payload[newline + 1..]);
    Some((log, Arc::new(LogEvent::new(log, position, topics, body, origin))))
}

pub(super) struct RedisBackend {
    shared: Shared,
    control: control::Asks,
    publish_script: redis::Script,
    /// `SSE_REDIS_MIN_REPLICAS` and how long to wait for them.
    min_replicas: Option<(usize, Duration)>,
    fanout: Fanout,
    /// `"redis"`, `"redis-sentinel"` or `"redis-cluster"`.
    name: &'static str,
    /// Told of each write accepted here: its event comes back through Pub/Sub later.
    hub: Arc<Hub>,
    presence: Arc<presence::RedisPresence>,
}

impl RedisBackend {
    pub(super) async fn connect(
        options: &RedisOptions,
        keys: Keys,
        log_tag: u16,
        retention: Retention,
        presence_ttl: Duration,
        hub: Arc<Hub>,
        book: Arc<PresenceBook>,
        metrics: SharedMetrics,
    ) -> Result<Self, String> {
        let (control, commands) = control::channel();
        let history_script = redis::Script::new(HISTORY_SCRIPT);
        let (shared, fanout, name, presence) = if options.is_cluster() {
            let (conn, mut subscriptions, pushes) = within_connect_timeout(cluster::connect(options)).await?;
            check_acl(&conn, &keys, Fanout::Sharded).await?;
            let channel = access::probe_channel(&keys);
            let refused = |e: redis::RedisError| access::refused(&keys, Fanout::Sharded, format!("SSUBSCRIBE: {e}"));
            subscriptions.ssubscribe(&channel).await.map_err(refused)?;
            subscriptions.sunsubscribe(&channel).await.map_err(refused)?;
            let shared = Shared { conn, keys, log_tag, retention, history_script };
            // Where this instance stands in the log: a reconnect catches up from here.
            let start = shared.history(None).await?;
            let follow = Follow::new(&shared, &hub, metrics, Fanout::Sharded, presence_ttl, book.clone());
            let presence = follow.presence.clone();
            tokio::spawn(cluster::subscriber_loop(follow, subscriptions, pushes, (start.log, start.head), commands));
            (shared, Fanout::Sharded, "redis-cluster", presence)
        } else {
            let locator = Arc::new(options.locator()?);
            let (conn, mut pubsub) = within_connect_timeout(async {
                Ok((RedisConnection::connect(locator.clone()).await?, connect_pubsub(&locator).await?))
            })
            .await?;
            check_acl(&conn, &keys, Fanout::Plain).await?;
            let channel = access::probe_channel(&keys);
            let refused = |e: redis::RedisError| access::refused(&keys, Fanout::Plain, format!("SUBSCRIBE: {e}"));
            pubsub.subscribe(&channel).await.map_err(refused)?;
            pubsub.unsubscribe(&channel).await.map_err(refused)?;
            primary::watch_sentinels(&conn);
            let shared = Shared { conn, keys, log_tag, retention, history_script };
            let start = shared.history(None).await?;
            let name = if locator.follows_failovers() { "redis-sentinel" } else { "redis" };
            let follow = Follow::new(&shared, &hub, metrics, Fanout::Plain, presence_ttl, book.clone());
            let presence = follow.presence.clone();
            tokio::spawn(subscriber_loop(follow, locator, pubsub, (start.log, start.head), commands));
            (shared, Fanout::Plain, name, presence)
        };
        let min_replicas = options.replicas_to_wait_for();
        let publish_script = redis::Script::new(PUBLISH_SCRIPT);
        Ok(Self { shared, control, publish_script, min_replicas, fanout, name, hub, presence })
    }

    async fn subscribe(&self, channel: String, follower: Follower) -> Result<(), String> {
        let answer = self.control.subscribe(channel, follower);
        answer.await.map_err(|_| "redis subscriber task stopped".to_owned())?
    }

    async fn publish(&self, topics: &[String], body: String, origin: Option<&str>) -> Result<(), AppendError> {
        let keys = &self.shared.keys;
        let retention = &self.shared.retention;
        let mut args = vec![
            random_epoch().to_string(),
            body,
            topics.join(","),
            retention.max_events.to_string(),
            unix_ms().saturating_sub(retention.max_age_ms).to_string(),
            self.fanout.publish_command().to_owned(),
            origin.unwrap_or_default().to_owned(),
        ];
        args.extend(topics.iter().map(|t| keys.channel(t)));
        let mut conn = self.shared.conn.clone();
        let Some((replicas, wait)) = self.min_replicas else {
            let mut inv = self.publish_script.prepare_invoke();
            keys.script_keys(&mut inv);
            for arg in &args {
                inv.arg(arg);
            }
            return inv
                .invoke_async::<i64>(&mut conn)
                .await
                .map(drop)
                .map_err(|e| AppendError::Unavailable(e.to_string()));
        };
        // The script and WAIT in one pipeline: WAIT counts the replicas that hold every write
        // of its connection, so it must follow the script on the same one.
        let mut pipe = redis::pipe();
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(self.publish_script.get_hash()).arg(5).arg(&keys.all()[..]);
        evalsha.arg(&args);
        pipe.add_command(evalsha).add_command(redis::cmd("WAIT").arg(replicas).arg(wait.as_millis() as u64).clone());
        let mut reply = pipe.query_async::<(i64, i64)>(&mut conn).await;
        if matches!(&reply, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)) {
            self.publish_script.load_async(&mut conn).await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
            reply = pipe.query_async::<(i64, i64)>(&mut conn).await;
        }
        let (_, acknowledged) = reply.map_err(|e| AppendError::Unavailable(e.to_string()))?;
        if acknowledged < replicas as i64 {
            // In the log and sent, but a failover now could lose it: the publisher decides
            // (`Broker::publish_or_defer` publishes it once more, at most).
            return Err(AppendError::Unconfirmed(format!(
                "only {acknowledged} of the {replicas} replicas SSE_REDIS_MIN_REPLICAS asks for hold the event after {wait:?}"
            )));
        }
        Ok(())
    }

    async fn ping_now(&self) -> bool {
        let mut conn = self.shared.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(Duration::from_secs(1), ping).await, Ok(Ok(_)))
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
    ) -> BoxFuture<'_, Result<(), AppendError>> {
        async move {
            let appended = self.publish(&topics, body, origin.as_deref()).await;
            if !matches!(appended, Err(AppendError::Unavailable(_))) {
                // In the log (confirmed or not): answers kept from before it are stale now.
                self.hub.touch(&topics);
            }
            appended
        }
        .boxed()
    }

    fn history(&self, after: Option<LogPosition>) -> BoxFuture<'_, Result<History, String>> {
        self.shared.history(after).boxed()
    }

    fn follow<'a>(&'a self, topic: &'a str, follower: Follower) -> BoxFuture<'a, Result<(), String>> {
        self.subscribe(self.shared.keys.channel(topic), follower).boxed()
    }

    fn hurry(&self, topic: &str) {
        self.control.hurry(&self.shared.keys.channel(topic));
    }

    fn unfollow(&self, topic: &str) {
        self.control.unsubscribe(self.shared.keys.channel(topic));
    }

    fn presence_load(&self, topic: &str) {
        // An instance whose streams watch presence sweeps out dead instances' members too.
        self.presence.start_reporting();
        self.control.load_presence(topic.to_owned());
    }

    fn presence_join(&self, topic: &str, member: sse_notify_core::presence::Member) {
        self.presence.spawn_join(topic, member);
    }

    fn presence_leave(&self, topic: &str, id: String) {
        self.presence.spawn_leave(topic, id);
    }

    fn presence_pending(&self) -> usize {
        self.presence.pending()
    }

    fn presence_members<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Vec<sse_notify_core::presence::Member>, String>> {
        // An instance that shows presence (a page it renders) sweeps out dead instances'
        // members too, as one whose streams watch it does: else, with no such stream here,
        // its pages would list a crashed instance's members for good.
        self.presence.start_reporting();
        self.presence.members(topic).boxed()
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        self.ping_now().boxed()
    }

    fn redis_connection(&self) -> Option<RedisConnection> {
        Some(self.shared.conn.clone())
    }
}

/// Fails start-up, naming what was refused, when the Redis user may not run every command the
/// broker needs or use its keys and channels: better than a publish that fails at the first
/// write, or a stream that never gets an event.
/// `connect`, or an error if it takes longer than start-up may wait for Redis.
async fn within_connect_timeout<T>(connect: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(Duration::from_secs(10), connect).await.map_err(|_| "timed out after 10 s".to_owned())?
}

/// The channel commands are checked by the caller, on its Pub/Sub connection.
async fn check_acl(conn: &RedisConnection, keys: &Keys, fanout: Fanout) -> Result<(), String> {
    let refused = |what: String| access::refused(keys, fanout, what);
    let mut conn = conn.clone();
    redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(|e| refused(format!("PING: {e}")))?;
    let script = redis::Script::new(access::PROBE_SCRIPT);
    let mut probe = script.prepare_invoke();
    keys.script_keys(&mut probe);
    probe.arg(access::probe_channel(keys)).arg(fanout.publish_command());
    let calls: Vec<String> = probe.invoke_async(&mut conn).await.map_err(|e| refused(format!("its scripts: {e}")))?;
    if !calls.is_empty() {
        return Err(refused(format!("to run {} from a script", calls.join(", "))));
    }
    Ok(())
}

/// What this instance has handed to its streams so far: a message at or before it is a
/// duplicate (an event published on two channels this instance follows, or one already caught
/// up from the log after a reconnect).
struct Delivered {
    log: LogId,
    position: LogPosition,
}

impl Delivered {
    fn deliver(&mut self, hub: &Hub, event: Arc<LogEvent>, log: LogId) {
        if log == self.log && event.position <= self.position {
            return;
        }
        self.log = log;
        self.position = event.position;
        hub.deliver(&event);
    }
}

/// Owns the instance's one Pub/Sub connection for its whole life: applies SUBSCRIBE and
/// UNSUBSCRIBE as asked (`control`: a stream's first), and when the connection drops, reconnects
/// with backoff, resubscribes every topic that still has local streams, and catches up from the
/// log: what was published meanwhile is delivered from history, or, when history no longer
/// holds it (trimmed, or Redis lost its data), every local stream is told to `resync`.
///
/// When the primary moves (Sentinel), the connection is dropped and made again to the new one.
///
/// Hand-written rather than `ConnectionManager`'s automatic resubscription: the manager only
/// notices a dead connection on the next command it sends, and a subscribe-only connection may
/// send none for hours; and the catch-up needs to happen between resubscribing and reading.
async fn subscriber_loop(
    follow: Follow,
    locator: Arc<primary::Locator>,
    first: redis::aio::PubSub,
    start: (LogId, LogPosition),
    mut commands: Commands,
) {
    let Follow { shared, hub, metrics, presence } = follow;
    // The channels subscribed on the connection of now.
    let mut live: HashSet<String> = HashSet::new();
    let mut moves = shared.conn.moves().expect("the Pub/Sub loop serves a primary, not a cluster");
    let mut next = Some(first);
    let mut backoff = BACKOFF_FIRST;
    let mut first_connection = true;
    let mut delivered = Delivered { log: start.0, position: start.1 };
    loop {
        let pubsub = match next.take() {
            Some(p) => p,
            None => match connect_pubsub(&locator).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "redis pub/sub reconnect failed");
                    if !wait_to_retry(&mut commands, &mut moves, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let (mut sink, mut stream) = pubsub.split();
        live.clear();
        let wanted: Vec<String> = hub.topics().iter().map(|t| shared.keys.channel(t)).collect();
        if !wanted.is_empty() {
            if let Err(e) = sink.subscribe(&wanted).await {
                // Redis took the connection but refused the channels (an ACL, a full server):
                // reconnecting at once would hammer it, so this waits like a failed connect.
                tracing::warn!(error = %e, retry_in = ?backoff, "redis resubscribe failed");
                if !wait_to_retry(&mut commands, &mut moves, &mut backoff).await {
                    return;
                }
                continue;
            }
        }
        live.extend(wanted.iter().cloned());
        if !first_connection {
            if let Err(e) = catch_up(&shared, &hub, &mut delivered, &metrics).await {
                tracing::warn!(error = %e, retry_in = ?backoff, "redis catch-up failed; reconnecting");
                if !wait_to_retry(&mut commands, &mut moves, &mut backoff).await {
                    return;
                }
                continue;
            }
            metrics.redis_reconnects.inc();
            tracing::info!(topics = wanted.len(), "redis pub/sub reconnected, resubscribed and caught up");
            presence::reload_all(&presence).await;
        }
        first_connection = false;
        backoff = BACKOFF_FIRST;

        moves.mark_unchanged();
        loop {
            tokio::select! {
                _ = moves.changed() => {
                    tracing::warn!(to = %*moves.borrow(), "the Redis primary moved; reconnecting pub/sub to it");
                    break;
                }
                msg = stream.next() => match msg {
                    None => break,
                    Some(msg) => {
                        let payload = msg.get_payload_bytes();
                        if let Some(change) = presence::message_frame(payload) {
                            presence.book().apply(&change);
                            continue;
                        }
                        let event = message_event(shared.log_tag, payload);
                        if let Err(e) = on_message(&shared, &hub, &mut delivered, &metrics, event).await {
                            tracing::warn!(error = %e, "redis catch-up after a new log epoch failed; reconnecting");
                            break;
                        }
                    }
                },
                cmd = commands.recv(&live) => match cmd {
                    None => return,
                    Some(Control::Subscribe(channel, waiters)) => {
                        let result = sink.subscribe(&channel).await.map_err(|e| e.to_string());
                        control::subscribed(&mut live, "SUBSCRIBE", channel, waiters, result);
                    }
                    Some(Control::Unsubscribe(channel)) => {
                        if let Err(e) = sink.unsubscribe(&channel).await {
                            tracing::warn!(channel, error = %e, "redis UNSUBSCRIBE failed");
                        }
                        live.remove(&channel);
                    }
                    Some(Control::LoadPresence(topic)) => presence::load(&presence, &topic).await,
                },
            }
        }
        tracing::warn!("redis pub/sub connection lost; reconnecting");
    }
}

/// After a reconnect (already resubscribed, so nothing newer can be missed): delivers from the
/// log what was published since the last delivered event, or tells every stream to resync when
/// the log cannot prove it still holds all of it.
async fn catch_up(
    shared: &Shared,
    hub: &Hub,
    delivered: &mut Delivered,
    metrics: &SharedMetrics,
) -> Result<(), String> {
    let history = shared.history(Some(delivered.position)).await?;
    if history.covers(delivered.log, delivered.position) && history.complete {
        // Across a fork too: what was delivered is still in the log, and what follows it is.
        // The streams are told where the fork is: one that replayed past it saw lost events.
        if delivered.log != history.log {
            let kept = history.forks.iter().find(|(epoch, _)| *epoch == delivered.log.epoch).map(|(_, at)| *at);
            hub.forked_all(kept.unwrap_or(delivered.position), history.head_cursor());
        }
        delivered.log = history.log;
        let n = history.events.len();
        for event in history.events {
            delivered.deliver(hub, event, history.log);
        }
        metrics.events_replayed.inc_by(n as u64);
        return Ok(());
    }
    if history.covers(delivered.log, delivered.position) {
        tracing::warn!("events published while Redis was unreachable are no longer retained; streams resync");
    } else {
        tracing::warn!(
            "the log no longer holds the last events delivered (a failover lost them, or Redis restarted without \
             them); streams resync"
        );
    }
    hub.resync_all(ResyncReason::BrokerReconnected, history.head_cursor());
    metrics.resynced(ResyncReason::BrokerReconnected, 1);
    *delivered = Delivered { log: history.log, position: history.head };
    Ok(())
}

/// Waits `backoff` before the next attempt (refusing commands meanwhile), or until the primary
/// moves, and doubles it, up to [`BACKOFF_MAX`]. False when the broker is gone.
async fn wait_to_retry(
    commands: &mut Commands,
    moves: &mut tokio::sync::watch::Receiver<String>,
    backoff: &mut Duration,
) -> bool {
    let go_on = tokio::select! {
        go_on = refuse_commands_for(commands, *backoff) => go_on,
        _ = moves.changed() => true,
    };
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    go_on
}

/// A Pub/Sub connection to the primary as it is now.
async fn connect_pubsub(locator: &primary::Locator) -> Result<redis::aio::PubSub, String> {
    let client = locator.primary().await?;
    let connect = client.get_async_pubsub();
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| "timed out after 5 s".to_owned())?
        .map_err(|e| e.to_string())
}

/// What the Pub/Sub loops work with.
struct Follow {
    shared: Shared,
    hub: Arc<Hub>,
    metrics: SharedMetrics,
    presence: Arc<presence::RedisPresence>,
}

impl Follow {
    fn new(
        shared: &Shared,
        hub: &Arc<Hub>,
        metrics: SharedMetrics,
        fanout: Fanout,
        presence_ttl: Duration,
        book: Arc<PresenceBook>,
    ) -> Self {
        let presence =
            presence::RedisPresence::new(shared.conn.clone(), shared.keys.clone(), fanout, presence_ttl, book);
        Self { shared: shared.clone(), hub: hub.clone(), metrics, presence }
    }
}

/// Delivers a message's event (`None`: malformed, ignored). One of another log epoch means the
/// log was forked (a failover) or recreated: what this instance delivered is checked against
/// the log as it is now, as after a reconnect, then the message is delivered unless that read
/// had it. `Err` when the log could not be read: the caller reconnects and catches up.
async fn on_message(
    shared: &Shared,
    hub: &Hub,
    delivered: &mut Delivered,
    metrics: &SharedMetrics,
    event: Option<(LogId, Arc<LogEvent>)>,
) -> Result<(), String> {
    match event {
        Some((log, event)) if log == delivered.log => delivered.deliver(hub, event, log),
        Some((log, event)) => {
            catch_up(shared, hub, delivered, metrics).await?;
            if log == delivered.log {
                delivered.deliver(hub, event, log);
            }
        }
        None => tracing::warn!("malformed Redis message ignored"),
    }
    Ok(())
}

/// While disconnected, for `wait`: answers every subscription asked with an error and drops
/// the rest ([`Commands::refuse_all`]). False when the broker is gone.
async fn refuse_commands_for(commands: &mut Commands, wait: Duration) -> bool {
    let until = tokio::time::sleep(wait);
    tokio::pin!(until);
    loop {
        if !commands.refuse_all("redis is unreachable; reconnecting") {
            return false;
        }
        tokio::select! {
            _ = &mut until => return true,
            _ = commands.asked() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_its_log_position_and_topics() {
        let (log, e) = message_event(7, b"42 1700000000000-3 tasks,task:7\nevent: x\ndata: {}\n\n").unwrap();
        assert_eq!(log, LogId { tag: 7, epoch: 42 });
        assert_eq!(e.position, LogPosition { ms: 1_700_000_000_000, seq: 3 });
        assert_eq!(e.topics, ["tasks", "task:7"]);
        assert_eq!(&e.body[..], b"event: x\ndata: {}\n\n");
        assert_eq!(e.id_head, sse_notify_core::cursor::Cursor::encode_head(LogId { tag: 7, epoch: 42 }, e.position));
        let (_, mine) = message_event(7, b"42 1-0 tasks Tab_1\nevent: x\ndata: {}\n\n").unwrap();
        let tag = sse_notify_core::origin::echo_tag("Tab_1", &mine.id_head);
        assert_eq!((mine.topics.as_slice(), mine.echo_tag.as_deref()), (&["tasks".to_owned()][..], Some(tag.as_str())));
        assert_eq!(e.echo_tag, None);
        assert!(message_event(7, b"no newline").is_none());
        assert!(message_event(7, b"x 1-0 a\n").is_none());
    }

    #[test]
    fn channels_of_two_prefixes_never_meet() {
        let (none, beta) = (Keys::new("sse"), Keys::new("beta"));
        assert_eq!(none.channel("tasks"), "{sse}/tasks");
        assert_eq!(beta.channel("tasks"), "{beta}/tasks");
        assert_eq!(beta.log(), "sse-log/{beta}", "one hash tag: one Cluster slot per prefix");
        // The old scheme joined without a separator: "beta" + "tasks" == "" + "betatasks".
        assert_ne!(none.channel("betatasks"), beta.channel("tasks"));
    }
}
