//! The HTTP API: routes, and the translation between HTTP and [`crate::submit`].

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use longshore_contract::{IdempotencyKey, OperationId, OperationRecord};
use serde_json::json;

use crate::{
    auth::Caller,
    context::Context,
    deadletters,
    error::{Error, Result},
    hooks, request, submit, wait,
};

/// The source recorded for operations submitted through the plain API.
pub const API_SOURCE: &str = "api";
/// The header a client sends its idempotency key in (IETF httpapi draft).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub fn router(ctx: Arc<Context>) -> Router {
    let limit = ctx.config.http.body_limit;
    Router::new()
        .route("/v1/operations", post(create_operation))
        .route("/v1/operations/{id}", get(get_operation))
        .route("/v1/operations/{id}/events", get(operation_events))
        .route("/v1/operations/{id}/retry", post(retry_operation))
        .route("/v1/dead-letters", get(list_dead_letters))
        .route("/v1/hooks/{source}", post(hooks::receive))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    check_content_type(&headers)?;
    let body = read_body(&ctx, body)?;
    accept(&ctx, &caller, &body, header_key(&headers)?).await
}

/// The body, or 413 naming the limit.
pub(crate) fn read_body(
    ctx: &Context,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Bytes> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge {
            limit: ctx.config.http.body_limit,
        },
        _ => Error::MalformedJson(rejection.body_text()),
    })
}

/// The `Idempotency-Key` header, if given.
pub(crate) fn header_key(headers: &HeaderMap) -> Result<Option<&str>> {
    match headers.get(IDEMPOTENCY_KEY) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| Error::field("Idempotency-Key", "must be visible ASCII")),
    }
}

/// Parses, checks the caller's policy, and accepts a submission: 202 with the operation.
pub(crate) async fn accept(
    ctx: &Context,
    caller: &Caller,
    body: &[u8],
    header_key: Option<&str>,
) -> Result<Response> {
    let submission = request::parse(body, header_key, &ctx.clusters)?;
    caller.check(&submission.spec)?;
    let key = match submission.key {
        Some(key) => key,
        None => match submission
            .spec
            .pipeline
            .as_ref()
            .and_then(request::pipeline_key)
        {
            Some(key) => key,
            // No key given: make one, and return it so the client can retry safely.
            None => IdempotencyKey::new(uuid::Uuid::now_v7().to_string())
                .map_err(|r| Error::field("Idempotency-Key", r))?,
        },
    };
    let timeout = ctx.config.http.request_timeout;
    let accepted = tokio::time::timeout(
        timeout,
        submit::submit(ctx, &caller.source, submission.spec, key),
    )
    .await
    .map_err(|_| Error::Timeout(timeout))??;

    let base = ctx.config.http.public_url.as_deref().unwrap_or_default();
    let status_url = format!(
        "{}/v1/operations/{}",
        base.trim_end_matches('/'),
        accepted.id
    );
    let body = json!({
        "id": accepted.id,
        "idempotencyKey": accepted.key,
        "state": accepted.state,
        "statusUrl": status_url,
    });
    ctx.metrics
        .accepted(accepted.action.as_str(), accepted.replayed);
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&status_url) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(accepted.key.as_str()) {
        h.insert(IDEMPOTENCY_KEY, v);
    }
    if accepted.replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<()> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(()); // JSON is the only format; a bare body is read as JSON
    };
    let ct = value.to_str().unwrap_or_default().to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or_default().trim();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(ct))
    }
}

/// `?wait=60s`: hold the request until the operation is terminal or the time is up.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    wait: Option<String>,
}

fn wait_bound(ctx: &Context, wait: Option<&str>) -> Result<Duration> {
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
    _caller: Caller,
    Path(id): Path<String>,
    query: std::result::Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let id = OperationId::parse(&id).map_err(|reason| Error::field("id", reason))?;
    let Query(query) = query.map_err(|e| Error::field("query", e.body_text()))?;
    let within = wait_bound(&ctx, query.wait.as_deref())?;
    let record = read_record(&ctx, &id).await?;
    let record = wait::until_terminal(&ctx, &id, record, within).await?;
    Ok(Json(record).into_response())
}

async fn read_record(ctx: &Context, id: &OperationId) -> Result<OperationRecord> {
    let store = ctx.operations()?;
    tokio::time::timeout(Duration::from_secs(5), submit::read(store, id))
        .await
        .map_err(|_| Error::Timeout(Duration::from_secs(5)))??
        .ok_or_else(|| Error::NotFound(id.to_string()))
}

/// `GET /v1/operations/{id}/events`: server-sent events until a terminal state, bounded by
/// `http.max_wait`.
async fn operation_events(
    State(ctx): State<Arc<Context>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = OperationId::parse(&id).map_err(|reason| Error::field("id", reason))?;
    read_record(&ctx, &id).await?; // 404 before opening a stream
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
    _caller: Caller,
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
    let (items, next) = deadletters::list(&ctx, query.after, limit).await?;
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
    let status_url = format!("/v1/operations/{id}");
    let body = json!({"id": id, "idempotencyKey": record.idempotency_key, "state": record.state, "statusUrl": status_url});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn metrics(State(ctx): State<Arc<Context>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(ctx): State<Arc<Context>>) -> Response {
    match ctx.readiness().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => e.into_response(),
    }
}
