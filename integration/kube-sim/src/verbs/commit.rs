//! Storing a new or changed object the way a real server does: system metadata, generation,
//! managed fields, "a write that changes nothing changes nothing", finalizers, CRD
//! registration and namespace cascades.

use serde_json::{Value, json};

use super::Ctx;
use crate::cluster::ClusterState;
use crate::object::{self, meta_mut, meta_str};
use crate::registry;
use crate::ssa::{self, UpdateRequest};
use crate::status::{Cause, Error, Result};
use crate::store::ObjKey;
use crate::validation;

/// Whether managed fields still need recording (non-apply writes) or were set by an apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Managed {
    Update,
    Precomputed,
}

const CARRIED: &[&str] = &[
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
    "name",
    "namespace",
];

pub(crate) fn check_namespace(state: &ClusterState, ns: &str) -> Result<()> {
    if ns.is_empty() {
        return Ok(());
    }
    let key = ns_key(ns);
    match state.store.get(&key) {
        None => Err(Error::namespace_not_found(ns)),
        Some(n) if meta_str(n, "deletionTimestamp").is_some() => Err(Error::Forbidden(format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        ))),
        Some(_) => Ok(()),
    }
}

fn ns_key(ns: &str) -> ObjKey {
    (String::new(), "namespaces".into(), String::new(), ns.into())
}

/// Whether a stored CRD's condition `Established` is True.
pub(crate) fn crd_established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Established" && c["status"] == "True")
}

fn crd_conditions(established: bool, now: &str) -> Value {
    let (status, reason, message) = if established {
        (
            "True",
            "InitialNamesAccepted",
            "the initial names have been accepted",
        )
    } else {
        (
            "False",
            "Installing",
            "the initial names have been accepted",
        )
    };
    json!([
        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
        {"type": "Established", "status": status, "reason": reason, "message": message, "lastTransitionTime": now},
    ])
}

/// Checks a CRD and sets its status: names accepted, and Established as `established` says.
fn crd_checked(ctx: &Ctx<'_>, obj: &mut Value, established: bool) -> Result<()> {
    if !ctx.rt.is_crd() {
        return Ok(());
    }
    let t = registry::crd_resource_type(obj).map_err(|msg| {
        let name = meta_str(obj, "name").unwrap_or_default().to_string();
        let (field, message) = msg.split_once(": ").unwrap_or(("spec", msg.as_str()));
        Error::Invalid {
            group: ctx.rt.group.clone(),
            kind: ctx.rt.kind.clone(),
            name,
            causes: vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: message.into(),
                field: field.into(),
            }],
        }
    })?;
    let names = obj
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    obj["status"] = json!({
        "acceptedNames": names,
        "storedVersions": [t.storage_version()],
        "conditions": crd_conditions(established, &ctx.now),
    });
    Ok(())
}

/// Establishes the CRD `name` (if it is still the one with `uid` and is not yet): its
/// condition turns True, a new resourceVersion and a watch event say so, and its kind is
/// served and in discovery from now on.
pub(crate) fn establish_crd(state: &mut ClusterState, name: &str, uid: &str, now: &str) {
    let key: ObjKey = (
        "apiextensions.k8s.io".into(),
        "customresourcedefinitions".into(),
        String::new(),
        name.into(),
    );
    let Some(crd) = state.store.get(&key) else {
        return;
    };
    if meta_str(crd, "uid") != Some(uid) || crd_established(crd) {
        return;
    }
    let mut crd = crd.clone();
    crd["status"]["conditions"] = crd_conditions(true, now);
    let stored = state.store.put(key, crd);
    if let Err(e) = state.registry.register_crd(&stored) {
        tracing::warn!(crd = name, error = %e, "cannot serve the established CRD's kind");
    }
}

/// Refuses `obj` as a real server's validation would: 422 Invalid naming each field
/// ([`validation`]). A custom resource is checked against the schema of the version the
/// request used.
fn validated(state: &ClusterState, ctx: &Ctx<'_>, obj: &Value) -> Result<()> {
    let schema = ctx.rt.crd.as_ref().and_then(|crd| {
        let key: ObjKey = (
            "apiextensions.k8s.io".into(),
            "customresourcedefinitions".into(),
            String::new(),
            crd.clone(),
        );
        let versions = state
            .store
            .get(&key)?
            .pointer("/spec/versions")?
            .as_array()?;
        versions
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(&ctx.path.version))?
            .pointer("/schema/openAPIV3Schema")
            .cloned()
    });
    let causes = validation::validate(&ctx.rt, obj, schema.as_ref());
    if causes.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid {
        group: ctx.rt.group.clone(),
        kind: ctx.rt.kind.clone(),
        name: meta_str(obj, "name").unwrap_or_default().to_string(),
        causes,
    })
}

