//! One trace per operation across the real dispatcher and worker processes, collected by an
//! OTLP/gRPC receiver; the Prometheus counters moving as operations run; both binaries'
//! metrics checked by `promtool` and scraped by a real Prometheus, which evaluates every
//! dashboard expression and loads the alert rules.

use std::time::Duration;

use longshore_integration::{
    nats::NatsServer,
    otlp::{OtlpReceiver, ReceivedSpan},
    process::{Process, binary, free_port},
    prometheus::{Prometheus, promtool, tool},
    system::System,
    wait::eventually,
};
use longshore_kube_sim::{ErrorFault, FaultScope, Faults, KubeSim, SimOptions, Trigger};
use serde_json::json;

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

/// A nats-server, kube-sim with `clusters`, an OTLP receiver, and the real dispatcher and
/// worker processes exporting their spans to it; the dispatcher ready.
struct Traced {
    _nats: NatsServer,
    sim: KubeSim,
    receiver: OtlpReceiver,
    url: String,
    metrics_url: String,
    _dispatcher: Process,
    _worker: Process,
    http: reqwest::Client,
    _logs: tempfile::TempDir,
}

impl Traced {
    async fn start(clusters: &[&str]) -> Self {
        let nats = NatsServer::start().await.unwrap();
        let sim = KubeSim::start(SimOptions {
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
        let logs = tempfile::tempdir().unwrap();
        let kubeconfig = logs.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).unwrap();
        let receiver = OtlpReceiver::start().await.unwrap();
        let otel = |extra: Vec<(&'static str, String)>| {
            let mut env = vec![
                ("LONGSHORE_NATS__URL", nats.url()),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
                ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ];
            env.extend(extra);
            env
        };
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let dispatcher = Process::spawn(
            "dispatcher",
            &binary("longshore-dispatcher").unwrap(),
            &[],
            &otel(vec![
                ("LONGSHORE_LISTEN", format!("127.0.0.1:{port}")),
                ("LONGSHORE_CLUSTERS", clusters.join(",")),
            ]),
            logs.path(),
        )
        .unwrap();
        let metrics_port = free_port();
        let worker = Process::spawn(
            "worker",
            &binary("longshore-worker").unwrap(),
            &[],
            &otel(vec![
                ("LONGSHORE_LISTEN", format!("127.0.0.1:{metrics_port}")),
                ("LONGSHORE_WORKER_ID", "worker-0".into()),
                (
                    "LONGSHORE_CLUSTERS__KUBECONFIG",
                    kubeconfig.display().to_string(),
                ),
            ]),
            logs.path(),
        )
        .unwrap();
        let http = reqwest::Client::new();
        eventually(
            Duration::from_secs(20),
            "the dispatcher to be ready",
            || {
                let r = http.get(format!("{url}/readyz")).send();
                async move { r.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
            },
        )
        .await
        .unwrap();
        Self {
            _nats: nats,
            sim,
            receiver,
            url,
            metrics_url: format!("http://127.0.0.1:{metrics_port}"),
            _dispatcher: dispatcher,
            _worker: worker,
            http,
            _logs: logs,
        }
    }
}

#[tokio::test]
async fn one_trace_follows_an_operation_from_the_request_to_the_kubernetes_calls() {
    let t = Traced::start(&["prod"]).await;
    let (url, http, receiver) = (&t.url, &t.http, &t.receiver);
    let sim_port = t.sim.addr().port();

    // The pipeline's own trace: the operation must continue it.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let resp = http
        .post(format!("{url}/v1/operations"))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .json(&json!({"cluster": "prod", "action": "apply", "manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "web", "namespace": "default"}, "data": {"k": "v"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let returned = resp.headers()["traceparent"].to_str().unwrap().to_owned();
    assert!(
        returned.starts_with(&format!("00-{caller_trace}-")),
        "{returned}"
    );
    let id = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let record = eventually(Duration::from_secs(20), "the operation to succeed", || {
        let r = http.get(format!("{url}/v1/operations/{id}")).send();
        async move {
            let record: serde_json::Value = r.await.ok()?.json().await.ok()?;
            (record["state"] == "succeeded").then_some(record)
        }
    })
    .await
    .unwrap();
    assert_eq!(record["traceId"], caller_trace, "{record}");

    let find = |spans: &[ReceivedSpan], service: &str, kind: i32| {
        spans
            .iter()
            .find(|s| s.trace_id == caller_trace && s.service == service && s.kind == kind)
            .cloned()
    };
    // Exporters batch: wait (bounded) until both processes have sent their spans.
    let spans = eventually(Duration::from_secs(20), "spans from both processes", || {
        let spans = receiver.spans();
        let complete = find(&spans, "longshore-dispatcher", PRODUCER).is_some()
            && find(&spans, "longshore-dispatcher", SERVER).is_some()
            && spans.iter().any(|s| {
                s.trace_id == caller_trace
                    && s.service == "longshore-worker"
                    && s.kind == CLIENT
                    && s.attr("k8s.resource") == Some("configmaps")
            })
            && spans
                .iter()
                .any(|s| s.name.starts_with("ack ") && s.trace_id == caller_trace);
        async move { complete.then_some(spans) }
    })
    .await
    .unwrap();

    let server = find(&spans, "longshore-dispatcher", SERVER).unwrap();
    assert_eq!(server.name, "POST /v1/operations");
    assert_eq!(
        server.parent_span_id, caller_span,
        "continues the caller's trace"
    );
    assert_eq!(
        server.int("http.response.status_code"),
        Some(202),
        "an integer, as the conventions say: {server:?}"
    );
    assert_eq!(
        returned,
        format!("00-{caller_trace}-{}-01", server.span_id),
        "the response names the request's span"
    );

    let producer = find(&spans, "longshore-dispatcher", PRODUCER).unwrap();
    assert_eq!(producer.name, "send longshore.ops.workers.prod");
    assert_eq!(producer.parent_span_id, server.span_id);
    assert_eq!(producer.attr("messaging.system"), Some("nats"));
    assert_eq!(
        producer.attr("messaging.destination.name"),
        Some("longshore.ops.workers.prod")
    );
    assert_eq!(producer.attr("messaging.message.id"), Some(id.as_str()));
    assert_eq!(producer.attr("messaging.operation.type"), Some("send"));

    let consumer = find(&spans, "longshore-worker", CONSUMER).unwrap();
    assert_eq!(consumer.name, "process longshore.ops.workers.prod");
    assert_eq!(
        consumer.parent_span_id, producer.span_id,
        "the worker continues the dispatcher's trace through the NATS headers"
    );
    assert_eq!(consumer.attr("messaging.system"), Some("nats"));
    assert_eq!(consumer.attr("messaging.message.id"), Some(id.as_str()));
    assert_eq!(consumer.attr("messaging.operation.type"), Some("process"));
    assert_eq!(consumer.attr("op_id"), Some(id.as_str()));
    assert!(consumer.int("seq").is_some_and(|s| s > 0), "{consumer:?}");
    assert_eq!(consumer.int("attempt"), Some(1), "{consumer:?}");
    // Nothing on a span that costs more than it tells: a Tokio thread's id or name, or busy
    // and idle times that read the clock on every poll.
    for span in spans.iter().filter(|s| s.trace_id == caller_trace) {
        for key in ["thread.id", "thread.name", "busy_ns", "idle_ns"] {
            assert!(span.value(key).is_none(), "{key} on {span:?}");
        }
    }

    let kube: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| {
            s.trace_id == caller_trace && s.kind == CLIENT && s.attr("k8s.resource").is_some()
        })
        .collect();
    assert!(!kube.is_empty());
    for span in &kube {
        assert_eq!(span.parent_span_id, consumer.span_id, "{span:?}");
        assert_eq!(span.attr("k8s.cluster.name"), Some("prod"));
        assert!(span.attr("http.request.method").is_some());
        assert!(
            span.int("http.response.status_code")
                .is_some_and(|c| (200..600).contains(&c)),
            "{span:?}"
        );
        assert_eq!(span.attr("server.address"), Some("127.0.0.1"), "{span:?}");
        assert_eq!(
            span.int("server.port"),
            Some(i64::from(sim_port)),
            "{span:?}"
        );
    }
    let write = kube
        .iter()
        .find(|s| s.attr("k8s.object.name") == Some("web") && s.name == "PATCH configmaps")
        .expect("a client span for the ConfigMap's server-side apply");
    assert_eq!(write.attr("k8s.namespace.name"), Some("default"));
    assert_eq!(write.attr("http.request.method"), Some("PATCH"));

    for name in ["claim LONGSHORE_OPERATIONS", "finish LONGSHORE_OPERATIONS"] {
        let kv = spans
            .iter()
            .find(|s| s.trace_id == caller_trace && s.name == name)
            .unwrap_or_else(|| panic!("no {name} span"));
        assert_eq!(kv.parent_span_id, consumer.span_id);
    }
    let ack = spans
        .iter()
        .find(|s| s.trace_id == caller_trace && s.name == "ack longshore.ops.workers.prod")
        .unwrap();
    assert_eq!(ack.parent_span_id, consumer.span_id);
    assert!(
        spans
            .iter()
            .filter(|s| s.trace_id == caller_trace)
            .all(|s| s.status_code != 2),
        "nothing failed"
    );
}

async fn scrape(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample whose line starts with `series` (name and labels), or 0.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .trim()
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_when_operations_run() {
    let system = System::start(&["prod"], 1, 1).await.unwrap();
    let d = system.dispatchers[0].url.clone();
    let w = system.workers[0].metrics_url.clone();
    let accepted =
        "longshore_dispatcher_operations_accepted_total{action=\"apply\",replayed=\"false\"}";
    let requests = "longshore_dispatcher_http_requests_total{route=\"/v1/operations\",method=\"POST\",status=\"202\"}";
    let succeeded = "longshore_worker_operations_total{action=\"apply\",outcome=\"succeeded\",error_class=\"none\"}";
    let failed = "longshore_worker_operations_total{action=\"apply\",outcome=\"failed\",error_class=\"CLASS\"}";
    let patches = "longshore_worker_kube_request_duration_seconds_count{method=\"PATCH\"}";
    let queue_wait = "longshore_worker_queue_wait_seconds_count{action=\"apply\"}";
    let (d0, w0) = (scrape(&d).await, scrape(&w).await);

    let ok = json!({"cluster": "prod", "action": "apply", "manifests": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m", "namespace": "default"}}]});
    let id = system.accept(0, &ok, Some("metrics-ok")).await.unwrap();
    system
        .wait_terminal(&id, Duration::from_secs(20))
        .await
        .unwrap();
    // A kind the cluster does not serve: a permanent failure.
    let bad = json!({"cluster": "prod", "action": "apply", "manifests": [
        {"apiVersion": "example.com/v1", "kind": "Nothing", "metadata": {"name": "bad", "namespace": "default"}}]});
    let bad_id = system.accept(0, &bad, Some("metrics-bad")).await.unwrap();
    let record = system
        .wait_terminal(&bad_id, Duration::from_secs(20))
        .await
        .unwrap();

    let (d1, w1) = (scrape(&d).await, scrape(&w).await);
    assert_eq!(sample(&d1, accepted) - sample(&d0, accepted), 2.0, "{d1}");
    assert_eq!(sample(&d1, requests) - sample(&d0, requests), 2.0);
    assert!(sample(&d1, "longshore_dispatcher_publish_duration_seconds_count") >= 2.0);
    assert_eq!(sample(&w1, succeeded) - sample(&w0, succeeded), 1.0, "{w1}");
    assert_eq!(record["state"], "failed", "{record}");
    let class = record["error"]["class"].as_str().unwrap();
    let failed = failed.replace("CLASS", class);
    assert_eq!(sample(&w1, &failed) - sample(&w0, &failed), 1.0, "{w1}");
    assert!(sample(&w1, patches) > sample(&w0, patches));
    assert_eq!(sample(&w1, queue_wait) - sample(&w0, queue_wait), 2.0);
    assert_eq!(sample(&w1, "longshore_worker_operations_in_flight"), 0.0);
    assert!(
        w1.contains("longshore_worker_consumer_lag{pool=\"workers\"} 0"),
        "{w1}"
    );
    let health = reqwest::get(format!("{w}/readyz")).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_fleet_rollout_is_one_trace_with_a_span_per_wave_and_its_metrics_move() {
    let clusters = ["eu-1", "eu-2", "eu-3"];
    let t = Traced::start(&clusters).await;
    let (url, http, receiver) = (&t.url, &t.http, &t.receiver);
    let caller_trace = "5af92f3577b34da6a3ce929d0e0e4737";
    let resp = http
        .post(format!("{url}/v1/fleet-rollouts"))
        .header(
            "traceparent",
            format!("00-{caller_trace}-00f067aa0ba902b7-01"),
        )
        .json(&json!({
            "template": {"action": "apply", "manifests": [
                {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "web", "namespace": "default"}, "data": {"k": "v"}}]},
            "clusters": {"names": clusters},
            "strategy": {"waves": [1, "100%"]},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = eventually(Duration::from_secs(20), "the rollout to succeed", || {
        let r = http.get(format!("{url}/v1/fleet-rollouts/{id}")).send();
        async move {
            let s: serde_json::Value = r.await.ok()?.json().await.ok()?;
            (s["state"] == "succeeded").then_some(s)
        }
    })
    .await
    .unwrap();
    assert_eq!(status["traceId"], caller_trace);

    // Every cluster's operation is in the rollout's trace, under its wave's span.
    let spans = eventually(Duration::from_secs(20), "the rollout's spans", || {
        let spans = receiver.spans();
        let consumers = spans
            .iter()
            .filter(|s| s.trace_id == caller_trace && s.kind == CONSUMER)
            .count();
        let waves = spans
            .iter()
            .filter(|s| s.trace_id == caller_trace && s.name.starts_with("start wave"))
            .count();
        // The request's span ends with its response, and may be exported after the
        // workers' spans.
        let request = spans
            .iter()
            .any(|s| s.trace_id == caller_trace && s.kind == SERVER);
        async move { (consumers >= 3 && waves == 2 && request).then_some(spans) }
    })
    .await
    .unwrap();
    let server = spans
        .iter()
        .find(|s| s.trace_id == caller_trace && s.kind == SERVER)
        .unwrap();
    assert_eq!(server.name, "POST /v1/fleet-rollouts");
    let waves: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == caller_trace && s.name.starts_with("start wave"))
        .collect();
    for wave in &waves {
        assert_eq!(wave.parent_span_id, server.span_id, "{wave:?}");
    }
    for consumer in spans
        .iter()
        .filter(|s| s.trace_id == caller_trace && s.kind == CONSUMER)
    {
        assert!(
            waves.iter().any(|w| w.span_id == consumer.parent_span_id),
            "an operation's span is a child of its wave's: {consumer:?}"
        );
    }

    // The metrics: a rollout accepted and counted by state, two waves started and ended.
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("longshore_dispatcher_rollouts_accepted_total{replayed=\"false\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("longshore_dispatcher_rollouts{state=\"succeeded\"} 1"),
        "{text}"
    );
    let worker = http
        .get(format!("{}/metrics", t.metrics_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "longshore_worker_rollout_waves_started_total 2",
        "longshore_worker_rollout_wave_duration_seconds_count{state=\"succeeded\"} 2",
        "longshore_worker_rollouts_ended_total{state=\"succeeded\"} 1",
    ] {
        assert!(worker.contains(line), "{line}: {worker}");
    }
}

/// Applies a ConfigMap named `name` to `prod` and waits for its end: the record.
async fn apply_and_wait(t: &Traced, name: &str) -> serde_json::Value {
    let accepted: serde_json::Value = t
        .http
        .post(format!("{}/v1/operations", t.url))
        .header("Idempotency-Key", name)
        .json(&json!({"cluster": "prod", "action": "apply", "manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": name, "namespace": "default"}, "data": {"k": "v"}}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(30), "the operation to end", || {
        let r = t
            .http
            .get(format!("{}/v1/operations/{id}?wait=5s", t.url))
            .send();
        async move {
            let record: serde_json::Value = r.await.ok()?.json().await.ok()?;
            matches!(record["state"].as_str(), Some("succeeded" | "failed")).then_some(record)
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn both_binaries_answer_the_text_format_promtool_accepts_and_openmetrics_when_asked() {
    let Some(promtool_bin) = tool("promtool") else {
        return;
    };
    let t = Traced::start(&["prod"]).await;
    let record = apply_and_wait(&t, "checked").await;
    assert_eq!(record["state"], "succeeded", "{record}");
    for url in [&t.url, &t.metrics_url] {
        let plain = t.http.get(format!("{url}/metrics")).send().await.unwrap();
        assert_eq!(
            plain.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = plain.text().await.unwrap();
        assert!(!text.contains("# EOF"), "{text}");
        // Lint problems (a counter without _total, a missing HELP) fail the check too.
        let dir = std::env::temp_dir();
        promtool(&promtool_bin, &dir, &["check", "metrics"], Some(&text))
            .unwrap_or_else(|e| panic!("{url}: {e}"));

        let open = t
            .http
            .get(format!("{url}/metrics"))
            .header(
                "Accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            open.headers()["content-type"],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        let om = open.text().await.unwrap();
        assert!(om.ends_with("# EOF\n"), "{om}");
        // The same series in both (this later scrape may add some: its own request's).
        let series = |s: &str| -> std::collections::BTreeSet<String> {
            s.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_owned()))
                .collect()
        };
        let missing: Vec<String> = series(&text).difference(&series(&om)).cloned().collect();
        assert!(missing.is_empty(), "not in OpenMetrics: {missing:?}");
    }
}

#[tokio::test]
async fn a_real_prometheus_sees_the_first_api_server_error_on_the_dashboard() {
    let Some(prometheus_bin) = tool("prometheus") else {
        return;
    };
    let t = Traced::start(&["prod"]).await;
    let host = |url: &str| url.trim_start_matches("http://").to_owned();
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/observability/alert-rules.yaml");
    let prometheus = Prometheus::start(
        &prometheus_bin,
        &[
            ("longshore-dispatcher", host(&t.url)),
            ("longshore-worker", host(&t.metrics_url)),
        ],
        Some(&rules),
    )
    .await
    .unwrap();

    // Before any error, Prometheus has the error series, at 0.
    let at_zero = [
        r#"longshore_worker_kube_request_errors_total{cluster="prod",kind="5xx"}"#,
        r#"longshore_worker_operations_total{action="apply",outcome="retried",error_class="transient"}"#,
        r#"longshore_dispatcher_http_requests_total{route="/v1/operations",method="POST",status="503"}"#,
        r#"longshore_dispatcher_publishes_total{outcome="error"}"#,
    ];
    for series in at_zero {
        eventually(
            Duration::from_secs(30),
            &format!("Prometheus to have scraped {series} at 0"),
            || async {
                let found = prometheus.query(series).await.ok()?;
                (found.len() == 1 && found[0].1 == 0.0).then_some(())
            },
        )
        .await
        .unwrap();
    }

    // One 500 from the API server: the operation's write fails once and is retried.
    t.sim.cluster("prod").unwrap().set_faults(Faults {
        scope: FaultScope::Writes,
        errors: vec![ErrorFault {
            status: 500,
            retry_after_seconds: None,
            when: Trigger::next(1),
        }],
        ..Default::default()
    });
    let record = apply_and_wait(&t, "one-500").await;
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(
        record["attempts"], 2,
        "retried once after the 500: {record}"
    );

    // The dashboard's error panels, as Grafana would query them, show it.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/observability/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    let errors_by_cluster =
        "sum by (cluster, kind) (rate(longshore_worker_kube_request_errors_total[5m]))";
    let failures_by_class = r#"sum by (error_class) (rate(longshore_worker_operations_total{error_class!="none"}[5m]))"#;
    for panel in [errors_by_cluster, failures_by_class] {
        assert!(
            exprs.iter().any(|e| e == panel),
            "the dashboard has {panel}"
        );
    }
    let above_zero = |expr: &'static str, labels: serde_json::Value| {
        let prometheus = &prometheus;
        async move {
            eventually(
                Duration::from_secs(30),
                &format!("{expr} to show {labels} above 0"),
                || async {
                    let result = prometheus.query(expr).await.ok()?;
                    result
                        .iter()
                        .find(|(l, v)| *l == labels && *v > 0.0)
                        .map(|_| ())
                },
            )
            .await
            .unwrap();
        }
    };
    above_zero(errors_by_cluster, json!({"cluster": "prod", "kind": "5xx"})).await;
    above_zero(failures_by_class, json!({"error_class": "transient"})).await;

    // Every panel's expression evaluates, and has series to draw (a rate needs two
    // scrapes of its series).
    for expr in &exprs {
        let found = eventually(
            Duration::from_secs(30),
            &format!("{expr} to have series"),
            || async {
                let result = prometheus.query(expr).await.ok()?;
                (!result.is_empty()).then_some(())
            },
        )
        .await;
        if let Err(e) = found {
            let refused = prometheus.query(expr).await.err();
            panic!("{e}; Prometheus says {refused:?}");
        }
    }

    // The shipped rules load into a real Prometheus, and evaluate without error.
    eventually(
        Duration::from_secs(30),
        "every alert rule evaluated and healthy",
        || async {
            let groups = prometheus.rules().await.ok()?;
            let rules: Vec<&serde_json::Value> = groups
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            (rules.len() >= 7 && rules.iter().all(|r| r["health"] == "ok")).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_dispatcher_reports_dead_letters_clusters_not_ready_and_a_queue_nobody_pulls() {
    let mut system = System::start(&["prod", "staging"], 1, 0).await.unwrap();
    let mut config = longshore_integration::worker::Worker::config(
        &system.nats.url(),
        system.kubeconfig.path(),
        "worker-0",
    );
    config.clusters.probe_interval = Duration::from_secs(1);
    config.pool.max_deliver = 2;
    system
        .workers
        .push(longshore_integration::worker::Worker::start_with(config));
    let d = system.dispatchers[0].url.clone();
    let until = |what: &'static str, check: fn(&str) -> bool| {
        let d = d.clone();
        async move {
            eventually(Duration::from_secs(30), what, || {
                let d = d.clone();
                async move {
                    let text = scrape(&d).await;
                    check(&text).then_some(text)
                }
            })
            .await
            .unwrap()
        }
    };
    let text = scrape(&d).await;
    assert_eq!(
        sample(&text, "longshore_dispatcher_dead_letters"),
        0.0,
        "{text}"
    );

    // A cluster that stops answering: unreachable, by name, and its operation dead-lettered.
    system.cluster("staging").set_faults(Faults {
        unavailable: true,
        ..Default::default()
    });
    until("staging reported unreachable", |t| {
        t.contains(
            r#"longshore_dispatcher_cluster_not_ready{cluster="staging",phase="unreachable"} 1"#,
        ) && t.contains(r#"longshore_dispatcher_clusters{phase="unreachable"} 1"#)
    })
    .await;
    let text = scrape(&d).await;
    assert!(
        !text.contains(r#"cluster_not_ready{cluster="prod""#),
        "{text}"
    );
    let cm = |cluster: &str, name: &str| {
        json!({"cluster": cluster, "action": "apply", "manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}}]})
    };
    // Seconds, as the gauge has them: the last delivery is this operation's, or later.
    let submitted = jiff::Timestamp::now().as_second();
    let id = system
        .accept(0, &cm("staging", "lost"), None)
        .await
        .unwrap();
    let record = system
        .wait_terminal(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(record["state"], "dead_lettered", "{record}");
    until("the dead letter counted", |t| {
        sample(t, "longshore_dispatcher_dead_letters") == 1.0
    })
    .await;

    // No worker left: what is submitted waits, and the dispatcher still sees it.
    let before_stop = jiff::Timestamp::now().as_second();
    system.workers.pop().unwrap().stop().await.unwrap();
    for i in 0..3 {
        system
            .accept(0, &cm("prod", &format!("waiting-{i}")), None)
            .await
            .unwrap();
    }
    let text = until("three operations waiting", |t| {
        sample(t, r#"longshore_dispatcher_queue_pending{pool="workers"}"#) == 3.0
    })
    .await;
    let last = sample(
        &text,
        r#"longshore_dispatcher_queue_last_delivery_timestamp_seconds{pool="workers"}"#,
    );
    assert!(
        last >= submitted as f64 && last <= before_stop as f64 + 1.0,
        "the last delivery was after the first submission and before the worker stopped: {last} vs {submitted}..{before_stop}"
    );
}
