//! Fleet rollouts: what coordinating waves costs. 2,000 kube-sim clusters, waves
//! `1, 10%, 100%`:
//!
//! - clusters answering at once: the rollout's total time against the same 2,000 operations
//!   submitted independently in the same run (pairs, alternated), so the difference per
//!   cluster is what the waves' coordination costs; and the gap between one wave's end
//!   and the next one's start;
//! - every write taking 50 ms, a per-cluster concurrency of 1: the total time against the
//!   lower bound those limits imply (each wave takes at least its share of the workers'
//!   slots times one write, the waves one after the other), and against the larger of that
//!   and what the same operations took independently (the machine's own throughput).

use std::time::{Duration, Instant};

use futures::StreamExt;
use longshore_integration::wait::eventually;
use longshore_kube_sim::{FaultScope, Faults, Latency};
use serde_json::{Value, json};

use crate::rig::{Rig, apply_configmap};

pub struct Params {
    pub clusters: usize,
    pub workers: usize,
    /// Operations a worker carries out at once (`pool.concurrency`).
    pub slots: usize,
    pub pairs: usize,
    pub slow_write: Duration,
}

const WAVES: [&str; 3] = ["1", "10%", "100%"];

pub async fn run(p: &Params) -> anyhow::Result<Value> {
    let names: Vec<String> = (0..p.clusters).map(|i| format!("c{i:05}")).collect();
    let mut rig = Rig::start(names.clone(), 1).await?;
    let concurrency = p.slots.to_string();
    for _ in 0..p.workers {
        rig.add_worker(&[("LONGSHORE_POOL__CONCURRENCY", concurrency.clone())])?;
    }
    let http = reqwest::Client::new();
    let url = rig.urls[0].clone();
    // Ready: a first small rollout goes through (every worker has the registry).
    rollout(
        &http,
        &url,
        &names[..1],
        "warm-up",
        1,
        Duration::from_secs(120),
    )
    .await?;

    let mut independent = Vec::new();
    let mut rolled = Vec::new();
    let mut gaps = Vec::new();
    for pair in 0..p.pairs {
        // Alternate which goes first, so a drift of the machine does not favour one.
        for first in [pair % 2 == 0, pair % 2 == 1] {
            if first {
                let started = Instant::now();
                let submitted: Vec<_> = futures::stream::iter(names.iter().enumerate())
                    .map(|(i, c)| {
                        let rig = &rig;
                        async move {
                            rig.submit(i, &apply_configmap(c, &format!("ops-{pair}"), i))
                                .await
                        }
                    })
                    .buffer_unordered(64)
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect::<anyhow::Result<_>>()?;
                let (_, last) = rig.wait_all(&submitted, Duration::from_secs(600)).await?;
                independent.push(last.duration_since(started));
            } else {
                let (took, status) = rollout(
                    &http,
                    &url,
                    &names,
                    &format!("fleet-{pair}"),
                    1,
                    Duration::from_secs(600),
                )
                .await?;
                gaps.extend(wave_gaps(&http, &url, &status).await?);
                rolled.push(took);
            }
        }
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (ops_s, rollout_s) = (med(&mut independent), med(&mut rolled));
    let per_cluster_ms =
        (rollout_s.as_secs_f64() - ops_s.as_secs_f64()) * 1000.0 / p.clusters as f64;
    gaps.sort();
    let gap_p50 = gaps.get(gaps.len() / 2).copied().unwrap_or_default();

    // Slow writes: every write to every cluster takes 50 ms.
    let ms = p.slow_write.as_millis() as u64;
    for name in &names {
        rig.sim
            .cluster(name)
            .expect("a cluster of the rig")
            .set_faults(Faults {
                scope: FaultScope::Writes,
                latency: Some(Latency {
                    min_ms: ms,
                    max_ms: Some(ms),
                }),
                ..Default::default()
            });
    }
    let (slow, status) = rollout(&http, &url, &names, "slow", 1, Duration::from_secs(900)).await?;
    // One write per cluster (a server-side apply); the waves one after the other, each at
    // least ceil(its size / the slots) writes long.
    let slots = p.workers * p.slots;
    let bound: Duration = status["waves"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let size = w["size"].as_u64().unwrap_or(0) as usize;
            p.slow_write * size.div_ceil(slots) as u32
        })
        .sum();
    for name in &names {
        rig.sim
            .cluster(name)
            .expect("a cluster of the rig")
            .set_faults(Faults::default());
    }
    rig.stop_workers().await;
    let secs = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
    // The machine's own bound: the same operations, independently, at once, took this long.
    let machine_bound = bound.max(ops_s);
    Ok(json!({
        "clusters": p.clusters, "workers": p.workers, "slots_per_worker": p.slots,
        "waves": WAVES, "pairs": p.pairs,
        "independent_ops_s": independent.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
        "rollout_s": rolled.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
        "independent_ops_median_s": secs(ops_s),
        "rollout_median_s": secs(rollout_s),
        "rollout_vs_independent": (rollout_s.as_secs_f64() / ops_s.as_secs_f64() * 1000.0).round() / 1000.0,
        "coordination_ms_per_cluster": (per_cluster_ms * 1000.0).round() / 1000.0,
        "wave_gap_p50_ms": (gap_p50.as_secs_f64() * 100_000.0).round() / 100.0,
        "slow": {
            "write_ms": ms, "concurrency": 1,
            "rollout_s": secs(slow), "lower_bound_s": secs(bound),
            "vs_bound": (slow.as_secs_f64() / bound.as_secs_f64().max(1e-9) * 1000.0).round() / 1000.0,
            "machine_bound_s": secs(machine_bound),
            "vs_machine_bound": (slow.as_secs_f64() / machine_bound.as_secs_f64().max(1e-9) * 1000.0).round() / 1000.0,
        },
    }))
}

