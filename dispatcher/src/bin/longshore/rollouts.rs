//! `longshore rollout`: fleet rollouts (`/v1/fleet-rollouts`, docs/rollouts.md) from a
//! pipeline step or a terminal. `submit` builds the template from files as `submit` does;
//! `status` and `--wait` show each wave as a row of cells, one per cluster.
//!
//! Exit codes: 0 the rollout succeeded (or, without `--wait`, was accepted; a control
//! was applied or already so); 1 it halted or was cancelled, or the dispatcher refused the
//! request; 2 a usage error, or the time ran out first.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Subcommand;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{
    Format,
    client::{Client, Failure, problem},
    output::{self, str_of},
    parse_duration, request,
};

#[derive(Subcommand)]
pub enum Command {
    /// Submit manifests (YAML or JSON files; `-` reads stdin) as one operation for each
    /// selected cluster, in waves.
    Submit(Box<Submit>),
    /// List the rollouts, newest first.
    List {
        /// Only those in this state: running, paused, waiting_approval, succeeded, halted,
        /// cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
    },
    /// Show a rollout, wave by wave.
    Status { id: String },
    /// Wait until a rollout is over, showing its waves as they go.
    Wait {
        id: String,
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Start no further wave until resumed.
    Pause { id: String },
    /// Resume a paused rollout.
    Resume { id: String },
    /// Approve the gate the rollout waits at, or (with --wave) a later one ahead.
    Approve {
        id: String,
        #[arg(long)]
        wave: Option<usize>,
    },
    /// Start no further operation; running ones finish.
    Cancel { id: String },
    /// Try every failed cluster again (and, after a halt, those it kept from starting),
    /// then go on from where the rollout stopped.
    RetryFailed { id: String },
}

/// What `rollout submit` takes.
#[derive(clap::Args)]
pub struct Submit {
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// The clusters whose labels match this selector, e.g. `env=prod,region in (eu,us)`.
    #[arg(
        short = 'l',
        long,
        conflicts_with = "clusters",
        required_unless_present = "clusters"
    )]
    selector: Option<String>,
    /// These clusters, in this order (comma-separated).
    #[arg(long, value_delimiter = ',')]
    clusters: Option<Vec<String>>,
    /// Cumulative wave sizes, counts or percentages of the selection: `1,10%,100%`.
    #[arg(long, value_delimiter = ',', required = true)]
    waves: Vec<String>,
    /// Order the clusters by this label's value before cutting waves.
    #[arg(long)]
    order_by: Option<String>,
    /// Failures tolerated, a count or a percentage, over the whole rollout and (unless
    /// --max-failures-per-wave says otherwise) in each wave [default: 0].
    #[arg(long)]
    max_failures: Option<String>,
    /// Failures tolerated in one wave, a count or a percentage of it.
    #[arg(long)]
    max_failures_per_wave: Option<String>,
    /// Between one wave's end and the next one's start, e.g. 5m.
    #[arg(long)]
    pause: Option<String>,
    /// A wave (from 1) that waits for `longshore rollout approve`; repeat for more.
    #[arg(long = "approval-before", value_name = "WAVE")]
    approval_before: Vec<usize>,
    /// What to do with the objects the files name.
    #[arg(long, default_value = "apply")]
    action: String,
    /// Makes retries of this command safe: the same key is the same rollout.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Server-side dry run on every cluster.
    #[arg(long)]
    dry_run: bool,
    /// Wait until the rollout is over, showing its waves as they go.
    #[arg(long)]
    wait: bool,
    /// How long to wait (with --wait), e.g. 30m.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    timeout: Duration,
}

