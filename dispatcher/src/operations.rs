//! `GET /v1/operations`: the operations recently changed, newest first, as the caller's
//! policy may see them; and with `?watch=true`, their changes as server-sent events.
//!
//! - `?state=failed,dead_lettered&cluster=prod&source=ci&since=1h&limit=100`: filters
//!   (each optional). `since` bounds how far back (default 24h); at most [`MAX_SCAN`] of the
//!   newest records in that window are read, and `truncated` says when older ones were
//!   left out. The answer carries `revision`: the bucket's newest revision when read.
//! - `?watch=true&after=<revision>` with the same filters: each change after it, as an
//!   `operation` event (its data the operation as listed, its `id` the revision, so a
//!   reconnecting `EventSource` resumes with `Last-Event-ID`), or a `gone` event
//!   (`{"id": …}`) when an operation of the cluster and source asked for leaves the states
//!   asked for, or its record expires. A list read then followed from its `revision` misses
//!   nothing and sees nothing twice.
//!
//! Operations of clusters the caller's policy does not allow are never shown.

use std::{collections::BTreeSet, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use futures::{StreamExt, stream};
use longshore_contract::{
    Action, OperationRecord, State as OpState,
    record::ErrorInfo,
    rollout::RolloutLink,
    spec::{FieldError, PipelineContext},
    store::{KeyChange, StoreError},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Caller,
    context::Context,
    error::{Error, Result},
    events::{LAST_EVENT_ID, Slot},
};

/// Most records one listing reads (the newest of its window).
pub const MAX_SCAN: u64 = 10_000;
/// Most operations one listing returns.
pub const MAX_LIMIT: usize = 500;
/// How far back a listing looks unless told.
const DEFAULT_SINCE: Duration = Duration::from_secs(24 * 3600);
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    cluster: Option<String>,
    source: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    watch: bool,
    after: Option<u64>,
}

/// Which operations a listing or a watch shows.
#[derive(Debug, Default)]
struct Filter {
    states: Vec<OpState>,
    cluster: Option<String>,
    source: Option<String>,
}

impl Filter {
    /// Whether `record` is of the cluster and source asked for, and the caller may see it:
    /// then a watch tells of it, as `operation` or `gone`.
    fn in_scope(&self, caller: &Caller, record: &OperationRecord) -> bool {
        caller.may_read_cluster(&record.cluster)
            && self.cluster.as_ref().is_none_or(|c| *c == record.cluster)
            && self.source.as_ref().is_none_or(|s| *s == record.source)
    }

    fn matches(&self, caller: &Caller, record: &OperationRecord) -> bool {
        self.in_scope(caller, record)
            && (self.states.is_empty() || self.states.contains(&record.state))
    }
}

fn parse_states(text: &str, errors: &mut Vec<FieldError>) -> Vec<OpState> {
    let mut states = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match serde_json::from_value::<OpState>(json!(name)) {
            Ok(state) if !states.contains(&state) => states.push(state),
            Ok(_) => {}
            Err(_) => errors.push(FieldError::new(
                "state",
                format!(
                    "{name:?} is not a state: queued, running, succeeded, failed, superseded, dead_lettered or cancelled"
                ),
            )),
        }
    }
    states
}

/// An operation as a listing shows it: its record without per-object results (which may
/// be large), with how many objects it has results for.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub id: String,
    pub state: OpState,
    pub cluster: String,
    pub source: String,
    pub action: Action,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    pub submitted_at: jiff::Timestamp,
    pub updated_at: jiff::Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<jiff::Timestamp>,
    pub objects: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutLink>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineContext>,
    /// The record's revision in the bucket.
    pub revision: u64,
}

impl Summary {
    fn of(record: OperationRecord, revision: u64) -> Self {
        Self {
            id: record.id.to_string(),
            state: record.state,
            cluster: record.cluster,
            source: record.source,
            action: record.action,
            attempts: record.attempts,
            worker: record.worker,
            submitted_at: record.submitted_at,
            updated_at: record.updated_at,
            finished_at: record.finished_at,
            objects: record.results.len(),
            progress: record.progress,
            error: record.error,
            rollout: record.rollout,
            pipeline: record.pipeline,
            revision,
        }
    }
}

pub async fn list(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    headers: HeaderMap,
    query: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| Error::field("query", e.body_text()))?;
    let mut errors = Vec::new();
    let filter = Filter {
        states: query
            .state
            .as_deref()
            .map(|s| parse_states(s, &mut errors))
            .unwrap_or_default(),
        cluster: query.cluster.filter(|c| !c.is_empty()),
        source: query.source.filter(|s| !s.is_empty()),
    };
    let since = match query.since.as_deref() {
        None => DEFAULT_SINCE,
        Some(text) => longshore_contract::duration::parse(text).unwrap_or_else(|reason| {
            errors.push(FieldError::new("since", reason));
            DEFAULT_SINCE
        }),
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    if query.watch && (query.since.is_some() || query.limit.is_some()) {
        errors.push(FieldError::new(
            if query.since.is_some() {
                "since"
            } else {
                "limit"
            },
            "a watch follows changes from `after`: give since and limit to a listing only",
        ));
    }
    if !query.watch && query.after.is_some() {
        errors.push(FieldError::new(
            "after",
            "only a watch (watch=true) starts after a revision",
        ));
    }
    let after = if query.watch {
        start_after(&headers, query.after, &mut errors)
    } else {
        None
    };
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    if let Some(cluster) = &filter.cluster {
        caller.check_read_cluster(cluster)?;
    }
    if query.watch {
        return watch(ctx, caller, filter, after).await;
    }
    let store = ctx.operations()?;
    let from = std::time::SystemTime::now()
        .checked_sub(since)
        .unwrap_or(std::time::UNIX_EPOCH);
    let recent = store.recent(from, MAX_SCAN).await?;
    let mut items: Vec<Summary> = recent
        .entries
        .into_iter()
        .filter(|(_, v)| filter.matches(&caller, &v.value))
        .map(|(_, v)| Summary::of(v.value, v.revision))
        .collect();
    items.sort_by(|a, b| {
        b.updated_at
            .cmp(&a.updated_at)
            .then(b.revision.cmp(&a.revision))
    });
    items.truncate(limit);
    Ok(Json(json!({
        "items": items,
        "revision": recent.last_revision,
        "truncated": recent.truncated,
    }))
    .into_response())
}

