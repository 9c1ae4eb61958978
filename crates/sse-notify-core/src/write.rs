//! Writes: where a write's event landed in the log, and the key that makes a retried write
//! happen once.
//!
//! A write that publishes answers with the **position** of its event, in the
//! [`POSITION_HEADER`] header: a cursor (`<log>-<ms>-<seq>-0`, the event's frame id without its
//! matched topics or echo tag), or `deferred` when the event waits in the outbox and its position
//! is not known yet. The page that wrote keeps its own change on screen until the data it holds
//! was fetched at or after that position ([`WritePosition::is_covered_by`]); sent back as
//! `Last-Event-ID` on a read, the position also makes the server's response cache answer with
//! data from after the write.
//!
//! A write may carry an [`IDEMPOTENCY_KEY_HEADER`]: the server answers a repeat of the same key
//! (in the same scope) with the first answer and publishes nothing again.
//!
//! ```
//! use sse_notify_core::cursor::{Cursor, LogId, LogPosition};
//! use sse_notify_core::write::WritePosition;
//!
//! let log = LogId::new("", 7);
//! let at = |ms| Cursor { log, position: LogPosition { ms, seq: 0 }, matched: 0 };
//! let written = WritePosition::At(at(100));
//! assert_eq!(written.to_string().parse::<WritePosition>().unwrap(), written);
//! // Data fetched after the stream showed position 120 holds the write; at 90 it does not.
//! assert_eq!(written.is_covered_by(&at(120)), Some(true));
//! assert_eq!(written.is_covered_by(&at(90)), Some(false));
//! assert_eq!("deferred".parse::<WritePosition>().unwrap(), WritePosition::Deferred);
//! ```

use std::fmt;
use std::str::FromStr;

use crate::cursor::{Cursor, CursorError};

/// The answer header of a write that published: its event's position, or `deferred`.
pub const POSITION_HEADER: &str = "sse-position";

/// The request header a write carries its idempotency key in.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The answer header of a write answered from its first attempt (a repeat of its idempotency
/// key): `replayed`.
pub const IDEMPOTENT_REPLAY_HEADER: &str = "idempotent-replayed";

/// The longest idempotency key accepted (a UUID is 36 characters).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// Whether `key` is an idempotency key: 1-128 bytes of visible ASCII (`!` to `~`).
pub fn is_idempotency_key(key: &str) -> bool {
    (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Where a write's event is in the log.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum WritePosition {
    /// In the log at this cursor (its `matched` is 0).
    At(Cursor),
    /// Waiting in the outbox for the backend: its position is not known yet.
    Deferred,
}

impl WritePosition {
    /// The later of two writes' positions, for an answer whose handler published more than one
    /// event: a deferred event ends up after every position known now, and positions of
    /// different logs are ordered by nothing, so the newer log's wins (its epoch is the later).
    pub fn later(self, other: WritePosition) -> WritePosition {
        match (self, other) {
            (WritePosition::Deferred, _) | (_, WritePosition::Deferred) => WritePosition::Deferred,
            (WritePosition::At(a), WritePosition::At(b)) if a.log == b.log => {
                WritePosition::At(if b.position > a.position { b } else { a })
            }
            (WritePosition::At(_), b) => b,
        }
    }

    /// Whether data fetched once the stream had shown `floor` (a frame id, or another write's
    /// position) already holds this write: `Some(true)` when `floor` is at or after it in the
    /// same log, `Some(false)` when before it, `None` when the two cannot be compared (another
    /// log, or a deferred write).
    pub fn is_covered_by(&self, floor: &Cursor) -> Option<bool> {
        match self {
            WritePosition::At(at) if at.log == floor.log => Some(floor.position >= at.position),
            _ => None,
        }
    }
}

impl fmt::Display for WritePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WritePosition::At(at) => Cursor { matched: 0, ..*at }.fmt(f),
            WritePosition::Deferred => f.write_str("deferred"),
        }
    }
}

impl FromStr for WritePosition {
    type Err = CursorError;

    /// `deferred`, or a cursor (an echo tag and matched topics are ignored).
    fn from_str(s: &str) -> Result<Self, CursorError> {
        if s == "deferred" {
            return Ok(WritePosition::Deferred);
        }
        let at: Cursor = s.parse()?;
        Ok(WritePosition::At(Cursor { matched: 0, ..at }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::{LogId, LogPosition};
    use proptest::prelude::*;

    fn at(epoch: u32, ms: u64, seq: u64) -> WritePosition {
        WritePosition::At(Cursor { log: LogId::new("p", epoch), position: LogPosition { ms, seq }, matched: 0 })
    }

    #[test]
    fn the_later_of_two_positions() {
        assert_eq!(at(1, 5, 0).later(at(1, 5, 1)), at(1, 5, 1));
        assert_eq!(at(1, 6, 0).later(at(1, 5, 1)), at(1, 6, 0));
        assert_eq!(at(1, 6, 0).later(WritePosition::Deferred), WritePosition::Deferred);
        assert_eq!(at(1, 9, 0).later(at(2, 1, 0)), at(2, 1, 0), "another log: the newer one");
    }

    #[test]
    fn covered_only_in_the_same_log_at_or_after() {
        let WritePosition::At(floor) = at(1, 5, 1) else { unreachable!() };
        assert_eq!(at(1, 5, 1).is_covered_by(&floor), Some(true));
        assert_eq!(at(1, 5, 2).is_covered_by(&floor), Some(false));
        assert_eq!(at(2, 1, 0).is_covered_by(&floor), None);
        assert_eq!(WritePosition::Deferred.is_covered_by(&floor), None);
    }

    #[test]
    fn keys() {
        assert!(is_idempotency_key("0b7c3c5e-6f1a-4b1e-9a55-6d1f0f0f9c11"));
        assert!(!is_idempotency_key("") && !is_idempotency_key("a b") && !is_idempotency_key("é"));
        assert!(!is_idempotency_key(&"k".repeat(129)) && is_idempotency_key(&"k".repeat(128)));
    }

    proptest! {
        #[test]
        fn parsing_a_position_is_total_and_round_trips(s in any::<String>()) {
            if let Ok(p) = s.parse::<WritePosition>() {
                prop_assert_eq!(p.to_string().parse::<WritePosition>().unwrap(), p);
            }
        }
    }
}
