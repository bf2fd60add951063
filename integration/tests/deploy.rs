//! The Kubernetes manifests in `deploy/`, checked as far as CI can without a real cluster:
//!
//! - every overlay, and `deploy/agent` (a private cluster's agent pool and leaf node),
//!   renders with `kubectl kustomize`;
//! - every rendered object parses into its k8s-openapi type (KEDA's ScaledObject into the
//!   schema in `deploy/schema.rs`) and serializes back to exactly what was rendered, so no
//!   key is unknown, misspelt or misplaced;
//! - the TOML configuration files load into the binaries' own configuration structs and
//!   validate, every file they name is mounted in the pod that reads it, grace periods
//!   outlast the drains, and the setup Job's stream and consumer are the contract's;
//! - every NATS server configuration parses with `nats-server -t`, given just the
//!   environment its pod gives it; the hub's holds the example agent pool's user with the
//!   permissions `longshore agent-permissions` prints, its JetStream domain and a leaf-node
//!   listener; and no file of `deploy/` holds an nkey seed;
//! - every object applies with `kubectl apply --server-side --dry-run=server` to kube-sim.

#[path = "deploy/nkey.rs"]
mod nkey;
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

/// The agent's base: what a private cluster runs (docs/deploy.md#private-clusters-agents).
fn agent_dir() -> PathBuf {
    deploy_dir().join("agent")
}

/// Everything CI renders: every overlay, and the agent's base.
fn kustomizations() -> Vec<PathBuf> {
    let mut all = overlays();
    all.push(agent_dir());
    all
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
    for overlay in kustomizations() {
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
    /// of a volume whose ConfigMap or Secret has that key. Returns the kind, name and key.
    fn assert_mounted(
        &self,
        pod: &PodSpec,
        container: usize,
        path: &Path,
        what: &str,
    ) -> (&'static str, String, String) {
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
        (kind, source, key)
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
        check_rbac(&r, "longshore-worker", &pod, &wconfig);
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

/// `conf` without its comments (`#` to the end of the line; no subject or value in these
/// files holds a `#`).
fn without_comments(conf: &str) -> String {
    conf.lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The body of the first block `name { … }` (or `name: { … }`, `name = { … }`) of a
/// nats-server configuration, comments left out.
fn conf_block(conf: &str, name: &str) -> Option<String> {
    let conf = without_comments(conf);
    let mut offset = 0;
    for line in conf.split_inclusive('\n') {
        if let Some(rest) = line.trim_start().strip_prefix(name) {
            let rest = rest.trim_start_matches([' ', ':', '=']);
            if rest.starts_with('{') {
                let open = offset + line.len() - rest.len();
                let mut depth = 0;
                for (i, c) in conf[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(conf[open + 1..open + i].to_owned());
                            }
                        }
                        _ => {}
                    }
                }
                panic!("block {name} is not closed");
            }
        }
        offset += line.len();
    }
    None
}

/// The first value of `key` in a nats-server configuration (or a block of one), unquoted.
fn conf_value(conf: &str, key: &str) -> Option<String> {
    without_comments(conf).lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix(key)?;
        rest.starts_with([' ', ':', '=']).then(|| {
            rest.trim_start_matches([' ', ':', '='])
                .trim()
                .trim_end_matches(',')
                .trim_matches('"')
                .to_owned()
        })
    })
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{address} has no port"))
}

fn without_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The pod template of a Deployment or StatefulSet.
fn pod_template(workload: &Value) -> PodSpec {
    serde_json::from_value(workload["spec"]["template"]["spec"].clone()).unwrap()
}

/// The resource (plural) RBAC names a kind by.
fn plural(kind: &str) -> String {
    let kind = kind.to_ascii_lowercase();
    if let Some(stem) = kind.strip_suffix('y') {
        format!("{stem}ies")
    } else if kind.ends_with('s') || kind.ends_with('x') {
        format!("{kind}es")
    } else {
        format!("{kind}s")
    }
}

/// Whether an RBAC rule allows `verb` on `resource` of API group `group`.
fn allows(rule: &Value, group: &str, resource: &str, verb: &str) -> bool {
    let has = |field: &str, want: &str| {
        rule[field]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x == want))
    };
    has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
}

