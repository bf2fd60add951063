//! `longshore events`: what the clusters' watchers see change (`GET /v1/events`, see
//! docs/inventory.md), a line per event until interrupted; `-o json` prints each event's
//! JSON on its own line.
//!
//! The dispatcher ends a stream after `http.max_wait`, or when it stops; the command then
//! opens another with `Last-Event-ID` set to the last sequence it saw (every stream names
//! its start first, so that is known before any event arrives), and so misses nothing and
//! prints nothing twice. Only a refusal, or a dispatcher that cannot be reached at first,
//! ends it.

use std::{process::ExitCode, time::Duration};

use clap::Args;
use longshore_contract::{
    ClusterName,
    backoff::{Backoff, Retries},
};
use serde_json::Value;

use crate::{
    Format,
    client::{Client, Failure, problem},
    objects::drift,
    output::{self, str_of},
};

#[derive(Args)]
pub struct Events {
    /// Only this cluster's events.
    #[arg(long)]
    cluster: Option<String>,
    /// Only events of objects in this namespace (`_`: cluster-scoped objects and the
    /// clusters' own events).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Only events of objects of this kind (`Cluster`: the clusters' own events).
    #[arg(long)]
    kind: Option<String>,
    /// Start after this stream sequence (0: everything the stream keeps); without it, new
    /// events only.
    #[arg(long)]
    after: Option<u64>,
}

/// How long a stream may stay silent (it sends a keep-alive every 15 s) before it is
/// taken for dead and opened again.
const SILENCE: Duration = Duration::from_secs(45);

/// Pauses before opening a stream again after one failed.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

pub async fn run(client: &Client, format: Format, args: Events) -> ExitCode {
    match exec(client, format, args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => output::failure(&f),
    }
}

async fn exec(client: &Client, format: Format, args: Events) -> Result<(), Failure> {
    if let Some(cluster) = &args.cluster {
        ClusterName::new(cluster.as_str()).map_err(|e| {
            Failure::Usage(format!("{cluster:?} is not a cluster name: {}", e.reason))
        })?;
    }
    let query: Vec<(&str, String)> = [
        ("cluster", &args.cluster),
        ("namespace", &args.namespace),
        ("kind", &args.kind),
    ]
    .into_iter()
    .filter_map(|(param, value)| Some((param, value.clone()?)))
    .collect();
    let mut last = args.after;
    let mut retries = RECONNECT.retries();
    let mut opened_once = false;
    loop {
        let trouble = match client.events("/v1/events", &query, last).await {
            Ok(Ok(resp)) => {
                opened_once = true;
                follow(resp, format, &mut last, &mut retries).await;
                continue;
            }
            // A refusal is final, and so is any trouble before the first stream opened (a
            // wrong --server); afterwards a dispatcher away or busy is waited for.
            Ok(Err((status, body))) => {
                let refusal = problem(status, &body);
                if !opened_once || status != reqwest::StatusCode::SERVICE_UNAVAILABLE {
                    return Err(Failure::Request(refusal));
                }
                refusal
            }
            Err(Failure::Request(m)) if opened_once => m,
            Err(f) => return Err(f),
        };
        let delay = retries.next_delay();
        eprintln!("{trouble}; trying again in {}ms", delay.as_millis());
        tokio::time::sleep(delay).await;
    }
}

/// Prints the events of one open stream until it ends, noting the last sequence seen.
async fn follow(
    mut resp: reqwest::Response,
    format: Format,
    last: &mut Option<u64>,
    retries: &mut Retries,
) {
    let mut frames = Frames::default();
    loop {
        let chunk = match tokio::time::timeout(SILENCE, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            // Ended by the dispatcher (its bound, or its shutdown): the next one follows.
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                eprintln!("the event stream broke ({e}); resuming");
                return;
            }
            Err(_) => {
                eprintln!("the event stream went silent; resuming");
                return;
            }
        };
        retries.reset();
        for frame in frames.push(&String::from_utf8_lossy(&chunk)) {
            if let Some(id) = frame.id.as_deref().and_then(|id| id.parse().ok()) {
                *last = Some(id);
            }
            if let Some(line) = show(format, &frame) {
                println!("{line}");
            }
        }
    }
}

/// What to print for `frame`, if anything: events only, not the stream's position or an
/// unreadable message.
fn show(format: Format, frame: &Frame) -> Option<String> {
    let data = frame.data.as_deref()?;
    if frame.event.as_deref() == Some("error") {
        eprintln!("the dispatcher says: {data}");
        return None;
    }
    match format {
        Format::Json => Some(data.to_owned()),
        Format::Human => {
            let event: Value = serde_json::from_str(data).ok()?;
            Some(line(frame.id.as_deref().unwrap_or("-"), &event))
        }
    }
}

