//! The request-head router: from the bytes a new connection has sent so far, decides whether
//! its first request is a stream request answered without hyper, something for hyper, or not
//! yet known.
//!
//! A head is complete when `httparse` (what hyper parses with) says so, not when a blank line
//! appears: a head ending in bare LF is complete too (hyper answers it), and the HTTP/2 preface
//! has a blank line after 18 bytes without being an HTTP/1 head. What is not a stream request is
//! handed to hyper as soon as that is known, so hyper answers bad bytes (a TLS hello, a bad
//! request line) at once, as it would on its own.

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Version};

/// The largest request head read here. A stream request is a few hundred bytes; a bigger head
/// goes to hyper (whose limit is larger), still within the same deadline.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// Headers parsed at most (a browser's stream request has about 15); more go to hyper.
const MAX_HEADERS: usize = 64;
/// What an HTTP/2 client with prior knowledge sends first (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the bytes read so far are.
pub(crate) enum Head {
    /// Not known yet: read more (within the head's deadline).
    Partial,
    /// Exactly one complete stream request, nothing after it: answered without hyper.
    Stream(Box<Request<Body>>),
    /// Anything else (another request, pipelined requests, HTTP/2, bad bytes): hyper's.
    Other,
}

/// Routes a connection's first bytes (see [`Head`]). Total: any bytes get an answer.
pub(crate) fn route(buf: &[u8], stream_paths: &[String]) -> Head {
    if buf.is_empty() {
        return Head::Partial;
    }
    if H2_PREFACE.starts_with(buf) && buf.len() < H2_PREFACE.len() {
        return Head::Partial;
    }
    if buf.starts_with(H2_PREFACE) {
        return Head::Other;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Head::Partial,
        Ok(httparse::Status::Complete(len)) if len == buf.len() => match stream_request(&parsed, stream_paths) {
            Some(req) => Head::Stream(Box::new(req)),
            None => Head::Other,
        },
        _ => Head::Other,
    }
}

/// The request, if `parsed` is a plain stream request ([`is_plain_stream_get`]). Most first
/// requests are for pages and files: only a stream request is built.
fn stream_request(parsed: &httparse::Request<'_, '_>, stream_paths: &[String]) -> Option<Request<Body>> {
    let target = parsed.path?;
    if parsed.method? != "GET" || parsed.version? != 1 || !stream_paths.iter().any(|p| target.starts_with(p.as_str())) {
        return None;
    }
    let mut req = Request::builder().method(Method::GET).uri(target).version(Version::HTTP_11);
    for h in parsed.headers.iter() {
        req = req.header(h.name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let req = req.body(Body::empty()).ok()?;
    is_plain_stream_get(&req, stream_paths).then_some(req)
}

/// Whether `req` is answered without hyper: a plain HTTP/1.1 `GET` for a stream path. A body,
/// or a protocol switch, is hyper's business.
pub(crate) fn is_plain_stream_get<B>(req: &Request<B>, stream_paths: &[String]) -> bool {
    let body_or_switch = ["content-length", "transfer-encoding", "upgrade", "expect"];
    req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && stream_paths.iter().any(|p| p == req.uri().path())
        && !body_or_switch.iter().any(|h| req.headers().contains_key(*h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Vec<String> {
        vec!["/events".into()]
    }

    fn is_stream(bytes: &[u8]) -> bool {
        matches!(route(bytes, &paths()), Head::Stream(_))
    }

    fn is_partial(bytes: &[u8]) -> bool {
        matches!(route(bytes, &paths()), Head::Partial)
    }

    #[test]
    fn only_plain_stream_gets_are_taken() {
        let Head::Stream(ok) = route(b"GET /events?topic=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\r\n\r\n", &paths())
        else {
            panic!("a stream request")
        };
        assert_eq!(ok.uri(), "/events?topic=a");
        assert_eq!(ok.headers()["last-event-id"], "1");
        assert!(is_stream(b"GET /events?topic=a HTTP/1.1\nHost: x\n\n"), "bare LF is a complete head");
        for other in [
            &b"GET /api/tasks HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /health HTTP/1.1\nHost: x\n\n",
            b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            b"GET /events HTTP/1.0\r\n\r\n",
            b"GET /events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
            b"GET /events HTTP/1.1\r\nHost: x\r\n\r\nGET /events HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET http://x/events?topic=a HTTP/1.1\r\nHost: x\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert!(
                matches!(route(other, &paths()), Head::Other),
                "{:?} goes to hyper at once",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn every_prefix_of_a_head_or_of_the_http2_preface_waits_for_more() {
        let head = b"GET /events?topic=a HTTP/1.1\r\nHost: x\r\n\r\n";
        for n in 0..head.len() {
            assert!(is_partial(&head[..n]), "{:?}", String::from_utf8_lossy(&head[..n]));
        }
        for n in 0..H2_PREFACE.len() {
            assert!(is_partial(&H2_PREFACE[..n]), "{n} bytes of the HTTP/2 preface (18 and 22 hold a blank line)");
        }
    }

    #[test]
    fn an_unfinished_head_longer_than_the_limit_goes_to_hyper() {
        let mut big = b"GET /events?topic=a HTTP/1.1\r\nX-Big: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert!(matches!(route(&big, &paths()), Head::Other));
        big.truncate(MAX_HEAD - 1);
        assert!(is_partial(&big));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A stream request with arbitrary (valid) query and header values.
        fn stream_head() -> impl Strategy<Value = Vec<u8>> {
            let value = proptest::string::string_regex("[ -~]{0,40}").unwrap();
            let query = proptest::string::string_regex("[A-Za-z0-9_.:,%=&-]{0,60}").unwrap();
            (query, proptest::collection::vec(value, 0..6), any::<bool>()).prop_map(|(q, values, bare_lf)| {
                let eol = if bare_lf { "\n" } else { "\r\n" };
                let mut head = format!("GET /events?{q} HTTP/1.1{eol}Host: x{eol}");
                for (i, v) in values.iter().enumerate() {
                    head.push_str(&format!("X-H{i}: {}{eol}", v.trim()));
                }
                head.push_str(eol);
                head.into_bytes()
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn any_bytes_are_routed(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                if let Head::Stream(req) = route(&bytes, &paths()) {
                    // Only what parses whole as a plain GET of the stream path is taken.
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut parsed = httparse::Request::new(&mut headers);
                    prop_assert_eq!(parsed.parse(&bytes), Ok(httparse::Status::Complete(bytes.len())));
                    prop_assert_eq!(req.uri().path(), "/events");
                }
            }

            #[test]
            fn a_stream_request_is_taken_whole_and_never_from_a_prefix(head in stream_head()) {
                prop_assert!(matches!(route(&head, &paths()), Head::Stream(_)));
                for n in 0..head.len() {
                    prop_assert!(matches!(route(&head[..n], &paths()), Head::Partial), "prefix of {} bytes", n);
                }
                let mut pipelined = head.clone();
                pipelined.extend_from_slice(b"GET /health HTTP/1.1\r\n\r\n");
                prop_assert!(matches!(route(&pipelined, &paths()), Head::Other), "bytes after the head: hyper's");
            }
        }
    }
}
