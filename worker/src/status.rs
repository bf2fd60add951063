//! An operation's status record in the `LONGSHORE_OPERATIONS` bucket, moved through its
//! states with compare-and-set so two workers holding the same operation (a redelivery
//! after `ack_wait`) never overwrite each other's terminal record.

use async_nats::jetstream::kv;
use longshore_contract::record::{ErrorInfo, ObjectResult, OperationRecord, State};
use longshore_contract::{Envelope, OperationId};

use crate::error::OpError;

/// Compare-and-set attempts before giving up on a record another writer keeps changing.
const CAS_ATTEMPTS: usize = 5;

/// The operations bucket, as one worker writes it.
#[derive(Clone)]
pub struct StatusStore {
    kv: kv::Store,
    worker_id: String,
}

/// What claiming an operation found.
#[derive(Debug)]
pub enum Claim {
    /// The operation already finished: acknowledge without touching the cluster.
    Terminal(State),
    /// This worker now holds the operation; its record is `running` at `revision`.
    Running {
        record: Box<OperationRecord>,
        revision: u64,
    },
}

/// How an operation ended.
pub enum Finish {
    Succeeded(Vec<ObjectResult>),
    /// Every object was superseded: nothing of this operation was applied.
    Superseded(Vec<ObjectResult>),
    Failed(Vec<ObjectResult>, ErrorInfo),
    /// Deliveries exhausted; a copy is in the dead-letter stream.
    DeadLettered(Vec<ObjectResult>, ErrorInfo),
}

impl StatusStore {
    pub fn new(kv: kv::Store, worker_id: String) -> Self {
        Self { kv, worker_id }
    }

