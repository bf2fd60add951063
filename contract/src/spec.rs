//! What a pipeline asks longshore to do: the part of an operation that both the dispatcher
//! (which validates it before accepting) and the worker (which carries it out) read.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The default server-side apply field manager.
pub const DEFAULT_FIELD_MANAGER: &str = "longshore";

/// The Kubernetes action an operation performs on its objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Server-side apply of each manifest (creates or updates).
    Apply,
    /// Create each manifest; an object this operation already created counts as done.
    Create,
    /// Replace (PUT) each manifest.
    Replace,
    /// Patch each target with one patch body.
    Patch,
    /// Delete each target (or each manifest's object); a missing object counts as done.
    Delete,
    /// Set each target's replica count (`replicas`) through its `/scale` subresource.
    Scale,
    /// Restart each target workload's pods by stamping its pod template with the operation.
    RolloutRestart,
    /// Pause each target Deployment's rollout (`spec.paused: true`).
    RolloutPause,
    /// Resume each target Deployment's rollout (`spec.paused: false`).
    RolloutResume,
    /// Roll each target Deployment back to its previous revision, or to `toRevision`.
    RolloutUndo,
    /// Create the Job of the one manifest under a name derived from the operation id.
    RunJob,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Apply => "apply",
            Action::Create => "create",
            Action::Replace => "replace",
            Action::Patch => "patch",
            Action::Delete => "delete",
            Action::Scale => "scale",
            Action::RolloutRestart => "rollout-restart",
            Action::RolloutPause => "rollout-pause",
            Action::RolloutResume => "rollout-resume",
            Action::RolloutUndo => "rollout-undo",
            Action::RunJob => "run-job",
        }
    }

    /// Every action, in documentation order.
    pub const ALL: [Action; 11] = [
        Action::Apply,
        Action::Create,
        Action::Replace,
        Action::Patch,
        Action::Delete,
        Action::Scale,
        Action::RolloutRestart,
        Action::RolloutPause,
        Action::RolloutResume,
        Action::RolloutUndo,
        Action::RunJob,
    ];

    /// Whether the action works on object references (`targets`) rather than manifests.
    pub fn takes_targets(self) -> bool {
        matches!(
            self,
            Action::Patch
                | Action::Scale
                | Action::RolloutRestart
                | Action::RolloutPause
                | Action::RolloutResume
                | Action::RolloutUndo
        )
    }

    /// The kinds a rollout action can act on, or `None` if the action takes any kind.
    pub fn kinds(self) -> Option<&'static [&'static str]> {
        match self {
            Action::RolloutRestart => Some(&["Deployment", "StatefulSet", "DaemonSet"]),
            Action::RolloutPause | Action::RolloutResume | Action::RolloutUndo => {
                Some(&["Deployment"])
            }
            Action::RunJob => Some(&["Job"]),
            _ => None,
        }
    }
}

/// Waiting, after the change, until every object is stable (ready, failed or timed out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaitOptions {
    /// How long to wait for all objects together, e.g. `"5m"`.
    #[serde(with = "crate::duration")]
    pub timeout: std::time::Duration,
}

/// The longest wait an operation may ask for: the worker holds a slot (and its objects'
/// fences) meanwhile.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Parameters only some actions take.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionParams {
    /// For `scale`: the absolute replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// For `rollout-undo`: the revision to roll back to (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_revision: Option<i64>,
}

/// How a patch body is interpreted, as the Kubernetes API defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PatchType {
    /// RFC 7386 JSON merge patch.
    Merge,
    /// RFC 6902 JSON patch (a list of operations).
    Json,
    /// Kubernetes strategic merge patch.
    Strategic,
}

/// A patch to apply to every target of a `patch` operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchSpec {
    #[serde(rename = "type")]
    pub patch_type: PatchType,
    pub body: Value,
}

/// Names one Kubernetes object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    /// The reference a manifest names, if it names one (see [`check_manifest`]).
    pub fn of_manifest(manifest: &Value) -> Option<Self> {
        let meta = manifest.get("metadata")?;
        Some(Self {
            api_version: manifest.get("apiVersion")?.as_str()?.to_owned(),
            kind: manifest.get("kind")?.as_str()?.to_owned(),
            namespace: meta
                .get("namespace")
                .and_then(Value::as_str)
                .map(str::to_owned),
            name: meta.get("name")?.as_str()?.to_owned(),
        })
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{} {ns}/{}", self.api_version, self.kind, self.name),
            None => write!(f, "{}/{} {}", self.api_version, self.kind, self.name),
        }
    }
}

