//! One trace per operation across the real dispatcher and worker processes, collected by an
//! OTLP/gRPC receiver; and the Prometheus counters moving as operations run.

use std::time::Duration;

use longshore_integration::{
    nats::NatsServer,
    otlp::{OtlpReceiver, ReceivedSpan},
    process::{Process, binary, free_port},
    system::System,
    wait::eventually,
};
use longshore_kube_sim::{KubeSim, SimOptions};
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
        async move { (consumers >= 3 && waves == 2).then_some(spans) }
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