pub async fn run(client: &Client, format: Format, command: Command) -> ExitCode {
    if let Command::List { state, limit } = &command {
        return list(client, format, state.as_deref(), *limit).await;
    }
    let result = match command {
        Command::List { .. } => unreachable!("listed above"),
        Command::Submit(submit) => {
            let Submit {
                files,
                selector,
                clusters,
                waves,
                order_by,
                max_failures,
                max_failures_per_wave,
                pause,
                approval_before,
                action,
                idempotency_key,
                dry_run,
                wait,
                timeout,
            } = *submit;
            let Some(action) = longshore_contract::Action::from_name(&action) else {
                return output::failure(&Failure::Usage(format!(
                    "--action {action:?}: not an action (see `longshore submit --help`)"
                )));
            };
            let submit = request::Submit {
                action,
                files,
                replicas: None,
                to_revision: None,
                dry_run,
            };
            let mut template = match request::body("placeholder", &submit) {
                Ok(b) => b,
                Err(f) => return output::failure(&f),
            };
            if let Some(t) = template.as_object_mut() {
                t.remove("cluster");
            }
            let selection = match (selector, clusters) {
                (Some(s), _) => json!({"selector": s}),
                (None, Some(names)) => json!({"names": names}),
                (None, None) => unreachable!("clap requires one"),
            };
            let mut strategy = json!({"waves": waves.iter().map(|w| size(w)).collect::<Vec<_>>()});
            let total = max_failures.as_deref().map(size);
            let per_wave = max_failures_per_wave.as_deref().map(size).or(total.clone());
            if total.is_some() || per_wave.is_some() {
                strategy["maxFailures"] = json!({
                    "total": total.unwrap_or(json!(0)),
                    "perWave": per_wave.unwrap_or(json!(0)),
                });
            }
            if let Some(p) = pause {
                strategy["pause"] = json!(p);
            }
            if !approval_before.is_empty() {
                strategy["approvalBefore"] = json!(approval_before);
            }
            if let Some(label) = order_by {
                strategy["orderBy"] = json!(label);
            }
            let body = json!({"template": template, "clusters": selection, "strategy": strategy});
            match submit_and_wait(
                client,
                format,
                &body,
                idempotency_key.as_deref(),
                wait,
                timeout,
            )
            .await
            {
                // Accepted, not waited for: said already.
                Ok(None) => return ExitCode::SUCCESS,
                Ok(Some(shown)) => Ok(shown),
                Err(f) => Err(f),
            }
        }
        Command::Status { id } => get(client, &id, None).await,
        Command::Wait { id, timeout } => follow(client, format, &id, timeout).await,
        Command::Pause { id } => control(client, &id, "pause", None).await,
        Command::Resume { id } => control(client, &id, "resume", None).await,
        Command::Approve { id, wave } => control(client, &id, "approve", wave).await,
        Command::Cancel { id } => control(client, &id, "cancel", None).await,
        Command::RetryFailed { id } => control(client, &id, "retry-failed", None).await,
    };
    match result {
        Ok((rollout, changed)) => {
            match format {
                Format::Json => println!("{rollout}"),
                Format::Human => {
                    let id = str_of(&rollout, "id");
                    match changed {
                        Some(true) => {
                            let last = rollout["controls"]
                                .as_array()
                                .and_then(|c| c.last())
                                .cloned()
                                .unwrap_or_default();
                            println!(
                                "rollout/{id} {} recorded (by {})",
                                str_of(&last, "action"),
                                str_of(&last, "by")
                            );
                        }
                        Some(false) => println!("rollout/{id} unchanged (already so)"),
                        None => {}
                    }
                    print!("{}", display(&rollout));
                }
            }
            exit_code(&rollout)
        }
        Err(f) => output::failure(&f),
    }
}

