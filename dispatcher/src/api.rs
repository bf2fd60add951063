//! The HTTP API: routes, and the translation between HTTP and [`crate::submit`]; what
//! accepting routes share on the way in is in [`crate::intake`].

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use longshore_contract::{OperationId, OperationRecord};
use serde_json::json;

use crate::{
    auth::Caller,
    clusters, console,
    context::Context,
    deadletters,
    error::{Error, Result},
    events, hooks,
    intake::{self, JsonBody, KeyHeader, KeySource},
    inventory, operations, rollouts, wait,
};

/// The source recorded for operations submitted through the plain API.
pub const API_SOURCE: &str = "api";

/// Every route [`router`] serves outside the console, with the methods it serves there
/// (HEAD goes with GET): each starts with its request counters at 0. A test holds this
/// table to what the router answers.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/operations", &["GET", "POST"]),
    ("/v1/operations/{id}", &["GET"]),
    ("/v1/operations/{id}/events", &["GET"]),
    ("/v1/operations/{id}/retry", &["POST"]),
    ("/v1/dead-letters", &["GET"]),
    ("/v1/fleet-rollouts", &["GET", "POST"]),
    ("/v1/fleet-rollouts/{id}", &["GET"]),
    ("/v1/fleet-rollouts/{id}/events", &["GET"]),
    ("/v1/fleet-rollouts/{id}/{control}", &["POST"]),
    ("/v1/clusters", &["GET"]),
    ("/v1/clusters/{name}", &["GET", "PUT", "PATCH", "DELETE"]),
    ("/v1/objects", &["GET"]),
    ("/v1/events", &["GET"]),
    ("/v1/hooks/{source}", &["POST"]),
    ("/v1/whoami", &["GET"]),
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/metrics", &["GET"]),
];

pub fn router(ctx: Arc<Context>) -> Router {
    let limit = ctx.config.http.body_limit;
    ctx.metrics.serve_routes(ROUTES);
    if ctx.config.console.enabled {
        ctx.metrics.serve_routes(console::ROUTES);
    }
    Router::new()
        .route(
            "/v1/operations",
            get(operations::list).post(create_operation),
        )
        .route("/v1/operations/{id}", get(get_operation))
        .route("/v1/operations/{id}/events", get(operation_events))
        .route("/v1/operations/{id}/retry", post(retry_operation))
        .route("/v1/dead-letters", get(list_dead_letters))
        .route(
            "/v1/fleet-rollouts",
            get(rollouts::list).post(rollouts::submit),
        )
        .route("/v1/fleet-rollouts/{id}", get(rollouts::status))
        .route("/v1/fleet-rollouts/{id}/events", get(rollouts::events))
        .route("/v1/fleet-rollouts/{id}/{control}", post(rollouts::control))
        .route("/v1/clusters", get(clusters::list))
        .route(
            "/v1/clusters/{name}",
            get(clusters::get)
                .put(clusters::put)
                .patch(clusters::patch)
                .delete(clusters::remove),
        )
        .route("/v1/objects", get(inventory::list))
        .route("/v1/events", get(events::stream))
        .route("/v1/hooks/{source}", post(hooks::receive))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(console::routes(&ctx))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            crate::observe::observe,
        ))
        .with_state(ctx)
}

async fn create_operation(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    KeyHeader(key): KeyHeader,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let source = KeySource::Client {
        header: key.as_deref(),
    };
    intake::accept(&ctx, &caller, &body, source).await
}

/// `?wait=60s`: hold the request until the operation is terminal or the time is up.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    wait: Option<String>,
}

pub fn wait_bound(ctx: &Context, wait: Option<&str>) -> Result<Duration> {
    let Some(wait) = wait else {
        return Ok(Duration::ZERO);
    };
    let d = longshore_contract::duration::parse(wait).map_err(|r| Error::field("wait", r))?;
    let max = ctx.config.http.max_wait;
    if d > max {
        return Err(Error::field(
            "wait",
            format!(
                "must be at most {} (http.max_wait)",
                longshore_contract::duration::format(max)
            ),
        ));
    }
    Ok(d)
}

async fn get_operation(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    Path(id): Path<String>,
    query: std::result::Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let id = OperationId::parse(&id).map_err(|reason| Error::field("id", reason))?;
    let Query(query) = query.map_err(|e| Error::field("query", e.body_text()))?;
    let within = wait_bound(&ctx, query.wait.as_deref())?;
    let record = read_record(&ctx, &id).await?;
    caller.check_read_cluster(&record.cluster)?;
    let record = wait::until_terminal(&ctx, &id, record, within).await?;
    Ok(Json(record).into_response())
}

async fn read_record(ctx: &Context, id: &OperationId) -> Result<OperationRecord> {
    let store = ctx.operations()?;
    tokio::time::timeout(Duration::from_secs(5), store.read(id.as_str()))
        .await
        .map_err(|_| Error::Timeout(Duration::from_secs(5)))??
        .map(|v| v.value)
        .ok_or_else(|| Error::NotFound(id.to_string()))
}

/// `GET /v1/operations/{id}/events`: server-sent events until a terminal state, bounded by
/// `http.max_wait`.
async fn operation_events(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = OperationId::parse(&id).map_err(|reason| Error::field("id", reason))?;
    // 404 (or 403) before opening a stream.
    let record = read_record(&ctx, &id).await?;
    caller.check_read_cluster(&record.cluster)?;
    let within = ctx.config.http.max_wait;
    Ok(wait::events(ctx, id, within).await?.into_response())
}

/// `GET /v1/dead-letters?after=SEQ&limit=N`
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn list_dead_letters(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    query: std::result::Result<Query<DeadLetterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| Error::field("query", e.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=deadletters::MAX_LIMIT).contains(&limit) {
        return Err(Error::field(
            "limit",
            format!("must be between 1 and {}", deadletters::MAX_LIMIT),
        ));
    }
    let (mut items, next) = deadletters::list(&ctx, query.after, limit).await?;
    // A page may then hold fewer than `limit`; `next` still goes on from the last read.
    items.retain(|d| caller.may_read_cluster(d.cluster.as_str()));
    Ok(Json(json!({"items": items, "next": next})).into_response())
}

async fn retry_operation(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = OperationId::parse(&id).map_err(|reason| Error::field("id", reason))?;
    let current = read_record(&ctx, &id).await?;
    caller.check_cluster_action(&current.cluster, current.action)?;
    let record = deadletters::retry(&ctx, &id).await?;
    let requeued = intake::requeued(id, record.action, record.idempotency_key, record.cluster);
    Ok(intake::accepted(&ctx, &requeued))
}

/// `GET /metrics`: OpenMetrics or the text format, as the scraper's `Accept` asks.
async fn metrics(State(ctx): State<Arc<Context>>, headers: HeaderMap) -> Response {
    crate::scrape::refresh(&ctx).await;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (kind, body) = longshore_contract::exposition::negotiate(accept, ctx.metrics.encode());
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

async fn readyz(State(ctx): State<Arc<Context>>) -> Response {
    match ctx.readiness().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => e.into_response(),
    }
}
