//! One-call setup: configuration, broker lifecycle, the SSE and health routes, CORS, serving.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::Router;
use tower_http::cors::CorsLayer;

use crate::admission::Admission;
use crate::config::{ConfigError, SseConfig};
use crate::endpoint::SseEndpoint;
use crate::health;
use sse_notify_broker::{Broker, BrokerError};
use sse_notify_core::DEFAULT_EVENTS_PATH;

/// How many pending connections the kernel may queue for us. The default of 128 drops bursts
/// of connects (thousands of EventSources reconnecting after a deploy), each costing its client
/// a 1 s SYN retry.
pub const ACCEPT_BACKLOG: u32 = 8192;

/// How long shutdown waits for the outbox to drain ([`Broker::publish_or_defer`]) and the closed
/// streams' presence leaves to be made, after the grace period: a process exits at most `SHUTDOWN_GRACE_SECONDS` + 5 s after the signal.
const OUTBOX_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);
/// How long aborted connections get to be dropped once the grace period is over.
const ABORT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A configuration value is invalid (names the variable).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The broker could not start (Redis unreachable).
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A `CORS_ORIGINS` entry is not a valid header value.
    #[error("invalid CORS_ORIGINS entry {0:?}")]
    CorsOrigin(String),
    /// Redis is configured, but this build has no Redis support.
    #[error("REDIS_URL is set, but this build has no Redis support (sse-notify-axum's `redis` feature is off)")]
    NoRedisSupport,
}

/// The SSE integration, set up from configuration: the axum form of fastapi-sse-events' `SSEApp`.
///
/// Nothing is applied to the app behind its back: it picks the routes it wants ([`SseApp::routes`]
/// for all of them at their usual paths, or [`SseApp::endpoint`], [`SseApp::health_routes`] and
/// [`SseApp::metrics_routes`] one by one, under any path), adds [`SseApp::cors`] itself, and
/// serves with [`SseApp::serve`] (which only adds the shutdown that ends open streams).
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{http::Method, routing::get, Router};
/// use sse_notify_axum::SseApp;
///
/// let sse = SseApp::from_env().await?; // REDIS_URL unset: embedded broker
/// let mut app = Router::new()
///     .route("/health", get(|| async { "the app's own health check" }))
///     .route("/live", sse.endpoint().into_route()) // the stream, at a path of your choice
///     .nest("/sse", sse.health_routes().merge(sse.metrics_routes())); // /sse/health, /sse/metrics
/// if let Some(cors) = sse.cors() {
///     app = app.layer(cors.allow_methods([Method::GET, Method::POST]));
/// }
/// sse.serve(app, "127.0.0.1:3000".parse()?).await?; // graceful shutdown on Ctrl-C / SIGTERM
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SseApp {
    config: SseConfig,
    broker: Broker,
    admission: Admission,
    stream_paths: Arc<[String]>,
}

impl SseApp {
    /// Reads the environment (see [`SseConfig`]) and connects the broker.
    pub async fn from_env() -> Result<Self, SetupError> {
        Self::new(SseConfig::from_env()?).await
    }

    /// Connects the broker the configuration asks for; fails clearly when Redis is unreachable.
    pub async fn new(config: SseConfig) -> Result<Self, SetupError> {
        for origin in &config.cors_origins {
            HeaderValue::from_str(origin).map_err(|_| SetupError::CorsOrigin(origin.clone()))?;
        }
        let broker = connect_broker(&config).await?;
        tracing::info!(
            backend = broker.backend_name(),
            redis = config.redis_url.as_deref().map(sse_notify_broker::redact_url).unwrap_or_default(),
            redis_sentinels = ?config.redis.sentinels,
            redis_sentinel_master = config.redis.sentinel_master.as_deref().unwrap_or_default(),
            redis_cluster_nodes = ?config.redis.cluster_nodes,
            redis_min_replicas = config.redis.min_replicas,
            heartbeat_s = config.heartbeat.map(|d| d.as_secs()).unwrap_or(0),
            topic_prefix = config.broker.topic_prefix,
            cors_origins = ?config.cors_origins,
            max_connections = config.max_connections,
            max_streams_per_client = config.client_limits.max_streams,
            max_topics_per_client = config.client_limits.max_topics,
            client_ip_header = config.client_ip_header.as_ref().map(|h| h.as_str()).unwrap_or("(peer address)"),
            max_queue_size = config.broker.max_queue_size,
            max_message_size = config.broker.max_message_size,
            history_size = config.broker.history_size,
            history_s = config.broker.history_age.as_secs(),
            header_timeout_s = config.header_timeout.as_secs(),
            body_timeout_s = config.body_timeout.as_secs(),
            max_pending_per_client = config.max_pending_per_client,
            shutdown_grace_s = config.shutdown_grace.as_secs(),
            outbox_size = config.broker.outbox_size,
            "SSE configuration"
        );
        Ok(Self {
            config,
            broker,
            admission: Admission::default(),
            stream_paths: Arc::new([DEFAULT_EVENTS_PATH.to_owned()]),
        })
    }

