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
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Apply => "apply",
            Action::Create => "create",
            Action::Replace => "replace",
            Action::Patch => "patch",
            Action::Delete => "delete",
        }
    }
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
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dry_run: false,
            field_manager: DEFAULT_FIELD_MANAGER.to_owned(),
            force: true,
            propagation_policy: None,
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
            if let Err(e) = check_manifest(manifest) {
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

    #[test]
    fn unknown_option_is_rejected_by_name() {
        let err = serde_json::from_value::<Options>(json!({"dryrun": true})).unwrap_err();
        assert!(err.to_string().contains("dryrun"), "{err}");
    }
}
