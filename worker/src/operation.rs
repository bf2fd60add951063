//! Handling one delivered message, start to finish: read the envelope, claim the
//! operation, carry it out, record how it ended, and acknowledge. Errors are turned into
//! decisions by [`crate::policy`] only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, Message};
use longshore_contract::jetstream as js_defs;
use longshore_contract::record::{ErrorClass, ErrorInfo, Outcome};
use longshore_contract::telemetry::{self, NatsHeadersRef};
use longshore_contract::{Envelope, OperationId};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

use crate::apply;
use crate::clusters::Registry;
use crate::config::Config;
use crate::deadletter;
use crate::error::OpError;
use crate::fence::Fences;
use crate::policy::{self, Decision};
use crate::status::{Claim, Finish, StatusStore};

/// What every operation handler shares.
pub struct Context {
    pub config: Config,
    pub clusters: Registry,
    pub status: StatusStore,
    pub fences: Fences,
    /// For dead letters.
    pub js: jetstream::Context,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// How a delivery ended, for the operations counter.
#[derive(Default)]
struct Tally {
    action: &'static str,
    outcome: &'static str,
    class: Option<ErrorClass>,
}

impl Tally {
    fn set(tally: &std::sync::Mutex<Tally>, outcome: &'static str, class: Option<ErrorClass>) {
        if let Ok(mut t) = tally.lock() {
            t.outcome = outcome;
            t.class = class;
        }
    }
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

/// How a message leaves the worker.
#[derive(Debug, PartialEq)]
enum Reply {
    /// Done (succeeded, superseded, failed, or already terminal): acknowledged with
    /// confirmation.
    Ack,
    /// Handed back for another delivery after the delay.
    Nak(Duration),
    /// Can never be processed, or dead-lettered: removed.
    Term,
}

/// Handles one message. `abort` is cancelled when the drain grace period is over: the
/// message is then handed back at once for another replica.
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
    let tally = std::sync::Mutex::new(Tally {
        action: "unknown",
        outcome: "handed_back",
        class: None,
    });
    async {
        let every = ctx.config.pool.ack_wait / 3;
        let work = with_progress(
            process(&ctx, &message, sequence, delivered, &tally),
            &message,
            every,
        );
        let reply = tokio::select! {
            reply = work => reply,
            () = abort.cancelled() => {
                tracing::info!("drain grace period over; handing the operation back");
                Tally::set(&tally, "handed_back", None);
                Reply::Nak(Duration::ZERO)
            }
        };
        send(&message, reply).await;
    }
    .instrument(span.clone())
    .await;
    let tally = tally.into_inner().unwrap_or_default();
    if let Some(class) = tally.class {
        span.record("otel.status_code", "error");
        span.record("error.type", crate::metrics::class_label(Some(class)));
    }
    ctx.metrics
        .operation(tally.action, tally.outcome, tally.class);
}

async fn process(
    ctx: &Context,
    message: &Message,
    sequence: u64,
    delivered: u64,
    tally: &std::sync::Mutex<Tally>,
) -> Reply {
    let span = tracing::Span::current();
    let envelope = match Envelope::from_message(message.headers.as_ref(), &message.payload) {
        Ok(envelope) => envelope,
        Err(e) => {
            Tally::set(tally, "failed", Some(ErrorClass::Malformed));
            return unreadable(ctx, message, delivered, e.to_string()).await;
        }
    };
    span.record("op_id", envelope.id.as_str());
    span.record("cluster", envelope.spec.cluster.as_str());
    span.record("action", envelope.spec.action.as_str());
    let action = envelope.spec.action.as_str();
    if let Ok(mut t) = tally.lock() {
        t.action = action;
    }
    let waited = jiff::Timestamp::now().duration_since(envelope.submitted_at);
    ctx.metrics
        .queue_wait
        .get_or_create(&crate::metrics::ActionLabels { action })
        .observe(waited.as_secs_f64().max(0.0));
    let started = std::time::Instant::now();
    let reply = carry(ctx, message, sequence, delivered, tally, &envelope).await;
    ctx.metrics
        .apply_duration
        .get_or_create(&crate::metrics::ActionLabels { action })
        .observe(started.elapsed().as_secs_f64());
    reply
}

async fn carry(
    ctx: &Context,
    message: &Message,
    sequence: u64,
    delivered: u64,
    tally: &std::sync::Mutex<Tally>,
    envelope: &Envelope,
) -> Reply {
    let claimed = ctx
        .status
        .claim(envelope, sequence)
        .instrument(kv_span("claim", js_defs::OPERATIONS_BUCKET))
        .await;
    let (record, revision) = match claimed {
        Ok(Claim::Terminal(state)) => {
            Tally::set(tally, "already_done", None);
            tracing::info!(
                state = state.as_str(),
                "already terminal, acknowledging without touching the cluster"
            );
            return Reply::Ack;
        }
        Ok(Claim::Running { record, revision }) => (*record, revision),
        Err(e) => {
            Tally::set(tally, "retried", None);
            return retry_or_hand_over(ctx, &e, delivered);
        }
    };

    let report = match ctx.clusters.get(envelope.spec.cluster.as_str()) {
        Some(cluster) => fenced(ctx, &cluster, envelope, sequence).await,
        None => apply::Report {
            results: Vec::new(),
            error: Some(OpError::UnknownCluster(envelope.spec.cluster.to_string())),
        },
    };
    let all_superseded = !report.results.is_empty()
        && report
            .results
            .iter()
            .all(|r| r.outcome == Outcome::Superseded);
    let (finish, reply) = match report.error {
        None if all_superseded => (Finish::Superseded(report.results), Reply::Ack),
        None => (Finish::Succeeded(report.results), Reply::Ack),
        Some(e) => match decide(ctx, &e, delivered) {
            Decision::Retry(delay) => {
                if matches!(e, OpError::Fenced { .. }) {
                    ctx.metrics.fence_waits.inc();
                }
                Tally::set(tally, "retried", None);
                tracing::warn!(error = %e, retry_in = ?delay, "transient failure; will retry");
                return Reply::Nak(delay);
            }
            Decision::Fail(info) => {
                tracing::warn!(class = ?info.class, error = %info.message, "operation failed");
                (Finish::Failed(report.results, info), Reply::Ack)
            }
            Decision::Term(info) => (Finish::Failed(report.results, info), Reply::Term),
            Decision::DeadLetter(info) => {
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
                    // This was the last delivery: handing it back makes JetStream announce
                    // it exhausted, and the sweeper dead-letters it.
                    tracing::warn!(error = %e, "cannot dead-letter now; leaving it to the sweeper");
                    Tally::set(tally, "retried", None);
                    return Reply::Nak(Duration::ZERO);
                }
                tracing::warn!(error = %info.message, "deliveries exhausted; dead-lettered");
                (Finish::DeadLettered(report.results, info), Reply::Term)
            }
        },
    };
    let class = match &finish {
        Finish::Failed(_, info) | Finish::DeadLettered(_, info) => Some(info.class),
        Finish::Succeeded(_) | Finish::Superseded(_) => None,
    };
    let finished = ctx
        .status
        .finish(record, revision, finish)
        .instrument(kv_span("finish", js_defs::OPERATIONS_BUCKET))
        .await;
    match finished {
        Ok(state) => {
            tracing::info!(state = state.as_str(), "operation finished");
            Tally::set(tally, state.as_str(), class);
            reply
        }
        // The effects are done and idempotent: redo the operation rather than leave a
        // record that says `running` forever.
        Err(e) => {
            Tally::set(tally, "retried", None);
            retry_or_hand_over(ctx, &e, delivered)
        }
    }
}

