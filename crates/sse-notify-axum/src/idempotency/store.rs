//! Where keys are kept: in the process (the embedded broker, one instance), or in Redis, so a
//! retry that reaches another instance finds the first attempt's record.
//!
//! Bounds, the same in both:
//! - **Time:** a key is forgotten `ttl` after its first attempt answered (a pending one after
//!   `pending`, should its instance die).
//! - **Per scope:** a scope holds at most `max_keys_per_scope` keys; past that its own oldest
//!   go. A scope can push out only its own keys, so no one can make another user's retried
//!   write run twice by writing a lot.
//! - **In all:** at most `max_keys` keys and `max_bytes` bytes of records; past that a new key
//!   is refused ([`Begin::Full`]) rather than one of someone else's forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::IdempotencyLimits;

/// A key in the store: a hash of the scope and the client's key (never the key itself).
pub(crate) type StoreKey = [u8; 32];
/// A scope in the store: a hash of its name.
pub(crate) type ScopeKey = [u8; 32];

/// The store could not be reached: the request is refused rather than run unprotected.
#[derive(Debug, thiserror::Error)]
#[error("the idempotency store is unavailable: {0}")]
pub(crate) struct Unavailable(pub(crate) String);

/// What [`Store::begin`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Begin {
    /// The key is new: its pending record is written, this attempt runs.
    First,
    /// The key's record.
    Held(Bytes),
    /// The store holds as much as it may: the key is not taken (nor anyone else's forgotten).
    Full,
}

pub(crate) trait Store: Send + Sync + 'static {
    /// The key's record, or [`Begin::First`] after recording `pending` for it.
    fn begin(&self, scope: ScopeKey, key: StoreKey, pending: Bytes) -> BoxFuture<'_, Result<Begin, Unavailable>>;
    /// The key's record now.
    fn get(&self, key: StoreKey) -> BoxFuture<'_, Result<Option<Bytes>, Unavailable>>;
    /// Keeps the first attempt's record (at most the pending record's charge: the layer keeps
    /// no larger one).
    fn finish(&self, scope: ScopeKey, key: StoreKey, done: Bytes) -> BoxFuture<'_, Result<(), Unavailable>>;
    /// Forgets the key (its first attempt failed: a retry may run again).
    fn abandon(&self, scope: ScopeKey, key: StoreKey) -> BoxFuture<'_, Result<(), Unavailable>>;
    /// Keys held (for the bounds' tests).
    fn len(&self) -> BoxFuture<'_, Result<usize, Unavailable>>;
}

/// The in-process store.
pub(crate) struct MemoryStore {
    inner: Mutex<Held>,
    limits: IdempotencyLimits,
}

#[derive(Default)]
struct Held {
    records: HashMap<StoreKey, Record>,
    /// Keys by first attempt, oldest first, in all and per scope.
    order: VecDeque<StoreKey>,
    scopes: HashMap<ScopeKey, VecDeque<StoreKey>>,
    bytes: usize,
}

struct Record {
    bytes: Bytes,
    /// What it counts for in `Held::bytes`: a pending one, room for the largest answer kept
    /// (so what is held never passes `max_bytes`, however many answer at once).
    charged: usize,
    scope: ScopeKey,
    /// When it is forgotten.
    until: Instant,
}

/// What one key costs: its record and its bookkeeping.
fn cost(record: &Bytes) -> usize {
    record.len() + 4 * std::mem::size_of::<StoreKey>() + std::mem::size_of::<Record>()
}

impl Held {
    fn remove(&mut self, key: &StoreKey) {
        if let Some(r) = self.records.remove(key) {
            self.bytes -= r.charged;
            if let Some(order) = self.scopes.get_mut(&r.scope) {
                order.retain(|k| k != key);
                if order.is_empty() {
                    self.scopes.remove(&r.scope);
                }
            }
        }
    }

    /// Drops what is past its time, oldest first (entries of keys already gone go too).
    fn expire(&mut self, now: Instant) {
        while let Some(key) = self.order.front().copied() {
            match self.records.get(&key) {
                Some(r) if r.until > now => break,
                _ => {
                    self.order.pop_front();
                    self.remove(&key);
                }
            }
        }
    }
}

