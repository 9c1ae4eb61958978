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
/// How long a connection whose answer is complete may take to close its side, and how many
/// bytes it may send meanwhile, before it is closed anyway ([`Linger`]). Short: a graceful
/// shutdown waits for connections that linger.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

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
    if !keep_alive && socket.shutdown().await.is_ok() {
        let mut linger = Linger::new();
        std::future::poll_fn(|cx| linger.poll(socket, cx)).await;
    }
    keep_alive
}

/// A gentle close: after the answer and our side's shutdown, what the client still sends is
/// read and dropped until it closes its side (for at most [`LINGER`] and [`LINGER_BYTES`]).
/// A socket closed with bytes unread, or that bytes reach after it was closed, makes the kernel
/// send a reset instead of a close, and the reset throws away what the client has not read yet
/// of the answer (measured: a poll's answer of 3,000 events, cut at half when the client had
/// sent a stray CRLF after its request). A browser closes its side as soon as it has read an
/// answer that says `connection: close`.
struct Linger {
    deadline: Pin<Box<tokio::time::Sleep>>,
    read: usize,
}

impl Linger {
    fn new() -> Self {
        Self { deadline: Box::pin(tokio::time::sleep(LINGER)), read: 0 }
    }

    /// Ready when the client has closed its side (or failed), sent too much, or the time is up.
    fn poll(&mut self, socket: &TcpStream, cx: &mut Context<'_>) -> Poll<()> {
        match poll_discard(socket, cx, &mut self.read, LINGER_BYTES) {
            Poll::Pending => self.deadline.as_mut().poll(cx),
            done => done,
        }
    }
}

/// Reads and drops what the client sends, counting it in `read`: ready when the client has
/// closed its side (or the connection failed), or once `read` is past `bound`; pending, with
/// the task registered for more, while it sends nothing. One loop for a stream's idle reading
/// and for a closing connection's.
fn poll_discard(socket: &TcpStream, cx: &mut Context<'_>, read: &mut usize, bound: usize) -> Poll<()> {
    loop {
        match socket.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(())) => {
                let mut sink = [0u8; 1024];
                match socket.try_read(&mut sink) {
                    Ok(0) => return Poll::Ready(()),
                    Ok(n) => {
                        *read += n;
                        if *read > bound {
                            return Poll::Ready(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return Poll::Ready(()),
                }
            }
        }
    }
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
pub(crate) fn write_stream(socket: TcpStream, head: Vec<u8>, body: Body, stall: Arc<StallLimit>) -> StreamWriter {
    StreamWriter {
        socket,
        body,
        stall,
        head: Some(head.into_boxed_slice()),
        unsent: None,
        timer: None,
        progressed: false,
        ended: false,
        closing: None,
        after_request: 0,
    }
}

/// A stream's connection for as long as it lives (see [`write_stream`]): the future its task
/// runs. Written as a state machine by hand rather than as an `async fn`: such a future holds
/// every local of every step at once (the write's buffer, the frames, the futures awaited), and
/// a stream's task is most of what an idle stream costs. This one holds what an idle stream
/// needs (the socket, the body, the stall bound) and allocates the rest while a write waits:
/// tokio's task cell for it is 256 B, against 512 B for the `async fn` it replaces (heaptrack,
/// 5,000 streams).
pub(crate) struct StreamWriter {
    socket: TcpStream,
    body: Body,
    stall: Arc<StallLimit>,
    /// The response head, until it goes out with the first frames (a stream's opening lines
    /// are ready at once: one `send` per new stream, not two).
    head: Option<Box<[u8]>>,
    /// What a write that had to wait has still to send (boxed: an idle stream has none).
    unsent: Option<Box<Unsent>>,
    /// Armed by the first write that has to wait, kept while the stream stays busy: when it
    /// fires, a stream whose writes made progress meanwhile gets another bound, one that made
    /// none is cut. So a stream that fills its socket on every write (a fast fan-out to a slower
    /// reader) sets one timer per busy spell, not one per write (a timer per write cost the
    /// fan-out 5-10% more CPU per delivery), and a stream is cut between one and two bounds
    /// after its last progress.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes went out since the timer was armed or last fired.
    progressed: bool,
    /// The body ended: the last chunk is the write under way.
    ended: bool,
    /// The answer is complete and our side shut down: waiting for the client to close its own
    /// (boxed: only an ending stream has it).
    closing: Option<Box<Linger>>,
    /// Bytes the client sent after its request.
    after_request: u32,
}

/// A write, and what it has still to send: its pieces in order, from `offset` of the first.
struct Unsent {
    pieces: Pieces,
    offset: usize,
    /// Frames in the write: a write of one or two means the stream keeps up again.
    frames: usize,
}

/// The bytes of a write: one buffer (the usual write: frames copied into one chunk), or
/// several pieces when a large frame is sent from its own bytes ([`COPY_AT_MOST`]).
enum Pieces {
    One(Vec<u8>),
    Many(std::collections::VecDeque<Bytes>),
}

impl Pieces {
    /// The first piece not yet sent whole (the caller skips what was sent of it; empty when
    /// all is sent).
    fn first(&self) -> &[u8] {
        match self {
            Pieces::One(out) => out,
            Pieces::Many(pieces) => pieces.front().map_or(&[], |p| p),
        }
    }

    /// Drops the first piece, sent whole.
    fn pop(&mut self) {
        match self {
            Pieces::One(out) => *out = Vec::new(),
            Pieces::Many(pieces) => drop(pieces.pop_front()),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Pieces::One(out) => out.is_empty(),
            Pieces::Many(pieces) => pieces.is_empty(),
        }
    }
}

/// How a write ended.
enum Written {
    All,
    /// The connection failed or the client closed it.
    Failed,
    /// The socket took nothing for a whole bound.
    Stalled,
}

/// What a stream's connection does next, when it has nothing left to send.
enum Next {
    /// Send these bytes, which carry this many frames.
    Send(Pieces, usize),
    /// The client closed its side.
    ClientGone,
    /// The client sent more than [`MAX_AFTER_REQUEST`] after its request.
    ClientTalks,
}

impl Future for StreamWriter {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let Some(closing) = &mut this.closing {
            return closing.poll(&this.socket, cx);
        }
        loop {
            let frames = match this.unsent.take() {
                Some(mut unsent) => {
                    let written = this.send_unsent(&mut unsent, cx);
                    match written {
                        Poll::Pending => {
                            this.unsent = Some(unsent);
                            return Poll::Pending;
                        }
                        Poll::Ready(Written::All) => unsent.frames,
                        Poll::Ready(cut) => return this.cut(cut),
                    }
                }
                None => {
                    let (pieces, frames) = match this.next(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Next::Send(pieces, frames)) => (pieces, frames),
                        Poll::Ready(Next::ClientGone) => return Poll::Ready(()),
                        Poll::Ready(Next::ClientTalks) => {
                            let bytes = this.after_request;
                            tracing::info!(bytes, "a stream's client kept sending after its request; closed");
                            return Poll::Ready(());
                        }
                    };
                    // What the socket takes at once is sent here; only a rest waits, boxed.
                    let mut write = Unsent { pieces, offset: 0, frames };
                    if !send_now(&this.socket, &mut write, &mut this.progressed) {
                        return Poll::Ready(());
                    }
                    if !write.pieces.is_empty() {
                        this.unsent = Some(Box::new(write));
                        continue;
                    }
                    frames
                }
            };
            if this.ended {
                if let Poll::Ready(Err(_)) = tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut this.socket), cx) {
                    return Poll::Ready(());
                }
                // What the stream held (its subscription, queue and slots) is given back now,
                // not when the client closes.
                this.body = Body::empty();
                let closing = this.closing.insert(Box::new(Linger::new()));
                return closing.poll(&this.socket, cx);
            }
            if frames <= 2 {
                // The stream keeps up again: the stall timer is given back (only then, so that
                // busy streams do not set a timer for every write that waits).
                this.timer = None;
            }
        }
    }
}

