//! Serving a connection: its long-lived streams without hyper, everything else with hyper.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer (plus its connection state) for
//! the whole life of every connection. For a stream that lives for hours and writes a few small
//! frames a minute, that is most of what it costs: about 16 of its ~23 KiB. So
//! [`Connections::serve`] reads each new connection's request head itself ([`request_head::route`]); a
//! `GET` for one of the stream paths is answered here (through the same axum router, so every
//! layer and `authorize` apply) and the response is written straight to the socket
//! ([`writer`]): a stream as HTTP/1.1 chunks, the connection closing when it ends; a short
//! answer (a refusal) whole, after which hyper serves the connection's next requests as it would
//! have. Everything else goes to hyper with the bytes already read put back in front.
//!
//! A browser often sends its stream request on a connection that already served the page's
//! files (HTTP/1.1 keep-alive), so hyper holds it. Then the stream is taken back
//! ([`takeover`]): hyper's service hands the stream response over instead of returning it, the
//! connection's task drops hyper's connection (and its buffers) and writes the stream here.
//! Only when it is safe: hyper has flushed everything it wrote (the previous response is on the
//! wire), and the request is a plain HTTP/1.1 `GET` without a body.
//!
//! Every connection's first head has one deadline (`HTTP_HEADER_TIMEOUT_SECONDS` from the
//! accept), whoever reads it, and each client address may have only so many connections
//! waiting for one ([`pending`]).
//!
//! Written by hand because no crate offers "answer one request, then hand the socket over":
//! hyper's own connection keeps its buffers until the connection ends. `httparse` (what hyper
//! uses) parses the head; `httpdate` formats the `date` header. The differential test
//! (`server/tests/differential.rs`) holds this path to hyper's answers over the same raw bytes.

mod pending;
mod request_head;
mod takeover;
mod tasks;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request};
use axum::Router;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as HyperBuilder;
use hyper_util::server::graceful::Watcher;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower::ServiceExt;

use pending::PendingHead;
pub(crate) use pending::PendingHeads;
use request_head::Head;
use sse_notify_broker::Broker;
use takeover::{FirstHead, Takeover};
pub(crate) use tasks::OpenTasks;
pub(crate) use writer::StallLimit;

/// What serving a connection needs; cloned for each connection (every part shares what it
/// holds).
#[derive(Clone)]
pub(crate) struct Connections {
    pub(crate) app: Router,
    pub(crate) stream_paths: Arc<[String]>,
    /// How long a connection may take to send its first request head.
    pub(crate) head_timeout: Duration,
    /// How long a stream's write may make no progress before the stream is cut.
    pub(crate) stall: Arc<writer::StallLimit>,
    pub(crate) hyper: HyperBuilder<TokioExecutor>,
    /// Connections waiting for their first head, per client address.
    pub(crate) pending: Arc<PendingHeads>,
    /// Every connection's task and every stream's, for shutdown.
    pub(crate) tasks: Arc<OpenTasks>,
    /// For the refusals' metrics.
    pub(crate) broker: Broker,
    /// Turns true when shutdown starts: a connection still waiting for its first request is
    /// closed then, not held open (and the shutdown with it) until its head timeout.
    pub(crate) shutting_down: tokio::sync::watch::Receiver<bool>,
}

/// How long a connection may be silent before it counts among those waiting for a head.
const COUNT_AFTER: Duration = Duration::from_millis(250);

/// How a connection's first request head turned out.
enum FirstRequest {
    /// A stream request, answered here.
    Stream(Box<Request<Body>>),
    /// Anything else: hyper serves the connection, starting with these bytes; `pending` holds
    /// the connection's place among those waiting for a head when it is not complete yet.
    Other(Bytes, Option<PendingHead>),
    /// Its client already has as many connections waiting for a head as it may.
    Refused,
    /// Nothing usable arrived in time, or the client left.
    Nothing,
}

impl Connections {
    /// Serves one accepted connection: its first request head must arrive within the head
    /// timeout; a stream request is answered without hyper; anything else is hyper's, and a
    /// stream asked for later on the connection is taken back from hyper.
    pub(crate) async fn serve(self, mut socket: TcpStream, peer: SocketAddr, watcher: Watcher) {
        let deadline = Instant::now() + self.head_timeout;
        let mut shutting_down = self.shutting_down.clone();
        let first = tokio::select! {
            first = self.read_first(&mut socket, peer, deadline) => first,
            // A browser's spare connection, opened ahead and never used, once held a shutdown
            // for the whole head timeout.
            _ = shutting_down.wait_for(|&closing| closing) => FirstRequest::Nothing,
        };
        match first {
            FirstRequest::Nothing => {}
            FirstRequest::Refused => self.refuse_waiting(socket),
            FirstRequest::Stream(req) => self.answer(socket, *req, peer, watcher).await,
            FirstRequest::Other(prefix, pending) => {
                let first = FirstHead { deadline, pending };
                self.serve_with_hyper(socket, prefix, peer, watcher, Some(first)).await
            }
        }
    }

