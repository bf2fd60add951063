//! A CustomResourceDefinition and its custom resources in one operation, against an API
//! server that establishes CRDs late (kube-sim's `crd_establish_delay`): the worker waits
//! for the CRD to be Established and its kind served, saying so in the record's progress,
//! and fails with the CRD's condition when that takes longer than
//! `clusters.crd_established_timeout`.

use std::time::Duration;

use longshore_integration::{sse::Sse, system::System, worker::Worker};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

fn widget(name: &str) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": name, "namespace": "default"}, "spec": {"size": 3}})
}

/// A system whose one worker waits up to `timeout` for CRDs, over a cluster `prod` that
/// establishes them after `delay`.
async fn system(delay: Duration, timeout: Duration) -> System {
    let mut system = System::start(&["prod"], 1, 0).await.unwrap();
    system.cluster("prod").set_crd_establish_delay(delay);
    let mut config = Worker::config(&system.nats.url(), system.kubeconfig.path(), "worker-0");
    config.clusters.crd_established_timeout = timeout;
    system.workers.push(Worker::start_with(config));
    system
}

/// Submits `body` and follows the operation's events to its end: every record it went
/// through, the last one terminal.
async fn follow(system: &System, body: &Value, key: &str) -> Vec<Value> {
    let id = system.accept(0, body, Some(key)).await.unwrap();
    let resp = reqwest::get(format!(
        "{}/v1/operations/{id}/events",
        system.dispatchers[0].url
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = Sse::new(resp);
    let mut seen = Vec::new();
    loop {
        let message = events.next().await;
        let Some(data) = message.data else { continue };
        let record: Value = serde_json::from_str(&data).unwrap();
        let state = record["state"].as_str().unwrap_or_default().to_owned();
        seen.push(record);
        if matches!(state.as_str(), "succeeded" | "failed" | "dead_lettered") {
            return seen;
        }
    }
}

#[tokio::test]
async fn custom_resources_wait_for_their_crd_to_be_established() {
    let system = system(Duration::from_millis(1500), WAIT).await;
    let body = json!({"cluster": "prod", "action": "apply",
        "manifests": [widget("a"), crd(), widget("b")]});
    let seen = follow(&system, &body, "crd-late").await;
    let last = seen.last().unwrap();
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["attempts"], 1, "waited rather than retried: {last}");
    let waiting = seen.iter().find_map(|r| r["progress"].as_str());
    assert!(
        waiting.is_some_and(|p| p.contains(
            "waiting for CustomResourceDefinition widgets.example.com to be Established"
        )),
        "progress while waiting: {waiting:?}"
    );
    let kinds: Vec<&str> = last["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["CustomResourceDefinition", "Widget", "Widget"]);
    let prod = system.cluster("prod");
    for name in ["a", "b"] {
        assert!(
            prod.get("example.com/v1", "Widget", Some("default"), name)
                .is_some(),
            "widget {name} applied"
        );
    }
}

#[tokio::test]
async fn a_crd_established_later_than_the_bound_fails_the_operation_with_its_condition() {
    let system = system(Duration::from_secs(120), Duration::from_secs(1)).await;
    let body = json!({"cluster": "prod", "action": "apply", "manifests": [crd(), widget("a")]});
    let seen = follow(&system, &body, "crd-too-late").await;
    let last = seen.last().unwrap();
    assert_eq!(last["state"], "failed", "{last}");
    assert_eq!(last["error"]["class"], "timeout", "{last}");
    assert_eq!(last["attempts"], 1, "{last}");
    let message = last["error"]["message"].as_str().unwrap();
    assert!(
        message
            .contains("CustomResourceDefinition widgets.example.com was not Established within 1s")
            && message.contains("Established: False (Installing"),
        "{message}"
    );
    // The CRD is in; its custom resource was not attempted.
    let prod = system.cluster("prod");
    assert!(
        prod.get(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            "widgets.example.com"
        )
        .is_some()
    );
    let results = last["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{last}");
}
