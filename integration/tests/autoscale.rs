//! Worker autoscaling on queue lag, with this test in KEDA's place: real worker processes,
//! a burst of operations against a cluster whose writes are slow, and KEDA's rule
//!
//! ```text
//! desired = clamp(ceil(lag / lagThreshold), minReplicaCount, maxReplicaCount)
//! lag     = num_pending + num_ack_pending of consumer "workers"
//! ```
//!
//! with the lag read as KEDA's `nats-jetstream` scaler reads it: from the server's
//! monitoring endpoint, `/jsz?acc=$G&consumers=true&config=true` (the stream's last sequence
//! when the consumer is missing, as KEDA does). Scale-out starts processes; scale-in sends
//! SIGTERM, as Kubernetes does.
//!
//! Checked: the pool grows from 2 to the maximum and returns to 2 while work still flows;
//! every operation succeeds and changes its object exactly once (kube-sim's write log, by
//! the `longshore.io/operation-id` annotation); every worker taken away exits 0 at once,
//! and what it held finishes far sooner than `ack_wait` (30 s): finished within the drain
//! or handed back, never left to time out.
//!
//! `LONGSHORE_AUTOSCALE_COMPARE=1` first drains the same burst with a fixed 2 workers and
//! prints both drain times (docs/autoscaling.md).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use longshore_contract::jetstream::{DEFAULT_POOL, OPERATIONS_BUCKET, STREAM};
use longshore_integration::{
    dispatcher::Dispatcher,
    nats::NatsServer,
    process::{Process, binary},
    wait::eventually,
};
use longshore_kube_sim::{FaultScope, Faults, KubeSim, Latency, SimOptions};
use longshore_worker::OPERATION_ID_ANNOTATION;
use serde_json::{Value, json};

/// The ScaledObject's settings, scaled down to a test's size.
const LAG_THRESHOLD: u64 = 10;
const MIN_WORKERS: usize = 2;
const MAX_WORKERS: usize = 6;
/// How often KEDA polls (`pollingInterval`; 10 s in deploy/, shorter here).
const POLL: Duration = Duration::from_millis(500);
/// Polls in a row that must ask for fewer workers before scaling in (the HPA's
/// scale-down stabilization window).
const SCALE_IN_AFTER: usize = 3;
const BURST: usize = 400;
/// Operations per second submitted throughout, so scale-in happens while work flows.
const TRICKLE_PER_SECOND: u64 = 15;
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Held work must be finished well before ACK_WAIT would have brought it back.
const HANDBACK_BOUND: Duration = Duration::from_secs(12);

/// The consumer's lag as KEDA's nats-jetstream scaler computes it.
async fn keda_lag(http: &reqwest::Client, monitoring: &str) -> Option<u64> {
    let jsz: Value = http
        .get(format!(
            "{monitoring}/jsz?acc=$G&consumers=true&config=true"
        ))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let account = jsz["account_details"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == "$G")?;
    let stream = account["stream_detail"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == STREAM)?;
    let consumer = stream["consumer_detail"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == DEFAULT_POOL));
    Some(match consumer {
        Some(c) => c["num_pending"].as_u64()? + c["num_ack_pending"].as_u64()?,
        None => stream["state"]["last_seq"].as_u64()?,
    })
}

fn desired(lag: u64, min: usize, max: usize) -> usize {
    (lag.div_ceil(LAG_THRESHOLD) as usize).clamp(min, max)
}

