//! What every shape's subscriber loop does with what it receives: each event delivered to the
//! hub once, a gap (a reconnect, a moved slot, a new log epoch) closed from the log, and the
//! topics' presence changes brought to the book.
//!
//! The shapes differ only in how they subscribe and how they notice a gap (`single.rs`,
//! `cluster.rs`); this part is theirs in common, so a fix here is a fix for all of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sse_notify_core::cursor::{LogId, LogPosition};
use sse_notify_core::origin::is_origin;
use sse_notify_core::wire::ResyncReason;

use super::event_log::EventLog;
use super::keys::Keys;
use super::presence::{self, RedisPresence};
use crate::error::BackendError;
use crate::hub::{Hub, LogEvent};
use crate::metrics::SharedMetrics;

/// The state a subscriber loop follows the log with.
pub(super) struct Follow {
    log: EventLog,
    hub: Arc<Hub>,
    metrics: SharedMetrics,
    presence: Arc<RedisPresence>,
    delivered: Delivered,
    /// Whether the subscriptions are up and caught up: what readiness reports (an instance
    /// whose Pub/Sub is down refuses new streams and delivers nothing live, so a load balancer
    /// must not send it any).
    up: Arc<AtomicBool>,
}

impl Follow {
    /// Follows from the log's head now: a gap after this is caught up from here.
    pub(super) async fn start(
        log: EventLog,
        hub: Arc<Hub>,
        metrics: SharedMetrics,
        presence: Arc<RedisPresence>,
        up: Arc<AtomicBool>,
    ) -> Result<Self, BackendError> {
        let start = log.history(None).await?;
        let delivered = Delivered { log: start.log, position: start.head };
        up.store(true, Ordering::Release);
        Ok(Self { log, hub, metrics, presence, delivered, up })
    }

    /// The subscriptions went down (`false`: a lost connection, a moved slot), or are up and
    /// caught up again (`true`).
    pub(super) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
    }

    /// The channels of every topic a local stream or watch follows now.
    pub(super) fn wanted_channels(&self) -> Vec<String> {
        self.hub.topics().iter().map(|t| self.log.keys.channel(t)).collect()
    }

    /// The namespace's keys (a shape's commands name the log's head to find its slot).
    pub(super) fn keys(&self) -> &Keys {
        &self.log.keys
    }

    /// A Pub/Sub message: a presence change, or an event delivered unless it was already. One
    /// of another log epoch means the log was forked (a failover) or recreated: what this
    /// instance delivered is checked against the log as it is now, as after a reconnect, then
    /// the message is delivered unless that read had it. `Err` when the log could not be read:
    /// the caller catches up again later.
    pub(super) async fn on_message(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        if let Some(change) = presence::message_frame(payload) {
            self.presence.book().apply(&change);
            return Ok(());
        }
        match message_event(self.log.tag, payload) {
            Some((log, event)) if log == self.delivered.log => self.delivered.deliver(&self.hub, event, log),
            Some((log, event)) => {
                self.catch_up().await?;
                if log == self.delivered.log {
                    self.delivered.deliver(&self.hub, event, log);
                }
            }
            None => tracing::warn!("malformed Redis message ignored"),
        }
        Ok(())
    }

    /// After a gap in the subscriptions (already subscribed again, so nothing newer can be
    /// missed): catches up, counts a reconnect, and loads every presence topic again (changes may
    /// have been missed meanwhile; each stream that sees one gets its `presence:state` again).
    pub(super) async fn recover(&mut self) -> Result<(), BackendError> {
        self.catch_up().await?;
        self.metrics.redis_reconnects.inc();
        self.set_up(true);
        presence::reload_all(&self.presence).await;
        Ok(())
    }

    /// Loads `topic`'s members into the book (its channel is subscribed already).
    pub(super) async fn load_presence(&self, topic: &str) {
        presence::load(&self.presence, topic).await;
    }

    /// Delivers from the log what was published since the last delivered event, or tells every
    /// stream to resync when the log cannot prove it still holds all of it.
    async fn catch_up(&mut self) -> Result<(), BackendError> {
        let delivered = &mut self.delivered;
        let history = self.log.history(Some(delivered.position)).await?;
        if history.covers(delivered.log, delivered.position) && history.complete {
            // Across a fork too: what was delivered is still in the log, and what follows it is.
            // The streams are told where the fork is: one that replayed past it saw lost events.
            if delivered.log != history.log {
                let kept = history.forks.iter().find(|(epoch, _)| *epoch == delivered.log.epoch).map(|(_, at)| *at);
                self.hub.forked_all(kept.unwrap_or(delivered.position), history.head_cursor());
            }
            delivered.log = history.log;
            let n = history.events.len();
            for event in history.events {
                delivered.deliver(&self.hub, event, history.log);
            }
            self.metrics.events_replayed.inc_by(n as u64);
            return Ok(());
        }
        if history.covers(delivered.log, delivered.position) {
            tracing::warn!("events published while Redis was unreachable are no longer retained; streams resync");
        } else {
            tracing::warn!(
                "the log no longer holds the last events delivered (a failover lost them, or Redis restarted without \
                 them); streams resync"
            );
        }
        self.hub.resync_all(ResyncReason::BrokerReconnected, history.head_cursor());
        self.metrics.resynced(ResyncReason::BrokerReconnected, 1);
        *delivered = Delivered { log: history.log, position: history.head };
        Ok(())
    }
}

