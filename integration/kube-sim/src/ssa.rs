//! Server-side apply and `metadata.managedFields`.
//!
//! Follows the documented semantics: each manager owns a [`FieldSet`]; an apply conflicts
//! only where it would change a field another manager owns; equal values are shared; `force`
//! takes ownership; fields an applier stops sending are removed when nobody else owns them;
//! non-apply writes record `Update` entries for the fields they changed and take those fields
//! away from other managers.

use serde_json::{Map, Value, json};

use crate::fieldset::{self, FieldSet, ListKind, Path, PathElement};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource; `.status` is excluded for kinds with a status subresource.
    Main { ignore_status: bool },
    /// The `/status` subresource: only `.status`.
    Status,
}

/// A field owned by another manager that an apply would change.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: Path,
}

/// Reads `metadata.managedFields`, skipping malformed entries.
pub fn read_entries(obj: &Value) -> Vec<ManagedEntry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let operation = match e.get("operation")?.as_str()? {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                _ => return None,
            };
            let fields = FieldSet::from_fields_v1(e.get("fieldsV1").unwrap_or(&json!({}))).ok()?;
            Some(ManagedEntry {
                manager: e
                    .get("manager")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                operation,
                api_version: e
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                time: e
                    .get("time")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(String::from),
                fields,
            })
        })
        .collect()
}

/// Writes entries back (dropping empty ones); removes the field when there are none.
pub fn write_entries(obj: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation.as_str(),
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": e.fields.to_fields_v1(),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if let Some(md) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            md.remove("managedFields");
        } else {
            md.insert("managedFields".into(), Value::Array(list));
        }
    }
}

const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generateName",
];

/// The part of an object that field ownership is tracked for.
pub fn strip(obj: &Value, scope: Scope) -> Value {
    let mut v = obj.clone();
    let Some(m) = v.as_object_mut() else {
        return json!({});
    };
    m.remove("apiVersion");
    m.remove("kind");
    if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in SYSTEM_METADATA {
            md.remove(*k);
        }
        if md.is_empty() {
            m.remove("metadata");
        }
    }
    match scope {
        Scope::Main {
            ignore_status: true,
        } => {
            m.remove("status");
            v
        }
        Scope::Main {
            ignore_status: false,
        } => v,
        Scope::Status => match m.get("status") {
            Some(s) => json!({"status": s}),
            None => json!({}),
        },
    }
}

/// Merges an applied configuration into a live object: maps recursively, list-maps by key,
/// sets by value; everything else is replaced.
pub fn merge_applied(live: &mut Value, applied: &Value, field: &str) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                match l.get_mut(k) {
                    Some(lv) => merge_applied(lv, av, k),
                    None => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => match fieldset::list_kind(field, a) {
            ListKind::Map(keys) if fieldset::list_kind(field, l) == ListKind::Map(keys) => {
                for ai in a {
                    let key = fieldset::item_key(ai, keys);
                    match l.iter_mut().find(|li| fieldset::item_key(li, keys) == key) {
                        Some(li) => merge_applied(li, ai, ""),
                        None => l.push(ai.clone()),
                    }
                }
            }
            ListKind::Set => {
                for ai in a {
                    if !l.contains(ai) {
                        l.push(ai.clone());
                    }
                }
            }
            _ => *l = a.clone(),
        },
        (l, a) => *l = a.clone(),
    }
}

/// What an apply needs to know.
pub struct ApplyRequest<'a> {
    pub live: Option<&'a Value>,
    pub applied: &'a Value,
    pub manager: &'a str,
    pub api_version: &'a str,
    pub force: bool,
    pub now: &'a str,
    pub ignore_status: bool,
}

fn is_value_path(p: &Path) -> bool {
    !matches!(
        p.last(),
        Some(PathElement::Key(_)) | Some(PathElement::Value(_)) | None
    )
}

