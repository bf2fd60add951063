//! Clusters added and removed while the simulator runs, in-process and through `/_sim`.

mod common;

use common::{WAIT, client, http, start};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchParams};
use longshore_kube_sim::Error;
use serde_json::Value;

fn cm(name: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c
}

#[tokio::test]
async fn a_cluster_added_at_runtime_serves_objects() {
    let sim = start(&["prod"]).await;
    let edge = sim.add_cluster("edge-1").expect("added");
    assert_eq!(sim.cluster_names(), ["edge-1", "prod"]);

    // The kubeconfig built from now on has its context.
    let cms: Api<ConfigMap> = Api::namespaced(client(&sim, "edge-1").await, "default");
    cms.create(&PostParams::default(), &cm("hello"))
        .await
        .expect("created in the new cluster");
    assert!(cms.get("hello").await.is_ok());
    assert!(
        edge.get("v1", "ConfigMap", Some("default"), "hello")
            .is_some()
    );
    let prod = sim.cluster("prod").unwrap();
    assert!(
        prod.get("v1", "ConfigMap", Some("default"), "hello")
            .is_none()
    );
}

#[tokio::test]
async fn adding_checks_the_name() {
    let sim = start(&["prod"]).await;
    for bad in ["", "Prod", "-x", "x-", "a.b", &"a".repeat(64)] {
        let err = sim.add_cluster(bad).expect_err(bad);
        assert!(matches!(err, Error::InvalidName(_)), "{bad:?}: {err}");
        assert!(err.to_string().contains("DNS label"), "{err}");
    }
    let err = sim.add_cluster("prod").expect_err("exists");
    assert!(matches!(err, Error::ClusterExists(_)), "{err}");
    assert!(matches!(
        sim.remove_cluster("nope"),
        Err(Error::NoSuchCluster(_))
    ));
}

#[tokio::test]
async fn a_removed_cluster_is_gone() {
    let sim = start(&["prod", "staging"]).await;
    let staging = client(&sim, "staging").await;
    let cms: Api<ConfigMap> = Api::namespaced(staging, "default");
    cms.create(&PostParams::default(), &cm("left-behind"))
        .await
        .unwrap();
    let mut watch = Box::pin(
        cms.watch(&WatchParams::default(), "0")
            .await
            .expect("watch starts"),
    );
    // The initial ADDED, so the watch is surely running before the removal.
    tokio::time::timeout(WAIT, watch.try_next())
        .await
        .expect("initial event")
        .unwrap();

    let removed = sim.remove_cluster("staging").expect("removed");
    assert_eq!(sim.cluster_names(), ["prod"]);
    assert!(sim.cluster("staging").is_none());

    // The open watch ends, as when the server goes away.
    let end = tokio::time::timeout(WAIT, watch.try_next())
        .await
        .expect("the watch ends");
    assert!(matches!(end, Ok(None)), "{end:?}");

    // Every request is 404 with a Status naming the cluster: discovery too.
    let err = cms.get("left-behind").await.expect_err("gone");
    let status = common::status(err);
    assert_eq!(status.code, 404);
    assert_eq!(status.reason, "NotFound");
    assert_eq!(status.details.map(|d| d.kind).as_deref(), Some("clusters"));
    let (code, _, body) = http(&sim, "GET", "/clusters/staging/api", "").await;
    assert_eq!(code, 404);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["details"]["name"], "staging");

    // The handle still shows what was there; a cluster added again under the name is new.
    assert!(
        removed
            .get("v1", "ConfigMap", Some("default"), "left-behind")
            .is_some()
    );
    let again = sim.add_cluster("staging").unwrap();
    assert!(
        again
            .get("v1", "ConfigMap", Some("default"), "left-behind")
            .is_none()
    );
    // Now the cluster answers, and it is the object that is not found.
    let status = common::status(cms.get("left-behind").await.expect_err("new cluster"));
    assert_eq!(status.code, 404);
    assert_eq!(
        status.details.map(|d| d.kind).as_deref(),
        Some("configmaps")
    );
}

#[tokio::test]
async fn admin_endpoints_add_and_remove() {
    let sim = start(&["prod"]).await;
    let (code, _, body) = http(&sim, "PUT", "/_sim/clusters/edge", "").await;
    assert_eq!(code, 201, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["server"], sim.server_url("edge"));
    let (code, _, _) = http(&sim, "PUT", "/_sim/clusters/edge", "").await;
    assert_eq!(code, 200, "adding an existing cluster changes nothing");
    let (code, _, _) = http(&sim, "GET", "/clusters/edge/api/v1/namespaces/default", "").await;
    assert_eq!(code, 200);

    let (code, _, body) = http(&sim, "PUT", "/_sim/clusters/Edge_2", "").await;
    assert_eq!(code, 422);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["reason"], "Invalid");
    assert!(
        body["message"].as_str().unwrap().contains("DNS label"),
        "{body}"
    );

    let (code, _, _) = http(&sim, "DELETE", "/_sim/clusters/edge", "").await;
    assert_eq!(code, 200);
    let (code, _, _) = http(&sim, "GET", "/clusters/edge/api/v1/namespaces/default", "").await;
    assert_eq!(code, 404);
    let (code, _, body) = http(&sim, "DELETE", "/_sim/clusters/edge", "").await;
    assert_eq!(code, 404, "{body}");
}
