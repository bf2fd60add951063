//! An OTLP/gRPC trace receiver (the protocol Jaeger's collector takes on 4317), built on
//! the OTLP protobuf definitions, keeping every span it is sent for tests to inspect.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio_util::sync::CancellationToken;

/// A received span with the service that sent it, ids in hex.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// OTLP's `SpanKind`: 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// Each attribute with its value as sent, type included: backends query
    /// `http.response.status_code >= 500` only on integers.
    pub attributes: Vec<(String, Attr)>,
    /// OTLP's status code: 2 is error.
    pub status_code: i32,
}

/// An attribute value, keeping the OTLP type it was sent as.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    /// Arrays, maps, bytes: not sent by longshore.
    Other,
}

impl ReceivedSpan {
    /// An attribute of any type; `None` if absent.
    pub fn value(&self, key: &str) -> Option<&Attr> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// A string attribute; `None` if absent or of another type.
    pub fn attr(&self, key: &str) -> Option<&str> {
        match self.value(key)? {
            Attr::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An integer attribute; `None` if absent or of another type.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.value(key)? {
            Attr::Int(i) => Some(*i),
            _ => None,
        }
    }
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

pub struct OtlpReceiver {
    pub endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    stop: CancellationToken,
}

impl OtlpReceiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let collector = Collector::default();
        let spans = collector.spans.clone();
        let stop = CancellationToken::new();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn({
            let stop = stop.clone();
            async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(collector))
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await;
            }
        });
        Ok(Self {
            endpoint,
            spans,
            stop,
        })
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| {
                    r.attributes
                        .iter()
                        .find(|kv| kv.key == "service.name")
                        .map(value_of)
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                received.extend(scope.spans.into_iter().map(|s| convert(&service, s)));
            }
        }
        if let Ok(mut spans) = self.spans.lock() {
            spans.extend(received);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn convert(service: &str, span: Span) -> ReceivedSpan {
    ReceivedSpan {
        service: service.to_owned(),
        name: span.name,
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        kind: span.kind,
        attributes: span
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), typed(kv)))
            .collect(),
        status_code: span.status.map_or(0, |s| s.code),
    }
}

fn typed(kv: &KeyValue) -> Attr {
    match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
        Some(Value::StringValue(s)) => Attr::Str(s.clone()),
        Some(Value::IntValue(i)) => Attr::Int(*i),
        Some(Value::BoolValue(b)) => Attr::Bool(*b),
        Some(Value::DoubleValue(d)) => Attr::Double(*d),
        _ => Attr::Other,
    }
}

fn value_of(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
