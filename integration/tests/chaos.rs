//! The chaos test: thousands of operations on a few hundred objects from 2 dispatchers to
//! 3 workers (real processes) over a 3-node JetStream cluster, while workers are SIGKILLed
//! and restarted, dispatchers restarted, a NATS node killed and restarted, and the cluster
//! answers 5xx, 429 and resets connections after committing writes.
//!
//! Checked from kube-sim's write log and final state:
//! - every 202 reaches a terminal status;
//! - no operation's effect is applied twice;
//! - every object ends equal to the intent of the highest-sequence operation applied to it;
//! - the work queue ends empty.
//!
//! `LONGSHORE_CHAOS_OPS` and `LONGSHORE_CHAOS_OBJECTS` set the load (defaults 5000 and 200,
//! the CI mode); `LONGSHORE_CHAOS_LONG=1` runs 50,000 operations on 1,000 objects;
//! `LONGSHORE_CHAOS_SEED` replays a fault schedule; `LONGSHORE_CHAOS_LOGS=DIR` keeps the
//! processes' logs there.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use longshore_contract::jetstream as names;
use longshore_integration::{
    nats::NatsCluster,
    process::{Process, binary, free_port},
    wait::eventually,
};
use longshore_kube_sim::{ErrorFault, FaultScope, Faults, KubeSim, SimOptions, Trigger};
use longshore_worker::OPERATION_ID_ANNOTATION;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The run's log directory: removed when the test passes, kept (and named) when it fails.
struct Logs(std::path::PathBuf);

