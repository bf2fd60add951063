//! What a cluster's watcher makes of what it sees: a record per managed object in
//! `LONGSHORE_INVENTORY` (health, drift, last operation) and the events of its changes in
//! `LONGSHORE_EVENTS` (see `longshore_contract::inventory` for both).
//!
//! - **Health** is [`readiness`], the rules the rollout waits use: ready, progressing
//!   (with how far), failed (with why).
//! - **Drift** is measured against what longshore owned when it last wrote the object: the
//!   field manager that owns the operation-id annotation is longshore's for that write,
//!   and the fields it owned then are the baseline. A baseline field that manager no
//!   longer owns has been changed (or taken over, or removed) by someone else: the object
//!   has drifted, and the record names each such field with its new manager. The next
//!   longshore operation (a new operation id) sets the baseline again.
//! - **Order of writes.** An event is published before the record that reflects it is
//!   written: a member that dies in between leaves the record behind, so its successor
//!   sees the change again and publishes the same event, with the same id, which
//!   JetStream drops as a duplicate. Nothing is lost, nothing doubled.
//! - **Fencing.** Records are written by compare-and-set and only over a record of the
//!   same or an older lease epoch: a member whose lease was taken over gets
//!   [`KeepError::Fenced`] and stops watching.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use async_nats::jetstream;
use jiff::Timestamp;
use longshore_contract::ClusterName;
use longshore_contract::inventory::{
    self as contract, ClusterWatch, Drift, Event, EventObject, EventType, Health, InventoryRecord,
    cluster_event_id, object_event_id,
};
use longshore_contract::registry::fleet::Fleet;
use longshore_contract::store::{Change, Modified, StoreError, Versioned};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::actions::stamp::OPERATION_ID_ANNOTATION;
use crate::metrics::{EventLabels, Metrics};
use crate::readiness::{Readiness, readiness};

/// Why a watcher cannot keep a cluster's inventory.
#[derive(Debug)]
pub enum KeepError {
    /// A later holder of the cluster's lease has written: this member must stop.
    Fenced,
    /// NATS failed; the watch starts again and sees the change again.
    Failed(String),
}

impl From<StoreError> for KeepError {
    fn from(e: StoreError) -> Self {
        KeepError::Failed(e.to_string())
    }
}

impl std::fmt::Display for KeepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeepError::Fenced => f.write_str("a later lease holder wrote the inventory"),
            KeepError::Failed(e) => f.write_str(e),
        }
    }
}

/// How a cluster's watches stand, for the lease renewals to report.
#[derive(Default)]
pub struct WatchState {
    /// Watch connections open now, and how many kinds there are.
    open: AtomicUsize,
    kinds: AtomicUsize,
    objects: AtomicU64,
    /// When every kind's watch was last open (Unix milliseconds; 0: never).
    current_ms: AtomicI64,
}

impl WatchState {
    pub fn new(kinds: usize) -> Self {
        let state = Self::default();
        state.kinds.store(kinds, Ordering::Relaxed);
        state
    }

    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.current_at();
    }

    pub fn closed(&self) {
        self.current_at();
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Now, while every kind's watch is open; otherwise when they last all were.
    pub fn current_at(&self) -> Option<Timestamp> {
        let kinds = self.kinds.load(Ordering::Relaxed);
        if kinds > 0 && self.open.load(Ordering::Relaxed) >= kinds {
            let now = Timestamp::now();
            self.current_ms
                .store(now.as_millisecond(), Ordering::Relaxed);
            return Some(now);
        }
        match self.current_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Timestamp::from_millisecond(ms).ok(),
        }
    }

    pub fn objects(&self) -> u64 {
        self.objects.load(Ordering::Relaxed)
    }
}

/// One cluster's inventory, kept by the member holding its lease at `epoch`.
pub struct Keeper {
    fleet: Fleet,
    js: jetstream::Context,
    cluster: ClusterName,
    worker: String,
    epoch: u64,
    metrics: Arc<Metrics>,
    state: Arc<WatchState>,
    records: Mutex<BTreeMap<String, Versioned<InventoryRecord>>>,
    reach: Mutex<Option<Versioned<ClusterWatch>>>,
}

