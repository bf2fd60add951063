//! longshore's benchmarks: programs that print figures, compared in the same run against
//! the bare JetStream limit on the same machine.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p longshore-integration --bin bench -- all --json docs/benchmarks.json
//! cargo run -p longshore-integration --bin bench -- smoke        # seconds; what CI runs
//! ```
//!
//! Modes: `baseline` (JetStream publish, pull + double ack, and both at once), `e2e` (HTTP
//! submit to succeeded: latency at light load, throughput at saturation, CPU and memory per
//! process), `scaling` (1, 2, 4, 8 workers against 50 ms writes), `fleet` (thousands of
//! clusters: worker ready time and memory, a fleet-wide rollout), `registry` (10,000
//! registered clusters: replicas ready, idle memory, how fast a change reaches 3
//! dispatchers and 3 workers, listing with a selector, memory after touching 5,000
//! clusters), `watching` (2,000 clusters × 20 objects, 4 workers: lease spread, memory,
//! change-to-event latency, takeover after a SIGKILL, and the cost of watching for e2e
//! throughput), `agents` (the extra latency of the leaf hop: an agent behind a leaf node
//! against a hub worker, interleaved), `rollouts` (2,000 clusters in waves `1, 10%, 100%`:
//! the coordination's cost per cluster against the same operations submitted
//! independently, and a run with 50 ms writes against its lower bound), `all`, and `smoke` (every mode, tiny, to check they run: no figure is
//! asserted), and `protocol` (the per-operation cost on one server and on a 3-node
//! cluster, each against the bare loop on the same servers, medians of `--runs`).

#![forbid(unsafe_code)]

mod agents;
mod baseline;
mod e2e;
mod fleet;
mod protocol;
mod registry;
mod rig;
mod rollouts;
mod scaling;
mod stats;
mod watching;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Baseline,
    E2e,
    Scaling,
    Fleet,
    Registry,
    Watching,
    Agents,
    Rollouts,
    /// The per-operation cost on one server and on three (R3): each against the bare
    /// loop on the same servers, medians of `--runs`, with `--compare-bins` beside.
    Protocol,
    All,
    Smoke,
}

#[derive(Parser)]
struct Args {
    mode: Mode,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Operations at saturation (e2e) and messages (baseline).
    #[arg(long, default_value_t = 5000)]
    ops: usize,
    /// Offered rate at light load, operations per second.
    #[arg(long, default_value_t = 50)]
    light_rate: u32,
    /// Concurrent submitting clients (and publishing tasks in the baseline).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Workers in the e2e run.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Registered clusters in the fleet run.
    #[arg(long, default_value_t = 2000)]
    clusters: usize,
    /// A directory with another build's `longshore-dispatcher` and `longshore-worker`: the
    /// e2e run is then made with those too, in the same run, and the two compared.
    #[arg(long)]
    compare_bins: Option<PathBuf>,
    /// Registered clusters in the registry run.
    #[arg(long, default_value_t = 10_000)]
    registry_clusters: usize,
    /// Watched clusters in the watching run.
    #[arg(long, default_value_t = 2000)]
    watch_clusters: usize,
    /// Runs per configuration in the protocol mode (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Replicas the protocol mode measures: 1 (one server), 3 (a 3-node cluster), or both.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    replicas: Vec<usize>,
    /// Whether the workers of the e2e and protocol modes watch the cluster (their
    /// default): `--watch false` leaves out what watching costs per change.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    watch: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let smoke = args.mode == Mode::Smoke;
    let wants = |m: Mode| args.mode == m || args.mode == Mode::All || smoke;
    let mut out = serde_json::Map::new();
    out.insert("machine".into(), machine());
    let payload = envelope_size();