/// Deletion propagation, as the Kubernetes API defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PropagationPolicy {
    Foreground,
    Background,
    Orphan,
}

/// Options that change how an action is carried out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Options {
    /// Server-side dry run: the API server validates and answers, nothing is stored.
    pub dry_run: bool,
    /// The field manager for server-side apply and other writes.
    pub field_manager: String,
    /// Server-side apply takes ownership of conflicting fields (on by default, as a
    /// pipeline's manifest is the intent).
    pub force: bool,
    /// How a delete treats dependents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation_policy: Option<PropagationPolicy>,
    /// Wait, after the change, until every object is stable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitOptions>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dry_run: false,
            field_manager: DEFAULT_FIELD_MANAGER.to_owned(),
            force: true,
            propagation_policy: None,
            wait: None,
        }
    }
}

/// Where in a pipeline an operation comes from. Informational, and kept in the record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// The work of one operation: an action on one cluster's objects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationSpec {
    pub cluster: crate::ClusterName,
    pub action: Action,
    /// Whole objects, for apply, create, replace and (as references) delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Value>,
    /// Object references, for patch and delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchSpec>,
    /// `replicas` and `toRevision`, for the actions that take them.
    #[serde(flatten)]
    pub params: ActionParams,
    #[serde(default)]
    pub options: Options,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineContext>,
}

