//! Writing an answer on a connection without hyper: a short answer whole, with its length; a
//! stream as HTTP/1.1 chunks, the frames that are ready in one `send`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, response::Parts, Response, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long a stream's write may make no progress before the stream is cut
/// (`SSE_WRITE_TIMEOUT_SECONDS`), and the counter such cuts go to (slow-consumer disconnects).
/// One for all streams: each holds an `Arc` of it.
pub(crate) struct StallLimit {
    pub(crate) after: Duration,
    pub(crate) cuts: Counter,
}

/// Frames written in one chunk when several are ready.
const MAX_BATCH: usize = 64;
/// The largest body of a short answer (the endpoint's are JSON errors of a few hundred bytes).
const MAX_WHOLE_BODY: usize = 1024 * 1024;
/// Bytes a stream's client may send after its request before the connection is closed. A
/// stream's response ends only with its connection, so nothing sent after the request is ever
/// read as HTTP; without a bound a client could make the server read (and drop) gigabytes.
pub(crate) const MAX_AFTER_REQUEST: usize = 4 * 1024;

/// Whether `resp` is a stream, written as chunks until it ends, rather than a short answer.
pub(crate) fn is_stream(resp: &Response<Body>) -> bool {
    resp.status() == StatusCode::OK
        && resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// The status line and headers of `parts`, with a `date` (as hyper adds), without the blank
/// line that ends them.
fn head_of(parts: &Parts) -> Vec<u8> {
    let reason = parts.status.canonical_reason().unwrap_or("");
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", parts.status.as_str()).into_bytes();
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(format!("date: {}\r\n", httpdate::fmt_http_date(std::time::SystemTime::now())).as_bytes());
    head
}

/// Writes a short answer whole, with its length. Returns whether the connection can serve
/// another request: not when `close` (the client asked for it), when the body could not be
/// read whole, or when the write failed.
pub(crate) async fn write_whole(socket: &mut TcpStream, resp: Response<Body>, close: bool) -> bool {
    let (mut parts, body) = resp.into_parts();
    let (bytes, whole) = match http_body_util::Limited::new(body, MAX_WHOLE_BODY).collect().await {
        Ok(b) => (b.to_bytes(), true),
        Err(_) => (Bytes::new(), false),
    };
    parts.headers.insert(header::CONTENT_LENGTH, bytes.len().into());
    let keep_alive = whole && !close;
    if !keep_alive {
        parts.headers.insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    let mut out = head_of(&parts);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&bytes);
    if socket.write_all(&out).await.is_err() {
        return false;
    }
    if !keep_alive {
        let _ = socket.shutdown().await;
    }
    keep_alive
}

/// A stream's response as [`write_stream`] takes it: its head, ready to send, and its body.
/// The response's parts (its header map, ~0.5 KiB with its allocation) are dropped here: a
/// stream lives for hours and should hold only what writing it needs (an async fn keeps its
/// arguments for its whole life, so the parts must not be one).
///
/// The head says `connection: close`: the connection ends with the stream. Without it a client
/// takes a stream that ends (a poll's answer, `?poll=`) as leaving the connection open for its
/// next request, sends it there, and finds the connection gone.
pub(crate) fn stream_parts(resp: Response<Body>) -> (Vec<u8>, Body) {
    let (parts, body) = resp.into_parts();
    let mut head = head_of(&parts);
    head.extend_from_slice(b"connection: close\r\ntransfer-encoding: chunked\r\n\r\n");
    (head, body)
}

/// Writes a stream: its head, then the body's frames as HTTP/1.1 chunks, the frames that are
/// ready in one write, until the body ends (then the last chunk, and the connection closes), the
/// client closes its side, or its writes make no progress for `stall.after` (the client stopped
/// reading: without that bound it would hold its stream, queue and slot until shutdown, since
/// the queue's own overflow cut is only seen by a writer that gets to read the queue again).
pub(crate) async fn write_stream(mut socket: TcpStream, head: Vec<u8>, mut body: Body, stall: Arc<StallLimit>) {
    // The head goes out with the first frames (a stream's hello is ready at once): one `send`
    // per new stream, not two. A body with nothing ready gets its head sent alone.
    let mut head = Some(head);
    let mut frames = Vec::new();
    let mut reader = Reader { ended: false, after_request: 0 };
    let mut watch = StallWatch { timer: None, progressed: false };
    loop {
        let next = std::future::poll_fn(|cx| match reader.poll_next(&mut body, &socket, &mut frames, cx) {
            Poll::Pending if head.is_some() => Poll::Ready(Next::Frames),
            next => next,
        })
        .await;
        match next {
            Next::Frames => {
                let written = if frames.iter().any(|f| f.len() > COPY_AT_MOST) {
                    // Rare, and boxed: its state would otherwise be part of every idle stream's.
                    Box::pin(write_large_frames(&mut watch, &socket, head.take(), &frames, stall.after)).await
                } else {
                    let mut out = head.take().unwrap_or_default();
                    push_chunk(&mut out, &frames);
                    watch.write(&socket, &out, stall.after).await
                };
                match written {
                    Written::All => {}
                    Written::Failed => return,
                    Written::Stalled => {
                        tracing::info!(after = ?stall.after, "a stream's client stopped reading; cut");
                        stall.cuts.inc();
                        return;
                    }
                }
                if frames.len() <= 2 {
                    // The stream keeps up again: the stall timer is given back (only then, so
                    // that busy streams do not set a timer for every write that waits).
                    watch.timer = None;
                }
                if frames.len() < MAX_BATCH {
                    // So is the room its frames took: an idle stream holds none. Only a stream
                    // with more ready than one batch keeps it for the next; others allocate it
                    // once per write, next to the write's own buffer and its `send`.
                    frames = Vec::new();
                } else {
                    frames.clear();
                }
            }
            Next::End => break,
            Next::ClientGone => return,
            Next::ClientTalks => {
                tracing::info!(
                    bytes = reader.after_request,
                    "a stream's client kept sending after its request; closed"
                );
                return;
            }
        }
    }
    let mut last = head.take().unwrap_or_default();
    last.extend_from_slice(b"0\r\n\r\n");
    if let Written::All = watch.write(&socket, &last, stall.after).await {
        let _ = socket.shutdown().await;
    }
}

/// Frames larger than this are sent from their own bytes rather than copied into the buffer
/// of a write: a large room's `presence:state` (10,000 members are ~600 KB) is one `Bytes`
/// shared by every stream, and a copy per stream would hold it once per stream for as long as
/// that stream's socket takes to accept it.
const COPY_AT_MOST: usize = 16 * 1024;

/// Writes `frames` (after `head`, if any) as HTTP/1.1 chunks: the small ones copied into one
/// buffer and sent with one `send`, each large one as a chunk of its own, from its own bytes.
async fn write_large_frames(
    watch: &mut StallWatch,
    socket: &TcpStream,
    head: Option<Vec<u8>>,
    frames: &[Bytes],
    limit: Duration,
) -> Written {
    let mut out = head.unwrap_or_default();
    let mut small = 0;
    for (i, frame) in frames.iter().enumerate().filter(|(_, f)| f.len() > COPY_AT_MOST) {
        push_chunk(&mut out, &frames[small..i]);
        out.extend_from_slice(format!("{:x}\r\n", frame.len()).as_bytes());
        for part in [&out[..], &frame[..]] {
            match watch.write(socket, part, limit).await {
                Written::All => {}
                cut => return cut,
            }
        }
        out.clear();
        out.extend_from_slice(b"\r\n");
        small = i + 1;
    }
    push_chunk(&mut out, &frames[small..]);
    if out.is_empty() {
        return Written::All;
    }
    watch.write(socket, &out, limit).await
}

/// How [`StallWatch::write`] ended.
enum Written {
    All,
    /// The connection failed or the client closed it.
    Failed,
    /// The socket took nothing for a whole bound.
    Stalled,
}

/// A stream's watch on the progress of its writes. The usual write fits in the kernel's buffer
/// at once and needs no timer. The first write that has to wait arms one, and it stays armed
/// while the stream is busy: when it fires, a stream whose writes made progress meanwhile gets
/// another bound, one that made none is cut. So a stream that fills its socket on every write
/// (a fast fan-out to a slower reader) sets one timer per busy spell, not one per write (a timer
/// per write cost the fan-out 5-10% more CPU per delivery), and a stream is cut between one and
/// two bounds after its last progress.
struct StallWatch {
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes went out since the timer was armed or last fired.
    progressed: bool,
}

impl StallWatch {
    /// Writes `out` whole, unless no byte of it goes out for a bound (see [`StallWatch`]). What
    /// the socket takes at once is written here; only the rest waits, in a future of its own
    /// (boxed: the stream's own state stays as small as its idle state).
    fn write<'a>(&'a mut self, socket: &'a TcpStream, out: &'a [u8], limit: Duration) -> Writing<'a> {
        let mut rest = out;
        while !rest.is_empty() {
            match socket.try_write(rest) {
                Ok(0) => return Writing::Done(Written::Failed),
                Ok(n) => {
                    rest = &rest[n..];
                    self.progressed = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Writing::Waiting(Box::pin(self.write_slowly(socket, rest, limit)));
                }
                Err(_) => return Writing::Done(Written::Failed),
            }
        }
        Writing::Done(Written::All)
    }

    /// The rest of a write, as the socket makes room (or not, for a bound).
    async fn write_slowly(&mut self, socket: &TcpStream, mut rest: &[u8], limit: Duration) -> Written {
        let Self { timer, progressed } = self;
        let timer = timer.get_or_insert_with(|| {
            *progressed = false;
            Box::pin(tokio::time::sleep(limit))
        });
        while !rest.is_empty() {
            // Room, or the timer: polled together without a future of their own.
            let room = std::future::poll_fn(|cx| match socket.poll_write_ready(cx) {
                Poll::Ready(ready) => Poll::Ready(Some(ready)),
                Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
            })
            .await;
            match room {
                Some(Ok(())) => match socket.try_write(rest) {
                    Ok(0) => return Written::Failed,
                    Ok(n) => {
                        rest = &rest[n..];
                        *progressed = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return Written::Failed,
                },
                Some(Err(_)) => return Written::Failed,
                None if std::mem::take(progressed) => timer.as_mut().reset(tokio::time::Instant::now() + limit),
                None => return Written::Stalled,
            }
        }
        Written::All
    }
}

