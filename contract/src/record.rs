//! The status record of an operation, kept in the `LONGSHORE_OPERATIONS` bucket under the
//! operation id. It never holds manifests: they may carry Secret data.

use serde::{Deserialize, Serialize};

use crate::{Envelope, IdempotencyKey, OperationId, spec::Action};

/// Where an operation is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Accepted: in the work queue, not yet claimed by a worker.
    Queued,
    /// Claimed by a worker, which is applying it.
    Running,
    Succeeded,
    Failed,
    /// Not applied: a later operation had already been applied to its objects.
    Superseded,
    /// Failed after exhausting its deliveries; a copy is in the dead-letter stream.
    DeadLettered,
    /// Not applied: its fleet rollout had halted or was cancelled before it first started.
    Cancelled,
}

impl State {
    /// A terminal operation is never applied again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, State::Queued | State::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Superseded => "superseded",
            State::DeadLettered => "dead_lettered",
            State::Cancelled => "cancelled",
        }
    }
}

/// What an operation did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
    Deleted,
    NotFound,
    Superseded,
}

/// The result for one object of an operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectResult {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// For a dry run: the fields the change would make, by path. The values of a Secret's
    /// `data` and `stringData` are never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<Vec<FieldChange>>,
    /// For `run-job`: how the Job ended (after a wait) and its logs, when reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobResult>,
}

/// One field a dry run would change. `before` is absent for an added field, `after` for a
/// removed one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// A dotted path, list items by index: `spec.template.spec.containers[0].image`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
}

/// What became of a Job started by `run-job`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    /// `complete`, `failed`, or `running` (when the operation did not wait).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The end of its pods' logs, when the cluster serves them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
}

/// A fixed set of error classes, for records, metrics labels and retry decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The request or a manifest is invalid (the API server said 400 or 422).
    Invalid,
    /// Not allowed (401 or 403).
    Forbidden,
    /// The target (or its kind, or its namespace) does not exist.
    NotFound,
    /// A conflict the operation cannot resolve by retrying (e.g. a field manager conflict).
    Conflict,
    /// The worker does not know the cluster.
    UnknownCluster,
    /// The message itself is unreadable.
    Malformed,
    /// Retries were exhausted on transient failures (throttling, 5xx, timeouts, resets).
    Transient,
    /// A waited-for object failed to become ready (e.g. `ProgressDeadlineExceeded`, a
    /// failed Job).
    Rollout,
    /// A waited-for object was not ready within `options.wait.timeout`.
    Timeout,
    /// Not started: the fleet rollout it belongs to had halted or was cancelled.
    Cancelled,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 10] = [
        ErrorClass::Invalid,
        ErrorClass::Forbidden,
        ErrorClass::NotFound,
        ErrorClass::Conflict,
        ErrorClass::UnknownCluster,
        ErrorClass::Malformed,
        ErrorClass::Transient,
        ErrorClass::Rollout,
        ErrorClass::Timeout,
        ErrorClass::Cancelled,
    ];
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub class: ErrorClass,
    pub message: String,
}

/// How an operation ends, for [`OperationRecord::finish`].
#[derive(Clone, Debug, PartialEq)]
pub enum End {
    Succeeded,
    /// Every object was superseded: nothing of this operation was applied.
    Superseded,
    Failed(ErrorInfo),
    /// Deliveries exhausted; a copy is in the dead-letter stream.
    DeadLettered(ErrorInfo),
    /// Not started: its rollout is over (the reason's class is `cancelled`).
    Cancelled(ErrorInfo),
}

impl End {
    pub fn state(&self) -> State {
        match self {
            End::Succeeded => State::Succeeded,
            End::Superseded => State::Superseded,
            End::Failed(_) => State::Failed,
            End::DeadLettered(_) => State::DeadLettered,
            End::Cancelled(_) => State::Cancelled,
        }
    }

    pub fn error(&self) -> Option<&ErrorInfo> {
        match self {
            End::Failed(e) | End::DeadLettered(e) | End::Cancelled(e) => Some(e),
            End::Succeeded | End::Superseded => None,
        }
    }
}

/// The status of an operation as pipelines read it (`GET /v1/operations/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationRecord {
    pub id: OperationId,
    pub idempotency_key: IdempotencyKey,
    pub source: String,
    pub fingerprint: String,
    pub cluster: String,
    pub action: Action,
    pub state: State,
    /// The work-queue stream sequence of the message, once a worker has seen it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_sequence: Option<u64>,
    /// How many times a worker has started this operation.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    pub submitted_at: jiff::Timestamp,
    pub updated_at: jiff::Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ObjectResult>,
    /// While the worker waits for its objects to become stable: how far they are, e.g.
    /// `apps/v1/Deployment default/web: 2/3 replicas updated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<crate::spec::PipelineContext>,
    /// The fleet rollout it is one cluster's part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::RolloutLink>,
    /// In a final record: the fence keys of the objects whose effect is in. This record
    /// releases those fences (and the others it held): the next operation on each object
    /// reads it to learn that the holder ended and whether the object has its intent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied_fences: Vec<String>,
}

