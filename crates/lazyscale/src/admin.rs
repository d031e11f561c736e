//! The admin server (plain HTTP on its own port): `/livez`, `/readyz`, `/metrics`, and
//! `/explain/{namespace}/{name}` (what `lazyscale explain` prints).
//!
//! Readiness means "connected to the API server and watching for autoscalers"; it never waits for the
//! lazily started pod cache.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Metrics;

/// Shared state of the admin endpoints.
#[derive(Clone)]
pub struct AdminState {
    /// The metrics to serve.
    pub metrics: Arc<Metrics>,
    /// Set once the agent reached the API server and its autoscaler watches started.
    pub ready: Arc<AtomicBool>,
    /// The horizontal controller while the stack runs.
    pub controller: Arc<std::sync::RwLock<Option<lazyscale_controller::Handle>>>,
}

async fn explain(
    State(s): State<AdminState>,
    Path((namespace, name)): Path<(String, String)>,
) -> impl IntoResponse {
    let handle = s.controller.read().ok().and_then(|h| h.clone());
    match handle {
        None => (
            StatusCode::NOT_FOUND,
            "the autoscaling stack is not running (no autoscaler in the cluster)".to_string(),
        ),
        Some(h) => match h.explain(&namespace, &name) {
            Some(text) => (StatusCode::OK, text),
            None => (
                StatusCode::NOT_FOUND,
                format!(
                    "no decision recorded yet for {namespace}/{name} (unknown DPA, or not reconciled yet)"
                ),
            ),
        },
    }
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the API server has not answered yet",
        )
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/explain/{namespace}/{name}", get(explain))
        .with_state(state)
}

/// Serves the admin endpoints until `stop` is cancelled.
pub async fn serve(addr: SocketAddr, state: AdminState, stop: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "admin server listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await?;
    Ok(())
}
