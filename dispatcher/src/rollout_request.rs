//! Reading a fleet rollout submission (`POST /v1/fleet-rollouts`): the template, checked
//! as one operation would be; the selection, resolved against the registry once; the
//! strategy, with its waves laid over the resolved clusters. Every problem names its field
//! (`template.manifests[0].kind`, `clusters.names[2]`, `strategy.waves[1]`).

use std::collections::BTreeSet;

use longshore_contract::labels::Labels;
use longshore_contract::rollout::{self, Selection, Strategy};
use longshore_contract::spec::FieldError;
use longshore_contract::{ClusterName, IdempotencyKey, OperationSpec};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::request;

const FIELDS: &[&str] = &["template", "clusters", "strategy", "idempotencyKey"];

/// A rollout as submitted, before it has an id.
#[derive(Debug)]
pub struct Proposal {
    /// With the first selected cluster as its cluster.
    pub template: OperationSpec,
    pub selection: Selection,
    pub strategy: Strategy,
    pub clusters: Vec<ClusterName>,
    pub wave_ends: Vec<usize>,
    pub key: Option<IdempotencyKey>,
    /// Of everything but the key: a key reused with another body is refused.
    pub fingerprint: String,
}

/// Parses `body`; `registered` is every registered cluster with its labels.
pub fn parse(
    body: &[u8],
    header_key: Option<&str>,
    registered: &[(ClusterName, Labels)],
) -> Result<Proposal> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Error::MalformedJson(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(Error::field("", "the body must be a JSON object"));
    };
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(Error::field(
            unknown.clone(),
            format!("unknown field; expected one of {}", FIELDS.join(", ")),
        ));
    }
    let key = match (obj.remove("idempotencyKey"), header_key) {
        (Some(Value::String(k)), _) => Some(k),
        (Some(_), _) => return Err(Error::field("idempotencyKey", "must be a string")),
        (None, header) => header.map(str::to_owned),
    }
    .map(|k| IdempotencyKey::new(k).map_err(|r| Error::field("idempotencyKey", r)))
    .transpose()?;
    let fingerprint = longshore_contract::id::fingerprint(&Value::Object(obj.clone()));

    let mut errors = Vec::new();
    let selection = match obj.remove("clusters") {
        None => {
            errors.push(FieldError::new(
                "clusters",
                "is required: {\"selector\": \"env=prod\"} or {\"names\": [...]}",
            ));
            None
        }
        Some(v) => serde_json::from_value::<Selection>(v)
            .map_err(|e| {
                errors.push(FieldError::new(
                    "clusters",
                    format!("{e}: expected {{\"selector\": \"env=prod\"}} or {{\"names\": [...]}}"),
                ))
            })
            .ok(),
    };
    let strategy = match obj.remove("strategy") {
        None => {
            errors.push(FieldError::new(
                "strategy",
                "is required, with at least its waves: {\"waves\": [1, \"10%\", \"100%\"]}",
            ));
            None
        }
        Some(v) => match serde_json::from_value::<Strategy>(v) {
            Ok(s) => {
                errors.extend(s.check());
                Some(s)
            }
            Err(e) => {
                errors.push(FieldError::new("strategy", e.to_string()));
                None
            }
        },
    };
    let template = match obj.remove("template") {
        Some(Value::Object(t)) => Some(t),
        Some(_) => {
            errors.push(FieldError::new(
                "template",
                "must be an object: the operation each cluster gets (action, manifests or targets, options)",
            ));
            None
        }
        None => {
            errors.push(FieldError::new(
                "template",
                "is required: the operation each cluster gets",
            ));
            None
        }
    };
    let (Some(selection), Some(strategy), Some(template)) = (selection, strategy, template) else {
        return Err(Error::Invalid(errors));
    };
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let clusters = rollout::resolve(
        &selection,
        strategy.order_by.as_deref(),
        registered.iter().map(|(n, l)| (n, l)),
    )
    .map_err(Error::Invalid)?;
    let wave_ends = rollout::plan(&strategy.waves, clusters.len()).map_err(|e| {
        Error::Invalid(vec![FieldError::new(
            e.field,
            format!(
                "{} (the selection resolved to {} clusters)",
                e.reason,
                clusters.len()
            ),
        )])
    })?;
    let template = parse_template(template, &clusters[0])?;
    Ok(Proposal {
        template,
        selection,
        strategy,
        clusters,
        wave_ends,
        key,
        fingerprint,
    })
}

