//! A stream's request head, kept for its re-checks: the method, the URI, the headers and the
//! peer, in one buffer of the stream's own.
//!
//! A re-checked stream keeps its request for hours, so what it keeps is what the idle stream
//! costs. As an `http` `Parts` it cost ~1 KiB a stream (measured with heaptrack at 5,000
//! streams): the header map and a copy per value (~280 B), the `Parts` (~245 B), and the
//! extensions map the router fills (~470 B: `OriginalUri`, `MatchedPath`, the URL params, the
//! peer), none of which a re-check reads that the head does not hold. Kept as bytes, a
//! browser's head is one allocation of its own size, and a re-check (every
//! `recheck_authorization` period) builds the `Parts` again for the hooks.
//!
//! A re-check sees the request's method, URI, version and headers, its [`ConnectInfo`] and
//! [`OriginalUri`]; other extensions, which the app's own layers may have added, are for the
//! request that opened the stream only (a re-check that read them would decide on what was
//! true then, not now).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, OriginalUri};
use axum::http::{request::Parts, HeaderName, HeaderValue, Method, Request, Uri, Version};

/// A request head in one buffer (see the module's doc).
pub(super) struct KeptHead {
    method: Method,
    version: Version,
    peer: Option<SocketAddr>,
    /// The URI behind its `u32` length, then each header: its name's length (`u16`), its
    /// value's length (`u32`), whether the value is sensitive (one byte), the name, the value.
    bytes: Box<[u8]>,
}

impl KeptHead {
    /// Copies what a re-check needs out of `parts` (whose URI and values are usually slices
    /// of the connection's read buffer, which must not live as long as the stream).
    pub(super) fn of(parts: &Parts) -> Self {
        let uri = parts.uri.to_string();
        let headers_len: usize = parts.headers.iter().map(|(n, v)| 7 + n.as_str().len() + v.len()).sum();
        let mut bytes = Vec::with_capacity(4 + uri.len() + headers_len);
        push_len(&mut bytes, uri.len() as u32);
        bytes.extend_from_slice(uri.as_bytes());
        for (name, value) in &parts.headers {
            // A header name is at most 64 KiB - 1 (`http`'s own bound), a value far less than 4 GiB.
            bytes.extend_from_slice(&(name.as_str().len() as u16).to_le_bytes());
            push_len(&mut bytes, value.len() as u32);
            bytes.push(u8::from(value.is_sensitive()));
            bytes.extend_from_slice(name.as_str().as_bytes());
            bytes.extend_from_slice(value.as_bytes());
        }
        Self {
            method: parts.method.clone(),
            version: parts.version,
            peer: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
            bytes: bytes.into_boxed_slice(),
        }
    }

