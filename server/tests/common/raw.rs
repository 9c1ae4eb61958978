//! A raw HTTP/1.1 client for tests where the bytes matter: it sends exactly what it is given and
//! reports what came back (each response's status and framing, and how the connection ended),
//! without the normalising a real client does.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// How a response's body was delimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `content-length` (the length).
    Length(usize),
    /// Chunked, read to its last chunk.
    Chunked,
    /// An event stream (chunked): its head and first bytes arrived; it does not end.
    Stream,
    /// No length: read until the server closed.
    UntilClose,
    /// No body (1xx, 204, 304).
    None,
}

/// One response as it came over the wire.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What reading a response gave.
#[derive(Clone, Debug)]
pub enum Read {
    Response(Response),
    /// The server closed (or reset) the connection before a whole response.
    Closed,
    /// Nothing (more) within the wait.
    Silent,
    /// Bytes that are not an HTTP/1 response (e.g. an HTTP/2 frame): their first bytes.
    NotHttp1(Vec<u8>),
}

/// A connection with a read buffer.
pub struct Raw {
    pub socket: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::from_socket(TcpStream::connect(addr).await.expect("connect"))
    }

    /// Connects from `source` (another loopback address is another client).
    pub async fn connect_from(source: &str, addr: SocketAddr) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        Self::from_socket(socket.connect(addr).await.expect("connect"))
    }

    fn from_socket(socket: TcpStream) -> Self {
        Self { socket, buf: Vec::new(), eof: false }
    }

    /// Sends `bytes`; false when the server no longer takes them (closed, reset, or not reading
    /// within 5 s).
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        matches!(tokio::time::timeout(Duration::from_secs(5), self.socket.write_all(bytes)).await, Ok(Ok(())))
    }

    /// Reads more into the buffer until `deadline`; false on timeout or end.
    async fn fill(&mut self, deadline: Instant) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.socket.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                false
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => false,
        }
    }

    /// Reads one response within `wait`.
    pub async fn read(&mut self, wait: Duration) -> Read {
        let deadline = Instant::now() + wait;
        let (status, headers, head_len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut slots);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let headers = resp
                        .headers
                        .iter()
                        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect::<Vec<_>>();
                    break (resp.code.unwrap_or(0), headers, len);
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Read::NotHttp1(self.buf.iter().take(32).copied().collect()),
            }
            if !self.fill(deadline).await {
                return if self.eof { Read::Closed } else { Read::Silent };
            }
        };
        self.buf.drain(..head_len);
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_ascii_lowercase());
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let stream = header("content-type").is_some_and(|v| v.starts_with("text/event-stream"));
        let length = header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
        let (framing, body) = if (100..200).contains(&status) || status == 204 || status == 304 {
            (Framing::None, Vec::new())
        } else if chunked && stream {
            // The first chunk's bytes (the stream's hello), then it is left open.
            while !self.buf.windows(2).any(|w| w == b"\r\n") || self.buf.len() < 8 {
                if !self.fill(deadline).await {
                    break;
                }
            }
            (Framing::Stream, std::mem::take(&mut self.buf))
        } else if chunked {
            match self.read_chunked(deadline).await {
                Some(body) => (Framing::Chunked, body),
                None => return if self.eof { Read::Closed } else { Read::Silent },
            }
        } else if let Some(n) = length {
            while self.buf.len() < n {
                if !self.fill(deadline).await {
                    return if self.eof { Read::Closed } else { Read::Silent };
                }
            }
            (Framing::Length(n), self.buf.drain(..n).collect())
        } else {
            while self.fill(deadline).await {}
            (Framing::UntilClose, std::mem::take(&mut self.buf))
        };
        Read::Response(Response { status, headers, framing, body })
    }

    async fn read_chunked(&mut self, deadline: Instant) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !self.fill(deadline).await {
                    return None;
                }
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            while self.buf.len() < line_end + 2 + size + 2 {
                if !self.fill(deadline).await {
                    return None;
                }
            }
            body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            self.buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Some(body);
            }
        }
    }

    /// What arrives within `wait` (and what was buffered), taken from the buffer.
    pub async fn more(&mut self, wait: Duration) -> Vec<u8> {
        let deadline = Instant::now() + wait;
        while self.fill(deadline).await {}
        std::mem::take(&mut self.buf)
    }

    /// Whether the server has closed the connection (as far as read so far).
    pub fn is_closed(&self) -> bool {
        self.eof
    }

    /// Whether the server closes the connection within `wait` (bytes that arrive meanwhile are
    /// kept).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while !self.eof {
            if !self.fill(deadline).await && !self.eof {
                return false;
            }
        }
        true
    }

    /// Whether the connection still serves a request: `GET /health` answered 200 within 2 s.
    pub async fn usable(&mut self) -> bool {
        if !self.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await {
            return false;
        }
        matches!(self.read(Duration::from_secs(2)).await, Read::Response(r) if r.status == 200)
    }
}
