//! Every way a request can fail, and the one place each becomes an HTTP response: an
//! RFC 9457 `application/problem+json` body that names the field and the reason.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use longshore_contract::spec::FieldError;
use serde_json::json;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or invalid; each problem names its field.
    #[error("invalid request: {}", join(.0))]
    Invalid(Vec<FieldError>),
    /// The body is not JSON of the expected shape.
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    #[error("unsupported content type {0:?}: send application/json")]
    UnsupportedMediaType(String),
    #[error("request body larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    /// The idempotency key was used before with a different request.
    #[error("idempotency key {key:?} was already used for a different request (operation {id})")]
    KeyReused { key: String, id: String },
    /// The same, for a fleet rollout.
    #[error("idempotency key {key:?} was already used for a different fleet rollout ({id})")]
    RolloutKeyReused { key: String, id: String },
    /// No credentials, or unknown ones (a bad token, a missing or wrong signature).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's policy does not allow the request; the message names what was refused.
    #[error("{0}")]
    Forbidden(String),
    #[error("too many requests from {who}; retry after {retry_after:?}")]
    RateLimited {
        who: String,
        retry_after: std::time::Duration,
    },
    #[error("operation {0} not found")]
    NotFound(String),
    /// Anything else that does not exist; the message names it.
    #[error("{0} not found")]
    Missing(String),
    /// The request conflicts with the operation's current state.
    #[error("{0}")]
    Conflict(String),
    /// NATS or JetStream cannot take the request now; nothing was accepted.
    #[error("work queue unavailable: {0}")]
    Unavailable(String),
    #[error("request took longer than {0:?}")]
    Timeout(std::time::Duration),
    /// This replica is at a bound it keeps (open event streams); another may have room.
    #[error("{0}")]
    Busy(String),
}

impl Error {
    /// A fixed name for the kind of error, for span attributes (`error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid",
            Error::MalformedJson(_) => "malformed_json",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::KeyReused { .. } | Error::RolloutKeyReused { .. } => "key_reused",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::RateLimited { .. } => "rate_limited",
            Error::NotFound(_) | Error::Missing(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Unavailable(_) => "unavailable",
            Error::Timeout(_) => "timeout",
            Error::Busy(_) => "busy",
        }
    }
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<longshore_contract::store::StoreError> for Error {
    /// The status bucket failed: nothing was accepted or changed; the client may retry.
    fn from(e: longshore_contract::store::StoreError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

impl Error {
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, reason)])
    }

    fn status(&self) -> StatusCode {
        match self {
            Error::Invalid(_) | Error::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::KeyReused { .. } | Error::RolloutKeyReused { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::NotFound(_) | Error::Missing(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Unavailable(_) | Error::Timeout(_) | Error::Busy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The problem type, a stable identifier clients can match on.
    fn slug(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid-request",
            Error::MalformedJson(_) => "malformed-json",
            Error::UnsupportedMediaType(_) => "unsupported-media-type",
            Error::PayloadTooLarge { .. } => "payload-too-large",
            Error::KeyReused { .. } | Error::RolloutKeyReused { .. } => "idempotency-key-reused",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::RateLimited { .. } => "rate-limited",
            Error::NotFound(_) | Error::Missing(_) => "not-found",
            Error::Conflict(_) => "conflict",
            Error::Unavailable(_) => "unavailable",
            Error::Timeout(_) => "timeout",
            Error::Busy(_) => "busy",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = json!({
            "type": format!("urn:longshore:problem:{}", self.slug()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        if let Error::Invalid(errors) = &self {
            body["errors"] = json!(errors);
        }
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request not accepted");
        }
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            Error::Unavailable(_) | Error::Timeout(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Error::Busy(_) => {
                // Long enough for a stream to close; a client may try another replica now.
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Error::RateLimited { retry_after, .. } => {
                // Whole seconds, rounded up: a client that waits this long gets a token.
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            Error::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"longshore\""),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invalid_requests_list_each_field() {
        let err = Error::Invalid(vec![
            FieldError::new("cluster", "unknown cluster \"prdo\""),
            FieldError::new("manifests[0].kind", "is required"),
        ]);
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], 400);
        assert_eq!(v["errors"][1]["field"], "manifests[0].kind");
    }

    #[test]
    fn unavailability_asks_clients_to_retry() {
        let response = Error::Unavailable("NATS disconnected".into()).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