/// A write under way: done at once, or waiting for room.
enum Writing<'a> {
    Done(Written),
    Waiting(Pin<Box<dyn Future<Output = Written> + Send + 'a>>),
}

impl Future for Writing<'_> {
    type Output = Written;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Written> {
        match &mut *self {
            Writing::Done(written) => Poll::Ready(std::mem::replace(written, Written::Failed)),
            Writing::Waiting(rest) => rest.as_mut().poll(cx),
        }
    }
}

/// What a stream's connection does next.
enum Next {
    /// Write the frames collected.
    Frames,
    /// The body ended: write the last chunk.
    End,
    /// The client closed its side.
    ClientGone,
    /// The client sent more than [`MAX_AFTER_REQUEST`] after its request.
    ClientTalks,
}

/// The reading half of a stream's connection: the body's state, and what the client sent
/// after its request.
struct Reader {
    ended: bool,
    after_request: usize,
}

impl Reader {
    /// Collects the frames that are ready (at most [`MAX_BATCH`]); when there are none, waits
    /// for one, for the body's end, or for the client to close. One poll function for all three,
    /// so a stream's task registers its waker once per wait and allocates nothing for it.
    fn poll_next(
        &mut self,
        body: &mut Body,
        socket: &TcpStream,
        frames: &mut Vec<Bytes>,
        cx: &mut Context<'_>,
    ) -> Poll<Next> {
        use axum::body::HttpBody as _;
        while !self.ended && frames.len() < MAX_BATCH {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        frames.push(data);
                    }
                }
                Poll::Ready(Some(Err(_)) | None) => self.ended = true,
                Poll::Pending => break,
            }
        }
        if !frames.is_empty() {
            return Poll::Ready(Next::Frames);
        }
        if self.ended {
            return Poll::Ready(Next::End);
        }
        // Nothing to send: a stream's client has nothing more to say, so anything readable is
        // either its close or bytes to drop (a few; past the bound, the connection closes).
        loop {
            match socket.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(Next::ClientGone),
                Poll::Ready(Ok(())) => {
                    let mut sink = [0u8; 256];
                    match socket.try_read(&mut sink) {
                        Ok(0) => return Poll::Ready(Next::ClientGone),
                        Ok(n) => {
                            self.after_request += n;
                            if self.after_request > MAX_AFTER_REQUEST {
                                return Poll::Ready(Next::ClientTalks);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(_) => return Poll::Ready(Next::ClientGone),
                    }
                }
            }
        }
    }
}

/// Appends `frames` to `out` as one HTTP/1.1 chunk (nothing when they are empty), to be written
/// with one `send`. The frames are copied (a few hundred bytes, usually) rather than written
/// with `writev`: a copy that size costs less than the file layer `writev` goes through on
/// every call.
fn push_chunk(out: &mut Vec<u8>, frames: &[Bytes]) {
    let len: usize = frames.iter().map(Bytes::len).sum();
    if len == 0 {
        return;
    }
    out.reserve(len + 20);
    out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
    for f in frames {
        out.extend_from_slice(f);
    }
    out.extend_from_slice(b"\r\n");
}