/// RBAC of the worker Deployment `deployment` running with `config`: nothing wild, no RBAC
/// objects; applying only through per-namespace RoleBindings; cluster-wide only reading,
/// what watching lists and watches (every kind of `watch.kinds`).
fn check_rbac(r: &Rendered, deployment: &str, pod: &PodSpec, config: &longshore_worker::Config) {
    let account = pod
        .service_account_name
        .clone()
        .expect("its own ServiceAccount");
    assert!(r.find("ServiceAccount", &account).is_some());
    let namespace = r.get("Deployment", deployment)["metadata"]["namespace"].clone();
    let binds_it = |b: &&Value| {
        b["subjects"].as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == account.as_str()
                    && s["namespace"] == namespace
            })
        })
    };
    let rules_of = |binding: &Value| -> Vec<Value> {
        let role = binding["roleRef"]["name"].as_str().unwrap();
        let kind = binding["roleRef"]["kind"].as_str().unwrap();
        r.get(kind, role)["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    for role in
        r.0.iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        for rule in role["rules"].as_array().into_iter().flatten() {
            let values = |f: &str| rule[f].as_array().cloned().unwrap_or_default();
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(
                    !values(field).iter().any(|v| v == "*"),
                    "{}: a wildcard in {field}",
                    role["metadata"]["name"]
                );
            }
            assert!(
                !values("apiGroups")
                    .iter()
                    .any(|g| g == "rbac.authorization.k8s.io"),
                "{}: no RBAC objects",
                role["metadata"]["name"]
            );
            assert!(
                !values("verbs")
                    .iter()
                    .any(|v| v == "escalate" || v == "bind" || v == "impersonate"),
                "{}",
                role["metadata"]["name"]
            );
        }
    }
    let per_namespace: Vec<&Value> =
        r.0.iter()
            .filter(|o| o["kind"] == "RoleBinding")
            .filter(binds_it)
            .collect();
    assert!(
        per_namespace
            .iter()
            .any(|b| rules_of(b)
                .iter()
                .any(|rule| allows(rule, "apps", "deployments", "patch"))),
        "{deployment}: a RoleBinding lets it apply in a target namespace"
    );
    let cluster_wide: Vec<Value> =
        r.0.iter()
            .filter(|o| o["kind"] == "ClusterRoleBinding")
            .filter(binds_it)
            .flat_map(rules_of)
            .collect();
    for rule in &cluster_wide {
        for verb in rule["verbs"].as_array().unwrap() {
            assert!(
                verb == "list" || verb == "watch" || verb == "get",
                "{deployment}: cluster-wide, it only reads: {rule}"
            );
        }
        assert!(
            !rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "secrets"),
            "{deployment}: no Secrets cluster-wide: {rule}"
        );
    }
    if config.watch.enabled {
        for (api_version, kind) in config.watch.parsed_kinds().unwrap() {
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            for verb in ["list", "watch"] {
                assert!(
                    cluster_wide
                        .iter()
                        .any(|rule| allows(rule, group, &plural(&kind), verb)),
                    "{deployment}: watch.kinds has {api_version}/{kind}: it must {verb} it cluster-wide"
                );
            }
        }
    }
}

