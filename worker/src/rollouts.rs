//! A worker's part in fleet rollouts (`docs/rollouts.md`): there is no coordinator, only
//! steps, and any hub worker takes any of them.
//!
//! - [`report`]: the worker that ends one cluster's operation publishes its tally before it
//!   acknowledges the operation, so a crash in between redelivers the operation, which is
//!   terminal by then and only reported again (one message: the tally's id is the
//!   operation's);
//! - [`stopped`]: before carrying a rollout's operation out, the worker checks that its
//!   rollout has not halted or been cancelled; if it has, the operation is recorded
//!   `cancelled` and nothing is touched;
//! - [`Stepper`]: hub workers pull steps (`longshore.steps.<id>`) from one durable consumer
//!   and apply them: tallies are read from the operations' records (not taken from the
//!   message), the progress moves by compare-and-set, and a wave that starts is published
//!   as ordinary operations whose ids come from the rollout's and the cluster's, so
//!   publishing it twice acts once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, Message, consumer::PullConsumer};
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use longshore_contract::OperationRecord;
use longshore_contract::jetstream::{OPERATIONS_BUCKET, ROLLOUTS_BUCKET};
use longshore_contract::registry::fleet::Fleet;
use longshore_contract::rollout::state::{ClusterHealth, Next, Outcome};
use longshore_contract::rollout::step::{self, Step, StepKind};
use longshore_contract::rollout::{Progress, Rollout, RolloutId, RolloutLink};
use longshore_contract::store::{Change, Modified, Store, StoreErrorKind};
use longshore_contract::{Envelope, OperationId, PoolName};

use crate::shutdown::Shutdown;

/// Steps taken from the consumer at once: a wave of tallies is applied in one
/// compare-and-set per rollout rather than one per cluster.
const BATCH: usize = 512;
/// Operations of a starting wave published at once.
const PUBLISHING: usize = 64;
/// How soon a step that failed (NATS away, a lost race too often) is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The rollouts bucket, as a worker reads and moves it.
#[derive(Clone)]
pub struct Rollouts {
    pub specs: Store<Rollout>,
    pub progress: Store<Progress>,
}

impl Rollouts {
    pub fn new(kv: jetstream::kv::Store) -> Self {
        Self {
            specs: Store::new(kv.clone(), ROLLOUTS_BUCKET),
            progress: Store::new(kv, ROLLOUTS_BUCKET),
        }
    }
}

/// Publishes the tally of `operation`, one cluster's operation of the rollout `link` names,
/// which has just ended (or was found ended). Returns once JetStream holds it.
pub async fn report(
    js: &jetstream::Context,
    link: &RolloutLink,
    operation: &OperationId,
) -> Result<(), String> {
    let step = Step::tally(link.id.clone(), operation.clone(), link.index, link.attempt);
    publish(js, &step).await
}

async fn publish(js: &jetstream::Context, step: &Step) -> Result<(), String> {
    let (subject, headers, payload) = step.to_message();
    js.publish_with_headers(subject, headers, payload)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map(|_| ())
        .map_err(|e| format!("publishing the tally to {}: {e}", step::STEPS_STREAM))
}

/// Why the rollout `link` names no longer lets its operations start, if it does not.
pub async fn stopped(rollouts: &Rollouts, link: &RolloutLink) -> Result<Option<String>, String> {
    let progress = rollouts
        .progress
        .read(&step::state_key(&link.id))
        .await
        .map_err(|e| e.to_string())?;
    Ok(progress.and_then(|p| {
        let p = p.value;
        p.phase.is_terminal().then(|| match p.reason {
            Some(reason) => format!("rollout {} is {}: {reason}", link.id, p.phase.as_str()),
            None => format!("rollout {} is {}", link.id, p.phase.as_str()),
        })
    }))
}

/// What the hub's steppers share.
pub struct Stepper {
    pub js: jetstream::Context,
    /// The steps consumer's `ack_wait`: a step taking longer says it is in progress.
    pub ack_wait: Duration,
    pub rollouts: Rollouts,
    pub records: Store<OperationRecord>,
    pub fleet: Fleet,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The kinds the pools watch (`watch.kinds`): a health gate waits for these only.
    pub watched: Vec<String>,
}