    /// The paths of the SSE endpoints (default `/events`): [`SseApp::serve`] answers a new
    /// connection's `GET` for one of them without hyper's per-connection buffers, which would
    /// otherwise stay with the stream for its whole life (see `docs/benchmarks.md`). Set this
    /// when the endpoint is mounted elsewhere; any other path is served as usual.
    pub fn with_stream_paths(mut self, paths: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.stream_paths = paths.into_iter().map(Into::into).collect();
        self
    }

    /// The [`sse_notify_core::Publisher`] for Leptos server functions (provide it in context):
    /// an event names the tab whose request published it ([`crate::origin::TabPublisher`]).
    pub fn publisher(&self) -> sse_notify_core::Publisher {
        sse_notify_core::Publisher::new(crate::origin::TabPublisher(self.broker.clone()))
    }

    /// The broker: publish with it ([`Broker::publish_as`] names a writer tab).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The streams open through its endpoints, counted against `SSE_MAX_CONNECTIONS` and the
    /// per-client limits.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The metrics page (`GET /metrics`), with its gauges read now.
    pub fn render_metrics(&self) -> String {
        crate::health::render_metrics(&self.broker, &self.admission)
    }

    /// The configuration it was set up with.
    pub fn config(&self) -> &SseConfig {
        &self.config
    }

    /// The SSE endpoint with the configured heartbeat, connection limit and per-client limits
    /// (keyed by `SSE_CLIENT_IP_HEADER` when set); add `authorize` or fixed topics and mount it
    /// where you like with [`SseEndpoint::into_route`].
    pub fn endpoint(&self) -> SseEndpoint {
        let endpoint = SseEndpoint::new(self.broker.clone())
            .admission(self.admission.clone())
            .heartbeat(self.config.heartbeat)
            .max_connections(self.config.max_connections)
            .client_limits(self.config.client_limits);
        match &self.config.client_ip_header {
            Some(header) => endpoint.client_ip_header(header.clone()),
            None => endpoint,
        }
    }

