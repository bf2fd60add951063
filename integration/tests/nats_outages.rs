//! What a worker does when NATS fails under it, with real nats-server processes killed:
//!
//! - told to stop, it exits within its `drain_grace` whatever NATS does (Kubernetes kills a
//!   pod that overstays `terminationGracePeriodSeconds`, and a pod stuck in Terminating
//!   holds up a rollout or a scale-in);
//! - its pulls failing (a consumer with no leader answers 503), it backs off instead of
//!   asking again at once, and pulls again when the consumer is back.

use std::time::{Duration, Instant};

use longshore_contract::jetstream::{ensure_consumer, ensure_stream};
use longshore_integration::worker::Worker;
use longshore_integration::{
    dispatcher::Dispatcher,
    nats::{NatsCluster, NatsServer},
    process::{Process, binary, free_port},
    wait::eventually,
};
use longshore_kube_sim::{KubeSim, Rollouts, SimOptions};
use serde_json::{Value, json};

const GRACE: Duration = Duration::from_secs(2);
/// What the process may take beyond the grace: starting the exit, the runtime's teardown.
const SLACK: Duration = Duration::from_millis(1500);

fn worker(
    nats_url: &str,
    kubeconfig: &std::path::Path,
    port: u16,
    logs: &std::path::Path,
) -> Process {
    Process::spawn(
        &format!("worker-{port}"),
        &binary("longshore-worker").unwrap(),
        &[],
        &[
            ("LONGSHORE_NATS__URL", nats_url.to_owned()),
            ("LONGSHORE_NATS__REQUEST_TIMEOUT", "2s".into()),
            ("LONGSHORE_WORKER_ID", format!("worker-{port}")),
            ("LONGSHORE_LISTEN", format!("127.0.0.1:{port}")),
            ("LONGSHORE_DRAIN_GRACE", "2s".into()),
            (
                "LONGSHORE_CLUSTERS__KUBECONFIG",
                kubeconfig.display().to_string(),
            ),
        ],
        logs,
    )
    .unwrap()
}

/// SIGTERM, then how long the process took to exit 0 (`None`: not within `within`).
async fn stop_timed(process: &mut Process, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let clean = process.terminate(within).await.unwrap();
    clean.then(|| started.elapsed())
}

