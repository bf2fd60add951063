//! Fleet rollouts over HTTP (`docs/rollouts.md`):
//!
//! - `POST /v1/fleet-rollouts`: the selection is resolved and the waves laid out once,
//!   here; the rollout's record, its timer step and its progress are written, in that
//!   order, before the 202. A retry with the same key finds the record and writes what is
//!   missing; a timer that cannot be published withdraws the record, and answers 503.
//! - `GET /v1/fleet-rollouts[?state=&limit=]`: the rollouts the caller may read, newest
//!   first;
//! - `GET /v1/fleet-rollouts/{id}[?wait=60s]`: per wave and per cluster, as the progress
//!   says; `state` and `percentComplete` for pipelines to poll; `/events` the same as
//!   server-sent events, one per change.
//! - `POST /v1/fleet-rollouts/{id}/{pause|resume|approve|cancel|retry-failed}[?wave=N]`: compare-and-set
//!   on the progress, recorded with who and when, then a nudge so it takes effect at once
//!   (the rollout's timer makes it within its period if the nudge is lost).

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use jiff::Timestamp;
use longshore_contract::rollout::state::{CANCELLED, ControlAction, FAILED, OPEN, SUCCEEDED};
use longshore_contract::rollout::step::{self, Step};
use longshore_contract::rollout::{Progress, Rollout, RolloutId};
use longshore_contract::store::{Change, Modified, StoreErrorKind};
use longshore_contract::{IdempotencyKey, telemetry};
use serde_json::{Value, json};

use crate::{
    auth::Caller,
    context::{Context, Rollouts},
    error::{Error, Result},
    intake::{IDEMPOTENCY_KEY, JsonBody, KeyHeader},
    rollout_request,
};

