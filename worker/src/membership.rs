//! A worker's part in the registry's observed state, beside carrying out operations:
//!
//! - it **heartbeats** its member key (`<pool>.<worker>`, with a TTL), so the pool's live
//!   replicas are known, and removes it when it drains;
//! - it **announces the pool's credentials** (their references only) when they change,
//!   after reloading `clusters.kubeconfig_dir`, so a registration naming a credential the
//!   pool does not have is refused, and an unserved cluster is shown as such;
//! - it **probes** the clusters it is responsible for (rendezvous hashing over the pool's
//!   live members: each cluster by exactly one member, spread evenly), writing what it saw
//!   with a TTL, so "served, but unreachable" shows, and a cluster nobody probes any more
//!   shows as not observed; a cluster it has not probed yet (new, or newly its) at once;
//! - it drops the clients it has not used for `clusters.idle_timeout`.
//!
//! At start it also registers the clusters its configuration names the old way
//! ([`seed`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use longshore_contract::registry::fleet::Fleet;
use longshore_contract::registry::{
    ClusterEntry, Liveness, Member, Observed, PoolCredentials, owner,
};
use longshore_contract::store::{Change, Seeded};
use longshore_contract::{ClusterName, PoolName};
use tokio::task::JoinHandle;

use crate::clusters::Clusters;
use crate::config::Config;
use crate::shutdown::Shutdown;

/// Probes at once, at most.
const PROBES_IN_FLIGHT: usize = 16;
/// How long a probe waits for the API server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Registers, for this pool, the clusters of the old-style configuration that the registry
/// lacks (a cluster removed through the API stays removed). Best effort.
pub async fn seed(fleet: &Fleet, clusters: &Clusters, pool: &PoolName, worker: &str) {
    let now = jiff::Timestamp::now();
    for (name, credentials) in clusters.seeds() {
        let Ok(cluster) = longshore_contract::ClusterName::new(name.clone()) else {
            tracing::warn!(context = %name, "not a DNS label, so not registered as a cluster");
            continue;
        };
        if fleet.entry(&cluster).is_some() {
            continue;
        }
        let entry = ClusterEntry {
            name: cluster.clone(),
            labels: Default::default(),
            pool: pool.clone(),
            credentials,
            registered_at: now,
            registered_by: format!("worker {worker}"),
            updated_at: now,
            updated_by: format!("worker {worker}"),
        };
        match fleet.clusters.seed(cluster.as_str(), &entry).await {
            Ok(Seeded::Created) => tracing::info!(%cluster, "registered from the configuration"),
            Ok(Seeded::Exists | Seeded::Removed) => {}
            Err(e) => {
                tracing::warn!(%cluster, error = %e, "could not register from the configuration")
            }
        }
    }
}

/// Runs the heartbeat, credentials, idle and probe loops until shutdown; the member key is
/// removed on the way out.
pub fn start(
    fleet: Fleet,
    clusters: Arc<Clusters>,
    pool: PoolName,
    config: Config,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let member = Member {
            pool: pool.clone(),
            worker: config.worker_id.clone(),
            started_at: jiff::Timestamp::now(),
            heartbeat_at: jiff::Timestamp::now(),
            fences: Some(longshore_contract::registry::FENCES_RELEASED_BY_RECORD),
        };
        let key = Member::key(&pool, &config.worker_id);
        let liveness = Liveness {
            probe: config.clusters.probe_interval,
            health_ttl: config.clusters.probe_interval * 3,
            ..Liveness::default()
        };
        let mut heartbeat = tokio::time::interval(liveness.heartbeat);
        let mut reload = tokio::time::interval(config.clusters.reload_interval);
        for t in [&mut heartbeat, &mut reload] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let probing = tokio::spawn(probe_loop(
            fleet.clone(),
            clusters.clone(),
            pool.clone(),
            config.worker_id.clone(),
            liveness,
            shutdown.clone(),
        ));
        let agent_for = config.agent_cluster();
        announce(
            &fleet,
            &clusters,
            &pool,
            &config.worker_id,
            agent_for.as_ref(),
        )
        .await;
        loop {
            tokio::select! {
                () = shutdown.started() => break,
                _ = heartbeat.tick() => {
                    let beat = Member { heartbeat_at: jiff::Timestamp::now(), ..member.clone() };
                    if let Err(e) = fleet.members.put_with_ttl(&key, &beat, liveness.member_ttl).await {
                        tracing::warn!(error = %e, "heartbeat not written");
                    }
                }
                _ = reload.tick() => {
                    if clusters.reload().await {
                        announce(&fleet, &clusters, &pool, &config.worker_id, agent_for.as_ref()).await;
                    }
                    clusters.drop_idle();
                }
            }
        }
        let _ = probing.await;
        // Leaving: the pool shows one replica fewer now, not when the TTL runs out.
        let left = fleet
            .members
            .modify(&key, None, |_| {
                Ok::<_, longshore_contract::store::StoreError>(Change::Delete)
            })
            .await;
        if let Err(e) = left {
            tracing::debug!(error = %e, "member key not removed; it expires");
        }
    })
}

