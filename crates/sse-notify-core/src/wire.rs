//! The SSE wire format: a frame encoder and an incremental parser.
//!
//! Hand-written on purpose: this *is* the product's wire contract, both sides must agree on it to
//! the byte, and the parser must build for wasm32 without an async runtime. It follows the
//! WHATWG "event stream interpretation" rules (CR, LF and CRLF line ends, one optional space after
//! the colon, comments, `retry`, ids containing NUL ignored).

use std::fmt::Write as _;

/// The event that tells a client it may have missed events and should refetch.
pub const RESYNC_EVENT: &str = "resync";

/// What a `resync` frame carries: why, and exactly which of the connection's topics to refetch.
///
/// ```
/// use sse_notify_core::wire::{Resync, ResyncReason};
/// let r = Resync::new(ResyncReason::CursorTrimmed, ["tasks", "task:7"]);
/// assert_eq!(r.to_json(), r#"{"reason":"cursor_trimmed","topics":["tasks","task:7"]}"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resync {
    /// A [`ResyncReason`] code (clients should accept codes they do not know).
    pub reason: String,
    /// The topics whose events could not be delivered in full, as the client named them.
    pub topics: Vec<String>,
}

impl Resync {
    /// A resync for `topics`.
    pub fn new<T: Into<String>>(reason: ResyncReason, topics: impl IntoIterator<Item = T>) -> Self {
        Self { reason: reason.as_str().to_owned(), topics: topics.into_iter().map(Into::into).collect() }
    }

    /// The `data:` of the frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("strings always serialize")
    }
}

/// Why the server could not prove a complete replay.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ResyncReason {
    /// The `Last-Event-ID` is not a cursor at all.
    MalformedCursor,
    /// The cursor belongs to another topic prefix (another app on the same Redis).
    ForeignCursor,
    /// The cursor's log is gone (Redis lost its data, or the embedded broker restarted) or its
    /// position was never issued.
    UnknownCursor,
    /// Events after the cursor were already dropped from the retained history.
    CursorTrimmed,
    /// The server's link to Redis broke and what was published meanwhile is no longer retained.
    BrokerReconnected,
    /// The client read too slowly and its queue overflowed.
    SlowConsumer,
}

impl ResyncReason {
    /// The code sent in `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedCursor => "malformed_cursor",
            Self::ForeignCursor => "foreign_cursor",
            Self::UnknownCursor => "unknown_cursor",
            Self::CursorTrimmed => "cursor_trimmed",
            Self::BrokerReconnected => "broker_reconnected",
            Self::SlowConsumer => "slow_consumer",
        }
    }
}

/// The keep-alive event (`data: {"ts":<unix seconds>}`, no `id:` line).
pub const HEARTBEAT_EVENT: &str = "heartbeat";

/// Why a frame could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A line break in the event name would end the field early.
    #[error("event name must not contain CR or LF")]
    NewlineInEvent,
    /// A line break (or NUL, which clients ignore) in the id.
    #[error("event id must not contain CR, LF or NUL")]
    NewlineInId,
    /// An empty name would dispatch as the default `message` event.
    #[error("event name must not be empty")]
    EmptyEvent,
}

/// Checks that `name` can be sent as an `event:` field.
pub fn validate_event_name(name: &str) -> Result<(), FrameError> {
    if name.is_empty() {
        return Err(FrameError::EmptyEvent);
    }
    if name.contains(['\r', '\n']) {
        return Err(FrameError::NewlineInEvent);
    }
    Ok(())
}

/// Checks that `id` can be sent as an `id:` field.
pub fn validate_id(id: &str) -> Result<(), FrameError> {
    if id.contains(['\r', '\n', '\0']) {
        return Err(FrameError::NewlineInId);
    }
    Ok(())
}