/// Worker processes, named `worker-<n>` in start order.
struct Pool {
    env: Vec<(&'static str, String)>,
    logs: tempfile::TempDir,
    running: Vec<Process>,
    started: usize,
}

impl Pool {
    fn scale_out(&mut self, to: usize) {
        let bin = binary("longshore-worker").unwrap();
        while self.running.len() < to {
            let name = format!("worker-{}", self.started);
            self.started += 1;
            let mut env = self.env.clone();
            env.push(("LONGSHORE_WORKER_ID", name.clone()));
            env.push(("LONGSHORE_LISTEN", "127.0.0.1:0".to_owned()));
            let p = Process::spawn(&name, &bin, &[], &env, self.logs.path()).unwrap();
            self.running.push(p);
        }
    }
}

/// One scale-in: the worker, what it held at SIGTERM, and how it went.
struct ScaleIn {
    worker: String,
    held: Vec<String>,
    exited_cleanly: bool,
    handback: tokio::task::JoinHandle<anyhow::Result<(Duration, usize)>>,
}

struct Run {
    ops: Vec<String>,
    burst_drained: Duration,
    peak: usize,
    back_to_min_while_flowing: bool,
    scale_ins: Vec<ScaleIn>,
    worker_counts: Vec<usize>,
}

async fn records(kv: &async_nats::jetstream::kv::Store, ids: &[String]) -> HashMap<String, Value> {
    futures::stream::iter(ids.to_vec())
        .map(|id| {
            let kv = kv.clone();
            async move {
                let bytes = kv.get(id.as_str()).await.ok()??;
                Some((id, serde_json::from_slice::<Value>(&bytes).ok()?))
            }
        })
        .buffer_unordered(64)
        .filter_map(|r| async move { r })
        .collect()
        .await
}

fn terminal(r: &Value) -> bool {
    !matches!(r["state"].as_str(), Some("queued" | "running") | None)
}

/// Runs the burst and the trickle with KEDA's rule between `MIN_WORKERS` and `max`.
async fn run(max: usize) -> (Run, longshore_kube_sim::ClusterHandle, KubeSim, NatsServer) {
    let nats = NatsServer::start_with_monitoring().await.unwrap();
    let monitoring = nats.monitoring_url().unwrap();
    let sim = KubeSim::start(SimOptions {
        clusters: vec!["prod".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let kubeconfig = logs.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let prod = sim.cluster("prod").unwrap();
    // Slow writes, so the burst outlasts a few polls and workers are the bottleneck, and
    // every operation lasts long enough (over half a second) for its record to show it
    // running, which is how the scale-in below finds the work each worker holds.
    prod.set_faults(Faults {
        scope: FaultScope::Writes,
        latency: Some(Latency {
            min_ms: 600,
            max_ms: Some(900),
        }),
        ..Default::default()
    });
    let dispatcher = Dispatcher::start(&nats.url(), &["prod"]).await.unwrap();
    let mut pool = Pool {
        env: vec![
            ("LONGSHORE_NATS__URL", nats.url()),
            (
                "LONGSHORE_CLUSTERS__KUBECONFIG",
                kubeconfig.display().to_string(),
            ),
            ("LONGSHORE_POOL__CONCURRENCY", "8".into()),
            ("LONGSHORE_POOL__PULL_BATCH", "4".into()),
            // Long, so work left to time out would show; the drain is short, so work
            // still running at SIGTERM is handed back rather than finished.
            (
                "LONGSHORE_POOL__ACK_WAIT",
                format!("{}s", ACK_WAIT.as_secs()),
            ),
            // The shortest allowed: the pull in flight at SIGTERM is read to its end.
            ("LONGSHORE_DRAIN_GRACE", "2s".into()),
        ],
        logs,
        running: Vec::new(),
        started: 0,
    };
    pool.scale_out(MIN_WORKERS);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // KEDA must find the consumer (a worker creates it at start) before the load.
    eventually(Duration::from_secs(30), "the pool's consumer", || {
        let (http, monitoring) = (http.clone(), monitoring.clone());
        async move {
            let jsz: Value = http
                .get(format!("{monitoring}/jsz?acc=$G&consumers=true"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            jsz.to_string()
                .contains(&format!("\"name\":\"{DEFAULT_POOL}\""))
                .then_some(())
        }
    })
    .await
    .unwrap();

    let client = async_nats::connect(nats.url()).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value(OPERATIONS_BUCKET)
        .await
        .unwrap();

    let submit = {
        let (http, url) = (http.clone(), dispatcher.url.clone());
        move |i: String| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let body = json!({"cluster": "prod", "action": "apply", "manifests": [{
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("cm-{i}"), "namespace": "default"},
                    "data": {"n": i}}]});
                let resp = http
                    .post(format!("{url}/v1/operations"))
                    .header("Idempotency-Key", format!("autoscale-{i}"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 202);
                let v: Value = resp.json().await.unwrap();
                v["id"].as_str().unwrap().to_owned()
            }
        }
    };

    // The trickle, paced, until told to stop.
    let stop_trickle = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (submit, stop) = (submit.clone(), stop_trickle.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / TRICKLE_PER_SECOND));
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                ids.push(submit(format!("t{n}")).await);
                n += 1;
            }
            ids
        })
    };

    // The burst, as fast as the dispatcher takes it.
    let started = Instant::now();
    let burst: Vec<String> = futures::stream::iter(0..BURST)
        .map(|i| submit(format!("b{i}")))
        .buffer_unordered(16)
        .collect()
        .await;

    // KEDA's loop: poll the lag, scale out at once, scale in after a stable window.
    let mut below = 0;
    let mut peak = pool.running.len();
    let mut burst_drained = None;
    let mut scale_ins = Vec::new();
    let mut worker_counts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let back_to_min_while_flowing = loop {
        assert!(
            Instant::now() < deadline,
            "the burst never drained and the pool never returned to {MIN_WORKERS}: workers over time {worker_counts:?}"
        );
        tokio::time::sleep(POLL).await;
        let Some(lag) = keda_lag(&http, &monitoring).await else {
            continue;
        };
        let want = desired(lag, MIN_WORKERS, max);
        let have = pool.running.len();
        if want > have {
            pool.scale_out(want);
            below = 0;
        } else if want < have {
            below += 1;
            if below >= SCALE_IN_AFTER {
                below = 0;
                scale_ins.extend(scale_in(&mut pool, want, &kv).await);
            }
        } else {
            below = 0;
        }
        peak = peak.max(pool.running.len());
        worker_counts.push(pool.running.len());
        if burst_drained.is_none()
            && records(&kv, &burst)
                .await
                .values()
                .filter(|r| terminal(r))
                .count()
                == BURST
        {
            burst_drained = Some(started.elapsed());
        }
        if let Some(_drained) = burst_drained
            && pool.running.len() == MIN_WORKERS
            && (peak > MIN_WORKERS || max == MIN_WORKERS)
        {
            let flowing = !stop_trickle.load(Ordering::SeqCst);
            // A little more work through the smaller pool, then stop the trickle.
            tokio::time::sleep(Duration::from_secs(2)).await;
            break flowing;
        }
    };
    stop_trickle.store(true, Ordering::SeqCst);
    let mut ops = burst;
    ops.extend(trickle.await.unwrap());

    // Every operation finishes, long before ack_wait: a worker that exits hands back what
    // reaches its last pull request, so nothing waits for a redelivery.
    let done = eventually(HANDBACK_BOUND, "every operation to finish", || {
        let (kv, ops) = (kv.clone(), ops.clone());
        async move {
            let r = records(&kv, &ops).await;
            (r.len() == ops.len() && r.values().all(terminal)).then_some(())
        }
    })
    .await;
    if let Err(e) = done {
        let r = records(&kv, &ops).await;
        let stuck: Vec<&Value> = r.values().filter(|r| !terminal(r)).take(5).collect();
        panic!(
            "{e} within {HANDBACK_BOUND:?} (ack_wait is {ACK_WAIT:?}): e.g. {stuck:#?}; logs in {}",
            pool.logs.keep().display()
        );
    }
    drop(pool);
    dispatcher.stop().await.unwrap();
    (
        Run {
            ops,
            burst_drained: burst_drained.unwrap(),
            peak,
            back_to_min_while_flowing,
            scale_ins,
            worker_counts,
        },
        prod,
        sim,
        nats,
    )
}

