//! The load tool's SSE reader: finds, in the bytes of a stream, each frame of the watched event
//! and the number in its data's `"id":`, and keeps the last `id:` for a reconnect.
//!
//! Written here rather than using the project's `SseParser`, which builds a `String` for every
//! frame's event, data and id: at a million frames a second on the machine that also runs the
//! server, the load tool's own allocations were taking half of the CPU. This reader allocates
//! nothing per frame; it keeps only a partial line between reads, and finds lines with `memchr`
//! (SIMD). It reads what our server sends (`\n` or `\r\n` line ends, `event:` before `data:`);
//! the full parser stays the one the tests check.

/// Scans one stream's body.
pub struct FrameScanner {
    /// The watched event's name (shared by every stream: one copy, warm in the cache).
    event: std::sync::Arc<str>,
    /// A counted frame's data is at least this long: shorter, it was cut on the way.
    min_data: usize,
    /// The end of the previous read, when it stopped inside a line.
    partial: Vec<u8>,
    /// The frame being read is of the watched event.
    watched: bool,
    /// The number in the frame's data, once a `data:` line held one.
    number: Option<u64>,
    /// The `id:` of the frame being read, when `has_id`.
    frame_id: Vec<u8>,
    has_id: bool,
    /// The id of the last complete frame that had one (what EventSource would send as
    /// `Last-Event-ID`: a frame cut off by the connection's end does not count).
    last_id: Vec<u8>,
}

impl FrameScanner {
    /// A scanner that counts a frame of `event` only when its data is at least `min_data`
    /// bytes long.
    pub fn new(event: std::sync::Arc<str>, min_data: usize) -> Self {
        Self {
            event,
            min_data,
            partial: Vec::new(),
            watched: false,
            number: None,
            frame_id: Vec::new(),
            has_id: false,
            last_id: Vec::new(),
        }
    }

    /// Calls `found(number)` for every complete frame of the watched event in `bytes` whose data
    /// has an `"id":` number.
    pub fn feed(&mut self, mut bytes: &[u8], mut found: impl FnMut(u64)) {
        if !self.partial.is_empty() {
            let Some(end) = memchr(b'\n', bytes) else {
                self.partial.extend_from_slice(bytes);
                return;
            };
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&bytes[..end]);
            self.line(&line, &mut found);
            line.clear();
            self.partial = line;
            bytes = &bytes[end + 1..];
        }
        while let Some(end) = memchr(b'\n', bytes) {
            self.line(&bytes[..end], &mut found);
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
    }

    /// The last frame id seen, if any.
    pub fn last_event_id(&self) -> Option<&str> {
        std::str::from_utf8(&self.last_id).ok().filter(|id| !id.is_empty())
    }

    fn line(&mut self, line: &[u8], found: &mut impl FnMut(u64)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if std::mem::take(&mut self.has_id) {
                // Swapped, not copied: both buffers are kept for the next frames.
                std::mem::swap(&mut self.last_id, &mut self.frame_id);
            }
            if let (true, Some(n)) = (self.watched, self.number) {
                found(n);
            }
            (self.watched, self.number) = (false, None);
            return;
        }
        let (field, value) = match memchr(b':', line) {
            Some(at) => (&line[..at], &line[at + 1..]),
            None => (line, &b""[..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match field {
            b"event" => self.watched = value == self.event.as_bytes(),
            // Our server writes `event:` before `data:`: other frames' data is not read.
            b"data" if self.watched && self.number.is_none() && value.len() >= self.min_data => {
                self.number = id_of(value)
            }
            b"id" => {
                self.frame_id.clear();
                self.frame_id.extend_from_slice(value);
                self.has_id = true;
            }
            _ => {}
        }
    }
}

use memchr::memchr;

/// The number in a frame's `"id":` field. Read by hand rather than by parsing the JSON: at a
/// million frames a second the load tool's own parsing would take the CPU the server needs.
pub fn id_of(data: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(data, b"\"id\":")? + 5;
    let digits = &data[at..];
    let digits = &digits[digits.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 {
        return None;
    }
    digits[..len].iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(pieces: &[&[u8]]) -> (Vec<u64>, Option<String>) {
        let mut s = FrameScanner::new("task:created".into(), 0);
        let mut got = Vec::new();
        for p in pieces {
            s.feed(p, |n| got.push(n));
        }
        (got, s.last_event_id().map(str::to_owned))
    }

    #[test]
    fn ids_are_read_from_the_data() {
        assert_eq!(id_of(br#"{"id":7}"#), Some(7));
        assert_eq!(id_of(br#"{"x":1,"id": 12345,"y":2}"#), Some(12345));
        assert_eq!(id_of(br#"{"ts":1}"#), None);
        assert_eq!(id_of(br#"{"id":"a"}"#), None);
    }

    #[test]
    fn only_complete_frames_of_the_watched_event_count_wherever_the_reads_are_cut() {
        let wire: &[u8] = b": ok\nretry: 2000\n\nid: c1\n\nid: c2\nevent: task:created\ndata: {\"id\":7}\n\n\
            id: c3\nevent: heartbeat\ndata: {\"id\":99}\n\nid: c4\r\nevent: task:created\r\ndata: {\"id\":8}\r\n\r\n\
            id: c5\nevent: task:created\ndata: {\"id\":9}\n";
        for cut in 0..wire.len() {
            assert_eq!(scan(&[&wire[..cut], &wire[cut..]]), (vec![7, 8], Some("c4".into())), "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(scan(&bytes).0, [7, 8]);
    }

    #[test]
    fn a_frame_cut_short_is_not_counted() {
        let mut s = FrameScanner::new("big".into(), 20);
        let mut got = Vec::new();
        let long = format!("data: {{\"id\":1,\"f\":\"{}\"}}\n\n", "x".repeat(20));
        s.feed(format!("event: big\n{long}event: big\ndata: {{\"id\":2}}\n\n").as_bytes(), |n| got.push(n));
        assert_eq!(got, [1], "the short frame's id is not counted");
    }
}
