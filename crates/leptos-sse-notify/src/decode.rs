//! Reading what reaches a tab from outside: a frame's cursor and a `resync`'s data from the
//! stream, and the messages other tabs post on the `BroadcastChannel` (any page of the origin
//! can post there). Every function here is total: whatever text arrives, it gives an answer
//! and never panics, since a panic in the release WASM aborts the whole app.
//!
//! Not behind the `browser` feature, so the property tests run natively.

use serde::{Deserialize, Serialize};
use sse_notify_core::cursor::Cursor;
use sse_notify_core::wire::Resync;
use sse_notify_core::Topic;

/// A message between the tabs of one stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub(crate) enum TabMessage {
    /// A follower's subscriptions (sent on change and every 20 s): its topics, event names, the
    /// topics whose presence it shows (absent from a tab of an older version: none), and its
    /// cursor.
    Want {
        tab: String,
        topics: Vec<Topic>,
        names: Vec<String>,
        #[serde(default)]
        presence: Vec<Topic>,
        since: Option<String>,
    },
    /// A follower is leaving (its page is hidden for good).
    Bye { tab: String },
    /// A tab has just become the leader: followers announce themselves again.
    Leader,
    /// The leader still runs (sent every second): a leader that goes quiet (its tab frozen or
    /// hung) is replaced.
    Beat,
    /// A frame the leader's stream received; `topics` is the stream's topic list, in the order of
    /// the bits of the cursor's mask.
    Frame { name: String, data: String, id: String, topics: Vec<Topic> },
    /// The leader's stream status.
    Status { status: crate::status::ConnectionStatus },
    /// Why the leader's stream was refused (`None`: it is not).
    Error { error: Option<crate::status::SseError> },
    /// The leader's stream was told to refetch these topics (`None`: all).
    Resync { topics: Option<Vec<String>> },
}

/// A message from another tab, or why it is not one.
pub(crate) fn tab_message(text: &str) -> Result<TabMessage, serde_json::Error> {
    serde_json::from_str(text)
}

/// Which of the stream's `topics` a frame's `id` says it matched (bit `i` of the cursor's mask
/// is `topics[i]`; bits past the list match nothing); `None` when the id is not a cursor (the
/// subscriber then checks the event itself).
pub(crate) fn matched_topics<'a>(id: &str, topics: &'a [Topic]) -> Option<Vec<&'a Topic>> {
    let cursor = id.parse::<Cursor>().ok()?;
    Some(cursor.matched_indices().filter_map(|i| topics.get(i)).collect())
}

/// The topics a `resync` frame's data names; `None` when it names none readably (then every
/// subscriber refetches, which is never wrong).
pub(crate) fn resync_topics(data: &str) -> Option<Vec<String>> {
    serde_json::from_str::<Resync>(data).ok().map(|r| r.topics)
}

/// The older of two cursors of the same log (replaying from it misses nothing either needs);
/// `a` when they cannot be compared.
pub(crate) fn older(a: Option<String>, b: Option<&String>) -> Option<String> {
    let (Some(a_text), Some(b_text)) = (a.as_ref(), b) else { return a.or_else(|| b.cloned()) };
    match (a_text.parse::<Cursor>(), b_text.parse::<Cursor>()) {
        (Ok(x), Ok(y)) if x.log == y.log && y.position < x.position => Some(b_text.clone()),
        _ => a,
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sse_notify_core::cursor::{LogId, LogPosition};

    fn topics(n: usize) -> Vec<Topic> {
        (0..n).map(|i| Topic::new(format!("t{i}")).unwrap()).collect()
    }

    #[test]
    fn a_frame_reaches_the_topics_its_mask_names_and_no_others() {
        let c = Cursor { log: LogId { tag: 1, epoch: 2 }, position: LogPosition { ms: 3, seq: 0 }, matched: 0b1010 };
        let list = topics(3);
        assert_eq!(matched_topics(&c.to_string(), &list), Some(vec![&list[1]]), "bit 3 is past the list");
        assert_eq!(matched_topics("not a cursor", &list), None);
    }

    #[test]
    fn a_tab_message_round_trips_and_a_bad_one_is_an_error() {
        let msg = TabMessage::Frame { name: "x".into(), data: "{}".into(), id: "i".into(), topics: topics(2) };
        let text = serde_json::to_string(&msg).unwrap();
        assert!(matches!(tab_message(&text), Ok(TabMessage::Frame { .. })));
        for bad in
            ["", "{}", r#"{"k":"want","tab":"a","topics":["no good"],"names":[],"since":null}"#, r#"{"k":"nope"}"#]
        {
            assert!(tab_message(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resync_data_names_its_topics() {
        assert_eq!(resync_topics(r#"{"reason":"x","topics":["a","b"]}"#), Some(vec!["a".into(), "b".into()]));
        assert_eq!(resync_topics("nonsense"), None);
    }

    /// JSON-ish text: braces, quotes, the message keys and kinds, so the decoder gets past its
    /// first character more often than with arbitrary text.
    fn jsonish() -> impl Strategy<Value = String> {
        let atoms = prop_oneof![
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just(",".to_owned()),
            Just(":".to_owned()),
            Just("\"k\"".to_owned()),
            Just("\"frame\"".to_owned()),
            Just("\"want\"".to_owned()),
            Just("\"resync\"".to_owned()),
            Just("\"topics\"".to_owned()),
            Just("\"id\"".to_owned()),
            Just("null".to_owned()),
            Just("\"tasks\"".to_owned()),
            any::<String>(),
        ];
        proptest::collection::vec(atoms, 0..24).prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn any_text_from_another_tab_is_a_message_or_an_error(text in prop_oneof![any::<String>(), jsonish()]) {
            if let Ok(msg) = tab_message(&text) {
                // Whatever was taken is a message this tab could have sent itself.
                let again = serde_json::to_string(&msg).unwrap();
                prop_assert!(tab_message(&again).is_ok());
            }
        }

        #[test]
        fn any_frame_id_gives_topics_of_the_list_or_none(id in any::<String>(), n in 0usize..70) {
            let list = topics(n);
            if let Some(matched) = matched_topics(&id, &list) {
                prop_assert!(matched.iter().all(|t| list.contains(t)));
                prop_assert!(matched.len() <= n.min(64));
            }
        }

        #[test]
        fn any_resync_data_gives_topics_or_none(data in prop_oneof![any::<String>(), jsonish()]) {
            let _ = resync_topics(&data);
        }

        #[test]
        fn any_two_cursors_give_one_of_them(a in proptest::option::of(any::<String>()), b in proptest::option::of(any::<String>())) {
            let older = older(a.clone(), b.as_ref());
            prop_assert!(older == a || older == b);
        }
    }
}
