//! The cluster registry: which clusters exist, kept as data that changes at runtime, and
//! what the pools that serve them actually see. Declared and observed state are kept
//! apart, in different buckets written by different parties:
//!
//! | bucket | key | written by | what |
//! |---|---|---|---|
//! | `LONGSHORE_CLUSTERS` | cluster | the API (and seeding at start) | [`ClusterEntry`]: labels, pool, credentials reference |
//! | `LONGSHORE_POOLS` | pool | the pool's workers, on change | [`PoolCredentials`]: which credentials references the pool can resolve (names only) |
//! | `LONGSHORE_MEMBERS` | `<pool>.<worker>` | each worker, every few seconds, with a TTL | [`Member`]: the pool's live replicas |
//! | `LONGSHORE_CLUSTER_HEALTH` | cluster | the member probing it, with a TTL | [`Observed`]: reachable, version, latency, last error |
//! | `LONGSHORE_WATCH_LEASES` | cluster | the member watching it: taken when free, renewed by compare-and-set, with a TTL | [`Lease`]: who watches the cluster |
//!
//! Credentials themselves never enter any of them: an entry names a reference that the
//! serving pool resolves (a kubeconfig context in the directory mounted into its workers,
//! or the identity of a pool running inside the cluster).
//!
//! From these, [`Status::of`] says what an operator needs to see: `ready`, `unreachable`,
//! `unserved` (no live replica, or no credentials), or `pending` (not observed yet).

pub mod fleet;
pub mod follow;

use std::time::Duration;

use async_nats::jetstream::{kv, stream};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterName, PoolName};
use crate::jetstream::Settings;

pub const CLUSTERS_BUCKET: &str = "LONGSHORE_CLUSTERS";
pub const POOLS_BUCKET: &str = "LONGSHORE_POOLS";
pub const MEMBERS_BUCKET: &str = "LONGSHORE_MEMBERS";
pub const HEALTH_BUCKET: &str = "LONGSHORE_CLUSTER_HEALTH";
pub const LEASES_BUCKET: &str = "LONGSHORE_WATCH_LEASES";

pub use crate::labels::Labels;

/// How the serving pool gets credentials for a cluster. Only a name: the credentials stay
/// with the pool.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Credentials {
    /// A context in the kubeconfig files mounted into the pool's workers.
    Kubeconfig { context: String },
    /// The pool runs inside the cluster and uses its own service account.
    InCluster,
}

impl Credentials {
    /// The reference as the pools announce what they have: `kubeconfig:<context>` or
    /// `in-cluster`.
    pub fn reference(&self) -> String {
        match self {
            Credentials::Kubeconfig { context } => format!("kubeconfig:{context}"),
            Credentials::InCluster => "in-cluster".into(),
        }
    }
}

/// A registered cluster: what the API declares about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEntry {
    pub name: ClusterName,
    #[serde(default)]
    pub labels: Labels,
    pub pool: PoolName,
    pub credentials: Credentials,
    pub registered_at: Timestamp,
    /// Who registered it: a token's name, `api` for the open API, `config` for seeding.
    pub registered_by: String,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

/// The credentials references one pool can resolve, as its workers last announced them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolCredentials {
    /// [`Credentials::reference`]s, sorted.
    pub references: Vec<String>,
    /// The pool is an agent pool: it runs inside this one cluster and reaches the hub
    /// through a leaf node (`docs/agents.md`). With no replica live, its cluster shows
    /// `unreachable` (no agent connected), not `unserved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_for: Option<ClusterName>,
    pub updated_by: String,
    pub updated_at: Option<Timestamp>,
}

impl PoolCredentials {
    pub fn has(&self, credentials: &Credentials) -> bool {
        self.references
            .binary_search(&credentials.reference())
            .is_ok()
    }
}

