//! What a real API server refuses with 422 Invalid, checked on every write's resulting
//! object (create, replace, patch, apply; dry runs too), with the real server's wording in
//! `details.causes`:
//!
//! - **types**: a built-in kind is decoded as k8s-openapi's type for it, a custom resource
//!   checked against its CRD's `openAPIV3Schema` (types, `required`, `enum`, `minimum`,
//!   `maximum`); a value of the wrong type is named by its path (`spec.replicas`);
//! - **labels**: keys and values of `metadata.labels` (and of a pod template's);
//! - **replicas**: not negative (Deployments, ReplicaSets, StatefulSets; a Job's
//!   `parallelism` and `completions`);
//! - **ports**: 1–65535 (a Service's `port`, `targetPort` when a number, and `nodePort`;
//!   a container's `containerPort` and `hostPort`);
//! - **selectors**: a Deployment's, ReplicaSet's, StatefulSet's or DaemonSet's
//!   `spec.selector` is required and must match its template's labels.
//!
//! Everything else a real server validates is not checked (docs/kube-sim.md lists what is).

use serde_json::Value;

use crate::object::{at, is_dns_subdomain};
use crate::registry::ResourceType;
use crate::status::Cause;

/// The causes `obj` (of type `rt`) is invalid for; `schema` is the CRD's OpenAPI v3 schema
/// for a custom resource's version. Empty: valid.
pub fn validate(rt: &ResourceType, obj: &Value, schema: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    match schema {
        Some(schema) => check_schema(schema, obj, "", &mut causes),
        None => decode_builtin(rt, obj, &mut causes),
    }
    if !causes.is_empty() {
        // The rest reads values whose types are wrong.
        return causes;
    }
    labels(
        obj.pointer("/metadata/labels"),
        "metadata.labels",
        &mut causes,
    );
    if rt.crd.is_some() {
        return causes;
    }
    let kind = rt.kind.as_str();
    let template = match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => Some("spec.template"),
        "CronJob" => Some("spec.jobTemplate.spec.template"),
        _ => None,
    };
    if let Some(template) = template {
        let labels_path = format!("{template}.metadata.labels");
        labels(at(obj, &labels_path), &labels_path, &mut causes);
        containers(obj, &format!("{template}.spec"), &mut causes);
    }
    if kind == "Pod" {
        containers(obj, "spec", &mut causes);
    }
    match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" => {
            non_negative(obj, "spec.replicas", &mut causes);
        }
        "Job" => {
            non_negative(obj, "spec.parallelism", &mut causes);
            non_negative(obj, "spec.completions", &mut causes);
        }
        "Service" => service_ports(obj, &mut causes),
        _ => {}
    }
    if matches!(
        kind,
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
    ) {
        selector(obj, &mut causes);
    }
    causes
}

/// `value` as the real server prints it in a cause: strings quoted, numbers as they are.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn invalid(field: &str, value: &Value, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {}: {why}", shown(value)),
        field: field.into(),
    }
}

fn required(field: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired".into(),
        message: "Required value".into(),
        field: field.into(),
    }
}

/// The JSON type of `value`, as OpenAPI names it.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_invalid(field: &str, value: &Value, expected: &str) -> Cause {
    let got = type_name(value);
    Cause {
        reason: "FieldValueTypeInvalid".into(),
        message: format!(
            "Invalid value: \"{got}\": {field} in body must be of type {expected}: \"{got}\""
        ),
        field: field.into(),
    }
}

// ---- built-in kinds: decoded as their k8s-openapi types ----

fn decode<T: serde::de::DeserializeOwned>(obj: &Value, causes: &mut Vec<Cause>) {
    let Err(e) = serde_path_to_error::deserialize::<_, T>(obj) else {
        return;
    };
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let message = e.inner().to_string();
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        let full = if path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        causes.push(required(&full));
        return;
    }
    let value = value_at(obj, e.path()).cloned().unwrap_or(Value::Null);
    let expected = message.rsplit_once("expected ").map(|(_, e)| e);
    let expected = match expected {
        Some("i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "an integer") => "integer",
        Some("f32" | "f64" | "a number") => "number",
        Some("a string" | "string") => "string",
        Some("a boolean" | "bool") => "boolean",
        Some("a sequence" | "a list") => "array",
        Some(e) if e.starts_with("struct") || e == "a map" || e.starts_with("a map") => "object",
        _ => {
            // A value of the right type out of its range (an i32 field given 2^40), or a
            // format (base64, a time) that does not parse.
            causes.push(invalid(&path, &value, &message));
            return;
        }
    };
    causes.push(type_invalid(&path, &value, expected));
}

