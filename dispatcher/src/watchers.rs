//! Who watches a cluster, as `GET /v1/clusters/{name}` shows it under `watch`: the holder
//! of its watch lease (`LONGSHORE_WATCH_LEASES`), how far behind its watches may be, and
//! whether they reach the cluster (its [`ClusterWatch`] in `LONGSHORE_INVENTORY`).
//!
//! Read per request: the dispatcher does not follow the leases (workers do), and one
//! cluster's lease is one read.

use jiff::Timestamp;
use longshore_contract::{
    ClusterName, PoolName,
    inventory::ClusterWatch,
    registry::{Lease, fleet::Fleet},
};
use serde::Serialize;

use crate::error::Result;

/// A cluster's watch. Every field is always present (`null` when unknown), so clients can
/// read it without guessing which appear.
#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchView {
    pub pool: PoolName,
    /// The member holding the lease.
    pub holder: String,
    pub acquired_at: Timestamp,
    pub renewed_at: Timestamp,
    /// When the holder's watches were last known current.
    pub current_at: Option<Timestamp>,
    /// How long ago that was, in milliseconds (0 if the holder's clock is ahead of ours).
    pub lag_ms: Option<u64>,
    /// Managed objects the holder sees in the cluster.
    pub objects: Option<u64>,
    /// Whether the watches reach the cluster, as its watcher last said.
    pub reachable: Option<bool>,
    /// How many times `reachable` changed.
    pub transitions: Option<u64>,
    pub error: Option<String>,
    /// Since when `reachable` has been what it is.
    pub since: Option<Timestamp>,
}

impl WatchView {
    pub fn of(lease: Lease, watch: Option<ClusterWatch>, now: Timestamp) -> Self {
        let lag_ms = lease.current_at.map(|at| {
            let lag = now.duration_since(at).as_millis();
            u64::try_from(lag.max(0)).unwrap_or(u64::MAX)
        });
        let (reachable, transitions, error, since) = match watch {
            Some(w) => (
                Some(w.reachable),
                Some(w.transitions),
                w.error,
                Some(w.since),
            ),
            None => (None, None, None, None),
        };
        Self {
            pool: lease.pool,
            holder: lease.holder,
            acquired_at: lease.acquired_at,
            renewed_at: lease.renewed_at,
            current_at: lease.current_at,
            lag_ms,
            objects: lease.objects,
            reachable,
            transitions,
            error,
            since,
        }
    }
}

/// `cluster`'s watch, or `None` when nobody holds its lease (whatever an earlier holder
/// last said about reaching it: with nobody watching, that is not news).
pub async fn watch_of(fleet: &Fleet, cluster: &ClusterName) -> Result<Option<WatchView>> {
    let Some(lease) = fleet.leases.read(cluster.as_str()).await? else {
        return Ok(None);
    };
    let watch = fleet.watches.read(cluster.as_str()).await?;
    Ok(Some(WatchView::of(
        lease.value,
        watch.map(|w| w.value),
        Timestamp::now(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(current_at: Option<&str>) -> Lease {
        Lease {
            pool: PoolName::default_pool(),
            holder: "w1".into(),
            acquired_at: "2026-12-01T10:00:00Z".parse().unwrap(),
            renewed_at: "2026-12-01T10:00:08Z".parse().unwrap(),
            current_at: current_at.map(|t| t.parse().unwrap()),
            objects: Some(3),
        }
    }

    #[test]
    fn the_lag_is_measured_from_when_the_watches_were_current() {
        let now: Timestamp = "2026-12-01T10:00:10Z".parse().unwrap();
        let view = WatchView::of(lease(Some("2026-12-01T10:00:09.250Z")), None, now);
        assert_eq!(view.lag_ms, Some(750));
        assert_eq!(view.reachable, None);
        // A holder whose clock runs ahead is not behind.
        let view = WatchView::of(lease(Some("2026-12-01T10:00:11Z")), None, now);
        assert_eq!(view.lag_ms, Some(0));
        let view = WatchView::of(lease(None), None, now);
        assert_eq!(view.lag_ms, None);
        let json = serde_json::to_value(&view).unwrap();
        assert!(
            json["lagMs"].is_null() && json["reachable"].is_null(),
            "{json}"
        );
        assert_eq!(json["holder"], "w1");
    }

    #[test]
    fn reachability_comes_from_the_cluster_watch() {
        let now: Timestamp = "2026-12-01T10:00:10Z".parse().unwrap();
        let watch = ClusterWatch {
            reachable: false,
            transitions: 3,
            error: Some("connection refused".into()),
            watcher: "w1".into(),
            epoch: 7,
            since: "2026-12-01T10:00:05Z".parse().unwrap(),
        };
        let json = serde_json::to_value(WatchView::of(lease(None), Some(watch), now)).unwrap();
        assert_eq!(json["reachable"], false);
        assert_eq!(json["transitions"], 3);
        assert_eq!(json["error"], "connection refused");
        assert_eq!(json["since"], "2026-12-01T10:00:05Z");
        assert_eq!(json["objects"], 3);
    }
}
