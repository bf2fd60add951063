//! Accepting an operation: one operation per idempotency key, and 202 only once JetStream
//! holds it.
//!
//! 1. The operation id is derived from (source, key), so every replica computes the same one.
//! 2. The `queued` record is created (`create` fails if the key exists: a retry, or another
//!    replica that won the race), then the envelope is published, retried with the same
//!    `Nats-Msg-Id` through stream leader elections.
//! 3. An existing record answers the retry: 422 if the request differs, otherwise the same
//!    operation (a `queued` one is published again, which the stream's `Nats-Msg-Id` dedup
//!    or the worker's claim on the record makes harmless).

//! 4. If the publish fails, the record is withdrawn, so the client's retry starts afresh,
//!    and the answer is 503: nothing was accepted.

use async_nats::jetstream::{self, context::PublishErrorKind};
use longshore_contract::{
    Envelope, IdempotencyKey, OperationId, OperationRecord, State, envelope::SCHEMA_VERSION,
    id::intent_fingerprint, spec::OperationSpec, store::StoreErrorKind,
};

use longshore_contract::telemetry;
use tracing::{Instrument, field};

use crate::{
    context::Context,
    error::{Error, Result},
};

/// An accepted operation, as the client is told of it.
#[derive(Debug)]
pub struct Accepted {
    pub id: OperationId,
    pub action: longshore_contract::Action,
    pub key: IdempotencyKey,
    pub state: State,
    /// True when an earlier request with this key had already been accepted.
    pub replayed: bool,
    /// The cluster it is for, so the answer can say when nobody serves it now.
    pub cluster: String,
}

/// Accepts `spec` under `key` for `source`.
pub async fn submit(
    ctx: &Context,
    source: &str,
    spec: OperationSpec,
    key: IdempotencyKey,
) -> Result<Accepted> {
    let store = ctx.operations()?;
    let id = OperationId::derive(source, &key);
    let envelope = Envelope {
        schema_version: SCHEMA_VERSION,
        id: id.clone(),
        idempotency_key: key.clone(),
        source: source.to_owned(),
        fingerprint: intent_fingerprint(&spec),
        rollout: None,
        submitted_at: jiff::Timestamp::now(),
        spec,
    };

    // Two passes at most: a lost create race is answered from the winner's record.
    // Create first, read only when the key exists: a new operation (the common case) costs
    // one KV round trip, not two.
    for _ in 0..2 {
        let mut record = OperationRecord::queued(&envelope);
        // The request's trace: the worker's spans join it through the message headers.
        record.trace_id = telemetry::trace_id(&tracing::Span::current());
        let revision = match store.create(id.as_str(), &record).await {
            Ok(revision) => revision,
            Err(e) if e.kind() == StoreErrorKind::AlreadyExists => {
                match store.read(id.as_str()).await? {
                    Some(existing) => return replay(ctx, &envelope, existing.value).await,
                    // Withdrawn in between: try to create it again.
                    None => continue,
                }
            }
            Err(e) => return Err(Error::Unavailable(format!("recording the operation: {e}"))),
        };

        if let Err(e) = publish(ctx, &envelope, Some(revision)).await {
            if let Err(withdraw) = store.delete_if(id.as_str(), revision).await {
                tracing::warn!(op_id = %id, error = %withdraw, "could not withdraw the record of an unpublished operation");
            }
            return Err(e);
        }
        tracing::info!(op_id = %id, cluster = %envelope.spec.cluster, action = envelope.spec.action.as_str(), "accepted");
        return Ok(Accepted {
            id,
            action: envelope.spec.action,
            key,
            state: State::Queued,
            replayed: false,
            cluster: envelope.spec.cluster.to_string(),
        });
    }
    Err(Error::Unavailable(
        "the operation's record changed concurrently; retry".into(),
    ))
}

