//! `GET /v1/objects`: the managed objects as their clusters' watchers last saw them
//! ([`InventoryRecord`]s in `LONGSHORE_INVENTORY`), a page at a time in key order.
//!
//! A record's key is `<cluster>.<group>.<Kind>.<namespace>.<name>`, so cluster, kind and
//! namespace narrow the bucket's own read (a subject filter); health and drift are not in
//! the key and are filtered here, after reading. `after` is the last key of the previous
//! page, so a page is stable while records change: a record written since is on a later
//! page or an earlier one, never twice on the same.
//!
//! Reads follow the token's `policy.clusters`, as the registry's do: naming a cluster the
//! policy does not allow is 403, and without `cluster` what it does not allow is left out.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
    response::{IntoResponse, Response},
};
use longshore_contract::{
    ClusterName,
    cluster::dns_label_problem,
    inventory::{Health, InventoryRecord, NO_NAMESPACE, events_filter},
    spec::FieldError,
};
use serde::{Deserialize, Serialize};

use crate::{
    auth::Caller,
    context::Context,
    error::{Error, Result},
};

/// Records a page holds unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// The most records one page holds.
pub const MAX_LIMIT: usize = 1000;

/// Which cluster, kind and namespace a read is about; each `None` means any. Every part is
/// one token of a key or subject, checked so it cannot widen the filter (`*`, `>`, `.`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scope {
    pub cluster: Option<ClusterName>,
    pub kind: Option<String>,
    /// A namespace, or `_` for cluster-scoped objects (and a cluster's own events).
    pub namespace: Option<String>,
}

impl Scope {
    /// The scope the query names, or every problem with it, each naming its field.
    pub fn parse(
        cluster: Option<&str>,
        kind: Option<&str>,
        namespace: Option<&str>,
        errors: &mut Vec<FieldError>,
    ) -> Self {
        let cluster = cluster.and_then(|c| match ClusterName::new(c) {
            Ok(name) => Some(name),
            Err(e) => {
                errors.push(FieldError::new("cluster", format!("{c:?}: {}", e.reason)));
                None
            }
        });
        let kind = kind.and_then(|k| match kind_problem(k) {
            None => Some(k.to_owned()),
            Some(reason) => {
                errors.push(FieldError::new("kind", format!("{k:?}: {reason}")));
                None
            }
        });
        let namespace = namespace.and_then(|n| match namespace_problem(n) {
            None => Some(n.to_owned()),
            Some(reason) => {
                errors.push(FieldError::new("namespace", format!("{n:?}: {reason}")));
                None
            }
        });
        Self {
            cluster,
            kind,
            namespace,
        }
    }

    /// Refuses (403) a cluster named that the caller may not read.
    pub fn check(&self, caller: &Caller) -> Result<()> {
        match &self.cluster {
            Some(cluster) => caller.check_read_cluster(cluster.as_str()),
            None => Ok(()),
        }
    }

    /// The inventory keys in scope. Five tokens at least, so a cluster's own
    /// [`ClusterWatch`](longshore_contract::inventory::ClusterWatch), kept under the bare
    /// cluster name in the same bucket, never matches.
    pub fn key_filter(&self) -> String {
        format!(
            "{}.*.{}.{}.>",
            self.cluster.as_ref().map_or("*", ClusterName::as_str),
            self.kind.as_deref().unwrap_or("*"),
            self.namespace.as_deref().unwrap_or("*"),
        )
    }

    /// The event subjects in scope.
    pub fn subject_filter(&self) -> String {
        events_filter(
            self.cluster.as_ref().map(ClusterName::as_str),
            self.kind.as_deref(),
            self.namespace.as_deref(),
        )
    }
}

/// Why `kind` cannot be a Kubernetes kind: kinds are identifiers (`Deployment`,
/// `ConfigMap`), and here a key token.
fn kind_problem(kind: &str) -> Option<&'static str> {
    if kind.is_empty() {
        return Some("must not be empty");
    }
    if kind.len() > 63 {
        return Some("must be at most 63 characters");
    }
    let mut chars = kind.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !chars.all(|c| c.is_ascii_alphanumeric())
    {
        return Some("must be a kind: a letter, then letters and digits (e.g. Deployment)");
    }
    None
}

/// Why `namespace` is neither a namespace (a DNS label) nor `_` (cluster-scoped).
fn namespace_problem(namespace: &str) -> Option<&'static str> {
    if namespace == NO_NAMESPACE {
        return None;
    }
    dns_label_problem(namespace)
        .map(|_| "must be a namespace (a DNS label), or _ for cluster-scoped objects")
}

/// `GET /v1/objects?cluster=&namespace=&kind=&health=&drifted=&after=&limit=`. Every
/// value is taken as text and checked here, so a bad one is named (`limit`, not `query`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectsQuery {
    cluster: Option<String>,
    namespace: Option<String>,
    kind: Option<String>,
    health: Option<String>,
    drifted: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// A listing's query, checked.