/// Takes the pool down to `to` workers with SIGTERM, the busiest first (Kubernetes picks
/// its own victims; the busiest show the hand-back best). For each, records what it held
/// and starts a bounded wait for that work to finish.
async fn scale_in(
    pool: &mut Pool,
    to: usize,
    kv: &async_nats::jetstream::kv::Store,
) -> Vec<ScaleIn> {
    let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let keys: Vec<String> = {
        let mut keys = kv.keys().await.unwrap();
        let mut out = Vec::new();
        while let Some(Ok(k)) = keys.next().await {
            out.push(k);
        }
        out
    };
    for (id, r) in records(kv, &keys).await {
        if r["state"] == "running"
            && let Some(w) = r["worker"].as_str()
        {
            held.entry(w.to_owned()).or_default().push(id);
        }
    }
    pool.running
        .sort_by_key(|p| held.get(&p.name).map_or(0, Vec::len));
    let mut out = Vec::new();
    while pool.running.len() > to {
        let mut p = pool.running.pop().unwrap();
        let held = held.remove(&p.name).unwrap_or_default();
        let sigterm = Instant::now();
        // drain_grace is 100 ms: a clean exit within seconds, never a wait for ack_wait.
        let exited_cleanly = p.terminate(Duration::from_secs(10)).await.unwrap();
        let (kv, ids, worker) = (kv.clone(), held.clone(), p.name.clone());
        let handback = tokio::spawn(async move {
            let done = eventually(HANDBACK_BOUND, "held work to finish", || {
                let (kv, ids) = (kv.clone(), ids.clone());
                async move {
                    let r = records(&kv, &ids).await;
                    (r.len() == ids.len() && r.values().all(terminal)).then_some(r)
                }
            })
            .await?;
            let elsewhere = done
                .values()
                .filter(|r| r["worker"].as_str() != Some(worker.as_str()))
                .count();
            Ok((sigterm.elapsed(), elsewhere))
        });
        out.push(ScaleIn {
            worker: p.name.clone(),
            held,
            exited_cleanly,
            handback,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_follow_the_lag_from_2_to_max_and_back_without_losing_or_repeating_work() {
    let compare = std::env::var("LONGSHORE_AUTOSCALE_COMPARE").is_ok_and(|v| v == "1");
    let fixed = if compare {
        let (fixed, ..) = run(MIN_WORKERS).await;
        Some(fixed.burst_drained)
    } else {
        None
    };

    let (run, prod, _sim, _nats) = run(MAX_WORKERS).await;
    println!(
        "autoscale: burst of {BURST} drained in {:.1}s with KEDA's rule (lagThreshold {LAG_THRESHOLD}, {MIN_WORKERS}..{MAX_WORKERS} workers); workers per poll: {:?}",
        run.burst_drained.as_secs_f64(),
        run.worker_counts
    );
    if let Some(fixed) = fixed {
        println!(
            "autoscale: the same burst with a fixed {MIN_WORKERS} workers drained in {:.1}s",
            fixed.as_secs_f64()
        );
    }

    assert_eq!(
        run.peak, MAX_WORKERS,
        "the pool grows to the maximum under the burst: {:?}",
        run.worker_counts
    );
    assert!(
        run.back_to_min_while_flowing,
        "the pool returns to {MIN_WORKERS} while operations still arrive: {:?}",
        run.worker_counts
    );

    // Every operation succeeded and changed its object exactly once.
    let writes = prod.writes();
    let mut changes: HashMap<&str, usize> = HashMap::new();
    for w in writes.iter().filter(|w| w.changed && !w.dry_run) {
        if let Some(op) = w.annotations.get(OPERATION_ID_ANNOTATION) {
            *changes.entry(op.as_str()).or_default() += 1;
        }
    }
    let wrong: Vec<(&String, usize)> = run
        .ops
        .iter()
        .map(|id| (id, changes.get(id.as_str()).copied().unwrap_or(0)))
        .filter(|(_, n)| *n != 1)
        .collect();
    assert!(
        wrong.is_empty(),
        "operations not applied exactly once (id, changing writes): {wrong:?}"
    );
    let client = async_nats::connect(_nats.url()).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value(OPERATIONS_BUCKET)
        .await
        .unwrap();
    let states = records(&kv, &run.ops).await;
    let failed: Vec<&Value> = states
        .values()
        .filter(|r| r["state"] != "succeeded")
        .collect();
    assert!(failed.is_empty(), "operations not succeeded: {failed:?}");

    // Scale-in: clean exits, held work finished long before ack_wait.
    assert!(!run.scale_ins.is_empty());
    let (mut held, mut elsewhere) = (0, 0);
    for s in run.scale_ins {
        assert!(s.exited_cleanly, "{} did not exit 0 on SIGTERM", s.worker);
        let (took, moved) = s
            .handback
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{}'s held work {:?}: {e}", s.worker, s.held));
        println!(
            "autoscale: {} held {} running operations at SIGTERM; all finished {:.1}s later, {moved} by another worker",
            s.worker,
            s.held.len(),
            took.as_secs_f64()
        );
        held += s.held.len();
        elsewhere += moved;
    }
    println!(
        "autoscale: {held} operations held at SIGTERM, {elsewhere} finished by another worker"
    );
    assert!(
        held > 0,
        "scale-in must catch work in flight, or the hand-back went unchecked"
    );
}
