//! longshore's worker: pulls operations from its pool's durable JetStream consumer and
//! carries them out on Kubernetes clusters, exactly once in effect.
//!
//! How the modules fit, in the order a message meets them:
//!
//! - [`config`]: the typed configuration, validated before anything connects;
//! - [`run`] (here): connects to NATS, makes sure the stream, bucket and consumer exist,
//!   runs the pull loop until shutdown, then drains;
//! - [`consumer`]: the pull loop, pulling only as many messages as there are free slots;
//! - [`operation`]: one message start to finish (envelope, claim, action, record, ack);
//! - [`status`]: the operation's status record, moved with compare-and-set;
//! - [`clusters`]: the cluster registry (a client per kubeconfig context or in-cluster)
//!   and each cluster's cache of discovered kinds;
//! - [`apply`]: the actions (apply, create, replace, patch, delete) on each object;
//! - [`policy`]: the one place an error becomes a decision (retry later, fail, terminate);
//! - [`error`]: the error types.
//!
//! Shutdown: the future given to [`run`] resolving starts a drain. Pulling stops at once;
//! messages that arrive afterwards are handed back (nak without delay); operations already
//! started get `drain_grace` to finish, and any still running then are handed back too.

pub mod apply;
pub mod clusters;
pub mod config;
pub mod consumer;
pub mod error;
pub mod operation;
pub mod policy;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, kv};
use longshore_contract::jetstream::{
    ProvisionError, ensure_bucket, ensure_consumer, ensure_stream,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::apply::OPERATION_ID_ANNOTATION;
pub use crate::config::Config;
pub use crate::error::{Error, Result};

/// How long in-flight operations have to hand their messages back after the grace period.
const HAND_BACK_GRACE: Duration = Duration::from_secs(5);

/// Runs a worker until `shutdown` resolves, then drains and returns `Ok(())`.
///
/// Fails at start on invalid configuration, a cluster that cannot be loaded, or a pool
/// consumer JetStream refuses (e.g. filters overlapping another pool's). NATS being away
/// is not an error: the worker waits for it.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.validate().map_err(Error::Config)?;
    let token = CancellationToken::new();
    let watcher = tokio::spawn({
        let token = token.clone();
        async move {
            shutdown.await;
            token.cancel();
        }
    });
    let result = serve(config, token).await;
    watcher.abort();
    result
}

async fn serve(config: Config, shutdown: CancellationToken) -> Result<()> {
    let clusters = clusters::Registry::load(&config.clusters, config.request_timeout).await?;
    tracing::info!(worker = %config.worker_id, clusters = ?clusters.names(), "clusters loaded");
    let (_client, js) = config.nats.connect(&config.worker_id).await?;
    let Some((consumer, bucket)) = provision(&js, &config, &shutdown).await? else {
        return Ok(());
    };
    tracing::info!(pool = %config.pool.name, "pulling operations");

    let ctx = Arc::new(operation::Context {
        status: status::StatusStore::new(bucket, config.worker_id.clone()),
        config,
        clusters,
    });
    let tracker = TaskTracker::new();
    let abort = CancellationToken::new();
    let puller = consumer::Puller {
        ctx: ctx.clone(),
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
        abort: abort.clone(),
    };
    puller.run(consumer).await;

    // Drain: what is running gets the grace period, then is handed back.
    tracker.close();
    let grace = ctx.config.drain_grace;
    tracing::info!(in_flight = tracker.len(), grace = ?grace, "draining");
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            in_flight = tracker.len(),
            "grace period over; handing back what is still running"
        );
        abort.cancel();
        if tokio::time::timeout(HAND_BACK_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = tracker.len(),
                "some operations could not be handed back; JetStream will redeliver them after ack_wait"
            );
        }
    }
    tracing::info!("drained");
    Ok(())
}

/// Makes sure the stream, the operations bucket and the pool consumer exist, retrying
/// while NATS is unreachable. `None` if shutdown came first.
async fn provision(
    js: &jetstream::Context,
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<(PullConsumer, kv::Store)>> {
    let settings = &config.nats.jetstream;
    let pool = config.pool_consumer();
    let mut pause = Duration::from_millis(100);
    loop {
        let attempt = async {
            let stream = ensure_stream(js, settings.stream()).await?;
            let bucket = ensure_bucket(js, settings.operations_bucket()).await?;
            let consumer = ensure_consumer(&stream, &pool).await?;
            Ok::<_, ProvisionError>((consumer, bucket))
        };
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = shutdown.cancelled() => return Ok(None),
        };
        match outcome {
            Ok(ready) => return Ok(Some(ready)),
            Err(e) if refused(&e) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?pause, "JetStream not ready");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.cancelled() => return Ok(None),
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Whether JetStream answered and said no to the consumer (a configuration problem that
/// retrying will not fix), as opposed to not answering.
fn refused(err: &ProvisionError) -> bool {
    use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
    let ProvisionError::Consumer { source, .. } = err else {
        return false;
    };
    source.downcast_ref::<ConsumerError>().is_some_and(|e| {
        matches!(
            e.kind(),
            ConsumerErrorKind::JetStream(_)
                | ConsumerErrorKind::InvalidName
                | ConsumerErrorKind::InvalidConsumerType
        )
    })
}
