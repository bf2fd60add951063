//! Carrying out an operation's action on each of its objects, in the order given, and
//! reporting what happened to each.
//!
//! Every action is idempotent, so a redelivered operation (its worker died before
//! acknowledging, or the API server committed a write whose answer was lost) does no harm:
//! server-side apply and replace converge (the same content again changes nothing),
//! `create` recognises an object it created itself by the [`OPERATION_ID_ANNOTATION`],
//! `patch` is not sent again when the object already carries that annotation with this
//! operation's id, `delete` counts a missing object as done. Writes stamp that annotation,
//! which also lets tests count effects per operation. The deploy actions (`scale`,
//! `rollout-*`, `run-job`) live in [`crate::actions`]; a dry run of any action reports
//! the fields it would change ([`crate::diff`]).

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::Scope;
use longshore_contract::Envelope;
use longshore_contract::record::{ObjectResult, Outcome};
use longshore_contract::spec::{Action, ObjectRef, PatchSpec, PatchType, PropagationPolicy};
use serde_json::{Value, json};

use crate::clusters::Cluster;
use crate::error::{OpError, Verb};

/// Annotation the worker stamps on every object it writes, holding the operation id.
pub const OPERATION_ID_ANNOTATION: &str = "longshore.io/operation-id";

/// What an operation did before it finished or stopped.
#[derive(Debug, Default)]
pub struct Report {
    /// One result per object handled, in order.
    pub results: Vec<ObjectResult>,
    /// Why the operation stopped before its last object, if it did.
    pub error: Option<OpError>,
}

/// One object to act on, its kind resolved and its namespace settled.
pub(crate) struct Target {
    pub object: ObjectRef,
    pub api: Api<DynamicObject>,
}

/// One object of an operation, planned before any fence is taken.
#[derive(Debug)]
pub struct Step<'a> {
    /// The object, its namespace settled (`default` filled in for namespaced kinds, none
    /// for cluster-scoped ones) where its kind is known.
    pub object: ObjectRef,
    pub manifest: Option<&'a Value>,
    /// The object's fence key; `None` when its kind is neither served nor defined by this
    /// operation (acting on it fails before anything is written).
    pub fence: Option<String>,
    /// A later operation has already been applied to this object: leave it alone.
    pub superseded: bool,
}

/// Lists the objects `envelope` acts on, in order, with their fence keys. Asks the
/// cluster for each kind's scope (cached), so a transient discovery failure fails the plan.
pub async fn plan<'a>(cluster: &Cluster, envelope: &'a Envelope) -> Result<Vec<Step<'a>>, OpError> {
    let spec = &envelope.spec;
    // Objects are addressed either by manifest (apply, create, replace, delete) or by
    // reference (patch, delete).
    let mut work: Vec<(ObjectRef, Option<&Value>)> = match spec.action {
        action if action.takes_targets() => {
            spec.targets.iter().map(|t| (t.clone(), None)).collect()
        }
        // The Job's name comes from the operation id, so a redelivery finds it.
        Action::RunJob => spec
            .manifests
            .iter()
            .filter_map(|m| {
                let mut object = ObjectRef::of_manifest(m).or_else(|| {
                    let mut named = m.clone();
                    named["metadata"]["name"] = json!("-");
                    ObjectRef::of_manifest(&named)
                })?;
                object.name = longshore_contract::spec::job_name(m, &envelope.id);
                Some((object, Some(m)))
            })
            .collect(),
        _ => spec
            .manifests
            .iter()
            .filter_map(|m| ObjectRef::of_manifest(m).map(|r| (r, Some(m))))
            .chain(spec.targets.iter().map(|t| (t.clone(), None)))
            .collect(),
    };
    crate::ordering::sort(spec.action, &mut work, |(object, _)| &object.kind);
    let mut steps = Vec::with_capacity(work.len());
    for (mut object, manifest) in work {
        let scope = match cluster.resolve(&object).await {
            Ok((_, caps)) => Some(caps.scope),
            Err(OpError::UnknownKind { .. }) => defined_scope(envelope, &object),
            Err(e) => return Err(e),
        };
        let fence = scope.map(|scope| {
            if scope == Scope::Namespaced {
                object.namespace.get_or_insert_with(|| "default".into());
            } else {
                object.namespace = None;
            }
            crate::fence::key(&cluster.name, &object)
        });
        steps.push(Step {
            object,
            manifest,
            fence,
            superseded: false,
        });
    }
    Ok(steps)
}