/// An object's kind as the watches name it.
#[derive(Clone, Copy)]
pub struct Kind<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
}

impl Keeper {
    /// The cluster's records as the last holders left them.
    #[allow(clippy::too_many_arguments)]
    pub async fn load(
        fleet: Fleet,
        js: jetstream::Context,
        cluster: ClusterName,
        worker: String,
        epoch: u64,
        metrics: Arc<Metrics>,
        state: Arc<WatchState>,
    ) -> Result<Self, KeepError> {
        let records: BTreeMap<_, _> = fleet
            .inventory
            .scan(&format!("{cluster}.>"))
            .await?
            .into_iter()
            .collect();
        let reach = fleet.watches.read(cluster.as_str()).await?;
        let drifted = records.values().filter(|r| r.value.drifted).count();
        metrics.drifted_objects.inc_by(drifted as i64);
        state.objects.store(records.len() as u64, Ordering::Relaxed);
        Ok(Self {
            fleet,
            js,
            cluster,
            worker,
            epoch,
            metrics,
            state,
            records: Mutex::new(records),
            reach: Mutex::new(reach),
        })
    }

    /// The objects of `kind` as just listed: each observed, and those the inventory holds
    /// that are no longer there gone.
    pub async fn listed(&self, kind: Kind<'_>, objects: &[Value]) -> Result<(), KeepError> {
        let mut present = BTreeSet::new();
        for object in objects {
            present.insert(self.observe(kind, object).await?);
        }
        let kind_prefix = kind_prefix(self.cluster.as_str(), kind);
        let stale: Vec<String> = {
            let records = self.records.lock().await;
            records
                .keys()
                .filter(|k| k.starts_with(&kind_prefix) && !present.contains(*k))
                .cloned()
                .collect()
        };
        for key in stale {
            self.gone(&key, None).await?;
        }
        Ok(())
    }

    /// An object as a list or a watch event shows it; its key.
    pub async fn observe(&self, kind: Kind<'_>, object: &Value) -> Result<String, KeepError> {
        let meta = &object["metadata"];
        let text = |field: &str| meta.get(field).and_then(Value::as_str).map(str::to_owned);
        let name = text("name").unwrap_or_default();
        let namespace = text("namespace");
        let key = contract::object_key(
            self.cluster.as_str(),
            kind.api_version,
            kind.kind,
            namespace.as_deref(),
            &name,
        );
        let uid = text("uid").unwrap_or_default();
        let resource_version = text("resourceVersion").unwrap_or_default();
        let mut records = self.records.lock().await;
        if records
            .get(&key)
            .is_some_and(|k| k.value.uid == uid && k.value.resource_version == resource_version)
        {
            return Ok(key);
        }
        let known = records.get(&key).cloned();
        // The same name with another uid: the object seen before was deleted meanwhile.
        let prev = match &known {
            Some(k) if k.value.uid != uid => {
                self.publish(deleted_event(&k.value, &self.worker)).await?;
                None
            }
            Some(k) => Some(&k.value),
            None => None,
        };
        let next = record_of(&self.cluster, kind, object, prev, &self.worker, self.epoch);
        for event in events(prev, &next) {
            self.publish(object_event(event, &next)).await?;
        }
        let was_drifted = known.as_ref().is_some_and(|k| k.value.drifted);
        let written = self.write(&key, known, Change::Write(next)).await?;
        if let Some(w) = written {
            self.metrics
                .drifted_objects
                .inc_by(i64::from(w.value.drifted) - i64::from(was_drifted));
            records.insert(key.clone(), w);
        }
        self.state
            .objects
            .store(records.len() as u64, Ordering::Relaxed);
        Ok(key)
    }