/// Stores a new object; `obj` already has its name and namespace.
pub(crate) fn create(
    state: &mut ClusterState,
    ctx: &Ctx<'_>,
    mut obj: Value,
    managed: Managed,
) -> Result<Value> {
    let name = meta_str(&obj, "name").unwrap_or_default().to_string();
    object::validate_name(&ctx.rt, &name)
        .map_err(|c| Error::invalid(&ctx.rt.group, &ctx.rt.kind, &name, c))?;
    check_namespace(state, ctx.ns())?;
    let key = ctx.key(&name);
    if state.store.get(&key).is_some() {
        return Err(Error::AlreadyExists {
            group: ctx.rt.group.clone(),
            resource: ctx.rt.plural.clone(),
            name,
        });
    }
    obj["apiVersion"] = json!(ctx.rt.api_version(ctx.rt.storage_version()));
    obj["kind"] = json!(ctx.rt.kind);
    let md = meta_mut(&mut obj);
    md.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    md.insert("creationTimestamp".into(), json!(ctx.now));
    md.insert("generation".into(), json!(1));
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        md.remove(k);
    }
    if ctx.ns().is_empty() {
        md.remove("namespace");
    } else {
        md.insert("namespace".into(), json!(ctx.ns()));
    }
    if managed == Managed::Update {
        md.remove("managedFields");
    }
    if ctx.rt.status
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    if ctx.rt.scale.is_some() && obj.pointer("/spec/replicas").is_none() && ctx.rt.crd.is_none() {
        obj["spec"]["replicas"] = json!(1);
    }
    // The one type default every client relies on.
    if ctx.rt.group.is_empty()
        && ctx.rt.kind == "Secret"
        && obj
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        obj["type"] = json!("Opaque");
    }
    if ctx.rt.is_namespace() {
        let labels = meta_mut(&mut obj)
            .entry("labels")
            .or_insert_with(|| json!({}));
        labels["kubernetes.io/metadata.name"] = json!(name);
        obj["status"] = json!({"phase": "Active"});
    }
    if managed == Managed::Update {
        ssa::record_update(
            &mut obj,
            UpdateRequest {
                old: None,
                manager: &ctx.manager(),
                api_version: &ctx.api_version(),
                subresource: None,
                now: &ctx.now,
                ignore_status: ctx.rt.status,
            },
        );
    }
    let established = state.crd_establish_delay.is_zero();
    crd_checked(ctx, &mut obj, established)?;
    validated(state, ctx, &obj)?;
    if ctx.dry_run {
        return Ok(obj);
    }
    let stored = state.store.put(key, obj);
    if ctx.rt.is_crd() && established {
        state
            .registry
            .register_crd(&stored)
            .map_err(Error::Unprocessable)?;
    }
    Ok(stored)
}