/// The scope of a custom kind defined by a CustomResourceDefinition in the same operation
/// (the cluster cannot tell it yet).
fn defined_scope(envelope: &Envelope, object: &ObjectRef) -> Option<Scope> {
    let (group, _) = object.api_version.rsplit_once('/')?;
    envelope.spec.manifests.iter().find_map(|m| {
        let spec = m.get("spec")?;
        let defines = m.get("kind")? == "CustomResourceDefinition"
            && spec.get("group")? == group
            && spec.get("names")?.get("kind")? == object.kind.as_str();
        match (defines, spec.get("scope")?.as_str()?) {
            (true, "Namespaced") => Some(Scope::Namespaced),
            (true, "Cluster") => Some(Scope::Cluster),
            _ => None,
        }
    })
}

/// Carries out `envelope`'s action on the planned `steps` of `cluster`, in order, stopping
/// at the first error. Superseded steps are reported, not touched. With a fence `guard`,
/// each write first checks the lease is still trusted.
pub async fn carry_out(
    cluster: &Cluster,
    envelope: &Envelope,
    steps: &[Step<'_>],
    guard: Option<&crate::fence::Guard>,
) -> Report {
    let mut report = Report::default();
    let mut defines_kinds = false;
    for step in steps {
        let object = &step.object;
        if step.superseded {
            tracing::info!(object = %object, "a later operation was applied to it; leaving it");
            report
                .results
                .push(result(object, Outcome::Superseded, None));
            continue;
        }
        tracing::debug!(object = %object, "acting on object");
        let result = match guard.map_or(Ok(()), crate::fence::Guard::check) {
            Ok(()) => match target(cluster, object, defines_kinds).await {
                Ok(target) => act(cluster, envelope, &target, step.manifest).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(result) => report.results.push(result),
            Err(e) => {
                report.error = Some(e);
                return report;
            }
        }
        defines_kinds |= object.kind == "CustomResourceDefinition";
    }
    report
}

pub(crate) async fn target(
    cluster: &Cluster,
    object: &ObjectRef,
    defines_kinds: bool,
) -> Result<Target, OpError> {
    let (resource, caps) = cluster.resolve(object).await.map_err(|e| match e {
        OpError::UnknownKind { object, kind, .. } => OpError::UnknownKind {
            object,
            kind,
            expected_soon: defines_kinds,
        },
        other => other,
    })?;
    let mut object = object.clone();
    let api = if caps.scope == Scope::Namespaced {
        let namespace = object.namespace.get_or_insert_with(|| "default".into());
        Api::namespaced_with(cluster.client()?, namespace, &resource)
    } else {
        object.namespace = None;
        Api::all_with(cluster.client()?, &resource)
    };
    Ok(Target { object, api })
}

async fn act(
    cluster: &Cluster,
    envelope: &Envelope,
    target: &Target,
    manifest: Option<&Value>,
) -> Result<ObjectResult, OpError> {
    let id = envelope.id.as_str();
    let options = &envelope.spec.options;
    let body = || {
        let mut body = manifest.cloned().unwrap_or(Value::Null);
        prepare(&mut body, &target.object, id);
        body
    };
    match envelope.spec.action {
        Action::Apply => {
            let mut params = PatchParams::apply(&options.field_manager);
            params.force = options.force;
            params.dry_run = options.dry_run;
            apply(cluster, target, &body(), &params).await
        }
        Action::Create => create(cluster, target, body(), id, post_params(envelope)).await,
        Action::Replace => replace(cluster, target, body(), post_params(envelope)).await,
        Action::Patch => {
            let Some(patch) = &envelope.spec.patch else {
                return Err(OpError::Manifest {
                    object: target.object.to_string(),
                    reason: "a patch operation needs a patch".into(),
                });
            };
            let params = PatchParams {
                dry_run: options.dry_run,
                field_manager: Some(options.field_manager.clone()),
                ..Default::default()
            };
            patch_object(cluster, target, patch, id, &params).await
        }
        Action::Delete => {
            let params = DeleteParams {
                dry_run: options.dry_run,
                propagation_policy: options.propagation_policy.map(|p| match p {
                    PropagationPolicy::Foreground => kube::api::PropagationPolicy::Foreground,
                    PropagationPolicy::Background => kube::api::PropagationPolicy::Background,
                    PropagationPolicy::Orphan => kube::api::PropagationPolicy::Orphan,
                }),
                ..Default::default()
            };
            delete(cluster, target, &params).await
        }
        Action::Scale
        | Action::RolloutRestart
        | Action::RolloutPause
        | Action::RolloutResume
        | Action::RolloutUndo
        | Action::RunJob => crate::actions::act(cluster, envelope, target, manifest).await,
    }
}

pub(crate) fn post_params(envelope: &Envelope) -> PostParams {
    PostParams {
        dry_run: envelope.spec.options.dry_run,
        field_manager: Some(envelope.spec.options.field_manager.clone()),
    }
}

/// Stamps the operation id and settles the namespace of a manifest about to be written.
pub(crate) fn prepare(body: &mut Value, object: &ObjectRef, id: &str) {
    let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    match &object.namespace {
        Some(ns) => meta.insert("namespace".into(), json!(ns)),
        None => meta.remove("namespace"),
    };
    let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
    if let Some(map) = annotations.as_object_mut() {
        map.insert(OPERATION_ID_ANNOTATION.into(), json!(id));
    }
}

/// The outcome of a write, from the object's resourceVersion before and after it.
pub fn write_outcome(before: Option<&str>, after: Option<&str>) -> Outcome {
    match before {
        None => Outcome::Created,
        Some(b) if Some(b) == after => Outcome::Unchanged,
        Some(_) => Outcome::Configured,
    }
}

pub(crate) fn result(
    object: &ObjectRef,
    outcome: Outcome,
    written: Option<&DynamicObject>,
) -> ObjectResult {
    let meta = written.map(|o| &o.metadata);
    ObjectResult {
        api_version: object.api_version.clone(),
        kind: object.kind.clone(),
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        outcome,
        resource_version: meta.and_then(|m| m.resource_version.clone()),
        uid: meta.and_then(|m| m.uid.clone()),
        diff: None,
        job: None,
    }
}

/// For a dry run, adds to `result` what the change would do to the object, and settles
/// its outcome from that: a dry-run write leaves the resourceVersion as it was, so an
/// existing object is `configured` when the change would alter it (what the real write
/// would report), `unchanged` only when it would not.
pub(crate) fn with_diff(
    mut result: ObjectResult,
    dry_run: bool,
    before: Option<&DynamicObject>,
    after: Option<&DynamicObject>,
) -> ObjectResult {
    if dry_run {
        let value = |o: Option<&DynamicObject>| o.and_then(|o| serde_json::to_value(o).ok());
        let kind = result.kind.clone();
        let diff = crate::diff::changes(&kind, value(before).as_ref(), value(after).as_ref());
        if matches!(result.outcome, Outcome::Unchanged | Outcome::Configured) {
            result.outcome = if diff.is_empty() {
                Outcome::Unchanged
            } else {
                Outcome::Configured
            };
        }
        result.diff = Some(diff);
    }
    result
}

fn version(object: &Option<DynamicObject>) -> Option<&str> {
    object.as_ref()?.metadata.resource_version.as_deref()
}

pub(crate) async fn get(
    cluster: &Cluster,
    t: &Target,
    verb: Verb,
) -> Result<Option<DynamicObject>, OpError> {
    cluster
        .call(verb, &t.object, t.api.get_opt(&t.object.name))
        .await
}

async fn apply(
    cluster: &Cluster,
    t: &Target,
    body: &Value,
    params: &PatchParams,
) -> Result<ObjectResult, OpError> {
    let before = get(cluster, t, Verb::Get).await?;
    let patch = Patch::Apply(body);
    let call = t.api.patch(&t.object.name, params, &patch);
    let after = match cluster.call(Verb::Apply, &t.object, call).await {
        Ok(after) => after,
        Err(e) => {
            if is_status(&e, 404) {
                // The kind may have gone away since it was discovered.
                cluster.forget(&t.object).await;
            }
            return Err(e);
        }
    };
    let outcome = write_outcome(version(&before), after.metadata.resource_version.as_deref());
    Ok(with_diff(
        result(&t.object, outcome, Some(&after)),
        params.dry_run,
        before.as_ref(),
        Some(&after),
    ))
}

pub(crate) async fn create(
    cluster: &Cluster,
    t: &Target,
    body: Value,
    id: &str,
    params: PostParams,
) -> Result<ObjectResult, OpError> {
    let object = typed(t, body)?;
    match cluster
        .call(Verb::Create, &t.object, t.api.create(&params, &object))
        .await
    {
        Ok(created) => Ok(with_diff(
            result(&t.object, Outcome::Created, Some(&created)),
            params.dry_run,
            None,
            Some(&created),
        )),
        Err(e) if is_status(&e, 409) => {
            // Ours from an earlier delivery (the worker died before acknowledging), or
            // someone else's?
            let existing = get(cluster, t, Verb::Get).await?;
            if existing.as_ref().is_some_and(|o| stamped_by(o, id)) {
                Ok(result(&t.object, Outcome::Created, existing.as_ref()))
            } else {
                Err(OpError::AlreadyExists {
                    object: t.object.to_string(),
                })
            }
        }
        Err(e) => Err(e),
    }
}

async fn replace(
    cluster: &Cluster,
    t: &Target,
    body: Value,
    params: PostParams,
) -> Result<ObjectResult, OpError> {
    let mut object = typed(t, body)?;
    let current = get(cluster, t, Verb::Replace).await?;
    let Some(current) = current else {
        return Err(not_found(Verb::Replace, &t.object));
    };
    // Replace what is there now; if it changes before the PUT lands, the 409 is retried.
    object.metadata.resource_version = current.metadata.resource_version.clone();
    let replaced = cluster
        .call(
            Verb::Replace,
            &t.object,
            t.api.replace(&t.object.name, &params, &object),
        )
        .await?;
    let outcome = write_outcome(
        current.metadata.resource_version.as_deref(),
        replaced.metadata.resource_version.as_deref(),
    );
    Ok(with_diff(
        result(&t.object, outcome, Some(&replaced)),
        params.dry_run,
        Some(&current),
        Some(&replaced),
    ))
}

async fn patch_object(
    cluster: &Cluster,
    t: &Target,
    spec: &PatchSpec,
    id: &str,
    params: &PatchParams,
) -> Result<ObjectResult, OpError> {
    let Some(current) = get(cluster, t, Verb::Patch).await? else {
        return Err(not_found(Verb::Patch, &t.object));
    };
    // A patch need not be idempotent (a JSON patch may append to a list): if this
    // operation's stamp is already there, an earlier delivery's patch landed (its answer
    // was lost, or the worker died before recording it), so it is not sent again.
    if stamped_by(&current, id) {
        return Ok(result(&t.object, Outcome::Unchanged, Some(&current)));
    }
    let mut body = spec.body.clone();
    let patched = match spec.patch_type {
        PatchType::Merge | PatchType::Strategic => {
            prepare_patch(&mut body, id);
            let patch = if spec.patch_type == PatchType::Merge {
                Patch::Merge(&body)
            } else {
                Patch::Strategic(&body)
            };
            let call = t.api.patch(&t.object.name, params, &patch);
            cluster.call(Verb::Patch, &t.object, call).await?
        }
        PatchType::Json => {
            // A JSON patch says exactly where each change goes, so the stamp must address
            // the annotations as they are now.
            let has_annotations = current.metadata.annotations.is_some();
            if let Some(ops) = body.as_array_mut() {
                ops.push(if has_annotations {
                    json!({"op": "add", "path": format!("/metadata/annotations/{}", OPERATION_ID_ANNOTATION.replace('/', "~1")), "value": id})
                } else {
                    json!({"op": "add", "path": "/metadata/annotations", "value": {OPERATION_ID_ANNOTATION: id}})
                });
            }
            let ops: json_patch::Patch =
                serde_json::from_value(body).map_err(|e| OpError::Manifest {
                    object: t.object.to_string(),
                    reason: format!("invalid JSON patch: {e}"),
                })?;
            let patch = Patch::Json::<()>(ops);
            let call = t.api.patch(&t.object.name, params, &patch);
            cluster.call(Verb::Patch, &t.object, call).await?
        }
    };
    let outcome = write_outcome(
        current.metadata.resource_version.as_deref(),
        patched.metadata.resource_version.as_deref(),
    );
    Ok(with_diff(
        result(&t.object, outcome, Some(&patched)),
        params.dry_run,
        Some(&current),
        Some(&patched),
    ))
}

/// Adds the operation stamp to a merge or strategic-merge patch body.
fn prepare_patch(body: &mut Value, id: &str) {
    let Some(root) = body.as_object_mut() else {
        return;
    };
    let meta = root.entry("metadata").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(map) = annotations.as_object_mut() {
            map.insert(OPERATION_ID_ANNOTATION.into(), json!(id));
        }
    }
}

async fn delete(
    cluster: &Cluster,
    t: &Target,
    params: &DeleteParams,
) -> Result<ObjectResult, OpError> {
    let before = if params.dry_run {
        get(cluster, t, Verb::Get).await?
    } else {
        None
    };
    let deleted = |r: ObjectResult| with_diff(r, params.dry_run, before.as_ref(), None);
    match cluster
        .call(
            Verb::Delete,
            &t.object,
            t.api.delete(&t.object.name, params),
        )
        .await
    {
        // Left: deletion started (finalizers pending); Right: gone.
        Ok(either) => Ok(deleted(result(
            &t.object,
            Outcome::Deleted,
            either.left().as_ref(),
        ))),
        Err(e) if is_status(&e, 404) => Ok(result(&t.object, Outcome::NotFound, None)),
        Err(e) => Err(e),
    }
}

/// Whether `object` carries operation `id`'s stamp: that operation's write is in.
pub(crate) fn stamped_by(object: &DynamicObject, id: &str) -> bool {
    object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(OPERATION_ID_ANNOTATION))
        .is_some_and(|v| v == id)
}

