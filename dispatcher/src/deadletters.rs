//! Dead letters: listing the operations that exhausted their deliveries, and requeueing one.
//!
//! A retry moves the record from `dead_lettered` back to `queued` by compare-and-set
//! ([`OperationRecord::requeue`], so two concurrent retries requeue once), publishes the original envelope again, and removes the
//! dead letter. The requeued message gets a new stream sequence: for the per-object order
//! the retried operation is the latest intent, as if it had just been submitted.

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use longshore_contract::{
    ClusterName, OperationId, OperationRecord, State,
    deadletter::{self, DeadLetter},
    envelope,
    jetstream::DEAD_LETTER_STREAM,
    store::Change,
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
    let current = store
        .read(id.as_str())
        .await?
        .ok_or_else(|| Error::NotFound(id.to_string()))?;
    only_dead_lettered(id, &current.value)?;
    let cluster = ClusterName::new(current.value.cluster.clone())
        .map_err(|e| Error::Unavailable(format!("record of {id} names an invalid cluster: {e}")))?;
    let pool = crate::fleet::route(ctx, &cluster).map_err(|_| {
        Error::Conflict(format!(
            "operation {id} is for cluster {cluster}, which is no longer registered; register it again to retry"
        ))
    })?;
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

    // By compare-and-set from the record as read: two retries at once requeue once (the
    // second finds it queued).
    let dead = current.value.clone();
    let now = jiff::Timestamp::now();
    let queued = store
        .modify(id.as_str(), Some(current), |record| {
            let record = record.ok_or_else(|| Error::NotFound(id.to_string()))?;
            only_dead_lettered(id, record)?;
            let mut record = record.clone();
            record.requeue(now);
            Ok::<_, Error>(Change::Write(record))
        })
        .await?
        .written()
        .ok_or_else(|| Error::NotFound(id.to_string()))?;

    let mut headers = async_nats::HeaderMap::new();
    // A fresh message id: the original one may still be in the dedup window.
    let msg_id = format!("{id}.retry.{}", letter.sequence);
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
    headers.insert("Content-Type", envelope::CONTENT_TYPE);
    headers.insert(
        envelope::SCHEMA_HEADER,
        envelope::SCHEMA_VERSION.to_string().as_str(),
    );
    let subject = cluster.subject(&pool);
    if let Err(e) =
        submit::publish_message(ctx, id.as_str(), subject, headers, letter.payload).await
    {
        // Put the record back so the dead letter stays retryable, unless it moved on.
        let restored = store
            .modify(id.as_str(), Some(queued.clone()), |record| match record {
                Some(r) if r.state == State::Queued && r.updated_at == queued.value.updated_at => {
                    Ok::<_, Error>(Change::Write(dead.clone()))
                }
                _ => Ok(Change::Keep),
            })
            .await;
        if let Err(undo) = restored {
            tracing::warn!(op_id = %id, error = %undo, "could not restore dead_lettered after a failed retry");
        }
        return Err(e);
    }
    if let Err(e) = stream.delete_message(letter.sequence).await {
        // The operation is requeued; a leftover copy only shows in listings until it expires.
        tracing::warn!(op_id = %id, error = %e, "requeued, but could not remove the dead letter");
    }
    tracing::info!(op_id = %id, "dead letter requeued");
    Ok(queued.value)
}

fn only_dead_lettered(id: &OperationId, record: &OperationRecord) -> Result<()> {
    if record.state == State::DeadLettered {
        Ok(())
    } else {
        Err(Error::Conflict(format!(
            "operation {id} is {}; only dead-lettered operations can be retried",
            record.state.as_str()
        )))
    }
}

async fn dead_letter_stream(js: &jetstream::Context) -> Result<jetstream::stream::Stream> {
    js.get_stream(DEAD_LETTER_STREAM)
        .await
        .map_err(|e| Error::Unavailable(format!("opening the dead-letter stream: {e}")))
}
