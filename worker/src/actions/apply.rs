//! `apply`: server-side apply of the manifest, with the operation's field manager (force
//! on by default: a pipeline's manifest is the intent). The same content again changes
//! nothing, so a redelivery is harmless.

use kube::api::{Patch, PatchParams};
use longshore_contract::record::ObjectResult;

use super::target::{get, is_status};
use super::{Act, result};
use crate::error::{OpError, Verb};

pub async fn run(a: &Act<'_>) -> Result<ObjectResult, OpError> {
    let (cluster, t) = (a.cluster, a.target);
    let mut params = PatchParams::apply(&a.options().field_manager);
    params.force = a.options().force;
    params.dry_run = a.dry_run();
    let before = get(cluster, t, Verb::Get).await?;
    let body = a.body();
    let patch = Patch::Apply(&body);
    let call = t.api.patch(&t.object.name, &params, &patch);
    let after = match cluster.call(Verb::Apply, &t.object, call).await {
        Ok(after) => after,
        Err(e) => {
            if is_status(&e, 404) {
                // The kind may have gone away since it was discovered.
                cluster.forget(&t.object).await;
            }
            return Err(e);
        }
    };
    Ok(result::written(
        &t.object,
        a.dry_run(),
        before.as_ref(),
        &after,
    ))
}