impl Stepper {
    /// Takes steps until shutdown.
    pub async fn run(self: Arc<Self>, consumer: PullConsumer, shutdown: Shutdown) {
        let mut retries = longshore_contract::backoff::Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
        )
        .retries();
        loop {
            let messages = tokio::select! {
                m = consumer.stream().max_messages_per_batch(BATCH).messages() => m,
                () = shutdown.started() => return,
            };
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    let pause = retries.next_delay();
                    tracing::warn!(error = %e, retry_in = ?pause, "cannot pull rollout steps");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = shutdown.started() => return,
                    }
                }
            };
            retries.reset();
            loop {
                let first = tokio::select! {
                    next = messages.next() => next,
                    () = shutdown.started() => return,
                };
                let mut batch = match first {
                    Some(Ok(m)) => vec![m],
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "rollout step pull interrupted");
                        continue;
                    }
                    None => break,
                };
                // Whatever else has arrived already, without waiting for more.
                while batch.len() < BATCH {
                    match messages.next().now_or_never() {
                        Some(Some(Ok(m))) => batch.push(m),
                        _ => break,
                    }
                }
                self.take(batch).await;
            }
        }
    }

    /// Applies a batch of steps: each rollout's together, different rollouts side by side.
    async fn take(&self, batch: Vec<Message>) {
        let mut by_rollout: BTreeMap<RolloutId, Vec<(Message, Option<Step>)>> = BTreeMap::new();
        for message in batch {
            match Step::from_payload(&message.payload) {
                Ok(step) => by_rollout
                    .entry(step.rollout.clone())
                    .or_default()
                    .push((message, Some(step))),
                Err(e) => {
                    tracing::warn!(error = %e, subject = %message.subject, "unreadable rollout step; dropping it");
                    settle(&message, AckKind::Term).await;
                }
            }
        }
        futures::future::join_all(
            by_rollout
                .into_iter()
                .map(|(id, steps)| self.take_for(id, steps)),
        )
        .await;
    }

    async fn take_for(&self, id: RolloutId, steps: Vec<(Message, Option<Step>)>) {
        let span = tracing::info_span!("rollout_step", rollout = %id, steps = steps.len());
        let work = tracing::Instrument::instrument(
            self.step(&id, steps.iter().filter_map(|(_, s)| s.as_ref())),
            span,
        );
        tokio::pin!(work);
        // A wave of thousands takes a while to publish: the steps held meanwhile are not
        // redelivered to another replica.
        let mut progress = tokio::time::interval(self.ack_wait / 3);
        progress.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                _ = progress.tick() => {
                    for (message, _) in &steps {
                        settle(message, AckKind::Progress).await;
                    }
                }
            }
        };
        let counted = match &outcome {
            Ok(_) => "applied",
            Err(e) => {
                tracing::warn!(rollout = %id, error = %e, "rollout step failed; will retry");
                "retried"
            }
        };
        self.metrics
            .rollout_steps
            .get_or_create(&crate::metrics::OutcomeLabels { outcome: counted })
            .inc();
        let is_timer =
            |step: &Option<Step>| matches!(step.as_ref().map(|s| &s.kind), Some(StepKind::Timer));
        // Something due sooner than the timer wakes (a pause ending, a health check): one
        // of these steps is handed back to come again then, the timer if it is here.
        let soon = matches!(outcome, Ok(Some(wake)) if wake < step::TIMER_PERIOD);
        let again = steps
            .iter()
            .position(|(_, s)| is_timer(s))
            .or_else(|| soon.then(|| steps.len() - 1));
        for (i, (message, step)) in steps.iter().enumerate() {
            let reply = match &outcome {
                Err(_) => AckKind::Nak(Some(RETRY)),
                // The timer lives as long as the rollout; another step stands in for it
                // until something due soon is done.
                Ok(Some(wake)) if Some(i) == again && (soon || is_timer(step)) => {
                    AckKind::Nak(Some(*wake))
                }
                Ok(_) => AckKind::Ack,
            };
            settle(message, reply).await;
        }
    }

    /// Takes the steps of one rollout: counts their tallies, moves the progress as far as
    /// it goes, publishing each wave that starts. `Some(delay)`: look again after it (the
    /// rollout is not over); `None`: it is over, or does not exist.
    async fn step<'a>(
        &self,
        id: &RolloutId,
        steps: impl Iterator<Item = &'a Step>,
    ) -> Result<Option<Duration>, String> {
        let Some(rollout) = self
            .rollouts
            .specs
            .read(&step::spec_key(id))
            .await
            .map_err(|e| e.to_string())?
            .map(|v| v.value)
        else {
            tracing::warn!(rollout = %id, "a step for a rollout that does not exist; dropping it");
            return Ok(None);
        };
        let mut tallies = Vec::new();
        for step in steps {
            if let StepKind::Tally {
                operation,
                index,
                attempt,
            } = &step.kind
                && let Some(outcome) = self.outcome(&rollout, operation, *index, *attempt).await?
            {
                tallies.push((*index, *attempt, outcome));
            }
        }
        let key = step::state_key(id);
        // Looked at once per step, and only when the current wave soaks.
        let mut health: Option<(usize, Vec<(usize, ClusterHealth)>)> = None;
        let mut health_looked = false;
        let mut publish_done: Option<usize> = None;
        let mut retry_done: Option<u32> = None;
        loop {
            let now = Timestamp::now();
            let mut next = Next::default();
            let mut over = false;
            let mut before = None;
            let mut latest = None;
            let modified = self
                .rollouts
                .progress
                .modify(&key, None, |current| {
                    // A dispatcher that died between the timer and the progress: the
                    // progress is the record's first, made here as it would have been.
                    let missing = current.is_none();
                    let current = current
                        .cloned()
                        .unwrap_or_else(|| Progress::new(&rollout, rollout.submitted_at));
                    let mut progress = current.clone();
                    before = Some(current.clone());
                    for (index, attempt, outcome) in &tallies {
                        progress.tally(&rollout, *index, *attempt, *outcome, now);
                    }
                    if let Some(wave) = publish_done {
                        progress.published(wave, now);
                    }
                    if let Some(attempt) = retry_done {
                        progress.retry_published(attempt, now);
                    }
                    if let Some((wave, seen)) = &health {
                        progress.observe_health(&rollout, *wave, seen, now);
                    }
                    next = progress.advance(&rollout, now);
                    over = progress.phase.is_terminal();
                    latest = Some(progress.clone());
                    Ok::<_, longshore_contract::store::StoreError>(
                        if progress == current && !missing {
                            Change::Keep
                        } else {
                            Change::Write(progress)
                        },
                    )
                })
                .await
                .map_err(|e| e.to_string())?;
            if let (Modified::Written(after), Some(before)) = (&modified, &before) {
                self.count(before, &after.value);
            }
            tallies.clear();
            if !health_looked && let Some(latest) = &latest {
                health_looked = true;
                health = self.health(&rollout, latest).await?;
                if health.is_some() {
                    continue;
                }
            }
            if let (Some(attempt), Some(latest)) = (next.retry, &latest) {
                let clusters = latest
                    .retries
                    .iter()
                    .find(|r| r.attempt == attempt)
                    .map(|r| r.clusters.clone())
                    .unwrap_or_default();
                let members: Vec<(usize, u32)> = clusters.iter().map(|i| (*i, attempt)).collect();
                self.publish(&rollout, &format!("retry {attempt}"), &members)
                    .await?;
                tracing::info!(rollout = %id, attempt, clusters = members.len(), "retry started");
                retry_done = Some(attempt);
                continue;
            }
            let Some(wave) = next.publish else {
                if over {
                    return Ok(None);
                }
                let wake = next
                    .wake_at
                    .map(|at| at.duration_since(now).unsigned_abs())
                    .unwrap_or(step::TIMER_PERIOD)
                    .clamp(Duration::from_millis(50), step::TIMER_PERIOD);
                return Ok(Some(wake));
            };
            let members: Vec<(usize, u32)> = rollout.wave_range(wave).map(|i| (i, 0)).collect();
            self.publish(&rollout, &format!("wave {}", wave + 1), &members)
                .await?;
            tracing::info!(rollout = %id, wave = wave + 1, clusters = rollout.wave_range(wave).len(), "wave started");
            publish_done = Some(wave);
        }
    }

    /// For a rollout whose current wave is soaking (in `progress`): how each of its
    /// succeeded clusters' objects stand, from the inventory the clusters' watchers keep.
    async fn health(
        &self,
        rollout: &Rollout,
        progress: &Progress,
    ) -> Result<Option<(usize, Vec<(usize, ClusterHealth)>)>, String> {
        use longshore_contract::rollout::state::{SUCCEEDED, WaveState};
        let w = progress.wave;
        if progress.phase.is_terminal() || progress.waves[w].state != WaveState::Soaking {
            return Ok(None);
        }
        let start = rollout.wave_range(w).start;
        let soaking: Vec<usize> = progress.waves[w]
            .cells
            .chars()
            .enumerate()
            .filter(|(_, c)| *c == SUCCEEDED)
            .map(|(offset, _)| offset)
            .collect();
        let seen: Vec<Result<(usize, ClusterHealth), String>> = futures::stream::iter(soaking)
            .map(|offset| {
                let attempt = progress.attempt_of(start + offset);
                async move {
                    let cluster = &rollout.clusters[start + offset];
                    Ok((
                        offset,
                        self.cluster_health(rollout, cluster, attempt).await?,
                    ))
                }
            })
            .buffer_unordered(PUBLISHING)
            .collect()
            .await;
        Ok(Some((w, seen.into_iter().collect::<Result<_, _>>()?)))
    }

    /// Whether every object `cluster`'s operation changed is ready, as the cluster's watcher
    /// saw it after the operation ended. Kinds not watched do not hold the gate.
    async fn cluster_health(
        &self,
        rollout: &Rollout,
        cluster: &longshore_contract::ClusterName,
        attempt: u32,
    ) -> Result<ClusterHealth, String> {
        use longshore_contract::inventory::{Health, object_key};
        use longshore_contract::record::Outcome as Done;
        let op = rollout.id.attempt(cluster, attempt);
        let Some(record) = self
            .records
            .read(op.as_str())
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(ClusterHealth::NotYet);
        };
        let record = record.value;
        for object in &record.results {
            if matches!(object.outcome, Done::Deleted | Done::NotFound)
                || !self
                    .watched
                    .contains(&format!("{}/{}", object.api_version, object.kind))
            {
                continue;
            }
            let key = object_key(
                cluster.as_str(),
                &object.api_version,
                &object.kind,
                object.namespace.as_deref(),
                &object.name,
            );
            let Some(seen) = self
                .fleet
                .inventory
                .read(&key)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Ok(ClusterHealth::NotYet);
            };
            let seen = seen.value;
            // Seen since the operation wrote it: its health is the operation's outcome's.
            let since = seen.last_operation.as_deref() == Some(op.as_str())
                || record.finished_at.is_some_and(|at| seen.observed_at >= at);
            match seen.health {
                _ if !since => return Ok(ClusterHealth::NotYet),
                Health::Failed => {
                    return Ok(ClusterHealth::Unhealthy(format!(
                        "{} {}: {}",
                        object.kind,
                        object.name,
                        seen.health_reason.unwrap_or_else(|| "failed".into())
                    )));
                }
                Health::Progressing => return Ok(ClusterHealth::NotYet),
                Health::Ready => {}
            }
        }
        Ok(ClusterHealth::Ready)
    }

    /// Counts what this step moved (it alone did: its compare-and-set won).
    fn count(&self, before: &Progress, after: &Progress) {
        use crate::metrics::StateLabels;
        use longshore_contract::rollout::state::WaveState;
        for (was, is) in before.waves.iter().zip(&after.waves) {
            if was.state == WaveState::Pending && is.state == WaveState::Running {
                self.metrics.rollout_waves_started.inc();
            }
            let ended = match (was.state, is.state) {
                (WaveState::Running, WaveState::Succeeded) => Some("succeeded"),
                (WaveState::Running, WaveState::Failed) => Some("failed"),
                _ => None,
            };
            if let (Some(state), Some(start), Some(end)) = (ended, is.started_at, is.ended_at) {
                let took = end.duration_since(start).as_secs_f64().max(0.0);
                self.metrics
                    .rollout_wave_duration
                    .get_or_create(&StateLabels { state })
                    .observe(took);
            }
        }
        if !before.phase.is_terminal() && after.phase.is_terminal() {
            let state = match after.phase {
                longshore_contract::rollout::Phase::Halted => "halted",
                longshore_contract::rollout::Phase::Cancelled => "cancelled",
                _ => "succeeded",
            };
            self.metrics
                .rollouts_ended
                .get_or_create(&StateLabels { state })
                .inc();
        }
    }

    /// How the operation `operation` (the cluster at `index`) ended, by its record; `None`
    /// if it has not, or if the step names an operation that is not the rollout's.
    async fn outcome(
        &self,
        rollout: &Rollout,
        operation: &OperationId,
        index: usize,
        attempt: u32,
    ) -> Result<Option<Outcome>, String> {
        let ours = rollout
            .clusters
            .get(index)
            .is_some_and(|c| rollout.id.attempt(c, attempt) == *operation);
        if !ours {
            tracing::warn!(rollout = %rollout.id, op_id = %operation, index, "a tally for an operation that is not the rollout's; ignoring it");
            return Ok(None);
        }
        let record = self
            .records
            .read(operation.as_str())
            .await
            .map_err(|e| e.to_string())?;
        Ok(record.and_then(|r| Outcome::of(r.value.state)))
    }

    /// Puts the operations of `members` (cluster position, attempt) in the work queue:
    /// each record created `queued` (or found), then published with its id as
    /// `Nats-Msg-Id`. An operation found running or over is not published again.
    ///
    /// In the rollout's trace: a `start wave` span (`what`: `wave 2`, `retry 1`), child of
    /// the request that submitted the rollout, is the parent of each of the operations.
    async fn publish(
        &self,
        rollout: &Rollout,
        what: &str,
        members: &[(usize, u32)],
    ) -> Result<(), String> {
        let span = tracing::info_span!(
            "start_wave",
            otel.name = %format!("start {what} of {}", rollout.id),
            rollout = %rollout.id,
            clusters = members.len(),
        );
        if let Some(parent) = &rollout.traceparent {
            let mut carrier = async_nats::HeaderMap::new();
            carrier.insert(
                longshore_contract::envelope::TRACEPARENT_HEADER,
                parent.as_str(),
            );
            longshore_contract::telemetry::continue_from(
                &span,
                &longshore_contract::telemetry::NatsHeadersRef(Some(&carrier)),
            );
        }
        let now = Timestamp::now();
        let publishing = async {
            let envelopes: Vec<Envelope> = members
                .iter()
                .filter_map(|(i, attempt)| rollout.envelope(*i, *attempt, now))
                .collect();
            let results: Vec<Result<(), String>> = futures::stream::iter(envelopes)
                .map(|envelope| self.publish_operation(rollout, envelope))
                .buffer_unordered(PUBLISHING)
                .collect()
                .await;
            results.into_iter().collect()
        };
        tracing::Instrument::instrument(publishing, span).await
    }

    async fn publish_operation(&self, rollout: &Rollout, envelope: Envelope) -> Result<(), String> {
        let id = envelope.id.as_str();
        let mut record = OperationRecord::queued(&envelope);
        record.trace_id = rollout.trace_id.clone();
        match self.records.create(id, &record).await {
            Ok(_) => {}
            Err(e) if e.kind() == StoreErrorKind::AlreadyExists => {
                let existing = self.records.read(id).await.map_err(|e| e.to_string())?;
                if existing.is_some_and(|r| r.value.state != longshore_contract::State::Queued) {
                    return Ok(());
                }
            }
            Err(e) => return Err(format!("recording {id} in {OPERATIONS_BUCKET}: {e}")),
        }
        let pool = self
            .fleet
            .entry(&envelope.spec.cluster)
            .map(|e| e.pool.clone())
            .unwrap_or_else(PoolName::default_pool);
        let (subject, mut headers, payload) = envelope
            .to_message(&pool)
            .map_err(|e| format!("encoding {id}: {e}"))?;
        // The wave's span, or (tracing off here) the submitting request's.
        longshore_contract::telemetry::inject_into_headers(&tracing::Span::current(), &mut headers);
        if headers
            .get(longshore_contract::envelope::TRACEPARENT_HEADER)
            .is_none()
            && let Some(parent) = &rollout.traceparent
        {
            headers.insert(
                longshore_contract::envelope::TRACEPARENT_HEADER,
                parent.as_str(),
            );
        }
        self.js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| format!("publishing {id}: {e}"))?
            .await
            .map(|_| ())
            .map_err(|e| format!("publishing {id}: {e}"))
    }
}

async fn settle(message: &Message, reply: AckKind) {
    if let Err(e) = message.ack_with(reply).await {
        tracing::debug!(error = %e, "rollout step acknowledgement not sent");
    }
}
