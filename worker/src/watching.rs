//! Watching the pool's clusters with the same replicas that carry out operations: each
//! cluster is watched by exactly one live member of its pool, the one holding its lease.
//!
//! - **Who should watch.** A cluster belongs to the member that rendezvous hashing picks
//!   among the pool's live members ([`owner`]), as for probes. Every member computes the
//!   same answer from the same membership, so there is no leader and nothing to configure
//!   per replica.
//! - **Leases.** A member watches a cluster only while it holds the cluster's key in
//!   `LONGSHORE_WATCH_LEASES`: taken when free (compare-and-set against the key's last
//!   entry, so two claimants cannot both win), renewed by compare-and-set at its revision
//!   every third of the key's TTL, and released (deleted at its revision) when the cluster
//!   is no longer its own. A renewal refused, or none made within the TTL (the member is
//!   cut off from NATS), stops its watch: a member that may have lost its lease does not
//!   go on watching.
//! - **Takeover.** A killed member stops renewing: its member key expires within
//!   `member_ttl` (6 s), so the others agree on new owners, and its leases within the key
//!   TTL (four fifths of `watch.lease`). The new owner sees the key go (it follows the
//!   bucket) and claims it at once.
//! - **Scaling.** A member that joins takes over the clusters that rendezvous hashing now
//!   gives it as their old holders release them: the old holder stops its watch first, then
//!   deletes the key, and the new one claims it.
//!
//! What a watch does with what it sees (inventory, health, drift, events) is in
//! [`crate::inventory`]; each record it writes is fenced by the lease's epoch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use longshore_contract::PoolName;
use longshore_contract::backoff::Backoff;
use longshore_contract::registry::fleet::Fleet;
use longshore_contract::registry::{ClusterEntry, Lease, owner};
use longshore_contract::spec::ObjectRef;
use longshore_contract::store::StoreErrorKind;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clusters::Clusters;
use crate::config::WatchConfig;
use crate::error::{OpError, Verb};
use crate::inventory::{self, WatchState};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

use longshore_contract::inventory::MANAGED_LABEL;

/// Lease writes at once, at most.
const WRITES_IN_FLIGHT: usize = 32;
/// Changes to the registry, members and leases are acted on together, at most this often.
const SETTLE: Duration = Duration::from_millis(50);
/// Even with no change seen, leases are looked at this often.
const TICK: Duration = Duration::from_millis(500);
/// A watch that failed starts again after this backoff.
const RESTART: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
/// A watch request's own timeout: it is then continued from where it was.
const WATCH_TIMEOUT_S: u32 = 290;

/// What starts the watching loop.
pub struct Watching {
    pub fleet: Fleet,
    /// Where events are published.
    pub js: async_nats::jetstream::Context,
    pub clusters: Arc<Clusters>,
    pub pool: PoolName,
    pub worker: String,
    pub config: WatchConfig,
    pub metrics: Arc<Metrics>,
}

/// Runs until shutdown, then stops every watch and releases every lease.
pub fn start(w: Watching, shutdown: Shutdown) -> JoinHandle<()> {
    tokio::spawn(async move {
        if !w.config.enabled {
            return;
        }
        let Some(leases) = w.fleet.lease_view.clone() else {
            return;
        };
        let kinds = w.config.parsed_kinds().unwrap_or_default();
        let mut held: BTreeMap<String, Held> = BTreeMap::new();
        let mut seen = (0, 0, 0);
        // Who should watch what changes only with the registry and the membership, not with
        // the leases (renewed all the time by every member): worked out again only then.
        let mut want = BTreeMap::new();
        let mut want_of = None;
        loop {
            let (fleet, cv, mv, lv) = (
                &w.fleet,
                w.fleet.cluster_view.version(),
                w.fleet.member_view.version(),
                leases.version(),
            );
            if (cv, mv, lv) == seen {
                tokio::select! {
                    () = shutdown.started() => break,
                    () = tokio::time::sleep(TICK) => {}
                    _ = fleet.cluster_view.changed_since(cv) => {}
                    _ = fleet.member_view.changed_since(mv) => {}
                    _ = leases.changed_since(lv) => {}
                }
                tokio::time::sleep(SETTLE).await;
            }
            seen = (cv, mv, lv);
            if shutdown.is_started() {
                break;
            }
            if want_of != Some((cv, mv)) {
                want = wanted(&w, &held);
                want_of = Some((cv, mv));
            }
            release(&w, &mut held, |name| !want.contains_key(name)).await;
            renew(&w, &mut held).await;
            claim(&w, &mut held, &want, &kinds, &leases).await;
            w.metrics.watch_leases.set(held.len() as i64);
        }
        release(&w, &mut held, |_| true).await;
        w.metrics.watch_leases.set(0);
    })
}

