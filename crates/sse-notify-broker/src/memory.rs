//! The in-process backend: the prefix's event log as a bounded ring in memory.
//!
//! Positions are shaped like Redis stream ids (`<unix ms>-<seq>`) so both backends issue the
//! same kind of cursor; the epoch is chosen at random when the process starts, so a cursor from
//! before a restart is recognised as unknown instead of replaying from a log that no longer has
//! its events.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::{self, BoxFuture, FutureExt};
use sse_notify_core::cursor::{Cursor, LogId, LogPosition};
use sse_notify_core::presence::{Member, PresenceFrame};

use super::backend::{AppendError, Backend, Follower};
use super::hub::{Hub, LogEvent};
use super::presence::PresenceBook;
use crate::error::BackendError;
use crate::log::{unix_ms, History, Retention};

pub(super) struct MemoryLog {
    log: LogId,
    retention: Retention,
    hub: Arc<Hub>,
    presence: Arc<PresenceBook>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    head: LogPosition,
    /// The newest position dropped from the ring (everything after it is still held).
    trimmed_to: LogPosition,
    events: VecDeque<Arc<LogEvent>>,
}

impl MemoryLog {
    pub(super) fn new(log: LogId, retention: Retention, hub: Arc<Hub>, presence: Arc<PresenceBook>) -> Self {
        Self { log, retention, hub, presence, state: Mutex::default() }
    }

    /// Appends an event and hands it to the local streams, in one critical section so that
    /// streams see events in log order.
    fn push(&self, topics: Vec<String>, body: Bytes, origin: Option<Box<str>>) -> Cursor {
        let now = unix_ms();
        let mut s = self.state.lock().unwrap();
        // Strictly increasing even if the clock steps back.
        let position = if now > s.head.ms {
            LogPosition { ms: now, seq: 0 }
        } else {
            LogPosition { ms: s.head.ms, seq: s.head.seq + 1 }
        };
        s.head = position;
        let event = Arc::new(LogEvent::new(self.log, position, topics, body, origin.as_deref()));
        s.events.push_back(event.clone());
        let oldest_kept = now.saturating_sub(self.retention.max_age_ms);
        while s.events.len() > self.retention.max_events
            || s.events.front().is_some_and(|e| e.position.ms < oldest_kept)
        {
            let dropped = s.events.pop_front().expect("not empty");
            s.trimmed_to = dropped.position;
        }
        self.hub.deliver(&event);
        Cursor { log: self.log, position, matched: 0 }
    }

    /// The head, and with `after` every retained event after it.
    fn read(&self, after: Option<LogPosition>) -> History {
        let s = self.state.lock().unwrap();
        let events = match after {
            None => Vec::new(),
            Some(after) => {
                let from = s.events.partition_point(|e| e.position <= after);
                s.events.range(from..).cloned().collect()
            }
        };
        let complete = after.is_none_or(|a| a >= s.trimmed_to);
        History { log: self.log, head: s.head, complete, events, forks: Vec::new() }
    }
}

/// Every local stream is in the hub already: following a topic needs nothing more.
impl Backend for MemoryLog {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn append(
        &self,
        topics: Vec<String>,
        body: String,
        origin: Option<Box<str>>,
    ) -> BoxFuture<'_, Result<Cursor, AppendError>> {
        future::ready(Ok(self.push(topics, Bytes::from(body), origin))).boxed()
    }

    fn presence_load(&self, topic: &str) {
        self.presence.load_here(topic);
    }

    fn presence_join(&self, topic: &str, member: Member) {
        self.presence.apply(&PresenceFrame::Join { topic: topic.to_owned(), member });
    }

    fn presence_leave(&self, topic: &str, id: String) {
        self.presence.apply(&PresenceFrame::Leave { topic: topic.to_owned(), id });
    }

    fn presence_members<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Vec<Member>, BackendError>> {
        future::ready(Ok(self.presence.members(topic).unwrap_or_default())).boxed()
    }

    fn history(&self, after: Option<LogPosition>) -> BoxFuture<'_, Result<History, BackendError>> {
        future::ready(Ok(self.read(after))).boxed()
    }

    fn follow<'a>(&'a self, _topic: &'a str, _follower: Follower) -> BoxFuture<'a, Result<(), BackendError>> {
        future::ready(Ok(())).boxed()
    }

    fn unfollow(&self, _topic: &str) {}

    fn ping(&self) -> BoxFuture<'_, bool> {
        future::ready(true).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(max_events: usize) -> MemoryLog {
        MemoryLog::new(
            LogId::new("", 1),
            Retention { max_events, max_age_ms: 60_000 },
            Arc::default(),
            PresenceBook::new(100),
        )
    }

    #[test]
    fn positions_increase_and_history_is_what_follows_a_position() {
        let log = log(100);
        for _ in 0..50 {
            log.push(vec!["a".into()], Bytes::new(), None);
        }
        let all = log.read(Some(LogPosition::START));
        assert!(all.complete);
        assert_eq!(all.events.len(), 50);
        assert!(all.events.windows(2).all(|w| w[0].position < w[1].position));
        let tenth = all.events[9].position;
        let rest = log.read(Some(tenth));
        assert_eq!(rest.events.len(), 40);
        assert_eq!(rest.events[0].position, all.events[10].position);
        assert_eq!(rest.head, all.events[49].position);
    }

    #[test]
    fn a_position_older_than_what_is_retained_is_incomplete() {
        let log = log(10);
        for _ in 0..11 {
            log.push(vec!["a".into()], Bytes::new(), None);
        }
        let h = log.read(None);
        assert!(h.complete && h.events.is_empty());
        assert!(!log.read(Some(LogPosition::START)).complete, "the first event was dropped");
        let kept = log.read(Some(LogPosition::START));
        assert_eq!(kept.events.len(), 10);
        assert!(log.read(Some(kept.events[0].position)).complete);
    }
}
