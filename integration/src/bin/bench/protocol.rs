//! What one operation costs on one server (R1) and on a 3-node JetStream cluster (R3):
//! for each, `runs` rounds of the bare loop and then the full system on the same kind of
//! servers (fresh ones each time), optionally the binaries of another build too, in the
//! same round, so each ratio compares figures taken minutes apart on a noisy machine.
//! Medians are reported, with the CPU milliseconds each process spent per operation at
//! saturation and per message in the bare loop.
//!
//! The figures are CPU-bound on a small machine, so each round also reports the budget: how
//! much CPU per operation the goal ratio ([`GOAL_RATIO`]) leaves on this machine's cores,
//! how much of it the processes that are not longshore's take (nats-server, and kube-sim
//! with the load generator, in the benchmark process), and the ratio the system would reach
//! if the dispatcher and workers cost nothing at all.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::{baseline, e2e, rig};

/// The ratio to the bare loop the budget is worked out for (the single-server goal).
pub const GOAL_RATIO: f64 = 0.12;

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
            let (base, base_cpu, shared_ack_loop) = (
                base["loop_msgs_per_s"].as_f64().unwrap_or(0.0),
                base["loop_cpu_ms_per_msg"].clone(),
                base["loop_shared_ack_msgs_per_s"].as_f64().unwrap_or(0.0),
            );
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
                "protocol: R{replicas} round {}: loop {base} msgs/s \
                 ({shared_ack_loop} acknowledging as the worker does), now {now}, compared {}",
                round + 1,
                compared.as_ref().map_or("-".into(), Value::to_string)
            );
            // The same system against the loop acknowledging as the worker does.
            let shared_ratio = now["ops_per_s"].as_f64().unwrap_or(0.0) / shared_ack_loop.max(1.0);
            rounds.push(json!({
                "loop_msgs_per_s": base, "loop_cpu_ms_per_msg": base_cpu,
                "loop_shared_ack_msgs_per_s": shared_ack_loop,
                "ratio_to_shared_ack_loop": (shared_ratio * 1000.0).round() / 1000.0,
                "now": now, "compared": compared,
            }));
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
                    "loop_shared_ack_msgs_per_s": median(&["loop_shared_ack_msgs_per_s"]),
                    "ratio_to_shared_ack_loop": median(&["ratio_to_shared_ack_loop"]),
                    "light_p50_ms": median(&["now", "light_p50_ms"]),
                    "light_p99_ms": median(&["now", "light_p99_ms"]),
                    "loop_cpu_ms_per_msg": median(&["loop_cpu_ms_per_msg", "total"]),
                    "cpu_ms_per_op_total": median(&["now", "cpu_ms_per_op_total"]),
                    "longshore_cpu_ms_per_op": median(&["now", "budget", "longshore_cpu_ms_per_op"]),
                    "others_cpu_ms_per_op": median(&["now", "budget", "others_cpu_ms_per_op"]),
                    "goal_cpu_ms_per_op": median(&["now", "budget", "goal_cpu_ms_per_op"]),
                    "goal_leaves_longshore_ms_per_op": median(&["now", "budget", "goal_leaves_longshore_ms_per_op"]),
                    "ratio_if_longshore_free": median(&["now", "budget", "ratio_if_longshore_free"]),
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

/// The bare loop on fresh servers like the system's: msgs/s and CPU ms per message.
async fn bare_loop(p: &Params, replicas: usize) -> anyhow::Result<Value> {
    if replicas <= 1 {
        return baseline::run(p.messages, p.e2e.concurrency, p.payload).await;
    }
    let cluster = longshore_integration::nats::NatsCluster::start(replicas).await?;
    baseline::run_at(
        &cluster.url(),
        &cluster.pids(),
        replicas,
        p.messages,
        p.e2e.concurrency,
        p.payload,
    )
    .await
}

/// Throughput, its ratio to the loop, light-load latency, CPU ms per operation at
/// saturation by process, and the [`budget`].
fn summary(e2e: &Value, base: f64) -> Value {
    let ops_per_s = e2e["saturation"]["ops_per_s"].as_f64().unwrap_or(0.0);
    let ops = e2e["saturation"]["ops"].as_f64().unwrap_or(1.0) as usize;
    let mut cpu = baseline::cpu_ms_per(&e2e["saturation"]["resources"], ops);
    let total = cpu
        .as_object_mut()
        .and_then(|m| m.remove("total"))
        .unwrap_or(json!(0.0));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    json!({
        "ops_per_s": ops_per_s,
        "ratio_to_loop": if base > 0.0 { round3(ops_per_s / base) } else { 0.0 },
        "light_p50_ms": e2e["light"]["latency"]["p50_ms"],
        "light_p99_ms": e2e["light"]["latency"]["p99_ms"],
        "budget": budget(&cpu, cores, base),
        "cpu_ms_per_op": cpu,
        "cpu_ms_per_op_total": total,
    })
}

/// Where the CPU of one operation goes against what [`GOAL_RATIO`] allows on `cores`
/// cores, given the bare loop's `base` msgs/s: the goal's operations per second can spend
/// `cores` seconds of CPU each second between them, and of that the processes that are not
/// longshore's (nats-server, the benchmark process with kube-sim) take what they take.
fn budget(cpu_ms_per_op: &Value, cores: usize, base: f64) -> Value {
    let (mut longshore, mut others) = (0.0, 0.0);
    for (name, ms) in cpu_ms_per_op.as_object().into_iter().flatten() {
        let ms = ms.as_f64().unwrap_or(0.0);
        if name.starts_with("dispatcher") || name.starts_with("worker") {
            longshore += ms;
        } else {
            others += ms;
        }
    }
    let cores_ms = cores as f64 * 1000.0;
    let goal = if base > 0.0 {
        cores_ms / (GOAL_RATIO * base)
    } else {
        0.0
    };
    json!({
        "cores": cores,
        "longshore_cpu_ms_per_op": round3(longshore),
        "others_cpu_ms_per_op": round3(others),
        "goal_cpu_ms_per_op": round3(goal),
        "goal_leaves_longshore_ms_per_op": round3(goal - others),
        "ratio_if_longshore_free": if others > 0.0 && base > 0.0 { round3(cores_ms / others / base) } else { 0.0 },
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_splits_longshore_from_the_rest() {
        let cpu = json!({"nats-server": 0.2, "bench+kube-sim": 0.2, "dispatcher-0": 0.1, "worker-0": 0.2, "worker-1": 0.2});
        // 2 cores, a loop of 40,000 msgs/s: the goal is 4,800 ops/s, 2,000 ms / 4,800.
        let b = budget(&cpu, 2, 40_000.0);
        assert_eq!(b["longshore_cpu_ms_per_op"], 0.5);
        assert_eq!(b["others_cpu_ms_per_op"], 0.4);
        assert_eq!(b["goal_cpu_ms_per_op"], 0.417);
        assert_eq!(b["goal_leaves_longshore_ms_per_op"], 0.017);
        // With the dispatcher and workers free: 2,000 / 0.4 = 5,000 ops/s, 0.125 of the loop.
        assert_eq!(b["ratio_if_longshore_free"], 0.125);
    }
}
