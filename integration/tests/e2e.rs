//! The whole path: HTTP submit → dispatcher → JetStream → worker → cluster (kube-sim) →
//! status, with real components only.

use std::time::Duration;

use longshore_integration::system::System;
use longshore_kube_sim::{ErrorFault, FaultScope, Faults, Trigger};
use longshore_worker::OPERATION_ID_ANNOTATION;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn sample_app() -> Value {
    json!([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "shop"}, "data": {"GREETING": "hi"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}, "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"}, "spec": {
            "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    ])
}

fn configmap(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"v": value}})
}

/// Writes to the cluster that changed an object on behalf of operation `id`.
fn effects(system: &System, cluster: &str, id: &str) -> usize {
    system
        .cluster(cluster)
        .writes()
        .iter()
        .filter(|w| {
            w.changed
                && !w.dry_run
                && w.annotations
                    .get(OPERATION_ID_ANNOTATION)
                    .map(String::as_str)
                    == Some(id)
        })
        .count()
}

#[tokio::test]
async fn a_submitted_application_is_applied_and_reported_succeeded() {
    let system = System::start(&["prod", "staging"], 2, 3).await.unwrap();
    let body = json!({"cluster": "prod", "action": "apply", "manifests": sample_app(),
                      "pipeline": {"pipeline": "shop", "execution": "42", "stage": "deploy"}});
    let id = system
        .accept(0, &body, Some("shop-deploy-42"))
        .await
        .unwrap();
    let record = system.wait_terminal(&id, WAIT).await.unwrap();

    assert_eq!(record["state"], "succeeded", "{record}");
    let outcomes: Vec<&str> = record["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["created"; 4]);
    assert!(record["results"][2]["uid"].is_string());
    assert_eq!(record["pipeline"]["execution"], "42");

    let prod = system.cluster("prod");
    let deploy = prod
        .get("apps/v1", "Deployment", Some("shop"), "web")
        .expect("deployment applied");
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(
        deploy["metadata"]["annotations"][OPERATION_ID_ANNOTATION],
        id.as_str()
    );
    assert!(prod.get("v1", "Service", Some("shop"), "web").is_some());
    assert!(
        system
            .cluster("staging")
            .get("v1", "Namespace", None, "shop")
            .is_none(),
        "only the named cluster is touched"
    );
    assert_eq!(effects(&system, "prod", &id), 4);
    assert_eq!(
        system.queue_state().await.unwrap().0,
        0,
        "acknowledged work leaves the queue"
    );
}

#[tokio::test]
async fn a_duplicate_key_gives_one_message_and_one_effect() {
    let system = System::start(&["prod"], 2, 3).await.unwrap();
    let body = json!({"cluster": "prod", "action": "apply", "manifests": [configmap("dup", "1")]});
    let first = system.accept(0, &body, Some("dup-1")).await.unwrap();
    let second = system.accept(1, &body, Some("dup-1")).await.unwrap();
    assert_eq!(first, second);
    let record = system.wait_terminal(&first, WAIT).await.unwrap();
    assert_eq!(record["state"], "succeeded");
    // A retry after the operation finished is answered from the record, not re-run.
    let third = system.accept(1, &body, Some("dup-1")).await.unwrap();
    assert_eq!(third, first);

    let (pending, last_seq) = system.queue_state().await.unwrap();
    assert_eq!((pending, last_seq), (0, 1), "one message was ever queued");
    assert_eq!(effects(&system, "prod", &first), 1);
    assert_eq!(system.status(&first).await.unwrap()["attempts"], 1);
}

#[tokio::test]
async fn each_action_reports_what_it_did() {
    let system = System::start(&["prod"], 1, 1).await.unwrap();
    let run = |body: Value, key: &'static str| {
        let system = &system;
        async move {
            let id = system.accept(0, &body, Some(key)).await.unwrap();
            system.wait_terminal(&id, WAIT).await.unwrap()
        }
    };
    let cm = configmap("actions", "1");
    let target = json!([{"apiVersion": "v1", "kind": "ConfigMap", "namespace": "default", "name": "actions"}]);

    let r = run(
        json!({"cluster": "prod", "action": "create", "manifests": [cm]}),
        "create",
    )
    .await;
    assert_eq!(r["results"][0]["outcome"], "created", "{r}");

    let r = run(
        json!({"cluster": "prod", "action": "create", "manifests": [cm]}),
        "create-again",
    )
    .await;
    assert_eq!(
        r["state"], "failed",
        "another operation's create of an existing object fails: {r}"
    );
    assert_eq!(r["error"]["class"], "conflict");

    let r = run(
        json!({"cluster": "prod", "action": "patch", "targets": target,
                       "patch": {"type": "merge", "body": {"data": {"v": "2"}}}}),
        "patch",
    )
    .await;
    assert_eq!(r["results"][0]["outcome"], "configured", "{r}");
    let prod = system.cluster("prod");
    assert_eq!(
        prod.get("v1", "ConfigMap", Some("default"), "actions")
            .unwrap()["data"]["v"],
        "2"
    );

    let r = run(
        json!({"cluster": "prod", "action": "replace", "manifests": [configmap("actions", "3")]}),
        "replace",
    )
    .await;
    assert_eq!(r["results"][0]["outcome"], "configured", "{r}");
    assert_eq!(
        prod.get("v1", "ConfigMap", Some("default"), "actions")
            .unwrap()["data"]["v"],
        "3"
    );

    let r = run(
        json!({"cluster": "prod", "action": "apply", "manifests": [configmap("actions", "3")]}),
        "apply-same",
    )
    .await;
    assert_eq!(r["state"], "succeeded", "{r}");

    let r = run(
        json!({"cluster": "prod", "action": "delete", "targets": target}),
        "delete",
    )
    .await;
    assert_eq!(r["results"][0]["outcome"], "deleted", "{r}");
    assert!(
        prod.get("v1", "ConfigMap", Some("default"), "actions")
            .is_none()
    );

    let r = run(
        json!({"cluster": "prod", "action": "delete", "targets": target}),
        "delete-again",
    )
    .await;
    assert_eq!(
        (r["state"].as_str(), r["results"][0]["outcome"].as_str()),
        (Some("succeeded"), Some("not_found")),
        "{r}"
    );

    let r = run(
        json!({"cluster": "prod", "action": "patch", "targets": target,
                       "patch": {"type": "merge", "body": {"data": {"v": "4"}}}}),
        "patch-missing",
    )
    .await;
    assert_eq!(r["state"], "failed", "{r}");
    assert_eq!(r["error"]["class"], "not_found");
}

