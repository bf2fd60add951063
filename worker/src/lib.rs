//! longshore's worker: pulls operations from its pool's durable JetStream consumer and
//! carries them out on Kubernetes clusters, exactly once in effect.
//!
//! How the modules fit, in the order a message meets them:
//!
//! - [`config`]: the typed configuration, validated before anything connects;
//! - [`run`] (here): connects to NATS, makes sure the stream, bucket and consumer exist,
//!   runs the pull loop until shutdown, then drains;
//! - [`consumer`]: the pull loop, pulling only as many messages as there are free slots;
//! - [`operation`]: one message start to finish (envelope, claim, fences, action, record,
//!   ack); [`settle`] the verdict on a delivery (what is recorded, how the message leaves,
//!   what is counted) and the ack itself;
//! - [`status`]: the operation's status record, moved with compare-and-set;
//! - [`fence`]: per-object fences, so operations on one object take turns and an older
//!   operation is never applied over a newer one;
//! - [`clusters`]: the cluster registry (a client per kubeconfig context or in-cluster)
//!   and each cluster's cache of discovered kinds;
//! - [`plan`]: an operation's objects, in the dependency order of [`ordering`], with
//!   their fence keys, and carrying the action out on each ([`establish`]: a CRD it applied
//!   Established before its custom resources); [`actions`] the actions, a
//!   file each (apply, create, replace, patch, delete, scale, rollout, run-job), over the
//!   pieces they share; [`diff`] what a dry run would change;
//! - [`wait`]: waiting for the objects to become stable, by the rules of [`readiness`];
//! - [`policy`]: the one place an error becomes a decision (retry later, fail, terminate,
//!   dead-letter);
//! - [`deadletter`]: copying exhausted operations to the dead-letter stream, and the
//!   sweeper for those whose last delivery no worker finished;
//! - [`rollouts`]: fleet rollouts: a rollout's operations report how they ended, do not
//!   start once it is over, and hub workers take the steps that move it;
//! - [`error`]: the error types;
//! - [`server`], [`metrics`], [`api_calls`]: the `/metrics`, `/healthz`, `/readyz`
//!   listener, the Prometheus metrics, and the client span and metrics of every
//!   Kubernetes API request.
//!
//! Shutdown: the future given to [`run`] resolving starts a drain. Pulling stops at once;
//! messages that arrive afterwards are handed back (nak without delay); operations already
//! started get most of `drain_grace` to finish, and any still running then are handed
//! back too. The whole drain keeps within `drain_grace` ([`shutdown`]).

pub mod actions;
pub mod agent;
pub mod api_calls;
pub mod clusters;
pub mod config;
pub mod consumer;
pub mod deadletter;
pub mod diff;
pub mod error;
pub mod establish;
pub mod fence;
pub mod inventory;
pub mod membership;
pub mod metrics;
pub mod operation;
pub mod ordering;
pub mod plan;
pub mod policy;
pub mod readiness;
pub mod rollouts;
pub mod route;
pub mod server;
pub mod settle;
pub mod shutdown;
pub mod status;
pub mod transport;
pub mod wait;
pub mod watching;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, kv, stream};
use longshore_contract::backoff::Backoff;
use longshore_contract::jetstream::{
    ProvisionError, ensure_bucket, ensure_consumer, ensure_stream,
};
use longshore_contract::registry::fleet::Fleet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::actions::OPERATION_ID_ANNOTATION;
pub use crate::config::Config;
pub use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// The longest pause between attempts to provision JetStream while it is not ready.
const PROVISION_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

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
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Config(format!("listen: cannot bind {}: {e}", config.listen)))?;
    run_on(config, listener, shutdown).await
}

