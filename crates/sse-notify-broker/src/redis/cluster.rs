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
use sse_notify_core::cursor::{LogId, LogPosition};
use tokio::sync::mpsc;

use super::control::{self, Commands, Control};
use super::{catch_up, message_event, on_message, Delivered, Follow, Hub, RedisConnection, RedisOptions, Shared};

/// The command connection, the subscription connection, and the messages it receives.
pub(super) async fn connect(
    options: &RedisOptions,
) -> Result<(RedisConnection, ClusterConnection, mpsc::UnboundedReceiver<PushInfo>), String> {
    let commands = options.cluster_client(None)?.get_async_connection().await.map_err(|e| e.to_string())?;
    let (pushes, received) = mpsc::unbounded_channel();
    let subscriptions =
        options.cluster_client(Some(pushes))?.get_async_connection().await.map_err(|e| e.to_string())?;
    Ok((RedisConnection::cluster(commands), subscriptions, received))
}

/// How often a resubscription or catch-up that failed (the shard is failing over) is tried again.
const RETRY: Duration = Duration::from_millis(250);

/// Owns the instance's sharded subscriptions: applies SSUBSCRIBE and SUNSUBSCRIBE in the order
/// the broker queued them, delivers messages, and catches up from the log whenever a channel
/// was subscribed again.
///
/// When a node's connection is lost, the cluster connection reconnects to that same address;
/// if its primary died, the slot moved to a replica that only a new slot map names. When a slot
/// migrates, its old owner unsubscribes the slot's channels (`sunsubscribe` pushes). Either
/// way a keyed command through this connection makes it fetch the slot map, and every wanted
/// channel is subscribed again, which lands on the slot's owner of now.
pub(super) async fn subscriber_loop(
    follow: Follow,
    mut subscriptions: ClusterConnection,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    start: (LogId, LogPosition),
    mut commands: Commands,
) {
    let Follow { shared, hub, metrics, presence } = follow;
    let mut delivered = Delivered { log: start.0, position: start.1 };
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
                        if let Some(change) = super::presence::message_frame(payload) {
                            presence.book().apply(&change);
                            continue;
                        }
                        let event = message_event(shared.log_tag, payload);
                        if let Err(e) = on_message(&shared, &hub, &mut delivered, &metrics, event).await {
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
                    PushKind::Disconnection => resubscribe = true,
                    _ => {}
                }
            }
            cmd = commands.recv(&live) => match cmd {
                None => return,
                Some(Control::Subscribe(channel, waiters)) => {
                    let result = subscriptions.ssubscribe(&channel).await.map_err(|e| e.to_string());
                    control::subscribed(&mut live, "SSUBSCRIBE", channel, waiters, result);
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
                Some(Control::LoadPresence(topic)) => super::presence::load(&presence, &topic).await,
            },
            _ = retry.tick(), if resubscribe || behind => {}
        }
        if resubscribe {
            match subscribe_again(&shared, &hub, &mut subscriptions).await {
                Ok(wanted) => {
                    (resubscribe, behind) = (false, true);
                    live.extend(wanted);
                }
                Err(e) => tracing::warn!(error = %e, "redis cluster resubscription failed; retrying"),
            }
        }
        if behind && !resubscribe {
            match catch_up(&shared, &hub, &mut delivered, &metrics).await {
                Ok(()) => {
                    behind = false;
                    metrics.redis_reconnects.inc();
                    tracing::info!("redis cluster subscriptions moved or reconnected; caught up from the log");
                    super::presence::reload_all(&presence).await;
                }
                Err(e) => tracing::warn!(error = %e, "redis catch-up failed; retrying"),
            }
        }
    }
}

/// Makes the connection learn where the prefix's slot is now, then subscribes every channel a
/// local stream follows again (a channel already subscribed there is confirmed once more).
async fn subscribe_again(
    shared: &Shared,
    hub: &Hub,
    subscriptions: &mut ClusterConnection,
) -> Result<Vec<String>, String> {
    redis::cmd("EXISTS").arg(shared.keys.head()).query_async::<i64>(subscriptions).await.map_err(|e| e.to_string())?;
    let wanted: Vec<String> = hub.topics().iter().map(|t| shared.keys.channel(t)).collect();
    if !wanted.is_empty() {
        subscriptions.ssubscribe(&wanted).await.map_err(|e| e.to_string())?;
    }
    Ok(wanted)
}
