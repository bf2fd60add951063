//! An operation's steps: which objects it acts on, in which order and under which fence
//! keys ([`plan`], before any fence is taken), and carrying its action out on each in
//! turn, stopping at the first error ([`carry_out`]), waiting for a CustomResourceDefinition
//! it applied to be Established before its custom resources ([`crate::establish`]). The
//! actions themselves are in [`crate::actions`].

use std::collections::HashSet;

use kube::discovery::Scope;
use longshore_contract::Envelope;
use longshore_contract::record::{ObjectResult, Outcome};
use longshore_contract::spec::{Action, ObjectRef};
use serde_json::{Value, json};

use crate::actions::{self, Act, result::result, target::target};
use crate::clusters::Cluster;
use crate::error::OpError;

/// What an operation did before it finished or stopped.
#[derive(Debug, Default)]
pub struct Report {
    /// One result per object handled, in order.
    pub results: Vec<ObjectResult>,
    /// Why the operation stopped before its last object, if it did.
    pub error: Option<OpError>,
}

/// One object of an operation, planned before any fence is taken.
#[derive(Debug)]
pub struct Step<'a> {
    /// The object, its namespace settled (`default` filled in for namespaced kinds, none
    /// for cluster-scoped ones) where its kind is known.
    pub object: ObjectRef,
    pub manifest: Option<&'a Value>,
    /// The object's fence key; `None` when its kind is neither served nor defined by this
    /// operation (acting on it fails before anything is written).
    pub fence: Option<String>,
    /// A later operation has already been applied to this object: leave it alone.
    pub superseded: bool,
}

/// Lists the objects `envelope` acts on, in order, with their fence keys. Asks the
/// cluster for each kind's scope (cached), so a transient discovery failure fails the plan.
pub async fn plan<'a>(cluster: &Cluster, envelope: &'a Envelope) -> Result<Vec<Step<'a>>, OpError> {
    let spec = &envelope.spec;
    // Objects are addressed either by manifest (apply, create, replace, delete) or by
    // reference (patch, delete).
    let mut work: Vec<(ObjectRef, Option<&Value>)> = match spec.action {
        action if action.takes_targets() => {
            spec.targets.iter().map(|t| (t.clone(), None)).collect()
        }
        // The Job's name comes from the operation id, so a redelivery finds it.
        Action::RunJob => spec
            .manifests
            .iter()
            .filter_map(|m| {
                let mut object = ObjectRef::of_manifest(m).or_else(|| {
                    let mut named = m.clone();
                    named["metadata"]["name"] = json!("-");
                    ObjectRef::of_manifest(&named)
                })?;
                object.name = longshore_contract::spec::job_name(m, &envelope.id);
                Some((object, Some(m)))
            })
            .collect(),
        _ => spec
            .manifests
            .iter()
            .filter_map(|m| ObjectRef::of_manifest(m).map(|r| (r, Some(m))))
            .chain(spec.targets.iter().map(|t| (t.clone(), None)))
            .collect(),
    };
    crate::ordering::sort(spec.action, &mut work, |(object, _)| &object.kind);
    let mut steps = Vec::with_capacity(work.len());
    for (mut object, manifest) in work {
        let scope = match cluster.resolve(&object).await {
            Ok((_, caps)) => Some(caps.scope),
            Err(OpError::UnknownKind { .. }) => defined_scope(envelope, &object),
            Err(e) => return Err(e),
        };
        let fence = scope.map(|scope| {
            if scope == Scope::Namespaced {
                object.namespace.get_or_insert_with(|| "default".into());
            } else {
                object.namespace = None;
            }
            crate::fence::key(&cluster.name, &object)
        });
        steps.push(Step {
            object,
            manifest,
            fence,
            superseded: false,
        });
    }
    Ok(steps)
}

/// The scope of a custom kind defined by a CustomResourceDefinition in the same operation
/// (the cluster cannot tell it yet).
fn defined_scope(envelope: &Envelope, object: &ObjectRef) -> Option<Scope> {
    let (group, _) = object.api_version.rsplit_once('/')?;
    envelope.spec.manifests.iter().find_map(|m| {
        let spec = m.get("spec")?;
        let defines = m.get("kind")? == "CustomResourceDefinition"
            && spec.get("group")? == group
            && spec.get("names")?.get("kind")? == object.kind.as_str();
        match (defines, spec.get("scope")?.as_str()?) {
            (true, "Namespaced") => Some(Scope::Namespaced),
            (true, "Cluster") => Some(Scope::Cluster),
            _ => None,
        }
    })
}

/// Waiting for a CustomResourceDefinition the operation applied before applying objects
/// of its kind: up to `timeout`, with progress written to the operation's record.
pub struct CrdWait<'a> {
    pub status: &'a crate::status::StatusStore,
    pub timeout: std::time::Duration,
}

/// Carries out `envelope`'s action on the planned `steps` of `cluster`, in order, stopping
/// at the first error. Superseded steps are reported, not touched. With a fence `guard`,
/// each write first checks the lease is still trusted. With `crd_wait`, an object whose
/// kind a CRD applied earlier in the operation defines waits for that CRD to be served
/// (a dry run has none: its CRDs are not created). `first_attempt`: no earlier attempt of
/// the operation can have written anything.
pub async fn carry_out(
    cluster: &Cluster,
    envelope: &Envelope,
    steps: &[Step<'_>],
    guard: Option<&crate::fence::Guard>,
    crd_wait: Option<&CrdWait<'_>>,
    first_attempt: bool,
) -> Report {
    let mut report = Report::default();
    let mut defines_kinds = false;
    // The objects written so far in this attempt (an operation may name one twice).
    let mut written: HashSet<String> = HashSet::new();
    // The CRDs applied so far that may not be served yet.
    let mut defined: Vec<crate::establish::Defined> = Vec::new();
    for step in steps {
        let object = &step.object;
        if step.superseded {
            tracing::info!(object = %object, "a later operation was applied to it; leaving it");
            report
                .results
                .push(result(object, Outcome::Superseded, None));
            continue;
        }
        tracing::debug!(object = %object, "acting on object");
        if let Some(wait) = crd_wait
            && let Some(i) = defined.iter().position(|d| d.defines(object))
        {
            let waited = crate::establish::until_served(
                cluster,
                &defined[i],
                object,
                wait.timeout,
                |progress| async move { wait.status.progress(&envelope.id, &progress).await },
            )
            .await;
            if let Err(e) = waited {
                report.error = Some(e);
                return report;
            }
            // Served now: its other objects need not wait.
            defined.remove(i);
        }
        let result = match guard.map_or(Ok(()), crate::fence::Guard::check) {
            Ok(()) => match Box::pin(target(cluster, object, defines_kinds)).await {
                Ok(target) => {
                    let act = Act {
                        cluster,
                        envelope,
                        target: &target,
                        manifest: step.manifest,
                        first_write: written.insert(target.object.to_string()) && first_attempt,
                    };
                    // Boxed: the Kubernetes calls' futures are the largest part of an
                    // operation's; inline, they made every future awaiting them as large.
                    Box::pin(actions::act(&act)).await
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(result) => report.results.push(result),
            Err(e) => {
                report.error = Some(e);
                return report;
            }
        }
        defines_kinds |= object.kind == "CustomResourceDefinition";
        defined.extend(step.manifest.and_then(crate::establish::Defined::of));
    }
    report
}
