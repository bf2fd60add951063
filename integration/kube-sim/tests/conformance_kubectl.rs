//! kubectl 1.32 as a real subprocess against kube-sim: discovery, server-side apply of a
//! multi-document file, managed fields, scale, rollout restart, delete and watch; the
//! imperative commands, which send protobuf; `kubectl get`'s columns for every kind; a 422
//! with its field for each validation rule; and CRDs established after a delay.

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

/// Whether the test is skipped for want of kubectl; CI installs it (integration/test.sh),
/// so there its absence is a failure.
fn skipped_without_kubectl() -> bool {
    if kubectl_present() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "kubectl is required in CI"
    );
    eprintln!("SKIPPED: kubectl is not installed");
    true
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
    if skipped_without_kubectl() {
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
    if skipped_without_kubectl() {
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

/// Runs kubectl expecting it to fail: what it printed.
async fn run_failing(dir: &Path, args: &[&str]) -> String {
    let out = tokio::time::timeout(WAIT, kubectl(dir, args).output())
        .await
        .expect("kubectl in time")
        .expect("kubectl runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "kubectl {args:?} succeeded: {printed}"
    );
    printed
}

fn deployment(replicas: &str, port: &str, selector: &str, labels: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels: {labels}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {selector}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: app
        image: nginx:1.27
        ports:
        - containerPort: {port}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_422_with_the_field_for_each_validation_rule() {
    if skipped_without_kubectl() {
        return;
    }
    let sim = start(&["prod"]).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
    let ok = deployment("2", "8080", "{app: web}", "{team: shop}");
    let service = |port: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n  selector: {{app: web}}\n  ports:\n  - port: {port}\n"
        )
    };
    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
"#;
    let widget = |size: &str| {
        format!(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w, namespace: default}}\nspec: {{size: {size}}}\n"
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a string for replicas",
            deployment("three", "8080", "{app: web}", "{team: shop}"),
            "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
        ),
        (
            "negative replicas",
            deployment("-1", "8080", "{app: web}", "{team: shop}"),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            "a container port out of range",
            deployment("2", "70000", "{app: web}", "{team: shop}"),
            "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        (
            "a selector that does not match the template",
            deployment("2", "8080", "{app: api}", "{team: shop}"),
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
        ),
        (
            "a label value with a space",
            deployment("2", "8080", "{app: web}", "{team: 'shop floor'}"),
            "metadata.labels: Invalid value: \"shop floor\": a valid label must be an empty string",
        ),
        (
            "a service port out of range",
            service("70000"),
            "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        (
            "a custom resource of the wrong type",
            widget("two"),
            "spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\"",
        ),
        (
            "a custom resource below its minimum",
            widget("0"),
            "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1",
        ),
        (
            "a custom resource without a required field",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: default}\nspec: {}\n".to_owned(),
            "spec.size: Required value",
        ),
        (
            "a name that is not a DNS subdomain",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Web_1, namespace: default}\n".to_owned(),
            "metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain must consist of",
        ),
    ];
    let crd_file = dir.path().join("crd.yaml");
    std::fs::write(&crd_file, crd).unwrap();
    run(
        dir.path(),
        &["apply", "--server-side", "-f", crd_file.to_str().unwrap()],
    )
    .await;
    let prod = sim.cluster("prod").unwrap();
    for (what, manifest, expected) in &cases {
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, manifest).unwrap();
        let file = file.to_str().unwrap();
        // Server-side apply and a plain create are refused alike, and nothing is stored.
        for args in [
            vec!["apply", "--server-side", "-f", file],
            vec!["create", "-f", file],
        ] {
            let printed = run_failing(dir.path(), &args).await;
            assert!(
                printed.contains("is invalid") && printed.contains(expected),
                "{what} ({args:?}): {printed}"
            );
        }
        assert!(
            prod.get("apps/v1", "Deployment", Some("default"), "web")
                .is_none()
        );
        assert!(prod.get("v1", "Service", Some("default"), "web").is_none());
    }
    // The same objects, valid, are accepted.
    let file = dir.path().join("ok.yaml");
    std::fs::write(
        &file,
        format!("{ok}---\n{}---\n{}", service("80"), widget("3")),
    )
    .unwrap();
    let applied = run(
        dir.path(),
        &["apply", "--server-side", "-f", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(
        applied.matches("serverside-applied").count(),
        3,
        "{applied}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_a_crd_served_only_once_established_after_the_delay() {
    if skipped_without_kubectl() {
        return;
    }
    let sim = start(&["prod"]).await;
    let prod = sim.cluster("prod").unwrap();
    prod.set_crd_establish_delay(std::time::Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
    let file = dir.path().join("crd.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#,
    )
    .unwrap();
    run(
        dir.path(),
        &["apply", "--server-side", "-f", file.to_str().unwrap()],
    )
    .await;
    // Not served yet: not in discovery, and its path answers 404 with a Status.
    let established = "jsonpath={.status.conditions[?(@.type==\"Established\")].status}";
    let condition = run(
        dir.path(),
        &["get", "crd", "gadgets.example.com", "-o", established],
    )
    .await;
    assert_eq!(condition, "False");
    let printed = run_failing(dir.path(), &["get", "gadgets"]).await;
    assert!(
        printed.contains("the server doesn't have a resource type \"gadgets\""),
        "{printed}"
    );
    let printed = run_failing(
        dir.path(),
        &[
            "get",
            "--raw",
            "/apis/example.com/v1/namespaces/default/gadgets",
        ],
    )
    .await;
    assert!(
        printed.contains("NotFound") && printed.contains("could not find the requested resource"),
        "{printed}"
    );
    // kubectl's own wait (a watch on the CRD) sees it become Established.
    run(
        dir.path(),
        &[
            "wait",
            "--for",
            "condition=established",
            "--timeout=10s",
            "crd/gadgets.example.com",
        ],
    )
    .await;
    let listed = kubectl(dir.path(), &["get", "gadgets", "-n", "default"])
        .output()
        .await
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stderr).contains("No resources found"));
}

const EVERY_KIND: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: default}
data: {a: "1", b: "2"}
---
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: default}
type: Opaque
stringData: {token: x}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, protocol: TCP}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa, namespace: default}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: default}
spec:
  containers: [{name: app, image: nginx:1.27}]
