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
use longshore_contract::{IdempotencyKey, OperationId};
use serde_json::json;

use crate::{
    context::Context,
    deadletters,
    error::{Error, Result},
    request, submit,
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
        .route("/v1/operations/{id}/retry", post(retry_operation))
        .route("/v1/dead-letters", get(list_dead_letters))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ctx)
}

async fn create_operation(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    check_content_type(&headers)?;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge {
            limit: ctx.config.http.body_limit,
        },
        _ => Error::MalformedJson(rejection.body_text()),
    })?;
    let header_key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Error::field("Idempotency-Key", "must be visible ASCII"))?,
        ),
    };
    let submission = request::parse(&body, header_key, &ctx.clusters)?;
    let key = match submission.key {
        Some(key) => key,
        // No key given: make one, and return it so the client can retry safely.
        None => IdempotencyKey::new(uuid::Uuid::now_v7().to_string())
            .map_err(|r| Error::field("Idempotency-Key", r))?,
    };
    let timeout = ctx.config.http.request_timeout;
    let accepted = tokio::time::timeout(
        timeout,
        submit::submit(&ctx, API_SOURCE, submission.spec, key),
    )
    .await
    .map_err(|_| Error::Timeout(timeout))??;

    let status_url = format!("/v1/operations/{}", accepted.id);
    let body = json!({
        "id": accepted.id,
        "idempotencyKey": accepted.key,
        "state": accepted.state,
        "statusUrl": status_url,
    });
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

fn check_content_type(headers: &HeaderMap) -> Result<()> {
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

async fn get_operation(
    State(ctx): State<Arc<Context>>,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = OperationId::parse(&id).map_err(|reason| Error::field("id", reason))?;
    let store = ctx.operations()?;
    let record = tokio::time::timeout(Duration::from_secs(5), submit::read(store, &id))
        .await
        .map_err(|_| Error::Timeout(Duration::from_secs(5)))??
        .ok_or_else(|| Error::NotFound(id.to_string()))?;
    Ok(Json(record).into_response())
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
    Path(id): Path<String>,
) -> Result<Response> {
    let id = OperationId::parse(&id).map_err(|reason| Error::field("id", reason))?;
    let record = deadletters::retry(&ctx, &id).await?;
    let status_url = format!("/v1/operations/{id}");
    let body = json!({"id": id, "idempotencyKey": record.idempotency_key, "state": record.state, "statusUrl": status_url});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn readyz(State(ctx): State<Arc<Context>>) -> Response {
    match ctx.readiness().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => e.into_response(),
    }
}