/// [`run`] with the metrics listener already bound (tests bind port 0 and read it back).
///
/// Once `shutdown` resolves the worker drains and returns within `drain_grace`, whatever
/// NATS does (see [`shutdown`]).
pub async fn run_on(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.validate().map_err(Error::Config)?;
    let stop = Shutdown::new(config.drain_grace);
    let shared = Arc::new(server::Shared {
        pool: config.pool.name.clone(),
        registry_endpoint: config.registry_endpoint,
        ..Default::default()
    });
    let stop_listener = CancellationToken::new();
    let listening = tokio::spawn(server::serve(
        listener,
        shared.clone(),
        stop_listener.clone(),
    ));
    let mut serving = Box::pin(serve(config, stop.clone(), shared));
    let result = tokio::select! {
        // A start-up failure, before any shutdown.
        result = &mut serving => result,
        () = shutdown => {
            stop.begin();
            // The drain keeps to the deadline on its own; this is the bound whatever it
            // is waiting for.
            match tokio::time::timeout_at(stop.deadline(), &mut serving).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("drain_grace is over; exiting with the drain unfinished (JetStream redelivers what was not acknowledged after ack_wait)");
                    Ok(())
                }
            }
        }
    };
    stop_listener.cancel();
    let _ = tokio::time::timeout(Duration::from_millis(200), listening).await;
    result
}

async fn serve(config: Config, shutdown: Shutdown, shared: Arc<server::Shared>) -> Result<()> {
    // Reading the credentials (CPU: thousands of contexts) and reaching NATS (the network,
    // then reading the registry) do not depend on each other: done at once, on separate
    // threads, a new replica is ready sooner. Either failing ends the start at once.
    // Each a task of its own: side by side in this future, they would also make it too
    // big for the stack of a thread that creates it (a test's, say).
    let (settings, timeout, metrics) = (
        config.clusters.clone(),
        config.request_timeout,
        shared.metrics.clone(),
    );
    let loading = start_task("reading the credentials", async move {
        clusters::Clusters::load(&settings, timeout, &metrics).await
    });
    let (nats, stop) = (config.clone(), shutdown.clone());
    let connecting = start_task("reaching NATS", async move {
        // The context holds the connection; nothing else needs the client.
        let (_, js) = nats.nats.connect(&nats.worker_id).await?;
        let ready = provision(&js, &nats, &stop).await?;
        Ok((js, ready))
    });
    let (clusters, (js, ready)) = tokio::try_join!(loading, connecting)?;
    let clusters = Arc::new(clusters);
    tracing::info!(
        worker = %config.worker_id,
        pool = %config.pool.name,
        credentials = clusters.references().len(),
        "credentials loaded"
    );
    let agent = match config.agent_cluster() {
        Some(cluster) => Some((agent::credentials(&config, &clusters, &cluster)?, cluster)),
        None => None,
    };
    let Some(ready) = ready else {
        return Ok(());
    };
    let pool = config.pool_name();
    let _ = shared.fleet.set(ready.fleet.clone());
    match agent {
        Some((credentials, cluster)) => {
            agent::register(&ready.fleet, &config, &cluster, credentials, &shutdown).await
        }
        None => membership::seed(&ready.fleet, &clusters, &pool, &config.worker_id).await,
    }
    let fleet_tasks = membership::start(
        ready.fleet.clone(),
        clusters.clone(),
        pool.clone(),
        config.clone(),
        shutdown.clone(),
    );
    let watching = watching::start(
        watching::Watching {
            fleet: ready.fleet.clone(),
            js: js.clone(),
            clusters: clusters.clone(),
            pool: pool.clone(),
            worker: config.worker_id.clone(),
            config: config.watch.clone(),
            metrics: shared.metrics.clone(),
        },
        shutdown.clone(),
    );
    tracing::info!(pool = %config.pool.name, "pulling operations");
    let _ = shared.consumer.set(ready.consumer.clone());
    shared
        .pulling
        .store(true, std::sync::atomic::Ordering::Relaxed);

    let status = status::StatusStore::new(ready.records.clone(), config.worker_id.clone());
    let sweeper = deadletter::Sweeper {
        js: js.clone(),
        ops: ready.stream,
        status: status.clone(),
    };
    let sweeping = tokio::spawn({
        let (shutdown, fleet, settings) = (
            shutdown.clone(),
            ready.fleet.clone(),
            config.nats.jetstream.clone(),
        );
        async move {
            // Not an agent: its own pool's, and every agent pool's.
            if let Some(advisories) = ready.advisories {
                let agents = deadletter::sweep_agent_pools(
                    sweeper.clone(),
                    fleet,
                    settings,
                    shutdown.clone(),
                );
                tokio::join!(sweeper.run(advisories, shutdown), agents);
            }
        }
    });
    let rollouts = rollouts::Rollouts::new(ready.rollouts);
    let stepping = ready.steps.map(|steps| {
        let stepper = Arc::new(rollouts::Stepper {
            js: js.clone(),
            ack_wait: config.pool.ack_wait,
            rollouts: rollouts.clone(),
            records: longshore_contract::store::Store::new(
                ready.records.clone(),
                longshore_contract::jetstream::OPERATIONS_BUCKET,
            ),
            fleet: ready.fleet.clone(),
            metrics: shared.metrics.clone(),
            watched: config.watch.kinds.clone(),
        });
        tokio::spawn(stepper.run(steps, shutdown.clone()))
    });
    let write_back = older_members(&ready.fleet);
    let ctx = Arc::new(operation::Context {
        pool,
        fleet: ready.fleet,
        clusters,
        status,
        fences: fence::Fences::new(
            ready.objects,
            ready.records.clone(),
            config.worker_id.clone(),
            config.fence.lease,
        )
        .writing_back_while(write_back),
        js,
        rollouts,
        config,
        metrics: shared.metrics.clone(),
    });
    let tracker = TaskTracker::new();
    let abort = CancellationToken::new();
    let puller = consumer::Puller {
        ctx: ctx.clone(),
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
        abort: abort.clone(),
    };
    let pool_consumer = ready.consumer.clone();
    puller.run(ready.consumer).await;

    // Drain: what is running gets until the work deadline, then is handed back.
    tracker.close();
    tracing::info!(in_flight = tracker.len(), "draining");
    if tokio::time::timeout_at(shutdown.work_deadline(), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = tracker.len(),
            "drain time is up; handing back what is still running"
        );
        abort.cancel();
    }
    // The sweeper and the fleet tasks stop with the shutdown signal (the member key is
    // removed, so the pool shows one replica fewer at once, and the watch leases are
    // released, so others take them at once); an advisory being handled is redelivered.
    let _ = tokio::time::timeout_at(shutdown.deadline(), async {
        tracker.wait().await;
        let _ = sweeping.await;
        if let Some(stepping) = stepping {
            let _ = stepping.await;
        }
        let _ = fleet_tasks.await;
        let _ = watching.await;
    })
    .await;
    // Hand-backs are published without waiting for the server, and the connection drops
    // whatever is still in its write buffer when the last handle goes: a message handed
    // back just before exit would wait out ack_wait. A flush would only hand the buffer to
    // the socket; an answer to a request sent after them (the pool consumer's state, which
    // every worker's permissions allow, an agent's too) shows the server read everything
    // before it. Never while NATS is away: hence the deadline.
    match tokio::time::timeout_at(shutdown.deadline(), pool_consumer.get_info()).await {
        Ok(Ok(_)) => tracing::info!("drained"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "NATS did not confirm the hand-backs; JetStream will redeliver after ack_wait")
        }
        Err(_) => tracing::warn!(
            in_flight = tracker.len(),
            "drain time is up before NATS confirmed the hand-backs; JetStream will redeliver after ack_wait"
        ),
    }
    Ok(())
}