---
apiVersion: v1
kind: Event
metadata: {name: e, namespace: default}
involvedObject: {kind: Pod, name: p, namespace: default}
reason: Started
message: started the container
type: Normal
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: nginx:1.27}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: default}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: postgres:16}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: default}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: busybox:1.36}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec: {containers: [{name: app, image: nginx:1.27}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: default}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: busybox:1.36}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: default}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: job, image: busybox:1.36}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: default}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects: [{kind: ServiceAccount, name: sa, namespace: default}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: viewer}
rules: [{apiGroups: [""], resources: [namespaces], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: viewer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: viewer}
subjects: [{kind: Group, name: devs, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: default}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 2
  maxReplicas: 5
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Mode, type: string, jsonPath: .spec.mode, priority: 1}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_prints_the_real_servers_columns_for_every_kind() {
    if skipped_without_kubectl() {
        return;
    }
    let sim = start(&["prod"]).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
    let file = dir.path().join("all.yaml");
    std::fs::write(&file, EVERY_KIND).unwrap();
    run(
        dir.path(),
        &["apply", "--server-side", "-f", file.to_str().unwrap()],
    )
    .await;
    let widget = dir.path().join("widget.yaml");
    std::fs::write(
        &widget,
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: default}\nspec: {size: 3, mode: fast}\n",
    )
    .unwrap();
    run(
        dir.path(),
        &["apply", "--server-side", "-f", widget.to_str().unwrap()],
    )
    .await;
    let header = |printed: &str| -> Vec<String> {
        let line = printed.lines().next().unwrap_or_default();
        // Columns are separated by at least two spaces ("LAST SEEN" is one column).
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let cases: &[(&str, &str, &[&str])] = &[
        ("namespaces", "default", &["NAME", "STATUS", "AGE"]),
        ("configmaps", "c", &["NAME", "DATA", "AGE"]),
        ("secrets", "s", &["NAME", "TYPE", "DATA", "AGE"]),
        (
            "services",
            "web",
            &[
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
            ],
        ),
        ("serviceaccounts", "sa", &["NAME", "SECRETS", "AGE"]),
        ("pods", "p", &["NAME", "READY", "STATUS", "RESTARTS", "AGE"]),
        (
            "events",
            "",
            &["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        ),
        (
            "deployments",
            "web",
            &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        ),
        ("statefulsets", "db", &["NAME", "READY", "AGE"]),
        (
            "daemonsets",
            "agent",
            &[
                "NAME",
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "NODE SELECTOR",
                "AGE",
            ],
        ),
        (
            "replicasets",
            "rs",
            &["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        ),
        (
            "jobs",
            "migrate",
            &["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        ),
        (
            "cronjobs",
            "nightly",
            &[
                "NAME",
                "SCHEDULE",
                "TIMEZONE",
                "SUSPEND",
                "ACTIVE",
                "LAST SCHEDULE",
                "AGE",
            ],
        ),
        ("roles", "reader", &["NAME", "CREATED AT"]),
        ("rolebindings", "reader", &["NAME", "ROLE", "AGE"]),
        ("clusterroles", "viewer", &["NAME", "CREATED AT"]),
        ("clusterrolebindings", "viewer", &["NAME", "ROLE", "AGE"]),
        (
            "ingresses",
            "web",
            &["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"],
        ),
        (
            "poddisruptionbudgets",
            "web",
            &[
                "NAME",
                "MIN AVAILABLE",
                "MAX UNAVAILABLE",
                "ALLOWED DISRUPTIONS",
                "AGE",
            ],
        ),
        (
            "horizontalpodautoscalers",
            "web",
            &[
                "NAME",
                "REFERENCE",
                "TARGETS",
                "MINPODS",
                "MAXPODS",
                "REPLICAS",
                "AGE",
            ],
        ),
        (
            "customresourcedefinitions",
            "widgets.example.com",
            &["NAME", "CREATED AT"],
        ),
        ("widgets", "w", &["NAME", "SIZE", "AGE"]),
    ];
    for (resource, name, columns) in cases {
        let mut args = vec!["get", resource, "-n", "default"];
        if !name.is_empty() {
            args.push(name);
        }
        let printed = run(dir.path(), &args).await;
        assert_eq!(
            header(&printed),
            *columns,
            "kubectl get {resource}:\n{printed}"
        );
    }
    // Cells, and the wide columns.
    let printed = run(
        dir.path(),
        &["get", "deploy", "web", "-n", "default", "-o", "wide"],
    )
    .await;
    assert_eq!(
        header(&printed),
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    let row: Vec<&str> = printed.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[0], "web");
    assert_eq!(row[1], "0/2", "{printed}");
    assert_eq!(&row[5..], ["app", "nginx:1.27", "app=web"], "{printed}");
    let printed = run(dir.path(), &["get", "svc", "web", "-n", "default"]).await;
    assert!(
        printed.contains("80/TCP") && printed.contains("ClusterIP"),
        "{printed}"
    );
    let printed = run(
        dir.path(),
        &["get", "widgets", "-n", "default", "-o", "wide"],
    )
    .await;
    assert_eq!(
        header(&printed),
        ["NAME", "SIZE", "MODE", "AGE"],
        "{printed}"
    );
    let row: Vec<&str> = printed.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["w", "3", "fast"], "{printed}");
    // Across namespaces, kubectl adds the namespace from each row's object.
    let printed = run(dir.path(), &["get", "configmaps", "-A"]).await;
    assert!(
        printed.lines().next().unwrap().starts_with("NAMESPACE"),
        "{printed}"
    );
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("default ") && l.contains(" c ")),
        "{printed}"
    );
    // --show-labels reads the row's metadata.
    let printed = run(dir.path(), &["get", "ns", "default", "--show-labels"]).await;
    assert!(
        printed.contains("kubernetes.io/metadata.name=default"),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_imperative_commands_work_over_protobuf() {
    if skipped_without_kubectl() {
        return;
    }
    let sim = start(&["prod"]).await;
    let prod = sim.cluster("prod").unwrap();
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
    let d = dir.path();
    run(d, &["create", "namespace", "shop"]).await;
    assert!(prod.get("v1", "Namespace", None, "shop").is_some());
    run(
        d,
        &[
            "-n",
            "shop",
            "create",
            "configmap",
            "web-config",
            "--from-literal=color=blue",
        ],
    )
    .await;
    let cm = prod
        .get("v1", "ConfigMap", Some("shop"), "web-config")
        .unwrap();
    assert_eq!(cm["data"]["color"], "blue");
    run(
        d,
        &[
            "-n",
            "shop",
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=token=s3cr3t",
        ],
    )
    .await;
    let secret = prod.get("v1", "Secret", Some("shop"), "creds").unwrap();
    assert_eq!(
        secret["data"]["token"], "czNjcjN0",
        "base64 of the value: {secret}"
    );
    assert_eq!(secret["type"], "Opaque");
    run(
        d,
        &[
            "-n",
            "shop",
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=2",
            "--port=8080",
        ],
    )
    .await;
    let deploy = prod
        .get("apps/v1", "Deployment", Some("shop"), "web")
        .unwrap();
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(deploy["spec"]["selector"]["matchLabels"]["app"], "web");
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    run(
        d,
        &[
            "-n",
            "shop",
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80:8080",
        ],
    )
    .await;
    let svc = prod.get("v1", "Service", Some("shop"), "web").unwrap();
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    run(
        d,
        &["-n", "shop", "label", "deployment", "web", "tier=front"],
    )
    .await;
    run(
        d,
        &[
            "-n",
            "shop",
            "annotate",
            "deployment",
            "web",
            "owner=team-a",
        ],
    )
    .await;
    run(
        d,
        &[
            "-n",
            "shop",
            "set",
            "image",
            "deployment/web",
            "nginx=nginx:1.28",
        ],
    )
    .await;
    let deploy = prod
        .get("apps/v1", "Deployment", Some("shop"), "web")
        .unwrap();
    assert_eq!(deploy["metadata"]["labels"]["tier"], "front");
    assert_eq!(deploy["metadata"]["annotations"]["owner"], "team-a");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );
    run(
        d,
        &[
            "-n",
            "shop",
            "expose",
            "deployment",
            "web",
            "--name=web-public",
            "--port=443",
            "--target-port=8080",
        ],
    )
    .await;
    let exposed = prod
        .get("v1", "Service", Some("shop"), "web-public")
        .unwrap();
    assert_eq!(exposed["spec"]["ports"][0]["port"], 443);
    assert_eq!(exposed["spec"]["selector"]["app"], "web");
    // A typed client reading back gets what it wrote, over protobuf.
    let printed = run(
        d,
        &[
            "-n",
            "shop",
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    )
    .await;
    assert_eq!(printed, "2");
    run(d, &["-n", "shop", "delete", "deployment", "web"]).await;
    assert!(
        prod.get("apps/v1", "Deployment", Some("shop"), "web")
            .is_none()
    );
    run(d, &["delete", "namespace", "shop"]).await;
    // Protobuf writes are logged as any write is.
    let writes = prod.writes();
    assert!(
        writes
            .iter()
            .any(|w| w.verb == longshore_kube_sim::WriteVerb::Create),
        "the creates were logged as writes"
    );
}

/// One raw HTTP/1.1 exchange with the given headers: the status line and headers, and the
/// body's bytes.
async fn raw(
    sim: &longshore_kube_sim::KubeSim,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&out[..at]).into_owned(),
        out[at + 4..].to_vec(),
    )
}

#[tokio::test]
async fn protobuf_is_negotiated_and_a_garbled_body_is_refused() {
    let sim = start(&["prod"]).await;
    let pb = "application/vnd.kubernetes.protobuf";
    // A client preferring protobuf gets it; one preferring JSON gets JSON.
    let (head, body) = raw(
        &sim,
        "GET",
        "/clusters/prod/api/v1/namespaces/default",
        &format!("Accept: {pb}, */*\r\n"),
        b"",
    )
    .await;
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-type: {pb}")),
        "{head}"
    );
    assert!(body.starts_with(b"k8s\0"), "the protobuf envelope");
    assert!(body.windows(7).any(|w| w == b"default"));
    let (head, body) = raw(
        &sim,
        "GET",
        "/clusters/prod/api/v1/namespaces/default",
        &format!("Accept: application/json, {pb}\r\n"),
        b"",
    )
    .await;
    assert!(head.contains("application/json"), "{head}");
    assert!(body.starts_with(b"{"));
    // Not protobuf at all, under the protobuf content type: 400, and nothing created.
    let (head, body) = raw(
        &sim,
        "POST",
        "/clusters/prod/api/v1/namespaces",
        &format!("Content-Type: {pb}\r\n"),
        b"{\"metadata\":{\"name\":\"shop\"}}",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["reason"], "BadRequest");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("could not be decoded as protobuf"),
        "{status}"
    );
    assert!(
        sim.cluster("prod")
            .unwrap()
            .get("v1", "Namespace", None, "shop")
            .is_none()
    );
}
