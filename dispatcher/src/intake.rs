//! What `POST /v1/operations` and `POST /v1/hooks/{source}` share on the way in, and the
//! `202 Accepted` every accepting route answers with.
//!
//! - [`JsonBody`]: the body, read within `http.body_limit` (413 naming the limit), of a JSON
//!   content type (415 otherwise);
//! - [`KeyHeader`]: the `Idempotency-Key` header, if any;
//! - [`accept`]: parse, check the caller's policy, settle the idempotency key, submit;
//! - [`accepted`]: the 202 (`statusUrl` and `Location` honour `http.public_url`).
//!
//! Where the key comes from depends on who vouches for the request ([`KeySource`]): a
//! token holder's key may be anywhere in the request; a signed webhook's must be in what
//! was signed, so a captured delivery cannot be replayed as a second operation.

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use longshore_contract::{Action, IdempotencyKey, OperationId, State};
use serde_json::json;

use crate::{
    auth::Caller,
    context::Context,
    error::{Error, Result},
    request, submit,
};

/// The header a client sends its idempotency key in (IETF httpapi draft).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A request body of a JSON content type, within the size limit.
pub struct JsonBody(pub Bytes);

impl FromRequest<Arc<Context>> for JsonBody {
    type Rejection = Error;

    async fn from_request(req: Request, ctx: &Arc<Context>) -> Result<Self> {
        check_content_type(req.headers())?;
        let body =
            Bytes::from_request(req, ctx)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge {
                        limit: ctx.config.http.body_limit,
                    },
                    _ => Error::MalformedJson(rejection.body_text()),
                })?;
        Ok(Self(body))
    }
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

/// The `Idempotency-Key` header, if given (400 if it is not visible ASCII).
pub struct KeyHeader(pub Option<String>);

impl<S: Sync> FromRequestParts<S> for KeyHeader {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        match parts.headers.get(IDEMPOTENCY_KEY) {
            None => Ok(Self(None)),
            Some(v) => v
                .to_str()
                .map(|s| Self(Some(s.to_owned())))
                .map_err(|_| Error::field("Idempotency-Key", "must be visible ASCII")),
        }
    }
}

/// Where an operation's idempotency key may come from.
pub enum KeySource<'a> {
    /// An API caller: the `Idempotency-Key` header or the body's `idempotencyKey`, else the
    /// pipeline context's key, else a new one (returned, so the client can retry safely).
    Client { header: Option<&'a str> },
    /// A signed webhook: the body's (or the mapping's) `idempotencyKey`, else the pipeline
    /// context's key, else the digest of the signed content. Nothing unsigned counts.
    Signed { digest: &'a str },
}

/// Parses `body`, checks the caller's policy, and submits: the 202 with the operation.
pub async fn accept(
    ctx: &Context,
    caller: &Caller,
    body: &[u8],
    source: KeySource<'_>,
) -> Result<Response> {
    let header = match source {
        KeySource::Client { header } => header,
        KeySource::Signed { .. } => None,
    };
    let submission = request::parse(body, header, ctx.fleet()?)?;
    caller.check(&submission.spec)?;
    let key = match submission.key.or_else(|| {
        submission
            .spec
            .pipeline
            .as_ref()
            .and_then(request::pipeline_key)
    }) {
        Some(key) => key,
        None => {
            let fallback = match source {
                KeySource::Client { .. } => uuid::Uuid::now_v7().to_string(),
                KeySource::Signed { digest } => format!("signed:sha256:{digest}"),
            };
            IdempotencyKey::new(fallback).map_err(|r| Error::field("Idempotency-Key", r))?
        }
    };
    let timeout = ctx.config.http.request_timeout;
    let outcome = tokio::time::timeout(
        timeout,
        submit::submit(ctx, &caller.source, submission.spec, key),
    )
    .await
    .map_err(|_| Error::Timeout(timeout))??;
    ctx.metrics
        .accepted(outcome.action.as_str(), outcome.replayed);
    Ok(accepted(ctx, &outcome))
}

/// The answer to an accepted operation, from any route that accepts one.
pub fn accepted(ctx: &Context, a: &submit::Accepted) -> Response {
    let status_url = status_url(ctx, &a.id);
    let mut body = json!({
        "id": a.id,
        "idempotencyKey": a.key,
        "state": a.state,
        "statusUrl": status_url,
    });
    // Accepted and queued all the same, but say so when nobody can carry it out now (an
    // agent's leaf link is down, say): it waits in the queue until someone can.
    if a.state == State::Queued
        && let Some(note) = cluster_note(ctx, &a.cluster)
    {
        body["cluster"] = note;
    }
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&status_url) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(a.key.as_str()) {
        h.insert(IDEMPOTENCY_KEY, v);
    }
    if a.replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// The cluster's phase and why, when it is `unreachable` or `unserved`.
fn cluster_note(ctx: &Context, cluster: &str) -> Option<serde_json::Value> {
    use longshore_contract::registry::Phase;
    let fleet = ctx.fleet().ok()?;
    let entry = fleet.entry(&longshore_contract::ClusterName::new(cluster).ok()?)?;
    let status = fleet.status(&entry);
    matches!(status.phase, Phase::Unreachable | Phase::Unserved)
        .then(|| json!({ "name": cluster, "phase": status.phase, "reason": status.reason }))
}

/// Where an operation's status is read: absolute when `http.public_url` is set.
pub fn status_url(ctx: &Context, id: &OperationId) -> String {
    let base = ctx.config.http.public_url.as_deref().unwrap_or_default();
    format!("{}/v1/operations/{id}", base.trim_end_matches('/'))
}

/// An operation accepted again after it was, for a retried dead letter.
pub fn requeued(
    id: OperationId,
    action: Action,
    key: IdempotencyKey,
    cluster: String,
) -> submit::Accepted {
    submit::Accepted {
        id,
        action,
        key,
        state: State::Queued,
        replayed: false,
        cluster,
    }
}
