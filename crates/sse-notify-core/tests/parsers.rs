//! Every parser of bytes a client (or another tab) can choose is total: whatever it is given,
//! it answers (a value or an error) and never panics.
//!
//! Case counts are bounded so the test command stays fast; a failure prints the shrunk input.

use proptest::prelude::*;
use sse_notify_core::cursor::{Cursor, LogId, LogPosition};
use sse_notify_core::wire::{Resync, SseParser};
use sse_notify_core::Topic;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 512, ..ProptestConfig::default() }
}

fn any_cursor() -> impl Strategy<Value = Cursor> {
    (any::<u16>(), any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(tag, epoch, ms, seq, matched)| {
        Cursor { log: LogId { tag, epoch }, position: LogPosition { ms, seq }, matched }
    })
}

/// Text that looks like a cursor more often than arbitrary text does: hex, dashes and a few
/// multi-byte characters, so the checks past the first one are reached.
fn cursor_like() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[0-9a-fA-F\\-é\u{fffd}+ ]{0,70}").unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_cursor_round_trips_within_64_bytes_of_visible_ascii(c in any_cursor()) {
        let id = c.to_string();
        prop_assert!(id.len() <= 64);
        prop_assert!(id.bytes().all(|b| b.is_ascii_graphic()));
        prop_assert_eq!(id.parse::<Cursor>(), Ok(c));
    }

    #[test]
    fn any_text_parses_to_a_cursor_or_an_error(s in any::<String>()) {
        check_cursor_text(&s)?;
    }

    #[test]
    fn cursor_like_text_parses_to_a_cursor_or_an_error(s in cursor_like()) {
        check_cursor_text(&s)?;
    }

    /// A header value is bytes; the endpoint reads it lossily as UTF-8 (a raw `\xff` was a
    /// panic in the cursor parser).
    #[test]
    fn any_header_bytes_parse_to_a_cursor_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        check_cursor_text(&String::from_utf8_lossy(&bytes))?;
    }

    /// A valid cursor with one character inserted anywhere: never a panic.
    #[test]
    fn a_cursor_with_a_character_inserted_is_handled(c in any_cursor(), at in 0usize..64, ch in any::<char>()) {
        let mut id = c.to_string();
        let at = at.min(id.len());
        id.insert(at, ch);
        check_cursor_text(&id)?;
    }

    #[test]
    fn any_text_is_a_topic_or_a_reason(s in any::<String>()) {
        match Topic::new(s.clone()) {
            Ok(t) => {
                prop_assert_eq!(t.as_str(), s.as_str());
                prop_assert!((1..=128).contains(&s.len()));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Tab messages and resync frames carry JSON another tab or the server wrote; a bad one is
    /// an error, never a panic.
    #[test]
    fn any_text_is_a_resync_or_an_error(s in any::<String>()) {
        let _ = serde_json::from_str::<Resync>(&s);
    }

    /// The frame parser takes whatever bytes arrive, cut anywhere.
    #[test]
    fn the_frame_parser_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..512) {
        let mut p = SseParser::new();
        let cut = cut.min(bytes.len());
        let mut events = p.feed(&bytes[..cut]);
        events.extend(p.feed(&bytes[cut..]));
        for e in events {
            prop_assert!(!e.event.contains('\n') && !e.event.contains('\r'));
        }
    }
}

/// `s` parses to a cursor that prints back to a cursor equal to it, or to the error.
fn check_cursor_text(s: &str) -> Result<(), TestCaseError> {
    if let Ok(c) = s.parse::<Cursor>() {
        prop_assert!(s.len() <= 64, "{s:?} was taken");
        prop_assert_eq!(c.to_string().parse::<Cursor>(), Ok(c));
    }
    Ok(())
}