/// deploy/agent: the agent's TOML loads into the worker's own configuration and validates
/// as an agent's; its pod mounts what it names and outlasts its drain; it reaches the leaf
/// node's Service, which reaches the leaf node; the leaf node runs no JetStream and dials
/// the hub's leaf-node port; RBAC is the apply role per namespace plus cluster-wide reading
/// of the watched kinds; KEDA reads the pool's own consumer at the hub. And every hub
/// overlay's NATS has the agent's domain, a leaf-node listener without an authorization
/// block of its own, and the agent pool's user with what `longshore agent-permissions`
/// prints.
#[test]
fn the_agent_configuration_loads_into_the_workers_struct_and_matches_the_hub() {
    let r = Rendered(render(&agent_dir()).1);

    // The agent: the ordinary worker, configured as an agent.
    let agent = r.deployment("longshore-agent");
    let pod = pod_of(&agent);
    let (_, config_map, key) = r.assert_mounted(&pod, 0, &config_arg(&pod), "agent --config");
    let config: longshore_worker::Config = load(&r.data(&config_map, &key));
    config
        .validate()
        .unwrap_or_else(|e| panic!("agent.toml: {e}"));
    let cluster = config
        .agent_cluster()
        .expect("agent.toml configures an agent (agent.cluster)");
    let pool = config.pool_name();
    assert_eq!(
        config.clusters.in_cluster.as_deref(),
        Some(cluster.as_str()),
        "the agent serves its cluster with its ServiceAccount"
    );
    assert_eq!(
        config.nats.inbox_prefix.as_deref(),
        Some(longshore_contract::agent::inbox_prefix(&pool).as_str()),
        "the hub lets only replies to _INBOX_<pool> cross to the leaf node"
    );
    let domain = config
        .nats
        .jetstream
        .domain
        .clone()
        .expect("an agent reaches the hub's JetStream through its domain");
    let auth = &config.nats.auth;
    let tls = &config.nats.tls;
    let files = [
        &auth.password_file,
        &auth.token_file,
        &auth.nkey_seed_file,
        &auth.creds_file,
        &tls.ca_file,
        &tls.cert_file,
        &tls.key_file,
        &config.clusters.kubeconfig,
    ];
    for f in files.into_iter().flatten() {
        r.assert_mounted(&pod, 0, f, "agent");
    }
    assert!(
        config.drain_grace + Duration::from_secs(5) <= grace(&pod),
        "the agent's terminationGracePeriodSeconds must outlast drain_grace"
    );
    let c = &pod.containers[0];
    let port = c.ports.as_ref().unwrap()[0].container_port as u16;
    assert_eq!(port, config.listen.port(), "containerPort = listen");
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone()
    };
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert!(
        agent.spec.replicas.is_none(),
        "the ScaledObject owns the agent's replicas: a re-apply must not reset them"
    );
    let selects = |pdb: &str, d: &Deployment| {
        assert_eq!(
            r.get("PodDisruptionBudget", pdb)["spec"]["selector"]["matchLabels"],
            serde_json::to_value(&d.spec.selector.match_labels).unwrap(),
            "PDB {pdb} selects its pods"
        );
    };
    selects("longshore-agent", &agent);

    // Its NATS URL is the leaf node's Service, whose port reaches the leaf node's listener.
    let leaf = r.deployment("nats-leaf");
    let leaf_pod = pod_of(&leaf);
    assert!(leaf.spec.replicas.unwrap_or(1) >= 2, "two leaf nodes");
    selects("nats-leaf", &leaf);
    let (_, config_map, key) =
        r.assert_mounted(&leaf_pod, 0, &config_arg(&leaf_pod), "nats-leaf --config");
    let leaf_conf = r.data(&config_map, &key);
    let leaf_listen = port_of(&conf_value(&leaf_conf, "listen").expect("leaf.conf: listen"));
    for server in config.nats.url.split(',').map(str::trim) {
        let host_port = server.split_once("://").map_or(server, |(_, rest)| rest);
        let (host, _) = host_port.rsplit_once(':').expect("nats.url: host:port");
        let svc = r.get("Service", host);
        assert_eq!(
            svc["spec"]["selector"],
            serde_json::to_value(&leaf.spec.selector.match_labels).unwrap(),
            "Service {host} selects the leaf nodes"
        );
        let svc_port = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"].as_u64() == Some(port_of(host_port).into()))
            .unwrap_or_else(|| panic!("nats.url {server}: no such port of Service {host}"));
        let target = leaf_pod.containers[0]
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name.as_deref() == svc_port["targetPort"].as_str()
                    || Some(p.container_port.into()) == svc_port["targetPort"].as_i64()
            })
            .unwrap_or_else(|| panic!("Service {host}: its targetPort is no port of nats-leaf"));
        assert_eq!(
            target.container_port as u16, leaf_listen,
            "Service {host} reaches leaf.conf's listen port"
        );
    }
    let c = &leaf_pod.containers[0];
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));

    // The leaf node runs no JetStream and dials out to the hub, authenticating with the seed
    // of its Secret, a placeholder here.
    assert!(
        conf_block(&leaf_conf, "jetstream").is_none(),
        "the leaf node runs no JetStream: the agent reaches the hub's, domain {domain}"
    );
    let leafnodes = conf_block(&leaf_conf, "leafnodes").expect("leaf.conf: leafnodes");
    let remote = conf_value(&leafnodes, "url").expect("leaf.conf: a remote url");
    let remote_nkey = conf_value(&leafnodes, "nkey").expect("leaf.conf: the remote's nkey");
    let seed_var = remote_nkey
        .strip_prefix('$')
        .expect("the remote's nkey seed comes from the environment, never the file");
    let leaf_json = r.get("Deployment", "nats-leaf");
    let env_json = leaf_json["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == seed_var)
        .unwrap_or_else(|| panic!("nats-leaf has no {seed_var} in its environment"));
    let secret_ref = &env_json["valueFrom"]["secretKeyRef"];
    let secret_name = secret_ref["name"]
        .as_str()
        .expect("the seed is from a Secret");
    let secret_key = secret_ref["key"].as_str().unwrap();
    assert!(
        r.keys("Secret", secret_name)
            .contains(&secret_key.to_owned()),
        "Secret {secret_name} has no {secret_key}"
    );
    let secret = r.get("Secret", secret_name);
    assert!(
        secret["metadata"]["annotations"]["longshore.io/placeholder"].is_string(),
        "Secret {secret_name} is a placeholder"
    );
    assert!(!nkey::looks_like_a_seed(
        secret["stringData"][secret_key]
            .as_str()
            .unwrap_or_default()
    ));

    check_rbac(&r, "longshore-agent", &pod, &config);

    // KEDA: this pool's consumer, at the hub's monitoring endpoint (not the leaf node's).
    let autoscalers: Vec<&Value> =
        r.0.iter()
            .filter(|o| o["kind"] == "ScaledObject" || o["kind"] == "HorizontalPodAutoscaler")
            .collect();
    assert_eq!(autoscalers.len(), 1, "one autoscaler for the agents");
    let so: ScaledObject = serde_json::from_value(autoscalers[0].clone()).unwrap();
    assert_eq!(so.spec.scale_target_ref.name, "longshore-agent");
    assert!(so.spec.min_replica_count.unwrap_or(0) >= 2);
    let t = &so.spec.triggers[0];
    assert_eq!(t.type_, "nats-jetstream");
    assert_eq!(t.metadata.stream, STREAM);
    assert_eq!(
        t.metadata.consumer, config.pool.name,
        "KEDA reads the pool's own lag"
    );
    assert!(
        t.metadata
            .lag_threshold
            .parse::<u64>()
            .expect("lagThreshold")
            >= 1
    );
    let endpoint = &t.metadata.nats_server_monitoring_endpoint;
    let host = endpoint.rsplit_once(':').unwrap().0;
    assert!(
        r.find("Service", host.split('.').next().unwrap()).is_none(),
        "{endpoint}: the leaf node has no JetStream data; KEDA must read the hub's monitoring"
    );

    // The hub: every overlay's NATS lets this agent in.
    let want = without_whitespace(
        &longshore_contract::agent::permissions(&pool, &cluster, Some(&domain)).nats_conf(""),
    );
    for overlay in overlays() {
        let name = name_of(&overlay);
        let h = Rendered(render(&overlay).1);
        let nats = h.get("StatefulSet", "nats");
        let nats_pod = pod_template(nats);
        assert_eq!(
            nats_pod.containers[0].image, leaf_pod.containers[0].image,
            "{name}: the leaf node runs the hub's nats-server"
        );
        let (_, config_map, key) = h.assert_mounted(
            &nats_pod,
            0,
            &config_arg(&nats_pod),
            &format!("{name}: nats --config"),
        );
        let conf = h.data(&config_map, &key);
        let jetstream = conf_block(&conf, "jetstream").expect("the hub runs JetStream");
        assert_eq!(
            conf_value(&jetstream, "domain").as_deref(),
            Some(domain.as_str()),
            "{name}: the hub's JetStream domain is the agent's nats.jetstream.domain"
        );
        let leafnodes = conf_block(&conf, "leafnodes")
            .unwrap_or_else(|| panic!("{name}: the hub has no leafnodes listener"));
        assert!(
            conf_block(&leafnodes, "authorization").is_none(),
            "{name}: leaf nodes authenticate as users of the server's authorization block \
             (nats-server allows no permissions in leafnodes.authorization)"
        );
        let leaf_port = conf_value(&leafnodes, "port")
            .map(|p| p.parse::<u16>().expect("leafnodes.port"))
            .or_else(|| conf_value(&leafnodes, "listen").map(|l| port_of(&l)))
            .unwrap_or(7422);
        assert_eq!(
            port_of(&remote),
            leaf_port,
            "{name}: the agent's leaf node dials {remote}, the hub listens on {leaf_port}"
        );
        let container_port = nats_pod.containers[0]
            .ports
            .iter()
            .flatten()
            .find(|p| p.container_port == i32::from(leaf_port))
            .unwrap_or_else(|| panic!("{name}: nats has no containerPort {leaf_port}"));
        let exposed = h.0.iter().filter(|o| o["kind"] == "Service").any(|svc| {
            svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| {
                    p["targetPort"].as_str() == container_port.name.as_deref()
                        || p["targetPort"].as_i64() == Some(leaf_port.into())
                })
        });
        assert!(exposed, "{name}: no Service exposes the leaf-node port");
        let monitoring = h.get("Service", "nats-headless")["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"].as_u64() == Some(port_of(endpoint).into()));
        assert!(
            monitoring,
            "{name}: {endpoint} is not the hub's monitoring port"
        );

        // The agent pool's user: an nkey with exactly what `longshore agent-permissions`
        // prints for its cluster and pool.
        let users =
            without_whitespace(&conf_block(&conf, "authorization").expect("the hub has users"));
        let at = users.find(&want).unwrap_or_else(|| {
            panic!(
                "{name}: the hub's authorization lacks the permissions of \
                 `longshore agent-permissions --cluster {cluster} --pool {pool} --domain {domain}` \
                 (regenerate them)"
            )
        });
        let user = &users[users[..at].rfind('{').unwrap()..at];
        let public_key = user
            .strip_prefix("{nkey:")
            .map(|k| k.trim_matches(|c| c == '"' || c == ','))
            .unwrap_or_else(|| panic!("{name}: the agent's permissions belong to no nkey user"));
        assert!(
            public_key.starts_with('U') && public_key.len() == 56,
            "{name}: {public_key} is no public user nkey"
        );
    }
}

