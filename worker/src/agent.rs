//! An agent registers the cluster it serves (`agent.cluster`) for its own pool, with the
//! labels of its configuration, and keeps that entry so: the pool, the labels and the
//! credential reference are the agent's to say, since it is the one inside the cluster.
//! Who registered it first, and when, are kept. See `docs/agents.md`.

use std::time::Duration;

use longshore_contract::backoff::Backoff;
use longshore_contract::registry::fleet::Fleet;
use longshore_contract::registry::{ClusterEntry, Credentials};
use longshore_contract::store::{Change, Modified, StoreError};
use longshore_contract::{ClusterName, PoolName};

use crate::clusters::Clusters;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

/// The credential an agent serves `cluster` with: its service account when
/// `clusters.in_cluster` names it, else the kubeconfig context of the same name. An error
/// (which ends the start) when the worker has no such credential.
pub fn credentials(
    config: &Config,
    clusters: &Clusters,
    cluster: &ClusterName,
) -> Result<Credentials> {
    let credentials = if config.clusters.in_cluster.as_deref() == Some(cluster.as_str()) {
        Credentials::InCluster
    } else {
        Credentials::Kubeconfig {
            context: cluster.to_string(),
        }
    };
    if !clusters.references().contains(&credentials.reference()) {
        return Err(Error::Config(format!(
            "agent.cluster: no credentials for {cluster}: set clusters.in_cluster = {cluster:?}, or give a kubeconfig context named {cluster}"
        )));
    }
    Ok(credentials)
}

/// Registers `cluster` as the agent's configuration says, retrying until it is written or
/// shutdown begins (until then the hub's dispatchers may not know the cluster, or know it
/// under another pool).
pub async fn register(
    fleet: &Fleet,
    config: &Config,
    cluster: &ClusterName,
    credentials: Credentials,
    shutdown: &Shutdown,
) {
    let pool = config.pool_name();
    let mut retries = RETRY.retries();
    loop {
        match write(fleet, config, cluster, &pool, &credentials).await {
            Ok(written) => {
                if written {
                    tracing::info!(%cluster, %pool, "registered the cluster this agent serves");
                }
                return;
            }
            Err(e) => {
                let pause = retries.next_delay();
                tracing::warn!(%cluster, error = %e, retry_in = ?pause, "could not register the cluster this agent serves");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.started() => return,
                }
            }
        }
    }
}

/// Writes the entry if it differs from what the configuration says; whether it wrote.
async fn write(
    fleet: &Fleet,
    config: &Config,
    cluster: &ClusterName,
    pool: &PoolName,
    credentials: &Credentials,
) -> std::result::Result<bool, StoreError> {
    let now = jiff::Timestamp::now();
    let by = format!("agent {}", config.worker_id);
    let modified = fleet
        .clusters
        .modify(cluster.as_str(), None, |current: Option<&ClusterEntry>| {
            let wanted = |e: &ClusterEntry| {
                e.pool == *pool && e.labels == config.agent.labels && e.credentials == *credentials
            };
            Ok::<_, StoreError>(match current {
                Some(e) if wanted(e) => Change::Keep,
                Some(e) => Change::Write(ClusterEntry {
                    labels: config.agent.labels.clone(),
                    pool: pool.clone(),
                    credentials: credentials.clone(),
                    updated_at: now,
                    updated_by: by.clone(),
                    ..e.clone()
                }),
                None => Change::Write(ClusterEntry {
                    name: cluster.clone(),
                    labels: config.agent.labels.clone(),
                    pool: pool.clone(),
                    credentials: credentials.clone(),
                    registered_at: now,
                    registered_by: by.clone(),
                    updated_at: now,
                    updated_by: by.clone(),
                }),
            })
        })
        .await?;
    Ok(!matches!(modified, Modified::Kept(_)))
}