    /// An object seen deleted (by a watch event, with its uid) or no longer listed.
    pub async fn gone(&self, key: &str, uid: Option<&str>) -> Result<(), KeepError> {
        let mut records = self.records.lock().await;
        let Some(known) = records.get(key).cloned() else {
            return Ok(());
        };
        if uid.is_some_and(|uid| uid != known.value.uid) {
            return Ok(());
        }
        self.publish(deleted_event(&known.value, &self.worker))
            .await?;
        let was_drifted = known.value.drifted;
        self.write(key, Some(known), Change::Delete).await?;
        records.remove(key);
        if was_drifted {
            self.metrics.drifted_objects.dec();
        }
        self.state
            .objects
            .store(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the watches reach the cluster: a change is an `unreachable` or `recovered`
    /// event, numbered by the count of changes so any holder gives it the same id.
    pub async fn reached(&self, reachable: bool, error: Option<String>) -> Result<(), KeepError> {
        let mut reach = self.reach.lock().await;
        let transitions = match reach.as_ref() {
            Some(r) if r.value.reachable == reachable => return Ok(()),
            Some(r) => r.value.transitions + 1,
            // First seen reachable: nothing to tell.
            None if reachable => 0,
            None => 1,
        };
        let state = ClusterWatch {
            reachable,
            transitions,
            error: error.clone(),
            watcher: self.worker.clone(),
            epoch: self.epoch,
            since: Timestamp::now(),
        };
        if transitions > 0 {
            let kind = if reachable {
                EventType::Recovered
            } else {
                EventType::Unreachable
            };
            self.publish(Event {
                id: cluster_event_id(self.cluster.as_str(), kind, transitions),
                kind,
                cluster: self.cluster.clone(),
                object: None,
                resource_version: None,
                generation: None,
                operation: None,
                health: None,
                message: error,
                drift: Vec::new(),
                watcher: self.worker.clone(),
                at: Timestamp::now(),
            })
            .await?;
        }
        let epoch = self.epoch;
        let written = self
            .fleet
            .watches
            .modify(
                self.cluster.as_str(),
                reach.clone(),
                |current| match current {
                    Some(c) if c.epoch > epoch => Err(KeepError::Fenced),
                    _ => Ok(Change::Write(state.clone())),
                },
            )
            .await;
        match written {
            Ok(Modified::Written(w)) => *reach = Some(w),
            Ok(_) => {}
            Err(e) => return Err(self.fenced(e)),
        }
        Ok(())
    }

    /// Writes (or deletes) `key` over what `known` says is there, unless a later lease
    /// holder wrote it.
    async fn write(
        &self,
        key: &str,
        known: Option<Versioned<InventoryRecord>>,
        change: Change<InventoryRecord>,
    ) -> Result<Option<Versioned<InventoryRecord>>, KeepError> {
        let epoch = self.epoch;
        let modified = self
            .fleet
            .inventory
            .modify(key, known, |current| match current {
                Some(c) if c.epoch > epoch => Err(KeepError::Fenced),
                _ => Ok(match &change {
                    Change::Write(r) => Change::Write(r.clone()),
                    Change::Delete => Change::Delete,
                    Change::Keep => Change::Keep,
                }),
            })
            .await;
        match modified {
            Ok(Modified::Written(w)) => Ok(Some(w)),
            Ok(_) => Ok(None),
            Err(e) => Err(self.fenced(e)),
        }
    }

    fn fenced(&self, e: KeepError) -> KeepError {
        if matches!(e, KeepError::Fenced) {
            self.metrics.inventory_fenced.inc();
        }
        e
    }

    /// Publishes `event` with its id as `Nats-Msg-Id`: a second copy within the duplicate
    /// window is dropped by JetStream.
    async fn publish(&self, event: Event) -> Result<(), KeepError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.as_str());
        let payload = serde_json::to_vec(&event)
            .map_err(|e| KeepError::Failed(format!("encoding an event: {e}")))?;
        let failed = |e: &dyn std::fmt::Display| {
            KeepError::Failed(format!("publishing event {}: {e}", event.id))
        };
        let ack = self
            .js
            .publish_with_headers(event.subject(), headers, payload.into())
            .await
            .map_err(|e| failed(&e))?
            .await
            .map_err(|e| failed(&e))?;
        self.metrics
            .events_published
            .get_or_create(&EventLabels {
                event: event.kind.as_str(),
            })
            .inc();
        if ack.duplicate {
            self.metrics.events_deduplicated.inc();
        }
        Ok(())
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        // What this member no longer watches it no longer counts.
        let drifted = self
            .records
            .get_mut()
            .values()
            .filter(|r| r.value.drifted)
            .count();
        self.metrics.drifted_objects.dec_by(drifted as i64);
    }
}

