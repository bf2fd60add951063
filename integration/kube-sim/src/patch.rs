//! PATCH bodies: JSON patch, JSON merge patch and an approximation of strategic merge patch.
//!
//! Strategic merge uses the same list semantics as field ownership ([`fieldset::list_kind`]):
//! containers, env, ports, volumes, volumeMounts, imagePullSecrets, conditions merge by key;
//! `finalizers` merges as a set; every other list is replaced. The directives `$patch:
//! delete|replace|merge` and `$deleteFromPrimitiveList/<field>` are honoured; `$setElementOrder`
//! and `$retainKeys` are accepted and ignored.

use serde_json::Value;

use crate::fieldset::{self, ListKind};
use crate::status::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PatchType::Json => "json",
            PatchType::Merge => "merge",
            PatchType::Strategic => "strategic",
            PatchType::Apply => "apply",
        }
    }
}

/// Applies a JSON, merge or strategic patch to `target`.
pub fn apply_patch(kind: PatchType, target: &Value, body: &[u8]) -> Result<Value> {
    let mut doc = target.clone();
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| Error::BadRequest(format!("error decoding json patch: {e}")))?;
            json_patch::patch(&mut doc, &ops.0).map_err(|e| {
                Error::Unprocessable(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
        }
        PatchType::Merge | PatchType::Strategic => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| Error::BadRequest(format!("error decoding patch: {e}")))?;
            if !patch.is_object() {
                return Err(Error::BadRequest(
                    "error decoding patch: the patch must be a JSON object".into(),
                ));
            }
            if kind == PatchType::Merge {
                json_patch::merge(&mut doc, &patch);
            } else {
                strategic_merge(&mut doc, &patch, "");
            }
        }
        PatchType::Apply => return Err(Error::UnsupportedMediaType),
    }
    Ok(doc)
}

/// Removes `$` directives from a value that is inserted as a whole.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
        other => other.clone(),
    }
}

fn directive(v: &Value) -> Option<&str> {
    v.get("$patch").and_then(Value::as_str)
}

pub fn strategic_merge(target: &mut Value, patch: &Value, field: &str) {
    match patch {
        Value::Object(pm) => {
            if directive(patch) == Some("replace") {
                *target = clean(patch);
                return;
            }
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let Some(tm) = target.as_object_mut() else {
                return;
            };
            for (k, pv) in pm {
                if let Some(list_field) = k.strip_prefix("$deleteFromPrimitiveList/") {
                    if let (Some(Value::Array(items)), Some(remove)) =
                        (tm.get_mut(list_field), pv.as_array())
                    {
                        items.retain(|i| !remove.contains(i));
                    }
                    continue;
                }
                if k.starts_with('$') {
                    continue;
                }
                if pv.is_null() || directive(pv) == Some("delete") {
                    tm.remove(k);
                    continue;
                }
                match tm.get_mut(k) {
                    Some(tv) => strategic_merge(tv, pv, k),
                    None => {
                        tm.insert(k.clone(), clean(pv));
                    }
                }
            }
        }
        Value::Array(items) => {
            let Some(existing) = target.as_array_mut() else {
                *target = clean(patch);
                return;
            };
            match fieldset::list_kind(field, items) {
                ListKind::Map(keys) => {
                    if items.iter().any(|i| directive(i) == Some("replace")) {
                        *target = Value::Array(
                            items
                                .iter()
                                .filter(|i| directive(i).is_none())
                                .map(clean)
                                .collect(),
                        );
                        return;
                    }
                    for pi in items {
                        let key = fieldset::item_key(pi, keys);
                        let pos = existing
                            .iter()
                            .position(|ti| fieldset::item_key(ti, keys) == key);
                        match (directive(pi), pos) {
                            (Some("delete"), Some(p)) => {
                                existing.remove(p);
                            }
                            (Some("delete"), None) => {}
                            (_, Some(p)) => strategic_merge(&mut existing[p], pi, ""),
                            (_, None) => existing.push(clean(pi)),
                        }
                    }
                }
                ListKind::Set => {
                    for pi in items {
                        if !existing.contains(pi) {
                            existing.push(pi.clone());
                        }
                    }
                }
                ListKind::Atomic => *target = clean(patch),
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"spec": {"containers": [
            {"name": "app", "image": "nginx", "env": [{"name": "A", "value": "1"}]},
            {"name": "sidecar", "image": "envoy"}
        ], "args": ["a", "b"]}})
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let patch = json!({"spec": {"containers": [{"name": "app", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]}]}});
        let out = apply_patch(PatchType::Strategic, &pod(), patch.to_string().as_bytes()).unwrap();
        let c = &out["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 2);
        assert_eq!(c[0]["image"], "nginx:2");
        assert_eq!(c[0]["env"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn strategic_delete_and_replace_directives() {
        let patch = json!({"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}], "args": ["c"]}});
        let out = apply_patch(PatchType::Strategic, &pod(), patch.to_string().as_bytes()).unwrap();
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(
            out["spec"]["args"],
            json!(["c"]),
            "atomic lists are replaced"
        );
        let replace = json!({"spec": {"$patch": "replace", "containers": []}});
        let out =
            apply_patch(PatchType::Strategic, &pod(), replace.to_string().as_bytes()).unwrap();
        assert_eq!(out["spec"], json!({"containers": []}));
    }

    #[test]
    fn merge_patch_replaces_lists_and_null_deletes() {
        let patch = json!({"spec": {"containers": [{"name": "x"}], "args": null}});
        let out = apply_patch(PatchType::Merge, &pod(), patch.to_string().as_bytes()).unwrap();
        assert_eq!(out["spec"], json!({"containers": [{"name": "x"}]}));
    }

    #[test]
    fn json_patch_failures_are_unprocessable() {
        let patch = json!([{"op": "test", "path": "/spec/args/0", "value": "zzz"}]);
        let err = apply_patch(PatchType::Json, &pod(), patch.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.code(), 422);
        assert_eq!(
            apply_patch(PatchType::Json, &pod(), b"{")
                .unwrap_err()
                .code(),
            400
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml; charset=utf-8"),
            Some(PatchType::Apply)
        );
        assert_eq!(PatchType::from_content_type("text/plain"), None);
    }
}
