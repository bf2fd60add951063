//! `GET /v1/events?cluster=&namespace=&kind=`: what the clusters' watchers saw change
//! (`LONGSHORE_EVENTS`), as server-sent events, each with its stream sequence as `id`.
//!
//! A stream starts after a sequence: the `Last-Event-ID` header's (so a reconnecting
//! `EventSource` resumes where it was, and sees nothing twice), else `?after=SEQ`, else
//! the beginning of what the stream retains with `?from=start`, else the newest event (new
//! events only). Its first message is that sequence as a bare `id:` with no data, which a
//! client records without being handed an event: a client that reconnects before any
//! event arrived resumes from there, missing nothing.
//!
//! Each stream is an ordered consumer on the NATS server, filtered by the scope's subject,
//! open for at most `http.max_wait` (then it ends and the client reconnects), and ended
//! when the dispatcher shuts down. A replica keeps at most `http.max_event_streams` open.
//! Reads follow the token's `policy.clusters`: naming a cluster it does not allow is 403;
//! without `cluster`, the events of clusters it does not allow are skipped.

use std::{convert::Infallible, sync::Arc};

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::Ordered, pull::OrderedConfig},
};
use axum::{
    extract::{Query, State, rejection::QueryRejection},
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use futures::{StreamExt, stream};
use longshore_contract::{
    inventory::{EVENTS_PREFIX, Event},
    spec::FieldError,
};
use serde::Deserialize;
use tokio::{sync::OwnedSemaphorePermit, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Caller,
    context::Context,
    error::{Error, Result},
    inventory::Scope,
};

/// The header a reconnecting client names the last event it saw with.
pub const LAST_EVENT_ID: &str = "Last-Event-ID";

/// How often an idle stream sends a comment, so proxies keep it open and a client can
/// tell a quiet stream from a dead one.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    cluster: Option<String>,
    namespace: Option<String>,
    kind: Option<String>,
    after: Option<String>,
    from: Option<String>,
}

/// Where a stream starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// After this stream sequence.
    After(u64),
    /// With the oldest event the stream retains.
    Oldest,
    /// After the newest event: new events only.
    Newest,
}

/// The start the request asks for. `Last-Event-ID` wins over the query: a reconnecting
/// `EventSource` sends it with the URL it first opened, `?after=` or `?from=` included.
fn start_of(
    headers: &HeaderMap,
    after: Option<&str>,
    from: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Start {
    let sequence = |field: &str, text: &str, errors: &mut Vec<FieldError>| match text.parse::<u64>()
    {
        Ok(n) => Some(n),
        Err(_) => {
            errors.push(FieldError::new(
                field,
                format!("{text:?}: must be a stream sequence (a whole number)"),
            ));
            None
        }
    };
    // An empty one is what a client that never had an id sends, if it sends one at all.
    if let Some(value) = headers.get(LAST_EVENT_ID).filter(|v| !v.is_empty()) {
        let text = String::from_utf8_lossy(value.as_bytes());
        return sequence(LAST_EVENT_ID, &text, errors).map_or(Start::Newest, Start::After);
    }
    match (after, from) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "from",
                "give after or from, not both".to_owned(),
            ));
            Start::Newest
        }
        (Some(after), None) => sequence("after", after, errors).map_or(Start::Newest, Start::After),
        (None, Some("start")) => Start::Oldest,
        (None, Some("now") | None) => Start::Newest,
        (None, Some(other)) => {
            errors.push(FieldError::new(
                "from",
                format!("{other:?}: must be start (the oldest event kept) or now"),
            ));
            Start::Newest
        }
    }
}

pub async fn stream(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    headers: HeaderMap,
    query: std::result::Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| Error::field("query", e.body_text()))?;
    let mut errors = Vec::new();
    let scope = Scope::parse(
        query.cluster.as_deref(),
        query.kind.as_deref(),
        query.namespace.as_deref(),
        &mut errors,
    );
    let start = start_of(
        &headers,
        query.after.as_deref(),
        query.from.as_deref(),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    scope.check(&caller)?;
    let fleet = ctx.fleet()?;
    let slot = Slot::take(&ctx)?;
    let events = &fleet.events;
    let after = match start {
        Start::After(n) => n,
        Start::Oldest => 0,
        // From the sequence read now rather than "deliver new": the first message can then
        // name it, and an event published meanwhile is delivered, not lost in between.
        Start::Newest => {
            events
                .get_info()
                .await
                .map_err(|e| unavailable("reading the events stream", e))?
                .state
                .last_sequence
        }
    };
    let messages = events
        .create_consumer(OrderedConfig {
            filter_subject: scope.subject_filter(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after.saturating_add(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable("following the events stream", e))?
        .messages()
        .await
        .map_err(|e| unavailable("following the events stream", e))?;
    tracing::debug!(filter = %scope.subject_filter(), after, "event stream opened");
    let feed = Feed {
        messages,
        caller,
        deadline: Instant::now() + ctx.config.http.max_wait,
        stopping: ctx.stopping.clone(),
        done: false,
        _slot: slot,
    };
    let position = SseEvent::default()
        .comment(format!("after sequence {after}"))
        .id(after.to_string());
    let feed = stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok::<_, Infallible>(event), feed))
    });
    let body = stream::once(async move { Ok(position) }).chain(feed);
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

