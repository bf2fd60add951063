//! `GET /v1/operations`, the listing the console's operations page reads, and its watch
//! (`?watch=true`), against a real nats-server, kube-sim, dispatcher and worker: newest
//! first, filtered by state, cluster and source, bad input named by field; a watch that
//! tells each change after the listing's revision once, leaves nothing out on resuming,
//! and says `gone` when an operation leaves the filter; and the token's policy, which
//! hides the clusters it does not allow from listings, watches and single reads.

use std::time::Duration;

use longshore_dispatcher::{config::TokenConfig, policy::PolicyConfig};
use longshore_integration::{dispatcher::Dispatcher, sse::Sse, system::System};
use longshore_kube_sim::Faults;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn apply(cluster: &str, name: &str) -> Value {
    json!({"cluster": cluster, "action": "apply", "manifests": [{
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"v": "1"}}]})
}

async fn get(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_is_newest_first_and_filtered_and_bad_input_is_named() {
    let system = System::start(&["prod", "staging"], 1, 1).await.unwrap();
    system
        .cluster("staging")
        .set_faults(Faults::writes_answered(422));
    let base = system.dispatchers[0].url.clone();
    let mut done = Vec::new();
    for (cluster, name) in [("prod", "a"), ("staging", "b"), ("prod", "c")] {
        let id = system.accept(0, &apply(cluster, name), None).await.unwrap();
        let record = system.wait_terminal(&id, WAIT).await.unwrap();
        done.push((id, record["state"].as_str().unwrap().to_owned()));
    }
    assert_eq!(done[1].1, "failed");

    let (status, all) = get(&format!("{base}/v1/operations")).await;
    assert_eq!(status, 200, "{all}");
    let newest_first: Vec<String> = done.iter().rev().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids(&all), newest_first);
    assert_eq!(all["truncated"], false);
    assert!(all["revision"].as_u64().unwrap() > 0);
    let first = &all["items"][0];
    assert_eq!(first["objects"], 1, "{first}");
    assert!(
        first.get("results").is_none(),
        "listed without results: {first}"
    );

    let (_, failed) = get(&format!("{base}/v1/operations?state=failed,dead_lettered")).await;
    assert_eq!(ids(&failed), [done[1].0.clone()]);
    assert_eq!(failed["items"][0]["error"]["class"], "invalid");
    let (_, prod) = get(&format!("{base}/v1/operations?cluster=prod&limit=1")).await;
    assert_eq!(ids(&prod), [done[2].0.clone()]);
    let (_, by_source) = get(&format!("{base}/v1/operations?source=someone-else")).await;
    assert!(ids(&by_source).is_empty());
    let (_, week) = get(&format!("{base}/v1/operations?since=168h&source=api")).await;
    assert_eq!(ids(&week).len(), 3);

    for (query, field) in [
        ("state=broken", "state"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("since=soon", "since"),
        ("after=3", "after"),
        ("watch=true&since=1h", "since"),
        ("colour=red", "query"),
    ] {
        let (status, problem) = get(&format!("{base}/v1/operations?{query}")).await;
        assert_eq!(status, 400, "{query}: {problem}");
        let named = problem["errors"][0]["field"].as_str().or_else(|| {
            problem["detail"]
                .as_str()
                .filter(|d| d.contains(field))
                .map(|_| field)
        });
        assert_eq!(named, Some(field), "{query}: {problem}");
    }
}

async fn watch(url: &str) -> Sse {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    Sse::new(resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_follows_the_listing_misses_nothing_and_tells_what_leaves_the_filter() {
    // No worker yet: the watches see operations queue first.
    let mut system = System::start(&["prod", "staging"], 1, 0).await.unwrap();
    let base = system.dispatchers[0].url.clone();
    let before = system
        .accept(0, &apply("prod", "before"), None)
        .await
        .unwrap();
    let (_, list) = get(&format!("{base}/v1/operations")).await;
    assert_eq!(ids(&list), std::slice::from_ref(&before));
    let revision = list["revision"].as_u64().unwrap();

    // From the listing's revision: only what changed after it, of prod only.
    let mut prod = watch(&format!(
        "{base}/v1/operations?watch=true&cluster=prod&after={revision}"
    ))
    .await;
    assert_eq!(prod.position().await, revision);
    let mut queued = watch(&format!("{base}/v1/operations?watch=true&state=queued")).await;
    queued.position().await;
    let other = system
        .accept(0, &apply("staging", "other"), None)
        .await
        .unwrap();
    let mine = system
        .accept(0, &apply("prod", "mine"), None)
        .await
        .unwrap();
    let (first, event, op) = prod.event().await;
    assert_eq!(
        (event.as_str(), op["id"].as_str()),
        ("operation", Some(mine.as_str()))
    );
    assert_eq!(op["state"], "queued");
    assert_eq!(op["revision"].as_u64(), Some(first));

    // Queued ones, across clusters, in order.
    let (_, _, a) = queued.event().await;
    let (_, _, b) = queued.event().await;
    assert_eq!(
        (a["id"].as_str(), b["id"].as_str()),
        (Some(other.as_str()), Some(mine.as_str()))
    );

    // A worker takes them: the prod watch sees mine succeed (and the one before it, whose
    // changes come after the listing too; an operation that ends within half a second
    // goes from queued to its end in one write); the queued watch is told each left.
    system.add_worker("worker-late");
    let mut seen = Vec::new();
    let last = loop {
        let (id, event, op) = prod.event().await;
        assert_eq!(event, "operation");
        assert_eq!(op["cluster"], "prod", "{op}");
        seen.push((
            op["id"].as_str().unwrap().to_owned(),
            op["state"].as_str().unwrap().to_owned(),
        ));
        if seen.iter().filter(|(_, s)| s == "succeeded").count() == 2 {
            break id;
        }
    };
    assert!(
        seen.contains(&(mine.clone(), "succeeded".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(before.clone(), "succeeded".into())),
        "{seen:?}"
    );
    let mut left = Vec::new();
    while left.len() < 3 {
        let (_, event, op) = queued.event().await;
        if event == "gone" {
            left.push(op["id"].as_str().unwrap().to_owned());
        }
    }
    left.sort();
    left.dedup();
    let mut expected = vec![before.clone(), other.clone(), mine.clone()];
    expected.sort();
    assert_eq!(left, expected);

    // Resuming with Last-Event-ID: nothing seen again, and what came since is there.
    let resumed = reqwest::Client::new()
        .get(format!("{base}/v1/operations?watch=true&cluster=prod"))
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .unwrap();
    let mut resumed = Sse::new(resumed);
    assert_eq!(resumed.position().await, last);
    let after = system
        .accept(0, &apply("prod", "after"), None)
        .await
        .unwrap();
    let (id, _, op) = resumed.event().await;
    assert!(id > last);
    assert_eq!(op["id"].as_str(), Some(after.as_str()), "{op}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_sees_the_operations_of_the_clusters_its_policy_allows_only() {
    let system = System::start(&["eu-1", "us-1"], 1, 1).await.unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let mut config = Dispatcher::config(&system.nats.url(), &["eu-1", "us-1"]);
    for (name, clusters) in [("eu", vec!["eu-*".to_owned()]), ("all", vec![])] {
        let file = secrets.path().join(name);
        std::fs::write(&file, format!("{name}-token")).unwrap();
        config.tokens.insert(
            name.into(),
            TokenConfig {
                secret_file: Some(file),
                policy: PolicyConfig {
                    clusters,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
    }
    let dispatcher = Dispatcher::start_with(config).await.unwrap();
    let http = reqwest::Client::new();
    let call = |path: String, token: &'static str| {
        let req = http
            .get(format!("{}{path}", dispatcher.url))
            .bearer_auth(format!("{token}-token"));
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Submitted with the token that sees every cluster; the operation's id.
    let submit = |cluster: &'static str, name: &'static str| {
        let req = http
            .post(format!("{}/v1/operations", dispatcher.url))
            .bearer_auth("all-token")
            .json(&apply(cluster, name));
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 202);
            resp.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let mut made = Vec::new();
    for cluster in ["eu-1", "us-1"] {
        let id = submit(cluster, "x").await;
        system.wait_terminal(&id, WAIT).await.unwrap();
        made.push(id);
    }
    let (eu, us) = (&made[0], &made[1]);

    let (_, all) = call("/v1/operations".into(), "all").await;
    assert_eq!(ids(&all).len(), 2);
    let (_, mine) = call("/v1/operations".into(), "eu").await;
    assert_eq!(ids(&mine), std::slice::from_ref(eu));
    let (status, refused) = call("/v1/operations?cluster=us-1".into(), "eu").await;
    assert_eq!(status, 403, "{refused}");
    let (status, refused) = call("/v1/operations?watch=true&cluster=us-1".into(), "eu").await;
    assert_eq!(status, 403, "{refused}");
    let (status, _) = call(format!("/v1/operations/{eu}"), "eu").await;
    assert_eq!(status, 200);
    let (status, refused) = call(format!("/v1/operations/{us}"), "eu").await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("cluster \"us-1\" is not allowed"),
        "{refused}"
    );
    let (status, _) = call(format!("/v1/operations/{us}/events"), "eu").await;
    assert_eq!(status, 403);

    // A watch without a cluster skips what the policy hides.
    let resp = http
        .get(format!("{}/v1/operations?watch=true", dispatcher.url))
        .bearer_auth("eu-token")
        .send()
        .await
        .unwrap();
    let mut stream = Sse::new(resp);
    stream.position().await;
    for cluster in ["us-1", "eu-1"] {
        submit(cluster, "y").await;
    }
    let (_, _, op) = stream.event().await;
    assert_eq!(op["cluster"], "eu-1", "{op}");

    // What it may do, as the console asks.
    let (status, me) = call("/v1/whoami".into(), "eu").await;
    assert_eq!(status, 200);
    assert_eq!(me["who"], "token \"eu\"");
    assert_eq!(me["may"]["rolloutControls"], json!([]));
    assert_eq!(me["may"]["manageClusters"], false);
    assert_eq!(me["readOnly"], false);
    let (status, _) = http
        .get(format!("{}/v1/whoami", dispatcher.url))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401, "no anonymous reader is configured");
}
