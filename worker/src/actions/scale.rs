//! `scale`: sets an absolute replica count through the `/scale` subresource, so a
//! redelivery sets the same count again and changes nothing. The Scale object carries no
//! annotations, so no operation stamp is needed (or possible).

use kube::api::Patch;
use longshore_contract::Envelope;
use longshore_contract::record::{ObjectResult, Outcome};
use serde_json::{Value, json};

use super::patch_params;
use crate::apply::{Target, result};
use crate::clusters::Cluster;
use crate::error::{OpError, Verb};

pub(crate) async fn scale(
    cluster: &Cluster,
    envelope: &Envelope,
    t: &Target,
) -> Result<ObjectResult, OpError> {
    let Some(replicas) = envelope.spec.params.replicas else {
        return Err(OpError::Manifest {
            object: t.object.to_string(),
            reason: "scale needs replicas".into(),
        });
    };
    let before = cluster
        .call(Verb::Get, &t.object, t.api.get_scale(&t.object.name))
        .await?;
    let current = before.spec.as_ref().and_then(|s| s.replicas);
    if current == Some(replicas) {
        let mut out = result(&t.object, Outcome::Unchanged, None);
        out.resource_version = before.metadata.resource_version.clone();
        out.uid = before.metadata.uid.clone();
        if envelope.spec.options.dry_run {
            out.diff = Some(Vec::new());
        }
        return Ok(out);
    }
    let body = json!({"spec": {"replicas": replicas}});
    let params = patch_params(envelope);
    let patch = Patch::Merge(&body);
    let call = t.api.patch_scale(&t.object.name, &params, &patch);
    let after = cluster.call(Verb::Scale, &t.object, call).await?;
    let mut out = result(&t.object, Outcome::Configured, None);
    out.resource_version = after.metadata.resource_version.clone();
    out.uid = after.metadata.uid.clone();
    if params.dry_run {
        let value = |s: &k8s_openapi::api::autoscaling::v1::Scale| json!({"spec": serde_json::to_value(&s.spec).unwrap_or(Value::Null)});
        out.diff = Some(crate::diff::changes(
            "Scale",
            Some(&value(&before)),
            Some(&value(&after)),
        ));
    }
    Ok(out)
}
