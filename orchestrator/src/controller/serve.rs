//! The controller's HTTP endpoint: `/metrics` for Prometheus, `/healthz`
//! for the kubelet's liveness probe and `/readyz` for its readiness probe.
//!
//! A replica is live while it answers. It is ready once its resources are
//! served by the host cluster, whether it leads or stands by: a standby
//! replica is healthy, and marking it unready would only hide it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::metrics::Metrics;

/// What the endpoint reads.
#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

/// Serves the endpoint on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, health: Health) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(health);
    axum::serve(listener, app).await
}

async fn metrics(State(health): State<Health>) -> Response {
    match health.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn ready(State(health): State<Health>) -> Response {
    if health.ready.load(Ordering::Relaxed) {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the controller's resources to be served",
        )
            .into_response()
    }
}
