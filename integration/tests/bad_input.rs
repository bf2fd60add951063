//! Malformed requests against the real dispatcher: each gets a specific 4xx problem naming
//! what is wrong, and the dispatcher keeps serving (a good request succeeds at the end).

use longshore_dispatcher::{config::HookConfig, hooks::signature};
use longshore_integration::{dispatcher::Dispatcher, nats::NatsServer};
use serde_json::{Value, json};

const SECRET: &str = "bad-input-hook-secret";

struct Case {
    name: &'static str,
    path: &'static str,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// The problem type's slug.
    problem: &'static str,
    /// A field the problem names, or a phrase its detail holds.
    names: &'static str,
}

fn case(
    name: &'static str,
    body: Vec<u8>,
    status: u16,
    problem: &'static str,
    names: &'static str,
) -> Case {
    Case {
        name,
        path: "/v1/operations",
        content_type: "application/json",
        headers: Vec::new(),
        body,
        status,
        problem,
        names,
    }
}

fn submission(manifests: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"cluster": "prod", "action": "apply", "manifests": manifests}))
        .unwrap()
}

fn anchor_bomb() -> String {
    let mut yaml = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = 'a';
    for name in 'b'..='j' {
        yaml.push_str(&format!(
            "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = name;
    }
    yaml
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn names(problem: &Value, what: &str) -> bool {
    problem["detail"].as_str().is_some_and(|d| d.contains(what))
        || problem["errors"]
            .as_array()
            .is_some_and(|errors| errors.iter().any(|e| e["field"] == what))
}

#[tokio::test]
async fn each_bad_request_gets_a_specific_4xx_and_the_dispatcher_keeps_serving() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("hook");
    std::fs::write(&secret_path, SECRET).unwrap();
    let mut config = Dispatcher::config(&nats.url(), &["prod"]);
    config.http.body_limit = 64 * 1024;
    config.hooks.insert(
        "deployer".into(),
        HookConfig {
            secret_file: Some(secret_path),
            ..Default::default()
        },
    );
    let d = Dispatcher::start_with(config).await.unwrap();

    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default"}});
    let good = submission(json!([cm]));
    let hook = |name, headers: Vec<(&'static str, String)>, names| Case {
        path: "/v1/hooks/deployer",
        headers,
        ..case(name, good.clone(), 401, "unauthorized", names)
    };
    let huge = format!(
        "{{\"cluster\": \"prod\", \"action\": \"apply\", \"manifests\": \"{}\"}}",
        "a".repeat(100 * 1024)
    );
    let cases = vec![
        case(
            "invalid JSON",
            b"{\"cluster\": \"prod\",".to_vec(),
            400,
            "malformed-json",
            "malformed JSON",
        ),
        case(
            "YAML anchor bomb",
            submission(json!(anchor_bomb())),
            400,
            "invalid-request",
            "manifests",
        ),
        case(
            "huge document",
            huge.into_bytes(),
            413,
            "payload-too-large",
            "65536-byte limit",
        ),
        case(
            "non-object manifest",
            submission(json!(["just a string"])),
            400,
            "invalid-request",
            "manifests[0]",
        ),
        case(
            "missing kind",
            submission(json!([{"apiVersion": "v1", "metadata": {"name": "a"}}])),
            400,
            "invalid-request",
            "manifests[0].kind",
        ),
        case(
            "bad name",
            submission(
                json!([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "../../etc"}}]),
            ),
            400,
            "invalid-request",
            "manifests[0].metadata.name",
        ),
        case(
            "unknown cluster",
            serde_json::to_vec(&json!({"cluster": "prdo", "action": "apply", "manifests": [cm]}))
                .unwrap(),
            400,
            "invalid-request",
            "cluster",
        ),
        Case {
            content_type: "text/plain",
            ..case(
                "wrong content type",
                good.clone(),
                415,
                "unsupported-media-type",
                "text/plain",
            )
        },
        hook(
            "missing signature",
            vec![],
            "X-Longshore-Signature header is missing",
        ),
        hook(
            "wrong signature",
            vec![(
                "x-longshore-signature",
                signature::sign(b"not the secret", now(), &good),
            )],
            "signature does not match",
        ),
        hook(
            "stale timestamp",
            vec![(
                "x-longshore-signature",
                signature::sign(SECRET.as_bytes(), now() - 600, &good),
            )],
            "replay window",
        ),
        hook(
            "malformed signature",
            vec![("x-longshore-signature", "sha256=abc".into())],
            "expected t=<unix seconds>",
        ),
    ];

    let http = reqwest::Client::new();
    for c in &cases {
        let mut req = http
            .post(format!("{}{}", d.url, c.path))
            .header("content-type", c.content_type)
            .body(c.body.clone());
        for (name, value) in &c.headers {
            req = req.header(*name, value);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let status = resp.status().as_u16();
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        let problem: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, c.status, "{}: {problem}", c.name);
        assert_eq!(ct, "application/problem+json", "{}", c.name);
        assert_eq!(
            problem["type"],
            format!("urn:longshore:problem:{}", c.problem),
            "{}: {problem}",
            c.name
        );
        assert!(
            names(&problem, c.names),
            "{}: expected it to name {:?}: {problem}",
            c.name,
            c.names
        );
    }

    // Still serving: a good request through each door.
    let resp = http
        .post(format!("{}/v1/operations", d.url))
        .json(&json!({"cluster": "prod", "action": "apply", "manifests": [cm]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let resp = http
        .post(format!("{}/v1/hooks/deployer", d.url))
        .header("content-type", "application/json")
        .header(
            "x-longshore-signature",
            signature::sign(SECRET.as_bytes(), now(), &good),
        )
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}
