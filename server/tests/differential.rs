//! The hand-written stream path held to hyper: the same raw requests go once to a server with
//! the direct path and once to one with it switched off (every request hyper's), and what comes
//! back must agree: each response's status and framing, and how the connection ends (closed,
//! still serving requests, or streaming). The only differences allowed are the ones the
//! guide lists (docs/guide/src/operations.md, "The direct stream path and hyper"), each named in the corpus with its reason.

mod common;

use std::time::Duration;

use common::raw::{Framing, Raw, Read};
use common::*;
use sse_notify_axum::SseConfig;

/// What a connection did with one request (or several pipelined).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    /// Each response's status and framing, in order.
    responses: Vec<(u16, Framing)>,
    /// How the connection was left.
    end: End,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// The server closed it.
    Closed,
    /// It answered `GET /health` afterwards.
    Usable,
    /// Open, but it did not answer `GET /health` (e.g. a body it still waits for).
    Stuck,
    /// A stream is open on it.
    Streaming,
    /// Bytes that are not HTTP/1 (an HTTP/2 server's frames).
    NotHttp1,
}

/// One raw request of the corpus: a name, the bytes, and what may differ (`None`: nothing).
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// After the bytes, the client sends this much junk (a stream's client that keeps talking).
    then_junk: usize,
    /// After the bytes, the client closes its sending side.
    then_shutdown: bool,
    /// A difference the guide lists, with its reason.
    differs: Option<&'static str>,
}

fn case(name: &'static str, bytes: impl AsRef<[u8]>) -> Case {
    Case { name, bytes: bytes.as_ref().to_vec(), then_junk: 0, then_shutdown: false, differs: None }
}

