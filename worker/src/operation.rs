//! Handling one delivered message, start to finish: read the envelope, claim the
//! operation, carry it out, record how it ended, and acknowledge. Errors are turned into
//! decisions by [`crate::policy`] only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, Message};
use longshore_contract::jetstream as js_defs;
use longshore_contract::record::End;
use longshore_contract::record::{ErrorClass, ErrorInfo, Outcome};
use longshore_contract::telemetry::{self, NatsHeadersRef};
use longshore_contract::{Envelope, OperationId};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

use crate::clusters::Clusters;
use crate::config::Config;
use crate::deadletter;
use crate::error::OpError;
use crate::fence::Fences;
use crate::plan;
use crate::policy::{self, Decision};
use crate::route::{self, Route};
use crate::settle::{self, Delivery, Verdict, Worked};
use crate::status::{Claim, StatusStore};

/// What every operation handler shares.
pub struct Context {
    pub config: Config,
    /// This worker's pool.
    pub pool: longshore_contract::PoolName,
    /// The cluster registry, followed live.
    pub fleet: longshore_contract::registry::fleet::Fleet,
    /// The pool's credentials and the clients built from them.
    pub clusters: Arc<Clusters>,
    pub status: StatusStore,
    pub fences: Fences,
    /// For dead letters, forwards and rollout tallies.
    pub js: jetstream::Context,
    /// Fleet rollouts' progress, read before one of their operations starts.
    pub rollouts: crate::rollouts::Rollouts,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// A client span for a call to a KV bucket.
fn kv_span(operation: &'static str, bucket: &'static str) -> tracing::Span {
    tracing::info_span!(
        "kv",
        otel.name = %format!("{operation} {bucket}"),
        otel.kind = "client",
        db.system.name = "nats_kv",
        db.collection.name = bucket,
        db.operation.name = operation,
    )
}

/// Handles one message. `abort` is cancelled when the drain's time for running operations
/// is over: the message is then handed back at once for another replica.
pub async fn handle(ctx: Arc<Context>, message: Message, abort: CancellationToken) {
    let (sequence, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered.max(1) as u64),
        Err(e) => {
            tracing::warn!(error = %e, "not a JetStream message; ignoring it");
            return;
        }
    };
    let subject = message.subject.as_str();
    let span = tracing::info_span!(
        "operation",
        otel.name = %format!("process {subject}"),
        otel.kind = "consumer",
        otel.status_code = field::Empty,
        error.type = field::Empty,
        messaging.system = "nats",
        messaging.destination.name = subject,
        messaging.message.id = field::Empty,
        messaging.operation.type = "process",
        messaging.consumer.group.name = %ctx.config.pool.name,
        op_id = field::Empty,
        cluster = field::Empty,
        action = field::Empty,
        // Integers on the span (tracing exports unsigned values as strings).
        seq = i64::try_from(sequence).unwrap_or(i64::MAX),
        attempt = i64::try_from(delivered).unwrap_or(i64::MAX),
        trace_id = field::Empty,
    );
    // Every delivery, the first and each redelivery, continues the submitter's trace.
    telemetry::continue_from(&span, &NatsHeadersRef(message.headers.as_ref()));
    if let Some(id) = telemetry::trace_id(&span) {
        span.record("trace_id", id);
    }
    if let Some(id) = message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
    {
        span.record("messaging.message.id", id.as_str());
    }
    let _in_flight = crate::metrics::InFlight::enter(&ctx.metrics.in_flight);
    if delivered > 1 {
        ctx.metrics.redeliveries.inc();
    }
    let (action, verdict) = async {
        let envelope = match Envelope::from_message(message.headers.as_ref(), &message.payload) {
            Ok(envelope) => envelope,
            Err(e) => {
                let verdict = unreadable(&ctx, &message, delivered, e.to_string()).await;
                settle::send(&message, verdict.reply).await;
                return ("unknown", verdict);
            }
        };
        let span = tracing::Span::current();
        span.record("op_id", envelope.id.as_str());
        span.record("cluster", envelope.spec.cluster.as_str());
        span.record("action", envelope.spec.action.as_str());
        let action = envelope.spec.action.as_str();
        let every = ctx.config.pool.ack_wait / 3;
        // Boxed, so the task spawned for each message stays small: its future is copied
        // into place when the task is spawned.
        let work = with_progress(
            Box::pin(timed(&ctx, &message, sequence, delivered, &envelope)),
            &message,
            every,
        );
        let verdict = tokio::select! {
            verdict = work => verdict,
            () = abort.cancelled() => {
                tracing::info!("drain time is up; handing the operation back");
                Verdict::hand_back(Delivery::HandedBack, None)
            }
        };
        settle::send(&message, verdict.reply).await;
        (action, verdict)
    }
    .instrument(span.clone())
    .await;
    if let Some(class) = verdict.class {
        span.record("otel.status_code", "error");
        span.record("error.type", crate::metrics::class_label(Some(class)));
    }
    ctx.metrics
        .operation(action, verdict.outcome, verdict.class);
}

