//! The actions, and the one table of what each accepts: [`Action::accepts`]. Validation
//! ([`super::OperationSpec::validate`]), the dispatcher's request parser and the worker's
//! planning (which objects, in which order) all read it, so an action's rules are written
//! once.

use serde::{Deserialize, Serialize};

/// The Kubernetes action an operation performs on its objects; [`Action::summary`] says
/// what each does, [`Action::accepts`] what each takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Apply,
    Create,
    Replace,
    Patch,
    Delete,
    Scale,
    RolloutRestart,
    RolloutPause,
    RolloutResume,
    RolloutUndo,
    RunJob,
}

/// Where an action's objects come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objects {
    /// Whole objects in `manifests`: at least one, or exactly one.
    Manifests { exactly_one: bool },
    /// References in `targets`, at least one.
    Targets,
    /// Either, or both: at least one object in all.
    Either,
}

/// Whether an action takes a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takes {
    No,
    Optional,
    Required,
}

/// In which order an operation's objects are written (see the worker's `ordering`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// What others depend on first (Namespaces, definitions, ... workloads, the rest).
    Dependencies,
    /// The reverse: what lives in a namespace before the namespace.
    Reverse,
    /// As submitted.
    AsGiven,
}

/// What one action accepts: the row of the table for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepts {
    pub objects: Objects,
    /// The `patch` field (`{type, body}`): required or refused.
    pub patch: bool,
    /// `replicas`.
    pub replicas: Takes,
    /// `toRevision`.
    pub to_revision: Takes,
    /// The kinds it can act on; `None` for any kind.
    pub kinds: Option<&'static [&'static str]>,
    pub order: Order,
    /// Whether `options.wait` makes sense (after a delete nothing is left to be ready).
    pub waits: bool,
}

/// A parameter only some actions take: its name on the wire and its rule in [`Accepts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    Replicas,
    ToRevision,
}

impl Param {
    pub const ALL: [Param; 2] = [Param::Replicas, Param::ToRevision];

    /// The top-level field of a submission that carries it.
    pub fn field(self) -> &'static str {
        match self {
            Param::Replicas => "replicas",
            Param::ToRevision => "toRevision",
        }
    }

    /// Whether `accepts` takes this parameter.
    pub fn rule(self, accepts: &Accepts) -> Takes {
        match self {
            Param::Replicas => accepts.replicas,
            Param::ToRevision => accepts.to_revision,
        }
    }
}

const WRITE: Accepts = Accepts {
    objects: Objects::Manifests { exactly_one: false },
    patch: false,
    replicas: Takes::No,
    to_revision: Takes::No,
    kinds: None,
    order: Order::Dependencies,
    waits: true,
};

const ON_TARGETS: Accepts = Accepts {
    objects: Objects::Targets,
    patch: false,
    replicas: Takes::No,
    to_revision: Takes::No,
    kinds: None,
    order: Order::AsGiven,
    waits: true,
};

const WORKLOADS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet"];
const DEPLOYMENTS: &[&str] = &["Deployment"];

impl Action {
    /// Every action, in documentation order.
    pub const ALL: [Action; 11] = [
        Action::Apply,
        Action::Create,
        Action::Replace,
        Action::Patch,
        Action::Delete,
        Action::Scale,
        Action::RolloutRestart,
        Action::RolloutPause,
        Action::RolloutResume,
        Action::RolloutUndo,
        Action::RunJob,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Apply => "apply",
            Action::Create => "create",
            Action::Replace => "replace",
            Action::Patch => "patch",
            Action::Delete => "delete",
            Action::Scale => "scale",
            Action::RolloutRestart => "rollout-restart",
            Action::RolloutPause => "rollout-pause",
            Action::RolloutResume => "rollout-resume",
            Action::RolloutUndo => "rollout-undo",
            Action::RunJob => "run-job",
        }
    }

    /// What the action does, in a line (for help texts and docs).
    pub fn summary(self) -> &'static str {
        match self {
            Action::Apply => "Server-side apply of each manifest (creates or updates)",
            Action::Create => {
                "Create each manifest; an object this operation already created counts as done"
            }
            Action::Replace => "Replace (PUT) each manifest",
            Action::Patch => "Patch each target with one patch body",
            Action::Delete => {
                "Delete each target (or each manifest's object); a missing object counts as done"
            }
            Action::Scale => "Set each target's replica count (replicas) through /scale",
            Action::RolloutRestart => "Restart the pods of each target workload",
            Action::RolloutPause => "Pause each target Deployment's rollout",
            Action::RolloutResume => "Resume each target Deployment's rollout",
            Action::RolloutUndo => {
                "Roll each target Deployment back to its previous revision, or to toRevision"
            }
            Action::RunJob => "Create the Job of the one manifest, named after the operation",
        }
    }

    /// The action named `name` on the wire.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// What the action accepts: the table every reader of a submission goes by.
    pub fn accepts(self) -> Accepts {
        match self {
            Action::Apply | Action::Create | Action::Replace => WRITE,
            Action::Patch => Accepts {
                patch: true,
                ..ON_TARGETS
            },
            Action::Delete => Accepts {
                objects: Objects::Either,
                order: Order::Reverse,
                waits: false,
                ..WRITE
            },
            Action::Scale => Accepts {
                replicas: Takes::Required,
                ..ON_TARGETS
            },
            Action::RolloutRestart => Accepts {
                kinds: Some(WORKLOADS),
                ..ON_TARGETS
            },
            Action::RolloutPause | Action::RolloutResume => Accepts {
                kinds: Some(DEPLOYMENTS),
                ..ON_TARGETS
            },
            Action::RolloutUndo => Accepts {
                kinds: Some(DEPLOYMENTS),
                to_revision: Takes::Optional,
                ..ON_TARGETS
            },
            Action::RunJob => Accepts {
                objects: Objects::Manifests { exactly_one: true },
                kinds: Some(&["Job"]),
                order: Order::AsGiven,
                ..WRITE
            },
        }
    }

    /// Whether the action works on object references (`targets`) rather than manifests.
    pub fn takes_targets(self) -> bool {
        self.accepts().objects == Objects::Targets
    }
}
