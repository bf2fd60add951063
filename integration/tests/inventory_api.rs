//! Reading what the watchers keep, through the real dispatcher (its `run` function) and the
//! `longshore` CLI against a real nats-server: `GET /v1/objects`, `GET /v1/events`, and
//! the `watch` of `GET /v1/clusters/{name}`. The inventory, events and leases are written
//! straight into JetStream as a watcher would write them, after the dispatcher created the
//! bucket and stream at start.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use longshore_contract::{
    inventory::{Event, INVENTORY_BUCKET, InventoryRecord},
    registry::LEASES_BUCKET,
};
use longshore_dispatcher::{config::TokenConfig, policy::PolicyConfig};
use longshore_integration::{
    dispatcher::Dispatcher, nats::NatsServer, process::binary, sse::Sse, wait::eventually,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// A dispatcher, and a NATS client writing what watchers would.
struct Rig {
    _nats: NatsServer,
    dispatcher: Dispatcher,
    js: jetstream::Context,
    inventory: kv::Store,
    http: reqwest::Client,
    /// The bearer token requests carry, if the dispatcher has tokens.
    token: Option<&'static str>,
    _secrets: tempfile::TempDir,
}

/// The tokens of a [`Rig`]: `admin` reads everything, `ci` only `staging`.
const ADMIN: &str = "admin-token";
const CI: &str = "ci-token";

impl Rig {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A dispatcher with the tokens `admin` and `ci` (requests carry `admin` unless told
    /// otherwise), and the configuration as `tweak` changes it.
    async fn start_with(tweak: impl FnOnce(&mut longshore_dispatcher::Config)) -> Self {
        let nats = NatsServer::start().await.unwrap();
        let secrets = tempfile::tempdir().unwrap();
        let mut config = Dispatcher::config(&nats.url(), &["prod", "staging"]);
        for (name, value, clusters) in [("admin", ADMIN, vec![]), ("ci", CI, vec!["staging"])] {
            let file = secrets.path().join(name);
            std::fs::write(&file, value).unwrap();
            config.tokens.insert(
                name.into(),
                TokenConfig {
                    secret_file: Some(file),
                    policy: PolicyConfig {
                        clusters: clusters.into_iter().map(String::from).collect(),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            );
        }
        tweak(&mut config);
        let token = (!config.tokens.is_empty()).then_some(ADMIN);
        let dispatcher = Dispatcher::start_with(config).await.unwrap();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = jetstream::new(client);
        let inventory = js.get_key_value(INVENTORY_BUCKET).await.unwrap();
        Self {
            _nats: nats,
            dispatcher,
            js,
            inventory,
            http: reqwest::Client::new(),
            token,
            _secrets: secrets,
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{}{path}", self.dispatcher.url));
        match token.or(self.token) {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn read(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let resp = self.get(path, token).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The names in `/v1/objects` with `query`, as `cluster/Kind/name`, in answer order.
    async fn objects(&self, query: &str) -> Vec<String> {
        let (status, body) = self.read(&format!("/v1/objects{query}"), None).await;
        assert_eq!(status, 200, "{query}: {body}");
        named(&body)
    }

    /// Writes `record` where a watcher keeps it.
    async fn put(&self, record: &InventoryRecord) {
        let bytes = serde_json::to_vec(record).unwrap();
        self.inventory
            .put(record.key(), bytes.into())
            .await
            .unwrap();
    }

    /// Publishes `event` as a watcher does; its stream sequence.
    async fn publish(&self, event: &Event) -> u64 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.as_str());
        let payload = serde_json::to_vec(event).unwrap();
        self.js
            .publish_with_headers(event.subject(), headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    }

    /// Opens `/v1/events` with `query`, resuming after `last_event_id` if given.
    async fn events(&self, query: &str, token: Option<&str>, last_event_id: Option<&str>) -> Sse {
        let mut req = self.get(&format!("/v1/events{query}"), token);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{query}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Sse::new(resp)
    }
}

fn named(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}/{}/{}",
                r["cluster"].as_str().unwrap(),
                r["kind"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// An inventory record as a watcher writes it.
fn record(
    cluster: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    health: &str,
    drifted: bool,
) -> InventoryRecord {
    let api_version = match kind {
        "Deployment" => "apps/v1",
        _ => "v1",
    };
    let mut value = json!({
        "cluster": cluster, "apiVersion": api_version, "kind": kind, "name": name,
        "uid": format!("uid-{cluster}-{name}"), "generation": 2, "resourceVersion": "17",
        "lastOperation": format!("op-{name}"), "health": health, "drifted": drifted,
        "watcher": "workers-1", "epoch": 3, "observedAt": "2026-12-01T10:00:00Z",
    });
    if let Some(ns) = namespace {
        value["namespace"] = json!(ns);
    }
    if drifted {
        value["drift"] = json!([{"path": ".spec.replicas", "manager": "kubectl-patch"}]);
    }
    if health == "failed" {
        value["healthReason"] = json!("ProgressDeadlineExceeded");
    }
    serde_json::from_value(value).unwrap()
}

/// An event about a ConfigMap or Deployment `name` in namespace `shop` of `cluster`.
fn event(cluster: &str, kind: &str, name: &str, what: &str, version: u32) -> Event {
    let api_version = if kind == "Deployment" {
        "apps/v1"
    } else {
        "v1"
    };
    serde_json::from_value(json!({
        "id": format!("{cluster}:uid-{name}:{version}:{what}"), "type": what, "cluster": cluster,
        "object": {"apiVersion": api_version, "kind": kind, "namespace": "shop", "name": name,
            "uid": format!("uid-{name}")},
        "resourceVersion": version.to_string(), "watcher": "workers-1",
        "at": "2026-12-01T10:00:00Z",
    }))
    .unwrap()
}

/// Five objects over two clusters, kinds, namespaces and health, one cluster-scoped, and
/// a cluster's watch record in the same bucket (which no listing may return).
async fn seed_inventory(rig: &Rig) {
    for r in [
        record("prod", "Deployment", Some("shop"), "web", "failed", true),
        record("prod", "Deployment", Some("shop"), "api", "ready", false),
        record("prod", "ConfigMap", Some("shop"), "web.v2", "ready", false),
        record("prod", "Namespace", None, "shop", "ready", false),
        record(
            "staging",
            "Deployment",
            Some("shop"),
            "web",
            "progressing",
            false,
        ),
    ] {
        rig.put(&r).await;
    }
    let watch = json!({"reachable": true, "transitions": 0, "watcher": "workers-1",
        "epoch": 3, "since": "2026-12-01T10:00:00Z"});
    rig.inventory
        .put("prod", serde_json::to_vec(&watch).unwrap().into())
        .await
        .unwrap();
}

#[tokio::test]
async fn objects_are_filtered_by_key_and_state_and_paged_by_key() {
    let rig = Rig::start().await;
    assert_eq!(
        rig.objects("").await,
        Vec::<String>::new(),
        "an empty bucket"
    );
    seed_inventory(&rig).await;

    // In key order: cluster, group, kind, namespace, name.
    assert_eq!(
        rig.objects("").await,
        [
            "prod/Deployment/api",
            "prod/Deployment/web",
            "prod/ConfigMap/web.v2",
            "prod/Namespace/shop",
            "staging/Deployment/web",
        ]
    );
    let (_, body) = rig
        .read("/v1/objects?cluster=prod&kind=Deployment", None)
        .await;
    assert_eq!(named(&body), ["prod/Deployment/api", "prod/Deployment/web"]);
    assert_eq!(body["next"], Value::Null);
    let web = &body["items"][1];
    assert_eq!(web["lastOperation"], "op-web");
    assert_eq!(web["healthReason"], "ProgressDeadlineExceeded");
    assert_eq!(web["drift"][0]["manager"], "kubectl-patch");
    assert_eq!(
        rig.objects("?kind=Deployment").await,
        [
            "prod/Deployment/api",
            "prod/Deployment/web",
            "staging/Deployment/web"
        ]
    );
    assert_eq!(rig.objects("?namespace=_").await, ["prod/Namespace/shop"]);
    assert_eq!(
        rig.objects("?cluster=staging&namespace=shop").await,
        ["staging/Deployment/web"]
    );
    assert_eq!(rig.objects("?health=failed").await, ["prod/Deployment/web"]);
    assert_eq!(
        rig.objects("?health=progressing").await,
        ["staging/Deployment/web"]
    );
    assert_eq!(rig.objects("?drifted=true").await, ["prod/Deployment/web"]);
    assert_eq!(rig.objects("?drifted=false&cluster=prod").await.len(), 3);
    assert_eq!(rig.objects("?cluster=nowhere").await, Vec::<String>::new());

    // Pages of two, each starting after the last key of the one before, add up to the
    // whole listing once.
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = match &after {
            Some(key) => format!("/v1/objects?limit=2&after={key}"),
            None => "/v1/objects?limit=2".to_owned(),
        };
        let (status, body) = rig.read(&query, None).await;
        assert_eq!(status, 200, "{body}");
        pages.push(named(&body));
        match body["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(pages.concat(), rig.objects("").await);
    // The cursor is the key of the page's last record.
    let (_, first) = rig.read("/v1/objects?limit=2", None).await;
    assert_eq!(first["next"], "prod.apps.Deployment.shop.web");
}

#[tokio::test]
async fn reads_follow_the_token_policy() {
    let rig = Rig::start().await;
    seed_inventory(&rig).await;
    let unauthenticated = rig
        .http
        .get(format!("{}/v1/objects", rig.dispatcher.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    // Without a cluster, what the policy does not allow is left out.
    let (status, body) = rig.read("/v1/objects", Some(CI)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(named(&body), ["staging/Deployment/web"]);
    assert_eq!(rig.objects("").await.len(), 5, "the admin token sees all");
    // Naming one it does not allow is refused, as reading it in the registry is.
    for path in ["/v1/objects?cluster=prod", "/v1/events?cluster=prod"] {
        let (status, body) = rig.read(path, Some(CI)).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("\"prod\""),
            "{body}"
        );
    }

    // An event stream without a cluster skips the events of clusters it does not allow:
    // the prod event published first is not delivered, the staging one after it is.
    let mut stream = rig.events("", Some(CI), None).await;
    stream.position().await;
    rig.publish(&event("prod", "ConfigMap", "cfg", "changed", 1))
        .await;
    let staging = rig
        .publish(&event("staging", "ConfigMap", "cfg", "changed", 1))
        .await;
    let (seq, _, data) = stream.event().await;
    assert_eq!((seq, data["cluster"].as_str()), (staging, Some("staging")));
}

#[tokio::test]
async fn bad_query_values_are_refused_naming_the_field() {
    let rig = Rig::start().await;
    let cases = [
        ("/v1/objects?health=healthy", "health"),
        ("/v1/objects?drifted=yes", "drifted"),
        ("/v1/objects?limit=0", "limit"),
        ("/v1/objects?limit=5000", "limit"),
        ("/v1/objects?limit=many", "limit"),
        ("/v1/objects?cluster=Prod", "cluster"),
        ("/v1/objects?kind=*", "kind"),
        ("/v1/objects?kind=Deployment.apps", "kind"),
        ("/v1/objects?namespace=a.b", "namespace"),
        ("/v1/objects?namespace=%3E", "namespace"),
        ("/v1/objects?colour=blue", "query"),
        ("/v1/events?cluster=prod.%3E", "cluster"),
        ("/v1/events?kind=%3E", "kind"),
        ("/v1/events?after=latest", "after"),
        ("/v1/events?from=end", "from"),
        ("/v1/events?from=start&after=3", "from"),
    ];
    for (path, field) in cases {
        let (status, body) = rig.read(path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{path}: {body}");
    }
    let resp = rig
        .get("/v1/events", None)
        .header("Last-Event-ID", "twelve")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "Last-Event-ID", "{body}");
}

#[tokio::test]
async fn events_stream_in_order_resume_after_the_last_id_and_follow_the_filter() {
    let rig = Rig::start().await;
    // Before the stream opens: not sent to a stream of new events.
    let old = rig
        .publish(&event("prod", "ConfigMap", "old", "created", 1))
        .await;

    let mut stream = rig.events("", None, None).await;
    assert_eq!(
        stream.position().await,
        old,
        "new events only: after the newest"
    );
    let sent = [
        event("prod", "ConfigMap", "cfg", "created", 2),
        event("prod", "Deployment", "web", "drifted", 3),
        event("staging", "ConfigMap", "cfg", "changed", 4),
    ];
    let mut sequences = Vec::new();
    for e in &sent {
        sequences.push(rig.publish(e).await);
    }
    for (e, seq) in sent.iter().zip(&sequences) {
        let (got_seq, kind, data) = stream.event().await;
        assert_eq!(got_seq, *seq, "id is the stream sequence");
        assert_eq!(kind, e.kind.as_str(), "event is the event's type");
        assert_eq!(data, serde_json::to_value(e).unwrap(), "data is the event");
    }

    // Reconnecting after the second: the third, then what comes next; nothing twice.
    let mut resumed = rig.events("", None, Some(&sequences[1].to_string())).await;
    assert_eq!(resumed.position().await, sequences[1]);
    assert_eq!(resumed.event().await.0, sequences[2]);
    let next = rig
        .publish(&event("prod", "ConfigMap", "cfg", "changed", 5))
        .await;
    assert_eq!(resumed.event().await.0, next);
    // The header wins over the query, as a reconnecting EventSource sends both.
    let mut both = rig
        .events(
            &format!("?after={old}"),
            None,
            Some(&sequences[2].to_string()),
        )
        .await;
    both.position().await;
    assert_eq!(both.event().await.0, next);

    // `after` and `from=start` read the history the stream keeps.
    let mut after = rig.events(&format!("?after={old}"), None, None).await;
    assert_eq!(after.position().await, old);
    assert_eq!(after.event().await.0, sequences[0]);
    let mut history = rig.events("?from=start", None, None).await;
    assert_eq!(history.position().await, 0);
    assert_eq!(history.event().await.0, old);

    // Filters: a cluster, a kind, a namespace.
    let mut staging = rig.events("?cluster=staging&from=start", None, None).await;
    staging.position().await;
    assert_eq!(staging.event().await.0, sequences[2]);
    let mut deployments = rig.events("?kind=Deployment&from=start", None, None).await;
    deployments.position().await;
    assert_eq!(deployments.event().await.0, sequences[1]);
    let mut cluster_events = rig.events("?kind=Cluster&namespace=_", None, None).await;
    cluster_events.position().await;
    rig.publish(&event("prod", "ConfigMap", "cfg", "changed", 6))
        .await;
    let unreachable: Event = serde_json::from_value(json!({
        "id": "prod:unreachable:1", "type": "unreachable", "cluster": "prod",
        "message": "connection refused", "watcher": "workers-1", "at": "2026-12-01T10:00:00Z"}))
    .unwrap();
    let seq = rig.publish(&unreachable).await;
    let (got, kind, data) = cluster_events.event().await;
    assert_eq!((got, kind.as_str()), (seq, "unreachable"));
    assert_eq!(data["message"], "connection refused");
}

#[tokio::test]
async fn a_replica_keeps_at_most_its_bound_of_event_streams() {
    let rig = Rig::start_with(|c| c.http.max_event_streams = 2).await;
    let _one = rig.events("", None, None).await;
    let _two = rig.events("", None, None).await;
    let refused = rig.get("/v1/events", None).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["type"], "urn:longshore:problem:busy", "{body}");
    let metrics = rig.get("/metrics", None).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("longshore_dispatcher_event_streams 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn stopping_the_dispatcher_ends_its_event_streams_rather_than_waiting_out_the_drain() {
    let nats = NatsServer::start().await.unwrap();
    let mut config = Dispatcher::config(&nats.url(), &[]);
    // A drain long enough that waiting it out would fail the bound below.
    config.http.drain_grace = Duration::from_secs(60);
    let dispatcher = Dispatcher::start_with(config).await.unwrap();
    let resp = reqwest::get(format!("{}/v1/events", dispatcher.url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = Sse::new(resp);
    stream.position().await;
    tokio::time::timeout(WAIT, dispatcher.stop())
        .await
        .expect("stopped without waiting for the open stream")
        .unwrap();
    let end = tokio::time::timeout(WAIT, stream.chunk()).await.unwrap();
    assert!(matches!(end, Ok(None)), "the stream ended cleanly: {end:?}");
}

#[tokio::test]
async fn a_cluster_shows_who_watches_it() {
    let rig = Rig::start().await;
    let cluster = || async {
        let (status, body) = rig.read("/v1/clusters/prod", None).await;
        (status == 200).then_some(body)
    };
    let body = eventually(WAIT, "prod registered from the configuration", cluster)
        .await
        .unwrap();
    assert_eq!(body["watch"], Value::Null, "nobody holds its lease: {body}");
    assert_eq!(body["name"], "prod", "the fields it had are kept");
    assert!(body["status"].is_object());

    let leases = rig.js.get_key_value(LEASES_BUCKET).await.unwrap();
    let current = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(2);
    let lease = json!({"pool": "workers", "holder": "workers-7", "acquiredAt": "2026-12-01T10:00:00Z",
        "renewedAt": "2026-12-01T10:00:08Z", "currentAt": current, "objects": 4});
    leases
        .put("prod", serde_json::to_vec(&lease).unwrap().into())
        .await
        .unwrap();
    let watch = json!({"reachable": false, "transitions": 1, "error": "connection refused",
        "watcher": "workers-7", "epoch": 9, "since": "2026-12-01T10:00:05Z"});
    rig.inventory
        .put("prod", serde_json::to_vec(&watch).unwrap().into())
        .await
        .unwrap();
    let (_, body) = rig.read("/v1/clusters/prod", None).await;
    let w = &body["watch"];
    assert_eq!(w["holder"], "workers-7", "{body}");
    assert_eq!(w["pool"], "workers");
    assert_eq!(w["acquiredAt"], "2026-12-01T10:00:00Z");
    assert_eq!(w["objects"], 4);
    let lag = w["lagMs"].as_u64().unwrap();
    assert!(
        (2000..WAIT.as_millis() as u64).contains(&lag),
        "lag {lag}ms"
    );
    assert_eq!(w["reachable"], false);
    assert_eq!(w["transitions"], 1);
    assert_eq!(w["error"], "connection refused");

    // Released: nobody watches it again, whatever its last watcher said.
    leases.delete("prod").await.unwrap();
    let (_, body) = rig.read("/v1/clusters/prod", None).await;
    assert_eq!(body["watch"], Value::Null, "{body}");
}

async fn cli(rig: &Rig, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(binary("longshore").unwrap());
    cmd.args(args)
        .env("LONGSHORE_SERVER", &rig.dispatcher.url)
        .env_remove("LONGSHORE_TOKEN");
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI finishes")
        .expect("the CLI runs")
}

#[tokio::test]
async fn the_cli_lists_objects_and_follows_events_across_streams() {
    // Streams end after a second, so following events means opening several.
    let rig = Rig::start_with(|c| {
        c.tokens.clear();
        c.http.max_wait = Duration::from_secs(1);
    })
    .await;
    seed_inventory(&rig).await;

    // Pages of one, followed to the end: every row, in key order, below the header.
    let out = cli(&rig, &["objects", "--chunk-size", "1"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "CLUSTER",
                "KIND",
                "NAMESPACE",
                "NAME",
                "HEALTH",
                "DRIFTED",
                "LAST-OPERATION"
            ],
            vec![
                "prod",
                "Deployment",
                "shop",
                "api",
                "ready",
                "false",
                "op-api"
            ],
            vec![
                "prod",
                "Deployment",
                "shop",
                "web",
                "failed",
                "true",
                "op-web"
            ],
            vec![
                "prod",
                "ConfigMap",
                "shop",
                "web.v2",
                "ready",
                "false",
                "op-web.v2"
            ],
            vec![
                "prod",
                "Namespace",
                "<none>",
                "shop",
                "ready",
                "false",
                "op-shop"
            ],
            vec![
                "staging",
                "Deployment",
                "shop",
                "web",
                "progressing",
                "false",
                "op-web"
            ],
        ]
    );
    assert!(
        text.contains("prod Deployment shop/web drifted: .spec.replicas by kubectl-patch"),
        "{text}"
    );
    let out = cli(
        &rig,
        &["objects", "--cluster", "prod", "--drifted", "-o", "json"],
    )
    .await;
    let items: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(named(&json!({ "items": items })), ["prod/Deployment/web"]);
    let out = cli(&rig, &["objects", "--kind", "*"]).await;
    assert_eq!(out.status.code(), Some(1), "the dispatcher refuses it");
    assert!(String::from_utf8_lossy(&out.stderr).contains("kind:"));

    // `events` from the beginning: the seeded event, then, after the dispatcher has ended
    // the stream and the CLI opened another, the next one; neither twice.
    let first = rig
        .publish(&event("prod", "Deployment", "web", "drifted", 7))
        .await;
    let mut child = tokio::process::Command::new(binary("longshore").unwrap())
        .args(["events", "--cluster", "prod", "--after", "0"])
        .env("LONGSHORE_SERVER", &rig.dispatcher.url)
        .env_remove("LONGSHORE_TOKEN")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    tokio::spawn({
        let lines = lines.clone();
        async move {
            use tokio::io::AsyncBufReadExt;
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().unwrap().push(line);
            }
        }
    });
    // How many lines start with the event's sequence.
    let printed = |seq: u64| {
        let prefix = format!("{seq}  ");
        let lines = lines.lock().unwrap();
        lines.iter().filter(|l| l.starts_with(&prefix)).count()
    };
    eventually(WAIT, "the seeded event printed", || {
        let n = printed(first);
        async move { (n > 0).then_some(()) }
    })
    .await
    .unwrap();
    let line = lines.lock().unwrap()[0].clone();
    assert_eq!(
        line,
        format!("{first}  2026-12-01T10:00:00Z  prod  drifted  Deployment shop/web")
    );
    // Two streams opened: the first has ended and the CLI followed on.
    eventually(WAIT, "the CLI to open a second stream", || async {
        let metrics = rig
            .get("/metrics", None)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let opened: u64 = metrics
            .lines()
            .filter(|l| {
                l.starts_with("longshore_dispatcher_http_requests_total{")
                    && l.contains("route=\"/v1/events\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        (opened >= 2).then_some(())
    })
    .await
    .unwrap();
    let second = rig
        .publish(&event("prod", "ConfigMap", "cfg", "changed", 8))
        .await;
    eventually(WAIT, "the next event printed", || {
        let n = printed(second);
        async move { (n > 0).then_some(()) }
    })
    .await
    .unwrap();
    let all = lines.lock().unwrap().clone();
    assert_eq!(
        (printed(first), printed(second)),
        (1, 1),
        "nothing twice: {all:?}"
    );
    child.kill().await.unwrap();
}