    /// The head as the hooks take it, built anew (see the module's doc for what it holds).
    pub(super) fn parts(&self) -> Parts {
        let (mut head, ()) = Request::new(()).into_parts();
        head.method = self.method.clone();
        head.version = self.version;
        let mut rest = &self.bytes[..];
        let uri = take(&mut rest, 4).and_then(|len| take(&mut rest, read_len(len)));
        head.uri = uri.and_then(|uri| Uri::try_from(uri).ok()).unwrap_or_default();
        while let Some(fixed) = take(&mut rest, 7) {
            let name_len = u16::from_le_bytes([fixed[0], fixed[1]]) as usize;
            let value_len = read_len(&fixed[2..6]);
            let sensitive = fixed[6] == 1;
            let (Some(name), Some(value)) = (take(&mut rest, name_len), take(&mut rest, value_len)) else { break };
            // Both were a valid name and value when kept, so these parse.
            if let (Ok(name), Ok(mut value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
                value.set_sensitive(sensitive);
                head.headers.append(name, value);
            }
        }
        head.extensions.insert(OriginalUri(head.uri.clone()));
        if let Some(peer) = self.peer {
            head.extensions.insert(ConnectInfo(peer));
        }
        head
    }
}

fn push_len(bytes: &mut Vec<u8>, len: u32) {
    bytes.extend_from_slice(&len.to_le_bytes());
}

fn read_len(bytes: &[u8]) -> usize {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize
}

/// The first `n` bytes of `rest`, taken off it; `None` when it is shorter.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (taken, left) = rest.split_at(n);
    *rest = left;
    Some(taken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn head_of(req: Request<()>) -> Parts {
        req.into_parts().0
    }

    #[test]
    fn the_head_comes_back_whole_and_holds_nothing_of_the_buffer_it_was_parsed_in() {
        // As a server parses it: the URI and header values are slices of one read buffer.
        let mut raw = b"/events?topic=tasks".to_vec();
        raw.resize(16 * 1024, b'x');
        let buffer = Bytes::from(raw);
        let in_buffer = |p: *const u8| buffer.as_ptr_range().contains(&p);
        let uri = Uri::from_maybe_shared(buffer.slice(..19)).unwrap();
        let mut secret = HeaderValue::from_static("Bearer abc");
        secret.set_sensitive(true);
        let mut req = Request::builder()
            .method(Method::GET)
            .version(Version::HTTP_11)
            .uri(uri.clone())
            .header("x-custom", HeaderValue::from_maybe_shared(buffer.slice(100..110)).unwrap())
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("authorization", secret)
            .body(())
            .unwrap();
        req.extensions_mut().insert(OriginalUri(uri));
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 9], 4242))));
        let parts = head_of(req);
        assert!(in_buffer(parts.headers["x-custom"].as_bytes().as_ptr()), "the test's head does share it");

        let kept = KeptHead::of(&parts).parts();
        assert!(!in_buffer(kept.headers["x-custom"].as_bytes().as_ptr()));
        assert_eq!(kept.method, Method::GET);
        assert_eq!(kept.version, Version::HTTP_11);
        assert_eq!(kept.uri, "/events?topic=tasks");
        assert_eq!(kept.headers, parts.headers);
        let cookies: Vec<_> = kept.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"], "repeated headers in their order");
        assert!(kept.headers["authorization"].is_sensitive());
        assert!(!kept.headers["x-custom"].is_sensitive());
        assert_eq!(
            kept.extensions.get::<OriginalUri>().map(|u| u.0.to_string()).as_deref(),
            Some("/events?topic=tasks")
        );
        assert_eq!(
            kept.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
            Some(SocketAddr::from(([127, 0, 0, 9], 4242)))
        );
    }

    #[test]
    fn an_absolute_uri_and_another_method_are_kept() {
        let parts =
            head_of(Request::builder().method("PROPFIND").uri("http://example.test:8080/events?x=1").body(()).unwrap());
        let kept = KeptHead::of(&parts).parts();
        assert_eq!(kept.method.as_str(), "PROPFIND");
        assert_eq!(kept.uri, parts.uri);
        assert!(kept.extensions.get::<ConnectInfo<SocketAddr>>().is_none());
    }

    proptest! {
        #[test]
        fn any_head_comes_back_as_it_was(
            path in "/[a-zA-Z0-9/_.~-]{0,40}",
            query in proptest::option::of("[a-zA-Z0-9=&,:%_-]{0,60}"),
            headers in proptest::collection::vec(("[a-z][a-z0-9-]{0,30}", proptest::collection::vec(0x20u8..0x7f, 0..200), any::<bool>()), 0..12),
        ) {
            let uri = match &query { Some(q) => format!("{path}?{q}"), None => path.clone() };
            let mut req = Request::builder().uri(uri.as_str());
            for (name, value, sensitive) in &headers {
                let mut value = HeaderValue::from_bytes(value).unwrap();
                value.set_sensitive(*sensitive);
                req = req.header(name.as_str(), value);
            }
            let parts = head_of(req.body(()).unwrap());
            let kept = KeptHead::of(&parts).parts();
            prop_assert_eq!(&kept.uri, &parts.uri);
            prop_assert_eq!(&kept.headers, &parts.headers);
            let flags = |p: &Parts| p.headers.iter().map(|(_, v)| v.is_sensitive()).collect::<Vec<_>>();
            prop_assert_eq!(flags(&kept), flags(&parts));
        }
    }
}
