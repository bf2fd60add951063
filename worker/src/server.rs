//! The worker's small HTTP listener: `/metrics` (Prometheus), `/healthz` (the process
//! runs), `/readyz` (connected, provisioned and pulling), and, when `registry_endpoint` is on,
//! `/registry/clusters/{name}` (the registry entry as this replica follows it: declared state only, no credential; for
//! operators and for measuring how fast a change reaches every replica).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use longshore_contract::exposition;
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the listener reports on; filled in as the worker starts.
#[derive(Default)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub pool: String,
    /// The pool's consumer, once provisioned: its lag is read on each scrape.
    pub consumer: OnceCell<PullConsumer>,
    pub pulling: AtomicBool,
    /// Whether `/registry/clusters/{name}` is served (`registry_endpoint`).
    pub registry_endpoint: bool,
    /// The registry as this replica follows it, once provisioned.
    pub fleet: OnceCell<longshore_contract::registry::fleet::Fleet>,
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/registry/clusters/{name}", get(registry_entry))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::warn!(error = %e, "metrics listener stopped");
    }
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    if let Some(consumer) = shared.consumer.get() {
        let mut consumer = consumer.clone();
        match tokio::time::timeout(Duration::from_secs(2), consumer.info()).await {
            Ok(Ok(info)) => {
                shared
                    .metrics
                    .consumer(&shared.pool, info.num_pending, info.num_ack_pending);
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "reading the pool consumer's state"),
            Err(_) => tracing::debug!("reading the pool consumer's state timed out"),
        }
    }
    if let Some(fleet) = shared.fleet.get() {
        let mut served = std::collections::BTreeSet::new();
        fleet.cluster_view.scan(None, |name, entry| {
            if entry.pool.as_str() == shared.pool {
                served.insert(name.to_owned());
            }
            true
        });
        shared.metrics.serve_clusters(served);
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (kind, body) = exposition::negotiate(accept, shared.metrics.encode());
    ([(header::CONTENT_TYPE, kind)], body)
}

async fn registry_entry(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    if !shared.registry_endpoint {
        return (StatusCode::NOT_FOUND, "registry_endpoint is off").into_response();
    }
    let Some(fleet) = shared.fleet.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "registry not loaded yet").into_response();
    };
    match fleet.cluster_view.get(&name) {
        Some(entry) => axum::Json(&*entry).into_response(),
        None => (StatusCode::NOT_FOUND, "not registered").into_response(),
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.pulling.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not pulling yet")
    }
}