/// The template, read as an operation on `cluster` with every problem under `template.`.
fn parse_template(
    mut template: Map<String, Value>,
    cluster: &ClusterName,
) -> Result<OperationSpec> {
    for field in ["cluster", "idempotencyKey"] {
        if template.contains_key(field) {
            return Err(Error::field(
                format!("template.{field}"),
                "not part of a template: `clusters` selects the clusters, and the rollout's key makes each operation's",
            ));
        }
    }
    template.insert("cluster".into(), Value::String(cluster.to_string()));
    let known: BTreeSet<ClusterName> = [cluster.clone()].into();
    let body = Value::Object(template).to_string();
    request::parse(body.as_bytes(), None, &known)
        .map(|s| s.spec)
        .map_err(|e| match e {
            Error::Invalid(errors) => Error::Invalid(
                errors
                    .into_iter()
                    .map(|f| FieldError::new(prefixed(&f.field), f.reason))
                    .collect(),
            ),
            other => other,
        })
}

fn prefixed(field: &str) -> String {
    if field.is_empty() {
        "template".into()
    } else {
        format!("template.{field}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fleet() -> Vec<(ClusterName, Labels)> {
        (0..10)
            .map(|i| {
                let mut labels = Labels::new();
                labels.insert("env".into(), if i < 8 { "prod" } else { "dev" }.into());
                (ClusterName::new(format!("c{i}")).unwrap(), labels)
            })
            .collect()
    }

    fn body(tweak: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v = json!({
            "template": {"action": "apply", "manifests": [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default"}}
            ]},
            "clusters": {"selector": "env=prod"},
            "strategy": {"waves": [1, "50%", "100%"]},
        });
        tweak(&mut v);
        v.to_string().into_bytes()
    }

    type Tweak = Box<dyn FnOnce(&mut Value)>;

    fn fields_of(e: Error) -> Vec<String> {
        request::fields(&e).into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn a_selector_resolves_once_into_waves() {
        let p = parse(&body(|_| {}), Some("k1"), &fleet()).unwrap();
        assert_eq!(p.clusters.len(), 8);
        assert_eq!(p.wave_ends, [1, 4, 8]);
        assert_eq!(p.template.cluster.as_str(), "c0");
        assert_eq!(p.key.unwrap().as_str(), "k1");
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases: Vec<(Tweak, &str)> = vec![
            (
                Box::new(|v| v["clusters"] = json!({"selector": "env=none"})),
                "clusters.selector",
            ),
            (
                Box::new(|v| v["clusters"] = json!({"names": ["c1", "nope"]})),
                "clusters.names[1]",
            ),
            (
                Box::new(|v| v["strategy"]["waves"] = json!([1, 3])),
                "strategy.waves[1]",
            ),
            (
                Box::new(|v| v["strategy"]["approvalBefore"] = json!([4])),
                "strategy.approvalBefore[0]",
            ),
            (
                Box::new(|v| v["strategy"]["concurrency"] = json!(0)),
                "strategy.concurrency",
            ),
            (
                Box::new(|v| v["template"]["cluster"] = json!("c1")),
                "template.cluster",
            ),
            (
                Box::new(|v| v["template"]["action"] = json!("explode")),
                "template.action",
            ),
            (
                Box::new(|v| v["template"]["manifests"][0]["kind"] = json!(7)),
                "template.manifests[0].kind",
            ),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("template");
                }),
                "template",
            ),
            (Box::new(|v| v["extra"] = json!(1)), "extra"),
            (
                Box::new(|v| v["strategy"]["healthGate"] = json!({"soak": "0s"})),
                "strategy.healthGate.soak",
            ),
        ];
        for (tweak, field) in cases {
            let e = parse(&body(tweak), None, &fleet()).unwrap_err();
            let fields = fields_of(e);
            assert!(fields.iter().any(|f| f == field), "{field}: {fields:?}");
        }
    }

    #[test]
    fn the_fingerprint_is_of_the_request_not_the_key() {
        let a = parse(&body(|_| {}), Some("k1"), &fleet()).unwrap();
        let b = parse(&body(|v| v["idempotencyKey"] = json!("k2")), None, &fleet()).unwrap();
        let c = parse(
            &body(|v| v["strategy"]["waves"] = json!(["100%"])),
            None,
            &fleet(),
        )
        .unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
    }
}