/// `<cluster>.<group>.<Kind>.`: the keys of one kind's records.
fn kind_prefix(cluster: &str, kind: Kind<'_>) -> String {
    let key = contract::object_key(cluster, kind.api_version, kind.kind, Some("-"), "-");
    key.strip_suffix("-.-").unwrap_or(&key).to_owned()
}

/// The path of the operation-id annotation in `managedFields`, which names longshore's
/// field manager for the write that set it.
fn stamp_path() -> String {
    format!(".metadata.annotations.{OPERATION_ID_ANNOTATION}")
}

/// The fields each manager owns, as paths (`.spec.replicas`,
/// `.spec.template.spec.containers[name=web].image`).
fn owned_fields(object: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut owned: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let entries = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for entry in entries {
        let Some(manager) = entry.get("manager").and_then(Value::as_str) else {
            continue;
        };
        let paths = owned.entry(manager.to_owned()).or_default();
        if let Some(fields) = entry.get("fieldsV1") {
            flatten(fields, String::new(), paths);
        }
    }
    owned
}

/// The leaves of a `fieldsV1` set under `prefix`: fields with nothing below them, and
/// nodes marked `.` (owned as a whole).
fn flatten(fields: &Value, prefix: String, into: &mut BTreeSet<String>) {
    let Some(map) = fields.as_object() else {
        return;
    };
    for (key, child) in map {
        if key == "." {
            continue;
        }
        let path = prefix.clone() + &segment(key);
        let below = child.as_object();
        if below.is_none_or(|m| m.is_empty() || m.contains_key(".")) {
            into.insert(path.clone());
        }
        flatten(child, path, into);
    }
}

/// One `fieldsV1` key as a path segment: `f:name` is `.name`, `k:{"name":"web"}` is
/// `[name=web]`, `v:"x"` is `[="x"]`, `i:2` is `[2]`.
fn segment(key: &str) -> String {
    match key.split_at_checked(2) {
        Some(("f:", name)) => format!(".{name}"),
        Some(("k:", keys)) => match serde_json::from_str::<BTreeMap<String, Value>>(keys) {
            Ok(keys) => {
                let parts: Vec<String> = keys
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => format!("{k}={s}"),
                        v => format!("{k}={v}"),
                    })
                    .collect();
                format!("[{}]", parts.join(","))
            }
            Err(_) => format!("[{keys}]"),
        },
        Some(("v:", value)) => format!("[={value}]"),
        Some(("i:", index)) => format!("[{index}]"),
        _ => format!(".{key}"),
    }
}

