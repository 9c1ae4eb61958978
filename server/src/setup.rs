//! One-call setup: configuration, broker lifecycle, the SSE and health routes, CORS, serving.

use std::net::SocketAddr;

use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::Router;
use tower_http::cors::CorsLayer;

use crate::broker::{Broker, BrokerError};
use crate::config::{ConfigError, SseConfig};
use crate::endpoint::SseEndpoint;
use crate::health;

/// How many pending connections the kernel may queue for us. The default of 128 drops bursts
/// of connects (thousands of EventSources reconnecting after a deploy), each costing its client
/// a 1 s SYN retry.
pub const ACCEPT_BACKLOG: u32 = 8192;

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("invalid CORS origin {0:?}")]
    CorsOrigin(String),
}

/// The SSE integration, set up from configuration: the Axum form of fastapi-sse-events' `SSEApp`.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sse = server::SseApp::from_env().await?;          // REDIS_URL unset: embedded broker
/// let app = axum::Router::new().merge(sse.routes());      // GET /events, /health, /health/ready
/// sse.serve(app, "127.0.0.1:3000".parse()?).await?;       // graceful shutdown on Ctrl-C/SIGTERM
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SseApp {
    config: SseConfig,
    broker: Broker,
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
        let broker = Broker::from_config(&config).await?;
        tracing::info!(
            backend = broker.backend_name(),
            redis = config.redis_url.as_deref().map(redact).unwrap_or_default(),
            heartbeat_s = config.heartbeat.map(|d| d.as_secs()).unwrap_or(0),
            topic_prefix = config.topic_prefix,
            cors_origins = ?config.cors_origins,
            max_connections = config.max_connections,
            max_queue_size = config.max_queue_size,
            max_message_size = config.max_message_size,
            "SSE configuration"
        );
        Ok(Self { config, broker })
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub fn config(&self) -> &SseConfig {
        &self.config
    }

    /// The SSE endpoint with the configured heartbeat and connection limit; add `authorize` or
    /// fixed topics and mount it where you like.
    pub fn endpoint(&self) -> SseEndpoint {
        SseEndpoint::new(self.broker.clone())
            .heartbeat(self.config.heartbeat)
            .max_connections(self.config.max_connections)
    }

    /// `GET /events` (topics from the query), `GET /health`, `GET /health/ready`, `GET /metrics`.
    pub fn routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        self.routes_with(self.endpoint())
    }

    /// Like [`SseApp::routes`] with your own endpoint (e.g. one with `authorize`).
    pub fn routes_with<S: Clone + Send + Sync + 'static>(&self, endpoint: SseEndpoint) -> Router<S> {
        Router::new()
            .route("/events", endpoint.into_route())
            .merge(health::routes(self.broker.clone()))
            .merge(crate::metrics::routes(self.broker.clone()))
    }

    /// tower-http CORS for the configured origins (credentials allowed, never a wildcard);
    /// `None` when `CORS_ORIGINS` is unset.
    pub fn cors(&self) -> Option<CorsLayer> {
        if self.config.cors_origins.is_empty() {
            return None;
        }
        let origins: Vec<HeaderValue> =
            self.config.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        Some(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_credentials(true)
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers([header::CONTENT_TYPE, HeaderName::from_static("last-event-id")]),
        )
    }

    /// Serves `app` (plus CORS when configured) on `addr` with a large accept backlog; on Ctrl-C
    /// or SIGTERM, ends every SSE stream and shuts down gracefully.
    pub async fn serve(&self, app: Router, addr: SocketAddr) -> std::io::Result<()> {
        let listener = listen(addr)?;
        tracing::info!("listening on http://{}", listener.local_addr()?);
        self.serve_on(listener, app, shutdown_signal()).await
    }

    /// Serves on an existing listener until `shutdown` completes (tests use this).
    pub async fn serve_on(
        &self,
        listener: tokio::net::TcpListener,
        app: Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = match self.cors() {
            Some(cors) => app.layer(cors),
            None => app,
        };
        let broker = self.broker.clone();
        // `into_make_service`: a plain `Router` as make-service rebuilds its whole route table for
        // every connection (16+ KiB each for the demo), the make-service shares it.
        axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Open streams never end by themselves; without this, shutdown would wait forever.
                broker.close();
            })
            .await
    }
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

/// Hides a password in a Redis URL for logging.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(super::redact("redis://:secret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(super::redact("redis://h:6379"), "redis://h:6379");
    }
}
