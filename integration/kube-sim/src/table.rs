//! `meta.k8s.io/v1 Table` answers, as `kubectl get` asks for them
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`): the printer columns the real
//! server uses for each built-in kind, a CRD's `additionalPrinterColumns` for its custom
//! resources (Name and Age without them), and each row's object as `PartialObjectMetadata`
//! (`includeObject=Metadata`, the default), in full (`Object`) or not at all (`None`).

use serde_json::{Value, json};

use crate::object::at;
use crate::registry::ResourceType;

/// The Table version `accept` asks for (`v1` or `v1beta1`), if it asks for one.
pub fn wanted(accept: &str) -> Option<&'static str> {
    accept.split(',').find_map(|range| {
        let params: Vec<&str> = range.split(';').map(str::trim).collect();
        let has = |p: &str| params.iter().any(|x| x.eq_ignore_ascii_case(p));
        if !has("as=Table") || !has("g=meta.k8s.io") {
            return None;
        }
        if has("v=v1") {
            Some("v1")
        } else if has("v=v1beta1") {
            Some("v1beta1")
        } else {
            None
        }
    })
}

/// A column: its name, type (`string`, `integer`, `date`), format (`name` for the first)
/// and priority (1: shown with `-o wide` only).
struct Column {
    name: std::borrow::Cow<'static, str>,
    kind: &'static str,
    format: &'static str,
    priority: u8,
    cell: Cell,
}

enum Cell {
    Name,
    Age,
    Fn(fn(&Value) -> Value),
    /// A field (`name`, `image`) of each container of the pod template at a path.
    Containers(&'static str, &'static str),
    /// A CRD printer column's JSON path.
    Path(String, String),
}

fn col(name: &'static str, kind: &'static str, priority: u8, f: fn(&Value) -> Value) -> Column {
    Column {
        name: name.into(),
        kind,
        format: "",
        priority,
        cell: Cell::Fn(f),
    }
}

fn name() -> Column {
    Column {
        name: "Name".into(),
        kind: "string",
        format: "name",
        priority: 0,
        cell: Cell::Name,
    }
}

fn age() -> Column {
    Column {
        name: "Age".into(),
        kind: "string",
        format: "",
        priority: 0,
        cell: Cell::Age,
    }
}

fn int(obj: &Value, path: &str) -> i64 {
    at(obj, path).and_then(Value::as_i64).unwrap_or(0)
}

fn text(obj: &Value, path: &str, none: &str) -> String {
    at(obj, path)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(none)
        .to_owned()
}

fn count(obj: &Value, path: &str) -> usize {
    match at(obj, path) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

/// `a=b,c=d`, or `<none>`.
fn pairs(obj: &Value, path: &str) -> String {
    let Some(map) = at(obj, path)
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
    else {
        return "<none>".into();
    };
    let shown: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    shown.join(",")
}

/// The pod spec of a workload (`template`: where its pod template is).
fn pod_spec<'a>(obj: &'a Value, template: &str) -> Option<&'a Value> {
    at(obj, template).and_then(|t| t.get("spec"))
}

fn containers_of(obj: &Value, template: &str, field: &str) -> Value {
    let names: Vec<&str> = pod_spec(obj, template)
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get(field).and_then(Value::as_str))
        .collect();
    json!(names.join(","))
}

/// The columns for `rt`'s objects; `crd` is the CRD of a custom resource.
fn columns(rt: &ResourceType, crd: Option<&Value>, version: &str) -> Vec<Column> {
    if rt.crd.is_some() {
        return crd_columns(crd, version);
    }
    // The workloads' wide columns: their template's containers and images, and selector.
    let wide = |template: &'static str| -> [Column; 3] {
        let containers = |name, field| Column {
            name: std::borrow::Cow::Borrowed(name),
            kind: "string",
            format: "",
            priority: 1,
            cell: Cell::Containers(template, field),
        };
        [
            containers("Containers", "name"),
            containers("Images", "image"),
            col("Selector", "string", 1, |o| {
                json!(pairs(o, "spec.selector.matchLabels"))
            }),
        ]
    };
    let created_at = || {
        col("Created At", "date", 0, |o| {
            json!(text(o, "metadata.creationTimestamp", ""))
        })
    };
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => vec![
            name(),
            col("Status", "string", 0, |o| {
                json!(text(o, "status.phase", ""))
            }),
            age(),
        ],
        ("", "ConfigMap") => vec![
            name(),
            col("Data", "integer", 0, |o| {
                json!(count(o, "data") + count(o, "binaryData"))
            }),
            age(),
        ],
        ("", "Secret") => vec![
            name(),
            col("Type", "string", 0, |o| json!(text(o, "type", "Opaque"))),
            col("Data", "integer", 0, |o| {
                json!(count(o, "data") + count(o, "stringData"))
            }),
            age(),
        ],
        ("", "Service") => vec![
            name(),
            col("Type", "string", 0, |o| {
                json!(text(o, "spec.type", "ClusterIP"))
            }),
            col("Cluster-IP", "string", 0, |o| {
                json!(text(o, "spec.clusterIP", "<none>"))
            }),
            col("External-IP", "string", 0, service_external_ip),
            col("Port(s)", "string", 0, service_ports),
            age(),
            col("Selector", "string", 1, |o| {
                json!(pairs(o, "spec.selector"))
            }),
        ],
        ("", "ServiceAccount") => vec![
            name(),
            col("Secrets", "integer", 0, |o| json!(count(o, "secrets"))),
            age(),
        ],
        ("", "Pod") => vec![
            name(),
            col("Ready", "string", 0, pod_ready),
            col("Status", "string", 0, |o| {
                json!(text(o, "status.phase", "Pending"))
            }),
            col("Restarts", "string", 0, pod_restarts),
            age(),
            col("IP", "string", 1, |o| {
                json!(text(o, "status.podIP", "<none>"))
            }),
            col("Node", "string", 1, |o| {
                json!(text(o, "spec.nodeName", "<none>"))
            }),
            col("Nominated Node", "string", 1, |o| {
                json!(text(o, "status.nominatedNodeName", "<none>"))
            }),
            col("Readiness Gates", "string", 1, |_| json!("<none>")),
        ],
        ("", "Event") => vec![
            col("Last Seen", "string", 0, |o| {
                let seen = text(o, "lastTimestamp", "");
                let seen = if seen.is_empty() {
                    text(o, "eventTime", "")
                } else {
                    seen
                };
                json!(since(&seen))
            }),
            col("Type", "string", 0, |o| json!(text(o, "type", ""))),
            col("Reason", "string", 0, |o| json!(text(o, "reason", ""))),
            col("Object", "string", 0, |o| {
                json!(format!(
                    "{}/{}",
                    text(o, "involvedObject.kind", "").to_ascii_lowercase(),
                    text(o, "involvedObject.name", "")
                ))
            }),
            col("Message", "string", 0, |o| json!(text(o, "message", ""))),
        ],
        ("apps", "Deployment") => {
            let mut c = vec![
                name(),
                col("Ready", "string", 0, |o| {
                    json!(format!(
                        "{}/{}",
                        int(o, "status.readyReplicas"),
                        int(o, "spec.replicas")
                    ))
                }),
                col("Up-to-date", "integer", 0, |o| {
                    json!(int(o, "status.updatedReplicas"))
                }),
                col("Available", "integer", 0, |o| {
                    json!(int(o, "status.availableReplicas"))
                }),
                age(),
            ];
            c.extend(wide("spec.template"));
            c
        }
        ("apps", "StatefulSet") => {
            let mut c = vec![
                name(),
                col("Ready", "string", 0, |o| {
                    json!(format!(
                        "{}/{}",
                        int(o, "status.readyReplicas"),
                        int(o, "spec.replicas")
                    ))
                }),
                age(),
            ];
            let [containers, images, _] = wide("spec.template");
            c.extend([containers, images]);
            c
        }
        ("apps", "DaemonSet") => {
            let mut c = vec![
                name(),
                col("Desired", "integer", 0, |o| {
                    json!(int(o, "status.desiredNumberScheduled"))
                }),
                col("Current", "integer", 0, |o| {
                    json!(int(o, "status.currentNumberScheduled"))
                }),
                col("Ready", "integer", 0, |o| {
                    json!(int(o, "status.numberReady"))
                }),
                col("Up-to-date", "integer", 0, |o| {
                    json!(int(o, "status.updatedNumberScheduled"))
                }),
                col("Available", "integer", 0, |o| {
                    json!(int(o, "status.numberAvailable"))
                }),
                col("Node Selector", "string", 0, |o| {
                    json!(pairs(o, "spec.template.spec.nodeSelector"))
                }),
                age(),
            ];
            c.extend(wide("spec.template"));
            c
        }
        ("apps", "ReplicaSet") => {
            let mut c = vec![
                name(),
                col("Desired", "integer", 0, |o| json!(int(o, "spec.replicas"))),
                col("Current", "integer", 0, |o| {
                    json!(int(o, "status.replicas"))
                }),
                col("Ready", "integer", 0, |o| {
                    json!(int(o, "status.readyReplicas"))
                }),
                age(),
            ];
            c.extend(wide("spec.template"));
            c
        }
        ("batch", "Job") => {
            let mut c = vec![
                name(),
                col("Status", "string", 0, job_status),
                col("Completions", "string", 0, |o| {
                    let wanted = at(o, "spec.completions")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    json!(format!("{}/{wanted}", int(o, "status.succeeded")))
                }),
                col("Duration", "string", 0, job_duration),
                age(),
            ];
            c.extend(wide("spec.template"));
            c
        }
        ("batch", "CronJob") => {
            let mut c = vec![
                name(),
                col("Schedule", "string", 0, |o| {
                    json!(text(o, "spec.schedule", ""))
                }),
                col("Timezone", "string", 0, |o| {
                    json!(text(o, "spec.timeZone", "<none>"))
                }),
                col("Suspend", "boolean", 0, |o| {
                    json!(if at(o, "spec.suspend") == Some(&Value::Bool(true)) {
                        "True"
                    } else {
                        "False"
                    })
                }),
                col("Active", "integer", 0, |o| json!(count(o, "status.active"))),
                col("Last Schedule", "string", 0, |o| {
                    let last = text(o, "status.lastScheduleTime", "");
                    json!(if last.is_empty() {
                        "<none>".into()
                    } else {
                        since(&last)
                    })
                }),
                age(),
            ];
            c.extend(wide("spec.jobTemplate.spec.template"));
            c
        }
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => vec![name(), created_at()],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => vec![
            name(),
            col("Role", "string", 0, |o| {
                json!(format!(
                    "{}/{}",
                    text(o, "roleRef.kind", ""),
                    text(o, "roleRef.name", "")
                ))
            }),
            age(),
            col("Users", "string", 1, |o| subjects(o, "User")),
            col("Groups", "string", 1, |o| subjects(o, "Group")),
            col("ServiceAccounts", "string", 1, |o| {
                subjects(o, "ServiceAccount")
            }),
        ],
        ("networking.k8s.io", "Ingress") => vec![
            name(),
            col("Class", "string", 0, |o| {
                json!(text(o, "spec.ingressClassName", "<none>"))
            }),
            col("Hosts", "string", 0, ingress_hosts),
            col("Address", "string", 0, |o| {
                let ips: Vec<&str> = at(o, "status.loadBalancer.ingress")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|i| {
                        i.get("ip")
                            .or_else(|| i.get("hostname"))
                            .and_then(Value::as_str)
                    })
                    .collect();
                json!(ips.join(","))
            }),
            col("Ports", "string", 0, |o| {
                json!(if count(o, "spec.tls") > 0 {
                    "80, 443"
                } else {
                    "80"
                })
            }),
            age(),
        ],
        ("policy", "PodDisruptionBudget") => vec![
            name(),
            col("Min Available", "string", 0, |o| {
                int_or_string(o, "spec.minAvailable")
            }),
            col("Max Unavailable", "string", 0, |o| {
                int_or_string(o, "spec.maxUnavailable")
            }),
            col("Allowed Disruptions", "integer", 0, |o| {
                json!(int(o, "status.disruptionsAllowed"))
            }),
            age(),
        ],
        ("autoscaling", "HorizontalPodAutoscaler") => vec![
            name(),
            col("Reference", "string", 0, |o| {
                json!(format!(
                    "{}/{}",
                    text(o, "spec.scaleTargetRef.kind", ""),
                    text(o, "spec.scaleTargetRef.name", "")
                ))
            }),
            col("Targets", "string", 0, |o| {
                json!(if count(o, "spec.metrics") == 0 {
                    "<none>"
                } else {
                    "<unknown>"
                })
            }),
            col("MinPods", "string", 0, |o| {
                json!(
                    at(o, "spec.minReplicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                        .to_string()
                )
            }),
            col("MaxPods", "integer", 0, |o| {
                json!(int(o, "spec.maxReplicas"))
            }),
            col("Replicas", "integer", 0, |o| {
                json!(int(o, "status.currentReplicas"))
            }),
            age(),
        ],
        ("apiextensions.k8s.io", "CustomResourceDefinition") => vec![name(), created_at()],
        _ => vec![name(), age()],
    }
}

fn service_external_ip(o: &Value) -> Value {
    let ingress: Vec<&str> = at(o, "status.loadBalancer.ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| {
            i.get("ip")
                .or_else(|| i.get("hostname"))
                .and_then(Value::as_str)
        })
        .collect();
    let external: Vec<&str> = at(o, "spec.externalIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let all: Vec<&str> = ingress.into_iter().chain(external).collect();
    match (text(o, "spec.type", "ClusterIP").as_str(), all.is_empty()) {
        ("ExternalName", _) => json!(text(o, "spec.externalName", "<none>")),
        ("LoadBalancer", true) => json!("<pending>"),
        (_, true) => json!("<none>"),
        (_, false) => json!(all.join(",")),
    }
}

fn service_ports(o: &Value) -> Value {
    let ports: Vec<String> = at(o, "spec.ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(node) => format!("{port}:{node}/{protocol}"),
                None => format!("{port}/{protocol}"),
            }
        })
        .collect();
    json!(if ports.is_empty() {
        "<none>".to_owned()
    } else {
        ports.join(",")
    })
}

fn pod_ready(o: &Value) -> Value {
    let total = count(o, "spec.containers");
    let ready = at(o, "status.containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("ready") == Some(&Value::Bool(true)))
        .count();
    json!(format!("{ready}/{total}"))
}

fn pod_restarts(o: &Value) -> Value {
    let restarts: i64 = at(o, "status.containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
        .sum();
    json!(restarts.to_string())
}

fn job_status(o: &Value) -> Value {
    let conditions = at(o, "status.conditions").and_then(Value::as_array);
    let holds = |kind: &str| {
        conditions
            .into_iter()
            .flatten()
            .any(|c| c["type"] == kind && c["status"] == "True")
    };
    json!(if holds("Complete") {
        "Complete"
    } else if holds("Failed") {
        "Failed"
    } else if at(o, "spec.suspend") == Some(&Value::Bool(true)) {
        "Suspended"
    } else {
        "Running"
    })
}

fn job_duration(o: &Value) -> Value {
    let start = text(o, "status.startTime", "");
    let Ok(start) = start.parse::<jiff::Timestamp>() else {
        return json!("");
    };
    let end = text(o, "status.completionTime", "")
        .parse::<jiff::Timestamp>()
        .unwrap_or_else(|_| jiff::Timestamp::now());
    json!(human(end.as_second() - start.as_second()))
}

fn subjects(o: &Value, kind: &str) -> Value {
    let names: Vec<String> = o
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|s| s.get("kind").and_then(Value::as_str) == Some(kind))
        .map(|s| {
            let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
            match s.get("namespace").and_then(Value::as_str) {
                Some(ns) if kind == "ServiceAccount" => format!("{ns}/{name}"),
                _ => name.to_owned(),
            }
        })
        .collect();
    json!(names.join(", "))
}

fn ingress_hosts(o: &Value) -> Value {
    let hosts: Vec<&str> = at(o, "spec.rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("host").and_then(Value::as_str))
        .collect();
    json!(if hosts.is_empty() {
        "*".to_owned()
    } else {
        hosts.join(",")
    })
}

fn int_or_string(o: &Value, path: &str) -> Value {
    match at(o, path) {
        Some(Value::Number(n)) => json!(n.to_string()),
        Some(Value::String(s)) => json!(s),
        _ => json!("N/A"),
    }
}

/// A CRD's printer columns for `version` (Name first), or Name and Age without any.
fn crd_columns(crd: Option<&Value>, version: &str) -> Vec<Column> {
    let listed = crd
        .and_then(|c| c.pointer("/spec/versions"))
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("name").and_then(Value::as_str) == Some(version))
        })
        .and_then(|v| v.get("additionalPrinterColumns"))
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty());
    let Some(listed) = listed else {
        return vec![name(), age()];
    };
    let mut columns = vec![name()];
    for c in listed {
        let column_name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        let kind = c.get("type").and_then(Value::as_str).unwrap_or("string");
        let path = c
            .get("jsonPath")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind_name: &'static str = match kind {
            "integer" => "integer",
            "number" => "number",
            "boolean" => "boolean",
            "date" => "date",
            _ => "string",
        };
        columns.push(Column {
            name: column_name.to_owned().into(),
            kind: kind_name,
            format: "",
            priority: c
                .get("priority")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(1) as u8,
            cell: Cell::Path(path.to_owned(), kind.to_owned()),
        });
    }
    columns
}

/// The value at a printer column's JSON path (`.spec.replicas`, `.status.conditions[0].type`).
fn json_path(obj: &Value, path: &str) -> Option<Value> {
    let mut v = obj;
    for part in path.trim_start_matches('.').split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !key.is_empty() {
            v = v.get(key)?;
        }
        if let Some(i) = index {
            v = v.get(i)?;
        }
    }
    Some(v.clone())
}

/// How long ago `timestamp` was, as the real server's Age column says it.
fn since(timestamp: &str) -> String {
    match timestamp.parse::<jiff::Timestamp>() {
        Ok(t) => human(jiff::Timestamp::now().as_second() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

/// Kubernetes' `HumanDuration` of `seconds`.
pub fn human(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    let (m, h) = (s / 60, s / 3600);
    let with = |big: i64, unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        with(m, "m", s % 60, "s")
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        with(h, "h", m % 60, "m")
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        with(h / 24, "d", h % 24, "h")
    } else if h < 24 * 365 * 2 {
        format!("{}d", h / 24)
    } else if h < 24 * 365 * 8 {
        with(h / 24 / 365, "y", (h / 24) % 365, "d")
    } else {
        format!("{}y", h / 24 / 365)
    }
}

fn row(columns: &[Column], obj: &Value, include: &str) -> Value {
    let cells: Vec<Value> = columns
        .iter()
        .map(|c| match &c.cell {
            Cell::Name => json!(text(obj, "metadata.name", "")),
            Cell::Age => json!(since(&text(obj, "metadata.creationTimestamp", ""))),
            Cell::Fn(f) => f(obj),
            Cell::Containers(template, field) => containers_of(obj, template, field),
            Cell::Path(path, kind) => match (json_path(obj, path), kind.as_str()) {
                (Some(v), "date") => json!(since(v.as_str().unwrap_or_default())),
                (Some(Value::String(s)), _) => json!(s),
                (Some(v @ (Value::Number(_) | Value::Bool(_))), _) => v,
                (Some(v), _) => json!(v.to_string()),
                (None, _) => Value::Null,
            },
        })
        .collect();
    let mut row = json!({"cells": cells});
    match include {
        "None" => {}
        "Object" => row["object"] = obj.clone(),
        _ => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
            })
        }
    }
    row
}

/// `body` (an object, or a list of them) as a Table of `version`; `include` is the
/// request's `includeObject` (`None`, `Metadata`, `Object`).
pub fn of(
    rt: &ResourceType,
    crd: Option<&Value>,
    request_version: &str,
    body: &Value,
    table_version: &str,
    include: &str,
) -> Value {
    let columns = columns(rt, crd, request_version);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.kind, "format": c.format,
                   "description": format!("{} of the {}", c.name, rt.kind), "priority": c.priority})
        })
        .collect();
    let (items, metadata) = match body.get("items").and_then(Value::as_array) {
        Some(items) => (
            items.clone(),
            body.get("metadata").cloned().unwrap_or_else(|| json!({})),
        ),
        None => (
            vec![body.clone()],
            json!({"resourceVersion": text(body, "metadata.resourceVersion", "")}),
        ),
    };
    let rows: Vec<Value> = items.iter().map(|o| row(&columns, o, include)).collect();
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{table_version}"),
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_kubectl_sends_asks_for_a_v1_table() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(wanted(kubectl), Some("v1"));
        assert_eq!(
            wanted("application/json;as=Table;v=v1beta1;g=meta.k8s.io"),
            Some("v1beta1")
        );
        assert_eq!(wanted("application/json"), None);
        assert_eq!(
            wanted("application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"),
            None
        );
    }

    #[test]
    fn ages_read_as_the_real_server_prints_them() {
        for (seconds, shown) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (3 * 86400, "3d"),
            (3 * 86400 + 3600, "3d1h"),
            (400 * 86400, "400d"),
            (3 * 365 * 86400, "3y"),
        ] {
            assert_eq!(human(seconds), shown, "{seconds}");
        }
    }
}