/// `POST /v1/fleet-rollouts`
pub async fn submit(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    KeyHeader(header_key): KeyHeader,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let fleet = ctx.fleet()?;
    let mut registered = Vec::with_capacity(fleet.cluster_view.len());
    fleet.cluster_view.scan(None, |_, entry| {
        registered.push((entry.name.clone(), entry.labels.clone()));
        true
    });
    let proposal = rollout_request::parse(&body, header_key.as_deref(), &registered)?;
    // Kinds, namespaces and the action are the template's, the same on every cluster.
    caller.check(&proposal.template)?;
    caller.check_read_clusters(&proposal.clusters)?;
    let key = match proposal.key.clone().or_else(|| {
        proposal
            .template
            .pipeline
            .as_ref()
            .and_then(crate::request::pipeline_key)
    }) {
        Some(key) => key,
        None => IdempotencyKey::new(uuid::Uuid::now_v7().to_string())
            .map_err(|r| Error::field("idempotencyKey", r))?,
    };
    let timeout = ctx.config.http.request_timeout;
    let (rollout, replayed) = tokio::time::timeout(timeout, accept(&ctx, &caller, proposal, key))
        .await
        .map_err(|_| Error::Timeout(timeout))??;
    ctx.metrics.rollout_accepted(replayed);
    let url = status_url(&ctx, &rollout.id);
    let sizes: Vec<usize> = (0..rollout.wave_ends.len())
        .map(|w| rollout.wave_range(w).len())
        .collect();
    let body = json!({
        "id": rollout.id,
        "idempotencyKey": rollout.idempotency_key,
        "statusUrl": url,
        "clusters": rollout.clusters.len(),
        "waves": sizes,
    });
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&url) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(rollout.idempotency_key.as_str()) {
        h.insert(IDEMPOTENCY_KEY, v);
    }
    if replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn accept(
    ctx: &Context,
    caller: &Caller,
    p: rollout_request::Proposal,
    key: IdempotencyKey,
) -> Result<(Rollout, bool)> {
    let stores = ctx.rollouts()?;
    let id = RolloutId::derive(&caller.source, &key);
    let span = tracing::Span::current();
    let mut trace = async_nats::HeaderMap::new();
    telemetry::inject_into_headers(&span, &mut trace);
    let now = Timestamp::now();
    let rollout = Rollout {
        id: id.clone(),
        idempotency_key: key.clone(),
        source: caller.source.clone(),
        fingerprint: p.fingerprint,
        submitted_at: now,
        template: p.template,
        selection: p.selection,
        strategy: p.strategy,
        clusters: p.clusters,
        wave_ends: p.wave_ends,
        trace_id: telemetry::trace_id(&span),
        traceparent: trace
            .get(longshore_contract::envelope::TRACEPARENT_HEADER)
            .map(|v| v.to_string()),
    };
    let spec_key = step::spec_key(&id);
    let (rollout, created) = match stores.specs.create(&spec_key, &rollout).await {
        Ok(revision) => (rollout, Some(revision)),
        Err(e) if e.kind() == StoreErrorKind::AlreadyExists => {
            let existing = stores
                .specs
                .read(&spec_key)
                .await?
                .ok_or_else(|| {
                    Error::Unavailable("the rollout's record changed concurrently; retry".into())
                })?
                .value;
            if existing.fingerprint != rollout.fingerprint {
                return Err(Error::RolloutKeyReused {
                    key: key.as_str().to_owned(),
                    id: id.to_string(),
                });
            }
            (existing, None)
        }
        Err(e) => return Err(e.into()),
    };
    // The timer before the progress: a stepper that finds a record without progress makes
    // it (the same one, from the record), so once the timer is in, nothing can stall.
    if let Err(e) = publish_step(ctx, &Step::timer(id.clone())).await {
        withdraw(stores, &spec_key, created).await;
        return Err(e);
    }
    match stores
        .progress
        .create(&step::state_key(&id), &Progress::new(&rollout, now))
        .await
    {
        Ok(_) => {}
        Err(e) if e.kind() == StoreErrorKind::AlreadyExists => {}
        // The stepper makes it; the client's retry finds the rollout.
        Err(e) => return Err(e.into()),
    }
    if created.is_some() {
        tracing::info!(rollout = %id, clusters = rollout.clusters.len(), waves = rollout.wave_ends.len(), "fleet rollout accepted");
    }
    Ok((rollout, created.is_none()))
}

/// Removes the record an unfinished acceptance wrote (if it wrote it), so the client's
/// retry starts afresh.
async fn withdraw(stores: &Rollouts, spec_key: &str, spec: Option<u64>) {
    if let Some(revision) = spec
        && let Err(e) = stores.specs.delete_if(spec_key, revision).await
    {
        tracing::warn!(key = spec_key, error = %e, "could not withdraw an unaccepted rollout");
    }
}

/// Publishes a step, with a few attempts through a stream leader election.
async fn publish_step(ctx: &Context, step: &Step) -> Result<()> {
    let (subject, headers, payload) = step.to_message();
    crate::submit::publish_message(ctx, &step.message_id(), subject, headers, payload)
        .await
        .map(|_| ())
}

