//! `longshore clusters`: the cluster registry (`/v1/clusters`, see docs/clusters.md) from a
//! terminal, kubectl-style: a table for `list`, `key: value` lines for `get`,
//! `cluster/NAME registered` for a change; `-o json` prints what the API answered.
//!
//! Names and labels are checked here with the contract's rules, so a typo is a usage error
//! (exit 2) before anything is sent; everything else (an unknown pool, a credential the
//! pool does not have, operations still queued) is the dispatcher's to refuse (exit 1).

use std::process::ExitCode;

use clap::Subcommand;
use longshore_contract::{
    ClusterName,
    labels::{key_problem, value_problem},
};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::{
    Format,
    client::{Client, Cursor, Failure, problem},
    output::{self, str_of},
};

#[derive(Subcommand)]
pub enum Command {
    /// List the registered clusters with their status (all of them: pages are followed).
    List {
        /// Only clusters whose labels match this Kubernetes label selector, e.g.
        /// `env=prod,region in (eu,us)`.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// List at most this many.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// How many clusters each request to the dispatcher asks for.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1000))]
        chunk_size: u64,
    },
    /// Show one cluster: what is declared about it and what its pool observes.
    Get { name: String },
    /// Register a cluster, or replace what is declared about it: labels not given are
    /// dropped (`label` changes some and keeps the rest).
    Register {
        name: String,
        /// The worker pool that serves it [default: workers].
        #[arg(long)]
        pool: Option<String>,
        /// The kubeconfig context its pool's workers use for it [default: the cluster's
        /// name].
        #[arg(long, conflicts_with = "in_cluster")]
        context: Option<String>,
        /// Its pool runs inside the cluster and uses its own service account.
        #[arg(long)]
        in_cluster: bool,
        /// A label; repeat for more.
        #[arg(short = 'l', long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Set (KEY=VALUE) or remove (KEY-) labels, keeping the others.
    Label {
        name: String,
        #[arg(required = true, value_name = "KEY=VALUE|KEY-", value_parser = parse_change)]
        changes: Vec<(String, Option<String>)>,
    },
    /// Remove a cluster. Refused while operations are queued for it, unless --force.
    Remove {
        name: String,
        /// Remove it even so: the operations still queued for it end failed
        /// (class unknown_cluster).
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(client: &Client, format: Format, command: Command) -> ExitCode {
    match exec(client, format, command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => output::failure(&f),
    }
}

async fn exec(client: &Client, format: Format, command: Command) -> Result<(), Failure> {
    match command {
        Command::List {
            selector,
            limit,
            chunk_size,
        } => {
            let (items, more) = list(client, selector.as_deref(), limit, chunk_size).await?;
            match format {
                Format::Json => println!("{}", Value::Array(items)),
                Format::Human => {
                    print!("{}", table(&items, jiff::Timestamp::now()));
                    if items.is_empty() {
                        match &selector {
                            Some(s) => eprintln!("No clusters found matching {s:?}."),
                            None => eprintln!("No clusters found."),
                        }
                    }
                    if more && let Some(limit) = limit {
                        eprintln!("(--limit {limit} reached: more clusters match)");
                    }
                }
            }
        }
        Command::Get { name } => {
            let (_, body) = success(client.call(Method::GET, &path(&name)?, &[], None).await?)?;
            match format {
                Format::Json => println!("{body}"),
                Format::Human => print!("{}", describe(&body, jiff::Timestamp::now())),
            }
        }
        Command::Register {
            name,
            pool,
            context,
            in_cluster,
            labels,
        } => {
            let path = path(&name)?;
            let mut body = json!({"labels": unique(labels)?});
            if let Some(pool) = pool {
                body["pool"] = json!(pool);
            }
            if in_cluster {
                body["credentials"] = json!({"kind": "in-cluster"});
            } else if let Some(context) = context {
                body["credentials"] = json!({"kind": "kubeconfig", "context": context});
            }
            let (status, answer) =
                success(client.call(Method::PUT, &path, &[], Some(&body)).await?)?;
            let verb = if status == StatusCode::CREATED {
                "registered"
            } else {
                "configured"
            };
            changed(format, &name, verb, &answer);
        }
        Command::Label { name, changes } => {
            let path = path(&name)?;
            let body = json!({"labels": unique(changes)?});
            let (_, answer) = success(client.call(Method::PATCH, &path, &[], Some(&body)).await?)?;
            changed(format, &name, "labeled", &answer);
        }
        Command::Remove { name, force } => {
            let path = path(&name)?;
            let query = if force {
                vec![("force", "true".to_owned())]
            } else {
                Vec::new()
            };
            let (status, answer) = client.call(Method::DELETE, &path, &query, None).await?;
            if status == StatusCode::CONFLICT && !force {
                return Err(Failure::Request(format!(
                    "{}\n  (`longshore clusters remove {name} --force` removes it anyway; what is queued then ends failed)",
                    problem(status, &answer)
                )));
            }
            let (_, answer) = success((status, answer))?;
            match format {
                Format::Json => println!("{answer}"),
                Format::Human if force => {
                    let ended = answer["endedOperations"].as_u64().unwrap_or_default();
                    println!(
                        "cluster/{name} removed ({} ended failed)",
                        plural(ended, "queued operation")
                    );
                }
                Format::Human => println!("cluster/{name} removed"),
            }
        }
    }
    Ok(())
}

/// Every cluster the selector matches, or the first `limit` of them, a page of
/// `chunk_size` at a time; and whether more matched than `limit` allowed.
async fn list(
    client: &Client,
    selector: Option<&str>,
    limit: Option<u64>,
    chunk_size: u64,
) -> Result<(Vec<Value>, bool), Failure> {
    let query: Vec<(&str, String)> = selector
        .map(|s| ("selector", s.to_owned()))
        .into_iter()
        .collect();
    let cursor = Cursor {
        param: "continue",
        field: "continue",
    };
    client
        .pages("/v1/clusters", &query, cursor, limit, chunk_size)
        .await
}

/// The path of one cluster, once its name is known to be one (so it is safe in a URL).
fn path(name: &str) -> Result<String, Failure> {
    let name = ClusterName::new(name)
        .map_err(|e| Failure::Usage(format!("{name:?} is not a cluster name: {}", e.reason)))?;
    Ok(format!("/v1/clusters/{name}"))
}

/// The answer if it is a success, else the dispatcher's problem as a failure.
fn success((status, body): (StatusCode, Value)) -> Result<(StatusCode, Value), Failure> {
    if status.is_success() {
        Ok((status, body))
    } else {
        Err(Failure::Request(problem(status, &body)))
    }
}

/// Labels as a JSON object; a key given twice is a usage error.
fn unique<V: serde::Serialize>(pairs: Vec<(String, V)>) -> Result<Map<String, Value>, Failure> {
    let mut out = Map::new();
    for (key, value) in pairs {
        if out.contains_key(&key) {
            return Err(Failure::Usage(format!("label {key:?} is given twice")));
        }
        out.insert(key, json!(value));
    }
    Ok(out)
}

fn changed(format: Format, name: &str, verb: &str, answer: &Value) {
    match format {
        Format::Json => println!("{answer}"),
        Format::Human => println!("cluster/{name} {verb}"),
    }
}

/// `-l KEY=VALUE`, with the contract's label syntax.
fn parse_label(arg: &str) -> Result<(String, String), String> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err("expected KEY=VALUE, e.g. env=prod".into());
    };
    check_key(key)?;
    if let Some(reason) = value_problem(value) {
        return Err(format!("{value:?} is not a valid label value: {reason}"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `KEY=VALUE` sets a label, `KEY-` removes it.
fn parse_change(arg: &str) -> Result<(String, Option<String>), String> {
    if arg.contains('=') {
        let (key, value) = parse_label(arg)?;
        return Ok((key, Some(value)));
    }
    let Some(key) = arg.strip_suffix('-') else {
        return Err("expected KEY=VALUE to set a label or KEY- to remove one".into());
    };
    check_key(key)?;
    Ok((key.to_owned(), None))
}

fn check_key(key: &str) -> Result<(), String> {
    match key_problem(key) {
        Some(reason) => Err(format!("{key:?} is not a valid label key: {reason}")),
        None => Ok(()),
    }
}

/// `k=v,k2=v2`, or `<none>`.
fn labels(item: &Value) -> String {
    let pairs: Vec<String> = item["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// The clusters as a table, then a line for each one that is not served or not
/// reachable, saying why, so a problem stands out however long the list.
fn table(items: &[Value], now: jiff::Timestamp) -> String {
    if items.is_empty() {
        return String::new();
    }
    let rows = items.iter().map(|item| {
        vec![
            str_of(item, "name").to_owned(),
            str_of(item, "pool").to_owned(),
            str_of(&item["status"], "phase").to_owned(),
            labels(item),
            age_of(str_of(item, "registeredAt"), now),
        ]
    });
    let mut out = output::columns(&["NAME", "POOL", "PHASE", "LABELS", "AGE"], rows);
    let troubled: Vec<&Value> = items
        .iter()
        .filter(|i| matches!(str_of(&i["status"], "phase"), "unserved" | "unreachable"))
        .collect();
    if !troubled.is_empty() {
        out.push('\n');
        for item in troubled {
            out.push_str(&format!(
                "{} is {}: {}\n",
                str_of(item, "name"),
                str_of(&item["status"], "phase"),
                str_of(&item["status"], "reason")
            ));
        }
    }
    out
}

/// One cluster as `key: value` lines.
fn describe(item: &Value, now: jiff::Timestamp) -> String {
    let status = &item["status"];
    let credentials = &item["credentials"];
    let credentials = match (str_of(credentials, "kind"), credentials["context"].as_str()) {
        ("kubeconfig", Some(context)) => format!("kubeconfig context {context}"),
        (kind, _) => kind.to_owned(),
    };
    let when = |at: &str, by: &str| {
        // To the second: what a person compares.
        let shown = match at.parse::<jiff::Timestamp>() {
            Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            Err(_) => at.to_owned(),
        };
        format!("{shown} ({} ago, by {by})", age_of(at, now))
    };
    let mut lines = vec![
        ("name", str_of(item, "name").to_owned()),
        ("pool", str_of(item, "pool").to_owned()),
        ("credentials", credentials),
        ("labels", labels(item)),
        ("phase", str_of(status, "phase").to_owned()),
        ("reason", str_of(status, "reason").to_owned()),
        ("members", status["members"].to_string()),
    ];
    match status.get("observed").filter(|o| o.is_object()) {
        None => lines.push(("observed", "never".into())),
        Some(o) => {
            lines.push((
                "observed",
                when(str_of(o, "observedAt"), str_of(o, "worker")),
            ));
            lines.push(("reachable", o["reachable"].to_string()));
            if let Some(version) = o["serverVersion"].as_str() {
                lines.push(("version", version.to_owned()));
            }
            lines.push(("latency", format!("{}ms", o["latencyMs"])));
        }
    }
    match item.get("watch") {
        // A dispatcher from before watching says nothing either way.
        None => {}
        Some(Value::Null) => lines.push(("watcher", "none (nobody holds its watch lease)".into())),
        Some(w) => {
            lines.push((
                "watcher",
                format!(
                    "{} (lease held {})",
                    str_of(w, "holder"),
                    age_of(str_of(w, "acquiredAt"), now)
                ),
            ));
            if let Some(lag) = w["lagMs"].as_u64() {
                lines.push(("watch lag", format!("{lag}ms")));
            }
            if let Some(objects) = w["objects"].as_u64() {
                lines.push(("objects", objects.to_string()));
            }
            if let Some(reachable) = w["reachable"].as_bool() {
                let mut said = format!(
                    "{} for {}",
                    if reachable {
                        "reachable"
                    } else {
                        "unreachable"
                    },
                    age_of(str_of(w, "since"), now)
                );
                if let Some(error) = w["error"].as_str() {
                    said.push_str(&format!(": {error}"));
                }
                lines.push(("watch", said));
            }
        }
    }
    lines.push((
        "registered",
        when(str_of(item, "registeredAt"), str_of(item, "registeredBy")),
    ));
    lines.push((
        "updated",
        when(str_of(item, "updatedAt"), str_of(item, "updatedBy")),
    ));
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    lines
        .iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
        .collect()
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// How long ago `at` (an RFC 3339 timestamp) was, as kubectl shows ages.
fn age_of(at: &str, now: jiff::Timestamp) -> String {
    match at.parse::<jiff::Timestamp>() {
        Ok(at) => age(now.as_second() - at.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

/// kubectl's `HumanDuration`: `45s`, `3m20s`, `25m`, `3h5m`, `20h`, `3d4h`, `40d`, `2y10d`.
/// Up to a second in the future (clocks differ) is `0s`.
fn age(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if days < 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if years < 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_shows_them() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (5, "5s"),
            (119, "119s"),
            (200, "3m20s"),
            (180, "3m"),
            (25 * 60, "25m"),
            (2 * 3600 + 5 * 60, "125m"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (20 * 3600, "20h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (4 * 86400, "4d"),
            (40 * 86400, "40d"),
            (2 * 365 * 86400 + 10 * 86400, "2y10d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (seconds, shown) in cases {
            assert_eq!(age(seconds), shown, "{seconds}s");
        }
    }

    #[test]
    fn label_arguments_follow_the_label_syntax() {
        assert_eq!(parse_label("env=prod"), Ok(("env".into(), "prod".into())));
        assert_eq!(parse_label("env="), Ok(("env".into(), String::new())));
        assert!(parse_label("env").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_label("bad key=v").unwrap_err().contains("label key"));
        assert!(
            parse_label("env=no good")
                .unwrap_err()
                .contains("label value")
        );
        assert_eq!(parse_change("tier-"), Ok(("tier".into(), None)));
        assert_eq!(
            parse_change("example.com/tier=gold"),
            Ok(("example.com/tier".into(), Some("gold".into())))
        );
        assert!(parse_change("tier").unwrap_err().contains("KEY-"));
        assert!(parse_change("-").unwrap_err().contains("label key"));
    }

    fn item(name: &str, phase: &str, reason: &str, labels: Value) -> Value {
        json!({
            "name": name, "pool": "workers", "labels": labels,
            "credentials": {"kind": "kubeconfig", "context": name},
            "registeredAt": "2026-12-01T10:00:00Z", "registeredBy": "ops",
            "updatedAt": "2026-12-01T10:00:00Z", "updatedBy": "ops",
            "status": {"phase": phase, "reason": reason, "members": 1},
        })
    }

    #[test]
    fn the_table_lines_up_and_names_what_is_wrong() {
        let now: jiff::Timestamp = "2026-12-01T10:03:00Z".parse().unwrap();
        let items = [
            item(
                "prod-eu-1",
                "ready",
                "reachable",
                json!({"env": "prod", "region": "eu"}),
            ),
            item(
                "dev",
                "unreachable",
                "transient: connection refused",
                json!({}),
            ),
        ];
        assert_eq!(
            table(&items, now),
            "NAME        POOL      PHASE         LABELS               AGE\n\
             prod-eu-1   workers   ready         env=prod,region=eu   3m\n\
             dev         workers   unreachable   <none>               3m\n\
             \n\
             dev is unreachable: transient: connection refused\n"
        );
        assert_eq!(table(&[], now), "");
    }

    #[test]
    fn one_cluster_reads_as_key_value_lines() {
        let now: jiff::Timestamp = "2026-12-01T10:00:30Z".parse().unwrap();
        let mut one = item("prod", "ready", "reachable", json!({"env": "prod"}));
        one["status"]["observed"] = json!({
            "reachable": true, "serverVersion": "v1.31.0", "latencyMs": 3,
            "observedAt": "2026-12-01T10:00:20.123456789Z", "worker": "w1", "pool": "workers",
        });
        let text = describe(&one, now);
        for line in [
            "name:        prod\n",
            "credentials: kubeconfig context prod\n",
            "labels:      env=prod\n",
            "phase:       ready\n",
            "members:     1\n",
            "observed:    2026-12-01T10:00:20Z (10s ago, by w1)\n",
            "version:     v1.31.0\n",
            "latency:     3ms\n",
            "registered:  2026-12-01T10:00:00Z (30s ago, by ops)\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        one["status"]["observed"] = Value::Null;
        assert!(describe(&one, now).contains("observed:    never\n"));
        one["watch"] = Value::Null;
        assert!(describe(&one, now).contains("watcher:     none (nobody holds its watch lease)\n"));
        one["watch"] = json!({"holder": "w1", "acquiredAt": "2026-12-01T10:00:00Z",
            "lagMs": 850, "objects": 12, "reachable": false, "error": "connection refused",
            "since": "2026-12-01T10:00:20Z"});
        let text = describe(&one, now);
        for line in [
            "watcher:     w1 (lease held 30s)\n",
            "watch lag:   850ms\n",
            "objects:     12\n",
            "watch:       unreachable for 10s: connection refused\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }
}
