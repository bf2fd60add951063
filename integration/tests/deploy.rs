//! The Kubernetes manifests in `deploy/`, checked as far as CI can without a real cluster:
//!
//! - every overlay renders with `kubectl kustomize`;
//! - every rendered object parses into its k8s-openapi type (KEDA's ScaledObject into the
//!   schema in `deploy/schema.rs`) and serializes back to exactly what was rendered, so no
//!   key is unknown, misspelt or misplaced;
//! - the TOML configuration files load into the binaries' own configuration structs and
//!   validate, every file they name is mounted in the pod that reads it, grace periods
//!   outlast the drains, and the setup Job's stream and consumer are the contract's;
//! - every object applies with `kubectl apply --server-side --dry-run=server` to kube-sim.

#[path = "deploy/schema.rs"]
mod schema;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::PodSpec};
use longshore_contract::jetstream::{STREAM, Settings};
use longshore_kube_sim::{KubeSim, SimOptions, WriteVerb};
use schema::ScaledObject;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the integration crate is in the workspace")
        .join("deploy")
}

/// Every overlay: each directory of `deploy/overlays/`.
fn overlays() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("overlays"))
        .expect("deploy/overlays exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 2,
        "expected the dev and prod overlays at least: {dirs:?}"
    );
    dirs
}

fn name_of(overlay: &Path) -> String {
    overlay.file_name().unwrap().to_string_lossy().into_owned()
}

/// `kubectl kustomize <overlay>`: the YAML and its objects.
fn render(overlay: &Path) -> (String, Vec<Value>) {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(overlay)
        .output()
        .expect("kubectl runs (integration/test.sh installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        overlay.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let objects: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("rendered YAML parses");
    let objects: Vec<Value> = objects.into_iter().filter(|o| !o.is_null()).collect();
    assert!(!objects.is_empty(), "{} renders nothing", overlay.display());
    (yaml, objects)
}

/// The first path at which `a` and `b` differ, for a readable failure.
fn first_difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()) {
                let p = format!("{path}.{key}");
                match (x.get(key), y.get(key)) {
                    (Some(u), Some(v)) => {
                        if let Some(d) = first_difference(&p, u, v) {
                            return Some(d);
                        }
                    }
                    (Some(u), None) => return Some(format!("{p}: {u} is lost")),
                    (None, Some(v)) => return Some(format!("{p}: {v} appears")),
                    (None, None) => {}
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(&format!("{path}[{i}]"), u, v)),
        _ => (a != b).then(|| format!("{path}: {a} became {b}")),
    }
}

/// Parses `object` into `T` and back: any key `T` does not know is lost on the way.
fn round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> Result<T, String> {
    let typed: T = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match first_difference("", object, &back) {
        None => Ok(typed),
        Some(d) => Err(format!("not kept by the typed round trip: {d}")),
    }
}

fn check_typed(object: &Value) -> Result<(), String> {
    use k8s_openapi::api::{apps, autoscaling, batch, core::v1 as core, policy, rbac::v1 as rbac};
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("v1", "Namespace") => round_trip::<core::Namespace>(object).map(drop),
        ("v1", "ConfigMap") => round_trip::<core::ConfigMap>(object).map(drop),
        ("v1", "Secret") => round_trip::<core::Secret>(object).map(drop),
        ("v1", "Service") => round_trip::<core::Service>(object).map(drop),
        ("v1", "ServiceAccount") => round_trip::<core::ServiceAccount>(object).map(drop),
        ("apps/v1", "Deployment") => round_trip::<apps::v1::Deployment>(object).map(drop),
        ("apps/v1", "StatefulSet") => round_trip::<apps::v1::StatefulSet>(object).map(drop),
        ("batch/v1", "Job") => round_trip::<batch::v1::Job>(object).map(drop),
        ("policy/v1", "PodDisruptionBudget") => {
            round_trip::<policy::v1::PodDisruptionBudget>(object).map(drop)
        }
        ("autoscaling/v2", "HorizontalPodAutoscaler") => {
            round_trip::<autoscaling::v2::HorizontalPodAutoscaler>(object).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            round_trip::<rbac::ClusterRole>(object).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<rbac::Role>(object).map(drop),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            round_trip::<rbac::RoleBinding>(object).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<rbac::ClusterRoleBinding>(object).map(drop)
        }
        ("keda.sh/v1alpha1", "ScaledObject") => round_trip::<ScaledObject>(object).map(drop),
        _ => Err(format!(
            "no typed check for {api_version} {kind}: add its type to check_typed"
        )),
    }
}

