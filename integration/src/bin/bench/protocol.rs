//! What one operation costs on one server (R1) and on a 3-node JetStream cluster (R3):
//! for each, `runs` rounds of the bare loop and then the full system on the same kind of
//! servers (fresh ones each time), optionally the binaries of another build too, in the
//! same round, so each ratio compares figures taken minutes apart on a noisy machine.
//! Medians are reported, with the CPU milliseconds each process spent per operation at
//! saturation.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::{baseline, e2e, rig};

pub struct Params {
    pub runs: usize,
    pub replicas: Vec<usize>,
    /// Messages in each bare loop.
    pub messages: usize,
    pub payload: usize,
    pub e2e: e2e::Params,
    /// Another build's binaries, run in each round beside these.
    pub compare: Option<PathBuf>,
}

pub async fn run(p: &Params) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for &replicas in &p.replicas {
        let mut rounds = Vec::new();
        for round in 0..p.runs {
            let base = bare_loop(p, replicas).await?;
            let e2e = e2e::Params {
                replicas,
                ..p.e2e.clone()
            };
            let compared = match &p.compare {
                Some(dir) => {
                    rig::use_binaries(Some(dir.clone()));
                    let before = e2e::run(&e2e).await;
                    rig::use_binaries(None);
                    Some(summary(&before?, base))
                }
                None => None,
            };
            let now = summary(&e2e::run(&e2e).await?, base);
            eprintln!(
                "protocol: R{replicas} round {}: loop {base} msgs/s, now {now}, compared {}",
                round + 1,
                compared.as_ref().map_or("-".into(), Value::to_string)
            );
            rounds.push(json!({"loop_msgs_per_s": base, "now": now, "compared": compared}));
        }
        let median = |path: &[&str]| {
            let mut v: Vec<f64> = rounds
                .iter()
                .filter_map(|r| path.iter().try_fold(r, |v, k| v.get(*k))?.as_f64())
                .collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        let now_ratio = median(&["now", "ratio_to_loop"]);
        let before_ratio = median(&["compared", "ratio_to_loop"]);
        let mut speedups: Vec<f64> = rounds
            .iter()
            .filter_map(|r| {
                Some(r["now"]["ops_per_s"].as_f64()? / r["compared"]["ops_per_s"].as_f64()?)
            })
            .collect();
        speedups.sort_by(f64::total_cmp);
        out.insert(
            format!("r{replicas}"),
            json!({
                "rounds": rounds,
                "median": {
                    "loop_msgs_per_s": median(&["loop_msgs_per_s"]),
                    "ops_per_s": median(&["now", "ops_per_s"]),
                    "ratio_to_loop": now_ratio,
                    "light_p50_ms": median(&["now", "light_p50_ms"]),
                    "light_p99_ms": median(&["now", "light_p99_ms"]),
                    "compared_ops_per_s": median(&["compared", "ops_per_s"]),
                    "compared_ratio_to_loop": before_ratio,
                    "compared_light_p50_ms": median(&["compared", "light_p50_ms"]),
                    "compared_light_p99_ms": median(&["compared", "light_p99_ms"]),
                    "speedup_over_compared": speedups.get(speedups.len() / 2),
                },
            }),
        );
    }
    Ok(out.into())
}

/// The bare loop on fresh servers like the system's: msgs/s.
async fn bare_loop(p: &Params, replicas: usize) -> anyhow::Result<f64> {
    let r = if replicas <= 1 {
        baseline::run(p.messages, p.e2e.concurrency, p.payload).await?
    } else {
        let cluster = longshore_integration::nats::NatsCluster::start(replicas).await?;
        baseline::run_at(
            &cluster.url(),
            replicas,
            p.messages,
            p.e2e.concurrency,
            p.payload,
        )
        .await?
    };
    Ok(r["loop_msgs_per_s"].as_f64().unwrap_or(0.0))
}

/// Throughput, its ratio to the loop, light-load latency and CPU ms per operation at
/// saturation, by process.
fn summary(e2e: &Value, base: f64) -> Value {
    let ops_per_s = e2e["saturation"]["ops_per_s"].as_f64().unwrap_or(0.0);
    let ops = e2e["saturation"]["ops"].as_f64().unwrap_or(1.0).max(1.0);
    let cpu: serde_json::Map<String, Value> = e2e["saturation"]["resources"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, r)| {
                    let ms = r["cpu_s"].as_f64().unwrap_or(0.0) * 1000.0 / ops;
                    (name.clone(), json!((ms * 1000.0).round() / 1000.0))
                })
                .collect()
        })
        .unwrap_or_default();
    let total: f64 = cpu.values().filter_map(Value::as_f64).sum();
    json!({
        "ops_per_s": ops_per_s,
        "ratio_to_loop": if base > 0.0 { ((ops_per_s / base) * 1000.0).round() / 1000.0 } else { 0.0 },
        "light_p50_ms": e2e["light"]["latency"]["p50_ms"],
        "light_p99_ms": e2e["light"]["latency"]["p99_ms"],
        "cpu_ms_per_op": cpu,
        "cpu_ms_per_op_total": (total * 1000.0).round() / 1000.0,
    })
}
