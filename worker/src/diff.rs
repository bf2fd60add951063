//! What a dry run would change: the fields that differ between an object as it is and as
//! the API server answered the dry-run write, one [`FieldChange`] per leaf.
//!
//! Fields the server maintains on every write (resourceVersion, managedFields, generation,
//! timestamps) and `status` are left out: they say nothing about the change asked for.
//! A Secret's `data` and `stringData` show which keys change, never their values.

use longshore_contract::record::FieldChange;
use serde_json::Value;

/// The most changes listed for one object; a dry-run create of a large object would
/// otherwise fill the status record.
pub const MAX_CHANGES: usize = 200;

/// Shown in place of a Secret value.
pub const REDACTED: &str = "(redacted)";

const IGNORED: &[&str] = &[
    "status",
    "metadata.resourceVersion",
    "metadata.managedFields",
    "metadata.generation",
    "metadata.creationTimestamp",
    "metadata.uid",
    "metadata.selfLink",
];

/// The changes from `before` (absent: the object would be created) to `after` (absent: it
/// would be deleted), for an object of `kind`.
pub fn changes(kind: &str, before: Option<&Value>, after: Option<&Value>) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    if kind == "Secret" {
        for change in &mut out {
            let secret = ["data", "stringData"].iter().any(|field| {
                change.path == *field || change.path.starts_with(&format!("{field}."))
            });
            if secret {
                let hide = |v: &mut Option<Value>| {
                    if v.is_some() {
                        *v = Some(Value::String(REDACTED.into()));
                    }
                };
                hide(&mut change.before);
                hide(&mut change.after);
            }
        }
    }
    out.truncate(MAX_CHANGES);
    out
}

fn walk(path: &str, before: Option<&Value>, after: Option<&Value>, out: &mut Vec<FieldChange>) {
    if IGNORED.contains(&path) || out.len() >= MAX_CHANGES || before == after {
        return;
    }
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for key in keys {
                walk(&join(key), b.get(key), a.get(key), out);
            }
        }
        (None, Some(Value::Object(a))) => {
            for (key, value) in a {
                walk(&join(key), None, Some(value), out);
            }
        }
        (Some(Value::Object(b)), None) => {
            for (key, value) in b {
                walk(&join(key), Some(value), None, out);
            }
        }
        (Some(Value::Array(b)), Some(Value::Array(a))) if b.len() == a.len() => {
            for (i, (b, a)) in b.iter().zip(a).enumerate() {
                walk(&format!("{path}[{i}]"), Some(b), Some(a), out);
            }
        }
        _ => out.push(FieldChange {
            path: path.to_owned(),
            before: before.cloned(),
            after: after.cloned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(changes: &[FieldChange]) -> Vec<&str> {
        changes.iter().map(|c| c.path.as_str()).collect()
    }

    #[test]
    fn lists_changed_added_and_removed_leaves_but_not_server_bookkeeping() {
        let before = json!({"metadata": {"name": "web", "resourceVersion": "5", "labels": {"a": "1"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": "web:1"}]}}},
            "status": {"replicas": 2}});
        let after = json!({"metadata": {"name": "web", "resourceVersion": "6", "labels": {"b": "2"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"image": "web:2"}]}}},
            "status": {"replicas": 3}});
        let c = changes("Deployment", Some(&before), Some(&after));
        assert_eq!(
            paths(&c),
            [
                "metadata.labels.a",
                "metadata.labels.b",
                "spec.replicas",
                "spec.template.spec.containers[0].image"
            ]
        );
        assert_eq!(c[0].after, None, "removed");
        assert_eq!(c[1].before, None, "added");
        assert_eq!(c[2].before, Some(json!(2)));
        assert_eq!(c[2].after, Some(json!(3)));
    }

    #[test]
    fn secret_values_never_appear_only_their_keys() {
        let before = json!({"kind": "Secret", "data": {"password": "b2xk"}, "type": "Opaque"});
        let after = json!({"kind": "Secret", "data": {"password": "bmV3", "user": "dXNlcg=="},
            "stringData": {"token": "s3cret"}, "type": "Opaque"});
        let c = changes("Secret", Some(&before), Some(&after));
        assert_eq!(
            paths(&c),
            ["data.password", "data.user", "stringData.token"]
        );
        let shown = serde_json::to_string(&c).unwrap();
        for secret in ["b2xk", "bmV3", "dXNlcg==", "s3cret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains(REDACTED));
    }

    #[test]
    fn a_create_lists_every_leaf_and_a_delete_every_removal() {
        let obj = json!({"metadata": {"name": "x"}, "data": {"k": "v"}});
        assert_eq!(
            paths(&changes("ConfigMap", None, Some(&obj))),
            ["data.k", "metadata.name"]
        );
        let gone = changes("ConfigMap", Some(&obj), None);
        assert!(gone.iter().all(|c| c.after.is_none() && c.before.is_some()));
        assert!(changes("ConfigMap", Some(&obj), Some(&obj)).is_empty());
    }
}