#[test]
fn every_object_of_every_overlay_parses_into_its_type_without_losing_a_field() {
    let mut problems = Vec::new();
    for overlay in overlays() {
        for object in render(&overlay).1 {
            if let Err(e) = check_typed(&object) {
                problems.push(format!(
                    "{}: {} {}: {e}",
                    name_of(&overlay),
                    object["kind"],
                    object["metadata"]["name"]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_typed_check_catches_a_misspelt_key() {
    let (_, objects) = render(&overlays()[0]);
    let mut deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap()
        .clone();
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 40.into();
    let err = check_typed(&deployment).unwrap_err();
    assert!(err.contains("terminationGracePeriodSecond"), "{err}");
    let mut scaled = objects
        .iter()
        .find(|o| o["kind"] == "ScaledObject")
        .expect("every KEDA overlay has a ScaledObject; the first overlay is dev")
        .clone();
    scaled["spec"]["triggers"][0]["metadata"]["lagTreshold"] = "5".into();
    assert!(check_typed(&scaled).is_err());
}

/// The rendered objects of one overlay, by kind and name (names without kustomize's hash).
struct Rendered(Vec<Value>);

impl Rendered {
    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.0.iter().find(|o| {
            let n = o["metadata"]["name"].as_str().unwrap_or_default();
            o["kind"] == kind
                && (n == name
                    || n.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('-') && rest.len() == 11))
        })
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
    }

    fn deployment(&self, name: &str) -> Deployment {
        serde_json::from_value(self.get("Deployment", name).clone()).unwrap()
    }

    /// A ConfigMap's or Secret's keys.
    fn keys(&self, kind: &str, name: &str) -> Vec<String> {
        let o = self.get(kind, name);
        ["data", "stringData", "binaryData"]
            .iter()
            .filter_map(|f| o[f].as_object())
            .flat_map(|m| m.keys().cloned())
            .collect()
    }

    fn data(&self, config_map: &str, key: &str) -> String {
        self.get("ConfigMap", config_map)["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap {config_map} has no {key}"))
            .to_owned()
    }

    /// Fails unless `path` is a file the pod's container `container` sees: under a mount
    /// of a volume whose ConfigMap or Secret has that key.
    fn assert_mounted(&self, pod: &PodSpec, container: usize, path: &Path, what: &str) {
        let c = &pod.containers[container];
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| path.starts_with(&m.mount_path))
            .unwrap_or_else(|| panic!("{what}: {} is under no volume mount", path.display()));
        let rel = path.strip_prefix(&mount.mount_path).unwrap();
        let rel = rel.to_string_lossy();
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap_or_else(|| panic!("{what}: no volume {}", mount.name));
        let (kind, source, items) = if let Some(s) = &volume.secret {
            ("Secret", s.secret_name.clone().unwrap(), s.items.clone())
        } else if let Some(cm) = &volume.config_map {
            ("ConfigMap", cm.name.clone(), cm.items.clone())
        } else {
            panic!("{what}: volume {} is no ConfigMap or Secret", mount.name)
        };
        let key = match items {
            Some(items) => items
                .iter()
                .find(|i| i.path == rel)
                .map(|i| i.key.clone())
                .unwrap_or_else(|| panic!("{what}: {kind} {source} projects no {rel}")),
            None => rel.to_string(),
        };
        assert!(
            self.keys(kind, &source).contains(&key),
            "{what}: {kind} {source} has no key {key} for {}",
            path.display()
        );
    }
}

fn pod_of(d: &Deployment) -> PodSpec {
    d.spec.template.spec.clone().unwrap()
}

/// The `--config` file a container is started with.
fn config_arg(pod: &PodSpec) -> PathBuf {
    let args = pod.containers[0].args.clone().unwrap_or_default();
    let i = args.iter().position(|a| a == "--config").expect("--config");
    PathBuf::from(&args[i + 1])
}

/// Loads a TOML file's text with the binaries' own loader (no environment overrides).
fn load<T: Default + Serialize + DeserializeOwned>(toml: &str) -> T {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, toml).unwrap();
    longshore_contract::settings::load(Some(&file), "LONGSHORE_DEPLOY_TEST_UNSET", &[])
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

fn grace(pod: &PodSpec) -> Duration {
    Duration::from_secs(pod.termination_grace_period_seconds.unwrap_or(30) as u64)
}

fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

#[test]
fn configuration_loads_into_the_binaries_structs_and_matches_the_pods() {
    for overlay in overlays() {
        let name = name_of(&overlay);
        let r = Rendered(render(&overlay).1);

        // The dispatcher: its TOML loads and validates; every file it names is mounted.
        let dispatcher = r.deployment("longshore-dispatcher");
        let pod = pod_of(&dispatcher);
        let file = config_arg(&pod);
        r.assert_mounted(&pod, 0, &file, &format!("{name}: dispatcher --config"));
        let config: longshore_dispatcher::Config =
            load(&r.data("longshore-config", "dispatcher.toml"));
        config
            .cluster_names()
            .unwrap_or_else(|e| panic!("{name}: dispatcher.toml: {e}"));
        let files = config
            .tokens
            .values()
            .map(|t| &t.secret_file)
            .chain(config.hooks.values().map(|h| &h.secret_file))
            .chain([&config.nats.auth.password_file]);
        for f in files.flatten() {
            r.assert_mounted(&pod, 0, f, &format!("{name}: dispatcher"));
        }
        assert!(dispatcher.spec.replicas.unwrap_or(1) >= 2, "{name}");
        let prestop = pod.containers[0]
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|p| p.sleep.as_ref())
            .map_or(0, |s| s.seconds as u64);
        assert!(
            Duration::from_secs(prestop) + config.http.drain_grace < grace(&pod),
            "{name}: the dispatcher's preStop + http.drain_grace must end before the kill"
        );
        let c = &pod.containers[0];
        let port = c.ports.as_ref().unwrap()[0].container_port as u16;
        assert_eq!(port, config.listen.port(), "{name}: containerPort = listen");
        let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone()
        };
        assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
        let pdb = r.get("PodDisruptionBudget", "longshore-dispatcher");
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            serde_json::to_value(&dispatcher.spec.selector.match_labels).unwrap(),
            "{name}: the dispatcher's PDB selects its pods"
        );

        // The worker: the same, and its grace period outlasts its drain.
        let worker = r.deployment("longshore-worker");
        let pod = pod_of(&worker);
        r.assert_mounted(
            &pod,
            0,
            &config_arg(&pod),
            &format!("{name}: worker --config"),
        );
        let wconfig: longshore_worker::Config = load(&r.data("longshore-config", "worker.toml"));
        wconfig
            .validate()
            .unwrap_or_else(|e| panic!("{name}: worker.toml: {e}"));
        let files = [
            &wconfig.nats.auth.password_file,
            &wconfig.clusters.kubeconfig,
        ];
        for f in files.into_iter().flatten() {
            r.assert_mounted(&pod, 0, f, &format!("{name}: worker"));
        }
        assert!(
            wconfig.drain_grace + Duration::from_secs(5) <= grace(&pod),
            "{name}: terminationGracePeriodSeconds must outlast drain_grace"
        );
        assert!(r.find("PodDisruptionBudget", "longshore-worker").is_some());
        assert_eq!(
            wconfig.nats.jetstream, config.nats.jetstream,
            "{name}: dispatcher and worker must agree on the stream and buckets"
        );
        assert_eq!(wconfig.nats.url, config.nats.url, "{name}");

        // The setup Job creates exactly the stream and consumer the binaries would.
        let stream: Value =
            serde_json::from_str(&r.data("longshore-jetstream", "stream.json")).unwrap();
        let settings: &Settings = &wconfig.nats.jetstream;
        assert_eq!(
            stream,
            without_nulls(serde_json::to_value(settings.stream()).unwrap()),
            "{name}: stream.json differs from the contract's stream"
        );
        let consumer_file = format!("consumer-{}.json", wconfig.pool.name);
        let consumer: Value =
            serde_json::from_str(&r.data("longshore-jetstream", &consumer_file)).unwrap();
        let expected = async_nats::jetstream::consumer::IntoConsumerConfig::into_consumer_config(
            wconfig.pool_consumer().config(),
        );
        assert_eq!(
            consumer,
            without_nulls(serde_json::to_value(expected).unwrap()),
            "{name}: {consumer_file} differs from the worker's pool consumer"
        );

        // The autoscaler: KEDA's trigger names this stream and pool, or the HPA the metric.
        let autoscalers: Vec<&Value> =
            r.0.iter()
                .filter(|o| o["kind"] == "ScaledObject" || o["kind"] == "HorizontalPodAutoscaler")
                .collect();
        assert_eq!(
            autoscalers.len(),
            1,
            "{name}: one autoscaler for the workers"
        );
        let a = autoscalers[0];
        assert_eq!(a["spec"]["scaleTargetRef"]["name"], "longshore-worker");
        if a["kind"] == "ScaledObject" {
            let so: ScaledObject = serde_json::from_value(a.clone()).unwrap();
            assert!(so.spec.min_replica_count.unwrap_or(0) >= 2, "{name}");
            let t = &so.spec.triggers[0];
            assert_eq!(t.type_, "nats-jetstream");
            assert_eq!(t.metadata.stream, STREAM);
            assert_eq!(t.metadata.consumer, wconfig.pool.name);
            let lag: u64 = t.metadata.lag_threshold.parse().expect("lagThreshold");
            assert!(lag >= 1);
            let endpoint = &t.metadata.nats_server_monitoring_endpoint;
            let (host, port) = endpoint.rsplit_once(':').unwrap();
            let service = host.split('.').next().unwrap();
            let svc = r.get("Service", service);
            assert!(
                svc["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["port"].as_u64() == port.parse().ok()),
                "{name}: {endpoint} is no port of Service {service}"
            );
        } else {
            assert!(
                a["spec"]["minReplicas"].as_u64().unwrap_or(1) >= 2,
                "{name}"
            );
        }
    }
}