/// Sends what `socket` takes of `unsent` now; `false` when the connection failed.
fn send_now(socket: &TcpStream, unsent: &mut Unsent, progressed: &mut bool) -> bool {
    while !unsent.pieces.is_empty() {
        let piece = unsent.pieces.first();
        match socket.try_write(&piece[unsent.offset..]) {
            Ok(0) => return false,
            Ok(n) => {
                *progressed = true;
                unsent.offset += n;
                if unsent.offset == piece.len() {
                    unsent.pieces.pop();
                    unsent.offset = 0;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    true
}

impl StreamWriter {
    /// The next write: the frames that are ready (at most [`MAX_BATCH`]) as one chunk, after
    /// the head if it has not gone yet; the last chunk once the body ended. When there is
    /// nothing to send, waits for a frame, the body's end or the client's close, with one
    /// waker registration for all three (nothing is allocated for the wait).
    fn next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        use axum::body::HttpBody as _;
        let mut frames = Vec::new();
        while !self.ended && frames.len() < MAX_BATCH {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        frames.push(data);
                    }
                }
                Poll::Ready(Some(Err(_)) | None) => {
                    self.ended = true;
                    let mut last = self.head.take().map(Vec::from).unwrap_or_default();
                    push_chunk(&mut last, &frames);
                    last.extend_from_slice(b"0\r\n\r\n");
                    return Poll::Ready(Next::Send(Pieces::One(last), frames.len()));
                }
                Poll::Pending => break,
            }
        }
        if !frames.is_empty() || self.head.is_some() {
            let head = self.head.take().map(Vec::from).unwrap_or_default();
            return Poll::Ready(Next::Send(chunk_pieces(head, &frames), frames.len()));
        }
        // Nothing to send: a stream's client has nothing more to say, so anything readable is
        // either its close or bytes to drop (a few; past the bound, the connection closes).
        let mut read = self.after_request as usize;
        let polled = poll_discard(&self.socket, cx, &mut read, MAX_AFTER_REQUEST);
        self.after_request = read.min(u32::MAX as usize) as u32;
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) if read > MAX_AFTER_REQUEST => Poll::Ready(Next::ClientTalks),
            Poll::Ready(()) => Poll::Ready(Next::ClientGone),
        }
    }

    /// Sends `unsent`, unless no byte of it goes out for a bound (see [`StreamWriter::timer`]).
    fn send_unsent(&mut self, unsent: &mut Unsent, cx: &mut Context<'_>) -> Poll<Written> {
        let Self { socket, timer, progressed, stall, .. } = self;
        loop {
            if !send_now(socket, unsent, progressed) {
                return Poll::Ready(Written::Failed);
            }
            if unsent.pieces.is_empty() {
                return Poll::Ready(Written::All);
            }
            // Room, or the timer: polled together without a future of their own.
            let timer = timer.get_or_insert_with(|| {
                *progressed = false;
                Box::pin(tokio::time::sleep(stall.after))
            });
            match socket.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Written::Failed),
                Poll::Pending => match timer.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) if std::mem::take(progressed) => {
                        timer.as_mut().reset(tokio::time::Instant::now() + stall.after)
                    }
                    Poll::Ready(()) => return Poll::Ready(Written::Stalled),
                },
            }
        }
    }

    /// Ends a stream whose write failed or stalled.
    fn cut(&self, how: Written) -> Poll<()> {
        if let Written::Stalled = how {
            tracing::info!(after = ?self.stall.after, "a stream's client stopped reading; cut");
            self.stall.cuts.inc();
        }
        Poll::Ready(())
    }
}

