//! The fetch that follows a notification, as a browser tab does it: each stream has one
//! keep-alive connection of its own for its refetches, GETs the path after each event (the
//! event's `id` in place of `{id}`), with the notification's cursor as `Last-Event-ID` and,
//! with `--conditional`, the last `ETag` it got as `If-None-Match`. Like `use_live_json`, it
//! coalesces: events that arrive while a refetch is in flight are covered by one refetch after
//! it, not one each. Every event is timed from its publish to the end of the first refetch that
//! started after it arrived: when the tab holds data that includes it. With `{id}` in the path
//! the refetches are item by item, as `use_live_list` makes them: each item a batch of events
//! names is fetched once.
//!
//! The GET is written here (with `httparse` for the head) rather than sent with `reqwest`, which
//! the tool has: each stream needs a connection of its own bound to its `--sources` address,
//! and a thousand `reqwest` clients (a pool and a resolver each) cost the cores the server under
//! test runs on; a keep-alive connection and one parsed head per refetch is all this needs.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::chunked::Chunked;
use crate::protocol::unix_us;

/// What a stream hands its refetcher.
#[derive(Default)]
pub struct Pending {
    /// Events arrived and not yet covered by a refetch that started after them: each one's id
    /// and the number its data names (the item of `{id}`).
    ids: Vec<(u64, u64)>,
    /// The cursor of the newest.
    cursor: Option<String>,
    /// The stream is done: finish what is pending, then stop.
    closed: bool,
}

/// The queue between a stream and its refetcher.
#[derive(Default)]
pub struct Queue {
    pending: Mutex<Pending>,
    wake: Notify,
}

impl Queue {
    pub fn push(&self, ids: impl IntoIterator<Item = (u64, u64)>, cursor: Option<&str>) {
        let mut p = self.pending.lock().unwrap();
        p.ids.extend(ids);
        if let Some(c) = cursor {
            p.cursor = Some(c.to_owned());
        }
        drop(p);
        self.wake.notify_one();
    }

    pub fn close(&self) {
        self.pending.lock().unwrap().closed = true;
        self.wake.notify_one();
    }
}

/// What one stream's refetches did.
#[derive(Default)]
pub struct Refetched {
    /// `(event id, Unix µs when a refetch covering it completed)`.
    pub covered: Vec<(u64, u64)>,
    pub requests: u64,
    pub not_modified: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// Response bytes read (heads and bodies).
    pub bytes: u64,
}

/// Where and how to refetch.
pub struct Target {
    pub addr: String,
    pub source: std::net::IpAddr,
    pub path: String,
    pub conditional: bool,
    /// One refetch per event, none covering another (`--refetch-each`: what a page without
    /// coalescing does).
    pub each: bool,
    /// A refetch waits a random time of up to this after the event that starts it, covering
    /// the events meanwhile (`--refetch-jitter`, as `UseSseOptions::jitter`).
    pub jitter: std::time::Duration,
}

/// Runs one stream's refetches until its queue is closed and drained.
pub async fn run(target: Target, queue: Arc<Queue>) -> Refetched {
    let mut random = (unix_us() ^ (Arc::as_ptr(&queue) as u64).rotate_left(17)) | 1;
    let mut client = Client { target, conn: None, etag: None, out: Refetched::default() };
    loop {
        let waiting = !queue.pending.lock().unwrap().ids.is_empty();
        if waiting && !client.target.jitter.is_zero() {
            // xorshift64: a spread, not a secret.
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            tokio::time::sleep(client.target.jitter.mul_f64((random % 10_000) as f64 / 10_000.0)).await;
        }
        let (events, cursor, closed) = {
            let mut p = queue.pending.lock().unwrap();
            let events = if client.target.each && !p.ids.is_empty() {
                vec![p.ids.remove(0)]
            } else {
                std::mem::take(&mut p.ids)
            };
            (events, p.cursor.clone(), p.closed)
        };
        if events.is_empty() {
            if closed {
                return client.out;
            }
            queue.wake.notified().await;
            continue;
        }
        if client.target.path.contains("{id}") {
            // Item by item, as `use_live_list` patches: each item the events name once.
            for (item, covered) in by_item(&events) {
                client
                    .refetch(&client.target.path.replace("{id}", &item.to_string()), cursor.as_deref(), &covered)
                    .await;
            }
        } else {
            let covered: Vec<u64> = events.iter().map(|(event, _)| *event).collect();
            client.refetch(&client.target.path.clone(), cursor.as_deref(), &covered).await;
        }
    }
}

/// The items `events` name, each once at its last place, with the events it covers.
fn by_item(events: &[(u64, u64)]) -> Vec<(u64, Vec<u64>)> {
    let mut out: Vec<(u64, Vec<u64>)> = Vec::new();
    for &(event, item) in events {
        let mut covered = match out.iter().position(|(i, _)| *i == item) {
            Some(at) => out.remove(at).1,
            None => Vec::new(),
        };
        covered.push(event);
        out.push((item, covered));
    }
    out
}

