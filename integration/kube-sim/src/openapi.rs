//! A minimal OpenAPI v3 index: just enough for kubectl to learn that every kind supports
//! server-side field validation (the `fieldValidation` query parameter on PATCH), so it lets
//! the server validate instead of downloading full schemas. No object schemas are served.

use serde_json::{Map, Value, json};

use crate::registry::Registry;

/// `/openapi/v3`: one entry per group version, with URLs under the cluster's path prefix.
pub fn root(reg: &Registry, prefix: &str) -> Value {
    let mut paths = Map::new();
    for (group, versions) in reg.groups() {
        for v in versions {
            let gv = gv_path(&group, &v);
            paths.insert(
                gv.clone(),
                json!({"serverRelativeURL": format!("{prefix}/openapi/v3/{gv}?hash=kube-sim")}),
            );
        }
    }
    json!({"paths": paths})
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3/{api/v1 | apis/g/v}`: a PATCH operation per kind, declaring `fieldValidation`.
pub fn group_version(reg: &Registry, gv: &str) -> Option<Value> {
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    let types = reg.resources_in(&group, &version);
    if types.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for t in types {
        let ns = if t.namespaced {
            "namespaces/{namespace}/"
        } else {
            ""
        };
        let path = format!("/{}/{ns}{}/{{name}}", gv_path(&group, &version), t.plural);
        paths.insert(
            path,
            json!({"patch": {
                "x-kubernetes-group-version-kind": {"group": t.group, "version": version, "kind": t.kind},
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                ],
                "responses": {"200": {"description": "OK"}},
            }}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
