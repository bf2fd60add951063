//! Naming objects: references, the minimal shape of a manifest, and the name `run-job`
//! gives its Job.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::FieldError;

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