fn value_at<'a>(obj: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(obj, |v, segment| match segment {
        Segment::Seq { index } => v.get(*index),
        Segment::Map { key } => v.get(key.as_str()),
        Segment::Enum { .. } | Segment::Unknown => Some(v),
    })
}

fn decode_builtin(rt: &ResourceType, obj: &Value, causes: &mut Vec<Cause>) {
    use k8s_openapi::api::{
        apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch, core::v1 as core,
        networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => decode::<core::Namespace>(obj, causes),
        ("", "ConfigMap") => decode::<core::ConfigMap>(obj, causes),
        ("", "Secret") => decode::<core::Secret>(obj, causes),
        ("", "Service") => decode::<core::Service>(obj, causes),
        ("", "ServiceAccount") => decode::<core::ServiceAccount>(obj, causes),
        ("", "Pod") => decode::<core::Pod>(obj, causes),
        ("", "Event") => decode::<core::Event>(obj, causes),
        ("apps", "Deployment") => decode::<apps::Deployment>(obj, causes),
        ("apps", "StatefulSet") => decode::<apps::StatefulSet>(obj, causes),
        ("apps", "DaemonSet") => decode::<apps::DaemonSet>(obj, causes),
        ("apps", "ReplicaSet") => decode::<apps::ReplicaSet>(obj, causes),
        ("batch", "Job") => decode::<batch::Job>(obj, causes),
        ("batch", "CronJob") => decode::<batch::CronJob>(obj, causes),
        ("rbac.authorization.k8s.io", "Role") => decode::<rbac::Role>(obj, causes),
        ("rbac.authorization.k8s.io", "RoleBinding") => decode::<rbac::RoleBinding>(obj, causes),
        ("rbac.authorization.k8s.io", "ClusterRole") => decode::<rbac::ClusterRole>(obj, causes),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            decode::<rbac::ClusterRoleBinding>(obj, causes)
        }
        ("networking.k8s.io", "Ingress") => decode::<networking::Ingress>(obj, causes),
        ("policy", "PodDisruptionBudget") => decode::<policy::PodDisruptionBudget>(obj, causes),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            decode::<autoscaling::HorizontalPodAutoscaler>(obj, causes)
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            decode::<apiextensions::CustomResourceDefinition>(obj, causes)
        }
        _ => {}
    }
}

// ---- custom resources: the CRD's OpenAPI v3 schema ----

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Checks `value` at `path` against `schema`, as the API server's structural schema
/// validation does for the parts it covers.
fn check_schema(schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !matches!(type_name(value), "integer" | "string") {
            causes.push(type_invalid(path, value, "integer or string"));
        }
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let got = type_name(value);
        let fits = got == expected || (expected == "number" && got == "integer");
        if !fits {
            // A null is how an absent value is sent; `nullable` allows it.
            if !(got == "null" && schema.get("nullable") == Some(&Value::Bool(true))) {
                causes.push(type_invalid(path, value, expected));
            }
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(shown).collect();
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                shown(value),
                list.join(", ")
            ),
            field: path.into(),
        });
    }
    if let Some(n) = value.as_f64() {
        let shown_bound = |b: &Value| b.to_string();
        if let Some(min) = schema
            .get("minimum")
            .filter(|m| m.as_f64().is_some_and(|m| n < m))
        {
            causes.push(invalid(
                path,
                value,
                &format!(
                    "{path} in body should be greater than or equal to {}",
                    shown_bound(min)
                ),
            ));
        }
        if let Some(max) = schema
            .get("maximum")
            .filter(|m| m.as_f64().is_some_and(|m| n > m))
        {
            causes.push(invalid(
                path,
                value,
                &format!(
                    "{path} in body should be less than or equal to {}",
                    shown_bound(max)
                ),
            ));
        }
    }
    match value {
        Value::Object(map) => {
            // metadata is the server's (names and labels are checked apart).
            let properties = schema.get("properties").and_then(Value::as_object);
            for field in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(field) {
                    causes.push(required(&join(path, field)));
                }
            }
            for (key, item) in map {
                if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = properties
                    .and_then(|p| p.get(key))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                if let Some(sub) = sub {
                    check_schema(sub, item, &join(path, key), causes);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_schema(sub, item, &format!("{path}[{i}]"), causes);
                }
            }
        }
        _ => {}
    }
}

// ---- field rules ----