    /// `GET /health` (200 while the process runs) and `GET /health/ready` (503 while the broker's
    /// backend does not answer). Merge it, or `nest` it under a path of your choice.
    pub fn health_routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        health::routes(self.broker.clone(), self.admission.clone())
    }

    /// `GET /metrics` (Prometheus / OpenMetrics text). Merge it, or `nest` it under a path.
    pub fn metrics_routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        crate::health::metrics_routes(self.broker.clone(), self.admission.clone())
    }

    /// Everything at its usual path: `GET /events` (topics from the query), `GET /health`,
    /// `GET /health/ready`, `GET /metrics`.
    pub fn routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        self.routes_with(self.endpoint())
    }

    /// Like [`SseApp::routes`] with your own endpoint (e.g. one with `authorize`) at `/events`.
    pub fn routes_with<S: Clone + Send + Sync + 'static>(&self, endpoint: SseEndpoint) -> Router<S> {
        Router::new()
            .route(DEFAULT_EVENTS_PATH, endpoint.into_route())
            .merge(self.health_routes())
            .merge(self.metrics_routes())
    }

    /// A layer that gives a request's body `HTTP_BODY_TIMEOUT_SECONDS` to arrive whole, counted
    /// from its head ([`crate::deadline`]): reading a body still short of its end then fails
    /// with [`crate::BodyTimeout`], which the app answers with 408. For the app's routes that
    /// read bodies (REST, server functions); the SSE routes read none and need no such limit.
    pub fn body_timeout(&self) -> crate::deadline::BodyDeadlineLayer {
        crate::deadline::BodyDeadlineLayer::new(self.config.body_timeout)
    }

    /// Wraps the routes that render pages with [`crate::handoff::start_cursor`], so each page
    /// carries the cursor its stream resumes from.
    pub fn with_start_cursor<S: Clone + Send + Sync + 'static>(&self, pages: Router<S>) -> Router<S> {
        pages.layer(axum::middleware::from_fn_with_state(self.broker.clone(), crate::handoff::start_cursor))
    }

    /// tower-http CORS for the configured origins, or `None` when `CORS_ORIGINS` is unset.
    ///
    /// Credentials are allowed (EventSource `withCredentials` sends cookies) and the origin is
    /// never a wildcard. It allows `GET` and the `Last-Event-ID`, `Content-Type`, `Authorization` and
    /// `sse-origin` and `Idempotency-Key` headers, and exposes `sse-position`, `idempotent-replayed` and
    /// `sse-publish` to the page, which is what the stream and its writers need; add the methods your own routes take with
    /// `.allow_methods(..)`, and apply it with `Router::layer`.
    pub fn cors(&self) -> Option<CorsLayer> {
        if self.config.cors_origins.is_empty() {
            return None;
        }
        // An origin no browser could send (a path, a wildcard) is left out: `from_env` refuses
        // one at start-up, and a config built in code must not panic in tower-http here.
        let origins: Vec<HeaderValue> = self
            .config
            .cors_origins
            .iter()
            .filter(|o| crate::config::check_origin(o).is_ok())
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        Some(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_credentials(true)
                .allow_methods([Method::GET])
                .allow_headers([
                    header::CONTENT_TYPE,
                    // A stream carried by polls sends the app's own headers (a bearer token).
                    header::AUTHORIZATION,
                    HeaderName::from_static("last-event-id"),
                    HeaderName::from_static(sse_notify_core::origin::ORIGIN_HEADER),
                    HeaderName::from_static(sse_notify_core::write::IDEMPOTENCY_KEY_HEADER),
                ])
                // A page on another origin reads its write's position, and how its event went.
                .expose_headers([
                    HeaderName::from_static(sse_notify_core::write::POSITION_HEADER),
                    HeaderName::from_static(sse_notify_core::write::IDEMPOTENT_REPLAY_HEADER),
                    HeaderName::from_static(crate::layer::PUBLISH_HEADER),
                ]),
        )
    }

    /// Serves `app` on `addr` with a large accept backlog; on Ctrl-C or SIGTERM, ends every SSE
    /// stream and shuts down gracefully.
    pub async fn serve(&self, app: Router, addr: SocketAddr) -> std::io::Result<()> {
        let listener = listen(addr)?;
        tracing::info!("listening on http://{}", listener.local_addr()?);
        self.serve_on(listener, app, shutdown_signal()).await
    }

    /// Serves `app` on an existing listener until `shutdown` completes, then shuts down within
    /// a bound: streams end at once, other connections get `SHUTDOWN_GRACE_SECONDS` to finish
    /// and are then closed, and the outbox is flushed last (up to 4 s), so events of writes
    /// already answered still reach Redis.
    ///
    /// The accept loop is written here rather than `axum::serve`, which gives hyper no timer:
    /// without one, a client that sends its request head one byte at a time (slowloris), or
    /// nothing at all, holds a connection and a file descriptor for as long as it likes. Here
    /// every connection must complete its first request head within
    /// `HTTP_HEADER_TIMEOUT_SECONDS` of its accept, whoever reads it, and each later one as
    /// hyper's header timeout says (which also closes idle keep-alive connections); each client
    /// address may have `HTTP_MAX_PENDING_PER_CLIENT` connections waiting for a head. Requests
    /// carry the peer address as `ConnectInfo<SocketAddr>`. A `GET` for one of the stream paths
    /// ([`SseApp::with_stream_paths`]) is answered through the same router but written without
    /// hyper, whose per-connection buffers would stay with the stream for its whole life: when
    /// it is a connection's first request, and when it comes on a connection hyper kept alive
    /// (which is then taken back from hyper). The response is the same, and the connection
    /// closes when the stream ends.
    /// After many streams close, freed memory is handed back to the system
    /// ([`crate::heap_trim`]).
    pub async fn serve_on(
        &self,
        listener: tokio::net::TcpListener,
        app: Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use hyper_util::rt::{TokioExecutor, TokioTimer};

        let config = &self.config;
        let mut hyper = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        hyper.http1().timer(TokioTimer::new()).header_read_timeout(config.header_timeout);
        hyper.http2().timer(TokioTimer::new()).keep_alive_interval(Some(config.header_timeout * 3));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let shutdown_started = tokio::sync::watch::Sender::new(false);
        // Behind a proxy (the client's address comes from a header) every connection is the
        // proxy's, which forwards complete heads only: no bound per address then.
        let pending_limit = config.client_ip_header.is_none().then_some(config.max_pending_per_client);
        // A `Router` clone shares its route table (an `Arc`), like `into_make_service`.
        let connections = crate::direct::Connections {
            app,
            stream_paths: self.stream_paths.clone(),
            head_timeout: config.header_timeout,
            stall: Arc::new(crate::direct::StallLimit {
                after: config.write_timeout,
                cuts: self.broker.metrics().slow_consumer_disconnects.clone(),
            }),
            hyper,
            pending: crate::direct::PendingHeads::new(pending_limit),
            tasks: Arc::default(),
            broker: self.broker.clone(),
            shutting_down: shutdown_started.subscribe(),
        };
        crate::heap_trim::spawn_trimmer(&self.broker, self.admission.clone());
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (socket, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, usually: wait instead of spinning on the error.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            connections.tasks.spawn(connections.clone().serve(socket, peer, graceful.watcher()));
        }
        drop(listener);
        shutdown_started.send_replace(true);
        let deadline = tokio::time::Instant::now() + config.shutdown_grace;
        // Open streams never end by themselves: they are ended now (each writes its last chunk).
        self.broker.close();
        let tasks = &connections.tasks;
        let finished = tokio::time::timeout_at(deadline, async {
            graceful.shutdown().await;
            tasks.idle().await;
        })
        .await;
        if finished.is_err() {
            tracing::warn!(open = tasks.len(), "connections still open after SHUTDOWN_GRACE_SECONDS; closing them");
            tasks.abort_all();
            let _ = tokio::time::timeout(ABORT_WAIT, tasks.idle()).await;
        }
        // Events of writes already answered as successes: give the backend a last chance. And
        // the closed streams' members leave now rather than at the TTL (a rolling deploy leaves
        // no ghosts behind). Both at once, within the one bound.
        let (events, changes) = tokio::join!(
            self.broker.flush_outbox(OUTBOX_FLUSH_TIMEOUT),
            self.broker.flush_presence(OUTBOX_FLUSH_TIMEOUT)
        );
        if events > 0 {
            tracing::error!(events, "shutting down with events still in the outbox; they are lost");
        }
        if changes > 0 {
            tracing::warn!(changes, "shutting down with presence changes not made; the TTL sweeps them");
        }
        Ok(())
    }
}

