//! A directory of kubeconfig files, one per cluster, as a Secret volume mounted into a pod
//! would be: valid files (for kube-rs and kubectl), token rotation rewriting one file, and
//! atomic replacement while a reader reads.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::http;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use longshore_kube_sim::{KubeSim, SimOptions};

async fn start(clusters: &[&str]) -> KubeSim {
    KubeSim::start(SimOptions {
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
        auth_tokens: true,
        ..Default::default()
    })
    .await
    .expect("sim starts")
}

fn yaml_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A client from one file, with that file's (only) context.
async fn client_from(path: &Path) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("a valid kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config from the current context");
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn one_valid_file_per_cluster() {
    let sim = start(&["prod", "staging"]).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfigs = dir.path().join("kubeconfigs");
    sim.write_kubeconfig_dir(&kubeconfigs).unwrap();
    assert_eq!(yaml_files(&kubeconfigs), ["prod.yaml", "staging.yaml"]);

    for name in ["prod", "staging"] {
        let path = kubeconfigs.join(format!("{name}.yaml"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "it holds a token");
        let k = Kubeconfig::read_from(&path).unwrap();
        assert_eq!(k.current_context.as_deref(), Some(name));
        let [context] = &k.contexts[..] else {
            panic!("one context: {k:?}")
        };
        let context = context.context.as_ref().unwrap();
        assert_eq!(
            (context.cluster.as_str(), context.user.as_deref()),
            (name, Some(name))
        );
        let [cluster] = &k.clusters[..] else {
            panic!("one cluster")
        };
        assert_eq!(cluster.name, name);
        assert_eq!(
            cluster.cluster.as_ref().unwrap().server.as_deref(),
            Some(sim.server_url(name).as_str())
        );
        let [user] = &k.auth_infos[..] else {
            panic!("one user")
        };
        assert_eq!(user.name, name);
        // kube keeps the token secret; read it from the YAML itself.
        let raw: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            raw["users"][0]["user"]["token"].as_str().map(String::from),
            sim.cluster(name).unwrap().token()
        );

        let cms: Api<ConfigMap> = Api::namespaced(client_from(&path).await, "default");
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(format!("from-{name}-file"));
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("the file's token works");
    }
    let (code, _, body) = http(&sim, "GET", "/_sim/clusters/prod/kubeconfig", "").await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        std::fs::read_to_string(kubeconfigs.join("prod.yaml")).unwrap()
    );
}

#[tokio::test]
async fn rotation_rewrites_one_file_and_runtime_clusters_come_and_go() {
    let sim = start(&["prod", "staging"]).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig_dir(dir.path()).unwrap();
    let read =
        |name: &str| std::fs::read_to_string(dir.path().join(format!("{name}.yaml"))).unwrap();
    let (prod_before, staging_before) = (read("prod"), read("staging"));

    let staging = sim.cluster("staging").unwrap();
    let old = staging.token().unwrap();
    let new = staging.rotate_token();
    assert_eq!(read("staging"), staging_before, "rotation writes no file");
    let path = sim.write_kubeconfig_for(dir.path(), "staging").unwrap();
    assert_eq!(path, dir.path().join("staging.yaml"));
    let rewritten = read("staging");
    assert!(rewritten.contains(&new) && !rewritten.contains(&old));
    assert_eq!(read("prod"), prod_before, "other files are untouched");
    let cms: Api<ConfigMap> = Api::namespaced(client_from(&path).await, "default");
    cms.list(&Default::default())
        .await
        .expect("the new token works");

    sim.add_cluster("edge").unwrap();
    sim.write_kubeconfig_for(dir.path(), "edge").unwrap();
    sim.remove_cluster("prod").unwrap();
    sim.remove_kubeconfig_for(dir.path(), "prod").unwrap();
    sim.remove_kubeconfig_for(dir.path(), "prod")
        .expect("already gone is fine");
    assert_eq!(yaml_files(dir.path()), ["edge.yaml", "staging.yaml"]);
    assert!(sim.write_kubeconfig_for(dir.path(), "prod").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_sees_a_partial_file() {
    let sim = start(&["prod"]).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig_dir(dir.path()).unwrap();
    let path = dir.path().join("prod.yaml");
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (path, done) = (path.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).expect("the file is always there");
                let k = Kubeconfig::from_yaml(&text).expect("and always whole");
                assert_eq!(
                    (k.contexts.len(), k.auth_infos.len()),
                    (1, 1),
                    "a partial file: {text:?}"
                );
                reads += 1;
            }
            reads
        })
    };
    let prod = sim.cluster("prod").unwrap();
    for _ in 0..300 {
        prod.rotate_token();
        sim.write_kubeconfig_for(dir.path(), "prod").unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("reader saw only whole files");
    assert!(reads > 0);
    assert_eq!(
        yaml_files(dir.path()),
        ["prod.yaml"],
        "no temporary file left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_each_file() {
    let kubectl_present = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !kubectl_present {
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
    sim.write_kubeconfig_dir(dir.path()).unwrap();
    for name in ["prod", "staging"] {
        let out = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(dir.path().join(format!("{name}.yaml")))
            .args(["config", "view", "--raw", "-o"])
            .arg("jsonpath={.current-context} {.contexts[0].context.user} {.clusters[0].cluster.server} {.users[0].user.token}")
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = sim.cluster(name).unwrap().token().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{name} {name} {} {token}", sim.server_url(name))
        );
    }
}
