//! A rollout simulation: what the Deployment, StatefulSet, DaemonSet and Job controllers
//! (and the kubelets under them) would make of each workload's status, advanced over time.
//!
//! Off by default (status is then only what clients write). When on, each workload gains
//! one more updated and ready replica (a Job one more completion) every `step_ms`, unless
//! the cluster's rollouts are `stuck` (nothing progresses) or `failing` (nothing
//! progresses, and after `deadline_ms` a Deployment reports `ProgressDeadlineExceeded` and
//! a Job `BackoffLimitExceeded`). Deployments also get a ReplicaSet per pod template, with
//! the `deployment.kubernetes.io/revision` annotation the way the real controller numbers
//! them, so `kubectl rollout undo` (and longshore's `rollout-undo`) can find their history.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::ClusterState;
use crate::object::{self, meta_mut, meta_str};
use crate::server::Shared;
use crate::store::ObjKey;

/// The annotation holding a Deployment's (and its ReplicaSets') revision.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The label tying a ReplicaSet to the pod template it was made from.
const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Nodes a DaemonSet schedules a pod on.
const NODES: i64 = 2;
/// How often the controllers look at the workloads.
const TICK: Duration = Duration::from_millis(20);

/// How workloads progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutMode {
    /// One replica (or completion) more every `step_ms`.
    #[default]
    Progressing,
    /// The controllers observe each change, but no replica ever becomes updated.
    Stuck,
    /// Like stuck; after `deadline_ms` a Deployment's Progressing condition turns False
    /// (`ProgressDeadlineExceeded`) and a Job fails (`BackoffLimitExceeded`).
    Failing,
}

/// The rollout simulation's settings for one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rollouts {
    /// Whether the simulated controllers run at all.
    pub enabled: bool,
    pub mode: RolloutMode,
    /// Time for one more replica to become updated and ready.
    pub step_ms: u64,
    /// For `failing`: time from the start of a rollout until it is reported failed.
    pub deadline_ms: u64,
}

impl Default for Rollouts {
    fn default() -> Self {
        Rollouts {
            enabled: false,
            mode: RolloutMode::Progressing,
            step_ms: 100,
            deadline_ms: 500,
        }
    }
}

impl Rollouts {
    /// Rollouts on, progressing one replica every `step`.
    pub fn progressing(step: Duration) -> Self {
        Rollouts {
            enabled: true,
            step_ms: step.as_millis() as u64,
            ..Default::default()
        }
    }

    /// Rollouts on, but never progressing.
    pub fn stuck() -> Self {
        Rollouts {
            enabled: true,
            mode: RolloutMode::Stuck,
            ..Default::default()
        }
    }

