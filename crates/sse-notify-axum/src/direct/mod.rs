//! Serving a connection: its long-lived streams without hyper, everything else with hyper.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer (plus its connection state) for
//! the whole life of every connection. For a stream that lives for hours and writes a few small
//! frames a minute, that is most of what it costs: about 16 of its ~23 KiB. So
//! [`Connections::serve`] reads each new connection's request head itself; a `GET` for one
//! of the stream paths is answered here (through the same axum router, so every layer and
//! `authorize` apply) and the response is written straight to the socket: the head, then the
//! body's frames as HTTP/1.1 chunks, and the connection closes when the body ends. Everything
//! else goes to hyper with the bytes already read put back in front ([`HyperIo`]).
//!
//! A browser often sends its stream request on a connection that already served the page's
//! files (HTTP/1.1 keep-alive), so hyper holds it. Then the connection is taken back
//! ([`Takeover`]): hyper's service hands the request over instead of answering it, the
//! connection's task drops hyper's connection (and its buffers) and answers the request here,
//! as if it had been the first. Only when it is safe: hyper has flushed everything it wrote
//! (the previous response is on the wire), and the request is a plain HTTP/1.1 `GET` without a
//! body.
//!
//! Written by hand because no crate offers "answer one request, then hand the socket over":
//! hyper's own connection keeps its buffers until the connection ends. `httparse` (what hyper
//! uses) parses the head; `httpdate` formats the `date` header.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, Version};
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as HyperBuilder;
use hyper_util::server::graceful::Watcher;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The largest request head read here (hyper's default limit is larger; a stream request is a
/// few hundred bytes, and anything bigger goes to hyper whole).
const MAX_HEAD: usize = 8 * 1024;
/// Headers parsed at most (a browser's stream request has about 15).
const MAX_HEADERS: usize = 64;
/// Frames written in one chunk when several are ready.
const MAX_BATCH: usize = 64;
/// The largest error body collected for a non-streaming answer.
const MAX_PLAIN_BODY: usize = 1024 * 1024;

/// What the first request of a connection turned out to be.
enum FirstRequest {
    /// A stream request, answered here.
    Stream(Box<Request<Body>>),
    /// Anything else: hyper serves the connection, starting with these bytes.
    Other(Bytes),
}

/// Reads the connection's first request head (at most [`MAX_HEAD`] bytes, within `timeout`);
/// `None` when the client sent nothing usable in time (the connection is dropped).
async fn read_first(stream: &mut TcpStream, stream_paths: &[String], timeout: Duration) -> Option<FirstRequest> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        loop {
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= MAX_HEAD {
                return true;
            }
            let mut chunk = [0u8; 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return !buf.is_empty(),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    if !tokio::time::timeout(timeout, read).await.unwrap_or(false) {
        return None;
    }
    match stream_request(&buf, stream_paths) {
        Some(req) => Some(FirstRequest::Stream(Box::new(req))),
        None => Some(FirstRequest::Other(Bytes::from(buf))),
    }
}

/// The request, if `head` is exactly one complete request head (nothing after it) and a plain
/// stream request ([`is_plain_stream_get`]); anything else is left to hyper.
fn stream_request(head: &[u8], stream_paths: &[String]) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = parsed.parse(head).ok()? else { return None };
    // Most first requests are for pages and files: only a stream request is built.
    let target = parsed.path?;
    if len != head.len() || parsed.method? != "GET" || !stream_paths.iter().any(|p| target.starts_with(p.as_str())) {
        return None;
    }
    let version = if parsed.version? == 1 { Version::HTTP_11 } else { Version::HTTP_10 };
    let mut req = Request::builder().method("GET").uri(target).version(version);
    for h in parsed.headers.iter() {
        req = req.header(h.name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let req = req.body(Body::empty()).ok()?;
    is_plain_stream_get(&req, stream_paths).then_some(req)
}

/// Whether `req` is answered without hyper: a plain HTTP/1.1 `GET` for a stream path. A body,
/// or a protocol switch, is hyper's business.
fn is_plain_stream_get(req: &Request<Body>, stream_paths: &[String]) -> bool {
    let body_or_switch = ["content-length", "transfer-encoding", "upgrade", "expect"];
    req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && stream_paths.iter().any(|p| p == req.uri().path())
        && !body_or_switch.iter().any(|h| req.headers().contains_key(*h))
}

/// What serving a connection needs; cloned for each connection (every part shares what it
/// holds).
#[derive(Clone)]
pub(crate) struct Connections {
    pub(crate) app: Router,
    pub(crate) stream_paths: Arc<[String]>,
    /// How long a connection may take to send its first request head.
    pub(crate) head_timeout: Duration,
    pub(crate) hyper: HyperBuilder<TokioExecutor>,
    /// The streams answered without hyper, waited for at shutdown as hyper's connections are.
    pub(crate) streams: TaskTracker,
}

impl Connections {
    /// Serves one accepted connection. Its first request head must arrive in time (silent and
    /// slowloris clients are cut off here); a stream request is answered without hyper; anything
    /// else is hyper's, and a stream request that comes later on the connection is taken back
    /// from hyper ([`Takeover`]).
    pub(crate) async fn serve(self, mut socket: TcpStream, peer: SocketAddr, watcher: Watcher) {
        match read_first(&mut socket, &self.stream_paths, self.head_timeout).await {
            None => {}
            Some(FirstRequest::Stream(mut req)) => {
                req.extensions_mut().insert(ConnectInfo(peer));
                self.serve_stream(socket, *req).await;
            }
            Some(FirstRequest::Other(prefix)) => self.serve_with_hyper(socket, prefix, peer, watcher).await,
        }
    }

    async fn serve_with_hyper(self, socket: TcpStream, prefix: Bytes, peer: SocketAddr, watcher: Watcher) {
        let socket = Arc::new(socket);
        let (takeover, io, taken) = Takeover::new(self.stream_paths.clone(), prefix, socket.clone());
        let app = self.app.clone();
        let service = tower::service_fn(move |req: Request<hyper::body::Incoming>| {
            let (app, takeover) = (app.clone(), takeover.clone());
            async move {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                match takeover.offer(req) {
                    Some(req) => app.oneshot(req).await,
                    // Taken: the connection's task drops hyper's connection, and this future
                    // with it.
                    None => std::future::pending().await,
                }
            }
        });
        let conn = self.hyper.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
        let req = tokio::select! {
            done = watcher.watch(conn.into_owned()) => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            Ok(req) = taken => req,
        };
        // hyper's connection is dropped: the socket is this task's alone again.
        match Arc::try_unwrap(socket) {
            Ok(socket) => self.serve_stream(socket, req).await,
            Err(_) => tracing::error!("a stream request was taken from hyper but its socket is still shared"),
        }
    }

    /// Answers a stream request on `socket` without hyper ([`respond`]), tracked from the request
    /// on, so shutdown never misses a stream that is being opened; the stream itself then runs
    /// as a task of its own.
    async fn serve_stream(self, socket: TcpStream, req: Request<Body>) {
        let tracker = self.streams.clone();
        self.streams
            .track_future(async move {
                if let Some(write) = respond(socket, req, self.app).await {
                    tracker.spawn(write);
                }
            })
            .await;
    }
}

/// Answers `req` through `app`; the connection ends with the response. Any answer but a stream
/// is written here, whole. A stream is returned as the future that writes it ([`write_stream`]),
/// for the caller to run as a task of its own: the task that read and routed the request is
/// sized for that work (a read buffer, the router's futures: about 2 KiB), and a stream that
/// lives for hours should hold only what writing it needs.
async fn respond(
    mut stream: TcpStream,
    req: Request<Body>,
    app: Router,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    let Ok(resp) = app.oneshot(req).await;
    let (parts, body) = resp.into_parts();
    let streaming = !parts.headers.contains_key(axum::http::header::CONTENT_LENGTH) && parts.status.as_u16() == 200;
    let mut head = format!("HTTP/1.1 {} {}\r\n", parts.status.as_str(), parts.status.canonical_reason().unwrap_or(""))
        .into_bytes();
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(format!("date: {}\r\n", httpdate::fmt_http_date(std::time::SystemTime::now())).as_bytes());
    if !streaming {
        // An error answer (or any short one): whole, with its length, then the end.
        let bytes = match http_body_util::Limited::new(body, MAX_PLAIN_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        if !parts.headers.contains_key(axum::http::header::CONTENT_LENGTH) {
            head.extend_from_slice(format!("content-length: {}\r\n", bytes.len()).as_bytes());
        }
        head.extend_from_slice(b"connection: close\r\n\r\n");
        let _ = stream.write_all(&head).await;
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
        return None;
    }
    head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    Some(write_stream(stream, head, body))
}

/// Writes a streaming response: `head`, then the body's frames as HTTP/1.1 chunks, the frames
/// that are ready in one write, until the body ends or the client closes its side.
async fn write_stream(mut stream: TcpStream, head: Vec<u8>, mut body: Body) {
    // The head goes out with the first frames (a stream's hello is ready at once): one `send`
    // per new stream, not two. A body with nothing ready gets its head sent alone.
    let mut head = Some(head);
    let mut frames = Vec::new();
    let mut ended = false;
    loop {
        let next = std::future::poll_fn(|cx| match poll_next(&mut body, &mut ended, &stream, &mut frames, cx) {
            Poll::Pending if head.is_some() => Poll::Ready(Next::Frames),
            next => next,
        })
        .await;
        match next {
            Next::Frames => {
                let mut out = head.take().unwrap_or_default();
                push_chunk(&mut out, &frames);
                if stream.write_all(&out).await.is_err() {
                    return;
                }
                if frames.len() <= 2 && frames.capacity() > 16 {
                    // The stream keeps up again: the room a burst of frames took is given back
                    // (only then, so that busy streams do not reallocate for every write).
                    frames.shrink_to(16);
                }
                frames.clear();
            }
            Next::End => break,
            Next::ClientGone => return,
        }
    }
    let mut last = head.take().unwrap_or_default();
    last.extend_from_slice(b"0\r\n\r\n");
    let _ = stream.write_all(&last).await;
    let _ = stream.shutdown().await;
}

/// What a stream's connection does next.
enum Next {
    /// Write the frames collected.
    Frames,
    /// The body ended: write the last chunk.
    End,
    /// The client closed its side.
    ClientGone,
}

/// Collects the frames that are ready (at most [`MAX_BATCH`]); when there are none, waits for
/// one, for the body's end, or for the client to close. One poll function for all three, so a
/// stream's task registers its waker once per wait and allocates nothing for it.
fn poll_next(
    body: &mut Body,
    ended: &mut bool,
    stream: &TcpStream,
    frames: &mut Vec<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Next> {
    use axum::body::HttpBody as _;
    while !*ended && frames.len() < MAX_BATCH {
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    frames.push(data);
                }
            }
            Poll::Ready(Some(Err(_)) | None) => *ended = true,
            Poll::Pending => break,
        }
    }
    if !frames.is_empty() {
        return Poll::Ready(Next::Frames);
    }
    if *ended {
        return Poll::Ready(Next::End);
    }
    // Nothing to send: a stream's client has nothing more to say, so anything readable is
    // either its close or bytes to drop.
    loop {
        match stream.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Next::ClientGone),
            Poll::Ready(Ok(())) => {
                let mut sink = [0u8; 256];
                match stream.try_read(&mut sink) {
                    Ok(0) => return Poll::Ready(Next::ClientGone),
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return Poll::Ready(Next::ClientGone),
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

/// The connection as hyper sees it: the bytes already read put back in front, then the socket,
/// which the connection's task shares so that it can take it back ([`Takeover`]). It notes
/// whether everything hyper wrote has been flushed: hyper flushes only once its own buffer is
/// empty, so after a flush and before the next write nothing of a response waits in hyper.
struct HyperIo {
    prefix: Bytes,
    socket: Arc<TcpStream>,
    flushed: Arc<AtomicBool>,
}

impl AsyncRead for HyperIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let taken = self.prefix.split_to(n);
            buf.put_slice(&taken);
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(self.socket.poll_read_ready(cx))?;
            match self.socket.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The readiness was stale; `try_read` cleared it, so the next poll waits.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for HyperIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.flushed.store(false, Ordering::Release);
        loop {
            ready!(self.socket.poll_write_ready(cx))?;
            match self.socket.try_write_vectored(bufs) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // A TCP socket keeps no buffer of its own to flush: what it took is on its way.
        self.flushed.store(true, Ordering::Release);
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Through socket2 because tokio shuts a socket down only through `&mut`, and this one
        // is shared.
        Poll::Ready(socket2::SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Write))
    }
}

/// Taking a stream request away from hyper: shared by a hyper connection's service (which
/// offers each request) and the connection's task (which receives the one taken).
///
/// Bytes a client pipelined after the stream request, which hyper may have read already, go
/// with hyper's connection: they could never have been answered anyway, since a stream's
/// response ends only with its connection.
struct Takeover {
    stream_paths: Arc<[String]>,
    /// Shared with the connection's [`HyperIo`].
    flushed: Arc<AtomicBool>,
    taken: Mutex<Option<tokio::sync::oneshot::Sender<Request<Body>>>>,
}

impl Takeover {
    /// A takeover for one connection: the takeover, the connection for hyper (`prefix` read
    /// already, then `socket`), and where the request taken arrives.
    fn new(
        stream_paths: Arc<[String]>,
        prefix: Bytes,
        socket: Arc<TcpStream>,
    ) -> (Arc<Self>, HyperIo, tokio::sync::oneshot::Receiver<Request<Body>>) {
        let flushed = Arc::new(AtomicBool::new(true));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let io = HyperIo { prefix, socket, flushed: flushed.clone() };
        (Arc::new(Self { stream_paths, flushed, taken: Mutex::new(Some(tx)) }), io, rx)
    }

    /// Takes `req` when it is a plain HTTP/1.1 `GET` for a stream path and nothing hyper wrote
    /// is still waiting to be sent (`None`); otherwise gives it back for hyper to answer.
    fn offer(&self, req: Request<Body>) -> Option<Request<Body>> {
        let wanted = is_plain_stream_get(&req, &self.stream_paths) && self.flushed.load(Ordering::Acquire);
        let mut taken = self.taken.lock().unwrap();
        match taken.take() {
            Some(tx) if wanted => tx.send(req).err(),
            other => {
                *taken = other;
                Some(req)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Vec<String> {
        vec!["/events".into()]
    }

    #[test]
    fn only_plain_stream_gets_are_taken() {
        let ok =
            stream_request(b"GET /events?topic=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\r\n\r\n", &paths()).unwrap();
        assert_eq!(ok.uri(), "/events?topic=a");
        assert_eq!(ok.headers()["last-event-id"], "1");
        for other in [
            &b"GET /api/tasks HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            b"GET /events HTTP/1.0\r\n\r\n",
            b"GET /events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
            b"GET /events HTTP/1.1\r\nHost: x\r\n\r\nGET /events HTTP/1.1\r\n\r\n",
            b"GET /events HTTP/1.1\r\nHost: x\r\n",
            b"\x16\x03\x01 tls",
        ] {
            assert!(stream_request(other, &paths()).is_none(), "{:?}", String::from_utf8_lossy(other));
        }
    }
}
