//! Presence in Redis: the members of every topic, shared by the instances.
//!
//! Per topic, a hash of its members (id -> what others see) and a hash of how many instances
//! hold each; per instance, a hash of the `(topic, member)` pairs it holds; per prefix, a
//! sorted set of the instances by the time they must next report by. A member's first stream
//! on an instance joins (its first instance: `presence:join` on the topic's channel), its last
//! one leaves (its last instance: `presence:leave`), each one script: the cost does not grow
//! with the number of members.
//!
//! Every instance that holds members reports every third of `SSE_PRESENCE_TTL_SECONDS`, and
//! sweeps out the members of instances that missed their time (a crash, a lost network): they
//! leave within the TTL and a third. An instance that finds it was swept (it stalled, or Redis
//! lost its data) joins its members again. All keys carry the prefix's hash tag, so in a
//! Cluster the scripts run on the prefix's one shard, next to its channels.
//!
//! Messages are `presence\n<the join or leave frame's JSON>` on the topic's channel; the
//! subscriber loops hand them to the instance's presence book.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use redis::Value;
use sse_notify_core::presence::{Member, PresenceFrame};

use super::connection::RedisConnection;
use super::event_log::text;
use super::keys::{Fanout, Keys};
use crate::error::BackendError;
use crate::log::{random_epoch, unix_ms};
use crate::presence::PresenceBook;

/// What starts a presence message on a channel (an event's starts with its log epoch, a number).
pub(super) const MESSAGE_START: &[u8] = b"presence\n";

/// KEYS: members, counts, owned, alive. ARGV: instance, topic, member id, member JSON, deadline
/// ms, publish command, channel, message. Returns {1 if this instance was not listed (it was
/// swept, or Redis lost it), the member's number of instances}: a join lists the instance
/// again, so it must say so, or the instance's next report would find itself listed and never
/// join again the members Redis lost.
const JOIN_SCRIPT: &str = r#"
local absent = redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
if redis.call('HSETNX', KEYS[3], ARGV[2] .. '\n' .. ARGV[3], '1') == 0 then
  return {absent, 0}
end
local n = redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
local shown = redis.call('HGET', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
if n == 1 or shown ~= ARGV[4] then
  redis.call(ARGV[6], ARGV[7], ARGV[8])
end
return {absent, n}
"#;

/// KEYS: members, counts, owned. ARGV: instance, topic, member id, publish command, channel,
/// message. Returns the member's number of instances left (-1: this one did not hold them).
const LEAVE_SCRIPT: &str = r#"
if redis.call('HDEL', KEYS[3], ARGV[2] .. '\n' .. ARGV[3]) == 0 then
  return -1
end
local n = redis.call('HINCRBY', KEYS[2], ARGV[3], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[1], ARGV[3])
  redis.call(ARGV[4], ARGV[5], ARGV[6])
end
return n
"#;

/// KEYS: alive. ARGV: instance, now ms, deadline ms, the namespace's hash tag (`{ns}`), publish
/// command, batch, the instance being swept ('' = none yet) and the scan cursor in its share.
/// Reports this instance, then takes about `batch` members of one instance past its deadline
/// off their topics (the keys it names are in the same slot as KEYS[1]), going on with `HSCAN`
/// from the cursor the previous call returned. Returns {1 if this instance was not listed (it
/// was swept, or Redis lost it), members who left, the instance being swept, its cursor, 1 if
/// the caller should call again}: so that no one call blocks Redis for as long as a large
/// instance's share takes (every other client waits while a script runs).
///
/// The cursor is carried, not restarted: `HSCAN 0` visits the same buckets each time, and once
/// those are emptied it returns nothing while the rest of a large share stays (10,000 members
/// never left that way).
const REPORT_SCRIPT: &str = r#"
local absent = redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
local instance, cursor = ARGV[7], ARGV[8]
if instance ~= '' then
  local due = redis.call('ZSCORE', KEYS[1], instance)
  if not due or tonumber(due) > tonumber(ARGV[2]) then
    instance = ''
  end
end
if instance == '' then
  instance = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, 1)[1]
  cursor = '0'
  if not instance then
    return {absent, 0, '', '0', 0}
  end