/// Runs one part of the start as a task of its own, stopped if the start ends without it
/// (the other part failed); a panic in it fails the start, naming `what`.
fn start_task<T: Send + 'static>(
    what: &'static str,
    part: impl Future<Output = Result<T>> + Send + 'static,
) -> impl Future<Output = Result<T>> {
    let task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(part));
    async move {
        task.await
            .map_err(|e| Error::Start(format!("{what} stopped: {e}")))?
    }
}

/// The JetStream resources a worker uses.
struct Ready {
    stream: stream::Stream,
    consumer: PullConsumer,
    records: kv::Store,
    objects: kv::Store,
    /// The max-deliveries advisories of the pool's consumer; none for an agent.
    advisories: Option<PullConsumer>,
    fleet: Fleet,
    rollouts: kv::Store,
    /// The rollout steps' consumer; none for an agent.
    steps: Option<PullConsumer>,
}

/// Makes sure the streams, buckets and consumers exist, retrying while NATS is
/// unreachable. `None` if shutdown came first.
async fn provision(
    js: &jetstream::Context,
    config: &Config,
    shutdown: &Shutdown,
) -> Result<Option<Ready>> {
    let settings = &config.nats.jetstream;
    let pool = config.pool_consumer();
    let mut retries = PROVISION_BACKOFF.retries();
    loop {
        let attempt = async {
            let stream = ensure_stream(js, settings.stream()).await?;
            ensure_stream(js, settings.dead_letter_stream()).await?;
            let records = ensure_bucket(js, settings.operations_bucket()).await?;
            let objects = ensure_bucket(js, settings.objects_bucket()).await?;
            // An agent sweeps nothing: reading a message by its sequence would let it read
            // any pool's operations (`docs/agents.md`).
            let advisories = match config.agent.cluster {
                Some(_) => None,
                None => Some(sweeper_consumer(js, settings, &pool.name).await?),
            };
            let consumer = ensure_consumer(&stream, &pool).await?;
            let rollouts = ensure_bucket(js, settings.rollouts_bucket()).await?;
            let steps_stream = ensure_stream(js, settings.steps_stream()).await?;
            let steps = match config.agent.cluster {
                Some(_) => None,
                None => Some(steps_consumer(&steps_stream, settings, pool.ack_wait).await?),
            };
            let fleet = Fleet::open(
                js,
                settings,
                shutdown.token(),
                longshore_contract::registry::fleet::Observing::Membership,
            )
            .await?;
            Ok::<_, ProvisionError>(Ready {
                stream,
                consumer,
                records,
                objects,
                advisories,
                fleet,
                rollouts,
                steps,
            })
        };
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = shutdown.started() => return Ok(None),
        };
        match outcome {
            Ok(ready) => {
                // Serve from the registry as it is, not a partial copy.
                tokio::select! {
                    () = ready.fleet.loaded() => return Ok(Some(ready)),
                    () = shutdown.started() => return Ok(None),
                }
            }
            Err(e) if refused(&e) => return Err(e.into()),
            Err(e) => {
                let pause = retries.next_delay();
                tracing::warn!(error = %e, retry_in = ?pause, "JetStream not ready");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.started() => return Ok(None),
                }
            }
        }
    }
}

