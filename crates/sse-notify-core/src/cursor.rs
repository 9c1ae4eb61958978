//! Cursors: the `id:` of every event frame, from which a stream resumes exactly.
//!
//! Every prefix has one ordered event log (a Redis stream, or a ring in the embedded broker). A
//! cursor names a position in it, which log it is (a tag of the prefix and the log's epoch, so a
//! cursor from another app or from a log that was lost is recognised), and, as a bitmask over the
//! connection's topic list, which of the connection's topics the event matched:
//!
//! ```text
//! 2b1e0a93c4f1-18c2f0a1b2c-0-5
//! ^^^^        prefix tag (16 bits)
//!     ^^^^^^^^ log epoch (32 bits)
//!              ^^^^^^^^^^^ position: unix ms (hex)
//!                          ^ position: sequence within that ms (hex)
//!                            ^ matched topics: bit i = the i-th topic of the connection (hex)
//! ```
//!
//! At most 63 bytes of `[0-9a-f-]` whatever the number of topics. The matched-topic mask means
//! nothing to the server on resume (a position resumes every topic set); it tells the client
//! which of its subscribers an event is for.
//!
//! An event written by a browser tab that said who it is (its [`crate::origin`]) carries an echo
//! tag as an optional fifth part, `-<tag>`, when the whole id still fits in 64 bytes: the writer
//! tab, and only it, can tell from the tag that the event is its own echo. The server ignores it
//! on resume, so a cursor with or without it resumes alike.
//!
//! ```
//! use sse_notify_core::cursor::{Cursor, LogId, LogPosition};
//!
//! let log = LogId::new("", 0xc4f1_2b1e);
//! let c = Cursor { log, position: LogPosition { ms: 1_700_000_000_000, seq: 3 }, matched: 0b101 };
//! let id = c.to_string();
//! assert!(id.len() <= 64);
//! assert_eq!(id.parse::<Cursor>().unwrap(), c);
//! assert_eq!(c.matched_indices().collect::<Vec<_>>(), [0, 2]);
//! ```

use std::fmt;
use std::str::FromStr;

/// A position in a prefix's event log, ordered like a Redis stream id (`<unix ms>-<seq>`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    /// Milliseconds since the Unix epoch when the entry was appended.
    pub ms: u64,
    /// Order among the entries of the same millisecond.
    pub seq: u64,
}

impl LogPosition {
    /// The position before every entry (an empty log's head).
    pub const START: LogPosition = LogPosition { ms: 0, seq: 0 };
}

impl fmt::Display for LogPosition {
    /// The Redis stream id form, decimal: `1700000000000-3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for LogPosition {
    type Err = CursorError;

    /// Parses the Redis stream id form (`1700000000000-3`).
    fn from_str(s: &str) -> Result<Self, CursorError> {
        let (ms, seq) = s.split_once('-').ok_or(CursorError::Malformed)?;
        Ok(Self {
            ms: ms.parse().map_err(|_| CursorError::Malformed)?,
            seq: seq.parse().map_err(|_| CursorError::Malformed)?,
        })
    }
}

/// Which log a cursor belongs to: a tag of the topic prefix and the log's epoch (a random number
/// chosen when the log was created; a log lost with its Redis gets a new one).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct LogId {
    /// 16-bit hash of the prefix ([`prefix_tag`]).
    pub tag: u16,
    /// The log's epoch.
    pub epoch: u32,
}

impl LogId {
    /// The log of `prefix` in `epoch`.
    pub fn new(prefix: &str, epoch: u32) -> Self {
        Self { tag: prefix_tag(prefix), epoch }
    }
}

/// A 16-bit FNV-1a hash of a topic prefix: enough to tell apps sharing a Redis apart in a cursor.
pub fn prefix_tag(prefix: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in prefix.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    ((h >> 16) ^ (h & 0xffff)) as u16
}

/// A frame id: log, position and the connection's matched topics.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The log the position is in.
    pub log: LogId,
    /// The event's position (or, on a frame without data, the head when the stream opened).
    pub position: LogPosition,
    /// Bit `i` set = the event matched the `i`-th topic of the connection, in the order the
    /// connection asked for them (duplicates removed).
    pub matched: u64,
}

