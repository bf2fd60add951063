//! What `GET /metrics` reads from NATS before it answers: each pool's queue, the dead
//! letters, the registered clusters by phase, and the rollouts by state. At most every [`REFRESH_EVERY`] (a scrape
//! in between reads the last figures), and each read bounded in time, so `/metrics`
//! answers whatever NATS does.
//!
//! The queue is read here, not only by the workers, so that a pool whose workers are all
//! gone still shows its waiting operations.

use std::{collections::BTreeSet, time::Duration};

use longshore_contract::{
    PoolName,
    jetstream::{DEAD_LETTER_STREAM, STREAM},
    registry::Phase,
};

use crate::{
    context::Context,
    metrics::{ClusterLabels, PoolLabels, StateLabels},
};

pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
const READ_WITHIN: Duration = Duration::from_secs(2);

/// Refreshes the gauges read from NATS, unless they were refreshed in the last
/// [`REFRESH_EVERY`].
pub async fn refresh(ctx: &Context) {
    {
        let mut last = ctx.scraped.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < REFRESH_EVERY) {
            return;
        }
        *last = Some(std::time::Instant::now());
    }
    tokio::join!(queues(ctx), dead_letters(ctx), clusters(ctx), rollouts(ctx));
}

/// The dead letters kept: operations that exhausted their deliveries, waiting for a retry.
async fn dead_letters(ctx: &Context) {
    if ctx.operations().is_err() {
        return;
    }
    let read = ctx.js.get_stream(DEAD_LETTER_STREAM);
    if let Ok(Ok(stream)) = tokio::time::timeout(READ_WITHIN, read).await {
        let messages = stream.cached_info().state.messages;
        ctx.metrics
            .dead_letters
            .set(i64::try_from(messages).unwrap_or(i64::MAX));
    }
}

/// Each pool's consumer: what waits, what is being worked on, and when it last delivered.
async fn queues(ctx: &Context) {
    let Ok(fleet) = ctx.fleet() else { return };
    // Pools with a consumer: those announced by a worker, and those clusters name.
    let mut pools = BTreeSet::from([PoolName::default_pool().to_string()]);
    fleet.pool_view.scan(None, |name, _| {
        pools.insert(name.to_owned());
        true
    });
    fleet.cluster_view.scan(None, |_, entry| {
        pools.insert(entry.pool.to_string());
        true
    });
    let Ok(Ok(stream)) = tokio::time::timeout(READ_WITHIN, ctx.js.get_stream_no_info(STREAM)).await
    else {
        return;
    };
    let reads = pools.into_iter().map(|pool| {
        let stream = &stream;
        async move {
            let info = tokio::time::timeout(READ_WITHIN, stream.consumer_info(&pool)).await;
            (pool, info)
        }
    });
    for (pool, info) in futures::future::join_all(reads).await {
        let labels = PoolLabels { pool };
        let Ok(Ok(info)) = info else {
            // No consumer (no worker of this pool ever started), or no answer: no figure
            // rather than a wrong one.
            ctx.metrics.queue_pending.remove(&labels);
            ctx.metrics.queue_ack_pending.remove(&labels);
            ctx.metrics.queue_last_delivery.remove(&labels);
            continue;
        };
        let last = info.delivered.last_active.unwrap_or(info.created);
        let m = &ctx.metrics;
        m.queue_pending
            .get_or_create(&labels)
            .set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
        m.queue_ack_pending
            .get_or_create(&labels)
            .set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
        m.queue_last_delivery
            .get_or_create(&labels)
            .set(last.unix_timestamp());
    }
}

/// The registered clusters by phase, and one series for each cluster not ready.
async fn clusters(ctx: &Context) {
    let Ok(fleet) = ctx.fleet() else { return };
    let mut counts: std::collections::BTreeMap<&str, i64> =
        Phase::ALL.iter().map(|p| (p.as_str(), 0)).collect();
    let mut not_ready = BTreeSet::new();
    fleet.cluster_view.scan(None, |name, entry| {
        let phase = fleet.status(entry).phase;
        *counts.entry(phase.as_str()).or_default() += 1;
        if phase != Phase::Ready {
            not_ready.insert(ClusterLabels {
                cluster: name.to_owned(),
                phase: phase.as_str(),
            });
        }
        true
    });
    ctx.metrics.set_clusters(counts, not_ready);
}

/// The rollouts by state: one pass over every rollout's progress.
async fn rollouts(ctx: &Context) {
    let Ok(stores) = ctx.rollouts() else { return };
    let Ok(Ok(all)) = tokio::time::timeout(READ_WITHIN, stores.progress.scan("state.>")).await
    else {
        return;
    };
    let mut counts: std::collections::BTreeMap<&str, i64> = longshore_contract::rollout::Phase::ALL
        .iter()
        .map(|p| (p.as_str(), 0))
        .collect();
    for (_, progress) in &all {
        *counts.entry(progress.value.phase.as_str()).or_default() += 1;
    }
    for (state, n) in counts {
        ctx.metrics
            .rollouts
            .get_or_create(&StateLabels { state })
            .set(n);
    }
}
