//! Where the primary is, and a command connection that follows it through failovers.
//!
//! A single Redis is at one address for good. Behind Sentinel the primary moves: after a
//! failover the old address is dead, or a replica that refuses writes. The command connection
//! asks the sentinels again when a command fails the way a moved primary makes it fail, and when
//! a sentinel announces `+switch-master`; whoever follows the log's live events (the Pub/Sub
//! loop) is told through [`PrimaryConnection::moves`] and reconnects to the new primary.
//!
//! The sentinels are asked through the `redis` crate's `SentinelClient` (it checks that the
//! address it returns is a primary no sentinel thinks is down); what is hand-written here is
//! only the following: a `ConnectionManager` reconnects to the address it was made for, forever.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::SentinelClient;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};
use tokio::sync::watch;

use crate::error::BackendError;

/// How the primary is found.
pub(super) enum Locator {
    /// One address (a single Redis, or a proxy in front of one).
    Fixed(redis::Client),
    /// Asked from the sentinels that watch `master`.
    Sentinel { sentinels: tokio::sync::Mutex<SentinelClient>, master: String },
}

impl Locator {
    /// A client for the primary now.
    pub(super) async fn primary(&self) -> Result<redis::Client, BackendError> {
        match self {
            Locator::Fixed(client) => Ok(client.clone()),
            Locator::Sentinel { sentinels, master } => {
                let mut sentinels = sentinels.lock().await;
                let after = Duration::from_secs(5);
                match tokio::time::timeout(after, sentinels.async_get_client()).await {
                    Ok(Ok(client)) => Ok(client),
                    Ok(Err(source)) => Err(BackendError::NoPrimary { master: master.clone(), source }),
                    Err(_) => Err(BackendError::Timeout { during: "asking the sentinels for the primary", after }),
                }
            }
        }
    }

    pub(super) fn follows_failovers(&self) -> bool {
        matches!(self, Locator::Sentinel { .. })
    }
}

/// Whether Redis refused the connection's login (a wrong password or user), rather than a
/// command.
pub(super) fn refused_login(error: &RedisError) -> bool {
    let said = error.to_string();
    error.kind() == ErrorKind::AuthenticationFailed || said.contains("NOAUTH") || said.contains("WRONGPASS")
}

/// `host:port` of a client's server, to tell whether the primary moved.
fn address(client: &redis::Client) -> String {
    client.get_connection_info().addr().to_string()
}

/// Publishes fail fast while Redis is away (the caller gets 503, or the outbox keeps the event)
/// instead of queueing behind long retries; the manager reconnects by itself on the next command.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
}

/// A command connection to the primary (one multiplexed connection) that follows it when
/// Sentinel fails it over; cheap to clone.
#[derive(Clone)]
pub(super) struct PrimaryConnection {
    inner: Arc<Inner>,
}

struct Inner {
    locator: Arc<Locator>,
    current: RwLock<Current>,
    /// One re-resolution at a time; the others wait for its outcome.
    refreshing: tokio::sync::Mutex<()>,
    /// When the connection was last made again after a refused login (at most once a second).
    remade: std::sync::Mutex<Option<std::time::Instant>>,
    /// The primary's address, changed when it moves.
    moved: watch::Sender<String>,
}

#[derive(Clone)]
struct Current {
    address: String,
    conn: ConnectionManager,
}

impl PrimaryConnection {
    /// Connects to the primary `locator` names now.
    pub(super) async fn connect(locator: Arc<Locator>) -> Result<Self, BackendError> {
        let client = locator.primary().await?;
        let address = address(&client);
        let conn = ConnectionManager::new_with_config(client, manager_config())
            .await
            .map_err(BackendError::redis("connecting"))?;
        let (moved, _) = watch::channel(address.clone());
        let current = RwLock::new(Current { address, conn });
        let inner = Inner { locator, current, refreshing: Default::default(), remade: Default::default(), moved };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Changes whenever the primary moved (to its new address).
    pub(super) fn moves(&self) -> watch::Receiver<String> {
        self.inner.moved.subscribe()
    }
}

impl Inner {
    /// After a failed command: follows the primary if the failure says it may have moved.
    async fn after_error(&self, seen: &str, error: &RedisError) {
        let moved = error.is_io_error()
            || error.is_connection_refusal()
            || error.is_connection_dropped()
            || error.is_timeout()
            || matches!(error.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown))
            || error.to_string().contains("READONLY");
        if moved {
            self.follow_primary(seen).await;
        } else if refused_login(error) {
            self.remake(seen).await;
        }
    }

