//! `scale`: sets an absolute replica count through the `/scale` subresource, so a
//! redelivery sets the same count again and changes nothing. The Scale object carries no
//! annotations, so no operation stamp is needed (or possible).

use k8s_openapi::api::autoscaling::v1::Scale;
use kube::api::Patch;
use longshore_contract::record::{ObjectResult, Outcome};
use serde_json::{Value, json};

use super::{Act, result};
use crate::error::{OpError, Verb};

pub async fn run(a: &Act<'_>) -> Result<ObjectResult, OpError> {
    let (cluster, t) = (a.cluster, a.target);
    let Some(replicas) = a.envelope.spec.params.replicas else {
        return Err(OpError::Manifest {
            object: t.object.to_string(),
            reason: "scale needs replicas".into(),
        });
    };
    let before = cluster
        .call(Verb::Get, &t.object, t.api.get_scale(&t.object.name))
        .await?;
    let after = if before.spec.as_ref().and_then(|s| s.replicas) == Some(replicas) {
        before.clone()
    } else {
        let body = json!({"spec": {"replicas": replicas}});
        let (params, patch) = (a.patch_params(), Patch::Merge(&body));
        let call = t.api.patch_scale(&t.object.name, &params, &patch);
        cluster.call(Verb::Scale, &t.object, call).await?
    };
    let outcome = if after.spec == before.spec {
        Outcome::Unchanged
    } else {
        Outcome::Configured
    };
    let mut out = result::result(&t.object, outcome, None);
    out.resource_version = after.metadata.resource_version.clone();
    out.uid = after.metadata.uid.clone();
    if a.dry_run() {
        let value =
            |s: &Scale| json!({"spec": serde_json::to_value(&s.spec).unwrap_or(Value::Null)});
        out.diff = Some(crate::diff::changes(
            "Scale",
            Some(&value(&before)),
            Some(&value(&after)),
        ));
    }
    Ok(out)
}
