//! Private clusters served by agent pools that reach the hub only through a NATS leaf
//! node, with real servers on loopback: a hub nats-server (JetStream in domain `hub`), a
//! leaf nats-server (no JetStream) that dials out to it as the agent pool's nkey user,
//! kube-sim clusters of which `edge-1` is reachable only with the agents' credentials (the
//! hub's workers have none for it), the real dispatcher and hub worker in-process and the
//! real worker binary as the agents' processes.
//!
//! - operations to the private cluster are applied by its agents only;
//! - with the leaf link cut, operations are accepted and queued at the hub (whose
//!   dispatchers say no agent is connected), and applied once, in order, after it is back;
//! - SIGKILLing one of two agent replicas mid-load loses nothing and doubles nothing;
//! - the hub's permissions on the leaf connection refuse an agent that takes another
//!   pool's operations or writes another cluster's registry entry or heartbeat.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use longshore_contract::agent;
use longshore_contract::{ClusterName, PoolName};
use longshore_integration::{
    dispatcher::Dispatcher, process::Process, wait::eventually, worker::Worker,
};
use longshore_kube_sim::{ClusterHandle, KubeSim, SimOptions};
use longshore_testkit::leaf::{DOMAIN, Hub, Leaf, LeafUser};
use longshore_worker::OPERATION_ID_ANNOTATION;
use serde_json::{Value, json};

const EDGE: &str = "edge-1";
const POOL: &str = "agent-edge-1";
const HUB_CLUSTER: &str = "prod";

/// The hub, a leaf, the hub's dispatcher and worker, and the two kube-sims.
struct Topology {
    hub: Hub,
    leaf: Leaf,
    hub_sim: KubeSim,
    edge_sim: KubeSim,
    dispatcher: Dispatcher,
    hub_worker: Option<Worker>,
    dir: tempfile::TempDir,
    hub_kubeconfig: PathBuf,
    edge_kubeconfig: PathBuf,
    http: reqwest::Client,
}

fn agent_user() -> LeafUser {
    let permissions = agent::permissions(
        &PoolName::new(POOL).unwrap(),
        &ClusterName::new(EDGE).unwrap(),
        Some(DOMAIN),
    );
    LeafUser::new(permissions.nats_conf(""))
}

impl Topology {
    async fn start() -> Self {
        let user = agent_user();
        let hub = Hub::start(&[&user]).await.unwrap();
        let leaf = Leaf::start(&hub.leafnode_url(), &user).await.unwrap();
        let sim = |name: &str| SimOptions {
            clusters: vec![name.to_owned()],
            auth_tokens: true,
            ..Default::default()
        };
        let hub_sim = KubeSim::start(sim(HUB_CLUSTER)).await.unwrap();
        let edge_sim = KubeSim::start(sim(EDGE)).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let hub_kubeconfig = dir.path().join("hub-kubeconfig");
        hub_sim.write_kubeconfig(&hub_kubeconfig).unwrap();
        let edge_kubeconfig = dir.path().join("edge-kubeconfig");
        edge_sim.write_kubeconfig(&edge_kubeconfig).unwrap();
        let dispatcher = Dispatcher::start(&hub.url(), &[]).await.unwrap();
        // The hub's worker registers `prod` from its kubeconfig, which has no `edge-1`.
        let hub_worker = Worker::start(&hub.url(), &hub_kubeconfig, "hub-1");
        let topology = Self {
            hub,
            leaf,
            hub_sim,
            edge_sim,
            dispatcher,
            hub_worker: Some(hub_worker),
            dir,
            hub_kubeconfig,
            edge_kubeconfig,
            http: reqwest::Client::new(),
        };
        topology
            .cluster_until(HUB_CLUSTER, "the hub's worker ready", |c| {
                c["status"]["phase"] == "ready"
            })
            .await;
        topology
    }

    fn agent(&self, id: &str, extra: &[(&str, &str)]) -> Process {
        longshore_integration::worker::agent_process(
            &self.leaf.url(),
            DOMAIN,
            POOL,
            EDGE,
            &self.edge_kubeconfig,
            self.dir.path(),
            id,
            extra,
        )
        .unwrap()
    }