impl Drop for Logs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("chaos: process logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

struct Counters {
    worker_kills: AtomicU64,
    dispatcher_restarts: AtomicU64,
    nats_node_kills: AtomicU64,
    submit_retries: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos() {
    let long = std::env::var("LONGSHORE_CHAOS_LONG").is_ok_and(|v| v == "1");
    let ops = env_or("LONGSHORE_CHAOS_OPS", if long { 50_000 } else { 5_000 });
    let objects = env_or("LONGSHORE_CHAOS_OBJECTS", if long { 1_000 } else { 200 });
    // Process logs: kept in LONGSHORE_CHAOS_LOGS when set, else a temporary directory that is
    // kept when an assertion fails.
    let logs = match std::env::var_os("LONGSHORE_CHAOS_LOGS") {
        Some(dir) => tempfile::Builder::new()
            .prefix("chaos-")
            .tempdir_in(dir)
            .unwrap()
            .keep(),
        None => tempfile::tempdir().unwrap().keep(),
    };
    let logs = Logs(logs);

    let mut nats = NatsCluster::start(3).await.unwrap();
    let sim = KubeSim::start(SimOptions {
        clusters: vec!["prod".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let kubeconfig = logs.0.as_path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let prod = sim.cluster("prod").unwrap();
    // The protocol's slower paths, seen on the wire (a plain subscriber; a message sent
    // while it reconnects after a node kill is missed, so these are lower bounds): fence
    // reads follow a refused guess (the fence had moved since the worker knew it, or was
    // not new), record reads are claims of redeliveries and fence holders resolved.
    let seen = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(nats.urls())
        .await
        .unwrap();
    let on_wire = async |subject: &'static str| {
        let mut sub = seen.subscribe(subject).await.unwrap();
        let n = Arc::new(AtomicUsize::new(0));
        let counted = n.clone();
        tokio::spawn(async move {
            while sub.next().await.is_some() {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        n
    };
    let fence_reads = on_wire("$JS.API.DIRECT.GET.KV_LONGSHORE_OBJECTS.>").await;
    let record_reads = on_wire("$JS.API.DIRECT.GET.KV_LONGSHORE_OPERATIONS.>").await;
    longshore_integration::nats::round_trip(&seen)
        .await
        .unwrap();

    let common = |extra: Vec<(&'static str, String)>| {
        let mut env = vec![
            ("LONGSHORE_NATS__URL", nats.url()),
            ("LONGSHORE_NATS__JETSTREAM__REPLICAS", "3".to_string()),
        ];
        env.extend(extra);
        env
    };
    let dispatcher_bin = binary("longshore-dispatcher").unwrap();
    let worker_bin = binary("longshore-worker").unwrap();
    let mut dispatchers = Vec::new();
    let mut urls = Vec::new();
    for i in 0..2 {
        let port = free_port();
        urls.push(format!("http://127.0.0.1:{port}"));
        let env = common(vec![
            ("LONGSHORE_LISTEN", format!("127.0.0.1:{port}")),
            ("LONGSHORE_CLUSTERS", "prod".into()),
        ]);
        let env: Vec<(&str, String)> = env.into_iter().collect();
        dispatchers.push(
            Process::spawn(
                &format!("dispatcher-{i}"),
                &dispatcher_bin,
                &[],
                &env,
                logs.0.as_path(),
            )
            .unwrap(),
        );
    }
    let mut workers = Vec::new();
    for i in 0..3 {
        let env = common(vec![
            ("LONGSHORE_WORKER_ID", format!("worker-{i}")),
            ("LONGSHORE_LISTEN", "127.0.0.1:0".to_owned()),
            (
                "LONGSHORE_CLUSTERS__KUBECONFIG",
                kubeconfig.display().to_string(),
            ),
            // Short enough that a killed worker's messages come back quickly.
            ("LONGSHORE_POOL__ACK_WAIT", "4s".into()),
            ("LONGSHORE_POOL__MAX_DELIVER", "100".into()),
            ("LONGSHORE_RETRY__BASE", "50ms".into()),
            ("LONGSHORE_RETRY__MAX", "1s".into()),
            ("LONGSHORE_DRAIN_GRACE", "2s".into()),
        ]);
        workers.push(
            Process::spawn(
                &format!("worker-{i}"),
                &worker_bin,
                &[],
                &env,
                logs.0.as_path(),
            )
            .unwrap(),
        );
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for url in &urls {
        eventually(Duration::from_secs(30), "a dispatcher to be ready", || {
            let r = http.get(format!("{url}/readyz")).send();
            async move { r.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await
        .unwrap();
    }

    // The cluster misbehaves throughout.
    prod.set_faults(Faults {
        scope: FaultScope::All,
        errors: vec![
            ErrorFault {
                status: 500,
                retry_after_seconds: None,
                when: Trigger::probability(0.02),
            },
            ErrorFault {
                status: 503,
                retry_after_seconds: None,
                when: Trigger::probability(0.02),
            },
            ErrorFault {
                status: 429,
                retry_after_seconds: Some(1),
                when: Trigger::probability(0.01),
            },
        ],
        reset_after_commit: Some(Trigger::probability(0.03)),
        ..Default::default()
    });

    // Load: operation i sets object i % objects to the value i.
    let counters = Arc::new(Counters {
        worker_kills: AtomicU64::new(0),
        dispatcher_restarts: AtomicU64::new(0),
        nats_node_kills: AtomicU64::new(0),
        submit_retries: AtomicU64::new(0),
    });
    let started = Instant::now();
    let load = {
        let (http, urls, counters) = (http.clone(), urls.clone(), counters.clone());
        tokio::spawn(async move {
            let accepted: Vec<(usize, String)> = futures::stream::iter(0..ops)
                .map(|i| {
                    let (http, urls, counters) = (http.clone(), urls.clone(), counters.clone());
                    async move {
                        let body = json!({"cluster": "prod", "action": "apply", "manifests": [{
                            "apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": format!("obj-{}", i % objects), "namespace": "default"},
                            "data": {"op": i.to_string()}}]});
                        // A pipeline retries with the same key until it gets its 202.
                        let deadline = Instant::now() + Duration::from_secs(120);
                        let mut attempt = 0usize;
                        loop {
                            let url = &urls[(i + attempt) % urls.len()];
                            let resp = http
                                .post(format!("{url}/v1/operations"))
                                .header("Idempotency-Key", format!("chaos-{i}"))
                                .json(&body)
                                .send()
                                .await;
                            if let Ok(resp) = resp {
                                if resp.status() == 202 {
                                    let v: Value = resp.json().await.unwrap();
                                    return (i, v["id"].as_str().unwrap().to_owned());
                                }
                                assert_eq!(resp.status(), 503, "only unavailability may refuse a valid request");
                            }
                            assert!(Instant::now() < deadline, "operation {i} was never accepted");
                            attempt += 1;
                            counters.submit_retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                })
                .buffer_unordered(32)
                .collect()
                .await;
            accepted
        })
    };

    // Faults, paced (not synchronisation), from the start of the load until every operation
    // is terminal: a worker SIGKILLed and restarted every second, a dispatcher restarted every
    // 3 s (SIGTERM and SIGKILL in turn), one NATS node killed for 3 s.
    let urls_nats = nats.urls();
    // The fault schedule is reproducible: LONGSHORE_CHAOS_SEED replays a run.
    let seed: u64 = std::env::var("LONGSHORE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("chaos: fault schedule seed {seed} (LONGSHORE_CHAOS_SEED={seed} replays it)");
    let stop_faults = Arc::new(AtomicBool::new(false));
    let faults_task = {
        let (counters, stop) = (counters.clone(), stop_faults.clone());
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut tick = 0u64;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                tick += 1;
                if tick.is_multiple_of(2) {
                    let w = rng.random_range(0..workers.len());
                    workers[w].kill();
                    counters.worker_kills.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
                    workers[w].start().unwrap();
                }
                if tick.is_multiple_of(6) {
                    let d = (tick / 6) as usize % dispatchers.len();
                    if (tick / 6).is_multiple_of(2) {
                        dispatchers[d].kill();
                    } else {
                        let _ = dispatchers[d].terminate(Duration::from_secs(5)).await;
                    }
                    dispatchers[d].start().unwrap();
                    counters.dispatcher_restarts.fetch_add(1, Ordering::Relaxed);
                }
                if tick == 3 {
                    let n = rng.random_range(0..nats.len());
                    nats.kill(n);
                    counters.nats_node_kills.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    nats.restart(n).await.unwrap();
                }
            }
            (nats, workers, dispatchers)
        })
    };
    let accepted = load.await.unwrap();
    let load_time = started.elapsed();
    assert_eq!(accepted.len(), ops);

    // Every 202 reaches a terminal status.
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(urls_nats)
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value(names::OPERATIONS_BUCKET).await.unwrap();
    let ids: Vec<String> = accepted.iter().map(|(_, id)| id.clone()).collect();
    let records: HashMap<String, Value> = eventually(
        Duration::from_secs(180),
        "every operation to finish",
        || {
            let (kv, ids) = (kv.clone(), ids.clone());
            async move {
                let records: Vec<Option<(String, Value)>> = futures::stream::iter(ids)
                    .map(|id| {
                        let kv = kv.clone();
                        async move {
                            let bytes = kv.get(id.as_str()).await.ok()??;
                            let v: Value = serde_json::from_slice(&bytes).ok()?;
                            let state = v["state"].as_str()?;
                            (state != "queued" && state != "running").then_some((id, v))
                        }
                    })
                    .buffer_unordered(64)
                    .collect()
                    .await;
                records
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .map(|v| v.into_iter().collect())
            }
        },
    )
    .await
    .unwrap();

    let terminal_time = started.elapsed();
    // Chaos over: every process back up, the cluster behaving.
    stop_faults.store(true, Ordering::SeqCst);
    let (_nats, _workers, _dispatchers) = faults_task.await.unwrap();
    prod.set_faults(Faults::default());

    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for r in records.values() {
        *states
            .entry(r["state"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }

    // No operation's effect is applied twice.
    let writes = prod.writes();
    let mut effects: HashMap<&str, usize> = HashMap::new();
    for w in writes.iter().filter(|w| w.changed && !w.dry_run) {
        if let Some(op) = w.annotations.get(OPERATION_ID_ANNOTATION) {
            *effects.entry(op.as_str()).or_default() += 1;
        }
    }
    let twice: Vec<(&&str, &usize)> = effects.iter().filter(|(_, n)| **n > 1).collect();

    // Every object ends at the intent of the highest-sequence operation applied to it.
    let mut latest: HashMap<usize, (u64, usize)> = HashMap::new();
    for (i, id) in &accepted {
        let r = &records[id];
        let applied = r["state"] == "succeeded" && r["results"][0]["outcome"] != "superseded";
        if applied {
            let seq = r["streamSequence"].as_u64().unwrap();
            let entry = latest.entry(i % objects).or_insert((seq, *i));
            if seq > entry.0 {
                *entry = (seq, *i);
            }
        }
    }
    let mut wrong = Vec::new();
    for (object, (_, i)) in &latest {
        let live = prod.get("v1", "ConfigMap", Some("default"), &format!("obj-{object}"));
        let value = live
            .as_ref()
            .and_then(|o| o["data"]["op"].as_str().map(str::to_owned));
        if value.as_deref() != Some(i.to_string().as_str()) {
            wrong.push((object, i, value));
        }
    }

    // The work queue ends empty.
    let queue_left = eventually(Duration::from_secs(30), "the work queue to empty", || {
        let js = js.clone();
        async move {
            let mut s = js.get_stream(names::STREAM).await.ok()?;
            let n = s.info().await.ok()?.state.messages;
            (n == 0).then_some(n)
        }
    })
    .await;

    let faults = |kind: &str| {
        writes
            .iter()
            .filter(|w| w.fault.as_deref().is_some_and(|f| f.contains(kind)))
            .count()
    };
    println!(
        "chaos: {ops} operations on {objects} objects, 2 dispatchers, 3 workers, 3 NATS nodes"
    );
    println!(
        "chaos: load accepted after {:.1}s, all terminal after {:.1}s ({:.0} operations/s end to end)",
        load_time.as_secs_f64(),
        terminal_time.as_secs_f64(),
        ops as f64 / terminal_time.as_secs_f64()
    );
    println!("chaos: states {states:?}");
    println!(
        "chaos: faults: {} worker SIGKILLs, {} dispatcher restarts, {} NATS node kills, {} submit retries",
        counters.worker_kills.load(Ordering::Relaxed),
        counters.dispatcher_restarts.load(Ordering::Relaxed),
        counters.nats_node_kills.load(Ordering::Relaxed),
        counters.submit_retries.load(Ordering::Relaxed),
    );
    println!(
        "chaos: cluster: {} writes logged, {} changing, faults hit on writes: 5xx/429 {}, reset after commit {}",
        writes.len(),
        writes.iter().filter(|w| w.changed).count(),
        faults("status"),
        faults("reset_after_commit"),
    );
    let (fence_reads, record_reads) = (
        fence_reads.load(Ordering::Relaxed),
        record_reads.load(Ordering::Relaxed),
    );
    println!(
        "chaos: protocol: at least {fence_reads} fence reads after a refused guess, {record_reads} record reads (redeliveries' claims, holders resolved)"
    );
    println!(
        "chaos: operations applied twice: {}; objects not at their latest intent: {}",
        twice.len(),
        wrong.len()
    );
    println!(
        "chaos: work queue left: {}",
        if queue_left.is_ok() {
            "empty".to_string()
        } else {
            "NOT empty".to_string()
        }
    );

    // The guesses were wrong often enough to exercise the read-and-resolve path.
    assert!(
        fence_reads > 0 && record_reads > 0,
        "slow paths never taken"
    );
    assert!(
        twice.is_empty(),
        "operations applied twice: {twice:?} (logs in {})",
        logs.0.display()
    );
    assert!(
        wrong.is_empty(),
        "objects not at their latest intent (object, op, live): {wrong:?}"
    );
    assert_eq!(
        states.get("failed"),
        None,
        "valid operations must not fail: {states:?}"
    );
    queue_left.unwrap();
}