    /// Rollouts on, failing `deadline` after they start.
    pub fn failing(deadline: Duration) -> Self {
        Rollouts {
            enabled: true,
            mode: RolloutMode::Failing,
            deadline_ms: deadline.as_millis() as u64,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.enabled && self.step_ms == 0 {
            return Err("step_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// Where each workload's current rollout started, by object.
#[derive(Debug, Default)]
pub(crate) struct Controller {
    pub settings: Rollouts,
    tracks: HashMap<ObjKey, Track>,
}

#[derive(Debug)]
struct Track {
    /// The pod template (or, for a Job, the object's uid) the rollout is for.
    hash: String,
    since: Instant,
}

impl Controller {
    pub fn new(settings: Rollouts) -> Self {
        Controller {
            settings,
            tracks: HashMap::new(),
        }
    }
}

/// Runs the controllers of every cluster until `shutdown`.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        // An unused cluster has no workloads.
        shared.fleet.for_each_used(|state| {
            if state.rollouts.settings.enabled {
                advance(state, Instant::now());
            }
        });
    }
}

/// Progress, as of `now`, for a rollout that started at `since`.
struct Clock<'a> {
    settings: &'a Rollouts,
    elapsed: Duration,
}

impl Clock<'_> {
    /// How many replicas of `desired` are updated by now.
    fn done(&self, desired: i64) -> i64 {
        match self.settings.mode {
            RolloutMode::Progressing => {
                let steps = self.elapsed.as_millis() / u128::from(self.settings.step_ms.max(1));
                desired.min(i64::try_from(steps).unwrap_or(i64::MAX))
            }
            RolloutMode::Stuck | RolloutMode::Failing => 0,
        }
    }

    fn failed(&self) -> bool {
        self.settings.mode == RolloutMode::Failing
            && self.elapsed >= Duration::from_millis(self.settings.deadline_ms)
    }
}

/// One pass of every controller over the cluster's workloads.
pub(crate) fn advance(state: &mut ClusterState, now: Instant) {
    let kinds = ["deployments", "statefulsets", "daemonsets"];
    let mut seen = Vec::new();
    for plural in kinds {
        let objects: Vec<(ObjKey, Value)> = state
            .store
            .list("apps", plural, None)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, obj) in objects {
            seen.push(key.clone());
            let paused = obj.pointer("/spec/paused") == Some(&json!(true));
            let hash = template_hash(obj.pointer("/spec/template"));
            let track = state.rollouts.tracks.entry(key.clone()).or_insert(Track {
                hash: hash.clone(),
                since: now,
            });
            if track.hash != hash && !paused {
                *track = Track {
                    hash: hash.clone(),
                    since: now,
                };
            }
            let clock = Clock {
                settings: &state.rollouts.settings,
                elapsed: now.saturating_duration_since(track.since),
            };
            let status = match plural {
                "deployments" => deployment_status(&obj, &clock, paused),
                "statefulsets" => statefulset_status(&obj, &clock, &hash),
                _ => daemonset_status(&obj, &clock),
            };
            let mut obj = obj;
            if plural == "deployments" && !paused {
                let revision = replica_sets(state, &key, &obj, &hash);
                let annotations = meta_mut(&mut obj)
                    .entry("annotations")
                    .or_insert_with(|| json!({}));
                annotations[REVISION_ANNOTATION] = json!(revision.to_string());
            }
            put_status(state, key, obj, status);
        }
    }
    let jobs: Vec<(ObjKey, Value)> = state
        .store
        .list("batch", "jobs", None)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, obj) in jobs {
        seen.push(key.clone());
        let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
        let track = state.rollouts.tracks.entry(key.clone()).or_insert(Track {
            hash: uid.clone(),
            since: now,
        });
        if track.hash != uid {
            *track = Track {
                hash: uid,
                since: now,
            };
        }
        let clock = Clock {
            settings: &state.rollouts.settings,
            elapsed: now.saturating_duration_since(track.since),
        };
        if let Some(status) = job_status(&obj, &clock) {
            put_status(state, key, obj, status);
        }
    }
    state.rollouts.tracks.retain(|k, _| seen.contains(k));
}

/// Stores `obj` with `status` if that changes anything (a rewrite would bump the
/// resourceVersion and wake every watcher for nothing).
fn put_status(state: &mut ClusterState, key: ObjKey, mut obj: Value, status: Value) {
    let before = state.store.get(&key).cloned();
    let status = keep_transition_times(obj.get("status"), status);
    obj["status"] = status;
    if before.as_ref() != Some(&obj) {
        state.store.put(key, obj);
    }
}

fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn generation(obj: &Value) -> i64 {
    obj.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn condition(kind: &str, status: &str, reason: &str, message: String) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": message})
}

/// Carries a condition's timestamps over while its status stays the same, and stamps now
/// on one that changed.
fn keep_transition_times(old: Option<&Value>, mut status: Value) -> Value {
    let old_conditions = old
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in conditions {
            let previous = old_conditions.iter().find(|o| o["type"] == c["type"]);
            let (transition, update) = match previous {
                Some(p) if p["status"] == c["status"] && p["reason"] == c["reason"] => {
                    (p["lastTransitionTime"].clone(), p["lastUpdateTime"].clone())
                }
                Some(p) if p["status"] == c["status"] => {
                    (p["lastTransitionTime"].clone(), json!(object::now()))
                }
                _ => (json!(object::now()), json!(object::now())),
            };
            c["lastTransitionTime"] = transition;
            c["lastUpdateTime"] = update;
        }
    }
    status
}

