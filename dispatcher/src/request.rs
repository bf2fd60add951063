//! Reading a submission: the JSON body of `POST /v1/operations`, turned into a validated
//! [`OperationSpec`] and the idempotency key the client gave, if any.
//!
//! Manifests may be JSON objects or one YAML string holding several documents (as
//! `kubectl apply -f` reads them); `kind: List` documents are expanded into their items.

use std::collections::BTreeSet;

use longshore_contract::{
    ClusterName, IdempotencyKey, OperationSpec,
    spec::{
        Action, ActionParams, FieldError, ObjectRef, Options, Param, PatchSpec, PipelineContext,
    },
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The top-level fields every submission may carry; the parameters some actions take
/// ([`Param`]: `replicas`, `toRevision`) come from the table of what actions accept.
const COMMON_FIELDS: &[&str] = &[
    "cluster",
    "action",
    "manifests",
    "targets",
    "patch",
    "options",
    "pipeline",
    "idempotencyKey",
];

fn known_fields() -> Vec<&'static str> {
    COMMON_FIELDS
        .iter()
        .copied()
        .chain(Param::ALL.map(Param::field))
        .collect()
}

/// A parsed, validated submission.
#[derive(Debug)]
pub struct Submission {
    pub spec: OperationSpec,
    /// The key from the `Idempotency-Key` header or the body's `idempotencyKey`.
    pub key: Option<IdempotencyKey>,
}

/// The clusters a submission may name.
pub trait Clusters {
    fn knows(&self, cluster: &ClusterName) -> bool;
    /// Which ones there are, for the error naming an unknown one.
    fn describe(&self) -> String;
}

impl Clusters for BTreeSet<ClusterName> {
    fn knows(&self, cluster: &ClusterName) -> bool {
        self.contains(cluster)
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self.iter().map(ClusterName::as_str).collect();
        format!("known clusters: {}", names.join(", "))
    }
}

/// Parses and validates a submission body against the known clusters.
///
/// Each top-level field is read on its own, so a problem is reported under the field it is
/// in (`replicas`, `options.dryRun`, `targets[0].kind`), a missing field under its own
/// name, and every field's problem at once rather than the first.
pub fn parse(body: &[u8], header_key: Option<&str>, clusters: &dyn Clusters) -> Result<Submission> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Error::MalformedJson(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(Error::field("", "the body must be a JSON object"));
    };
    let known = known_fields();
    if let Some(unknown) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(Error::field(
            unknown.clone(),
            format!("unknown field; expected one of {}", known.join(", ")),
        ));
    }
    let key = idempotency_key(obj.remove("idempotencyKey"), header_key)?;
    let mut fields = Fields {
        obj,
        errors: Vec::new(),
    };
    let cluster = fields
        .required::<ClusterName>("cluster")
        .and_then(|c| fields.known_cluster(c, clusters));
    let action = fields.required::<Action>("action");
    let manifests = match fields.obj.remove("manifests") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(v) => manifests_from(v)
            .map_err(|e| fields.errors.extend(self::fields(&e)))
            .ok(),
    };
    let targets = fields.optional::<Vec<ObjectRef>>("targets");
    let patch = fields.optional::<PatchSpec>("patch");
    let replicas = fields.optional::<i32>(Param::Replicas.field());
    let to_revision = fields.optional::<i64>(Param::ToRevision.field());
    let options = fields.optional::<Options>("options");
    let pipeline = fields.optional::<PipelineContext>("pipeline");
    let (Some(cluster), Some(action), Some(manifests), Some(targets), Some(patch)) =
        (cluster, action, manifests, targets, patch)
    else {
        return Err(Error::Invalid(fields.errors));
    };
    let (Some(replicas), Some(to_revision), Some(options), Some(pipeline)) =
        (replicas, to_revision, options, pipeline)
    else {
        return Err(Error::Invalid(fields.errors));
    };
    if !fields.errors.is_empty() {
        return Err(Error::Invalid(fields.errors));
    }
    let spec = OperationSpec {
        cluster,
        action,
        manifests,
        targets: targets.unwrap_or_default(),
        patch,
        params: ActionParams {
            replicas,
            to_revision,
        },
        options: options.unwrap_or_default(),
        pipeline,
    };
    spec.validate().map_err(Error::Invalid)?;
    check_names(&spec)?;
    Ok(Submission { spec, key })
}

