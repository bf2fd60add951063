//! Fault injection as kube 5 sees it: resets after commit, 429 with Retry-After, 5xx for the
//! next N requests, latency, unavailability, and the admin endpoint changing faults at runtime.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{client, client_without_retries, http, start, status};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use longshore_kube_sim::{ErrorFault, FaultScope, Faults, Latency, Trigger};
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c.metadata.annotations = Some(BTreeMap::from([(
        "longshore.dev/operation".to_string(),
        "op-7".to_string(),
    )]));
    c
}

#[tokio::test]
async fn reset_after_commit_applies_the_write_but_the_client_sees_an_error() {
    let sim = start(&["prod"]).await;
    let prod = sim.cluster("prod").unwrap();
    prod.set_faults(Faults {
        reset_after_commit: Some(Trigger::next(1)),
        ..Faults::default()
    });
    let cms: Api<ConfigMap> = Api::namespaced(client(&sim, "prod").await, "default");
    let err = cms
        .create(&PostParams::default(), &cm("a"))
        .await
        .unwrap_err();
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "a connection error, not a Status: {err:?}"
    );
    assert!(
        prod.get("v1", "ConfigMap", Some("default"), "a").is_some(),
        "the write was committed"
    );
    let w = prod.writes();
    assert_eq!(w.len(), 1);
    assert!(w[0].changed);
    assert_eq!(w[0].fault.as_deref(), Some("reset_after_commit"));
    assert_eq!(w[0].annotations["longshore.dev/operation"], "op-7");
    // The trigger is spent: the next request is answered normally.
    assert_eq!(
        cms.get("a").await.unwrap().metadata.name.as_deref(),
        Some("a")
    );
}

#[tokio::test]
async fn reset_before_write_changes_nothing() {
    let sim = start(&["prod"]).await;
    let prod = sim.cluster("prod").unwrap();
    prod.set_faults(Faults {
        reset_before_write: Some(Trigger::next(1)),
        ..Faults::default()
    });
    let cms: Api<ConfigMap> = Api::namespaced(client(&sim, "prod").await, "default");
    assert!(!matches!(
        cms.create(&PostParams::default(), &cm("a"))
            .await
            .unwrap_err(),
        kube::Error::Api(_)
    ));
    assert!(prod.get("v1", "ConfigMap", Some("default"), "a").is_none());
    assert_eq!(
        prod.writes()[0].fault.as_deref(),
        Some("reset_before_write")
    );
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let sim = start(&["prod"]).await;
    sim.cluster("prod").unwrap().set_faults(Faults {
        errors: vec![ErrorFault {
            status: 429,
            retry_after_seconds: Some(3),
            when: Trigger::next(1),
        }],
        ..Faults::default()
    });
    let (code, head, body) = http(
        &sim,
        "GET",
        "/clusters/prod/api/v1/namespaces/default/configmaps",
        "",
    )
    .await;
    assert_eq!(code, 429);
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 3"),
        "{head}"
    );
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("TooManyRequests"))
    );
    assert_eq!(status["details"]["retryAfterSeconds"], 3);
}

#[tokio::test]
async fn server_errors_for_the_next_n_writes_then_success() {
    let sim = start(&["prod"]).await;
    let prod = sim.cluster("prod").unwrap();
    prod.set_faults(Faults {
        scope: FaultScope::Writes,
        errors: vec![ErrorFault {
            status: 503,
            retry_after_seconds: None,
            when: Trigger::next(2),
        }],
        ..Faults::default()
    });
    let cms: Api<ConfigMap> =
        Api::namespaced(client_without_retries(&sim, "prod").await, "default");
    assert!(
        cms.get("x").await.is_err_and(|e| status(e).code == 404),
        "reads are not faulted"
    );
    for _ in 0..2 {
        let s = status(
            cms.create(&PostParams::default(), &cm("a"))
                .await
                .unwrap_err(),
        );
        assert_eq!((s.code, s.reason.as_str()), (503, "ServiceUnavailable"));
    }
    cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let codes: Vec<u16> = prod.writes().iter().map(|w| w.code).collect();
    assert_eq!(codes, [503, 503, 201]);

    // kube 5's default client retries 503 by itself: the caller only sees the success.
    prod.clear_writes();
    prod.set_faults(Faults {
        errors: vec![ErrorFault {
            status: 503,
            retry_after_seconds: None,
            when: Trigger::next(2),
        }],
        ..Faults::default()
    });
    let retrying: Api<ConfigMap> = Api::namespaced(client(&sim, "prod").await, "default");
    retrying
        .create(&PostParams::default(), &cm("b"))
        .await
        .unwrap();
    let codes: Vec<u16> = prod.writes().iter().map(|w| w.code).collect();
    assert_eq!(codes, [503, 503, 201]);
}

#[tokio::test]
async fn latency_is_added() {
    let sim = start(&["prod"]).await;
    sim.cluster("prod").unwrap().set_faults(Faults {
        latency: Some(Latency {
            min_ms: 150,
            max_ms: Some(200),
        }),
        ..Faults::default()
    });
    let cms: Api<ConfigMap> = Api::namespaced(client(&sim, "prod").await, "default");
    let t = Instant::now();
    cms.list(&Default::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn admin_endpoint_changes_faults_at_runtime_and_serves_the_write_log() {
    let sim = start(&["prod", "staging"]).await;
    let body = json!({"unavailable": true}).to_string();
    let (code, _, _) = http(&sim, "PUT", "/_sim/clusters/prod/faults", &body).await;
    assert_eq!(code, 200);
    let prod: Api<ConfigMap> = Api::namespaced(client(&sim, "prod").await, "default");
    let staging: Api<ConfigMap> = Api::namespaced(client(&sim, "staging").await, "default");
    assert!(!matches!(
        prod.list(&Default::default()).await.unwrap_err(),
        kube::Error::Api(_)
    ));
    staging
        .list(&Default::default())
        .await
        .expect("other clusters are unaffected");

    let (code, _, faults) = http(&sim, "GET", "/_sim/clusters/prod/faults", "").await;
    assert_eq!(
        (
            code,
            serde_json::from_str::<serde_json::Value>(&faults).unwrap()["unavailable"].as_bool()
        ),
        (200, Some(true))
    );
    let (code, _, _) = http(
        &sim,
        "PUT",
        "/_sim/clusters/prod/faults",
        r#"{"errors":[{"status":42}]}"#,
    )
    .await;
    assert_eq!(code, 422, "invalid faults are refused");
    let (code, _, _) = http(&sim, "DELETE", "/_sim/clusters/prod/faults", "").await;
    assert_eq!(code, 200);
    prod.patch(
        "a",
        &PatchParams::apply("ci"),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}})),
    )
    .await
    .unwrap();
    let (code, _, log) = http(&sim, "GET", "/_sim/clusters/prod/writes", "").await;
    let log: serde_json::Value = serde_json::from_str(&log).unwrap();
    assert_eq!(code, 200);
    assert_eq!(log[0]["verb"], "apply");
    assert_eq!(log[0]["field_manager"], "ci");
}
