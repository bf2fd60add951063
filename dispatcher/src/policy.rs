//! What a token or webhook source may do: which clusters, namespaces, kinds and actions.
//! An empty list allows everything of its sort. Checked after the request is parsed, so a
//! refusal names the exact field, e.g.
//! `manifests[2].metadata.namespace "kube-system" is not allowed for token "ci"`.

use longshore_contract::{Action, OperationSpec, settings::ConfigError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// A policy as configured. Clusters, namespaces and kinds are globs (`*` any run of
/// characters, `?` one character).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Clusters the caller may operate on, and read in the registry.
    pub clusters: Vec<String>,
    /// Namespaces objects may be in. When set, cluster-scoped objects and objects without
    /// `metadata.namespace` are refused, except `Namespace` objects whose name matches.
    pub namespaces: Vec<String>,
    pub kinds: Vec<String>,
    pub actions: Vec<Action>,
    /// May register, relabel, move and remove clusters (those its `clusters` allow) in the
    /// registry. Off by default: an ordinary pipeline token only reads them.
    pub manage_clusters: bool,
    /// The controls of fleet rollouts it may use (`pause`, `resume`, `approve`,
    /// `cancel`, `retry-failed`), on rollouts whose every cluster its `clusters` allow. None by default:
    /// submitting a rollout needs only what its operations need.
    pub rollout_controls: Vec<longshore_contract::rollout::state::ControlAction>,
}

impl PolicyConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        for (field, globs) in [
            ("clusters", &self.clusters),
            ("namespaces", &self.namespaces),
            ("kinds", &self.kinds),
        ] {
            if let Some(i) = globs.iter().position(|g| g.trim().is_empty()) {
                return Err(ConfigError(format!(
                    "{key}.{field}[{i}]: must not be empty"
                )));
            }
        }
        Ok(())
    }

    /// Checks `spec` for the caller described by `who` (e.g. `token "ci"`).
    pub fn check(&self, who: &str, spec: &OperationSpec) -> Result<()> {
        let refuse = |field: String, value: &str| {
            Err(Error::Forbidden(format!(
                "{field} {value:?} is not allowed for {who}"
            )))
        };
        if !allows(&self.clusters, spec.cluster.as_str()) {
            return refuse("cluster".into(), spec.cluster.as_str());
        }
        if !self.actions.is_empty() && !self.actions.contains(&spec.action) {
            return refuse("action".into(), spec.action.as_str());
        }
        for (i, m) in spec.manifests.iter().enumerate() {
            let kind = m.get("kind").and_then(Value::as_str).unwrap_or_default();
            if !allows(&self.kinds, kind) {
                return refuse(format!("manifests[{i}].kind"), kind);
            }
            let meta = m.get("metadata");
            let ns = meta
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str);
            let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
            self.check_namespace(who, &format!("manifests[{i}]"), kind, ns, name)?;
        }
        for (i, t) in spec.targets.iter().enumerate() {
            if !allows(&self.kinds, &t.kind) {
                return refuse(format!("targets[{i}].kind"), &t.kind);
            }
            let field = format!("targets[{i}]");
            self.check_namespace(who, &field, &t.kind, t.namespace.as_deref(), Some(&t.name))?;
        }
        Ok(())
    }

    fn check_namespace(
        &self,
        who: &str,
        field: &str,
        kind: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<()> {
        if self.namespaces.is_empty() {
            return Ok(());
        }
        let (field, value) = match (kind, namespace) {
            ("Namespace", _) => (format!("{field}.metadata.name"), name.unwrap_or_default()),
            (_, Some(ns)) => (format!("{field}.metadata.namespace"), ns),
            (_, None) => {
                return Err(Error::Forbidden(format!(
                    "{field}.metadata.namespace is missing, and {who} may only change objects in namespaces {}",
                    self.namespaces.join(", ")
                )));
            }
        };
        if allows(&self.namespaces, value) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "{field} {value:?} is not allowed for {who}"
            )))
        }
    }
}

impl PolicyConfig {
    /// Whether the policy lets its holder see `cluster` in the registry.
    pub fn allows_cluster(&self, cluster: &str) -> bool {
        allows(&self.clusters, cluster)
    }
}

fn allows(globs: &[String], value: &str) -> bool {
    globs.is_empty()
        || globs
            .iter()
            .any(|g| glob_match(g.as_bytes(), value.as_bytes()))
}

/// `*` matches any run of bytes, `?` exactly one; everything else itself. Linear-time
/// (the classic two-pointer backtrack), so a hostile value cannot make it slow.
pub fn glob_match(pattern: &[u8], value: &[u8]) -> bool {
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, v));
            p += 1;
        } else if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == value[v]) {
            p += 1;
            v += 1;
        } else if let Some((sp, sv)) = star {
            p = sp + 1;
            v = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> OperationSpec {
        serde_json::from_value(v).unwrap()
    }

    fn policy() -> PolicyConfig {
        PolicyConfig {
            clusters: vec!["staging".into(), "dev-*".into()],
            namespaces: vec!["team-a-*".into()],
            kinds: vec!["ConfigMap".into(), "Deployment".into(), "Namespace".into()],
            actions: vec![Action::Apply],
            ..Default::default()
        }
    }

    fn refusal(v: Value) -> String {
        match policy().check("token \"ci\"", &spec(v)) {
            Err(Error::Forbidden(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn cm(ns: Option<&str>) -> Value {
        let mut m = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        if let Some(ns) = ns {
            m["metadata"]["namespace"] = json!(ns);
        }
        m
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"team-a-*", b"team-a-web"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a?c*", b"abcdef"));
        assert!(!glob_match(b"team-a-*", b"team-b-web"));
        assert!(!glob_match(b"a*b", b"a-long-string-without-the-end"));
    }

    #[test]
    fn allowed_requests_pass() {
        let ok = spec(json!({"cluster": "dev-1", "action": "apply",
            "manifests": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a-web"}}, cm(Some("team-a-web"))]}));
        policy().check("token \"ci\"", &ok).unwrap();
        PolicyConfig::default().check("x", &ok).unwrap();
    }

    #[test]
    fn each_refusal_names_the_field_the_value_and_the_caller() {
        let m = refusal(json!({"cluster": "staging", "action": "apply",
            "manifests": [cm(Some("team-a-x")), cm(Some("team-a-y")), cm(Some("kube-system"))]}));
        assert_eq!(
            m,
            r#"manifests[2].metadata.namespace "kube-system" is not allowed for token "ci""#
        );
        let m = refusal(
            json!({"cluster": "prod", "action": "apply", "manifests": [cm(Some("team-a-x"))]}),
        );
        assert_eq!(m, r#"cluster "prod" is not allowed for token "ci""#);
        let m = refusal(
            json!({"cluster": "staging", "action": "delete", "manifests": [cm(Some("team-a-x"))]}),
        );
        assert!(m.starts_with(r#"action "delete""#), "{m}");
        let m = refusal(json!({"cluster": "staging", "action": "apply",
            "manifests": [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "team-a-x"}}]}));
        assert!(m.starts_with(r#"manifests[0].kind "Secret""#), "{m}");
        let m = refusal(json!({"cluster": "staging", "action": "apply", "manifests": [cm(None)]}));
        assert!(
            m.starts_with("manifests[0].metadata.namespace is missing"),
            "{m}"
        );
        let m = refusal(json!({"cluster": "staging", "action": "apply",
            "manifests": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}]}));
        assert!(
            m.starts_with(r#"manifests[0].metadata.name "kube-system""#),
            "{m}"
        );
    }
}