/// The record of `object` as seen now, carrying over the drift baseline from `prev` when
/// longshore has not written the object since.
fn record_of(
    cluster: &ClusterName,
    kind: Kind<'_>,
    object: &Value,
    prev: Option<&InventoryRecord>,
    watcher: &str,
    epoch: u64,
) -> InventoryRecord {
    let meta = &object["metadata"];
    let text = |field: &str| meta.get(field).and_then(Value::as_str).map(str::to_owned);
    let operation = meta
        .pointer("/annotations")
        .and_then(|a| a.get(OPERATION_ID_ANNOTATION))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let owned = owned_fields(object);
    let stamp = stamp_path();
    let (field_manager, applied_fields) = match prev {
        Some(p) if p.last_operation == operation && p.field_manager.is_some() => {
            (p.field_manager.clone(), p.applied_fields.clone())
        }
        _ => match owned.iter().find(|(_, paths)| paths.contains(&stamp)) {
            Some((manager, paths)) => (Some(manager.clone()), paths.iter().cloned().collect()),
            None => (None, Vec::new()),
        },
    };
    let empty = BTreeSet::new();
    let ours = field_manager
        .as_ref()
        .and_then(|m| owned.get(m))
        .unwrap_or(&empty);
    let drift: Vec<Drift> = applied_fields
        .iter()
        .filter(|path| !ours.contains(*path))
        .map(|path| Drift {
            path: path.clone(),
            manager: owned
                .iter()
                .find(|(m, paths)| Some(*m) != field_manager.as_ref() && paths.contains(path))
                .map_or_else(|| "(removed)".to_owned(), |(m, _)| m.clone()),
        })
        .collect();
    let (health, health_reason) = match readiness(kind.kind, object) {
        Readiness::Ready => (Health::Ready, None),
        Readiness::InProgress(r) => (Health::Progressing, Some(r)),
        Readiness::Failed(r) => (Health::Failed, Some(r)),
    };
    InventoryRecord {
        cluster: cluster.clone(),
        api_version: kind.api_version.to_owned(),
        kind: kind.kind.to_owned(),
        namespace: text("namespace"),
        name: text("name").unwrap_or_default(),
        uid: text("uid").unwrap_or_default(),
        generation: meta.get("generation").and_then(Value::as_i64),
        resource_version: text("resourceVersion").unwrap_or_default(),
        last_operation: operation,
        health,
        health_reason,
        drifted: !drift.is_empty(),
        drift,
        field_manager,
        applied_fields,
        watcher: watcher.to_owned(),
        epoch,
        observed_at: Timestamp::now(),
    }
}

/// The events that going from `prev` to `next` makes.
fn events(prev: Option<&InventoryRecord>, next: &InventoryRecord) -> Vec<EventType> {
    let mut out = Vec::new();
    match prev {
        None => out.push(EventType::Created),
        Some(_) => out.push(EventType::Changed),
    }
    let drifted_anew = next.drifted && prev.is_none_or(|p| !p.drifted || p.drift != next.drift);
    if drifted_anew {
        out.push(EventType::Drifted);
    }
    if let Some(p) = prev
        && next.health == Health::Ready
        && p.health != Health::Ready
    {
        out.push(EventType::Ready);
    }
    if next.health == Health::Failed && prev.is_none_or(|p| p.health != Health::Failed) {
        out.push(EventType::Unhealthy);
    }
    out
}

fn event_object(r: &InventoryRecord) -> EventObject {
    EventObject {
        api_version: r.api_version.clone(),
        kind: r.kind.clone(),
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        uid: r.uid.clone(),
    }
}

fn object_event(kind: EventType, r: &InventoryRecord) -> Event {
    Event {
        id: object_event_id(r.cluster.as_str(), &r.uid, &r.resource_version, kind),
        kind,
        cluster: r.cluster.clone(),
        object: Some(event_object(r)),
        resource_version: Some(r.resource_version.clone()),
        generation: r.generation,
        operation: r.last_operation.clone(),
        health: Some(r.health),
        message: r.health_reason.clone(),
        drift: if kind == EventType::Drifted {
            r.drift.clone()
        } else {
            Vec::new()
        },
        watcher: r.watcher.clone(),
        at: Timestamp::now(),
    }
}

