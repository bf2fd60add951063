//! Fleet rollouts end to end, against a real nats-server, kube-sim and the real dispatcher
//! and workers: waves in order, an approval gate that holds, a failure past the budget that
//! halts with the later clusters never touched (kube-sim's write logs), controls that are
//! idempotent, and selections resolved as documented.

use std::collections::BTreeMap;
use std::time::Duration;

use longshore_integration::{system::System, wait::eventually};
use longshore_kube_sim::Faults;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Faults that refuse every write as invalid: a permanent failure.
fn refusing_writes() -> Faults {
    Faults::writes_answered(422)
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i:02}")).collect()
}

/// A system of `n` clusters, with `labels(i)` set on cluster `i` (through the API).
async fn fleet(n: usize, labels: impl Fn(usize) -> Value) -> System {
    let names = names(n);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let system = System::start(&refs, 1, 2).await.unwrap();
    let http = reqwest::Client::new();
    let base = system.dispatchers[0].url.clone();
    for (i, name) in names.iter().enumerate() {
        let resp = http
            .patch(format!("{base}/v1/clusters/{name}"))
            .json(&json!({"labels": labels(i)}))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "labelling {name}: {}",
            resp.status()
        );
    }
    // The dispatcher's copy of the registry has every label before a selector is resolved.
    eventually(WAIT, "the labels to be seen", || async {
        let body: Value = http
            .get(format!("{base}/v1/clusters?limit=1000"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let items = body["items"].as_array()?;
        let labelled = items
            .iter()
            .filter(|c| c["labels"].as_object().is_some_and(|l| !l.is_empty()))
            .count();
        (labelled == n).then_some(())
    })
    .await
    .unwrap();
    system
}

fn configmap_template(value: &str) -> Value {
    json!({"action": "apply", "manifests": [{
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "fleet-config", "namespace": "default"},
        "data": {"v": value},
    }]})
}