/// One live replica of a pool (its key expires when it stops renewing it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub pool: PoolName,
    pub worker: String,
    pub started_at: Timestamp,
    pub heartbeat_at: Timestamp,
    /// How the member lets go of the object fences it took: [`FENCES_RELEASED_BY_RECORD`]
    /// when its operation's final record does it; absent (a version before that) when it
    /// writes each fence back. While any member writes them back, every worker does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fences: Option<u32>,
}

/// A [`Member::fences`] value: the member's fences are released by its final records.
pub const FENCES_RELEASED_BY_RECORD: u32 = 2;

impl Member {
    /// Its key in `LONGSHORE_MEMBERS`.
    pub fn key(pool: &PoolName, worker: &str) -> String {
        format!("{pool}.{worker}")
    }
}

/// What a pool last saw of a cluster (its key expires when no member probes it any more).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    pub pool: PoolName,
    pub worker: String,
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Why it is not reachable: an error class (`forbidden`, `transient`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub latency_ms: u64,
    pub observed_at: Timestamp,
}

/// A cluster's state as declared and observed together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Served, and reachable when last probed.
    Ready,
    /// Served, but not reachable when last probed.
    Unreachable,
    /// Registered, but no live replica of its pool, or the pool has no credentials for it.
    Unserved,
    /// Served, not probed yet.
    Pending,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Ready,
        Phase::Unreachable,
        Phase::Unserved,
        Phase::Pending,
    ];

    /// The name the API and the metrics give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Ready => "ready",
            Phase::Unreachable => "unreachable",
            Phase::Unserved => "unserved",
            Phase::Pending => "pending",
        }
    }
}

/// A cluster's phase and why, for the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub phase: Phase,
    pub reason: String,
    /// Live replicas of its pool.
    pub members: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
}

impl Status {
    /// The status of `entry` given its pool's live `members`, the credentials its pool
    /// announced, and its last observation (if not expired).
    pub fn of(
        entry: &ClusterEntry,
        members: usize,
        pool: Option<&PoolCredentials>,
        observed: Option<&Observed>,
    ) -> Self {
        let agent = pool.is_some_and(|p| p.agent_for.as_ref() == Some(&entry.name));
        let (phase, reason) = if members == 0 && agent {
            (
                Phase::Unreachable,
                format!(
                    "no agent of pool {} is connected (its leaf node's link to the hub is down, or no agent runs); operations wait in the queue until one connects",
                    entry.pool
                ),
            )
        } else if members == 0 {
            (
                Phase::Unserved,
                format!("no replica of pool {} is running", entry.pool),
            )
        } else if !pool.is_some_and(|p| p.has(&entry.credentials)) {
            (
                Phase::Unserved,
                format!(
                    "pool {} has no credentials {}",
                    entry.pool,
                    entry.credentials.reference()
                ),
            )
        } else {
            match observed.filter(|o| o.pool == entry.pool) {
                None => (Phase::Pending, "not probed yet".into()),
                Some(o) if o.reachable => (Phase::Ready, "reachable".into()),
                Some(o) => (
                    Phase::Unreachable,
                    match (&o.error, &o.message) {
                        (Some(class), Some(m)) => format!("{class}: {m}"),
                        (Some(class), None) => class.clone(),
                        _ => "not reachable".into(),
                    },
                ),
            }
        };
        Status {
            phase,
            reason,
            members,
            observed: observed.cloned(),
        }
    }
}

/// Which of `members` is responsible for `key` (a cluster): the one with the highest
/// rendezvous hash of (member, key). Every replica computes the same answer from the same
/// membership, keys spread evenly, and when a member comes or goes only the keys it gains
/// or loses move.
pub fn owner<'a>(key: &str, members: &'a [Member]) -> Option<&'a Member> {
    use sha2::{Digest, Sha256};
    members.iter().max_by_key(|m: &&'a Member| {
        let mut h = Sha256::new();
        h.update(m.worker.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        let digest = h.finalize();
        // Ties (a collision of 64 bits) fall to the larger name, so still agreed.
        (
            u64::from_be_bytes(digest[..8].try_into().unwrap_or_default()),
            m.worker.as_str(),
        )
    })
}