async fn replay(ctx: &Context, envelope: &Envelope, existing: OperationRecord) -> Result<Accepted> {
    if existing.fingerprint != envelope.fingerprint {
        return Err(Error::KeyReused {
            key: envelope.idempotency_key.as_str().to_owned(),
            id: existing.id.to_string(),
        });
    }
    if existing.state == State::Queued {
        // The first publish may have been lost with its dispatcher: publish again. Within the
        // dedup window this is dropped by the stream; beyond it, the worker's claim on the
        // record makes a second copy a no-op.
        // Without the record's revision: it may be another replica's, with another trace.
        publish(ctx, envelope, None).await?;
    }
    Ok(Accepted {
        id: existing.id,
        action: existing.action,
        key: existing.idempotency_key,
        state: existing.state,
        replayed: true,
        cluster: existing.cluster,
    })
}

/// Publishes the envelope, retrying with the same `Nats-Msg-Id` on errors a stream leader
/// election or a brief disconnect produce. async-nats does not retry these itself. With
/// `revision`, the `queued` record this replica just wrote: the worker claims it without
/// reading it first.
async fn publish(
    ctx: &Context,
    envelope: &Envelope,
    revision: Option<u64>,
) -> Result<jetstream::publish::PublishAck> {
    // To the pool that serves the cluster now (a replay after a move goes to the new one).
    let pool = crate::fleet::route(ctx, &envelope.spec.cluster)?;
    let (subject, mut headers, payload) = envelope
        .to_message(&pool)
        .map_err(|e| Error::Unavailable(format!("encoding the envelope: {e}")))?;
    if let Some(revision) = revision {
        headers.insert(
            longshore_contract::envelope::RECORD_REVISION_HEADER,
            revision.to_string().as_str(),
        );
    }
    publish_message(ctx, envelope.id.as_str(), subject, headers, payload).await
}

/// Publishes one message (an operation, a dead letter's retry, a rollout's step; `id` its
/// `Nats-Msg-Id`) with bounded retries (same headers, so the same `Nats-Msg-Id`, on every
/// attempt).
pub async fn publish_message(
    ctx: &Context,
    id: &str,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
) -> Result<jetstream::publish::PublishAck> {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format!("send {subject}"),
        otel.kind = "producer",
        otel.status_code = field::Empty,
        error.type = field::Empty,
        messaging.system = "nats",
        messaging.destination.name = %subject,
        messaging.message.id = %id,
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
    );
    let mut headers = headers;
    telemetry::inject_into_headers(&span, &mut headers);
    let started = std::time::Instant::now();
    let result = publish_attempts(ctx, id, subject, headers, payload)
        .instrument(span.clone())
        .await;
    let outcome = match &result {
        Ok(ack) if ack.duplicate => "duplicate",
        Ok(_) => "ok",
        Err(e) => {
            span.record("otel.status_code", "error");
            span.record("error.type", e.kind());
            "error"
        }
    };
    ctx.metrics.published(outcome, started.elapsed());
    result
}

async fn publish_attempts(
    ctx: &Context,
    id: &str,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
) -> Result<jetstream::publish::PublishAck> {
    let policy = &ctx.config.publish;
    let mut attempt = 1;
    loop {
        if ctx.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(Error::Unavailable("not connected to NATS".into()));
        }
        let result = async {
            ctx.js
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await?
                .await
        }
        .await;
        let err = match result {
            Ok(ack) => return Ok(ack),
            Err(err) => err,
        };
        let retryable = matches!(
            err.kind(),
            PublishErrorKind::StreamNotFound
                | PublishErrorKind::TimedOut
                | PublishErrorKind::BrokenPipe
                | PublishErrorKind::Other
        );
        if err.kind() == PublishErrorKind::MaxPayloadExceeded {
            return Err(Error::field(
                "manifests",
                format!("the operation is larger than the NATS server's max_payload: {err}"),
            ));
        }
        if !retryable || attempt >= policy.attempts {
            return Err(Error::Unavailable(format!(
                "publishing to the work queue after {attempt} attempt(s): {err}"
            )));
        }
        tracing::debug!(op_id = %id, attempt, error = %err, "publish failed, retrying with the same Nats-Msg-Id");
        attempt += 1;
        // A pause between attempts, not a synchronisation: the election takes what it takes.
        tokio::time::sleep(policy.retry_pause).await;
    }
}