/// KEDA's ScaledObject, registered as KEDA's own CRD would, so kubectl can send it
/// (kube-sim serves the built-in PodDisruptionBudget and HorizontalPodAutoscaler itself).
/// Its schema is checked by the typed test above.
const CRDS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: scaledobjects.keda.sh}
spec:
  group: keda.sh
  scope: Namespaced
  names: {kind: ScaledObject, plural: scaledobjects, singular: scaledobject, shortNames: [so]}
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
      subresources: {status: {}}
"#;

fn kubectl(dir: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(["--context", "target", "--request-timeout", "30s"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_overlay_applies_with_a_server_side_dry_run() {
    let sim = KubeSim::start(SimOptions {
        clusters: vec!["target".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
    let target = sim.cluster("target").unwrap();
    let dir_path = dir.path().to_owned();

    let run = move |args: Vec<&'static str>, stdin: String| {
        let dir = dir_path.clone();
        tokio::task::spawn_blocking(move || kubectl(&dir, &args, &stdin))
    };
    // The CRD and the namespace for real, so the dry run has somewhere to go.
    let out = run(
        vec!["apply", "--server-side", "-f", "-"],
        format!("{CRDS}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: longshore}}\n"),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "setting up: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for overlay in overlays() {
        let name = name_of(&overlay);
        let (yaml, objects) = render(&overlay);
        target.clear_writes();
        let out = run(
            vec!["apply", "--server-side", "--dry-run=server", "-f", "-"],
            yaml,
        )
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{name}: kubectl apply --server-side --dry-run=server failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Each object reached the API server as a dry-run apply and was accepted.
        let writes = target.writes();
        let mut missing = Vec::new();
        for o in &objects {
            let (kind, obj_name) = (
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap(),
            );
            let accepted = writes.iter().any(|w| {
                w.kind == kind
                    && w.name.as_deref() == Some(obj_name)
                    && w.dry_run
                    && w.verb == WriteVerb::Apply
                    && (200..300).contains(&w.code)
            });
            if !accepted {
                missing.push(format!("{kind} {obj_name}"));
            }
        }
        assert!(
            missing.is_empty(),
            "{name}: not applied (dry run): {missing:?}"
        );
        // A dry run changes nothing.
        assert!(
            target
                .get(
                    "apps/v1",
                    "Deployment",
                    Some("longshore"),
                    "longshore-worker"
                )
                .is_none()
        );
    }
}