/// The fields of a submission still to be read, and the problems found so far.
struct Fields {
    obj: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    /// A field that must be there. `None` (with the problem noted) if it is missing or
    /// of the wrong type.
    fn required<T: DeserializeOwned>(&mut self, name: &str) -> Option<T> {
        match self.obj.remove(name) {
            None | Some(Value::Null) => {
                self.errors.push(FieldError::new(name, "is required"));
                None
            }
            Some(value) => self.read(name, value),
        }
    }

    /// A field that may be left out: `Some(None)` when it is, `None` (with the problem
    /// noted) when it is there but not of its type.
    fn optional<T: DeserializeOwned>(&mut self, name: &str) -> Option<Option<T>> {
        match self.obj.remove(name) {
            None | Some(Value::Null) => Some(None),
            Some(value) => self.read(name, value).map(Some),
        }
    }

    fn read<T: DeserializeOwned>(&mut self, name: &str, value: Value) -> Option<T> {
        match serde_path_to_error::deserialize(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(located(name, &e));
                None
            }
        }
    }

    fn known_cluster(&mut self, name: ClusterName, clusters: &dyn Clusters) -> Option<ClusterName> {
        if clusters.knows(&name) {
            return Some(name);
        }
        self.errors.push(FieldError::new(
            "cluster",
            format!(
                "unknown cluster {:?}; {}",
                name.as_str(),
                clusters.describe()
            ),
        ));
        None
    }
}

/// A deserialisation problem inside field `name`, at the path it happened: `options.dryRun`
/// for a type error, `patch.body` for a missing field (serde names it only in the message).
pub(crate) fn located(name: &str, e: &serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let join = |base: &str, rest: &str| match (base.is_empty(), rest.starts_with('[')) {
        (true, _) => rest.to_owned(),
        (false, true) => format!("{base}{rest}"),
        (false, false) => format!("{base}.{rest}"),
    };
    let path = e.path().to_string();
    let field = if path == "." {
        name.to_owned()
    } else {
        join(name, &path)
    };
    let reason = e.inner().to_string();
    // serde_json appends " at line 1 column 5": meaningless for a value inside the body.
    let reason = match reason.rfind(" at line ") {
        Some(at) => reason[..at].to_owned(),
        None => reason,
    };
    let quoted = |prefix: &str| {
        reason
            .strip_prefix(prefix)
            .and_then(|r| r.split_once('`'))
            .map(|(name, _)| name.to_owned())
    };
    if let Some(missing) = quoted("missing field `") {
        return FieldError::new(join(&field, &missing), "is required");
    }
    if let Some(unknown) = quoted("unknown field `") {
        // The path already ends at the unknown field.
        let at = if field == unknown || field.ends_with(&format!(".{unknown}")) {
            field
        } else {
            join(&field, &unknown)
        };
        return FieldError::new(at, reason.clone());
    }
    FieldError::new(field, reason)
}

