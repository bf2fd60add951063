//! A fleet: thousands of registered clusters. How long a worker takes to be ready with all
//! of them and how much memory it holds, then a fleet-wide rollout of one operation per
//! cluster.

use std::time::{Duration, Instant};

use futures::StreamExt;
use longshore_contract::jetstream as names;
use longshore_integration::wait::eventually;
use serde_json::{Value, json};

use crate::{
    rig::{Rig, apply_configmap},
    stats::memory_mib,
};

pub async fn run(clusters: usize, workers: usize) -> anyhow::Result<Value> {
    let names_: Vec<String> = (0..clusters).map(|i| format!("c{i:05}")).collect();
    let mut rig = Rig::start(names_.clone(), 1).await?;

    // Ready: the worker has loaded every cluster and joined the pool's consumer.
    let client = async_nats::connect(rig.nats_url.clone()).await?;
    let js = async_nats::jetstream::new(client);
    let started = Instant::now();
    rig.add_worker(&[])?;
    let log = rig.log_dir().join("worker-0.log");
    eventually(
        Duration::from_secs(120),
        "the worker to pull operations",
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move { text.contains("pulling operations").then_some(()) }
        },
    )
    .await?;
    let ready = started.elapsed();
    let pid = rig.workers[0].pid().unwrap_or(0);
    let rss = memory_mib(pid, "VmRSS");
    let _ = js.get_stream(names::STREAM).await?;
    for _ in 1..workers {
        rig.add_worker(&[])?;
    }

    // A fleet-wide rollout: one operation per cluster.
    let started = Instant::now();
    let submitted: Vec<_> = futures::stream::iter(names_.iter().enumerate())
        .map(|(i, cluster)| {
            let rig = &rig;
            async move {
                rig.submit(i, &apply_configmap(cluster, "fleet-config", i))
                    .await
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let (_, last) = rig.wait_all(&submitted, Duration::from_secs(600)).await?;
    let rollout = last.duration_since(started);
    let rss_after = memory_mib(pid, "VmHWM");
    rig.stop_workers().await;
    Ok(json!({
        "clusters": clusters, "workers": workers,
        "worker_ready_s": (ready.as_secs_f64() * 1000.0).round() / 1000.0,
        "worker_rss_ready_mib": rss, "worker_peak_rss_mib": rss_after,
        "rollout_s": (rollout.as_secs_f64() * 100.0).round() / 100.0,
    }))
}
