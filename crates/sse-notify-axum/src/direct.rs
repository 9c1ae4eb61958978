//! Serving a connection's first request without hyper, for the long-lived streams.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer (plus its connection state) for
//! the whole life of every connection. For a stream that lives for hours and writes a few small
//! frames a minute, that is most of what it costs: about 16 of its ~23 KiB. So
//! [`crate::SseApp::serve_on`] reads each new connection's request head itself; a `GET` for one
//! of the stream paths is answered here (through the same axum router, so every layer and
//! `authorize` apply) and the response is written straight to the socket: the head, then the
//! body's frames as HTTP/1.1 chunks, and the connection closes when the body ends. Everything
//! else goes to hyper with the bytes already read put back in front ([`Rewind`]).
//!
//! Written by hand because no crate offers "answer one request, then hand the socket over":
//! hyper's own connection keeps its buffers until the connection ends. `httparse` (what hyper
//! uses) parses the head; `httpdate` formats the `date` header.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Version};
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
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
pub(crate) enum FirstRequest {
    /// A stream request, answered here.
    Stream(Box<Request<Body>>),
    /// Anything else: hyper serves the connection, starting with these bytes.
    Other(Bytes),
}

/// Reads the connection's first request head (at most [`MAX_HEAD`] bytes, within `timeout`);
/// `None` when the client sent nothing usable in time (the connection is dropped).
pub(crate) async fn read_first(
    stream: &mut TcpStream,
    stream_paths: &[String],
    timeout: Duration,
) -> Option<FirstRequest> {
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

/// The request, if `head` is exactly one complete `GET` head for a stream path (HTTP/1.1, no
/// body, nothing after it); anything unusual is left to hyper.
fn stream_request(head: &[u8], stream_paths: &[String]) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = parsed.parse(head).ok()? else { return None };
    if len != head.len() || parsed.method? != "GET" || parsed.version? != 1 {
        return None;
    }
    let target = parsed.path?;
    let path = target.split('?').next().unwrap_or(target);
    if !stream_paths.iter().any(|p| p == path) {
        return None;
    }
    let mut req = Request::builder().method("GET").uri(target).version(Version::HTTP_11);
    for h in parsed.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        // A body, or a protocol switch, is hyper's business.
        if matches!(name.as_str(), "content-length" | "transfer-encoding" | "upgrade" | "expect") {
            return None;
        }
        req = req.header(h.name, HeaderValue::from_bytes(h.value).ok()?);
    }
    req.body(Body::empty()).ok()
}

/// Answers `req` through `app`; the connection ends with the response. Any answer but a stream
/// is written here, whole. A stream is returned as the future that writes it ([`write_stream`]),
/// for the caller to run as a task of its own: the task that read and routed the request is
/// sized for that work (a read buffer, the router's futures: about 2 KiB), and a stream that
/// lives for hours should hold only what writing it needs.
pub(crate) async fn respond(
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

/// A connection with bytes already read from it put back in front, for hyper.
pub(crate) struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl Rewind {
    pub(crate) fn new(prefix: Bytes, inner: TcpStream) -> Self {
        Self { prefix, inner }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let taken = self.prefix.split_to(n);
            buf.put_slice(&taken);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
