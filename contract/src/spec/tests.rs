//! The rules of [`OperationSpec::validate`], action by action.

use super::*;
use serde_json::json;

fn spec(action: Action) -> OperationSpec {
    OperationSpec {
        cluster: crate::ClusterName::new("prod").unwrap(),
        action,
        manifests: vec![],
        targets: vec![],
        patch: None,
        params: ActionParams::default(),
        options: Options::default(),
        pipeline: None,
    }
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}})
}

#[test]
fn apply_with_good_manifests_is_valid() {
    let mut s = spec(Action::Apply);
    s.manifests = vec![configmap("a"), configmap("b")];
    assert_eq!(s.validate(), Ok(()));
    assert_eq!(s.objects().len(), 2);
}

#[test]
fn each_bad_manifest_is_named_with_its_index_and_field() {
    let mut s = spec(Action::Apply);
    s.manifests = vec![
        configmap("ok"),
        json!({"kind": "ConfigMap", "metadata": {"name": "x"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
        json!("not an object"),
    ];
    let fields: Vec<String> = s
        .validate()
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(
        fields,
        [
            "manifests[1].apiVersion",
            "manifests[2].metadata.name",
            "manifests[3]"
        ]
    );
}

#[test]
fn patch_needs_targets_and_a_body_of_the_right_shape() {
    let mut s = spec(Action::Patch);
    let fields: Vec<String> = s
        .validate()
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(fields, ["targets", "patch"]);
    s.targets = vec![ObjectRef::of_manifest(&configmap("a")).unwrap()];
    s.patch = Some(PatchSpec {
        patch_type: PatchType::Json,
        body: json!({"not": "a list"}),
    });
    assert_eq!(s.validate().unwrap_err()[0].field, "patch.body");
    s.patch = Some(PatchSpec {
        patch_type: PatchType::Json,
        body: json!([{"op": "add", "path": "/data/x", "value": "1"}]),
    });
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn delete_accepts_manifests_or_targets() {
    let mut s = spec(Action::Delete);
    assert!(s.validate().is_err());
    s.manifests = vec![configmap("a")];
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn options_default_to_forced_apply_as_longshore() {
    let s: OperationSpec = serde_json::from_value(json!({
        "cluster": "prod", "action": "apply", "manifests": [configmap("a")]
    }))
    .unwrap();
    assert!(s.options.force);
    assert_eq!(s.options.field_manager, "longshore");
}

fn deployment(name: &str) -> ObjectRef {
    ObjectRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        namespace: None,
        name: name.into(),
    }
}

fn problems(s: &OperationSpec) -> Vec<String> {
    s.validate()
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.field)
        .collect()
}

#[test]
fn scale_needs_targets_and_a_non_negative_replica_count() {
    let mut s = spec(Action::Scale);
    assert_eq!(problems(&s), ["targets", "replicas"]);
    s.targets = vec![deployment("web")];
    s.params.replicas = Some(-1);
    assert_eq!(problems(&s), ["replicas"]);
    s.params.replicas = Some(3);
    assert_eq!(s.validate(), Ok(()));
    let parsed: OperationSpec = serde_json::from_value(json!({
        "cluster": "prod", "action": "scale", "replicas": 3,
        "targets": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}]
    }))
    .unwrap();
    assert_eq!(parsed, s);
}

#[test]
fn parameters_belong_to_their_action_and_rollouts_to_their_kinds() {
    let mut s = spec(Action::RolloutPause);
    s.targets = vec![
        deployment("web"),
        ObjectRef::of_manifest(&configmap("c")).unwrap(),
    ];
    s.params.replicas = Some(1);
    s.params.to_revision = Some(2);
    let errors = s.validate().unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["targets[1].kind", "replicas", "toRevision"]);
    assert!(errors[0].reason.contains("Deployment"), "{errors:?}");

    let mut undo = spec(Action::RolloutUndo);
    undo.targets = vec![deployment("web")];
    undo.params.to_revision = Some(0);
    assert_eq!(problems(&undo), ["toRevision"]);
    undo.params.to_revision = Some(2);
    assert_eq!(undo.validate(), Ok(()));
    assert_eq!(
        serde_json::to_value(&undo).unwrap()["toRevision"],
        json!(2),
        "camelCase on the wire"
    );
}

#[test]
fn run_job_takes_one_job_manifest_named_or_generate_named() {
    let mut s = spec(Action::RunJob);
    s.manifests = vec![configmap("a")];
    assert_eq!(problems(&s), ["manifests[0].kind"]);
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"generateName": "migrate-"}, "spec": {}});
    s.manifests = vec![job.clone()];
    assert_eq!(s.validate(), Ok(()));
    let id = crate::OperationId::parse("op-abcdefghijklmnopqrstuvwxyz234567").unwrap();
    let name = job_name(&job, &id);
    assert_eq!(name, "migrate-wxyz234567");
    assert_eq!(job_name(&job, &id), name, "the same for a redelivery");
    let long = json!({"metadata": {"name": "x".repeat(80)}});
    assert!(job_name(&long, &id).len() <= 63);
}

#[test]
fn wait_needs_a_sensible_timeout_and_something_to_wait_for() {
    let mut s = spec(Action::Apply);
    s.manifests = vec![configmap("a")];
    s.options.wait = Some(WaitOptions {
        timeout: std::time::Duration::ZERO,
    });
    assert_eq!(problems(&s), ["options.wait.timeout"]);
    s.options.wait = Some(WaitOptions {
        timeout: std::time::Duration::from_secs(60),
    });
    assert_eq!(s.validate(), Ok(()));
    s.options.dry_run = true;
    assert_eq!(problems(&s), ["options.wait"]);
    let parsed: Options = serde_json::from_value(json!({"wait": {"timeout": "2m"}})).unwrap();
    assert_eq!(
        parsed.wait.unwrap().timeout,
        std::time::Duration::from_secs(120)
    );
}

#[test]
fn action_names_are_kebab_case_on_the_wire() {
    for action in Action::ALL {
        let wire = serde_json::to_value(action).unwrap();
        assert_eq!(wire, json!(action.as_str()));
        assert_eq!(serde_json::from_value::<Action>(wire).unwrap(), action);
    }
}

#[test]
fn unknown_option_is_rejected_by_name() {
    let err = serde_json::from_value::<Options>(json!({"dryrun": true})).unwrap_err();
    assert!(err.to_string().contains("dryrun"), "{err}");
}
