//! The `longshore` CLI as a pipeline step runs it: the real binary against the real
//! dispatcher, worker, nats-server and kube-sim. Exit codes are the contract.

use std::{process::Output, time::Duration};

use longshore_integration::{process::binary, system::System, wait::eventually};
use longshore_kube_sim::Rollouts;
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

#[tokio::test]
async fn submit_scale_rollout_and_run_job_from_files() {
    let system = System::start(&["prod"], 1, 1).await.unwrap();
    let url = system.dispatchers[0].url.clone();
    let dir = tempfile::tempdir().unwrap();
    let deploy = write(
        &dir,
        "deploy.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: shop\n\
         spec:\n  replicas: 1\n  selector:\n    matchLabels: {app: api}\n  template:\n\
         \x20   metadata:\n      labels: {app: api}\n    spec:\n      containers:\n\
         \x20     - {name: api, image: api:1}\n",
    );
    // The Deployment alone, as a rollout or scale step names it.
    let api = write(
        &dir,
        "api.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: shop\n",
    );
    let run = |args: Vec<String>| {
        let url = url.clone();
        async move {
            let mut all = vec!["submit".to_owned(), "--cluster".into(), "prod".into()];
            all.extend(args);
            all.extend(["--wait".into(), "--timeout".into(), "30s".into()]);
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            cli(&url, &args).await
        }
    };
    let ok = |out: &Output, what: &str| {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: {}{}",
            stdout(out),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let prod = system.cluster("prod");
    // Deployments get a ReplicaSet per template, so there is a revision to undo to.
    prod.set_rollouts(Rollouts::progressing(Duration::from_millis(10)));
    let get = || {
        prod.get("apps/v1", "Deployment", Some("shop"), "api")
            .expect("the Deployment exists")
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();

    ok(&run(s(&["-f", &deploy])).await, "apply");

    let out = run(s(&["-f", &api, "--action", "scale", "--replicas", "3"])).await;
    ok(&out, "scale");
    assert_eq!(get()["spec"]["replicas"], 3);

    let out = run(s(&["-f", &api, "--action", "rollout-restart"])).await;
    ok(&out, "rollout-restart");
    let template = &get()["spec"]["template"]["metadata"]["annotations"];
    assert!(
        template["kubectl.kubernetes.io/restartedAt"].is_string(),
        "{template}"
    );

    ok(
        &run(s(&["-f", &api, "--action", "rollout-pause"])).await,
        "pause",
    );
    assert_eq!(get()["spec"]["paused"], true);
    ok(
        &run(s(&["-f", &api, "--action", "rollout-resume"])).await,
        "resume",
    );
    assert_eq!(get()["spec"]["paused"], false);

    // Back to revision 1, the template before the restart, once the controller has
    // recorded the restart as revision 2.
    eventually(Duration::from_secs(10), "revision 2 recorded", || async {
        (get()["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2").then_some(())
    })
    .await
    .unwrap();
    let out = run(s(&[
        "-f",
        &api,
        "--action",
        "rollout-undo",
        "--to-revision",
        "1",
    ]))
    .await;
    ok(&out, "rollout-undo");
    let template = &get()["spec"]["template"]["metadata"]["annotations"];
    assert!(
        template["kubectl.kubernetes.io/restartedAt"].is_null(),
        "{template}"
    );

    let job = write(
        &dir,
        "job.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  namespace: shop\n\
         spec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n\
         \x20     - {name: migrate, image: api:1}\n",
    );
    ok(
        &run(s(&["-f", &job, "--action", "run-job"])).await,
        "run-job",
    );
    assert_eq!(prod.list("batch/v1", "Job", Some("shop")).len(), 1);

    // The dispatcher refuses a scale without a count, naming the field: exit 1.
    let out = cli(
        &url,
        &[
            "submit",
            "-f",
            &api,
            "--cluster",
            "prod",
            "--action",
            "scale",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("replicas"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A file that names no object is a usage error: exit 2.
    let nameless = write(
        &dir,
        "nameless.yaml",
        "apiVersion: apps/v1\nkind: Deployment\n",
    );
    let out = cli(
        &url,
        &[
            "submit",
            "-f",
            &nameless,
            "--cluster",
            "prod",
            "--action",
            "rollout-restart",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
}
