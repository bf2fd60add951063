//! Signed webhooks: `POST /v1/hooks/{source}`.
//!
//! The signature is checked over the raw body before anything else is read ([`signature`]),
//! then the source's rate limit, then the payload is mapped to a submission ([`mapping`])
//! and accepted like `POST /v1/operations`, under the source's name and policy. The one
//! difference: the idempotency key comes only from what was signed (the body's
//! `idempotencyKey` or the mapped one, the pipeline context, else the signed content's
//! digest), never from an unsigned header, so a captured delivery cannot start a second
//! operation.

pub mod mapping;
pub mod signature;

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
};
use serde_json::Value;

use crate::{
    context::Context,
    error::{Error, Result},
    intake::{self, JsonBody, KeySource},
};

pub async fn receive(
    State(ctx): State<Arc<Context>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let hook = ctx
        .auth
        .hooks
        .get(&source)
        .ok_or_else(|| Error::NotFound(format!("webhook source {source:?}")))?;
    let now = jiff::Timestamp::now().as_second();
    let signed = signature::verify(
        hook.config.signature,
        hook.secret.expose().as_bytes(),
        &headers,
        &body,
        now,
        hook.config.replay_window,
    )?;
    let caller = hook.caller(&source)?;
    if headers.contains_key(intake::IDEMPOTENCY_KEY) {
        // Not signed: honouring it would let a captured delivery be replayed as a new
        // operation by changing it.
        return Err(Error::field(
            "Idempotency-Key",
            "a webhook's key must be signed: give it as the body's idempotencyKey (or map it), or leave it out to key the delivery by its signed content",
        ));
    }
    let submission = match &hook.config.map {
        None => body.to_vec(),
        Some(map) => {
            let payload: Value =
                serde_json::from_slice(&body).map_err(|e| Error::MalformedJson(e.to_string()))?;
            serde_json::to_vec(&map.apply(&payload)?)
                .map_err(|e| Error::MalformedJson(e.to_string()))?
        }
    };
    let key = KeySource::Signed {
        digest: &signed.digest,
    };
    intake::accept(&ctx, &caller, &submission, key).await
}
