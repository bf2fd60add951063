//! `/v1/clusters`: the cluster registry over HTTP. Reads answer from the replica's live
//! copy of the registry; writes go to the bucket with compare-and-set, and every replica
//! sees them within moments.
//!
//! - `GET /v1/clusters?selector=env=prod,region in (eu,us)&limit=100&continue=<name>`:
//!   the clusters the caller's policy allows, with their status, in name order;
//! - `GET /v1/clusters/{name}`: one, declared and observed, and who watches it;
//! - `PUT /v1/clusters/{name}` `{labels, pool, credentials}`: registers it or replaces
//!   what is declared (201 or 200);
//! - `PATCH /v1/clusters/{name}` `{labels: {key: value or null}}`: changes labels only;
//! - `DELETE /v1/clusters/{name}[?force=true]`: 409 while operations are queued for it,
//!   unless forced, which ends them `failed`.
//!
//! Writes need a policy with `manage_clusters` (or the open API).

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use longshore_contract::{
    ClusterName, PoolName,
    labels::{Labels, Selector, check_labels},
    registry::{ClusterEntry, Credentials, Status, fleet::Fleet},
    spec::FieldError,
    store::{Change, Modified},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    auth::Caller,
    context::Context,
    error::{Error, Result},
    intake::JsonBody,
};

/// The most clusters one page lists.
pub const MAX_LIMIT: usize = 1000;

/// A cluster as the API shows it: what is declared, and its status.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    #[serde(flatten)]
    pub entry: ClusterEntry,
    pub status: Status,
}

fn view(fleet: &Fleet, entry: ClusterEntry) -> ClusterView {
    let status = fleet.status(&entry);
    ClusterView { entry, status }
}

fn name_of(name: &str) -> Result<ClusterName> {
    ClusterName::new(name).map_err(|e| Error::field("name", e.reason))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    selector: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "continue")]
    after: Option<String>,
}

/// How long a write through the API waits for this replica's copy of the registry to show
/// it, so a submission right after a registration on the same replica is accepted.
const SEEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn list(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    query: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| Error::field("query", e.body_text()))?;
    let selector = match query.selector.as_deref() {
        None => Selector::everything(),
        Some(text) => Selector::parse(text).map_err(|e| Error::field("selector", e.to_string()))?,
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::field(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let fleet = ctx.fleet()?;
    let mut items = Vec::new();
    let mut more = false;
    fleet
        .cluster_view
        .scan(query.after.as_deref(), |name, entry| {
            if !caller.may_read_cluster(name) || !selector.matches(&entry.labels) {
                return true;
            }
            if items.len() == limit {
                more = true;
                return false;
            }
            items.push(entry.clone());
            true
        });
    let next = more
        .then(|| items.last().map(|e| e.name.to_string()))
        .flatten();
    let items: Vec<ClusterView> = items.into_iter().map(|e| view(fleet, e)).collect();
    Ok(Json(json!({"items": items, "continue": next})).into_response())
}

pub async fn get(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response> {
    let name = name_of(&name)?;
    caller.check_read_cluster(name.as_str())?;
    let fleet = ctx.fleet()?;
    let entry = fleet
        .entry(&name)
        .ok_or_else(|| Error::NotFound(format!("cluster {name}")))?;
    let watch = crate::watchers::watch_of(fleet, &name).await?;
    Ok(Json(Detail {
        view: view(fleet, ClusterEntry::clone(&entry)),
        watch,
    })
    .into_response())
}

/// One cluster as `GET /v1/clusters/{name}` shows it: as listed, and who watches it
/// (`null`: nobody holds its watch lease).
#[derive(Serialize)]
struct Detail {
    #[serde(flatten)]
    view: ClusterView,
    watch: Option<crate::watchers::WatchView>,
}

/// The body of `PUT /v1/clusters/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Declared {
    #[serde(default)]
    labels: Labels,
    pool: Option<String>,
    credentials: Option<Credentials>,
}

pub async fn put(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let name = name_of(&name)?;
    caller.check_manage_cluster(name.as_str())?;
    let declared: Declared = crate::request::read_object(&body)?;
    let fleet = ctx.fleet()?;
    let mut errors = check_labels(&declared.labels);
    let pool = match declared.pool.as_deref() {
        None => Some(PoolName::default_pool()),
        Some(p) => match PoolName::new(p) {
            Ok(pool) => Some(pool),
            Err(e) => {
                errors.push(FieldError::new("pool", format!("{p:?} {}", e.reason)));
                None
            }
        },
    };
    let credentials = declared.credentials.unwrap_or(Credentials::Kubeconfig {
        context: name.to_string(),
    });
    if let Some(pool) = &pool
        && let Some(problem) = pool_problem(fleet, pool, &credentials)
    {
        errors.push(problem);
    }
    let Some(pool) = pool.filter(|_| errors.is_empty()) else {
        return Err(Error::Invalid(errors));
    };
    let now = jiff::Timestamp::now();
    let mut created = false;
    let before = fleet.entry(&name);
    let written = fleet
        .clusters
        .modify(name.as_str(), None, |current| {
            let entry = match current {
                Some(current) => {
                    if current.labels == declared.labels
                        && current.pool == pool
                        && current.credentials == credentials
                    {
                        return Ok::<_, Error>(Change::Keep);
                    }
                    ClusterEntry {
                        labels: declared.labels.clone(),
                        pool: pool.clone(),
                        credentials: credentials.clone(),
                        updated_at: now,
                        updated_by: caller.source.clone(),
                        ..current.clone()
                    }
                }
                None => {
                    created = true;
                    ClusterEntry {
                        name: name.clone(),
                        labels: declared.labels.clone(),
                        pool: pool.clone(),
                        credentials: credentials.clone(),
                        registered_at: now,
                        registered_by: caller.source.clone(),
                        updated_at: now,
                        updated_by: caller.source.clone(),
                    }
                }
            };
            Ok(Change::Write(entry))
        })
        .await?;
    let entry = match written {
        Modified::Written(v) | Modified::Kept(Some(v)) => v.value,
        Modified::Kept(None) | Modified::Deleted => {
            return Err(Error::Unavailable(format!(
                "cluster {name} was not written"
            )));
        }
    };
    tracing::info!(cluster = %name, pool = %entry.pool, by = %caller.source, created, "cluster registered");
    fleet
        .until_seen(name.as_str(), Some(&entry), SEEN_WITHIN)
        .await;
    if let Some(from) = before.map(|b| b.pool.clone()).filter(|p| *p != entry.pool)
        && fleet.members_of(&from).is_empty()
    {
        // Nobody runs the old pool to forward what is queued there: move it now.
        let moved = crate::fleet::move_queued(&ctx, &name, &from, &entry.pool).await?;
        if moved > 0 {
            tracing::info!(cluster = %name, %from, to = %entry.pool, moved, "queued operations moved with the cluster");
        }
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(fleet, entry))).into_response())
}