/// Every NATS server of every rendering (the hub's StatefulSet, the agent's leaf nodes):
/// its configuration file, as mounted, passes `nats-server -t` with nothing but the
/// environment its container is given (secrets and the pod name stood in for; an nkey seed
/// by a throwaway one), so every `$VARIABLE` it reads is there and every key is known.
#[test]
fn every_nats_server_configuration_parses() {
    let binary = longshore_testkit::nats::binary();
    let seed = nkey::user_seed();
    for dir in kustomizations() {
        let name = name_of(&dir);
        let r = Rendered(render(&dir).1);
        let mut checked = 0;
        let workloads =
            r.0.iter()
                .filter(|o| o["kind"] == "StatefulSet" || o["kind"] == "Deployment");
        for workload in workloads {
            let pod = pod_template(workload);
            for (i, c) in pod.containers.iter().enumerate() {
                let image = c.image.as_deref().unwrap_or_default();
                if !image.rsplit('/').next().unwrap().starts_with("nats:") {
                    continue;
                }
                let what = format!(
                    "{name}: {} {} container {}",
                    workload["kind"], workload["metadata"]["name"], c.name
                );
                let args = c.args.clone().unwrap_or_default();
                let file = args
                    .iter()
                    .position(|a| a == "--config" || a == "-c")
                    .map(|i| PathBuf::from(&args[i + 1]))
                    .unwrap_or_else(|| panic!("{what}: no --config"));
                let (_, config_map, key) = r.assert_mounted(&pod, i, &file, &what);
                let tmp = tempfile::tempdir().unwrap();
                let path = tmp.path().join(&key);
                std::fs::write(&path, r.data(&config_map, &key)).unwrap();
                let mut cmd = std::process::Command::new(&binary);
                cmd.env_clear().arg("-t").arg("-c").arg(&path);
                for e in c.env.iter().flatten() {
                    let value = match &e.value {
                        Some(v) => v.clone(),
                        None if e.name.contains("NKEY_SEED") => seed.clone(),
                        None => format!("stand-in-{}", e.name.to_ascii_lowercase()),
                    };
                    cmd.env(&e.name, value);
                }
                let out = cmd.output().unwrap_or_else(|e| {
                    panic!("running {} (set NATS_SERVER_BIN): {e}", binary.display())
                });
                assert!(
                    out.status.success(),
                    "{what}: nats-server -t -c {key} failed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                checked += 1;
            }
        }
        assert!(checked >= 1, "{name}: no NATS server configuration found");
    }
}

/// Seeds are secrets: deploy/ may hold public nkeys (the hub's users), never a seed.
#[test]
fn no_file_of_deploy_holds_an_nkey_seed() {
    let mut found = Vec::new();
    let mut dirs = vec![deploy_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                let mut tokens = text.split(|c: char| !c.is_ascii_alphanumeric());
                if tokens.any(nkey::looks_like_a_seed) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "nkey seeds in {found:?}: commit public keys only"
    );
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
    // The CRD and the namespaces for real, so the dry run has somewhere to go.
    let out = run(
        vec!["apply", "--server-side", "-f", "-"],
        format!(
            "{CRDS}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: longshore}}\n\
             ---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: longshore-agent}}\n"
        ),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "setting up: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for overlay in kustomizations() {
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
        let deployments: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "Deployment")
            .collect();
        assert!(!deployments.is_empty(), "{name}");
        for d in deployments {
            let (namespace, obj_name) = (
                d["metadata"]["namespace"].as_str(),
                d["metadata"]["name"].as_str().unwrap(),
            );
            assert!(
                target
                    .get("apps/v1", "Deployment", namespace, obj_name)
                    .is_none(),
                "{name}: the dry run created Deployment {obj_name}"
            );
        }
    }
}
