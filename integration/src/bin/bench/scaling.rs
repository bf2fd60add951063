//! Horizontal scaling: kube-sim adds 50 ms to every write, so throughput is bound by how
//! many operations are in flight across the pool, not by this machine's CPU. Runs 1, 2, 4
//! and 8 workers and reports throughput and efficiency against linear.

use std::time::{Duration, Instant};

use futures::StreamExt;
use longshore_kube_sim::{FaultScope, Faults, Latency};
use serde_json::{Value, json};

use crate::rig::{Rig, apply_configmap};

pub async fn run(
    worker_counts: &[usize],
    ops_per_worker: usize,
    worker_concurrency: usize,
) -> anyhow::Result<Value> {
    let mut rig = Rig::start(vec!["prod".into()], 1).await?;
    rig.sim
        .cluster("prod")
        .expect("cluster")
        .set_faults(Faults {
            scope: FaultScope::Writes,
            latency: Some(Latency {
                min_ms: 50,
                max_ms: None,
            }),
            ..Default::default()
        });
    let mut runs = Vec::new();
    let mut one = None;
    for (round, &workers) in worker_counts.iter().enumerate() {
        for _ in 0..workers {
            rig.add_worker(&[(
                "LONGSHORE_POOL__CONCURRENCY",
                worker_concurrency.to_string(),
            )])?;
        }
        let ops = ops_per_worker * workers;
        let started = Instant::now();
        let submitted: Vec<_> = futures::stream::iter(0..ops)
            .map(|i| {
                let rig = &rig;
                let n = round * 1_000_000 + i;
                async move {
                    rig.submit(
                        n,
                        &apply_configmap("prod", &format!("scale-{round}-{i}"), i),
                    )
                    .await
                }
            })
            .buffer_unordered(256)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let (_, last) = rig.wait_all(&submitted, Duration::from_secs(600)).await?;
        let throughput = ops as f64 / last.duration_since(started).as_secs_f64();
        let base = *one.get_or_insert(throughput);
        let efficiency = throughput / (base * workers as f64);
        println!("scaling: {workers} worker(s): {throughput:.1} ops/s, efficiency {efficiency:.2}");
        runs.push(json!({"workers": workers, "ops": ops, "ops_per_s": throughput.round(), "efficiency_vs_linear": (efficiency * 100.0).round() / 100.0}));
        rig.stop_workers().await;
    }
    Ok(json!({"write_latency_ms": 50, "worker_concurrency": worker_concurrency, "runs": runs}))
}
