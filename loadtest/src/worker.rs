//! A worker process: opens its share of the streams, counts the frames of the watched event on
//! each, and reports to the coordinator on stdout.
//!
//! Streams are raw TCP with a hand-written request and the project's own SSE parser rather than
//! an HTTP client: a load generator must hold tens of thousands of connections in little memory,
//! bind each to a chosen source address, and read nothing it does not count.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::chunked::Chunked;
use crate::frames::FrameScanner;
use crate::protocol::{histogram, unix_us, Command, EncodedHistogram, Plan, RefetchReport, Report};
use crate::refetch;

/// An open stream: the connection, when the response is chunked its decoder, and the body
/// bytes that arrived with the head.
struct Opened {
    stream: TcpStream,
    chunked: Option<Chunked>,
    early: Vec<u8>,
}

/// Every report goes out as one line.
fn report(r: &Report) {
    println!("{}", serde_json::to_string(r).expect("reports serialize"));
}

/// Opens a stream from `source` to `target` (resuming after `last_event_id` when given) and reads
/// its response head; `Err` says why not.
async fn open(
    target: &str,
    path: &str,
    source: std::net::IpAddr,
    last_event_id: Option<&str>,
) -> Result<Opened, String> {
    let addr: std::net::SocketAddr = target.parse().map_err(|e| format!("target {target}: {e}"))?;
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(|e| e.to_string())?;
    // Bound to the source address only; the port is picked at connect time, per destination.
    // (A plain bind to port 0 searches the whole port range for a port free for every
    // destination: all CPU, and it runs out after ~28,000 streams per source address.)
    let yes: libc::c_int = 1;
    // SAFETY: setsockopt on a socket this function owns, with a valid pointer and length.
    unsafe {
        use std::os::fd::AsRawFd;
        let ptr = (&yes as *const libc::c_int).cast();
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::setsockopt(socket.as_raw_fd(), libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, ptr, len);
    }
    socket.bind((source, 0).into()).map_err(|e| format!("bind {source}: {e}"))?;
    let mut stream = socket.connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let resume = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nAccept: text/event-stream\r\n{resume}\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    // Body bytes may come in the same read as the head: they are kept for the reader.
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 || buf.len() > 16 * 1024 {
            return Err(format!("no complete response head from {addr}"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let early = buf.split_off(end);
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split(' ').nth(1) != Some("200") {
        return Err(format!("{addr} answered {status_line:?}"));
    }
    let chunked = head.lines().any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    Ok(Opened { stream, chunked: chunked.then(Chunked::default), early })
}

/// Where a stream goes and how it is followed.
struct Follow {
    target: String,
    path: String,
    source: std::net::IpAddr,
    event: Arc<str>,
    want: usize,
    reconnect: bool,
    min_data: usize,
    counted: Arc<AtomicU64>,
    /// Where each new event is handed for a refetch (`--refetch`).
    refetch: Option<Arc<refetch::Queue>>,
    by_order: bool,
}

/// What one stream saw: each distinct counted event's `(id, first received at µs)`.
#[derive(Default)]
struct Seen {
    events: Vec<(u64, u64)>,
    duplicates: u64,
    /// New events with an id below one already received (ids follow the publish order when
    /// events are published one at a time).
    out_of_order: u64,
    highest: Option<u64>,
    reconnects: u64,
    /// Bytes read from the stream.
    bytes: u64,
    /// The number each event's data names (its `"id"`), in the order of `events`.
    items: Vec<u64>,
}

/// A stream may be reopened this many times (bounded, like everything here).
const MAX_RECONNECTS: u64 = 20;

thread_local! {
    /// Each worker thread's buffers for one read and the body decoded from it: a stream keeps
    /// none between reads (a 4 KiB buffer and a 4 KiB body per stream were most of this tool's
    /// memory, and their first touch most of its CPU while 19,000 streams opened).
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        std::cell::RefCell::new((vec![0; 16 * 1024], Vec::with_capacity(16 * 1024)));
}

/// The event ids a stream has seen, to count the ones it gets twice (after a reconnect).
///
/// A bitmap from the first id on rather than a hash set: the ids of a run are dense and come
/// mostly in order, so each new one sets a bit next to the last; a set of 6,000 ids per stream
/// was a cache miss per event (a sixth of the machine's CPU at full rate, beside the server).
/// Ids far from the first (or before it) go to a small set.
#[derive(Default)]
struct SeenIds {
    first: Option<u64>,
    bits: Vec<u64>,
    others: std::collections::HashSet<u64>,
}

impl SeenIds {
    /// The widest range of ids kept as bits (2 MiB of bitmap).
    const SPAN: u64 = 1 << 24;

    /// Records `id`; `false` when it was seen before.
    fn insert(&mut self, id: u64) -> bool {
        let first = *self.first.get_or_insert(id);
        let Some(at) = id.checked_sub(first).filter(|at| *at < Self::SPAN) else {
            return self.others.insert(id);
        };
        let (word, bit) = ((at / 64) as usize, 1u64 << (at % 64));
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let new = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        new
    }
}

/// What one stream has read so far.
struct Reading {
    /// Number events by their order on the stream (`Plan::by_order`), counting from 0.
    by_order: Option<u64>,
    chunked: Option<Chunked>,
    frames: FrameScanner,
    ids: SeenIds,
    seen: Seen,
}

impl Reading {
    /// Takes bytes read from the stream (none: it ended), decoding the body into `body`;
    /// `true` once the stream has ended.
    fn take(&mut self, bytes: &[u8], body: &mut Vec<u8>, counted: &AtomicU64) -> bool {
        body.clear();
        self.seen.bytes += bytes.len() as u64;
        let ended = match &mut self.chunked {
            None => {
                body.extend_from_slice(bytes);
                bytes.is_empty()
            }
            Some(c) => bytes.is_empty() || c.feed(bytes, body).is_err() || c.done,
        };
        let at = unix_us();
        let (seen, ids, order) = (&mut self.seen, &mut self.ids, &mut self.by_order);
        let before = seen.events.len();
        self.frames.feed(body, |id| {
            let item = id;
            let id = match order {
                Some(next) => {
                    *next += 1;
                    *next - 1
                }
                None => id,
            };
            if ids.insert(id) {
                seen.events.push((id, at));
                seen.items.push(item);
                if seen.highest.is_some_and(|h| id < h) {
                    seen.out_of_order += 1;
                }
                seen.highest = seen.highest.max(Some(id));
            } else {
                seen.duplicates += 1;
            }
        });
        if seen.events.len() > before {
            counted.fetch_add((seen.events.len() - before) as u64, Ordering::Relaxed);
        }
        ended
    }
}

/// Reads one stream until `want` distinct events of `event` (0: until stopped) or until stopped.
/// With `reconnect`, a stream the server ends is reopened from its last event id after a short
/// wait (as EventSource would), so a server that goes away costs it nothing it can replay.
async fn follow(f: Follow, opened: Opened, mut stop: watch::Receiver<bool>) -> Seen {
    let Opened { stream, chunked, early } = opened;
    let mut stream = Reader::new(stream);
    let mut r = Reading {
        by_order: f.by_order.then_some(0),
        chunked,
        frames: FrameScanner::new(f.event.clone(), f.min_data),
        ids: SeenIds::default(),
        seen: Seen { events: Vec::with_capacity(f.want), ..Seen::default() },
    };
    // What came with the response head is taken first.
    let mut early = Some(early).filter(|e| !e.is_empty());
    while f.want == 0 || r.seen.events.len() < f.want {
        let before = r.seen.events.len();
        let ended = match early.take() {
            Some(bytes) => SCRATCH.with_borrow_mut(|(_, body)| r.take(&bytes, body, &f.counted)),
            None => tokio::select! {
                // An error ends the stream like its end.
                ended = stream.read_with(|bytes, body| r.take(bytes, body, &f.counted)) => ended.unwrap_or(true),
                _ = stop.wait_for(|s| *s) => break,
            },
        };
        if let Some(queue) = f.refetch.as_ref().filter(|_| r.seen.events.len() > before) {
            let new = r.seen.events[before..].iter().zip(&r.seen.items[before..]);
            queue.push(new.map(|((id, _), item)| (*id, *item)), r.frames.last_event_id());
        }
        if ended {
            if !f.reconnect || r.seen.reconnects >= MAX_RECONNECTS {
                break;
            }
            r.seen.reconnects += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let resume = r.frames.last_event_id().map(str::to_owned);
            // A failed reopen leaves the ended stream in place: the next read ends it again and
            // the next attempt follows (each one counted, at most MAX_RECONNECTS).
            if let Ok(o) = open(&f.target, &f.path, f.source, resume.as_deref()).await {
                (stream, r.chunked) = (Reader::new(o.stream), o.chunked);
                early = Some(o.early).filter(|e| !e.is_empty());
            }
        }
    }
    r.seen
}

/// A stream's socket, read without the second `read` that only says "nothing more now".
///
/// A tokio `TcpStream` forgets that a socket is readable only when a read fails with
/// `WouldBlock`, so every delivery costs the reader two `read` calls. A read that returns less
/// than the buffer has emptied the socket: here it clears the readiness itself (tokio keeps any
/// readiness that arrived since, so nothing is missed). Half the reader's system calls, on the
/// cores the server under test also uses.
struct Reader(tokio::io::unix::AsyncFd<std::net::TcpStream>);

impl Reader {
    fn new(stream: TcpStream) -> Self {
        let std = stream.into_std().expect("a connected socket");
        let readable = tokio::io::Interest::READABLE;
        // SAFETY: the socket owns its descriptor, which nothing else closes or replaces while
        // the `AsyncFd` holds it.
        Self(unsafe { tokio::io::unix::AsyncFd::register_with_interest(std, readable) }.expect("registered"))
    }

    /// Waits until the socket is readable, reads it into this thread's scratch buffer and
    /// hands the bytes (none at its end) and the scratch body buffer to `take`.
    async fn read_with<R>(&mut self, mut take: impl FnMut(&[u8], &mut Vec<u8>) -> R) -> std::io::Result<R> {
        use std::io::Read;
        loop {
            let mut ready = self.0.readable().await?;
            let taken = SCRATCH.with_borrow_mut(|(buf, body)| {
                let read = match ready.try_io(|socket| socket.get_ref().read(buf)) {
                    Ok(read) => read?,
                    Err(_would_block) => return Ok(None),
                };
                if read > 0 && read < buf.len() {
                    ready.clear_ready();
                }
                Ok(Some(take(&buf[..read], body)))
            });
            if let Some(taken) = taken.transpose() {
                return taken;
            }
        }
    }
}

pub async fn run(plan: Plan) {
    crate::procfs::raise_open_files();
    let (stop_tx, stop_rx) = watch::channel(false);
    let counted = Arc::new(AtomicU64::new(0));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let event: Arc<str> = plan.event.as_str().into();
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let (retried, first_retry_reason) = (Arc::new(AtomicU64::new(0)), Arc::new(std::sync::Mutex::new(None::<String>)));
    let connect_us = Arc::new(std::sync::Mutex::new(histogram()));

    let progress = {
        let (ok, failed, counted) = (ok.clone(), failed.clone(), counted.clone());
        let streams = plan.streams;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let (o, f) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
                if o + f < streams {
                    report(&Report::Connecting { ok: o, failed: f });
                } else {
                    report(&Report::Received { frames: counted.load(Ordering::Relaxed) });
                }
            }
        })
    };

    let mut readers = Vec::with_capacity(plan.streams);
    let mut connects = Vec::with_capacity(plan.streams);
    for i in 0..plan.streams {
        let global = plan.first + i;
        let target = plan.targets[global % plan.targets.len()].clone();
        let source = plan.sources[global % plan.sources.len()];
        let (path, gate, ok, failed) = (plan.path.clone(), gate.clone(), ok.clone(), failed.clone());
        let (first_error, connect_us) = (first_error.clone(), connect_us.clone());
        let (event, counted, stop, want, reconnect, min_data) =
            (event.clone(), counted.clone(), stop_rx.clone(), plan.events, plan.reconnect, plan.min_data);
        let (retried, first_retry_reason) = (retried.clone(), first_retry_reason.clone());
        let (refetch_path, conditional, by_order) = (plan.refetch.clone(), plan.conditional, plan.by_order);
        let (each, jitter) = (plan.refetch_each, Duration::from_millis(plan.refetch_jitter_ms));
        connects.push(tokio::spawn(async move {
            // With --reconnect a failed open is retried, as EventSource retries; the latency
            // recorded is the client's: from the first attempt (not from waiting for a place in
            // this tool's own queue) to the stream being open.
            let attempts = if reconnect { 1 + MAX_RECONNECTS } else { 1 };
            let mut first_try: Option<Instant> = None;
            let mut opened = Err(String::new());
            for attempt in 0..attempts {
                if attempt > 0 {
                    retried.fetch_add(1, Ordering::Relaxed);
                    if let Err(why) = &opened {
                        first_retry_reason.lock().unwrap().get_or_insert(why.clone());
                    }
                    tokio::time::sleep(Duration::from_millis(200 * attempt.min(10))).await;
                }
                let permit = gate.clone().acquire_owned().await.expect("the gate stays open");
                first_try.get_or_insert_with(Instant::now);
                opened = tokio::time::timeout(Duration::from_secs(30), open(&target, &path, source, None))
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer from {target} within 30 s")));
                drop(permit);
                if opened.is_ok() {
                    break;
                }
            }
            match opened {
                Ok(stream) => {
                    let took = first_try.map(|t| t.elapsed()).unwrap_or_default();
                    connect_us.lock().unwrap().saturating_record(took.as_micros() as u64);
                    ok.fetch_add(1, Ordering::Relaxed);
                    let queue = refetch_path.as_ref().map(|_| Arc::new(refetch::Queue::default()));
                    let refetcher = refetch_path.map(|path| {
                        let t = refetch::Target { addr: target.clone(), source, path, conditional, each, jitter };
                        tokio::spawn(refetch::run(t, queue.clone().expect("made with the path")))
                    });
                    let f = Follow {
                        target,
                        path,
                        source,
                        event,
                        want,
                        reconnect,
                        min_data,
                        counted,
                        refetch: queue.clone(),
                        by_order,
                    };
                    Some(tokio::spawn(async move {
                        let seen = follow(f, stream, stop).await;
                        let refetched = match (queue, refetcher) {
                            (Some(q), Some(task)) => {
                                q.close();
                                Some(task.await.unwrap_or_default())
                            }
                            _ => None,
                        };
                        (seen, refetched)
                    }))
                }
                Err(why) => {
                    first_error.lock().unwrap().get_or_insert(why);
                    failed.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        }));
    }
    for c in connects {
        if let Ok(Some(reader)) = c.await {
            readers.push(reader);
        }
    }
    report(&Report::Open {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        first_error: first_error.lock().unwrap().clone(),
        retried: retried.load(Ordering::Relaxed),
        first_retry_reason: first_retry_reason.lock().unwrap().clone(),
        connect_us: EncodedHistogram::encode(&connect_us.lock().unwrap()),
    });

    // The coordinator says when the events were sent once it is done waiting for them.
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let sent = loop {
        match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<Command>(&line) {
                Ok(Command::Sent { at_us }) => break at_us,
                Err(e) => eprintln!("worker: ignoring {line:?}: {e}"),
            },
            // The coordinator is gone: nothing more to report.
            _ => std::process::exit(0),
        }
    };
    let _ = stop_tx.send(true);
    let mut latency = histogram();
    let (mut frames, mut complete, mut last, mut duplicates, mut reconnects) = (0u64, 0usize, 0u64, 0u64, 0u64);
    let mut out_of_order = 0u64;
    let (mut stream_bytes, mut refetch) = (0u64, plan.refetch.as_ref().map(|_| RefetchReport::default()));
    let mut refetch_latency = histogram();
    for r in readers {
        let (seen, refetched) = r.await.unwrap_or_default();
        stream_bytes += seen.bytes;
        if let (Some(report), Some(done)) = (refetch.as_mut(), refetched) {
            report.requests += done.requests;
            report.not_modified += done.not_modified;
            report.failed += done.failed;
            report.bytes += done.bytes;
            report.covered += done.covered.len() as u64;
            report.first_error = report.first_error.take().or(done.first_error);
            for (id, at) in done.covered {
                if let Some(sent) = sent.get(&id) {
                    refetch_latency.saturating_record(at.saturating_sub(*sent).max(1));
                }
            }
        }
        complete += usize::from(plan.events > 0 && seen.events.len() >= plan.events);
        duplicates += seen.duplicates;
        out_of_order += seen.out_of_order;
        reconnects += seen.reconnects;
        for (id, at) in seen.events {
            frames += 1;
            last = last.max(at);
            if let Some(sent) = sent.get(&id) {
                latency.saturating_record(at.saturating_sub(*sent).max(1));
            }
        }
    }
    progress.abort();
    report(&Report::Done {
        frames,
        duplicates,
        out_of_order,
        reconnects,
        complete_streams: complete,
        latency_us: EncodedHistogram::encode(&latency),
        last_recv_us: last,
        stream_bytes,
        refetch: refetch.map(|r| RefetchReport { latency_us: Some(EncodedHistogram::encode(&refetch_latency)), ..r }),
    });
}

#[cfg(test)]
mod tests {
    use super::SeenIds;

    #[test]
    fn ids_seen_twice_are_told_apart_wherever_they_fall() {
        let mut seen = SeenIds::default();
        for id in [100, 101, 103, 102, 99, 100 + SeenIds::SPAN, 5] {
            assert!(seen.insert(id), "{id} is new");
        }
        for id in [100, 103, 99, 100 + SeenIds::SPAN, 5] {
            assert!(!seen.insert(id), "{id} was seen");
        }
        assert!(seen.insert(104));
    }
}
