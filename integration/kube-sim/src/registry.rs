//! The kinds a cluster serves: the seeded built-ins plus whatever CustomResourceDefinitions
//! have registered.

use std::sync::{Arc, LazyLock};

use serde_json::Value;

/// Where a kind keeps its replica counts, for the `/scale` subresource.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

impl ScalePaths {
    fn standard() -> Self {
        ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: Some(".spec.selector".into()),
        }
    }
}

/// One resource (a REST collection) and its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    pub group: String,
    /// Served versions; the first is the storage and preferred version.
    pub versions: Vec<String>,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource (main-resource writes then leave `.status` alone).
    pub status: bool,
    pub scale: Option<ScalePaths>,
    /// Name of the CustomResourceDefinition that registered it.
    pub crd: Option<String>,
}

impl ResourceType {
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    pub fn storage_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        let mut v = vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        if self.plural == "namespaces" {
            v.retain(|x| *x != "deletecollection");
        }
        v
    }

    pub fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.plural == "namespaces"
    }

    pub fn is_crd(&self) -> bool {
        self.group == "apiextensions.k8s.io" && self.plural == "customresourcedefinitions"
    }

    /// Whether `name` (a kind, plural, singular or short name, any case) denotes this type.
    pub fn answers_to(&self, name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        self.kind.to_ascii_lowercase() == n
            || self.plural == n
            || self.singular == n
            || self.short_names.contains(&n)
    }
}

struct Builtin {
    group: &'static str,
    /// Served versions; the first is the storage and preferred version.
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    scale: bool,
    all: bool,
}

// A table row; positional arguments keep the table below readable.
#[allow(clippy::too_many_arguments)]
const fn b(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    scale: bool,
    all: bool,
) -> Builtin {
    Builtin {
        group,
        versions: &["v1"],
        kind,
        plural,
        namespaced,
        short,
        status,
        scale,
        all,
    }
}

impl Builtin {
    /// The same row served at other versions than `v1`.
    const fn at(self, versions: &'static [&'static str]) -> Builtin {
        Builtin { versions, ..self }
    }
}

const BUILTINS: &[Builtin] = &[
    b(
        "",
        "Namespace",
        "namespaces",
        false,
        &["ns"],
        true,
        false,
        false,
    ),
    b(
        "",
        "ConfigMap",
        "configmaps",
        true,
        &["cm"],
        false,
        false,
        false,
    ),
    b("", "Secret", "secrets", true, &[], false, false, false),
    b("", "Service", "services", true, &["svc"], true, false, true),
    b(
        "",
        "ServiceAccount",
        "serviceaccounts",
        true,
        &["sa"],
        false,
        false,
        false,
    ),
    b("", "Pod", "pods", true, &["po"], true, false, true),
    b("", "Event", "events", true, &["ev"], false, false, false),
    b(
        "apps",
        "Deployment",
        "deployments",
        true,
        &["deploy"],
        true,
        true,
        true,
    ),
    b(
        "apps",
        "StatefulSet",
        "statefulsets",
        true,
        &["sts"],
        true,
        true,
        true,
    ),
    b(
        "apps",
        "DaemonSet",
        "daemonsets",
        true,
        &["ds"],
        true,
        false,
        true,
    ),
    b(
        "apps",
        "ReplicaSet",
        "replicasets",
        true,
        &["rs"],
        true,
        true,
        true,
    ),
    b("batch", "Job", "jobs", true, &[], true, false, true),
    b(
        "batch",
        "CronJob",
        "cronjobs",
        true,
        &["cj"],
        true,
        false,
        true,
    ),
    b(
        "rbac.authorization.k8s.io",
        "Role",
        "roles",
        true,
        &[],
        false,
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
        false,
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
        false,
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
        false,
        false,
        false,
    ),
    b(
        "networking.k8s.io",
        "Ingress",
        "ingresses",
        true,
        &["ing"],
        true,
        false,
        false,
    ),
    b(
        "policy",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        &["pdb"],
        true,
        false,
        false,
    ),
    b(
        "autoscaling",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
        &["hpa"],
        true,
        false,
        true,
    )
    .at(&["v2"]),
    b(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        true,
        false,
        false,
    ),
];