/// A lease this member holds, and the watch it runs under it.
struct Held {
    revision: u64,
    acquired_at: jiff::Timestamp,
    renewed: Instant,
    reference: String,
    state: Arc<WatchState>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Held {
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The clusters this member should watch, with their entries: those of its pool that
/// rendezvous hashing gives it among the live members. While its own member key is not
/// seen (not written yet, or a heartbeat late), it claims nothing new but keeps what it
/// holds: its leases, not its heartbeat, say whether it may watch.
fn wanted(w: &Watching, held: &BTreeMap<String, Held>) -> BTreeMap<String, Arc<ClusterEntry>> {
    let members = w.fleet.members_of(&w.pool);
    let member = members.iter().any(|m| m.worker == w.worker);
    let mut want = BTreeMap::new();
    w.fleet.cluster_view.scan(None, |name, entry| {
        let mine = if member {
            owner(name, &members).is_some_and(|m| m.worker == w.worker)
        } else {
            held.contains_key(name)
        };
        if entry.pool == w.pool && mine {
            want.insert(name.to_owned(), Arc::new(entry.clone()));
        }
        true
    });
    want
}

/// Stops the watches of the held clusters `drop` picks, then gives their leases up.
async fn release(w: &Watching, held: &mut BTreeMap<String, Held>, drop: impl Fn(&str) -> bool) {
    let names: Vec<String> = held.keys().filter(|n| drop(n)).cloned().collect();
    let gone: Vec<(String, Held)> = names
        .into_iter()
        .filter_map(|n| held.remove(&n).map(|h| (n, h)))
        .collect();
    futures::stream::iter(gone)
        .for_each_concurrent(WRITES_IN_FLIGHT, |(name, h)| async move {
            let revision = h.revision;
            // The watch ends before the key goes: the next holder starts after this one
            // stopped.
            h.stop().await;
            if let Err(e) = w.fleet.leases.delete_if(&name, revision).await {
                tracing::debug!(cluster = %name, error = %e, "lease not released; it expires");
            }
            tracing::debug!(cluster = %name, "watch lease released");
        })
        .await;
}

/// Renews the leases due, and stops the watches of those it may have lost.
async fn renew(w: &Watching, held: &mut BTreeMap<String, Held>) {
    let every = w.config.renew_every();
    let ttl = w.config.key_ttl();
    let due: Vec<(String, u64, jiff::Timestamp, Arc<WatchState>)> = held
        .iter()
        .filter(|(_, h)| h.renewed.elapsed() >= every)
        .map(|(n, h)| (n.clone(), h.revision, h.acquired_at, h.state.clone()))
        .collect();
    let results: Vec<(String, Result<u64, StoreErrorKind>)> = futures::stream::iter(due)
        .map(|(name, revision, acquired_at, state)| async move {
            let lease = Lease {
                pool: w.pool.clone(),
                holder: w.worker.clone(),
                acquired_at,
                renewed_at: jiff::Timestamp::now(),
                current_at: state.current_at(),
                objects: Some(state.objects()),
            };
            let written = w
                .fleet
                .leases
                .write_with_ttl_if(&name, &lease, ttl, Some(revision))
                .await
                .map_err(|e| e.kind());
            (name, written)
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    for (name, result) in results {
        let lost = match result {
            Ok(revision) => {
                if let Some(h) = held.get_mut(&name) {
                    h.revision = revision;
                    h.renewed = Instant::now();
                }
                false
            }
            Err(StoreErrorKind::Changed) => true,
            // Not renewed in time: another member may hold it by now.
            Err(_) => held.get(&name).is_some_and(|h| h.renewed.elapsed() >= ttl),
        };
        if lost && let Some(h) = held.remove(&name) {
            tracing::warn!(cluster = %name, "watch lease lost; watch stopped");
            w.metrics.watch_losses.inc();
            h.stop().await;
        }
    }
}

/// Claims the free leases of the clusters this member should watch, and starts their
/// watches. One held under another credential reference is handed back and claimed anew.
async fn claim(
    w: &Watching,
    held: &mut BTreeMap<String, Held>,
    want: &BTreeMap<String, Arc<ClusterEntry>>,
    kinds: &[(String, String)],
    leases: &longshore_contract::registry::follow::Follower<Lease>,
) {
    let stale: BTreeSet<String> = held
        .iter()
        .filter(|(n, h)| {
            want.get(*n)
                .is_some_and(|e| e.credentials.reference() != h.reference)
        })
        .map(|(n, _)| n.clone())
        .collect();
    if !stale.is_empty() {
        release(w, held, |n| stale.contains(n)).await;
    }
    let free: Vec<Arc<ClusterEntry>> = want
        .iter()
        .filter(|(n, _)| !held.contains_key(*n) && leases.get(n).is_none())
        .map(|(_, e)| e.clone())
        .collect();
    let ttl = w.config.key_ttl();
    let claimed: Vec<(Arc<ClusterEntry>, u64, jiff::Timestamp)> = futures::stream::iter(free)
        .map(|entry| async move {
            let now = jiff::Timestamp::now();
            let lease = Lease {
                pool: w.pool.clone(),
                holder: w.worker.clone(),
                acquired_at: now,
                renewed_at: now,
                current_at: None,
                objects: None,
            };
            let written = w
                .fleet
                .leases
                .write_with_ttl_if(entry.name.as_str(), &lease, ttl, None)
                .await;
            match written {
                Ok(revision) => Some((entry, revision, now)),
                Err(e) => {
                    tracing::debug!(cluster = %entry.name, error = %e, "watch lease not taken");
                    None
                }
            }
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .filter_map(futures::future::ready)
        .collect()
        .await;
    for (entry, revision, acquired_at) in claimed {
        tracing::debug!(cluster = %entry.name, "watch lease taken");
        w.metrics.watch_claims.inc();
        let stop = CancellationToken::new();
        let state = Arc::new(WatchState::new(kinds.len()));
        let task = tokio::spawn(watch_cluster(
            ClusterWatch {
                clusters: w.clusters.clone(),
                fleet: w.fleet.clone(),
                js: w.js.clone(),
                entry: entry.clone(),
                worker: w.worker.clone(),
                epoch: revision,
                metrics: w.metrics.clone(),
                state: state.clone(),
            },
            kinds.to_vec(),
            stop.clone(),
        ));
        held.insert(
            entry.name.to_string(),
            Held {
                revision,
                acquired_at,
                renewed: Instant::now(),
                reference: entry.credentials.reference(),
                state,
                stop,
                task,
            },
        );
    }
}

/// What one cluster's watch works with.
struct ClusterWatch {
    clusters: Arc<Clusters>,
    fleet: Fleet,
    js: async_nats::jetstream::Context,
    entry: Arc<ClusterEntry>,
    worker: String,
    /// The revision at which this member took the lease: its inventory writes' fence.
    epoch: u64,
    metrics: Arc<Metrics>,
    state: Arc<WatchState>,
}

/// Keeps the cluster's inventory from watches of each of `kinds` until `stop`, or until a
/// later lease holder is found to have written (then it stops of itself).
async fn watch_cluster(w: ClusterWatch, kinds: Vec<(String, String)>, stop: CancellationToken) {
    let mut failures = 0u64;
    let keeper = loop {
        let loaded = inventory::Keeper::load(
            w.fleet.clone(),
            w.js.clone(),
            w.entry.name.clone(),
            w.worker.clone(),
            w.epoch,
            w.metrics.clone(),
            w.state.clone(),
        );
        let loaded = tokio::select! {
            () = stop.cancelled() => return,
            loaded = loaded => loaded,
        };
        match loaded {
            Ok(keeper) => break Arc::new(keeper),
            Err(e) => {
                failures += 1;
                tracing::debug!(cluster = %w.entry.name, error = %e, "inventory not read; trying again");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RESTART.delay(failures)) => {}
                }
            }
        }
    };
    let stop = stop.child_token();
    let watches = kinds.into_iter().map(|(api_version, kind)| {
        let (w, keeper, stop) = (&w, keeper.clone(), stop.clone());
        async move {
            let object = ObjectRef {
                api_version,
                kind,
                namespace: None,
                name: String::new(),
            };
            let mut failures = 0u64;
            while !stop.is_cancelled() {
                let ran = tokio::select! {
                    () = stop.cancelled() => return,
                    ran = watch_kind(w, &keeper, &object) => ran,
                };
                match ran {
                    Ok(()) => failures = 0,
                    Err(Ended::Fenced) => {
                        tracing::warn!(cluster = %w.entry.name, "a later holder of the watch lease wrote the inventory; watch stopped");
                        stop.cancel();
                        return;
                    }
                    Err(Ended::Failed { error, unreachable }) => {
                        failures += 1;
                        w.metrics.watch_restarts.inc();
                        tracing::debug!(cluster = %w.entry.name, kind = %object.kind, %error, "watch failed; starting again");
                        if let Some(class) = unreachable
                            && let Err(inventory::KeepError::Fenced) =
                                keeper.reached(false, Some(class)).await
                        {
                            stop.cancel();
                            return;
                        }
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RESTART.delay(failures)) => {}
                }
            }
        }
    });
    futures::future::join_all(watches).await;
}

/// Why a watch ended, other than to list again.
enum Ended {
    Fenced,
    /// `unreachable`: the cluster did not answer (the error's class), rather than answering
    /// with an error.
    Failed {
        error: String,
        unreachable: Option<String>,
    },
}

impl From<inventory::KeepError> for Ended {
    fn from(e: inventory::KeepError) -> Self {
        match e {
            inventory::KeepError::Fenced => Ended::Fenced,
            inventory::KeepError::Failed(error) => Ended::Failed {
                error,
                unreachable: None,
            },
        }
    }
}

impl From<OpError> for Ended {
    fn from(e: OpError) -> Self {
        let unreachable = match &e {
            OpError::Timeout { .. } => true,
            OpError::Kube { source, .. } => !matches!(source, kube::Error::Api(_)),
            _ => false,
        };
        Ended::Failed {
            unreachable: unreachable.then(|| crate::policy::class_of(&e).to_owned()),
            error: e.to_string(),
        }
    }
}

/// Lists the managed objects of one kind, then follows their changes until the history
/// the watch resumes from is gone (410) or the connection fails; `Ok` when it should start
/// again from a fresh list.
async fn watch_kind(
    w: &ClusterWatch,
    keeper: &inventory::Keeper,
    object: &ObjectRef,
) -> Result<(), Ended> {
    let kube_error = |verb: Verb| {
        let object = format!("{} {}", object.api_version, object.kind);
        move |source: kube::Error| OpError::Kube {
            verb,
            object: object.clone(),
            source,
        }
    };
    let cluster = w.clusters.get(&w.entry).await?;
    let (resource, _) = cluster.resolve(object).await?;
    let api: Api<DynamicObject> = Api::all_with(cluster.client()?, &resource);
    let kind = inventory::Kind {
        api_version: &object.api_version,
        kind: &object.kind,
    };
    w.metrics.watch_relists.inc();
    let list = api
        .list(&ListParams::default().labels(MANAGED_LABEL))
        .await
        .map_err(kube_error(Verb::List))?;
    keeper.reached(true, None).await?;
    let mut version = list.metadata.resource_version.clone().unwrap_or_default();
    let objects: Vec<serde_json::Value> = list
        .items
        .iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .collect();
    keeper.listed(kind, &objects).await?;
    loop {
        let params = WatchParams::default()
            .labels(MANAGED_LABEL)
            .timeout(WATCH_TIMEOUT_S);
        let stream = api
            .watch(&params, &version)
            .await
            .map_err(kube_error(Verb::Watch))?;
        futures::pin_mut!(stream);
        w.state.opened();
        let followed = follow(w, keeper, kind, &mut version, stream).await;
        w.state.closed();
        match followed {
            // The server ended the request (its timeout): go on from where it was.
            Ok(true) => {}
            // 410: the history to resume from is gone; list again.
            Ok(false) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Applies one watch request's events; `Ok(true)` when it ended and may be resumed from
/// `version`, `Ok(false)` when the server no longer has that history.
async fn follow(
    w: &ClusterWatch,
    keeper: &inventory::Keeper,
    kind: inventory::Kind<'_>,
    version: &mut String,
    stream: impl futures::Stream<Item = Result<WatchEvent<DynamicObject>, kube::Error>>,
) -> Result<bool, Ended> {
    futures::pin_mut!(stream);
    let failed = |source: kube::Error| OpError::Kube {
        verb: Verb::Watch,
        object: format!("{} {}", kind.api_version, kind.kind),
        source,
    };
    while let Some(event) = stream.try_next().await.map_err(failed)? {
        match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                w.metrics.watch_events.inc();
                let value = serde_json::to_value(&o).unwrap_or_default();
                keeper.observe(kind, &value).await?;
                if let Some(v) = o.metadata.resource_version {
                    *version = v;
                }
            }
            WatchEvent::Deleted(o) => {
                w.metrics.watch_events.inc();
                let key = longshore_contract::inventory::object_key(
                    w.entry.name.as_str(),
                    kind.api_version,
                    kind.kind,
                    o.metadata.namespace.as_deref(),
                    o.metadata.name.as_deref().unwrap_or_default(),
                );
                keeper.gone(&key, o.metadata.uid.as_deref()).await?;
                if let Some(v) = o.metadata.resource_version {
                    *version = v;
                }
            }
            WatchEvent::Bookmark(b) => *version = b.metadata.resource_version,
            WatchEvent::Error(e) if e.code == 410 => return Ok(false),
            WatchEvent::Error(e) => {
                return Err(Ended::Failed {
                    error: e.message,
                    unreachable: None,
                });
            }
        }
    }
    Ok(true)
}