fn deleted_event(r: &InventoryRecord, watcher: &str) -> Event {
    let mut event = object_event(EventType::Deleted, r);
    event.watcher = watcher.to_owned();
    event.health = None;
    event.message = None;
    event
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DEPLOYMENT: Kind<'static> = Kind {
        api_version: "apps/v1",
        kind: "Deployment",
    };

    fn deployment(rv: &str, op: &str, managed: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "u-1",
                "resourceVersion": rv, "generation": 1,
                "annotations": {OPERATION_ID_ANNOTATION: op},
                "managedFields": managed},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                "availableReplicas": 2, "readyReplicas": 2}
        })
    }

    fn longshore_owns(replicas: bool) -> Value {
        let mut spec = json!({"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}}}});
        if replicas {
            spec["f:replicas"] = json!({});
        }
        json!({"manager": "longshore", "operation": "Apply", "fieldsV1": {
            "f:metadata": {"f:annotations": {"f:longshore.io/operation-id": {}}},
            "f:spec": spec}})
    }

    fn cluster() -> ClusterName {
        ClusterName::new("prod").unwrap()
    }

    #[test]
    fn fields_read_as_paths() {
        let owned = owned_fields(&json!({"metadata": {"managedFields": [longshore_owns(true)]}}));
        let paths: Vec<&str> = owned["longshore"].iter().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                ".metadata.annotations.longshore.io/operation-id",
                ".spec.replicas",
                ".spec.template.spec.containers[name=web]",
                ".spec.template.spec.containers[name=web].image",
            ]
        );
    }

    #[test]
    fn a_field_another_manager_took_is_drift_until_longshore_writes_again() {
        let first = record_of(
            &cluster(),
            DEPLOYMENT,
            &deployment("10", "op-1", json!([longshore_owns(true)])),
            None,
            "w",
            1,
        );
        assert!(!first.drifted);
        assert_eq!(first.field_manager.as_deref(), Some("longshore"));
        assert_eq!(first.health, Health::Ready);
        assert_eq!(events(None, &first), [EventType::Created]);

        // kubectl scale took .spec.replicas.
        let scaled = deployment(
            "11",
            "op-1",
            json!([longshore_owns(false),
                {"manager": "kubectl-patch", "operation": "Update",
                 "fieldsV1": {"f:spec": {"f:replicas": {}}}}]),
        );
        let drifted = record_of(&cluster(), DEPLOYMENT, &scaled, Some(&first), "w", 1);
        assert!(drifted.drifted);
        assert_eq!(
            drifted.drift,
            [Drift {
                path: ".spec.replicas".into(),
                manager: "kubectl-patch".into()
            }]
        );
        assert_eq!(
            events(Some(&first), &drifted),
            [EventType::Changed, EventType::Drifted]
        );
        // Seen again unchanged in its drift: changed, not drifted a second time.
        let again = record_of(&cluster(), DEPLOYMENT, &scaled, Some(&drifted), "w", 1);
        assert_eq!(events(Some(&drifted), &again), [EventType::Changed]);

        // A new operation takes the fields back: the baseline is set anew.
        let reapplied = deployment("12", "op-2", json!([longshore_owns(true)]));
        let back = record_of(&cluster(), DEPLOYMENT, &reapplied, Some(&drifted), "w", 1);
        assert!(!back.drifted);
        assert_eq!(back.last_operation.as_deref(), Some("op-2"));
    }

    #[test]
    fn health_moves_through_its_states_and_each_change_is_told_once() {
        let mut rolling = deployment("20", "op-1", json!([longshore_owns(true)]));
        rolling["status"]["updatedReplicas"] = json!(1);
        let progressing = record_of(&cluster(), DEPLOYMENT, &rolling, None, "w", 1);
        assert_eq!(progressing.health, Health::Progressing);
        assert_eq!(
            progressing.health_reason.as_deref(),
            Some("1/2 replicas updated")
        );
        let done = deployment("21", "op-1", json!([longshore_owns(true)]));
        let ready = record_of(&cluster(), DEPLOYMENT, &done, Some(&progressing), "w", 1);
        assert_eq!(
            events(Some(&progressing), &ready),
            [EventType::Changed, EventType::Ready]
        );
        let mut stuck = done.clone();
        stuck["status"]["conditions"] = json!([{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "too slow"}]);
        let failed = record_of(&cluster(), DEPLOYMENT, &stuck, Some(&ready), "w", 1);
        assert_eq!(failed.health, Health::Failed);
        assert_eq!(
            events(Some(&ready), &failed),
            [EventType::Changed, EventType::Unhealthy]
        );
    }

    #[test]
    fn a_kind_prefix_covers_its_keys_only() {
        let prefix = kind_prefix("prod", DEPLOYMENT);
        assert_eq!(prefix, "prod.apps.Deployment.");
        assert!(
            contract::object_key("prod", "apps/v1", "Deployment", Some("a"), "b")
                .starts_with(&prefix)
        );
        assert!(
            !contract::object_key("prod", "apps/v1", "DeploymentX", Some("a"), "b")
                .starts_with(&prefix)
        );
    }
}
