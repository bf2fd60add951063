//! The operation stamp: every write carries the operation's id in the
//! [`OPERATION_ID_ANNOTATION`] of the object it writes, one way for every action. It tells a
//! redelivery that its write is already in (`create` recognises its own object, `patch`
//! and `rollout-undo` are not sent twice), and lets tests count effects per operation.
//!
//! Next to it goes the [`MANAGED_LABEL`]: a label, not an annotation, because the watchers
//! select what longshore manages by it on the server's side and read nothing else.

use kube::api::DynamicObject;
pub use longshore_contract::inventory::MANAGED_LABEL;
use serde_json::{Value, json};

/// Annotation the worker stamps on every object it writes, holding the operation id.
pub const OPERATION_ID_ANNOTATION: &str = "longshore.io/operation-id";

/// The value of the [`MANAGED_LABEL`].
const MANAGED: &str = "true";

/// Stamps a whole object, or a merge or strategic-merge patch body, with operation `id`:
/// `metadata.annotations` gets the annotation and `metadata.labels` the managed label,
/// whatever else they hold.
pub fn stamp(body: &mut Value, id: &str) {
    let Some(root) = body.as_object_mut() else {
        return;
    };
    let meta = root.entry("metadata").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    for (field, key, value) in [
        ("annotations", OPERATION_ID_ANNOTATION, id),
        ("labels", MANAGED_LABEL, MANAGED),
    ] {
        let map = meta.entry(field).or_insert_with(|| json!({}));
        if let Some(map) = map.as_object_mut() {
            map.insert(key.into(), json!(value));
        }
    }
}

/// The JSON-patch operations that stamp `current` with operation `id`. A JSON patch says
/// exactly where each change goes, so they address the annotations and labels as they
/// are now.
pub fn json_patch_ops(current: &DynamicObject, id: &str) -> [Value; 2] {
    let add = |field: &str, present: bool, key: &str, value: &str| {
        if present {
            let path = format!("/metadata/{field}/{}", key.replace('/', "~1"));
            json!({"op": "add", "path": path, "value": value})
        } else {
            json!({"op": "add", "path": format!("/metadata/{field}"), "value": {key: value}})
        }
    };
    let meta = &current.metadata;
    [
        add(
            "annotations",
            meta.annotations.is_some(),
            OPERATION_ID_ANNOTATION,
            id,
        ),
        add("labels", meta.labels.is_some(), MANAGED_LABEL, MANAGED),
    ]
}

/// Whether `object` carries operation `id`'s stamp: that operation's write is in.
pub fn stamped_by(object: &DynamicObject, id: &str) -> bool {
    object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(OPERATION_ID_ANNOTATION))
        .is_some_and(|v| v == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_and_merge_patches_are_stamped_alike() {
        let mut m = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "web", "annotations": {"team": "a"}}, "data": {"k": "v"}});
        stamp(&mut m, "op-1");
        assert_eq!(
            m["metadata"]["annotations"][OPERATION_ID_ANNOTATION],
            "op-1"
        );
        assert_eq!(m["metadata"]["annotations"]["team"], "a", "kept");
        assert_eq!(m["metadata"]["labels"][MANAGED_LABEL], "true");
        let mut p = json!({"data": {"k": "v"}});
        stamp(&mut p, "op-1");
        assert_eq!(
            p["metadata"]["annotations"][OPERATION_ID_ANNOTATION],
            "op-1"
        );
        assert_eq!(p["data"]["k"], "v");
    }

    #[test]
    fn a_json_patch_stamp_addresses_the_annotations_as_they_are() {
        let mut object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}}))
        .unwrap();
        assert_eq!(
            json_patch_ops(&object, "op-1"),
            [
                json!({"op": "add", "path": "/metadata/annotations",
                   "value": {OPERATION_ID_ANNOTATION: "op-1"}}),
                json!({"op": "add", "path": "/metadata/labels",
                   "value": {MANAGED_LABEL: "true"}})
            ]
        );
        object.metadata.annotations = Some(Default::default());
        object.metadata.labels = Some(Default::default());
        let ops = json_patch_ops(&object, "op-1");
        assert_eq!(
            ops[0]["path"],
            "/metadata/annotations/longshore.io~1operation-id"
        );
        assert_eq!(ops[1]["path"], "/metadata/labels/longshore.io~1managed");
        assert!(!stamped_by(&object, "op-1"));
        object
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(OPERATION_ID_ANNOTATION.into(), "op-1".into());
        assert!(stamped_by(&object, "op-1"));
        assert!(!stamped_by(&object, "op-2"));
    }
}