/// The kinds one cluster serves.
#[derive(Debug, Clone)]
pub struct Registry {
    types: Vec<Arc<ResourceType>>,
}

/// The built-in kinds, made once and shared by every cluster (only CRDs differ per cluster).
static BUILTIN_TYPES: LazyLock<Vec<Arc<ResourceType>>> = LazyLock::new(|| {
    BUILTINS
        .iter()
        .map(|t| {
            Arc::new(ResourceType {
                group: t.group.into(),
                versions: t.versions.iter().map(|v| v.to_string()).collect(),
                kind: t.kind.into(),
                plural: t.plural.into(),
                singular: t.kind.to_ascii_lowercase(),
                namespaced: t.namespaced,
                short_names: t.short.iter().map(|s| s.to_string()).collect(),
                categories: if t.all { vec!["all".into()] } else { vec![] },
                status: t.status,
                scale: t.scale.then(ScalePaths::standard),
                crd: None,
            })
        })
        .collect()
});

impl Registry {
    pub fn builtin() -> Self {
        Registry {
            types: BUILTIN_TYPES.clone(),
        }
    }

    /// The type served at `/apis/{group}/{version}/{plural}`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| {
                t.group == group && t.plural == plural && t.versions.iter().any(|v| v == version)
            })
            .cloned()
    }

    /// The type for an apiVersion and a kind (or plural, singular, short name).
    pub fn find_kind(&self, api_version: &str, name: &str) -> Option<Arc<ResourceType>> {
        let (group, version) = split_api_version(api_version);
        self.types
            .iter()
            .find(|t| {
                t.group == group && t.versions.iter().any(|v| v == version) && t.answers_to(name)
            })
            .cloned()
    }

    /// Groups in discovery order (core first), each with its versions.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in &self.types {
            match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, versions)) => {
                    for v in &t.versions {
                        if !versions.contains(v) {
                            versions.push(v.clone());
                        }
                    }
                }
                None => out.push((t.group.clone(), t.versions.clone())),
            }
        }
        out
    }

    pub fn resources_in(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.types
            .iter()
            .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
            .cloned()
            .collect()
    }

    /// Registers (or re-registers) the kind a CRD defines.
    pub fn register_crd(&mut self, crd: &Value) -> Result<(), String> {
        let t = crd_resource_type(crd)?;
        let name = t.crd.clone();
        self.types.retain(|x| x.crd != name);
        if self
            .types
            .iter()
            .any(|x| x.group == t.group && x.plural == t.plural)
        {
            return Err(format!(
                "resource {}.{} is already served",
                t.plural, t.group
            ));
        }
        self.types.push(Arc::new(t));
        Ok(())
    }

    /// Forgets the kind a CRD defined; returns it so its objects can be removed.
    pub fn unregister_crd(&mut self, crd_name: &str) -> Option<Arc<ResourceType>> {
        let pos = self
            .types
            .iter()
            .position(|t| t.crd.as_deref() == Some(crd_name))?;
        Some(self.types.remove(pos))
    }
}

pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
}