/// What this instance has handed to its streams so far: a message at or before it is a
/// duplicate (an event published on two channels this instance follows, or one already caught
/// up from the log after a reconnect).
struct Delivered {
    log: LogId,
    position: LogPosition,
}

impl Delivered {
    fn deliver(&mut self, hub: &Hub, event: Arc<LogEvent>, log: LogId) {
        if log == self.log && event.position <= self.position {
            return;
        }
        self.log = log;
        self.position = event.position;
        hub.deliver(&event);
    }
}

/// A Pub/Sub message (`<epoch> <position> <topics>[ <origin>]\n<body>`) as an event of its log.
fn message_event(log_tag: u16, payload: &[u8]) -> Option<(LogId, Arc<LogEvent>)> {
    let newline = payload.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&payload[..newline]).ok()?;
    let mut parts = head.splitn(4, ' ');
    let epoch: u32 = parts.next()?.parse().ok()?;
    let position: LogPosition = parts.next()?.parse().ok()?;
    let topics = parts.next()?.split(',').map(str::to_owned).collect();
    let origin = parts.next().filter(|o| is_origin(o));
    let log = LogId { tag: log_tag, epoch };
    let body = Bytes::copy_from_slice(&payload[newline + 1..]);
    Some((log, Arc::new(LogEvent::new(log, position, topics, body, origin))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_its_log_position_and_topics() {
        let (log, e) = message_event(7, b"42 1700000000000-3 tasks,task:7\nevent: x\ndata: {}\n\n").unwrap();
        assert_eq!(log, LogId { tag: 7, epoch: 42 });
        assert_eq!(e.position, LogPosition { ms: 1_700_000_000_000, seq: 3 });
        assert_eq!(e.topics, ["tasks", "task:7"]);
        assert_eq!(&e.body[..], b"event: x\ndata: {}\n\n");
        assert_eq!(e.id_head, sse_notify_core::cursor::Cursor::encode_head(LogId { tag: 7, epoch: 42 }, e.position));
        let (_, mine) = message_event(7, b"42 1-0 tasks Tab_1\nevent: x\ndata: {}\n\n").unwrap();
        let tag = sse_notify_core::origin::echo_tag("Tab_1", &mine.id_head);
        assert_eq!((mine.topics.as_slice(), mine.echo_tag.as_deref()), (&["tasks".to_owned()][..], Some(tag.as_str())));
        assert_eq!(e.echo_tag, None);
        assert!(message_event(7, b"no newline").is_none());
        assert!(message_event(7, b"x 1-0 a\n").is_none());
    }
}