/// Where a watch starts: after `Last-Event-ID` (a reconnecting `EventSource`), else after
/// `after`, else (`None`) after the newest revision now.
fn start_after(
    headers: &HeaderMap,
    after: Option<u64>,
    errors: &mut Vec<FieldError>,
) -> Option<u64> {
    if let Some(value) = headers.get(LAST_EVENT_ID).filter(|v| !v.is_empty()) {
        let text = String::from_utf8_lossy(value.as_bytes());
        return match text.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(FieldError::new(
                    LAST_EVENT_ID,
                    format!("{text:?}: must be a revision (a whole number)"),
                ));
                None
            }
        };
    }
    after
}

async fn watch(
    ctx: Arc<Context>,
    caller: Caller,
    filter: Filter,
    after: Option<u64>,
) -> Result<Response> {
    let store = ctx.operations()?;
    let slot = Slot::take(&ctx)?;
    let after = match after {
        Some(n) => n,
        None => store.last_revision().await?,
    };
    let watch = Watch {
        changes: store.changes_after(after).await?.boxed(),
        caller,
        filter,
        seen: BTreeSet::new(),
        deadline: Instant::now() + ctx.config.http.max_wait,
        stopping: ctx.stopping.clone(),
        done: false,
        _slot: slot,
    };
    let feed = stream::unfold(watch, |mut watch| async move {
        let event = watch.next().await?;
        Some((Ok::<_, Infallible>(event), watch))
    });
    let position = SseEvent::default()
        .comment(format!("after revision {after}"))
        .id(after.to_string());
    let body = stream::once(async move { Ok(position) }).chain(feed);
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// An open watch: the bucket's changes, as the caller and its filter see them.
struct Watch {
    changes: futures::stream::BoxStream<'static, Result<KeyChange<OperationRecord>, StoreError>>,
    caller: Caller,
    filter: Filter,
    /// Ids told of in scope, so a deletion (which carries no record) is told only of those.
    seen: BTreeSet<String>,
    deadline: Instant,
    stopping: CancellationToken,
    done: bool,
    _slot: Slot,
}

impl Watch {
    /// The next event to send, or `None` when the watch ends: its time is up, the
    /// dispatcher is stopping, or (after an `error` event) the watch failed.
    async fn next(&mut self) -> Option<SseEvent> {
        while !self.done {
            let next = tokio::select! {
                () = self.stopping.cancelled() => return None,
                next = tokio::time::timeout_at(self.deadline, self.changes.next()) => next,
            };
            let change = match next {
                Err(_) | Ok(None) => return None,
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "operations watch ended");
                    self.done = true;
                    return Some(SseEvent::default().event("error").data(format!(
                        "following the operations failed ({e}); reconnect to resume"
                    )));
                }
                Ok(Some(Ok(change))) => change,
            };
            if let Some(event) = event_of(&self.caller, &self.filter, &mut self.seen, change) {
                return Some(event);
            }
        }
        None
    }
}

/// The event a change is, for a caller watching with `filter`.
fn event_of(
    caller: &Caller,
    filter: &Filter,
    seen: &mut BTreeSet<String>,
    change: KeyChange<OperationRecord>,
) -> Option<SseEvent> {
    let id = change.revision.to_string();
    let Some(record) = change.value else {
        return seen.remove(&change.key).then(|| {
            SseEvent::default()
                .event("gone")
                .id(id)
                .json_data(json!({"id": change.key}))
                .ok()
        })?;
    };
    if !filter.in_scope(caller, &record) {
        return None;
    }
    if !filter.matches(caller, &record) {
        return SseEvent::default()
            .event("gone")
            .id(id)
            .json_data(json!({"id": record.id.as_str()}))
            .ok();
    }
    seen.insert(change.key);
    SseEvent::default()
        .event("operation")
        .id(id)
        .json_data(Summary::of(record, change.revision))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_named_or_refused() {
        let mut errors = Vec::new();
        let states = parse_states("failed, dead_lettered,", &mut errors);
        assert!(errors.is_empty());
        assert_eq!(states, [OpState::Failed, OpState::DeadLettered]);
        parse_states("failed,broken", &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "state");
        assert!(
            errors[0].reason.contains("\"broken\""),
            "{}",
            errors[0].reason
        );
    }
}
