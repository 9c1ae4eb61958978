//! Operations routes: liveness, readiness and metrics.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::broker::Broker;
use crate::error::ApiError;

/// `GET /health` (200 while the process runs) and `GET /health/ready` (503 while the broker's
/// backend does not answer).
pub fn routes<S: Clone + Send + Sync + 'static>(broker: Broker) -> Router<S> {
    Router::new().route("/health", get(|| async { Json(serde_json::json!({ "status": "ok" })) })).route(
        "/health/ready",
        get(move || {
            let broker = broker.clone();
            async move {
                if broker.is_ready().await {
                    Ok((
                        StatusCode::OK,
                        Json(serde_json::json!({
                            "status": "ready",
                            "backend": broker.backend_name(),
                            "connections": broker.connections(),
                            "channels": broker.subscribed_channels(),
                        })),
                    ))
                } else {
                    Err(ApiError::unavailable(
                        "not_ready",
                        format!("the {} broker does not answer", broker.backend_name()),
                    ))
                }
            }
        }),
    )
}

/// `GET /metrics` in the OpenMetrics text format (which Prometheus scrapes natively).
pub fn metrics_routes<S: Clone + Send + Sync + 'static>(broker: Broker) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || {
            let body = broker.render_metrics();
            async move {
                ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
                    .into_response()
            }
        }),
    )
}
