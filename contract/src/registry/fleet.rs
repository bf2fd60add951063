//! The registry as a replica holds it: its buckets opened (created if missing), each
//! followed live in memory, with the stores to write them through.

use std::sync::Arc;

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;

use super::follow::Follower;
use super::{
    CLUSTERS_BUCKET, ClusterEntry, HEALTH_BUCKET, LEASES_BUCKET, Lease, MEMBERS_BUCKET, Member,
    Observed, POOLS_BUCKET, PoolCredentials, Status, clusters_bucket, health_bucket, leases_bucket,
    members_bucket, pools_bucket,
};
use crate::cluster::{ClusterName, PoolName};
use crate::inventory::{
    ClusterWatch, INVENTORY_BUCKET, InventoryRecord, events_stream, inventory_bucket,
};
use crate::jetstream::{ProvisionError, Settings, ensure_bucket, ensure_stream};
use crate::store::Store;

/// The registry's buckets, followed.
#[derive(Clone)]
pub struct Fleet {
    pub clusters: Store<ClusterEntry>,
    pub pools: Store<PoolCredentials>,
    pub members: Store<Member>,
    pub health: Store<Observed>,
    pub leases: Store<Lease>,
    /// The managed objects, as the watchers see them (`<cluster>.<group>.<Kind>.<ns>.<name>`).
    pub inventory: Store<InventoryRecord>,
    /// Whether each cluster's watcher reaches it (`<cluster>`, in the same bucket).
    pub watches: Store<ClusterWatch>,
    /// Where the watchers publish what they see.
    pub events: jetstream::stream::Stream,
    pub cluster_view: Follower<ClusterEntry>,
    pub pool_view: Follower<PoolCredentials>,
    pub member_view: Follower<Member>,
    /// What the pools observe: followed by the replicas that show it (dispatchers), not by
    /// workers, which write it and have no use for a copy of the whole fleet's.
    pub health_view: Option<Follower<Observed>>,
    /// Who watches which cluster: followed by workers, which take and hand over leases.
    pub lease_view: Option<Follower<Lease>>,
}

/// Which observed state a replica follows besides the declared registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observing {
    /// Clusters' health too (to show it).
    Health,
    /// Members, pools and watch leases (a worker's part).
    Membership,
}

impl Fleet {
    /// Opens the buckets (creating them if missing) and starts following them until `stop`.
    pub async fn open(
        js: &jetstream::Context,
        settings: &Settings,
        stop: &CancellationToken,
        observing: Observing,
    ) -> Result<Self, ProvisionError> {
        let clusters = ensure_bucket(js, clusters_bucket(settings)).await?;
        let pools = ensure_bucket(js, pools_bucket(settings)).await?;
        let members = ensure_bucket(js, members_bucket(settings)).await?;
        let health = ensure_bucket(js, health_bucket(settings)).await?;
        let leases = ensure_bucket(js, leases_bucket(settings)).await?;
        let inventory = ensure_bucket(js, inventory_bucket(settings)).await?;
        let events = ensure_stream(js, events_stream(settings)).await?;
        Ok(Self {
            cluster_view: Follower::start(clusters.clone(), CLUSTERS_BUCKET, stop.child_token()),
            pool_view: Follower::start(pools.clone(), POOLS_BUCKET, stop.child_token()),
            member_view: Follower::start(members.clone(), MEMBERS_BUCKET, stop.child_token()),
            health_view: (observing == Observing::Health)
                .then(|| Follower::start(health.clone(), HEALTH_BUCKET, stop.child_token())),
            lease_view: (observing == Observing::Membership)
                .then(|| Follower::start(leases.clone(), LEASES_BUCKET, stop.child_token())),
            clusters: Store::new(clusters, CLUSTERS_BUCKET),
            pools: Store::new(pools, POOLS_BUCKET),
            members: Store::new(members, MEMBERS_BUCKET)
                .with_ttl_writes(js.clone(), settings.api_prefix()),
            health: Store::new(health, HEALTH_BUCKET)
                .with_ttl_writes(js.clone(), settings.api_prefix()),
            leases: Store::new(leases, LEASES_BUCKET)
                .with_ttl_writes(js.clone(), settings.api_prefix()),
            inventory: Store::new(inventory.clone(), INVENTORY_BUCKET),
            watches: Store::new(inventory, INVENTORY_BUCKET),
            events,
        })
    }

    /// Whether every bucket has been read in full once.
    pub fn is_loaded(&self) -> bool {
        self.cluster_view.is_loaded()
            && self.pool_view.is_loaded()
            && self.member_view.is_loaded()
            && self.health_view.as_ref().is_none_or(Follower::is_loaded)
            && self.lease_view.as_ref().is_none_or(Follower::is_loaded)
    }

    /// Waits until every bucket has been read in full once.
    pub async fn loaded(&self) {
        self.cluster_view.loaded().await;
        self.pool_view.loaded().await;
        self.member_view.loaded().await;
        if let Some(health) = &self.health_view {
            health.loaded().await;
        }
        if let Some(leases) = &self.lease_view {
            leases.loaded().await;
        }
    }

    /// `cluster` as this replica's copy of the registry has it (shared, not copied).
    pub fn entry(&self, cluster: &ClusterName) -> Option<Arc<ClusterEntry>> {
        self.cluster_view.get(cluster.as_str())
    }

    /// Waits (up to `within`) until this replica's copy of the registry shows `cluster` as
    /// `expected` (`None`: absent), so what a replica has just written through the API is
    /// what it answers with next: read-your-writes for whoever registered it here.
    pub async fn until_seen(
        &self,
        cluster: &str,
        expected: Option<&ClusterEntry>,
        within: std::time::Duration,
    ) {
        let _ = tokio::time::timeout(within, async {
            loop {
                let seen = self.cluster_view.version();
                if self.cluster_view.get(cluster).as_deref() == expected {
                    return;
                }
                self.cluster_view.changed_since(seen).await;
            }
        })
        .await;
    }

    /// The live replicas of `pool`, in key order (`<pool>.<worker>`).
    pub fn members_of(&self, pool: &PoolName) -> Vec<Member> {
        self.member_view.with_prefix(&member_prefix(pool))
    }

    /// `entry` as declared and observed.
    pub fn status(&self, entry: &ClusterEntry) -> Status {
        let members = self.member_view.count_prefix(&member_prefix(&entry.pool));
        let pool = self.pool_view.get(entry.pool.as_str());
        let observed = self
            .health_view
            .as_ref()
            .and_then(|h| h.get(entry.name.as_str()));
        Status::of(entry, members, pool.as_deref(), observed.as_deref())
    }
}

/// The keys of `pool`'s members in the members bucket start with this.
fn member_prefix(pool: &PoolName) -> String {
    format!("{pool}.")
}
