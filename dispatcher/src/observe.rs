//! What every request goes through on its way in and out: its server span (continuing a
//! caller's `traceparent`, returning one naming this request) and its metrics.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::HeaderValue,
    middleware::Next,
    response::Response,
};
use longshore_contract::telemetry::{self, HttpHeaders};
use tracing::{Instrument, field};

use crate::context::Context;

/// The response header naming the trace a request became part of (W3C trace context).
pub const TRACEPARENT: &str = "traceparent";

pub async fn observe(State(ctx): State<Arc<Context>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = field::Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %request.uri().path(),
        http.response.status_code = field::Empty,
        trace_id = field::Empty,
    );
    telemetry::continue_from(&span, &HttpHeaders(request.headers()));
    if let Some(id) = telemetry::trace_id(&span) {
        span.record("trace_id", id);
    }
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    // An integer, as the semantic conventions have it (unsigned fields would be exported
    // as strings).
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    if let Some(tp) = telemetry::traceparent(&span)
        && let Ok(value) = HeaderValue::from_str(&tp)
    {
        response.headers_mut().insert(TRACEPARENT, value);
    }
    ctx.metrics
        .request(&route, &method, status.as_u16(), started.elapsed());
    response
}
