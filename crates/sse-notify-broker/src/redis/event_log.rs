//! The prefix's event log in Redis: one stream, written by one script that also fans the
//! event out, read by another that also tells whether a failover forked it.
//!
//! One log per prefix rather than a stream per topic: a single position resumes any set of
//! topics (a cursor stays 63 bytes for 64 topics), replay is one `XRANGE`, and live events merge
//! with replayed ones by comparing positions.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::Value;
use sse_notify_core::cursor::{Cursor, LogId, LogPosition};
use sse_notify_core::origin::is_origin;

use super::connection::RedisConnection;
use super::keys::{Fanout, Keys};
use crate::backend::AppendError;
use crate::error::BackendError;
use crate::hub::LogEvent;
use crate::log::{random_epoch, unix_ms, History, Retention};

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
/// Returns {epoch, the entry's id}: where the event is, for the write's answer.
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
for i = 8, #ARGV do
  redis.call(ARGV[6], ARGV[i], msg)
end
return {epoch, id}
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

/// The log of one prefix, as every instance reads and writes it; cheap to clone.
#[derive(Clone)]
pub(super) struct EventLog {
    pub(super) conn: RedisConnection,
    pub(super) keys: Keys,
    /// The prefix's tag in every cursor of this log.
    pub(super) tag: u16,
    retention: Retention,
    /// `PUBLISH`, or `SPUBLISH` in a Cluster.
    fanout: Fanout,
    /// `SSE_REDIS_MIN_REPLICAS` and how long to wait for them.
    min_replicas: Option<(usize, Duration)>,
    publish_script: redis::Script,
    history_script: redis::Script,
}

impl EventLog {
    pub(super) fn new(
        conn: RedisConnection,
        keys: Keys,
        tag: u16,
        retention: Retention,
        fanout: Fanout,
        min_replicas: Option<(usize, Duration)>,
    ) -> Self {
        let (publish_script, history_script) = (redis::Script::new(PUBLISH_SCRIPT), redis::Script::new(HISTORY_SCRIPT));
        Self { conn, keys, tag, retention, fanout, min_replicas, publish_script, history_script }
    }

    /// Appends an event (its topics, its frame body, the writing tab), fans it out, and says
    /// where it is.
    pub(super) async fn append(
        &self,
        topics: &[String],
        body: String,
        origin: Option<&str>,
    ) -> Result<Cursor, AppendError> {
        let keys = &self.keys;
        let retention = &self.retention;
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
        let mut conn = self.conn.clone();
        let Some((replicas, wait)) = self.min_replicas else {
            let mut inv = self.publish_script.prepare_invoke();
            keys.script_keys(&mut inv);
            for arg in &args {
                inv.arg(arg);
            }
            let reply = inv.invoke_async::<Value>(&mut conn).await.map_err(|e| {
                AppendError::Unavailable(BackendError::Redis { during: "the publish script", source: e })
            })?;
            return self.appended_at(&reply);
        };
        // The script and WAIT in one pipeline: WAIT counts the replicas that hold every write
        // of its connection, so it must follow the script on the same one.
        let mut pipe = redis::pipe();
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(self.publish_script.get_hash()).arg(5).arg(&keys.all()[..]);
        evalsha.arg(&args);
        pipe.add_command(evalsha).add_command(redis::cmd("WAIT").arg(replicas).arg(wait.as_millis() as u64).clone());
        let mut reply = pipe.query_async::<(Value, i64)>(&mut conn).await;
        if matches!(&reply, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)) {
            let loaded = self.publish_script.load_async(&mut conn).await;
            loaded.map_err(|e| AppendError::Unavailable(BackendError::Redis { during: "SCRIPT LOAD", source: e }))?;
            reply = pipe.query_async::<(Value, i64)>(&mut conn).await;
        }
        let unavailable =
            |e| AppendError::Unavailable(BackendError::Redis { during: "the publish script and WAIT", source: e });
        let (appended, acknowledged) = reply.map_err(unavailable)?;
        let at = self.appended_at(&appended)?;
        if acknowledged < replicas as i64 {
            // In the log and sent, but a failover now could lose it: the publisher decides
            // (`Broker::publish_or_defer` publishes it once more, at most).
            return Err(AppendError::Unconfirmed {
                at,
                acknowledged: acknowledged.max(0) as usize,
                asked: replicas,
                waited: wait,
            });
        }
        Ok(at)
    }

    /// The publish script's `{epoch, id}` as the event's cursor.
    fn appended_at(&self, reply: &Value) -> Result<Cursor, AppendError> {
        let bad = || AppendError::Unavailable(BackendError::Reply("the publish script's reply"));
        let Value::Array(parts) = reply else { return Err(bad()) };
        let [epoch, id] = parts.as_slice() else { return Err(bad()) };
        let epoch: u32 = text(epoch).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let position: LogPosition = text(id).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        Ok(Cursor { log: LogId { tag: self.tag, epoch }, position, matched: 0 })
    }

    /// The log's head and, with `after`, what follows it (at most what is retained).
    pub(super) async fn history(&self, after: Option<LogPosition>) -> Result<History, BackendError> {
        let limit = self.retention.max_events + 1000;
        let mut inv = self.history_script.prepare_invoke();
        self.keys.script_keys(&mut inv);
        inv.arg(random_epoch()).arg(after.map(|p| p.to_string()).unwrap_or_default()).arg(limit);
        let mut conn = self.conn.clone();
        let reply: Vec<Value> = inv.invoke_async(&mut conn).await.map_err(BackendError::redis("the history script"))?;
        let [epoch, head, entries, forks] =
            <[Value; 4]>::try_from(reply).map_err(|_| BackendError::Reply("the history script's reply"))?;
        let epoch: u32 = text(&epoch).and_then(|s| s.parse().ok()).ok_or(BackendError::Reply("the log's epoch"))?;
        let head: LogPosition =
            text(&head).and_then(|s| s.parse().ok()).ok_or(BackendError::Reply("the log's head"))?;
        let log = LogId { tag: self.tag, epoch };
        let Value::Array(entries) = entries else { return Err(BackendError::Reply("the log's entries")) };
        let entries = entries
            .iter()
            .map(|e| entry_event(log, e))
            .collect::<Option<Vec<_>>>()
            .ok_or(BackendError::Reply("an entry of the log"))?;
        let complete = match (after, entries.first()) {
            (None, _) => true,
            // Nothing between the position and the first retained entry after it was trimmed.
            (Some(after), Some((_, prev))) => *prev == after && entries.len() < limit,
            // Nothing after it retained: complete if it is the head. (A position past the head
            // was lost with a server's last writes.)
            (Some(after), None) => head == after,
        };
        let Value::Array(forks) = forks else { return Err(BackendError::Reply("the log's forks")) };
        let forks = forks
            .chunks(2)
            .map(|pair| Some((text(&pair[0])?.parse().ok()?, text(pair.get(1)?)?.parse().ok()?)))
            .collect::<Option<Vec<_>>>()
            .ok_or(BackendError::Reply("the log's forks"))?;
        Ok(History { log, head, complete, events: entries.into_iter().map(|(e, _)| e).collect(), forks })
    }
}

pub(super) fn text(v: &Value) -> Option<String> {
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
