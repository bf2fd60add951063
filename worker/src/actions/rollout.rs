//! The `rollout-*` actions on workloads.
//!
//! - restart stamps the pod template with `kubectl.kubernetes.io/restartedAt` (the time
//!   the operation was submitted, not the time it runs) and the operation id: a template
//!   that already carries this operation's id is not stamped again, so a redelivery does
//!   not restart the pods twice;
//! - pause and resume set `spec.paused`; one already in that state is left alone;
//! - undo finds the Deployment's ReplicaSets (owned by it, numbered by the
//!   `deployment.kubernetes.io/revision` annotation), and writes the template of the
//!   previous revision, or of `toRevision`, back into the Deployment, as `kubectl rollout
//!   undo` does. The Deployment is stamped with the operation id in the same write; a
//!   Deployment already stamped by this operation is not rolled back again (a second
//!   "previous revision" would be a different one).

use kube::api::{Api, DynamicObject, ListParams, Patch};
use longshore_contract::record::ObjectResult;
use longshore_contract::spec::ObjectRef;
use serde_json::{Value, json};

use super::stamp::{OPERATION_ID_ANNOTATION, json_patch_ops, stamp, stamped_by};
use super::target::existing;
use super::{Act, result};
use crate::error::{OpError, Verb};

/// The pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// The annotation numbering a Deployment's revisions on it and its ReplicaSets.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The label the Deployment controller adds to a ReplicaSet's template.
const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Sends a merge patch that also stamps the operation id on the object.
async fn merge_stamped(a: &Act<'_>, mut body: Value) -> Result<DynamicObject, OpError> {
    let t = a.target;
    stamp(&mut body, a.id());
    let (params, patch) = (a.patch_params(), Patch::Merge(&body));
    let call = t.api.patch(&t.object.name, &params, &patch);
    a.cluster.call(Verb::Patch, &t.object, call).await
}

pub async fn restart(a: &Act<'_>) -> Result<ObjectResult, OpError> {
    let before = existing(a.cluster, a.target, Verb::Get).await?;
    let id = a.id();
    let stamped = before
        .data
        .pointer("/spec/template/metadata/annotations")
        .and_then(|a| a.get(OPERATION_ID_ANNOTATION))
        == Some(&json!(id));
    if stamped {
        return Ok(result::unchanged(&a.target.object, a.dry_run(), &before));
    }
    let body = json!({"spec": {"template": {"metadata": {"annotations": {
        RESTARTED_AT_ANNOTATION: a.envelope.submitted_at.to_string(),
        OPERATION_ID_ANNOTATION: id,
    }}}}});
    let after = merge_stamped(a, body).await?;
    Ok(result::written(
        &a.target.object,
        a.dry_run(),
        Some(&before),
        &after,
    ))
}

pub async fn set_paused(a: &Act<'_>, paused: bool) -> Result<ObjectResult, OpError> {
    let before = existing(a.cluster, a.target, Verb::Get).await?;
    let now = before.data.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    if now == paused {
        return Ok(result::unchanged(&a.target.object, a.dry_run(), &before));
    }
    let after = merge_stamped(a, json!({"spec": {"paused": paused}})).await?;
    Ok(result::written(
        &a.target.object,
        a.dry_run(),
        Some(&before),
        &after,
    ))
}

pub async fn undo(a: &Act<'_>) -> Result<ObjectResult, OpError> {
    let (cluster, t) = (a.cluster, a.target);
    let before = existing(cluster, t, Verb::Get).await?;
    if stamped_by(&before, a.id()) {
        return Ok(result::unchanged(&t.object, a.dry_run(), &before));
    }
    let history = history(a, &before).await?;
    let revision = |rs: &DynamicObject| {
        rs.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let mut revisions: Vec<(i64, &DynamicObject)> =
        history.iter().map(|rs| (revision(rs), rs)).collect();
    revisions.sort_by_key(|(r, _)| std::cmp::Reverse(*r));
    let wanted = a.envelope.spec.params.to_revision;
    let found = match wanted {
        Some(to) => revisions.iter().find(|(r, _)| *r == to),
        // The newest revision is the current one: the previous is the one before it.
        None => revisions.get(1),
    };
    let Some((_, rs)) = found else {
        let reason = match wanted {
            Some(to) => format!("no revision {to} in the rollout history"),
            None => "no previous revision in the rollout history".into(),
        };
        return Err(OpError::Manifest {
            object: t.object.to_string(),
            reason,
        });
    };
    let mut template = rs
        .data
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(TEMPLATE_HASH_LABEL);
    }
    let mut ops = vec![json!({"op": "replace", "path": "/spec/template", "value": template})];
    ops.extend(json_patch_ops(&before, a.id()));
    let ops: json_patch::Patch =
        serde_json::from_value(Value::Array(ops)).map_err(|e| OpError::Manifest {
            object: t.object.to_string(),
            reason: format!("cannot build the rollback: {e}"),
        })?;
    let (params, patch) = (a.patch_params(), Patch::Json::<()>(ops));
    let call = t.api.patch(&t.object.name, &params, &patch);
    let after = cluster.call(Verb::Patch, &t.object, call).await?;
    Ok(result::written(
        &t.object,
        a.dry_run(),
        Some(&before),
        &after,
    ))
}

/// The ReplicaSets the Deployment controls.
async fn history(a: &Act<'_>, deployment: &DynamicObject) -> Result<Vec<DynamicObject>, OpError> {
    let (cluster, t) = (a.cluster, a.target);
    let rs_ref = ObjectRef {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        namespace: t.object.namespace.clone(),
        name: t.object.name.clone(),
    };
    let (resource, _) = cluster.resolve(&rs_ref).await?;
    let namespace = t.object.namespace.as_deref().unwrap_or("default");
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client()?, namespace, &resource);
    let list = cluster
        .call(Verb::List, &t.object, api.list(&ListParams::default()))
        .await?;
    let uid = deployment.metadata.uid.as_deref();
    Ok(list
        .items
        .into_iter()
        .filter(|rs| {
            rs.metadata.owner_references.as_ref().is_some_and(|owners| {
                owners
                    .iter()
                    .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
            })
        })
        .collect())
}