    /// Reads until [`request_head::route`] knows what the first request is, within `deadline`. A
    /// connection is counted among those waiting for a head only once it has sent nothing for
    /// [`COUNT_AFTER`] (a client that sends its request with the connect is never counted).
    async fn read_first(&self, socket: &mut TcpStream, peer: SocketAddr, deadline: Instant) -> FirstRequest {
        let mut buf = Vec::with_capacity(1024);
        let mut pending = None;
        loop {
            match request_head::route(&buf, &self.stream_paths) {
                Head::Stream(req) => return FirstRequest::Stream(req),
                Head::Other => return FirstRequest::Other(Bytes::from(buf), pending),
                Head::Partial => {}
            }
            let mut chunk = [0u8; 1024];
            let read = match socket.try_read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // A client sends its request right after connecting, but under a connect
                    // burst it may lag the accept: only a connection still silent after a
                    // moment is counted as waiting (measured: counted at once, 13 of a 19,000
                    // connect burst from two addresses were refused).
                    let counting = pending.is_none();
                    let until = if counting { deadline.min(Instant::now() + COUNT_AFTER) } else { deadline };
                    match tokio::time::timeout_at(until, socket.read(&mut chunk)).await {
                        Ok(read) => read,
                        Err(_) if counting && until < deadline => match self.pending.admit(peer.ip()) {
                            Some(place) => {
                                pending = Some(place);
                                continue;
                            }
                            None => return FirstRequest::Refused,
                        },
                        Err(_) => return FirstRequest::Nothing,
                    }
                }
                read => read,
            };
            match read {
                // The client closed mid-head: hyper answers what it sent, as it would have.
                Ok(0) if !buf.is_empty() => return FirstRequest::Other(Bytes::from(buf), pending),
                Ok(0) | Err(_) => return FirstRequest::Nothing,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A 429 for a connection over its client's bound of waiting connections, sent without
    /// waiting on the client (it has sent nothing, so nothing is left unread), then closed.
    fn refuse_waiting(&self, socket: TcpStream) {
        let refusal = crate::error::ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_pending_connections",
            "too many connections from this address have not sent a request yet",
        );
        crate::metrics::of(&self.broker).rejected(refusal.code);
        let body = refusal.body().to_string();
        let answer = format!(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = socket.try_write(answer.as_bytes());
    }

    /// Answers a stream request on `socket` without hyper: a stream is written by a task of its
    /// own; a short answer (a refusal) is written whole and hyper serves what comes next.
    async fn answer(self, mut socket: TcpStream, mut req: Request<Body>, peer: SocketAddr, watcher: Watcher) {
        req.extensions_mut().insert(ConnectInfo(peer));
        let close = wants_close(&req);
        let Ok(resp) = self.app.clone().oneshot(req).await;
        if writer::is_stream(&resp) {
            self.write_stream(socket, resp);
        } else if writer::write_whole(&mut socket, resp, close).await {
            self.serve_with_hyper(socket, Bytes::new(), peer, watcher, None).await;
        }
    }

    /// Writes a stream as a task of its own: the task that read and routed the request is sized
    /// for that work (a read buffer, the router's futures: about 2 KiB), and a stream that lives
    /// for hours should hold only what writing it needs.
    fn write_stream(&self, socket: TcpStream, resp: axum::http::Response<Body>) {
        let (head, body) = writer::stream_parts(resp);
        self.tasks.spawn(writer::write_stream(socket, head, body, self.stall.clone()));
    }

    async fn serve_with_hyper(
        self,
        socket: TcpStream,
        prefix: Bytes,
        peer: SocketAddr,
        watcher: Watcher,
        first: Option<FirstHead>,
    ) {
        let socket = Arc::new(socket);
        let (takeover, io, taken) =
            Takeover::new(self.stream_paths.clone(), prefix, socket.clone(), first, self.stall.clone());
        let app = self.app.clone();
        let service = tower::service_fn(move |req: Request<hyper::body::Incoming>| {
            // Here rather than in the future: hyper calls this as soon as it has read a head.
            takeover.head_arrived();
            let (app, takeover) = (app.clone(), takeover.clone());
            async move {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                if !takeover.wants(&req) {
                    return app.oneshot(req).await;
                }
                let Ok(resp) = app.oneshot(req).await;
                if !writer::is_stream(&resp) {
                    return Ok(resp);
                }
                match takeover.take(resp) {
                    Some(resp) => Ok(resp),
                    // Taken: the connection's task drops hyper's connection, and this future
                    // with it.
                    None => std::future::pending().await,
                }
            }
        });
        let conn = self.hyper.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
        let resp = tokio::select! {
            done = watcher.watch(conn.into_owned()) => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            Ok(resp) = taken => resp,
        };
        // hyper's connection is dropped: the socket is this task's alone again.
        match Arc::try_unwrap(socket) {
            Ok(socket) => self.write_stream(socket, resp),
            Err(_) => tracing::error!("a stream was taken from hyper but its socket is still shared"),
        }
    }
}

/// Whether the client asked to close the connection after this request.
fn wants_close<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn connection_close_is_found_among_other_tokens() {
        let req = |v: &str| axum::http::Request::builder().header("connection", v).body(()).unwrap();
        assert!(super::wants_close(&req("Close")));
        assert!(super::wants_close(&req("keep-alive, close")));
        assert!(!super::wants_close(&req("keep-alive")));
    }
}
