//! create, replace (PUT), patch and server-side apply on the main resource.

use serde_json::{Value, json};

use super::commit::{self, Managed};
use super::{Answer, Ctx};
use crate::cluster::ClusterState;
use crate::object::{self, meta_mut, meta_str};
use crate::patch::{self, PatchType};
use crate::request;
use crate::ssa::{self, ApplyRequest};
use crate::status::{Cause, Error, FieldConflict, Result};

/// Checks the body's kind, apiVersion and namespace against the URL and fills them in.
fn check_body(ctx: &Ctx<'_>, obj: &mut Value) -> Result<()> {
    let want_av = ctx.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(av) if av != want_av => {
            return Err(Error::BadRequest(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
        _ => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k != ctx.rt.kind => {
            return Err(Error::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                ctx.rt.kind
            )));
        }
        _ => {}
    }
    if obj.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(Error::BadRequest("metadata: must be an object".into()));
    }
    let ns = ctx.ns().to_string();
    match meta_str(obj, "namespace") {
        Some(n) if !ns.is_empty() && n != ns => {
            return Err(Error::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
        _ => {}
    }
    if !ns.is_empty() {
        meta_mut(obj).insert("namespace".into(), json!(ns));
    }
    Ok(())
}

/// The URL names the object: the body's name must agree (or be absent).
fn check_name(ctx: &Ctx<'_>, obj: &mut Value) -> Result<String> {
    let url_name = ctx.name()?.to_string();
    match meta_str(obj, "name") {
        Some(n) if n != url_name => Err(Error::BadRequest(format!(
            "the name of the object ({n}) does not match the name on the URL ({url_name})"
        ))),
        _ => {
            meta_mut(obj).insert("name".into(), json!(url_name));
            Ok(url_name)
        }
    }
}

fn present(ctx: &Ctx<'_>, obj: Value) -> Value {
    object::present(obj, &ctx.rt, &ctx.path.version)
}

pub(crate) fn create(state: &mut ClusterState, ctx: &Ctx<'_>, body: &[u8]) -> Result<Answer> {
    let mut obj = request::json_object(body, ctx.rt.kind.as_str())?;
    check_body(ctx, &mut obj)?;
    if meta_str(&obj, "name").is_none_or(str::is_empty) {
        match meta_str(&obj, "generateName").filter(|g| !g.is_empty()) {
            Some(prefix) => {
                let name = object::generate_name(prefix);
                meta_mut(&mut obj).insert("name".into(), json!(name));
            }
            None => {
                return Err(Error::invalid(
                    &ctx.rt.group,
                    &ctx.rt.kind,
                    "",
                    Cause::required("metadata.name", "name or generateName is required"),
                ));
            }
        }
    }
    let stored = commit::create(state, ctx, obj, Managed::Update)?;
    Ok(Answer::object(present(ctx, stored), 201, !ctx.dry_run))
}

fn check_resource_version(ctx: &Ctx<'_>, sent: Option<&str>, current: &Value) -> Result<()> {
    match sent {
        Some(rv) if Some(rv) != meta_str(current, "resourceVersion") => Err(Error::Conflict {
            group: ctx.rt.group.clone(),
            resource: ctx.rt.plural.clone(),
            name: meta_str(current, "name").unwrap_or_default().to_string(),
        }),
        _ => Ok(()),
    }
}

fn not_found(ctx: &Ctx<'_>, name: &str) -> Error {
    Error::not_found(&ctx.rt.group, &ctx.rt.plural, name)
}

/// PUT: a stale resourceVersion is a 409; no resourceVersion is an unconditional update.
/// A missing object is a 404, except for Events, which real servers create on update.
pub(crate) fn replace(state: &mut ClusterState, ctx: &Ctx<'_>, body: &[u8]) -> Result<Answer> {
    let mut obj = request::json_object(body, ctx.rt.kind.as_str())?;
    check_body(ctx, &mut obj)?;
    let name = check_name(ctx, &mut obj)?;
    let key = ctx.key(&name);
    let Some(old) = state.store.get(&key).cloned() else {
        if ctx.rt.group.is_empty() && ctx.rt.plural == "events" {
            let stored = commit::create(state, ctx, obj, Managed::Update)?;
            return Ok(Answer::object(present(ctx, stored), 201, !ctx.dry_run));
        }
        return Err(not_found(ctx, &name));
    };
    check_resource_version(ctx, meta_str(&obj, "resourceVersion"), &old)?;
    let (stored, changed) = commit::update(state, ctx, &key, &old, obj, Managed::Update, None)?;
    Ok(Answer::object(present(ctx, stored), 200, changed))
}

pub(crate) fn patch(
    state: &mut ClusterState,
    ctx: &Ctx<'_>,
    kind: PatchType,
    body: &[u8],
) -> Result<Answer> {
    let name = ctx.name()?.to_string();
    let key = ctx.key(&name);
    let old = state
        .store
        .get(&key)
        .cloned()
        .ok_or_else(|| not_found(ctx, &name))?;
    let mut patched = patch::apply_patch(kind, &present(ctx, old.clone()), body)?;
    if !patched.is_object() {
        return Err(Error::Unprocessable(
            "the patch result must be an object".into(),
        ));
    }
    // A patch may carry a resourceVersion as a precondition.
    let sent_rv = meta_str(&patched, "resourceVersion").map(String::from);
    if sent_rv.as_deref() != meta_str(&old, "resourceVersion") {
        check_resource_version(ctx, sent_rv.as_deref(), &old)?;
    }
    check_body(ctx, &mut patched)?;
    check_name(ctx, &mut patched)?;
    let (stored, changed) = commit::update(state, ctx, &key, &old, patched, Managed::Update, None)?;
    Ok(Answer::object(present(ctx, stored), 200, changed))
}

/// Server-side apply: create when missing, merge and track ownership otherwise.
pub(crate) fn apply(state: &mut ClusterState, ctx: &Ctx<'_>, body: &[u8]) -> Result<Answer> {
    let Some(manager) = ctx.query.get("fieldManager") else {
        return Err(Error::Invalid {
            group: "meta.k8s.io".into(),
            kind: "PatchOptions.meta.k8s.io".into(),
            name: String::new(),
            causes: vec![Cause::required(
                "fieldManager",
                "is required for apply patch",
            )],
        });
    };
    let mut applied = request::yaml_object(body)?;
    check_body(ctx, &mut applied)?;
    let name = check_name(ctx, &mut applied)?;
    if applied.get("apiVersion").is_none() || applied.get("kind").is_none() {
        return Err(Error::BadRequest(
            "apiVersion and kind are required in an apply configuration".into(),
        ));
    }
    let key = ctx.key(&name);
    let old = state.store.get(&key).cloned();
    let api_version = ctx.api_version();
    let merged = ssa::apply(ApplyRequest {
        live: old.as_ref(),
        applied: &applied,
        manager,
        api_version: &api_version,
        force: ctx.query.flag("force"),
        now: &ctx.now,
        ignore_status: ctx.rt.status,
    })
    .map_err(|conflicts| Error::ApplyConflict {
        group: ctx.rt.group.clone(),
        resource: ctx.rt.plural.clone(),
        name: name.clone(),
        conflicts: conflicts
            .into_iter()
            .map(|c| FieldConflict {
                manager: c.manager,
                api_version: c.api_version,
                field: crate::fieldset::path_string(&c.path),
            })
            .collect(),
    })?;
    match old {
        None => {
            let stored = commit::create(state, ctx, merged, Managed::Precomputed)?;
            Ok(Answer::object(present(ctx, stored), 201, !ctx.dry_run))
        }
        Some(old) => {
            let (stored, changed) =
                commit::update(state, ctx, &key, &old, merged, Managed::Precomputed, None)?;
            Ok(Answer::object(present(ctx, stored), 200, changed))
        }
    }
}
