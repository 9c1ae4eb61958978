//! The Redis backend: Pub/Sub for fan-out, one stream per topic for ids (and later, resume).
//!
//! Per instance there is exactly one Pub/Sub connection, shared by all local subscribers, and
//! one multiplexed command connection for publishing. A channel is subscribed while at least one
//! local client wants it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::Channels;
use crate::metrics::SharedMetrics;

/// How many entries each topic's stream keeps, and for how long an idle one lives. The stream
/// gives every event a Redis-ordered id per topic; its tail is what a later resume will replay.
const STREAM_MAXLEN: usize = 1000;
const STREAM_TTL_MS: u64 = 24 * 3600 * 1000;

/// Atomically, per topic: append to the topic's stream (which assigns the id), then PUBLISH the
/// finished frame (`id:` line + the pre-encoded `event:`/`data:` lines). One round trip per
/// publish whatever the number of topics; ids and Pub/Sub order agree.
/// KEYS: stream1, channel1, stream2, channel2, ...  ARGV: frame body, maxlen, ttl ms.
const PUBLISH_SCRIPT: &str = r#"
local n = 0
for i = 1, #KEYS, 2 do
  local id = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[2], '*', 'f', ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
  n = n + redis.call('PUBLISH', KEYS[i + 1], 'id: ' .. id .. '\n' .. ARGV[1])
end
return n
"#;

enum Control {
    Subscribe(String, oneshot::Sender<Result<(), String>>),
    Unsubscribe(String),
}

/// Waits between reconnect attempts: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(super) struct RedisBackend {
    conn: ConnectionManager,
    control: mpsc::UnboundedSender<Control>,
    script: redis::Script,
}

impl RedisBackend {
    pub(super) async fn connect(url: &str, channels: Arc<Channels>, metrics: SharedMetrics) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        // Publishes fail fast while Redis is away (the caller gets 503) instead of queueing
        // behind long retries; the manager reconnects by itself on the next command.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let connect = async {
            let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
            let pubsub = client.get_async_pubsub().await?;
            Ok::<_, redis::RedisError>((conn, pubsub))
        };
        let (conn, pubsub) = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| "timed out after 5 s".to_owned())?
            .map_err(|e| e.to_string())?;

        let (control, commands) = mpsc::unbounded_channel::<Control>();
        tokio::spawn(subscriber_loop(client, pubsub, channels, commands, metrics));
        Ok(Self { conn, control, script: redis::Script::new(PUBLISH_SCRIPT) })
    }

    pub(super) fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub(super) async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(Duration::from_secs(1), ping).await, Ok(Ok(_)))
    }

    pub(super) async fn subscribe(&self, channel: String) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.control.send(Control::Subscribe(channel, done)).map_err(|_| "redis subscriber task stopped".to_owned())?;
        wait.await.map_err(|_| "redis subscriber task stopped".to_owned())?
    }

    pub(super) fn unsubscribe(&self, channel: String) {
        let _ = self.control.send(Control::Unsubscribe(channel));
    }

    pub(super) async fn publish(&self, channels: &[String], body: &str) -> Result<(), String> {
        let mut invocation = self.script.prepare_invoke();
        for channel in channels {
            invocation.key(format!("sse:stream:{channel}")).key(channel);
        }
        invocation.arg(body).arg(STREAM_MAXLEN).arg(STREAM_TTL_MS);
        let mut conn = self.conn.clone();
        invocation.invoke_async::<i64>(&mut conn).await.map(drop).map_err(|e| e.to_string())
    }
}

/// Owns the instance's one Pub/Sub connection for its whole life: applies SUBSCRIBE and
/// UNSUBSCRIBE in the order the broker queued them, and when the connection drops, reconnects
/// with backoff, resubscribes every channel that still has local listeners and tells them to
/// `resync` (events published meanwhile were not received).
///
/// Hand-written rather than `ConnectionManager`'s automatic resubscription: the manager only
/// notices a dead connection on the next command it sends, and a subscribe-only connection may
/// send none for hours.
async fn subscriber_loop(
    client: redis::Client,
    first: redis::aio::PubSub,
    channels: Arc<Channels>,
    mut commands: mpsc::UnboundedReceiver<Control>,
    metrics: SharedMetrics,
) {
    let mut next = Some(first);
    let mut backoff = BACKOFF_FIRST;
    let mut first_connection = true;
    loop {
        let pubsub = match next.take() {
            Some(p) => p,
            None => match client.get_async_pubsub().await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "redis pub/sub reconnect failed");
                    if !refuse_commands_for(&mut commands, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        let (mut sink, mut stream) = pubsub.split();
        let wanted = channels.names();
        if !wanted.is_empty() {
            if let Err(e) = sink.subscribe(&wanted).await {
                tracing::warn!(error = %e, "redis resubscribe failed");
                continue;
            }
        }
        if !std::mem::replace(&mut first_connection, false) {
            metrics.redis_reconnects.inc();
            tracing::info!(channels = wanted.len(), "redis pub/sub reconnected and resubscribed");
            channels.resync_all("broker_reconnected");
        }
        backoff = BACKOFF_FIRST;

        let (lost_tx, mut lost) = oneshot::channel::<()>();
        let reader_channels = channels.clone();
        let reader = tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                reader_channels.deliver(msg.get_channel_name(), Bytes::copy_from_slice(msg.get_payload_bytes()));
            }
            let _ = lost_tx.send(());
        });
        loop {
            tokio::select! {
                _ = &mut lost => break,
                cmd = commands.recv() => match cmd {
                    None => {
                        reader.abort();
                        return;
                    }
                    Some(Control::Subscribe(channel, done)) => {
                        let result = sink.subscribe(&channel).await.map_err(|e| e.to_string());
                        if let Err(e) = &result {
                            tracing::error!(channel, error = %e, "redis SUBSCRIBE failed");
                        }
                        let _ = done.send(result);
                    }
                    Some(Control::Unsubscribe(channel)) => {
                        if let Err(e) = sink.unsubscribe(&channel).await {
                            tracing::warn!(channel, error = %e, "redis UNSUBSCRIBE failed");
                        }
                    }
                },
            }
        }
        tracing::warn!("redis pub/sub connection lost; reconnecting");
    }
}

/// While disconnected, for `wait`: answers SUBSCRIBE at once with an error (the SSE endpoint
/// turns it into 503; the channel is resubscribed with the rest on reconnect anyway) and drops
/// UNSUBSCRIBE (a fresh connection starts with nothing subscribed). False when the broker is gone.
async fn refuse_commands_for(commands: &mut mpsc::UnboundedReceiver<Control>, wait: Duration) -> bool {
    let until = tokio::time::sleep(wait);
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = &mut until => return true,
            cmd = commands.recv() => match cmd {
                None => return false,
                Some(Control::Subscribe(_, done)) => {
                    let _ = done.send(Err("redis is unreachable; reconnecting".to_owned()));
                }
                Some(Control::Unsubscribe(_)) => {}
            },
        }
    }
}
