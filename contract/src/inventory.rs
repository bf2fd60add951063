//! What the watchers keep and tell: the inventory of the objects longshore manages, and
//! the events they publish as those objects change.
//!
//! | where | key or subject | written by | what |
//! |---|---|---|---|
//! | `LONGSHORE_INVENTORY` (KV) | `<cluster>.<group>.<Kind>.<namespace>.<name>` | the member holding the cluster's watch lease, fenced by the lease | [`InventoryRecord`]: generation, resourceVersion, last operation, health, drift |
//! | `LONGSHORE_INVENTORY` (KV) | `<cluster>` | the same | [`ClusterWatch`]: whether the watch reaches the cluster, and how many times that changed |
//! | `LONGSHORE_EVENTS` (stream) | `longshore.events.<cluster>.<Kind>.<namespace>` | the same | [`Event`]: created, changed, deleted, drifted, ready, unhealthy, unreachable, recovered |
//!
//! `<group>` is the API group with its dots as `_` (`core` for the core group), and
//! `<namespace>` is `_` for cluster-scoped objects, so every part but the name is one
//! subject token: `prod-eu-1.apps.Deployment.*.>` selects a cluster's Deployments.
//!
//! **Fencing.** Each record carries the `epoch` of the lease it was written under (the
//! revision at which its holder took the lease, which only grows from one holder to the
//! next). A write goes in by compare-and-set only if the record's epoch is not newer than
//! the writer's, so a member that lost its lease cannot overwrite what its successor wrote.
//!
//! **Events without duplicates.** An event's `Nats-Msg-Id` is its [`Event::id`], made only
//! of what any holder sees alike (cluster, object uid, resourceVersion, the kind of event),
//! so when two members both report the same change during a takeover, JetStream keeps one
//! within the stream's duplicate window.

use std::time::Duration;

use async_nats::jetstream::{kv, stream};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::cluster::ClusterName;
use crate::jetstream::Settings;

pub const INVENTORY_BUCKET: &str = "LONGSHORE_INVENTORY";
pub const EVENTS_STREAM: &str = "LONGSHORE_EVENTS";
pub const EVENTS_PREFIX: &str = "longshore.events";
/// The label the worker stamps on every object it writes; watches select it.
pub const MANAGED_LABEL: &str = "longshore.io/managed";
/// Kind and namespace tokens of a cluster's own events (unreachable, recovered).
pub const CLUSTER_KIND: &str = "Cluster";
/// The namespace token of cluster-scoped objects and of cluster events.
pub const NO_NAMESPACE: &str = "_";
/// The most bytes the events stream keeps; the oldest go first.
pub const EVENTS_MAX_BYTES: i64 = 1 << 30;

/// Where a managed object stands, by the rules the rollout waits use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ready,
    Progressing,
    Failed,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ready => "ready",
            Health::Progressing => "progressing",
            Health::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ready" => Some(Health::Ready),
            "progressing" => Some(Health::Progressing),
            "failed" => Some(Health::Failed),
            _ => None,
        }
    }
}

/// A field longshore set that another manager now owns (having changed it, or taken it
/// over by force).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    /// The field, as in `metadata.managedFields` (`.spec.replicas`,
    /// `.spec.template.spec.containers[name=web].image`).
    pub path: String,
    /// The manager that owns it now (`kubectl-edit`, `kubectl-patch`, `helm`).
    pub manager: String,
}

/// One managed object as its cluster's watcher last saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryRecord {
    pub cluster: ClusterName,
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    pub resource_version: String,
    /// The last longshore operation that wrote it (its `longshore.io/operation-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_operation: Option<String>,
    pub health: Health,
    /// How far it is, or why it failed; none when ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    pub drifted: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
    /// The field manager longshore last wrote the object with (the one owning its
    /// operation-id annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_manager: Option<String>,
    /// The fields that manager owned when longshore last wrote the object: what a drift
    /// is measured against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied_fields: Vec<String>,
    /// The member that wrote this record, and the epoch of its lease.
    pub watcher: String,
    pub epoch: u64,
    pub observed_at: Timestamp,
}

impl InventoryRecord {
    pub fn key(&self) -> String {
        object_key(
            self.cluster.as_str(),
            &self.api_version,
            &self.kind,
            self.namespace.as_deref(),
            &self.name,
        )
    }
}

/// Whether a cluster's watcher reaches it; the count of changes makes the ids of
/// `unreachable` and `recovered` events the same whichever member reports them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterWatch {
    pub reachable: bool,
    /// How many times `reachable` changed.
    pub transitions: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub watcher: String,
    pub epoch: u64,
    pub since: Timestamp,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Created,
    Changed,
    Deleted,
    Drifted,
    Ready,
    Unhealthy,
    Unreachable,
    Recovered,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        EventType::Created,
        EventType::Changed,
        EventType::Deleted,
        EventType::Drifted,
        EventType::Ready,
        EventType::Unhealthy,
        EventType::Unreachable,
        EventType::Recovered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "created",
            EventType::Changed => "changed",
            EventType::Deleted => "deleted",
            EventType::Drifted => "drifted",
            EventType::Ready => "ready",
            EventType::Unhealthy => "unhealthy",
            EventType::Unreachable => "unreachable",
            EventType::Recovered => "recovered",
        }
    }
}

/// The object an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventObject {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
}