impl MemoryStore {
    pub(crate) fn new(limits: &IdempotencyLimits) -> Self {
        Self { inner: Mutex::default(), limits: limits.clone() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Held) -> T) -> T {
        let mut held = self.inner.lock().unwrap();
        held.expire(Instant::now());
        // Keys pushed out of their scope or abandoned leave their place in `order` behind them;
        // once those are as many as the keys held, they go (amortized: once per that many).
        if held.order.len() > 2 * held.records.len() + 64 {
            let Held { order, records, .. } = &mut *held;
            order.retain(|k| records.contains_key(k));
        }
        f(&mut held)
    }
}

impl Store for MemoryStore {
    fn begin(&self, scope: ScopeKey, key: StoreKey, pending: Bytes) -> BoxFuture<'_, Result<Begin, Unavailable>> {
        let limits = &self.limits;
        let found = self.with(|held| {
            if let Some(r) = held.records.get(&key) {
                return Begin::Held(r.bytes.clone());
            }
            // The scope's own oldest answered keys make room for it (a key in flight stays: its
            // answer is on its way; those are few, and go with their record after `pending`).
            let full =
                |held: &Held| held.scopes.get(&scope).is_some_and(|o| o.len() >= limits.max_keys_per_scope.max(1));
            while full(held) {
                let answered = held.scopes.get(&scope).and_then(|order| {
                    order.iter().copied().find(|k| held.records.get(k).is_none_or(|r| !r.bytes.starts_with(b"P")))
                });
                let Some(oldest) = answered else { break };
                held.remove(&oldest);
            }
            let charged = cost(&pending) + limits.max_answer;
            if held.records.len() >= limits.max_keys || held.bytes + charged > limits.max_bytes {
                return Begin::Full;
            }
            held.bytes += charged;
            let until = Instant::now() + limits.pending;
            held.records.insert(key, Record { bytes: pending, charged, scope, until });
            held.order.push_back(key);
            held.scopes.entry(scope).or_default().push_back(key);
            Begin::First
        });
        Box::pin(async move { Ok(found) })
    }

    fn get(&self, key: StoreKey) -> BoxFuture<'_, Result<Option<Bytes>, Unavailable>> {
        let found = self.with(|held| held.records.get(&key).map(|r| r.bytes.clone()));
        Box::pin(async move { Ok(found) })
    }

    fn finish(&self, _scope: ScopeKey, key: StoreKey, done: Bytes) -> BoxFuture<'_, Result<(), Unavailable>> {
        let ttl = self.limits.ttl;
        self.with(|held| {
            // A key trimmed meanwhile stays forgotten, as one past its time.
            if let Some(r) = held.records.get_mut(&key) {
                // Within what was charged for it (the layer keeps no larger answer).
                let (old, new) = (r.charged, cost(&done).min(r.charged));
                r.bytes = done;
                r.charged = new;
                // Its time counts from its answer; the order by first attempt stays (what is
                // expired first may wait behind it a little: bounded by `pending`).
                r.until = Instant::now() + ttl;
                held.bytes = held.bytes + new - old;
            }
        });
        Box::pin(async { Ok(()) })
    }

    fn abandon(&self, _scope: ScopeKey, key: StoreKey) -> BoxFuture<'_, Result<(), Unavailable>> {
        self.with(|held| held.remove(&key));
        Box::pin(async { Ok(()) })
    }

    fn len(&self) -> BoxFuture<'_, Result<usize, Unavailable>> {
        let n = self.with(|held| held.records.len());
        Box::pin(async move { Ok(n) })
    }
}

/// The Redis store: one string per key (`PX` = the time bound), a sorted set of the keys by
/// first attempt per scope and in all, a hash of their sizes and a count of their bytes, all
/// under the prefix's hash tag, so a Cluster keeps them on one shard and a script may touch
/// them together.
#[cfg(feature = "redis")]
pub(crate) struct RedisStore {
    conn: sse_notify_broker::RedisConnection,
    namespace: String,
    limits: IdempotencyLimits,
    begin: redis::Script,
    finish: redis::Script,
    abandon: redis::Script,
}

