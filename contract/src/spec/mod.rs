//! What a pipeline asks longshore to do: the part of an operation that both the dispatcher
//! (which validates it before accepting) and the worker (which carries it out) read.
//!
//! - [`action`]: the actions, and the one table of what each accepts;
//! - [`object`]: object references and the minimal shape of a manifest;
//! - `validate`: [`OperationSpec::validate`], by that table.

pub mod action;
pub mod object;
mod validate;

pub use action::{Accepts, Action, Objects, Order, Param, Takes};
pub use object::{ObjectRef, check_job_manifest, check_manifest, job_name};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The default server-side apply field manager.
pub const DEFAULT_FIELD_MANAGER: &str = "longshore";

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
    /// Every object this operation touches, in the order given.
    pub fn objects(&self) -> Vec<ObjectRef> {
        self.manifests
            .iter()
            .filter_map(ObjectRef::of_manifest)
            .chain(self.targets.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests;
