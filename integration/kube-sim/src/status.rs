//! Every failure a client can see, as a Kubernetes `Status` object.
//!
//! The request handlers return [`Error`]; this module is the one place that turns it into
//! an HTTP status code and a `Status` body (`kind: Status, apiVersion: v1, status: Failure`),
//! so that clients classify our errors exactly as they would a real API server's.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One field-level cause inside `Status.details.causes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

impl Cause {
    pub fn invalid(field: &str, value: &str, why: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: \"{value}\": {why}"),
            field: field.into(),
        }
    }

    pub fn required(field: &str, why: &str) -> Self {
        Cause {
            reason: "FieldValueRequired".into(),
            message: format!("Required value: {why}"),
            field: field.into(),
        }
    }
}

/// A field another manager owns, reported by a server-side apply conflict.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldConflict {
    pub manager: String,
    pub api_version: String,
    /// Path in Kubernetes' notation, e.g. `.spec.replicas`.
    pub field: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        group: String,
        resource: String,
        name: String,
    },
    #[error("the server could not find the requested resource")]
    NoSuchResource,
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        group: String,
        resource: String,
        name: String,
    },
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        group: String,
        resource: String,
        name: String,
    },
    #[error("{}", apply_conflict_message(.conflicts))]
    ApplyConflict {
        group: String,
        resource: String,
        name: String,
        conflicts: Vec<FieldConflict>,
    },
    #[error("{}{} \"{name}\" is invalid: {}", kind, qualified(group), causes_message(.causes))]
    Invalid {
        group: String,
        kind: String,
        name: String,
        causes: Vec<Cause>,
    },
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    /// No valid credentials (the real server's message is just this word).
    #[error("Unauthorized")]
    Unauthorized,
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"
    )]
    UnsupportedMediaType,
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("{0}")]
    Expired(String),
    /// A status code chosen by fault injection.
    #[error("injected fault: {code}")]
    Injected { code: u16, retry_after: Option<u64> },
}

fn apply_conflict_message(conflicts: &[FieldConflict]) -> String {
    let n = conflicts.len();
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "conflict with \"{}\" using {}: {}",
                c.manager, c.api_version, c.field
            )
        })
        .collect();
    format!(
        "Apply failed with {n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        lines.join("\n")
    )
}

/// `.apps` after a kind of the apps group, nothing for the core group: `Deployment.apps`.
fn qualified(group: &str) -> String {
    if group.is_empty() {
        String::new()
    } else {
        format!(".{group}")
    }
}

fn causes_message(causes: &[Cause]) -> String {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    if parts.len() == 1 {
        parts.join("")
    } else {
        format!("[{}]", parts.join(", "))
    }
}

impl Error {
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Error::NotFound {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
        }
    }

    pub fn namespace_not_found(ns: &str) -> Self {
        Error::not_found("", "namespaces", ns)
    }

    pub fn invalid(group: &str, kind: &str, name: &str, cause: Cause) -> Self {
        Error::Invalid {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            causes: vec![cause],
        }
    }

    pub fn code(&self) -> u16 {
        match self {
            Error::NotFound { .. } | Error::NoSuchResource => 404,
            Error::AlreadyExists { .. } | Error::Conflict { .. } | Error::ApplyConflict { .. } => {
                409
            }
            Error::Invalid { .. } | Error::Unprocessable(_) => 422,
            Error::BadRequest(_) => 400,
            Error::Forbidden(_) => 403,
            Error::Unauthorized => 401,
            Error::UnsupportedMediaType => 415,
            Error::MethodNotAllowed => 405,
            Error::Expired(_) => 410,
            Error::Injected { code, .. } => *code,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotFound { .. } | Error::NoSuchResource => "NotFound",
            Error::AlreadyExists { .. } => "AlreadyExists",
            Error::Conflict { .. } | Error::ApplyConflict { .. } => "Conflict",
            Error::Invalid { .. } | Error::Unprocessable(_) => "Invalid",
            Error::BadRequest(_) => "BadRequest",
            Error::Forbidden(_) => "Forbidden",
            Error::Unauthorized => "Unauthorized",
            Error::UnsupportedMediaType => "UnsupportedMediaType",
            Error::MethodNotAllowed => "MethodNotAllowed",
            Error::Expired(_) => "Expired",
            Error::Injected { code, .. } => match code {
                429 => "TooManyRequests",
                500 => "InternalError",
                503 => "ServiceUnavailable",
                504 => "Timeout",
                409 => "Conflict",
                _ => "Unknown",
            },
        }
    }

    fn message(&self) -> String {
        match self {
            Error::Injected { code: 429, .. } => "Too many requests, please try again later.".into(),
            Error::Injected { code: 500, .. } => "Internal error occurred: injected fault".into(),
            Error::Injected { code: 503, .. } => "the server is currently unable to handle the request".into(),
            Error::Injected { code: 504, .. } => {
                "the server was unable to return a response in the time allotted, but may still be processing the request".into()
            }
            other => other.to_string(),
        }
    }

    fn details(&self) -> Option<Value> {
        match self {
            Error::NotFound {
                group,
                resource,
                name,
            }
            | Error::AlreadyExists {
                group,
                resource,
                name,
            }
            | Error::Conflict {
                group,
                resource,
                name,
            } => Some(json!({"name": name, "group": group, "kind": resource})),
            Error::ApplyConflict {
                group,
                resource,
                name,
                conflicts,
            } => {
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|c| {
                        json!({
                            // StatusCause.Type is serialised as "reason".
                            "reason": "FieldManagerConflict",
                            "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                            "field": c.field,
                        })
                    })
                    .collect();
                Some(json!({"name": name, "group": group, "kind": resource, "causes": causes}))
            }
            Error::Invalid {
                group,
                kind,
                name,
                causes,
            } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                Some(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
            }
            Error::Injected {
                retry_after: Some(s),
                ..
            } => Some(json!({"retryAfterSeconds": s})),
            _ => None,
        }
    }

    /// The `Status` object a real API server would send for this error.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if let Some(details) = self.details() {
            status["details"] = details;
        }
        status
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (code, json_body(&self.status())).into_response();
        if let Error::Injected {
            retry_after: Some(s),
            ..
        } = self
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// A JSON response body with the plain `application/json` content type.
pub fn json_body(v: &Value) -> Response {
    let mut r = Response::new(axum::body::Body::from(v.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A successful `Status` (what a real server answers for an immediate delete).
pub fn success(group: &str, resource: &str, name: &str, uid: Option<&str>) -> Value {
    let mut details = json!({"name": name, "group": group, "kind": resource});
    if let Some(uid) = uid {
        details["uid"] = json!(uid);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_conflict_names_the_field_and_manager() {
        let e = Error::ApplyConflict {
            group: "apps".into(),
            resource: "deployments".into(),
            name: "web".into(),
            conflicts: vec![FieldConflict {
                manager: "kubectl-client-side-apply".into(),
                api_version: "apps/v1".into(),
                field: ".spec.replicas".into(),
            }],
        };
        let s = e.status();
        assert_eq!(s["code"], 409);
        assert_eq!(s["reason"], "Conflict");
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldManagerConflict");
        assert_eq!(s["details"]["causes"][0]["field"], ".spec.replicas");
        assert_eq!(
            s["message"],
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
    }

    #[test]
    fn unauthorized_is_the_real_servers_status() {
        assert_eq!(
            Error::Unauthorized.status(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
        );
    }

    #[test]
    fn injected_429_carries_retry_after() {
        let r = Error::Injected {
            code: 429,
            retry_after: Some(2),
        }
        .into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