impl Cursor {
    /// The connection-independent start of the id (`<log>-<ms>-<seq>-`): encoded once per event,
    /// each connection appends its mask with [`push_matched`].
    pub fn encode_head(log: LogId, position: LogPosition) -> String {
        format!("{:04x}{:08x}-{:x}-{:x}-", log.tag, log.epoch, position.ms, position.seq)
    }

    /// Indices of the matched topics, lowest first.
    pub fn matched_indices(&self) -> impl Iterator<Item = usize> + '_ {
        (0..64).filter(move |i| self.matched & (1u64 << i) != 0)
    }
}

/// Appends a matched-topic mask to a head from [`Cursor::encode_head`].
pub fn push_matched(head: &mut String, matched: u64) {
    use fmt::Write as _;
    let _ = write!(head, "{matched:x}");
}

/// The longest frame id: the wire contract's bound.
pub const MAX_ID_LEN: usize = 64;

/// Appends `-<tag>` ([`crate::origin::echo_tag`]) to a complete id when the result stays within
/// [`MAX_ID_LEN`] bytes (it always does for the ids of streams of up to 32 topics); otherwise the
/// id goes without it, and the writer tab refetches its own change once.
pub fn push_echo_tag(id: &mut String, tag: &str) {
    if id.len() + 1 + tag.len() <= MAX_ID_LEN {
        id.push('-');
        id.push_str(tag);
    }
}

/// The echo tag an id carries (see [`push_echo_tag`]), if any.
///
/// ```
/// use sse_notify_core::cursor::{echo_tag_of, push_echo_tag};
/// let mut id = "2b1e0a93c4f1-18c2f0a1b2c-0-5".to_owned();
/// assert_eq!(echo_tag_of(&id), None);
/// push_echo_tag(&mut id, "9f86d081884c7d65");
/// assert_eq!(echo_tag_of(&id), Some("9f86d081884c7d65"));
/// ```
pub fn echo_tag_of(id: &str) -> Option<&str> {
    let mut parts = id.splitn(5, '-');
    parts.nth(4).filter(|o| is_tag_part(o))
}

