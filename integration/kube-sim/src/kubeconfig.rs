//! The kubeconfig: one cluster, one context (named after the cluster) per simulated cluster,
//! all sharing a user with a dummy bearer token (any token is accepted).

use serde_json::{Value, json};

pub const USER: &str = "kube-sim";

pub fn build(base_url: &str, clusters: &[String]) -> Value {
    let cluster_entries: Vec<Value> = clusters
        .iter()
        .map(|c| json!({"name": c, "cluster": {"server": format!("{base_url}/clusters/{c}")}}))
        .collect();
    let contexts: Vec<Value> = clusters
        .iter()
        .map(
            |c| json!({"name": c, "context": {"cluster": c, "user": USER, "namespace": "default"}}),
        )
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": cluster_entries,
        "contexts": contexts,
        "current-context": clusters.first().cloned().unwrap_or_default(),
        "users": [{"name": USER, "user": {"token": "kube-sim"}}],
    })
}

/// YAML rendering (JSON is valid YAML too, but people read these files).
pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|_| v.to_string())
}
