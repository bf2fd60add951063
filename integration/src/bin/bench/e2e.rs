//! The full system, HTTP submit to applied on kube-sim to status succeeded: latency at a
//! fixed light offered load, then throughput at saturation, with each process's CPU time
//! and memory.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::{
    rig::{Rig, apply_configmap},
    stats::{Meter, memory_mib, percentiles},
};

#[derive(Clone)]
pub struct Params {
    pub light_rate: u32,
    pub light_seconds: u64,
    pub saturation_ops: usize,
    pub concurrency: usize,
    pub dispatchers: usize,
    pub workers: usize,
    pub worker_concurrency: usize,
    /// Whether the workers watch the cluster (their default).
    pub watch: bool,
    /// Replicas of the stream and buckets: 1 (one server) or 3 (a 3-node cluster).
    pub replicas: usize,
}

pub async fn run(p: &Params) -> anyhow::Result<Value> {
    let mut rig = Rig::start_replicated(vec!["prod".into()], p.dispatchers, p.replicas).await?;
    for _ in 0..p.workers {
        rig.add_worker(&[
            (
                "LONGSHORE_POOL__CONCURRENCY",
                p.worker_concurrency.to_string(),
            ),
            ("LONGSHORE_WATCH__ENABLED", p.watch.to_string()),
        ])?;
    }
    // Warm up: one operation through every worker's cold caches (discovery, connections).
    let warm: Vec<_> = futures::future::try_join_all((0..4).map(|i| {
        let rig = &rig;
        async move {
            rig.submit(i, &apply_configmap("prod", &format!("warm-{i}"), i))
                .await
        }
    }))
    .await?;
    rig.wait_all(&warm, Duration::from_secs(60)).await?;
    let idle: Value = rig
        .processes()
        .iter()
        .map(|(name, pid)| (name.clone(), json!(memory_mib(*pid, "VmRSS"))))
        .collect::<serde_json::Map<_, _>>()
        .into();

    // Light load: a fixed offered rate, each operation on its own object.
    let meter = Meter::start(&rig.processes());
    let n = (p.light_rate as u64 * p.light_seconds) as usize;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(p.light_rate)));
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut submitted: Vec<(String, Instant)> = Vec::with_capacity(n);
    let mut next = 0;
    while submitted.len() < n {
        tokio::select! {
            _ = ticker.tick(), if next < n => {
                let (rig, i) = (&rig, next);
                in_flight.push(async move { rig.submit(i, &apply_configmap("prod", &format!("light-{i}"), i)).await });
                next += 1;
            }
            Some(result) = in_flight.next() => submitted.push(result?),
        }
    }
    drop(in_flight);
    let (mut light, _) = rig.wait_all(&submitted, Duration::from_secs(120)).await?;
    let light_resources = meter.finish();

    // Saturation: as many as the system takes.
    let meter = Meter::start(&rig.processes());
    let started = Instant::now();
    let submitted: Vec<(String, Instant)> = futures::stream::iter(0..p.saturation_ops)
        .map(|i| {
            let rig = &rig;
            async move {
                rig.submit(
                    100_000 + i,
                    &apply_configmap("prod", &format!("sat-{}", i % 2000), i),
                )
                .await
            }
        })
        .buffer_unordered(p.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let (mut sat, last) = rig.wait_all(&submitted, Duration::from_secs(600)).await?;
    let elapsed = last.duration_since(started).as_secs_f64();
    let sat_resources = meter.finish();
    rig.stop_workers().await;

    Ok(json!({
        "replicas": p.replicas, "dispatchers": p.dispatchers, "workers": p.workers, "worker_concurrency": p.worker_concurrency,
        "idle_rss_mib": idle,
        "light": {"offered_ops_per_s": p.light_rate, "ops": n, "latency": percentiles(&mut light), "resources": light_resources},
        "saturation": {
            "ops": p.saturation_ops, "client_concurrency": p.concurrency,
            "ops_per_s": (p.saturation_ops as f64 / elapsed).round(),
            "latency": percentiles(&mut sat), "resources": sat_resources,
        },
    }))
}