#[derive(Debug, PartialEq)]
pub struct Listing {
    pub scope: Scope,
    pub health: Option<Health>,
    pub drifted: Option<bool>,
    /// The last key of the previous page (exclusive).
    pub after: Option<String>,
    pub limit: usize,
}

impl Listing {
    fn parse(query: &ObjectsQuery) -> Result<Self> {
        let mut errors = Vec::new();
        let scope = Scope::parse(
            query.cluster.as_deref(),
            query.kind.as_deref(),
            query.namespace.as_deref(),
            &mut errors,
        );
        let health = query
            .health
            .as_deref()
            .and_then(|h| match Health::parse(h) {
                Some(health) => Some(health),
                None => {
                    errors.push(FieldError::new(
                        "health",
                        format!("{h:?}: must be ready, progressing or failed"),
                    ));
                    None
                }
            });
        let drifted = query.drifted.as_deref().and_then(|d| match d {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                errors.push(FieldError::new(
                    "drifted",
                    format!("{d:?}: must be true or false"),
                ));
                None
            }
        });
        let limit = match query.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    errors.push(FieldError::new(
                        "limit",
                        format!("{l:?}: must be a number between 1 and {MAX_LIMIT}"),
                    ));
                    DEFAULT_LIMIT
                }
            },
        };
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        Ok(Self {
            scope,
            health,
            drifted,
            after: query.after.clone(),
            limit,
        })
    }

    fn wants(&self, record: &InventoryRecord) -> bool {
        self.health.is_none_or(|h| record.health == h)
            && self.drifted.is_none_or(|d| record.drifted == d)
    }
}

/// One page of a listing: its records, and the key to pass as `after` for the next, if
/// more match.
#[derive(Debug, PartialEq, Serialize)]
pub struct Page {
    pub items: Vec<InventoryRecord>,
    pub next: Option<String>,
}

/// The page of `records` (key and record, in key order) that `listing` asks for, keeping
/// only the clusters `readable` allows.
pub fn page(
    records: impl IntoIterator<Item = (String, InventoryRecord)>,
    listing: &Listing,
    readable: impl Fn(&str) -> bool,
) -> Page {
    let mut items = Vec::new();
    let mut last = None;
    for (key, record) in records {
        if listing
            .after
            .as_deref()
            .is_some_and(|after| key.as_str() <= after)
        {
            continue;
        }
        // By the key: where a record is kept decides whose it is, whatever it says.
        let cluster = key.split('.').next().unwrap_or_default();
        if !readable(cluster) || !listing.wants(&record) {
            continue;
        }
        if items.len() == listing.limit {
            return Page { items, next: last };
        }
        items.push(record);
        last = Some(key);
    }
    Page { items, next: None }
}

