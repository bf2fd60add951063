//! The real dispatcher against a real nats-server: what pipelines see when they submit.

use std::time::{Duration, Instant};

use longshore_integration::{dispatcher::Dispatcher, nats::NatsServer, wait::eventually};
use serde_json::{Value, json};

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"k": "v"}})
}

fn apply(cluster: &str, name: &str) -> Value {
    json!({"cluster": cluster, "action": "apply", "manifests": [configmap(name)]})
}

async fn post(
    d: &Dispatcher,
    body: &Value,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/operations", d.url))
        .json(body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let resp = req.send().await.expect("dispatcher reachable");
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

async fn stream_messages(nats_url: &str) -> u64 {
    let client = async_nats::connect(nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(longshore_contract::jetstream::STREAM)
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test]
async fn unknown_cluster_is_refused_with_400_naming_it() {
    let nats = NatsServer::start().await.unwrap();
    let d = Dispatcher::start(&nats.url(), &["prod", "staging"])
        .await
        .unwrap();
    let (status, headers, body) = post(&d, &apply("prdo", "a"), None).await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["errors"][0]["field"], "cluster");
    assert!(
        body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("prdo")
    );
    assert_eq!(
        stream_messages(&nats.url()).await,
        0,
        "nothing may be queued for an unknown cluster"
    );
}

#[tokio::test]
async fn a_repeated_key_gives_the_same_operation_and_one_message() {
    let nats = NatsServer::start().await.unwrap();
    let d1 = Dispatcher::start(&nats.url(), &["prod"]).await.unwrap();
    let d2 = Dispatcher::start(&nats.url(), &["prod"]).await.unwrap();
    let body = apply("prod", "a");

    let (s1, h1, b1) = post(&d1, &body, Some("deploy-42")).await;
    assert_eq!(s1, 202, "{b1}");
    assert!(h1.get("idempotent-replayed").is_none());
    // The same key on another replica, with the keys of the JSON in another order.
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"manifests": {}, "action": "apply", "cluster": "prod"}}"#,
        body["manifests"]
    ))
    .unwrap();
    let (s2, h2, b2) = post(&d2, &reordered, Some("deploy-42")).await;
    assert_eq!(s2, 202, "{b2}");
    assert_eq!(b1["id"], b2["id"]);
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(stream_messages(&nats.url()).await, 1);

    // The record is readable from either replica.
    let status: Value = reqwest::get(format!("{}{}", d2.url, b1["statusUrl"].as_str().unwrap()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "queued");
    assert_eq!(status["idempotencyKey"], "deploy-42");
    assert!(
        status.get("manifests").is_none(),
        "records never carry manifests"
    );
}

#[tokio::test]
async fn a_reused_key_with_another_body_is_422() {
    let nats = NatsServer::start().await.unwrap();
    let d = Dispatcher::start(&nats.url(), &["prod"]).await.unwrap();
    let (s1, _, _) = post(&d, &apply("prod", "a"), Some("k")).await;
    assert_eq!(s1, 202);
    let (s2, _, b2) = post(&d, &apply("prod", "b"), Some("k")).await;
    assert_eq!(s2, 422, "{b2}");
    assert_eq!(b2["type"], "urn:longshore:problem:idempotency-key-reused");
    assert_eq!(stream_messages(&nats.url()).await, 1);
}

#[tokio::test]
async fn a_missing_key_is_generated_and_returned() {
    let nats = NatsServer::start().await.unwrap();
    let d = Dispatcher::start(&nats.url(), &["prod"]).await.unwrap();
    let (s, headers, body) = post(&d, &apply("prod", "a"), None).await;
    assert_eq!(s, 202);
    let key = headers["idempotency-key"].to_str().unwrap().to_owned();
    assert_eq!(body["idempotencyKey"], key.as_str());
    // Retrying with the returned key is a replay, not a second operation.
    let (_, _, again) = post(&d, &apply("prod", "a"), Some(&key)).await;
    assert_eq!(again["id"], body["id"]);
    assert_eq!(stream_messages(&nats.url()).await, 1);
}

