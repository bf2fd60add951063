use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// longshore's dispatcher: accepts pipeline operations over HTTP and queues them in JetStream.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file; LONGSHORE_* environment variables override it.
    #[arg(long, env = "LONGSHORE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Listened for before anything else, so a pod stopped while still starting exits 0.
    let stop = longshore_contract::stop::signal().context("listening for SIGTERM")?;
    // Validate everything, and read every secret, before binding a port.
    let checked = longshore_dispatcher::Config::load(args.config.as_deref())?.check()?;
    let config = &checked.config;
    let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| "dispatcher".into());
    let telemetry =
        longshore_contract::telemetry::init("longshore-dispatcher", &instance, &config.telemetry)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding listen address {}", config.listen))?;
    let result = longshore_dispatcher::run_checked(checked, listener, stop).await;
    telemetry.shutdown().await;
    result?;
    Ok(())
}
