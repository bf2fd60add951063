//! An operation's status record in the `LONGSHORE_OPERATIONS` bucket, moved through its
//! states with compare-and-set (the [`Store`]) so two workers holding the same operation (a
//! redelivery after `ack_wait`) never overwrite each other's terminal record. The state
//! changes themselves are the record's methods ([`OperationRecord::start`], `finish`, ...).

use longshore_contract::jetstream::OPERATIONS_BUCKET;
use longshore_contract::record::{End, ErrorInfo, ObjectResult, OperationRecord, State};
use longshore_contract::store::{Change, Modified, Store, Versioned};
use longshore_contract::{Envelope, OperationId};

use crate::error::OpError;

/// The operations bucket, as one worker writes it.
#[derive(Clone)]
pub struct StatusStore {
    records: Store<OperationRecord>,
    worker_id: String,
}

/// What claiming an operation found.
#[derive(Debug)]
pub enum Claim {
    /// The operation already finished: acknowledge without touching the cluster.
    Terminal(State),
    /// This worker now holds the operation; its record is `running`.
    Running(Box<Versioned<OperationRecord>>),
}

impl StatusStore {
    pub fn new(kv: async_nats::jetstream::kv::Store, worker_id: String) -> Self {
        Self {
            records: Store::new(kv, OPERATIONS_BUCKET),
            worker_id,
        }
    }

    /// Marks the operation `running` by this worker, creating the record if it is missing
    /// (the dispatcher writes it first, but a record may have expired or been lost).
    pub async fn claim(
        &self,
        envelope: &Envelope,
        sequence: u64,
        written: Option<(u64, Option<String>)>,
    ) -> Result<Claim, OpError> {
        let now = jiff::Timestamp::now();
        // The dispatcher's `queued` record, as it wrote it at that revision (what it holds
        // follows from the envelope and the trace id the message carries): with it the claim
        // is one compare-and-set, not a read and one. If the record has moved on since (a
        // redelivery, a retry from the dead letters), the compare-and-set fails and the
        // record is read: nothing is lost but that request.
        let known = written.map(|(revision, trace_id)| {
            let mut value = OperationRecord::queued(envelope);
            value.trace_id = trace_id;
            Versioned { value, revision }
        });
        let modified = self
            .records
            .modify(envelope.id.as_str(), known, |current| {
                let mut record = match current {
                    Some(record) if record.state.is_terminal() => return Ok(Change::Keep),
                    Some(record) => record.clone(),
                    None => {
                        // A record the dispatcher did not write (lost or expired): this
                        // delivery's trace stands for the operation's.
                        let mut record = OperationRecord::queued(envelope);
                        record.trace_id =
                            longshore_contract::telemetry::trace_id(&tracing::Span::current());
                        record
                    }
                };
                record.start(&self.worker_id, sequence, now);
                Ok::<_, OpError>(Change::Write(record))
            })
            .await?;
        match modified {
            Modified::Written(running) => Ok(Claim::Running(Box::new(running))),
            Modified::Kept(Some(done)) => Ok(Claim::Terminal(done.value.state)),
            Modified::Kept(None) | Modified::Deleted => Err(OpError::Status(format!(
                "record {} vanished while being claimed",
                envelope.id
            ))),
        }
    }

    /// Writes the terminal record, starting from the `running` one this worker wrote. If
    /// another worker finished the operation first, its record stands: its state is
    /// returned.
    pub async fn finish(
        &self,
        running: Versioned<OperationRecord>,
        end: End,
        results: Vec<ObjectResult>,
    ) -> Result<State, OpError> {
        let id = running.value.id.clone();
        let now = jiff::Timestamp::now();
        let modified = self
            .records
            .modify(id.as_str(), Some(running), |current| match current {
                Some(theirs) if theirs.state.is_terminal() => Ok(Change::Keep),
                Some(record) => {
                    let mut record = record.clone();
                    record.finish(end.clone(), results.clone(), &self.worker_id, now);
                    Ok(Change::Write(record))
                }
                None => Err(OpError::Status(format!(
                    "record {id} disappeared while running"
                ))),
            })
            .await?;
        match modified {
            Modified::Written(v) | Modified::Kept(Some(v)) => Ok(v.value.state),
            Modified::Kept(None) | Modified::Deleted => Err(OpError::Status(format!(
                "record {id} disappeared while running"
            ))),
        }
    }

    /// Records a failure for an operation that never got as far as a claim (an unreadable
    /// message whose id could still be read). Best effort.
    pub async fn fail_unclaimed(&self, id: &OperationId, error: ErrorInfo) -> Result<(), OpError> {
        self.end_unclaimed(id, None, End::Failed(error)).await
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
        self.end_unclaimed(id, envelope, End::DeadLettered(error))
            .await
    }

    async fn end_unclaimed(
        &self,
        id: &OperationId,
        envelope: Option<&Envelope>,
        end: End,
    ) -> Result<(), OpError> {
        let now = jiff::Timestamp::now();
        self.records
            .modify(id.as_str(), None, |current| {
                let mut record = match (current, envelope) {
                    (Some(record), _) if record.state.is_terminal() => return Ok(Change::Keep),
                    (Some(record), _) => record.clone(),
                    (None, Some(envelope)) => OperationRecord::queued(envelope),
                    // Without an envelope there is nothing to build a record from.
                    (None, None) => return Ok(Change::Keep),
                };
                // It never finished a delivery, so it has no results to keep.
                record.finish(end.clone(), Vec::new(), &self.worker_id, now);
                Ok::<_, OpError>(Change::Write(record))
            })
            .await?;
        Ok(())
    }

    /// Shows how far a running operation's wait is. Best effort: a terminal record is left
    /// alone, and a failure only costs the pipeline a progress line.
    pub async fn progress(&self, id: &OperationId, progress: &str) {
        let now = jiff::Timestamp::now();
        let shown = self
            .records
            .modify(id.as_str(), None, |current| match current {
                Some(record) if record.state == State::Running => {
                    let mut record = record.clone();
                    record.show_progress(progress, now);
                    Ok::<_, OpError>(Change::Write(record))
                }
                _ => Ok(Change::Keep),
            })
            .await;
        if let Err(e) = shown {
            tracing::debug!(error = %e, "progress not recorded");
        }
    }

    /// The operation's current state, if it has a record.
    pub async fn state(&self, id: &OperationId) -> Result<Option<State>, OpError> {
        Ok(self.records.read(id.as_str()).await?.map(|v| v.value.state))
    }
}
