//! Clusters as live data, against a real nats-server, kube-sim and the real dispatcher and
//! worker (their `run` functions): registered, relabelled, moved between pools and removed
//! at runtime, with no restart; credentials added and rotated in a watched directory.

use std::path::Path;
use std::time::Duration;

use longshore_integration::{
    dispatcher::Dispatcher, nats::NatsServer, wait::eventually, worker::Worker,
};
use longshore_kube_sim::{KubeSim, SimOptions};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// A worker of `pool` whose credentials are the kubeconfig files in `dir`.
fn worker(nats: &NatsServer, dir: &Path, pool: &str, id: &str) -> Worker {
    worker_with(nats, dir, pool, id, |_| {})
}

fn worker_with(
    nats: &NatsServer,
    dir: &Path,
    pool: &str,
    id: &str,
    tweak: impl FnOnce(&mut longshore_worker::Config),
) -> Worker {
    let mut config = Worker::config(&nats.url(), dir, id);
    config.clusters.kubeconfig = None;
    config.clusters.kubeconfig_dir = Some(dir.to_owned());
    config.clusters.reload_interval = Duration::from_millis(100);
    config.pool.name = pool.into();
    tweak(&mut config);
    Worker::start_with(config)
}

async fn dispatcher(nats: &NatsServer) -> Dispatcher {
    Dispatcher::start(&nats.url(), &[]).await.unwrap()
}

struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    fn of(d: &Dispatcher) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: d.url.clone(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, name: &str, body: Value) -> (u16, Value) {
        let url = format!("{}/v1/clusters/{name}", self.url);
        self.send(self.http.put(url).json(&body)).await
    }

    async fn patch(&self, name: &str, body: Value) -> (u16, Value) {
        let url = format!("{}/v1/clusters/{name}", self.url);
        self.send(self.http.patch(url).json(&body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}{path}", self.url)))
            .await
    }

    /// Registers `name`, waiting (bounded) for its pool to announce the credential.
    async fn register(&self, name: &str, body: Value) -> Value {
        eventually(WAIT, &format!("{name} registered"), || async {
            let (s, b) = self.put(name, body.clone()).await;
            matches!(s, 200 | 201).then_some(b)
        })
        .await
        .unwrap()
    }

    async fn submit(&self, cluster: &str, configmap: &str, value: &str) -> (u16, Value) {
        let body = json!({"cluster": cluster, "action": "apply", "manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": configmap, "namespace": "default"}, "data": {"v": value}}]});
        let url = format!("{}/v1/operations", self.url);
        self.send(self.http.post(url).json(&body)).await
    }

    async fn accept(&self, cluster: &str, configmap: &str, value: &str) -> String {
        let (s, b) = self.submit(cluster, configmap, value).await;
        assert_eq!(s, 202, "{b}");
        b["id"].as_str().unwrap().to_owned()
    }

    async fn record(&self, id: &str) -> Value {
        self.get(&format!("/v1/operations/{id}")).await.1
    }

    async fn terminal(&self, id: &str) -> Value {
        eventually(WAIT, &format!("{id} terminal"), || async {
            let r = self.record(id).await;
            let state = r["state"].as_str()?;
            (state != "queued" && state != "running").then_some(r)
        })
        .await
        .unwrap()
    }

    async fn names(&self, query: &str) -> Vec<String> {
        let (s, b) = self.get(&format!("/v1/clusters{query}")).await;
        assert_eq!(s, 200, "{b}");
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn sim(clusters: &[&str], tokens: bool) -> KubeSim {
    KubeSim::start(SimOptions {
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
        auth_tokens: tokens,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn data(sim: &KubeSim, cluster: &str, name: &str) -> Option<String> {
    sim.cluster(cluster)?
        .get("v1", "ConfigMap", Some("default"), name)?["data"]["v"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn a_cluster_registered_at_runtime_is_served_without_a_restart() {
    let nats = NatsServer::start().await.unwrap();
    let sim = sim(&["prod", "extra"], false).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig_for(dir.path(), "prod").unwrap();
    let d = dispatcher(&nats).await;
    let api = Api::of(&d);
    let _w = worker(&nats, dir.path(), "workers", "w1");
    api.register("prod", json!({"labels": {"env": "prod"}}))
        .await;

    // The pool has no credentials for it yet: refused, naming the field.
    let (s, b) = api.put("extra", json!({})).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["errors"][0]["field"], "credentials", "{b}");
    assert!(
        b["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("kubeconfig:extra"),
        "{b}"
    );
    let (s, _) = api.submit("extra", "cm", "1").await;
    assert_eq!(s, 400, "an unregistered cluster is refused at once");

    // Its kubeconfig arrives in the watched directory; it is registered and used.
    sim.write_kubeconfig_for(dir.path(), "extra").unwrap();
    let entry = api
        .register("extra", json!({"labels": {"env": "dev"}}))
        .await;
    assert_eq!(entry["pool"], "workers");
    assert_eq!(
        entry["credentials"],
        json!({"kind": "kubeconfig", "context": "extra"})
    );
    let id = api.accept("extra", "cm", "1").await;
    let record = api.terminal(&id).await;
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(data(&sim, "extra", "cm").as_deref(), Some("1"));

    // Observed state: the worker probes it.
    let observed = eventually(WAIT, "extra probed", || async {
        let (_, b) = api.get("/v1/clusters/extra").await;
        (b["status"]["phase"] == "ready").then_some(b)
    })
    .await
    .unwrap();
    assert!(
        observed["status"]["observed"]["serverVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with('v')),
        "{observed}"
    );
    assert_eq!(observed["status"]["members"], 1);
}

#[tokio::test]
async fn labels_select_clusters_and_two_dispatchers_see_every_change() {
    let nats = NatsServer::start().await.unwrap();
    let sim = sim(&["a", "b", "c"], false).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig_dir(dir.path()).unwrap();
    let (d1, d2) = (dispatcher(&nats).await, dispatcher(&nats).await);
    let (one, two) = (Api::of(&d1), Api::of(&d2));
    let w = worker_with(&nats, dir.path(), "workers", "w1", |c| {
        c.registry_endpoint = true
    });
    let quiet = worker(&nats, dir.path(), "workers", "w2");
    one.register("a", json!({"labels": {"env": "prod", "region": "eu"}}))
        .await;
    one.register("b", json!({"labels": {"env": "prod", "region": "us"}}))
        .await;
    one.register("c", json!({"labels": {"env": "dev"}})).await;

    let selected = eventually(WAIT, "d2 to see all three", || async {
        let names = two
            .names("?selector=env%3Dprod,region%20in%20(eu,us)")
            .await;
        (names.len() == 2).then_some(names)
    })
    .await
    .unwrap();
    assert_eq!(selected, ["a", "b"]);
    assert_eq!(two.names("?selector=env!%3Dprod").await, ["c"]);
    assert_eq!(two.names("?selector=!region").await, ["c"]);

    // Relabelled through one dispatcher, seen through the other.
    let (s, b) = one
        .patch(
            "a",
            json!({"labels": {"region": "us", "tier": "gold", "env": null}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["labels"], json!({"region": "us", "tier": "gold"}));
    eventually(WAIT, "d2 to see the new labels", || async {
        let names = two.names("?selector=region%3Dus").await;
        (names == ["a", "b"]).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(two.names("?selector=env%3Dprod").await, ["b"]);
    // And by the worker, which follows the registry too.
    let http = reqwest::Client::new();
    eventually(WAIT, "the worker to see the new labels", || async {
        let resp = http
            .get(format!("{}/registry/clusters/a", w.metrics_url))
            .send()
            .await
            .ok()?;
        let entry: Value = resp.json().await.ok()?;
        (entry["labels"] == json!({"region": "us", "tier": "gold"})).then_some(())
    })
    .await
    .unwrap();
    // Off by default: the listener asks for no token.
    let resp = http
        .get(format!("{}/registry/clusters/a", quiet.metrics_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // Pages, in name order.
    let (_, page) = two.get("/v1/clusters?limit=2").await;
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(page["continue"], "b");
    assert_eq!(two.names("?limit=2&continue=b").await, ["c"]);

    // An operation is checked against the registry each dispatcher follows.
    let id = two.accept("c", "cm", "1").await;
    assert_eq!(two.terminal(&id).await["state"], "succeeded");
}

#[tokio::test]
async fn a_rotated_credential_is_used_without_a_restart() {
    let nats = NatsServer::start().await.unwrap();
    let sim = sim(&["prod"], true).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig_dir(dir.path()).unwrap();
    let d = dispatcher(&nats).await;
    let api = Api::of(&d);
    let _w = worker(&nats, dir.path(), "workers", "w1");
    api.register("prod", json!({})).await;
    let id = api.accept("prod", "cm", "1").await;
    assert_eq!(api.terminal(&id).await["state"], "succeeded");

    // The cluster's token is rotated: the worker's is stale, and the API server says 401.
    sim.cluster("prod").unwrap().rotate_token();
    let id = api.accept("prod", "cm", "2").await;
    let record = api.terminal(&id).await;
    assert_eq!(record["state"], "failed", "{record}");
    assert_eq!(record["error"]["class"], "forbidden", "{record}");

    // The new credential lands in the mounted directory: used from then on, no restart.
    sim.write_kubeconfig_for(dir.path(), "prod").unwrap();
    let mut attempt = 0;
    eventually(WAIT, "an operation with the new token", || {
        attempt += 1;
        let value = format!("3-{attempt}");
        let api = &api;
        async move {
            let id = api.accept("prod", "cm", &value).await;
            (api.terminal(&id).await["state"] == "succeeded").then_some(())
        }
    })
    .await
    .unwrap();
    assert!(data(&sim, "prod", "cm").unwrap().starts_with("3-"));
}

#[tokio::test]
async fn moving_a_cluster_between_pools_strands_nothing_and_applies_nothing_twice() {
    let nats = NatsServer::start().await.unwrap();
    let sim = sim(&["x"], false).await;
    let (hub_dir, edge_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sim.write_kubeconfig_dir(hub_dir.path()).unwrap();
    sim.write_kubeconfig_dir(edge_dir.path()).unwrap();
    let d = dispatcher(&nats).await;
    let api = Api::of(&d);
    let hub = worker(&nats, hub_dir.path(), "workers", "hub-1");
    let edge = worker(&nats, edge_dir.path(), "edge", "edge-1");
    api.register("x", json!({"pool": "edge"})).await;
    let id = api.accept("x", "by-edge", "1").await;
    let record = api.terminal(&id).await;
    assert_eq!(
        (record["state"].as_str(), record["worker"].as_str()),
        (Some("succeeded"), Some("edge-1"))
    );

    // The edge pool stops: what is queued for x waits in its subject.
    edge.stop().await.unwrap();
    eventually(WAIT, "the edge pool shown without replicas", || async {
        let (_, b) = api.get("/v1/clusters/x").await;
        (b["status"]["members"] == 0).then_some(())
    })
    .await
    .unwrap();
    let queued: Vec<String> = vec![
        api.accept("x", "q1", "1").await,
        api.accept("x", "q2", "1").await,
    ];
    for id in &queued {
        assert_eq!(api.record(id).await["state"], "queued");
    }
    // Moved to a pool that runs: nothing is left behind with the pool nobody runs.
    let (s, b) = api.put("x", json!({"pool": "workers"})).await;
    assert_eq!(s, 200, "{b}");
    for id in &queued {
        let r = api.terminal(id).await;
        assert_eq!(
            (r["state"].as_str(), r["worker"].as_str()),
            (Some("succeeded"), Some("hub-1")),
            "{r}"
        );
    }

    // Back to edge, whose worker now lacks x's credential, so an operation waits there,
    // retrying (slowly). Meanwhile x moves to the hub, where a newer operation on the same
    // object is applied; when the edge worker then forwards the older one, it keeps its
    // first sequence, so it is superseded rather than applied over the newer.
    let edge = worker_with(&nats, edge_dir.path(), "edge", "edge-2", |c| {
        c.retry.base = Duration::from_secs(10);
        c.retry.max = Duration::from_secs(10);
    });
    api.register("x", json!({"pool": "edge"})).await;
    std::fs::remove_file(edge_dir.path().join("x.yaml")).unwrap();
    eventually(WAIT, "the edge pool without x's credential", || async {
        let (_, b) = api.get("/v1/clusters/x").await;
        (b["status"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no credentials")))
        .then_some(())
    })
    .await
    .unwrap();
    let older = api.accept("x", "o", "older").await;
    eventually(WAIT, "the older operation tried at the edge", || async {
        let r = api.record(&older).await;
        (r["attempts"].as_u64() >= Some(1)).then_some(())
    })
    .await
    .unwrap();
    let (s, b) = api.put("x", json!({"pool": "workers"})).await;
    assert_eq!(s, 200, "{b}");
    let newer = api.accept("x", "o", "newer").await;
    assert_eq!(api.terminal(&newer).await["state"], "succeeded");
    let older_record = api.terminal(&older).await;
    assert_eq!(older_record["state"], "superseded", "{older_record}");
    assert_eq!(data(&sim, "x", "o").as_deref(), Some("newer"));

    // Every operation's write reached the cluster once at most.
    let writes = sim.cluster("x").unwrap().writes();
    for w in writes.iter().filter(|w| w.changed && !w.dry_run) {
        let op = w.annotations.get(longshore_worker::OPERATION_ID_ANNOTATION);
        let same = writes
            .iter()
            .filter(|v| {
                v.changed
                    && v.annotations.get(longshore_worker::OPERATION_ID_ANNOTATION) == op
                    && v.name == w.name
            })
            .count();
        assert_eq!(same, 1, "{op:?} wrote {:?} {same} times", w.name);
    }
    edge.stop().await.unwrap();
    hub.stop().await.unwrap();
}

#[tokio::test]
async fn removing_a_cluster_refuses_while_work_is_queued_unless_forced() {
    let nats = NatsServer::start().await.unwrap();
    let sim = sim(&["y", "z"], false).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig_dir(dir.path()).unwrap();
    let d = dispatcher(&nats).await;
    let api = Api::of(&d);
    let _hub = worker(&nats, dir.path(), "workers", "hub-1");
    // A pool that announced itself and then stopped: its clusters are registered, unserved.
    let idle = worker(&nats, dir.path(), "idle", "idle-1");
    api.register("y", json!({"pool": "idle"})).await;
    idle.stop().await.unwrap();
    let unserved = eventually(WAIT, "y shown unserved", || async {
        let (_, b) = api.get("/v1/clusters/y").await;
        (b["status"]["phase"] == "unserved").then_some(b)
    })
    .await
    .unwrap();
    assert!(
        unserved["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("no replica of pool idle"),
        "{unserved}"
    );

    // Nothing queued: removed at once, and refused from then on.
    api.register("z", json!({})).await;
    let (s, b) = api.delete("/v1/clusters/z").await;
    assert_eq!((s, &b["endedOperations"]), (200, &json!(0)), "{b}");
    eventually(WAIT, "z gone, and refused", || async {
        (api.get("/v1/clusters/z").await.0 == 404 && api.submit("z", "cm", "1").await.0 == 400)
            .then_some(())
    })
    .await
    .unwrap();

    // Work queued for y: 409, unless forced; forced, the work ends failed, not lost.
    let queued = [
        api.accept("y", "a", "1").await,
        api.accept("y", "b", "1").await,
    ];
    let (s, b) = api.delete("/v1/clusters/y").await;
    assert_eq!(s, 409, "{b}");
    assert!(
        b["detail"].as_str().unwrap().contains("2 operation(s)"),
        "{b}"
    );
    assert!(api.get("/v1/clusters/y").await.0 == 200, "still there");
    let (s, b) = api.delete("/v1/clusters/y?force=true").await;
    assert_eq!((s, &b["endedOperations"]), (200, &json!(2)), "{b}");
    for id in &queued {
        let r = api.terminal(id).await;
        assert_eq!(r["state"], "failed", "{r}");
        assert_eq!(r["error"]["class"], "unknown_cluster", "{r}");
        assert!(
            r["error"]["message"].as_str().unwrap().contains("removed"),
            "{r}"
        );
    }
}

#[tokio::test]
async fn every_clusters_endpoint_names_what_is_wrong_with_bad_input() {
    let nats = NatsServer::start().await.unwrap();
    let sim = sim(&["prod"], false).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig_dir(dir.path()).unwrap();
    let d = dispatcher(&nats).await;
    let api = Api::of(&d);
    let _w = worker(&nats, dir.path(), "workers", "w1");
    api.register("prod", json!({})).await;
    let long = "x".repeat(64);
    let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        ("PUT", "/v1/clusters/Bad_Name", Some(json!({})), 400, "name"),
        (
            "PUT",
            "/v1/clusters/prod",
            Some(json!({"labels": {"bad key": "v"}})),
            400,
            "labels",
        ),
        (
            "PUT",
            "/v1/clusters/prod",
            Some(json!({"labels": {"ok": long}})),
            400,
            "labels.ok",
        ),
        (
            "PUT",
            "/v1/clusters/prod",
            Some(json!({"labels": {"ok": 5}})),
            400,
            "labels.ok",
        ),
        (
            "PUT",
            "/v1/clusters/prod",
            Some(json!({"bogus": 1})),
            400,
            "bogus",
        ),
        (
            "PUT",
            "/v1/clusters/prod",
            Some(json!({"pool": "Not.A.Pool"})),
            400,
            "pool",
        ),
        (
            "PUT",
            "/v1/clusters/prod",
            Some(json!({"pool": "nobody"})),
            400,
            "pool",
        ),
        (
            "PUT",
            "/v1/clusters/prod",
            Some(json!({"credentials": {"kind": "token", "value": "x"}})),
            400,
            "credentials.kind",
        ),
        (
            "PUT",
            "/v1/clusters/prod",
            Some(json!({"credentials": {"kind": "kubeconfig", "context": "elsewhere"}})),
            400,
            "credentials",
        ),
        ("PUT", "/v1/clusters/prod", Some(json!([])), 400, ""),
        (
            "PATCH",
            "/v1/clusters/prod",
            Some(json!({"labels": ["a"]})),
            400,
            "labels",
        ),
        ("PATCH", "/v1/clusters/prod", Some(json!({})), 400, "labels"),
        (
            "PATCH",
            "/v1/clusters/prod",
            Some(json!({"labels": {"-bad": "v"}})),
            400,
            "labels",
        ),
        (
            "PATCH",
            "/v1/clusters/nowhere",
            Some(json!({"labels": {"a": "b"}})),
            404,
            "",
        ),
        (
            "GET",
            "/v1/clusters?selector=env%20in%20(",
            None,
            400,
            "selector",
        ),
        ("GET", "/v1/clusters?limit=0", None, 400, "limit"),
        ("GET", "/v1/clusters?bogus=1", None, 400, "query"),
        ("GET", "/v1/clusters/Bad_Name", None, 400, "name"),
        ("GET", "/v1/clusters/nowhere", None, 404, ""),
        ("DELETE", "/v1/clusters/nowhere", None, 404, ""),
        (
            "DELETE",
            "/v1/clusters/prod?force=maybe",
            None,
            400,
            "query",
        ),
    ];
    let http = reqwest::Client::new();
    for (method, path, body, status, field) in cases {
        let mut req = http.request(method.parse().unwrap(), format!("{}{path}", d.url));
        if let Some(body) = &body {
            req = req.json(body);
        }
        let resp = req.send().await.unwrap();
        let got = resp.status().as_u16();
        let problem: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(got, status, "{method} {path} {body:?}: {problem}");
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:longshore:problem:")),
            "{method} {path}: not a problem document: {problem}"
        );
        if status == 400 {
            assert_eq!(
                problem["errors"][0]["field"], field,
                "{method} {path} {body:?}: {problem}"
            );
        }
    }
    let resp = http
        .put(format!("{}/v1/clusters/prod", d.url))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    // Nothing above changed the cluster.
    let (_, b) = api.get("/v1/clusters/prod").await;
    assert_eq!(b["labels"], json!({}));
}

#[tokio::test]
async fn managing_clusters_is_its_own_permission_and_reads_follow_the_policy() {
    use longshore_dispatcher::{config::TokenConfig, policy::PolicyConfig};
    let nats = NatsServer::start().await.unwrap();
    let sim = sim(&["prod", "staging"], false).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig_dir(dir.path()).unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let mut config = Dispatcher::config(&nats.url(), &[]);
    let mut token = |name: &str, value: &str, policy: PolicyConfig| {
        let file = secrets.path().join(name);
        std::fs::write(&file, value).unwrap();
        config.tokens.insert(
            name.into(),
            TokenConfig {
                secret_file: Some(file),
                policy,
                ..Default::default()
            },
        );
    };
    token(
        "admin",
        "admin-token",
        PolicyConfig {
            manage_clusters: true,
            ..Default::default()
        },
    );
    token(
        "ci",
        "ci-token",
        PolicyConfig {
            clusters: vec!["staging".into()],
            ..Default::default()
        },
    );
    let d = Dispatcher::start_with(config).await.unwrap();
    let _w = worker(&nats, dir.path(), "workers", "w1");
    let http = reqwest::Client::new();
    let put = |token: &'static str, name: &'static str| {
        http.put(format!("{}/v1/clusters/{name}", d.url))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
    };
    for name in ["prod", "staging"] {
        eventually(WAIT, "registered by the admin token", || async {
            let s = put("admin-token", name).await.ok()?.status();
            s.is_success().then_some(())
        })
        .await
        .unwrap();
    }
    // An ordinary token may not change the registry, even for a cluster it may use.
    let refused = put("ci-token", "staging").await.unwrap();
    assert_eq!(refused.status(), 403);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("manage_clusters"),
        "{problem}"
    );
    let unauthenticated = http
        .get(format!("{}/v1/clusters", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    // It reads only what its policy allows.
    let listed: Value = http
        .get(format!("{}/v1/clusters", d.url))
        .bearer_auth("ci-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["staging"]);
    let hidden = http
        .get(format!("{}/v1/clusters/prod", d.url))
        .bearer_auth("ci-token")
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 403);
    let removed = http
        .delete(format!("{}/v1/clusters/staging", d.url))
        .bearer_auth("ci-token")
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 403);
}

/// A deployment from before the registry: its stream, its consumer filtering
/// `longshore.ops.>`, and an operation queued on the legacy subject `longshore.ops.prod`.
/// The new binaries, configured as before, pick it up: nothing queued is lost.
#[tokio::test]
async fn an_upgrade_from_the_layout_before_the_registry_loses_nothing_queued() {
    use async_nats::jetstream::{self, consumer};
    use longshore_contract::{
        Envelope, IdempotencyKey, OperationId, OperationRecord,
        envelope::SCHEMA_VERSION,
        jetstream::{STREAM, Settings, ensure_bucket, ensure_stream},
    };
    let nats = NatsServer::start().await.unwrap();
    let sim = sim(&["prod"], false).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();

    // Yesterday's layout, and one operation waiting in it.
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let settings = Settings::default();
    let stream = ensure_stream(&js, settings.stream()).await.unwrap();
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("workers".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            filter_subject: "longshore.ops.>".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let records = ensure_bucket(&js, settings.operations_bucket())
        .await
        .unwrap();
    let key = IdempotencyKey::new("before-the-upgrade").unwrap();
    let envelope = Envelope {
        schema_version: SCHEMA_VERSION,
        id: OperationId::derive("api", &key),
        idempotency_key: key,
        source: "api".into(),
        fingerprint: "f".into(),
        submitted_at: jiff::Timestamp::now(),
        spec: serde_json::from_value(json!({"cluster": "prod", "action": "apply", "manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "old", "namespace": "default"}, "data": {"v": "1"}}]}))
        .unwrap(),
        rollout: None,
    };
    records
        .create(
            envelope.id.as_str(),
            OperationRecord::queued(&envelope).to_bytes(),
        )
        .await
        .unwrap();
    let (_, headers, payload) = envelope
        .to_message(&longshore_contract::PoolName::default_pool())
        .unwrap();
    js.publish_with_headers("longshore.ops.prod", headers, payload)
        .await
        .unwrap()
        .await
        .unwrap();

    // The new binaries, configured the old way.
    let d = Dispatcher::start(&nats.url(), &["prod"]).await.unwrap();
    let api = Api::of(&d);
    let _w = Worker::start(&nats.url(), &kubeconfig, "w1");
    let record = api.terminal(envelope.id.as_str()).await;
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(data(&sim, "prod", "old").as_deref(), Some("1"));
    let mut workers: jetstream::consumer::PullConsumer = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .get_consumer("workers")
        .await
        .unwrap();
    let mut filters = workers.info().await.unwrap().config.filter_subjects.clone();
    filters.sort();
    assert_eq!(filters, ["longshore.ops.*", "longshore.ops.workers.>"]);
    // Seeded into the registry, and new operations take the new subjects.
    let (_, entry) = api.get("/v1/clusters/prod").await;
    assert_eq!(entry["registeredBy"], "config", "{entry}");
    let id = api.accept("prod", "new", "1").await;
    assert_eq!(api.terminal(&id).await["state"], "succeeded");
}
