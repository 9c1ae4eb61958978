//! Where the demo keeps its tasks (server only).
//!
//! With Redis configured, tasks live in Redis itself, so every instance sharing that Redis sees
//! the same board. Without Redis the app runs as one instance on the embedded broker, and an
//! in-process map is that instance's whole store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use shared::tasks::Task;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("task store unavailable: {0}")]
    Unavailable(String),
    #[error("stored task is corrupt: {0}")]
    Corrupt(String),
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// A change to a task: each field that is `Some` is set.
#[derive(Clone, Debug, Default)]
pub struct TaskPatch {
    pub title: Option<String>,
    pub done: Option<bool>,
}

/// The demo's task store; cheap to clone.
#[derive(Clone)]
pub enum TaskStore {
    Memory(Arc<Mutex<MemoryTasks>>),
    Redis { conn: ConnectionManager, key_prefix: String },
}

#[derive(Default)]
pub struct MemoryTasks {
    next_id: u64,
    tasks: BTreeMap<u64, Task>,
}

/// Applies a patch atomically inside Redis, so concurrent rename and toggle from two instances
/// both land (a read-modify-write from the app could lose one).
const UPDATE_SCRIPT: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
local t = cjson.decode(v)
if ARGV[2] == '1' then t.title = ARGV[3] end
if ARGV[4] == '1' then t.done = (ARGV[5] == '1') end
local out = cjson.encode(t)
redis.call('HSET', KEYS[1], ARGV[1], out)
return out
"#;

impl TaskStore {
    pub fn memory() -> Self {
        TaskStore::Memory(Arc::default())
    }

    /// A store in Redis under `key_prefix` (the app's `TOPIC_PREFIX` namespace).
    pub fn redis(conn: ConnectionManager, key_prefix: &str) -> Self {
        TaskStore::Redis { conn, key_prefix: key_prefix.to_owned() }
    }

    fn keys(prefix: &str) -> (String, String) {
        (format!("{prefix}taskboard:tasks"), format!("{prefix}taskboard:next_id"))
    }

    pub async fn list(&self) -> Result<Vec<Task>, StoreError> {
        match self {
            TaskStore::Memory(m) => Ok(m.lock().unwrap().tasks.values().cloned().collect()),
            TaskStore::Redis { conn, key_prefix } => {
                let (hash, _) = Self::keys(key_prefix);
                let raw: Vec<String> = conn.clone().hvals(hash).await?;
                let mut tasks = raw.iter().map(|s| decode(s)).collect::<Result<Vec<_>, _>>()?;
                tasks.sort_by_key(|t| t.id);
                Ok(tasks)
            }
        }
    }

    pub async fn get(&self, id: u64) -> Result<Option<Task>, StoreError> {
        match self {
            TaskStore::Memory(m) => Ok(m.lock().unwrap().tasks.get(&id).cloned()),
            TaskStore::Redis { conn, key_prefix } => {
                let (hash, _) = Self::keys(key_prefix);
                let raw: Option<String> = conn.clone().hget(hash, id).await?;
                raw.as_deref().map(decode).transpose()
            }
        }
    }

    /// Creates a task; `title` must already be validated.
    pub async fn create(&self, title: String) -> Result<Task, StoreError> {
        match self {
            TaskStore::Memory(m) => {
                let mut m = m.lock().unwrap();
                m.next_id += 1;
                let task = Task { id: m.next_id, title, done: false };
                m.tasks.insert(task.id, task.clone());
                Ok(task)
            }
            TaskStore::Redis { conn, key_prefix } => {
                let (hash, counter) = Self::keys(key_prefix);
                let mut conn = conn.clone();
                let id: u64 = conn.incr(counter, 1).await?;
                let task = Task { id, title, done: false };
                let json = serde_json::to_string(&task).expect("task serializes");
                let _: () = conn.hset(hash, id, json).await?;
                Ok(task)
            }
        }
    }

    /// Applies `patch`; `None` when there is no such task.
    pub async fn update(&self, id: u64, patch: TaskPatch) -> Result<Option<Task>, StoreError> {
        match self {
            TaskStore::Memory(m) => {
                let mut m = m.lock().unwrap();
                Ok(m.tasks.get_mut(&id).map(|t| {
                    if let Some(title) = patch.title {
                        t.title = title;
                    }
                    if let Some(done) = patch.done {
                        t.done = done;
                    }
                    t.clone()
                }))
            }
            TaskStore::Redis { conn, key_prefix } => {
                let (hash, _) = Self::keys(key_prefix);
                let flag = |b: bool| if b { "1" } else { "0" };
                let raw: Option<String> = redis::Script::new(UPDATE_SCRIPT)
                    .key(hash)
                    .arg(id)
                    .arg(flag(patch.title.is_some()))
                    .arg(patch.title.unwrap_or_default())
                    .arg(flag(patch.done.is_some()))
                    .arg(flag(patch.done.unwrap_or(false)))
                    .invoke_async(&mut conn.clone())
                    .await?;
                raw.as_deref().map(decode).transpose()
            }
        }
    }

    /// Deletes a task; `false` when there was none.
    pub async fn delete(&self, id: u64) -> Result<bool, StoreError> {
        match self {
            TaskStore::Memory(m) => Ok(m.lock().unwrap().tasks.remove(&id).is_some()),
            TaskStore::Redis { conn, key_prefix } => {
                let (hash, _) = Self::keys(key_prefix);
                let n: u64 = conn.clone().hdel(hash, id).await?;
                Ok(n > 0)
            }
        }
    }
}

fn decode(raw: &str) -> Result<Task, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}
