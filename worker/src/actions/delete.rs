//! `delete`: deletes the object with the operation's propagation policy; one that is
//! already gone counts as done (`not_found`), so a redelivery is harmless.

use kube::api::DeleteParams;
use longshore_contract::record::{ObjectResult, Outcome};
use longshore_contract::spec::PropagationPolicy;

use super::target::{get, is_status};
use super::{Act, result};
use crate::error::{OpError, Verb};

pub async fn run(a: &Act<'_>) -> Result<ObjectResult, OpError> {
    let (cluster, t) = (a.cluster, a.target);
    let params = DeleteParams {
        dry_run: a.dry_run(),
        propagation_policy: a.options().propagation_policy.map(|p| match p {
            PropagationPolicy::Foreground => kube::api::PropagationPolicy::Foreground,
            PropagationPolicy::Background => kube::api::PropagationPolicy::Background,
            PropagationPolicy::Orphan => kube::api::PropagationPolicy::Orphan,
        }),
        ..Default::default()
    };
    // A dry run reports what would go: the object as it is.
    let before = if params.dry_run {
        get(cluster, t, Verb::Get).await?
    } else {
        None
    };
    match cluster
        .call(
            Verb::Delete,
            &t.object,
            t.api.delete(&t.object.name, &params),
        )
        .await
    {
        // Left: deletion started (finalizers pending); Right: gone.
        Ok(either) => Ok(result::with_diff(
            result::result(&t.object, Outcome::Deleted, either.left().as_ref()),
            params.dry_run,
            before.as_ref(),
            None,
        )),
        Err(e) if is_status(&e, 404) => Ok(result::result(&t.object, Outcome::NotFound, None)),
        Err(e) => Err(e),
    }
}
