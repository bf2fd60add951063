//! Dead letters: listing the operations that exhausted their deliveries, and requeueing one.
//!
//! A retry moves the record from `dead_lettered` back to `queued` by compare-and-set (so two
//! concurrent retries requeue once), publishes the original envelope again, and removes the
//! dead letter. The requeued message gets a new stream sequence: for the per-object order
//! the retried operation is the latest intent, as if it had just been submitted.

use async_nats::jetstream::{self, kv, stream::DirectGetErrorKind};
use longshore_contract::{
    ClusterName, OperationId, OperationRecord, State,
    deadletter::{self, DeadLetter},
    envelope,
    jetstream::DEAD_LETTER_STREAM,
};

use crate::{
    context::Context,
    error::{Error, Result},
    submit,
};

/// Most dead letters returned by one listing.
pub const MAX_LIMIT: usize = 500;

/// Dead letters with a dead-letter sequence greater than `after`, oldest first, at most
/// `limit`; and the cursor for the next page, if there may be more.
pub async fn list(
    ctx: &Context,
    after: u64,
    limit: usize,
) -> Result<(Vec<DeadLetter>, Option<u64>)> {
    ctx.operations()?;
    let stream = dead_letter_stream(&ctx.js).await?;
    let all = format!("{}.>", deadletter::SUBJECT_PREFIX);
    let mut items = Vec::new();
    let mut next = after + 1;
    while items.len() < limit {
        match stream
            .direct_get_next_for_subject(all.as_str(), Some(next))
            .await
        {
            Ok(m) => {
                next = m.sequence + 1;
                items.push(DeadLetter::from_parts(
                    m.subject.as_str(),
                    Some(&m.headers),
                    m.payload,
                    m.sequence,
                ));
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok((items, None)),
            Err(e) => return Err(Error::Unavailable(format!("reading dead letters: {e}"))),
        }
    }
    let cursor = items.last().map(|d| d.dead_letter_sequence);
    Ok((items, cursor))
}

/// Requeues a dead-lettered operation.
pub async fn retry(ctx: &Context, id: &OperationId) -> Result<OperationRecord> {
    let store = ctx.operations()?;
    let entry = store
        .entry(id.as_str())
        .await
        .map_err(|e| Error::Unavailable(format!("reading the operation record: {e}")))?
        .filter(|e| e.operation == kv::Operation::Put)
        .ok_or_else(|| Error::NotFound(id.to_string()))?;
    let mut record = OperationRecord::from_bytes(&entry.value)
        .map_err(|e| Error::Unavailable(format!("unreadable record for {id}: {e}")))?;
    if record.state != State::DeadLettered {
        return Err(Error::Conflict(format!(
            "operation {id} is {}; only dead-lettered operations can be retried",
            record.state.as_str()
        )));
    }
    let cluster = ClusterName::new(record.cluster.clone())
        .map_err(|e| Error::Unavailable(format!("record of {id} names an invalid cluster: {e}")))?;
    let stream = dead_letter_stream(&ctx.js).await?;
    let letter = match stream
        .direct_get_last_for_subject(deadletter::subject(&cluster, id))
        .await
    {
        Ok(m) => m,
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
            return Err(Error::NotFound(format!(
                "the dead letter of {id} (expired, or already retried)"
            )));
        }
        Err(e) => return Err(Error::Unavailable(format!("reading the dead letter: {e}"))),
    };

    let dead = record.clone();
    record.state = State::Queued;
    record.error = None;
    record.worker = None;
    record.updated_at = jiff::Timestamp::now();
    let revision = store
        .update(id.as_str(), record.to_bytes(), entry.revision)
        .await
        .map_err(|_| {
            Error::Conflict(format!(
                "operation {id} changed while being retried; read it and try again"
            ))
        })?;

    let mut headers = async_nats::HeaderMap::new();
    // A fresh message id: the original one may still be in the dedup window.
    let msg_id = format!("{id}.retry.{}", letter.sequence);
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
    headers.insert("Content-Type", envelope::CONTENT_TYPE);
    headers.insert(
        envelope::SCHEMA_HEADER,
        envelope::SCHEMA_VERSION.to_string().as_str(),
    );
    if let Err(e) =
        submit::publish_message(ctx, id, cluster.subject(), headers, letter.payload).await
    {
        // Put the record back so the dead letter stays retryable.
        if let Err(undo) = store.update(id.as_str(), dead.to_bytes(), revision).await {
            tracing::warn!(op_id = %id, error = %undo, "could not restore dead_lettered after a failed retry");
        }
        return Err(e);
    }
    if let Err(e) = stream.delete_message(letter.sequence).await {
        // The operation is requeued; a leftover copy only shows in listings until it expires.
        tracing::warn!(op_id = %id, error = %e, "requeued, but could not remove the dead letter");
    }
    tracing::info!(op_id = %id, "dead letter requeued");
    Ok(record)
}

async fn dead_letter_stream(js: &jetstream::Context) -> Result<jetstream::stream::Stream> {
    js.get_stream(DEAD_LETTER_STREAM)
        .await
        .map_err(|e| Error::Unavailable(format!("opening the dead-letter stream: {e}")))
}