/// One stream's refetching connection and what it did.
struct Client {
    target: Target,
    conn: Option<TcpStream>,
    etag: Option<String>,
    out: Refetched,
}

impl Client {
    /// GETs `path`; once it answers, `covered` events' data has arrived.
    async fn refetch(&mut self, path: &str, cursor: Option<&str>, covered: &[u64]) {
        let mut headers = String::new();
        if let Some(c) = cursor {
            headers.push_str(&format!("Last-Event-ID: {c}\r\n"));
        }
        if let (true, Some(tag)) = (self.target.conditional, &self.etag) {
            headers.push_str(&format!("If-None-Match: {tag}\r\n"));
        }
        self.out.requests += 1;
        // One retry on a fresh connection: a kept-alive one may have been closed meanwhile.
        let mut answer = Err(String::new());
        for _ in 0..2 {
            let stream = match self.conn.take() {
                Some(s) => s,
                None => match connect(&self.target).await {
                    Ok(s) => s,
                    Err(e) => {
                        answer = Err(e);
                        continue;
                    }
                },
            };
            let limit = std::time::Duration::from_secs(30);
            answer = match tokio::time::timeout(limit, get(stream, &self.target.addr, path, &headers)).await {
                Ok(got) => got.map(|(a, s)| {
                    self.conn = s;
                    a
                }),
                Err(_) => Err(format!("GET {path}: no answer within 30 s")),
            };
            if answer.is_ok() {
                break;
            }
        }
        let out = &mut self.out;
        match answer {
            Ok(a) if a.status == 200 || a.status == 304 => {
                let at = unix_us();
                out.covered.extend(covered.iter().map(|&id| (id, at)));
                out.bytes += a.bytes;
                out.not_modified += u64::from(a.status == 304);
                if a.etag.is_some() {
                    self.etag = a.etag;
                }
            }
            Ok(a) => {
                out.failed += 1;
                out.first_error.get_or_insert(format!("GET {path} answered {}", a.status));
            }
            Err(e) => {
                out.failed += 1;
                out.first_error.get_or_insert(e);
            }
        }
    }
}

async fn connect(target: &Target) -> Result<TcpStream, String> {
    let addr: std::net::SocketAddr = target.addr.parse().map_err(|e| format!("{}: {e}", target.addr))?;
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(|e| e.to_string())?;
    socket.bind((target.source, 0).into()).map_err(|e| format!("bind {}: {e}", target.source))?;
    let stream = socket.connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

struct Answer {
    status: u16,
    etag: Option<String>,
    bytes: u64,
}

/// One GET on `stream`; the answer, and the stream when it may be used again.
async fn get(
    mut stream: TcpStream,
    host: &str,
    path: &str,
    headers: &str,
) -> Result<(Answer, Option<TcpStream>), String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let (status, etag, length, chunked, close, head_len) = loop {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the connection closed before an answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut fields);
        match resp.parse(&buf).map_err(|e| e.to_string())? {
            httparse::Status::Partial if buf.len() > 64 * 1024 => return Err("an endless response head".into()),
            httparse::Status::Partial => continue,
            httparse::Status::Complete(len) => {
                let field = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .map(str::to_owned)
                };
                let length = field("content-length").and_then(|v| v.trim().parse::<usize>().ok());
                let chunked = field("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                let close = field("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
                break (resp.code.unwrap_or(0), field("etag"), length, chunked, close, len);
            }
        }
    };
    let mut body = buf.split_off(head_len);
    let mut bytes = (head_len + body.len()) as u64;
    let no_body = status == 304 || status == 204 || (100..200).contains(&status);
    if !no_body {
        if chunked {
            let mut decoder = Chunked::default();
            let mut decoded = Vec::new();
            decoder.feed(&body, &mut decoded)?;
            while !decoder.done {
                let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("the connection closed inside a chunked body".into());
                }
                bytes += n as u64;
                decoder.feed(&chunk[..n], &mut decoded)?;
            }
        } else if let Some(length) = length {
            while body.len() < length {
                let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("the connection closed inside a body".into());
                }
                bytes += n as u64;
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            // Delimited by the connection's end.
            while stream.read(&mut chunk).await.map_err(|e| e.to_string())? > 0 {}
            return Ok((Answer { status, etag, bytes }, None));
        }
    }
    Ok((Answer { status, etag, bytes }, (!close).then_some(stream)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_item_is_fetched_once_at_its_last_place_covering_its_events() {
        let events = [(1, 7), (2, 8), (3, 7), (4, 9)];
        assert_eq!(super::by_item(&events), [(8, vec![2]), (7, vec![1, 3]), (9, vec![4])]);
    }
}
