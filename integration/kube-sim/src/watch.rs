//! `?watch=true`: newline-delimited JSON events, resumable from a resourceVersion while it is
//! still in the bounded history (410 Expired as an ERROR event after that), with optional
//! bookmarks, initial events, selectors and `timeoutSeconds`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::cluster::Cluster;
use crate::object;
use crate::registry::ResourceType;
use crate::request::{Query, ResourcePath};
use crate::selector::Selectors;
use crate::status::{Error, Result};
use crate::store::{EventType, Since, StoredEvent};
use crate::verbs::list_selectors;

/// Default for `timeoutSeconds` when the client sends none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// What one watch delivers.
struct Filter {
    rt: Arc<ResourceType>,
    version: String,
    namespace: Option<String>,
    selectors: Selectors,
}

impl Filter {
    fn in_scope(&self, group: &str, plural: &str, obj: &Value) -> bool {
        group == self.rt.group
            && plural == self.rt.plural
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| object::meta_str(obj, "namespace") == Some(ns))
    }

    /// The event type this watcher sees for a stored event, if any: an object moving into
    /// or out of the selector is seen as ADDED or DELETED.
    fn translate(&self, ev: &StoredEvent) -> Option<Bytes> {
        if !self.in_scope(&ev.group, &ev.plural, &ev.object) {
            return None;
        }
        let now = self.selectors.matches(&ev.object);
        let kind = match ev.kind {
            EventType::Added | EventType::Deleted => now.then_some(ev.kind),
            EventType::Modified => {
                let before = ev.prev.as_ref().is_some_and(|p| self.selectors.matches(p));
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
        }?;
        Some(self.line(
            kind.as_str(),
            object::present(ev.object.clone(), &self.rt, &self.version),
        ))
    }

    fn line(&self, kind: &str, object: Value) -> Bytes {
        let mut s = json!({"type": kind, "object": object}).to_string();
        s.push('\n');
        Bytes::from(s)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.line("BOOKMARK", json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(&self.version), "metadata": md}))
    }
}

fn expired_line(rv: u64, oldest: u64) -> Bytes {
    let status = Error::Expired(format!("too old resource version: {rv} ({oldest})")).status();
    let mut s = json!({"type": "ERROR", "object": status}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Starts a watch. The first events are computed under the cluster lock together with the
/// subscription, so no change falls between them.
pub(crate) fn start(
    cluster: &Cluster,
    path: &ResourcePath,
    query: &Query,
    bookmark_interval: Duration,
) -> Result<Response> {
    let selectors = list_selectors(query)?;
    let timeout = query
        .u64("timeoutSeconds")?
        .filter(|t| *t > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let bookmarks = query.flag("allowWatchBookmarks");
    let send_initial = query.flag("sendInitialEvents");
    let from = match query.get("resourceVersion") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| Error::BadRequest(format!("resourceVersion: invalid value {v:?}")))?,
        ),
    };

    let mut state = cluster.lock();
    let rt = state
        .registry
        .find(&path.group, &path.version, &path.plural)
        .ok_or(Error::NoSuchResource)?;
    if !rt.namespaced && path.namespace.is_some() {
        return Err(Error::NoSuchResource);
    }
    let mut selectors = selectors;
    if let Some(name) = &path.name {
        // `/…/{name}?watch=true` is the legacy single-object watch.
        selectors.fields = crate::selector::FieldSelector::parse(&format!("metadata.name={name}"))
            .map_err(Error::BadRequest)?;
    }
    let filter = Filter {
        rt,
        version: path.version.clone(),
        namespace: path.namespace.clone(),
        selectors,
    };
    let current = state.store.resource_version();
    let mut first: Vec<Bytes> = Vec::new();
    let mut expired = false;
    match from {
        Some(rv) if rv > 0 && !send_initial => match state.store.since(rv) {
            Since::Events(events) => {
                first.extend(events.iter().filter_map(|e| filter.translate(e)))
            }
            Since::Expired(oldest) => {
                first.push(expired_line(rv, oldest));
                expired = true;
            }
        },
        _ => {
            for (_, o) in state.store.list(
                &filter.rt.group,
                &filter.rt.plural,
                filter.namespace.as_deref(),
            ) {
                if filter.selectors.matches(o) {
                    first.push(filter.line(
                        "ADDED",
                        object::present(o.clone(), &filter.rt, &filter.version),
                    ));
                }
            }
            if send_initial && bookmarks {
                first.push(filter.bookmark(current, true));
            }
        }
    }
    let rx = state.store.subscribe();
    let mut expiry = cluster.expiry.subscribe();
    expiry.mark_unchanged();
    drop(state);

    let (tx, out) = mpsc::channel::<Bytes>(64);
    let open = Open::new(&cluster.open_watches);
    tokio::spawn(pump(
        open,
        filter,
        first,
        expired,
        rx,
        tx,
        Pump {
            timeout,
            bookmarks,
            bookmark_interval,
            last_rv: current,
            expiry,
        },
    ));
    let body = Body::from_stream(ReceiverStream::new(out).map(Ok::<_, Infallible>));
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

struct Pump {
    timeout: Duration,
    bookmarks: bool,
    bookmark_interval: Duration,
    last_rv: u64,
    /// Changes when the cluster's watches are expired (410).
    expiry: tokio::sync::watch::Receiver<u64>,
}

/// Counts a watch as open while it lives.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn pump(
    _open: Open,
    filter: Filter,
    first: Vec<Bytes>,
    expired: bool,
    mut rx: broadcast::Receiver<Arc<StoredEvent>>,
    tx: mpsc::Sender<Bytes>,
    mut p: Pump,
) {
    for line in first {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    if expired {
        return;
    }
    let deadline = tokio::time::sleep(p.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(p.bookmark_interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            Ok(()) = p.expiry.changed() => {
                let _ = tx.send(expired_line(p.last_rv, p.last_rv + 1)).await;
                return;
            }
            _ = ticker.tick(), if p.bookmarks => {
                if tx.send(filter.bookmark(p.last_rv, false)).await.is_err() {
                    return;
                }
            }
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    p.last_rv = p.last_rv.max(ev.rv);
                    if let Some(line) = filter.translate(&ev)
                        && tx.send(line).await.is_err() {
                            return;
                        }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = tx.send(expired_line(p.last_rv, p.last_rv + 1)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
