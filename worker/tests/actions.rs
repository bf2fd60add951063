//! Each action against kube-sim: its outcome, its idempotency, and its failures.

mod support;

use longshore_contract::record::{ErrorClass, OperationRecord, Outcome, State};
use longshore_contract::spec::{Action, ObjectRef, PatchSpec, PatchType};
use serde_json::json;
use support::{Fixture, RunningWorker, configmap, envelope, eventually};

fn target(name: &str) -> ObjectRef {
    ObjectRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: None,
        name: name.into(),
    }
}

async fn run_op(fx: &Fixture, op: &longshore_contract::Envelope) -> OperationRecord {
    fx.submit(op).await;
    fx.finished(&op.id).await
}

#[tokio::test]
async fn create_recognises_its_own_object_and_refuses_someone_elses() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));

    let op = envelope(Action::Create, vec![configmap("made", "1")]);
    let record = run_op(&fx, &op).await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    assert_eq!(record.results[0].outcome, Outcome::Created);

    // Redone after a crash between create and record: the 409 is ours, so it is done.
    let mut running = record.clone();
    running.state = State::Running;
    fx.records
        .put(op.id.as_str(), running.to_bytes())
        .await
        .unwrap();
    fx.publish(&op).await;
    let redone = eventually("the redone create recorded", || async {
        fx.record(&op.id)
            .await
            .filter(|r| r.state.is_terminal() && r.attempts == 2)
    })
    .await;
    assert_eq!(redone.state, State::Succeeded, "{redone:?}");
    assert_eq!(redone.results[0].outcome, Outcome::Created);
    assert_eq!(fx.writes_by(&op.id).iter().filter(|w| w.changed).count(), 1);

    // Another operation creating the same object: a conflict, not retried.
    let other = envelope(Action::Create, vec![configmap("made", "2")]);
    let record = run_op(&fx, &other).await;
    assert_eq!(record.state, State::Failed);
    assert_eq!(record.attempts, 1);
    assert_eq!(record.error.unwrap().class, ErrorClass::Conflict);
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn patch_replace_and_delete_change_what_is_there_and_count_a_missing_object_as_done() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));
    let prod = fx.prod();
    let data = |prod: &longshore_kube_sim::ClusterHandle| {
        prod.get("v1", "ConfigMap", Some("default"), "cm")
            .map(|o| o["data"]["key"].clone())
    };
    run_op(&fx, &envelope(Action::Apply, vec![configmap("cm", "1")])).await;

    let mut merge = envelope(Action::Patch, vec![]);
    merge.spec.targets = vec![target("cm")];
    merge.spec.patch = Some(PatchSpec {
        patch_type: PatchType::Merge,
        body: json!({"data": {"key": "2"}}),
    });
    let record = run_op(&fx, &merge).await;
    assert_eq!(record.results[0].outcome, Outcome::Configured, "{record:?}");
    assert_eq!(data(&prod), Some(json!("2")));
    assert_eq!(fx.writes_by(&merge.id).len(), 1, "stamped with its id");

    let mut json_patch = envelope(Action::Patch, vec![]);
    json_patch.spec.targets = vec![target("cm")];
    json_patch.spec.patch = Some(PatchSpec {
        patch_type: PatchType::Json,
        body: json!([{"op": "replace", "path": "/data/key", "value": "3"}]),
    });
    let record = run_op(&fx, &json_patch).await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    assert_eq!(data(&prod), Some(json!("3")));
    let stored = prod.get("v1", "ConfigMap", Some("default"), "cm").unwrap();
    assert_eq!(
        stored["metadata"]["annotations"][longshore_worker::OPERATION_ID_ANNOTATION],
        json_patch.id.as_str()
    );

    let replace = envelope(Action::Replace, vec![configmap("cm", "4")]);
    let record = run_op(&fx, &replace).await;
    assert_eq!(record.results[0].outcome, Outcome::Configured, "{record:?}");
    assert_eq!(data(&prod), Some(json!("4")));

    let mut missing = envelope(Action::Patch, vec![]);
    missing.spec.targets = vec![target("nope")];
    missing.spec.patch = merge.spec.patch.clone();
    let record = run_op(&fx, &missing).await;
    assert_eq!(record.state, State::Failed);
    assert_eq!(record.error.unwrap().class, ErrorClass::NotFound);

    let mut delete = envelope(Action::Delete, vec![]);
    delete.spec.targets = vec![target("cm")];
    let record = run_op(&fx, &delete).await;
    assert_eq!(record.results[0].outcome, Outcome::Deleted, "{record:?}");
    assert_eq!(data(&prod), None);

    let mut again = envelope(Action::Delete, vec![]);
    again.spec.targets = vec![target("cm")];
    let record = run_op(&fx, &again).await;
    assert_eq!(record.state, State::Succeeded);
    assert_eq!(record.results[0].outcome, Outcome::NotFound);
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));
    let mut op = envelope(Action::Apply, vec![configmap("dry", "1")]);
    op.spec.options.dry_run = true;
    let record = run_op(&fx, &op).await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    assert!(
        fx.prod()
            .get("v1", "ConfigMap", Some("default"), "dry")
            .is_none()
    );
    assert!(fx.writes_by(&op.id).iter().all(|w| w.dry_run && !w.changed));
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn an_unreadable_message_is_terminated_and_its_record_failed() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));
    let op = envelope(Action::Apply, vec![configmap("web", "1")]);
    fx.records
        .create(op.id.as_str(), OperationRecord::queued(&op).to_bytes())
        .await
        .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, op.id.as_str());
    fx.js
        .publish_with_headers("longshore.ops.prod", headers, "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let record = fx.finished(&op.id).await;
    assert_eq!(record.state, State::Failed);
    assert_eq!(record.error.unwrap().class, ErrorClass::Malformed);
    eventually("the message removed", || async {
        (fx.queued_messages().await == 0).then_some(())
    })
    .await;
    assert!(fx.prod().writes().is_empty());
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn a_custom_resource_applies_in_the_same_operation_as_its_definition() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    });
    let widget = json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"size": 3}
    });
    let op = envelope(Action::Apply, vec![crd, widget]);
    let record = run_op(&fx, &op).await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    let outcomes: Vec<Outcome> = record.results.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::Created, Outcome::Created]);
    assert!(
        fx.prod()
            .get("example.com/v1", "Widget", Some("default"), "w")
            .is_some()
    );
    worker.stop().await.expect("clean drain");
}