/// [`carry`], timed: how long it waited in the queue, and how long the delivery took.
async fn timed(
    ctx: &Context,
    message: &Message,
    sequence: u64,
    delivered: u64,
    envelope: &Envelope,
) -> Verdict {
    let action = envelope.spec.action.as_str();
    let waited = jiff::Timestamp::now().duration_since(envelope.submitted_at);
    ctx.metrics
        .queue_wait
        .get_or_create(&crate::metrics::ActionLabels { action })
        .observe(waited.as_secs_f64().max(0.0));
    let started = std::time::Instant::now();
    let verdict = carry(ctx, message, sequence, delivered, envelope).await;
    ctx.metrics
        .apply_duration
        .get_or_create(&crate::metrics::ActionLabels { action })
        .observe(started.elapsed().as_secs_f64());
    verdict
}

/// [`carry_out`], and for one cluster's operation of a fleet rollout, its tally: published
/// once the operation is over (ended now, or found ended), before the message is
/// acknowledged, so a crash in between only reports it again.
async fn carry(
    ctx: &Context,
    message: &Message,
    sequence: u64,
    delivered: u64,
    envelope: &Envelope,
) -> Verdict {
    let verdict = carry_out(ctx, message, sequence, delivered, envelope).await;
    let Some(link) = &envelope.rollout else {
        return verdict;
    };
    let over = matches!(
        verdict.outcome,
        Delivery::Succeeded
            | Delivery::Failed
            | Delivery::Superseded
            | Delivery::DeadLettered
            | Delivery::AlreadyDone
            | Delivery::Cancelled
    );
    if !over {
        return verdict;
    }
    match crate::rollouts::report(&ctx.js, link, &envelope.id).await {
        Ok(()) => verdict,
        Err(e) => {
            // Its record is over: the redelivery only reports it.
            tracing::warn!(rollout = %link.id, error = %e, "cannot report to the rollout now; will retry");
            retry_later(ctx)
        }
    }
}

/// Handed back after the first retry's delay, nothing recorded: the rollout's bucket or
/// steps were out of reach.
fn retry_later(ctx: &Context) -> Verdict {
    Verdict {
        end: None,
        reply: settle::Reply::Nak(crate::policy::backoff(1, &ctx.config.retry)),
        outcome: Delivery::Retried,
        class: Some(ErrorClass::Transient),
    }
}

