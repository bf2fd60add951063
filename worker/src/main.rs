//! The `longshore-worker` binary: reads the configuration, sets up logging, and runs the
//! worker until SIGTERM or SIGINT, then drains and exits 0.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use longshore_worker::Config;

/// Pulls longshore operations from NATS JetStream and applies them to Kubernetes clusters.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file. Every key can also be set as `LONGSHORE_<SECTION>__<KEY>`.
    #[arg(long, env = "LONGSHORE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match start(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line naming the problem (the configuration key, the cluster, the pool),
            // not a backtrace.
            eprintln!("longshore-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(args: Args) -> anyhow::Result<()> {
    // Listened for before anything else, so a pod stopped while still starting exits 0.
    let stop = longshore_contract::stop::signal().context("listening for SIGTERM")?;
    let config: Config = longshore_contract::settings::load(
        args.config.as_deref(),
        "LONGSHORE",
        &["pool.filter_clusters", "clusters.contexts"],
    )?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let telemetry = longshore_contract::telemetry::init(
        "longshore-worker",
        &config.worker_id,
        &config.telemetry,
    )?;
    let result = longshore_worker::run(config, stop).await;
    telemetry.shutdown().await;
    result.context("worker stopped")
}