end
local owned = 'sse-presence-owned/' .. ARGV[4] .. '/' .. instance
local scanned = redis.call('HSCAN', owned, cursor, 'COUNT', tonumber(ARGV[6]))
local left = 0
for i = 1, #scanned[2], 2 do
  local pair = scanned[2][i]
  local nl = string.find(pair, '\n', 1, true)
  local topic, id = string.sub(pair, 1, nl - 1), string.sub(pair, nl + 1)
  local counts = 'sse-presence-count/' .. ARGV[4] .. '/' .. topic
  if redis.call('HINCRBY', counts, id, -1) <= 0 then
    redis.call('HDEL', counts, id)
    redis.call('HDEL', 'sse-presence/' .. ARGV[4] .. '/' .. topic, id)
    redis.call(ARGV[5], ARGV[4] .. '/' .. topic, 'presence\n' .. cjson.encode({topic = topic, id = id}))
    left = left + 1
  end
  redis.call('HDEL', owned, pair)
end
if scanned[1] ~= '0' then
  return {absent, left, instance, scanned[1], 1}
end
if redis.call('EXISTS', owned) == 1 then
  return {absent, left, instance, '0', 1}
end
redis.call('ZREM', KEYS[1], instance)
return {absent, left, '', '0', 1}
"#;

/// Members a report sweeps out per script call (a few milliseconds of Redis time).
const SWEEP_BATCH: usize = 500;

/// Calls one report makes at most; the next report goes on where it stopped.
const SWEEP_CALLS: usize = 2_000;

/// The presence side of one Redis backend.
pub(super) struct RedisPresence {
    conn: RedisConnection,
    keys: Keys,
    fanout: Fanout,
    /// This instance, as the other instances know it.
    instance: String,
    ttl: Duration,
    book: Arc<PresenceBook>,
    scripts: [redis::Script; 3],
    /// Set once the reporting task runs (at the first join).
    reporting: OnceLock<()>,
    /// Joins and leaves that failed (Redis away): tried again at each report.
    retry: Mutex<Vec<(String, String)>>,
    /// One change at a time, each reading the book when it runs: a join and a leave of one
    /// member never reach Redis in the other order.
    settling: tokio::sync::Mutex<()>,
    /// Changes spawned and not done yet (shutdown waits for them).
    pending: std::sync::atomic::AtomicUsize,
    /// Whether a join or report of this instance has listed it in Redis yet.
    listed: std::sync::atomic::AtomicBool,
}

