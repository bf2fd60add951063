//! Small helpers over JSON objects: metadata access, names, timestamps.

use serde_json::{Map, Value, json};

use crate::registry::ResourceType;
use crate::status::Cause;

/// Now, in the second-precision RFC 3339 form Kubernetes uses.
pub fn now() -> String {
    time(jiff::Timestamp::now())
}

/// A time in the second-precision RFC 3339 form Kubernetes uses.
pub fn time(ts: jiff::Timestamp) -> String {
    jiff::Timestamp::from_second(ts.as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ts.to_string())
}

/// The value at a dotted path (`spec.template.metadata.labels`).
pub fn at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, k| v.get(k))
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        // Unreachable: ensured just above; keep a harmless fallback rather than panic.
        _ => unreachable!("metadata was just set to an object"),
    }
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Checks a name as a real server does: a DNS-1123 label for namespaces and services, a
/// DNS-1123 subdomain for everything else.
pub fn validate_name(rt: &ResourceType, name: &str) -> Result<(), Cause> {
    let label = rt.is_namespace() || (rt.group.is_empty() && rt.plural == "services");
    if label && !is_dns_label(name) {
        return Err(Cause::invalid(
            "metadata.name",
            name,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ));
    }
    if !label && !is_dns_subdomain(name) {
        return Err(Cause::invalid(
            "metadata.name",
            name,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ));
    }
    Ok(())
}

/// `generateName` plus five random characters from the alphabet Kubernetes uses.
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// Everything generation is computed from: the object minus metadata and status.
pub fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    v
}

/// A namespace as a real server stores it once created.
pub fn namespace_object(name: &str, now: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": now,
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// Sets apiVersion for the version a client asked for (objects are stored once).
pub fn present(mut obj: Value, rt: &ResourceType, version: &str) -> Value {
    obj["apiVersion"] = json!(rt.api_version(version));
    obj["kind"] = json!(rt.kind);
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn names() {
        let r = Registry::builtin();
        let cm = r.find("", "v1", "configmaps").unwrap();
        let ns = r.find("", "v1", "namespaces").unwrap();
        assert!(validate_name(&cm, "a.b-c").is_ok());
        assert!(validate_name(&cm, "Bad_Name").is_err());
        assert!(validate_name(&ns, "a.b").is_err());
        assert!(generate_name("web-").starts_with("web-"));
        assert_eq!(generate_name("x-").len(), 7);
    }
}
