//! The messages that move a rollout, on the `LONGSHORE_ROLLOUT_STEPS` work queue
//! (`longshore.steps.<rollout-id>`), pulled by every hub worker from one durable consumer.
//!
//! Each asks "look at this rollout and do what is due"; handling one is idempotent, so a
//! step handled twice (a redelivery after a crash, or two that crossed) does what one would.
//! Their `Nats-Msg-Id`s make a step published twice inside the dedup window one message:
//!
//! - the **timer** (`<id>.timer`), published at acceptance, lives as long as the rollout:
//!   handed back with a delay until the next thing due (the end of a pause) or
//!   [`TIMER_PERIOD`], whichever is sooner, so a step lost with a replica that died before
//!   publishing it is made anyway within that period;
//! - a **tally** (`<op-id>.tally`), published by the worker that ended a cluster's
//!   operation, before it acknowledges the operation: the stepper reads the operation's
//!   record and counts how it ended;
//! - a **nudge** (`<id>.<why>`), after a control, so it takes effect at once.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::RolloutId;
use crate::OperationId;

/// The steps stream.
pub const STEPS_STREAM: &str = "LONGSHORE_ROLLOUT_STEPS";
/// Every step subject.
pub const STEPS_SUBJECTS: &str = "longshore.steps.>";
/// The hub workers' durable consumer of steps.
pub const STEPS_CONSUMER: &str = "rollout-steppers";
/// Rollouts and their progress: `spec.<id>` and `state.<id>`.
pub const ROLLOUTS_BUCKET: &str = "LONGSHORE_ROLLOUTS";

/// The longest a rollout goes unlooked-at while it is not over.
pub const TIMER_PERIOD: Duration = Duration::from_secs(10);

/// The key of a rollout's record.
pub fn spec_key(id: &RolloutId) -> String {
    format!("spec.{id}")
}

/// The key of a rollout's progress.
pub fn state_key(id: &RolloutId) -> String {
    format!("state.{id}")
}

/// One step message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub rollout: RolloutId,
    pub kind: StepKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum StepKind {
    Timer,
    /// The operation of the cluster at `index` is over: its record says how.
    Tally {
        operation: OperationId,
        index: usize,
        /// 0 for the first attempt on the cluster, then each retry's.
        #[serde(default)]
        attempt: u32,
    },
    Nudge {
        why: String,
    },
}

impl Step {
    pub fn timer(rollout: RolloutId) -> Self {
        Self {
            rollout,
            kind: StepKind::Timer,
        }
    }

    pub fn tally(rollout: RolloutId, operation: OperationId, index: usize, attempt: u32) -> Self {
        Self {
            rollout,
            kind: StepKind::Tally {
                operation,
                index,
                attempt,
            },
        }
    }

    /// `why` is part of the message id: two nudges for the same reason are one.
    pub fn nudge(rollout: RolloutId, why: impl Into<String>) -> Self {
        Self {
            rollout,
            kind: StepKind::Nudge { why: why.into() },
        }
    }

    pub fn subject(&self) -> String {
        format!("longshore.steps.{}", self.rollout)
    }

    pub fn message_id(&self) -> String {
        match &self.kind {
            StepKind::Timer => format!("{}.timer", self.rollout),
            StepKind::Tally { operation, .. } => format!("{operation}.tally"),
            StepKind::Nudge { why } => format!("{}.{why}", self.rollout),
        }
    }

    /// The subject, headers and payload to publish.
    pub fn to_message(&self) -> (String, HeaderMap, Bytes) {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            self.message_id().as_str(),
        );
        // Plain data with string keys: serialising it cannot fail.
        let payload = serde_json::to_vec(self).unwrap_or_default();
        (self.subject(), headers, Bytes::from(payload))
    }

    pub fn from_payload(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdempotencyKey;

    #[test]
    fn steps_round_trip_and_their_ids_say_what_makes_them_one() {
        let id = RolloutId::derive("ci", &IdempotencyKey::new("k").unwrap());
        let op = id.operation(&crate::ClusterName::new("eu-1").unwrap());
        for step in [
            Step::timer(id.clone()),
            Step::tally(id.clone(), op.clone(), 3, 0),
            Step::nudge(id.clone(), "control.2"),
        ] {
            let (subject, headers, payload) = step.to_message();
            assert_eq!(subject, format!("longshore.steps.{id}"));
            assert_eq!(Step::from_payload(&payload).unwrap(), step);
            let msg_id = headers.get(async_nats::header::NATS_MESSAGE_ID).unwrap();
            assert_eq!(msg_id.as_str(), step.message_id());
        }
        assert_eq!(Step::timer(id.clone()).message_id(), format!("{id}.timer"));
        assert_eq!(
            Step::tally(id.clone(), op.clone(), 3, 0).message_id(),
            format!("{op}.tally"),
            "one tally per operation, whoever ends it"
        );
    }
}
