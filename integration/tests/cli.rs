//! The `longshore` CLI as a pipeline step runs it: the real binary against the real
//! dispatcher, worker, nats-server and kube-sim. Exit codes are the contract.

use std::{process::Output, time::Duration};

use longshore_integration::{process::binary, system::System};
use serde_json::Value;

async fn cli(server: &str, args: &[&str]) -> Output {
    let bin = binary("longshore").expect("the longshore binary is built");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args)
        .env("LONGSHORE_SERVER", server)
        .env_remove("LONGSHORE_TOKEN");
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI finishes")
        .expect("the CLI runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn submit_wait_status_and_exit_codes() {
    let system = System::start(&["prod"], 1, 1).await.unwrap();
    let url = system.dispatchers[0].url.clone();
    let dir = tempfile::tempdir().unwrap();
    let ns = write(
        &dir,
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
    );
    let cm = write(
        &dir,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: shop\ndata:\n  a: \"1\"\n",
    );

    // Two files, waited for: exit 0, kubectl-like lines per object.
    let out = cli(
        &url,
        &[
            "submit",
            "-f",
            &ns,
            "-f",
            &cm,
            "--cluster",
            "prod",
            "--wait",
            "--timeout",
            "30s",
        ],
    )
    .await;
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("namespace/shop created"), "{text}");
    assert!(text.contains("configmap/cfg created"), "{text}");
    assert!(text.contains(" succeeded "), "{text}");
    assert_eq!(
        system
            .cluster("prod")
            .writes()
            .iter()
            .filter(|w| w.changed)
            .count(),
        2
    );

    // -o json for machines; the same key again is the same operation.
    let out = cli(
        &url,
        &[
            "submit",
            "-f",
            &cm,
            "--cluster",
            "prod",
            "--idempotency-key",
            "k-1",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    let accepted: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    let out = cli(&url, &["wait", &id, "-o", "json", "--timeout", "30s"]).await;
    assert_eq!(out.status.code(), Some(0));
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["state"], "succeeded");
    let out = cli(
        &url,
        &[
            "submit",
            "-f",
            &cm,
            "--cluster",
            "prod",
            "--idempotency-key",
            "k-1",
            "-o",
            "json",
        ],
    )
    .await;
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["id"], accepted["id"]);
    let out = cli(&url, &["status", &id]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains(&format!("operation/{id} succeeded")));

    // A manifest the API server refuses: the operation fails, exit 1 with the reason.
    let bad = write(
        &dir,
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_Valid\n  namespace: shop\n",
    );
    let out = cli(
        &url,
        &[
            "submit",
            "-f",
            &bad,
            "--cluster",
            "prod",
            "--wait",
            "--timeout",
            "30s",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains(" failed "), "{}", stdout(&out));

    // Refused by the dispatcher: exit 1, the problem on stderr naming the field.
    let out = cli(&url, &["submit", "-f", &cm, "--cluster", "nowhere"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cluster: unknown cluster"));

    // Usage errors: exit 2.
    let out = cli(&url, &["submit", "--cluster", "prod"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = cli(
        &url,
        &["submit", "-f", "/nonexistent.yaml", "--cluster", "prod"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn waiting_past_the_timeout_exits_2() {
    // No worker: the operation stays queued.
    let system = System::start(&["prod"], 1, 0).await.unwrap();
    let url = system.dispatchers[0].url.clone();
    let dir = tempfile::tempdir().unwrap();
    let cm = write(
        &dir,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: default\n",
    );
    let out = cli(
        &url,
        &[
            "submit",
            "-f",
            &cm,
            "--cluster",
            "prod",
            "--wait",
            "--timeout",
            "500ms",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("still queued"));
}
