//! Where keys are kept: in the process (the embedded broker, one instance), or in Redis, so a
//! retry that reaches another instance finds the first attempt's record.
//!
//! Both are bounded by time (a key is forgotten `ttl` after its first attempt) and by count
//! (past `max_keys`, the oldest keys go first); the process store is also bounded by bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;

/// A key in the store: a hash of the scope and the client's key (never the key itself).
pub(crate) type StoreKey = [u8; 32];

/// The store could not be reached: the request is refused rather than run unprotected.
#[derive(Debug, thiserror::Error)]
#[error("the idempotency store is unavailable: {0}")]
pub(crate) struct Unavailable(pub(crate) String);

pub(crate) trait Store: Send + Sync + 'static {
    /// The key's record, or `None` after recording `pending` for it (this attempt is the first).
    fn begin(&self, key: StoreKey, pending: Bytes) -> BoxFuture<'_, Result<Option<Bytes>, Unavailable>>;
    /// The key's record now.
    fn get(&self, key: StoreKey) -> BoxFuture<'_, Result<Option<Bytes>, Unavailable>>;
    /// Keeps the first attempt's answer.
    fn finish(&self, key: StoreKey, done: Bytes) -> BoxFuture<'_, Result<(), Unavailable>>;
    /// Forgets the key (its first attempt failed: a retry may run again).
    fn abandon(&self, key: StoreKey) -> BoxFuture<'_, Result<(), Unavailable>>;
    /// Keys held (for the bound's tests and metrics).
    fn len(&self) -> BoxFuture<'_, Result<usize, Unavailable>>;
}

/// The in-process store.
pub(crate) struct MemoryStore {
    inner: Mutex<Held>,
    ttl: Duration,
    max_keys: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct Held {
    records: HashMap<StoreKey, (Bytes, Instant)>,
    /// Keys by first attempt, oldest first (a key is in it once).
    order: VecDeque<StoreKey>,
    bytes: usize,
}

/// What one key costs: its record and its bookkeeping.
fn cost(record: &Bytes) -> usize {
    record.len() + 2 * std::mem::size_of::<StoreKey>() + std::mem::size_of::<(Bytes, Instant)>()
}

impl MemoryStore {
    pub(crate) fn new(ttl: Duration, max_keys: usize, max_bytes: usize) -> Self {
        Self { inner: Mutex::default(), ttl, max_keys: max_keys.max(1), max_bytes }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Held) -> T) -> T {
        let mut held = self.inner.lock().unwrap();
        let now = Instant::now();
        // Oldest first: drop what expired, then what is over the bounds.
        while let Some(key) = held.order.front().copied() {
            let expired = held.records.get(&key).is_none_or(|(_, at)| now.duration_since(*at) >= self.ttl);
            if !(expired || held.order.len() > self.max_keys || held.bytes > self.max_bytes) {
                break;
            }
            held.order.pop_front();
            if let Some((record, _)) = held.records.remove(&key) {
                held.bytes -= cost(&record);
            }
        }
        f(&mut held)
    }
}

impl Held {
    fn put(&mut self, key: StoreKey, record: Bytes, at: Instant) {
        self.bytes += cost(&record);
        match self.records.insert(key, (record, at)) {
            Some((old, _)) => self.bytes -= cost(&old),
            None => self.order.push_back(key),
        }
    }
}

