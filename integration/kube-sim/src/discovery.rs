//! Discovery documents: legacy (`/api`, `/apis`, `/apis/{g}/{v}`) and aggregated
//! (`apidiscovery.k8s.io/v2`, chosen by the `Accept` header as kubectl 1.30+ and
//! `Discovery::run_aggregated` ask for it).

use serde_json::{Value, json};

use crate::registry::{Registry, ResourceType};

pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the client asked for aggregated discovery v2.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p = part.replace(' ', "");
        p.contains("g=apidiscovery.k8s.io") && p.contains("v=v2;")
            || p.ends_with("v=v2") && p.contains("as=APIGroupDiscoveryList")
    })
}

pub fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-kube-sim",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.0", "compiler": "gc", "platform": "linux/amd64",
    })
}

pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": gvs, "preferredVersion": gvs.first().cloned().unwrap_or(Value::Null)})
}

pub fn groups(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    let (g, vs) = reg
        .groups()
        .into_iter()
        .find(|(g, _)| g == name && !g.is_empty())?;
    let mut doc = group_doc(&g, &vs);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

fn subresource_verbs() -> Value {
    json!(["get", "patch", "update"])
}

/// `APIResourceList` for one group version, with `/status` and `/scale` listed.
pub fn resources(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = reg.resources_in(group, version);
    if types.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for t in &types {
        list.push(json!({
            "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced, "kind": t.kind,
            "verbs": t.verbs(), "shortNames": t.short_names, "categories": t.categories,
        }));
        if t.status {
            list.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                "kind": t.kind, "verbs": subresource_verbs()}));
        }
        if t.scale.is_some() {
            list.push(json!({"name": format!("{}/scale", t.plural), "singularName": "", "namespaced": t.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": subresource_verbs()}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

fn aggregated_resource(t: &ResourceType, version: &str) -> Value {
    let mut subs = Vec::new();
    if t.status {
        subs.push(json!({"subresource": "status", "responseKind": {"group": t.group, "version": version, "kind": t.kind},
            "verbs": subresource_verbs()}));
    }
    if t.scale.is_some() {
        subs.push(json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "verbs": subresource_verbs()}));
    }
    json!({
        "resource": t.plural,
        "responseKind": {"group": t.group, "version": version, "kind": t.kind},
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular,
        "verbs": t.verbs(),
        "shortNames": t.short_names,
        "categories": t.categories,
        "subresources": subs,
    })
}

/// `APIGroupDiscoveryList` for the core group (`core == true`, `/api`) or all others (`/apis`).
pub fn aggregated(reg: &Registry, core: bool) -> Value {
    let items: Vec<Value> = reg
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = reg
                        .resources_in(&g, v)
                        .iter()
                        .map(|t| aggregated_resource(t, v))
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let metadata = if g.is_empty() {
                json!({"creationTimestamp": null})
            } else {
                json!({"name": g, "creationTimestamp": null})
            };
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_detection() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(wants_aggregated(AGGREGATED_CONTENT_TYPE));
        assert!(!wants_aggregated("application/json, */*"));
    }

    #[test]
    fn scale_subresource_is_autoscaling_v1() {
        let reg = Registry::builtin();
        let doc = resources(&reg, "apps", "v1").unwrap();
        let scale = doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        let agg = aggregated(&reg, false);
        let apps = agg["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = &apps["versions"][0]["resources"].as_array().unwrap()[0];
        assert_eq!(deploy["shortNames"][0], "deploy");
    }

    #[test]
    fn pdb_and_hpa_are_discoverable_with_their_short_names() {
        let reg = Registry::builtin();
        let g = group(&reg, "autoscaling").unwrap();
        assert_eq!(g["preferredVersion"]["groupVersion"], "autoscaling/v2");
        let listed = groups(&reg).to_string();
        assert!(listed.contains("policy/v1") && listed.contains("autoscaling/v2"));
        for (grp, version, plural, short) in [
            ("policy", "v1", "poddisruptionbudgets", "pdb"),
            ("autoscaling", "v2", "horizontalpodautoscalers", "hpa"),
        ] {
            let doc = resources(&reg, grp, version).unwrap();
            let r = doc["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == plural)
                .unwrap_or_else(|| panic!("{plural} in {grp}/{version}"));
            assert_eq!(r["namespaced"], true);
            assert_eq!(r["shortNames"][0], short);
            let agg = aggregated(&reg, false).to_string();
            assert!(agg.contains(plural), "{plural} in aggregated discovery");
        }
    }
}