    fn logs(&self) -> &Path {
        self.dir.path()
    }

    async fn cluster(&self, name: &str) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{}/v1/clusters/{name}", self.dispatcher.url))
            .send()
            .await
            .ok()?;
        resp.status().is_success().then_some(())?;
        resp.json().await.ok()
    }

    async fn cluster_until(&self, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        match eventually(Duration::from_secs(30), what, || async {
            self.cluster(name).await.filter(|c| ok(c))
        })
        .await
        {
            Ok(c) => c,
            Err(e) => panic!(
                "{e}: {:?} (logs in {})",
                self.cluster(name).await,
                self.logs().display()
            ),
        }
    }

    /// Waits until the agents of `ids` are all live members and the cluster is ready.
    async fn agents_ready(&self, n: usize) -> Value {
        self.cluster_until(EDGE, "the agents to register and serve edge-1", |c| {
            c["pool"] == POOL && c["status"]["phase"] == "ready" && c["status"]["members"] == n
        })
        .await
    }

    /// Applies ConfigMap `name` with `value` to `cluster`: the 202's body.
    async fn apply(&self, cluster: &str, name: &str, value: &str, key: &str) -> Value {
        let manifest = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  value: \"{value}\"\n"
        );
        let resp = self
            .http
            .post(format!("{}/v1/operations", self.dispatcher.url))
            .header("Idempotency-Key", key)
            .json(&json!({"cluster": cluster, "action": "apply", "manifests": manifest}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 202, "{body}");
        body
    }

    async fn record(&self, id: &str) -> Option<Value> {
        self.http
            .get(format!("{}/v1/operations/{id}", self.dispatcher.url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    async fn finished(&self, id: &str, within: Duration) -> Value {
        eventually(within, &format!("operation {id} to finish"), || async {
            let r = self.record(id).await?;
            let state = r["state"].as_str()?;
            (state != "queued" && state != "running").then_some(r)
        })
        .await
        .unwrap_or_else(|e| panic!("{e} (logs in {})", self.logs().display()))
    }
}

fn id_of(accepted: &Value) -> String {
    accepted["id"].as_str().unwrap().to_owned()
}

/// How many changing writes each operation made in `cluster`.
fn effects(cluster: &ClusterHandle) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for w in cluster.writes().iter().filter(|w| w.changed && !w.dry_run) {
        if let Some(op) = w.annotations.get(OPERATION_ID_ANNOTATION) {
            *out.entry(op.clone()).or_default() += 1;
        }
    }
    out
}

fn value_of(cluster: &ClusterHandle, name: &str) -> Option<String> {
    cluster
        .get("v1", "ConfigMap", Some("default"), name)
        .and_then(|o| o["data"]["value"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn operations_to_a_private_cluster_are_applied_by_its_agents_only() {
    let t = Topology::start().await;
    let mut agent = t.agent("agent-1", &[]);
    let entry = t.agents_ready(1).await;
    // The agent registered its cluster itself, with its configuration's labels and its
    // own pool; nobody registered it through the API.
    assert_eq!(entry["labels"], json!({"env": "edge"}), "{entry}");
    assert!(
        entry["registeredBy"].as_str().unwrap().contains("agent-1"),
        "{entry}"
    );

    let mut ops = Vec::new();
    for i in 0..3 {
        let edge = t
            .apply(EDGE, &format!("edge-{i}"), "1", &format!("e{i}"))
            .await;
        let hub = t
            .apply(HUB_CLUSTER, &format!("hub-{i}"), "1", &format!("h{i}"))
            .await;
        ops.push((id_of(&edge), "agent-1"));
        ops.push((id_of(&hub), "hub-1"));
    }
    for (id, by) in &ops {
        let r = t.finished(id, Duration::from_secs(30)).await;
        assert_eq!(r["state"], "succeeded", "{r}");
        assert_eq!(r["worker"], *by, "{r}");
    }
    let edge = t.edge_sim.cluster(EDGE).unwrap();
    let hub = t.hub_sim.cluster(HUB_CLUSTER).unwrap();
    for i in 0..3 {
        assert_eq!(value_of(&edge, &format!("edge-{i}")).as_deref(), Some("1"));
        assert_eq!(value_of(&hub, &format!("hub-{i}")).as_deref(), Some("1"));
    }
    // The private cluster saw writes from its agents only: the hub's worker has no
    // credential for it (its token is in the agents' kubeconfig alone).
    assert_eq!(effects(&edge).len(), 3);
    assert!(
        !std::fs::read_to_string(&t.hub_kubeconfig)
            .unwrap()
            .contains(&edge.token().unwrap())
    );
    // Scaled in, it drains, and NATS confirms the drain: the request that does it is one
    // an agent's permissions allow.
    assert!(agent.terminate(Duration::from_secs(20)).await.unwrap());
    let log = std::fs::read_to_string(agent.log_path()).unwrap();
    assert!(
        log.contains("drained") && !log.contains("did not confirm"),
        "{log}"
    );
}

#[tokio::test]
async fn with_the_leaf_link_cut_operations_wait_at_the_hub_and_are_applied_once_after() {
    let mut t = Topology::start().await;
    let _agent = t.agent("agent-1", &[]);
    t.agents_ready(1).await;

    t.leaf.kill();
    let down = t
        .cluster_until(EDGE, "edge-1 to show no agent connected", |c| {
            c["status"]["phase"] == "unreachable"
        })
        .await;
    assert!(
        down["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("no agent of pool agent-edge-1 is connected"),
        "{down}"
    );

    // Accepted and queued at the hub, and the 202 says nobody can carry them out now.
    // Two of them change the same object: the later one must win.
    let mut ids = Vec::new();
    for (i, (name, value)) in [("a", "1"), ("b", "1"), ("a", "2"), ("c", "1")]
        .into_iter()
        .enumerate()
    {
        let accepted = t.apply(EDGE, name, value, &format!("down-{i}")).await;
        assert_eq!(accepted["state"], "queued", "{accepted}");
        assert_eq!(accepted["cluster"]["phase"], "unreachable", "{accepted}");
        ids.push(id_of(&accepted));
    }
    for id in &ids {
        assert_eq!(t.record(id).await.unwrap()["state"], "queued");
    }
    let edge = t.edge_sim.cluster(EDGE).unwrap();
    assert!(effects(&edge).is_empty(), "nothing reached the cluster");

    t.leaf.start_again().await.unwrap();
    let mut states = Vec::new();
    for id in &ids {
        let r = t.finished(id, Duration::from_secs(60)).await;
        states.push(r["state"].as_str().unwrap().to_owned());
    }
    // The first change to `a` may be superseded by the second (carried out at once, side
    // by side): never applied after it.
    assert!(
        matches!(states[0].as_str(), "succeeded" | "superseded"),
        "{states:?}"
    );
    assert_eq!(
        states[1..],
        ["succeeded", "succeeded", "succeeded"],
        "{states:?}"
    );
    let a_writes: Vec<String> = edge
        .writes()
        .iter()
        .filter(|w| w.changed && w.name.as_deref() == Some("a"))
        .filter_map(|w| w.annotations.get(OPERATION_ID_ANNOTATION).cloned())
        .collect();
    let expected: Vec<String> = if states[0] == "succeeded" {
        vec![ids[0].clone(), ids[2].clone()]
    } else {
        vec![ids[2].clone()]
    };
    assert_eq!(
        a_writes, expected,
        "a's changes, in the order they reached it"
    );
    let effects = effects(&edge);
    assert!(
        effects.values().all(|n| *n == 1),
        "applied twice: {effects:?}"
    );
    assert_eq!(
        value_of(&edge, "a").as_deref(),
        Some("2"),
        "the latest intent won"
    );
    assert_eq!(value_of(&edge, "b").as_deref(), Some("1"));
    assert_eq!(value_of(&edge, "c").as_deref(), Some("1"));
    t.agents_ready(1).await;
}

#[tokio::test]
async fn sigkilling_one_of_two_agents_mid_load_loses_nothing() {
    let t = Topology::start().await;
    // Short enough that what the killed agent held comes back within the test.
    let quick = [
        ("LONGSHORE_POOL__ACK_WAIT", "4s"),
        ("LONGSHORE_FENCE__LEASE", "4s"),
    ];
    let mut one = t.agent("agent-1", &quick);
    let _two = t.agent("agent-2", &quick);
    t.agents_ready(2).await;

    const OBJECTS: usize = 10;
    const ROUNDS: usize = 4;
    let mut ids = Vec::new();
    for round in 0..ROUNDS {
        for o in 0..OBJECTS {
            let accepted = t
                .apply(
                    EDGE,
                    &format!("obj-{o}"),
                    &round.to_string(),
                    &format!("r{round}-{o}"),
                )
                .await;
            ids.push(id_of(&accepted));
        }
        if round == 1 {
            one.kill();
        }
    }
    let mut by = HashMap::<String, usize>::new();
    for id in &ids {
        let r = t.finished(id, Duration::from_secs(60)).await;
        // Superseded: a later operation on the same object was applied first (by the
        // other agent, while this one waited for the killed one's fence).
        assert!(
            r["state"] == "succeeded" || r["state"] == "superseded",
            "{r}"
        );
        *by.entry(r["worker"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert!(by.contains_key("agent-2"), "{by:?}");
    let edge = t.edge_sim.cluster(EDGE).unwrap();
    let effects = effects(&edge);
    assert!(
        effects.values().all(|n| *n == 1),
        "applied twice: {effects:?}"
    );
    let last = (ROUNDS - 1).to_string();
    for o in 0..OBJECTS {
        assert_eq!(
            value_of(&edge, &format!("obj-{o}")).as_deref(),
            Some(last.as_str())
        );
    }
}

#[tokio::test]
async fn an_agent_can_neither_take_another_pools_operations_nor_write_another_clusters_entries() {
    let mut t = Topology::start().await;
    let _agent = t.agent("agent-1", &[]);
    t.agents_ready(1).await;
    // An operation for the hub's pool waits in its queue while the hub's worker is away:
    // queued for the pool's consumer, and no pull of the stopped worker's left to take it.
    t.hub_worker.take().unwrap().stop().await.unwrap();
    let hub_js = async_nats::jetstream::new(async_nats::connect(t.hub.url()).await.unwrap());
    let consumer = || async {
        let stream = hub_js.get_stream("LONGSHORE_OPS").await.ok()?;
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("workers").await.ok()?;
        let info = c.info().await.ok()?;
        Some((info.num_waiting, info.num_pending, info.num_ack_pending))
    };
    eventually(
        Duration::from_secs(10),
        "the stopped worker's pulls to expire",
        || async { consumer().await.filter(|(waiting, _, _)| *waiting == 0) },
    )
    .await
    .unwrap();
    let waiting = id_of(&t.apply(HUB_CLUSTER, "hub-op", "1", "hub-op").await);
    assert_eq!(
        consumer().await,
        Some((0, 1, 0)),
        "queued, and not delivered to anyone"
    );

    // Anything inside the private cluster can talk to its leaf as it likes: only the
    // hub's permissions on the leaf connection stand in the way.
    // It uses the agents' inbox prefix: replies to any other never cross the leaf.
    let inbox = agent::inbox_prefix(&PoolName::new(POOL).unwrap());
    let client = async_nats::ConnectOptions::new()
        .custom_inbox_prefix(inbox)
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(t.leaf.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::with_domain(client.clone(), DOMAIN);
    let refused = |what: &str, r: Result<async_nats::Message, async_nats::RequestError>| {
        assert!(
            r.is_err(),
            "{what} was answered: {:?}",
            r.map(|m| m.payload)
        );
    };
    // (First, so its replies' subscription has reached the hub: a pull it were allowed
    // would then bring it the operation.)
    // Its own cluster's heartbeat it may write; another cluster's, or the registry entry
    // of another cluster, it may not.
    let health = js.get_key_value("LONGSHORE_CLUSTER_HEALTH").await.unwrap();
    let forged = br#"{"pool":"workers","worker":"forged","reachable":false,"latencyMs":0,"observedAt":"2026-12-01T00:00:00Z"}"#;
    health
        .put(EDGE, forged.to_vec().into())
        .await
        .expect("its own key is its to write");
    assert!(
        health
            .put(HUB_CLUSTER, forged.to_vec().into())
            .await
            .is_err()
    );
    let registry = js.get_key_value("LONGSHORE_CLUSTERS").await.unwrap();
    let entry = t.cluster(HUB_CLUSTER).await.unwrap();
    let mut moved = entry.clone();
    moved["pool"] = json!(POOL);
    assert!(
        registry
            .put(HUB_CLUSTER, moved.to_string().into())
            .await
            .is_err()
    );
    let members = js.get_key_value("LONGSHORE_MEMBERS").await.unwrap();
    assert!(members.put("workers.forged", "{}".into()).await.is_err());

    let pull = br#"{"batch": 1, "expires": 1000000000}"#.to_vec();
    for subject in [
        "$JS.hub.API.CONSUMER.MSG.NEXT.LONGSHORE_OPS.workers",
        "$JS.API.CONSUMER.MSG.NEXT.LONGSHORE_OPS.workers",
    ] {
        refused(subject, client.request(subject, pull.clone().into()).await);
    }
    // Nor a consumer of its own over another pool's subjects.
    let filter = "longshore.ops.workers.>";
    let create = json!({"stream_name": "LONGSHORE_OPS", "config": {"durable_name": POOL,
        "filter_subject": filter, "ack_policy": "explicit"}, "action": ""});
    for subject in [
        format!("$JS.hub.API.CONSUMER.CREATE.LONGSHORE_OPS.{POOL}.{filter}"),
        "$JS.hub.API.CONSUMER.CREATE.LONGSHORE_OPS".to_owned(),
        format!("$JS.hub.API.CONSUMER.DELETE.LONGSHORE_OPS.{POOL}"),
    ] {
        refused(
            &subject,
            client
                .request(subject.clone(), create.to_string().into())
                .await,
        );
    }

    // At the hub, nothing of prod's changed, and its operation is still waiting.
    assert_eq!(
        consumer().await,
        Some((0, 1, 0)),
        "still queued, delivered to no one"
    );
    let hub_health = hub_js
        .get_key_value("LONGSHORE_CLUSTER_HEALTH")
        .await
        .unwrap();
    let prod_health = hub_health.get(HUB_CLUSTER).await.unwrap();
    assert!(
        prod_health.is_none_or(|v| !v.starts_with(b"{\"pool\":\"workers\",\"worker\":\"forged\""))
    );
    let hub_registry = hub_js.get_key_value("LONGSHORE_CLUSTERS").await.unwrap();
    let prod_entry: Value =
        serde_json::from_slice(&hub_registry.get(HUB_CLUSTER).await.unwrap().unwrap()).unwrap();
    assert_eq!(prod_entry["pool"], "workers");
    assert_eq!(t.record(&waiting).await.unwrap()["state"], "queued");

    // The hub's worker comes back and carries it out: it was never taken.
    t.hub_worker = Some(Worker::start(&t.hub.url(), &t.hub_kubeconfig, "hub-1"));
    let r = t.finished(&waiting, Duration::from_secs(30)).await;
    assert_eq!(
        (r["state"].as_str(), r["worker"].as_str()),
        (Some("succeeded"), Some("hub-1"))
    );
    assert_eq!(r["attempts"], 1, "delivered once, to the hub's worker: {r}");
}

#[tokio::test]
async fn an_operation_whose_agent_died_on_its_last_delivery_is_swept_by_the_hub() {
    use async_nats::jetstream::AckKind;
    use futures::StreamExt;
    let t = Topology::start().await;
    // The agent pool's consumer: two deliveries, a second's ack_wait.
    let mut agent = t.agent(
        "agent-1",
        &[
            ("LONGSHORE_POOL__MAX_DELIVER", "2"),
            ("LONGSHORE_POOL__ACK_WAIT", "1s"),
            ("LONGSHORE_FENCE__LEASE", "1s"),
        ],
    );
    t.agents_ready(1).await;
    assert!(agent.terminate(Duration::from_secs(10)).await.unwrap());

    // An agent takes the operation twice and dies during the second (last) delivery.
    let hub_js = async_nats::jetstream::new(async_nats::connect(t.hub.url()).await.unwrap());
    let consumer: async_nats::jetstream::consumer::PullConsumer = hub_js
        .get_stream("LONGSHORE_OPS")
        .await
        .unwrap()
        .get_consumer(POOL)
        .await
        .unwrap();
    let id = id_of(&t.apply(EDGE, "swept", "1", "swept").await);
    let pull = || async {
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .ok()?;
        batch.next().await.and_then(Result::ok)
    };
    let first = eventually(Duration::from_secs(10), "the first delivery", pull)
        .await
        .unwrap();
    first.ack_with(AckKind::Nak(None)).await.unwrap();
    let last = eventually(Duration::from_secs(10), "the last delivery", pull)
        .await
        .unwrap();
    assert_eq!(last.info().unwrap().delivered, 2);
    drop(last);
    // After its ack_wait, a pull makes JetStream give up on it (the advisory).
    eventually(
        Duration::from_secs(10),
        "JetStream to give up on it",
        || async {
            assert!(pull().await.is_none(), "delivered beyond max_deliver");
            let info = consumer.clone().info().await.ok()?.clone();
            (info.num_ack_pending == 0 && info.num_pending == 0).then_some(())
        },
    )
    .await
    .unwrap();

    // No agent runs: the hub's worker sweeps the agent pool's advisory.
    let r = t.finished(&id, Duration::from_secs(30)).await;
    assert_eq!(r["state"], "dead_lettered", "{r}");
    let edge = t.edge_sim.cluster(EDGE).unwrap();
    assert!(!effects(&edge).contains_key(&id), "never applied");
}

#[tokio::test]
async fn a_fleet_rollout_reaches_a_private_cluster_through_its_agent_and_counts_it() {
    let t = Topology::start().await;
    let _agent = t.agent("agent-1", &[]);
    t.agents_ready(1).await;
    // The hub's cluster first, the private one in the second wave: the agent's tally,
    // published across the leaf, is what ends the rollout.
    let resp = t
        .http
        .post(format!("{}/v1/fleet-rollouts", t.dispatcher.url))
        .json(&json!({
            "template": {"action": "apply", "manifests": [{"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "fleet", "namespace": "default"}, "data": {"value": "1"}}]},
            "clusters": {"names": [HUB_CLUSTER, EDGE]},
            "strategy": {"waves": [1, "100%"]},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = eventually(
        Duration::from_secs(30),
        "the rollout to succeed",
        || async {
            let s: Value = t
                .http
                .get(format!("{}/v1/fleet-rollouts/{id}", t.dispatcher.url))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (s["state"] == "succeeded").then_some(s)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e} (logs in {})", t.logs().display()));
    let edge_op = done["waves"][1]["clusters"][0]["operation"]
        .as_str()
        .unwrap();
    let record = t.record(edge_op).await.unwrap();
    assert_eq!(record["worker"], "agent-1", "{record}");
    let edge = t.edge_sim.cluster(EDGE).unwrap();
    assert_eq!(value_of(&edge, "fleet").as_deref(), Some("1"));
    assert_eq!(effects(&edge).get(edge_op), Some(&1));

    // From the private cluster: a rollout's progress is readable, its record (the
    // template, which may hold secrets) is not, and neither is writable.
    let client = async_nats::ConnectOptions::new()
        .custom_inbox_prefix(agent::inbox_prefix(&PoolName::new(POOL).unwrap()))
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(t.leaf.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::with_domain(client, DOMAIN);
    let rollouts = js.get_key_value("LONGSHORE_ROLLOUTS").await.unwrap();
    let state = rollouts.get(format!("state.{id}")).await;
    assert!(matches!(state, Ok(Some(_))), "its own progress: {state:?}");
    assert!(
        !matches!(rollouts.get(format!("spec.{id}")).await, Ok(Some(_))),
        "the template crossed the leaf"
    );
    assert!(
        rollouts
            .put(format!("state.{id}"), "{}".into())
            .await
            .is_err()
    );
}
