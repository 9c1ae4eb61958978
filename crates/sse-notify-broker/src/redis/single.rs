//! One Redis server, or the primary Sentinel names: events fan out with plain Pub/Sub on one
//! connection per instance, which this shape makes again (to the primary of now) whenever it
//! drops or the primary moves.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::PubSub;
use tokio::sync::watch;

use super::access::RedisOptions;
use super::access::{self, probe_channel};
use super::connection::RedisConnection;
use super::control::{self, Commands, Control};
use super::follow::Follow;
use super::keys::{Fanout, Keys};
use super::primary::{watch_sentinels, Locator, PrimaryConnection};
use super::shape::Shape;
use crate::error::BackendError;

/// Waits between reconnect attempts: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A single server or Sentinel's primary, with the first Pub/Sub connection to it.
pub(super) struct Single {
    locator: Arc<Locator>,
    primary: PrimaryConnection,
    pubsub: PubSub,
}

impl Shape for Single {
    const FANOUT: Fanout = Fanout::Plain;

    async fn connect(options: &RedisOptions) -> Result<(RedisConnection, Self), BackendError> {
        let locator = Arc::new(options.locator()?);
        let primary = PrimaryConnection::connect(locator.clone()).await?;
        let pubsub = connect_pubsub(&locator).await?;
        watch_sentinels(&primary);
        Ok((primary.clone().into(), Self { locator, primary, pubsub }))
    }

    async fn probe_channels(&mut self, keys: &Keys) -> Result<(), BackendError> {
        let channel = probe_channel(keys);
        let refused = |e| access::refused(keys, Fanout::Plain, "SUBSCRIBE", e);
        self.pubsub.subscribe(&channel).await.map_err(refused)?;
        self.pubsub.unsubscribe(&channel).await.map_err(refused)
    }

    fn name(&self) -> &'static str {
        if self.locator.follows_failovers() {
            "redis-sentinel"
        } else {
            "redis"
        }
    }

    /// Owns the instance's one Pub/Sub connection for its whole life: applies SUBSCRIBE and
    /// UNSUBSCRIBE as asked (a stream's first), and when the connection drops, reconnects with
    /// backoff, resubscribes every topic that still has local streams, and catches up from the
    /// log. When the primary moves (Sentinel), the connection is dropped and made again to the
    /// new one.
    ///
    /// Hand-written rather than `ConnectionManager`'s automatic resubscription: the manager
    /// only notices a dead connection on the next command it sends, and a subscribe-only
    /// connection may send none for hours; and the catch-up needs to happen between
    /// resubscribing and reading.
    async fn run(self, mut follow: Follow, mut commands: Commands) {
        let Self { locator, primary, pubsub } = self;
        // The channels subscribed on the connection of now.
        let mut live: HashSet<String> = HashSet::new();
        let mut moves = primary.moves();
        let mut next = Some(pubsub);
        let mut backoff = BACKOFF_FIRST;
        let mut first_connection = true;
        loop {
            let pubsub = match next.take() {
                Some(p) => p,
                None => match connect_pubsub(&locator).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "redis pub/sub reconnect failed");
                        if !wait_to_retry(&mut commands, &mut moves, &mut backoff).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let (mut sink, mut stream) = pubsub.split();
            live.clear();
            let wanted = follow.wanted_channels();
            if !wanted.is_empty() {
                if let Err(e) = sink.subscribe(&wanted).await {
                    // Redis took the connection but refused the channels (an ACL, a full
                    // server): reconnecting at once would hammer it, so this waits like a
                    // failed connect.
                    tracing::warn!(error = %e, retry_in = ?backoff, "redis resubscribe failed");
                    if !wait_to_retry(&mut commands, &mut moves, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            }
            live.extend(wanted.iter().cloned());
            if !first_connection {
                if let Err(e) = follow.recover().await {
                    tracing::warn!(error = %e, retry_in = ?backoff, "redis catch-up failed; reconnecting");
                    if !wait_to_retry(&mut commands, &mut moves, &mut backoff).await {
                        return;
                    }
                    continue;
                }
                tracing::info!(topics = wanted.len(), "redis pub/sub reconnected, resubscribed and caught up");
            }
            first_connection = false;
            backoff = BACKOFF_FIRST;

            moves.mark_unchanged();
            loop {
                tokio::select! {
                    _ = moves.changed() => {
                        tracing::warn!(to = %*moves.borrow(), "the Redis primary moved; reconnecting pub/sub to it");
                        break;
                    }
                    msg = stream.next() => match msg {
                        None => break,
                        Some(msg) => {
                            if let Err(e) = follow.on_message(msg.get_payload_bytes()).await {
                                tracing::warn!(error = %e, "redis catch-up after a new log epoch failed; reconnecting");
                                break;
                            }
                        }
                    },
                    cmd = commands.recv(&live) => match cmd {
                        None => return,
                        Some(Control::Subscribe(channel, waiters)) => {
                            let result = sink.subscribe(&channel).await.map_err(BackendError::redis("SUBSCRIBE"));
                            control::subscribed(&mut live, channel, waiters, result);
                        }
                        Some(Control::Unsubscribe(channel)) => {
                            if let Err(e) = sink.unsubscribe(&channel).await {
                                tracing::warn!(channel, error = %e, "redis UNSUBSCRIBE failed");
                            }
                            live.remove(&channel);
                        }
                        Some(Control::LoadPresence(topic)) => follow.load_presence(&topic).await,
                    },
                }
            }
            follow.set_up(false);
            tracing::warn!("redis pub/sub connection lost; reconnecting");
        }
    }
}

/// Waits `backoff` before the next attempt (refusing commands meanwhile), or until the primary
/// moves, and doubles it, up to [`BACKOFF_MAX`]. False when the broker is gone.
async fn wait_to_retry(commands: &mut Commands, moves: &mut watch::Receiver<String>, backoff: &mut Duration) -> bool {
    let go_on = tokio::select! {
        go_on = refuse_commands_for(commands, *backoff) => go_on,
        _ = moves.changed() => true,
    };
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    go_on
}

/// While disconnected, for `wait`: answers every subscription asked with an error and drops
/// the rest ([`Commands::refuse_all`]). False when the broker is gone.
async fn refuse_commands_for(commands: &mut Commands, wait: Duration) -> bool {
    let until = tokio::time::sleep(wait);
    tokio::pin!(until);
    loop {
        if !commands.refuse_all(BackendError::Reconnecting) {
            return false;
        }
        tokio::select! {
            _ = &mut until => return true,
            _ = commands.asked() => {}
        }
    }
}

/// A Pub/Sub connection to the primary as it is now.
async fn connect_pubsub(locator: &Locator) -> Result<PubSub, BackendError> {
    let client = locator.primary().await?;
    let after = Duration::from_secs(5);
    tokio::time::timeout(after, client.get_async_pubsub())
        .await
        .map_err(|_| BackendError::Timeout { during: "connecting Pub/Sub", after })?
        .map_err(BackendError::redis("connecting Pub/Sub"))
}