    /// After a refused login (the password changed, an ACL user not loaded yet after a
    /// restart): makes the connection again, at most once a second. The connection manager
    /// keeps a connection whose login failed and answers every command with that failure for
    /// good, so without this the instance never recovers when the login works again.
    async fn remake(&self, seen: &str) {
        {
            let mut remade = self.remade.lock().unwrap_or_else(|e| e.into_inner());
            if remade.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                return;
            }
            *remade = Some(std::time::Instant::now());
        }
        let _one = self.refreshing.lock().await;
        if self.current().address != seen {
            return; // it moved meanwhile: the new connection logged in afresh
        }
        let client = match self.locator.primary().await {
            Ok(client) => client,
            Err(e) => return tracing::warn!(error = %e, "cannot find the Redis primary to log in again"),
        };
        let address = address(&client);
        match ConnectionManager::new_with_config(client, manager_config()).await {
            Ok(conn) => {
                tracing::info!(to = %address, "logged in to Redis again");
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Current { address, conn };
            }
            Err(e) => tracing::warn!(error = %e, "Redis still refuses the login; trying again at the next command"),
        }
    }

    fn current(&self) -> Current {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks where the primary is, and moves there if it moved away from `seen` (the address
    /// a failed command went to). Does nothing for a fixed address.
    async fn follow_primary(&self, seen: &str) {
        if !self.locator.follows_failovers() {
            return;
        }
        let _one = self.refreshing.lock().await;
        if self.current().address != seen {
            return; // someone else moved it meanwhile
        }
        let client = match self.locator.primary().await {
            Ok(client) => client,
            Err(e) => return tracing::warn!(error = %e, "cannot find the Redis primary; commands keep the old one"),
        };
        let address = address(&client);
        if address == seen {
            return;
        }
        match ConnectionManager::new_with_config(client, manager_config()).await {
            Ok(conn) => {
                tracing::warn!(from = seen, to = %address, "the Redis primary moved; following it");
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Current { address: address.clone(), conn };
                self.moved.send_replace(address);
            }
            Err(e) => tracing::warn!(to = %address, error = %e, "cannot connect to the new Redis primary yet"),
        }
    }
}

impl ConnectionLike for PrimaryConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let Current { address, mut conn } = self.inner.current();
            let reply = conn.req_packed_command(cmd).await;
            if let Err(e) = &reply {
                self.inner.after_error(&address, e).await;
            }
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let Current { address, mut conn } = self.inner.current();
            let reply = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &reply {
                self.inner.after_error(&address, e).await;
            }
            reply
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.current().conn.get_db()
    }
}

/// Behind Sentinel: listens for `+switch-master` of `master` on one sentinel after another,
/// and moves `conn` at once when it comes (a command would find out only when it fails). Ends
/// when `conn` is dropped by everyone else.
pub(super) fn watch_sentinels(conn: &PrimaryConnection) {
    let Locator::Sentinel { master, .. } = conn.inner.locator.as_ref() else { return };
    let master = master.clone();
    let weak = Arc::downgrade(&conn.inner);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let sentinel = match inner.locator.as_ref() {
                Locator::Sentinel { sentinels, .. } => sentinels.lock().await.async_get_sentinel_client().await,
                Locator::Fixed(_) => return,
            };
            drop(inner);
            let pubsub = match sentinel {
                Ok(client) => client.get_async_pubsub().await,
                Err(e) => Err(e),
            };
            let mut pubsub = match pubsub {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach a sentinel to watch for failovers; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if pubsub.subscribe("+switch-master").await.is_err() {
                continue;
            }
            backoff = Duration::from_millis(100);
            let mut messages = pubsub.on_message();
            loop {
                let next = tokio::time::timeout(Duration::from_secs(1), messages.next()).await;
                let Some(inner) = weak.upgrade() else { return };
                match next {
                    Err(_) => continue, // a second without news: see whether anyone still listens
                    Ok(None) => break,  // that sentinel went away: another one
                    Ok(Some(msg)) => {
                        // `<master> <old ip> <old port> <new ip> <new port>`
                        let text: String = msg.get_payload().unwrap_or_default();
                        if text.split(' ').next() == Some(master.as_str()) {
                            let seen = inner.current().address;
                            inner.follow_primary(&seen).await;
                        }
                    }
                }
            }
        }
    });
}
