//! Where a set of topics stands in the log, as this process knows it: what a response cache
//! keys its answers on (`sse_notify_axum::cache`).
//!
//! A head is told of its topics' events by the hub before any stream is, so a client that
//! refetches on an event finds the head already past it; a write accepted here moves it at once
//! (before the event comes back from Redis), and a resync resets it.

use std::sync::atomic::{AtomicU64, Ordering};

use sse_notify_core::cursor::{Cursor, LogId, LogPosition};
use tokio::sync::watch;

/// One state of a head.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Changes whenever the topics may have changed: on each of their events, each write to
    /// them accepted here, and each resync. Unique in the process (never reused by another head),
    /// so an answer stored under one generation is never taken for another head's.
    pub generation: u64,
    /// The log, once known.
    pub log: Option<LogId>,
    /// The newest position of the topics' events seen (at least the log's head when the head
    /// was made).
    pub position: LogPosition,
}

impl Head {
    /// Whether everything up to `cursor` that concerns these topics is known here: `Some(true)`
    /// if so, `Some(false)` if not yet, `None` if the cursor is of another log or epoch (after a
    /// failover, say), which this head cannot compare.
    pub fn has_seen(&self, cursor: &Cursor) -> Option<bool> {
        (self.log == Some(cursor.log)).then_some(cursor.position <= self.position)
    }
}

fn next_generation() -> u64 {
    static GENERATIONS: AtomicU64 = AtomicU64::new(1);
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

/// The shared, watchable head of a topic set.
pub(crate) struct TopicHead {
    state: watch::Sender<Head>,
}

impl TopicHead {
    pub(crate) fn new() -> Self {
        let (state, _) =
            watch::channel(Head { generation: next_generation(), log: None, position: LogPosition::START });
        Self { state }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Head> {
        self.state.subscribe()
    }

    /// An event of the topics at `position`.
    pub(crate) fn advance(&self, position: LogPosition) {
        self.state.send_if_modified(|h| {
            let newer = position > h.position;
            if newer {
                h.position = position;
                h.generation = next_generation();
            }
            newer
        });
    }

    /// A write to the topics was accepted; its position is not known yet.
    pub(crate) fn touch(&self) {
        self.state.send_modify(|h| h.generation = next_generation());
    }

    /// Events may have been missed: go on from `head` (possibly of a new epoch).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // the Redis backend's: a reconnect, a failover
    pub(crate) fn reset(&self, head: Cursor) {
        self.state.send_modify(|h| {
            h.generation = next_generation();
            h.log = Some(head.log);
            h.position = head.position;
        });
    }

    /// The log's head when the topic set began to be followed: taken once the subscription is
    /// live, so nothing newer can pass unseen. Events delivered meanwhile are kept.
    pub(crate) fn start(&self, head: Cursor) {
        self.state.send_modify(|h| {
            h.generation = next_generation();
            if h.log != Some(head.log) || head.position > h.position {
                h.log = Some(head.log);
                h.position = head.position;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_moves_only_forward_and_each_move_is_a_new_generation() {
        let log = LogId { tag: 1, epoch: 2 };
        let at = |ms| LogPosition { ms, seq: 0 };
        let head = TopicHead::new();
        let rx = head.subscribe();
        head.start(Cursor { log, position: at(10), matched: 0 });
        let g0 = rx.borrow().generation;
        head.advance(at(9));
        assert_eq!(rx.borrow().generation, g0, "an older event changes nothing");
        head.advance(at(11));
        let h = *rx.borrow();
        assert!(h.generation != g0 && h.position == at(11));
        head.touch();
        assert!(rx.borrow().generation != h.generation && rx.borrow().position == at(11));
        let seen =
            |ms, epoch| rx.borrow().has_seen(&Cursor { log: LogId { tag: 1, epoch }, position: at(ms), matched: 0 });
        assert_eq!((seen(11, 2), seen(12, 2), seen(1, 3)), (Some(true), Some(false), None));
        head.reset(Cursor { log: LogId { tag: 1, epoch: 3 }, position: at(5), matched: 0 });
        assert_eq!((seen(5, 3), seen(11, 2)), (Some(true), None), "a new epoch");
    }
}
