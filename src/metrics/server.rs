//! The ops HTTP server: `/metrics` (Prometheus text format 0.0.4),
//! `/healthz` (liveness: 200 while the process serves), `/readyz` (200 when
//! [`Health`] says ready, else 503 with a one-line reason).

use std::io;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::task::JoinHandle;

use super::{Health, Metrics};

/// Errors starting the server; each names the fix.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("metrics address {addr} is already in use: set PROJECTOR_METRICS_ADDR (or --metrics-addr) to a free host:port, e.g. 127.0.0.1:0")]
    AddrInUse { addr: SocketAddr },
    #[error("cannot listen on metrics address {addr}: {source}; set PROJECTOR_METRICS_ADDR (or --metrics-addr) to an address of this host")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

#[derive(Clone)]
struct Ops {
    metrics: Metrics,
    health: Health,
}

/// Binds `addr` and serves until the returned task is aborted. Returns the
/// bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    health: Health,
) -> Result<(SocketAddr, JoinHandle<()>), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(addr, e))?;
    let local = listener.local_addr().map_err(|e| bind_error(addr, e))?;
    let app = router(metrics, health);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    Ok((local, task))
}

fn bind_error(addr: SocketAddr, e: io::Error) -> ServeError {
    if e.kind() == io::ErrorKind::AddrInUse {
        ServeError::AddrInUse { addr }
    } else {
        ServeError::Bind { addr, source: e }
    }
}

/// The routes, for embedding into another server.
pub fn router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz_handler))
        .with_state(Ops { metrics, health })
}

fn sync_ready(ops: &Ops) -> Result<(), String> {
    let r = ops.health.readiness();
    ops.metrics.ready.set(i64::from(r.is_ok()));
    r
}

async fn metrics_handler(State(ops): State<Ops>) -> Response {
    let _ = sync_ready(&ops);
    match ops.metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn readyz_handler(State(ops): State<Ops>) -> Response {
    match sync_ready(&ops) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => {
            let line = reason.replace(['\n', '\r'], " ");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {line}\n"),
            )
                .into_response()
        }
    }
}