impl Store for MemoryStore {
    fn begin(&self, key: StoreKey, pending: Bytes) -> BoxFuture<'_, Result<Option<Bytes>, Unavailable>> {
        let found = self.with(|held| match held.records.get(&key) {
            Some((record, _)) => Some(record.clone()),
            None => {
                held.put(key, pending, Instant::now());
                None
            }
        });
        Box::pin(async move { Ok(found) })
    }

    fn get(&self, key: StoreKey) -> BoxFuture<'_, Result<Option<Bytes>, Unavailable>> {
        let found = self.with(|held| held.records.get(&key).map(|(r, _)| r.clone()));
        Box::pin(async move { Ok(found) })
    }

    fn finish(&self, key: StoreKey, done: Bytes) -> BoxFuture<'_, Result<(), Unavailable>> {
        self.with(|held| {
            // Its time counts from the first attempt; a key evicted meanwhile comes back new.
            let at = held.records.get(&key).map_or_else(Instant::now, |(_, at)| *at);
            held.put(key, done, at);
        });
        // Over the bounds now? The next call trims; trim now so `len` is honest.
        self.with(|_| ());
        Box::pin(async { Ok(()) })
    }

    fn abandon(&self, key: StoreKey) -> BoxFuture<'_, Result<(), Unavailable>> {
        self.with(|held| {
            if let Some((record, _)) = held.records.remove(&key) {
                held.bytes -= cost(&record);
                held.order.retain(|k| *k != key);
            }
        });
        Box::pin(async { Ok(()) })
    }

    fn len(&self) -> BoxFuture<'_, Result<usize, Unavailable>> {
        let n = self.with(|held| held.records.len());
        Box::pin(async move { Ok(n) })
    }
}

/// The Redis store: one string per key (`PX` = the time bound) and one sorted set of the keys
/// by first attempt (the count bound), under the prefix's hash tag, so a Cluster keeps them on
/// one shard and a script may touch them together.
#[cfg(feature = "redis")]
pub(crate) struct RedisStore {
    conn: sse_notify_broker::RedisConnection,
    namespace: String,
    ttl: Duration,
    /// How long a pending record lives (an instance that died while handling its write).
    pending: Duration,
    max_keys: usize,
    begin: redis::Script,
}