fn deployment_status(obj: &Value, clock: &Clock<'_>, paused: bool) -> Value {
    let desired = replicas(obj);
    let name = meta_str(obj, "name").unwrap_or_default();
    let current = obj.get("status");
    let counter = |field: &str| {
        current
            .and_then(|s| s.get(field))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let updated = if paused {
        counter("updatedReplicas").min(desired)
    } else {
        clock.done(desired)
    };
    let available = if paused {
        counter("availableReplicas").min(desired)
    } else {
        updated
    };
    let progressing = if paused {
        condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
        )
    } else if updated >= desired {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{name}\" has successfully progressed."),
        )
    } else if clock.failed() {
        condition(
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{name}\" has timed out progressing."),
        )
    } else {
        condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{name}\" is progressing."),
        )
    };
    let available_condition = if available >= desired {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    json!({
        "observedGeneration": generation(obj),
        "replicas": desired,
        "updatedReplicas": updated,
        "readyReplicas": available,
        "availableReplicas": available,
        "unavailableReplicas": desired - available,
        "conditions": [available_condition, progressing],
    })
}

fn statefulset_status(obj: &Value, clock: &Clock<'_>, hash: &str) -> Value {
    let desired = replicas(obj);
    let name = meta_str(obj, "name").unwrap_or_default();
    let updated = clock.done(desired);
    let update_revision = format!("{name}-{hash}");
    let current_revision = if updated >= desired {
        update_revision.clone()
    } else {
        obj.pointer("/status/currentRevision")
            .and_then(Value::as_str)
            .map_or_else(|| update_revision.clone(), str::to_owned)
    };
    json!({
        "observedGeneration": generation(obj),
        "replicas": desired,
        "readyReplicas": updated,
        "availableReplicas": updated,
        "currentReplicas": updated,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
    })
}

fn daemonset_status(obj: &Value, clock: &Clock<'_>) -> Value {
    let updated = clock.done(NODES);
    json!({
        "observedGeneration": generation(obj),
        "desiredNumberScheduled": NODES,
        "currentNumberScheduled": NODES,
        "updatedNumberScheduled": updated,
        "numberReady": updated,
        "numberAvailable": updated,
        "numberUnavailable": NODES - updated,
        "numberMisscheduled": 0,
    })
}

/// A Job's status, or `None` once it has finished (its status no longer changes).
fn job_status(obj: &Value, clock: &Clock<'_>) -> Option<Value> {
    let conditions = obj.pointer("/status/conditions").and_then(Value::as_array);
    let finished = conditions.is_some_and(|cs| {
        cs.iter()
            .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
    });
    if finished {
        return None;
    }
    let spec = |field: &str, default: i64| {
        obj.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_i64)
            .unwrap_or(default)
    };
    let completions = spec("completions", 1);
    let parallelism = spec("parallelism", 1).max(1);
    let start = obj
        .pointer("/status/startTime")
        .cloned()
        .unwrap_or_else(|| json!(object::now()));
    let succeeded = clock.done(completions);
    let mut status = json!({"startTime": start, "succeeded": succeeded});
    if succeeded >= completions {
        status["completionTime"] = json!(object::now());
        status["conditions"] = json!([condition(
            "Complete",
            "True",
            "CompletionsReached",
            "Reached expected number of succeeded pods".into()
        )]);
    } else if clock.failed() {
        status["failed"] = json!(spec("backoffLimit", 6) + 1);
        status["conditions"] = json!([condition(
            "Failed",
            "True",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".into()
        )]);
    } else {
        status["active"] = json!(parallelism.min(completions - succeeded));
    }
    Some(status)
}

/// A short, stable hash of a pod template.
fn template_hash(template: Option<&Value>) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    template.map(Value::to_string).hash(&mut hasher);
    format!("{:010x}", hasher.finish() & 0xff_ffff_ffff)
}

