//! `create`: creates the object; one that exists already is this operation's own (an
//! earlier delivery created it, and the answer was lost or the worker died) when it
//! carries this operation's stamp, and someone else's otherwise.

use kube::api::{DynamicObject, PostParams};
use longshore_contract::record::{ObjectResult, Outcome};

use super::stamp::stamped_by;
use super::target::{get, is_status};
use super::{Act, result};
use crate::error::{OpError, Verb};

pub async fn run(a: &Act<'_>) -> Result<ObjectResult, OpError> {
    let object = a.typed(a.body())?;
    create(a, &object, &a.post_params()).await
}

/// Creates `object` (stamped already), recognising one this operation created before.
pub async fn create(
    a: &Act<'_>,
    object: &DynamicObject,
    params: &PostParams,
) -> Result<ObjectResult, OpError> {
    let (cluster, t) = (a.cluster, a.target);
    match cluster
        .call(Verb::Create, &t.object, t.api.create(params, object))
        .await
    {
        Ok(created) => Ok(result::with_diff(
            result::result(&t.object, Outcome::Created, Some(&created)),
            params.dry_run,
            None,
            Some(&created),
        )),
        Err(e) if is_status(&e, 409) => {
            let existing = get(cluster, t, Verb::Get).await?;
            if existing.as_ref().is_some_and(|o| stamped_by(o, a.id())) {
                Ok(result::result(
                    &t.object,
                    Outcome::Created,
                    existing.as_ref(),
                ))
            } else {
                Err(OpError::AlreadyExists {
                    object: t.object.to_string(),
                })
            }
        }
        Err(e) => Err(e),
    }
}
