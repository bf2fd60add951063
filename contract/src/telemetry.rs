//! Logs and traces for both binaries: one setup, so the dispatcher and the worker export
//! the same way, and the W3C trace context that carries an operation's trace across the
//! queue in NATS headers. Behind the `telemetry` feature, so crates that only need the wire
//! types do not build an OTLP exporter.
//!
//! Spans always get trace ids (they are kept in status records, log lines and response
//! headers); they are exported only when an OTLP endpoint is configured, by
//! `telemetry.otlp_endpoint` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`. The other
//! standard variables apply too: `OTEL_EXPORTER_OTLP_PROTOCOL`, `..._HEADERS`,
//! `..._TIMEOUT`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`; settings in the configuration win.

use std::collections::{BTreeMap, HashMap};

use async_nats::HeaderMap;
use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    runtime,
    trace::{Sampler, SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, Targets},
    layer::SubscriberExt,
};

/// `[telemetry]`: where traces go.
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP endpoint, e.g. `http://jaeger-collector:4317` (gRPC) or
    /// `http://jaeger-collector:4318` (HTTP). Unset: `OTEL_EXPORTER_OTLP_ENDPOINT`, and
    /// with neither, spans are not exported.
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`. Unset: `OTEL_EXPORTER_OTLP_PROTOCOL`, else `grpc`.
    pub otlp_protocol: Option<String>,
    /// Headers sent with every export (e.g. a collector's API key), added to
    /// `OTEL_EXPORTER_OTLP_HEADERS`. Hidden from `Debug`.
    pub otlp_headers: BTreeMap<String, String>,
    /// Fraction of new traces recorded (0.0–1.0); a caller's sampled `traceparent` is
    /// always followed. Unset: `OTEL_TRACES_SAMPLER`, else every trace.
    pub sampling_ratio: Option<f64>,
    /// Resource attributes added to every span, e.g. `deployment.environment.name`.
    pub resource: BTreeMap<String, String>,
}

impl std::fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("otlp_protocol", &self.otlp_protocol)
            .field(
                "otlp_headers",
                &self.otlp_headers.keys().collect::<Vec<_>>(),
            )
            .field("sampling_ratio", &self.sampling_ratio)
            .field("resource", &self.resource)
            .finish()
    }
}

impl TelemetryConfig {
    /// Checks the settings; errors name the key under `key`.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if let Some(p) = &self.otlp_protocol
            && !matches!(p.as_str(), "grpc" | "http/protobuf")
        {
            return Err(format!(
                "{key}.otlp_protocol: {p:?} is not one of \"grpc\", \"http/protobuf\""
            ));
        }
        if let Some(e) = &self.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(format!(
                "{key}.otlp_endpoint: must start with http:// or https://"
            ));
        }
        if let Some(r) = self.sampling_ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err(format!("{key}.sampling_ratio: must be between 0.0 and 1.0"));
        }
        Ok(())
    }

    fn endpoint_configured(&self) -> bool {
        self.otlp_endpoint.is_some()
            || [
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
    }

    fn protocol(&self) -> String {
        self.otlp_protocol
            .clone()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").ok())
            .unwrap_or_else(|| "grpc".into())
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("setting up trace export: {0}")]
pub struct TelemetryError(String);

/// The installed tracer provider; [`Telemetry::shutdown`] flushes what is buffered.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Names of the spans around one call (to a KV bucket, the Kubernetes API, a publish or an
/// acknowledgement): exported as traces, not carried in log lines.
pub const CALL_SPANS: [&str; 4] = ["kv", "kube", "publish", "settle"];

/// Installs logging (to stdout, filtered by `LONGSHORE_LOG`, default `info`) and tracing
/// (spans of longshore's own crates at `info` and above) for `service`
/// (`longshore-dispatcher`, `longshore-worker`). Call inside the Tokio runtime.
pub fn init(
    service: &'static str,
    instance: &str,
    config: &TelemetryConfig,
) -> Result<Telemetry, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service);
    }
    resource = resource
        .with_attribute(KeyValue::new("service.namespace", "longshore"))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attribute(KeyValue::new("service.instance.id", instance.to_owned()))
        .with_attributes(
            config
                .resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        );
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    if let Some(ratio) = config.sampling_ratio {
        builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))));
    }
    if config.endpoint_configured() {
        let exporter = exporter(config)?;
        builder = builder
            .with_span_processor(BatchSpanProcessor::builder(exporter, runtime::Tokio).build());
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    let log_filter = std::env::var("LONGSHORE_LOG")
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let span_filter = Targets::new()
        .with_target("longshore_dispatcher", tracing::Level::INFO)
        .with_target("longshore_worker", tracing::Level::INFO)
        .with_target("longshore_contract", tracing::Level::INFO);
    let logs = log_lines(
        log_filter,
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
        std::io::stdout,
    );
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service))
        // Per span, none of these is worth its cost on the hot path: a Tokio thread's id and
        // name (a copied string) say nothing of the work; the busy and idle times read the
        // clock on every poll; activating the span's context on every poll serves only code
        // reading the ambient context, and none here does (the propagation reads the span's).
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(span_filter);
    let subscriber = tracing_subscriber::registry().with(logs).with(traces);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| TelemetryError(e.to_string()))?;
    Ok(Telemetry { provider })
}

/// The log lines' layer: events `filter` lets through, written to `writer`, each naming
/// the spans it is in. Spans of single calls ([`CALL_SPANS`]) are traced but left out of
/// the lines: this layer would format their fields on every call, and a line logged within
/// one still names the operation or request around it.
fn log_lines<S, W>(filter: EnvFilter, ansi: bool, writer: W) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let not_a_call = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.is_span() && CALL_SPANS.contains(&meta.name()))
    });
    tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer)
        .with_filter(filter.and(not_a_call))
}

fn exporter(config: &TelemetryConfig) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let protocol = config.protocol();
    let built = match protocol.as_str() {
        "grpc" => {
            let mut headers = http::HeaderMap::new();
            for (k, v) in &config.otlp_headers {
                let name = http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                    .map_err(|_| {
                        TelemetryError(format!("telemetry.otlp_headers: bad name {k:?}"))
                    })?;
                let value = http::HeaderValue::from_str(v).map_err(|_| {
                    TelemetryError(format!("telemetry.otlp_headers.{k}: not a header value"))
                })?;
                headers.insert(name, value);
            }
            let metadata =
                opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers);
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_metadata(metadata);
            if let Some(e) = &config.otlp_endpoint {
                b = b.with_endpoint(e.clone());
            }
            b.build()
        }
        "http/protobuf" => {
            let headers: HashMap<String, String> = config
                .otlp_headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_headers(headers);
            if let Some(e) = &config.otlp_endpoint {
                // Like OTEL_EXPORTER_OTLP_ENDPOINT: the base URL, to which the traces path is added.
                let base = e.trim_end_matches('/');
                let url = if base.ends_with("/v1/traces") {
                    base.to_owned()
                } else {
                    format!("{base}/v1/traces")
                };
                b = b.with_endpoint(url);
            }
            b.build()
        }
        other => {
            return Err(TelemetryError(format!(
                "OTLP protocol {other:?} is not supported (use grpc or http/protobuf)"
            )));
        }
    };
    built.map_err(|e| TelemetryError(e.to_string()))
}

impl Telemetry {
    /// Exports what is still buffered, for two seconds at most: a process that is told to
    /// stop must not wait out an unreachable collector.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), flushed).await;
    }
}

/// The trace id of `span` (32 hex digits), if it belongs to a valid trace.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The `traceparent` value naming `span`, to return to a caller.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Makes `span` a child of the trace context in `carrier` (if it holds a valid one).
pub fn continue_from(span: &tracing::Span, carrier: &dyn Extractor) {
    let cx = TraceContextPropagator::new().extract(carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Writes `span`'s trace context (`traceparent`, `tracestate`) into NATS headers.
pub fn inject_into_headers(span: &tracing::Span, headers: &mut HeaderMap) {
    let cx: Context = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut NatsHeaders(headers));
}

/// NATS message headers as a trace context carrier.
pub struct NatsHeaders<'a>(pub &'a mut HeaderMap);

impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Read-only NATS headers as a trace context carrier.
pub struct NatsHeadersRef<'a>(pub Option<&'a HeaderMap>);

impl Extractor for NatsHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0?.get(key).map(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        vec![
            crate::envelope::TRACEPARENT_HEADER,
            crate::envelope::TRACESTATE_HEADER,
        ]
    }
}

/// HTTP headers as a trace context carrier (incoming requests, outgoing API calls).
pub struct HttpHeaders<'a>(pub &'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What the log layer wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_logged_within_a_call_names_the_operation_not_the_call() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry().with(log_lines(
            EnvFilter::new("info"),
            false,
            move || writer.clone(),
        ));
        tracing::subscriber::with_default(subscriber, || {
            let operation = tracing::info_span!("operation", op_id = "op-1");
            let _in_operation = operation.enter();
            for name in CALL_SPANS {
                // A span's name must be a literal: one call span of each kind, by hand.
                let call = match name {
                    "kv" => tracing::info_span!("kv", db.operation.name = "claim"),
                    "kube" => tracing::info_span!("kube", k8s.resource = "configmaps"),
                    "publish" => {
                        tracing::info_span!("publish", messaging.operation.name = "publish")
                    }
                    "settle" => tracing::info_span!("settle", messaging.operation.name = "ack"),
                    other => panic!("no test span for {other}"),
                };
                let _in_call = call.enter();
                tracing::warn!(call = name, "retrying");
            }
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let logged: Vec<&str> = text.lines().collect();
        assert_eq!(logged.len(), CALL_SPANS.len(), "{text}");
        for (line, name) in logged.iter().zip(CALL_SPANS) {
            assert!(line.contains("operation{op_id=\"op-1\"}"), "{line}");
            assert!(line.contains(&format!("call=\"{name}\"")), "{line}");
            assert!(!line.contains(&format!("{name}{{")), "{line}");
        }
    }
}
