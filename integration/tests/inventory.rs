//! What the watchers keep and tell, against a real nats-server, kube-sim, the real
//! dispatcher, and real workers (processes where one is SIGKILLed): the inventory's
//! health and drift, and the events in `LONGSHORE_EVENTS`, each told once:
//!
//! - a change made with kubectl behind longshore's back is drift, and one event, even
//!   when the member that saw it dies before recording it and its successor sees it again;
//! - a watch whose history is compacted (410) lists again, and nothing it missed is lost
//!   or told twice;
//! - a Deployment rolling out moves through progressing to ready, and to failed when its
//!   rollout misses its deadline;
//! - the inventory stays writable across a restart of the nats-server (lease revisions,
//!   the fencing epochs, keep growing);
//! - a cluster its watches cannot reach is told `unreachable` once, then `recovered`.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use longshore_integration::{
    dispatcher::Dispatcher,
    nats::NatsServer,
    wait::eventually,
    worker::{self, Worker},
};
use longshore_kube_sim::{KubeSim, Rollouts, SimOptions};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    nats: NatsServer,
    sim: KubeSim,
    dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
    js: jetstream::Context,
    dispatcher: Dispatcher,
    http: reqwest::Client,
}

impl Setup {
    async fn start(clusters: &[&str]) -> Self {
        let nats = NatsServer::start().await.unwrap();
        let sim = KubeSim::start(SimOptions {
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).unwrap();
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let dispatcher = Dispatcher::start(&nats.url(), clusters).await.unwrap();
        Self {
            nats,
            sim,
            dir,
            kubeconfig,
            js,
            dispatcher,
            http: reqwest::Client::new(),
        }
    }

    /// Submits an apply of `manifests` to `cluster` and waits for it to succeed; its id.
    async fn apply(&self, cluster: &str, manifests: Value) -> String {
        let accepted: Value = self
            .http
            .post(format!("{}/v1/operations", self.dispatcher.url))
            .json(&json!({"cluster": cluster, "action": "apply", "manifests": manifests}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = accepted["id"].as_str().expect("accepted").to_owned();
        let record: Value = self
            .http
            .get(format!(
                "{}/v1/operations/{id}?wait=30s",
                self.dispatcher.url
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(record["state"], "succeeded", "{record}");
        id
    }

    /// Runs kubectl against `cluster` (without blocking the runtime kube-sim serves on);
    /// its stdout.
    async fn kubectl(&self, cluster: &str, args: &[&str]) -> String {
        let out = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--context", cluster, "--cache-dir"])
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .output()
            .await
            .expect("kubectl runs (integration/test.sh installs it)");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sets the ConfigMap `name`'s `data.k` with `kubectl patch`.
    async fn kubectl_set_data(&self, cluster: &str, name: &str, value: &str) {
        let patch = json!({"data": {"k": value}}).to_string();
        self.kubectl(
            cluster,
            &["patch", "configmap", name, "--type=merge", "-p", &patch],
        )
        .await;
    }

    /// An object's inventory record, if there is one.
    async fn record(&self, key: &str) -> Option<Value> {
        let kv = self.js.get_key_value("LONGSHORE_INVENTORY").await.ok()?;
        let value = kv.get(key).await.ok()??;
        serde_json::from_slice(&value).ok()
    }

    /// Waits until `key`'s record satisfies `ok`; the record.
    async fn record_until(&self, key: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        eventually(WAIT, what, || async {
            self.record(key).await.filter(|r| ok(r))
        })
        .await
        .unwrap()
    }

    /// Every event in the stream about `cluster`, oldest first.
    async fn events(&self, cluster: &str) -> Vec<Value> {
        let stream = self.js.get_stream("LONGSHORE_EVENTS").await.unwrap();
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("longshore.events.{cluster}.>"),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .unwrap();
        if consumer.cached_info().num_pending == 0 {
            return Vec::new();
        }
        let mut messages = consumer.messages().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = messages.next().await {
            let m = m.unwrap();
            out.push(serde_json::from_slice(&m.payload).unwrap());
            if m.info().unwrap().pending == 0 {
                break;
            }
        }
        out
    }

    /// The events of `kind` about the object `name`.
    async fn events_of(&self, cluster: &str, name: &str, kind: &str) -> Vec<Value> {
        self.events(cluster)
            .await
            .into_iter()
            .filter(|e| e["object"]["name"] == name && e["type"] == kind)
            .collect()
    }

    /// Who holds `cluster`'s watch lease.
    async fn holder(&self, cluster: &str) -> Option<String> {
        let kv = self.js.get_key_value("LONGSHORE_WATCH_LEASES").await.ok()?;
        let value = kv.get(cluster).await.ok()??;
        let lease: Value = serde_json::from_slice(&value).ok()?;
        lease["holder"].as_str().map(str::to_owned)
    }
}

fn deployment(name: &str, image: &str, replicas: u32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image}]}}}})
}