/// `rollout list`: a table of the rollouts (`-o json`: what the API answered).
async fn list(client: &Client, format: Format, state: Option<&str>, limit: u64) -> ExitCode {
    let mut query = vec![("limit", limit.to_string())];
    if let Some(state) = state {
        query.push(("state", state.to_owned()));
    }
    let answer = client
        .call(Method::GET, "/v1/fleet-rollouts", &query, None)
        .await;
    let body = match answer {
        Ok((StatusCode::OK, body)) => body,
        Ok((status, body)) => return output::failure(&Failure::Request(problem(status, &body))),
        Err(f) => return output::failure(&f),
    };
    match format {
        Format::Json => println!("{body}"),
        Format::Human => {
            let rows = body["items"].as_array().into_iter().flatten().map(|r| {
                vec![
                    str_of(r, "id").to_owned(),
                    str_of(r, "state").to_owned(),
                    format!("{}%", r["percentComplete"]),
                    format!("{}/{}", r["succeeded"], r["clusters"]),
                    format!(
                        "{}/{}",
                        r["currentWave"],
                        r["waves"].as_array().map_or(0, Vec::len)
                    ),
                    str_of(r, "action").to_owned(),
                    str_of(r, "submittedAt").to_owned(),
                ]
            });
            print!(
                "{}",
                output::columns(
                    &[
                        "ID",
                        "STATE",
                        "DONE",
                        "SUCCEEDED",
                        "WAVE",
                        "ACTION",
                        "SUBMITTED"
                    ],
                    rows
                )
            );
            if body["more"] == true {
                eprintln!("(more rollouts than --limit {limit})");
            }
        }
    }
    ExitCode::SUCCESS
}

/// A wave size or budget as the API takes it: a number, or a string with `%`.
fn size(text: &str) -> Value {
    match text.trim().parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(text.trim()),
    }
}