/// Reads a CustomResourceDefinition into the type it defines, checking what a real server
/// checks before accepting one (names, scope, versions, `metadata.name == plural.group`).
pub fn crd_resource_type(crd: &Value) -> Result<ResourceType, String> {
    let group = str_at(crd, &["spec", "group"]).ok_or("spec.group: Required value")?;
    let plural =
        str_at(crd, &["spec", "names", "plural"]).ok_or("spec.names.plural: Required value")?;
    let kind = str_at(crd, &["spec", "names", "kind"]).ok_or("spec.names.kind: Required value")?;
    let scope = str_at(crd, &["spec", "scope"]).ok_or("spec.scope: Required value")?;
    let name = str_at(crd, &["metadata", "name"]).unwrap_or_default();
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let namespaced = match scope {
        "Namespaced" => true,
        "Cluster" => false,
        other => return Err(format!("spec.scope: Unsupported value: \"{other}\"")),
    };
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or("spec.versions: Required value")?;
    let mut served: Vec<(bool, String)> = Vec::new();
    let mut status = false;
    let mut scale = None;
    for v in versions {
        let vname = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or("spec.versions[].name: Required value")?;
        if v.get("served").and_then(Value::as_bool).unwrap_or(true) {
            let storage = v.get("storage").and_then(Value::as_bool).unwrap_or(false);
            served.push((storage, vname.to_string()));
        }
        if let Some(sub) = v.get("subresources") {
            status |= sub.get("status").is_some();
            if let Some(sc) = sub.get("scale") {
                scale = Some(ScalePaths {
                    spec_replicas: str_at(sc, &["specReplicasPath"])
                        .unwrap_or(".spec.replicas")
                        .into(),
                    status_replicas: str_at(sc, &["statusReplicasPath"])
                        .unwrap_or(".status.replicas")
                        .into(),
                    label_selector: str_at(sc, &["labelSelectorPath"]).map(String::from),
                });
            }
        }
    }
    // Storage version first, so it is the preferred one.
    served.sort_by_key(|(storage, _)| !*storage);
    let short_names = crd
        .pointer("/spec/names/shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let categories = crd
        .pointer("/spec/names/categories")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(ResourceType {
        group: group.into(),
        versions: served.into_iter().map(|(_, v)| v).collect(),
        kind: kind.into(),
        plural: plural.into(),
        singular: str_at(crd, &["spec", "names", "singular"])
            .map(String::from)
            .unwrap_or_else(|| kind.to_ascii_lowercase()),
        namespaced,
        short_names,
        categories,
        status,
        scale,
        crd: Some(name.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn widget_crd() -> Value {
        json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false},
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}}
                ]
            }
        })
    }

    #[test]
    fn builtins_have_short_names_and_scope() {
        let r = Registry::builtin();
        let d = r.find_kind("apps/v1", "deploy").unwrap();
        assert_eq!(d.plural, "deployments");
        assert!(d.namespaced && d.status && d.scale.is_some());
        assert!(!r.find("", "v1", "namespaces").unwrap().namespaced);
    }

    #[test]
    fn policy_and_autoscaling_kinds_are_built_in() {
        let r = Registry::builtin();
        let pdb = r.find_kind("policy/v1", "pdb").unwrap();
        assert_eq!(
            (pdb.kind.as_str(), pdb.plural.as_str()),
            ("PodDisruptionBudget", "poddisruptionbudgets")
        );
        assert!(pdb.namespaced && pdb.status && pdb.scale.is_none());
        let hpa = r
            .find("autoscaling", "v2", "horizontalpodautoscalers")
            .unwrap();
        assert_eq!(hpa.kind, "HorizontalPodAutoscaler");
        assert!(hpa.namespaced && hpa.status && hpa.short_names == ["hpa"]);
        assert_eq!(hpa.categories, ["all"]);
        // Only v2: v1's schema differs and kube-sim converts nothing.
        assert!(r.find_kind("autoscaling/v1", "hpa").is_none());
        let groups = r.groups();
        assert!(groups.contains(&("policy".into(), vec!["v1".into()])));
        assert!(groups.contains(&("autoscaling".into(), vec!["v2".into()])));
    }

    #[test]
    fn crd_registers_all_served_versions_and_unregisters() {
        let mut r = Registry::builtin();
        r.register_crd(&widget_crd()).unwrap();
        let t = r.find("example.com", "v1beta1", "widgets").unwrap();
        assert_eq!(t.storage_version(), "v1");
        assert!(t.status);
        assert!(r.find_kind("example.com/v1", "wd").is_some());
        assert!(r.unregister_crd("widgets.example.com").is_some());
        assert!(r.find("example.com", "v1", "widgets").is_none());
    }

    #[test]
    fn crd_name_must_match_plural_and_group() {
        let mut crd = widget_crd();
        crd["metadata"]["name"] = json!("gadgets.example.com");
        assert!(
            crd_resource_type(&crd)
                .unwrap_err()
                .contains("metadata.name")
        );
    }
}