fn config_map(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"k": value}})
}

const WEB: &str = "c0.apps.Deployment.default.web";

#[tokio::test]
async fn drift_made_with_kubectl_is_recorded_and_told_once_even_across_a_takeover() {
    let setup = Setup::start(&["c0"]).await;
    let logs = setup.dir.path();
    let mut workers = [
        Some(worker::process(&setup.nats.url(), &setup.kubeconfig, logs, "worker-a").unwrap()),
        Some(worker::process(&setup.nats.url(), &setup.kubeconfig, logs, "worker-b").unwrap()),
    ];
    let op = setup
        .apply("c0", json!([deployment("web", "web:1", 2)]))
        .await;
    let clean = setup
        .record_until(WEB, "the Deployment in the inventory", |r| {
            r["lastOperation"] == op.as_str()
        })
        .await;
    assert_eq!(clean["drifted"], false, "{clean}");
    assert_eq!(clean["fieldManager"], "longshore", "{clean}");
    // The managed label is what the watch selects by: it is on the object.
    let labels = setup
        .kubectl(
            "c0",
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.metadata.labels}",
            ],
        )
        .await;
    assert!(labels.contains("longshore.io/managed"), "{labels}");

    // Behind longshore's back: kubectl takes .spec.replicas.
    setup
        .kubectl(
            "c0",
            &[
                "patch",
                "deployment",
                "web",
                "--type=merge",
                "-p",
                r#"{"spec":{"replicas":5}}"#,
            ],
        )
        .await;
    let drifted = setup
        .record_until(WEB, "the drift recorded", |r| r["drifted"] == true)
        .await;
    let drift = drifted["drift"].as_array().unwrap();
    assert!(
        drift
            .iter()
            .any(|d| d["path"] == ".spec.replicas" && d["manager"] == "kubectl-patch"),
        "{drifted}"
    );
    let holder = setup.holder("c0").await.expect("a watcher");
    assert_eq!(drifted["watcher"], holder.as_str());
    assert_eq!(setup.events_of("c0", "web", "drifted").await.len(), 1);

    // The holder dies between publishing the drift and recording it: its record is as it
    // was before the drift (put back here, as the crash would have left it).
    let index = if holder == "worker-a" { 0 } else { 1 };
    workers[index].take().unwrap().kill();
    let kv = setup.js.get_key_value("LONGSHORE_INVENTORY").await.unwrap();
    kv.put(WEB, serde_json::to_vec(&clean).unwrap().into())
        .await
        .unwrap();
    let survivor = if index == 0 { "worker-b" } else { "worker-a" };
    let retold = setup
        .record_until(WEB, "the survivor to record the drift again", |r| {
            r["drifted"] == true && r["watcher"] == survivor
        })
        .await;
    assert!(
        retold["epoch"].as_u64() > drifted["epoch"].as_u64(),
        "{retold}"
    );
    // It published the drift again, with the same id: JetStream kept one.
    let told = setup.events_of("c0", "web", "drifted").await;
    assert_eq!(told.len(), 1, "drift told more than once: {told:?}");
    let created = setup.events_of("c0", "web", "created").await;
    assert_eq!(created.len(), 1, "created told more than once: {created:?}");
    let rv = drifted["resourceVersion"].as_str().unwrap();
    let changed: Vec<Value> = setup
        .events_of("c0", "web", "changed")
        .await
        .into_iter()
        .filter(|e| e["resourceVersion"] == rv)
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");

    // A new operation takes the field back: no drift any more.
    let op2 = setup
        .apply("c0", json!([deployment("web", "web:1", 2)]))
        .await;
    setup
        .record_until(WEB, "the drift cleared by the next operation", |r| {
            r["lastOperation"] == op2.as_str() && r["drifted"] == false
        })
        .await;
}