fn corpus() -> Vec<Case> {
    let stream = "GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\n\r\n";
    let health = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut big_stream = "GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_owned();
    big_stream.push_str(&"a".repeat(9000));
    big_stream.push_str("\r\n\r\n");
    let mut huge = "GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_owned();
    huge.push_str(&"a".repeat(600_000));
    huge.push_str("\r\n\r\n");
    vec![
        // The usual shapes.
        case("stream", stream),
        case("stream, two topics and a cursor", "GET /events?topic=tasks,task:1&last_event_id=0000000000-0-0-0 HTTP/1.1\r\nHost: x\r\n\r\n"),
        case("stream, keep-alive asked", "GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"),
        case("stream, Connection: close", "GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        case("stream, no Host", "GET /events?topic=tasks HTTP/1.1\r\n\r\n"),
        case("stream, HTTP/1.0", "GET /events?topic=tasks HTTP/1.0\r\n\r\n"),
        case("stream, HEAD", "HEAD /events?topic=tasks HTTP/1.1\r\nHost: x\r\n\r\n"),
        case("stream, absolute-form", "GET http://x/events?topic=tasks HTTP/1.1\r\nHost: x\r\n\r\n"),
        case("stream, Expect", "GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"),
        case("stream, Upgrade", "GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
        case("stream, bare LF", "GET /events?topic=tasks HTTP/1.1\nHost: x\n\n"),
        case("stream, head over 8 KiB", big_stream),
        case("stream, head over hyper's limit", huge),
        case("stream, Last-Event-ID with raw bytes", b"GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nLast-Event-ID: \xff\xfe1-1-0-1\r\n\r\n".to_vec()),
        case("stream, crafted cursor", "GET /events?topic=tasks&last_event_id=abc%C3%A91234567-1-0-1 HTTP/1.1\r\nHost: x\r\n\r\n"),
        case("stream, body with Content-Length", "GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
        case("stream, chunked body", "GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        case("stream, CL and TE", "GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        case("stream, two lengths", "GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 2\r\n\r\n"),
        case("stream, obs-fold", "GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
        case("stream, space in a header name", "GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nBad Name: x\r\n\r\n"),
        case("stream, control byte in a value", b"GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n".to_vec()),
        case("stream, header without colon", "GET /events?topic=tasks HTTP/1.1\r\nHost x\r\n\r\n"),
        case("stream, double space", "GET  /events?topic=tasks HTTP/1.1\r\nHost: x\r\n\r\n"),
        case("stream, lowercase method", "get /events?topic=tasks HTTP/1.1\r\nHost: x\r\n\r\n"),
        case("stream, leading blank line", "\r\nGET /events?topic=tasks HTTP/1.1\r\nHost: x\r\n\r\n"),
        // Refusals on the stream path, and what the connection does next.
        case("no topic", "GET /events HTTP/1.1\r\nHost: x\r\n\r\n"),
        case("bad topic", "GET /events?topic=a%20b HTTP/1.1\r\nHost: x\r\n\r\n"),
        case("65 topics", format!("GET /events?topic={} HTTP/1.1\r\nHost: x\r\n\r\n", (0..65).map(|i| format!("t{i}")).collect::<Vec<_>>().join(","))),
        case("forbidden topic", "GET /events?topic=comment_thread:1 HTTP/1.1\r\nHost: x\r\n\r\n"),
        case("forbidden, Connection: close", "GET /events?topic=comment_thread:1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        case("forbidden, then pipelined /health", format!("GET /events?topic=comment_thread:1 HTTP/1.1\r\nHost: x\r\n\r\n{health}")),
        case("other paths", "GET /events/?topic=tasks HTTP/1.1\r\nHost: x\r\n\r\n"),
        case("a prefix of the path", "GET /eventsx?topic=tasks HTTP/1.1\r\nHost: x\r\n\r\n"),
        case("POST to the stream", "POST /events?topic=tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
        case("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
        // Pipelining.
        case("health, health", format!("{health}{health}")),
        case("health, stream", format!("{health}{stream}")),
        case("stream, health", format!("{stream}{health}")),
        case("health bare LF", "GET /health HTTP/1.1\nHost: x\n\n"),
        case("health LF then CRLF", "GET /health HTTP/1.1\nHost: x\n\r\n"),
        // Bad bytes and other protocols.
        case("TLS hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x9a\x8f\xa7\x1c".to_vec()),
        case("NUL bytes", b"\x00\x01\x02\r\n\r\n".to_vec()),
        case("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        Case { then_shutdown: true, ..case("half a head, then EOF", "GET /events?topic=tasks HTTP/1.1\r\nHost") },
        case("a head that never ends", "GET /events?topic=tasks HTTP/1.1\r\nHost: x\r\n"),
        case("18 bytes of the HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\n"),
        Case {
            then_junk: 1 << 20,
            differs: Some("a stream's client that keeps sending after its request is closed after 4 KiB; hyper reads on"),
            ..case("stream, then 1 MiB more", stream)
        },
    ]
}

/// Sends `case` on a fresh connection to `addr` and watches what happens.
async fn observe(addr: std::net::SocketAddr, case: &Case) -> Outcome {
    let mut raw = Raw::connect(addr).await;
    raw.send(&case.bytes).await;
    if case.then_shutdown {
        use tokio::io::AsyncWriteExt;
        let _ = raw.socket.shutdown().await;
    }
    let mut responses = Vec::new();
    let end = loop {
        // The servers' head deadline is 2 s: a first head that never completes is closed by
        // then. After a response, a short wait (an idle kept-alive connection closes at 2 s).
        let wait = if responses.is_empty() { 3000 } else { 700 };
        match raw.read(Duration::from_millis(wait)).await {
            Read::Response(r) => {
                let streaming = r.framing == Framing::Stream;
                responses.push((r.status, r.framing.clone()));
                if streaming {
                    if case.then_junk > 0 {
                        let junk = vec![b'x'; 16 * 1024];
                        let mut sent = 0;
                        while sent < case.then_junk && raw.send(&junk).await {
                            sent += junk.len();
                        }
                    }
                    let wait = if case.then_junk > 0 { 3 } else { 1 };
                    break if raw.closed_within(Duration::from_secs(wait)).await {
                        End::Closed
                    } else {
                        End::Streaming
                    };
                }
                if r.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close")) {
                    break if raw.closed_within(Duration::from_secs(2)).await { End::Closed } else { End::Stuck };
                }
            }
            Read::Closed => break End::Closed,
            Read::NotHttp1(_) => break End::NotHttp1,
            Read::Silent if case.then_shutdown => break End::Stuck,
            Read::Silent => break if raw.usable().await { End::Usable } else { End::Stuck },
        }
    };
    Outcome { responses, end }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_path_answers_every_request_as_hyper_does() {
    let config = SseConfig { header_timeout: Duration::from_secs(2), ..config(None) };
    let direct = TestServer::demo(config.clone()).await;
    let hyper_only = TestServer::demo_hyper_only(config).await;
    let cases = corpus();
    // Every case on both servers at once: the waits overlap.
    let (direct_addr, hyper_addr) = (direct.addr, hyper_only.addr);
    let runs = cases.iter().map(|case| async move {
        let (a, b) = tokio::join!(observe(direct_addr, case), observe(hyper_addr, case));
        (case, a, b)
    });
    let results = futures::future::join_all(runs).await;
    let mut report = String::new();
    let mut failures = 0;
    for (case, with_direct, with_hyper) in &results {
        let agree = with_direct == with_hyper;
        let line = format!(
            "{:<40} direct {:?} / hyper {:?}\n",
            case.name,
            (&with_direct.responses, &with_direct.end),
            (&with_hyper.responses, &with_hyper.end)
        );
        report.push_str(&line);
        match (agree, case.differs) {
            (true, None) => {}
            (false, Some(reason)) => report.push_str(&format!("    (listed difference: {reason})\n")),
            (false, None) => failures += 1,
            (true, Some(_)) => {
                report.push_str("    (a listed difference that no longer differs: take it off the guide's list)\n");
                failures += 1;
            }
        }
    }
    println!("{report}");
    assert_eq!(failures, 0, "the direct path and hyper disagree:\n{report}");
    // The corpus reaches the direct path: streams were answered on both, and refusals too.
    let streams = results.iter().filter(|(_, a, _)| a.end == End::Streaming).count();
    assert!(streams >= 10, "{streams} streaming outcomes:\n{report}");
}
