//! The `/scale` (autoscaling/v1 Scale) and `/status` subresources.

use serde_json::{Value, json};

use super::commit::{self, Managed};
use super::{Answer, Ctx};
use crate::cluster::ClusterState;
use crate::object::{self, meta_str};
use crate::patch::{self, PatchType};
use crate::registry::ScalePaths;
use crate::request;
use crate::status::{Cause, Error, Result};
use crate::store::ObjKey;

fn pointer(dotted: &str) -> String {
    dotted.replace('.', "/")
}

fn current(state: &ClusterState, ctx: &Ctx<'_>) -> Result<(ObjKey, Value)> {
    let name = ctx.name()?;
    let key = ctx.key(name);
    let obj = state
        .store
        .get(&key)
        .cloned()
        .ok_or_else(|| Error::not_found(&ctx.rt.group, &ctx.rt.plural, name))?;
    Ok((key, obj))
}

fn scale_paths(ctx: &Ctx<'_>) -> Result<ScalePaths> {
    ctx.rt.scale.clone().ok_or(Error::NoSuchResource)
}

/// A label selector string from a `LabelSelector` object's matchLabels.
fn selector_string(sel: Option<&Value>) -> Option<String> {
    match sel? {
        Value::String(s) => Some(s.clone()),
        v => {
            let labels = v.get("matchLabels")?.as_object()?;
            Some(
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(","),
            )
        }
    }
}

fn scale_of(ctx: &Ctx<'_>, obj: &Value) -> Result<Value> {
    let paths = scale_paths(ctx)?;
    let md = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let mut status = json!({"replicas": obj.pointer(&pointer(&paths.status_replicas)).cloned().unwrap_or(json!(0))});
    if let Some(sel) = selector_string(
        paths
            .label_selector
            .as_deref()
            .and_then(|p| obj.pointer(&pointer(p))),
    ) {
        status["selector"] = json!(sel);
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": md.get("name"), "namespace": md.get("namespace"), "uid": md.get("uid"),
            "resourceVersion": md.get("resourceVersion"), "creationTimestamp": md.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer(&pointer(&paths.spec_replicas)).cloned().unwrap_or(json!(0))},
        "status": status,
    }))
}

pub(crate) fn get_scale(state: &mut ClusterState, ctx: &Ctx<'_>) -> Result<Answer> {
    let (_, obj) = current(state, ctx)?;
    Ok(Answer::read(scale_of(ctx, &obj)?))
}

fn write_scale(
    state: &mut ClusterState,
    ctx: &Ctx<'_>,
    key: ObjKey,
    old: Value,
    scale: &Value,
) -> Result<Answer> {
    if let Some(rv) = meta_str(scale, "resourceVersion")
        && Some(rv) != meta_str(&old, "resourceVersion")
    {
        return Err(Error::Conflict {
            group: ctx.rt.group.clone(),
            resource: ctx.rt.plural.clone(),
            name: key.3.clone(),
        });
    }
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            let shown = scale
                .pointer("/spec/replicas")
                .map(Value::to_string)
                .unwrap_or_default();
            Error::invalid(
                "autoscaling",
                "Scale",
                &key.3,
                Cause::invalid("spec.replicas", &shown, "must be a non-negative integer"),
            )
        })?;
    let paths = scale_paths(ctx)?;
    let mut new = old.clone();
    let ptr = pointer(&paths.spec_replicas);
    let (parent, field) = ptr.rsplit_once('/').unwrap_or(("", ptr.as_str()));
    match new.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(field.to_string(), json!(replicas));
        }
        _ => {
            return Err(Error::Unprocessable(format!(
                "{}: the object has no such parent field",
                paths.spec_replicas
            )));
        }
    }
    let (stored, changed) =
        commit::update(state, ctx, &key, &old, new, Managed::Update, Some("scale"))?;
    let mut answer = Answer::object(scale_of(ctx, &stored)?, 200, changed);
    answer.resource_version = meta_str(&stored, "resourceVersion").map(String::from);
    Ok(answer)
}

pub(crate) fn put_scale(state: &mut ClusterState, ctx: &Ctx<'_>, body: &[u8]) -> Result<Answer> {
    let scale = request::json_object(body, "Scale")?;
    let (key, old) = current(state, ctx)?;
    write_scale(state, ctx, key, old, &scale)
}

pub(crate) fn patch_scale(
    state: &mut ClusterState,
    ctx: &Ctx<'_>,
    kind: PatchType,
    body: &[u8],
) -> Result<Answer> {
    if kind == PatchType::Apply {
        return Err(Error::UnsupportedMediaType);
    }
    let (key, old) = current(state, ctx)?;
    let scale = patch::apply_patch(kind, &scale_of(ctx, &old)?, body)?;
    write_scale(state, ctx, key, old, &scale)
}

fn write_status(
    state: &mut ClusterState,
    ctx: &Ctx<'_>,
    key: ObjKey,
    old: Value,
    new: Value,
) -> Result<Answer> {
    if let Some(rv) = meta_str(&new, "resourceVersion")
        && Some(rv) != meta_str(&old, "resourceVersion")
    {
        return Err(Error::Conflict {
            group: ctx.rt.group.clone(),
            resource: ctx.rt.plural.clone(),
            name: key.3.clone(),
        });
    }
    let (stored, changed) =
        commit::update(state, ctx, &key, &old, new, Managed::Update, Some("status"))?;
    Ok(Answer::object(
        object::present(stored, &ctx.rt, &ctx.path.version),
        200,
        changed,
    ))
}

pub(crate) fn put_status(state: &mut ClusterState, ctx: &Ctx<'_>, body: &[u8]) -> Result<Answer> {
    let new = request::json_object(body, ctx.rt.kind.as_str())?;
    let (key, old) = current(state, ctx)?;
    write_status(state, ctx, key, old, new)
}

pub(crate) fn patch_status(
    state: &mut ClusterState,
    ctx: &Ctx<'_>,
    kind: PatchType,
    body: &[u8],
) -> Result<Answer> {
    if kind == PatchType::Apply {
        return Err(Error::UnsupportedMediaType);
    }
    let (key, old) = current(state, ctx)?;
    let new = patch::apply_patch(
        kind,
        &object::present(old.clone(), &ctx.rt, &ctx.path.version),
        body,
    )?;
    write_status(state, ctx, key, old, new)
}