impl RedisPresence {
    pub(super) fn new(
        conn: RedisConnection,
        keys: Keys,
        fanout: Fanout,
        ttl: Duration,
        book: Arc<PresenceBook>,
    ) -> Arc<Self> {
        Arc::new(Self {
            conn,
            keys,
            fanout,
            instance: format!("{:08x}{:08x}", random_epoch(), std::process::id()),
            ttl: ttl.max(Duration::from_secs(1)),
            book,
            scripts: [JOIN_SCRIPT, LEAVE_SCRIPT, REPORT_SCRIPT].map(redis::Script::new),
            reporting: OnceLock::new(),
            retry: Mutex::default(),
            settling: tokio::sync::Mutex::new(()),
            pending: std::sync::atomic::AtomicUsize::new(0),
            listed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The instance's presence book, which the subscriber loops bring the topics' changes to.
    pub(super) fn book(&self) -> &PresenceBook {
        &self.book
    }

    fn members_key(&self, topic: &str) -> String {
        format!("sse-presence/{{{}}}/{topic}", self.keys.namespace())
    }

    fn counts_key(&self, topic: &str) -> String {
        format!("sse-presence-count/{{{}}}/{topic}", self.keys.namespace())
    }

    fn owned_key(&self) -> String {
        format!("sse-presence-owned/{{{}}}/{}", self.keys.namespace(), self.instance)
    }

    fn alive_key(&self) -> String {
        format!("sse-presence-alive/{{{}}}", self.keys.namespace())
    }

    fn message(frame: &PresenceFrame) -> Vec<u8> {
        let mut m = MESSAGE_START.to_vec();
        m.extend_from_slice(frame.to_json().as_bytes());
        m
    }

    /// The members of `topic` now.
    pub(super) async fn members(&self, topic: &str) -> Result<Vec<Member>, BackendError> {
        let mut conn = self.conn.clone();
        let shown: Vec<Vec<u8>> = redis::cmd("HVALS")
            .arg(self.members_key(topic))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.explain("HVALS", e))?;
        Ok(shown.iter().filter_map(|m| serde_json::from_slice(m).ok()).collect())
    }

    /// What a Redis ACL user needs beyond the broker's own list, for presence.
    fn needed_acl(&self) -> String {
        format!(
            "+hsetnx +hincrby +hget +hscan +exists +hvals +zadd +zrangebyscore +zrem +del ~sse-presence*/{{{}}}*",
            self.keys.namespace()
        )
    }

    /// An error of a presence command, with what the ACL must allow when it is an ACL refusal.
    fn explain(&self, during: &'static str, source: redis::RedisError) -> BackendError {
        let said = source.to_string();
        if said.contains("NOPERM") || said.contains("permission") {
            let needed = format!("for presence {}", self.needed_acl());
            BackendError::Refused { what: format!("{during}: {said}"), needed, source: Some(source) }
        } else {
            BackendError::Redis { during, source }
        }
    }

    /// Joins `member` on `topic`; whether this instance had been swept out (see `JOIN_SCRIPT`).
    async fn join(&self, topic: &str, member: &Member) -> Result<bool, BackendError> {
        let message = Self::message(&PresenceFrame::Join { topic: topic.to_owned(), member: member.clone() });
        let mut inv = self.scripts[0].prepare_invoke();
        inv.key(self.members_key(topic)).key(self.counts_key(topic)).key(self.owned_key()).key(self.alive_key());
        inv.arg(&self.instance).arg(topic).arg(&member.id);
        let encoded = serde_json::to_string(member);
        inv.arg(encoded.map_err(|e| BackendError::Encode { what: "a member", source: Arc::new(e) })?);
        inv.arg(unix_ms() + self.ttl.as_millis() as u64).arg(self.fanout.publish_command());
        inv.arg(self.keys.channel(topic)).arg(message);
        let mut conn = self.conn.clone();
        let joined = inv.invoke_async(&mut conn).await;
        let (absent, _instances): (i64, i64) = joined.map_err(|e| self.explain("the presence join script", e))?;
        Ok(self.was_swept(absent == 1))
    }

    /// Whether a join or report that found this instance `absent` from the instances' set found
    /// it swept out: not when that was its very first listing (nothing was lost then).
    fn was_swept(&self, absent: bool) -> bool {
        let listed_before = self.listed.swap(true, std::sync::atomic::Ordering::AcqRel);
        absent && listed_before
    }

    async fn leave(&self, topic: &str, id: &str) -> Result<(), BackendError> {
        let message = Self::message(&PresenceFrame::Leave { topic: topic.to_owned(), id: id.to_owned() });
        let mut inv = self.scripts[1].prepare_invoke();
        inv.key(self.members_key(topic)).key(self.counts_key(topic)).key(self.owned_key());
        inv.arg(&self.instance).arg(topic).arg(id).arg(self.fanout.publish_command());
        inv.arg(self.keys.channel(topic)).arg(message);
        let mut conn = self.conn.clone();
        inv.invoke_async::<i64>(&mut conn).await.map(drop).map_err(|e| self.explain("the presence leave script", e))
    }

    /// Reports this instance and sweeps out silent ones, a batch per script; whether this one
    /// had been swept.
    async fn report(&self) -> Result<bool, BackendError> {
        let mut conn = self.conn.clone();
        let (mut absent, mut left) = (false, 0u64);
        // The instance being swept and where in its share (`REPORT_SCRIPT`).
        let (mut sweeping, mut cursor) = (String::new(), "0".to_owned());
        for call in 0..SWEEP_CALLS {
            let now = unix_ms();
            let mut inv = self.scripts[2].prepare_invoke();
            inv.key(self.alive_key());
            inv.arg(&self.instance).arg(now).arg(now + self.ttl.as_millis() as u64);
            inv.arg(format!("{{{}}}", self.keys.namespace())).arg(self.fanout.publish_command()).arg(SWEEP_BATCH);
            inv.arg(&sweeping).arg(&cursor);
            let reply = inv.invoke_async::<Vec<Value>>(&mut conn).await;
            let reply = reply.map_err(|e| self.explain("the presence report script", e))?;
            let part = |i: usize| reply.get(i).and_then(text).unwrap_or_default();
            let number = |i: usize| part(i).parse::<u64>().unwrap_or(0);
            // Only the first call can find this instance unlisted: it lists it.
            absent |= call == 0 && number(0) == 1;
            left += number(1);
            (sweeping, cursor) = (part(2), part(3));
            if number(4) == 0 {
                break;
            }
        }
        if left > 0 {
            tracing::info!(left, "members of a silent instance swept out of presence");
        }
        Ok(self.was_swept(absent))
    }

    /// Joins or leaves as the book says now (a change that failed, or this instance's whole
    /// membership after it was swept); whether a join found this instance swept out.
    async fn settle(&self, topic: &str, id: &str) -> bool {
        let _one_at_a_time = self.settling.lock().await;
        let done = match self.book.here_as(topic, id) {
            Some(member) => self.join(topic, &member).await,
            None => self.leave(topic, id).await.map(|()| false),
        };
        done.unwrap_or_else(|e| {
            tracing::warn!(topic, member = id, error = %e, "presence change failed; trying again at the next report");
            self.retry.lock().unwrap().push((topic.to_owned(), id.to_owned()));
            false
        })
    }

    /// Joins every member this instance holds again, after finding it was swept out (by a
    /// report, or by a join: whichever came first after the loss).
    async fn rejoin_all(&self) {
        tracing::warn!("this instance's presence was swept out (it stalled, or Redis lost it); joining again");
        for (topic, member) in self.book.here() {
            self.settle(&topic, &member.id).await;
        }
    }

    pub(super) fn spawn_join(self: &Arc<Self>, topic: &str, member: Member) {
        self.start_reporting();
        self.spawn_settle(topic, member.id);
    }

    pub(super) fn spawn_leave(self: &Arc<Self>, topic: &str, id: String) {
        self.spawn_settle(topic, id);
    }

    fn spawn_settle(self: &Arc<Self>, topic: &str, id: String) {
        use std::sync::atomic::Ordering;
        let (this, topic) = (self.clone(), topic.to_owned());
        self.pending.fetch_add(1, Ordering::AcqRel);
        spawn(async move {
            if this.settle(&topic, &id).await {
                this.rejoin_all().await;
            }
            this.pending.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Changes not done yet.
    pub(super) fn pending(&self) -> usize {
        self.pending.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reports every third of the TTL while the backend lives.
    pub(super) fn start_reporting(self: &Arc<Self>) {
        if self.reporting.set(()).is_err() {
            return;
        }
        let this: Weak<Self> = Arc::downgrade(self);
        let every = self.ttl / 3;
        spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(this) = this.upgrade() else { return };
                match this.report().await {
                    Ok(swept) => {
                        let again: Vec<(String, String)> = std::mem::take(&mut *this.retry.lock().unwrap());
                        let mut swept_by_join = false;
                        for (topic, id) in again {
                            swept_by_join |= this.settle(&topic, &id).await;
                        }
                        if swept || swept_by_join {
                            this.rejoin_all().await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "presence report to Redis failed"),
                }
            }
        });
    }
}

/// Spawns on the current runtime, if there is one (a stream's end may run outside of one at
/// process exit: its members then leave by the TTL).
fn spawn(work: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(work);
    }
}

/// Loads `topic`'s members into the instance's book; called by the subscriber loops, between
/// messages, once the topic's channel is subscribed.
pub(super) async fn load(presence: &RedisPresence, topic: &str) {
    match presence.members(topic).await {
        Ok(members) => presence.book.load(topic, members),
        Err(e) => {
            tracing::warn!(topic, error = %e, "loading presence from Redis failed");
            presence.book.load_failed(topic);
        }
    }
}

/// After a reconnect: loads every topic again (changes may have been missed meanwhile), and
/// each stream that sees it gets its `presence:state` again.
pub(super) async fn reload_all(presence: &RedisPresence) {
    for topic in presence.book.unload_all() {
        load(presence, &topic).await;
    }
}

/// A presence message's frame.
pub(super) fn message_frame(payload: &[u8]) -> Option<PresenceFrame> {
    let json = payload.strip_prefix(MESSAGE_START)?;
    serde_json::from_slice(json).ok()
}
