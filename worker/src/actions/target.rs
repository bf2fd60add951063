//! The object an action works on: its kind resolved, its namespace settled, and a client
//! for it; with the reads every action shares.

use kube::api::{Api, DynamicObject};
use kube::discovery::Scope;
use longshore_contract::spec::ObjectRef;
use serde_json::Value;

use crate::clusters::Cluster;
use crate::error::{OpError, Verb};

/// One object to act on, its kind resolved and its namespace settled.
pub struct Target {
    pub object: ObjectRef,
    pub api: Api<DynamicObject>,
}

/// Resolves `object`'s kind in `cluster` and settles its namespace (`default` for a
/// namespaced kind given none, none for a cluster-scoped kind). `defines_kinds`: an earlier
/// object of the same operation was a CustomResourceDefinition, so a kind the cluster does
/// not serve yet may be about to be.
pub async fn target(
    cluster: &Cluster,
    object: &ObjectRef,
    defines_kinds: bool,
) -> Result<Target, OpError> {
    let (resource, caps) = cluster.resolve(object).await.map_err(|e| match e {
        OpError::UnknownKind { object, kind, .. } => OpError::UnknownKind {
            object,
            kind,
            expected_soon: defines_kinds,
        },
        other => other,
    })?;
    let mut object = object.clone();
    let api = if caps.scope == Scope::Namespaced {
        let namespace = object.namespace.get_or_insert_with(|| "default".into());
        Api::namespaced_with(cluster.client()?, namespace, &resource)
    } else {
        object.namespace = None;
        Api::all_with(cluster.client()?, &resource)
    };
    Ok(Target { object, api })
}

/// Writes the namespace `object` settled on into a manifest (none for a cluster-scoped
/// kind, whatever the manifest said).
pub fn settle_namespace(manifest: &mut Value, object: &ObjectRef) {
    if let Some(meta) = manifest.get_mut("metadata").and_then(Value::as_object_mut) {
        match &object.namespace {
            Some(ns) => meta.insert("namespace".into(), Value::String(ns.clone())),
            None => meta.remove("namespace"),
        };
    }
}

/// The object as it is now, `None` if it does not exist.
pub async fn get(
    cluster: &Cluster,
    t: &Target,
    verb: Verb,
) -> Result<Option<DynamicObject>, OpError> {
    cluster
        .call(verb, &t.object, t.api.get_opt(&t.object.name))
        .await
}

/// The object as it is now; a `NotFound` error naming `verb` if it does not exist.
pub async fn existing(cluster: &Cluster, t: &Target, verb: Verb) -> Result<DynamicObject, OpError> {
    get(cluster, t, verb)
        .await?
        .ok_or_else(|| not_found(verb, &t.object))
}

/// Whether `err` is the API server answering `code`.
pub fn is_status(err: &OpError, code: u16) -> bool {
    matches!(err, OpError::Kube { source: kube::Error::Api(s), .. } if s.code == code)
}

/// The error of `verb` on an object that is not there, as the API server would give it.
pub fn not_found(verb: Verb, object: &ObjectRef) -> OpError {
    let status = kube::core::Status::failure(&format!("{object} not found"), "NotFound")
        .with_code(404)
        .boxed();
    OpError::Kube {
        verb,
        object: object.to_string(),
        source: kube::Error::Api(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_manifest_is_written_in_the_namespace_its_kind_settles_on() {
        let object = |namespace: Option<&str>| ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: namespace.map(Into::into),
            name: "web".into(),
        };
        let mut m = json!({"metadata": {"name": "web"}, "data": {"k": "v"}});
        settle_namespace(&mut m, &object(Some("default")));
        assert_eq!(m["metadata"]["namespace"], "default");
        assert_eq!(m["data"]["k"], "v");
        let mut ns =
            json!({"kind": "Namespace", "metadata": {"name": "x", "namespace": "ignored"}});
        settle_namespace(&mut ns, &object(None));
        assert!(ns["metadata"].get("namespace").is_none());
    }
}
