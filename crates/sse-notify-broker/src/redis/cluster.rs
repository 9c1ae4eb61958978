//! Redis Cluster: a prefix's log and channels in one slot (their names share a hash tag), and
//! events fanned out with sharded Pub/Sub on the shard that owns that slot.
//!
//! The publish script runs on that shard and `SPUBLISH`es there, atomically with the log entry;
//! plain `PUBLISH` would be broadcast to every node of the cluster. Instances `SSUBSCRIBE` through
//! the `redis` crate's cluster connection, which routes each channel to its shard and subscribes
//! again where a channel's slot went after a failover or a slot migration. What it cannot say is
//! which messages went by meanwhile, so every subscription confirmed again (and every lost node
//! connection) makes this instance catch up from the log, as the Pub/Sub loop does after a
//! reconnect: no live stream misses an event that is in the log.

use std::collections::HashSet;
use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::access::RedisOptions;
use super::access::{self, probe_channel};
use super::connection::RedisConnection;
use super::control::{self, Commands, Control};
use super::follow::Follow;
use super::keys::{Fanout, Keys};
use super::shape::Shape;
use crate::error::BackendError;

/// A Redis Cluster: the subscription connection (another cluster connection, RESP3, whose
/// messages come as pushes) and what it receives.
pub(super) struct Cluster {
    subscriptions: ClusterConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

/// How often a resubscription or catch-up that failed (the shard is failing over) is tried again.
const RETRY: Duration = Duration::from_millis(250);

impl Shape for Cluster {
    const FANOUT: Fanout = Fanout::Sharded;

    async fn connect(options: &RedisOptions) -> Result<(RedisConnection, Self), BackendError> {
        let connecting = "connecting to the cluster";
        let commands = options.cluster_client(None)?.get_async_connection().await;
        let commands = commands.map_err(BackendError::redis(connecting))?;
        let (pushes, received) = mpsc::unbounded_channel();
        let subscriptions = options.cluster_client(Some(pushes))?.get_async_connection().await;
        let subscriptions = subscriptions.map_err(BackendError::redis(connecting))?;
        Ok((commands.into(), Self { subscriptions, pushes: received }))
    }

    async fn probe_channels(&mut self, keys: &Keys) -> Result<(), BackendError> {
        let channel = probe_channel(keys);
        let refused = |e| access::refused(keys, Fanout::Sharded, "SSUBSCRIBE", e);
        self.subscriptions.ssubscribe(&channel).await.map_err(refused)?;
        self.subscriptions.sunsubscribe(&channel).await.map_err(refused)
    }

    fn name(&self) -> &'static str {
        "redis-cluster"
    }

    /// Owns the instance's sharded subscriptions: applies SSUBSCRIBE and SUNSUBSCRIBE in the order
    /// the broker queued them, delivers messages, and catches up from the log whenever a channel
    /// was subscribed again.
    ///
    /// When a node's connection is lost, the cluster connection reconnects to that same address;
    /// if its primary died, the slot moved to a replica that only a new slot map names. When a slot
    /// migrates, its old owner unsubscribes the slot's channels (`sunsubscribe` pushes). Either
    /// way a keyed command through this connection makes it fetch the slot map, and every wanted
    /// channel is subscribed again, which lands on the slot's owner of now.
    async fn run(self, mut follow: Follow, mut commands: Commands) {
        let Self { mut subscriptions, mut pushes } = self;
        // Channels whose first confirmation came: a later one is a resubscription.
        let mut confirmed: HashSet<Vec<u8>> = HashSet::new();
        // Channels this instance unsubscribed itself (its last stream closed, a watch let go),
        // whose `sunsubscribe` push is still to come: that push is not a slot move.
        let mut leaving: HashSet<Vec<u8>> = HashSet::new();
        // The channels subscribed (the cluster connection keeps them across moves and reconnects).
        let mut live: HashSet<String> = HashSet::new();
        let (mut resubscribe, mut behind) = (false, false);
        let mut retry = tokio::time::interval(RETRY);
        loop {
            tokio::select! {
                push = pushes.recv() => {
                    let Some(push) = push else { return };
                    match push.kind {
                        PushKind::SMessage | PushKind::Message => {
                            let Some(Value::BulkString(payload)) = push.data.get(1) else { continue };
                            if let Err(e) = follow.on_message(payload).await {
                                tracing::warn!(error = %e, "redis catch-up after a new log epoch failed; retrying");
                                behind = true;
                            }
                        }
                        PushKind::SSubscribe => {
                            let Some(Value::BulkString(channel)) = push.data.first() else { continue };
                            if !confirmed.insert(channel.clone()) {
                                behind = true;
                            }
                        }
                        PushKind::SUnsubscribe => {
                            let ours = matches!(push.data.first(), Some(Value::BulkString(c)) if leaving.remove(c));
                            // A shard that lost the slot unsubscribes its channels itself.
                            resubscribe |= !ours;
                        }
                        PushKind::Disconnection => {
                            follow.set_up(false);
                            resubscribe = true;
                        }
                        _ => {}
                    }
                }
                cmd = commands.recv(&live) => match cmd {
                    None => return,
                    Some(Control::Subscribe(channel, waiters)) => {
                        let result = subscriptions.ssubscribe(&channel).await.map_err(BackendError::redis("SSUBSCRIBE"));
                        control::subscribed(&mut live, channel, waiters, result);
                    }
                    Some(Control::Unsubscribe(channel)) => {
                        live.remove(&channel);
                        confirmed.remove(channel.as_bytes());
                        match subscriptions.sunsubscribe(&channel).await {
                            Ok(()) => {
                                leaving.insert(channel.into_bytes());
                            }
                            Err(e) => tracing::warn!(channel, error = %e, "redis SUNSUBSCRIBE failed"),
                        }
                    }
                    Some(Control::LoadPresence(topic)) => follow.load_presence(&topic).await,
                },
                _ = retry.tick(), if resubscribe || behind => {}
            }
            if resubscribe {
                match subscribe_again(&follow, &mut subscriptions).await {
                    Ok(wanted) => {
                        (resubscribe, behind) = (false, true);
                        live.extend(wanted);
                    }
                    Err(e) => {
                        follow.set_up(false);
                        tracing::warn!(error = %e, "redis cluster resubscription failed; retrying");
                    }
                }
            }
            if behind && !resubscribe {
                match follow.recover().await {
                    Ok(()) => {
                        behind = false;
                        tracing::info!("redis cluster subscriptions moved or reconnected; caught up from the log");
                    }
                    Err(e) => tracing::warn!(error = %e, "redis catch-up failed; retrying"),
                }
            }
        }
    }
}

/// Makes the connection learn where the prefix's slot is now, then subscribes every channel a
/// local stream follows again (a channel already subscribed there is confirmed once more).
async fn subscribe_again(follow: &Follow, subscriptions: &mut ClusterConnection) -> Result<Vec<String>, BackendError> {
    let head = redis::cmd("EXISTS").arg(follow.keys().head()).query_async::<i64>(subscriptions).await;
    head.map_err(BackendError::redis("EXISTS (to learn the slot map)"))?;
    let wanted = follow.wanted_channels();
    if !wanted.is_empty() {
        subscriptions.ssubscribe(&wanted).await.map_err(BackendError::redis("SSUBSCRIBE"))?;
    }
    Ok(wanted)
}