/// Encodes one event frame: `id:` (when given), `event:`, one `data:` line per line of `data`,
/// then the blank line that dispatches it.
///
/// ```
/// let frame = sse_notify_core::wire::encode_event(Some("1-0"), "task:created", "{\"id\":7}").unwrap();
/// assert_eq!(frame, "id: 1-0\nevent: task:created\ndata: {\"id\":7}\n\n");
/// ```
pub fn encode_event(id: Option<&str>, event: &str, data: &str) -> Result<String, FrameError> {
    validate_event_name(event)?;
    if let Some(id) = id {
        validate_id(id)?;
    }
    let mut out = String::with_capacity(data.len() + event.len() + 32);
    if let Some(id) = id {
        let _ = writeln!(out, "id: {id}");
    }
    let _ = writeln!(out, "event: {event}");
    push_data_lines(&mut out, data);
    out.push('\n');
    Ok(out)
}

/// A comment line (`: text`), ignored by clients; used to flush the first bytes at once.
pub fn encode_comment(text: &str) -> String {
    let mut out = String::new();
    for line in split_lines(text) {
        let _ = writeln!(out, ": {line}");
    }
    out
}

/// A `retry:` line telling EventSource how long to wait before reconnecting.
pub fn encode_retry(millis: u64) -> String {
    format!("retry: {millis}\n")
}

fn push_data_lines(out: &mut String, data: &str) {
    for line in split_lines(data) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
}

/// Splits on CRLF, CR or LF: every one of them ends a line for an SSE client, so a payload line
/// break of any kind must become a new `data:` line (an empty string gives one empty line).
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(s)
            }
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
        }
    })
}

/// One dispatched event, as an EventSource would see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedEvent {
    /// The `event:` field, or `"message"` when the frame had none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field of this very frame, if it had one.
    pub id: Option<String>,
    /// The stream's last event id after this frame (what EventSource reports as `lastEventId`).
    pub last_event_id: String,
}

