//! Per-cluster bearer tokens: refused and accepted requests over raw HTTP (one connection
//! kept open across a rotation), kube-rs through the kubeconfig kube-sim writes, kubectl
//! reading it, and rotation through `/_sim`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{WAIT, http};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use longshore_kube_sim::{ErrorFault, Faults, KubeSim, SimOptions, Trigger};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn start(clusters: &[&str]) -> KubeSim {
    KubeSim::start(SimOptions {
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
        auth_tokens: true,
        ..Default::default()
    })
    .await
    .expect("sim starts")
}

/// One request on an open connection (kept alive): the status code and the body.
async fn exchange(
    conn: &mut BufReader<TcpStream>,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
    conn.get_mut().write_all(req.as_bytes()).await.unwrap();
    let mut status = String::new();
    conn.read_line(&mut status).await.unwrap();
    let code = status.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await.unwrap();
    (code, String::from_utf8(body).unwrap())
}

fn assert_unauthorized(code: u16, body: &str) {
    assert_eq!(code, 401, "{body}");
    let status: Value = serde_json::from_str(body).expect("a Status body");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["apiVersion"], "v1");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "Unauthorized");
    assert_eq!(status["message"], "Unauthorized");
    assert_eq!(status["code"], 401);
}

#[tokio::test]
async fn requests_need_the_clusters_current_token() {
    let sim = start(&["prod", "staging"]).await;
    let prod = sim.cluster("prod").unwrap();
    let token = prod.token().expect("tokens are on");
    let other = sim.cluster("staging").unwrap().token().unwrap();
    assert_ne!(token, other, "each cluster has its own");

    let mut conn = BufReader::new(TcpStream::connect(sim.addr()).await.unwrap());
    let ns = "/clusters/prod/api/v1/namespaces";
    let (code, body) = exchange(&mut conn, ns, None).await;
    assert_unauthorized(code, &body);
    let (code, body) = exchange(&mut conn, "/clusters/prod/api", None).await;
    assert_unauthorized(code, &body);
    let (code, body) = exchange(&mut conn, ns, Some("wrong")).await;
    assert_unauthorized(code, &body);
    let (code, body) = exchange(&mut conn, ns, Some(&other)).await;
    assert_unauthorized(code, &body);
    let (code, body) = exchange(&mut conn, ns, Some(&token)).await;
    assert_eq!(code, 200, "{body}");

    // /version and the health paths are public, but a bad token is never anonymous.
    let (code, body) = exchange(&mut conn, "/clusters/prod/version", None).await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = exchange(&mut conn, "/clusters/prod/readyz", None).await;
    assert_eq!(code, 200);
    let (code, body) = exchange(&mut conn, "/clusters/prod/version", Some("wrong")).await;
    assert_unauthorized(code, &body);

    // Rotation: the same open connection is refused with the old token from now on.
    let rotated = prod.rotate_token();
    assert_ne!(rotated, token);
    assert_eq!(prod.token().as_deref(), Some(rotated.as_str()));
    let (code, body) = exchange(&mut conn, ns, Some(&token)).await;
    assert_unauthorized(code, &body);
    let (code, body) = exchange(&mut conn, ns, Some(&rotated)).await;
    assert_eq!(code, 200, "{body}");

    // Admin endpoints need no token.
    let (code, _, _) = http(&sim, "GET", "/_sim/clusters/prod/writes", "").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_refused_request_reaches_neither_faults_nor_the_write_log() {
    let sim = start(&["prod"]).await;
    let prod = sim.cluster("prod").unwrap();
    prod.set_faults(Faults {
        errors: vec![ErrorFault {
            status: 503,
            retry_after_seconds: None,
            when: Trigger::next(1),
        }],
        ..Default::default()
    });
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#;
    let (code, _, answer) = http(
        &sim,
        "POST",
        "/clusters/prod/api/v1/namespaces/default/configmaps",
        body,
    )
    .await;
    assert_unauthorized(code, &answer);
    assert!(prod.writes().is_empty());
    assert_eq!(prod.faults().errors.len(), 1, "the fault is still armed");
}

async fn kube_client(path: &Path, context: &str) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig reads");
    let options = KubeConfigOptions {
        context: Some(context.into()),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("config");
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}

#[tokio::test]
async fn kube_rs_authenticates_with_the_written_kubeconfig() {
    let sim = start(&["prod", "staging"]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&path).unwrap();
    let written = std::fs::read_to_string(&path).unwrap();
    let token = sim.cluster("staging").unwrap().token().unwrap();
    assert!(written.contains(&token), "the user entry holds the token");

    let client = kube_client(&path, "staging").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("authed".into());
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("created");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(
        !namespaces
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // The same client (its pooled connection too) is refused once the token rotates...
    sim.cluster("staging").unwrap().rotate_token();
    let err = cms.get("authed").await.expect_err("old token");
    let status = common::status(err);
    assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));

    // ...and a client from the rewritten kubeconfig gets in.
    sim.write_kubeconfig(&path).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(kube_client(&path, "staging").await, "default");
    assert!(cms.get("authed").await.is_ok());
}

