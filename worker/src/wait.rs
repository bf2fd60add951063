//! Waiting, after an operation's change, until each of its objects is stable: ready,
//! failed, or out of time ([`crate::readiness`] says which). Objects are waited for in
//! order under one deadline for the whole operation.
//!
//! Each object is read, then watched (a watch on its name from the version read), so a
//! status change is seen when it happens rather than at the next poll. A watch that ends or
//! fails is simply opened again from a fresh read. How far the object is goes into the
//! status record's `progress` whenever it changes. Meanwhile the operation's caller keeps
//! the message alive (in-progress acks) and the fences renewed.

use std::time::Duration;

use futures::StreamExt;
use kube::api::{DynamicObject, WatchEvent, WatchParams};
use longshore_contract::OperationId;
use longshore_contract::record::{ObjectResult, Outcome};
use longshore_contract::spec::ObjectRef;
use tokio::time::Instant;

use crate::actions::target::{self, Target};
use crate::clusters::Cluster;
use crate::error::{OpError, Verb};
use crate::readiness::{Readiness, readiness};
use crate::status::StatusStore;

/// A pause before reading again after a failed read or watch, so an unreachable API server
/// is not hammered while the deadline runs.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// The longest a single watch request stays open (the server may end it sooner).
const WATCH_SECONDS: u32 = 30;

/// Waits for every changed object in `results` to be ready, up to `timeout` in all. Job
/// results get their outcome (and logs) whether they completed or failed.
pub async fn until_stable(
    cluster: &Cluster,
    status: &StatusStore,
    id: &OperationId,
    results: &mut [ObjectResult],
    timeout: Duration,
) -> Result<(), OpError> {
    let deadline = Instant::now() + timeout;
    for result in results.iter_mut() {
        if matches!(
            result.outcome,
            Outcome::Superseded | Outcome::Deleted | Outcome::NotFound
        ) {
            continue;
        }
        let object = ObjectRef {
            api_version: result.api_version.clone(),
            kind: result.kind.clone(),
            namespace: result.namespace.clone(),
            name: result.name.clone(),
        };
        let target = target::target(cluster, &object, false).await?;
        let waited = one(cluster, status, id, &target, deadline, timeout).await;
        if result.job.is_some()
            && let Some(job) = crate::actions::job::conclude(cluster, &target).await
        {
            result.job = Some(job);
        }
        waited?;
    }
    Ok(())
}

async fn one(
    cluster: &Cluster,
    status: &StatusStore,
    id: &OperationId,
    t: &Target,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), OpError> {
    let mut last = String::from("not read yet");
    let mut current = read(cluster, t).await;
    loop {
        match &current {
            Some(obj) => {
                let value = serde_json::to_value(obj).unwrap_or_default();
                match readiness(&t.object.kind, &value) {
                    Readiness::Ready => {
                        tracing::info!(object = %t.object, "ready");
                        return Ok(());
                    }
                    Readiness::Failed(reason) => {
                        return Err(OpError::Rollout {
                            object: t.object.to_string(),
                            reason,
                        });
                    }
                    Readiness::InProgress(progress) => {
                        if progress != last {
                            tracing::debug!(object = %t.object, %progress, "waiting");
                            status
                                .progress(id, &format!("{}: {progress}", t.object))
                                .await;
                            last = progress;
                        }
                    }
                }
            }
            None => last = "waiting for it to exist".into(),
        }
        let next = tokio::time::timeout_at(deadline, change(cluster, t, current.as_ref()));
        current = match next.await {
            Ok(Some(obj)) => Some(obj),
            // The watch ended or failed: read again (after a pause, if reading fails too).
            Ok(None) => match read(cluster, t).await {
                Some(obj) => Some(obj),
                None => {
                    let _ =
                        tokio::time::timeout_at(deadline, tokio::time::sleep(RETRY_PAUSE)).await;
                    None
                }
            },
            Err(_) => {
                return Err(OpError::WaitTimeout {
                    object: t.object.to_string(),
                    after: timeout,
                    progress: last,
                });
            }
        };
        if Instant::now() >= deadline {
            // One last look, so an object that got ready right at the end counts.
            if let Some(obj) = &current
                && readiness(
                    &t.object.kind,
                    &serde_json::to_value(obj).unwrap_or_default(),
                ) == Readiness::Ready
            {
                return Ok(());
            }
            return Err(OpError::WaitTimeout {
                object: t.object.to_string(),
                after: timeout,
                progress: last,
            });
        }
    }
}

/// The object as it is now; `None` if it is missing or cannot be read.
async fn read(cluster: &Cluster, t: &Target) -> Option<DynamicObject> {
    match target::get(cluster, t, Verb::Get).await {
        Ok(obj) => obj,
        Err(e) => {
            tracing::debug!(object = %t.object, error = %e, "cannot read; will read again");
            None
        }
    }
}

/// The object after its next change, from a watch starting at the version of `seen`;
/// `None` when the watch ends, fails, or the object is deleted.
async fn change(
    cluster: &Cluster,
    t: &Target,
    seen: Option<&DynamicObject>,
) -> Option<DynamicObject> {
    let version = seen
        .and_then(|o| o.metadata.resource_version.clone())
        .unwrap_or_else(|| "0".into());
    let params = WatchParams::default()
        .fields(&format!("metadata.name={}", t.object.name))
        .timeout(WATCH_SECONDS);
    let stream = cluster
        .call(Verb::Watch, &t.object, t.api.watch(&params, &version))
        .await
        .ok()?;
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(WatchEvent::Added(obj) | WatchEvent::Modified(obj)) => return Some(obj),
            Ok(WatchEvent::Bookmark(_)) => continue,
            Ok(WatchEvent::Deleted(_) | WatchEvent::Error(_)) | Err(_) => return None,
        }
    }
    None
}
