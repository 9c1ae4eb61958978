//! The command connection the broker uses and hands to the app, whatever the shape.

use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::primary::PrimaryConnection;

/// The broker's command connection, also handed to the app for its own data
/// ([`crate::Broker::redis_connection`]): one multiplexed connection to the primary, which
/// follows it when Sentinel fails it over, or a Redis Cluster connection (which routes each
/// command to the shard of its keys and follows slot moves and failovers itself). Cheap to
/// clone; use it with the `redis` crate's `AsyncCommands` like any async connection.
///
/// ```no_run
/// # async fn demo(broker: sse_notify_broker::Broker) -> redis::RedisResult<()> {
/// use redis::AsyncCommands;
/// let mut conn = broker.redis_connection().expect("a Redis broker");
/// let _: () = conn.set("greeting", "hello").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisConnection(Shaped);

#[derive(Clone)]
enum Shaped {
    Primary(PrimaryConnection),
    Cluster(ClusterConnection),
}

impl From<PrimaryConnection> for RedisConnection {
    fn from(conn: PrimaryConnection) -> Self {
        Self(Shaped::Primary(conn))
    }
}

impl From<ClusterConnection> for RedisConnection {
    fn from(conn: ClusterConnection) -> Self {
        Self(Shaped::Cluster(conn))
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Shaped::Primary(conn) => conn.req_packed_command(cmd),
            Shaped::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Shaped::Primary(conn) => conn.req_packed_commands(pipeline, offset, count),
            Shaped::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Shaped::Primary(conn) => conn.get_db(),
            Shaped::Cluster(conn) => conn.get_db(),
        }
    }
}
