//! The longshore dispatcher: a stateless HTTP front door that turns pipeline requests into
//! operations on the JetStream work queue. Run any number of replicas.
//!
//! A request goes [`api`] (routes, HTTP in and out; [`intake`] the body, key and 202 the
//! accepting routes share) → [`auth`] (bearer token, naming the source) and
//! [`ratelimit`] → [`request`] (parse and validate the body, name the field at
//! fault; webhooks through [`hooks`] instead: signature, then the source's mapping) →
//! [`policy`] (what the token or source may touch) → [`submit`] (idempotency: record, then
//! publish, then 202) → JetStream. [`wait`] long-polls and streams an operation's state
//! through a KV watch. [`deadletters`] lists and requeues operations that exhausted their
//! deliveries. What the clusters' watchers keep is read through [`inventory`]
//! (`GET /v1/objects`), [`events`] (`GET /v1/events`, server-sent) and [`watchers`] (who
//! watches a cluster, in `GET /v1/clusters/{name}`). [`context`] holds what handlers share
//! and provisions the stream and buckets; [`error`] is the one place an error becomes an
//! HTTP response; [`config`] is the typed configuration; [`tls`] serves HTTPS when
//! certificate files are configured; [`observe`] gives every request its server span and
//! metrics ([`metrics`], `GET /metrics`; [`scrape`] reads the queues, the registry and the
//! rollouts for it).

pub mod api;
pub mod auth;
pub mod clusters;
pub mod config;
pub mod console;
pub mod context;
pub mod deadletters;
pub mod error;
pub mod events;
pub mod fleet;
pub mod hooks;
pub mod intake;
pub mod inventory;
pub mod metrics;
pub mod observe;
pub mod operations;
pub mod policy;
pub mod ratelimit;
pub mod request;
pub mod rollout_request;
pub mod rollouts;
pub mod scrape;
pub mod submit;
pub mod tls;
pub mod wait;
pub mod watchers;

use std::{future::Future, sync::Arc};

pub use config::Config;
use tokio::net::TcpListener;

/// Why the dispatcher could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] longshore_contract::settings::ConfigError),
    #[error("connecting to NATS: {0}")]
    Nats(#[from] async_nats::ConnectError),
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting and gives
/// in-flight requests `http.drain_grace` to finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    run_checked(config.check()?, listener, shutdown).await
}

/// [`run`] with a configuration already checked (the binary checks it before binding).
pub async fn run_checked(
    checked: config::Checked,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let config::Checked {
        config,
        clusters: seed,
        auth,
        tls,
    } = checked;
    if auth.is_open() {
        tracing::warn!(
            "no API tokens configured: anyone who can reach the dispatcher may submit operations"
        );
    }
    let (nats, js) = config.nats.connect("longshore-dispatcher").await?;
    let grace = config.http.drain_grace;
    let ctx = Arc::new(context::Context::new(config, seed, auth, nats, js));

    let stop = ctx.stopping.clone();
    let provisioning = tokio::spawn({
        let (ctx, stop) = (ctx.clone(), stop.clone());
        async move { ctx.provision(stop).await }
    });
    let addr = listener.local_addr()?;
    let router = api::router(ctx.clone());
    let drained = stop.clone().cancelled_owned();
    let mut serve = match tls {
        Some(tls) => {
            tracing::info!(%addr, "dispatcher listening (HTTPS)");
            let listener = tls::TlsListener::new(listener, tls)?;
            tokio::spawn(
                axum::serve(listener, router)
                    .with_graceful_shutdown(drained)
                    .into_future(),
            )
        }
        None => {
            tracing::info!(%addr, "dispatcher listening");
            tokio::spawn(
                axum::serve(listener, router)
                    .with_graceful_shutdown(drained)
                    .into_future(),
            )
        }
    };

    tokio::select! {
        result = &mut serve => {
            stop.cancel();
            return result.map_err(std::io::Error::other)?.map_err(RunError::from);
        }
        () = shutdown => {}
    }
    tracing::info!(grace = ?grace, "shutting down: no new connections, finishing in-flight requests");
    stop.cancel();
    provisioning.abort();
    match tokio::time::timeout(grace, serve).await {
        Ok(result) => result
            .map_err(std::io::Error::other)?
            .map_err(RunError::from),
        Err(_) => {
            tracing::warn!("drain grace elapsed with requests still in flight");
            Ok(())
        }
    }
}
