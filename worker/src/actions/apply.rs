//! `apply`: server-side apply of the manifest, with the operation's field manager (force
//! on by default: a pipeline's manifest is the intent). The same content again changes
//! nothing, so a redelivery is harmless.
//!
//! What it reports (created, configured, unchanged) comes from the object before and after.
//! When nothing can have written the object for this operation yet ([`Act::first_write`]),
//! it cannot carry the operation's stamp, so the apply changes it whatever else the
//! manifest says: `created` or `configured` then follow from the API server's answer (201
//! or 200), and the object is not read first. A later attempt (the one before may have
//! written, then died) and a dry run (whose diff needs the object as it was) read it first,
//! and tell `unchanged` by its resourceVersion.

use http_body_util::BodyExt;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::Status;
use longshore_contract::record::{ObjectResult, Outcome};
use serde_json::Value;

use super::target::{Target, get, is_status};
use super::{Act, result};
use crate::error::{OpError, Verb};

pub async fn run(a: &Act<'_>) -> Result<ObjectResult, OpError> {
    let (cluster, t) = (a.cluster, a.target);
    let mut params = PatchParams::apply(&a.options().field_manager);
    params.force = a.options().force;
    params.dry_run = a.dry_run();
    let body = a.body();
    let patch = Patch::Apply(&body);
    let read_first = a.dry_run() || !a.first_write;
    let before = if read_first {
        get(cluster, t, Verb::Get).await?
    } else {
        None
    };
    let applied = cluster
        .call(Verb::Apply, &t.object, apply(t, &params, &patch))
        .await;
    let (after, created) = match applied {
        Ok(answer) => answer,
        Err(e) => {
            if is_status(&e, 404) {
                // The kind may have gone away since it was discovered.
                cluster.forget(&t.object).await;
            }
            return Err(e);
        }
    };
    if read_first {
        return Ok(result::written(
            &t.object,
            a.dry_run(),
            before.as_ref(),
            &after,
        ));
    }
    let outcome = if created {
        Outcome::Created
    } else {
        Outcome::Configured
    };
    Ok(result::result(&t.object, outcome, Some(&after)))
}

/// Sends the server-side apply, and answers the object as written and whether the API
/// server created it (201) rather than changed it (200). Errors are kube's, as
/// `Api::patch` gives them.
async fn apply(
    t: &Target,
    params: &PatchParams,
    patch: &Patch<&Value>,
) -> kube::Result<(DynamicObject, bool)> {
    let mut request = kube::core::Request::new(t.api.resource_url())
        .patch(&t.object.name, params, patch)
        .map_err(kube::Error::BuildRequest)?;
    request.extensions_mut().insert("patch");
    let client = kube::Client::from(t.api.clone());
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let code = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    if code.is_client_error() || code.is_server_error() {
        let text = String::from_utf8_lossy(&bytes);
        let status = serde_json::from_str::<Status>(&text).unwrap_or_else(|_| {
            Status::failure(text.trim(), "Failed to parse error data").with_code(code.as_u16())
        });
        return Err(kube::Error::Api(status.boxed()));
    }
    let object = serde_json::from_slice(&bytes).map_err(kube::Error::SerdeError)?;
    Ok((object, code == http::StatusCode::CREATED))
}
