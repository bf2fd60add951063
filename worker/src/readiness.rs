//! Whether an object is stable, kstatus-style: ready, still in progress (and how far), or
//! failed (and why, from its conditions).
//!
//! - every kind whose status has `observedGeneration`: in progress until it reaches
//!   `metadata.generation` (the controller has not seen the change yet);
//! - Deployment: failed when `Progressing` is False with `ProgressDeadlineExceeded`;
//!   ready when updated, available and ready replicas all reach `spec.replicas` and no old
//!   replica is left; a paused Deployment is ready once its controller saw the pause;
//! - StatefulSet: ready, updated replicas and the current revision reaching the update
//!   revision;
//! - DaemonSet: updated and available pods reaching the desired number scheduled;
//! - Job: ready when `Complete`, failed when `Failed`;
//! - anything else with a `Ready` condition (or else an `Available` one): ready when it is
//!   True, in progress otherwise;
//! - everything else: ready when it exists.

use serde_json::Value;

/// Where an object stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not yet: how far it is, e.g. `2/3 replicas updated`.
    InProgress(String),
    /// It will not become ready by itself: the reason from its conditions.
    Failed(String),
}

use Readiness::*;

pub fn readiness(kind: &str, obj: &Value) -> Readiness {
    let status = obj.get("status").unwrap_or(&Value::Null);
    let int = |v: &Value, field: &str| v.get(field).and_then(Value::as_i64).unwrap_or(0);
    let workload = matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet");
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    match status.get("observedGeneration").and_then(Value::as_i64) {
        Some(observed) if observed < generation => {
            return InProgress(format!(
                "waiting for the controller to observe generation {generation}"
            ));
        }
        None if workload => {
            return InProgress("waiting for the controller to report status".into());
        }
        _ => {}
    }
    let desired = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    match kind {
        "Deployment" => {
            if let Some(c) = condition(status, "Progressing")
                && c["status"] == "False"
                && c["reason"] == "ProgressDeadlineExceeded"
            {
                return Failed(describe(c));
            }
            if obj.pointer("/spec/paused") == Some(&Value::Bool(true)) {
                return Ready;
            }
            let updated = int(status, "updatedReplicas");
            let replicas = int(status, "replicas");
            let available = int(status, "availableReplicas");
            let ready = int(status, "readyReplicas");
            if updated < desired {
                InProgress(format!("{updated}/{desired} replicas updated"))
            } else if replicas > updated {
                InProgress(format!(
                    "{} old replicas pending termination",
                    replicas - updated
                ))
            } else if available < desired {
                InProgress(format!("{available}/{desired} replicas available"))
            } else if ready < desired {
                InProgress(format!("{ready}/{desired} replicas ready"))
            } else {
                Ready
            }
        }
        "StatefulSet" => {
            let ready = int(status, "readyReplicas");
            let updated = int(status, "updatedReplicas");
            let on_delete =
                obj.pointer("/spec/updateStrategy/type") == Some(&Value::String("OnDelete".into()));
            if ready < desired {
                InProgress(format!("{ready}/{desired} replicas ready"))
            } else if on_delete {
                Ready
            } else if updated < desired {
                InProgress(format!("{updated}/{desired} replicas updated"))
            } else if status.get("currentRevision") != status.get("updateRevision") {
                InProgress("waiting for the update revision to become current".into())
            } else {
                Ready
            }
        }
        "DaemonSet" => {
            let scheduled = int(status, "desiredNumberScheduled");
            let updated = int(status, "updatedNumberScheduled");
            let available = int(status, "numberAvailable");
            if updated < scheduled {
                InProgress(format!("{updated}/{scheduled} pods updated"))
            } else if available < scheduled {
                InProgress(format!("{available}/{scheduled} pods available"))
            } else {
                Ready
            }
        }
        "Job" => {
            let is_true = |kind| condition(status, kind).filter(|c| c["status"] == "True");
            if is_true("Complete").is_some() {
                Ready
            } else if let Some(c) = is_true("Failed") {
                Failed(describe(c))
            } else {
                let completions = obj
                    .pointer("/spec/completions")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                InProgress(format!(
                    "{}/{completions} completions, {} active",
                    int(status, "succeeded"),
                    int(status, "active")
                ))
            }
        }
        _ => match condition(status, "Ready").or_else(|| condition(status, "Available")) {
            Some(c) if c["status"] == "True" => Ready,
            Some(c) => InProgress(describe(c)),
            None => Ready,
        },
    }
}

fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// `Reason: message` of a condition, or its type and status.
fn describe(c: &Value) -> String {
    let text = [c.get("reason"), c.get("message")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    if text.is_empty() {
        format!("{} is {}", c["type"], c["status"])
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(status: Value) -> Value {
        json!({"metadata": {"generation": 2}, "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn a_deployment_is_ready_when_every_counter_reaches_its_replicas() {
        let unobserved = deployment(json!({"observedGeneration": 1}));
        assert!(
            matches!(readiness("Deployment", &unobserved), InProgress(m) if m.contains("generation 2"))
        );
        let partway =
            deployment(json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2}));
        assert_eq!(
            readiness("Deployment", &partway),
            InProgress("2/3 replicas updated".into())
        );
        let done = deployment(
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
            "availableReplicas": 3, "readyReplicas": 3}),
        );
        assert_eq!(readiness("Deployment", &done), Ready);
        assert!(matches!(
            readiness("Deployment", &json!({"metadata": {}})),
            InProgress(_)
        ));
    }

    #[test]
    fn a_deployment_past_its_progress_deadline_has_failed_with_the_conditions_reason() {
        let failed = deployment(json!({"observedGeneration": 2, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": "ReplicaSet \"web-1\" has timed out progressing."}]}));
        assert_eq!(
            readiness("Deployment", &failed),
            Failed(
                "ProgressDeadlineExceeded: ReplicaSet \"web-1\" has timed out progressing.".into()
            )
        );
    }

    #[test]
    fn statefulsets_daemonsets_and_jobs_follow_their_own_counters() {
        let sts = json!({"metadata": {"generation": 1}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 2,
                "currentRevision": "a", "updateRevision": "b"}});
        assert!(matches!(readiness("StatefulSet", &sts), InProgress(_)));
        let ds = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1,
            "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 1}});
        assert_eq!(
            readiness("DaemonSet", &ds),
            InProgress("1/2 pods available".into())
        );
        let failed = json!({"status": {"conditions": [{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded"}]}});
        assert_eq!(
            readiness("Job", &failed),
            Failed("BackoffLimitExceeded".into())
        );
        let complete = json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(readiness("Job", &complete), Ready);
    }

    #[test]
    fn other_kinds_follow_ready_then_available_conditions_or_are_ready_when_they_exist() {
        let waiting = json!({"status": {"conditions": [{"type": "Ready", "status": "False",
            "reason": "Provisioning"}]}});
        assert_eq!(
            readiness("Database", &waiting),
            InProgress("Provisioning".into())
        );
        let available =
            json!({"status": {"conditions": [{"type": "Available", "status": "True"}]}});
        assert_eq!(readiness("Gateway", &available), Ready);
        assert_eq!(readiness("ConfigMap", &json!({"data": {}})), Ready);
    }
}
