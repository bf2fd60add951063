//! The `longshore` CLI as a pipeline step and an operator run it: the real binary against
//! the real dispatcher, worker, nats-server and kube-sim. Exit codes are the contract.

use std::{path::Path, process::Output, time::Duration};

use longshore_integration::{
    dispatcher::Dispatcher, nats::NatsServer, system::System, wait::eventually, worker::Worker,
};
use longshore_kube_sim::{KubeSim, Rollouts, SimOptions};
use serde_json::{Value, json};

async fn cli(server: &str, args: &[&str]) -> Output {
    longshore_integration::cli::run(server, args).await
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
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

/// How long a cluster change may take to be seen (a pool announcing itself, a probe).
const WAIT: Duration = Duration::from_secs(20);

async fn sim(clusters: &[&str]) -> KubeSim {
    KubeSim::start(SimOptions {
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A worker of `pool` whose credentials are the kubeconfig files in `dir`, one per cluster.
fn worker(nats: &NatsServer, dir: &Path, pool: &str, id: &str) -> Worker {
    let mut config = Worker::config(&nats.url(), dir, id);
    config.clusters.kubeconfig = None;
    config.clusters.kubeconfig_dir = Some(dir.to_owned());
    config.clusters.reload_interval = Duration::from_millis(100);
    config.pool.name = pool.into();
    Worker::start_with(config)
}

/// Runs `longshore clusters register ...` until it succeeds (bounded): a pool is known
/// once its first worker has announced its credentials.
async fn register(url: &str, args: &[&str]) -> Output {
    let mut all = vec!["clusters", "register"];
    all.extend(args);
    eventually(WAIT, &format!("{args:?} registered"), || async {
        let out = cli(url, &all).await;
        (out.status.code() == Some(0)).then_some(out)
    })
    .await
    .unwrap()
}

/// The rows of `clusters list`'s table, each split into its cells; then the lines after it.
fn table(out: &Output) -> (Vec<Vec<String>>, Vec<String>) {
    let text = stdout(out);
    let mut lines = text.lines();
    let rows = lines
        .by_ref()
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    (rows, lines.map(str::to_owned).collect())
}

/// The names `clusters list -o json` printed, if it printed a JSON array of clusters.
fn listed(out: &Output) -> Option<Vec<String>> {
    let items: Value = serde_json::from_slice(&out.stdout).ok()?;
    items
        .as_array()?
        .iter()
        .map(|i| i["name"].as_str().map(str::to_owned))
        .collect()
}

fn names(out: &Output) -> Vec<String> {
    listed(out).unwrap_or_else(|| panic!("not a list of clusters: {}{}", stdout(out), stderr(out)))
}

/// Runs the CLI until `check` accepts what it printed (bounded): a dispatcher's reads
/// follow the registry, so they see a write a moment after it is made.
async fn until(url: &str, args: &[&str], what: &str, check: impl Fn(&Output) -> bool) -> Output {
    eventually(WAIT, what, || async {
        let out = cli(url, args).await;
        check(&out).then_some(out)
    })
    .await
    .unwrap()
}

/// `key: value` lines, as `clusters get` prints them.
fn fields(out: &Output) -> std::collections::BTreeMap<String, String> {
    stdout(out)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

#[tokio::test]
async fn clusters_are_registered_listed_labelled_shown_and_removed() {
    let nats = NatsServer::start().await.unwrap();
    let sim = sim(&["prod", "staging", "dev"]).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig_dir(dir.path()).unwrap();
    let d = Dispatcher::start(&nats.url(), &[]).await.unwrap();
    let url = d.url.clone();
    let _w = worker(&nats, dir.path(), "workers", "w1");

    let out = register(&url, &["prod", "-l", "env=prod", "-l", "region=eu"]).await;
    assert_eq!(stdout(&out), "cluster/prod registered\n");
    let out = register(&url, &["staging", "-l", "env=staging"]).await;
    assert_eq!(stdout(&out), "cluster/staging registered\n");
    let out = register(&url, &["dev", "--context", "dev", "-l", "env=dev"]).await;
    assert_eq!(stdout(&out), "cluster/dev registered\n");
    // Registering again replaces what is declared: configured, not registered.
    let out = cli(
        &url,
        &[
            "clusters",
            "register",
            "prod",
            "-l",
            "env=prod",
            "-l",
            "region=eu",
        ],
    )
    .await;
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "cluster/prod configured\n"),
        "{}",
        stderr(&out)
    );

    until(
        &url,
        &["clusters", "list", "-o", "json"],
        "all three listed",
        |o| listed(o).is_some_and(|n| n == ["dev", "prod", "staging"]),
    )
    .await;

    // A selector, as a table: only prod, its labels as k=v, its age.
    let out = cli(&url, &["clusters", "list", "-l", "env=prod"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (rows, _) = table(&out);
    assert_eq!(rows[0], ["NAME", "POOL", "PHASE", "LABELS", "AGE"]);
    assert_eq!(rows.len(), 2, "{}", stdout(&out));
    assert_eq!(rows[1][..2], ["prod", "workers"]);
    assert!(
        matches!(rows[1][2].as_str(), "pending" | "ready"),
        "{:?}",
        rows[1]
    );
    assert_eq!(rows[1][3], "env=prod,region=eu");
    assert!(rows[1][4].ends_with('s'), "just registered: {:?}", rows[1]);
    // The same as JSON, and the selector the other way round.
    let out = cli(&url, &["clusters", "list", "-l", "env=prod", "-o", "json"]).await;
    assert_eq!(names(&out), ["prod"]);
    let out = cli(&url, &["clusters", "list", "-l", "env!=prod", "-o", "json"]).await;
    assert_eq!(names(&out), ["dev", "staging"]);
    // Every page is followed (one cluster a page here), or up to --limit.
    let out = cli(
        &url,
        &["clusters", "list", "--chunk-size", "1", "-o", "json"],
    )
    .await;
    assert_eq!(names(&out), ["dev", "prod", "staging"]);
    let out = cli(
        &url,
        &[
            "clusters",
            "list",
            "--chunk-size",
            "1",
            "--limit",
            "2",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(names(&out), ["dev", "prod"]);
    let out = cli(&url, &["clusters", "list", "--limit", "2"]).await;
    assert_eq!(table(&out).0.len(), 3, "a header and two rows");
    assert!(
        stderr(&out).contains("more clusters match"),
        "{}",
        stderr(&out)
    );

    // Labels set and removed, the others kept.
    let out = cli(&url, &["clusters", "label", "staging", "tier=gold", "env-"]).await;
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "cluster/staging labeled\n"),
        "{}",
        stderr(&out)
    );
    until(
        &url,
        &["clusters", "get", "staging", "-o", "json"],
        "staging relabelled",
        |o| {
            serde_json::from_slice::<Value>(&o.stdout)
                .is_ok_and(|b| b["labels"] == json!({"tier": "gold"}))
        },
    )
    .await;
    let out = cli(&url, &["clusters", "list", "-l", "env=staging"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("No clusters found"),
        "{}",
        stderr(&out)
    );

    // One cluster, declared and observed, once its pool has probed it.
    let body = eventually(WAIT, "prod probed", || async {
        let out = cli(&url, &["clusters", "get", "prod", "-o", "json"]).await;
        let body: Value = serde_json::from_slice(&out.stdout).ok()?;
        (body["status"]["phase"] == "ready").then_some(body)
    })
    .await
    .unwrap();
    assert_eq!(body["name"], "prod");
    assert_eq!(body["status"]["members"], 1);
    let out = cli(&url, &["clusters", "get", "prod"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = fields(&out);
    let field = |k: &str| shown.get(k).map(String::as_str).unwrap_or_default();
    assert_eq!(field("name"), "prod");
    assert_eq!(field("pool"), "workers");
    assert_eq!(field("credentials"), "kubeconfig context prod");
    assert_eq!(field("labels"), "env=prod,region=eu");
    assert_eq!(field("phase"), "ready");
    assert_eq!(field("members"), "1");
    assert_eq!(
        Some(field("version")),
        body["status"]["observed"]["serverVersion"].as_str()
    );
    assert!(field("latency").ends_with("ms"), "{}", stdout(&out));
    assert!(field("observed").contains("by w1"), "{}", stdout(&out));
    assert!(field("registered").contains("by api"), "{}", stdout(&out));

    // Removed: gone from the registry, and a get says so (exit 1).
    let out = cli(&url, &["clusters", "remove", "dev"]).await;
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "cluster/dev removed\n"),
        "{}",
        stderr(&out)
    );
    let out = until(&url, &["clusters", "get", "dev"], "dev gone", |o| {
        o.status.code() == Some(1)
    })
    .await;
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    let out = cli(&url, &["clusters", "list", "-o", "json"]).await;
    assert_eq!(names(&out), ["prod", "staging"]);

    // Malformed labels are refused before anything is sent: exit 2, nothing registered.
    for args in [
        &["clusters", "register", "qa", "-l", "novalue"][..],
        &["clusters", "register", "qa", "-l", "bad key=v"],
        &["clusters", "register", "qa", "-l", "a=1", "-l", "a=2"],
        &["clusters", "label", "prod", "tier"],
        &["clusters", "register", "Not_A_Name"],
    ] {
        let out = cli(&url, args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("error:"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = cli(&url, &["clusters", "register", "qa", "-l", "novalue"]).await;
    assert!(stderr(&out).contains("KEY=VALUE"), "{}", stderr(&out));
    let out = cli(&url, &["clusters", "get", "qa"]).await;
    assert_eq!(out.status.code(), Some(1), "qa was never registered");

    // Refused by the dispatcher: exit 1, the field and its reason.
    let out = cli(
        &url,
        &["clusters", "register", "staging", "--pool", "nobody"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("pool: unknown pool \"nobody\""),
        "{}",
        stderr(&out)
    );
    let out = cli(&url, &["clusters", "list", "-l", "env in ("]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("selector: "), "{}", stderr(&out));
    // Nothing above changed staging.
    let out = cli(&url, &["clusters", "get", "staging", "-o", "json"]).await;
    let after: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&after["pool"], &after["labels"]),
        (&json!("workers"), &json!({"tier": "gold"}))
    );

    // No dispatcher there: exit 1.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = cli(&nobody, &["clusters", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach the dispatcher"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn removing_a_cluster_with_queued_work_is_refused_unless_forced() {
    let nats = NatsServer::start().await.unwrap();
    let sim = sim(&["y"]).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig_dir(dir.path()).unwrap();
    let d = Dispatcher::start(&nats.url(), &[]).await.unwrap();
    let url = d.url.clone();
    let _hub = worker(&nats, dir.path(), "workers", "hub-1");
    // The only worker of pool idle announces it, then stops: work for y stays queued.
    let idle = worker(&nats, dir.path(), "idle", "idle-1");
    register(&url, &["y", "--pool", "idle"]).await;
    idle.stop().await.unwrap();
    let out = eventually(WAIT, "y listed unserved", || async {
        let out = cli(&url, &["clusters", "list"]).await;
        let (rows, _) = table(&out);
        (rows.get(1).is_some_and(|r| r[2] == "unserved")).then_some(out)
    })
    .await
    .unwrap();
    // The table says why, below it.
    let (_, after) = table(&out);
    assert_eq!(
        after,
        ["y is unserved: no replica of pool idle is running"],
        "{}",
        stdout(&out)
    );

    let files = tempfile::tempdir().unwrap();
    let cm = write(
        &files,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: default\n",
    );
    let mut queued = Vec::new();
    for key in ["q-1", "q-2"] {
        let out = cli(
            &url,
            &[
                "submit",
                "-f",
                &cm,
                "--cluster",
                "y",
                "--idempotency-key",
                key,
                "-o",
                "json",
            ],
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let accepted: Value = serde_json::from_slice(&out.stdout).unwrap();
        queued.push(accepted["id"].as_str().unwrap().to_owned());
    }

    // Refused, with the dispatcher's detail and how to go on: exit 1, y still there.
    let out = cli(&url, &["clusters", "remove", "y"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("409"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 operation(s) are queued"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = cli(&url, &["clusters", "get", "y"]).await;
    assert_eq!(out.status.code(), Some(0), "still registered");

    // Forced: removed, and what was queued ends failed.
    let out = cli(&url, &["clusters", "remove", "y", "--force"]).await;
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (
            Some(0),
            "cluster/y removed (2 queued operations ended failed)\n"
        ),
        "{}",
        stderr(&out)
    );
    for id in &queued {
        let out = cli(&url, &["wait", id, "--timeout", "20s", "-o", "json"]).await;
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        let record: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(record["error"]["class"], "unknown_cluster", "{record}");
    }
    until(&url, &["clusters", "list", "-o", "json"], "y gone", |o| {
        listed(o).is_some_and(|n| n.is_empty())
    })
    .await;
}

#[tokio::test]
async fn cluster_commands_send_the_token_and_never_print_it() {
    use longshore_dispatcher::{config::TokenConfig, policy::PolicyConfig};
    let nats = NatsServer::start().await.unwrap();
    let sim = sim(&["prod", "staging"]).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig_dir(dir.path()).unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let mut config = Dispatcher::config(&nats.url(), &[]);
    for (name, value, policy) in [
        (
            "admin",
            "admin-secret-1",
            PolicyConfig {
                manage_clusters: true,
                ..Default::default()
            },
        ),
        (
            "ci",
            "ci-secret-2",
            PolicyConfig {
                clusters: vec!["staging".into()],
                ..Default::default()
            },
        ),
    ] {
        let file = secrets.path().join(name);
        std::fs::write(&file, value).unwrap();
        config.tokens.insert(
            name.into(),
            TokenConfig {
                secret_file: Some(file),
                policy,
                ..Default::default()
            },
        );
    }
    let d = Dispatcher::start_with(config).await.unwrap();
    let url = d.url.clone();
    let _w = worker(&nats, dir.path(), "workers", "w1");
    for name in ["prod", "staging"] {
        let out = register(&url, &[name, "--token", "admin-secret-1"]).await;
        assert_eq!(stdout(&out), format!("cluster/{name} registered\n"));
    }
    let out = cli(
        &url,
        &["clusters", "get", "prod", "--token", "admin-secret-1"],
    )
    .await;
    assert!(
        fields(&out)["registered"].contains("by admin"),
        "{}",
        stdout(&out)
    );

    // A token that may not manage clusters: refused (exit 1), the token nowhere in sight.
    let out = cli(
        &url,
        &[
            "clusters",
            "label",
            "staging",
            "tier=gold",
            "--token",
            "ci-secret-2",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    assert!(stderr(&out).contains("manage_clusters"), "{}", stderr(&out));
    // It lists what its policy allows.
    until(
        &url,
        &["clusters", "list", "-o", "json", "--token", "ci-secret-2"],
        "staging listed for ci",
        |o| listed(o).is_some_and(|n| n == ["staging"]),
    )
    .await;
    // No token: 401.
    let out = cli(&url, &["clusters", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    // A wrong one, and a dispatcher that is not there: neither prints it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    for (server, token) in [(&url, "wrong-secret-3"), (&nobody, "wrong-secret-3")] {
        let out = cli(server, &["clusters", "get", "prod", "--token", token]).await;
        assert_eq!(out.status.code(), Some(1));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!all.contains(token), "the token was printed: {all}");
    }
}
