//! The actions, one file each, and what they share. [`act`] is the one place an action
//! is chosen; below the verbs sit the pieces they all use: [`target`] (the object, its
//! client, reads), [`result`] (what is reported, dry-run diffs), [`stamp`] (the operation
//! id on what is written, one way for every action).
//!
//! Every action is idempotent, so a redelivered operation (its worker died before
//! acknowledging, or the API server committed a write whose answer was lost) does no harm:
//!
//! - [`apply`] (server-side apply) and [`replace`] converge: the same content again
//!   changes nothing;
//! - [`create`] recognises an object it created itself by its stamp;
//! - [`patch`] is not sent again when the object already carries this operation's stamp;
//! - [`delete`] counts a missing object as done;
//! - [`scale`] sets an absolute count;
//! - [`rollout`]: restart stamps the pod template once, pause and resume set a state,
//!   undo is not repeated once stamped;
//! - [`job`] (`run-job`) creates its Job under a name derived from the operation id.
//!
//! Each has a server-side dry run that reports the fields it would change.

pub mod apply;
pub mod create;
pub mod delete;
pub mod job;
pub mod patch;
pub mod replace;
pub mod result;
pub mod rollout;
pub mod scale;
pub mod stamp;
pub mod target;

use kube::api::{PatchParams, PostParams};
use longshore_contract::Envelope;
use longshore_contract::record::ObjectResult;
use longshore_contract::spec::{Action, Options};
use serde_json::Value;

pub use crate::actions::stamp::OPERATION_ID_ANNOTATION;
pub use crate::actions::target::Target;
use crate::clusters::Cluster;
use crate::error::OpError;

/// One action on one object: what every verb is given.
pub struct Act<'a> {
    pub cluster: &'a Cluster,
    pub envelope: &'a Envelope,
    pub target: &'a Target,
    /// The object's manifest, for the actions that take manifests.
    pub manifest: Option<&'a Value>,
    /// Nothing may have written this object for this operation yet: the operation's first
    /// attempt (its first delivery, queued in this pool, no earlier attempt recorded), and
    /// the first of its steps on the object. An action may then skip reads that only tell
    /// its own earlier write apart.
    pub first_write: bool,
}

/// Carries out the operation's action on one object.
pub async fn act(a: &Act<'_>) -> Result<ObjectResult, OpError> {
    match a.envelope.spec.action {
        Action::Apply => apply::run(a).await,
        Action::Create => create::run(a).await,
        Action::Replace => replace::run(a).await,
        Action::Patch => patch::run(a).await,
        Action::Delete => delete::run(a).await,
        Action::Scale => scale::run(a).await,
        Action::RolloutRestart => rollout::restart(a).await,
        Action::RolloutPause => rollout::set_paused(a, true).await,
        Action::RolloutResume => rollout::set_paused(a, false).await,
        Action::RolloutUndo => rollout::undo(a).await,
        Action::RunJob => job::run(a).await,
    }
}

impl Act<'_> {
    pub fn id(&self) -> &str {
        self.envelope.id.as_str()
    }

    pub fn options(&self) -> &Options {
        &self.envelope.spec.options
    }

    pub fn dry_run(&self) -> bool {
        self.options().dry_run
    }

    /// The manifest as it is written: namespace settled, stamped with the operation.
    pub fn body(&self) -> Value {
        let mut body = self.manifest.cloned().unwrap_or(Value::Null);
        target::settle_namespace(&mut body, &self.target.object);
        stamp::stamp(&mut body, self.id());
        body
    }

    /// Parameters of a create or replace: dry run, field manager.
    pub fn post_params(&self) -> PostParams {
        PostParams {
            dry_run: self.dry_run(),
            field_manager: Some(self.options().field_manager.clone()),
        }
    }

    /// Parameters of a patch: dry run, field manager.
    pub fn patch_params(&self) -> PatchParams {
        PatchParams {
            dry_run: self.dry_run(),
            field_manager: Some(self.options().field_manager.clone()),
            ..Default::default()
        }
    }

    /// The manifest as a Kubernetes object, or why it is not one.
    pub fn typed(&self, body: Value) -> Result<kube::api::DynamicObject, OpError> {
        serde_json::from_value(body).map_err(|e| OpError::Manifest {
            object: self.target.object.to_string(),
            reason: format!("not a Kubernetes object: {e}"),
        })
    }
}
