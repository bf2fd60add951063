//! `replace`: a PUT of the whole object over what is there now. If the object changes
//! before the PUT lands, the API server's 409 is retried (see `policy`); the same content
//! again changes nothing.

use longshore_contract::record::ObjectResult;

use super::target::existing;
use super::{Act, result};
use crate::error::{OpError, Verb};

pub async fn run(a: &Act<'_>) -> Result<ObjectResult, OpError> {
    let (cluster, t) = (a.cluster, a.target);
    let mut object = a.typed(a.body())?;
    let current = existing(cluster, t, Verb::Replace).await?;
    object.metadata.resource_version = current.metadata.resource_version.clone();
    let replaced = cluster
        .call(
            Verb::Replace,
            &t.object,
            t.api.replace(&t.object.name, &a.post_params(), &object),
        )
        .await?;
    Ok(result::written(
        &t.object,
        a.dry_run(),
        Some(&current),
        &replaced,
    ))
}