/// Forgets one key everywhere: KEYS[2] index, KEYS[3] sizes, KEYS[4] bytes; `scope` its scope's
/// index (or nil).
#[cfg(feature = "redis")]
const FORGET: &str = r#"
local function forget(key, scope)
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[2], key)
  if scope then redis.call('ZREM', scope, key) end
  local size = redis.call('HGET', KEYS[3], key)
  if size then
    redis.call('HDEL', KEYS[3], key)
    redis.call('DECRBY', KEYS[4], size)
  end
end
"#;

/// KEYS: the record, the index, the sizes, the bytes, the scope's index.
/// ARGV: the pending record, now ms, ttl ms, pending ttl ms, max keys, max bytes, max per scope,
/// what a pending record is charged (room for the largest answer kept).
/// Returns the record already there, 'FULL', or nothing after writing the pending one.
#[cfg(feature = "redis")]
const BEGIN_SCRIPT: &str = r#"
local held = redis.call('GET', KEYS[1])
if held then return held end
local now, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
-- Past their time (a bounded batch per call): their records expired by themselves.
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl, 'LIMIT', 0, 100)) do
  forget(old, nil)
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - ttl)
-- The scope's own oldest answered keys make room for it (a key in flight stays: its answer
-- is on its way; those are few, and go with their record after `pending`).
local over = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[7]) + 1
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[5], 0, over + 63)) do
    if over <= 0 then break end
    local record = redis.call('GET', old)
    if not record or string.sub(record, 1, 1) ~= 'P' then
      forget(old, KEYS[5])
      over = over - 1
    end
  end
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5])
  or tonumber(redis.call('GET', KEYS[4]) or '0') + tonumber(ARGV[8]) > tonumber(ARGV[6]) then
  return 'FULL'
end
-- A pending record that expired (its instance died, or never heard its end) still holds its
-- charge and its places: they go before it is charged again.
forget(KEYS[1], KEYS[5])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
-- The index in all is by the time a key is forgotten, less `ttl`: a pending one leaves it with
-- its record, `pending` from now (the time trim above), an answered one `ttl` after its answer.
-- The scope's is by first attempt: its oldest go first, a key in flight among the last.
local forgotten_at = now - ttl + tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], forgotten_at, KEYS[1])
redis.call('ZADD', KEYS[5], now, KEYS[1])
redis.call('PEXPIRE', KEYS[5], ttl)
redis.call('HSET', KEYS[3], KEYS[1], ARGV[8])
redis.call('INCRBY', KEYS[4], ARGV[8])
return false
"#;