const LABEL_NAME: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const LABEL_PREFIX: &str = "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn is_label_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn labels(labels: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    let Some(map) = labels.and_then(Value::as_object) else {
        return;
    };
    for (key, value) in map {
        let (prefix, name) = match key.split_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, key.as_str()),
        };
        let key_shown = Value::String(key.clone());
        if let Some(p) = prefix
            && !is_dns_subdomain(p)
        {
            causes.push(invalid(field, &key_shown, LABEL_PREFIX));
        }
        if name.len() > 63 {
            causes.push(invalid(
                field,
                &key_shown,
                "name part must be no more than 63 characters",
            ));
        } else if !is_label_part(name) {
            causes.push(invalid(field, &key_shown, LABEL_NAME));
        }
        let Some(v) = value.as_str() else { continue };
        if v.len() > 63 {
            causes.push(invalid(field, value, "must be no more than 63 characters"));
        } else if !v.is_empty() && !is_label_part(v) {
            causes.push(invalid(field, value, LABEL_VALUE));
        }
    }
}

fn non_negative(obj: &Value, field: &str, causes: &mut Vec<Cause>) {
    if let Some(v) = at(obj, field).filter(|v| v.as_i64().is_some_and(|n| n < 0)) {
        causes.push(invalid(field, v, "must be greater than or equal to 0"));
    }
}

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

/// A port number at `field`: 1–65535 (`zero_ok`: 0 means unset).
fn port(value: Option<&Value>, field: &str, zero_ok: bool, causes: &mut Vec<Cause>) {
    let Some(v) = value else { return };
    let Some(n) = v.as_i64() else { return };
    let unset = zero_ok && n == 0;
    if !(unset || (1..=65535).contains(&n)) {
        causes.push(invalid(field, v, PORT_RANGE));
    }
}

fn containers(obj: &Value, pod_spec: &str, causes: &mut Vec<Cause>) {
    for list in ["initContainers", "containers"] {
        let field = format!("{pod_spec}.{list}");
        let Some(items) = at(obj, &field).and_then(Value::as_array) else {
            continue;
        };
        for (i, c) in items.iter().enumerate() {
            let ports = c.get("ports").and_then(Value::as_array);
            for (j, p) in ports.into_iter().flatten().enumerate() {
                let base = format!("{field}[{i}].ports[{j}]");
                port(
                    p.get("containerPort"),
                    &format!("{base}.containerPort"),
                    false,
                    causes,
                );
                port(p.get("hostPort"), &format!("{base}.hostPort"), true, causes);
            }
        }
    }
}

fn service_ports(obj: &Value, causes: &mut Vec<Cause>) {
    let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let base = format!("spec.ports[{i}]");
        port(p.get("port"), &format!("{base}.port"), false, causes);
        // A named target port is resolved against the pods; a number must be a port.
        port(
            p.get("targetPort").filter(|t| t.is_number()),
            &format!("{base}.targetPort"),
            true,
            causes,
        );
        port(p.get("nodePort"), &format!("{base}.nodePort"), true, causes);
    }
}