/// One event as a line: sequence, time, cluster, type, object, and what there is to say.
///
/// `12  2026-12-02T10:00:00Z  prod  drifted  Deployment shop/web  .spec.replicas by kubectl-patch`
fn line(sequence: &str, event: &Value) -> String {
    let at = match str_of(event, "at").parse::<jiff::Timestamp>() {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => str_of(event, "at").to_owned(),
    };
    let object = match event.get("object").filter(|o| o.is_object()) {
        Some(o) => {
            let name = str_of(o, "name");
            match o["namespace"].as_str() {
                Some(ns) => format!("{} {ns}/{name}", str_of(o, "kind")),
                None => format!("{} {name}", str_of(o, "kind")),
            }
        }
        None => "cluster".to_owned(),
    };
    let mut said = Vec::new();
    if event["drift"].as_array().is_some_and(|d| !d.is_empty()) {
        said.push(drift(&event["drift"]));
    }
    if let Some(message) = event["message"].as_str() {
        said.push(message.to_owned());
    }
    if let Some(op) = event["operation"].as_str() {
        said.push(format!("by {op}"));
    }
    let mut line = format!(
        "{sequence}  {at}  {}  {}  {object}",
        str_of(event, "cluster"),
        str_of(event, "type"),
    );
    if !said.is_empty() {
        line.push_str("  ");
        line.push_str(&said.join("; "));
    }
    line
}

/// One server-sent event as received.
#[derive(Debug, Default, PartialEq)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

/// Server-sent events out of a byte stream that splits them anywhere.
#[derive(Default)]
struct Frames {
    pending: String,
}

impl Frames {
    /// The events that `text` completes.
    fn push(&mut self, text: &str) -> Vec<Frame> {
        self.pending.push_str(&text.replace("\r\n", "\n"));
        let mut frames = Vec::new();
        while let Some(end) = self.pending.find("\n\n") {
            let block: String = self.pending.drain(..end + 2).collect();
            let mut frame = Frame::default();
            for line in block.lines() {
                // `field: value`, or `field:value`; a line starting with `:` is a comment.
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => frame.id = Some(value.to_owned()),
                    "event" => frame.event = Some(value.to_owned()),
                    "data" => match &mut frame.data {
                        Some(data) => {
                            data.push('\n');
                            data.push_str(value);
                        }
                        None => frame.data = Some(value.to_owned()),
                    },
                    _ => {}
                }
            }
            if frame != Frame::default() {
                frames.push(frame);
            }
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn frames_are_read_across_chunks_and_comments_are_skipped() {
        let mut frames = Frames::default();
        assert_eq!(
            frames.push(": after sequence 4\nid: 4\n\n: keep"),
            [Frame {
                id: Some("4".into()),
                ..Default::default()
            }]
        );
        assert_eq!(frames.push("-alive\n\nid: 5\nevent: dri"), []);
        let got = frames.push("fted\ndata: {\"a\":\ndata: 1}\n\n");
        assert_eq!(
            got,
            [Frame {
                id: Some("5".into()),
                event: Some("drifted".into()),
                data: Some("{\"a\":\n1}".into()),
            }]
        );
    }

    #[test]
    fn an_event_reads_as_one_line() {
        let event = json!({"id": "prod:u:7:drifted", "type": "drifted", "cluster": "prod",
            "object": {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop",
                "name": "web", "uid": "u"},
            "drift": [{"path": ".spec.replicas", "manager": "kubectl-patch"}],
            "watcher": "w1", "at": "2026-12-02T10:00:00.5Z"});
        assert_eq!(
            line("12", &event),
            "12  2026-12-02T10:00:00Z  prod  drifted  Deployment shop/web  .spec.replicas by kubectl-patch"
        );
        let event = json!({"id": "prod:unreachable:1", "type": "unreachable", "cluster": "prod",
            "message": "connection refused", "watcher": "w1", "at": "2026-12-02T10:00:00Z"});
        assert_eq!(
            line("13", &event),
            "13  2026-12-02T10:00:00Z  prod  unreachable  cluster  connection refused"
        );
    }

    #[test]
    fn only_events_are_shown() {
        let position = Frame {
            id: Some("4".into()),
            ..Default::default()
        };
        assert_eq!(show(Format::Json, &position), None);
        let event = Frame {
            id: Some("5".into()),
            event: Some("created".into()),
            data: Some(r#"{"type":"created","cluster":"prod","at":"x"}"#.into()),
        };
        assert_eq!(
            show(Format::Json, &event).as_deref(),
            Some(r#"{"type":"created","cluster":"prod","at":"x"}"#)
        );
    }
}