/// Submits a rollout of `clusters` (listed) applying ConfigMap `object`, waits until it
/// succeeded; its time from submission and its status.
async fn rollout(
    http: &reqwest::Client,
    url: &str,
    clusters: &[String],
    object: &str,
    concurrency: usize,
    within: Duration,
) -> anyhow::Result<(Duration, Value)> {
    let waves: Vec<Value> = if clusters.len() == 1 {
        vec![json!("100%")]
    } else {
        WAVES
            .iter()
            .map(|w| w.parse::<u64>().map_or_else(|_| json!(w), |n| json!(n)))
            .collect()
    };
    let template = apply_configmap("unused", object, 0);
    let body = json!({
        "template": {"action": "apply", "manifests": template["manifests"]},
        "clusters": {"names": clusters},
        "strategy": {"waves": waves, "concurrency": concurrency},
    });
    let started = Instant::now();
    let resp = http
        .post(format!("{url}/v1/fleet-rollouts"))
        .header(
            "Idempotency-Key",
            format!("bench-{}-{object}", std::process::id()),
        )
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 202, "rollout answered {}", resp.status());
    let id = resp.json::<Value>().await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let status = eventually(within, "the rollout to succeed", || {
        let r = http
            .get(format!("{url}/v1/fleet-rollouts/{id}?wait=30s"))
            .send();
        async move {
            let s: Value = r.await.ok()?.json().await.ok()?;
            matches!(
                s["state"].as_str(),
                Some("succeeded" | "halted" | "cancelled")
            )
            .then_some(s)
        }
    })
    .await?;
    let took = started.elapsed();
    anyhow::ensure!(
        status["state"] == "succeeded",
        "the rollout ended {}",
        status["state"]
    );
    Ok((took, status))
}

/// From the last of a wave's operations ending (its record's `finishedAt`) to the next
/// wave's start: what advancing costs.
async fn wave_gaps(
    http: &reqwest::Client,
    url: &str,
    status: &Value,
) -> anyhow::Result<Vec<Duration>> {
    let at = |v: &Value| v.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok());
    let waves: Vec<&Value> = status["waves"].as_array().into_iter().flatten().collect();
    let mut gaps = Vec::new();
    for pair in waves.windows(2) {
        let ops: Vec<String> = pair[0]["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["operation"].as_str().map(str::to_owned))
            .collect();
        let finished: Vec<Option<jiff::Timestamp>> = futures::stream::iter(ops)
            .map(|op| async move {
                let record: Value = http
                    .get(format!("{url}/v1/operations/{op}"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                at(&record["finishedAt"])
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let last = finished.into_iter().flatten().max();
        if let (Some(last), Some(start)) = (last, at(&pair[1]["startedAt"])) {
            gaps.push(start.duration_since(last).unsigned_abs());
        }
    }
    Ok(gaps)
}
