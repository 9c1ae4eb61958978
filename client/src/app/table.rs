//! A small JSON table keyed by `u64` ids (server only): in Redis (a hash and an id counter)
//! when the app has one, so all instances share it; in process memory otherwise.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use redis::AsyncCommands;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sse_notify_axum::RedisConnection;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Merges a JSON object into a stored row inside Redis, so two instances changing different
/// fields of one row at once both land (a read-modify-write from the app could lose one).
const PATCH_SCRIPT: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
local row = cjson.decode(v)
for k, x in pairs(cjson.decode(ARGV[2])) do row[k] = x end
local out = cjson.encode(row)
redis.call('HSET', KEYS[1], ARGV[1], out)
return out
"#;

/// A table; a clone is one `Arc`'s (axum clones a route's state for every request it serves).
pub enum Table<T> {
    Memory(Arc<Mutex<(u64, BTreeMap<u64, T>)>>),
    Redis(Arc<RedisRows>, PhantomData<fn() -> T>),
}

/// Where a table lives in Redis.
pub struct RedisRows {
    conn: RedisConnection,
    /// The rows: a hash of id -> JSON.
    hash: String,
    /// The last id given.
    counter: String,
}

impl<T> Clone for Table<T> {
    fn clone(&self) -> Self {
        match self {
            Table::Memory(m) => Table::Memory(m.clone()),
            Table::Redis(db, _) => Table::Redis(db.clone(), PhantomData),
        }
    }
}

impl<T: Clone + Serialize + DeserializeOwned> Table<T> {
    pub fn memory() -> Self {
        Table::Memory(Arc::default())
    }

    /// A table in Redis under `{key_prefix}{name}`.
    pub fn redis(conn: RedisConnection, key_prefix: &str, name: &str) -> Self {
        let rows = RedisRows {
            conn,
            hash: format!("{key_prefix}{name}:rows"),
            counter: format!("{key_prefix}{name}:next_id"),
        };
        Table::Redis(Arc::new(rows), PhantomData)
    }

    /// Every row, by id.
    pub async fn list(&self) -> Result<Vec<T>, StoreError> {
        match self {
            Table::Memory(m) => Ok(m.lock().unwrap().1.values().cloned().collect()),
            Table::Redis(db, _) => {
                let raw: Vec<(u64, String)> = db.conn.clone().hgetall(&db.hash).await?;
                let mut rows: Vec<(u64, T)> =
                    raw.into_iter().map(|(id, s)| decode(&s).map(|row| (id, row))).collect::<Result<_, _>>()?;
                rows.sort_by_key(|(id, _)| *id);
                Ok(rows.into_iter().map(|(_, row)| row).collect())
            }
        }
    }

    pub async fn get(&self, id: u64) -> Result<Option<T>, StoreError> {
        match self {
            Table::Memory(m) => Ok(m.lock().unwrap().1.get(&id).cloned()),
            Table::Redis(db, _) => {
                let raw: Option<String> = db.conn.clone().hget(&db.hash, id).await?;
                raw.as_deref().map(decode).transpose()
            }
        }
    }

    /// Stores the row `make` builds from a fresh id.
    pub async fn insert(&self, make: impl FnOnce(u64) -> T) -> Result<T, StoreError> {
        match self {
            Table::Memory(m) => {
                let mut guard = m.lock().unwrap();
                let (next_id, rows) = &mut *guard;
                *next_id += 1;
                let row = make(*next_id);
                rows.insert(*next_id, row.clone());
                Ok(row)
            }
            Table::Redis(db, _) => {
                let id: u64 = db.conn.clone().incr(&db.counter, 1).await?;
                let row = make(id);
                self.put(id, &row).await?;
                Ok(row)
            }
        }
    }

    /// Replaces row `id`.
    pub async fn put(&self, id: u64, row: &T) -> Result<(), StoreError> {
        match self {
            Table::Memory(m) => {
                m.lock().unwrap().1.insert(id, row.clone());
                Ok(())
            }
            Table::Redis(db, _) => {
                let json = serde_json::to_string(row).expect("row serializes");
                Ok(db.conn.clone().hset(&db.hash, id, json).await?)
            }
        }
    }

    /// Sets the fields in `changes` on row `id`, atomically; `None` when there is no such row.
    pub async fn patch(
        &self,
        id: u64,
        changes: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<T>, StoreError> {
        match self {
            Table::Memory(m) => {
                let mut guard = m.lock().unwrap();
                let Some(row) = guard.1.get_mut(&id) else { return Ok(None) };
                let mut value = serde_json::to_value(&*row).expect("row serializes");
                if let serde_json::Value::Object(fields) = &mut value {
                    fields.extend(changes);
                }
                *row = serde_json::from_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok(Some(row.clone()))
            }
            Table::Redis(db, _) => {
                let raw: Option<String> = redis::Script::new(PATCH_SCRIPT)
                    .key(&db.hash)
                    .arg(id)
                    .arg(serde_json::Value::Object(changes).to_string())
                    .invoke_async(&mut db.conn.clone())
                    .await?;
                raw.as_deref().map(decode).transpose()
            }
        }
    }

    /// Deletes row `id`; false when there was none.
    pub async fn delete(&self, id: u64) -> Result<bool, StoreError> {
        match self {
            Table::Memory(m) => Ok(m.lock().unwrap().1.remove(&id).is_some()),
            Table::Redis(db, _) => Ok(db.conn.clone().hdel::<_, _, u64>(&db.hash, id).await? > 0),
        }
    }
}

fn decode<T: DeserializeOwned>(raw: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}
