//! Waiting, inside an operation that creates a CustomResourceDefinition, until the CRD is
//! Established and its kind served, before applying custom resources of that kind. A real
//! API server establishes a new CRD and updates discovery a little after the write; applying
//! at once is the classic failure of multi-document applies ("no matches for kind").
//!
//! The wait is bounded (`clusters.crd_established_timeout`); while it lasts the status
//! record's `progress` says what it waits for; past the bound the operation fails with the
//! CRD's condition as the reason.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use longshore_contract::spec::ObjectRef;
use tokio::time::Instant;

use crate::clusters::Cluster;
use crate::error::OpError;

/// How often the CRD and discovery are read again while waiting.
const POLL: Duration = Duration::from_millis(200);

/// A CustomResourceDefinition applied earlier in the operation: its name and the kind it
/// defines.
#[derive(Clone, Debug)]
pub struct Defined {
    pub crd: String,
    pub group: String,
    pub kind: String,
}

impl Defined {
    /// What `manifest` defines, if it is a CRD.
    pub fn of(manifest: &serde_json::Value) -> Option<Self> {
        if manifest.get("kind")? != "CustomResourceDefinition" {
            return None;
        }
        Some(Defined {
            crd: manifest.pointer("/metadata/name")?.as_str()?.to_owned(),
            group: manifest.pointer("/spec/group")?.as_str()?.to_owned(),
            kind: manifest.pointer("/spec/names/kind")?.as_str()?.to_owned(),
        })
    }

    /// Whether `object` is of the kind this CRD defines.
    pub fn defines(&self, object: &ObjectRef) -> bool {
        let group = object.api_version.rsplit_once('/').map(|(g, _)| g);
        group == Some(self.group.as_str()) && object.kind == self.kind
    }
}

/// The CRD's `Established` condition as text (`True`, or `False (Installing: ...)`), or why
/// it could not be read.
async fn condition(cluster: &Cluster, crd: &str) -> (bool, String) {
    let api: Api<CustomResourceDefinition> = match cluster.client() {
        Ok(client) => Api::all(client),
        Err(e) => return (false, e.to_string()),
    };
    match api.get_opt(crd).await {
        Ok(Some(found)) => {
            let established = found
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Established");
            match established {
                Some(c) if c.status == "True" => (true, "Established".into()),
                Some(c) => (
                    false,
                    format!(
                        "Established: {} ({}: {})",
                        c.status,
                        c.reason.unwrap_or_default(),
                        c.message.unwrap_or_default()
                    ),
                ),
                None => (false, "no Established condition yet".into()),
            }
        }
        Ok(None) => (false, "not found".into()),
        Err(e) => (false, format!("cannot be read: {e}")),
    }
}

/// Waits until `defined`'s CRD is Established and `object`'s kind resolves, up to `within`.
/// `report` is told once what is waited for, when the wait is not over at the first look.
pub async fn until_served<F, Fut>(
    cluster: &Cluster,
    defined: &Defined,
    object: &ObjectRef,
    within: Duration,
    report: F,
) -> Result<(), OpError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let deadline = started + within;
    let mut report = Some(report);
    loop {
        let (established, state) = condition(cluster, &defined.crd).await;
        if established {
            cluster.forget(object).await;
            if cluster.resolve(object).await.is_ok() {
                if report.is_none() {
                    tracing::info!(crd = %defined.crd, waited = ?started.elapsed(), "CustomResourceDefinition established");
                }
                return Ok(());
            }
        }
        let now = Instant::now();
        if now >= deadline {
            let state = if established {
                format!("Established, but {} is not in discovery yet", defined.kind)
            } else {
                state
            };
            return Err(OpError::NotEstablished {
                crd: defined.crd.clone(),
                after: within,
                state,
            });
        }
        if let Some(report) = report.take() {
            tracing::info!(crd = %defined.crd, %state, "waiting for the CustomResourceDefinition to be established");
            report(format!(
                "waiting for CustomResourceDefinition {} to be Established (up to {}s) before applying its {} objects",
                defined.crd,
                within.as_secs(),
                defined.kind
            ))
            .await;
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}
