//! `patch`: one patch body (merge, strategic merge or JSON patch) for every target. A patch
//! need not be idempotent (a JSON patch may append to a list), so it is not sent again to
//! an object that already carries this operation's stamp: an earlier delivery's patch
//! landed there.

use kube::api::Patch;
use longshore_contract::record::ObjectResult;
use longshore_contract::spec::PatchType;
use serde_json::Value;

use super::stamp::{json_patch_ops, stamp, stamped_by};
use super::target::existing;
use super::{Act, result};
use crate::error::{OpError, Verb};

pub async fn run(a: &Act<'_>) -> Result<ObjectResult, OpError> {
    let (cluster, t) = (a.cluster, a.target);
    let Some(spec) = &a.envelope.spec.patch else {
        return Err(OpError::Manifest {
            object: t.object.to_string(),
            reason: "a patch operation needs a patch".into(),
        });
    };
    let current = existing(cluster, t, Verb::Patch).await?;
    if stamped_by(&current, a.id()) {
        return Ok(result::unchanged(&t.object, a.dry_run(), &current));
    }
    let params = a.patch_params();
    let mut body = spec.body.clone();
    let patched = match spec.patch_type {
        PatchType::Merge | PatchType::Strategic => {
            stamp(&mut body, a.id());
            let patch = if spec.patch_type == PatchType::Merge {
                Patch::Merge(&body)
            } else {
                Patch::Strategic(&body)
            };
            let call = t.api.patch(&t.object.name, &params, &patch);
            cluster.call(Verb::Patch, &t.object, call).await?
        }
        PatchType::Json => {
            if let Value::Array(ops) = &mut body {
                ops.extend(json_patch_ops(&current, a.id()));
            }
            let ops: json_patch::Patch =
                serde_json::from_value(body).map_err(|e| OpError::Manifest {
                    object: t.object.to_string(),
                    reason: format!("invalid JSON patch: {e}"),
                })?;
            let patch = Patch::Json::<()>(ops);
            let call = t.api.patch(&t.object.name, &params, &patch);
            cluster.call(Verb::Patch, &t.object, call).await?
        }
    };
    Ok(result::written(
        &t.object,
        a.dry_run(),
        Some(&current),
        &patched,
    ))
}
