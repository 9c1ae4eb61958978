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

pub(super) struct RedisBackend {
    conn: ConnectionManager,
    control: mpsc::UnboundedSender<Control>,
    script: redis::Script,
}

impl RedisBackend {
    pub(super) async fn connect(url: &str, channels: Arc<Channels>) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let connect = async {
            let conn = ConnectionManager::new(client.clone()).await?;
            let pubsub = client.get_async_pubsub().await?;
            Ok::<_, redis::RedisError>((conn, pubsub))
        };
        let (conn, pubsub) = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| "timed out after 5 s".to_owned())?
            .map_err(|e| e.to_string())?;
        let (mut sink, mut stream) = pubsub.split();

        // All SUBSCRIBE/UNSUBSCRIBE go through one queue, in the order the broker decided them.
        let (control, mut commands) = mpsc::unbounded_channel::<Control>();
        tokio::spawn(async move {
            while let Some(cmd) = commands.recv().await {
                match cmd {
                    Control::Subscribe(channel, done) => {
                        let result = sink.subscribe(&channel).await.map_err(|e| e.to_string());
                        if let Err(e) = &result {
                            tracing::error!(channel, error = %e, "redis SUBSCRIBE failed");
                        }
                        let _ = done.send(result);
                    }
                    Control::Unsubscribe(channel) => {
                        if let Err(e) = sink.unsubscribe(&channel).await {
                            tracing::warn!(channel, error = %e, "redis UNSUBSCRIBE failed");
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                channels.deliver(
                    msg.get_channel_name(),
                    Bytes::copy_from_slice(msg.get_payload_bytes()),
                );
            }
            tracing::error!("redis pub/sub connection closed; no more events will be received");
        });

        Ok(Self {
            conn,
            control,
            script: redis::Script::new(PUBLISH_SCRIPT),
        })
    }

    pub(super) fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub(super) async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), ping).await,
            Ok(Ok(_))
        )
    }

    pub(super) async fn subscribe(&self, channel: String) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.control
            .send(Control::Subscribe(channel, done))
            .map_err(|_| "redis subscriber task stopped".to_owned())?;
        wait.await
            .map_err(|_| "redis subscriber task stopped".to_owned())?
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
        invocation
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
