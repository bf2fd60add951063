//! The dispatcher's side of the cluster registry: seeding it from the configuration,
//! routing an operation to the pool that serves its cluster, and what a cluster's removal
//! does to the operations still queued for it.

use std::collections::BTreeSet;

use async_nats::jetstream::{message::StreamMessage, stream::RawMessageErrorKind};
use longshore_contract::{
    ClusterName, Envelope, PoolName, State,
    cluster::{ORDER_HEADER, SUBJECT_PREFIX, legacy_subject},
    jetstream::STREAM,
    record::{End, ErrorClass, ErrorInfo},
    registry::{ClusterEntry, Credentials, fleet::Fleet},
    store::{Change, Seeded},
};

use crate::{
    context::Context,
    error::{Error, Result},
    request::Clusters,
};

/// The source recorded for clusters registered from the configuration.
pub const CONFIG_SOURCE: &str = "config";

/// Registers each cluster of the configuration's `clusters` list that the registry does
/// not have (with the default pool, and the kubeconfig context of its name). A cluster
/// removed through the API stays removed. Best effort: a failure is logged.
pub async fn seed(fleet: &Fleet, clusters: &BTreeSet<ClusterName>) {
    if clusters.is_empty() {
        return;
    }
    // From the registry as it is: what it has already costs no request.
    fleet.cluster_view.loaded().await;
    let now = jiff::Timestamp::now();
    for name in clusters.iter().filter(|c| fleet.entry(c).is_none()) {
        let entry = ClusterEntry {
            name: name.clone(),
            labels: Default::default(),
            pool: PoolName::default_pool(),
            credentials: Credentials::Kubeconfig {
                context: name.to_string(),
            },
            registered_at: now,
            registered_by: CONFIG_SOURCE.into(),
            updated_at: now,
            updated_by: CONFIG_SOURCE.into(),
        };
        match fleet.clusters.seed(name.as_str(), &entry).await {
            Ok(Seeded::Created) => {
                tracing::info!(cluster = %name, "registered from the configuration")
            }
            Ok(Seeded::Exists) => {}
            Ok(Seeded::Removed) => tracing::info!(
                cluster = %name,
                "in the configuration but removed from the registry; left removed"
            ),
            Err(e) => {
                tracing::warn!(cluster = %name, error = %e, "could not register from the configuration")
            }
        }
    }
}

impl Clusters for Fleet {
    fn knows(&self, cluster: &ClusterName) -> bool {
        self.entry(cluster).is_some()
    }

    fn describe(&self) -> String {
        let mut names = Vec::new();
        self.cluster_view.scan(None, |name, _| {
            names.push(name.to_owned());
            names.len() <= 10
        });
        match self.cluster_view.len() {
            0 => "no cluster is registered".into(),
            n if n <= 10 => format!("registered clusters: {}", names.join(", ")),
            n => format!("{n} clusters are registered; GET /v1/clusters lists them"),
        }
    }
}

/// The pool an operation for `cluster` goes to, by the registry now.
pub fn route(ctx: &Context, cluster: &ClusterName) -> Result<PoolName> {
    ctx.fleet()?
        .entry(cluster)
        .map(|e| e.pool.clone())
        .ok_or_else(|| {
            Error::field(
                "cluster",
                format!("cluster {:?} is not registered", cluster.as_str()),
            )
        })
}

/// Messages still in the work queue for `cluster`, in any pool's subject or the legacy one.
pub async fn queued(ctx: &Context, cluster: &ClusterName) -> Result<u64> {
    let stream = ctx
        .js
        .get_stream(STREAM)
        .await
        .map_err(|e| Error::Unavailable(format!("opening the work queue: {e}")))?;
    let mut count = 0;
    for filter in [
        format!("{SUBJECT_PREFIX}.*.{cluster}"),
        legacy_subject(cluster),
    ] {
        let info = stream
            .info_with_subjects(filter)
            .await
            .map_err(|e| Error::Unavailable(format!("reading the work queue: {e}")))?;
        use futures::StreamExt;
        let mut subjects = info;
        while let Some(subject) = subjects.next().await {
            let (_, n) =
                subject.map_err(|e| Error::Unavailable(format!("reading the work queue: {e}")))?;
            count += n as u64;
        }
    }
    Ok(count)
}