#[tokio::test]
async fn an_invalid_manifest_fails_at_once_with_the_api_servers_reason() {
    let system = System::start(&["prod"], 1, 1).await.unwrap();
    let body = json!({"cluster": "prod", "action": "apply", "manifests": [configmap("Not_A_Valid_Name", "1")]});
    let id = system.accept(0, &body, None).await.unwrap();
    let record = system.wait_terminal(&id, WAIT).await.unwrap();
    assert_eq!(record["state"], "failed", "{record}");
    assert_eq!(record["error"]["class"], "invalid");
    assert!(
        record["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Not_A_Valid_Name"),
        "{record}"
    );
    assert_eq!(record["attempts"], 1, "a permanent error is not retried");
}

#[tokio::test]
async fn an_invalid_deployment_fails_in_one_attempt_with_the_api_servers_field_cause() {
    let system = System::start(&["prod"], 1, 1).await.unwrap();
    let deployment = |replicas: serde_json::Value, port: u32| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                        "ports": [{"containerPort": port}]}]}}}})
    };
    // The two most common mistakes in manifests: a quoted number, a port out of range.
    for (key, manifest, cause) in [
        (
            "replicas-three",
            deployment(json!("three"), 8080),
            "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer",
        ),
        (
            "port-70000",
            deployment(json!(2), 70000),
            "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
    ] {
        let body = json!({"cluster": "prod", "action": "apply", "manifests": [manifest]});
        let id = system.accept(0, &body, Some(key)).await.unwrap();
        let record = system.wait_terminal(&id, WAIT).await.unwrap();
        assert_eq!(record["state"], "failed", "{record}");
        assert_eq!(record["error"]["class"], "invalid", "{record}");
        assert_eq!(record["attempts"], 1, "a permanent error is not retried");
        let message = record["error"]["message"].as_str().unwrap();
        assert!(message.contains(cause), "{message}");
    }
    assert!(
        system
            .cluster("prod")
            .get("apps/v1", "Deployment", Some("default"), "web")
            .is_none(),
        "nothing invalid was stored"
    );
}

#[tokio::test]
async fn transient_api_server_errors_are_retried_until_applied() {
    let system = System::start(&["prod"], 1, 1).await.unwrap();
    system.cluster("prod").set_faults(Faults {
        scope: FaultScope::Writes,
        errors: vec![
            ErrorFault {
                status: 503,
                retry_after_seconds: None,
                when: Trigger::next(2),
            },
            ErrorFault {
                status: 429,
                retry_after_seconds: Some(1),
                when: Trigger::next(1),
            },
        ],
        ..Default::default()
    });
    let body =
        json!({"cluster": "prod", "action": "apply", "manifests": [configmap("flaky", "1")]});
    let id = system.accept(0, &body, None).await.unwrap();
    let record = system.wait_terminal(&id, WAIT).await.unwrap();
    assert_eq!(record["state"], "succeeded", "{record}");
    assert!(
        record["attempts"].as_u64().unwrap() >= 2,
        "it took retries: {record}"
    );
    let faulted = system
        .cluster("prod")
        .writes()
        .iter()
        .filter(|w| w.fault.is_some())
        .count();
    assert_eq!(faulted, 3, "each injected fault was hit once");
    assert_eq!(effects(&system, "prod", &id), 1);
}
