//! What an action reports for one object: its outcome, its resourceVersion and uid, and for
//! a dry run the fields the change would make ([`crate::diff`]).

use kube::api::DynamicObject;
use longshore_contract::record::{ObjectResult, Outcome};
use longshore_contract::spec::ObjectRef;

/// The result for `object`, with the version and uid of the object as `written`.
pub fn result(
    object: &ObjectRef,
    outcome: Outcome,
    written: Option<&DynamicObject>,
) -> ObjectResult {
    let meta = written.map(|o| &o.metadata);
    ObjectResult {
        api_version: object.api_version.clone(),
        kind: object.kind.clone(),
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        outcome,
        resource_version: meta.and_then(|m| m.resource_version.clone()),
        uid: meta.and_then(|m| m.uid.clone()),
        diff: None,
        job: None,
    }
}

/// The outcome of a write, from the object's resourceVersion before and after it.
pub fn write_outcome(before: Option<&DynamicObject>, after: &DynamicObject) -> Outcome {
    let version = |o: &DynamicObject| o.metadata.resource_version.clone();
    match before {
        None => Outcome::Created,
        Some(b) if version(b) == version(after) => Outcome::Unchanged,
        Some(_) => Outcome::Configured,
    }
}

/// The result of a write that took `object` from `before` to `after`: the outcome by
/// [`write_outcome`], and for a dry run the diff.
pub fn written(
    object: &ObjectRef,
    dry_run: bool,
    before: Option<&DynamicObject>,
    after: &DynamicObject,
) -> ObjectResult {
    let outcome = write_outcome(before, after);
    with_diff(
        result(object, outcome, Some(after)),
        dry_run,
        before,
        Some(after),
    )
}

/// The result for an object left as it was (already in the state asked for).
pub fn unchanged(object: &ObjectRef, dry_run: bool, current: &DynamicObject) -> ObjectResult {
    with_diff(
        result(object, Outcome::Unchanged, Some(current)),
        dry_run,
        Some(current),
        Some(current),
    )
}

/// For a dry run, adds to `result` what the change would do to the object, and settles
/// its outcome from that: a dry-run write leaves the resourceVersion as it was, so an
/// existing object is `configured` when the change would alter it (what the real write
/// would report), `unchanged` only when it would not.
pub fn with_diff(
    mut result: ObjectResult,
    dry_run: bool,
    before: Option<&DynamicObject>,
    after: Option<&DynamicObject>,
) -> ObjectResult {
    if dry_run {
        let value = |o: Option<&DynamicObject>| o.and_then(|o| serde_json::to_value(o).ok());
        let kind = result.kind.clone();
        let diff = crate::diff::changes(&kind, value(before).as_ref(), value(after).as_ref());
        if matches!(result.outcome, Outcome::Unchanged | Outcome::Configured) {
            result.outcome = if diff.is_empty() {
                Outcome::Unchanged
            } else {
                Outcome::Configured
            };
        }
        result.diff = Some(diff);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "web", "resourceVersion": version}}))
        .unwrap()
    }

    #[test]
    fn outcome_follows_the_resource_version() {
        assert_eq!(write_outcome(None, &at("5")), Outcome::Created);
        assert_eq!(write_outcome(Some(&at("5")), &at("5")), Outcome::Unchanged);
        assert_eq!(write_outcome(Some(&at("5")), &at("6")), Outcome::Configured);
    }
}
