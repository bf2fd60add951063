//! The fleet rollout chaos test: four rollouts over 200 kube-sim clusters, from 2
//! dispatchers to 3 workers (real processes), while a worker is SIGKILLed and restarted every
//! second, a dispatcher SIGKILLed and restarted every 3 s, and every cluster answers slowly,
//! answers 5xx and resets connections after committing writes.
//!
//! - `a`: 100 clusters in waves `1, 10%, 50%, 100%`, no failure allowed (the faults are
//!   transient): it must succeed;
//! - `b`: 70 clusters in waves `5, 50%, 100%`, a 1 s pause between waves and an approval
//!   before the third, given (twice) by the test through whichever dispatcher answers;
//! - `c`: 20 clusters by name in waves `2, 5, 100%`, no failure allowed, and one cluster of
//!   wave 2 refusing every write: it must halt there;
//! - `d`: 10 clusters in waves `2, 100%` an hour apart, cancelled once wave 1 is over.
//!
//! Checked from kube-sim's write logs (its own clock) and the rollouts' status:
//! - every selected cluster's operation is applied exactly once (none twice, none lost);
//! - no wave's first write comes before the last write of the wave before (nor before the
//!   pause after it, nor before its approval);
//! - the halted and the cancelled rollouts touch no cluster of a later wave;
//! - every rollout ends in the terminal state it must, and both queues end empty.
//!
//! `LONGSHORE_CHAOS_SEED` replays a fault schedule; `LONGSHORE_CHAOS_LOGS=DIR` keeps the
//! processes' logs there.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use longshore_contract::jetstream as names;
use longshore_integration::{
    nats::NatsServer,
    process::{Process, binary, free_port},
    wait::eventually,
};
use longshore_kube_sim::{
    ErrorFault, FaultScope, Faults, KubeSim, Latency, SimOptions, Trigger, WriteRecord,
};
use longshore_worker::OPERATION_ID_ANNOTATION;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

const CLUSTERS: usize = 200;
/// The cluster of rollout `c`'s wave 2 that refuses every write.
const DOOMED: &str = "c173";

fn name(i: usize) -> String {
    format!("c{i:03}")
}

fn group(i: usize) -> &'static str {
    match i {
        0..100 => "a",
        100..170 => "b",
        170..190 => "c",
        _ => "d",
    }
}

/// A client that tries each dispatcher in turn until one answers as `ok` allows.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    urls: Vec<String>,
    retries: Arc<AtomicU64>,
}

impl Api {
    /// Sends until a dispatcher answers something other than 503 or no answer at all.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for attempt in 0.. {
            let url = &self.urls[attempt % self.urls.len()];
            let mut req = self.http.request(method.clone(), format!("{url}{path}"));
            if let Some(body) = body {
                req = req.json(body);
            }
            if let Some(key) = key {
                req = req.header("Idempotency-Key", key);
            }
            if let Ok(resp) = req.send().await {
                let code = resp.status().as_u16();
                if code != 503 {
                    return (code, resp.json().await.unwrap_or(Value::Null));
                }
            }
            assert!(
                Instant::now() < deadline,
                "{path}: no dispatcher answered for 60s"
            );
            self.retries.fetch_add(1, Ordering::Relaxed);
            // A pause between attempts, as a pipeline's retry has (not a synchronisation).
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unreachable!()
    }

    async fn status(&self, id: &str) -> Value {
        let (code, body) = self
            .send(
                reqwest::Method::GET,
                &format!("/v1/fleet-rollouts/{id}"),
                None,
                None,
            )
            .await;
        assert_eq!(code, 200, "{body}");
        body
    }
}

fn template(object: &str) -> Value {
    json!({"action": "apply", "manifests": [{
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": object, "namespace": "default"},
        "data": {"rollout": object},
    }]})
}

/// The writes of `object` on `cluster`.
fn writes_of(sim: &KubeSim, cluster: &str, object: &str) -> Vec<WriteRecord> {
    sim.cluster(cluster)
        .unwrap()
        .writes()
        .into_iter()
        .filter(|w| w.name.as_deref() == Some(object))
        .collect()
}

fn time(w: &WriteRecord) -> jiff::Timestamp {
    w.time.parse().unwrap()
}

