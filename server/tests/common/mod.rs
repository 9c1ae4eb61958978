//! Test harness: a real `redis-server` on a free loopback port, the real app on an ephemeral
//! port, and an SSE client built on `sse_notify_core::wire::SseParser`.
#![allow(dead_code)]

pub mod cluster;
pub mod failover;
pub mod process;
pub mod raw;
pub mod sentinel;
pub mod tls;

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sse_notify_axum::{SseApp, SseConfig};
use sse_notify_core::wire::{ParsedEvent, SseParser};
use tokio::sync::oneshot;

/// A `redis-server` child process; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    dir: std::path::PathBuf,
}

/// A port free now, below the kernel's ephemeral range: no outgoing connection is ever given it
/// as its source port, so a client reconnecting to it while its server restarts cannot end up
/// connected to itself, and no client socket takes it between this check and the bind.
pub fn free_port() -> u16 {
    free_ports_apart(0)
}

/// A port free now such that `port + apart` is free too, both below the ephemeral range (a
/// Cluster node listens on its port and on its port + 10,000 for the cluster bus).
pub fn free_ports_apart(apart: u16) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ephemeral_start: u16 = range.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(32768);
    let (low, high) = (20_000u16, ephemeral_start.saturating_sub(apart).max(21_000));
    let free = |port: u16| StdListener::bind(("127.0.0.1", port)).is_ok();
    for attempt in 0..500u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(attempt);
        let port = low + (h.finish() % u64::from(high - low)) as u16;
        if free(port) && (apart == 0 || free(port + apart)) {
            return port;
        }
    }
    panic!("no free port in {low}-{high} (and {apart} above it)");
}

