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
    /// Serve a fleet of this many clusters instead, named PREFIX plus a zero-padded number
    /// (`--cluster-count 10000` gives c00001 … c10000).
    #[arg(long, conflicts_with = "clusters")]
    cluster_count: Option<usize>,
    /// Name prefix for --cluster-count.
    #[arg(long, default_value = "c", requires = "cluster_count")]
    cluster_prefix: String,
    /// Give each cluster its own random bearer token, required on every request except
    /// /version and the health paths; the kubeconfigs written carry them.
    #[arg(long, env = "KUBE_SIM_AUTH_TOKENS")]
    auth_tokens: bool,
    /// Write a kubeconfig for all clusters to this path.
    #[arg(long, env = "KUBE_SIM_KUBECONFIG")]
    write_kubeconfig: Option<PathBuf>,
    /// Write one kubeconfig per cluster into this directory, as DIR/NAME.yaml.
    #[arg(long, env = "KUBE_SIM_KUBECONFIG_DIR")]
    write_kubeconfig_dir: Option<PathBuf>,
    /// JSON file mapping cluster names to faults, e.g. {"prod": {"errors": [{"status": 503, "when": {"next": 2}}]}}.
    #[arg(long, env = "KUBE_SIM_FAULTS")]
    faults: Option<PathBuf>,
    /// Events kept per cluster for watches to resume from.
    #[arg(long, default_value_t = 1000)]
    watch_history: usize,
    /// Simulate Deployment rollouts, one replica every this many milliseconds (status
    /// reported as a controller would); without it, workloads get no status.
    #[arg(long, env = "KUBE_SIM_ROLLOUT_STEP_MS")]
    rollout_step_ms: Option<u64>,
    /// New CustomResourceDefinitions become Established (their kinds served and in
    /// discovery) this many milliseconds after they are created; 0: at once.
    #[arg(long, default_value_t = 0, env = "KUBE_SIM_CRD_ESTABLISH_MS")]
    crd_establish_ms: u64,
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
    let clusters = match args.cluster_count {
        Some(n) => fleet_names(&args.cluster_prefix, n),
        None => args.clusters,
    };
    let options = SimOptions {
        listen: args.listen,
        clusters,
        faults,
        watch_history: args.watch_history,
        auth_tokens: args.auth_tokens,
        rollouts: args
            .rollout_step_ms
            .map(|ms| {
                longshore_kube_sim::Rollouts::progressing(std::time::Duration::from_millis(ms))
            })
            .unwrap_or_default(),
        crd_establish_delay: std::time::Duration::from_millis(args.crd_establish_ms),
        ..SimOptions::default()
    };
    let sim = KubeSim::start(options).await?;
    println!("kube-sim listening on http://{}", sim.addr());
    let names = sim.cluster_names();
    if names.len() <= LISTED {
        for name in &names {
            println!("  cluster {name}: {}", sim.server_url(name));
        }
    } else {
        let (first, last) = (&names[0], &names[names.len() - 1]);
        println!(
            "  {} clusters, {first} … {last}: {}",
            names.len(),
            sim.server_url("NAME")
        );
    }
    if args.auth_tokens {
        println!("  bearer tokens: one per cluster, in the kubeconfigs written");
    }
    if let Some(path) = &args.write_kubeconfig {
        sim.write_kubeconfig(path)?;
        println!("  kubeconfig written to {}", path.display());
    }
    if let Some(dir) = &args.write_kubeconfig_dir {
        sim.write_kubeconfig_dir(dir)?;
        println!("  kubeconfigs written to {}/NAME.yaml", dir.display());
    }
    println!("  admin: http://{}/_sim/clusters", sim.addr());
    shutdown_signal().await?;
    println!("shutting down");
    sim.shutdown().await;
    Ok(())
}

/// Up to this many clusters are listed one by one at start.
const LISTED: usize = 10;

/// `prefix` plus 1…`count`, zero-padded to the width of `count`.
fn fleet_names(prefix: &str, count: usize) -> Vec<String> {
    let width = count.to_string().len();
    (1..=count)
        .map(|i| format!("{prefix}{i:0width$}"))
        .collect()
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