/// Plans the operation, takes its objects' fences (not for a dry run, which changes
/// nothing), carries it out while renewing their leases, and releases them. Fences are
/// released before the record is written: if the worker dies in between, the redelivered
/// operation takes them again and redoes its (idempotent) effects.
async fn fenced(
    ctx: &Context,
    cluster: &crate::clusters::Cluster,
    envelope: &Envelope,
    sequence: u64,
) -> apply::Report {
    let mut steps = match apply::plan(cluster, envelope).await {
        Ok(steps) => steps,
        Err(e) => {
            return apply::Report {
                results: Vec::new(),
                error: Some(e),
            };
        }
    };
    if envelope.spec.options.dry_run {
        return apply::carry_out(cluster, envelope, &steps, None).await;
    }
    let objects: BTreeMap<String, String> = steps
        .iter()
        .filter_map(|s| Some((s.fence.clone()?, s.object.to_string())))
        .collect();
    let guard = match ctx.fences.acquire(&envelope.id, sequence, &objects).await {
        Ok(guard) => guard,
        Err(e) => {
            return apply::Report {
                results: Vec::new(),
                error: Some(e),
            };
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
            carry_out_and_wait(ctx, cluster, envelope, &steps, &guard),
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
    guard.release(&applied).await;
    report
}

/// Carries the operation out and, if it asks to wait, waits for its objects to become
/// stable (still under the fences, so no other operation changes them meanwhile).
async fn carry_out_and_wait(
    ctx: &Context,
    cluster: &crate::clusters::Cluster,
    envelope: &Envelope,
    steps: &[apply::Step<'_>],
    guard: &crate::fence::Guard,
) -> apply::Report {
    let mut report = apply::carry_out(cluster, envelope, steps, Some(guard)).await;
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

/// For errors where no record can be written: retry if the policy says so. On the last
/// delivery the message is handed back too: JetStream then announces it exhausted and the
/// sweeper dead-letters it. A permanent failure drops the message (it is logged; the
/// record, if any, stays as it was).
fn retry_or_hand_over(ctx: &Context, err: &OpError, delivered: u64) -> Reply {
    match decide(ctx, err, delivered) {
        Decision::Retry(delay) => {
            tracing::warn!(error = %err, retry_in = ?delay, "cannot record status; will retry");
            Reply::Nak(delay)
        }
        Decision::DeadLetter(info) => {
            tracing::warn!(error = %info.message, "cannot record status on the last delivery; leaving it to the sweeper");
            Reply::Nak(Duration::ZERO)
        }
        Decision::Fail(info) | Decision::Term(info) => {
            tracing::error!(error = %info.message, "giving up on an operation whose status cannot be recorded");
            Reply::Ack
        }
    }
}

/// A message that is not a readable envelope can never succeed: fail its record if its id
/// can be found, then terminate it.
async fn unreadable(ctx: &Context, message: &Message, delivered: u64, reason: String) -> Reply {
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
        if let Err(e) = ctx.status.fail_unclaimed(&id, info).await {
            tracing::warn!(error = %e, "could not record the failure");
        }
    }
    Reply::Term
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

async fn send(message: &Message, reply: Reply) {
    let name = match reply {
        Reply::Ack => "ack",
        Reply::Nak(_) => "nak",
        Reply::Term => "term",
    };
    let span = tracing::info_span!(
        "settle",
        otel.name = %format!("{name} {}", message.subject),
        otel.kind = "client",
        messaging.system = "nats",
        messaging.destination.name = message.subject.as_str(),
        messaging.operation.type = "settle",
        messaging.operation.name = name,
    );
    send_inner(message, reply).instrument(span).await;
}

async fn send_inner(message: &Message, reply: Reply) {
    let sent = match reply {
        // Wait for the server's confirmation: after it, the operation is settled.
        Reply::Ack => message.double_ack().await,
        Reply::Nak(delay) if delay.is_zero() => message.ack_with(AckKind::Nak(None)).await,
        Reply::Nak(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
        Reply::Term => message.ack_with(AckKind::Term).await,
    };
    if let Err(e) = sent {
        // The message will be delivered again; its record decides what happens then.
        tracing::warn!(error = %e, "acknowledgement not confirmed");
    }
}

/// Hands a message back for immediate redelivery (used when draining).
pub async fn hand_back(message: &Message) {
    send(message, Reply::Nak(Duration::ZERO)).await;
}
