//! Dead letters: operations that exhausted their deliveries, copied to the
//! `LONGSHORE_DEAD_LETTERS` stream before they leave the work queue, so they can be
//! inspected (`GET /v1/dead-letters`) and requeued (`POST /v1/operations/{id}/retry`).
//!
//! A dead letter is the original envelope, byte for byte, with these headers:
//! `Nats-Msg-Id` = `<operation id>.<original stream sequence>` (so the worker that saw the
//! last delivery fail and the sweeper that saw the server's max-deliveries advisory cannot
//! both store one), the reason, the original sequence and the delivery count.

use async_nats::HeaderMap;
use bytes::Bytes;

use crate::{ClusterName, OperationId, envelope};

/// Prefix of dead-letter subjects: `longshore.dead.<cluster>.<operation id>`, so one
/// operation's dead letter can be found directly by subject.
pub const SUBJECT_PREFIX: &str = "longshore.dead";
/// Why the operation was dead-lettered (the last error).
pub const REASON_HEADER: &str = "Longshore-Dead-Letter-Reason";
/// The work-queue stream sequence the operation had.
pub const SEQUENCE_HEADER: &str = "Longshore-Original-Sequence";
/// How many deliveries it had.
pub const DELIVERIES_HEADER: &str = "Longshore-Deliveries";
/// The operation id.
pub const OPERATION_HEADER: &str = "Longshore-Operation-Id";

/// The subject of an operation's dead letter.
pub fn subject(cluster: &ClusterName, id: &OperationId) -> String {
    format!("{SUBJECT_PREFIX}.{cluster}.{id}")
}

/// The `Nats-Msg-Id` of a dead letter.
pub fn message_id(id: &OperationId, sequence: u64) -> String {
    format!("{id}.{sequence}")
}

/// Headers for the dead-letter copy of an envelope. Header values cannot hold line breaks,
/// so the reason is flattened to one line (and bounded).
pub fn headers(id: &OperationId, sequence: u64, deliveries: u64, reason: &str) -> HeaderMap {
    let mut reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if reason.len() > 1024 {
        let mut end = 1024;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    let mut h = HeaderMap::new();
    h.insert(
        async_nats::header::NATS_MESSAGE_ID,
        message_id(id, sequence).as_str(),
    );
    h.insert("Content-Type", envelope::CONTENT_TYPE);
    h.insert(
        envelope::SCHEMA_HEADER,
        envelope::SCHEMA_VERSION.to_string().as_str(),
    );
    h.insert(OPERATION_HEADER, id.as_str());
    h.insert(REASON_HEADER, reason.as_str());
    h.insert(SEQUENCE_HEADER, sequence.to_string().as_str());
    h.insert(DELIVERIES_HEADER, deliveries.to_string().as_str());
    h
}

/// A dead letter as read back from the stream.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: String,
    pub cluster: String,
    pub reason: String,
    pub original_sequence: Option<u64>,
    pub deliveries: Option<u64>,
    /// Sequence of the dead letter in the dead-letter stream.
    pub dead_letter_sequence: u64,
    #[serde(skip)]
    pub payload: Bytes,
}

impl DeadLetter {
    /// Reads a dead letter from a stored message's parts.
    pub fn from_parts(
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: Bytes,
        sequence: u64,
    ) -> Self {
        let get = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        Self {
            id: get(OPERATION_HEADER).unwrap_or_default(),
            cluster: subject
                .strip_prefix(SUBJECT_PREFIX)
                .unwrap_or(subject)
                .trim_start_matches('.')
                .split('.')
                .next()
                .unwrap_or_default()
                .to_owned(),
            reason: get(REASON_HEADER).unwrap_or_default(),
            original_sequence: get(SEQUENCE_HEADER).and_then(|s| s.parse().ok()),
            deliveries: get(DELIVERIES_HEADER).and_then(|s| s.parse().ok()),
            dead_letter_sequence: sequence,
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_reasons_stay_on_one_line() {
        let id = OperationId::parse(&format!("op-{}", "a".repeat(32))).unwrap();
        let h = headers(&id, 42, 10, "503 Service Unavailable\nretry later");
        let dl = DeadLetter::from_parts(
            &subject(&ClusterName::new("prod").unwrap(), &id),
            Some(&h),
            Bytes::from_static(b"{}"),
            7,
        );
        assert_eq!(dl.id, id.as_str());
        assert_eq!(dl.cluster, "prod");
        assert_eq!(dl.reason, "503 Service Unavailable retry later");
        assert_eq!(
            (dl.original_sequence, dl.deliveries, dl.dead_letter_sequence),
            (Some(42), Some(10), 7)
        );
        assert_eq!(
            h.get(async_nats::header::NATS_MESSAGE_ID).unwrap().as_str(),
            format!("{id}.42")
        );
    }
}
