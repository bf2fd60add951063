//! Watching a fleet: 2,000 clusters with 20 managed objects each, watched by 4 workers.
//!
//! - how evenly the watch leases spread over the workers;
//! - each worker's memory once every object is in the inventory;
//! - from a change in a cluster to its event on `LONGSHORE_EVENTS`: p50 and p99;
//! - a SIGKILLed worker's clusters watched again: median and maximum from the kill;
//! - the cost of watching for the single-operation throughput: `e2e` saturation with
//!   watching on and off, alternated in the same run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use longshore_contract::inventory::INVENTORY_BUCKET;
use longshore_contract::jetstream::{Settings, ensure_bucket};
use longshore_contract::registry::{self, Lease, follow::Follower};
use longshore_integration::wait::eventually;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::e2e;
use crate::rig::Rig;
use crate::stats::{memory_mib, ms, percentiles};

pub struct Params {
    pub clusters: usize,
    pub objects: usize,
    pub workers: usize,
    /// Changes made to measure event latency.
    pub changes: usize,
    /// Pairs of e2e runs (watching off, then on).
    pub pairs: usize,
    pub e2e: e2e::Params,
}

/// An apply of `n` ConfigMaps into `cluster`.
fn apply_objects(cluster: &str, n: usize) -> Value {
    let manifests: Vec<Value> = (0..n)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i:02}"), "namespace": "default"},
                "data": {"value": i.to_string()}})
        })
        .collect();
    json!({"cluster": cluster, "action": "apply", "manifests": manifests})
}