fn unavailable(doing: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{doing}: {e}"))
}

/// One of the replica's `http.max_event_streams`, held while its stream is open.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    ctx: Arc<Context>,
}

impl Slot {
    pub(crate) fn take(ctx: &Arc<Context>) -> Result<Self> {
        let permit = ctx.event_streams.clone().try_acquire_owned().map_err(|_| {
            Error::Busy(format!(
                "this dispatcher has {} event streams open, its most (http.max_event_streams); retry later or on another replica",
                ctx.config.http.max_event_streams
            ))
        })?;
        ctx.metrics.event_streams(1);
        Ok(Self {
            _permit: permit,
            ctx: ctx.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.ctx.metrics.event_streams(-1);
    }
}

/// An open stream: the consumer's messages, as the caller may see them.
struct Feed {
    messages: Ordered,
    caller: Caller,
    deadline: Instant,
    stopping: CancellationToken,
    done: bool,
    _slot: Slot,
}

impl Feed {
    /// The next event to send, or `None` when the stream ends: its time is up, the
    /// dispatcher is stopping, or (after an `error` event) the consumer failed.
    async fn next(&mut self) -> Option<SseEvent> {
        while !self.done {
            let next = tokio::select! {
                () = self.stopping.cancelled() => return None,
                next = tokio::time::timeout_at(self.deadline, self.messages.next()) => next,
            };
            let message = match next {
                Err(_) | Ok(None) => return None,
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "event stream ended by its consumer");
                    self.done = true;
                    let event = SseEvent::default().event("error").data(format!(
                        "the events stream failed ({e}); reconnect to resume"
                    ));
                    return Some(event);
                }
                Ok(Some(Ok(message))) => message,
            };
            if let Some(event) = self.event_of(&message) {
                return Some(event);
            }
        }
        None
    }

    /// `message` as a server-sent event, if the caller may see it and it reads as one.
    fn event_of(&self, message: &jetstream::Message) -> Option<SseEvent> {
        let sequence = message.info().ok()?.stream_sequence;
        let cluster = message
            .subject
            .strip_prefix(EVENTS_PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.split('.').next())?;
        if !self.caller.may_read_cluster(cluster) {
            return None;
        }
        // Sent as published, fields this dispatcher does not know included; read as an
        // `Event` only to check it is one and to name its type.
        let value: serde_json::Value = match serde_json::from_slice(&message.payload) {
            Ok(value) => value,
            Err(e) => {
                tracing::warn!(seq = sequence, error = %e, "an unreadable event skipped");
                return None;
            }
        };
        let event = match Event::deserialize(&value) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(seq = sequence, error = %e, "an unreadable event skipped");
                return None;
            }
        };
        SseEvent::default()
            .id(sequence.to_string())
            .event(event.kind.as_str())
            .json_data(&value)
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(
        header: Option<&str>,
        after: Option<&str>,
        from: Option<&str>,
    ) -> Result<Start, Vec<String>> {
        let mut headers = HeaderMap::new();
        if let Some(h) = header {
            headers.insert(LAST_EVENT_ID, h.parse().unwrap());
        }
        let mut errors = Vec::new();
        let start = start_of(&headers, after, from, &mut errors);
        if errors.is_empty() {
            Ok(start)
        } else {
            Err(errors.into_iter().map(|e| e.field).collect())
        }
    }

    #[test]
    fn the_last_event_id_wins_over_the_query() {
        assert_eq!(start(None, None, None), Ok(Start::Newest));
        assert_eq!(start(None, None, Some("now")), Ok(Start::Newest));
        assert_eq!(start(None, None, Some("start")), Ok(Start::Oldest));
        assert_eq!(start(None, Some("41"), None), Ok(Start::After(41)));
        assert_eq!(start(Some("57"), Some("41"), None), Ok(Start::After(57)));
        assert_eq!(start(Some("57"), None, Some("start")), Ok(Start::After(57)));
        assert_eq!(start(Some(""), None, Some("start")), Ok(Start::Oldest));
    }

    #[test]
    fn a_malformed_position_is_named() {
        assert_eq!(
            start(Some("abc"), None, None),
            Err(vec![LAST_EVENT_ID.to_owned()])
        );
        assert_eq!(
            start(Some("-1"), None, None),
            Err(vec![LAST_EVENT_ID.to_owned()])
        );
        assert_eq!(start(None, Some("x"), None), Err(vec!["after".to_owned()]));
        assert_eq!(start(None, None, Some("end")), Err(vec!["from".to_owned()]));
        assert_eq!(
            start(None, Some("1"), Some("start")),
            Err(vec!["from".to_owned()])
        );
    }
}
