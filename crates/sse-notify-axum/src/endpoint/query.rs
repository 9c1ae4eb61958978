//! What a stream's request asks for: its topics, the topics it asks presence of, and where it
//! resumes. Every parser here is total (property tests below): any query gives a value or a
//! 400 that names what is wrong.

use std::collections::BTreeSet;

use sse_notify_core::{Topic, MAX_TOPICS_PER_CONNECTION};

use crate::error::ApiError;

/// Parses `topic=a,b&topic=c` into distinct, validated topics (first-seen order).
pub fn topics_from_query(query: &str) -> Result<Vec<Topic>, ApiError> {
    let topics = topics_named(query, "topic")?;
    if topics.is_empty() {
        return Err(ApiError::bad_request("missing_topic", "give at least one topic: ?topic=a,b"));
    }
    if topics.len() > MAX_TOPICS_PER_CONNECTION {
        return Err(ApiError::bad_request(
            "too_many_topics",
            format!("{} topics asked; at most {MAX_TOPICS_PER_CONNECTION} per connection", topics.len()),
        ));
    }
    Ok(topics)
}

/// The distinct topics of every `key=` parameter of `query` (comma-separated; the parameter may
/// repeat), in the order given.
fn topics_named(query: &str, key: &str) -> Result<Vec<Topic>, ApiError> {
    let mut seen = BTreeSet::new();
    let mut topics = Vec::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name != key {
            continue;
        }
        for raw in value.split(',') {
            let topic = Topic::new(raw)
                .map_err(|e| ApiError::bad_request("invalid_topic", format!("{key} {raw:?} is invalid: {e}")))?;
            if seen.insert(topic.clone()) {
                topics.push(topic);
            }
        }
    }
    Ok(topics)
}

/// The topics a stream asks presence of (`?presence=a,b`): of its own `topics` only (a topic
/// it does not follow was not authorized for it), in their order. A stream that asks none gets
/// no presence frames and is listed nowhere: presence is asked for, not pushed.
///
/// ```
/// use sse_notify_axum::endpoint::presence_from_query;
/// use sse_notify_core::Topic;
/// let topics = [Topic::new("board").unwrap(), Topic::new("task:7").unwrap()];
/// let asked = presence_from_query("topic=board,task:7&presence=board,elsewhere", &topics).unwrap();
/// assert_eq!(asked, [Topic::new("board").unwrap()]);
/// assert_eq!(presence_from_query("presence=a%20b", &topics).unwrap_err().code, "invalid_topic");
/// ```
pub fn presence_from_query(query: &str, topics: &[Topic]) -> Result<Vec<Topic>, ApiError> {
    let asked = topics_named(query, "presence")?;
    Ok(topics.iter().filter(|t| asked.contains(t)).cloned().collect())
}

/// The longest a poll may wait, in seconds: under the idle timeouts of common proxies (60 s).
pub const MAX_POLL_SECONDS: u64 = 55;

/// `?poll=N`: the request is a poll, not a stream ([`crate::endpoint`]); it waits at most `N`
/// seconds (1 to [`MAX_POLL_SECONDS`]) for something to send.
///
/// ```
/// use sse_notify_axum::endpoint::poll_from_query;
/// assert_eq!(poll_from_query("topic=a&poll=25").unwrap(), Some(std::time::Duration::from_secs(25)));
/// assert_eq!(poll_from_query("topic=a").unwrap(), None);
/// assert_eq!(poll_from_query("poll=0").unwrap_err().code, "invalid_poll");
/// ```
pub fn poll_from_query(query: &str) -> Result<Option<std::time::Duration>, ApiError> {
    let Some((_, value)) = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "poll") else {
        return Ok(None);
    };
    match value.parse::<u64>() {
        Ok(seconds @ 1..=MAX_POLL_SECONDS) => Ok(Some(std::time::Duration::from_secs(seconds))),
        _ => Err(ApiError::bad_request(
            "invalid_poll",
            format!("poll {value:?} is invalid: whole seconds from 1 to {MAX_POLL_SECONDS}"),
        )),
    }
}