/// Frames larger than this are sent from their own bytes rather than copied into the buffer
/// of a write: a large room's `presence:state` (10,000 members are ~600 KB) is one `Bytes`
/// shared by every stream, and a copy per stream would hold it once per stream for as long as
/// that stream's socket takes to accept it.
const COPY_AT_MOST: usize = 16 * 1024;

/// `frames` (after `head`, if any) as HTTP/1.1 chunks, in the pieces to send in order: the
/// small frames copied into one buffer (one `send`), each large one a chunk of its own, sent
/// from its own bytes.
fn chunk_pieces(head: Vec<u8>, frames: &[Bytes]) -> Pieces {
    let mut out = head;
    if frames.iter().all(|f| f.len() <= COPY_AT_MOST) {
        push_chunk(&mut out, frames);
        return Pieces::One(out);
    }
    let mut pieces = std::collections::VecDeque::new();
    let mut small = 0;
    for (i, frame) in frames.iter().enumerate().filter(|(_, f)| f.len() > COPY_AT_MOST) {
        push_chunk(&mut out, &frames[small..i]);
        out.extend_from_slice(format!("{:x}\r\n", frame.len()).as_bytes());
        pieces.push_back(Bytes::from(std::mem::take(&mut out)));
        pieces.push_back(frame.clone());
        out.extend_from_slice(b"\r\n");
        small = i + 1;
    }
    push_chunk(&mut out, &frames[small..]);
    if !out.is_empty() {
        pieces.push_back(Bytes::from(out));
    }
    Pieces::Many(pieces)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle stream is mostly its task: tokio's cell is the future plus ~120 B, in steps of
    /// 128 B (its alignment on x86_64). Past 136 B the cell grows from 256 to 384 B for every
    /// stream.
    #[test]
    fn a_streams_future_stays_small() {
        let size = std::mem::size_of::<StreamWriter>();
        println!("StreamWriter: {size} B");
        assert!(size <= 120, "StreamWriter is {size} B: every idle stream pays for it");
    }

    #[test]
    fn large_frames_are_chunks_of_their_own_and_the_bytes_are_those_of_one_chunk_per_frame_run() {
        let small = Bytes::from_static(b"data: a\n\n");
        let large = Bytes::from(vec![b'x'; COPY_AT_MOST + 1]);
        let Pieces::Many(pieces) =
            chunk_pieces(b"HEAD\r\n\r\n".to_vec(), &[small.clone(), large.clone(), small.clone()])
        else {
            panic!("a large frame is a piece of its own")
        };
        assert_eq!(pieces.len(), 3);
        assert!(std::ptr::eq(pieces[1].as_ptr(), large.as_ptr()), "the large frame is sent from its own bytes");
        let wire: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let mut expected = b"HEAD\r\n\r\n9\r\ndata: a\n\n\r\n".to_vec();
        expected.extend_from_slice(format!("{:x}\r\n", large.len()).as_bytes());
        expected.extend_from_slice(&large);
        expected.extend_from_slice(b"\r\n9\r\ndata: a\n\n\r\n");
        assert_eq!(wire, expected);
        assert!(chunk_pieces(Vec::new(), &[]).is_empty(), "nothing to send is no piece");
        let Pieces::One(out) = chunk_pieces(Vec::new(), &[small.clone(), small]) else {
            panic!("small frames are one piece")
        };
        assert_eq!(out, b"12\r\ndata: a\n\ndata: a\n\n\r\n");
    }
}
