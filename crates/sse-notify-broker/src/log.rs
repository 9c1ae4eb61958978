//! The event log as the backends hand it to the broker: how much of it is kept, what a read of
//! it returns, and the clock and epochs its positions are made of.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sse_notify_core::cursor::{Cursor, LogId, LogPosition};

use crate::hub;

/// How much of the log is kept.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Retention {
    pub(crate) max_events: usize,
    pub(crate) max_age_ms: u64,
}

/// The log's head and, when asked, the retained events after a position.
pub(crate) struct History {
    pub(crate) log: LogId,
    pub(crate) head: LogPosition,
    /// Whether `events` are everything after the position (nothing after it was trimmed).
    pub(crate) complete: bool,
    pub(crate) events: Vec<Arc<hub::LogEvent>>,
    /// Earlier epochs of this log, each with the last position this log still holds of it
    /// (a Redis failover forks the log: see the Redis backend).
    pub(crate) forks: Vec<(u32, LogPosition)>,
}

impl History {
    /// Whether `position` of `log` is one this log holds (or held before trimming): the head
    /// or before it in this epoch, or up to where an earlier epoch was forked. A position past
    /// those was lost with a failed server's last writes, or never issued.
    pub(crate) fn covers(&self, log: LogId, position: LogPosition) -> bool {
        if log.tag != self.log.tag {
            return false;
        }
        if log.epoch == self.log.epoch {
            return position <= self.head;
        }
        self.forks.iter().any(|&(epoch, last)| epoch == log.epoch && position <= last)
    }

    /// The cursor of the head: where a stream that is told to resync, or that starts without a
    /// cursor, goes on from.
    pub(crate) fn head_cursor(&self) -> Cursor {
        Cursor { log: self.log, position: self.head, matched: 0 }
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A fresh log epoch: random enough that a log recreated after a loss gets another one.
pub(crate) fn random_epoch() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_log_covers_an_old_epoch_up_to_its_fork_and_nothing_past_the_head() {
        let at = |ms| LogPosition { ms, seq: 0 };
        let (now, before, other) = (LogId { tag: 1, epoch: 9 }, LogId { tag: 1, epoch: 7 }, LogId { tag: 2, epoch: 9 });
        let h = History { log: now, head: at(50), complete: true, events: Vec::new(), forks: vec![(7, at(30))] };
        assert!(h.covers(now, at(50)) && !h.covers(now, at(51)), "this epoch: up to the head");
        assert!(h.covers(before, at(30)) && !h.covers(before, at(31)), "the forked epoch: up to its fork");
        assert!(!h.covers(LogId { tag: 1, epoch: 8 }, at(1)), "an epoch this log never had");
        assert!(!h.covers(other, at(1)), "another prefix's log");
    }
}