/// Routes the operation (forwarding it if another pool serves its cluster now), claims
/// it, carries it out under its fences, and records how it ended.
async fn carry_out(
    ctx: &Context,
    message: &Message,
    sequence: u64,
    delivered: u64,
    envelope: &Envelope,
) -> Verdict {
    // Fences and the record order operations by when they were first queued.
    let order = route::order(message, sequence);
    let cluster = match route::route(ctx, envelope).await {
        Ok(Route::Forward(pool)) => {
            return route::forward(ctx, message, envelope, order, &pool).await;
        }
        Ok(Route::Here(cluster)) => Ok(cluster),
        Ok(Route::Unknown(reason)) => Err(OpError::UnknownCluster(reason)),
        Err(e) => Err(e),
    };
    let claimed = ctx
        .status
        .claim(
            envelope,
            order,
            delivered,
            longshore_contract::envelope::written_record(message.headers.as_ref()),
        )
        .instrument(kv_span("claim", js_defs::OPERATIONS_BUCKET))
        .await;
    let claimed = match claimed {
        Ok(Claim::Terminal(state)) => {
            tracing::info!(
                state = state.as_str(),
                "already terminal, acknowledging without touching the cluster"
            );
            return settle::already_done();
        }
        Ok(Claim::Held(claimed)) => claimed,
        Err(e) => return unrecorded(ctx, &e, delivered),
    };
    // A rollout that is over starts none of its operations; one already started (this is a
    // later attempt: its worker died, or it is retrying) finishes, as running ones do.
    if let Some(link) = &envelope.rollout
        && claimed.attempts_before == 0
    {
        match crate::rollouts::stopped(&ctx.rollouts, link).await {
            Ok(None) => {}
            Ok(Some(reason)) => {
                tracing::info!(%reason, "not started: its rollout is over");
                let verdict = settle::cancelled(reason);
                let end = verdict.end.clone().unwrap_or(End::Succeeded);
                return match ctx
                    .status
                    .finish(claimed, end, Vec::new(), Vec::new())
                    .await
                {
                    Ok((state, _)) => verdict.recorded(state),
                    Err(e) => unrecorded(ctx, &e, delivered),
                };
            }
            Err(e) => {
                tracing::warn!(rollout = %link.id, error = %e, "cannot read the rollout's progress; will retry");
                return retry_later(ctx);
            }
        }
    }

    let (report, fences) = match cluster {
        Ok(cluster) => {
            // Nothing can have written for this operation yet: its first delivery, queued
            // here (not forwarded from another pool), no earlier attempt recorded.
            let first_attempt = delivered == 1 && order == sequence && claimed.attempts_before == 0;
            Box::pin(fenced(ctx, &cluster, envelope, order, first_attempt)).await
        }
        Err(e) => (
            plan::Report {
                results: Vec::new(),
                error: Some(e),
            },
            None,
        ),
    };
    let worked = match &report.error {
        None => Worked::Done {
            all_superseded: !report.results.is_empty()
                && report
                    .results
                    .iter()
                    .all(|r| r.outcome == Outcome::Superseded),
        },
        Some(e) => {
            if matches!(e, OpError::Fenced { .. }) {
                ctx.metrics.fence_waits.inc();
            }
            let decision = decide(ctx, e, delivered);
            match &decision {
                Decision::Retry(delay) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "transient failure; will retry")
                }
                Decision::Fail(info) | Decision::Term(info) => {
                    tracing::warn!(class = ?info.class, error = %info.message, "operation failed")
                }
                Decision::DeadLetter(info) => {
                    tracing::warn!(error = %info.message, "deliveries exhausted; dead-lettering")
                }
            }
            Worked::Stopped(decision)
        }
    };
    let verdict = settle::verdict(worked);
    let Some(end) = verdict.end.clone() else {
        // Back to the queue, its record not final: the fences it does not keep are
        // written back, so others need not wait for this operation's next delivery.
        if let Some(fences) = &fences {
            fences.guard.release(&fences.applied).await;
        }
        return verdict;
    };
    if let End::DeadLettered(info) = &end {
        // The copy comes first: the Term that follows deletes the message.
        let copied = deadletter::copy(
            &ctx.js,
            &envelope.spec.cluster,
            &envelope.id,
            sequence,
            delivered,
            &info.message,
            message.payload.clone(),
        )
        .await;
        if let Err(e) = copied {
            // This was the last delivery: handing it back makes JetStream announce it
            // exhausted, and the sweeper dead-letters it.
            tracing::warn!(error = %e, "cannot dead-letter now; leaving it to the sweeper");
            if let Some(fences) = &fences {
                fences.guard.release(&fences.applied).await;
            }
            return Verdict::hand_back(Delivery::Retried, Some(ErrorClass::Transient));
        }
    }
    // The final record releases the fences (the next operation on an object reads it),
    // unless a worker that expects them written back may be running.
    let applied: Vec<String> = fences
        .as_ref()
        .map(|f| f.applied.iter().cloned().collect())
        .unwrap_or_default();
    let by_record = match &fences {
        Some(fences) if ctx.fences.writes_back() => {
            fences.guard.release(&fences.applied).await;
            false
        }
        Some(_) => true,
        None => false,
    };
    let finished = ctx
        .status
        .finish(claimed, end, report.results, applied)
        .instrument(kv_span("finish", js_defs::OPERATIONS_BUCKET))
        .await;
    if let (Some(fences), Ok((_, true)), true) = (&fences, &finished, by_record) {
        fences.guard.ended(&fences.applied).await;
    }
    match finished {
        Ok((state, _)) => {
            tracing::info!(state = state.as_str(), "operation finished");
            verdict.recorded(state)
        }
        // The effects are done and idempotent: redo the operation rather than leave a
        // record that says `running` forever.
        Err(e) => unrecorded(ctx, &e, delivered),
    }
}