pub async fn list(
    State(ctx): State<Arc<Context>>,
    caller: Caller,
    query: std::result::Result<Query<ObjectsQuery>, QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| Error::field("query", e.body_text()))?;
    let listing = Listing::parse(&query)?;
    listing.scope.check(&caller)?;
    let fleet = ctx.fleet()?;
    // The bucket is read in one pass per page: bounded like any request.
    let within = ctx.config.http.request_timeout;
    let records = tokio::time::timeout(within, fleet.inventory.scan(&listing.scope.key_filter()))
        .await
        .map_err(|_| Error::Timeout(within))??;
    let page = page(
        records.into_iter().map(|(key, v)| (key, v.value)),
        &listing,
        |cluster| caller.may_read_cluster(cluster),
    );
    Ok(Json(page).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as a watcher writes it (from JSON, so fields the contract adds later with
    /// defaults need no change here).
    fn record(
        cluster: &str,
        kind: &str,
        name: &str,
        health: Health,
        drifted: bool,
    ) -> InventoryRecord {
        let api_version = if kind == "Deployment" {
            "apps/v1"
        } else {
            "v1"
        };
        serde_json::from_value(serde_json::json!({
            "cluster": cluster, "apiVersion": api_version, "kind": kind,
            "namespace": "default", "name": name, "uid": format!("uid-{name}"),
            "resourceVersion": "1", "health": health.as_str(), "drifted": drifted,
            "watcher": "w1", "epoch": 1, "observedAt": "2026-12-01T10:00:00Z",
        }))
        .unwrap()
    }

    fn keyed(records: &[InventoryRecord]) -> Vec<(String, InventoryRecord)> {
        let mut keyed: Vec<_> = records.iter().map(|r| (r.key(), r.clone())).collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        keyed
    }

    fn listing(query: &[(&str, &str)]) -> Result<Listing> {
        let text = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let query: ObjectsQuery = serde_json::from_value(serde_json::Value::Object(
            query
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                .collect(),
        ))
        .unwrap_or_else(|e| panic!("{text}: {e}"));
        Listing::parse(&query)
    }

    fn names(page: &Page) -> Vec<&str> {
        page.items.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn the_key_filter_keeps_one_token_per_part_and_never_matches_a_cluster_watch() {
        assert_eq!(Scope::default().key_filter(), "*.*.*.*.>");
        let l = listing(&[("cluster", "prod"), ("kind", "Deployment")]).unwrap();
        assert_eq!(l.scope.key_filter(), "prod.*.Deployment.*.>");
        let l = listing(&[("namespace", "_")]).unwrap();
        assert_eq!(l.scope.key_filter(), "*.*.*._.>");
        assert_eq!(
            l.scope.subject_filter(),
            "longshore.events.*.*._",
            "the same scope selects events"
        );
    }

    #[test]
    fn pages_follow_the_key_and_say_where_to_go_on() {
        let records = keyed(&[
            record("prod", "ConfigMap", "a", Health::Ready, false),
            record("prod", "ConfigMap", "b", Health::Ready, false),
            record("prod", "ConfigMap", "c", Health::Ready, false),
        ]);
        let l = listing(&[("limit", "2")]).unwrap();
        let first = page(records.clone(), &l, |_| true);
        assert_eq!(names(&first), ["a", "b"]);
        assert_eq!(first.next.as_deref(), Some("prod.core.ConfigMap.default.b"));
        let l = listing(&[("limit", "2"), ("after", "prod.core.ConfigMap.default.b")]).unwrap();
        let second = page(records.clone(), &l, |_| true);
        assert_eq!(names(&second), ["c"]);
        assert_eq!(second.next, None, "nothing after the last page");
        // A page that ends exactly at the last record says there is no more.
        let l = listing(&[("limit", "3")]).unwrap();
        assert_eq!(page(records, &l, |_| true).next, None);
    }

    #[test]
    fn health_drift_and_policy_filter_after_reading() {
        let records = keyed(&[
            record("prod", "Deployment", "web", Health::Failed, true),
            record("prod", "Deployment", "api", Health::Ready, false),
            record("staging", "Deployment", "web", Health::Failed, false),
        ]);
        let l = listing(&[("health", "failed")]).unwrap();
        let p = page(records.clone(), &l, |_| true);
        assert_eq!(p.items.len(), 2);
        let l = listing(&[("drifted", "true")]).unwrap();
        assert_eq!(names(&page(records.clone(), &l, |_| true)), ["web"]);
        let l = listing(&[("drifted", "false"), ("health", "failed")]).unwrap();
        let p = page(records.clone(), &l, |_| true);
        assert_eq!(p.items[0].cluster.as_str(), "staging");
        let l = listing(&[]).unwrap();
        let p = page(records, &l, |c| c == "staging");
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.items[0].cluster.as_str(), "staging");
    }

    #[test]
    fn a_filtered_page_is_full_before_it_says_there_is_more() {
        let records = keyed(&[
            record("prod", "ConfigMap", "a", Health::Ready, false),
            record("prod", "ConfigMap", "b", Health::Failed, false),
            record("prod", "ConfigMap", "c", Health::Ready, false),
            record("prod", "ConfigMap", "d", Health::Failed, false),
        ]);
        let l = listing(&[("health", "failed"), ("limit", "1")]).unwrap();
        let p = page(records.clone(), &l, |_| true);
        assert_eq!(names(&p), ["b"]);
        let l = listing(&[
            ("health", "failed"),
            ("limit", "1"),
            ("after", p.next.as_deref().unwrap()),
        ])
        .unwrap();
        let p = page(records, &l, |_| true);
        assert_eq!(names(&p), ["d"]);
        assert_eq!(p.next, None);
    }

    #[test]
    fn bad_values_are_named() {
        let fields = |query: &[(&str, &str)]| match listing(query) {
            Err(Error::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect::<Vec<_>>(),
            other => panic!("{query:?}: expected a refusal, got {other:?}"),
        };
        assert_eq!(fields(&[("health", "healthy")]), ["health"]);
        assert_eq!(fields(&[("drifted", "yes")]), ["drifted"]);
        assert_eq!(fields(&[("limit", "0")]), ["limit"]);
        assert_eq!(fields(&[("limit", "1001")]), ["limit"]);
        assert_eq!(fields(&[("limit", "ten")]), ["limit"]);
        assert_eq!(fields(&[("cluster", "Prod")]), ["cluster"]);
        assert_eq!(fields(&[("cluster", "prod.>")]), ["cluster"]);
        assert_eq!(fields(&[("kind", "*")]), ["kind"]);
        assert_eq!(fields(&[("kind", "Deployment.apps")]), ["kind"]);
        assert_eq!(fields(&[("namespace", "a.b")]), ["namespace"]);
        assert_eq!(
            fields(&[("kind", ">"), ("namespace", "*"), ("limit", "x")]),
            ["kind", "namespace", "limit"],
            "every problem at once"
        );
        assert!(listing(&[("namespace", "kube-system"), ("kind", "ConfigMap")]).is_ok());
    }
}
