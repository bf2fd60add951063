//! How a delivery ends: what is recorded, how the message leaves the worker, and what the
//! operations counter says. [`verdict`] turns the result of the work into all three, in one
//! pure function; [`send`] settles the message with JetStream.

use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use longshore_contract::record::{End, ErrorClass, State};
use tracing::Instrument;

use crate::policy::Decision;

/// How a message leaves the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Done (succeeded, superseded, failed, or already terminal): acknowledged with
    /// confirmation.
    Ack,
    /// Handed back for another delivery after the delay.
    Nak(Duration),
    /// Can never be processed, or dead-lettered: removed.
    Term,
}

/// How one delivery ended: the `outcome` label of `longshore_worker_operations_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    Succeeded,
    Failed,
    Superseded,
    DeadLettered,
    /// Handed back with a delay after a transient failure.
    Retried,
    /// A redelivery of an operation already finished: acknowledged, nothing touched.
    AlreadyDone,
    /// Handed back at once: the worker is draining.
    HandedBack,
    /// Its cluster is served by another pool now: republished there, removed here.
    Forwarded,
    /// Its fleet rollout halted or was cancelled before it started: not carried out.
    Cancelled,
}

impl Delivery {
    /// Every outcome, for metrics that start at zero.
    pub const ALL: [Delivery; 9] = [
        Delivery::Succeeded,
        Delivery::Failed,
        Delivery::Superseded,
        Delivery::DeadLettered,
        Delivery::Retried,
        Delivery::AlreadyDone,
        Delivery::HandedBack,
        Delivery::Forwarded,
        Delivery::Cancelled,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Delivery::Succeeded => "succeeded",
            Delivery::Failed => "failed",
            Delivery::Superseded => "superseded",
            Delivery::DeadLettered => "dead_lettered",
            Delivery::Retried => "retried",
            Delivery::AlreadyDone => "already_done",
            Delivery::HandedBack => "handed_back",
            Delivery::Forwarded => "forwarded",
            Delivery::Cancelled => "cancelled",
        }
    }

    /// The outcome of a delivery that recorded (or found) the terminal `state`.
    pub fn of(state: State) -> Self {
        match state {
            State::Succeeded => Delivery::Succeeded,
            State::Superseded => Delivery::Superseded,
            State::DeadLettered => Delivery::DeadLettered,
            State::Cancelled => Delivery::Cancelled,
            // Queued or running cannot be an end; counted as what a failure to end is.
            State::Failed | State::Queued | State::Running => Delivery::Failed,
        }
    }
}

/// Everything a delivery's end decides.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The record's terminal state, if this delivery ends the operation.
    pub end: Option<End>,
    pub reply: Reply,
    pub outcome: Delivery,
    /// The error class, for the counter's label and the span's `error.type`.
    pub class: Option<ErrorClass>,
}

/// What the work came to: every object done (`all_superseded` if none of them was
/// applied because later operations were), or the policy's decision on the error.
pub enum Worked {
    Done { all_superseded: bool },
    Stopped(Decision),
}

/// The verdict on a delivery whose work came to `worked`.
pub fn verdict(worked: Worked) -> Verdict {
    let (end, reply, outcome) = match worked {
        Worked::Done {
            all_superseded: true,
        } => (Some(End::Superseded), Reply::Ack, Delivery::Superseded),
        Worked::Done {
            all_superseded: false,
        } => (Some(End::Succeeded), Reply::Ack, Delivery::Succeeded),
        Worked::Stopped(Decision::Retry(delay)) => {
            return Verdict {
                end: None,
                reply: Reply::Nak(delay),
                outcome: Delivery::Retried,
                class: Some(ErrorClass::Transient),
            };
        }
        Worked::Stopped(Decision::Fail(info)) => {
            (Some(End::Failed(info)), Reply::Ack, Delivery::Failed)
        }
        // Removed rather than acknowledged: it can never be processed.
        Worked::Stopped(Decision::Term(info)) => {
            (Some(End::Failed(info)), Reply::Term, Delivery::Failed)
        }
        // Copied to the dead letters first (the caller does), then removed.
        Worked::Stopped(Decision::DeadLetter(info)) => (
            Some(End::DeadLettered(info)),
            Reply::Term,
            Delivery::DeadLettered,
        ),
    };
    let class = end.as_ref().and_then(End::error).map(|e| e.class);
    Verdict {
        end,
        reply,
        outcome,
        class,
    }
}

