use serde_json::{Value, json};

use super::*;

const T0: &str = "2024-01-01T00:00:00Z";
const T1: &str = "2024-01-01T00:01:00Z";

fn apply_as(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    apply(ApplyRequest {
        live,
        applied,
        manager,
        api_version: "apps/v1",
        force,
        now,
        ignore_status: true,
    })
}

fn deploy(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app", "image": image}]}}}
    })
}

fn managers(obj: &Value) -> Vec<(String, Operation)> {
    read_entries(obj)
        .into_iter()
        .map(|e| (e.manager, e.operation))
        .collect()
}

fn owns(obj: &Value, manager: &str, pointer: &[&str]) -> bool {
    let path: Path = pointer
        .iter()
        .map(|s| PathElement::Field(s.to_string()))
        .collect();
    read_entries(obj)
        .iter()
        .any(|e| e.manager == manager && e.fields.contains(&path))
}

#[test]
fn apply_creates_with_an_apply_entry() {
    let obj = apply_as(None, &deploy(2, "nginx"), "ci", false, T0).unwrap();
    assert_eq!(obj["spec"]["replicas"], 2);
    assert_eq!(obj["metadata"]["name"], "web");
    assert_eq!(managers(&obj), vec![("ci".to_string(), Operation::Apply)]);
    let mf = &obj["metadata"]["managedFields"][0];
    assert_eq!(mf["fieldsType"], "FieldsV1");
    assert_eq!(mf["fieldsV1"]["f:spec"]["f:replicas"], json!({}));
    assert!(
        mf["fieldsV1"].get("f:metadata").is_none(),
        "name/namespace are not owned"
    );
}

#[test]
fn reapplying_the_same_config_is_a_no_op() {
    let first = apply_as(None, &deploy(2, "nginx"), "ci", false, T0).unwrap();
    let second = apply_as(Some(&first), &deploy(2, "nginx"), "ci", false, T1).unwrap();
    assert_eq!(
        first, second,
        "nothing changes, not even the managedFields time"
    );
}

#[test]
fn conflict_names_the_field_and_the_other_manager() {
    let live = apply_as(None, &deploy(2, "nginx"), "ci", false, T0).unwrap();
    let err = apply_as(Some(&live), &deploy(5, "nginx"), "other", false, T1).unwrap_err();
    assert_eq!(err.len(), 1);
    assert_eq!(err[0].manager, "ci");
    assert_eq!(fieldset::path_string(&err[0].path), ".spec.replicas");
}

#[test]
fn equal_values_are_shared() {
    let live = apply_as(None, &deploy(2, "nginx"), "ci", false, T0).unwrap();
    let shared = apply_as(Some(&live), &deploy(2, "nginx"), "other", false, T1).unwrap();
    assert!(owns(&shared, "ci", &["spec", "replicas"]));
    assert!(owns(&shared, "other", &["spec", "replicas"]));
}

#[test]
fn force_takes_ownership() {
    let live = apply_as(None, &deploy(2, "nginx"), "ci", false, T0).unwrap();
    let forced = apply_as(Some(&live), &deploy(5, "nginx"), "other", true, T1).unwrap();
    assert_eq!(forced["spec"]["replicas"], 5);
    assert!(!owns(&forced, "ci", &["spec", "replicas"]));
    assert!(owns(&forced, "other", &["spec", "replicas"]));
}

#[test]
fn dropped_fields_are_removed_when_unowned_and_kept_when_shared() {
    let mut with_labels = deploy(2, "nginx");
    with_labels["metadata"]["labels"] = json!({"a": "1", "b": "2"});
    let live = apply_as(None, &with_labels, "ci", false, T0).unwrap();
    // A second manager shares label b.
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"b": "2"}}});
    let live = apply_as(Some(&live), &other, "other", false, T0).unwrap();
    // ci stops sending both labels.
    let after = apply_as(Some(&live), &deploy(2, "nginx"), "ci", false, T1).unwrap();
    assert!(
        after["metadata"]["labels"].get("a").is_none(),
        "unowned field removed"
    );
    assert_eq!(
        after["metadata"]["labels"]["b"], "2",
        "field still owned by other stays"
    );
    assert!(!owns(&after, "ci", &["metadata", "labels", "b"]));
}

#[test]
fn dropped_list_map_item_is_removed() {
    let mut two = deploy(1, "nginx");
    two["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "app", "image": "nginx"}, {"name": "sidecar", "image": "envoy"}]);
    let live = apply_as(None, &two, "ci", false, T0).unwrap();
    let after = apply_as(Some(&live), &deploy(1, "nginx"), "ci", false, T1).unwrap();
    assert_eq!(
        after["spec"]["template"]["spec"]["containers"],
        json!([{"name": "app", "image": "nginx"}])
    );
}

#[test]
fn list_map_items_merge_by_key_across_managers() {
    let live = apply_as(None, &deploy(1, "nginx"), "ci", false, T0).unwrap();
    let sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "envoy"}]}}}});
    let after = apply_as(Some(&live), &sidecar, "mesh", false, T1).unwrap();
    let names: Vec<&str> = after["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["app", "sidecar"]);
    let err = apply_as(Some(&after), &deploy(1, "busybox"), "mesh2", false, T1).unwrap_err();
    assert_eq!(
        fieldset::path_string(&err[0].path),
        ".spec.template.spec.containers[name=\"app\"].image"
    );
}

#[test]
fn update_takes_ownership_of_changed_fields() {
    let live = apply_as(None, &deploy(2, "nginx"), "ci", false, T0).unwrap();
    let mut new = live.clone();
    new["spec"]["replicas"] = json!(7);
    record_update(
        &mut new,
        UpdateRequest {
            old: Some(&live),
            manager: "kubectl-scale",
            api_version: "apps/v1",
            subresource: None,
            now: T1,
            ignore_status: true,
        },
    );
    assert!(owns(&new, "kubectl-scale", &["spec", "replicas"]));
    assert!(!owns(&new, "ci", &["spec", "replicas"]));
    assert!(managers(&new).contains(&("kubectl-scale".to_string(), Operation::Update)));
    // Applying the old value again now conflicts with the updater.
    let err = apply_as(Some(&new), &deploy(2, "nginx"), "ci", false, T1).unwrap_err();
    assert_eq!(err[0].manager, "kubectl-scale");
}

#[test]
fn update_that_changes_nothing_leaves_managed_fields_alone() {
    let live = apply_as(None, &deploy(2, "nginx"), "ci", false, T0).unwrap();
    let mut same = live.clone();
    record_update(
        &mut same,
        UpdateRequest {
            old: Some(&live),
            manager: "x",
            api_version: "apps/v1",
            subresource: None,
            now: T1,
            ignore_status: true,
        },
    );
    assert_eq!(same, live);
}

#[test]
fn status_updates_only_track_status() {
    let old = json!({"metadata": {"name": "a"}, "spec": {"x": 1}});
    let mut new = json!({"metadata": {"name": "a"}, "spec": {"x": 1}, "status": {"ready": true}});
    record_update(
        &mut new,
        UpdateRequest {
            old: Some(&old),
            manager: "ctl",
            api_version: "v1",
            subresource: Some("status"),
            now: T0,
            ignore_status: true,
        },
    );
    let e = &read_entries(&new)[0];
    assert_eq!(e.subresource.as_deref(), Some("status"));
    assert_eq!(e.fields.len(), 1);
}
