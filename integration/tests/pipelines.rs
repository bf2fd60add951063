//! What pipelines rely on, against the real dispatcher and nats-server: bearer tokens and
//! their policies, rate limits, signed webhooks, keys derived from pipeline context, and
//! waiting for the outcome (long poll and server-sent events) through the whole system.

use std::time::Duration;

use longshore_dispatcher::{
    config::{HookConfig, RateLimitConfig, SignatureScheme, TokenConfig},
    hooks::{mapping::MappingConfig, signature},
    policy::PolicyConfig,
};
use longshore_integration::{dispatcher::Dispatcher, nats::NatsServer, system::System};
use serde_json::{Value, json};

const CI_TOKEN: &str = "ci-token-value";
const OPS_TOKEN: &str = "ops-token-value";
const HOOK_SECRET: &str = "hook-secret-value";

fn configmap(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": {"k": "v"}})
}

fn secret_file(dir: &tempfile::TempDir, name: &str, value: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    path
}

/// A dispatcher with two tokens (`ci`: staging, team-a-* namespaces, apply only, 3 requests
/// then 1/min; `ops`: anything) and two webhook sources.
async fn secured(nats: &NatsServer, dir: &tempfile::TempDir) -> Dispatcher {
    let mut config = Dispatcher::config(&nats.url(), &["prod", "staging"]);
    config.tokens.insert(
        "ci".into(),
        TokenConfig {
            secret_file: Some(secret_file(dir, "ci", CI_TOKEN)),
            policy: PolicyConfig {
                clusters: vec!["staging".into()],
                namespaces: vec!["team-a-*".into()],
                kinds: vec!["ConfigMap".into()],
                actions: vec![longshore_contract::Action::Apply],
                ..Default::default()
            },
            rate_limit: RateLimitConfig {
                per_second: 1.0 / 60.0,
                burst: 4,
            },
            ..Default::default()
        },
    );
    config.tokens.insert(
        "ops".into(),
        TokenConfig {
            secret_file: Some(secret_file(dir, "ops", OPS_TOKEN)),
            ..Default::default()
        },
    );
    config.hooks.insert(
        "deployer".into(),
        HookConfig {
            secret_file: Some(secret_file(dir, "hook", HOOK_SECRET)),
            signature: SignatureScheme::Longshore,
            ..Default::default()
        },
    );
    config.hooks.insert(
        "github".into(),
        HookConfig {
            secret_file: Some(secret_file(dir, "gh", HOOK_SECRET)),
            signature: SignatureScheme::Github,
            policy: PolicyConfig {
                clusters: vec!["staging".into()],
                ..Default::default()
            },
            map: Some(MappingConfig {
                cluster: Some("/client_payload/cluster".into()),
                action: Some("=apply".into()),
                manifests: Some("/client_payload/manifests".into()),
                pipeline: Some("/repository/full_name".into()),
                execution: Some("/client_payload/run_id".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    Dispatcher::start_with(config).await.unwrap()
}

async fn post(
    d: &Dispatcher,
    token: Option<&str>,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/operations", d.url))
        .json(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

async fn hook(
    d: &Dispatcher,
    source: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/hooks/{source}", d.url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn tokens_policies_and_rate_limits() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = secured(&nats, &dir).await;
    let good = json!({"cluster": "staging", "action": "apply", "manifests": [configmap("team-a-web", "a")]});

    let (s, h, b) = post(&d, None, &good).await;
    assert_eq!(
        (s, b["type"].as_str()),
        (401, Some("urn:longshore:problem:unauthorized"))
    );
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let (s, _, _) = post(&d, Some("not-a-token"), &good).await;
    assert_eq!(s, 401);

    // 1: allowed; the token's name is the source, so the same key under another token is
    // another operation.
    let with_key = |mut v: Value| {
        v["idempotencyKey"] = json!("deploy-1");
        v
    };
    let (s, _, ci) = post(&d, Some(CI_TOKEN), &with_key(good.clone())).await;
    assert_eq!(s, 202, "{ci}");
    let (s, _, ops) = post(&d, Some(OPS_TOKEN), &with_key(good.clone())).await;
    assert_eq!(s, 202, "{ops}");
    assert_ne!(ci["id"], ops["id"], "keys are scoped per token");
    let record: Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/operations/{}",
            d.url,
            ci["id"].as_str().unwrap()
        ))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["source"], "ci");

    // 2 and 3: refusals name the field, the value and the token.
    let bad_ns = json!({"cluster": "staging", "action": "apply",
        "manifests": [configmap("team-a-web", "a"), configmap("team-a-api", "b"), configmap("kube-system", "c")]});
    let (s, _, b) = post(&d, Some(CI_TOKEN), &bad_ns).await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(
        b["detail"],
        r#"manifests[2].metadata.namespace "kube-system" is not allowed for token "ci""#
    );
    let (s, _, b) = post(
        &d,
        Some(CI_TOKEN),
        &json!({"cluster": "prod", "action": "apply", "manifests": [configmap("team-a-web", "a")]}),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(
        b["detail"],
        r#"cluster "prod" is not allowed for token "ci""#
    );

    // 4: the burst is spent; the next is 429 with Retry-After.
    let (s, _, _) = post(&d, Some(CI_TOKEN), &good).await;
    assert_eq!(s, 202);
    let (s, h, b) = post(&d, Some(CI_TOKEN), &good).await;
    assert_eq!(s, 429, "{b}");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Other tokens are not limited by it.
    let (s, _, _) = post(&d, Some(OPS_TOKEN), &good).await;
    assert_eq!(s, 202);
}

#[tokio::test]
async fn signed_webhooks_are_accepted_and_unsigned_ones_refused() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = secured(&nats, &dir).await;
    let body = serde_json::to_vec(&json!({"cluster": "prod", "action": "apply",
        "manifests": [configmap("default", "a")], "idempotencyKey": "hook-1"}))
    .unwrap();
    let sig = |t: i64, body: &[u8]| signature::sign(HOOK_SECRET.as_bytes(), t, body);

    let (s, b) = hook(
        &d,
        "deployer",
        &[("x-longshore-signature", sig(now(), &body))],
        &body,
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let record: Value = reqwest::get(format!(
        "{}/v1/operations/{}",
        d.url,
        b["id"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(record["status"], 401, "reading needs a token too: {record}");

    let (s, b) = hook(&d, "deployer", &[], &body).await;
    assert_eq!(s, 401);
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("X-Longshore-Signature header is missing"),
        "{b}"
    );
    let wrong = signature::sign(b"another secret", now(), &body);
    let (s, b) = hook(&d, "deployer", &[("x-longshore-signature", wrong)], &body).await;
    assert_eq!(s, 401);
    assert!(
        b["detail"].as_str().unwrap().contains("does not match"),
        "{b}"
    );
    let stale = sig(now() - 3600, &body);
    let (s, b) = hook(&d, "deployer", &[("x-longshore-signature", stale)], &body).await;
    assert_eq!(s, 401);
    assert!(
        b["detail"].as_str().unwrap().contains("replay window"),
        "{b}"
    );
    let (s, _) = hook(&d, "nobody", &[], &body).await;
    assert_eq!(s, 404);

    // A captured delivery replayed inside the window starts no second operation: not as
    // it was, and not with an unsigned header changed.
    let keyless = serde_json::to_vec(&json!({"cluster": "prod", "action": "apply",
        "manifests": [configmap("default", "c")]}))
    .unwrap();
    let signed = sig(now(), &keyless);
    let (s, original) = hook(
        &d,
        "deployer",
        &[("x-longshore-signature", signed.clone())],
        &keyless,
    )
    .await;
    assert_eq!(s, 202, "{original}");
    let (s, replay) = hook(
        &d,
        "deployer",
        &[("x-longshore-signature", signed.clone())],
        &keyless,
    )
    .await;
    assert_eq!(
        (s, &replay["id"]),
        (202, &original["id"]),
        "a replay is the same operation"
    );
    let (s, b) = hook(
        &d,
        "deployer",
        &[
            ("x-longshore-signature", signed.clone()),
            ("idempotency-key", "replayed-under-another-key".to_owned()),
        ],
        &keyless,
    )
    .await;
    assert_eq!(
        s, 400,
        "an unsigned key must not make a second operation: {b}"
    );
    assert_eq!(b["errors"][0]["field"], "Idempotency-Key", "{b}");
    // The key the signed body names is the key.
    let (s, keyed) = hook(
        &d,
        "deployer",
        &[("x-longshore-signature", sig(now(), &body))],
        &body,
    )
    .await;
    assert_eq!((s, keyed["idempotencyKey"].as_str()), (202, Some("hook-1")));

    // GitHub: mapped payload, the delivery id as the key, and the source's policy.
    let payload = |cluster: &str| {
        serde_json::to_vec(&json!({"repository": {"full_name": "acme/shop"},
            "client_payload": {"cluster": cluster, "run_id": 981, "manifests": [configmap("default", "b")]}}))
        .unwrap()
    };
    let gh = payload("staging");
    let headers = [
        (
            "x-hub-signature-256",
            signature::sign_github(HOOK_SECRET.as_bytes(), &gh),
        ),
        (
            "x-github-delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned(),
        ),
    ];
    let (s, first) = hook(&d, "github", &headers, &gh).await;
    assert_eq!(s, 202, "{first}");
    // GitHub signs neither the delivery id nor a timestamp: the key comes from what is
    // signed, so a captured delivery cannot be made into a second operation.
    let key = first["idempotencyKey"].as_str().unwrap();
    assert!(key.starts_with("signed:sha256:"), "{first}");
    let (s, again) = hook(&d, "github", &headers, &gh).await;
    assert_eq!(
        (s, &again["id"]),
        (202, &first["id"]),
        "a redelivery is the same operation"
    );
    let mut replayed = headers.clone();
    replayed[1].1 = "a-different-delivery-id".to_owned();
    let (s, again) = hook(&d, "github", &replayed, &gh).await;
    assert_eq!(
        (s, &again["id"]),
        (202, &first["id"]),
        "a replay under another delivery id is still the same operation"
    );
    let prod = payload("prod");
    let (s, b) = hook(
        &d,
        "github",
        &[(
            "x-hub-signature-256",
            signature::sign_github(HOOK_SECRET.as_bytes(), &prod),
        )],
        &prod,
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(
        b["detail"],
        r#"cluster "prod" is not allowed for hook "github""#
    );
    let (s, _) = hook(
        &d,
        "github",
        &[("x-hub-signature-256", signature::sign_github(b"x", &gh))],
        &gh,
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn pipeline_context_derives_the_key_without_the_attempt() {
    let nats = NatsServer::start().await.unwrap();
    let mut config = Dispatcher::config(&nats.url(), &["prod"]);
    config.http.public_url = Some("https://longshore.example.com/".into());
    let d = Dispatcher::start_with(config).await.unwrap();
    let body = |attempt: u32| {
        json!({"cluster": "prod", "action": "apply", "manifests": [configmap("default", "a")],
        "pipeline": {"pipeline": "shop", "execution": "42", "stage": "deploy", "attempt": attempt}})
    };
    let (s, h1, b1) = post(&d, None, &body(1)).await;
    assert_eq!(s, 202, "{b1}");
    assert_eq!(b1["idempotencyKey"], r#"pipeline:["shop","42","deploy"]"#);
    let status_url = format!(
        "https://longshore.example.com/v1/operations/{}",
        b1["id"].as_str().unwrap()
    );
    assert_eq!(
        b1["statusUrl"],
        status_url.as_str(),
        "absolute for tools that need it"
    );
    assert_eq!(h1["location"], status_url.as_str());
    assert!(h1.get("idempotent-replayed").is_none());
    let (s, h2, b2) = post(&d, None, &body(2)).await;
    assert_eq!(s, 202, "{b2}");
    assert_eq!(b1["id"], b2["id"], "a retried stage is the same operation");
    assert_eq!(h2["idempotent-replayed"], "true");
    let mut next = body(1);
    next["pipeline"]["execution"] = json!("43");
    let (_, _, b3) = post(&d, None, &next).await;
    assert_ne!(b1["id"], b3["id"], "another execution is another operation");
}

#[tokio::test]
async fn waiting_for_the_outcome_by_long_poll_and_events() {
    let mut system = System::start(&["prod"], 1, 1).await.unwrap();
    let url = system.dispatchers[0].url.clone();
    let http = reqwest::Client::new();

    // Bad waits are refused, naming the parameter.
    let id = system
        .accept(0, &json!({"cluster": "prod", "action": "apply", "manifests": [configmap("default", "w")]}), None)
        .await
        .unwrap();
    let resp = http
        .get(format!("{url}/v1/operations/{id}?wait=1h"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["errors"][0]["field"], "wait");

    let started = std::time::Instant::now();
    let record: Value = http
        .get(format!("{url}/v1/operations/{id}?wait=20s"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["state"], "succeeded", "{record}");
    assert!(started.elapsed() < Duration::from_secs(15));

    // The event stream of a finished operation: its terminal state, then the end.
    let text = tokio::time::timeout(
        Duration::from_secs(10),
        http.get(format!("{url}/v1/operations/{id}/events"))
            .send()
            .await
            .unwrap()
            .text(),
    )
    .await
    .expect("the stream ends after a terminal state")
    .unwrap();
    assert!(text.contains("event: state"), "{text}");
    assert!(text.contains(r#""state":"succeeded""#), "{text}");

    // A live stream sees queued/running before succeeded. Stop the worker so the operation
    // stays queued while the stream opens, then start one.
    let worker = system.workers.pop().unwrap();
    worker.stop().await.unwrap();
    let id = system
        .accept(0, &json!({"cluster": "prod", "action": "apply", "manifests": [configmap("default", "e")]}), None)
        .await
        .unwrap();
    let resp = http
        .get(format!("{url}/v1/operations/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // A short long-poll on a queued operation answers with its current state.
    let queued: Value = http
        .get(format!("{url}/v1/operations/{id}?wait=200ms"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(queued["state"], "queued");
    system.add_worker("worker-late");
    let text = tokio::time::timeout(Duration::from_secs(20), resp.text())
        .await
        .unwrap()
        .unwrap();
    let states: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["state"].as_str().map(str::to_owned))
        .map(|s| match s.as_str() {
            "queued" => "queued",
            "running" => "running",
            "succeeded" => "succeeded",
            _ => "other",
        })
        .collect();
    assert_eq!(states.first(), Some(&"queued"), "{text}");
    assert_eq!(states.last(), Some(&"succeeded"), "{text}");
}
