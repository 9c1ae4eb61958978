//! Who wrote a change: the origin of a browser tab, so that the tab does not refetch its own echo.
//!
//! Each tab makes up an origin when it loads, a secret it sends only with its own writes, as the
//! [`ORIGIN_HEADER`] header. The server publishes the write's event with that origin, and the
//! event's frame id ends with an **echo tag** ([`echo_tag`], placed by
//! [`crate::cursor::push_echo_tag`]): an HMAC of the id's log position keyed by the origin. The
//! tab that wrote recomputes it ([`is_echo_of`]) and, on a match, already holds the new state
//! from its write's answer. The event's `data` is never touched.
//!
//! Why a tag and not the origin itself: every subscriber of a topic reads every id, and anyone
//! may send any header. An id that carried the origin would hand it to them, and a write sent
//! with it would make that tab skip a change it did not make (and the origin would follow the tab
//! across topics). A tag says nothing of the origin (an HMAC), differs for every event (it covers
//! the position), and matches only for the holder of the origin: a writer who sends any origin it
//! likes, a tag it read included, makes tags that match its own origin and no one else's.
//!
//! An origin is 1-16 characters of `[A-Za-z0-9_]`; anything else a client sends is ignored (the
//! event then goes without a tag, and every tab refetches, which is always safe).
//!
//! ```
//! use sse_notify_core::cursor::{push_echo_tag, Cursor, LogId, LogPosition};
//! use sse_notify_core::origin::{echo_tag, is_echo_of, is_origin};
//!
//! assert!(is_origin("k3Tq9x0aPw") && !is_origin("a-b") && !is_origin(&"x".repeat(17)));
//! let head = Cursor::encode_head(LogId::new("", 7), LogPosition { ms: 1_700_000_000_000, seq: 0 });
//! let mut id = format!("{head}1");
//! push_echo_tag(&mut id, &echo_tag("k3Tq9x0aPw", &head));
//! assert!(is_echo_of(&id, "k3Tq9x0aPw"));
//! assert!(!is_echo_of(&id, "someoneElse") && !id.contains("k3Tq9x0aPw"));
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The request header a write carries its tab's origin in.
pub const ORIGIN_HEADER: &str = "sse-origin";

/// The longest origin accepted.
pub const MAX_ORIGIN_LEN: usize = 16;

/// The length of an echo tag: 16 hex digits (64 bits of the HMAC).
pub const ECHO_TAG_LEN: usize = 16;

/// Whether `s` is an origin: 1-16 characters of `[A-Za-z0-9_]` (the shape of an id's fifth
/// part, which the cursor module owns: the dependency runs from here to it, not back).
pub fn is_origin(s: &str) -> bool {
    s.len() <= MAX_ORIGIN_LEN && crate::cursor::is_tag_part(s)
}

/// The echo tag of an event written by `origin` whose id starts with `id_head`
/// ([`crate::cursor::Cursor::encode_head`]: the log and the position, the same on every
/// connection): the first 64 bits of HMAC-SHA256 keyed by the origin over the head, in hex.
pub fn echo_tag(origin: &str, id_head: &str) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(origin.as_bytes()).expect("HMAC takes any key length");
    mac.update(id_head.as_bytes());
    let digest = mac.finalize().into_bytes();
    digest[..ECHO_TAG_LEN / 2].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether frame id `id` says its event was written by the holder of `origin`: its echo tag
/// ([`crate::cursor::echo_tag_of`]) is the one `origin` makes for the id's head.
pub fn is_echo_of(id: &str, origin: &str) -> bool {
    let (Some(tag), Some(head)) = (crate::cursor::echo_tag_of(id), crate::cursor::head_of(id)) else {
        return false;
    };
    is_origin(origin) && echo_tag(origin, head) == tag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::{push_echo_tag, Cursor, LogId, LogPosition};
    use proptest::prelude::*;

    fn id_of(origin: &str, ms: u64) -> String {
        let head = Cursor::encode_head(LogId::new("p", 3), LogPosition { ms, seq: 0 });
        let mut id = format!("{head}1");
        push_echo_tag(&mut id, &echo_tag(origin, &head));
        id
    }

    proptest! {
        #[test]
        fn an_origin_never_breaks_the_id_it_rides_in(s in any::<String>()) {
            if is_origin(&s) {
                prop_assert!(!s.contains('-') && !s.contains('\n') && !s.contains('\r') && s.len() <= MAX_ORIGIN_LEN);
            }
        }

        /// The attacker reads the victim's ids and sends whatever it likes as its origin (a tag
        /// it read, the id itself, anything): its events never pass for the victim's.
        #[test]
        fn no_origin_but_the_writer_s_own_makes_its_echo(
            victim in "[A-Za-z0-9_]{1,16}", sent in any::<String>(), ms in any::<u64>(),
        ) {
            let seen = id_of(&victim, ms);
            prop_assert!(is_echo_of(&seen, &victim));
            let tag = crate::cursor::echo_tag_of(&seen).unwrap().to_owned();
            for forged in [sent.clone(), tag, seen.clone()] {
                if forged != victim && is_origin(&forged) {
                    prop_assert!(!is_echo_of(&id_of(&forged, ms), &victim), "{forged:?} made {victim:?}'s echo");
                    prop_assert!(!is_echo_of(&id_of(&forged, ms.wrapping_add(1)), &victim));
                }
            }
        }

        #[test]
        fn is_echo_of_is_total(id in any::<String>(), origin in any::<String>()) {
            let _ = is_echo_of(&id, &origin);
        }
    }

    #[test]
    fn a_tag_differs_per_event_and_says_nothing_of_its_origin() {
        let (one, two) = (id_of("Tab_42", 5), id_of("Tab_42", 6));
        let tag = |id: &str| crate::cursor::echo_tag_of(id).unwrap().to_owned();
        assert_ne!(tag(&one), tag(&two), "one tag per event: no id to follow a tab by");
        assert!(!one.contains("Tab_42") && tag(&one).len() == ECHO_TAG_LEN);
        assert!(!is_echo_of(&one, "") && !is_echo_of("not-an-id", "Tab_42"));
    }
}