/// Whether `s` can be an id's fifth part: 1-16 characters of `[A-Za-z0-9_]` (an echo tag is
/// 16 hex digits; older writers put an origin there, which has this shape too).
pub(crate) fn is_tag_part(s: &str) -> bool {
    (1..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The connection-independent head of an id (`<log>-<ms>-<seq>-`, as
/// [`Cursor::encode_head`] makes it), if `id` has one.
pub fn head_of(id: &str) -> Option<&str> {
    let end = id.match_indices('-').nth(2)?.0 + 1;
    id.get(..end)
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut id = Cursor::encode_head(self.log, self.position);
        push_matched(&mut id, self.matched);
        f.write_str(&id)
    }
}

/// The stream cursor taken when a server-rendered page's request arrived, before its data was
/// read: the server side puts it in the request's extensions, the Leptos hook hands it to the
/// browser, and the browser opens its stream from it, so nothing published between the render
/// and the subscription is missed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartCursor(pub String);

/// Why a string is not a cursor.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not of the cursor's shape.
    #[error("not a cursor")]
    Malformed,
}

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, CursorError> {
        let hex = |part: &str, max: usize| -> Result<u64, CursorError> {
            if part.is_empty() || part.len() > max || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(CursorError::Malformed);
            }
            u64::from_str_radix(part, 16).map_err(|_| CursorError::Malformed)
        };
        let mut parts = s.split('-');
        let (Some(log), Some(ms), Some(seq), Some(mask), origin, None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CursorError::Malformed);
        };
        // The writer's origin means nothing on resume, but a cursor is either whole or malformed.
        if origin.is_some_and(|o| !is_tag_part(o)) || s.len() > MAX_ID_LEN {
            return Err(CursorError::Malformed);
        }
        // `get` rather than indexing: the client chose these bytes, and a character that spans
        // byte 4 must be a malformed cursor, not a panic.
        let (12, Some(tag), Some(epoch)) = (log.len(), log.get(..4), log.get(4..)) else {
            return Err(CursorError::Malformed);
        };
        Ok(Self {
            log: LogId { tag: hex(tag, 4)? as u16, epoch: hex(epoch, 8)? as u32 },
            position: LogPosition { ms: hex(ms, 16)?, seq: hex(seq, 16)? },
            matched: hex(mask, 16)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_the_extremes_stays_within_64_bytes() {
        for (ms, seq, matched) in [(0, 0, 0), (u64::MAX, u64::MAX, u64::MAX), (1_700_000_000_000, 7, 1 << 63)] {
            let c = Cursor { log: LogId { tag: 0xffff, epoch: u32::MAX }, position: LogPosition { ms, seq }, matched };
            let s = c.to_string();
            assert!(s.len() <= 64, "{s} is {} bytes", s.len());
            assert!(s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
            assert_eq!(s.parse::<Cursor>(), Ok(c));
        }
    }

    #[test]
    fn an_echo_tag_rides_after_the_mask_when_it_fits_and_resumes_like_the_cursor_without_it() {
        let c = Cursor { log: LogId::new("beta", 9), position: LogPosition { ms: 5, seq: 1 }, matched: 6 };
        let tag = crate::origin::echo_tag("Tab_42", &Cursor::encode_head(c.log, c.position));
        let mut id = c.to_string();
        push_echo_tag(&mut id, &tag);
        assert_eq!(echo_tag_of(&id), Some(tag.as_str()));
        assert_eq!(head_of(&id), Some(Cursor::encode_head(c.log, c.position).as_str()));
        assert_eq!(id.parse::<Cursor>(), Ok(c));
        let widest = Cursor { log: c.log, position: LogPosition { ms: u64::MAX, seq: u64::MAX }, matched: u64::MAX };
        let mut full = widest.to_string();
        push_echo_tag(&mut full, &tag);
        assert_eq!((echo_tag_of(&full), full.len()), (None, 63), "no room: the id goes without it");
        // Up to the year 2100 and 65,536 events in one millisecond.
        let position = LogPosition { ms: 4_102_444_800_000, seq: 0xffff };
        let of32 = Cursor { log: c.log, position, matched: u64::from(u32::MAX) }.to_string();
        assert!(of32.len() + 1 + tag.len() <= MAX_ID_LEN, "a stream of up to 32 topics always has room");
    }

    #[test]
    fn head_plus_mask_is_the_whole_id() {
        let c = Cursor { log: LogId::new("beta", 9), position: LogPosition { ms: 5, seq: 1 }, matched: 6 };
        let mut s = Cursor::encode_head(c.log, c.position);
        push_matched(&mut s, c.matched);
        assert_eq!(s, c.to_string());
    }

    #[test]
    fn malformed_cursors_are_refused() {
        for bad in [
            "",
            "1700000000000-0", // a bare stream id
            "0000000000000-1-0-1",
            "00000000000-1-0-1",
            "000000000000-1-0",
            "000000000000-1-0-1-",
            "000000000000-1-0-1-a.b",
            "000000000000-1-0-1-ab-c",
            "000000000000--0-1",
            "000000000000-g-0-1",
            "000000000000-1-0-10000000000000000",
            "000000000000-+1-0-1",
            // A two-byte character across byte 4 of the log part (was a panic).
            "abc\u{e9}1234567-1-0-1",
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}-1-0-1",
            "\u{fffd}-1-0-1",
        ] {
            assert_eq!(bad.parse::<Cursor>(), Err(CursorError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_get_different_tags() {
        assert_ne!(prefix_tag(""), prefix_tag("beta"));
        assert_ne!(prefix_tag("app1"), prefix_tag("app2"));
        assert_eq!(LogId::new("beta", 1).tag, prefix_tag("beta"));
    }

    #[test]
    fn positions_order_like_stream_ids() {
        let p = |s: &str| s.parse::<LogPosition>().unwrap();
        assert!(p("5-0") < p("5-1"));
        assert!(p("5-9") < p("6-0"));
        assert_eq!(p("1700000000000-3").to_string(), "1700000000000-3");
        assert!("5".parse::<LogPosition>().is_err());
    }
}