/// The right to watch one cluster: held by one member of the cluster's pool, renewed by
/// compare-and-set at its revision, gone when it is released or its TTL runs out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub pool: PoolName,
    pub holder: String,
    pub acquired_at: Timestamp,
    pub renewed_at: Timestamp,
    /// When the holder's watches were last known current (listed, or an event or bookmark
    /// received, or the watch connection open): how far behind the watch may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_at: Option<Timestamp>,
    /// Managed objects the holder sees in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<u64>,
}

/// How often members and probes renew their keys, and how long those keys live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    pub heartbeat: Duration,
    pub member_ttl: Duration,
    pub probe: Duration,
    pub health_ttl: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            // A dead member drops out within `member_ttl`, under the watch lease's TTL, so
            // its clusters have a new owner by the time its leases run out.
            heartbeat: Duration::from_secs(2),
            member_ttl: Duration::from_secs(6),
            probe: Duration::from_secs(30),
            health_ttl: Duration::from_secs(90),
        }
    }
}

/// The registry's buckets, as [`Settings`] lays them out.
pub fn clusters_bucket(settings: &Settings) -> kv::Config {
    kv::Config {
        bucket: CLUSTERS_BUCKET.into(),
        description: "longshore cluster registry (declared)".into(),
        // One revision, and the delete marker of a removed cluster is kept: seeding at
        // start does not bring back what was removed at runtime.
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

pub fn pools_bucket(settings: &Settings) -> kv::Config {
    kv::Config {
        bucket: POOLS_BUCKET.into(),
        description: "longshore pools: the credentials references each can resolve".into(),
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// A bucket whose keys carry their own TTL (members and probes).
fn ttl_bucket(settings: &Settings, bucket: &str, description: &str) -> kv::Config {
    kv::Config {
        bucket: bucket.into(),
        description: description.into(),
        history: 1,
        // Live state: lost with a restart of a single server it is rebuilt within seconds.
        storage: stream::StorageType::Memory,
        num_replicas: settings.replicas,
        // Per-key TTLs, and how long the marker of an expired key is kept.
        limit_markers: Some(Duration::from_secs(1)),
        ..Default::default()
    }
}

pub fn members_bucket(settings: &Settings) -> kv::Config {
    ttl_bucket(
        settings,
        MEMBERS_BUCKET,
        "longshore pool members (TTL heartbeats)",
    )
}

pub fn health_bucket(settings: &Settings) -> kv::Config {
    ttl_bucket(
        settings,
        HEALTH_BUCKET,
        "longshore clusters as the pools observe them (TTL)",
    )
}

pub fn leases_bucket(settings: &Settings) -> kv::Config {
    kv::Config {
        // On file, unlike the other live state: a lease's revision is the epoch that
        // fences inventory writes, so revisions must keep growing across a restart of
        // the servers (a memory stream would start again from 1, and every new holder
        // would be fenced out by the records of the old ones).
        storage: stream::StorageType::File,
        ..ttl_bucket(
            settings,
            LEASES_BUCKET,
            "longshore watch leases: which member watches each cluster (TTL)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_is_named_in_metrics_as_in_the_api() {
        for phase in Phase::ALL {
            assert_eq!(serde_json::to_value(phase).unwrap(), phase.as_str());
        }
    }

    fn entry(pool: &str) -> ClusterEntry {
        let now = Timestamp::now();
        ClusterEntry {
            name: ClusterName::new("prod-eu-1").unwrap(),
            labels: Labels::from([("env".into(), "prod".into())]),
            pool: PoolName::new(pool).unwrap(),
            credentials: Credentials::Kubeconfig {
                context: "prod-eu-1".into(),
            },
            registered_at: now,
            registered_by: "ops".into(),
            updated_at: now,
            updated_by: "ops".into(),
        }
    }

    fn observed(reachable: bool) -> Observed {
        Observed {
            pool: PoolName::new("workers").unwrap(),
            worker: "w1".into(),
            reachable,
            server_version: Some("v1.31.0".into()),
            error: (!reachable).then(|| "transient".into()),
            message: None,
            latency_ms: 3,
            observed_at: Timestamp::now(),
        }
    }

    fn creds(references: &[&str]) -> PoolCredentials {
        PoolCredentials {
            references: references.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }
    }

    fn member(worker: &str) -> Member {
        let now = Timestamp::now();
        Member {
            pool: PoolName::default_pool(),
            worker: worker.into(),
            started_at: now,
            heartbeat_at: now,
            fences: None,
        }
    }

    #[test]
    fn keys_spread_over_members_and_only_a_leavers_keys_move() {
        let members: Vec<Member> = ["w1", "w2", "w3"].iter().map(|w| member(w)).collect();
        let keys: Vec<String> = (0..3000).map(|i| format!("c{i:05}")).collect();
        let before: Vec<&str> = keys
            .iter()
            .map(|k| owner(k, &members).unwrap().worker.as_str())
            .collect();
        for w in ["w1", "w2", "w3"] {
            let n = before.iter().filter(|o| **o == w).count();
            assert!((800..1200).contains(&n), "{w} owns {n} of 3000");
        }
        let without_w2: Vec<Member> = members
            .iter()
            .filter(|m| m.worker != "w2")
            .cloned()
            .collect();
        for (k, was) in keys.iter().zip(&before) {
            let now = owner(k, &without_w2).unwrap().worker.as_str();
            if *was != "w2" {
                assert_eq!(now, *was, "{k} moved though its owner stayed");
            }
        }
        assert!(owner("c1", &[]).is_none());
    }

    #[test]
    fn entries_read_as_the_documented_json() {
        let e = entry("workers");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json["credentials"],
            serde_json::json!({"kind": "kubeconfig", "context": "prod-eu-1"})
        );
        assert_eq!(json["pool"], "workers");
        assert_eq!(serde_json::from_value::<ClusterEntry>(json).unwrap(), e);
        let inside: Credentials = serde_json::from_str(r#"{"kind": "in-cluster"}"#).unwrap();
        assert_eq!(inside.reference(), "in-cluster");
        assert!(serde_json::from_str::<Credentials>(r#"{"kind": "token", "value": "x"}"#).is_err());
    }

    #[test]
    fn the_phase_says_what_is_missing_first() {
        let e = entry("workers");
        let has = creds(&["kubeconfig:prod-eu-1"]);
        let s = Status::of(&e, 0, Some(&has), Some(&observed(true)));
        assert_eq!(s.phase, Phase::Unserved);
        assert!(
            s.reason.contains("no replica of pool workers"),
            "{}",
            s.reason
        );
        let s = Status::of(&e, 2, Some(&creds(&["kubeconfig:other"])), None);
        assert_eq!(s.phase, Phase::Unserved);
        assert!(s.reason.contains("kubeconfig:prod-eu-1"), "{}", s.reason);
        assert_eq!(Status::of(&e, 2, Some(&has), None).phase, Phase::Pending);
        assert_eq!(
            Status::of(&e, 2, Some(&has), Some(&observed(true))).phase,
            Phase::Ready
        );
        let s = Status::of(&e, 2, Some(&has), Some(&observed(false)));
        assert_eq!(
            (s.phase, s.reason.as_str()),
            (Phase::Unreachable, "transient")
        );
        // Observed by another pool (the cluster just moved): not this pool's word.
        let moved = entry("edge");
        let s = Status::of(
            &moved,
            1,
            Some(&creds(&["kubeconfig:prod-eu-1"])),
            Some(&observed(true)),
        );
        assert_eq!(s.phase, Phase::Pending);
    }
}