#[tokio::test]
async fn status_lookups_answer_404_and_400_clearly() {
    let nats = NatsServer::start().await.unwrap();
    let d = Dispatcher::start(&nats.url(), &["prod"]).await.unwrap();
    let missing = format!("{}/v1/operations/op-{}", d.url, "a".repeat(32));
    assert_eq!(reqwest::get(missing).await.unwrap().status(), 404);
    let bad = reqwest::get(format!("{}/v1/operations/..%2Fetc", d.url))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn nats_down_gives_503_within_a_second_and_recovers_by_itself() {
    let mut nats = NatsServer::start().await.unwrap();
    let d = Dispatcher::start(&nats.url(), &["prod"]).await.unwrap();
    let (s, _, _) = post(&d, &apply("prod", "before"), None).await;
    assert_eq!(s, 202);

    nats.kill();
    // Wait (bounded) until the dispatcher has noticed; from then on every answer is a fast 503.
    let readyz = format!("{}/readyz", d.url);
    eventually(Duration::from_secs(5), "readyz to report NATS down", || {
        let r = reqwest::get(readyz.clone());
        async move { r.await.ok().filter(|r| r.status() == 503).map(|_| ()) }
    })
    .await
    .unwrap();
    let started = Instant::now();
    let (s, headers, body) = post(&d, &apply("prod", "during"), None).await;
    let took = started.elapsed();
    assert_eq!(s, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert!(took < Duration::from_secs(1), "503 took {took:?}");

    nats.restart().await.unwrap();
    let accepted = eventually(
        Duration::from_secs(15),
        "a 202 after NATS restarted",
        || {
            let d = &d;
            async move {
                let (s, _, body) = post(d, &apply("prod", "after"), Some("after-restart")).await;
                (s == 202).then_some(body)
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(accepted["state"], "queued");
    assert_eq!(
        stream_messages(&nats.url()).await,
        2,
        "the operation from before the outage survived it"
    );
}

#[tokio::test]
async fn shutdown_finishes_and_stops_accepting() {
    let nats = NatsServer::start().await.unwrap();
    let d = Dispatcher::start(&nats.url(), &["prod"]).await.unwrap();
    let url = d.url.clone();
    d.stop().await.unwrap();
    assert!(
        reqwest::get(format!("{url}/healthz")).await.is_err(),
        "a stopped dispatcher must not accept"
    );
}

#[tokio::test]
async fn oversized_bodies_and_wrong_content_types_get_clear_4xx_and_the_replica_keeps_serving() {
    let nats = NatsServer::start().await.unwrap();
    let mut config = longshore_dispatcher::Config {
        clusters: vec!["prod".into()],
        ..Default::default()
    };
    config.nats.url = nats.url();
    config.http.body_limit = 2048;
    let d = Dispatcher::start_with(config).await.unwrap();
    let client = reqwest::Client::new();

    let mut big = apply("prod", "big");
    big["manifests"][0]["data"]["blob"] = json!("x".repeat(4096));
    let resp = client
        .post(format!("{}/v1/operations", d.url))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["type"], "urn:longshore:problem:payload-too-large");

    let resp = client
        .post(format!("{}/v1/operations", d.url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(apply("prod", "a").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);

    let (s, _, _) = post(&d, &apply("prod", "small"), None).await;
    assert_eq!(s, 202, "still serving after bad input");
    assert_eq!(stream_messages(&nats.url()).await, 1);
}

#[tokio::test]
async fn a_client_choosing_its_methods_adds_no_metric_series() {
    let nats = NatsServer::start().await.unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("ci");
    std::fs::write(&file, "ci-token").unwrap();
    let mut config = Dispatcher::config(&nats.url(), &["prod"]);
    config.tokens.insert(
        "ci".into(),
        longshore_dispatcher::config::TokenConfig {
            secret_file: Some(file),
            ..Default::default()
        },
    );
    let d = Dispatcher::start_with(config).await.unwrap();
    let http = reqwest::Client::new();
    let series = || async {
        let text = http
            .get(format!("{}/metrics", d.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with("longshore_dispatcher_http_requests_total{"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let before = series().await;
    // Anonymous, with tokens configured: each is refused, and none may name a series.
    for i in 0..40 {
        let method = reqwest::Method::from_bytes(format!("FOO{i}").as_bytes()).unwrap();
        let resp = http
            .request(method, format!("{}/v1/operations", d.url))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    let lines = series().await;
    assert!(
        lines.iter().all(|l| !l.contains("FOO")),
        "a client's method became a label: {lines:?}"
    );
    let other: f64 = lines
        .iter()
        .filter(|l| l.contains("method=\"other\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(other, 40.0, "{lines:?}");
    // Forty methods, one new series: `other` on that route with its refusal (and the
    // scrape's own).
    let name = |l: &String| l.rsplit_once(' ').map(|(n, _)| n.to_owned());
    let before: std::collections::BTreeSet<_> = before.iter().filter_map(name).collect();
    let added: Vec<_> = lines
        .iter()
        .filter_map(name)
        .filter(|n| !before.contains(n) && !n.contains("route=\"/metrics\""))
        .collect();
    assert_eq!(added.len(), 1, "{added:?}");
    // Known methods keep their names.
    let resp = http
        .get(format!("{}/v1/clusters", d.url))
        .bearer_auth("ci-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        series()
            .await
            .iter()
            .any(|l| l.contains("route=\"/v1/clusters\",method=\"GET\",status=\"200\"")),
        "{:?}",
        series().await
    );
}

#[tokio::test]
async fn every_route_starts_with_its_error_series_and_the_table_is_what_is_served() {
    use longshore_dispatcher::{api::ROUTES, console, metrics::ERROR_STATUSES};
    let nats = NatsServer::start().await.unwrap();
    let d = Dispatcher::start(&nats.url(), &["prod"]).await.unwrap();
    let http = reqwest::Client::new();
    let metrics = http
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let routes: Vec<_> = ROUTES.iter().chain(console::ROUTES).collect();
    for (route, methods) in &routes {
        for method in *methods {
            for status in ERROR_STATUSES {
                let series = format!(
                    "longshore_dispatcher_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} "
                );
                assert!(metrics.contains(&series), "no {series}");
            }
        }
    }
    // The table names exactly the methods each route serves: any other is 405.
    for (route, methods) in &routes {
        let path = route
            .replace("{*path}", "a/b")
            .replace("{control}", "pause")
            .replace(['{', '}'], "");
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let status = http
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{path}", d.url),
                )
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(
                status == 405,
                !methods.contains(&method),
                "{method} {route} answered {status}"
            );
        }
    }
}
