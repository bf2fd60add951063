//! Turning any tool's JSON payload into a submission, declaratively.
//!
//! Each field of the mapping is either a JSON pointer into the payload (RFC 6901, starting
//! with `/`) or a constant (starting with `=`):
//!
//! ```toml
//! [hooks.ci.map]
//! cluster = "/client_payload/cluster"
//! action = "=apply"
//! manifests = "/client_payload/manifests"   # an array of objects or a YAML string
//! idempotency_key = "/client_payload/key"
//! pipeline = "/repository/full_name"
//! execution = "/client_payload/run_id"      # numbers are taken as their decimal text
//! ```

use longshore_contract::settings::ConfigError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingConfig {
    pub cluster: Option<String>,
    pub action: Option<String>,
    pub manifests: Option<String>,
    pub targets: Option<String>,
    pub idempotency_key: Option<String>,
    pub pipeline: Option<String>,
    pub execution: Option<String>,
    pub stage: Option<String>,
    pub attempt: Option<String>,
    pub dry_run: Option<String>,
}

/// How a field's value is found.
enum Source<'a> {
    Pointer(&'a str),
    Constant(&'a str),
}

fn source(spec: &str) -> Option<Source<'_>> {
    if spec.starts_with('/') {
        Some(Source::Pointer(spec))
    } else {
        spec.strip_prefix('=').map(Source::Constant)
    }
}

impl MappingConfig {
    fn fields(&self) -> [(&'static str, &Option<String>); 10] {
        [
            ("cluster", &self.cluster),
            ("action", &self.action),
            ("manifests", &self.manifests),
            ("targets", &self.targets),
            ("idempotency_key", &self.idempotency_key),
            ("pipeline", &self.pipeline),
            ("execution", &self.execution),
            ("stage", &self.stage),
            ("attempt", &self.attempt),
            ("dry_run", &self.dry_run),
        ]
    }

    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        for (field, spec) in self.fields() {
            if let Some(spec) = spec
                && source(spec).is_none()
            {
                return Err(ConfigError(format!(
                    "{key}.{field}: {spec:?} must be a JSON pointer (\"/a/b\") or a constant (\"=value\")"
                )));
            }
        }
        if self.cluster.is_none() || self.action.is_none() {
            return Err(ConfigError(format!(
                "{key}: cluster and action are required"
            )));
        }
        Ok(())
    }

    /// The submission (as `POST /v1/operations` takes it) that `payload` maps to.
    pub fn apply(&self, payload: &Value) -> Result<Value> {
        let mut out = Map::new();
        let mut pipeline = Map::new();
        for (field, spec) in self.fields() {
            let Some(spec) = spec else { continue };
            let Some(value) = self.lookup(field, spec, payload)? else {
                continue;
            };
            let text = |v: &Value| match v {
                Value::String(s) => Ok(Value::String(s.clone())),
                Value::Number(n) => Ok(Value::String(n.to_string())),
                _ => Err(mapping_error(field, spec, "must be a string or a number")),
            };
            match field {
                "cluster" | "action" => {
                    out.insert(field.into(), text(&value)?);
                }
                "idempotency_key" => {
                    out.insert("idempotencyKey".into(), text(&value)?);
                }
                "manifests" | "targets" => {
                    out.insert(field.into(), value);
                }
                "pipeline" | "execution" | "stage" => {
                    pipeline.insert(field.into(), text(&value)?);
                }
                "attempt" => {
                    let n = match &value {
                        Value::Number(n) => n.as_u64(),
                        Value::String(s) => s.parse().ok(),
                        _ => None,
                    }
                    .filter(|n| *n <= u64::from(u32::MAX))
                    .ok_or_else(|| mapping_error(field, spec, "must be a whole number"))?;
                    pipeline.insert(field.into(), json!(n));
                }
                "dry_run" => {
                    let b = match &value {
                        Value::Bool(b) => *b,
                        Value::String(s) if s == "true" || s == "false" => s == "true",
                        _ => return Err(mapping_error(field, spec, "must be true or false")),
                    };
                    out.insert("options".into(), json!({"dryRun": b}));
                }
                _ => {}
            }
        }
        if !pipeline.is_empty() {
            out.insert("pipeline".into(), Value::Object(pipeline));
        }
        Ok(Value::Object(out))
    }

    fn lookup(&self, field: &str, spec: &str, payload: &Value) -> Result<Option<Value>> {
        match source(spec) {
            Some(Source::Constant(c)) => Ok(Some(Value::String(c.to_owned()))),
            Some(Source::Pointer(p)) => match payload.pointer(p) {
                Some(Value::Null) | None if is_optional(field) => Ok(None),
                Some(Value::Null) | None => {
                    Err(mapping_error(field, spec, "not found in the payload"))
                }
                Some(v) => Ok(Some(v.clone())),
            },
            None => Err(mapping_error(field, spec, "is not a pointer or a constant")),
        }
    }
}

fn is_optional(field: &str) -> bool {
    !matches!(field, "cluster" | "action")
}

fn mapping_error(field: &str, spec: &str, reason: &str) -> Error {
    Error::field(format!("map.{field} ({spec})"), reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> MappingConfig {
        MappingConfig {
            cluster: Some("/client_payload/cluster".into()),
            action: Some("=apply".into()),
            manifests: Some("/client_payload/manifests".into()),
            idempotency_key: Some("/client_payload/key".into()),
            pipeline: Some("/repository/full_name".into()),
            execution: Some("/client_payload/run_id".into()),
            attempt: Some("/client_payload/attempt".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_payload_maps_to_a_submission() {
        let payload = json!({"repository": {"full_name": "acme/shop"}, "client_payload": {
            "cluster": "prod", "manifests": "kind: ConfigMap", "key": "k1", "run_id": 981, "attempt": "2"}});
        let s = mapping().apply(&payload).unwrap();
        assert_eq!(
            s,
            json!({"cluster": "prod", "action": "apply", "manifests": "kind: ConfigMap", "idempotencyKey": "k1",
                   "pipeline": {"pipeline": "acme/shop", "execution": "981", "attempt": 2}})
        );
    }

    #[test]
    fn missing_required_fields_name_the_pointer() {
        let err = mapping().apply(&json!({"client_payload": {}})).unwrap_err();
        assert!(
            err.to_string()
                .contains("map.cluster (/client_payload/cluster): not found"),
            "{err}"
        );
    }

    #[test]
    fn bad_specs_are_refused_at_start() {
        let m = MappingConfig {
            cluster: Some("client_payload.cluster".into()),
            ..mapping()
        };
        assert!(
            m.validate("hooks.gh.map")
                .unwrap_err()
                .to_string()
                .contains("hooks.gh.map.cluster")
        );
    }
}
