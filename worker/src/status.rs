//! An operation's status record in the `LONGSHORE_OPERATIONS` bucket, moved through its
//! states with compare-and-set (the [`Store`]) so two workers holding the same operation (a
//! redelivery after `ack_wait`) never overwrite each other's terminal record. The state
//! changes themselves are the record's methods ([`OperationRecord::start`], `finish`, ...).

use longshore_contract::jetstream::OPERATIONS_BUCKET;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use longshore_contract::record::{End, ErrorInfo, ObjectResult, OperationRecord, State};
use longshore_contract::store::{Change, Modified, Store, Versioned};
use longshore_contract::{Envelope, OperationId};

use crate::error::OpError;

/// How long an operation carried out on its first delivery shows `queued` before its
/// record says `running`: most end sooner, and their record goes from `queued` to its end
/// in one write.
pub const SHOW_RUNNING_AFTER: Duration = Duration::from_millis(500);

/// The operations bucket, as one worker writes it.
#[derive(Clone)]
pub struct StatusStore {
    records: Store<OperationRecord>,
    worker_id: String,
    /// Operations held without a `running` record yet, so that a progress line (which
    /// only a running record shows) writes it first.
    unstarted: Arc<std::sync::Mutex<HashMap<OperationId, Weak<Held>>>>,
}

/// What claiming an operation found.
#[derive(Debug)]
pub enum Claim {
    /// The operation already finished: acknowledge without touching the cluster.
    Terminal(State),
    /// This worker now holds the operation.
    Held(Claimed),
}

/// An operation this worker holds: its record as last written, `running` or, on a first
/// delivery, still `queued` as the dispatcher wrote it until [`SHOW_RUNNING_AFTER`] passes.
#[derive(Debug)]
pub struct Claimed {
    held: Arc<Held>,
    /// Starts before this delivery (0 on a first one).
    pub attempts_before: u32,
    /// Ends the timer that shows the record `running` when the operation is over.
    _over: tokio::sync::oneshot::Sender<()>,
}

#[derive(Debug)]
struct Held {
    id: OperationId,
    sequence: u64,
    record: tokio::sync::Mutex<Versioned<OperationRecord>>,
}

impl StatusStore {
    pub fn new(kv: async_nats::jetstream::kv::Store, worker_id: String) -> Self {
        Self {
            records: Store::new(kv, OPERATIONS_BUCKET),
            worker_id,
            unstarted: Arc::default(),
        }
    }

    /// Holds the operation for this delivery. On a first delivery of the message the
    /// dispatcher published with the revision of its `queued` record (`written`), nothing
    /// is written now: the record still is what the dispatcher wrote (no other delivery
    /// has had the message), and the final record is written from it; an operation still
    /// going after [`SHOW_RUNNING_AFTER`] is shown `running` then. Any other delivery
    /// marks the record `running` by compare-and-set, creating it if missing (a record
    /// may have expired or been lost), and finds out if the operation already ended.
    pub async fn claim(
        &self,
        envelope: &Envelope,
        sequence: u64,
        delivered: u64,
        written: Option<(u64, Option<String>)>,
    ) -> Result<Claim, OpError> {
        // The dispatcher's `queued` record, as it wrote it at that revision (what it holds
        // follows from the envelope and the trace id the message carries).
        let known = written.map(|(revision, trace_id)| {
            let mut value = OperationRecord::queued(envelope);
            value.trace_id = trace_id;
            Versioned { value, revision }
        });
        if delivered <= 1
            && let Some(queued) = known
        {
            return Ok(Claim::Held(self.hold(
                envelope.id.clone(),
                sequence,
                queued,
            )));
        }
        // If the record has moved on since (a redelivery, a retry from the dead letters),
        // the compare-and-set fails and the record is read: nothing is lost but that
        // request.
        match self
            .start(&envelope.id, sequence, delivered, known, Some(envelope))
            .await?
        {
            Modified::Written(running) => {
                let (over, _) = tokio::sync::oneshot::channel();
                Ok(Claim::Held(Claimed {
                    attempts_before: running.value.attempts.saturating_sub(1),
                    held: Arc::new(Held {
                        id: envelope.id.clone(),
                        sequence,
                        record: tokio::sync::Mutex::new(running),
                    }),
                    _over: over,
                }))
            }
            Modified::Kept(Some(done)) => Ok(Claim::Terminal(done.value.state)),
            Modified::Kept(None) | Modified::Deleted => Err(OpError::Status(format!(
                "record {} vanished while being claimed",
                envelope.id
            ))),
        }
    }

