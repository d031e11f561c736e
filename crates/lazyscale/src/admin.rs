//! The admin server (plain HTTP on its own port): `/livez`, `/readyz`, `/metrics`, and
//! `/explain/{namespace}/{name}` (what `lazyscale explain` prints).
//!
//! Readiness means "connected to the API server and every autoscaler watch has listed"; it never
//! waits for the lazily started pod cache. [`get`] is the small client `lazyscale explain` uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::telemetry::Metrics;

/// Shared state of the admin endpoints.
#[derive(Clone)]
pub struct AdminState {
    /// The metrics to serve.
    pub metrics: Arc<Metrics>,
    /// Set once the agent reached the API server and its autoscaler watches listed.
    pub ready: Arc<AtomicBool>,
    /// The horizontal controller while the stack runs.
    pub controller: Arc<std::sync::RwLock<Option<lazyscale_controller::Handle>>>,
    /// The vertical loop's last decision per DPA.
    pub vertical: crate::vertical::Decisions,
}

async fn explain(
    State(s): State<AdminState>,
    Path((namespace, name)): Path<(String, String)>,
) -> impl IntoResponse {
    let handle = s.controller.read().ok().and_then(|h| h.clone());
    let vertical = s
        .vertical
        .read()
        .ok()
        .and_then(|d| d.get(&format!("{namespace}/{name}")).cloned());
    match handle {
        None => (
            StatusCode::NOT_FOUND,
            "the autoscaling stack is not running (no autoscaler in the cluster)".to_string(),
        ),
        Some(h) => match (h.explain(&namespace, &name), vertical) {
            (None, None) => (
                StatusCode::NOT_FOUND,
                format!(
                    "no decision recorded yet for {namespace}/{name} (unknown DPA, or not reconciled yet)"
                ),
            ),
            (horizontal, vertical) => {
                let mut text = horizontal.unwrap_or_default();
                if let Some(v) = vertical {
                    if !text.is_empty() && !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text.push_str(&format!("vertical apply: {v}\n"));
                }
                (StatusCode::OK, text)
            }
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
            "not ready: the autoscaler watches have not listed yet",
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
        .route("/livez", routing::get(livez))
        .route("/readyz", routing::get(readyz))
        .route("/metrics", routing::get(metrics))
        .route("/explain/{namespace}/{name}", routing::get(explain))
        .with_state(state)
}

/// Errors of [`get`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent's admin server could not be reached or read.
    #[error("cannot reach the agent's admin server at {addr}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not HTTP.
    #[error("the admin server at {0} did not answer HTTP")]
    NotHttp(SocketAddr),
}

/// How long [`get`] waits for an answer.
pub const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A plain HTTP/1.0 GET of `path` on the admin server (it serves plain HTTP on loopback or a pod
/// IP, and the answer is small text): the status code and the body.
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), ClientError> {
    use std::io::{Read, Write};
    let io = |source| ClientError::Io { addr, source };
    let mut s = std::net::TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).map_err(io)?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(io)?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(io)?;
    let (head, body) = buf.split_once("\r\n\r\n").ok_or(ClientError::NotHttp(addr))?;
    let code = head
        .strip_prefix("HTTP/")
        .and_then(|h| h.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or(ClientError::NotHttp(addr))?;
    Ok((code, body.to_owned()))
}

/// How long an admin client may take to send its request headers (a stalled client is disconnected).
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a new admin connection may take to send its first request.
pub const FIRST_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the admin endpoints until `stop` is cancelled. Every connection is its own task and the
/// handlers only read shared state, so a slow or stalled client never blocks the agent; stalled
/// connections are closed after [`HEADER_READ_TIMEOUT`] / [`FIRST_REQUEST_TIMEOUT`].
pub async fn serve(addr: SocketAddr, state: AdminState, stop: CancellationToken) -> Result<(), ServeError> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| ServeError::Bind { addr, source })?;
    if let Ok(local) = listener.local_addr() {
        tracing::info!(address = %local, "admin server listening");
    }
    let handle = axum_server::Handle::new();
    let h2 = handle.clone();
    tokio::spawn(
        async move {
            stop.cancelled().await;
            h2.graceful_shutdown(Some(std::time::Duration::from_secs(2)));
        }
        .instrument(tracing::info_span!("admin_shutdown")),
    );
    let mut server = axum_server::from_tcp(listener)
        .map_err(ServeError::Serve)?
        .first_request_timeout(FIRST_REQUEST_TIMEOUT)
        .http1_only();
    server
        .http_builder()
        .http1()
        .header_read_timeout(HEADER_READ_TIMEOUT);
    server
        .handle(handle)
        .serve(router(state).into_make_service())
        .await
        .map_err(ServeError::Serve)
}

/// Errors of [`serve`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The admin address could not be bound.
    #[error("cannot listen on the admin address {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while serving.
    #[error("the admin server failed")]
    Serve(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_client_reads_the_servers_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let ready = Arc::new(AtomicBool::new(false));
        let state = AdminState {
            metrics: Arc::new(Metrics::new()),
            ready: ready.clone(),
            controller: Arc::default(),
            vertical: Arc::default(),
        };
        let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });
        let call = |path: &'static str| tokio::task::spawn_blocking(move || get(addr, path));
        let (code, _) = call("/readyz")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(code, 503);
        ready.store(true, Ordering::Relaxed);
        let (code, _) = call("/readyz")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(code, 200);
        let (code, body) = call("/explain/ns/none")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(code, 404, "{body}");
        server.abort();
        let closed: SocketAddr = "127.0.0.1:1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(get(closed, "/"), Err(ClientError::Io { .. })));
    }
}
