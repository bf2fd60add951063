//! `kube-sim`: serve simulated Kubernetes clusters until SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use longshore_kube_sim::{Faults, KubeSim, SimOptions};

/// A Kubernetes API stand-in serving several clusters over plain HTTP.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443", env = "KUBE_SIM_LISTEN")]
    listen: SocketAddr,
    /// Comma-separated cluster names; each gets a kubeconfig context of the same name.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "default",
        env = "KUBE_SIM_CLUSTERS"
    )]
    clusters: Vec<String>,
    /// Write a kubeconfig for all clusters to this path.
    #[arg(long, env = "KUBE_SIM_KUBECONFIG")]
    write_kubeconfig: Option<PathBuf>,
    /// JSON file mapping cluster names to faults, e.g. {"prod": {"errors": [{"status": 503, "when": {"next": 2}}]}}.
    #[arg(long, env = "KUBE_SIM_FAULTS")]
    faults: Option<PathBuf>,
    /// Events kept per cluster for watches to resume from.
    #[arg(long, default_value_t = 1000)]
    watch_history: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let faults: BTreeMap<String, Faults> = match &args.faults {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--faults: cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("--faults: invalid JSON in {}", path.display()))?
        }
        None => BTreeMap::new(),
    };
    let options = SimOptions {
        listen: args.listen,
        clusters: args.clusters,
        faults,
        watch_history: args.watch_history,
        ..SimOptions::default()
    };
    let sim = KubeSim::start(options).await?;
    println!("kube-sim listening on http://{}", sim.addr());
    for name in sim.cluster_names() {
        println!("  cluster {name}: {}", sim.server_url(&name));
    }
    println!("  admin: http://{}/_sim/clusters", sim.addr());
    if let Some(path) = &args.write_kubeconfig {
        sim.write_kubeconfig(path)?;
        println!("kubeconfig written to {}", path.display());
    }
    shutdown_signal().await?;
    println!("shutting down");
    sim.shutdown().await;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
