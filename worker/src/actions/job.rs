//! `run-job`: creates the Job of the operation's manifest under a name derived from the
//! operation id ([`longshore_contract::spec::job_name`]), so a redelivery finds the Job its
//! first delivery created instead of starting a second one. With `options.wait`, the
//! operation waits for the Job to complete or fail ([`crate::wait`]); the record then
//! carries the Job's outcome and the end of its pods' logs, when the cluster serves them.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, LogParams};
use longshore_contract::record::{JobResult, ObjectResult};
use serde_json::{Value, json};

use super::target::{Target, get};
use super::{Act, create};
use crate::clusters::Cluster;
use crate::error::{OpError, Verb};

/// Lines of each pod's log kept in the record.
const LOG_LINES: i64 = 50;
/// Bytes of logs kept in the record, at most.
const LOG_BYTES: usize = 16 * 1024;

pub async fn run(a: &Act<'_>) -> Result<ObjectResult, OpError> {
    let mut body = a.body();
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("generateName");
        meta.insert("name".into(), json!(a.target.object.name));
    }
    let job = a.typed(body)?;
    let mut out = create::create(a, &job, &a.post_params()).await?;
    out.job = Some(JobResult {
        outcome: if a.dry_run() {
            "not started (dry run)".into()
        } else {
            "running".into()
        },
        message: None,
        logs: None,
    });
    Ok(out)
}

/// The Job's outcome as it stands, with its logs when the cluster serves them.
pub async fn conclude(cluster: &Cluster, t: &Target) -> Option<JobResult> {
    let job = get(cluster, t, Verb::Get).await.ok()??;
    let (outcome, message) = outcome(&job);
    Some(JobResult {
        outcome,
        message,
        logs: logs(cluster, t).await,
    })
}

fn outcome(job: &DynamicObject) -> (String, Option<String>) {
    let conditions = job
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (kind, outcome) in [("Complete", "complete"), ("Failed", "failed")] {
        if let Some(c) = conditions
            .iter()
            .find(|c| c["type"] == kind && c["status"] == "True")
        {
            let message = [c.get("reason"), c.get("message")]
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(": ");
            return (outcome.into(), Some(message).filter(|m| !m.is_empty()));
        }
    }
    ("running".into(), None)
}

/// The end of the logs of the Job's pods (found by their `job-name` label), or `None`
/// when there are none or the cluster does not serve them.
async fn logs(cluster: &Cluster, t: &Target) -> Option<String> {
    let namespace = t.object.namespace.as_deref().unwrap_or("default");
    let pods: Api<Pod> = Api::namespaced(cluster.client().ok()?, namespace);
    let selector = format!("job-name={}", t.object.name);
    let list = cluster
        .call(
            Verb::List,
            &t.object,
            pods.list(&ListParams::default().labels(&selector)),
        )
        .await
        .ok()?;
    let mut out = String::new();
    for pod in list.items {
        let name = pod.metadata.name.unwrap_or_default();
        let params = LogParams {
            tail_lines: Some(LOG_LINES),
            ..Default::default()
        };
        if let Ok(text) = cluster
            .call(Verb::Get, &t.object, pods.logs(&name, &params))
            .await
        {
            out.push_str(&format!("== {name}\n{text}"));
        }
    }
    if out.len() > LOG_BYTES {
        let mut cut = out.len() - LOG_BYTES;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = out[cut..].to_owned();
    }
    Some(out).filter(|s| !s.is_empty())
}