impl RedisServer {
    /// Starts redis-server on a free port; panics (failing the test) if it cannot.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`RedisServer::start`] with more `redis-server` arguments (`--user ...`, ...).
    pub fn start_with(extra: &[String]) -> Self {
        // A port found free may be taken before redis-server binds it: then it exits at start,
        // and another port is tried.
        // A Cluster node also listens on its port + 10,000 (the cluster bus).
        let apart = if extra.iter().any(|a| a == "--cluster-enabled") { 10_000 } else { 0 };
        for _ in 0..5 {
            let port = free_ports_apart(apart);
            let mut args = vec!["--port".to_owned(), port.to_string()];
            args.extend_from_slice(extra);
            if let Some(server) = Self::spawn(port, &args, format!("redis://127.0.0.1:{port}"), |_| redis_ping(port)) {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// The same server again on `port` (after [`RedisServer::stop`]), e.g. to test reconnects.
    pub fn start_on(port: u16) -> Self {
        let args = ["--port".to_owned(), port.to_string()];
        Self::spawn(port, &args, format!("redis://127.0.0.1:{port}"), |_| redis_ping(port))
            .unwrap_or_else(|| panic!("redis-server did not start on port {port}"))
    }

    /// redis-server with TLS only (no plain port), its certificate from `files`.
    pub fn start_tls(files: &tls::TlsFiles, extra: &[String]) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let path = |p: &std::path::Path| p.display().to_string();
            let mut args: Vec<String> = ["--port", "0", "--tls-port", &port.to_string()].map(str::to_owned).to_vec();
            for (flag, file) in [
                ("--tls-cert-file", &files.server_cert),
                ("--tls-key-file", &files.server_key),
                ("--tls-ca-cert-file", &files.ca),
            ] {
                args.extend([flag.to_owned(), path(file)]);
            }
            args.extend_from_slice(extra);
            let url = format!("rediss://127.0.0.1:{port}");
            // Listening means ready: redis-server opens its ports once it has loaded.
            if let Some(server) = Self::spawn(port, &args, url, |_| TcpStream::connect(("127.0.0.1", port)).is_ok()) {
                return server;
            }
        }
        panic!("redis-server with TLS did not start on any of 5 free ports");
    }

    /// Runs redis-server with `args` until `ready` and listening on `port` itself; `None` if it
    /// exited at start (its port taken).
    fn spawn(port: u16, args: &[String], url: String, ready: impl Fn(u32) -> bool) -> Option<Self> {
        // A folder of its own: a replica writes the snapshot it receives there, and a server
        // loads any snapshot it finds there at start (a shared folder once leaked one test's
        // data into the next test's servers).
        let dir = std::env::temp_dir().join(format!("sse-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .stdout(if std::env::var("REDIS_LOG").is_ok() {
                Stdio::inherit()
            } else {
                // Its log, in its folder: shown if it exits at start.
                Stdio::from(std::fs::File::create(dir.join("redis.log")).unwrap())
            })
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed (scripts/setup.sh installs it)");
        let pid = child.id();
        let mut server = Self { child: Some(child), port, url, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The port answering is not enough: another test's server may hold it while this
            // one is still failing to bind it (a cluster was once made of another test's node).
            if ready(pid) && listens(pid, port) {
                return Some(server);
            }
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(server.dir.join("redis.log")).unwrap_or_default();
                let last: Vec<&str> = log.lines().rev().take(3).collect();
                eprintln!("redis-server on port {port} exited at start: {status}; its log ends: {last:?}");
                server.child = None;
                return None;
            }
            assert!(Instant::now() < deadline, "redis-server on port {port} was not ready within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it was started and not stopped.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A synchronous command connection for assertions.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url.as_str()).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether process `pid` holds the socket listening on loopback `port` (from `/proc`).
fn listens(pid: u32, port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    // local address, state 0A (listening), inode
                    (fields.get(1)?.ends_with(&wanted) && *fields.get(3)? == "0A")
                        .then(|| fields.get(9).map(|i| i.to_string()))?
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok()).any(|link| {
        let link = link.to_string_lossy();
        inodes.iter().any(|inode| link == format!("socket:[{inode}]"))
    })
}

fn redis_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    // A server that asks for a password answers `-NOAUTH ...`: it is up all the same.
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && (&buf == b"+PONG\r\n" || &buf == b"-NOAUTH")
}

/// The config tests start from: no Redis, 30 s heartbeat.
pub fn config(redis: Option<&RedisServer>) -> SseConfig {
    SseConfig { redis_url: redis.map(|r| r.url.clone()), ..SseConfig::default() }
}

/// The value of metric `name` (with its labels as the page writes them) in a `/metrics` page.
pub fn metric_value(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Signs in as seeded CRM user `id` through the server function; returns the `Cookie` header
/// value.
pub async fn crm_sign_in(app: &TestServer, id: u64) -> String {
    crm_sign_in_at(&app.base, id).await
}

/// [`crm_sign_in`] on the server at `base`.
pub async fn crm_sign_in_at(base: &str, id: u64) -> String {
    use leptos::server_fn::ServerFn;
    let resp = http()
        .post(format!("{base}{}", client::app::crm::api::SignIn::PATH))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("user={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
}

/// The key the test servers sign CRM sessions with.
pub fn test_session_key() -> client::app::session::SessionKey {
    client::app::session::SessionKey::from_secret(&[42; 32]).unwrap()
}

/// A running app on 127.0.0.1:<ephemeral>; shut down gracefully when dropped.
pub struct TestServer {
    pub base: String,
    pub addr: SocketAddr,
    pub sse: SseApp,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// The demo app (pages, server functions, REST, /events, health).
    pub async fn demo(config: SseConfig) -> Self {
        Self::demo_with(config, server::app::DemoConfig::new(test_session_key())).await
    }

    /// A second instance of the demo beside `self` on the same Redis (`None` on the embedded
    /// broker, which is one instance).
    pub async fn another(&self, config: SseConfig) -> Option<TestServer> {
        match self.sse.broker().backend_name() {
            "memory" => None,
            _ => Some(TestServer::demo(config).await),
        }
    }

    /// The demo app with the direct stream path switched off: every request is hyper's (what
    /// the differential test holds the direct path to).
    pub async fn demo_hyper_only(config: SseConfig) -> Self {
        let sse = SseApp::new(config).await.expect("app starts").with_stream_paths(Vec::<String>::new());
        Self::demo_on(sse, server::app::DemoConfig::new(test_session_key())).await
    }

    /// The demo app with its own settings (session lifetime, re-check interval).
    pub async fn demo_with(config: SseConfig, demo: server::app::DemoConfig) -> Self {
        Self::demo_on(SseApp::new(config).await.expect("app starts"), demo).await
    }

    async fn demo_on(sse: SseApp, demo: server::app::DemoConfig) -> Self {
        let options =
            leptos::config::LeptosOptions::builder().output_name("taskboard").site_root("target/site").build();
        let router = server::app::router(&sse, options, demo);
        Self::serve(sse, router).await
    }

    /// Any router served with `sse`'s lifecycle.
    pub async fn serve(sse: SseApp, router: axum::Router) -> Self {
        let listener = sse_notify_axum::setup::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let app = sse.clone();
        let task = tokio::spawn(async move {
            app.serve_on(listener, router, async move {
                let _ = rx.await;
            })
            .await
        });
        Self { base: format!("http://{addr}"), addr, sse, shutdown: Some(tx), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The `/metrics` page as it is now.
    pub async fn metrics(&self) -> String {
        http().get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// Graceful shutdown; returns how long it took.
    pub async fn shutdown(&mut self) -> Duration {
        let started = Instant::now();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server shut down within 10 s")
                .unwrap()
                .unwrap();
        }
        started.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// A client for streams: connecting is bounded, the body is not (`http()`'s overall timeout
/// would end a stream by itself after 10 s, and a test waiting for the server to end it would
/// take that for the server's doing).
pub fn streaming() -> reqwest::Client {
    reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().unwrap()
}

/// An SSE connection read with the project's own incremental parser.
pub struct SseClient {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: SseParser,
    pending: VecDeque<ParsedEvent>,
    /// The last event id as of the last event the test took (events of one chunk are parsed
    /// together, and the server may send several in one chunk).
    consumed: String,
    /// Every byte received, for byte-level assertions.
    pub raw: Vec<u8>,
    /// Whether the body ended or broke (a read returned nothing more).
    pub closed: bool,
}

impl SseClient {
    /// Opens `url` and waits for the response head; asserts nothing about the status.
    pub async fn open(url: &str) -> Self {
        Self::open_with(streaming().get(url)).await
    }

    pub async fn open_with(req: reqwest::RequestBuilder) -> Self {
        let resp = tokio::time::timeout(Duration::from_secs(10), req.send())
            .await
            .expect("stream head within 10 s")
            .expect("request sent");
        Self {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.bytes_stream().boxed(),
            parser: SseParser::new(),
            pending: VecDeque::new(),
            consumed: String::new(),
            raw: Vec::new(),
            closed: false,
        }
    }

    /// Opens a stream and asserts it is a 200 event stream.
    pub async fn subscribe(base: &str, topics: &str) -> Self {
        let c = Self::open(&format!("{base}/events?topic={topics}")).await;
        assert_eq!(c.status, 200, "stream for {topics}");
        c
    }

    /// Reads one raw chunk (None at end of stream or timeout).
    pub async fn next_chunk(&mut self, wait: Duration) -> Option<bytes::Bytes> {
        match tokio::time::timeout(wait, self.body.next()).await {
            Ok(Some(Ok(chunk))) => {
                self.raw.extend_from_slice(&chunk);
                let events = self.parser.feed(&chunk);
                self.pending.extend(events);
                Some(chunk)
            }
            Ok(None) | Ok(Some(Err(_))) => {
                self.closed = true;
                None
            }
            Err(_) => None,
        }
    }

    /// The next frame that is not a presence frame (streams that ask for presence get those;
    /// `tests/presence.rs` reads them with [`SseClient::next_any`]), or None if none arrives
    /// within `wait` / the stream ends.
    pub async fn next_event(&mut self, wait: Duration) -> Option<ParsedEvent> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let e = self.next_any(left).await?;
            if !e.event.starts_with("presence:") {
                return Some(e);
            }
        }
    }

    /// The next frame of any name, or None if none arrives within `wait` / the stream ends.
    pub async fn next_any(&mut self, wait: Duration) -> Option<ParsedEvent> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(e) = self.pending.pop_front() {
                self.consumed = e.last_event_id.clone();
                return Some(e);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.next_chunk(left).await?;
        }
    }

    /// The next event that is not a heartbeat or a presence frame; panics if none arrives
    /// within 5 s.
    pub async fn expect_event(&mut self) -> ParsedEvent {
        loop {
            let e = self.next_event(Duration::from_secs(5)).await.expect("an event within 5 s");
            if e.event != "heartbeat" {
                return e;
            }
        }
    }

    /// The id this stream would resume from (what EventSource sends as `Last-Event-ID`) if it
    /// stopped after the last event the test took.
    pub fn cursor(&self) -> String {
        match self.pending.front() {
            None => self.parser.last_event_id().to_owned(),
            // A frame without an id (presence) left the id as it was before it.
            Some(next) if next.id.is_none() => next.last_event_id.clone(),
            Some(_) => self.consumed.clone(),
        }
    }

    /// Reads until the `id:`-only opening frame (or any frame with an id) has been parsed.
    pub async fn started(mut self) -> Self {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.parser.last_event_id().is_empty() {
            let left = deadline.checked_duration_since(Instant::now()).expect("a starting cursor within 5 s");
            self.next_chunk(left).await.expect("stream open");
        }
        self
    }

    /// True when the server has ended the stream within `wait`, cleanly (the body's last chunk
    /// came); false when it is still open then. A stream that broke instead (reset, cut, a
    /// client timeout) fails the test: that is not the server ending it.
    pub async fn ended_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            match tokio::time::timeout(left, self.body.next()).await {
                Ok(None) => return true,
                Ok(Some(Err(e))) => panic!("the stream broke instead of ending: {e:?}"),
                Ok(Some(Ok(chunk))) => self.raw.extend_from_slice(&chunk),
                Err(_) => return false,
            }
        }
    }
}

/// The matched-topic mask of a frame id (panics when it is not a cursor).
pub fn matched(id: Option<&str>) -> u64 {
    id.expect("frame id").parse::<sse_notify_core::cursor::Cursor>().expect("a cursor").matched
}

/// Whether `text` (e.g. the metrics page) has exactly this line: `sse_connections 2` must not
/// be satisfied by `sse_connections 20`.
pub fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// Makes sure this process may open `needed` files (sockets), raising the soft limit up to the
/// hard one; fails with a clear message instead of a confusing connect error later.
pub fn ensure_open_files(needed: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0, "getrlimit");
        if lim.rlim_cur < needed && lim.rlim_max >= needed {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0, "setrlimit");
        }
    }
    assert!(
        lim.rlim_cur >= needed,
        "this test needs {needed} open files but the hard limit is {} (raise `ulimit -n`)",
        lim.rlim_max
    );
}

