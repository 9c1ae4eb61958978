//! The one interface each shape of Redis deployment offers the backend: one server or Sentinel
//! (`single.rs`), or a Cluster (`cluster.rs`).
//!
//! A shape says how to connect (the command connection the app may share, and whatever its
//! subscriptions need), how events fan out, and how to follow the log's live events: its own
//! subscribe commands, and how it notices it may have missed some (a lost connection, a moved
//! primary, a moved slot). Everything else (the scripts, catch-up, presence) is the backend's
//! and the same for every shape.

use std::future::Future;

use super::access::RedisOptions;
use super::connection::RedisConnection;
use super::control::Commands;
use super::follow::Follow;
use super::keys::{Fanout, Keys};
use crate::error::BackendError;

/// A shape of Redis deployment, connected: what its subscriber loop owns.
pub(super) trait Shape: Send + Sized + 'static {
    /// How its events fan out.
    const FANOUT: Fanout;

    /// Connects as `options` say: the command connection, and the shape with its subscription
    /// connection.
    fn connect(options: &RedisOptions) -> impl Future<Output = Result<(RedisConnection, Self), BackendError>> + Send;

    /// Subscribes to a channel of `keys`' namespace that no topic names, and unsubscribes:
    /// an error naming what the ACL refused when the Redis user may not.
    fn probe_channels(&mut self, keys: &Keys) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// `"redis"`, `"redis-sentinel"` or `"redis-cluster"`: shown by `/health/ready`.
    fn name(&self) -> &'static str;

    /// Follows the log's live events for the backend's whole life: applies `commands` in the
    /// order they come, hands each message to `follow`, and recovers from the log whenever it may
    /// have missed some. Ends when `commands` does (the backend was dropped).
    fn run(self, follow: Follow, commands: Commands) -> impl Future<Output = ()> + Send;
}
