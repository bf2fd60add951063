//! Dead letters: an operation that exhausted its deliveries is copied to the
//! `LONGSHORE_DEAD_LETTERS` stream, recorded `dead_lettered`, and removed from the work queue,
//! in that order (a `Term` deletes the message from a work-queue stream, so the copy comes
//! first). Two paths lead here:
//!
//! - the worker holding the last delivery sees a transient failure ([`copy`], then the
//!   record, then `Term`; see [`crate::operation`]);
//! - no worker finished the last delivery (it died, or could not copy or record): JetStream
//!   then publishes a max-deliveries advisory and leaves the message in the stream. The
//!   [`Sweeper`] handles those advisories.
//!
//! Advisories are plain NATS messages, lost if nobody listens at that moment; so they are
//! captured in a small work-queue stream, `LONGSHORE_MAX_DELIVERIES`, which each pool's
//! sweeper consumes durably (one durable consumer per pool, `<pool>-sweeper`): an advisory
//! published while no worker runs is handled when one starts. Both paths copy with the same
//! `Nats-Msg-Id` (operation id and original sequence), so a double copy within the
//! duplicate window is dropped by the stream.
//!
//! An agent pool sweeps nothing itself (reading a message by its sequence would let it read
//! any pool's operations): the hub's workers sweep for it, sharing `<agent pool>-sweeper`
//! ([`sweep_agent_pools`]).

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use longshore_contract::backoff::Backoff;
use longshore_contract::jetstream::{STREAM, Settings};
use longshore_contract::record::{ErrorClass, ErrorInfo};
use longshore_contract::{ClusterName, Envelope, OperationId, deadletter};
use serde::Deserialize;

use crate::shutdown::Shutdown;
use crate::status::StatusStore;

/// The stream that keeps max-deliveries advisories of the work queue until swept.
pub const ADVISORY_STREAM: &str = "LONGSHORE_MAX_DELIVERIES";

/// The subject of the max-deliveries advisories of `pool`'s consumer.
pub fn advisory_subject(pool: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{STREAM}.{pool}")
}

pub fn advisory_stream(settings: &Settings) -> stream::Config {
    stream::Config {
        name: ADVISORY_STREAM.into(),
        description: Some("max-deliveries advisories of the longshore work queue".into()),
        subjects: vec![advisory_subject("*")],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        max_age: settings.retention,
        ..Default::default()
    }
}

pub fn sweeper_consumer(pool: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(format!("{pool}-sweeper")),
        description: Some(format!("longshore dead-letter sweeper of pool {pool}")),
        ack_policy: consumer::AckPolicy::Explicit,
        filter_subject: advisory_subject(pool),
        ..Default::default()
    }
}

/// Copies an operation's message to the dead-letter stream and waits for the stream's
/// acknowledgement.
pub async fn copy(
    js: &jetstream::Context,
    cluster: &ClusterName,
    id: &OperationId,
    sequence: u64,
    deliveries: u64,
    reason: &str,
    payload: Bytes,
) -> Result<(), String> {
    let headers = deadletter::headers(id, sequence, deliveries, reason);
    js.publish_with_headers(deadletter::subject(cluster, id), headers, payload)
        .await
        .map_err(|e| format!("dead letter not sent: {e}"))?
        .await
        .map_err(|e| format!("dead letter not acknowledged: {e}"))?;
    Ok(())
}

/// The fields of a max-deliveries advisory the sweeper uses.
#[derive(Debug, Deserialize)]
struct Advisory {
    stream_seq: u64,
    deliveries: u64,
}

/// Dead-letters the operations whose last delivery no worker finished.
#[derive(Clone)]
pub struct Sweeper {
    pub js: jetstream::Context,
    /// The work-queue stream.
    pub ops: stream::Stream,
    pub status: StatusStore,
}

/// Pause before an advisory whose sweep failed is tried again.
const SWEEP_RETRY: Duration = Duration::from_secs(1);
/// Pauses while the advisories cannot be read.
const READ_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Sweeps, beside this worker's own pool, the advisories of every agent pool announced
/// (`agentFor`), each from its `<pool>-sweeper` consumer, until shutdown.
pub async fn sweep_agent_pools(
    sweeper: Sweeper,
    fleet: longshore_contract::registry::fleet::Fleet,
    settings: Settings,
    shutdown: Shutdown,
) {
    let mut started = std::collections::BTreeSet::new();
    let mut tasks = Vec::new();
    let mut seen = 0;
    loop {
        let mut agents = Vec::new();
        fleet.pool_view.scan(None, |pool, announced| {
            if announced.agent_for.is_some() && !started.contains(pool) {
                agents.push(pool.to_owned());
            }
            true
        });
        for pool in agents {
            let advisories = async {
                let stream = sweeper
                    .js
                    .get_or_create_stream(advisory_stream(&settings))
                    .await
                    .map_err(|e| e.to_string())?;
                let config = sweeper_consumer(&pool);
                let name = config.durable_name.clone().unwrap_or_default();
                stream
                    .get_or_create_consumer(&name, config)
                    .await
                    .map_err(|e| e.to_string())
            };
            match advisories.await {
                Ok(advisories) => {
                    tracing::info!(%pool, "sweeping the agent pool's max-deliveries advisories");
                    tasks.push(tokio::spawn(
                        sweeper.clone().run(advisories, shutdown.clone()),
                    ));
                    started.insert(pool);
                }
                // Tried again at the next change of the pools, or within READ_BACKOFF's cap.
                Err(e) => {
                    tracing::warn!(%pool, error = %e, "cannot sweep the agent pool's advisories yet")
                }
            }
        }
        tokio::select! {
            version = fleet.pool_view.changed_since(seen) => seen = version,
            () = tokio::time::sleep(READ_BACKOFF.delay(u64::MAX)) => {}
            () = shutdown.started() => break,
        }
    }
    for task in tasks {
        let _ = task.await;
    }
}