/// Asserts `resp` is an error with our JSON body and returns its `error` code.
pub async fn error_code(resp: reqwest::Response, status: u16) -> String {
    assert_eq!(resp.status().as_u16(), status, "status");
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let body: serde_json::Value = resp.json().await.expect("JSON error body");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "message in {body}");
    body["error"].as_str().expect("error code").to_owned()
}

/// Polls `check` every 20 ms until it holds or `within` passes (bounded; no fixed sleeps).
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// This process's resident memory (VmRSS), in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `GET url` and its status code.
pub async fn status_of(url: &str) -> u16 {
    http().get(url).send().await.expect("request sent").status().as_u16()
}

/// Defines a test module with one test per named backend, each running the same body on its
/// config: `embedded` (the in-process broker), `redis` (a real redis-server started for it),
/// `redis_sentinel` (a primary, a replica and three sentinels) or `redis_cluster` (six nodes).
#[macro_export]
macro_rules! on_backends {
    ([$($backend:ident),+] async fn $name:ident($cfg:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($cfg: sse_notify_axum::SseConfig) $body

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $backend() {
                    $crate::on_backend!($backend, run)
                }
            )+
        }
    };
}

/// Runs `run` on the config of one backend, with its servers alive meanwhile.
#[macro_export]
macro_rules! on_backend {
    (embedded, $run:ident) => {
        $run(config(None)).await
    };
    (redis, $run:ident) => {{
        let redis = RedisServer::start();
        $run(config(Some(&redis))).await
    }};
    (redis_sentinel, $run:ident) => {{
        let set = tokio::task::spawn_blocking(|| common::sentinel::SentinelSet::start(1)).await.unwrap();
        $run(set.config(0)).await
    }};
    (redis_cluster, $run:ident) => {{
        let set = tokio::task::spawn_blocking(common::cluster::ClusterSet::start).await.unwrap();
        $run(set.config()).await
    }};
}

/// The same body on the in-process broker and on a real redis-server.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:tt)*) => {
        $crate::on_backends!([embedded, redis] $($test)*);
    };
}

/// The same body on every backend shape: the contract's core tests.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:tt)*) => {
        $crate::on_backends!([embedded, redis, redis_sentinel, redis_cluster] $($test)*);
    };
}