/// Applies a configuration: returns the new object (with managedFields) or the conflicts.
pub fn apply(req: ApplyRequest<'_>) -> Result<Value, Vec<Conflict>> {
    let scope = Scope::Main {
        ignore_status: req.ignore_status,
    };
    let applied = strip(req.applied, scope);
    let applied_set = FieldSet::from_object(&applied);
    let mut entries = req.live.map(read_entries).unwrap_or_default();
    let live_body = req
        .live
        .map(|l| strip(l, scope))
        .unwrap_or_else(|| json!({}));

    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| e.manager != req.manager) {
        for p in applied_set.intersection(&e.fields).iter() {
            let live_value = fieldset::get_path(&live_body, p);
            if is_value_path(p)
                && live_value.is_some()
                && live_value != fieldset::get_path(&applied, p)
            {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    path: p.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        if !req.force {
            return Err(conflicts);
        }
        for c in &conflicts {
            for e in entries.iter_mut().filter(|e| e.manager == c.manager) {
                e.fields.remove(&c.path);
            }
        }
    }

    let mut merged = match req.live {
        Some(l) => l.clone(),
        None => {
            let md = req
                .applied
                .get("metadata")
                .cloned()
                .unwrap_or_else(|| json!({}));
            json!({
                "apiVersion": req.applied.get("apiVersion").cloned().unwrap_or(Value::Null),
                "kind": req.applied.get("kind").cloned().unwrap_or(Value::Null),
                "metadata": {"name": md.get("name").cloned().unwrap_or(Value::Null),
                             "namespace": md.get("namespace").cloned().unwrap_or(Value::Null)},
            })
        }
    };
    if let Some(md) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
        md.retain(|_, v| !v.is_null());
    }
    merge_applied(&mut merged, &applied, "");

    let is_mine = |e: &ManagedEntry| e.manager == req.manager && e.operation == Operation::Apply;
    let previous = entries
        .iter()
        .find(|e| is_mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for p in previous.difference(&applied_set).iter() {
        let owned_elsewhere = entries
            .iter()
            .filter(|e| !is_mine(e))
            .any(|e| e.fields.owns_at_or_below(p));
        if !owned_elsewhere {
            fieldset::remove_path(&mut merged, p);
        }
    }

    let content_changed = strip(&merged, scope) != live_body || req.live.is_none();
    match entries.iter_mut().find(|e| is_mine(e)) {
        Some(e) => {
            if content_changed || e.fields != applied_set || e.api_version != req.api_version {
                e.time = req.now.to_string();
            }
            e.fields = applied_set;
            e.api_version = req.api_version.to_string();
        }
        None => entries.push(ManagedEntry {
            manager: req.manager.to_string(),
            operation: Operation::Apply,
            api_version: req.api_version.to_string(),
            time: req.now.to_string(),
            subresource: None,
            fields: applied_set,
        }),
    }
    write_entries(&mut merged, &entries);
    Ok(merged)
}

/// What a non-apply write needs to know to record its managed fields.
pub struct UpdateRequest<'a> {
    pub old: Option<&'a Value>,
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: Option<&'a str>,
    pub now: &'a str,
    pub ignore_status: bool,
}

/// Records an `Update` entry on `new` for the fields the write changed, taking them from
/// other managers; fields the write removed are dropped from every manager.
pub fn record_update(new: &mut Value, req: UpdateRequest<'_>) {
    let scope = match req.subresource {
        Some("status") => Scope::Status,
        _ => Scope::Main {
            ignore_status: req.ignore_status,
        },
    };
    let new_body = strip(new, scope);
    let old_body = req
        .old
        .map(|o| strip(o, scope))
        .unwrap_or_else(|| json!({}));
    let new_set = FieldSet::from_object(&new_body);
    let old_set = FieldSet::from_object(&old_body);
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| fieldset::get_path(&old_body, p) != fieldset::get_path(&new_body, p))
        .cloned()
        .collect();
    let removed = old_set.difference(&new_set);

    let mut entries = req.old.map(read_entries).unwrap_or_default();
    let sub = req.subresource.map(String::from);
    let is_mine = |e: &ManagedEntry| {
        e.manager == req.manager && e.operation == Operation::Update && e.subresource == sub
    };
    for e in entries.iter_mut() {
        e.fields.remove_all(&removed);
        if !is_mine(e) {
            e.fields.remove_all(&changed);
        }
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| is_mine(e)) {
            Some(e) => {
                e.fields.union_with(&changed);
                e.time = req.now.to_string();
                e.api_version = req.api_version.to_string();
            }
            None => entries.push(ManagedEntry {
                manager: req.manager.to_string(),
                operation: Operation::Update,
                api_version: req.api_version.to_string(),
                time: req.now.to_string(),
                subresource: sub.clone(),
                fields: changed,
            }),
        }
    }
    if new.get("metadata").is_none() {
        new["metadata"] = Value::Object(Map::new());
    }
    write_entries(new, &entries);
}

#[cfg(test)]
mod tests;