pub(crate) fn typed(t: &Target, body: Value) -> Result<DynamicObject, OpError> {
    serde_json::from_value(body).map_err(|e| OpError::Manifest {
        object: t.object.to_string(),
        reason: format!("not a Kubernetes object: {e}"),
    })
}

pub(crate) fn is_status(err: &OpError, code: u16) -> bool {
    matches!(err, OpError::Kube { source: kube::Error::Api(s), .. } if s.code == code)
}

pub(crate) fn not_found(verb: Verb, object: &ObjectRef) -> OpError {
    let status = kube::core::Status::failure(&format!("{object} not found"), "NotFound")
        .with_code(404)
        .boxed();
    OpError::Kube {
        verb,
        object: object.to_string(),
        source: kube::Error::Api(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(namespace: Option<&str>) -> ObjectRef {
        ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: namespace.map(Into::into),
            name: "web".into(),
        }
    }

    #[test]
    fn outcome_follows_the_resource_version() {
        assert_eq!(write_outcome(None, Some("5")), Outcome::Created);
        assert_eq!(write_outcome(Some("5"), Some("5")), Outcome::Unchanged);
        assert_eq!(write_outcome(Some("5"), Some("6")), Outcome::Configured);
    }

    #[test]
    fn written_manifests_carry_the_operation_id_and_a_settled_namespace() {
        let mut m = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "web", "annotations": {"team": "a"}}, "data": {"k": "v"}});
        prepare(&mut m, &object(Some("default")), "op-1");
        assert_eq!(m["metadata"]["namespace"], "default");
        assert_eq!(
            m["metadata"]["annotations"][OPERATION_ID_ANNOTATION],
            "op-1"
        );
        assert_eq!(m["metadata"]["annotations"]["team"], "a", "kept");
        assert_eq!(m["data"]["k"], "v");

        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "x", "namespace": "ignored"}});
        prepare(&mut ns, &object(None), "op-1");
        assert!(ns["metadata"].get("namespace").is_none());
    }

    #[test]
    fn merge_patches_carry_the_operation_id() {
        let mut p = json!({"data": {"k": "v"}});
        prepare_patch(&mut p, "op-1");
        assert_eq!(
            p["metadata"]["annotations"][OPERATION_ID_ANNOTATION],
            "op-1"
        );
        assert_eq!(p["data"]["k"], "v");
    }
}
