//! `longshore`: submit operations to a longshore dispatcher and wait for their outcome, from
//! a pipeline step or a terminal; list, register, relabel and remove clusters; list the
//! managed objects and follow what happens to them.
//!
//! Exit codes: 0 the operation succeeded (or, without `--wait`, was accepted), or the
//! `clusters` or `objects` command did what it says (`events` runs until interrupted); 1
//! the operation failed, was dead-lettered or superseded, or the dispatcher refused the
//! request (its problem's detail and fields are printed: an unknown pool, a cluster with
//! operations queued, ...) or could not be reached; 2 a usage error (a malformed `-l`, a
//! name that is not a cluster name, ...), or the time ran out before the operation
//! finished.

mod client;
mod clusters;
mod events;
mod objects;
mod output;
mod request;
mod rollouts;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

use crate::client::Client;

#[derive(Parser)]
#[command(
    version,
    about = "Submit Kubernetes operations to longshore and wait for them; manage its clusters; see what it manages"
)]
struct Cli {
    /// The dispatcher's URL.
    #[arg(
        long,
        env = "LONGSHORE_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// Bearer token for the API.
    #[arg(long, env = "LONGSHORE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "human", global = true)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// The actions `submit` offers: all but `patch`, which takes a patch body rather than
/// files. Names and help come from the contract's table of actions.
fn submit_action() -> impl clap::builder::TypedValueParser<Value = longshore_contract::Action> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    use longshore_contract::Action;
    let values = Action::ALL
        .into_iter()
        .filter(|a| *a != Action::Patch)
        .map(|a| PossibleValue::new(a.as_str()).help(a.summary()));
    PossibleValuesParser::new(values)
        .map(|name| Action::from_name(&name).expect("one of the possible values"))
}

#[derive(Subcommand)]
enum Command {
    /// Submit manifests (YAML or JSON files; `-` reads stdin) as one operation. For scale
    /// and the rollout actions the files only name the objects to act on.
    Submit {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        #[arg(long)]
        cluster: String,
        /// What to do with the objects the files name.
        #[arg(long, default_value = "apply", value_parser = submit_action())]
        action: longshore_contract::Action,
        /// The replica count, for --action scale.
        #[arg(long)]
        replicas: Option<i32>,
        /// The revision to roll back to, for --action rollout-undo (default: the previous).
        #[arg(long)]
        to_revision: Option<i64>,
        /// Makes retries of this command safe: the same key is the same operation.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Server-side dry run.
        #[arg(long)]
        dry_run: bool,
        /// Wait until the operation finishes.
        #[arg(long)]
        wait: bool,
        /// How long to wait (with --wait), e.g. 90s, 5m.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Show an operation's status.
    Status { id: String },
    /// Wait until an operation finishes.
    Wait {
        id: String,
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// List, show, register, relabel and remove clusters (the registry; docs/clusters.md).
    Clusters {
        #[command(subcommand)]
        command: clusters::Command,
    },
    /// Fleet rollouts: submit one (many clusters, in waves), follow it, pause, resume,
    /// approve or cancel it (docs/rollouts.md).
    Rollout {
        #[command(subcommand)]
        command: rollouts::Command,
    },
    /// List the managed objects as the clusters' watchers see them: health, drift, the
    /// last operation (docs/inventory.md).
    Objects(objects::Objects),
    /// Print what the clusters' watchers see change, as it happens, until interrupted.
    Events(events::Events),
    /// Print the NATS permissions of an agent pool's leaf-node user, for the hub's
    /// configuration (docs/agents.md). Reads nothing from a dispatcher.
    AgentPermissions {
        /// The cluster the agent serves.
        #[arg(long)]
        cluster: String,
        /// The agent's pool (default: agent-<cluster>).
        #[arg(long)]
        pool: Option<String>,
        /// The hub's JetStream domain the agent reaches through its leaf node.
        #[arg(long, default_value = "hub")]
        domain: String,
    },
}

/// The `permissions` block of an agent pool's user, or a usage error.
fn agent_permissions(cluster: &str, pool: Option<&str>, domain: &str) -> Result<String, String> {
    let cluster = longshore_contract::ClusterName::new(cluster)
        .map_err(|r| format!("--cluster: {cluster:?} {r}"))?;
    let pool = pool.map_or_else(|| format!("agent-{cluster}"), str::to_owned);
    let pool = longshore_contract::PoolName::new(pool.clone())
        .map_err(|r| format!("--pool: {pool:?} {r}"))?;
    let settings = longshore_contract::jetstream::Settings {
        domain: Some(domain.to_owned()),
        ..Default::default()
    };
    settings
        .validate("--domain")
        .map_err(|e| e.replacen("--domain.domain", "--domain", 1))?;
    Ok(longshore_contract::agent::permissions(&pool, &cluster, Some(domain)).nats_conf(""))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    longshore_contract::duration::parse(s)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::AgentPermissions {
        cluster,
        pool,
        domain,
    } = &cli.command
    {
        return match agent_permissions(cluster, pool.as_deref(), domain) {
            Ok(block) => {
                println!("{block}");
                ExitCode::SUCCESS
            }
            Err(usage) => {
                eprintln!("error: {usage}");
                ExitCode::from(2)
            }
        };
    }
    let client = match Client::new(&cli.server, cli.token.clone()) {
        Ok(c) => c,
        Err(f) => return output::failure(&f),
    };
    let result = match cli.command {
        Command::Submit {
            files,
            cluster,
            action,
            replicas,
            to_revision,
            idempotency_key,
            dry_run,
            wait,
            timeout,
        } => {
            let submit = request::Submit {
                action,
                files,
                replicas,
                to_revision,
                dry_run,
            };
            let body = match request::body(&cluster, &submit) {
                Ok(b) => b,
                Err(f) => return output::failure(&f),
            };
            match client.submit(&body, idempotency_key.as_deref()).await {
                Err(f) => Err(f),
                Ok(accepted) if !wait => {
                    output::accepted(cli.output, &accepted);
                    return ExitCode::SUCCESS;
                }
                Ok(accepted) => {
                    if cli.output == Format::Human {
                        output::accepted(cli.output, &accepted);
                    }
                    let id = accepted["id"].as_str().unwrap_or_default().to_owned();
                    client.wait(&id, timeout).await
                }
            }
        }
        Command::Status { id } => client.status(&id).await,
        Command::Wait { id, timeout } => client.wait(&id, timeout).await,
        Command::Clusters { command } => return clusters::run(&client, cli.output, command).await,
        Command::Objects(args) => return objects::run(&client, cli.output, args).await,
        Command::Rollout { command } => return rollouts::run(&client, cli.output, command).await,
        Command::Events(args) => return events::run(&client, cli.output, args).await,
        Command::AgentPermissions { .. } => unreachable!("answered above"),
    };
    match result {
        Ok(record) => output::record(cli.output, &record),
        Err(f) => output::failure(&f),
    }
}
