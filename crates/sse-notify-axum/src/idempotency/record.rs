//! What is kept per key: the request's fingerprint, and the first answer once there is one.
//!
//! Encoded by hand in a few bytes (no serde format to pull in for one record):
//! `P` + fingerprint while the first attempt runs; `D` + fingerprint + status + headers + body
//! once it answered; `L` + fingerprint when it answered but its answer was too large to keep.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::{BufMut, Bytes, BytesMut};

/// A SHA-256 of the request (method, path and query, body).
pub(crate) type Fingerprint = [u8; 32];

/// A key's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// The first attempt is being handled.
    Pending(Fingerprint),
    /// The first attempt's answer.
    Done(Fingerprint, Answer),
    /// The first attempt answered, but its answer was larger than what is kept.
    NotKept(Fingerprint),
}

/// A kept answer: status, the headers worth replaying, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
}

impl Answer {
    /// The answer's headers that a repeat gets too: not `set-cookie` (a repeat's sender may
    /// be anyone in the key's scope; a session cookie is not theirs), not those of the
    /// connection or the body's framing.
    pub(crate) fn kept_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        use axum::http::header;
        let dropped = [
            header::SET_COOKIE,
            header::CONNECTION,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::DATE,
            header::SERVER,
        ];
        headers.iter().filter(|(n, _)| !dropped.contains(n)).map(|(n, v)| (n.clone(), v.clone())).collect()
    }
}

impl Record {
    pub(crate) fn fingerprint(&self) -> &Fingerprint {
        match self {
            Record::Pending(f) | Record::Done(f, _) | Record::NotKept(f) => f,
        }
    }

    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Record::Pending(f) => {
                out.put_u8(b'P');
                out.put_slice(f);
            }
            Record::NotKept(f) => {
                out.put_u8(b'L');
                out.put_slice(f);
            }
            Record::Done(f, answer) => {
                out.put_u8(b'D');
                out.put_slice(f);
                out.put_u16(answer.status.as_u16());
                out.put_u16(answer.headers.len().min(u16::MAX as usize) as u16);
                for (name, value) in answer.headers.iter().take(u16::MAX as usize) {
                    out.put_u16(name.as_str().len() as u16);
                    out.put_slice(name.as_str().as_bytes());
                    out.put_u16(value.len() as u16);
                    out.put_slice(value.as_bytes());
                }
                out.put_slice(&answer.body);
            }
        }
        out.freeze()
    }

    /// The record `bytes` encode, or `None` for anything else (a store's bytes are not trusted
    /// to be ours: another app may share the Redis).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Record> {
        let (&kind, rest) = bytes.split_first()?;
        let fingerprint: Fingerprint = rest.get(..32)?.try_into().ok()?;
        let mut rest = &rest[32..];
        match kind {
            b'P' if rest.is_empty() => Some(Record::Pending(fingerprint)),
            b'L' if rest.is_empty() => Some(Record::NotKept(fingerprint)),
            b'D' => {
                let status = StatusCode::from_u16(take_u16(&mut rest)?).ok()?;
                let count = take_u16(&mut rest)?;
                let mut headers = Vec::with_capacity(count.min(64) as usize);
                for _ in 0..count {
                    let n = take_u16(&mut rest)? as usize;
                    let name = HeaderName::from_bytes(take(&mut rest, n)?).ok()?;
                    let n = take_u16(&mut rest)? as usize;
                    let value = HeaderValue::from_bytes(take(&mut rest, n)?).ok()?;
                    headers.push((name, value));
                }
                Some(Record::Done(fingerprint, Answer { status, headers, body: Bytes::copy_from_slice(rest) }))
            }
            _ => None,
        }
    }
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn take_u16(rest: &mut &[u8]) -> Option<u16> {
    take(rest, 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips() {
        let answer = Answer {
            status: StatusCode::CREATED,
            headers: vec![
                (HeaderName::from_static("content-type"), HeaderValue::from_static("application/json")),
                (HeaderName::from_static("sse-position"), HeaderValue::from_static("deferred")),
            ],
            body: Bytes::from_static(br#"{"id":7}"#),
        };
        for record in [Record::Pending([1; 32]), Record::NotKept([2; 32]), Record::Done([3; 32], answer)] {
            assert_eq!(Record::decode(&record.encode()), Some(record));
        }
    }

    #[test]
    fn a_replay_never_hands_out_a_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert("set-cookie", HeaderValue::from_static("session=secret"));
        headers.insert("location", HeaderValue::from_static("/api/tasks/7"));
        let kept = Answer::kept_headers(&headers);
        assert_eq!(kept, vec![(HeaderName::from_static("location"), HeaderValue::from_static("/api/tasks/7"))]);
    }

    proptest! {
        #[test]
        fn decoding_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(record) = Record::decode(&bytes) {
                prop_assert_eq!(Record::decode(&record.encode()), Some(record));
            }
        }
    }
}
