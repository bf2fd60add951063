//! What every request handler shares: configuration, the NATS connection, and the
//! JetStream resources once they are provisioned.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use async_nats::{connection::State as ConnState, jetstream};
use longshore_contract::{
    ClusterName, OperationRecord,
    backoff::Backoff,
    jetstream as js_defs,
    registry::fleet::{Fleet, Observing},
    store::Store,
};
use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Auth,
    config::Config,
    error::{Error, Result},
};

/// Pauses while JetStream cannot be provisioned.
const PROVISION_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

pub struct Context {
    pub config: Config,
    /// The clusters of the configuration's `clusters` list, registered at start if missing.
    pub seed: BTreeSet<ClusterName>,
    /// Tokens, webhook secrets, policies and rate limits.
    pub auth: Auth,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: crate::metrics::Metrics,
    /// Cancelled when shutdown begins: what would otherwise hold a connection open past
    /// the drain (event streams) ends then.
    pub stopping: CancellationToken,
    /// One permit per `GET /v1/events` stream open (`http.max_event_streams`).
    pub event_streams: Arc<Semaphore>,
    /// The status records, set once the stream and buckets exist.
    operations: OnceCell<Store<OperationRecord>>,
    /// The cluster registry, followed live, once its buckets exist.
    fleet: OnceCell<Fleet>,
    /// Fleet rollouts and their progress, once the bucket and the steps stream exist.
    rollouts: OnceCell<Rollouts>,
    /// When the gauges `/metrics` reads from NATS were last refreshed ([`crate::scrape`]).
    pub scraped: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The rollouts bucket: each rollout's record and its progress, under their own keys.
#[derive(Clone)]
pub struct Rollouts {
    pub specs: Store<longshore_contract::rollout::Rollout>,
    pub progress: Store<longshore_contract::rollout::Progress>,
}

impl Context {
    pub fn new(
        config: Config,
        seed: BTreeSet<ClusterName>,
        auth: Auth,
        nats: async_nats::Client,
        js: jetstream::Context,
    ) -> Self {
        Self {
            event_streams: Arc::new(Semaphore::new(config.http.max_event_streams)),
            config,
            seed,
            auth,
            nats,
            js,
            metrics: crate::metrics::Metrics::default(),
            stopping: CancellationToken::new(),
            operations: OnceCell::new(),
            fleet: OnceCell::new(),
            rollouts: OnceCell::new(),
            scraped: std::sync::Mutex::new(None),
        }
    }

    /// The cluster registry, or 503 until it is read in full (or while NATS is away).
    pub fn fleet(&self) -> Result<&Fleet> {
        if self.nats.connection_state() != ConnState::Connected {
            return Err(Error::Unavailable("not connected to NATS".into()));
        }
        self.fleet
            .get()
            .filter(|f| f.is_loaded())
            .ok_or_else(|| Error::Unavailable("the cluster registry is not loaded yet".into()))
    }

    /// The status bucket, or 503 while NATS is unreachable or not yet provisioned. Checking
    /// the connection first makes an outage answer at once instead of after a timeout.
    pub fn operations(&self) -> Result<&Store<OperationRecord>> {
        if self.nats.connection_state() != ConnState::Connected {
            return Err(Error::Unavailable("not connected to NATS".into()));
        }
        self.operations.get().ok_or_else(|| {
            Error::Unavailable("JetStream stream and buckets are not provisioned yet".into())
        })
    }

    /// The rollouts bucket, or 503 while NATS is unreachable or not yet provisioned.
    pub fn rollouts(&self) -> Result<&Rollouts> {
        self.operations()?;
        self.rollouts.get().ok_or_else(|| {
            Error::Unavailable("JetStream stream and buckets are not provisioned yet".into())
        })
    }

    /// Ready when connected, provisioned, and the work-queue stream answers.
    pub async fn readiness(&self) -> Result<()> {
        self.operations()?;
        self.fleet()?;
        tokio::time::timeout(Duration::from_secs(2), self.js.get_stream(js_defs::STREAM))
            .await
            .map_err(|_| Error::Unavailable("work-queue stream did not answer within 2s".into()))?
            .map_err(|e| Error::Unavailable(format!("work-queue stream unreachable: {e}")))?;
        Ok(())
    }

    /// Creates the stream and buckets if missing, retrying until it works or `stop` fires.
    /// Idempotent and safe with many replicas starting at once.
    pub async fn provision(&self, stop: CancellationToken) {
        let settings = &self.config.nats.jetstream;
        let mut retries = PROVISION_BACKOFF.retries();
        loop {
            let attempt = async {
                js_defs::ensure_stream(&self.js, settings.stream()).await?;
                js_defs::ensure_stream(&self.js, settings.dead_letter_stream()).await?;
                js_defs::ensure_bucket(&self.js, settings.objects_bucket()).await?;
                let fleet = Fleet::open(&self.js, settings, &stop, Observing::Health).await?;
                let operations =
                    js_defs::ensure_bucket(&self.js, settings.operations_bucket()).await?;
                js_defs::ensure_stream(&self.js, settings.steps_stream()).await?;
                let rollouts = js_defs::ensure_bucket(&self.js, settings.rollouts_bucket()).await?;
                Ok::<_, js_defs::ProvisionError>((operations, fleet, rollouts))
            };
            match attempt.await {
                Ok((kv, fleet, rollouts)) => {
                    let _ = self.rollouts.set(Rollouts {
                        specs: Store::new(rollouts.clone(), js_defs::ROLLOUTS_BUCKET),
                        progress: Store::new(rollouts, js_defs::ROLLOUTS_BUCKET),
                    });
                    let _ = self
                        .operations
                        .set(Store::new(kv, js_defs::OPERATIONS_BUCKET));
                    crate::fleet::seed(&fleet, &self.seed).await;
                    let _ = self.fleet.set(fleet);
                    tracing::info!("JetStream stream and buckets ready");
                    return;
                }
                Err(e) => {
                    let delay = retries.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "provisioning JetStream");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}