/// An incremental SSE parser: feed it bytes as they arrive, split anywhere.
///
/// ```
/// let mut p = sse_notify_core::wire::SseParser::new();
/// assert!(p.feed(b"event: ping\nda").is_empty());
/// let events = p.feed(b"ta: {}\n\n");
/// assert_eq!(events[0].event, "ping");
/// assert_eq!(events[0].data, "{}");
/// ```
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: an LF starting the next chunk belongs to that line end.
    after_cr: bool,
    seen_bom_check: bool,
    event: String,
    data: String,
    has_data: bool,
    frame_id: Option<String>,
    last_event_id: String,
    retry: Option<u64>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last `retry:` value seen, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The id to resume from: the last `id:` field seen, also from frames without data (the
    /// server opens a stream with an `id:`-only frame holding its starting cursor).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Parses `chunk` (any split of the stream) and returns the events it completed.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Vec<ParsedEvent> {
        let mut out = Vec::new();
        if !self.seen_bom_check {
            // A UTF-8 BOM may open the stream; it can itself be split across chunks.
            let bom = [0xEF, 0xBB, 0xBF];
            let have = self.line.len() + chunk.len();
            let mut probe = self.line.clone();
            probe.extend_from_slice(&chunk[..chunk.len().min(3)]);
            if have < 3 && bom.starts_with(&probe) {
                self.line.extend_from_slice(chunk);
                return out;
            }
            self.seen_bom_check = true;
            if probe.starts_with(&bom) {
                let consumed_from_chunk = 3 - self.line.len();
                self.line.clear();
                chunk = &chunk[consumed_from_chunk..];
            }
        }
        for &b in chunk {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut out);
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    fn end_line(&mut self, out: &mut Vec<ParsedEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        let line = String::from_utf8_lossy(&line);
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => {
                self.last_event_id = value.to_owned();
                self.frame_id = Some(value.to_owned());
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<ParsedEvent>) {
        let event = std::mem::take(&mut self.event);
        let frame_id = self.frame_id.take();
        if !self.has_data {
            return;
        }
        self.has_data = false;
        out.push(ParsedEvent {
            event: if event.is_empty() { "message".to_owned() } else { event },
            data: std::mem::take(&mut self.data),
            id: frame_id,
            last_event_id: self.last_event_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Vec<ParsedEvent> {
        SseParser::new().feed(bytes)
    }

    #[test]
    fn encodes_contract_frame() {
        let f = encode_event(Some("1700000000000-0"), "task:created", r#"{"id":7}"#).unwrap();
        assert_eq!(f, "id: 1700000000000-0\nevent: task:created\ndata: {\"id\":7}\n\n");
    }

    #[test]
    fn frame_without_id_has_no_id_line() {
        let f = encode_event(None, "heartbeat", r#"{"ts":1}"#).unwrap();
        assert_eq!(f, "event: heartbeat\ndata: {\"ts\":1}\n\n");
    }

    #[test]
    fn multiline_data_becomes_several_data_lines() {
        let f = encode_event(None, "e", "a\nb\r\nc\rd").unwrap();
        assert_eq!(f, "event: e\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
        let parsed = parse_all(f.as_bytes());
        assert_eq!(parsed[0].data, "a\nb\nc\nd");
    }

    #[test]
    fn empty_data_still_dispatches() {
        let f = encode_event(None, "e", "").unwrap();
        assert_eq!(f, "event: e\ndata: \n\n");
        assert_eq!(parse_all(f.as_bytes())[0].data, "");
    }

    #[test]
    fn refuses_cr_lf_in_names_and_ids() {
        assert_eq!(encode_event(None, "a\nb", "{}"), Err(FrameError::NewlineInEvent));
        assert_eq!(encode_event(None, "a\rb", "{}"), Err(FrameError::NewlineInEvent));
        assert_eq!(encode_event(Some("1\n"), "a", "{}"), Err(FrameError::NewlineInId));
        assert_eq!(encode_event(Some("1\r"), "a", "{}"), Err(FrameError::NewlineInId));
        assert_eq!(encode_event(None, "", "{}"), Err(FrameError::EmptyEvent));
    }

    #[test]
    fn round_trip_at_every_chunk_boundary() {
        let mut stream = String::new();
        stream.push_str(&encode_retry(3000));
        stream.push_str(&encode_comment("connected"));
        stream.push_str(&encode_event(Some("1-0"), "task:created", "{\"id\":1}").unwrap());
        stream.push_str(&encode_event(None, "heartbeat", "{\"ts\":5}").unwrap());
        stream.push_str(&encode_event(Some("2-0"), "note", "line1\nline2 é").unwrap());
        let bytes = stream.as_bytes();
        let whole = parse_all(bytes);
        assert_eq!(whole.len(), 3);
        for split in 0..=bytes.len() {
            let mut p = SseParser::new();
            let mut got = p.feed(&bytes[..split]);
            got.extend(p.feed(&bytes[split..]));
            assert_eq!(got, whole, "split at {split}");
            assert_eq!(p.retry(), Some(3000));
        }
        // One byte at a time.
        let mut p = SseParser::new();
        let got: Vec<_> = bytes.iter().flat_map(|b| p.feed(std::slice::from_ref(b))).collect();
        assert_eq!(got, whole);
        assert_eq!(whole[0].id.as_deref(), Some("1-0"));
        assert_eq!(whole[1].id, None);
        assert_eq!(whole[1].last_event_id, "1-0");
        assert_eq!(whole[2].data, "line1\nline2 é");
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_end() {
        let mut p = SseParser::new();
        let mut got = p.feed(b"data: a\r");
        got.extend(p.feed(b"\ndata: b\r\n\r\n"));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, "a\nb");
    }

    #[test]
    fn spec_details() {
        // No space after the colon, field without colon, unknown fields, BOM, default event name.
        let got = parse_all(b"\xEF\xBB\xBFdata:x\nfoo: bar\ndata\n\n");
        assert_eq!(got[0].event, "message");
        assert_eq!(got[0].data, "x\n");
        // A frame without data dispatches nothing but still sets the id.
        let mut p = SseParser::new();
        assert!(p.feed(b"id: 9\nevent: x\n\n").is_empty());
        assert_eq!(p.feed(b"data: y\n\n")[0].last_event_id, "9");
        // Bad retry is ignored; only one leading space is stripped.
        let mut p = SseParser::new();
        let got = p.feed(b"retry: 1x\ndata:  two\n\n");
        assert_eq!(p.retry(), None);
        assert_eq!(got[0].data, " two");
    }

    #[test]
    fn bom_split_across_chunks() {
        let mut p = SseParser::new();
        assert!(p.feed(b"\xEF").is_empty());
        assert!(p.feed(b"\xBB").is_empty());
        let got = p.feed(b"\xBFdata: z\n\n");
        assert_eq!(got[0].data, "z");
    }
}