/// A JSON object body of type `T`, or 400 naming the field at fault.
pub(crate) fn read_object<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Error::MalformedJson(e.to_string()))?;
    if !value.is_object() {
        return Err(Error::field("", "the body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| Error::Invalid(vec![located("", &e)]))
}

/// Refuses names no Kubernetes object can have, whatever its kind: a name must be a path
/// segment (not `.` or `..`, no `/` or `%`, no control characters, at most 253 bytes) and a
/// namespace a DNS label. Kind-specific rules are the API server's to apply.
fn check_names(spec: &OperationSpec) -> Result<()> {
    let mut errors = Vec::new();
    let mut check = |field: String, name: Option<&str>, namespace: Option<&str>| {
        if let Some(name) = name
            && let Err(reason) = path_segment(name)
        {
            errors.push(FieldError::new(format!("{field}.name"), reason));
        }
        if let Some(ns) = namespace
            && ClusterName::new(ns.to_owned()).is_err()
        {
            errors.push(FieldError::new(
                format!("{field}.namespace"),
                format!(
                    "{ns:?} is not a valid namespace: at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
                ),
            ));
        }
    };
    for (i, m) in spec.manifests.iter().enumerate() {
        let meta = m.get("metadata");
        check(
            format!("manifests[{i}].metadata"),
            meta.and_then(|m| m.get("name")).and_then(Value::as_str),
            meta.and_then(|m| m.get("namespace"))
                .and_then(Value::as_str),
        );
    }
    for (i, t) in spec.targets.iter().enumerate() {
        check(
            format!("targets[{i}]"),
            Some(&t.name),
            t.namespace.as_deref(),
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(errors))
    }
}

fn path_segment(name: &str) -> Result<(), String> {
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid name"));
    }
    if name.len() > 253 {
        return Err("must be at most 253 bytes".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == '%' || c.is_control())
    {
        return Err(format!(
            "{name:?} is not a valid name: it may not contain {c:?}"
        ));
    }
    Ok(())
}

fn idempotency_key(
    body_key: Option<Value>,
    header_key: Option<&str>,
) -> Result<Option<IdempotencyKey>> {
    let body_key = match body_key {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(Error::field("idempotencyKey", "must be a string")),
    };
    let key = match (header_key, body_key) {
        (Some(h), Some(b)) if h != b => {
            return Err(Error::field(
                "idempotencyKey",
                "differs from the Idempotency-Key header",
            ));
        }
        (Some(h), _) => Some(h.to_owned()),
        (None, b) => b,
    };
    key.map(|k| IdempotencyKey::new(k).map_err(|reason| Error::field("idempotencyKey", reason)))
        .transpose()
}

/// Manifests as given: an array of objects, or a YAML (or JSON) multi-document string.
fn manifests_from(value: Value) -> Result<Vec<Value>> {
    let docs = match value {
        Value::Array(items) => items,
        Value::String(text) => serde_saphyr::from_multiple::<Value>(&text)
            .map_err(|e| Error::field("manifests", format!("invalid YAML: {}", yaml_reason(&e))))?
            .into_iter()
            .filter(|doc| !doc.is_null())
            .collect(),
        _ => {
            return Err(Error::field(
                "manifests",
                "must be an array of objects or a YAML string",
            ));
        }
    };
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        match list_items(&doc) {
            Some(items) => out.extend(items.iter().cloned()),
            None => out.push(doc),
        }
    }
    Ok(out)
}

/// The parser's reason and location, without the excerpt of the input it adds after the
/// first line: the input may be a Secret, and error messages must not carry its data.
fn yaml_reason(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    first.chars().take(200).collect()
}

/// The items of a `kind: List` (or `*List`) document.
fn list_items(doc: &Value) -> Option<&Vec<Value>> {
    let kind = doc.get("kind")?.as_str()?;
    if kind.ends_with("List") && doc.get("metadata").and_then(|m| m.get("name")).is_none() {
        doc.get("items")?.as_array()
    } else {
        None
    }
}

/// The idempotency key a pipeline's context implies when it gives none: its pipeline,
/// execution and stage, all three required. `attempt` is left out on purpose: a pipeline
/// that retries a stage sends the next attempt number, and the retry must find the same
/// operation, not start a second one.
pub fn pipeline_key(p: &PipelineContext) -> Option<IdempotencyKey> {
    let (Some(pipeline), Some(execution), Some(stage)) = (&p.pipeline, &p.execution, &p.stage)
    else {
        return None;
    };
    // A JSON array keeps the parts apart whatever characters they hold.
    let parts = serde_json::to_string(&[pipeline, execution, stage]).ok()?;
    let key = format!("pipeline:{parts}");
    let key = if key.len() <= longshore_contract::id::MAX_KEY_LEN {
        key
    } else {
        format!(
            "pipeline:sha256:{}",
            longshore_contract::id::fingerprint(&Value::String(parts))
        )
    };
    IdempotencyKey::new(key).ok()
}

/// Field errors as the client should see them.
pub fn fields(err: &Error) -> Vec<FieldError> {
    match err {
        Error::Invalid(errors) => errors.clone(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use longshore_contract::Action;
    use serde_json::json;

    fn clusters() -> BTreeSet<ClusterName> {
        ["prod", "staging"]
            .into_iter()
            .map(|c| ClusterName::new(c).unwrap())
            .collect()
    }

    fn parse_json(v: Value, header: Option<&str>) -> Result<Submission> {
        parse(v.to_string().as_bytes(), header, &clusters())
    }

    fn field_of(r: Result<Submission>) -> String {
        fields(&r.unwrap_err())
            .first()
            .map(|e| e.field.clone())
            .unwrap_or_default()
    }

    #[test]
    fn yaml_manifests_are_split_into_documents() {
        let yaml = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: shop\ndata:\n  a: \"1\"\n---\n";
        let s = parse_json(
            json!({"cluster": "prod", "action": "apply", "manifests": yaml}),
            None,
        )
        .unwrap();
        assert_eq!(s.spec.action, Action::Apply);
        assert_eq!(s.spec.manifests.len(), 2);
        assert_eq!(s.spec.manifests[1]["data"]["a"], "1");
    }

    #[test]
    fn action_parameters_are_top_level_fields() {
        let target = json!({"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "web", "name": "api"});
        let s = parse_json(
            json!({"cluster": "prod", "action": "scale", "replicas": 5, "targets": [target]}),
            None,
        )
        .unwrap();
        assert_eq!(s.spec.params.replicas, Some(5));
        let s = parse_json(
            json!({"cluster": "prod", "action": "rollout-undo", "toRevision": 2, "targets": [target]}),
            None,
        )
        .unwrap();
        assert_eq!(s.spec.params.to_revision, Some(2));
    }

    #[test]
    fn list_documents_are_expanded() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}]});
        let s = parse_json(
            json!({"cluster": "prod", "action": "apply", "manifests": [list]}),
            None,
        )
        .unwrap();
        assert_eq!(s.spec.manifests.len(), 2);
    }

    #[test]
    fn unknown_cluster_is_named_with_the_known_ones() {
        let err = parse_json(
            json!({"cluster": "prdo", "action": "apply", "manifests": []}),
            None,
        )
        .unwrap_err();
        let e = &fields(&err)[0];
        assert_eq!(e.field, "cluster");
        assert!(e.reason.contains("prod, staging"), "{}", e.reason);
    }

    #[test]
    fn each_kind_of_bad_input_names_its_field() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        assert_eq!(
            field_of(parse_json(
                json!({"cluster": "prod", "action": "aply", "manifests": [cm]}),
                None
            )),
            "action"
        );
        assert_eq!(
            field_of(parse_json(
                json!({"cluster": "prod", "action": "apply", "manifests": [cm], "extra": 1}),
                None
            )),
            "extra"
        );
        assert_eq!(
            field_of(parse_json(
                json!({"cluster": "prod", "action": "apply", "manifests": [{"kind": "X"}]}),
                None
            )),
            "manifests[0].apiVersion"
        );
        assert_eq!(
            field_of(parse_json(
                json!({"cluster": "prod", "action": "apply", "manifests": "a: [unclosed"}),
                None
            )),
            "manifests"
        );
        assert_eq!(
            field_of(parse_json(
                json!({"cluster": "prod", "action": "apply", "manifests": [cm], "options": {"dryRun": "yes"}}),
                None
            )),
            "options.dryRun"
        );
        assert_eq!(
            field_of(parse_json(
                json!({"cluster": "prod", "action": "apply", "manifests": [cm], "idempotencyKey": "a"}),
                Some("b")
            )),
            "idempotencyKey"
        );
        assert!(matches!(
            parse(b"{not json", None, &clusters()),
            Err(Error::MalformedJson(_))
        ));
        assert!(matches!(
            parse(b"[]", None, &clusters()),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn type_errors_and_missing_fields_name_their_field() {
        let target = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"});
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        let cases = [
            (
                json!({"cluster": "prod", "action": "scale", "replicas": "5", "targets": [target]}),
                "replicas",
            ),
            (
                json!({"cluster": "prod", "action": "rollout-undo", "toRevision": "2", "targets": [target]}),
                "toRevision",
            ),
            (json!({"action": "apply", "manifests": [cm]}), "cluster"),
            (json!({"cluster": "prod", "manifests": [cm]}), "action"),
            (
                json!({"cluster": 7, "action": "apply", "manifests": [cm]}),
                "cluster",
            ),
            (
                json!({"cluster": "prod", "action": "patch", "targets": [target], "patch": {"type": "merge"}}),
                "patch.body",
            ),
            (
                json!({"cluster": "prod", "action": "apply", "manifests": [cm], "pipeline": {"attempt": "x"}}),
                "pipeline.attempt",
            ),
        ];
        for (body, field) in cases {
            let err = parse_json(body.clone(), None).unwrap_err();
            let errors = fields(&err);
            assert_eq!(
                errors.first().map(|e| e.field.as_str()),
                Some(field),
                "{body}: {err}"
            );
            assert!(errors.iter().all(|e| !e.field.is_empty()), "{errors:?}");
        }
    }

    #[test]
    fn names_no_object_can_have_are_refused() {
        let cm = |name: &str, ns: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}});
        let submit = |m: Value| {
            parse_json(
                json!({"cluster": "prod", "action": "apply", "manifests": [m]}),
                None,
            )
        };
        assert_eq!(
            field_of(submit(cm("../secrets", "default"))),
            "manifests[0].metadata.name"
        );
        assert_eq!(
            field_of(submit(cm("..", "default"))),
            "manifests[0].metadata.name"
        );
        assert_eq!(
            field_of(submit(cm("a", "Kube_System"))),
            "manifests[0].metadata.namespace"
        );
        // Kind-specific rules (a ConfigMap's name is a DNS subdomain) are the API server's.
        submit(cm("Upper_Case", "default")).unwrap();
    }

    #[test]
    fn the_key_comes_from_the_header_or_the_body() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        let s = parse_json(
            json!({"cluster": "prod", "action": "apply", "manifests": [cm]}),
            Some("k1"),
        )
        .unwrap();
        assert_eq!(s.key.unwrap().as_str(), "k1");
        let s = parse_json(json!({"cluster": "prod", "action": "apply", "manifests": [cm], "idempotencyKey": "k2"}), None).unwrap();
        assert_eq!(s.key.unwrap().as_str(), "k2");
    }

    #[test]
    fn yaml_errors_do_not_quote_the_input() {
        let yaml = "kind: Secret\nstringData:\n  password: hunter2\n  x: [unclosed\n";
        let err = parse_json(
            json!({"cluster": "prod", "action": "apply", "manifests": yaml}),
            None,
        )
        .unwrap_err();
        let reason = &fields(&err)[0].reason;
        assert!(reason.contains("line 4"), "{reason}");
        assert!(!reason.contains("hunter2"), "{reason}");
    }

    #[test]
    fn an_anchor_bomb_is_refused_not_expanded() {
        let mut yaml = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut prev = 'a';
        for name in 'b'..='j' {
            yaml.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = name;
        }
        let body = json!({"cluster": "prod", "action": "apply", "manifests": yaml});
        assert_eq!(field_of(parse_json(body, None)), "manifests");
    }
}
