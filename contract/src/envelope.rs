//! The message published to the work queue: a JSON envelope and its NATS headers.

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{IdempotencyKey, OperationId, spec::OperationSpec};

/// The envelope schema this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// `Content-Type` header of an envelope.
pub const CONTENT_TYPE: &str = "application/vnd.longshore.operation+json";
/// Header carrying the envelope's schema version.
pub const SCHEMA_HEADER: &str = "Longshore-Schema";
/// W3C trace context headers, carried so an operation's trace crosses the queue.
pub const TRACEPARENT_HEADER: &str = "traceparent";
pub const TRACESTATE_HEADER: &str = "tracestate";
/// The revision of the `queued` record the dispatcher wrote just before publishing, so the
/// worker can claim the record with one compare-and-set instead of a read and then one
/// (a stale or missing value only costs the failed compare-and-set and the read after it).
pub const RECORD_REVISION_HEADER: &str = "Longshore-Record-Revision";

/// The `queued` record a message says its dispatcher wrote: the revision
/// ([`RECORD_REVISION_HEADER`]) and the trace id, which the record takes from the request's
/// trace and the message's `traceparent` carries (none without one, as the record has none
/// then). `None` without the revision.
pub fn written_record(headers: Option<&HeaderMap>) -> Option<(u64, Option<String>)> {
    let headers = headers?;
    let revision = headers.get(RECORD_REVISION_HEADER)?.as_str().parse().ok()?;
    Some((revision, traceparent_trace_id(headers)))
}

/// The trace id of a W3C `traceparent` header (`00-<trace id>-<span id>-<flags>`), if it is
/// one.
fn traceparent_trace_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(TRACEPARENT_HEADER)?.as_str().to_owned();
    let mut parts = value.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    let valid = trace.len() == 32
        && trace
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && trace.bytes().any(|b| b != b'0');
    valid.then(|| trace.to_owned())
}

/// One operation as it travels through the work queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub schema_version: u32,
    pub id: OperationId,
    pub idempotency_key: IdempotencyKey,
    /// Who submitted it: `api`, a token's name, or a webhook source.
    pub source: String,
    /// [`crate::id::fingerprint`] of the spec, so a worker that must recreate a lost record
    /// keeps the dispatcher's 422-on-different-body check intact.
    pub fingerprint: String,
    pub submitted_at: jiff::Timestamp,
    #[serde(flatten)]
    pub spec: OperationSpec,
    /// The fleet rollout it is one cluster's part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::RolloutLink>,
}

/// Why a message could not be read as an envelope. Such a message can never succeed.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("unsupported envelope schema version {0} (this build reads {SCHEMA_VERSION})")]
    Schema(String),
    #[error("malformed envelope: {0}")]
    Json(#[from] serde_json::Error),
}

impl Envelope {
    /// The subject (for `pool`, the one serving the cluster), headers and payload to
    /// publish. The operation id is the `Nats-Msg-Id`, so JetStream drops a second publish
    /// of the same operation inside its dedup window.
    pub fn to_message(
        &self,
        pool: &crate::cluster::PoolName,
    ) -> Result<(String, HeaderMap, Bytes), serde_json::Error> {
        let payload = serde_json::to_vec(self)?;
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, self.id.as_str());
        headers.insert("Content-Type", CONTENT_TYPE);
        headers.insert(SCHEMA_HEADER, SCHEMA_VERSION.to_string().as_str());
        Ok((
            self.spec.cluster.subject(pool),
            headers,
            Bytes::from(payload),
        ))
    }

    /// Reads an envelope from a message, refusing schema versions this build does not know.
    pub fn from_message(
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> Result<Self, EnvelopeError> {
        if let Some(version) = headers.and_then(|h| h.get(SCHEMA_HEADER))
            && version.as_str() != SCHEMA_VERSION.to_string()
        {
            return Err(EnvelopeError::Schema(version.to_string()));
        }
        let envelope: Self = serde_json::from_slice(payload)?;
        if envelope.schema_version != SCHEMA_VERSION {
            return Err(EnvelopeError::Schema(envelope.schema_version.to_string()));
        }
        Ok(envelope)
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::spec::{Action, Options};
    use serde_json::json;

    pub(crate) fn sample() -> Envelope {
        let key = IdempotencyKey::new("deploy-web-42").unwrap();
        Envelope {
            schema_version: SCHEMA_VERSION,
            id: OperationId::derive("api", &key),
            idempotency_key: key,
            source: "api".into(),
            fingerprint: "0123".into(),
            submitted_at: "2026-11-27T12:00:00Z".parse().unwrap(),
            spec: OperationSpec {
                cluster: crate::ClusterName::new("prod").unwrap(),
                action: Action::Apply,
                manifests: vec![
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}),
                ],
                targets: vec![],
                patch: None,
                params: Default::default(),
                options: Options::default(),
                pipeline: None,
            },
            rollout: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::sample;
    use super::*;

    #[test]
    fn a_written_record_is_its_revision_and_the_trace_the_message_carries() {
        let mut h = HeaderMap::new();
        assert_eq!(
            written_record(Some(&h)),
            None,
            "no revision, no known record"
        );
        h.insert(RECORD_REVISION_HEADER, "42");
        assert_eq!(written_record(Some(&h)), Some((42, None)));
        h.insert(
            TRACEPARENT_HEADER,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        assert_eq!(
            written_record(Some(&h)),
            Some((42, Some("4bf92f3577b34da6a3ce929d0e0e4736".into())))
        );
        for bad in [
            "00-0000000000000000000000000000000000-x-01",
            "garbage",
            "00-XYZ-1-01",
        ] {
            h.insert(TRACEPARENT_HEADER, bad);
            assert_eq!(written_record(Some(&h)), Some((42, None)), "{bad}");
        }
        h.insert(RECORD_REVISION_HEADER, "not a number");
        assert_eq!(written_record(Some(&h)), None);
    }

    #[test]
    fn round_trips_through_a_message() {
        let env = sample();
        let pool = crate::cluster::PoolName::default_pool();
        let (subject, headers, payload) = env.to_message(&pool).unwrap();
        assert_eq!(subject, "longshore.ops.workers.prod");
        assert_eq!(
            headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .unwrap()
                .as_str(),
            env.id.as_str()
        );
        assert_eq!(
            Envelope::from_message(Some(&headers), &payload).unwrap(),
            env
        );
    }

    #[test]
    fn refuses_unknown_schema_versions() {
        let (_, mut headers, payload) = sample()
            .to_message(&crate::cluster::PoolName::default_pool())
            .unwrap();
        headers.insert(SCHEMA_HEADER, "2");
        assert!(
            matches!(Envelope::from_message(Some(&headers), &payload), Err(EnvelopeError::Schema(v)) if v == "2")
        );
        assert!(matches!(
            Envelope::from_message(None, b"{"),
            Err(EnvelopeError::Json(_))
        ));
    }
}
