//! Checking an [`OperationSpec`] against the table of what its action accepts
//! ([`Action::accepts`]), and everything else that can be checked without a cluster.

use serde_json::Value;

use super::action::{Objects, Param, Takes};
use super::object::{check_job_manifest, check_manifest};
use super::{Action, FieldError, MAX_WAIT, OperationSpec, PatchType};

impl OperationSpec {
    /// Checks everything that can be checked without a cluster, returning every problem.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        self.check_objects(&mut errors);
        self.check_shape(&mut errors);
        self.check_kinds(&mut errors);
        self.check_params(&mut errors);
        self.check_options(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Each manifest and target on its own.
    fn check_objects(&self, errors: &mut Vec<FieldError>) {
        for (i, manifest) in self.manifests.iter().enumerate() {
            let checked = if self.action == Action::RunJob {
                check_job_manifest(manifest)
            } else {
                check_manifest(manifest)
            };
            if let Err(e) = checked {
                errors.push(FieldError::new(
                    format!("manifests[{i}]{}", e.field),
                    e.reason,
                ));
            }
        }
        for (i, target) in self.targets.iter().enumerate() {
            for (field, value) in [
                ("apiVersion", &target.api_version),
                ("kind", &target.kind),
                ("name", &target.name),
            ] {
                if value.is_empty() {
                    errors.push(FieldError::new(
                        format!("targets[{i}].{field}"),
                        "must not be empty",
                    ));
                }
            }
        }
    }

    /// Manifests, targets and patch as the action's row says.
    fn check_shape(&self, errors: &mut Vec<FieldError>) {
        let action = self.action.as_str();
        let accepts = self.action.accepts();
        let (manifests, targets) = (self.manifests.len(), self.targets.len());
        match accepts.objects {
            Objects::Manifests { exactly_one } => {
                if exactly_one && manifests != 1 {
                    errors.push(FieldError::new(
                        "manifests",
                        format!("{action} needs exactly one manifest"),
                    ));
                } else if manifests == 0 {
                    errors.push(FieldError::new(
                        "manifests",
                        format!("{action} needs at least one manifest"),
                    ));
                }
                if targets > 0 {
                    errors.push(FieldError::new(
                        "targets",
                        format!("{action} takes manifests, not targets"),
                    ));
                }
            }
            Objects::Targets => {
                if targets == 0 {
                    errors.push(FieldError::new(
                        "targets",
                        format!("{action} needs at least one target"),
                    ));
                }
                if manifests > 0 {
                    errors.push(FieldError::new(
                        "manifests",
                        format!("{action} takes targets, not manifests"),
                    ));
                }
            }
            Objects::Either => {
                if manifests + targets == 0 {
                    errors.push(FieldError::new(
                        "targets",
                        format!("{action} needs targets or manifests"),
                    ));
                }
            }
        }
        match (&self.patch, accepts.patch) {
            (None, true) => errors.push(FieldError::new(
                "patch",
                format!("{action} needs a patch {{type, body}}"),
            )),
            (Some(p), true) => {
                let shape_ok = match p.patch_type {
                    PatchType::Json => p.body.is_array(),
                    PatchType::Merge | PatchType::Strategic => p.body.is_object(),
                };
                if !shape_ok {
                    errors.push(FieldError::new(
                        "patch.body",
                        "a json patch is an array of operations; merge and strategic patches are objects",
                    ));
                }
            }
            (Some(_), false) => {
                errors.push(FieldError::new("patch", format!("{action} takes no patch")))
            }
            (None, false) => {}
        }
    }

    /// The kinds an action is limited to, if it is.
    fn check_kinds(&self, errors: &mut Vec<FieldError>) {
        let Some(kinds) = self.action.accepts().kinds else {
            return;
        };
        let action = self.action.as_str();
        let allowed = kinds.join(", ");
        let given = self
            .manifests
            .iter()
            .enumerate()
            .map(|(i, m)| ("manifests", i, m.get("kind").and_then(Value::as_str)))
            .chain(
                self.targets
                    .iter()
                    .enumerate()
                    .map(|(i, t)| ("targets", i, Some(t.kind.as_str()))),
            );
        for (place, i, kind) in given {
            if let Some(kind) = kind.filter(|k| !k.is_empty() && !kinds.contains(k)) {
                errors.push(FieldError::new(
                    format!("{place}[{i}].kind"),
                    format!("{action} works on {allowed}, not {kind}"),
                ));
            }
        }
    }

    /// `replicas` and `toRevision`: only where the table has them, and in range.
    fn check_params(&self, errors: &mut Vec<FieldError>) {
        let action = self.action.as_str();
        let accepts = self.action.accepts();
        for param in Param::ALL {
            let field = param.field();
            let given = match param {
                Param::Replicas => self.params.replicas.map(i64::from),
                Param::ToRevision => self.params.to_revision,
            };
            match (param.rule(&accepts), given) {
                (Takes::Required, None) => errors.push(FieldError::new(
                    field,
                    format!("{action} needs {}", describe(param)),
                )),
                (Takes::No, Some(_)) => {
                    let takers: Vec<&str> = Action::ALL
                        .into_iter()
                        .filter(|a| param.rule(&a.accepts()) != Takes::No)
                        .map(Action::as_str)
                        .collect();
                    errors.push(FieldError::new(
                        field,
                        format!("only {} takes {field}, not {action}", takers.join(", ")),
                    ));
                }
                (_, Some(n)) => {
                    if let Some(reason) = out_of_range(param, n) {
                        errors.push(FieldError::new(field, reason));
                    }
                }
                (_, None) => {}
            }
        }
    }

    fn check_options(&self, errors: &mut Vec<FieldError>) {
        if let Some(wait) = &self.options.wait {
            if wait.timeout.is_zero() || wait.timeout > MAX_WAIT {
                errors.push(FieldError::new(
                    "options.wait.timeout",
                    "must be more than 0s and at most 1h",
                ));
            }
            if !self.action.accepts().waits {
                errors.push(FieldError::new(
                    "options.wait",
                    format!(
                        "{} does not wait: there is nothing left to become ready",
                        self.action.as_str()
                    ),
                ));
            }
            if self.options.dry_run {
                errors.push(FieldError::new(
                    "options.wait",
                    "a dry run changes nothing, so there is nothing to wait for",
                ));
            }
        }
        if self.options.field_manager.is_empty() || self.options.field_manager.len() > 128 {
            errors.push(FieldError::new(
                "options.fieldManager",
                "must be 1 to 128 characters",
            ));
        }
    }
}

fn describe(param: Param) -> &'static str {
    match param {
        Param::Replicas => "a replica count",
        Param::ToRevision => "a revision",
    }
}

fn out_of_range(param: Param, n: i64) -> Option<&'static str> {
    match param {
        Param::Replicas if n < 0 => Some("must not be negative"),
        Param::ToRevision if n < 1 => {
            Some("must be 1 or more (leave it out for the previous revision)")
        }
        _ => None,
    }
}
