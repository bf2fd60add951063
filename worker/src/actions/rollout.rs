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
use longshore_contract::Envelope;
use longshore_contract::record::{ObjectResult, Outcome};
use longshore_contract::spec::ObjectRef;
use serde_json::{Value, json};

use super::{merge_stamped, patch_params};
use crate::apply::{
    OPERATION_ID_ANNOTATION, Target, get, not_found, result, stamped_by, with_diff,
};
use crate::clusters::Cluster;
use crate::error::{OpError, Verb};

/// The pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// The annotation numbering a Deployment's revisions on it and its ReplicaSets.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The label the Deployment controller adds to a ReplicaSet's template.
const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

async fn current(cluster: &Cluster, t: &Target) -> Result<DynamicObject, OpError> {
    get(cluster, t, Verb::Get)
        .await?
        .ok_or_else(|| not_found(Verb::Get, &t.object))
}

pub(crate) async fn restart(
    cluster: &Cluster,
    envelope: &Envelope,
    t: &Target,
) -> Result<ObjectResult, OpError> {
    let before = current(cluster, t).await?;
    let id = envelope.id.as_str();
    let stamped = before
        .data
        .pointer("/spec/template/metadata/annotations")
        .and_then(|a| a.get(OPERATION_ID_ANNOTATION))
        == Some(&json!(id));
    if stamped {
        return Ok(unchanged(t, envelope, &before));
    }
    let body = json!({"spec": {"template": {"metadata": {"annotations": {
        RESTARTED_AT_ANNOTATION: envelope.submitted_at.to_string(),
        OPERATION_ID_ANNOTATION: id,
    }}}}});
    let after = merge_stamped(cluster, envelope, t, body).await?;
    Ok(changed(t, envelope, &before, &after))
}

pub(crate) async fn set_paused(
    cluster: &Cluster,
    envelope: &Envelope,
    t: &Target,
    paused: bool,
) -> Result<ObjectResult, OpError> {
    let before = current(cluster, t).await?;
    let now = before.data.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    if now == paused {
        return Ok(unchanged(t, envelope, &before));
    }
    let after = merge_stamped(cluster, envelope, t, json!({"spec": {"paused": paused}})).await?;
    Ok(changed(t, envelope, &before, &after))
}

pub(crate) async fn undo(
    cluster: &Cluster,
    envelope: &Envelope,
    t: &Target,
) -> Result<ObjectResult, OpError> {
    let before = current(cluster, t).await?;
    if stamped_by(&before, envelope.id.as_str()) {
        return Ok(unchanged(t, envelope, &before));
    }
    let history = history(cluster, t, &before).await?;
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
    let wanted = envelope.spec.params.to_revision;
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
    ops.push(if before.metadata.annotations.is_some() {
        json!({"op": "add", "path": format!("/metadata/annotations/{}", OPERATION_ID_ANNOTATION.replace('/', "~1")), "value": envelope.id.as_str()})
    } else {
        json!({"op": "add", "path": "/metadata/annotations", "value": {OPERATION_ID_ANNOTATION: envelope.id.as_str()}})
    });
    let ops: json_patch::Patch =
        serde_json::from_value(Value::Array(ops)).map_err(|e| OpError::Manifest {
            object: t.object.to_string(),
            reason: format!("cannot build the rollback: {e}"),
        })?;
    let (params, patch) = (patch_params(envelope), Patch::Json::<()>(ops));
    let call = t.api.patch(&t.object.name, &params, &patch);
    let after = cluster.call(Verb::Patch, &t.object, call).await?;
    Ok(changed(t, envelope, &before, &after))
}

/// The ReplicaSets the Deployment controls.
async fn history(
    cluster: &Cluster,
    t: &Target,
    deployment: &DynamicObject,
) -> Result<Vec<DynamicObject>, OpError> {
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

fn unchanged(t: &Target, envelope: &Envelope, object: &DynamicObject) -> ObjectResult {
    let dry_run = envelope.spec.options.dry_run;
    with_diff(
        result(&t.object, Outcome::Unchanged, Some(object)),
        dry_run,
        Some(object),
        Some(object),
    )
}

fn changed(
    t: &Target,
    envelope: &Envelope,
    before: &DynamicObject,
    after: &DynamicObject,
) -> ObjectResult {
    with_diff(
        result(&t.object, Outcome::Configured, Some(after)),
        envelope.spec.options.dry_run,
        Some(before),
        Some(after),
    )
}
