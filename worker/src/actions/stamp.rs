//! The operation stamp: every write carries the operation's id in the
//! [`OPERATION_ID_ANNOTATION`] of the object it writes, one way for every action. It tells a
//! redelivery that its write is already in (`create` recognises its own object, `patch`
//! and `rollout-undo` are not sent twice), and lets tests count effects per operation.

use kube::api::DynamicObject;
use serde_json::{Value, json};

/// Annotation the worker stamps on every object it writes, holding the operation id.
pub const OPERATION_ID_ANNOTATION: &str = "longshore.io/operation-id";

/// Stamps a whole object, or a merge or strategic-merge patch body, with operation `id`:
/// `metadata.annotations` gets the annotation, whatever else they hold.
pub fn stamp(body: &mut Value, id: &str) {
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

/// The JSON-patch operation that stamps `current` with operation `id`. A JSON patch says
/// exactly where each change goes, so it must address the annotations as they are now.
pub fn json_patch_op(current: &DynamicObject, id: &str) -> Value {
    if current.metadata.annotations.is_some() {
        let path = format!(
            "/metadata/annotations/{}",
            OPERATION_ID_ANNOTATION.replace('/', "~1")
        );
        json!({"op": "add", "path": path, "value": id})
    } else {
        json!({"op": "add", "path": "/metadata/annotations", "value": {OPERATION_ID_ANNOTATION: id}})
    }
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
            json_patch_op(&object, "op-1"),
            json!({"op": "add", "path": "/metadata/annotations",
                   "value": {OPERATION_ID_ANNOTATION: "op-1"}})
        );
        object.metadata.annotations = Some(Default::default());
        assert_eq!(
            json_patch_op(&object, "op-1")["path"],
            "/metadata/annotations/longshore.io~1operation-id"
        );
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