#[tokio::test]
async fn a_compacted_watch_history_relists_without_losing_or_repeating_an_event() {
    let setup = Setup::start(&["c0"]).await;
    let worker = Worker::start(&setup.nats.url(), &setup.kubeconfig, "worker-0");
    setup
        .apply(
            "c0",
            json!([
                config_map("a", "1"),
                config_map("b", "1"),
                config_map("c", "1")
            ]),
        )
        .await;
    for name in ["a", "b", "c"] {
        setup
            .record_until(
                &format!("c0.core.ConfigMap.default.{name}"),
                "the ConfigMaps in the inventory",
                |_| true,
            )
            .await;
    }
    let relists = || worker::counter(&worker.metrics_url, "longshore_worker_watch_relists_total");
    let before = relists().await.expect("the relist counter");
    let told_before = setup.events("c0").await.len();

    // The history goes under the open watches; meanwhile `a` changes and `b` goes.
    setup.sim.cluster("c0").unwrap().expire_watches();
    // Behind longshore's back: kubectl takes the field longshore applied.
    setup.kubectl_set_data("c0", "a", "2").await;
    setup.kubectl("c0", &["delete", "configmap", "b"]).await;
    let a = setup
        .record_until("c0.core.ConfigMap.default.a", "a's change recorded", |r| {
            r["drifted"] == true
        })
        .await;
    eventually(WAIT, "b gone from the inventory", || async {
        setup
            .record("c0.core.ConfigMap.default.b")
            .await
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
    eventually(WAIT, "the watches to list again", || async {
        relists().await.filter(|n| *n > before)
    })
    .await
    .unwrap();

    let new: Vec<Value> = setup.events("c0").await.split_off(told_before);
    let of = |name: &str, kind: &str| {
        new.iter()
            .filter(|e| e["object"]["name"] == name && e["type"] == kind)
            .count()
    };
    assert_eq!(of("a", "changed"), 1, "{new:?}");
    assert_eq!(of("a", "drifted"), 1, "{new:?}");
    assert_eq!(of("b", "deleted"), 1, "{new:?}");
    assert!(
        !new.iter().any(|e| e["object"]["name"] == "c"),
        "an unchanged object told again after the relist: {new:?}"
    );
    assert!(
        new.iter()
            .filter(|e| e["object"]["name"] == "a")
            .all(|e| e["resourceVersion"] == a["resourceVersion"]),
        "{new:?}"
    );
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_rolling_deployment_moves_through_progressing_to_ready_then_to_failed() {
    let setup = Setup::start(&["c0"]).await;
    let cluster = setup.sim.cluster("c0").unwrap();
    cluster.set_rollouts(Rollouts::progressing(Duration::from_millis(300)));
    let worker = Worker::start(&setup.nats.url(), &setup.kubeconfig, "worker-0");
    eventually(WAIT, "a watcher", || async { setup.holder("c0").await })
        .await
        .unwrap();
    setup
        .apply("c0", json!([deployment("web", "web:1", 3)]))
        .await;
    setup
        .record_until(WEB, "the rollout to be ready", |r| r["health"] == "ready")
        .await;
    let events = setup.events("c0").await;
    let healths: Vec<&str> = events
        .iter()
        .filter(|e| e["object"]["name"] == "web")
        .filter_map(|e| e["health"].as_str())
        .collect();
    let progressing = healths.iter().position(|h| *h == "progressing");
    let ready = healths.iter().position(|h| *h == "ready");
    assert!(
        progressing.is_some() && progressing < ready,
        "progressing, then ready: {healths:?}"
    );
    assert_eq!(setup.events_of("c0", "web", "ready").await.len(), 1);

    // The next rollout misses its deadline: failed, told once as unhealthy.
    cluster.set_rollouts(Rollouts::failing(Duration::from_millis(500)));
    setup
        .apply("c0", json!([deployment("web", "web:2", 3)]))
        .await;
    let failed = setup
        .record_until(WEB, "the rollout to fail", |r| r["health"] == "failed")
        .await;
    assert!(
        failed["healthReason"]
            .as_str()
            .is_some_and(|r| r.contains("ProgressDeadlineExceeded")),
        "{failed}"
    );
    // Told once for this rollout (generation 2), however often the watch saw it failed.
    let generation = failed["generation"].clone();
    let unhealthy: Vec<Value> = setup
        .events_of("c0", "web", "unhealthy")
        .await
        .into_iter()
        .filter(|e| e["generation"] == generation)
        .collect();
    assert_eq!(unhealthy.len(), 1, "{unhealthy:?}");
    assert_eq!(unhealthy[0]["health"], "failed");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn the_inventory_stays_writable_when_the_nats_server_restarts() {
    let mut setup = Setup::start(&["c0"]).await;
    // Lease revisions are the fencing epochs: move the lease bucket's sequence on, so a
    // bucket that forgot its history on restart would hand out smaller epochs than the
    // records hold.
    let leases = setup
        .js
        .get_key_value("LONGSHORE_WATCH_LEASES")
        .await
        .unwrap();
    for _ in 0..5 {
        leases.put("warm-up", "{}".into()).await.unwrap();
    }
    leases.purge("warm-up").await.unwrap();
    let worker = Worker::start(&setup.nats.url(), &setup.kubeconfig, "worker-0");
    setup.apply("c0", json!([config_map("a", "1")])).await;
    let key = "c0.core.ConfigMap.default.a";
    let before = setup
        .record_until(key, "a in the inventory", |_| true)
        .await;
    assert!(before["epoch"].as_u64() > Some(5), "{before}");

    let lease = |setup: &Setup| {
        let js = setup.js.clone();
        async move {
            let kv = js.get_key_value("LONGSHORE_WATCH_LEASES").await.ok()?;
            let value = kv.get("c0").await.ok()??;
            serde_json::from_slice::<Value>(&value).ok()
        }
    };
    let held = lease(&setup).await.expect("c0's lease");
    setup.nats.restart().await.unwrap();
    // The lease outlives the restart and is renewed, not taken anew: its epoch stands.
    eventually(WAIT, "the lease renewed after the restart", || async {
        lease(&setup).await.filter(|l| {
            l["acquiredAt"] == held["acquiredAt"] && l["renewedAt"] != held["renewedAt"]
        })
    })
    .await
    .unwrap();
    // So a change after the restart is recorded: the watcher is not fenced out by what it
    // wrote before.
    // Behind longshore's back: kubectl takes the field longshore applied.
    setup.kubectl_set_data("c0", "a", "2").await;
    setup
        .record_until(key, "the change after the restart recorded", |r| {
            r["drifted"] == true
        })
        .await;
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_cluster_the_watches_cannot_reach_is_told_once_as_unreachable_then_recovered() {
    let setup = Setup::start(&["c0"]).await;
    let worker = Worker::start(&setup.nats.url(), &setup.kubeconfig, "worker-0");
    setup.apply("c0", json!([config_map("a", "1")])).await;
    setup
        .record_until("c0.core.ConfigMap.default.a", "a in the inventory", |_| {
            true
        })
        .await;
    let cluster = setup.sim.cluster("c0").unwrap();
    let told = |kind: &'static str| {
        let setup = &setup;
        async move {
            setup
                .events("c0")
                .await
                .into_iter()
                .filter(|e| e["type"] == kind && e["object"].is_null())
                .collect::<Vec<Value>>()
        }
    };

    // Every connection to the cluster is reset; the open watches end, and every start
    // again fails.
    cluster.set_faults(longshore_kube_sim::Faults {
        unavailable: true,
        ..Default::default()
    });
    cluster.expire_watches();
    let unreachable = eventually(WAIT, "the cluster told unreachable", || async {
        let e = told("unreachable").await;
        (!e.is_empty()).then_some(e)
    })
    .await
    .unwrap();
    assert_eq!(unreachable[0]["id"], "c0:unreachable:1");
    assert!(unreachable[0]["message"].is_string(), "{unreachable:?}");
    let watch = |setup: &Setup| {
        let url = format!("{}/v1/clusters/c0", setup.dispatcher.url);
        let http = setup.http.clone();
        async move {
            let body: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            Some(body["watch"].clone())
        }
    };
    eventually(WAIT, "the dispatcher to show it unreachable", || async {
        watch(&setup).await.filter(|w| w["reachable"] == false)
    })
    .await
    .unwrap();
    // Retried meanwhile, and still told once.
    let restarts = || worker::counter(&worker.metrics_url, "longshore_worker_watch_restarts_total");
    eventually(
        WAIT,
        "the watches to have failed more than once",
        || async { restarts().await.filter(|n| *n >= 2.0) },
    )
    .await
    .unwrap();
    assert_eq!(told("unreachable").await.len(), 1);

    // The cluster answers again.
    cluster.set_faults(longshore_kube_sim::Faults::default());
    let recovered = eventually(WAIT, "the cluster told recovered", || async {
        let e = told("recovered").await;
        (!e.is_empty()).then_some(e)
    })
    .await
    .unwrap();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(recovered[0]["id"], "c0:recovered:2");
    eventually(WAIT, "the dispatcher to show it reachable", || async {
        watch(&setup).await.filter(|w| w["reachable"] == true)
    })
    .await
    .unwrap();
    assert_eq!(told("unreachable").await.len(), 1);
    worker.stop().await.unwrap();
}