/// Stores a changed object. `subresource` is `status` or `scale` for subresource writes.
/// Returns the object as stored (or as it would be, for a dry run) and whether it changed.
pub(crate) fn update(
    state: &mut ClusterState,
    ctx: &Ctx<'_>,
    key: &ObjKey,
    old: &Value,
    mut new: Value,
    managed: Managed,
    subresource: Option<&str>,
) -> Result<(Value, bool)> {
    if subresource == Some("status") {
        let status = new.get("status").cloned();
        new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    } else {
        let md = meta_mut(&mut new);
        for k in CARRIED {
            match old.get("metadata").and_then(|m| m.get(*k)) {
                Some(v) => md.insert((*k).into(), v.clone()),
                None => md.remove(*k),
            };
        }
        if managed == Managed::Update {
            match old.pointer("/metadata/managedFields") {
                Some(v) => md.insert("managedFields".into(), v.clone()),
                None => md.remove("managedFields"),
            };
        }
        if ctx.rt.status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
    }
    new["apiVersion"] = old
        .get("apiVersion")
        .cloned()
        .unwrap_or_else(|| json!(ctx.api_version()));
    new["kind"] = json!(ctx.rt.kind);
    if managed == Managed::Update {
        ssa::record_update(
            &mut new,
            UpdateRequest {
                old: Some(old),
                manager: &ctx.manager(),
                api_version: &ctx.api_version(),
                subresource,
                now: &ctx.now,
                ignore_status: ctx.rt.status,
            },
        );
    }
    if object::spec_part(old) != object::spec_part(&new) {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        meta_mut(&mut new).insert("generation".into(), json!(generation + 1));
    }
    if ctx.rt.is_crd() && object::spec_part(old) != object::spec_part(&new) {
        crd_checked(ctx, &mut new, crd_established(old))?;
    }
    if new == *old {
        return Ok((new, false));
    }
    validated(state, ctx, &new)?;
    if ctx.dry_run {
        return Ok((new, false));
    }
    if meta_str(&new, "deletionTimestamp").is_some() && object::finalizers(&new).is_empty() {
        state.store.put(key.clone(), new);
        let removed = purge(state, key).unwrap_or(Value::Null);
        return Ok((removed, true));
    }
    let stored = state.store.put(key.clone(), new);
    if ctx.rt.is_crd() && crd_established(&stored) {
        state
            .registry
            .register_crd(&stored)
            .map_err(Error::Unprocessable)?;
    }
    Ok((stored, true))
}

/// Removes an object for good, with what follows from it: a CRD takes its custom objects and
/// kind with it; the last object leaving a terminating namespace lets the namespace go.
pub(crate) fn purge(state: &mut ClusterState, key: &ObjKey) -> Option<Value> {
    let removed = state.store.remove(key)?;
    let (group, plural, ns, name) = key;
    if group == "apiextensions.k8s.io"
        && plural == "customresourcedefinitions"
        && let Some(t) = state.registry.unregister_crd(name)
    {
        let keys: Vec<ObjKey> = state
            .store
            .list(&t.group, &t.plural, None)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            state.store.remove(&k);
        }
    }
    if !ns.is_empty() && state.store.keys_in_namespace(ns).is_empty() {
        let nk = ns_key(ns);
        if state
            .store
            .get(&nk)
            .is_some_and(|n| meta_str(n, "deletionTimestamp").is_some())
        {
            state.store.remove(&nk);
        }
    }
    Some(removed)
}

/// Asks for an object's deletion: objects with finalizers get a deletionTimestamp and stay;
/// a namespace becomes Terminating (see [`finalize_namespace`]). Returns the object and
/// whether it is gone.
pub(crate) fn request_deletion(
    state: &mut ClusterState,
    key: &ObjKey,
    now: &str,
) -> Option<(Value, bool)> {
    let obj = state.store.get(key)?.clone();
    let is_namespace = key.0.is_empty() && key.1 == "namespaces";
    if !object::finalizers(&obj).is_empty() || is_namespace {
        let mut marked = obj.clone();
        if meta_str(&obj, "deletionTimestamp").is_none() {
            meta_mut(&mut marked).insert("deletionTimestamp".into(), json!(now));
            meta_mut(&mut marked).insert("deletionGracePeriodSeconds".into(), json!(0));
            if is_namespace {
                marked["status"] = json!({"phase": "Terminating"});
            }
            marked = state.store.put(key.clone(), marked);
        }
        // A namespace stays Terminating; its contents go in `finalize_namespace`, shortly
        // after, as a namespace controller would do it.
        return Some((marked, false));
    }
    purge(state, key).map(|o| (o, true))
}

/// Deletes what a terminating namespace holds, then the namespace once it is empty (objects
/// with finalizers keep it Terminating until they go).
pub(crate) fn finalize_namespace(state: &mut ClusterState, ns: &str, now: &str) {
    let key = ns_key(ns);
    if state
        .store
        .get(&key)
        .is_none_or(|n| meta_str(n, "deletionTimestamp").is_none())
    {
        return;
    }
    for k in state.store.keys_in_namespace(ns) {
        request_deletion(state, &k, now);
    }
    if state.store.get(&key).is_some() && state.store.keys_in_namespace(ns).is_empty() {
        purge(state, &key);
    }
}