/// Whether the label selector `selector` (matchLabels, matchExpressions) selects `labels`.
fn selects(selector: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let labels_ok = match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    let expressions_ok = expressions.into_iter().flatten().all(|e| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match e.get("operator").and_then(Value::as_str) {
            Some("In") => label(key).is_some_and(|v| values.contains(&v)),
            Some("NotIn") => label(key).is_none_or(|v| !values.contains(&v)),
            Some("Exists") => label(key).is_some(),
            Some("DoesNotExist") => label(key).is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// Go's `%#v` of a `map[string]string`, as the real server prints template labels.
fn go_map(labels: &serde_json::Map<String, Value>) -> String {
    let mut pairs: Vec<(&String, &Value)> = labels.iter().collect();
    pairs.sort_by_key(|(k, _)| *k);
    let shown: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or_default()))
        .collect();
    format!("map[string]string{{{}}}", shown.join(", "))
}

fn selector(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(selector) = obj.pointer("/spec/selector").filter(|s| !s.is_null()) else {
        causes.push(required("spec.selector"));
        return;
    };
    let empty = serde_json::Map::new();
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if !selects(selector, labels) {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                go_map(labels)
            ),
            field: "spec.template.metadata.labels".into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::Registry;

    fn builtin(group: &str, kind: &str) -> ResourceType {
        let api_version = if group.is_empty() {
            "v1".to_owned()
        } else {
            format!("{group}/v1")
        };
        let found = Registry::builtin().find_kind(&api_version, kind);
        (*found.unwrap()).clone()
    }

    fn deployment(spec: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn fields(causes: &[Cause]) -> Vec<(&str, &str)> {
        causes
            .iter()
            .map(|c| (c.field.as_str(), c.message.as_str()))
            .collect()
    }

    fn template(labels: Value) -> Value {
        json!({"metadata": {"labels": labels},
               "spec": {"containers": [{"name": "web", "image": "nginx"}]}})
    }

    #[test]
    fn a_deployment_with_a_string_for_replicas_is_a_type_error_on_that_field() {
        let rt = builtin("apps", "Deployment");
        let bad = deployment(json!({"replicas": "three",
            "selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"}))}));
        let causes = validate(&rt, &bad, None);
        assert_eq!(
            fields(&causes),
            [(
                "spec.replicas",
                "Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""
            )]
        );
        assert_eq!(causes[0].reason, "FieldValueTypeInvalid");
    }

    #[test]
    fn the_field_rules_name_each_field_as_the_real_server_does() {
        let rt = builtin("apps", "Deployment");
        let mut t = template(json!({"app": "api"}));
        t["spec"]["containers"][0]["ports"] = json!([{"containerPort": 70000}]);
        let bad = deployment(json!({"replicas": -1,
            "selector": {"matchLabels": {"app": "web"}}, "template": t}));
        let causes = validate(&rt, &bad, None);
        assert_eq!(
            fields(&causes),
            [
                (
                    "spec.template.spec.containers[0].ports[0].containerPort",
                    "Invalid value: 70000: must be between 1 and 65535, inclusive"
                ),
                (
                    "spec.replicas",
                    "Invalid value: -1: must be greater than or equal to 0"
                ),
                (
                    "spec.template.metadata.labels",
                    "Invalid value: map[string]string{\"app\":\"api\"}: `selector` does not match template `labels`"
                ),
            ]
        );
        let no_selector = deployment(json!({"template": template(json!({"app": "web"}))}));
        assert_eq!(
            fields(&validate(&rt, &no_selector, None)),
            [("spec.selector", "Required value")]
        );
        let good = deployment(json!({"replicas": 0,
            "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
            "template": template(json!({"app": "web", "tier": "front"}))}));
        assert_eq!(fields(&validate(&rt, &good, None)), []);
    }

    #[test]
    fn service_ports_and_labels() {
        let rt = builtin("", "Service");
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "labels": {"bad key!": "x", "ok": "bad value!", "example.com/fine": "yes"}},
            "spec": {"ports": [{"port": 70000, "targetPort": "http"}, {"port": 80, "targetPort": 0}]}});
        let causes = validate(&rt, &svc, None);
        let got = fields(&causes);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].0, "metadata.labels");
        assert!(
            got[0]
                .1
                .starts_with("Invalid value: \"bad key!\": name part must consist")
        );
        assert!(
            got[1]
                .1
                .starts_with("Invalid value: \"bad value!\": a valid label must be")
        );
        assert_eq!(
            got[2],
            (
                "spec.ports[0].port",
                "Invalid value: 70000: must be between 1 and 65535, inclusive"
            )
        );
    }

    #[test]
    fn a_custom_resource_is_checked_against_its_schema() {
        let mut rt = builtin("", "ConfigMap");
        rt.crd = Some("widgets.example.com".into());
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1},
                "mode": {"type": "string", "enum": ["fast", "safe"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "port": {"x-kubernetes-int-or-string": true}}}}});
        let widget = |spec: Value| {
            json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w"}, "spec": spec})
        };
        assert_eq!(
            fields(&validate(
                &rt,
                &widget(json!({"size": 2, "mode": "fast", "tags": ["a"], "port": "http"})),
                Some(&schema)
            )),
            []
        );
        let causes = validate(
            &rt,
            &widget(json!({"size": "two", "mode": "slow", "tags": [1], "port": true})),
            Some(&schema),
        );
        assert_eq!(
            fields(&causes),
            [
                (
                    "spec.mode",
                    "Unsupported value: \"slow\": supported values: \"fast\", \"safe\""
                ),
                (
                    "spec.port",
                    "Invalid value: \"boolean\": spec.port in body must be of type integer or string: \"boolean\""
                ),
                (
                    "spec.size",
                    "Invalid value: \"string\": spec.size in body must be of type integer: \"string\""
                ),
                (
                    "spec.tags[0]",
                    "Invalid value: \"integer\": spec.tags[0] in body must be of type string: \"integer\""
                ),
            ]
        );
        assert_eq!(
            fields(&validate(&rt, &widget(json!({"size": 0})), Some(&schema))),
            [(
                "spec.size",
                "Invalid value: 0: spec.size in body should be greater than or equal to 1"
            )]
        );
        assert_eq!(
            fields(&validate(&rt, &widget(json!({})), Some(&schema))),
            [("spec.size", "Required value")]
        );
    }
}