pub async fn run(p: &Params) -> anyhow::Result<Value> {
    let names: Vec<String> = (0..p.clusters).map(|i| format!("w{i:04}")).collect();
    let mut rig = Rig::start(names.clone(), 1).await?;
    let started = Instant::now();
    for _ in 0..p.workers {
        rig.add_worker(&[("LONGSHORE_POOL__CONCURRENCY", "64".into())])?;
    }
    let client = async_nats::connect(rig.nats_url.clone()).await?;
    let js = async_nats::jetstream::new(client.clone());
    let settings = Settings::default();
    let leases_kv = ensure_bucket(&js, registry::leases_bucket(&settings)).await?;
    let leases: Follower<Lease> =
        Follower::start(leases_kv, registry::LEASES_BUCKET, CancellationToken::new());
    eventually(Duration::from_secs(300), "every cluster leased", || {
        let done = leases.len() >= p.clusters;
        async move { done.then_some(()) }
    })
    .await?;
    let all_leased = started.elapsed();
    // Memory with every cluster watched but nothing managed yet: what the watches cost
    // apart from the objects.
    let rss_of = |rig: &Rig| -> Value {
        rig.processes()
            .iter()
            .filter(|(name, _)| name.starts_with("worker"))
            .map(|(name, pid)| (name.clone(), json!(memory_mib(*pid, "VmRSS"))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let watching = eventually(
        Duration::from_secs(120),
        "every cluster's watches open",
        || {
            let open = names
                .iter()
                .all(|n| rig.sim.cluster(n).is_some_and(|c| c.open_watches() > 0));
            async move { open.then_some(()) }
        },
    )
    .await;
    watching?;
    let rss_empty = rss_of(&rig);

    // Every cluster gets its managed objects, through longshore.
    let started = Instant::now();
    let submitted: Vec<(String, Instant)> = futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let rig = &rig;
            async move { rig.submit(i, &apply_objects(name, p.objects)).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    rig.wait_all(&submitted, Duration::from_secs(900)).await?;
    let applied = started.elapsed();
    // A record per object, and one per cluster saying its watches reach it.
    let stream = format!("KV_{INVENTORY_BUCKET}");
    let want = (p.clusters * (p.objects + 1)) as u64;
    let recorded = eventually(
        Duration::from_secs(600),
        "every object in the inventory",
        || {
            let (js, stream) = (js.clone(), stream.clone());
            async move {
                let mut inventory = js.get_stream(stream).await.ok()?;
                let n = inventory.info().await.ok()?.state.messages;
                (n >= want).then_some(())
            }
        },
    )
    .await;
    let inventoried = started.elapsed();
    recorded?;

    // Spread, and memory.
    let mut held: BTreeMap<String, usize> = BTreeMap::new();
    leases.scan(None, |_, lease| {
        *held.entry(lease.holder.clone()).or_default() += 1;
        true
    });
    let even = p.clusters as f64 / p.workers as f64;
    let worst = held
        .values()
        .map(|n| (*n as f64 - even).abs() / even)
        .fold(0.0, f64::max);
    let rss = rss_of(&rig);

    // A change in a cluster, and its event on the stream.
    let mut events = client.subscribe("longshore.events.>").await?;
    let http = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(p.changes);
    for k in 0..p.changes {
        let cluster = &names[(k * 7919) % names.len()];
        let name = format!("cm-{:02}", k % p.objects);
        let url = format!(
            "{}/api/v1/namespaces/default/configmaps/{name}",
            rig.sim.server_url(cluster)
        );
        let t0 = Instant::now();
        let patched: Value = http
            .patch(&url)
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({"data": {"bench": k.to_string()}}).to_string())
            .send()
            .await?
            .json()
            .await?;
        let rv = patched["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let seen = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(message) = events.next().await {
                let Ok(event) = serde_json::from_slice::<Value>(&message.payload) else {
                    continue;
                };
                if event["cluster"] == cluster.as_str()
                    && event["object"]["name"] == name.as_str()
                    && event["resourceVersion"] == rv.as_str()
                {
                    return Some(t0.elapsed());
                }
            }
            None
        })
        .await;
        match seen {
            Ok(Some(took)) => latencies.push(took),
            _ => anyhow::bail!("no event for {cluster}/{name} at {rv} within 30 s"),
        }
    }
    drop(events);

    // SIGKILL a worker: its clusters, watched again by the others.
    let victim = "worker-0";
    let theirs: Vec<String> = {
        let mut v = Vec::new();
        leases.scan(None, |name, lease| {
            if lease.holder == victim {
                v.push(name.to_owned());
            }
            true
        });
        v
    };
    let killed = Instant::now();
    rig.workers[0].kill();
    let mut taken: BTreeMap<String, Duration> = BTreeMap::new();
    while taken.len() < theirs.len() && killed.elapsed() < Duration::from_secs(60) {
        for name in &theirs {
            if !taken.contains_key(name) && leases.get(name).is_some_and(|l| l.holder != victim) {
                taken.insert(name.clone(), killed.elapsed());
            }
        }
        // A sampling period, not a wait for anything.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::ensure!(
        taken.len() == theirs.len(),
        "{} of {} clusters taken over within 60 s",
        taken.len(),
        theirs.len()
    );
    let mut takeovers: Vec<Duration> = taken.into_values().collect();
    rig.stop_workers().await;
    drop(rig);

    // The cost of watching for single operations: saturation with watching off and on.
    let mut off = Vec::new();
    let mut on = Vec::new();
    for _ in 0..p.pairs {
        for (watch, into) in [(false, &mut off), (true, &mut on)] {
            let r = e2e::run(&e2e::Params {
                watch,
                ..p.e2e.clone()
            })
            .await?;
            into.push(r["saturation"]["ops_per_s"].as_f64().unwrap_or(0.0));
        }
    }
    let mut ratios: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
    ratios.sort_by(f64::total_cmp);
    let median_ratio = ratios.get(ratios.len() / 2).copied().unwrap_or(0.0);

    Ok(json!({
        "clusters": p.clusters, "objects_per_cluster": p.objects, "workers": p.workers,
        "all_leased_s": (all_leased.as_secs_f64() * 10.0).round() / 10.0,
        "applied_s": (applied.as_secs_f64() * 10.0).round() / 10.0,
        "inventoried_s": (inventoried.as_secs_f64() * 10.0).round() / 10.0,
        "leases_per_worker": held,
        "spread_worst_deviation_from_even": (worst * 1000.0).round() / 1000.0,
        "worker_rss_mib": rss,
        "worker_rss_mib_watching_nothing_managed": rss_empty,
        "change_to_event": percentiles(&mut latencies),
        "takeover": {"clusters": theirs.len(), "from_kill": percentiles(&mut takeovers),
                     "max_ms": takeovers.iter().copied().map(ms).fold(0.0, f64::max)},
        "e2e_ops_per_s": {"watching_off": off, "watching_on": on,
                          "median_ratio_on_over_off": (median_ratio * 1000.0).round() / 1000.0},
    }))
}
