//! kubectl 1.32 as a real subprocess against kube-sim: discovery, server-side apply of a
//! multi-document file, managed fields, scale, rollout restart, delete and watch.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{WAIT, start};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: shop
data:
  color: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: nginx:1.27
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - port: 80
"#;

fn kubectl_present() -> bool {
    std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn kubectl(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--context")
        .arg("prod");
    c.arg("--cache-dir").arg(dir.join("cache"));
    c.args(args);
    c.kill_on_drop(true);
    c
}

async fn run(dir: &Path, args: &[&str]) -> String {
    let out = tokio::time::timeout(WAIT, kubectl(dir, args).output())
        .await
        .expect("kubectl in time")
        .expect("kubectl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_scale_restart_delete() {
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
    sim.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    let file = file.to_str().unwrap();

    let resources = run(dir.path(), &["api-resources"]).await;
    assert!(
        resources
            .lines()
            .any(|l| l.starts_with("deployments") && l.contains("deploy") && l.contains("apps/v1"))
    );

    let applied = run(dir.path(), &["apply", "--server-side", "-f", file]).await;
    assert_eq!(
        applied.matches("serverside-applied").count(),
        4,
        "{applied}"
    );
    let prod = sim.cluster("prod").unwrap();
    let rv = prod.resource_version();
    run(dir.path(), &["apply", "--server-side", "-f", file]).await;
    assert_eq!(
        prod.resource_version(),
        rv,
        "re-applying the same file changes nothing"
    );
    assert!(prod.writes()[4..].iter().all(|w| !w.changed));

    let yaml = run(
        dir.path(),
        &[
            "-n",
            "shop",
            "get",
            "deploy",
            "web",
            "-o",
            "yaml",
            "--show-managed-fields",
        ],
    )
    .await;
    for needle in [
        "managedFields:",
        "manager: kubectl",
        "operation: Apply",
        "uid:",
        "resourceVersion:",
        "generation: 1",
    ] {
        assert!(yaml.contains(needle), "{needle} missing in {yaml}");
    }

    run(
        dir.path(),
        &["-n", "shop", "scale", "deploy", "web", "--replicas=3"],
    )
    .await;
    run(
        dir.path(),
        &["-n", "shop", "rollout", "restart", "deploy", "web"],
    )
    .await;
    let d = prod.get("apps/v1", "deploy", Some("shop"), "web").unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["generation"], 3);
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string()
    );

    let deleted = run(dir.path(), &["delete", "-f", file]).await;
    assert_eq!(deleted.matches("deleted").count(), 4, "{deleted}");
    assert!(prod.get("v1", "Namespace", None, "shop").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_sees_an_update() {
    if !kubectl_present() {
        // CI installs kubectl (integration/test.sh): there, its absence is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "kubectl is required in CI"
        );
        eprintln!("SKIPPED: kubectl is not installed");
        return;
    }
    let sim = start(&["prod"]).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(common::client(&sim, "prod").await, "default");
    let cm = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "watched"}, "data": {"v": v}});
    cms.patch("watched", &PatchParams::apply("t"), &Patch::Apply(cm("1")))
        .await
        .unwrap();

    let mut child = kubectl(
        dir.path(),
        &["get", "cm", "-w", "-o", "jsonpath={.data.v}{\"\\n\"}"],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("initial line")
        .unwrap();
    assert_eq!(first.as_deref(), Some("1"));
    cms.patch("watched", &PatchParams::apply("t"), &Patch::Apply(cm("2")))
        .await
        .unwrap();
    let second = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("update line")
        .unwrap();
    assert_eq!(second.as_deref(), Some("2"));
    child.kill().await.unwrap();
}