/// After a forced removal of `cluster`: every operation still queued for it (not yet
/// claimed by a worker) is ended `failed`, class `unknown_cluster`, and its message
/// removed, so it reaches a terminal state even if no worker ever delivers it. One a worker
/// has claimed is left to that worker, which finds the cluster gone. Returns how many were
/// ended.
pub async fn end_queued(ctx: &Context, cluster: &ClusterName, by: &str) -> Result<u64> {
    let stream = ctx
        .js
        .get_stream(STREAM)
        .await
        .map_err(|e| Error::Unavailable(format!("opening the work queue: {e}")))?;
    let records = ctx.operations()?;
    let mut ended = 0;
    for filter in [
        format!("{SUBJECT_PREFIX}.*.{cluster}"),
        legacy_subject(cluster),
    ] {
        let mut next = 1;
        loop {
            let Some(message) = next_queued(&stream, &filter, next).await? else {
                break;
            };
            next = message.sequence + 1;
            let Ok(envelope) = Envelope::from_message(Some(&message.headers), &message.payload)
            else {
                continue;
            };
            let error = ErrorInfo {
                class: ErrorClass::UnknownCluster,
                message: format!(
                    "cluster {cluster} was removed from the registry (forced, by {by}) while this operation was queued"
                ),
            };
            let now = jiff::Timestamp::now();
            let mut failed_it = false;
            records
                .modify(envelope.id.as_str(), None, |record| match record {
                    Some(r) if r.state == State::Queued => {
                        let mut r = r.clone();
                        r.finish(End::Failed(error.clone()), Vec::new(), "dispatcher", now);
                        failed_it = true;
                        Ok::<_, Error>(Change::Write(r))
                    }
                    _ => Ok(Change::Keep),
                })
                .await?;
            if failed_it {
                ended += 1;
                if let Err(e) = stream.delete_message(message.sequence).await {
                    // Its record is terminal: a worker that delivers it acknowledges it.
                    tracing::warn!(seq = message.sequence, error = %e, "ended, but its message could not be removed");
                }
            }
        }
    }
    Ok(ended)
}

/// After `cluster` moved from pool `from` (which has no live replica) to `to`: its queued
/// operations are moved too, so they are not stranded with a pool nobody runs. Each is
/// republished on the new subject exactly as a worker of `from` would forward it (keeping
/// the sequence it was first queued with, under the same derived `Nats-Msg-Id`, so a
/// replica of `from` that starts meanwhile and forwards it too is deduplicated), then
/// removed. Returns how many were moved.
pub async fn move_queued(
    ctx: &Context,
    cluster: &ClusterName,
    from: &PoolName,
    to: &PoolName,
) -> Result<u64> {
    let stream = ctx
        .js
        .get_stream(STREAM)
        .await
        .map_err(|e| Error::Unavailable(format!("opening the work queue: {e}")))?;
    let subject = cluster.subject(from);
    let mut moved = 0;
    let mut next = 1;
    loop {
        let Some(message) = next_queued(&stream, &subject, next).await? else {
            break;
        };
        next = message.sequence + 1;
        let order = message
            .headers
            .get(ORDER_HEADER)
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .unwrap_or(message.sequence);
        let mut headers = message.headers.clone();
        headers.insert(ORDER_HEADER, order.to_string().as_str());
        let Ok(envelope) = Envelope::from_message(Some(&message.headers), &message.payload) else {
            // Unreadable: left for the old pool, whose worker terminates it.
            continue;
        };
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}.moved.{order}", envelope.id).as_str(),
        );
        ctx.js
            .publish_with_headers(cluster.subject(to), headers, message.payload.clone())
            .await
            .map_err(|e| Error::Unavailable(format!("moving a queued operation: {e}")))?
            .await
            .map_err(|e| Error::Unavailable(format!("moving a queued operation: {e}")))?;
        if let Err(e) = stream.delete_message(message.sequence).await {
            // The copy is queued for the new pool; a leftover here is forwarded by a
            // replica of the old one, and deduplicated, if one ever starts.
            tracing::warn!(seq = message.sequence, error = %e, "moved, but the original could not be removed");
        }
        moved += 1;
    }
    Ok(moved)
}

/// The first message at or after sequence `from` on `subject` (a filter), if any. Through
/// the stream leader (the work queue does not allow direct gets).
async fn next_queued(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
    from: u64,
) -> Result<Option<StreamMessage>> {
    match stream
        .raw_message_builder()
        .sequence(from)
        .next_by_subject(subject)
        .send()
        .await
    {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(Error::Unavailable(format!("reading the work queue: {e}"))),
    }
}