async fn submit_and_wait(
    client: &Client,
    format: Format,
    body: &Value,
    key: Option<&str>,
    wait: bool,
    timeout: Duration,
) -> Result<Option<(Value, Option<bool>)>, Failure> {
    let (status, accepted) = client
        .call_with_key(Method::POST, "/v1/fleet-rollouts", key, Some(body))
        .await?;
    if status != StatusCode::ACCEPTED {
        return Err(Failure::Request(problem(status, &accepted)));
    }
    let id = str_of(&accepted, "id").to_owned();
    if format == Format::Human || !wait {
        match format {
            Format::Json => println!("{accepted}"),
            Format::Human => println!(
                "rollout/{id} accepted: {} clusters in waves of {}",
                accepted["clusters"],
                accepted["waves"]
                    .as_array()
                    .map(|w| w
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
        }
    }
    if !wait {
        return Ok(None);
    }
    follow(client, format, &id, timeout).await.map(Some)
}

async fn get(
    client: &Client,
    id: &str,
    wait: Option<Duration>,
) -> Result<(Value, Option<bool>), Failure> {
    let query: Vec<(&str, String)> = wait
        .map(|w| vec![("wait", format!("{}ms", w.as_millis()))])
        .unwrap_or_default();
    let (status, body) = client
        .call(
            Method::GET,
            &format!("/v1/fleet-rollouts/{id}"),
            &query,
            None,
        )
        .await?;
    if status != StatusCode::OK {
        return Err(Failure::Request(problem(status, &body)));
    }
    Ok((body, None))
}

/// Follows the rollout until it is over or `timeout` passes, printing its waves each time
/// they change (people) or the last status (`-o json`).
async fn follow(
    client: &Client,
    format: Format,
    id: &str,
    timeout: Duration,
) -> Result<(Value, Option<bool>), Failure> {
    let deadline = Instant::now() + timeout;
    let mut shown = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (rollout, _) = get(client, id, Some(left.min(Duration::from_secs(2)))).await?;
        if over(&rollout) {
            return Ok((rollout, None));
        }
        let now = display(&rollout);
        if format == Format::Human && now != shown {
            print!("{now}");
            shown = now;
        }
        if Instant::now() >= deadline {
            return Err(Failure::Timeout {
                record: Some(rollout),
                after: timeout,
            });
        }
    }
}

async fn control(
    client: &Client,
    id: &str,
    action: &str,
    wave: Option<usize>,
) -> Result<(Value, Option<bool>), Failure> {
    let query: Vec<(&str, String)> = wave
        .map(|w| vec![("wave", w.to_string())])
        .unwrap_or_default();
    let (status, body) = client
        .call(
            Method::POST,
            &format!("/v1/fleet-rollouts/{id}/{action}"),
            &query,
            None,
        )
        .await?;
    if status != StatusCode::OK {
        return Err(Failure::Request(problem(status, &body)));
    }
    let changed = body["changed"].as_bool();
    Ok((body, changed))
}

fn over(rollout: &Value) -> bool {
    matches!(
        str_of(rollout, "state"),
        "succeeded" | "halted" | "cancelled"
    )
}

/// Exit code for a rollout shown: 1 when it halted or was cancelled.
fn exit_code(rollout: &Value) -> ExitCode {
    match str_of(rollout, "state") {
        "halted" | "cancelled" => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}

/// Width of a wave's row of cells; a larger wave is shown in proportion.
const BAR: usize = 40;

/// The rollout, wave by wave: `#` succeeded, `x` failed, `-` cancelled, `>` running,
/// `.` pending.
pub fn display(rollout: &Value) -> String {
    let mut out = format!(
        "rollout/{} {} {}% ({} of {} clusters succeeded, {} failed){}\n",
        str_of(rollout, "id"),
        str_of(rollout, "state"),
        rollout["percentComplete"],
        rollout["succeeded"],
        rollout["clusters"],
        rollout["failed"],
        rollout["reason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default(),
    );
    let rows = rollout["waves"].as_array().into_iter().flatten().map(|w| {
        let cells: Vec<char> = w["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| match str_of(c, "state") {
                "succeeded" => '#',
                "failed" => 'x',
                "cancelled" => '-',
                "running" => '>',
                _ => '.',
            })
            .collect();
        let bar: String = if cells.len() <= BAR {
            cells.iter().collect()
        } else {
            // Each character stands for a run of clusters: the worst of them.
            (0..BAR)
                .map(|i| {
                    let run = &cells[i * cells.len() / BAR..(i + 1) * cells.len() / BAR];
                    ['x', '>', '-', '.', '#']
                        .into_iter()
                        .find(|c| run.contains(c))
                        .unwrap_or('.')
                })
                .collect()
        };
        let gate = match w["approval"].as_str() {
            Some("required") => "approval required".to_owned(),
            Some("approved") => "approved".to_owned(),
            _ => String::new(),
        };
        vec![
            format!("wave {}", w["wave"]),
            str_of(w, "state").to_owned(),
            format!("{}/{}", w["succeeded"], w["size"]),
            format!("[{bar}]"),
            gate,
        ]
    });
    out.push_str(&output::columns(
        &["WAVE", "STATE", "DONE", "CLUSTERS", "GATE"],
        rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_show_as_rows_of_cells_and_a_big_wave_in_proportion() {
        let cluster = |state: &str| json!({"name": "c", "state": state, "operation": "op"});
        let mut big: Vec<Value> = (0..80).map(|_| cluster("succeeded")).collect();
        big[79] = cluster("failed");
        let rollout = json!({
            "id": "ro-x", "state": "halted", "percentComplete": 50, "succeeded": 80,
            "clusters": 200, "failed": 1, "reason": "wave 2: 1 failed",
            "waves": [
                {"wave": 1, "state": "succeeded", "succeeded": 2, "size": 2,
                 "clusters": [cluster("succeeded"), cluster("succeeded")]},
                {"wave": 2, "state": "failed", "succeeded": 79, "size": 80, "clusters": big},
                {"wave": 3, "state": "pending", "succeeded": 0, "size": 3, "approval": "required",
                 "clusters": [cluster("pending"), cluster("running"), cluster("cancelled")]},
            ]
        });
        let shown = display(&rollout);
        let lines: Vec<&str> = shown.lines().collect();
        assert!(
            lines[0].contains("halted 50%") && lines[0].ends_with(": wave 2: 1 failed"),
            "{shown}"
        );
        assert!(lines[2].contains("[##]"), "{shown}");
        let bar = lines[3].split('[').nth(1).unwrap().trim_end_matches(']');
        assert_eq!(bar.len(), BAR, "{shown}");
        assert!(bar.ends_with('x') && bar.starts_with('#'), "{bar}");
        assert!(
            lines[4].contains("[.>-]") && lines[4].ends_with("approval required"),
            "{shown}"
        );
        assert_eq!(exit_code(&rollout), ExitCode::from(1));
    }
}
