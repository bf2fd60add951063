//! Kubeconfigs: for a fleet, one cluster, one user and one context per simulated cluster,
//! all three named after it. A cluster's user holds its bearer token, or a dummy token when
//! the cluster requires none (so clients send the same header either way).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::cluster::Cluster;

/// The token written for a cluster that accepts any.
const ANY_TOKEN: &str = "kube-sim";

/// A kubeconfig for `clusters`, whose current context is the first.
pub fn build(clusters: &[Arc<Cluster>]) -> Value {
    let entries: Vec<Value> = clusters
        .iter()
        .map(|c| json!({"name": c.name, "cluster": {"server": c.server_url()}}))
        .collect();
    let users: Vec<Value> = clusters
        .iter()
        .map(|c| {
            let token = c.credentials.token();
            json!({"name": c.name, "user": {"token": token.as_deref().unwrap_or(ANY_TOKEN)}})
        })
        .collect();
    let contexts: Vec<Value> = clusters
        .iter()
        .map(|c| json!({"name": c.name, "context": {"cluster": c.name, "user": c.name, "namespace": "default"}}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": entries,
        "contexts": contexts,
        "current-context": clusters.first().map(|c| c.name.clone()).unwrap_or_default(),
        "users": users,
    })
}

/// YAML rendering (JSON is valid YAML too, but people read these files).
pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|_| v.to_string())
}
