//! `longshore objects`: the managed objects as the clusters' watchers see them
//! (`GET /v1/objects`, see docs/inventory.md), every page followed: a table for people, a
//! JSON array of the records with `-o json`.

use std::process::ExitCode;

use clap::Args;
use longshore_contract::ClusterName;
use serde_json::Value;

use crate::{
    Format,
    client::{Client, Cursor, Failure},
    output::{self, str_of},
};

#[derive(Args)]
pub struct Objects {
    /// Only this cluster's objects.
    #[arg(long)]
    cluster: Option<String>,
    /// Only objects in this namespace (`_`: cluster-scoped ones).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Only objects of this kind, e.g. Deployment.
    #[arg(long)]
    kind: Option<String>,
    /// Only objects in this health.
    #[arg(long, value_parser = ["ready", "progressing", "failed"])]
    health: Option<String>,
    /// Only objects another field manager changed since longshore applied them.
    #[arg(long)]
    drifted: bool,
    /// List at most this many.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// How many objects each request to the dispatcher asks for.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1000))]
    chunk_size: u64,
}

pub async fn run(client: &Client, format: Format, args: Objects) -> ExitCode {
    match exec(client, format, args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => output::failure(&f),
    }
}

async fn exec(client: &Client, format: Format, args: Objects) -> Result<(), Failure> {
    if let Some(cluster) = &args.cluster {
        ClusterName::new(cluster.as_str()).map_err(|e| {
            Failure::Usage(format!("{cluster:?} is not a cluster name: {}", e.reason))
        })?;
    }
    let mut query = Vec::new();
    for (param, value) in [
        ("cluster", &args.cluster),
        ("namespace", &args.namespace),
        ("kind", &args.kind),
        ("health", &args.health),
    ] {
        if let Some(value) = value {
            query.push((param, value.clone()));
        }
    }
    if args.drifted {
        query.push(("drifted", "true".to_owned()));
    }
    let cursor = Cursor {
        param: "after",
        field: "next",
    };
    let (items, more) = client
        .pages("/v1/objects", &query, cursor, args.limit, args.chunk_size)
        .await?;
    match format {
        Format::Json => println!("{}", Value::Array(items)),
        Format::Human => {
            print!("{}", table(&items));
            if items.is_empty() {
                eprintln!("No objects found.");
            }
            if more && let Some(limit) = args.limit {
                eprintln!("(--limit {limit} reached: more objects match)");
            }
        }
    }
    Ok(())
}

/// `namespace/name`, or the name alone for a cluster-scoped object.
fn place(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// The objects as a table, then a line for each that failed or drifted, saying how, so a
/// problem stands out however long the list.
fn table(items: &[Value]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let or_none = |v: &Value| v.as_str().unwrap_or("<none>").to_owned();
    let rows = items.iter().map(|item| {
        vec![
            str_of(item, "cluster").to_owned(),
            str_of(item, "kind").to_owned(),
            or_none(&item["namespace"]),
            str_of(item, "name").to_owned(),
            str_of(item, "health").to_owned(),
            item["drifted"].as_bool().unwrap_or_default().to_string(),
            or_none(&item["lastOperation"]),
        ]
    });
    let header = [
        "CLUSTER",
        "KIND",
        "NAMESPACE",
        "NAME",
        "HEALTH",
        "DRIFTED",
        "LAST-OPERATION",
    ];
    let mut out = output::columns(&header, rows);
    let mut notes = Vec::new();
    for item in items {
        let what = format!(
            "{} {} {}",
            str_of(item, "cluster"),
            str_of(item, "kind"),
            place(item["namespace"].as_str(), str_of(item, "name"))
        );
        if item["health"] == "failed" {
            let reason = item["healthReason"].as_str().unwrap_or("no reason given");
            notes.push(format!("{what} failed: {reason}"));
        }
        if item["drifted"] == true {
            notes.push(format!("{what} drifted: {}", drift(&item["drift"])));
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            out.push_str(&note);
            out.push('\n');
        }
    }
    out
}

/// `.spec.replicas by kubectl-patch, ...`: each field and who owns it now.
pub fn drift(drift: &Value) -> String {
    let fields: Vec<String> = drift
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| format!("{} by {}", str_of(d, "path"), str_of(d, "manager")))
        .collect();
    if fields.is_empty() {
        "fields not named".into()
    } else {
        fields.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_table_lines_up_and_names_what_failed_or_drifted() {
        let items = [
            json!({"cluster": "prod", "kind": "Deployment", "namespace": "shop", "name": "web",
                "health": "failed", "healthReason": "ProgressDeadlineExceeded", "drifted": true,
                "drift": [{"path": ".spec.replicas", "manager": "kubectl-patch"}],
                "lastOperation": "op-abc"}),
            json!({"cluster": "prod", "kind": "Namespace", "name": "shop",
                "health": "ready", "drifted": false}),
        ];
        assert_eq!(
            table(&items),
            "CLUSTER   KIND         NAMESPACE   NAME   HEALTH   DRIFTED   LAST-OPERATION\n\
             prod      Deployment   shop        web    failed   true      op-abc\n\
             prod      Namespace    <none>      shop   ready    false     <none>\n\
             \n\
             prod Deployment shop/web failed: ProgressDeadlineExceeded\n\
             prod Deployment shop/web drifted: .spec.replicas by kubectl-patch\n"
        );
        assert_eq!(table(&[]), "");
    }
}
