//! The deploy actions pipelines expect besides writing manifests, each idempotent under
//! redelivery and each with a server-side dry run that reports what it would change:
//!
//! - [`scale`]: an absolute replica count through `/scale`;
//! - [`rollout`]: restart (a pod-template stamp of the operation), pause and resume
//!   (`spec.paused`), undo (a ReplicaSet's template, found by its revision, as kubectl
//!   does);
//! - [`job`]: `run-job`, a Job under a name derived from the operation id.

pub mod job;
pub mod rollout;
pub mod scale;

use kube::api::{Patch, PatchParams};
use longshore_contract::Envelope;
use longshore_contract::record::ObjectResult;
use longshore_contract::spec::Action;
use serde_json::{Value, json};

use crate::apply::{OPERATION_ID_ANNOTATION, Target};
use crate::clusters::Cluster;
use crate::error::{OpError, Verb};

/// Carries out one of the deploy actions on one object.
pub(crate) async fn act(
    cluster: &Cluster,
    envelope: &Envelope,
    target: &Target,
    manifest: Option<&Value>,
) -> Result<ObjectResult, OpError> {
    match envelope.spec.action {
        Action::Scale => scale::scale(cluster, envelope, target).await,
        Action::RolloutRestart => rollout::restart(cluster, envelope, target).await,
        Action::RolloutPause => rollout::set_paused(cluster, envelope, target, true).await,
        Action::RolloutResume => rollout::set_paused(cluster, envelope, target, false).await,
        Action::RolloutUndo => rollout::undo(cluster, envelope, target).await,
        Action::RunJob => job::run(cluster, envelope, target, manifest).await,
        other => Err(OpError::Manifest {
            object: target.object.to_string(),
            reason: format!("{} is not a deploy action", other.as_str()),
        }),
    }
}

/// The write parameters of an operation: its field manager, and dry run.
fn patch_params(envelope: &Envelope) -> PatchParams {
    PatchParams {
        dry_run: envelope.spec.options.dry_run,
        field_manager: Some(envelope.spec.options.field_manager.clone()),
        ..Default::default()
    }
}

/// Sends a merge patch that also stamps the operation id on the object.
async fn merge_stamped(
    cluster: &Cluster,
    envelope: &Envelope,
    t: &Target,
    mut body: Value,
) -> Result<kube::api::DynamicObject, OpError> {
    body["metadata"]["annotations"][OPERATION_ID_ANNOTATION] = json!(envelope.id.as_str());
    let (params, patch) = (patch_params(envelope), Patch::Merge(&body));
    let call = t.api.patch(&t.object.name, &params, &patch);
    cluster.call(Verb::Patch, &t.object, call).await
}