impl OperationRecord {
    /// The `queued` record of an accepted envelope.
    pub fn queued(envelope: &Envelope) -> Self {
        Self {
            id: envelope.id.clone(),
            idempotency_key: envelope.idempotency_key.clone(),
            source: envelope.source.clone(),
            fingerprint: envelope.fingerprint.clone(),
            cluster: envelope.spec.cluster.to_string(),
            action: envelope.spec.action,
            state: State::Queued,
            stream_sequence: None,
            attempts: 0,
            worker: None,
            submitted_at: envelope.submitted_at,
            updated_at: envelope.submitted_at,
            started_at: None,
            finished_at: None,
            results: Vec::new(),
            progress: None,
            error: None,
            trace_id: None,
            pipeline: envelope.spec.pipeline.clone(),
            rollout: envelope.rollout.clone(),
            applied_fences: Vec::new(),
        }
    }

    /// A worker starts (or restarts, after a redelivery) the operation.
    pub fn start(&mut self, worker: &str, stream_sequence: u64, now: jiff::Timestamp) {
        self.state = State::Running;
        self.progress = None;
        self.attempts += 1;
        self.worker = Some(worker.to_owned());
        self.started_at = Some(now);
        self.updated_at = now;
        self.stream_sequence = Some(stream_sequence);
    }

    /// How far a running operation's wait is.
    pub fn show_progress(&mut self, progress: &str, now: jiff::Timestamp) {
        self.progress = Some(progress.to_owned());
        self.updated_at = now;
    }

    /// The operation ends as `end` says, with its per-object results, recorded by `worker`.
    pub fn finish(
        &mut self,
        end: End,
        results: Vec<ObjectResult>,
        worker: &str,
        now: jiff::Timestamp,
    ) {
        let (state, error) = match end {
            End::Succeeded => (State::Succeeded, None),
            End::Superseded => (State::Superseded, None),
            End::Failed(error) => (State::Failed, Some(error)),
            End::DeadLettered(error) => (State::DeadLettered, Some(error)),
            End::Cancelled(error) => (State::Cancelled, Some(error)),
        };
        self.state = state;
        self.results = results;
        self.error = error;
        self.finished_at = Some(now);
        self.updated_at = now;
        self.worker = Some(worker.to_owned());
    }

    /// A dead-lettered operation goes back to the queue (a retry): as if just accepted,
    /// its history of attempts kept.
    pub fn requeue(&mut self, now: jiff::Timestamp) {
        self.state = State::Queued;
        self.error = None;
        self.worker = None;
        self.updated_at = now;
    }

    pub fn to_bytes(&self) -> bytes::Bytes {
        // A record is plain data with string keys: serialising it cannot fail.
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_queued_and_running_are_open() {
        assert!(!State::Queued.is_terminal());
        assert!(!State::Running.is_terminal());
        for s in [
            State::Succeeded,
            State::Failed,
            State::Superseded,
            State::DeadLettered,
            State::Cancelled,
        ] {
            assert!(s.is_terminal(), "{s:?}");
        }
    }

    #[test]
    fn a_record_moves_through_its_states_by_its_methods() {
        let env = crate::envelope::tests_support::sample();
        let mut rec = OperationRecord::queued(&env);
        let t0 = jiff::Timestamp::now();
        rec.start("w1", 7, t0);
        assert_eq!((rec.state, rec.attempts), (State::Running, 1));
        assert_eq!(rec.stream_sequence, Some(7));
        rec.show_progress("1/3 replicas", t0);
        rec.start("w2", 9, t0);
        assert_eq!(rec.attempts, 2, "a redelivery counts");
        assert_eq!(rec.progress, None, "progress belongs to an attempt");
        let error = ErrorInfo {
            class: ErrorClass::Transient,
            message: "gave up".into(),
        };
        rec.finish(End::DeadLettered(error.clone()), Vec::new(), "w2", t0);
        assert_eq!(rec.state, State::DeadLettered);
        assert_eq!(rec.error.as_ref(), Some(&error));
        assert_eq!(rec.finished_at, Some(t0));
        rec.requeue(t0);
        assert_eq!(
            (rec.state, rec.error.clone(), rec.worker.clone()),
            (State::Queued, None, None)
        );
        assert_eq!(rec.attempts, 2, "kept across a retry");
        rec.start("w3", 12, t0);
        rec.finish(End::Succeeded, Vec::new(), "w3", t0);
        assert_eq!((rec.state, rec.error.clone()), (State::Succeeded, None));
    }

    #[test]
    fn a_queued_record_names_the_operation_but_holds_no_manifest() {
        let env = crate::envelope::tests_support::sample();
        let rec = OperationRecord::queued(&env);
        let json = String::from_utf8(rec.to_bytes().to_vec()).unwrap();
        assert!(json.contains(env.id.as_str()));
        assert!(json.contains("\"state\":\"queued\""));
        assert!(
            !json.contains("ConfigMap"),
            "record must not carry manifests: {json}"
        );
        assert_eq!(OperationRecord::from_bytes(json.as_bytes()).unwrap(), rec);
    }
}