/// Writes the pool's credentials references (and, for an agent pool, the cluster it is
/// in) if they differ from what is announced.
async fn announce(
    fleet: &Fleet,
    clusters: &Clusters,
    pool: &PoolName,
    worker: &str,
    agent_for: Option<&ClusterName>,
) {
    let references = clusters.references();
    let same =
        |p: &PoolCredentials| p.references == references && p.agent_for.as_ref() == agent_for;
    if fleet.pool_view.get(pool.as_str()).is_some_and(|p| same(&p)) {
        return;
    }
    let now = jiff::Timestamp::now();
    let announced = fleet
        .pools
        .modify(pool.as_str(), None, |current| {
            if current.is_some_and(same) {
                return Ok::<_, longshore_contract::store::StoreError>(Change::Keep);
            }
            Ok(Change::Write(PoolCredentials {
                references: references.clone(),
                agent_for: agent_for.cloned(),
                updated_by: worker.to_owned(),
                updated_at: Some(now),
            }))
        })
        .await;
    match announced {
        Ok(_) => {
            tracing::info!(%pool, credentials = references.len(), "pool credentials announced")
        }
        Err(e) => tracing::warn!(error = %e, "pool credentials not announced; will try again"),
    }
}

/// Every second, probes the clusters due then: each of this pool's clusters that this
/// member is responsible for, once per probe interval (spread over it by a hash of the
/// name), and at once if it has no observation yet. A round finishes before the next
/// starts, with at most [`PROBES_IN_FLIGHT`] probes at a time.
async fn probe_loop(
    fleet: Fleet,
    clusters: Arc<Clusters>,
    pool: PoolName,
    worker: String,
    liveness: Liveness,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    // The clusters this member has probed since it started: one it has not is probed at
    // once (just registered, or just become this member's to probe).
    let mut probed = std::collections::HashSet::<String>::new();
    loop {
        tokio::select! {
            () = shutdown.started() => return,
            _ = tick.tick() => {}
        }
        let due = due(
            &fleet,
            &pool,
            &worker,
            started.elapsed().as_secs(),
            liveness,
            &probed,
        );
        probed.extend(due.iter().map(|e| e.name.to_string()));
        let round = futures::stream::iter(due)
            .map(|entry| {
                let (fleet, clusters, pool, worker) = (&fleet, &clusters, &pool, &worker);
                async move {
                    let observed = probe(clusters, &entry, pool, worker).await;
                    let written = fleet
                        .health
                        .put_with_ttl(entry.name.as_str(), &observed, liveness.health_ttl)
                        .await;
                    if let Err(e) = written {
                        tracing::debug!(cluster = %entry.name, error = %e, "observation not written");
                    }
                }
            })
            .buffer_unordered(PROBES_IN_FLIGHT)
            .collect::<Vec<()>>();
        tokio::select! {
            () = shutdown.started() => return,
            _ = round => {}
        }
    }
}

/// The clusters this member should probe at second `tick`.
fn due(
    fleet: &Fleet,
    pool: &PoolName,
    worker: &str,
    tick: u64,
    liveness: Liveness,
    probed: &std::collections::HashSet<String>,
) -> Vec<ClusterEntry> {
    let members = fleet.members_of(pool);
    let interval = liveness.probe.as_secs().max(1);
    let mut due = Vec::new();
    fleet.cluster_view.scan(None, |name, entry| {
        if entry.pool != *pool || owner(name, &members).is_none_or(|m| m.worker != worker) {
            return true;
        }
        if !probed.contains(name) || slot(name) % interval == tick % interval {
            due.push(entry.clone());
        }
        true
    });
    due
}

fn slot(name: &str) -> u64 {
    name.bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

/// Reads the cluster's version, as a client of the pool would reach it.
async fn probe(
    clusters: &Clusters,
    entry: &ClusterEntry,
    pool: &PoolName,
    worker: &str,
) -> Observed {
    let started = Instant::now();
    let result = match clusters.once(entry).await {
        // Bounded apart from operations' request timeout: one silent cluster must not hold
        // up a round of probes for long.
        Ok(cluster) => match tokio::time::timeout(PROBE_TIMEOUT, cluster.version()).await {
            Ok(result) => result,
            Err(_) => Err(crate::error::OpError::Timeout {
                verb: crate::error::Verb::Get,
                object: format!("{} /version", entry.name),
                after: PROBE_TIMEOUT,
            }),
        },
        Err(e) => Err(e),
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    let (reachable, server_version, error, message) = match result {
        Ok(version) => (true, Some(version), None, None),
        Err(e) => {
            let class = crate::policy::class_of(&e);
            (
                false,
                None,
                Some(class.to_owned()),
                Some(short(&e.to_string())),
            )
        }
    };
    Observed {
        pool: pool.clone(),
        worker: worker.to_owned(),
        reachable,
        server_version,
        error,
        message,
        latency_ms,
        observed_at: jiff::Timestamp::now(),
    }
}

/// An error message short enough to show in a listing.
fn short(message: &str) -> String {
    let mut m: String = message.chars().take(200).collect();
    if m.len() < message.len() {
        m.push('…');
    }
    m
}