/// KEYS: the record, the index, the sizes, the bytes, the scope's index.  ARGV: the record, ttl
/// ms, now ms. Keeps the answer of a key still held (not trimmed nor expired meanwhile), for
/// its full time, charged what it is.
#[cfg(feature = "redis")]
const FINISH_SCRIPT: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'XX', 'PX', ARGV[2]) then
  local size = tonumber(redis.call('HGET', KEYS[3], KEYS[1]) or '0')
  redis.call('HSET', KEYS[3], KEYS[1], #ARGV[1])
  redis.call('INCRBY', KEYS[4], #ARGV[1] - size)
  redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
end
return 1
"#;

/// KEYS: the record, the index, the sizes, the bytes, the scope's index.
#[cfg(feature = "redis")]
const ABANDON_SCRIPT: &str = r#"
forget(KEYS[1], KEYS[5])
return 1
"#;

#[cfg(feature = "redis")]
impl RedisStore {
    pub(crate) fn new(conn: sse_notify_broker::RedisConnection, namespace: &str, limits: &IdempotencyLimits) -> Self {
        let script = |body: &str| redis::Script::new(&format!("{FORGET}{body}"));
        Self {
            conn,
            namespace: namespace.to_owned(),
            limits: limits.clone(),
            begin: script(BEGIN_SCRIPT),
            finish: script(FINISH_SCRIPT),
            abandon: script(ABANDON_SCRIPT),
        }
    }

    fn hex(bytes: &[u8; 32]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The record's key, then the index, the sizes and the byte count.
    fn keys(&self, key: &StoreKey) -> [String; 4] {
        let ns = &self.namespace;
        [
            format!("sse-idem/{{{ns}}}/{}", Self::hex(key)),
            format!("sse-idem-index/{{{ns}}}"),
            format!("sse-idem-size/{{{ns}}}"),
            format!("sse-idem-bytes/{{{ns}}}"),
        ]
    }

    fn scope_key(&self, scope: &ScopeKey) -> String {
        format!("sse-idem-scope/{{{}}}/{}", self.namespace, Self::hex(scope))
    }

    fn ms(d: std::time::Duration) -> u64 {
        d.as_millis().max(1) as u64
    }
}

#[cfg(feature = "redis")]
fn unavailable(during: &'static str) -> impl Fn(redis::RedisError) -> Unavailable {
    move |e| Unavailable(format!("{during}: {e}"))
}

#[cfg(feature = "redis")]
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

#[cfg(feature = "redis")]
impl Store for RedisStore {
    fn begin(&self, scope: ScopeKey, key: StoreKey, pending: Bytes) -> BoxFuture<'_, Result<Begin, Unavailable>> {
        Box::pin(async move {
            let l = &self.limits;
            let mut inv = self.begin.prepare_invoke();
            for k in self.keys(&key) {
                inv.key(k);
            }
            inv.key(self.scope_key(&scope));
            inv.arg(pending.as_ref()).arg(now_ms()).arg(Self::ms(l.ttl)).arg(Self::ms(l.pending));
            inv.arg(l.max_keys).arg(l.max_bytes).arg(l.max_keys_per_scope.max(1));
            inv.arg(pending.len() + l.max_answer + 64);
            let held: Option<Vec<u8>> =
                inv.invoke_async(&mut self.conn.clone()).await.map_err(unavailable("the idempotency script"))?;
            Ok(match held {
                None => Begin::First,
                Some(full) if full == b"FULL" => Begin::Full,
                Some(held) => Begin::Held(Bytes::from(held)),
            })
        })
    }

    fn get(&self, key: StoreKey) -> BoxFuture<'_, Result<Option<Bytes>, Unavailable>> {
        Box::pin(async move {
            let [record, ..] = self.keys(&key);
            let held: Option<Vec<u8>> =
                redis::cmd("GET").arg(record).query_async(&mut self.conn.clone()).await.map_err(unavailable("GET"))?;
            Ok(held.map(Bytes::from))
        })
    }

    fn finish(&self, scope: ScopeKey, key: StoreKey, done: Bytes) -> BoxFuture<'_, Result<(), Unavailable>> {
        Box::pin(async move {
            let mut inv = self.finish.prepare_invoke();
            for k in self.keys(&key) {
                inv.key(k);
            }
            inv.key(self.scope_key(&scope));
            inv.arg(done.as_ref()).arg(Self::ms(self.limits.ttl)).arg(now_ms());
            inv.invoke_async::<i64>(&mut self.conn.clone()).await.map_err(unavailable("the idempotency script"))?;
            Ok(())
        })
    }

    fn abandon(&self, scope: ScopeKey, key: StoreKey) -> BoxFuture<'_, Result<(), Unavailable>> {
        Box::pin(async move {
            let mut inv = self.abandon.prepare_invoke();
            for k in self.keys(&key) {
                inv.key(k);
            }
            inv.key(self.scope_key(&scope));
            inv.invoke_async::<i64>(&mut self.conn.clone()).await.map_err(unavailable("the idempotency script"))?;
            Ok(())
        })
    }

    fn len(&self) -> BoxFuture<'_, Result<usize, Unavailable>> {
        Box::pin(async move {
            let [_, index, ..] = self.keys(&[0; 32]);
            redis::cmd("ZCARD").arg(index).query_async(&mut self.conn.clone()).await.map_err(unavailable("ZCARD"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(n: u32) -> StoreKey {
        let mut k = [0; 32];
        k[..4].copy_from_slice(&n.to_be_bytes());
        k
    }

    fn limits(max_keys: usize, per_scope: usize, max_bytes: usize) -> IdempotencyLimits {
        IdempotencyLimits { max_keys, max_keys_per_scope: per_scope, max_bytes, ..Default::default() }
    }

    async fn write(store: &MemoryStore, scope: u32, n: u32, size: usize) -> Begin {
        let begun = store.begin(key(scope), key(n), Bytes::from_static(b"P")).await.unwrap();
        if begun == Begin::First {
            store.finish(key(scope), key(n), Bytes::from(vec![b'D'; size])).await.unwrap();
        }
        begun
    }

    #[tokio::test]
    async fn a_scope_pushes_out_only_its_own_keys() {
        let store = MemoryStore::new(&limits(1000, 100, usize::MAX));
        assert_eq!(write(&store, 1, 1, 10).await, Begin::First, "the victim's key");
        for n in 100..1100 {
            write(&store, 2, n, 10).await;
        }
        assert!(store.get(key(1)).await.unwrap().is_some(), "the attacker's writes pushed out its own keys only");
        assert_eq!(store.len().await.unwrap(), 101);
        assert!(store.get(key(1099)).await.unwrap().is_some() && store.get(key(100)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_key_in_flight_is_not_pushed_out_by_newer_keys_of_its_scope() {
        let store = MemoryStore::new(&limits(1000, 2, usize::MAX));
        assert_eq!(store.begin(key(1), key(1), Bytes::from_static(b"P")).await.unwrap(), Begin::First);
        for n in 2..6 {
            write(&store, 1, n, 10).await;
        }
        assert_eq!(store.get(key(1)).await.unwrap().as_deref(), Some(&b"P"[..]), "still in flight, still held");
        assert!(store.get(key(2)).await.unwrap().is_none() && store.get(key(5)).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn when_all_is_held_a_new_key_is_refused_not_someone_elses_forgotten() {
        let store = MemoryStore::new(&limits(50, 10, usize::MAX));
        for scope in 0..5 {
            for n in 0..10 {
                assert_eq!(write(&store, scope, scope * 100 + n, 10).await, Begin::First);
            }
        }
        assert_eq!(write(&store, 9, 999, 10).await, Begin::Full);
        assert_eq!(store.len().await.unwrap(), 50);
        // Bytes too.
        let store = MemoryStore::new(&limits(usize::MAX, usize::MAX, 64 * 1024));
        let mut n = 0;
        while write(&store, n % 7, n, 1000).await == Begin::First {
            n += 1;
        }
        assert!((40..=64).contains(&n), "64 KiB holds ~{n} answers of 1 KB");
        assert!(store.inner.lock().unwrap().bytes <= 64 * 1024);
    }

    #[tokio::test]
    async fn keys_are_forgotten_after_their_time() {
        let store = MemoryStore::new(&IdempotencyLimits { ttl: Duration::from_millis(1), ..Default::default() });
        write(&store, 1, 1, 10).await;
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(write(&store, 1, 1, 10).await, Begin::First, "forgotten after its time");
        let store = MemoryStore::new(&IdempotencyLimits { pending: Duration::from_millis(1), ..Default::default() });
        store.begin(key(1), key(1), Bytes::from_static(b"P")).await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            store.begin(key(1), key(1), Bytes::from_static(b"P")).await.unwrap(),
            Begin::First,
            "a pending key that never answered"
        );
    }

    #[tokio::test]
    async fn a_first_attempt_that_failed_is_forgotten() {
        let store = MemoryStore::new(&IdempotencyLimits::default());
        store.begin(key(1), key(1), Bytes::from_static(b"P")).await.unwrap();
        assert!(matches!(store.begin(key(1), key(1), Bytes::from_static(b"P")).await.unwrap(), Begin::Held(_)));
        store.abandon(key(1), key(1)).await.unwrap();
        assert_eq!(store.len().await.unwrap(), 0);
        assert_eq!(store.begin(key(1), key(1), Bytes::from_static(b"P")).await.unwrap(), Begin::First);
    }
}