/// Logs to standard error with `RUST_LOG`'s levels (default `info`), unless the app installed
/// a `tracing` subscriber already (then this does nothing). Without one, nothing this crate
/// logs is seen, the configuration it logs once at start-up included; leptos's start-axum
/// template installs none.
///
/// ```
/// sse_notify_axum::init_logging();
/// sse_notify_axum::init_logging(); // a second call changes nothing
/// ```
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log file or a collector gets plain text.
    use std::io::IsTerminal;
    let ansi = std::io::stdout().is_terminal();
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).try_init();
}

/// The broker `config` asks for: Redis when `REDIS_URL` or `REDIS_SENTINELS` is set, else
/// in-process.
pub async fn connect_broker(config: &SseConfig) -> Result<Broker, SetupError> {
    #[cfg(feature = "redis")]
    if let Some(options) = config.redis_options()? {
        return Ok(Broker::redis_with(&options, config.broker.clone()).await?);
    }
    #[cfg(not(feature = "redis"))]
    if config.redis_url.is_some() || !config.redis.sentinels.is_empty() || !config.redis.cluster_nodes.is_empty() {
        return Err(SetupError::NoRedisSupport);
    }
    Ok(Broker::memory(config.broker.clone()))
}

/// Binds `addr` with [`ACCEPT_BACKLOG`].
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {}