    /// Marks the operation `running` by this worker, creating the record if it is missing
    /// (the dispatcher writes it first, but a record may have expired or been lost).
    pub async fn claim(&self, envelope: &Envelope, sequence: u64) -> Result<Claim, OpError> {
        let key = envelope.id.as_str();
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read(&envelope.id).await?;
            let (mut record, revision) = match current {
                Some((record, _)) if record.state.is_terminal() => {
                    return Ok(Claim::Terminal(record.state));
                }
                Some((record, revision)) => (record, Some(revision)),
                None => (OperationRecord::queued(envelope), None),
            };
            if record.trace_id.is_none() {
                // A record the dispatcher did not write (lost or expired): keep this trace.
                record.trace_id =
                    longshore_contract::telemetry::trace_id(&tracing::Span::current());
            }
            let now = jiff::Timestamp::now();
            record.state = State::Running;
            record.progress = None;
            record.attempts += 1;
            record.worker = Some(self.worker_id.clone());
            record.started_at = Some(now);
            record.updated_at = now;
            record.stream_sequence = Some(sequence);
            let written = match revision {
                Some(revision) => self
                    .kv
                    .update(key, record.to_bytes(), revision)
                    .await
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
                None => self.kv.create(key, record.to_bytes()).await.map_err(|e| {
                    (
                        e.kind() == kv::CreateErrorKind::AlreadyExists,
                        e.to_string(),
                    )
                }),
            };
            match written {
                Ok(revision) => {
                    return Ok(Claim::Running {
                        record: Box::new(record),
                        revision,
                    });
                }
                // Someone else wrote in between: read again.
                Err((true, _)) => continue,
                Err((false, e)) => return Err(OpError::Status(e)),
            }
        }
        Err(OpError::Status(format!(
            "record {key} kept changing; gave up claiming it"
        )))
    }

    /// Writes the terminal record. If another worker finished the operation first, its
    /// record stands.
    pub async fn finish(
        &self,
        mut record: OperationRecord,
        mut revision: u64,
        finish: Finish,
    ) -> Result<State, OpError> {
        let now = jiff::Timestamp::now();
        let (state, results, error) = match finish {
            Finish::Succeeded(results) => (State::Succeeded, results, None),
            Finish::Superseded(results) => (State::Superseded, results, None),
            Finish::Failed(results, error) => (State::Failed, results, Some(error)),
            Finish::DeadLettered(results, error) => (State::DeadLettered, results, Some(error)),
        };
        for _ in 0..CAS_ATTEMPTS {
            record.state = state;
            record.results = results.clone();
            record.error = error.clone();
            record.finished_at = Some(now);
            record.updated_at = now;
            record.worker = Some(self.worker_id.clone());
            match self
                .kv
                .update(record.id.as_str(), record.to_bytes(), revision)
                .await
            {
                Ok(_) => return Ok(state),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    match self.read(&record.id).await? {
                        Some((theirs, _)) if theirs.state.is_terminal() => {
                            return Ok(theirs.state);
                        }
                        Some((theirs, latest)) => {
                            record = theirs;
                            revision = latest;
                        }
                        None => {
                            return Err(OpError::Status(format!(
                                "record {} disappeared while running",
                                record.id
                            )));
                        }
                    }
                }
                Err(e) => return Err(OpError::Status(e.to_string())),
            }
        }
        Err(OpError::Status(format!(
            "record {} kept changing; gave up finishing it",
            record.id
        )))
    }

    /// Records a failure for an operation that never got as far as a claim (an unreadable
    /// message whose id could still be read). Best effort.
    pub async fn fail_unclaimed(&self, id: &OperationId, error: ErrorInfo) -> Result<(), OpError> {
        self.end_unclaimed(id, None, State::Failed, error).await
    }

    /// Records `dead_lettered` for an operation whose last delivery no worker finished
    /// (found by the sweeper), unless its record is already terminal. Creates the record
    /// from `envelope` if it is missing and the envelope could be read.
    pub async fn dead_letter_unclaimed(
        &self,
        id: &OperationId,
        envelope: Option<&Envelope>,
        error: ErrorInfo,
    ) -> Result<(), OpError> {
        self.end_unclaimed(id, envelope, State::DeadLettered, error)
            .await
    }

    async fn end_unclaimed(
        &self,
        id: &OperationId,
        envelope: Option<&Envelope>,
        state: State,
        error: ErrorInfo,
    ) -> Result<(), OpError> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut record, revision) = match (self.read(id).await?, envelope) {
                (Some((record, _)), _) if record.state.is_terminal() => return Ok(()),
                (Some((record, revision)), _) => (record, Some(revision)),
                (None, Some(envelope)) => (OperationRecord::queued(envelope), None),
                // Without an envelope there is nothing to build a record from.
                (None, None) => return Ok(()),
            };
            let now = jiff::Timestamp::now();
            record.state = state;
            record.error = Some(error.clone());
            record.finished_at = Some(now);
            record.updated_at = now;
            record.worker = Some(self.worker_id.clone());
            let written = match revision {
                Some(revision) => self
                    .kv
                    .update(id.as_str(), record.to_bytes(), revision)
                    .await
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
                None => self
                    .kv
                    .create(id.as_str(), record.to_bytes())
                    .await
                    .map_err(|e| {
                        (
                            e.kind() == kv::CreateErrorKind::AlreadyExists,
                            e.to_string(),
                        )
                    }),
            };
            match written {
                Ok(_) => return Ok(()),
                Err((true, _)) => continue,
                Err((false, e)) => return Err(OpError::Status(e)),
            }
        }
        Err(OpError::Status(format!(
            "record {id} kept changing; gave up recording it {}",
            state.as_str()
        )))
    }

    /// Shows how far a running operation's wait is. Best effort: a record that changed
    /// meanwhile is read again (a few times); a terminal one is left alone, and a failure
    /// only costs the pipeline a progress line.
    pub async fn progress(&self, id: &OperationId, progress: &str) {
        for _ in 0..CAS_ATTEMPTS {
            let (mut record, revision) = match self.read(id).await {
                Ok(Some((record, revision))) if record.state == State::Running => {
                    (record, revision)
                }
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "progress not recorded");
                    return;
                }
            };
            record.progress = Some(progress.to_owned());
            record.updated_at = jiff::Timestamp::now();
            match self
                .kv
                .update(id.as_str(), record.to_bytes(), revision)
                .await
            {
                Ok(_) => return,
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "progress not recorded");
                    return;
                }
            }
        }
    }

    /// The operation's current state, if it has a record.
    pub async fn state(&self, id: &OperationId) -> Result<Option<State>, OpError> {
        Ok(self.read(id).await?.map(|(record, _)| record.state))
    }

    async fn read(&self, id: &OperationId) -> Result<Option<(OperationRecord, u64)>, OpError> {
        let entry = self
            .kv
            .entry(id.as_str())
            .await
            .map_err(|e| OpError::Status(e.to_string()))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let record = OperationRecord::from_bytes(&entry.value)
                    .map_err(|e| OpError::Status(format!("record {id} is unreadable: {e}")))?;
                Ok(Some((record, entry.revision)))
            }
            _ => Ok(None),
        }
    }
}
