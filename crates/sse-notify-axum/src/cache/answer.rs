//! A kept `200` answer as HTTP: which answers may be kept, their `ETag`, and the `304` a
//! revalidation gets.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;

/// A kept `200` answer.
pub(super) struct Answer {
    headers: HeaderMap,
    pub(super) body: Bytes,
    etag: HeaderValue,
}

impl Answer {
    /// Whether a request's `If-None-Match` names this answer (it then gets a `304`).
    pub(super) fn revalidated_by(&self, if_none_match: Option<&HeaderValue>) -> bool {
        if_none_match.is_some_and(|v| etag_matches(v, &self.etag))
    }

    pub(super) fn response(&self) -> Response {
        let mut resp = Response::new(Body::from(self.body.clone()));
        *resp.headers_mut() = self.headers.clone();
        resp
    }
}

/// The answer to keep, or the response itself when it is not one to keep, passed on untouched:
/// - not a `200`;
/// - a body whose size is not known to be within `max_body` (a stream, say);
/// - one that is this requester's alone: it sets a cookie (a shared copy would hand one user's
///   cookie to the next), says `Cache-Control: no-store` or `private` itself, or varies on a
///   request header (`Vary`: the cache's key is the path, query and class; put what the answer
///   depends on in the class).
pub(super) async fn keep(resp: Response, max_body: usize) -> Result<Answer, Response> {
    use axum::body::HttpBody as _;
    let small = resp.body().size_hint().upper().is_some_and(|n| n <= max_body as u64);
    let headers = resp.headers();
    let own = headers.contains_key(header::SET_COOKIE)
        || headers.contains_key(header::VARY)
        || headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',').any(|d| matches!(d.trim().to_ascii_lowercase().as_str(), "no-store" | "private"))
            })
        });
    if resp.status() != StatusCode::OK || !small || own {
        return Err(resp);
    }
    let (mut parts, body) = resp.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Err(crate::error::ApiError::internal(format!("reading the answer failed: {e}")).into_response())
        }
    };
    let etag = etag_of(&body);
    parts.headers.insert(header::ETAG, etag.clone());
    parts.headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("private, no-cache"));
    Ok(Answer { headers: parts.headers, body, etag })
}

/// A weak validator: a 64-bit hash of the body, the same on every instance.
fn etag_of(body: &[u8]) -> HeaderValue {
    let hash = xxhash_rust::xxh3::xxh3_64(body);
    HeaderValue::from_str(&format!("W/\"{hash:016x}\"")).expect("ASCII")
}

/// Whether `If-None-Match` names `etag` (weak comparison, RFC 9110 section 13.1.2). By hand
/// rather than with the `headers` crate's `IfNoneMatch`: axum 0.8 no longer brings that crate,
/// and this one comparison (property-tested below) is all the cache needs of it.
fn etag_matches(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    fn opaque(tag: &str) -> &str {
        tag.trim().trim_start_matches("W/")
    }
    let (Ok(list), Ok(ours)) = (if_none_match.to_str(), etag.to_str()) else { return false };
    list.split(',').any(|tag| tag.trim() == "*" || opaque(tag) == opaque(ours))
}

pub(super) fn not_modified(answer: &Answer) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    for name in [header::ETAG, header::CACHE_CONTROL, header::VARY] {
        if let Some(v) = answer.headers.get(&name) {
            resp.headers_mut().insert(name, v.clone());
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn if_none_match_names_the_tag_weakly_in_a_list_or_as_a_star() {
        let tag = etag_of(b"[1,2]");
        let quoted = tag.to_str().unwrap().trim_start_matches("W/").to_owned();
        for header in [tag.to_str().unwrap().to_owned(), quoted.clone(), format!("\"x\", {quoted}"), "*".into()] {
            assert!(etag_matches(&HeaderValue::from_str(&header).unwrap(), &tag), "{header}");
        }
        for header in ["\"x\"", "", "W/", "\"0000000000000000\""] {
            assert!(!etag_matches(&HeaderValue::from_str(header).unwrap(), &tag), "{header}");
        }
        assert_eq!(etag_of(b"[1,2]"), tag, "the same body, the same tag (on every instance)");
    }

    proptest! {
        /// Whatever bytes a client sends as `If-None-Match`, the comparison answers (no panic),
        /// and only a list naming the tag, or `*`, matches.
        #[test]
        fn any_if_none_match_is_answered(raw in proptest::collection::vec(any::<u8>(), 0..96)) {
            let tag = etag_of(b"body");
            if let Ok(header) = HeaderValue::from_bytes(&raw) {
                let matched = etag_matches(&header, &tag);
                let text = String::from_utf8_lossy(&raw);
                if matched {
                    prop_assert!(text.contains('*') || text.contains(tag.to_str().unwrap().trim_start_matches("W/")));
                }
            }
        }
    }
}
