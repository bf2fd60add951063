//! Which pool an operation belongs to, by the registry now, and what happens to one that
//! reached the wrong pool: its cluster moved to another pool after it was queued (or it
//! was queued on a legacy subject). It is forwarded, not carried out here: republished on
//! the serving pool's subject, then removed from this one.
//!
//! A forwarded operation keeps the stream sequence it was first queued with, in the
//! [`ORDER_HEADER`], and its fences compare that, not the new sequence: an operation
//! queued before another on the same object stays older than it, so it cannot be applied
//! over it after the move. The forwarded copy's `Nats-Msg-Id` is derived from the operation
//! id and that first sequence, so a forward repeated after a crash is dropped by the
//! stream's deduplication.

use std::sync::Arc;

use async_nats::jetstream::Message;
use longshore_contract::registry::ClusterEntry;
use longshore_contract::{Envelope, PoolName};

use crate::clusters::Cluster;
use crate::error::OpError;
use crate::operation::Context;
use crate::settle::{Delivery, Reply, Verdict};

pub use longshore_contract::cluster::ORDER_HEADER;

/// Where an operation goes.
pub enum Route {
    /// This pool serves its cluster: here is the client.
    Here(Arc<Cluster>),
    /// Another pool does.
    Forward(PoolName),
    /// No cluster of that name is registered (any more): why.
    Unknown(String),
}

/// The sequence that orders `message` among the operations on its objects: the one it was
/// first queued with.
pub fn order(message: &Message, sequence: u64) -> u64 {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(ORDER_HEADER))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(sequence)
}

/// Where `envelope`'s operation goes. The live copy of the registry answers; a cluster it
/// does not have is read from the bucket itself before it counts as unknown, since the
/// copy may be a moment behind a registration.
pub async fn route(ctx: &Context, envelope: &Envelope) -> Result<Route, OpError> {
    let cluster = &envelope.spec.cluster;
    let entry: Option<Arc<ClusterEntry>> = match ctx.fleet.entry(cluster) {
        Some(entry) => Some(entry),
        None => ctx
            .fleet
            .clusters
            .read(cluster.as_str())
            .await?
            .map(|v| Arc::new(v.value)),
    };
    let Some(entry) = entry else {
        return Ok(Route::Unknown(format!(
            "cluster {cluster} is not registered (it may have been removed)"
        )));
    };
    if entry.pool != ctx.pool {
        return Ok(Route::Forward(entry.pool.clone()));
    }
    Ok(Route::Here(ctx.clusters.get(&entry).await?))
}

/// Republishes `message` on `pool`'s subject, keeping its order, then removes it here.
pub async fn forward(
    ctx: &Context,
    message: &Message,
    envelope: &Envelope,
    order: u64,
    pool: &PoolName,
) -> Verdict {
    let mut headers = message.headers.clone().unwrap_or_default();
    headers.insert(ORDER_HEADER, order.to_string().as_str());
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{}.moved.{order}", envelope.id).as_str(),
    );
    longshore_contract::telemetry::inject_into_headers(&tracing::Span::current(), &mut headers);
    let subject = envelope.spec.cluster.subject(pool);
    let published = async {
        ctx.js
            .publish_with_headers(subject.clone(), headers, message.payload.clone())
            .await?
            .await
    }
    .await;
    match published {
        Ok(_) => {
            tracing::info!(to = %subject, "its cluster is served by pool {pool}; forwarded");
            Verdict {
                end: None,
                reply: Reply::Term,
                outcome: Delivery::Forwarded,
                class: None,
            }
        }
        Err(e) => {
            tracing::warn!(to = %subject, error = %e, "could not forward; will retry");
            let delay = crate::policy::backoff(1, &ctx.config.retry);
            Verdict {
                end: None,
                reply: Reply::Nak(delay),
                outcome: Delivery::Retried,
                class: Some(longshore_contract::record::ErrorClass::Transient),
            }
        }
    }
}