#[tokio::test]
async fn a_worker_drains_within_its_grace_when_nats_is_gone() {
    let mut nats = NatsServer::start().await.unwrap();
    let sim = KubeSim::start(SimOptions {
        clusters: vec!["prod".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    // Rollouts never finish: the operation below stays in flight, waiting.
    sim.cluster("prod").unwrap().set_rollouts(Rollouts::stuck());
    let logs = tempfile::tempdir().unwrap();
    let kubeconfig = logs.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let port = free_port();
    let mut busy = worker(&nats.url(), &kubeconfig, port, logs.path());
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(20), "the worker to be ready", || {
        let r = http.get(format!("http://127.0.0.1:{port}/readyz")).send();
        async move { r.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await
    .unwrap();

    let dispatcher = Dispatcher::start(&nats.url(), &["prod"]).await.unwrap();
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}});
    let accepted: Value = http
        .post(format!("{}/v1/operations", dispatcher.url))
        .json(
            &json!({"cluster": "prod", "action": "apply", "manifests": [deployment],
            "options": {"wait": {"timeout": "5m"}}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = accepted["id"].as_str().expect("accepted").to_owned();
    eventually(
        Duration::from_secs(20),
        "the operation to be running",
        || {
            let r = http
                .get(format!("{}/v1/operations/{id}", dispatcher.url))
                .send();
            async move {
                let record: Value = r.await.ok()?.json().await.ok()?;
                (record["state"] == "running").then_some(())
            }
        },
    )
    .await
    .unwrap();

    // NATS goes away for good; then the pod is told to stop.
    nats.kill();
    let took = stop_timed(&mut busy, GRACE + SLACK).await;
    assert!(
        took.is_some(),
        "the worker holding an operation did not exit 0 within {:?} of SIGTERM with NATS gone; see {}",
        GRACE + SLACK,
        busy.log_path().display()
    );

    // A worker that never reached NATS stops as promptly.
    let port = free_port();
    let mut idle = worker(&nats.url(), &kubeconfig, port, logs.path());
    eventually(Duration::from_secs(20), "the worker's listener", || {
        let r = http.get(format!("http://127.0.0.1:{port}/healthz")).send();
        async move { r.await.ok().map(|_| ()) }
    })
    .await
    .unwrap();
    let took = stop_timed(&mut idle, GRACE + SLACK).await;
    assert!(
        took.is_some(),
        "a worker that never connected did not exit 0 within {:?}; see {}",
        GRACE + SLACK,
        idle.log_path().display()
    );
}

/// Messages the server has received from the client connection named `name`.
async fn sent_by(http: &reqwest::Client, monitoring: &str, name: &str) -> Option<u64> {
    let connz: Value = http
        .get(format!("{monitoring}/connz"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    connz["connections"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)?["in_msgs"]
        .as_u64()
}

#[tokio::test]
async fn failing_pulls_back_off_and_pulling_resumes_when_the_consumer_is_back() {
    let mut nats = NatsCluster::start(3).await.unwrap();
    let sim = KubeSim::start(SimOptions {
        clusters: vec!["prod".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let kubeconfig = logs.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let urls = nats.urls();
    let mut config = Worker::config(&nats.url(), &kubeconfig, "w1");
    config.nats.jetstream.replicas = 3;
    let settings = config.nats.jetstream.clone();
    let pool = config.pool_consumer();

    // The work queue and the pool's consumer, on all three nodes; and which node leads the
    // consumer, so the worker can be put on one that does not.
    let admin = async_nats::jetstream::new(async_nats::connect(urls.clone()).await.unwrap());
    let stream = eventually(Duration::from_secs(20), "the R3 stream", || {
        let (admin, settings) = (admin.clone(), settings.clone());
        async move { ensure_stream(&admin, settings.stream()).await.ok() }
    })
    .await
    .unwrap();
    let leader = eventually(Duration::from_secs(20), "the consumer's leader", || {
        let (stream, pool) = (stream.clone(), pool.clone());
        async move {
            let mut consumer = ensure_consumer(&stream, &pool).await.ok()?;
            let info = consumer.info().await.ok()?;
            info.cluster.as_ref()?.leader.clone()
        }
    })
    .await
    .unwrap();
    let survivor = (0..3)
        .find(|i| NatsCluster::node_name(*i) != leader)
        .unwrap();
    let port = free_port();
    let mut worker = Process::spawn(
        "worker",
        &binary("longshore-worker").unwrap(),
        &[],
        &[
            ("LONGSHORE_NATS__URL", urls[survivor].clone()),
            ("LONGSHORE_NATS__JETSTREAM__REPLICAS", "3".into()),
            ("LONGSHORE_WORKER_ID", "puller".into()),
            ("LONGSHORE_LISTEN", format!("127.0.0.1:{port}")),
            (
                "LONGSHORE_CLUSTERS__KUBECONFIG",
                kubeconfig.display().to_string(),
            ),
        ],
        logs.path(),
    )
    .unwrap();
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(20), "the worker to be ready", || {
        let r = http.get(format!("http://127.0.0.1:{port}/readyz")).send();
        async move { r.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await
    .unwrap();

    // The two other nodes die: the consumer has no leader and no quorum to elect one, so
    // every pull is answered 503 (no responders).
    for i in (0..3).filter(|i| *i != survivor) {
        nats.kill(i);
    }
    let monitoring = nats.monitoring_url(survivor);
    let before = sent_by(&http, &monitoring, "puller").await.unwrap();
    // The pull in flight at the kill ends when its timer does; then pulls start failing.
    let failing = eventually(Duration::from_secs(20), "pulls to fail", || {
        let (http, monitoring) = (http.clone(), monitoring.clone());
        async move {
            let now = sent_by(&http, &monitoring, "puller").await?;
            (now >= before + 2).then_some(now)
        }
    })
    .await
    .unwrap();
    // What two seconds of failing pulls cost the server.
    let window = tokio::time::Instant::now() + Duration::from_secs(2);
    tokio::time::sleep_until(window).await;
    let after = sent_by(&http, &monitoring, "puller").await.unwrap();
    let sent = after - failing;
    assert!(
        sent <= 20,
        "{sent} messages in 2s while every pull fails: pulls are retried without a pause; see {}",
        worker.log_path().display()
    );

    // The nodes come back, the consumer gets a leader, and the worker pulls again.
    for i in (0..3).filter(|i| *i != survivor) {
        nats.restart(i).await.unwrap();
    }
    let dispatcher = Dispatcher::start(&nats.url(), &["prod"]).await.unwrap();
    // As a pipeline would: the same key again while the cluster is still electing leaders
    // (503, Retry-After).
    let id = eventually(
        Duration::from_secs(30),
        "the operation to be accepted",
        || {
            let r = http
                .post(format!("{}/v1/operations", dispatcher.url))
                .header("idempotency-key", "after-the-outage")
                .json(&json!({"cluster": "prod", "action": "apply", "manifests": [
                {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "after", "namespace": "default"}, "data": {"k": "v"}}]}))
                .send();
            async move {
                let accepted: Value = r.await.ok()?.json().await.ok()?;
                accepted["id"].as_str().map(str::to_owned)
            }
        },
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(30), "the operation to succeed", || {
        let r = http
            .get(format!("{}/v1/operations/{id}", dispatcher.url))
            .send();
        async move {
            let record: Value = r.await.ok()?.json().await.ok()?;
            (record["state"] == "succeeded").then_some(())
        }
    })
    .await
    .unwrap();
    assert!(worker.terminate(Duration::from_secs(10)).await.unwrap());
}
