//! Operations routes: liveness, readiness and metrics.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::admission::Admission;
use crate::error::ApiError;
use crate::metrics::Gauges;
use sse_notify_broker::Broker;

/// `GET /health` (200 while the process runs) and `GET /health/ready` (503 while the broker's
/// backend does not answer).
pub fn routes<S: Clone + Send + Sync + 'static>(broker: Broker, admission: Admission) -> Router<S> {
    Router::new().route("/health", get(|| async { Json(serde_json::json!({ "status": "ok" })) })).route(
        "/health/ready",
        get(move || {
            let (broker, admission) = (broker.clone(), admission.clone());
            async move {
                if broker.is_ready().await {
                    Ok((
                        StatusCode::OK,
                        Json(serde_json::json!({
                            "status": "ready",
                            "backend": broker.backend_name(),
                            "connections": admission.connections(),
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
pub fn metrics_routes<S: Clone + Send + Sync + 'static>(broker: Broker, admission: Admission) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || {
            let body = render_metrics(&broker, &admission);
            async move {
                ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
                    .into_response()
            }
        }),
    )
}

/// The metrics page, with the broker's gauges and the streams `admission` counts read now.
pub fn render_metrics(broker: &Broker, admission: &Admission) -> String {
    let gauges = Gauges { connections: admission.connections(), clients: admission.clients(), broker: broker.gauges() };
    crate::metrics::of(broker).render(gauges)
}