/// Why `pool` cannot serve a cluster with `credentials`: it is unknown (no replica has
/// ever announced it), or it has announced its credentials without this one.
fn pool_problem(fleet: &Fleet, pool: &PoolName, credentials: &Credentials) -> Option<FieldError> {
    match fleet.pool_view.get(pool.as_str()) {
        None => {
            let mut known = Vec::new();
            fleet.pool_view.scan(None, |name, _| {
                known.push(name.to_owned());
                known.len() < 20
            });
            Some(FieldError::new(
                "pool",
                format!(
                    "unknown pool \"{pool}\": no replica of it has started yet (known pools: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ))
        }
        Some(announced) if !announced.has(credentials) => Some(FieldError::new(
            "credentials",
            format!(
                "pool {pool} has no credentials {} (it has {} others; add the context to the kubeconfig files its workers mount)",
                credentials.reference(),
                announced.references.len()
            ),
        )),
        Some(_) => None,
    }
}

/// The body of `PATCH /v1/clusters/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Relabel {
    labels: std::collections::BTreeMap<String, Option<String>>,
}

pub async fn patch(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let name = name_of(&name)?;
    caller.check_manage_cluster(name.as_str())?;
    let relabel: Relabel = crate::request::read_object(&body)?;
    let set: Labels = relabel
        .labels
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
        .collect();
    let mut errors = check_labels(&set);
    for key in relabel.labels.keys() {
        if let Some(reason) = longshore_contract::labels::key_problem(key)
            && !set.contains_key(key)
        {
            errors.push(FieldError::new("labels", format!("{key:?}: {reason}")));
        }
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let fleet = ctx.fleet()?;
    let now = jiff::Timestamp::now();
    let written = fleet
        .clusters
        .modify(name.as_str(), None, |current| {
            let Some(current) = current else {
                return Err(Error::NotFound(format!("cluster {name}")));
            };
            let mut entry = current.clone();
            for (key, value) in &relabel.labels {
                match value {
                    Some(v) => entry.labels.insert(key.clone(), v.clone()),
                    None => entry.labels.remove(key),
                };
            }
            if entry.labels == current.labels {
                return Ok(Change::Keep);
            }
            entry.updated_at = now;
            entry.updated_by = caller.source.clone();
            Ok(Change::Write(entry))
        })
        .await?;
    let entry = match written {
        Modified::Written(v) | Modified::Kept(Some(v)) => v.value,
        Modified::Kept(None) | Modified::Deleted => {
            return Err(Error::NotFound(format!("cluster {name}")));
        }
    };
    fleet
        .until_seen(name.as_str(), Some(&entry), SEEN_WITHIN)
        .await;
    Ok(Json(view(fleet, entry)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

pub async fn remove(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    Path(name): Path<String>,
    query: std::result::Result<Query<RemoveQuery>, QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| Error::field("query", e.body_text()))?;
    let name = name_of(&name)?;
    caller.check_manage_cluster(name.as_str())?;
    let fleet = ctx.fleet()?;
    let current = fleet
        .clusters
        .read(name.as_str())
        .await?
        .ok_or_else(|| Error::NotFound(format!("cluster {name}")))?;
    let queued = crate::fleet::queued(&ctx, &name).await?;
    if queued > 0 && !query.force {
        return Err(Error::Conflict(format!(
            "{queued} operation(s) are queued for cluster {name}: wait for them, or remove it with ?force=true to end them failed"
        )));
    }
    // By revision: a change made since it was read is not removed unseen.
    fleet
        .clusters
        .delete_if(name.as_str(), current.revision)
        .await
        .map_err(|e| match e.kind() {
            longshore_contract::store::StoreErrorKind::Changed => Error::Conflict(format!(
                "cluster {name} changed while being removed; read it and try again"
            )),
            _ => Error::from(e),
        })?;
    let ended = if queued > 0 {
        crate::fleet::end_queued(&ctx, &name, &caller.source).await?
    } else {
        0
    };
    tracing::info!(cluster = %name, by = %caller.source, ended, "cluster removed");
    Ok(Json(json!({"removed": name, "endedOperations": ended})).into_response())
}