/// A dry run reports the outcome the real write would (as `kubectl --dry-run=server`
/// does): `configured` for an existing object the change would alter, never `unchanged`
/// alongside a diff that lists changes.
#[tokio::test]
async fn a_dry_run_reports_the_outcome_the_write_would_have() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));
    let record = run_op(&fx, &envelope(Action::Apply, vec![configmap("cm", "1")])).await;
    assert_eq!(record.results[0].outcome, Outcome::Created, "{record:?}");

    let dry = |mut op: longshore_contract::Envelope| {
        op.spec.options.dry_run = true;
        op
    };
    let apply = dry(envelope(Action::Apply, vec![configmap("cm", "2")]));
    let replace = dry(envelope(Action::Replace, vec![configmap("cm", "2")]));
    let mut patch = dry(envelope(Action::Patch, vec![]));
    patch.spec.targets = vec![target("cm")];
    patch.spec.patch = Some(PatchSpec {
        patch_type: PatchType::Merge,
        body: json!({"data": {"key": "3"}}),
    });
    for op in [apply, replace, patch] {
        let action = op.spec.action;
        let record = run_op(&fx, &op).await;
        assert_eq!(record.state, State::Succeeded, "{action:?}: {record:?}");
        let result = &record.results[0];
        let diff = result.diff.as_ref().expect("a dry run lists its changes");
        assert!(
            diff.iter().any(|c| c.path == "data.key"),
            "{action:?}: {diff:?}"
        );
        assert_eq!(
            result.outcome,
            Outcome::Configured,
            "{action:?}: {result:?}"
        );
    }
    let created = run_op(
        &fx,
        &dry(envelope(Action::Apply, vec![configmap("new", "1")])),
    )
    .await;
    assert_eq!(created.results[0].outcome, Outcome::Created, "{created:?}");
    assert!(
        fx.prod()
            .get("v1", "ConfigMap", Some("default"), "new")
            .is_none()
    );
    worker.stop().await.expect("clean drain");
}