    /// Holds an operation whose record is `queued` at a known revision, and shows it
    /// `running` if it is still held after [`SHOW_RUNNING_AFTER`].
    fn hold(&self, id: OperationId, sequence: u64, queued: Versioned<OperationRecord>) -> Claimed {
        let held = Arc::new(Held {
            id: id.clone(),
            sequence,
            record: tokio::sync::Mutex::new(queued),
        });
        let (over, ended) = tokio::sync::oneshot::channel::<()>();
        {
            let mut unstarted = self.unstarted_map();
            // Operations handed back before their end leave their entry behind.
            if unstarted.len() >= 1024 {
                unstarted.retain(|_, held| held.strong_count() > 0);
            }
            unstarted.insert(id, Arc::downgrade(&held));
        }
        let (status, weak) = (self.clone(), Arc::downgrade(&held));
        tokio::spawn(async move {
            tokio::select! {
                _ = ended => {}
                () = tokio::time::sleep(SHOW_RUNNING_AFTER) => {
                    if let Some(held) = weak.upgrade() {
                        status.show_running(&held).await;
                    }
                }
            }
        });
        Claimed {
            held,
            attempts_before: 0,
            _over: over,
        }
    }

    fn unstarted_map(&self) -> std::sync::MutexGuard<'_, HashMap<OperationId, Weak<Held>>> {
        self.unstarted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `running` for a held operation whose record is still `queued`. Best effort:
    /// the final record is written whether or not this was.
    async fn show_running(&self, held: &Held) {
        let mut record = held.record.lock().await;
        self.unstarted_map().remove(&held.id);
        if record.value.state != State::Queued {
            return;
        }
        match self
            .start(&held.id, held.sequence, 1, Some(record.clone()), None)
            .await
        {
            Ok(Modified::Written(running)) => *record = running,
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "running not recorded"),
        }
    }

    /// Moves the record to `running` from `known` (read if `None` or stale); a final one
    /// is kept. A missing record is made from `envelope`, if given. Its attempts count this
    /// one, and at least the `delivered` deliveries so far (a first delivery handed back
    /// before it wrote anything still counts).
    async fn start(
        &self,
        id: &OperationId,
        sequence: u64,
        delivered: u64,
        known: Option<Versioned<OperationRecord>>,
        envelope: Option<&Envelope>,
    ) -> Result<Modified<OperationRecord>, OpError> {
        let now = jiff::Timestamp::now();
        self.records
            .modify(id.as_str(), known, |current| {
                let mut record = match (current, envelope) {
                    (Some(record), _) if record.state.is_terminal() => return Ok(Change::Keep),
                    (Some(record), _) => record.clone(),
                    (None, Some(envelope)) => {
                        // A record the dispatcher did not write (lost or expired): this
                        // delivery's trace stands for the operation's.
                        let mut record = OperationRecord::queued(envelope);
                        record.trace_id =
                            longshore_contract::telemetry::trace_id(&tracing::Span::current());
                        record
                    }
                    (None, None) => return Ok(Change::Keep),
                };
                record.start(&self.worker_id, sequence, now);
                record.attempts = record
                    .attempts
                    .max(u32::try_from(delivered).unwrap_or(u32::MAX));
                Ok::<_, OpError>(Change::Write(record))
            })
            .await
    }

    /// Writes the final record, from the one this worker last wrote or knows (`running`,
    /// or `queued` if it never had to show it running), naming the fences whose object
    /// has its effect (`applied_fences`: writing it releases them). If another worker
    /// finished the operation first, its record stands: its state is returned, with
    /// `false` (this worker's record was not written).
    pub async fn finish(
        &self,
        claimed: Claimed,
        end: End,
        results: Vec<ObjectResult>,
        applied_fences: Vec<String>,
    ) -> Result<(State, bool), OpError> {
        let held = &claimed.held;
        let id = held.id.clone();
        let mut known = held.record.lock().await;
        self.unstarted_map().remove(&id);
        let now = jiff::Timestamp::now();
        let modified = self
            .records
            .modify(id.as_str(), Some(known.clone()), |current| match current {
                Some(theirs) if theirs.state.is_terminal() => Ok(Change::Keep),
                Some(record) => {
                    let mut record = record.clone();
                    if record.state == State::Queued {
                        record.start(&self.worker_id, held.sequence, now);
                    }
                    record.finish(end.clone(), results.clone(), &self.worker_id, now);
                    record.applied_fences = applied_fences.clone();
                    Ok(Change::Write(record))
                }
                None => Err(OpError::Status(format!(
                    "record {id} disappeared while running"
                ))),
            })
            .await?;
        match modified {
            Modified::Written(v) => {
                let state = v.value.state;
                *known = v;
                Ok((state, true))
            }
            Modified::Kept(Some(v)) => Ok((v.value.state, false)),
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
        let unstarted = self.unstarted_map().get(id).and_then(Weak::upgrade);
        if let Some(held) = unstarted {
            self.show_running(&held).await;
        }
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
