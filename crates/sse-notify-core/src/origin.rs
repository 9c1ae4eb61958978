//! Who wrote a change: the origin of a browser tab, so that the tab does not refetch its own echo.
//!
//! Each tab makes up an origin when it loads and sends it with every write as the
//! [`ORIGIN_HEADER`] header. The server publishes the write's event with that origin, and the
//! event's frame id carries it ([`crate::cursor::push_origin`]); the tab that sees its own origin
//! there already holds the new state from its write's answer. Other tabs, of the same browser
//! too, have other origins and refetch as before. The event's `data` is never touched.
//!
//! An origin is 1-16 characters of `[A-Za-z0-9_]` (it rides in the frame id, where `-` separates
//! parts). Anything else a client sends is ignored: the event then goes without an origin, and
//! every tab refetches, which is always safe.
//!
//! ```
//! use sse_notify_core::origin::is_origin;
//! assert!(is_origin("k3Tq9x0aPw"));
//! assert!(!is_origin("") && !is_origin("a-b") && !is_origin("x".repeat(17).as_str()));
//! ```

/// The request header a write carries its tab's origin in.
pub const ORIGIN_HEADER: &str = "sse-origin";

/// The longest origin accepted.
pub const MAX_ORIGIN_LEN: usize = 16;

/// Whether `s` is an origin: 1-16 characters of `[A-Za-z0-9_]`.
pub fn is_origin(s: &str) -> bool {
    (1..=MAX_ORIGIN_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn an_origin_never_breaks_the_id_it_rides_in(s in any::<String>()) {
            if is_origin(&s) {
                prop_assert!(!s.contains('-') && !s.contains('\n') && !s.contains('\r') && s.len() <= MAX_ORIGIN_LEN);
            }
        }
    }
}