/// The client's resume point: the `Last-Event-ID` header, else `?last_event_id=`. An empty
/// value is no cursor (EventSource sends none before it has seen an id).
pub(super) fn last_event_id(headers: &axum::http::HeaderMap, query: &str) -> Option<String> {
    let header = headers.get("last-event-id").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let query = || form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "last_event_id").map(|(_, v)| v.into());
    header.filter(|v| !v.is_empty()).or_else(query).filter(|v: &String| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn names(q: &str) -> Result<Vec<String>, ApiError> {
        topics_from_query(q).map(|t| t.into_iter().map(|t| t.to_string()).collect())
    }

    #[test]
    fn comma_separated_and_repeated() {
        assert_eq!(names("topic=a,b&topic=c&x=1&topic=a").unwrap(), ["a", "b", "c"]);
        assert_eq!(names("topic=task%3A7").unwrap(), ["task:7"]);
    }

    #[test]
    fn the_header_wins_over_the_query_and_empty_is_none() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(last_event_id(&h, "topic=a&last_event_id=q1"), Some("q1".into()));
        assert_eq!(last_event_id(&h, "last_event_id="), None);
        h.insert("last-event-id", HeaderValue::from_static("h1"));
        assert_eq!(last_event_id(&h, "last_event_id=q1"), Some("h1".into()));
        h.insert("last-event-id", HeaderValue::from_static(""));
        assert_eq!(last_event_id(&h, "last_event_id=q1"), Some("q1".into()));
    }

    #[test]
    fn errors() {
        assert_eq!(names("").unwrap_err().code, "missing_topic");
        assert_eq!(names("topic=").unwrap_err().code, "invalid_topic");
        assert_eq!(names("topic=a,,b").unwrap_err().code, "invalid_topic");
        assert_eq!(names("topic=a%20b").unwrap_err().code, "invalid_topic");
        let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        assert_eq!(names(&format!("topic={}", many.join(","))).unwrap_err().code, "too_many_topics");
        assert!(names(&format!("topic={}", many[..64].join(","))).is_ok());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn queryish() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                proptest::string::string_regex("(topic=[A-Za-z0-9_.:%, -]{0,30}&?){0,80}").unwrap(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn any_query_gives_topics_or_a_400(query in queryish()) {
                match topics_from_query(&query) {
                    Ok(topics) => {
                        prop_assert!((1..=MAX_TOPICS_PER_CONNECTION).contains(&topics.len()));
                        let distinct: BTreeSet<_> = topics.iter().collect();
                        prop_assert_eq!(distinct.len(), topics.len());
                    }
                    Err(e) => {
                        prop_assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
                        prop_assert!(["missing_topic", "invalid_topic", "too_many_topics"].contains(&e.code));
                    }
                }
            }

            #[test]
            fn any_query_gives_presence_topics_of_the_stream_or_a_400(query in queryish()) {
                let stream: Vec<Topic> = ["a", "b", "task:7"].iter().map(|t| Topic::new(*t).unwrap()).collect();
                let query = query.replace("topic=", "presence=");
                match presence_from_query(&query, &stream) {
                    Ok(asked) => prop_assert!(asked.iter().all(|t| stream.contains(t)) && asked.len() <= stream.len()),
                    Err(e) => prop_assert_eq!((e.status, e.code), (axum::http::StatusCode::BAD_REQUEST, "invalid_topic")),
                }
            }

            #[test]
            fn any_query_gives_a_poll_within_bounds_or_a_400(query in any::<String>(), n in any::<u64>()) {
                for query in [query, format!("topic=a&poll={n}")] {
                    match poll_from_query(&query) {
                        Ok(Some(d)) => prop_assert!((1..=MAX_POLL_SECONDS).contains(&d.as_secs())),
                        Ok(None) => {}
                        Err(e) => prop_assert_eq!((e.status, e.code), (axum::http::StatusCode::BAD_REQUEST, "invalid_poll")),
                    }
                }
            }

            #[test]
            fn any_last_event_id_bytes_give_a_cursor_text_or_none(
                header in proptest::collection::vec(any::<u8>(), 0..80),
                query in any::<String>(),
            ) {
                let mut headers = axum::http::HeaderMap::new();
                if let Ok(v) = HeaderValue::from_bytes(&header) {
                    headers.insert("last-event-id", v);
                }
                if let Some(id) = last_event_id(&headers, &query) {
                    prop_assert!(!id.is_empty());
                    // Whatever it is, the cursor parser answers (a resync when it is no cursor).
                    let _ = id.parse::<sse_notify_core::cursor::Cursor>();
                }
            }
        }
    }
}