#[tokio::test]
async fn admin_rotation_and_runtime_clusters_get_tokens() {
    let sim = start(&["prod"]).await;
    let prod = sim.cluster("prod").unwrap();
    let old = prod.token().unwrap();
    let (code, _, body) = http(&sim, "POST", "/_sim/clusters/prod/token", "").await;
    assert_eq!(code, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let new = body["token"].as_str().expect("the new token").to_string();
    assert_ne!(new, old);
    assert_eq!(prod.token(), Some(new));
    let (code, _, _) = http(&sim, "POST", "/_sim/clusters/nope/token", "").await;
    assert_eq!(code, 404);

    let edge = sim.add_cluster("edge").unwrap();
    assert!(edge.token().is_some(), "added clusters get a token too");
    let (code, _, body) = http(&sim, "GET", "/clusters/edge/api", "").await;
    assert_unauthorized(code, &body);
}

#[tokio::test]
async fn without_auth_tokens_anything_goes_until_a_rotation() {
    let sim = common::start(&["prod"]).await;
    let prod = sim.cluster("prod").unwrap();
    assert_eq!(prod.token(), None);
    let (code, _, _) = http(&sim, "GET", "/clusters/prod/api/v1/namespaces", "").await;
    assert_eq!(code, 200);
    // Rotating gives the cluster a token, which it requires from then on.
    let token = prod.rotate_token();
    let (code, _, body) = http(&sim, "GET", "/clusters/prod/api/v1/namespaces", "").await;
    assert_unauthorized(code, &body);
    let mut conn = BufReader::new(TcpStream::connect(sim.addr()).await.unwrap());
    let (code, _) = exchange(&mut conn, "/clusters/prod/api/v1/namespaces", Some(&token)).await;
    assert_eq!(code, 200);
}

fn kubectl_present() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// kubectl's exit status and its stdout and stderr.
async fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> (bool, String) {
    let mut c = tokio::process::Command::new("kubectl");
    c.arg("--kubeconfig").arg(kubeconfig);
    c.arg("--cache-dir").arg(cache);
    c.args(["--context", "prod", "--request-timeout", "5s"]);
    c.args(args).kill_on_drop(true);
    let out = tokio::time::timeout(WAIT + Duration::from_secs(5), c.output())
        .await
        .expect("kubectl in time")
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// client-go (so kubectl) reads a kubeconfig's credentials only for an `https` server ("only
/// try to read the auth information if we are secure"), and kube-sim serves plain HTTP: so
/// kubectl sends no token here. What it can show is that it reads the written kubeconfig,
/// that `/version` is public as on a real server, and that it takes the 401 for what a real
/// server's refusal is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_the_kubeconfig_and_understands_the_refusal() {
    if !kubectl_present() {
        // CI installs kubectl (integration/test.sh): there, its absence is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "kubectl is required in CI"
        );
        eprintln!("SKIPPED: kubectl is not installed");
        return;
    }
    let sim = start(&["prod", "staging"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, cache) = (dir.path().join("kubeconfig"), dir.path().join("cache"));
    sim.write_kubeconfig(&path).unwrap();

    let token = sim.cluster("prod").unwrap().token().unwrap();
    let jsonpath = "jsonpath={.users[?(@.name=='prod')].user.token}";
    let (ok, out) = kubectl(&path, &cache, &["config", "view", "--raw", "-o", jsonpath]).await;
    assert!(ok, "{out}");
    assert_eq!(out, token);

    let (ok, out) = kubectl(&path, &cache, &["version", "-o", "json"]).await;
    assert!(ok, "/version is public: {out}");
    assert!(out.contains("\"serverVersion\""), "{out}");

    let (ok, out) = kubectl(&path, &cache, &["get", "ns"]).await;
    assert!(!ok, "{out}");
    // What kubectl says when a real server refuses it.
    assert!(out.contains("You must be logged in to the server"), "{out}");
}