/// The verdict on an operation not carried out because its rollout is over.
pub fn cancelled(reason: String) -> Verdict {
    Verdict {
        end: Some(End::Cancelled(longshore_contract::record::ErrorInfo {
            class: ErrorClass::Cancelled,
            message: reason,
        })),
        reply: Reply::Ack,
        outcome: Delivery::Cancelled,
        class: None,
    }
}

/// The verdict on a redelivery of an operation whose record says it is over.
pub fn already_done() -> Verdict {
    Verdict {
        end: None,
        reply: Reply::Ack,
        outcome: Delivery::AlreadyDone,
        class: None,
    }
}

/// The verdict when the record cannot be read or written (`decision` is the policy's on
/// that error): nothing is recorded. A transient failure is retried; on the last delivery
/// the message is handed back so that JetStream announces it exhausted and the sweeper
/// dead-letters it; a permanent one gives up on the message, the record left as it was.
pub fn unrecorded(decision: Decision) -> Verdict {
    let (reply, outcome, class) = match decision {
        Decision::Retry(delay) => (Reply::Nak(delay), Delivery::Retried, ErrorClass::Transient),
        Decision::DeadLetter(_) => (
            Reply::Nak(Duration::ZERO),
            Delivery::Retried,
            ErrorClass::Transient,
        ),
        Decision::Fail(info) | Decision::Term(info) => (Reply::Ack, Delivery::Failed, info.class),
    };
    Verdict {
        end: None,
        reply,
        outcome,
        class: Some(class),
    }
}

impl Verdict {
    /// The verdict once the record is written: its state may be another worker's, which
    /// stands, and is what is counted.
    pub fn recorded(mut self, state: State) -> Self {
        if self.end.as_ref().map(End::state) != Some(state) {
            self.outcome = Delivery::of(state);
            self.class = None;
        }
        self
    }

    /// Handed back at once, without a record: the worker is draining, or (on the last
    /// delivery) the dead letter could not be copied and the sweeper takes over.
    pub fn hand_back(outcome: Delivery, class: Option<ErrorClass>) -> Self {
        Verdict {
            end: None,
            reply: Reply::Nak(Duration::ZERO),
            outcome,
            class,
        }
    }
}

