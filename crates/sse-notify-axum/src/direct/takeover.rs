//! A connection served by hyper, which can be taken back for a stream.
//!
//! [`HyperIo`] is the connection as hyper sees it: the bytes already read put back in front,
//! then the socket, which the connection's task shares so that it can take it back. Until the
//! connection's first request head is complete it also holds that head's deadline, so a head
//! split between the direct reader and hyper (an HTTP/2 preface, a head over 8 KiB) gets one
//! deadline in all, not one each.
//!
//! [`Takeover`] is shared by hyper's service (which offers each stream response) and the
//! connection's task (which receives the one taken): the task then drops hyper's connection,
//! and its buffers, and writes the stream itself.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::pending::PendingHead;
use super::request_head::is_plain_stream_get;
use super::writer::StallLimit;

/// A connection's first request head, not yet complete when hyper took the connection.
pub(crate) struct FirstHead {
    /// When it must be complete (from the connection's accept on).
    pub(crate) deadline: Instant,
    /// Its place among the connections waiting for a head, given back once it is complete.
    pub(crate) pending: Option<PendingHead>,
}

/// What hyper's side and the connection's task both know of the connection.
struct Shared {
    /// Whether everything hyper wrote has been flushed: hyper flushes only once its own buffer
    /// is empty, so after a flush and before the next write nothing of a response waits in it.
    flushed: AtomicBool,
    /// Whether hyper has read a complete request head (the first one's deadline is then over).
    head_seen: AtomicBool,
    pending: Mutex<Option<PendingHead>>,
}

/// The connection as hyper sees it (see the module's documentation).
pub(crate) struct HyperIo {
    prefix: Bytes,
    socket: Arc<TcpStream>,
    shared: Arc<Shared>,
    deadline: Option<Pin<Box<Sleep>>>,
    /// How long a write may wait for room (`SSE_WRITE_TIMEOUT_SECONDS`), and the timer of the
    /// write waiting now. The streams hyper keeps (HTTP/1.0, a request with a body or an
    /// `Expect`, HTTP/2) are cut like the direct writer's when their client stops reading;
    /// before, such a stream held its queue, its slot and megabytes of kernel buffer for good.
    stall: Arc<StallLimit>,
    write_wait: Option<Pin<Box<Sleep>>>,
}

/// Taking a stream away from hyper (see the module's documentation).
///
/// Bytes a client pipelined after the stream request, which hyper may have read already, go
/// with hyper's connection: they could never have been answered anyway, since a stream's
/// response ends only with its connection.
pub(crate) struct Takeover {
    stream_paths: Arc<[String]>,
    shared: Arc<Shared>,
    taken: Mutex<Option<oneshot::Sender<Response<Body>>>>,
}

impl Takeover {
    /// A takeover for one connection: the takeover, the connection for hyper (`prefix` read
    /// already, then `socket`, within `first`'s deadline when its first head is not complete
    /// yet), and where the stream taken arrives.
    pub(crate) fn new(
        stream_paths: Arc<[String]>,
        prefix: Bytes,
        socket: Arc<TcpStream>,
        first: Option<FirstHead>,
        stall: Arc<StallLimit>,
    ) -> (Arc<Self>, HyperIo, oneshot::Receiver<Response<Body>>) {
        let (deadline, pending) = match first {
            Some(f) => (Some(Box::pin(tokio::time::sleep_until(f.deadline))), f.pending),
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            flushed: AtomicBool::new(true),
            head_seen: AtomicBool::new(deadline.is_none()),
            pending: Mutex::new(pending),
        });
        let (tx, rx) = oneshot::channel();
        let io = HyperIo { prefix, socket, shared: shared.clone(), deadline, stall, write_wait: None };
        (Arc::new(Self { stream_paths, shared, taken: Mutex::new(Some(tx)) }), io, rx)
    }

    /// Called by hyper's service for each request head it has read: the first one ends the
    /// head's deadline and gives back its place among the connections waiting for a head.
    pub(crate) fn head_arrived(&self) {
        if !self.shared.head_seen.swap(true, Ordering::AcqRel) {
            self.shared.pending.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }

    /// Whether `req`'s answer may be taken: a plain HTTP/1.1 `GET` for a stream path, on a
    /// connection none was taken from yet.
    pub(crate) fn wants<B>(&self, req: &Request<B>) -> bool {
        is_plain_stream_get(req, &self.stream_paths) && self.taken.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Takes the stream `resp` when nothing hyper wrote is still waiting to be sent (`None`);
    /// otherwise gives it back for hyper to write.
    pub(crate) fn take(&self, resp: Response<Body>) -> Option<Response<Body>> {
        if !self.shared.flushed.load(Ordering::Acquire) {
            return Some(resp);
        }
        match self.taken.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(tx) => tx.send(resp).err(),
            None => Some(resp),
        }
    }
}

impl AsyncRead for HyperIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = &mut this.deadline {
            if this.shared.head_seen.load(Ordering::Acquire) {
                this.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request head was not complete within HTTP_HEADER_TIMEOUT_SECONDS",
                )));
            }
        }
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
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        this.shared.flushed.store(false, Ordering::Release);
        loop {
            if this.socket.poll_write_ready(cx)?.is_pending() {
                let after = this.stall.after;
                let wait = this.write_wait.get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                tracing::info!(?after, "a connection's client stopped reading; cut");
                this.stall.cuts.inc();
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no write made progress within SSE_WRITE_TIMEOUT_SECONDS",
                )));
            }
            match this.socket.try_write_vectored(bufs) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                written => {
                    // Progress: the next wait has a bound of its own.
                    this.write_wait = None;
                    return Poll::Ready(written);
                }
            }
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // A TCP socket keeps no buffer of its own to flush: what it took is on its way.
        self.shared.flushed.store(true, Ordering::Release);
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Through socket2 because tokio shuts a socket down only through `&mut`, and this one
        // is shared.
        Poll::Ready(socket2::SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Write))
    }
}