/// The pool's durable consumer of max-deliveries advisories, and their stream.
async fn sweeper_consumer(
    js: &jetstream::Context,
    settings: &longshore_contract::jetstream::Settings,
    pool: &str,
) -> std::result::Result<PullConsumer, ProvisionError> {
    let advisories = js
        .get_or_create_stream(deadletter::advisory_stream(settings))
        .await
        .map_err(|e| ProvisionError::Stream {
            name: deadletter::ADVISORY_STREAM,
            source: e.into(),
        })?;
    let sweeper = deadletter::sweeper_consumer(pool);
    let name = sweeper.durable_name.clone().unwrap_or_default();
    advisories
        .get_or_create_consumer(&name, sweeper)
        .await
        .map_err(|e| ProvisionError::Consumer {
            name,
            source: e.into(),
        })
}

/// The hub workers' shared consumer of rollout steps.
async fn steps_consumer(
    steps: &stream::Stream,
    settings: &longshore_contract::jetstream::Settings,
    ack_wait: Duration,
) -> std::result::Result<PullConsumer, ProvisionError> {
    let config = settings.steps_consumer(ack_wait);
    let name = config.durable_name.clone().unwrap_or_default();
    steps
        .get_or_create_consumer(&name, config)
        .await
        .map_err(|e| ProvisionError::Consumer {
            name,
            source: e.into(),
        })
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

/// Whether any live member of any pool is of a version that writes its fences back
/// rather than releasing them with its final record (it does not say how it releases
/// them): while one is, this worker writes them back too, so the older one never waits
/// for a lease on a fence that only a record released. Read from the followed member
/// keys, again only when they changed.
fn older_members(
    fleet: &longshore_contract::registry::fleet::Fleet,
) -> impl Fn() -> bool + Send + Sync + 'static {
    let members = fleet.member_view.clone();
    let seen = std::sync::Mutex::new((u64::MAX, true));
    move || {
        let version = members.version();
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.0 != version {
            let mut older = false;
            members.scan(None, |_, member| {
                older = member.fences.unwrap_or(0)
                    < longshore_contract::registry::FENCES_RELEASED_BY_RECORD;
                !older
            });
            *seen = (version, older);
        }
        seen.1
    }
}
