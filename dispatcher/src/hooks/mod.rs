//! Signed webhooks: `POST /v1/hooks/{source}`.
//!
//! The signature is checked over the raw body before anything else is read ([`signature`]),
//! then the source's rate limit, then the payload is mapped to a submission ([`mapping`])
//! and accepted exactly like `POST /v1/operations`, under the source's name and policy.

pub mod mapping;
pub mod signature;

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::HeaderMap,
    response::Response,
};
use serde_json::Value;

use crate::{
    api,
    context::Context,
    error::{Error, Result},
};

/// GitHub's delivery id: the same on a redelivery, so a good idempotency key.
const GITHUB_DELIVERY: &str = "x-github-delivery";

pub async fn receive(
    State(ctx): State<Arc<Context>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let hook = ctx
        .auth
        .hooks
        .get(&source)
        .ok_or_else(|| Error::NotFound(format!("webhook source {source:?}")))?;
    let body = api::read_body(&ctx, body)?;
    let now = jiff::Timestamp::now().as_second();
    signature::verify(
        hook.config.signature,
        hook.secret.expose().as_bytes(),
        &headers,
        &body,
        now,
        hook.config.replay_window,
    )?;
    let caller = hook.caller(&source)?;
    api::check_content_type(&headers)?;
    let mut header_key = api::header_key(&headers)?;
    let submission = match &hook.config.map {
        None => body.to_vec(),
        Some(map) => {
            let payload: Value =
                serde_json::from_slice(&body).map_err(|e| Error::MalformedJson(e.to_string()))?;
            let submission = map.apply(&payload)?;
            if header_key.is_none() && submission.get("idempotencyKey").is_none() {
                header_key = headers.get(GITHUB_DELIVERY).and_then(|v| v.to_str().ok());
            }
            serde_json::to_vec(&submission).map_err(|e| Error::MalformedJson(e.to_string()))?
        }
    };
    api::accept(&ctx, &caller, &submission, header_key).await
}