async fn post(system: &System, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", system.dispatchers[0].url))
        .json(body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn control(system: &System, id: &str, action: &str) -> (u16, Value) {
    post(
        system,
        &format!("/v1/fleet-rollouts/{id}/{action}"),
        &Value::Null,
        None,
    )
    .await
}

async fn status(system: &System, id: &str) -> Value {
    reqwest::get(format!(
        "{}/v1/fleet-rollouts/{id}",
        system.dispatchers[0].url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

async fn until_state(system: &System, id: &str, state: &str) -> Value {
    let reached = eventually(WAIT, &format!("rollout {id} to be {state}"), || async {
        let s = status(system, id).await;
        (s["state"] == state).then_some(s)
    })
    .await;
    match reached {
        Ok(s) => s,
        Err(e) => panic!("{e}; it is: {:#}", status(system, id).await),
    }
}

/// The changed writes each cluster took, by operation id.
fn applied(system: &System, cluster: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for w in system.cluster(cluster).writes() {
        if w.changed && w.name.as_deref() == Some("fleet-config") {
            let op = w
                .annotations
                .get(longshore_worker::OPERATION_ID_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            *out.entry(op).or_default() += 1;
        }
    }
    out
}

fn touched(system: &System, cluster: &str) -> bool {
    system
        .cluster(cluster)
        .writes()
        .iter()
        .any(|w| w.name.as_deref() == Some("fleet-config"))
}

fn wave_clusters(status: &Value, wave: usize) -> Vec<String> {
    status["waves"][wave]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_run_in_order_and_an_approval_gate_holds_until_approved_once() {
    // c00..c09 prod, c10 and c11 dev; ring labels put c09 first.
    let system = fleet(12, |i| {
        let env = if i < 10 { "prod" } else { "dev" };
        let ring = if i == 9 { "0" } else { "1" };
        json!({"env": env, "ring": ring})
    })
    .await;
    let body = json!({
        "template": configmap_template("1"),
        "clusters": {"selector": "env=prod"},
        "strategy": {"waves": [1, "50%", "100%"], "orderBy": "ring", "approvalBefore": [3]},
    });
    let (code, accepted) = post(&system, "/v1/fleet-rollouts", &body, Some("ring-1")).await;
    assert_eq!(code, 202, "{accepted}");
    assert_eq!(accepted["clusters"], 10);
    assert_eq!(accepted["waves"], json!([1, 4, 5]));
    let id = accepted["id"].as_str().unwrap().to_owned();

    let waiting = until_state(&system, &id, "waiting_approval").await;
    assert_eq!(
        wave_clusters(&waiting, 0),
        ["c09"],
        "ordered by ring, then name"
    );
    assert_eq!(wave_clusters(&waiting, 1), ["c00", "c01", "c02", "c03"]);
    for w in 0..2 {
        assert_eq!(waiting["waves"][w]["state"], "succeeded", "{waiting}");
    }
    assert_eq!(waiting["waves"][2]["state"], "pending");
    assert_eq!(waiting["waves"][2]["approval"], "required");
    // Wave 2 started only once wave 1 was over.
    let ended_1 = waiting["waves"][0]["endedAt"].as_str().unwrap();
    let started_2 = waiting["waves"][1]["startedAt"].as_str().unwrap();
    assert!(
        started_2 >= ended_1,
        "wave 2 at {started_2}, wave 1 over at {ended_1}"
    );
    // The gate holds: no cluster of wave 3 is touched while it waits.
    for c in wave_clusters(&waiting, 2) {
        assert!(!touched(&system, &c), "{c} was touched before the approval");
    }
    assert!(waiting["percentComplete"].as_u64().unwrap() < 100);

    let (code, first) = control(&system, &id, "approve").await;
    assert_eq!((code, &first["changed"]), (200, &json!(true)), "{first}");
    let (code, again) = control(&system, &id, "approve").await;
    assert_eq!((code, &again["changed"]), (200, &json!(false)), "{again}");

    let done = until_state(&system, &id, "succeeded").await;
    assert_eq!(done["percentComplete"], 100);
    assert_eq!(done["succeeded"], 10);
    let approvals: Vec<&Value> = done["controls"].as_array().unwrap().iter().collect();
    assert_eq!(
        approvals.len(),
        1,
        "the repeated approval is not recorded: {done}"
    );
    assert_eq!(approvals[0]["action"], "approve");
    assert_eq!(approvals[0]["by"], "api");
    // Each selected cluster applied exactly once, by its own operation; dev untouched.
    for w in 0..3 {
        for (cluster, entry) in wave_clusters(&done, w)
            .iter()
            .zip(done["waves"][w]["clusters"].as_array().unwrap())
        {
            let op = entry["operation"].as_str().unwrap();
            assert_eq!(
                applied(&system, cluster),
                BTreeMap::from([(op.to_owned(), 1)]),
                "{cluster}"
            );
            let record = system.status(op).await.unwrap();
            assert_eq!(record["rollout"]["id"], id.as_str());
            assert_eq!(record["rollout"]["wave"], w + 1);
            assert_eq!(record["state"], "succeeded");
        }
    }
    for dev in ["c10", "c11"] {
        assert!(!touched(&system, dev), "{dev} is not selected");
    }
    // The same key and body again: the same rollout, nothing new.
    let (code, replay) = post(&system, "/v1/fleet-rollouts", &body, Some("ring-1")).await;
    assert_eq!((code, replay["id"].as_str()), (202, Some(id.as_str())));
    let (code, reused) = post(
        &system,
        "/v1/fleet-rollouts",
        &json!({"template": configmap_template("2"), "clusters": {"selector": "env=prod"},
                "strategy": {"waves": ["100%"]}}),
        Some("ring-1"),
    )
    .await;
    assert_eq!(code, 422, "{reused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_past_the_budget_halts_and_the_remaining_clusters_are_never_touched() {
    let system = fleet(10, |_| json!({"env": "prod"})).await;
    // c03 refuses every write as invalid: a permanent failure.
    system.cluster("c03").set_faults(refusing_writes());
    let list: Vec<String> = names(10);
    let body = json!({
        "template": configmap_template("1"),
        "clusters": {"names": list},
        "strategy": {"waves": [2, 5, "100%"], "maxFailures": {"perWave": 0, "total": 0}},
    });
    let (code, accepted) = post(&system, "/v1/fleet-rollouts", &body, None).await;
    assert_eq!(code, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let halted = until_state(&system, &id, "halted").await;
    assert!(
        halted["reason"].as_str().unwrap().contains("wave 2"),
        "{}",
        halted["reason"]
    );
    assert_eq!(halted["waves"][0]["state"], "succeeded");
    assert_eq!(halted["waves"][1]["state"], "failed");
    assert_eq!(halted["waves"][2]["state"], "pending");
    assert!(halted["percentComplete"].as_u64().unwrap() < 100);
    // Every operation of the halted wave ends (applied, failed or cancelled); none later
    // is ever published.
    let settled = eventually(WAIT, "wave 2 to settle", || async {
        let s = status(&system, &id).await;
        let open = s["waves"][1]["clusters"]
            .as_array()?
            .iter()
            .any(|c| c["state"] == "running");
        (!open).then_some(s)
    })
    .await
    .unwrap();
    let c03 = &settled["waves"][1]["clusters"][1];
    assert_eq!(
        (c03["name"].as_str(), c03["state"].as_str()),
        (Some("c03"), Some("failed"))
    );
    // A halted rollout takes no control but cancel... which is refused too: it is over.
    let (code, _) = control(&system, &id, "resume").await;
    assert_eq!(code, 409);
    for c in wave_clusters(&settled, 2) {
        assert!(!touched(&system, &c), "{c} is after the halt");
        let op = settled["waves"][2]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == c.as_str())
            .unwrap()["operation"]
            .as_str()
            .unwrap()
            .to_owned();
        let resp = reqwest::get(format!("{}/v1/operations/{op}", system.dispatchers[0].url))
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{c}'s operation was never made");
    }
    // Time does not restart a halted rollout: a step taken later changes nothing.
    let (code, late) = control(&system, &id, "pause").await;
    assert_eq!(code, 409, "{late}");
    assert_eq!(status(&system, &id).await["state"], "halted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_cancel_are_idempotent_and_a_cancelled_rollout_starts_no_wave() {
    let system = fleet(4, |_| json!({"env": "prod"})).await;
    let body = json!({
        "template": configmap_template("1"),
        "clusters": {"selector": "env=prod"},
        "strategy": {"waves": [1, "100%"], "pause": "1h"},
    });
    let (code, accepted) = post(&system, "/v1/fleet-rollouts", &body, None).await;
    assert_eq!(code, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let first = eventually(WAIT, "wave 1 to be over", || async {
        let s = status(&system, &id).await;
        (s["waves"][0]["state"] == "succeeded").then_some(s)
    })
    .await
    .unwrap();
    assert!(first["waves"][1]["notBefore"].is_string(), "{first}");

    for (action, changed, state) in [
        ("pause", true, "paused"),
        ("pause", false, "paused"),
        ("resume", true, "running"),
        ("resume", false, "running"),
        ("cancel", true, "cancelled"),
        ("cancel", false, "cancelled"),
    ] {
        let (code, body) = control(&system, &id, action).await;
        assert_eq!(code, 200, "{action}: {body}");
        assert_eq!(body["changed"], changed, "{action}: {body}");
        assert_eq!(body["state"], state, "{action}");
    }
    let (code, refused) = control(&system, &id, "resume").await;
    assert_eq!(code, 409, "a cancelled rollout does not resume: {refused}");
    let (code, _) = control(&system, &id, "explode").await;
    assert_eq!(code, 404);
    let over = status(&system, &id).await;
    let actions: Vec<&str> = over["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["pause", "resume", "cancel"]);
    assert_eq!(over["waves"][1]["state"], "cancelled");
    for c in wave_clusters(&over, 1) {
        assert!(
            !touched(&system, &c),
            "{c} is in the wave the cancel stopped"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_keeps_its_order_and_bad_input_names_the_field() {
    let system = fleet(6, |i| json!({"env": if i < 4 { "prod" } else { "dev" }})).await;
    let ok = json!({
        "template": configmap_template("1"),
        "clusters": {"names": ["c05", "c00", "c03"]},
        "strategy": {"waves": [1, "100%"]},
    });
    let (code, accepted) = post(&system, "/v1/fleet-rollouts", &ok, None).await;
    assert_eq!(code, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let done = until_state(&system, &id, "succeeded").await;
    assert_eq!(wave_clusters(&done, 0), ["c05"], "a list keeps its order");
    assert_eq!(wave_clusters(&done, 1), ["c00", "c03"]);
    assert!(!touched(&system, "c01"));

    // The listing: newest first, by state, each with its progress.
    let paused = json!({"template": configmap_template("2"), "clusters": {"names": ["c01"]},
        "strategy": {"waves": ["100%"], "approvalBefore": [1]}});
    let (code, second) = post(&system, "/v1/fleet-rollouts", &paused, None).await;
    assert_eq!(code, 202, "{second}");
    let second = second["id"].as_str().unwrap().to_owned();
    until_state(&system, &second, "waiting_approval").await;
    let listed = |query: &'static str| {
        let url = format!("{}/v1/fleet-rollouts{query}", system.dispatchers[0].url);
        async move {
            let resp = reqwest::get(url).await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (code, all) = listed("").await;
    assert_eq!(code, 200, "{all}");
    let ids: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), id.as_str()], "newest first");
    assert_eq!(all["items"][1]["percentComplete"], 100);
    assert_eq!(all["items"][1]["waves"][1]["size"], 2);
    let (_, waiting) = listed("?state=waiting_approval").await;
    assert_eq!(waiting["items"].as_array().unwrap().len(), 1);
    assert_eq!(waiting["items"][0]["id"], second.as_str());
    let (_, one) = listed("?limit=1").await;
    assert_eq!(
        (one["items"].as_array().unwrap().len(), &one["more"]),
        (1, &json!(true))
    );
    let (code, bad) = listed("?state=finished").await;
    assert_eq!(code, 400, "{bad}");
    assert_eq!(bad["errors"][0]["field"], "state");
    let table = cli(&system.dispatchers[0].url, &["rollout", "list"]).await;
    let shown = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.status.success(), "{shown}");
    let lines: Vec<&str> = shown.lines().collect();
    assert!(
        lines[0].starts_with("ID")
            && lines[1].contains(&second)
            && lines[1].contains("waiting_approval"),
        "{shown}"
    );

    let bad = |tweak: &dyn Fn(&mut Value)| {
        let mut body = ok.clone();
        tweak(&mut body);
        body
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            bad(&|b| b["clusters"] = json!({"selector": "env=nowhere"})),
            "clusters.selector",
        ),
        (
            bad(&|b| b["clusters"] = json!({"names": ["c00", "nope"]})),
            "clusters.names[1]",
        ),
        (
            bad(&|b| b["strategy"]["waves"] = json!([1, 2])),
            "strategy.waves[1]",
        ),
        (
            bad(&|b| b["strategy"]["approvalBefore"] = json!([3])),
            "strategy.approvalBefore[0]",
        ),
        (
            bad(&|b| b["strategy"]["concurrency"] = json!(0)),
            "strategy.concurrency",
        ),
        (
            bad(&|b| b["template"]["cluster"] = json!("c00")),
            "template.cluster",
        ),
    ];
    for (body, field) in cases {
        let (code, problem) = post(&system, "/v1/fleet-rollouts", &body, None).await;
        assert!((400..500).contains(&code), "{field}: {code} {problem}");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .map(|e| e.iter().filter_map(|f| f["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(fields.contains(&field), "{field}: {problem}");
    }
    let resp = reqwest::get(format!(
        "{}/v1/fleet-rollouts/ro-abcdefghijklmnopqrstuvwxyz234567",
        system.dispatchers[0].url
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_need_their_permission_and_a_selection_the_policy_allows() {
    use longshore_contract::rollout::state::ControlAction;
    use longshore_dispatcher::{config::TokenConfig, policy::PolicyConfig};
    use longshore_integration::{dispatcher::Dispatcher, nats::NatsServer, worker::Worker};
    let nats = NatsServer::start().await.unwrap();
    let clusters = ["eu-1", "eu-2", "us-1"];
    let sim = longshore_kube_sim::KubeSim::start(longshore_kube_sim::SimOptions {
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    sim.write_kubeconfig(kubeconfig.path()).unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let mut config = Dispatcher::config(&nats.url(), &clusters);
    let mut token = |name: &str, policy: PolicyConfig| {
        let file = secrets.path().join(name);
        std::fs::write(&file, format!("{name}-token")).unwrap();
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
        "ci",
        PolicyConfig {
            clusters: vec!["eu-*".into()],
            ..Default::default()
        },
    );
    token("ops", PolicyConfig::default());
    token(
        "release",
        PolicyConfig {
            clusters: vec!["eu-*".into()],
            rollout_controls: vec![ControlAction::Approve],
            ..Default::default()
        },
    );
    let d = Dispatcher::start_with(config).await.unwrap();
    let _w = Worker::start(&nats.url(), kubeconfig.path(), "w1");
    let http = reqwest::Client::new();
    let post = |token: &'static str, path: String, body: Value| {
        let req = http
            .post(format!("{}{path}", d.url))
            .bearer_auth(token)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let code = resp.status().as_u16();
            (code, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let rollout = |names: &[&str]| {
        json!({"template": configmap_template("1"), "clusters": {"names": names},
               "strategy": {"waves": [1, "100%"], "approvalBefore": [2]}})
    };
    // A selection reaching a cluster the token may not use is refused, naming it.
    let (code, problem) = post(
        "ci-token",
        "/v1/fleet-rollouts".into(),
        rollout(&["eu-1", "us-1"]),
    )
    .await;
    assert_eq!(code, 403, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("us-1"),
        "{problem}"
    );

    let (code, accepted) = post(
        "ci-token",
        "/v1/fleet-rollouts".into(),
        rollout(&["eu-1", "eu-2"]),
    )
    .await;
    assert_eq!(code, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    eventually(WAIT, "the gate", || async {
        let s: Value = http
            .get(format!("{}/v1/fleet-rollouts/{id}", d.url))
            .bearer_auth("ci-token")
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (s["state"] == "waiting_approval").then_some(())
    })
    .await
    .unwrap();
    // Submitting needs no control; using one needs it named.
    for (token, action) in [
        ("ci-token", "approve"),
        ("ci-token", "cancel"),
        ("release-token", "cancel"),
    ] {
        let (code, problem) = post(
            token,
            format!("/v1/fleet-rollouts/{id}/{action}"),
            Value::Null,
        )
        .await;
        assert_eq!(code, 403, "{token} {action}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("rollout_controls"),
            "{problem}"
        );
    }
    let (code, approved) = post(
        "release-token",
        format!("/v1/fleet-rollouts/{id}/approve"),
        Value::Null,
    )
    .await;
    assert_eq!(
        (code, &approved["changed"]),
        (200, &json!(true)),
        "{approved}"
    );
    assert_eq!(approved["controls"][0]["by"], "release");
    let unauthenticated = reqwest::get(format!("{}/v1/fleet-rollouts/{id}", d.url))
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    // A rollout over a cluster the token may not read is not in its listing.
    let (code, other) = post("ops-token", "/v1/fleet-rollouts".into(), rollout(&["us-1"])).await;
    assert_eq!(code, 202, "{other}");
    let listed = |token: &'static str| {
        let req = http
            .get(format!("{}/v1/fleet-rollouts", d.url))
            .bearer_auth(token);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let mine = listed("ci-token").await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["items"][0]["id"], id.as_str());
    assert_eq!(
        listed("ops-token").await["items"].as_array().unwrap().len(),
        2
    );
}

/// The `longshore` binary with `args` against `server`.
async fn cli(server: &str, args: &[&str]) -> std::process::Output {
    longshore_integration::cli::run(server, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_submits_shows_waves_approves_and_exits_as_the_rollout_ends() {
    let system = fleet(4, |i| json!({"env": "prod", "ring": i.to_string()})).await;
    let server = system.dispatchers[0].url.clone();
    let dir = tempfile::tempdir().unwrap();
    let file = configmap_file(&dir, "1");
    let out = cli(
        &server,
        &[
            "rollout",
            "submit",
            "-f",
            &file,
            "--selector",
            "env=prod",
            "--waves",
            "1,100%",
            "--approval-before",
            "2",
            "--max-failures",
            "0",
            "--order-by",
            "ring",
            "--idempotency-key",
            "cli-1",
            "-o",
            "json",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let accepted: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(accepted["waves"], json!([1, 3]));
    until_state(&system, &id, "waiting_approval").await;
    let status = cli(&server, &["rollout", "status", &id]).await;
    let shown = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.status.success(), "{shown}");
    assert!(shown.contains("waiting_approval"), "{shown}");
    assert!(
        shown.contains("[#]") && shown.contains("[...]") && shown.contains("approval required"),
        "{shown}"
    );
    let approve = cli(&server, &["rollout", "approve", &id]).await;
    assert!(approve.status.success());
    let again = cli(&server, &["rollout", "approve", &id]).await;
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("(already so)"));
    let waited = cli(&server, &["rollout", "wait", &id, "--timeout", "30s"]).await;
    let shown = String::from_utf8_lossy(&waited.stdout).into_owned();
    assert!(waited.status.success(), "{shown}");
    assert!(
        shown.contains("succeeded 100%") && shown.contains("[###]"),
        "{shown}"
    );

    // A rollout that halts exits 1; bad waves are the dispatcher's 400, exit 1, naming the field.
    system.cluster("c00").set_faults(refusing_writes());
    let file2 = configmap_file(&dir, "2");
    let halted = cli(
        &server,
        &[
            "rollout",
            "submit",
            "-f",
            &file2,
            "--clusters",
            "c00,c01",
            "--waves",
            "1,100%",
            "--wait",
            "--timeout",
            "30s",
        ],
    )
    .await;
    let shown = String::from_utf8_lossy(&halted.stdout).into_owned();
    assert_eq!(halted.status.code(), Some(1), "{shown}");
    assert!(shown.contains("halted"), "{shown}");
    assert!(!touched_by(&system, "c01", "2"), "the wave after the halt");
    let bad = cli(
        &server,
        &[
            "rollout",
            "submit",
            "-f",
            &file2,
            "--clusters",
            "c00",
            "--waves",
            "0",
        ],
    )
    .await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("strategy.waves[0]"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// A file in `dir` holding the fleet ConfigMap with value `v`; its path.
fn configmap_file(dir: &tempfile::TempDir, v: &str) -> String {
    let file = dir.path().join(format!("cm-{v}.yaml"));
    std::fs::write(
        &file,
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: fleet-config, namespace: default}}\ndata: {{v: '{v}'}}\n"),
    )
    .unwrap();
    file.to_string_lossy().into_owned()
}

/// Whether `cluster` took a write of value `v` of the fleet ConfigMap.
fn touched_by(system: &System, cluster: &str, v: &str) -> bool {
    system
        .cluster(cluster)
        .get("v1", "ConfigMap", Some("default"), "fleet-config")
        .is_some_and(|o| o["data"]["v"] == v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_each_change_and_end_when_the_rollout_is_over() {
    let system = fleet(3, |_| json!({"env": "prod"})).await;
    let body = json!({
        "template": configmap_template("1"),
        "clusters": {"selector": "env=prod"},
        "strategy": {"waves": [1, "100%"], "approvalBefore": [2]},
    });
    let (code, accepted) = post(&system, "/v1/fleet-rollouts", &body, None).await;
    assert_eq!(code, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let resp = reqwest::get(format!(
        "{}/v1/fleet-rollouts/{id}/events",
        system.dispatchers[0].url
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut resp = resp;
    let mut text = String::new();
    let mut states: Vec<String> = Vec::new();
    let mut approved = false;
    let read = async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                    .unwrap_or_default();
                if !event.contains("event: progress") && !event.contains("event:progress") {
                    continue;
                }
                let v: Value = serde_json::from_str(data).unwrap();
                let state = v["state"].as_str().unwrap().to_owned();
                if states.last() != Some(&state) {
                    states.push(state.clone());
                }
                if state == "waiting_approval" && !approved {
                    approved = true;
                    let (code, _) = control(&system, &id, "approve").await;
                    assert_eq!(code, 200);
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the stream ends once the rollout is over");
    assert_eq!(
        states.first().map(String::as_str),
        Some("running"),
        "{states:?}"
    );
    assert!(
        states.contains(&"waiting_approval".to_owned()),
        "{states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("succeeded"),
        "{states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_gate_holds_each_wave_for_its_soak_and_an_unhealthy_cluster_halts() {
    use longshore_kube_sim::Rollouts;
    let system = fleet(4, |_| json!({"env": "prod"})).await;
    for c in ["c00", "c01", "c02"] {
        system
            .cluster(c)
            .set_rollouts(Rollouts::progressing(Duration::from_millis(100)));
    }
    system
        .cluster("c03")
        .set_rollouts(Rollouts::failing(Duration::from_millis(300)));
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:2"}]}}}});
    let body = json!({
        "template": {"action": "apply", "manifests": [deployment]},
        "clusters": {"names": ["c00", "c01", "c02", "c03"]},
        "strategy": {"waves": [1, 2, "100%"], "healthGate": {"soak": "1s"}},
    });
    let (code, accepted) = post(&system, "/v1/fleet-rollouts", &body, None).await;
    assert_eq!(code, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    // Wave 1's operation succeeds at once (no wait): the wave soaks before wave 2 starts.
    let soaking = eventually(WAIT, "wave 1 to soak", || async {
        let s = status(&system, &id).await;
        (s["waves"][0]["state"] == "soaking").then_some(s)
    })
    .await
    .unwrap();
    assert_eq!(soaking["waves"][1]["state"], "pending", "{soaking}");
    let halted = until_state(&system, &id, "halted").await;
    assert_eq!(halted["waves"][0]["state"], "succeeded");
    assert_eq!(halted["waves"][1]["state"], "succeeded");
    assert_eq!(halted["waves"][2]["state"], "failed");
    let reason = halted["reason"].as_str().unwrap();
    assert!(
        reason.contains("c03 unhealthy") && reason.contains("ProgressDeadlineExceeded"),
        "{reason}"
    );
    // Each wave started only after the one before had been ready for the soak: its
    // Deployment was ready no sooner than its operation ended, and 1 s passed after that.
    for w in 0..2 {
        let cluster = &halted["waves"][w]["clusters"][0];
        let record = system
            .status(cluster["operation"].as_str().unwrap())
            .await
            .unwrap();
        let finished: jiff::Timestamp = record["finishedAt"].as_str().unwrap().parse().unwrap();
        let next: jiff::Timestamp = halted["waves"][w + 1]["startedAt"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            next.duration_since(finished) >= jiff::SignedDuration::from_secs(1),
            "wave {} started {} after wave {}'s operation ended",
            w + 2,
            next.duration_since(finished),
            w + 1
        );
    }
    let c03 = halted["waves"][2]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "c03")
        .unwrap()
        .clone();
    assert_eq!(
        c03["state"], "failed",
        "its operation succeeded, its health did not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_failed_tries_the_failed_clusters_again_then_goes_on_from_the_halt() {
    let system = fleet(6, |_| json!({"env": "prod"})).await;
    let refuse = refusing_writes();
    system.cluster("c02").set_faults(refuse);
    let body = json!({
        "template": configmap_template("1"),
        "clusters": {"names": names(6)},
        "strategy": {"waves": [2, 4, "100%"]},
    });
    let (code, accepted) = post(&system, "/v1/fleet-rollouts", &body, None).await;
    assert_eq!(code, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let halted = until_state(&system, &id, "halted").await;
    let first = halted["waves"][1]["clusters"][0]["operation"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(WAIT, "wave 2 to settle", || async {
        let s = status(&system, &id).await;
        let open = s["waves"][1]["clusters"]
            .as_array()?
            .iter()
            .any(|c| c["state"] == "running");
        (!open).then_some(())
    })
    .await
    .unwrap();
    for c in ["c04", "c05"] {
        assert!(!touched(&system, c), "{c} is after the halt");
    }

    // The cause fixed, the failed cluster is tried again, once.
    system.cluster("c02").set_faults(Faults::default());
    let (code, retried) = control(&system, &id, "retry-failed").await;
    assert_eq!(
        (code, &retried["changed"]),
        (200, &json!(true)),
        "{retried}"
    );
    let (code, again) = control(&system, &id, "retry-failed").await;
    assert_eq!((code, &again["changed"]), (200, &json!(false)), "{again}");
    let done = until_state(&system, &id, "succeeded").await;
    let c02 = &done["waves"][1]["clusters"][0];
    assert_eq!(
        (c02["name"].as_str(), c02["attempt"].as_u64()),
        (Some("c02"), Some(1)),
        "{done}"
    );
    let second = c02["operation"].as_str().unwrap();
    assert_ne!(second, first, "a new operation");
    assert_eq!(
        applied(&system, "c02"),
        BTreeMap::from([(second.to_owned(), 1)])
    );
    assert_eq!(system.status(&first).await.unwrap()["state"], "failed");
    for w in 0..3 {
        for (cluster, entry) in wave_clusters(&done, w)
            .iter()
            .zip(done["waves"][w]["clusters"].as_array().unwrap())
        {
            let op = entry["operation"].as_str().unwrap();
            assert_eq!(
                applied(&system, cluster),
                BTreeMap::from([(op.to_owned(), 1)]),
                "{cluster}"
            );
        }
    }
    assert_eq!(done["retries"][0]["clusters"], json!([2]));
    let actions: Vec<&str> = done["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["retry-failed"]);
}