/// Settles `message` with JetStream, in a span of its own.
pub async fn send(message: &Message, reply: Reply) {
    let name = match reply {
        Reply::Ack => "ack",
        Reply::Nak(_) => "nak",
        Reply::Term => "term",
    };
    let span = tracing::info_span!(
        "settle",
        otel.name = %format!("{name} {}", message.subject),
        otel.kind = "client",
        messaging.system = "nats",
        messaging.destination.name = message.subject.as_str(),
        messaging.operation.type = "settle",
        messaging.operation.name = name,
    );
    let sent = async {
        match reply {
            // Wait for the server's confirmation: after it, the operation is settled.
            Reply::Ack => double_ack(message).await,
            Reply::Nak(delay) if delay.is_zero() => message.ack_with(AckKind::Nak(None)).await,
            Reply::Nak(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
            Reply::Term => message.ack_with(AckKind::Term).await,
        }
    }
    .instrument(span)
    .await;
    if let Err(e) = sent {
        // The message will be delivered again; its record decides what happens then.
        tracing::warn!(error = %e, "acknowledgement not confirmed");
    }
}

/// Acknowledges `message` and waits for the server to confirm it, as
/// [`Message::double_ack`] does, but through the connection's shared reply subscription:
/// the client's own subscribes to a fresh inbox for every acknowledgement, and so sends the
/// server a subscribe and an unsubscribe around each one. Bounded by the connection's
/// request timeout.
pub async fn double_ack(message: &Message) -> Result<(), async_nats::Error> {
    let reply = message
        .reply
        .clone()
        .ok_or("no reply subject: not a JetStream message")?;
    let ack: bytes::Bytes = AckKind::Ack.into();
    message.context.client().request(reply, ack).await?;
    Ok(())
}

/// Hands a message back for immediate redelivery (used when draining).
pub async fn hand_back(message: &Message) {
    send(message, Reply::Nak(Duration::ZERO)).await;
}

#[cfg(test)]
mod tests {
    use longshore_contract::record::ErrorInfo;

    use super::*;

    fn info(class: ErrorClass) -> ErrorInfo {
        ErrorInfo {
            class,
            message: "why".into(),
        }
    }

    #[test]
    fn finished_work_is_recorded_and_acknowledged() {
        let v = verdict(Worked::Done {
            all_superseded: false,
        });
        assert_eq!(
            (v.end, v.reply, v.outcome, v.class),
            (Some(End::Succeeded), Reply::Ack, Delivery::Succeeded, None)
        );
        let v = verdict(Worked::Done {
            all_superseded: true,
        });
        assert_eq!(
            (v.end, v.outcome),
            (Some(End::Superseded), Delivery::Superseded)
        );
    }

    #[test]
    fn a_retry_records_nothing_and_is_counted_with_its_class() {
        let delay = Duration::from_millis(300);
        let v = verdict(Worked::Stopped(Decision::Retry(delay)));
        assert_eq!(
            v.end, None,
            "the record stays running for the next delivery"
        );
        assert_eq!(v.reply, Reply::Nak(delay));
        assert_eq!(
            (v.outcome, v.class),
            (Delivery::Retried, Some(ErrorClass::Transient))
        );
    }

    #[test]
    fn failures_are_recorded_acknowledged_or_removed() {
        let v = verdict(Worked::Stopped(Decision::Fail(info(ErrorClass::Invalid))));
        assert_eq!(v.end, Some(End::Failed(info(ErrorClass::Invalid))));
        assert_eq!(
            (v.reply, v.outcome, v.class),
            (Reply::Ack, Delivery::Failed, Some(ErrorClass::Invalid))
        );
        let v = verdict(Worked::Stopped(Decision::Term(info(ErrorClass::Malformed))));
        assert_eq!((v.reply, v.outcome), (Reply::Term, Delivery::Failed));
        let v = verdict(Worked::Stopped(Decision::DeadLetter(info(
            ErrorClass::Transient,
        ))));
        assert_eq!(v.end, Some(End::DeadLettered(info(ErrorClass::Transient))));
        assert_eq!((v.reply, v.outcome), (Reply::Term, Delivery::DeadLettered));
    }

    #[test]
    fn another_workers_end_stands_and_is_what_is_counted() {
        let mine = verdict(Worked::Stopped(Decision::Fail(info(ErrorClass::Invalid))));
        let v = mine.clone().recorded(State::Succeeded);
        assert_eq!((v.outcome, v.class), (Delivery::Succeeded, None));
        assert_eq!(mine.clone().recorded(State::Failed), mine);
        let done = already_done();
        assert_eq!(
            (done.end, done.reply, done.outcome),
            (None, Reply::Ack, Delivery::AlreadyDone)
        );
    }

    #[test]
    fn without_a_record_transient_errors_retry_and_permanent_ones_give_up() {
        let delay = Duration::from_millis(200);
        let v = unrecorded(Decision::Retry(delay));
        assert_eq!((v.reply, v.outcome), (Reply::Nak(delay), Delivery::Retried));
        let v = unrecorded(Decision::DeadLetter(info(ErrorClass::Transient)));
        assert_eq!(
            v.reply,
            Reply::Nak(Duration::ZERO),
            "the sweeper dead-letters it"
        );
        let v = unrecorded(Decision::Fail(info(ErrorClass::Forbidden)));
        assert_eq!(
            (v.end, v.reply, v.outcome, v.class),
            (
                None,
                Reply::Ack,
                Delivery::Failed,
                Some(ErrorClass::Forbidden)
            )
        );
        let v = Verdict::hand_back(Delivery::HandedBack, None);
        assert_eq!(v.reply, Reply::Nak(Duration::ZERO));
    }

    #[test]
    fn every_outcome_has_its_own_label() {
        let labels: std::collections::BTreeSet<_> =
            Delivery::ALL.iter().map(|d| d.label()).collect();
        assert_eq!(labels.len(), Delivery::ALL.len());
    }
}