/// The fences an operation holds when its effects are done, and the objects whose effect
/// is in (those whose fence `applied_seq` advances).
struct Held {
    guard: crate::fence::Guard,
    applied: BTreeSet<String>,
}

/// Plans the operation, takes its objects' fences (not for a dry run, which changes
/// nothing) and carries it out while renewing their leases. The fences are still held
/// when this returns: the operation's final record releases them (or, when it is not
/// over, [`crate::fence::Guard::release`]). If the worker dies before that record, the
/// redelivered operation takes them again at once and redoes its (idempotent) effects.
async fn fenced(
    ctx: &Context,
    cluster: &crate::clusters::Cluster,
    envelope: &Envelope,
    sequence: u64,
    first_attempt: bool,
) -> (plan::Report, Option<Held>) {
    let mut steps = match plan::plan(cluster, envelope).await {
        Ok(steps) => steps,
        Err(e) => {
            return (
                plan::Report {
                    results: Vec::new(),
                    error: Some(e),
                },
                None,
            );
        }
    };
    if envelope.spec.options.dry_run {
        return (
            plan::carry_out(cluster, envelope, &steps, None, None, first_attempt).await,
            None,
        );
    }
    let objects: BTreeMap<String, String> = steps
        .iter()
        .filter_map(|s| Some((s.fence.clone()?, s.object.to_string())))
        .collect();
    let guard = match ctx.fences.acquire(&envelope.id, sequence, &objects).await {
        Ok(guard) => guard,
        Err(e) => {
            return (
                plan::Report {
                    results: Vec::new(),
                    error: Some(e),
                },
                None,
            );
        }
    };
    for step in &mut steps {
        step.superseded = step
            .fence
            .as_ref()
            .is_some_and(|k| guard.superseded.contains(k));
    }
    let every = ctx.config.pool.ack_wait / 3;
    let report = guard
        .renewing(
            carry_out_and_wait(ctx, cluster, envelope, &steps, &guard, first_attempt),
            every,
        )
        .await;
    // The objects whose effect is in: those with a result other than superseded.
    let applied: BTreeSet<String> = steps
        .iter()
        .zip(&report.results)
        .filter(|(step, _)| !step.superseded)
        .filter_map(|(step, _)| step.fence.clone())
        .collect();
    // The object the operation stopped at on a transient error may have been written anyway.
    let uncertain = report
        .error
        .as_ref()
        .filter(|e| policy::is_transient(e))
        .and_then(|_| steps.get(report.results.len()))
        .and_then(|step| step.fence.as_deref());
    if let Some(key) = uncertain {
        guard.keep(key).await;
    }
    (report, Some(Held { guard, applied }))
}

