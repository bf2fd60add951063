//! The one place where an operation's error becomes a decision: retry later, record the
//! operation failed, or dead-letter it. Everything else in the worker reports errors as
//! they are.
//!
//! Retries go back through the queue (`Nak` with a delay) rather than looping inside the
//! worker: the slot is freed for other operations, any replica may pick the retry up, and
//! the pool's `max_deliver` bounds the attempts. The consumer's own `backoff` applies only
//! to ack timeouts, so the delay is computed here.

use std::time::Duration;

use longshore_contract::backoff::Backoff;
use longshore_contract::record::{ErrorClass, ErrorInfo};

use crate::config::RetryConfig;
use crate::error::{OpError, Verb};

/// What to do with an operation's message after an error.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// A transient failure: hand the message back for redelivery after this delay.
    Retry(Duration),
    /// A permanent failure: record `failed`, then acknowledge.
    Fail(ErrorInfo),
    /// The message can never be processed: record `failed` if possible, then terminate it.
    Term(ErrorInfo),
    /// A transient failure on the last delivery `max_deliver` allows: copy the message to
    /// the dead-letter stream, record `dead_lettered` (class `transient`), then terminate it.
    DeadLetter(ErrorInfo),
}

/// An error's nature, before the delivery count is taken into account.
#[derive(Clone, Debug, PartialEq)]
enum Class {
    Transient { retry_after: Option<Duration> },
    Permanent(ErrorClass),
}

/// Decides what to do after `err` on the `delivered`-th delivery of a message (1-based).
pub fn decide(err: &OpError, delivered: u64, max_deliver: i64, retry: &RetryConfig) -> Decision {
    let message = describe(err);
    match classify(err) {
        Class::Permanent(ErrorClass::Malformed) => Decision::Term(ErrorInfo {
            class: ErrorClass::Malformed,
            message,
        }),
        Class::Permanent(class) => Decision::Fail(ErrorInfo { class, message }),
        Class::Transient { .. } if max_deliver > 0 && delivered >= max_deliver as u64 => {
            Decision::DeadLetter(ErrorInfo {
                class: ErrorClass::Transient,
                message: format!("gave up after {delivered} deliveries: {message}"),
            })
        }
        Class::Transient { retry_after } => {
            let delay = backoff(delivered, retry);
            Decision::Retry(retry_after.map_or(delay, |server| server.max(delay)))
        }
    }
}

/// How a probe of a cluster names `err`: its error class (`forbidden` for a refused
/// credential, `transient` for a server that does not answer), or `no_credentials`.
pub fn class_of(err: &OpError) -> &'static str {
    match (err, classify(err)) {
        (OpError::NoCredentials { .. }, _) => "no_credentials",
        (_, Class::Transient { .. }) => "transient",
        (_, Class::Permanent(class)) => crate::metrics::class_label(Some(class)),
    }
}

/// Whether `err` is transient: retried later rather than failing the operation.
pub fn is_transient(err: &OpError) -> bool {
    matches!(classify(err), Class::Transient { .. })
}

/// The delay before redelivering after the `delivered`-th delivery failed: the
/// configured backoff ([`Backoff`]: exponential, capped, jittered).
pub fn backoff(delivered: u64, retry: &RetryConfig) -> Duration {
    Backoff::new(retry.base, retry.max).delay(delivered)
}