fn revision(obj: &Value) -> i64 {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Keeps one ReplicaSet per pod template the Deployment has had: the current template's
/// is scaled to the Deployment's replicas and holds the highest revision (a template that
/// comes back, as after an undo, takes the next revision, as the real controller does);
/// the others are scaled to zero. Returns the current revision.
fn replica_sets(state: &mut ClusterState, key: &ObjKey, deploy: &Value, hash: &str) -> i64 {
    let (_, _, ns, name) = key;
    let uid = meta_str(deploy, "uid").unwrap_or_default().to_string();
    let owned: Vec<(ObjKey, Value)> = state
        .store
        .list("apps", "replicasets", Some(ns))
        .filter(|(_, rs)| rs.pointer("/metadata/ownerReferences/0/uid") == Some(&json!(uid)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let newest = owned.iter().map(|(_, rs)| revision(rs)).max().unwrap_or(0);
    let is_current = |rs: &Value| {
        rs.pointer(&format!("/metadata/labels/{TEMPLATE_HASH_LABEL}")) == Some(&json!(hash))
    };
    let desired = replicas(deploy);
    let mut current_revision = newest;
    for (rs_key, rs) in &owned {
        let mut changed = rs.clone();
        if is_current(rs) {
            if revision(rs) < newest {
                current_revision = newest + 1;
                changed["metadata"]["annotations"][REVISION_ANNOTATION] =
                    json!(current_revision.to_string());
            } else {
                current_revision = revision(rs);
            }
            changed["spec"]["replicas"] = json!(desired);
        } else {
            changed["spec"]["replicas"] = json!(0);
        }
        if changed != *rs {
            state.store.put(rs_key.clone(), changed);
        }
    }
    if owned.iter().any(|(_, rs)| is_current(rs)) {
        return current_revision;
    }
    let revision = newest + 1;
    let mut template = deploy
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let labels = meta_mut(&mut template)
        .entry("labels")
        .or_insert_with(|| json!({}));
    labels[TEMPLATE_HASH_LABEL] = json!(hash);
    let mut rs_labels = template["metadata"]["labels"].clone();
    rs_labels[TEMPLATE_HASH_LABEL] = json!(hash);
    let rs_name = format!("{name}-{hash}");
    let rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": rs_name,
            "namespace": ns,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": object::now(),
            "generation": 1,
            "labels": rs_labels,
            "annotations": {REVISION_ANNOTATION: revision.to_string()},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "replicas": desired,
            "selector": deploy.pointer("/spec/selector").cloned().unwrap_or_else(|| json!({})),
            "template": template,
        },
    });
    let rs_key = (
        "apps".to_string(),
        "replicasets".to_string(),
        ns.clone(),
        rs_name,
    );
    state.store.put(rs_key, rs);
    revision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(settings: &Rollouts, ms: u64) -> Clock<'_> {
        Clock {
            settings,
            elapsed: Duration::from_millis(ms),
        }
    }

    fn deployment(replicas: i64) -> Value {
        json!({"metadata": {"name": "web", "generation": 2}, "spec": {"replicas": replicas}})
    }

    #[test]
    fn a_progressing_deployment_gains_a_replica_each_step_then_completes() {
        let settings = Rollouts::progressing(Duration::from_millis(100));
        let s = deployment_status(&deployment(3), &clock(&settings, 250), false);
        assert_eq!(s["updatedReplicas"], 2);
        assert_eq!(s["observedGeneration"], 2);
        assert_eq!(s["conditions"][1]["reason"], "ReplicaSetUpdated");
        let s = deployment_status(&deployment(3), &clock(&settings, 1000), false);
        assert_eq!(s["availableReplicas"], 3);
        assert_eq!(s["conditions"][1]["reason"], "NewReplicaSetAvailable");
    }

    #[test]
    fn a_failing_deployment_exceeds_its_deadline_and_a_stuck_one_never_moves() {
        let failing = Rollouts::failing(Duration::from_millis(300));
        let before = deployment_status(&deployment(2), &clock(&failing, 200), false);
        assert_eq!(before["conditions"][1]["status"], "True");
        let after = deployment_status(&deployment(2), &clock(&failing, 300), false);
        assert_eq!(after["conditions"][1]["reason"], "ProgressDeadlineExceeded");
        let stuck = Rollouts::stuck();
        let s = deployment_status(&deployment(2), &clock(&stuck, 60_000), false);
        assert_eq!(s["updatedReplicas"], 0);
        assert_eq!(s["conditions"][1]["reason"], "ReplicaSetUpdated");
    }

    #[test]
    fn a_job_completes_or_fails_and_then_stays_as_it_is() {
        let settings = Rollouts::progressing(Duration::from_millis(10));
        let job = json!({"metadata": {"name": "j"}, "spec": {"completions": 2}});
        let s = job_status(&job, &clock(&settings, 20)).unwrap();
        assert_eq!(s["conditions"][0]["type"], "Complete");
        let done = json!({"status": s});
        assert!(job_status(&done, &clock(&settings, 20)).is_none());
        let failing = Rollouts::failing(Duration::ZERO);
        let s = job_status(&job, &clock(&failing, 0)).unwrap();
        assert_eq!(s["conditions"][0]["reason"], "BackoffLimitExceeded");
    }
}