fn wave_clusters(status: &Value, wave: usize) -> Vec<(String, String, String)> {
    status["waves"][wave]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["state"].as_str().unwrap().to_owned(),
                c["operation"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollout_chaos() {
    let logs = match std::env::var_os("LONGSHORE_CHAOS_LOGS") {
        Some(dir) => tempfile::Builder::new()
            .prefix("rollout-chaos-")
            .tempdir_in(dir)
            .unwrap()
            .keep(),
        None => tempfile::tempdir().unwrap().keep(),
    };
    let nats = NatsServer::start().await.unwrap();
    let names: Vec<String> = (0..CLUSTERS).map(name).collect();
    let sim = KubeSim::start(SimOptions {
        clusters: names.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let kubeconfig = logs.join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();

    let dispatcher_bin = binary("longshore-dispatcher").unwrap();
    let worker_bin = binary("longshore-worker").unwrap();
    let mut dispatchers = Vec::new();
    let mut urls = Vec::new();
    for i in 0..2 {
        let port = free_port();
        urls.push(format!("http://127.0.0.1:{port}"));
        let env = vec![
            ("LONGSHORE_NATS__URL", nats.url()),
            ("LONGSHORE_LISTEN", format!("127.0.0.1:{port}")),
            ("LONGSHORE_CLUSTERS", names.join(",")),
        ];
        dispatchers.push(
            Process::spawn(
                &format!("dispatcher-{i}"),
                &dispatcher_bin,
                &[],
                &env,
                &logs,
            )
            .unwrap(),
        );
    }
    let mut workers = Vec::new();
    for i in 0..3 {
        let env = vec![
            ("LONGSHORE_NATS__URL", nats.url()),
            ("LONGSHORE_WORKER_ID", format!("worker-{i}")),
            ("LONGSHORE_LISTEN", "127.0.0.1:0".to_owned()),
            (
                "LONGSHORE_CLUSTERS__KUBECONFIG",
                kubeconfig.display().to_string(),
            ),
            // Short enough that a killed worker's operations and steps come back quickly.
            ("LONGSHORE_POOL__ACK_WAIT", "4s".into()),
            ("LONGSHORE_POOL__MAX_DELIVER", "100".into()),
            ("LONGSHORE_RETRY__BASE", "50ms".into()),
            ("LONGSHORE_RETRY__MAX", "1s".into()),
            ("LONGSHORE_DRAIN_GRACE", "2s".into()),
        ];
        workers
            .push(Process::spawn(&format!("worker-{i}"), &worker_bin, &[], &env, &logs).unwrap());
    }
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        urls: urls.clone(),
        retries: Arc::new(AtomicU64::new(0)),
    };
    // Labels through the API (any dispatcher), then seen by every dispatcher.
    for (i, cluster) in names.iter().enumerate() {
        let (code, body) = api
            .send(
                reqwest::Method::PATCH,
                &format!("/v1/clusters/{cluster}"),
                Some(&json!({"labels": {"group": group(i)}})),
                None,
            )
            .await;
        assert_eq!(code, 200, "{cluster}: {body}");
    }
    for url in &urls {
        eventually(Duration::from_secs(30), "every label to be seen", || {
            let (http, url) = (api.http.clone(), url.clone());
            async move {
                let body: Value = http
                    .get(format!("{url}/v1/clusters?selector=group&limit=1000"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (body["items"].as_array()?.len() == CLUSTERS).then_some(())
            }
        })
        .await
        .unwrap();
    }

    // Every cluster misbehaves throughout; DOOMED refuses every write as invalid.
    for (i, cluster) in names.iter().enumerate() {
        let mut errors = vec![
            ErrorFault {
                status: 500,
                retry_after_seconds: None,
                when: Trigger::probability(0.03),
            },
            ErrorFault {
                status: 503,
                retry_after_seconds: None,
                when: Trigger::probability(0.03),
            },
        ];
        if *cluster == DOOMED {
            errors.insert(
                0,
                ErrorFault {
                    status: 422,
                    retry_after_seconds: None,
                    when: Trigger::default(),
                },
            );
        }
        sim.cluster(cluster).unwrap().set_faults(Faults {
            scope: if i % 2 == 0 {
                FaultScope::All
            } else {
                FaultScope::Writes
            },
            errors,
            reset_after_commit: Some(Trigger::probability(0.05)),
            // Slow enough that operations published together overlap in time: a wave
            // started early would show in the write log.
            latency: Some(Latency {
                min_ms: 100,
                max_ms: Some(300),
            }),
            ..Default::default()
        });
    }

    // Faults, paced (not synchronisation), from before the first submission until every
    // rollout is over.
    let seed: u64 = std::env::var("LONGSHORE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("rollout chaos: fault schedule seed {seed} (LONGSHORE_CHAOS_SEED={seed} replays it)");
    let stop_faults = Arc::new(AtomicBool::new(false));
    let (worker_kills, dispatcher_kills) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let faults = {
        let (stop, wk, dk) = (
            stop_faults.clone(),
            worker_kills.clone(),
            dispatcher_kills.clone(),
        );
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut tick = 0u64;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                tick += 1;
                if tick.is_multiple_of(2) {
                    let w = rng.random_range(0..workers.len());
                    workers[w].kill();
                    wk.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
                    workers[w].start().unwrap();
                }
                if tick.is_multiple_of(6) {
                    let d = rng.random_range(0..dispatchers.len());
                    dispatchers[d].kill();
                    dk.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
                    dispatchers[d].start().unwrap();
                }
            }
            (workers, dispatchers)
        })
    };

    let started = Instant::now();
    let plans = [
        (
            "a",
            json!({"selector": "group=a"}),
            json!({"waves": [1, "10%", "50%", "100%"]}),
        ),
        (
            "b",
            json!({"selector": "group=b"}),
            json!({"waves": [5, "50%", "100%"], "pause": "1s", "approvalBefore": [3]}),
        ),
        (
            "c",
            json!({"names": (170..190).map(name).collect::<Vec<_>>()}),
            json!({"waves": [2, 5, "100%"], "maxFailures": {"perWave": 0, "total": 0}}),
        ),
        (
            "d",
            json!({"selector": "group=d"}),
            json!({"waves": [2, "100%"], "pause": "1h"}),
        ),
    ];
    let mut ids = BTreeMap::new();
    for (g, clusters, strategy) in &plans {
        let body = json!({"template": template(&format!("fleet-{g}")), "clusters": clusters, "strategy": strategy});
        let (code, accepted) = api
            .send(
                reqwest::Method::POST,
                "/v1/fleet-rollouts",
                Some(&body),
                Some(&format!("chaos-{g}")),
            )
            .await;
        assert_eq!(code, 202, "{g}: {accepted}");
        ids.insert(*g, accepted["id"].as_str().unwrap().to_owned());
    }

    // Drive the controls a person would: approve b's gate (twice), cancel d after wave 1.
    let approved = Arc::new(AtomicBool::new(false));
    let cancelled = Arc::new(AtomicBool::new(false));
    let finals: BTreeMap<&str, Value> =
        eventually(Duration::from_secs(240), "every rollout to end", || {
            let (api, ids) = (api.clone(), ids.clone());
            let (approved, cancelled) = (approved.clone(), cancelled.clone());
            async move {
                let mut finals = BTreeMap::new();
                for (g, id) in &ids {
                    let s = api.status(id).await;
                    if *g == "b"
                        && s["state"] == "waiting_approval"
                        && !approved.load(Ordering::SeqCst)
                    {
                        for _ in 0..2 {
                            let (code, body) = api
                                .send(
                                    reqwest::Method::POST,
                                    &format!("/v1/fleet-rollouts/{id}/approve"),
                                    None,
                                    None,
                                )
                                .await;
                            assert_eq!(code, 200, "approve: {body}");
                        }
                        approved.store(true, Ordering::SeqCst);
                    }
                    if *g == "d"
                        && s["waves"][0]["state"] == "succeeded"
                        && !cancelled.load(Ordering::SeqCst)
                    {
                        let (code, body) = api
                            .send(
                                reqwest::Method::POST,
                                &format!("/v1/fleet-rollouts/{id}/cancel"),
                                None,
                                None,
                            )
                            .await;
                        assert_eq!(code, 200, "cancel: {body}");
                        cancelled.store(true, Ordering::SeqCst);
                    }
                    let over = ["succeeded", "halted", "cancelled"]
                        .contains(&s["state"].as_str().unwrap_or(""));
                    // A halted rollout's wave settles: its operations end, applied or not.
                    let settled = !s["waves"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(|w| w["clusters"].as_array().unwrap())
                        .any(|c| c["state"] == "running");
                    if over && settled {
                        finals.insert(*g, s);
                    }
                }
                (finals.len() == ids.len()).then_some(finals)
            }
        })
        .await
        .unwrap();
    let elapsed = started.elapsed();
    stop_faults.store(true, Ordering::SeqCst);
    let (_workers, _dispatchers) = faults.await.unwrap();
    for cluster in &names {
        sim.cluster(cluster).unwrap().set_faults(Faults::default());
    }

    // Every rollout ends as it must.
    let states: BTreeMap<&str, &str> = finals
        .iter()
        .map(|(g, s)| (*g, s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from([
            ("a", "succeeded"),
            ("b", "succeeded"),
            ("c", "halted"),
            ("d", "cancelled")
        ]),
        "{finals:#?}"
    );

    let mut twice = Vec::new();
    let mut lost = Vec::new();
    let mut early = Vec::new();
    let mut after_stop = Vec::new();
    for (g, s) in &finals {
        let object = format!("fleet-{g}");
        let waves = s["waves"].as_array().unwrap().len();
        let mut last_of_previous: Option<jiff::Timestamp> = None;
        for w in 0..waves {
            let mut first: Option<jiff::Timestamp> = None;
            let mut last: Option<jiff::Timestamp> = None;
            for (cluster, state, op) in wave_clusters(s, w) {
                let writes = writes_of(&sim, &cluster, &object);
                for wr in &writes {
                    let t = time(wr);
                    first = Some(first.map_or(t, |f| f.min(t)));
                    last = Some(last.map_or(t, |l| l.max(t)));
                }
                let applied = writes
                    .iter()
                    .filter(|wr| {
                        wr.changed && wr.annotations.get(OPERATION_ID_ANNOTATION) == Some(&op)
                    })
                    .count();
                let stray = writes
                    .iter()
                    .filter(|wr| {
                        wr.changed && wr.annotations.get(OPERATION_ID_ANNOTATION) != Some(&op)
                    })
                    .count();
                if applied > 1 || stray > 0 {
                    twice.push((g.to_string(), cluster.clone(), applied, stray));
                }
                match state.as_str() {
                    "succeeded" if applied != 1 => {
                        lost.push((g.to_string(), cluster.clone(), state.clone()))
                    }
                    "pending" | "cancelled" if !writes.is_empty() => {
                        after_stop.push((g.to_string(), cluster.clone(), state.clone()))
                    }
                    _ => {}
                }
            }
            if let (Some(previous), Some(first)) = (last_of_previous, first) {
                let pause = if *g == "b" {
                    jiff::SignedDuration::from_secs(1)
                } else {
                    jiff::SignedDuration::ZERO
                };
                if first < previous + pause {
                    early.push((
                        g.to_string(),
                        w + 1,
                        previous.to_string(),
                        first.to_string(),
                    ));
                }
            }
            if *g == "b" && w == 2 {
                let approval: jiff::Timestamp =
                    s["controls"][0]["at"].as_str().unwrap().parse().unwrap();
                if first.is_some_and(|f| f < approval) {
                    early.push((
                        "b (approval)".into(),
                        3,
                        approval.to_string(),
                        first.unwrap().to_string(),
                    ));
                }
                assert_eq!(
                    s["controls"].as_array().unwrap().len(),
                    1,
                    "one approval recorded: {s}"
                );
            }
            if last.is_some() {
                last_of_previous = last;
            }
        }
    }
    // Rollout c halted in wave 2, on the doomed cluster; d was cancelled before wave 2.
    let c = &finals["c"];
    assert_eq!(c["waves"][1]["state"], "failed", "{c}");
    assert!(
        wave_clusters(c, 1)
            .iter()
            .any(|(n, s, _)| n == DOOMED && s == "failed")
    );
    let later_c: usize = wave_clusters(c, 2)
        .iter()
        .map(|(n, _, _)| writes_of(&sim, n, "fleet-c").len())
        .sum();
    let later_d: usize = wave_clusters(&finals["d"], 1)
        .iter()
        .map(|(n, _, _)| writes_of(&sim, n, "fleet-d").len())
        .sum();

    // Both queues end empty: every operation settled, every timer ended with its rollout.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let queues = eventually(Duration::from_secs(30), "the queues to empty", || {
        let js = js.clone();
        async move {
            let mut ops = js.get_stream(names::STREAM).await.ok()?;
            let mut steps = js.get_stream(names::STEPS_STREAM).await.ok()?;
            let (o, s) = (
                ops.info().await.ok()?.state.messages,
                steps.info().await.ok()?.state.messages,
            );
            (o == 0 && s == 0).then_some(())
        }
    })
    .await;

    let writes: usize = names
        .iter()
        .map(|n| sim.cluster(n).unwrap().writes().len())
        .sum();
    println!(
        "rollout chaos: 4 rollouts over {CLUSTERS} clusters, 2 dispatchers, 3 workers; all over after {:.1}s",
        elapsed.as_secs_f64()
    );
    println!(
        "rollout chaos: {} worker SIGKILLs, {} dispatcher SIGKILLs, {} API retries, {writes} writes logged",
        worker_kills.load(Ordering::Relaxed),
        dispatcher_kills.load(Ordering::Relaxed),
        api.retries.load(Ordering::Relaxed)
    );
    println!("rollout chaos: states {states:?}");
    println!(
        "rollout chaos: applied twice {}, lost {}, waves started early {}, touched after a halt or cancel {} (+{later_c} c, +{later_d} d in later waves), queues {}",
        twice.len(),
        lost.len(),
        early.len(),
        after_stop.len(),
        if queues.is_ok() { "empty" } else { "NOT empty" }
    );
    assert!(
        twice.is_empty(),
        "applied twice or by another operation: {twice:?} (logs in {})",
        logs.display()
    );
    assert!(
        lost.is_empty(),
        "succeeded without exactly one effect: {lost:?}"
    );
    assert!(
        early.is_empty(),
        "waves started before their gate: {early:?}"
    );
    assert!(
        after_stop.is_empty(),
        "touched after a halt or cancel: {after_stop:?}"
    );
    assert_eq!(
        (later_c, later_d),
        (0, 0),
        "a later wave of a halted or cancelled rollout was touched"
    );
    queues.unwrap();
    let _ = std::fs::remove_dir_all(&logs);
}