fn classify(err: &OpError) -> Class {
    use Class::*;
    match err {
        OpError::Kube { verb, source, .. } => classify_kube(*verb, source),
        // Another operation is changing the object (it usually finishes within a backoff
        // step; waiting out its whole lease would be far too long): wait for its turn.
        OpError::Timeout { .. }
        | OpError::Status(_)
        | OpError::Store(_)
        | OpError::NoCredentials { .. }
        | OpError::Fence(_)
        | OpError::Fenced { .. } => Transient { retry_after: None },
        OpError::UnknownKind { expected_soon, .. } => {
            if *expected_soon {
                Transient { retry_after: None }
            } else {
                Permanent(ErrorClass::NotFound)
            }
        }
        OpError::AlreadyExists { .. } => Permanent(ErrorClass::Conflict),
        OpError::Manifest { .. } => Permanent(ErrorClass::Invalid),
        OpError::UnknownCluster(_) => Permanent(ErrorClass::UnknownCluster),
        OpError::Malformed(_) => Permanent(ErrorClass::Malformed),
        // The change is in; waiting again would not change how the rollout went.
        OpError::Rollout { .. } => Permanent(ErrorClass::Rollout),
        OpError::WaitTimeout { .. } | OpError::NotEstablished { .. } => {
            Permanent(ErrorClass::Timeout)
        }
    }
}

/// How the API server's message begins when a server-side apply's patch does not fit the
/// kind's schema (answered 500 by current releases).
const TYPED_PATCH_REFUSED: &str = "failed to create typed patch object";

fn classify_kube(verb: Verb, err: &kube::Error) -> Class {
    use Class::*;
    let kube::Error::Api(status) = err else {
        // Everything but an API server answer is about getting one: connection refused or
        // reset, TLS, timeouts, an unreadable body from a proxy. Worth another delivery.
        return match err {
            kube::Error::BuildRequest(_) | kube::Error::HttpError(_) => {
                Permanent(ErrorClass::Invalid)
            }
            _ => Transient { retry_after: None },
        };
    };
    // The Retry-After header is not exposed by kube's error, but the API server puts the
    // same number in the Status details (`retryAfterSeconds`) of 429s and 5xx it throttles.
    let retry_after = status
        .details
        .as_ref()
        .map(|d| d.retry_after_seconds)
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(u64::from(s)));
    match status.code {
        // A server-side apply whose manifest does not fit the kind's schema (a string where
        // a number goes): the API server answers 500, but no retry can make it fit.
        500 if status.message.starts_with(TYPED_PATCH_REFUSED) => Permanent(ErrorClass::Invalid),
        408 | 429 | 500 | 502 | 503 | 504 => Transient { retry_after },
        // A stale resourceVersion on replace: read again and write again.
        409 if verb == Verb::Replace && status.reason != "AlreadyExists" => {
            Transient { retry_after }
        }
        // AlreadyExists by someone else, or a server-side apply field conflict without force.
        409 => Permanent(ErrorClass::Conflict),
        401 | 403 => Permanent(ErrorClass::Forbidden),
        404 | 410 => Permanent(ErrorClass::NotFound),
        400..=499 => Permanent(ErrorClass::Invalid),
        _ => Transient { retry_after },
    }
}