/// A problem with one field of a request: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// A JSON-path-like location, e.g. `manifests[2].metadata.name`.
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl OperationSpec {
    /// Checks everything that can be checked without a cluster, returning every problem.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        for (i, manifest) in self.manifests.iter().enumerate() {
            let checked = if self.action == Action::RunJob {
                check_job_manifest(manifest)
            } else {
                check_manifest(manifest)
            };
            if let Err(e) = checked {
                errors.push(FieldError::new(
                    format!("manifests[{i}]{}", e.field),
                    e.reason,
                ));
            }
        }
        for (i, target) in self.targets.iter().enumerate() {
            for (field, value) in [
                ("apiVersion", &target.api_version),
                ("kind", &target.kind),
                ("name", &target.name),
            ] {
                if value.is_empty() {
                    errors.push(FieldError::new(
                        format!("targets[{i}].{field}"),
                        "must not be empty",
                    ));
                }
            }
        }
        let needs = |errors: &mut Vec<FieldError>, ok: bool, field: &str, reason: &str| {
            if !ok {
                errors.push(FieldError::new(field, reason));
            }
        };
        let action = self.action.as_str();
        match self.action {
            Action::Apply | Action::Create | Action::Replace => {
                needs(
                    &mut errors,
                    !self.manifests.is_empty(),
                    "manifests",
                    &format!("{action} needs at least one manifest"),
                );
                needs(
                    &mut errors,
                    self.targets.is_empty(),
                    "targets",
                    &format!("{action} takes manifests, not targets"),
                );
                needs(
                    &mut errors,
                    self.patch.is_none(),
                    "patch",
                    &format!("{action} takes no patch"),
                );
            }
            Action::Patch => {
                needs(
                    &mut errors,
                    !self.targets.is_empty(),
                    "targets",
                    "patch needs at least one target",
                );
                needs(
                    &mut errors,
                    self.manifests.is_empty(),
                    "manifests",
                    "patch takes targets and a patch, not manifests",
                );
                match &self.patch {
                    None => {
                        errors.push(FieldError::new("patch", "patch needs a patch {type, body}"))
                    }
                    Some(p) => {
                        let shape_ok = match p.patch_type {
                            PatchType::Json => p.body.is_array(),
                            PatchType::Merge | PatchType::Strategic => p.body.is_object(),
                        };
                        needs(
                            &mut errors,
                            shape_ok,
                            "patch.body",
                            "a json patch is an array of operations; merge and strategic patches are objects",
                        );
                    }
                }
            }
            Action::Delete => {
                needs(
                    &mut errors,
                    !self.manifests.is_empty() || !self.targets.is_empty(),
                    "targets",
                    "delete needs targets or manifests",
                );
                needs(
                    &mut errors,
                    self.patch.is_none(),
                    "patch",
                    "delete takes no patch",
                );
            }
            Action::Scale
            | Action::RolloutRestart
            | Action::RolloutPause
            | Action::RolloutResume
            | Action::RolloutUndo => {
                needs(
                    &mut errors,
                    !self.targets.is_empty(),
                    "targets",
                    &format!("{action} needs at least one target"),
                );
                needs(
                    &mut errors,
                    self.manifests.is_empty(),
                    "manifests",
                    &format!("{action} takes targets, not manifests"),
                );
                needs(
                    &mut errors,
                    self.patch.is_none(),
                    "patch",
                    &format!("{action} takes no patch"),
                );
            }
            Action::RunJob => {
                needs(
                    &mut errors,
                    self.manifests.len() == 1,
                    "manifests",
                    "run-job needs exactly one Job manifest",
                );
                needs(
                    &mut errors,
                    self.targets.is_empty(),
                    "targets",
                    "run-job takes a manifest, not targets",
                );
                needs(
                    &mut errors,
                    self.patch.is_none(),
                    "patch",
                    "run-job takes no patch",
                );
            }
        }
        if let Some(kinds) = self.action.kinds() {
            let allowed = kinds.join(", ");
            let refs = self.targets.iter().map(|t| Some(t.kind.as_str()));
            let kinds_given = self
                .manifests
                .iter()
                .map(|m| m.get("kind").and_then(Value::as_str))
                .chain(refs);
            let place = if self.action.takes_targets() {
                "targets"
            } else {
                "manifests"
            };
            for (i, kind) in kinds_given.enumerate() {
                if let Some(kind) = kind.filter(|k| !k.is_empty() && !kinds.contains(k)) {
                    let i = if place == "targets" {
                        i - self.manifests.len()
                    } else {
                        i
                    };
                    errors.push(FieldError::new(
                        format!("{place}[{i}].kind"),
                        format!("{action} works on {allowed}, not {kind}"),
                    ));
                }
            }
        }
        match (self.action, self.params.replicas) {
            (Action::Scale, None) => {
                errors.push(FieldError::new("replicas", "scale needs a replica count"))
            }
            (Action::Scale, Some(n)) if n < 0 => {
                errors.push(FieldError::new("replicas", "must not be negative"))
            }
            (Action::Scale, Some(_)) | (_, None) => {}
            (_, Some(_)) => errors.push(FieldError::new(
                "replicas",
                format!("only scale takes replicas, not {action}"),
            )),
        }
        match (self.action, self.params.to_revision) {
            (Action::RolloutUndo, Some(r)) if r < 1 => errors.push(FieldError::new(
                "toRevision",
                "must be 1 or more (leave it out for the previous revision)",
            )),
            (Action::RolloutUndo, _) | (_, None) => {}
            (_, Some(_)) => errors.push(FieldError::new(
                "toRevision",
                format!("only rollout-undo takes toRevision, not {action}"),
            )),
        }
        if let Some(wait) = &self.options.wait {
            if wait.timeout.is_zero() || wait.timeout > MAX_WAIT {
                errors.push(FieldError::new(
                    "options.wait.timeout",
                    "must be more than 0s and at most 1h",
                ));
            }
            if self.action == Action::Delete {
                errors.push(FieldError::new(
                    "options.wait",
                    "delete does not wait: there is nothing left to become ready",
                ));
            }
            if self.options.dry_run {
                errors.push(FieldError::new(
                    "options.wait",
                    "a dry run changes nothing, so there is nothing to wait for",
                ));
            }
        }
        if self.options.field_manager.is_empty() || self.options.field_manager.len() > 128 {
            errors.push(FieldError::new(
                "options.fieldManager",
                "must be 1 to 128 characters",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Every object this operation touches, in the order given.
    pub fn objects(&self) -> Vec<ObjectRef> {
        self.manifests
            .iter()
            .filter_map(ObjectRef::of_manifest)
            .chain(self.targets.iter().cloned())
            .collect()
    }
}

/// Checks a `run-job` manifest: like [`check_manifest`], but `metadata.generateName` may
/// stand in for the name (the Job's name is derived from the operation id either way).
pub fn check_job_manifest(manifest: &Value) -> Result<(), FieldError> {
    let generate = manifest
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match (check_manifest(manifest), generate) {
        (Err(e), Some(_)) if e.field == ".metadata.name" => Ok(()),
        (checked, _) => checked,
    }
}

/// The name `run-job` gives the Job of `manifest` for operation `id`: the manifest's name
/// (or `generateName`) and the end of the id, so a redelivered operation finds the Job
/// its first delivery created, and two operations never share one.
pub fn job_name(manifest: &Value, id: &crate::OperationId) -> String {
    let meta = manifest.get("metadata");
    let base = meta
        .and_then(|m| m.get("name"))
        .or_else(|| meta.and_then(|m| m.get("generateName")))
        .and_then(Value::as_str)
        .unwrap_or("job");
    let id = id.as_str();
    // Ids are lowercase base32: every suffix is a valid DNS label part.
    let suffix = &id[id.len().saturating_sub(10)..];
    let base: String = base.trim_end_matches('-').chars().take(52).collect();
    format!("{}-{suffix}", base.trim_end_matches(['-', '.']))
}

/// Checks that a manifest is an object naming apiVersion, kind and metadata.name.
/// The error's `field` is relative to the manifest (e.g. `.metadata.name`).
pub fn check_manifest(manifest: &Value) -> Result<(), FieldError> {
    let Some(obj) = manifest.as_object() else {
        return Err(FieldError::new("", "a manifest must be an object"));
    };
    for key in ["apiVersion", "kind"] {
        match obj.get(key) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::String(_)) | None => {
                return Err(FieldError::new(format!(".{key}"), "is required"));
            }
            Some(_) => return Err(FieldError::new(format!(".{key}"), "must be a string")),
        }
    }
    let Some(meta) = obj.get("metadata").and_then(Value::as_object) else {
        return Err(FieldError::new(
            ".metadata",
            "is required and must be an object",
        ));
    };
    match meta.get("name") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => return Err(FieldError::new(".metadata.name", "is required")),
    }
    match meta.get("namespace") {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(FieldError::new(".metadata.namespace", "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(action: Action) -> OperationSpec {
        OperationSpec {
            cluster: crate::ClusterName::new("prod").unwrap(),
            action,
            manifests: vec![],
            targets: vec![],
            patch: None,
            params: ActionParams::default(),
            options: Options::default(),
            pipeline: None,
        }
    }

    fn configmap(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}})
    }

    #[test]
    fn apply_with_good_manifests_is_valid() {
        let mut s = spec(Action::Apply);
        s.manifests = vec![configmap("a"), configmap("b")];
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.objects().len(), 2);
    }

    #[test]
    fn each_bad_manifest_is_named_with_its_index_and_field() {
        let mut s = spec(Action::Apply);
        s.manifests = vec![
            configmap("ok"),
            json!({"kind": "ConfigMap", "metadata": {"name": "x"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
            json!("not an object"),
        ];
        let fields: Vec<String> = s
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "manifests[1].apiVersion",
                "manifests[2].metadata.name",
                "manifests[3]"
            ]
        );
    }

    #[test]
    fn patch_needs_targets_and_a_body_of_the_right_shape() {
        let mut s = spec(Action::Patch);
        let fields: Vec<String> = s
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["targets", "patch"]);
        s.targets = vec![ObjectRef::of_manifest(&configmap("a")).unwrap()];
        s.patch = Some(PatchSpec {
            patch_type: PatchType::Json,
            body: json!({"not": "a list"}),
        });
        assert_eq!(s.validate().unwrap_err()[0].field, "patch.body");
        s.patch = Some(PatchSpec {
            patch_type: PatchType::Json,
            body: json!([{"op": "add", "path": "/data/x", "value": "1"}]),
        });
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn delete_accepts_manifests_or_targets() {
        let mut s = spec(Action::Delete);
        assert!(s.validate().is_err());
        s.manifests = vec![configmap("a")];
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn options_default_to_forced_apply_as_longshore() {
        let s: OperationSpec = serde_json::from_value(json!({
            "cluster": "prod", "action": "apply", "manifests": [configmap("a")]
        }))
        .unwrap();
        assert!(s.options.force);
        assert_eq!(s.options.field_manager, "longshore");
    }

    fn deployment(name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: None,
            name: name.into(),
        }
    }

    fn problems(s: &OperationSpec) -> Vec<String> {
        s.validate()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn scale_needs_targets_and_a_non_negative_replica_count() {
        let mut s = spec(Action::Scale);
        assert_eq!(problems(&s), ["targets", "replicas"]);
        s.targets = vec![deployment("web")];
        s.params.replicas = Some(-1);
        assert_eq!(problems(&s), ["replicas"]);
        s.params.replicas = Some(3);
        assert_eq!(s.validate(), Ok(()));
        let parsed: OperationSpec = serde_json::from_value(json!({
            "cluster": "prod", "action": "scale", "replicas": 3,
            "targets": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}]
        }))
        .unwrap();
        assert_eq!(parsed, s);
    }

    #[test]
    fn parameters_belong_to_their_action_and_rollouts_to_their_kinds() {
        let mut s = spec(Action::RolloutPause);
        s.targets = vec![
            deployment("web"),
            ObjectRef::of_manifest(&configmap("c")).unwrap(),
        ];
        s.params.replicas = Some(1);
        s.params.to_revision = Some(2);
        let errors = s.validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["targets[1].kind", "replicas", "toRevision"]);
        assert!(errors[0].reason.contains("Deployment"), "{errors:?}");

        let mut undo = spec(Action::RolloutUndo);
        undo.targets = vec![deployment("web")];
        undo.params.to_revision = Some(0);
        assert_eq!(problems(&undo), ["toRevision"]);
        undo.params.to_revision = Some(2);
        assert_eq!(undo.validate(), Ok(()));
        assert_eq!(
            serde_json::to_value(&undo).unwrap()["toRevision"],
            json!(2),
            "camelCase on the wire"
        );
    }

    #[test]
    fn run_job_takes_one_job_manifest_named_or_generate_named() {
        let mut s = spec(Action::RunJob);
        s.manifests = vec![configmap("a")];
        assert_eq!(problems(&s), ["manifests[0].kind"]);
        let job = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"generateName": "migrate-"}, "spec": {}});
        s.manifests = vec![job.clone()];
        assert_eq!(s.validate(), Ok(()));
        let id = crate::OperationId::parse("op-abcdefghijklmnopqrstuvwxyz234567").unwrap();
        let name = job_name(&job, &id);
        assert_eq!(name, "migrate-wxyz234567");
        assert_eq!(job_name(&job, &id), name, "the same for a redelivery");
        let long = json!({"metadata": {"name": "x".repeat(80)}});
        assert!(job_name(&long, &id).len() <= 63);
    }

    #[test]
    fn wait_needs_a_sensible_timeout_and_something_to_wait_for() {
        let mut s = spec(Action::Apply);
        s.manifests = vec![configmap("a")];
        s.options.wait = Some(WaitOptions {
            timeout: std::time::Duration::ZERO,
        });
        assert_eq!(problems(&s), ["options.wait.timeout"]);
        s.options.wait = Some(WaitOptions {
            timeout: std::time::Duration::from_secs(60),
        });
        assert_eq!(s.validate(), Ok(()));
        s.options.dry_run = true;
        assert_eq!(problems(&s), ["options.wait"]);
        let parsed: Options = serde_json::from_value(json!({"wait": {"timeout": "2m"}})).unwrap();
        assert_eq!(
            parsed.wait.unwrap().timeout,
            std::time::Duration::from_secs(120)
        );
    }

    #[test]
    fn action_names_are_kebab_case_on_the_wire() {
        for action in Action::ALL {
            let wire = serde_json::to_value(action).unwrap();
            assert_eq!(wire, json!(action.as_str()));
            assert_eq!(serde_json::from_value::<Action>(wire).unwrap(), action);
        }
    }

    #[test]
    fn unknown_option_is_rejected_by_name() {
        let err = serde_json::from_value::<Options>(json!({"dryrun": true})).unwrap_err();
        assert!(err.to_string().contains("dryrun"), "{err}");
    }
}