impl Sweeper {
    /// Handles advisories until shutdown.
    pub async fn run(self, advisories: consumer::PullConsumer, shutdown: Shutdown) {
        let mut retries = READ_BACKOFF.retries();
        loop {
            let mut messages = tokio::select! {
                m = advisories.messages() => match m {
                    Ok(m) => m,
                    Err(e) => {
                        let pause = retries.next_delay();
                        tracing::warn!(error = %e, retry_in = ?pause, "cannot read max-deliveries advisories");
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = shutdown.started() => return,
                        }
                        continue;
                    }
                },
                () = shutdown.started() => return,
            };
            retries.reset();
            loop {
                let next = tokio::select! {
                    next = messages.next() => next,
                    () = shutdown.started() => return,
                };
                match next {
                    Some(Ok(message)) => self.handle(message).await,
                    Some(Err(e)) => tracing::debug!(error = %e, "advisory pull interrupted"),
                    None => break,
                }
            }
        }
    }

    async fn handle(&self, message: jetstream::Message) {
        let reply = match serde_json::from_slice::<Advisory>(&message.payload) {
            Ok(advisory) => match self.sweep(&advisory).await {
                Ok(()) => AckKind::Ack,
                Err(e) => {
                    tracing::warn!(error = %e, seq = advisory.stream_seq, "sweep failed; will retry");
                    AckKind::Nak(Some(SWEEP_RETRY))
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "unreadable max-deliveries advisory; dropping it");
                AckKind::Ack
            }
        };
        if let Err(e) = message.ack_with(reply).await {
            tracing::debug!(error = %e, "advisory acknowledgement not sent");
        }
    }

    /// Copies the message at `advisory.stream_seq` to the dead letters and records it
    /// `dead_lettered` (unless its record is already terminal: then the operation was
    /// settled and only its message is left), then deletes it from the work queue.
    async fn sweep(&self, advisory: &Advisory) -> Result<(), String> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        let seq = advisory.stream_seq;
        let stored = match self.ops.get_raw_message(seq).await {
            Ok(stored) => stored,
            // Already removed (the last worker did terminate it after all).
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(()),
            Err(e) => return Err(format!("reading message {seq}: {e}")),
        };
        let envelope = Envelope::from_message(Some(&stored.headers), &stored.payload).ok();
        let id = envelope.as_ref().map(|e| e.id.clone()).or_else(|| {
            let header = stored.headers.get(async_nats::header::NATS_MESSAGE_ID)?;
            OperationId::parse(header.as_str()).ok()
        });
        let cluster =
            longshore_contract::cluster::parse_subject(&stored.subject).map(|(_, cluster)| cluster);
        match (id, cluster) {
            (Some(id), Some(cluster)) => {
                let span = tracing::info_span!(
                    "dead_letter",
                    op_id = %id,
                    seq = i64::try_from(seq).unwrap_or(i64::MAX)
                );
                let _enter = span.enter();
                let terminal = self
                    .status
                    .state(&id)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some_and(|s| s.is_terminal());
                if !terminal {
                    let reason = format!(
                        "no worker finished the operation within its {} deliveries",
                        advisory.deliveries
                    );
                    copy(
                        &self.js,
                        &cluster,
                        &id,
                        seq,
                        advisory.deliveries,
                        &reason,
                        stored.payload.clone(),
                    )
                    .await?;
                    let info = ErrorInfo {
                        class: ErrorClass::Transient,
                        message: reason,
                    };
                    self.status
                        .dead_letter_unclaimed(&id, envelope.as_ref(), info)
                        .await
                        .map_err(|e| e.to_string())?;
                    tracing::warn!("dead-lettered an operation whose last delivery did not finish");
                }
                // Over either way: its rollout counts it before the message goes.
                if let Some(link) = envelope.as_ref().and_then(|e| e.rollout.as_ref()) {
                    crate::rollouts::report(&self.js, link, &id).await?;
                }
            }
            // Unreadable messages are terminated on their first delivery; one that still
            // reaches here cannot be named in a dead letter.
            _ => tracing::error!(
                seq,
                "removing an unidentifiable message that exhausted its deliveries"
            ),
        }
        use async_nats::jetstream::{ErrorCode, stream::DeleteMessageErrorKind};
        match self.ops.delete_message(seq).await {
            Ok(_) => Ok(()),
            // Gone meanwhile is as good as deleted.
            Err(e)
                if matches!(e.kind(), DeleteMessageErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::NO_MESSAGE_FOUND) =>
            {
                Ok(())
            }
            Err(e) => Err(format!("deleting message {seq}: {e}")),
        }
    }
}