/// One event in `LONGSHORE_EVENTS`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Deterministic: also the message's `Nats-Msg-Id`.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub cluster: ClusterName,
    /// None for a cluster's own events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<EventObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// The health reason, or for a cluster event the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
    pub watcher: String,
    pub at: Timestamp,
}

impl Event {
    /// The subject it is published on.
    pub fn subject(&self) -> String {
        match &self.object {
            Some(o) => event_subject(self.cluster.as_str(), &o.kind, o.namespace.as_deref()),
            None => event_subject(self.cluster.as_str(), CLUSTER_KIND, None),
        }
    }
}

/// The id of an object's event: `<cluster>:<uid>:<what>`, where `what` is `created` or
/// `deleted` (once per object), or `<resourceVersion>:<type>` for the others.
pub fn object_event_id(
    cluster: &str,
    uid: &str,
    resource_version: &str,
    kind: EventType,
) -> String {
    match kind {
        EventType::Created | EventType::Deleted => format!("{cluster}:{uid}:{}", kind.as_str()),
        _ => format!("{cluster}:{uid}:{resource_version}:{}", kind.as_str()),
    }
}

/// The id of a cluster's `unreachable` or `recovered` event: `<cluster>:<type>:<n>`, `n`
/// the count of reachability changes it makes.
pub fn cluster_event_id(cluster: &str, kind: EventType, transitions: u64) -> String {
    format!("{cluster}:{}:{transitions}", kind.as_str())
}

/// `<group>` as a key token: the API group with dots as `_`, `core` for the core group.
fn group_token(api_version: &str) -> String {
    match api_version.rsplit_once('/') {
        Some((group, _)) => group.replace('.', "_"),
        None => "core".into(),
    }
}

/// An object's key in `LONGSHORE_INVENTORY`.
pub fn object_key(
    cluster: &str,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> String {
    format!(
        "{cluster}.{}.{kind}.{}.{name}",
        group_token(api_version),
        namespace.unwrap_or(NO_NAMESPACE)
    )
}

/// The subject of an event about an object of `kind` in `namespace`.
pub fn event_subject(cluster: &str, kind: &str, namespace: Option<&str>) -> String {
    format!(
        "{EVENTS_PREFIX}.{cluster}.{kind}.{}",
        namespace.unwrap_or(NO_NAMESPACE)
    )
}

/// The subject filter for events of `cluster`, `kind` and `namespace` (each `None`: any).
pub fn events_filter(cluster: Option<&str>, kind: Option<&str>, namespace: Option<&str>) -> String {
    format!(
        "{EVENTS_PREFIX}.{}.{}.{}",
        cluster.unwrap_or("*"),
        kind.unwrap_or("*"),
        namespace.unwrap_or("*")
    )
}

pub fn inventory_bucket(settings: &Settings) -> kv::Config {
    kv::Config {
        bucket: INVENTORY_BUCKET.into(),
        description: "longshore inventory: the managed objects as their watchers see them".into(),
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

pub fn events_stream(settings: &Settings) -> stream::Config {
    stream::Config {
        name: EVENTS_STREAM.into(),
        description: Some("longshore events: what the watchers saw change".into()),
        subjects: vec![format!("{EVENTS_PREFIX}.>")],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        max_age: settings.retention.min(Duration::from_secs(7 * 24 * 3600)),
        max_bytes: EVENTS_MAX_BYTES,
        discard: stream::DiscardPolicy::Old,
        allow_direct: true,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_subjects_keep_one_token_per_part() {
        assert_eq!(
            object_key("prod", "apps/v1", "Deployment", Some("default"), "web.v2"),
            "prod.apps.Deployment.default.web.v2"
        );
        assert_eq!(
            object_key("prod", "v1", "Namespace", None, "team-a"),
            "prod.core.Namespace._.team-a"
        );
        assert_eq!(
            object_key(
                "prod",
                "networking.k8s.io/v1",
                "Ingress",
                Some("web"),
                "web"
            ),
            "prod.networking_k8s_io.Ingress.web.web"
        );
        assert_eq!(
            event_subject("prod", "ConfigMap", Some("default")),
            "longshore.events.prod.ConfigMap.default"
        );
        assert_eq!(
            events_filter(Some("prod"), None, None),
            "longshore.events.prod.*.*"
        );
    }

    #[test]
    fn event_ids_depend_only_on_what_every_holder_sees() {
        assert_eq!(
            object_event_id("prod", "u-1", "42", EventType::Drifted),
            "prod:u-1:42:drifted"
        );
        // Created and deleted happen once per object, whatever version a holder saw.
        assert_eq!(
            object_event_id("prod", "u-1", "42", EventType::Deleted),
            object_event_id("prod", "u-1", "57", EventType::Deleted)
        );
        assert_eq!(
            cluster_event_id("prod", EventType::Unreachable, 3),
            "prod:unreachable:3"
        );
    }

    #[test]
    fn an_event_reads_back_as_documented() {
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": "prod:u-1:42:drifted", "type": "drifted", "cluster": "prod",
            "object": {"apiVersion": "apps/v1", "kind": "Deployment",
                "namespace": "default", "name": "web", "uid": "u-1"},
            "resourceVersion": "42", "drift": [{"path": ".spec.replicas", "manager": "kubectl-patch"}],
            "watcher": "worker-1", "at": "2026-12-02T10:00:00Z"}))
        .unwrap();
        assert_eq!(event.kind, EventType::Drifted);
        assert_eq!(event.subject(), "longshore.events.prod.Deployment.default");
        assert_eq!(event.drift[0].manager, "kubectl-patch");
    }
}