    if wants(Mode::Baseline) {
        let n = if smoke { 200 } else { args.ops * 4 };
        let r = baseline::run(n, args.concurrency, payload).await?;
        println!("baseline: {r}");
        out.insert("baseline".into(), r);
    }
    if args.mode == Mode::Protocol || smoke {
        let r = protocol::run(&protocol::Params {
            runs: if smoke { 1 } else { args.runs },
            replicas: if smoke {
                vec![1]
            } else {
                args.replicas.clone()
            },
            messages: if smoke { 200 } else { args.ops * 4 },
            payload,
            e2e: e2e::Params {
                light_rate: if smoke { 20 } else { args.light_rate },
                light_seconds: if smoke { 1 } else { 10 },
                saturation_ops: if smoke { 50 } else { args.ops },
                concurrency: args.concurrency,
                dispatchers: 1,
                workers: if smoke { 1 } else { 2 },
                worker_concurrency: 64,
                watch: args.watch,
                replicas: 1,
            },
            compare: args.compare_bins.clone(),
        })
        .await?;
        println!("protocol: {r}");
        out.insert("protocol".into(), r);
    }
    if wants(Mode::E2e) {
        let p = e2e::Params {
            light_rate: if smoke { 20 } else { args.light_rate },
            light_seconds: if smoke { 1 } else { 20 },
            saturation_ops: if smoke { 50 } else { args.ops },
            concurrency: args.concurrency,
            dispatchers: 1,
            workers: args.workers,
            worker_concurrency: 64,
            watch: args.watch,
            replicas: 1,
        };
        if let Some(dir) = &args.compare_bins {
            rig::use_binaries(Some(dir.clone()));
            let before = e2e::run(&p).await?;
            rig::use_binaries(None);
            println!("e2e (binaries of {}): {before}", dir.display());
            out.insert(
                "e2e_compared".into(),
                json!({"binaries": dir.display().to_string(), "e2e": before}),
            );
        }
        let r = e2e::run(&p).await?;
        println!("e2e: {r}");
        if let Some(before) = out
            .get("e2e_compared")
            .map(|c| c["e2e"]["saturation"]["ops_per_s"].as_f64().unwrap_or(0.0))
        {
            let now = r["saturation"]["ops_per_s"].as_f64().unwrap_or(0.0);
            let ratio = if before > 0.0 { now / before } else { 0.0 };
            println!("e2e: saturation throughput = {ratio:.3} x the compared binaries");
            out.insert(
                "e2e_vs_compared".into(),
                json!((ratio * 1000.0).round() / 1000.0),
            );
        }
        if let Some(base) = out
            .get("baseline")
            .and_then(|b| b["loop_msgs_per_s"].as_f64())
        {
            let ratio = r["saturation"]["ops_per_s"].as_f64().unwrap_or(0.0) / base;
            println!("e2e: saturation throughput = {ratio:.3} x baseline loop");
            out.insert(
                "e2e_vs_baseline".into(),
                json!((ratio * 1000.0).round() / 1000.0),
            );
        }
        out.insert("e2e".into(), r);
    }
    if wants(Mode::Scaling) {
        let counts: &[usize] = if smoke { &[1, 2] } else { &[1, 2, 4, 8] };
        let r = scaling::run(counts, if smoke { 10 } else { 400 }, 4).await?;
        println!("scaling: {r}");
        out.insert("scaling".into(), r);
    }
    if wants(Mode::Fleet) {
        let r = fleet::run(if smoke { 20 } else { args.clusters }, 2).await?;
        println!("fleet: {r}");
        out.insert("fleet".into(), r);
    }
    if wants(Mode::Registry) {
        let p = registry::Params {
            clusters: if smoke { 60 } else { args.registry_clusters },
            replicas: 3,
            changes: if smoke { 3 } else { 50 },
            touched: if smoke {
                20
            } else {
                args.registry_clusters / 2
            },
        };
        let r = registry::run(&p).await?;
        println!("registry: {r}");
        out.insert("registry".into(), r);
    }
    if wants(Mode::Watching) {
        let p = watching::Params {
            clusters: if smoke { 20 } else { args.watch_clusters },
            objects: if smoke { 3 } else { 20 },
            workers: 4,
            changes: if smoke { 5 } else { 200 },
            pairs: if smoke { 1 } else { 3 },
            e2e: e2e::Params {
                light_rate: 20,
                light_seconds: 1,
                saturation_ops: if smoke { 50 } else { args.ops },
                concurrency: args.concurrency,
                dispatchers: 1,
                workers: 1,
                worker_concurrency: 64,
                watch: true,
                replicas: 1,
            },
        };
        let r = watching::run(&p).await?;
        println!("watching: {r}");
        out.insert("watching".into(), r);
    }
    if wants(Mode::Agents) {
        let p = agents::Params {
            ops: if smoke { 10 } else { 500 },
            rate: if smoke { 20 } else { 40 },
        };
        let r = agents::run(&p).await?;
        println!("agents: {r}");
        out.insert("agents".into(), r);
    }
    if wants(Mode::Rollouts) {
        let p = rollouts::Params {
            clusters: if smoke { 20 } else { args.clusters },
            workers: 2,
            slots: 64,
            pairs: if smoke { 1 } else { 3 },
            slow_write: std::time::Duration::from_millis(50),
        };
        let r = rollouts::run(&p).await?;
        println!("rollouts: {r}");
        out.insert("rollouts".into(), r);
    }
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&Value::Object(out))? + "\n",
        )?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

/// The size of a typical envelope (one ConfigMap apply), so the baseline moves messages of
/// the size the system moves.
fn envelope_size() -> usize {
    let key = longshore_contract::IdempotencyKey::new("bench-0000000-0").expect("valid key");
    let spec: longshore_contract::OperationSpec =
        serde_json::from_value(rig::apply_configmap("prod", "bench-0", 0)).expect("valid spec");
    let envelope = longshore_contract::Envelope {
        schema_version: longshore_contract::envelope::SCHEMA_VERSION,
        id: longshore_contract::OperationId::derive("api", &key),
        idempotency_key: key,
        source: "api".into(),
        fingerprint: "0".repeat(32),
        submitted_at: jiff::Timestamp::now(),
        spec,
        rollout: None,
    };
    serde_json::to_vec(&envelope)
        .map(|v| v.len())
        .unwrap_or(600)
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
    });
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let nats = std::process::Command::new(longshore_integration::nats::binary())
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    json!({"cpu": cpu, "cores": cores, "nats_server": nats, "profile": if cfg!(debug_assertions) { "debug" } else { "release" }})
}