/// KEYS: the key's record, the index.  ARGV: the pending record, ttl ms, now ms, max keys,
/// the pending record's ttl ms.
/// Returns the record already there, or nothing after writing the pending one; trims the index
/// of keys past their time and past the count, deleting their records.
#[cfg(feature = "redis")]
const BEGIN_SCRIPT: &str = r#"
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[5])
local now, ttl, max = tonumber(ARGV[3]), tonumber(ARGV[2]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('PEXPIRE', KEYS[2], ttl)
local over = redis.call('ZCARD', KEYS[2]) - max
if over > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #oldest, 2 do redis.call('DEL', oldest[i]) end
end
return false
"#;

#[cfg(feature = "redis")]
impl RedisStore {
    pub(crate) fn new(
        conn: sse_notify_broker::RedisConnection,
        namespace: &str,
        limits: &super::IdempotencyLimits,
    ) -> Self {
        let begin = redis::Script::new(BEGIN_SCRIPT);
        Self {
            conn,
            namespace: namespace.to_owned(),
            ttl: limits.ttl,
            pending: limits.pending,
            max_keys: limits.max_keys.max(1),
            begin,
        }
    }

    fn record_key(&self, key: &StoreKey) -> String {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        format!("sse-idem/{{{}}}/{hex}", self.namespace)
    }

    fn index_key(&self) -> String {
        format!("sse-idem-index/{{{}}}", self.namespace)
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis().max(1) as u64
    }
}

#[cfg(feature = "redis")]
fn unavailable(during: &'static str) -> impl Fn(redis::RedisError) -> Unavailable {
    move |e| Unavailable(format!("{during}: {e}"))
}

#[cfg(feature = "redis")]
impl Store for RedisStore {
    fn begin(&self, key: StoreKey, pending: Bytes) -> BoxFuture<'_, Result<Option<Bytes>, Unavailable>> {
        Box::pin(async move {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let mut inv = self.begin.prepare_invoke();
            inv.key(self.record_key(&key)).key(self.index_key());
            inv.arg(pending.as_ref()).arg(self.ttl_ms()).arg(now.as_millis() as u64).arg(self.max_keys);
            inv.arg(self.pending.as_millis().max(1) as u64);
            let held: Option<Vec<u8>> =
                inv.invoke_async(&mut self.conn.clone()).await.map_err(unavailable("the idempotency script"))?;
            Ok(held.map(Bytes::from))
        })
    }

    fn get(&self, key: StoreKey) -> BoxFuture<'_, Result<Option<Bytes>, Unavailable>> {
        Box::pin(async move {
            let held: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.record_key(&key))
                .query_async(&mut self.conn.clone())
                .await
                .map_err(unavailable("GET"))?;
            Ok(held.map(Bytes::from))
        })
    }

    fn finish(&self, key: StoreKey, done: Bytes) -> BoxFuture<'_, Result<(), Unavailable>> {
        Box::pin(async move {
            // XX: not one trimmed (past the count) or expired meanwhile; its full time now.
            let kept: Option<String> = redis::cmd("SET")
                .arg(self.record_key(&key))
                .arg(done.as_ref())
                .arg("XX")
                .arg("PX")
                .arg(self.ttl_ms())
                .query_async(&mut self.conn.clone())
                .await
                .map_err(unavailable("SET"))?;
            if kept.is_none() {
                // Trimmed meanwhile (past the count): the answer stays unrecorded, like a
                // key forgotten after its time.
                tracing::debug!("an idempotency key was trimmed while its first attempt ran");
            }
            Ok(())
        })
    }

    fn abandon(&self, key: StoreKey) -> BoxFuture<'_, Result<(), Unavailable>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("DEL").arg(self.record_key(&key)).ignore();
            pipe.cmd("ZREM").arg(self.index_key()).arg(self.record_key(&key)).ignore();
            pipe.query_async::<()>(&mut self.conn.clone()).await.map_err(unavailable("DEL"))
        })
    }

    fn len(&self) -> BoxFuture<'_, Result<usize, Unavailable>> {
        Box::pin(async move {
            redis::cmd("ZCARD")
                .arg(self.index_key())
                .query_async(&mut self.conn.clone())
                .await
                .map_err(unavailable("ZCARD"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> StoreKey {
        let mut k = [0; 32];
        k[..4].copy_from_slice(&n.to_be_bytes());
        k
    }

    #[tokio::test]
    async fn the_process_store_is_bounded_by_count_bytes_and_time() {
        let store = MemoryStore::new(Duration::from_secs(60), 100, usize::MAX);
        for n in 0..1000 {
            assert_eq!(store.begin(key(n), Bytes::from_static(b"P")).await.unwrap(), None);
            store.finish(key(n), Bytes::from(vec![b'D'; 100])).await.unwrap();
        }
        assert_eq!(store.len().await.unwrap(), 100, "the newest 100 keys");
        assert!(store.get(key(999)).await.unwrap().is_some() && store.get(key(0)).await.unwrap().is_none());

        let store = MemoryStore::new(Duration::from_secs(60), usize::MAX, 64 * 1024);
        for n in 0..1000 {
            store.begin(key(n), Bytes::from_static(b"P")).await.unwrap();
            store.finish(key(n), Bytes::from(vec![b'D'; 1000])).await.unwrap();
        }
        let held = store.len().await.unwrap();
        assert!((30..=64).contains(&held), "64 KiB holds ~{held} answers of 1 KB");
        assert!(store.inner.lock().unwrap().bytes <= 64 * 1024);

        let store = MemoryStore::new(Duration::from_millis(1), 100, usize::MAX);
        store.begin(key(1), Bytes::from_static(b"P")).await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.begin(key(1), Bytes::from_static(b"P")).await.unwrap(), None, "forgotten after its time");
    }

    #[tokio::test]
    async fn a_first_attempt_that_failed_is_forgotten() {
        let store = MemoryStore::new(Duration::from_secs(60), 100, usize::MAX);
        store.begin(key(1), Bytes::from_static(b"P")).await.unwrap();
        assert!(store.begin(key(1), Bytes::from_static(b"P")).await.unwrap().is_some(), "held while it runs");
        store.abandon(key(1)).await.unwrap();
        assert_eq!(store.len().await.unwrap(), 0);
        assert_eq!(store.begin(key(1), Bytes::from_static(b"P")).await.unwrap(), None);
    }
}
