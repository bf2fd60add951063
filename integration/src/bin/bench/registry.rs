//! The cluster registry at fleet size: 10,000 registered clusters served by kube-sim.
//!
//! - registering them (straight into the bucket, as many writers would), entries/s;
//! - a new dispatcher's and a new worker's time to ready, with the registry full;
//! - their idle memory, once the pool has probed every cluster;
//! - how long a registry change takes to reach each of 3 dispatchers and 3 workers;
//! - listing with a selector over the whole registry;
//! - a worker's memory after it has touched thousands of clusters.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use longshore_contract::registry::{self, ClusterEntry, Credentials, Observed, follow::Follower};
use longshore_contract::{
    ClusterName, PoolName, jetstream::Settings, jetstream::ensure_bucket, store::Store,
};
use longshore_integration::{
    nats::NatsServer,
    process::{Process, binary},
    wait::eventually,
};
use longshore_kube_sim::{KubeSim, SimOptions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::rig::apply_configmap;
use crate::stats::{memory_mib, ms, percentiles};

pub struct Params {
    pub clusters: usize,
    pub replicas: usize,
    pub changes: usize,
    pub touched: usize,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a binary and times it from spawn to `ready_url` answering 200.
async fn start_timed(
    name: &str,
    bin: &str,
    env: &[(&str, String)],
    logs: &Path,
    ready_url: &str,
    http: &reqwest::Client,
) -> anyhow::Result<(Process, Duration)> {
    let started = Instant::now();
    let process = Process::spawn(name, &binary(bin)?, &[], env, logs)?;
    eventually(Duration::from_secs(60), &format!("{name} ready"), || {
        let r = http.get(ready_url).send();
        async move { r.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    })
    .await?;
    Ok((process, started.elapsed()))
}

pub async fn run(p: &Params) -> anyhow::Result<Value> {
    let names: Vec<String> = (0..p.clusters).map(|i| format!("c{i:05}")).collect();
    let nats = NatsServer::start().await?;
    let sim = KubeSim::start(SimOptions {
        clusters: names.clone(),
        ..Default::default()
    })
    .await?;
    let logs = tempfile::tempdir()?;
    let kubeconfigs = logs.path().join("kubeconfigs");
    std::fs::create_dir_all(&kubeconfigs)?;
    // Several files of 500 contexts each, as Secrets (at most 1 MiB each) would hold them.
    let all = sim.kubeconfig();
    let part = |key: &str, range: std::ops::Range<usize>| -> Value {
        Value::Array(
            all[key]
                .as_array()
                .map(|a| a[range.start.min(a.len())..range.end.min(a.len())].to_vec())
                .unwrap_or_default(),
        )
    };
    for (n, start) in (0..names.len()).step_by(500).enumerate() {
        let range = start..start + 500;
        let mut file = all.clone();
        for key in ["clusters", "contexts", "users"] {
            file[key] = part(key, range.clone());
        }
        file["current-context"] = file["contexts"][0]["name"].clone();
        std::fs::write(
            kubeconfigs.join(format!("fleet-{n:03}.json")),
            serde_json::to_vec(&file)?,
        )?;
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;

    // Register the fleet, 64 writes at a time.
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    let settings = Settings::default();
    let bucket = ensure_bucket(&js, registry::clusters_bucket(&settings)).await?;
    let store: Store<ClusterEntry> = Store::new(bucket, registry::CLUSTERS_BUCKET);
    let now = jiff::Timestamp::now();
    let started = Instant::now();
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let store = store.clone();
            async move {
                let entry = ClusterEntry {
                    name: ClusterName::new(name.clone())?,
                    labels: [
                        (
                            "env".to_owned(),
                            if i % 2 == 0 { "prod" } else { "dev" }.to_owned(),
                        ),
                        ("region".to_owned(), ["eu", "us", "ap"][i % 3].to_owned()),
                    ]
                    .into(),
                    pool: PoolName::default_pool(),
                    credentials: Credentials::Kubeconfig {
                        context: name.clone(),
                    },
                    registered_at: now,
                    registered_by: "bench".into(),
                    updated_at: now,
                    updated_by: "bench".into(),
                };
                store.create(name, &entry).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let registration = started.elapsed();

    // New replicas, with the registry full.
    let mut dispatchers = Vec::new();
    let mut dispatcher_urls = Vec::new();
    let mut dispatcher_ready = Vec::new();
    for i in 0..p.replicas {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let env = [
            ("LONGSHORE_NATS__URL", nats.url()),
            ("LONGSHORE_LISTEN", format!("127.0.0.1:{port}")),
            ("LONGSHORE_LOG", "warn".into()),
        ];
        let (process, took) = start_timed(
            &format!("dispatcher-{i}"),
            "longshore-dispatcher",
            &env,
            logs.path(),
            &format!("{url}/readyz"),
            &http,
        )
        .await?;
        dispatchers.push(process);
        dispatcher_urls.push(url);
        dispatcher_ready.push(took);
    }
    let mut workers = Vec::new();
    let mut worker_urls = Vec::new();
    let mut worker_ready = Vec::new();
    let mut ready_rss = Vec::new();
    for i in 0..p.replicas {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let env = [
            ("LONGSHORE_NATS__URL", nats.url()),
            ("LONGSHORE_LISTEN", format!("127.0.0.1:{port}")),
            ("LONGSHORE_WORKER_ID", format!("worker-{i}")),
            ("LONGSHORE_REGISTRY_ENDPOINT", "true".into()),
            // The registry alone: watching 10,000 clusters is measured on its own.
            ("LONGSHORE_WATCH__ENABLED", "false".into()),
            (
                "LONGSHORE_CLUSTERS__KUBECONFIG_DIR",
                kubeconfigs.display().to_string(),
            ),
            ("LONGSHORE_LOG", "warn".into()),
        ];
        let (process, took) = start_timed(
            &format!("worker-{i}"),
            "longshore-worker",
            &env,
            logs.path(),
            &format!("{url}/readyz"),
            &http,
        )
        .await?;
        ready_rss.push(process.pid().and_then(|pid| memory_mib(pid, "VmRSS")));
        workers.push(process);
        worker_urls.push(url);
        worker_ready.push(took);
    }

    // The pool probes the whole fleet; then the replicas are idle.
    let health_kv = ensure_bucket(&js, registry::health_bucket(&settings)).await?;
    let health: Follower<Observed> =
        Follower::start(health_kv, registry::HEALTH_BUCKET, CancellationToken::new());
    let started = Instant::now();
    eventually(Duration::from_secs(300), "every cluster probed", || {
        let done = health.len() >= p.clusters;
        async move { done.then_some(()) }
    })
    .await?;
    let first_probe_round = started.elapsed();
    // A few seconds of the steady state before reading memory (a measurement window).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = |ps: &[Process]| -> Vec<Option<f64>> {
        ps.iter()
            .map(|p| p.pid().and_then(|pid| memory_mib(pid, "VmRSS")))
            .collect()
    };
    let idle_dispatchers = rss(&dispatchers);
    let idle_workers = rss(&workers);

    // A change, and how long until each replica shows it.
    let mut to_dispatchers = Vec::new();
    let mut to_workers = Vec::new();
    for round in 0..p.changes {
        let name = &names[(round * 7919) % names.len()];
        let value = format!("r{round}");
        let t0 = Instant::now();
        let resp = http
            .patch(format!("{}/v1/clusters/{name}", dispatcher_urls[0]))
            .json(&json!({"labels": {"bench": value}}))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "PATCH {}", resp.status());
        let seen = |url: String| {
            let (http, value) = (http.clone(), value.clone());
            async move {
                loop {
                    let entry: Option<Value> =
                        async { http.get(&url).send().await.ok()?.json().await.ok() }.await;
                    if entry.is_some_and(|e| e["labels"]["bench"] == value.as_str()) {
                        return t0.elapsed();
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        };
        let d = futures::future::join_all(
            dispatcher_urls
                .iter()
                .map(|u| seen(format!("{u}/v1/clusters/{name}"))),
        );
        let w = futures::future::join_all(
            worker_urls
                .iter()
                .map(|u| seen(format!("{u}/registry/clusters/{name}"))),
        );
        let (d, w) =
            tokio::time::timeout(Duration::from_secs(30), futures::future::join(d, w)).await?;
        to_dispatchers.extend(d);
        to_workers.extend(w);
    }
    let mut everywhere: Vec<Duration> = to_dispatchers.iter().chain(&to_workers).copied().collect();

    // Listing with a selector over the whole registry (a page of 100), and all of it.
    let mut lists = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        let resp = http
            .get(format!(
                "{}/v1/clusters?selector=env%3Dprod,region%20in%20(eu,us)",
                dispatcher_urls[0]
            ))
            .send()
            .await?;
        let body: Value = resp.json().await?;
        anyhow::ensure!(
            body["items"].as_array().is_some_and(|i| !i.is_empty()),
            "{body}"
        );
        lists.push(t0.elapsed());
    }
    let t0 = Instant::now();
    let (mut listed, mut after): (usize, Option<String>) = (0, None);
    loop {
        let mut url = format!("{}/v1/clusters?limit=1000", dispatcher_urls[0]);
        if let Some(a) = &after {
            url.push_str(&format!("&continue={a}"));
        }
        let body: Value = http.get(url).send().await?.json().await?;
        listed += body["items"].as_array().map_or(0, Vec::len);
        match body["continue"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let full_listing = t0.elapsed();
    anyhow::ensure!(listed == p.clusters, "listed {listed} of {}", p.clusters);

    // One worker left, touching thousands of clusters with one operation each.
    for mut w in workers.drain(1..) {
        let _ = w.terminate(Duration::from_secs(30)).await;
    }
    let records_kv = js
        .get_key_value(longshore_contract::jetstream::OPERATIONS_BUCKET)
        .await?;
    let records: Follower<Value> = Follower::start(
        records_kv,
        longshore_contract::jetstream::OPERATIONS_BUCKET,
        CancellationToken::new(),
    );
    let started = Instant::now();
    let ids: Vec<String> = futures::stream::iter(names.iter().take(p.touched).enumerate())
        .map(|(i, name)| {
            let http = http.clone();
            let url = dispatcher_urls[i % dispatcher_urls.len()].clone();
            async move {
                let body = apply_configmap(name, "touched", i);
                for _ in 0..100 {
                    let resp = http
                        .post(format!("{url}/v1/operations"))
                        .header("Idempotency-Key", format!("touch-{i}"))
                        .json(&body)
                        .send()
                        .await?;
                    if resp.status() == 202 {
                        let v: Value = resp.json().await?;
                        return Ok(v["id"].as_str().unwrap_or_default().to_owned());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                anyhow::bail!("operation for {name} never accepted")
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let waited = eventually(Duration::from_secs(300), "every touching operation", || {
        let done = ids
            .iter()
            .all(|id| records.get(id).is_some_and(|r| r["state"] == "succeeded"));
        async move { done.then_some(()) }
    })
    .await;
    if let Err(e) = waited {
        let mut states = std::collections::BTreeMap::<String, usize>::new();
        let mut example = None;
        for id in &ids {
            let r = records.get(id);
            let state = r.as_ref().map_or("missing".to_owned(), |r| {
                r["state"].as_str().unwrap_or("?").to_owned()
            });
            if state != "succeeded" && example.is_none() {
                example = r;
            }
            *states.entry(state).or_default() += 1;
        }
        let keep = logs.keep();
        anyhow::bail!(
            "{e}: states {states:?}, e.g. {example:?}; logs in {}",
            keep.display()
        );
    }
    let touching = started.elapsed();
    let touched_rss = workers[0].pid().and_then(|pid| memory_mib(pid, "VmRSS"));
    let touched_peak = workers[0].pid().and_then(|pid| memory_mib(pid, "VmHWM"));
    for mut w in workers.drain(..).chain(dispatchers.drain(..)) {
        let _ = w.terminate(Duration::from_secs(30)).await;
    }

    let secs = |d: &[Duration]| -> Vec<f64> { d.iter().map(|d| ms(*d)).collect() };
    Ok(json!({
        "clusters": p.clusters,
        "registration_entries_per_s": (p.clusters as f64 / registration.as_secs_f64()).round(),
        "dispatcher_ready_ms": secs(&dispatcher_ready),
        "worker_ready_ms": secs(&worker_ready),
        "worker_rss_at_ready_mib": ready_rss,
        "first_probe_round_s": (first_probe_round.as_secs_f64() * 100.0).round() / 100.0,
        "idle_rss_mib": {"dispatchers": idle_dispatchers, "workers": idle_workers},
        "change_visible": {
            "dispatchers": percentiles(&mut to_dispatchers),
            "workers": percentiles(&mut to_workers),
            "all": percentiles(&mut everywhere),
        },
        "list_selector_page": percentiles(&mut lists),
        "list_all_ms": ms(full_listing),
        "touched": {"clusters": p.touched, "seconds": (touching.as_secs_f64() * 10.0).round() / 10.0,
                    "worker_rss_mib": touched_rss, "worker_peak_rss_mib": touched_peak},
    }))
}