/// Carries the operation out and, if it asks to wait, waits for its objects to become
/// stable (still under the fences, so no other operation changes them meanwhile).
async fn carry_out_and_wait(
    ctx: &Context,
    cluster: &crate::clusters::Cluster,
    envelope: &Envelope,
    steps: &[plan::Step<'_>],
    guard: &crate::fence::Guard,
    first_attempt: bool,
) -> plan::Report {
    let crd_wait = plan::CrdWait {
        status: &ctx.status,
        timeout: ctx.config.clusters.crd_established_timeout,
    };
    let mut report = plan::carry_out(
        cluster,
        envelope,
        steps,
        Some(guard),
        Some(&crd_wait),
        first_attempt,
    )
    .await;
    if let (None, Some(wait)) = (&report.error, &envelope.spec.options.wait) {
        let waited = crate::wait::until_stable(
            cluster,
            &ctx.status,
            &envelope.id,
            &mut report.results,
            wait.timeout,
        )
        .await;
        report.error = waited.err();
    }
    report
}

fn decide(ctx: &Context, err: &OpError, delivered: u64) -> Decision {
    policy::decide(
        err,
        delivered,
        ctx.config.pool.max_deliver,
        &ctx.config.retry,
    )
}

/// For errors where no record can be written: what the policy says, recording nothing.
fn unrecorded(ctx: &Context, err: &OpError, delivered: u64) -> Verdict {
    let decision = decide(ctx, err, delivered);
    match &decision {
        Decision::Retry(delay) => {
            tracing::warn!(error = %err, retry_in = ?delay, "cannot record status; will retry")
        }
        Decision::DeadLetter(info) => {
            tracing::warn!(error = %info.message, "cannot record status on the last delivery; leaving it to the sweeper")
        }
        Decision::Fail(info) | Decision::Term(info) => {
            tracing::error!(error = %info.message, "giving up on an operation whose status cannot be recorded")
        }
    }
    settle::unrecorded(decision)
}

/// A message that is not a readable envelope can never succeed: fail its record if its id
/// can be found, then terminate it.
async fn unreadable(ctx: &Context, message: &Message, delivered: u64, reason: String) -> Verdict {
    let err = OpError::Malformed(reason);
    let info = match decide(ctx, &err, delivered) {
        Decision::Term(info) | Decision::Fail(info) | Decision::DeadLetter(info) => info,
        Decision::Retry(_) => ErrorInfo {
            class: ErrorClass::Malformed,
            message: err.to_string(),
        },
    };
    tracing::error!(error = %info.message, "unreadable message; terminating it");
    if let Some(id) = message_id(message) {
        tracing::Span::current().record("op_id", id.as_str());
        if let Err(e) = ctx.status.fail_unclaimed(&id, info.clone()).await {
            tracing::warn!(error = %e, "could not record the failure");
        }
    }
    settle::verdict(Worked::Stopped(Decision::Term(info)))
}

/// The operation id of a message, from its `Nats-Msg-Id` header or its payload's `id`.
fn message_id(message: &Message) -> Option<OperationId> {
    let from_header = message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned());
    let from_payload = || {
        let value: serde_json::Value = serde_json::from_slice(&message.payload).ok()?;
        value.get("id")?.as_str().map(str::to_owned)
    };
    OperationId::parse(&from_header.or_else(from_payload)?).ok()
}

/// Runs `work`, telling JetStream every `every` that the message is still being worked on,
/// so a long operation is not redelivered to another replica meanwhile.
async fn with_progress<T>(work: impl Future<Output = T>, message: &Message, every: Duration) -> T {
    let mut work = std::pin::pin!(work);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticker.tick() => {
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "progress signal not sent");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an `async fn` of three arguments returns.
    fn future_size<A, B, C, F: Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Each message is handled by a task of its own, whose future is copied into place
    /// when it is spawned. With nothing boxed, the Kubernetes calls nested in it made that
    /// future 66 KB in a release build; boxed, it is 8 KB, and 26 KB with only the inner
    /// boxes (measured in the tests' build).
    #[test]
    fn the_future_spawned_for_each_message_stays_small() {
        let size = future_size(handle);
        assert!(
            size <= LIMIT,
            "handle's future is {size} bytes, over {LIMIT}"
        );
    }

    const LIMIT: usize = 16 * 1024;
}