/// The message recorded for a failure: the API server's own words where there are some
/// (they name the field or the conflict), never the manifest.
fn describe(err: &OpError) -> String {
    match err {
        OpError::Kube {
            verb,
            object,
            source: kube::Error::Api(status),
        } => {
            let verb = format!("{verb:?}").to_lowercase();
            match (status.message.is_empty(), status.reason.is_empty()) {
                (false, _) => format!("{verb} {object}: {}", status.message),
                (true, false) => format!("{verb} {object}: {}", status.reason),
                (true, true) => format!("{verb} {object}: HTTP {}", status.code),
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::{Status, response::StatusDetails};

    fn object() -> String {
        "v1/ConfigMap default/web".into()
    }

    fn api(verb: Verb, code: u16, reason: &str, message: &str) -> OpError {
        OpError::Kube {
            verb,
            object: object(),
            source: kube::Error::Api(Status::failure(message, reason).with_code(code).boxed()),
        }
    }

    fn retry() -> RetryConfig {
        RetryConfig {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }

    fn decide1(err: &OpError) -> Decision {
        decide(err, 1, 10, &retry())
    }

    fn fail_class(d: Decision) -> ErrorClass {
        match d {
            Decision::Fail(info) => info.class,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn retry_delay(d: Decision) -> Duration {
        match d {
            Decision::Retry(delay) => delay,
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn throttling_and_server_errors_are_retried_with_backoff() {
        for code in [408, 429, 500, 502, 503, 504] {
            let delay = retry_delay(decide1(&api(Verb::Apply, code, "", "busy")));
            assert!(delay <= Duration::from_millis(100), "{code}: {delay:?}");
        }
    }

    #[test]
    fn a_server_side_apply_that_does_not_fit_the_schema_fails_at_once_though_answered_500() {
        let refused = api(
            Verb::Apply,
            500,
            "",
            "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): .spec.replicas: expected numeric (int or float), got string",
        );
        assert_eq!(fail_class(decide1(&refused)), ErrorClass::Invalid);
        // Any other 500 is the server's trouble: retried.
        let busy = api(
            Verb::Apply,
            500,
            "InternalError",
            "etcdserver: request timed out",
        );
        assert!(matches!(decide1(&busy), Decision::Retry(_)));
    }

    #[test]
    fn a_larger_retry_after_wins_over_backoff() {
        let mut status = Status::failure("slow down", "TooManyRequests").with_code(429);
        status.details = Some(StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes: Vec::new(),
            retry_after_seconds: 7,
        });
        let err = OpError::Kube {
            verb: Verb::Apply,
            object: object(),
            source: kube::Error::Api(status.boxed()),
        };
        assert_eq!(retry_delay(decide1(&err)), Duration::from_secs(7));
        // Backoff larger than the server's hint: backoff wins.
        let late = retry_delay(decide(&err, 9, 10, &retry()));
        assert!(late >= Duration::from_secs(7), "{late:?}");
    }

    #[test]
    fn connection_errors_and_timeouts_are_transient() {
        let reset = OpError::Kube {
            verb: Verb::Get,
            object: object(),
            source: kube::Error::Service(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            ))),
        };
        retry_delay(decide1(&reset));
        let timeout = OpError::Timeout {
            verb: Verb::Apply,
            object: object(),
            after: Duration::from_secs(30),
        };
        retry_delay(decide1(&timeout));
        retry_delay(decide1(&OpError::Status("timed out".into())));
    }

    #[test]
    fn invalid_forbidden_and_missing_fail_at_once_with_the_servers_message() {
        let d = decide1(&api(
            Verb::Apply,
            422,
            "Invalid",
            "ConfigMap \"web\" is invalid: data: bad key",
        ));
        assert_eq!(
            d,
            Decision::Fail(ErrorInfo {
                class: ErrorClass::Invalid,
                message:
                    "apply v1/ConfigMap default/web: ConfigMap \"web\" is invalid: data: bad key"
                        .into()
            })
        );
        assert_eq!(
            fail_class(decide1(&api(Verb::Apply, 400, "BadRequest", "x"))),
            ErrorClass::Invalid
        );
        for code in [401, 403] {
            assert_eq!(
                fail_class(decide1(&api(Verb::Apply, code, "Forbidden", "no"))),
                ErrorClass::Forbidden
            );
        }
        for verb in [Verb::Patch, Verb::Replace] {
            assert_eq!(
                fail_class(decide1(&api(verb, 404, "NotFound", "gone"))),
                ErrorClass::NotFound
            );
        }
    }

    #[test]
    fn conflicts_depend_on_the_verb() {
        // A stale resourceVersion on replace: retry.
        retry_delay(decide1(&api(Verb::Replace, 409, "Conflict", "modified")));
        // A field manager conflict on apply without force: permanent.
        assert_eq!(
            fail_class(decide1(&api(Verb::Apply, 409, "Conflict", "conflict"))),
            ErrorClass::Conflict
        );
        assert_eq!(
            fail_class(decide1(&OpError::AlreadyExists { object: object() })),
            ErrorClass::Conflict
        );
    }

    #[test]
    fn a_kind_only_waits_when_this_operation_is_creating_its_definition() {
        let unknown = |expected_soon| OpError::UnknownKind {
            object: object(),
            kind: "Widget".into(),
            expected_soon,
        };
        assert_eq!(fail_class(decide1(&unknown(false))), ErrorClass::NotFound);
        retry_delay(decide1(&unknown(true)));
    }

    #[test]
    fn exhausting_deliveries_dead_letters_with_the_last_message() {
        let err = api(Verb::Apply, 503, "ServiceUnavailable", "etcd is down");
        match decide(&err, 10, 10, &retry()) {
            Decision::DeadLetter(info) => {
                assert_eq!(info.class, ErrorClass::Transient);
                assert!(info.message.contains("etcd is down"), "{}", info.message);
                assert!(info.message.contains("10 deliveries"), "{}", info.message);
            }
            other => panic!("{other:?}"),
        }
        retry_delay(decide(&err, 9, 10, &retry()));
        // Busy fences and unreachable NATS exhaust deliveries the same way.
        assert!(matches!(
            decide(&busy(), 3, 3, &retry()),
            Decision::DeadLetter(_)
        ));
        // Without a limit (max_deliver -1) there is always another delivery.
        retry_delay(decide(&err, 1000, -1, &retry()));
    }

    #[test]
    fn permanent_failures_on_the_last_delivery_are_failures_not_dead_letters() {
        assert_eq!(
            fail_class(decide(
                &api(Verb::Apply, 403, "Forbidden", "no"),
                10,
                10,
                &retry()
            )),
            ErrorClass::Forbidden
        );
    }

    fn busy() -> OpError {
        OpError::Fenced {
            object: object(),
            holder: format!("op-{}", "b".repeat(32)),
            lease_until: jiff::Timestamp::now(),
        }
    }

    #[test]
    fn a_busy_fence_or_unreachable_bucket_waits_with_backoff() {
        let delay = retry_delay(decide1(&busy()));
        assert!(delay <= Duration::from_millis(100), "{delay:?}");
        let later = retry_delay(decide(&busy(), 5, 10, &retry()));
        assert!(
            later >= Duration::from_millis(800),
            "backoff grows: {later:?}"
        );
        retry_delay(decide1(&OpError::Fence("no responders".into())));
    }

    #[test]
    fn a_manifest_that_cannot_be_sent_and_a_bad_request_are_invalid() {
        assert_eq!(
            fail_class(decide1(&OpError::Manifest {
                object: object(),
                reason: "not a Kubernetes object".into()
            })),
            ErrorClass::Invalid
        );
        let gone = api(Verb::Apply, 410, "Gone", "expired");
        assert_eq!(fail_class(decide1(&gone)), ErrorClass::NotFound);
        assert_eq!(
            fail_class(decide1(&api(Verb::Apply, 418, "Teapot", "x"))),
            ErrorClass::Invalid
        );
        // An unexpected status outside 4xx is worth another try.
        retry_delay(decide1(&api(Verb::Apply, 599, "", "odd")));
    }

    #[test]
    fn unreadable_messages_are_terminated_and_unknown_clusters_failed() {
        assert!(matches!(
            decide1(&OpError::Malformed("bad json".into())),
            Decision::Term(ErrorInfo {
                class: ErrorClass::Malformed,
                ..
            })
        ));
        assert_eq!(
            fail_class(decide1(&OpError::UnknownCluster("mars".into()))),
            ErrorClass::UnknownCluster
        );
    }

    #[test]
    fn redeliveries_wait_the_configured_backoff() {
        let r = retry();
        assert!(backoff(1, &r) <= Duration::from_millis(100));
        assert!(backoff(40, &r) >= Duration::from_secs(5));
        assert!(backoff(40, &r) <= Duration::from_secs(10));
    }
}
