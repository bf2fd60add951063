//! Waiting for an operation: `GET /v1/operations/{id}?wait=60s` (a long poll) and
//! `GET /v1/operations/{id}/events` (server-sent events). Both follow the record through a
//! KV watch that starts with its current value, so no change between reading and watching
//! is missed, and nothing polls.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt, stream};
use longshore_contract::{OperationId, OperationRecord};
use tokio::time::Instant;

use crate::{
    context::Context,
    error::{Error, Result},
};

/// The record's changes, from its current value on, as a stream of records.
async fn changes(
    ctx: &Context,
    id: &OperationId,
) -> Result<impl Stream<Item = Result<OperationRecord>> + Send + 'static + use<>> {
    let watch = ctx.operations()?.watch(id.as_str()).await?;
    // A deletion (the record expired) is not a change of state: skipped.
    Ok(watch.filter_map(|change| async move {
        match change {
            Ok(Some(record)) => Some(Ok(record.value)),
            Ok(None) => None,
            Err(e) => Some(Err(Error::from(e))),
        }
    }))
}

/// Waits until the record is terminal or `within` passes; returns the last record seen
/// (`current` if nothing changed).
pub async fn until_terminal(
    ctx: &Context,
    id: &OperationId,
    current: OperationRecord,
    within: Duration,
) -> Result<OperationRecord> {
    if current.state.is_terminal() || within.is_zero() {
        return Ok(current);
    }
    let deadline = Instant::now() + within;
    let changes = changes(ctx, id).await?;
    tokio::pin!(changes);
    let mut last = current;
    loop {
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Err(_) | Ok(None) => return Ok(last),
            Ok(Some(record)) => {
                last = record?;
                if last.state.is_terminal() {
                    return Ok(last);
                }
            }
        }
    }
}

/// The event stream: one `state` event per change of the record (its data the record),
/// ending after a terminal state, or with a `timeout` event after `within`.
pub async fn events(
    ctx: Arc<Context>,
    id: OperationId,
    within: Duration,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let changes = changes(&ctx, &id).await?.boxed();
    let deadline = Instant::now() + within;
    // (changes, the last state sent, finished)
    let events = stream::unfold(
        (changes, None, false),
        move |(mut changes, last, done)| async move {
            if done {
                return None;
            }
            loop {
                let next = tokio::time::timeout_at(deadline, changes.next()).await;
                let event = match next {
                    Err(_) => {
                        let e = Event::default()
                            .event("timeout")
                            .data("no terminal state before the wait bound");
                        return Some((Ok(e), (changes, last, true)));
                    }
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => {
                        let e = Event::default().event("error").data(e.to_string());
                        return Some((Ok(e), (changes, last, true)));
                    }
                    Ok(Some(Ok(record))) => record,
                };
                // Only changes of state: a record also changes for attempts and results.
                if last == Some(event.state) {
                    continue;
                }
                let terminal = event.state.is_terminal();
                let data = serde_json::to_string(&event).unwrap_or_default();
                let e = Event::default()
                    .event("state")
                    .id(event.updated_at.to_string())
                    .data(data);
                return Some((Ok(e), (changes, Some(event.state), terminal)));
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