pub fn status_url(ctx: &Context, id: &RolloutId) -> String {
    let base = ctx.config.http.public_url.as_deref().unwrap_or_default();
    format!("{}/v1/fleet-rollouts/{id}", base.trim_end_matches('/'))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// The most rollouts one listing returns.
pub const MAX_LIST: usize = 1000;

/// `GET /v1/fleet-rollouts[?state=running&limit=100]`: the rollouts the caller may read
/// (every cluster of theirs allowed), newest first, without their waves' clusters.
pub async fn list(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    query: std::result::Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    use longshore_contract::rollout::Phase;
    let Query(query) = query.map_err(|e| Error::field("query", e.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(Error::field(
            "limit",
            format!("must be between 1 and {MAX_LIST}"),
        ));
    }
    let phases = [
        Phase::Running,
        Phase::Paused,
        Phase::WaitingApproval,
        Phase::Succeeded,
        Phase::Halted,
        Phase::Cancelled,
    ];
    let wanted = match query.state.as_deref() {
        None => None,
        Some(s) => Some(
            phases
                .into_iter()
                .find(|p| p.as_str() == s)
                .ok_or_else(|| {
                    let names: Vec<&str> = phases.iter().map(|p| p.as_str()).collect();
                    Error::field(
                        "state",
                        format!("{s:?} is not a rollout state; one of {}", names.join(", ")),
                    )
                })?,
        ),
    };
    let stores = ctx.rollouts()?;
    let bound = Duration::from_secs(5);
    let (specs, progress) = tokio::time::timeout(bound, async {
        tokio::try_join!(stores.specs.scan("spec.>"), stores.progress.scan("state.>"))
    })
    .await
    .map_err(|_| Error::Timeout(bound))??;
    let progress: std::collections::HashMap<String, Progress> = progress
        .into_iter()
        .filter_map(|(key, v)| Some((key.strip_prefix("state.")?.to_owned(), v.value)))
        .collect();
    let mut items: Vec<(Timestamp, Value)> = specs
        .into_iter()
        .filter_map(|(_, spec)| {
            let rollout = spec.value;
            let p = progress.get(rollout.id.as_str())?;
            if wanted.is_some_and(|w| w != p.phase) {
                return None;
            }
            caller.check_read_clusters(&rollout.clusters).ok()?;
            let waves: Vec<Value> = p
                .waves
                .iter()
                .enumerate()
                .map(|(w, wave)| json!({"wave": w + 1, "state": wave.state, "size": wave.cells.len()}))
                .collect();
            Some((
                rollout.submitted_at,
                json!({
                    "id": rollout.id,
                    "state": p.phase,
                    "percentComplete": p.percent_complete(),
                    "action": rollout.template.action,
                    "source": rollout.source,
                    "clusters": rollout.clusters.len(),
                    "succeeded": p.count(SUCCEEDED),
                    "failed": p.count(FAILED),
                    "currentWave": p.wave + 1,
                    "waves": waves,
                    "submittedAt": rollout.submitted_at,
                    "updatedAt": p.updated_at,
                    "statusUrl": status_url(&ctx, &rollout.id),
                }),
            ))
        })
        .collect();
    items.sort_by_key(|item| std::cmp::Reverse(item.0));
    let more = items.len() > limit;
    let items: Vec<Value> = items.into_iter().take(limit).map(|(_, v)| v).collect();
    Ok(Json(json!({"items": items, "more": more})).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    wait: Option<String>,
}

/// `GET /v1/fleet-rollouts/{id}[?wait=]`
pub async fn status(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    Path(id): Path<String>,
    query: std::result::Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let id = RolloutId::parse(&id).map_err(|reason| Error::field("id", reason))?;
    let Query(query) = query.map_err(|e| Error::field("query", e.body_text()))?;
    let within = crate::api::wait_bound(&ctx, query.wait.as_deref())?;
    let stores = ctx.rollouts()?;
    let (rollout, progress) = read(stores, &id).await?;
    caller.check_read_clusters(&rollout.clusters)?;
    let progress = until_over(stores, &id, progress, within).await?;
    Ok(Json(view(&ctx, &rollout, &progress)).into_response())
}

async fn read(stores: &Rollouts, id: &RolloutId) -> Result<(Rollout, Progress)> {
    let missing = || Error::Missing(format!("fleet rollout {id}"));
    let bound = Duration::from_secs(5);
    let (spec_key, state_key) = (step::spec_key(id), step::state_key(id));
    let (spec, progress) = tokio::time::timeout(bound, async {
        tokio::try_join!(
            stores.specs.read(&spec_key),
            stores.progress.read(&state_key)
        )
    })
    .await
    .map_err(|_| Error::Timeout(bound))??;
    match (spec, progress) {
        (Some(s), Some(p)) => Ok((s.value, p.value)),
        _ => Err(missing()),
    }
}

/// Follows the progress until the rollout is over or `within` passes.
async fn until_over(
    stores: &Rollouts,
    id: &RolloutId,
    current: Progress,
    within: Duration,
) -> Result<Progress> {
    if current.phase.is_terminal() || within.is_zero() {
        return Ok(current);
    }
    let deadline = tokio::time::Instant::now() + within;
    let changes = stores.progress.watch(&step::state_key(id)).await?;
    tokio::pin!(changes);
    let mut last = current;
    loop {
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Err(_) | Ok(None) => return Ok(last),
            Ok(Some(change)) => {
                if let Some(p) = change? {
                    last = p.value;
                    if last.phase.is_terminal() {
                        return Ok(last);
                    }
                }
            }
        }
    }
}

/// A rollout as clients read it.
fn view(ctx: &Context, rollout: &Rollout, progress: &Progress) -> Value {
    let waves: Vec<Value> = progress
        .waves
        .iter()
        .enumerate()
        .map(|(w, wave)| {
            let range = rollout.wave_range(w);
            let start = range.start;
            let clusters: Vec<Value> = rollout.clusters[range]
                .iter()
                .zip(wave.cells.chars())
                .enumerate()
                .map(|(offset, (cluster, cell))| {
                    let state = match cell {
                        SUCCEEDED => "succeeded",
                        FAILED => "failed",
                        CANCELLED => "cancelled",
                        // Published: in the queue or being carried out, until it is tallied
                        // (a halted or cancelled wave's too).
                        OPEN if wave.started_at.is_some() => "running",
                        _ => "pending",
                    };
                    let attempt = progress.attempt_of(start + offset);
                    let mut c = json!({"name": cluster, "state": state, "operation": rollout.id.attempt(cluster, attempt)});
                    if attempt > 0 {
                        c["attempt"] = json!(attempt);
                    }
                    c
                })
                .collect();
            let gate = rollout.strategy.approval_before.contains(&(w + 1));
            json!({
                "wave": w + 1,
                "state": wave.state,
                "size": wave.cells.len(),
                "succeeded": wave.count(SUCCEEDED),
                "failed": wave.count(FAILED),
                "cancelled": wave.count(CANCELLED),
                "approval": gate.then(|| if progress.approved.contains(&(w + 1)) { "approved" } else { "required" }),
                "notBefore": wave.not_before,
                "readySince": wave.ready_since,
                "startedAt": wave.started_at,
                "endedAt": wave.ended_at,
                "clusters": clusters,
            })
        })
        .collect();
    json!({
        "id": rollout.id,
        "idempotencyKey": rollout.idempotency_key,
        "source": rollout.source,
        "state": progress.phase,
        "percentComplete": progress.percent_complete(),
        "reason": progress.reason,
        "action": rollout.template.action,
        "selection": rollout.selection,
        "strategy": rollout.strategy,
        "clusters": rollout.clusters.len(),
        "succeeded": progress.count(SUCCEEDED),
        "failed": progress.count(FAILED),
        "cancelled": progress.count(CANCELLED),
        "currentWave": progress.wave + 1,
        "submittedAt": rollout.submitted_at,
        "updatedAt": progress.updated_at,
        "endedAt": progress.ended_at,
        "traceId": rollout.trace_id,
        "statusUrl": status_url(ctx, &rollout.id),
        "controls": progress.controls,
        "retries": progress.retries,
        "waves": waves,
    })
}

/// `GET /v1/fleet-rollouts/{id}/events`: a `progress` event (data: the status) now and
/// after each change, ending after the rollout is over, or with a `timeout` event after
/// `http.max_wait`.
pub async fn events(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let id = RolloutId::parse(&id).map_err(|reason| Error::field("id", reason))?;
    let stores = ctx.rollouts()?;
    let (rollout, _) = read(stores, &id).await?;
    caller.check_read_clusters(&rollout.clusters)?;
    let changes = stores.progress.watch(&step::state_key(&id)).await?.boxed();
    let deadline = tokio::time::Instant::now() + ctx.config.http.max_wait;
    let rollout = Arc::new(rollout);
    let events = futures::stream::unfold((changes, false), move |(mut changes, done)| {
        let (ctx, rollout) = (ctx.clone(), rollout.clone());
        async move {
            if done {
                return None;
            }
            loop {
                let event = match tokio::time::timeout_at(deadline, changes.next()).await {
                    Err(_) => Event::default()
                        .event("timeout")
                        .data("not over before the wait bound"),
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => Event::default().event("error").data(e.to_string()),
                    // Deleted: nothing to tell until it is written again.
                    Ok(Some(Ok(None))) => continue,
                    Ok(Some(Ok(Some(progress)))) => {
                        let over = progress.value.phase.is_terminal();
                        let event = Event::default()
                            .event("progress")
                            .id(progress.revision.to_string())
                            .data(view(&ctx, &rollout, &progress.value).to_string());
                        return Some((Ok::<_, std::convert::Infallible>(event), (changes, over)));
                    }
                };
                return Some((Ok(event), (changes, true)));
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlQuery {
    wave: Option<usize>,
}

/// `POST /v1/fleet-rollouts/{id}/{control}[?wave=N]`
pub async fn control(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    query: std::result::Result<Query<ControlQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let action = match name.as_str() {
        "pause" => ControlAction::Pause,
        "resume" => ControlAction::Resume,
        "approve" => ControlAction::Approve,
        "cancel" => ControlAction::Cancel,
        "retry-failed" => ControlAction::RetryFailed,
        other => {
            return Err(Error::Missing(format!(
                "control {other:?} (one of pause, resume, approve, cancel, retry-failed)"
            )));
        }
    };
    let id = RolloutId::parse(&id).map_err(|reason| Error::field("id", reason))?;
    let Query(query) = query.map_err(|e| Error::field("query", e.body_text()))?;
    if action != ControlAction::Approve && query.wave.is_some() {
        return Err(Error::field("wave", "only an approval names a wave"));
    }
    let stores = ctx.rollouts()?;
    let (rollout, _) = read(stores, &id).await?;
    caller.check_rollout_control(action, &rollout.clusters)?;
    let mut refusal = None;
    let modified = stores
        .progress
        .modify(&step::state_key(&id), None, |current| {
            let Some(current) = current else {
                return Ok::<_, Error>(Change::Keep);
            };
            let mut progress = current.clone();
            match progress.control(
                &rollout,
                action,
                query.wave,
                &caller.source,
                Timestamp::now(),
            ) {
                Ok(true) => Ok(Change::Write(progress)),
                Ok(false) => Ok(Change::Keep),
                Err(e) => {
                    refusal = Some(e);
                    Ok(Change::Keep)
                }
            }
        })
        .await?;
    if let Some(e) = refusal {
        return Err(Error::Conflict(format!(
            "cannot {} rollout {id}: {e}",
            action.as_str()
        )));
    }
    let (changed, progress) = match modified {
        Modified::Written(v) => (true, v.value),
        Modified::Kept(Some(v)) => (false, v.value),
        Modified::Kept(None) | Modified::Deleted => {
            return Err(Error::Missing(format!("fleet rollout {id}")));
        }
    };
    if changed {
        ctx.metrics.rollout_control(action.as_str());
        tracing::info!(rollout = %id, control = action.as_str(), by = %caller.source, "fleet rollout controlled");
        let nudge = Step::nudge(id.clone(), format!("control.{}", progress.controls.len()));
        if let Err(e) = publish_step(&ctx, &nudge).await {
            tracing::warn!(rollout = %id, error = %e, "control recorded; its nudge was not published (the rollout's timer takes it up)");
        }
    }
    let mut body = view(&ctx, &rollout, &progress);
    body["changed"] = json!(changed);
    Ok(Json(body).into_response())
}
