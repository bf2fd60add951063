//! A tower layer on each cluster's kube client: a client span per Kubernetes API request
//! (method, path, object, status; the trace context sent on in `traceparent`) and the
//! per-cluster latency and error metrics. kube's own request span is at `debug` level and
//! is not exported.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::{Instrument, field};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct ApiCallLayer {
    cluster: Arc<str>,
    /// The API server's host and port (`server.address`, `server.port`): requests reach
    /// this layer with a path only, the base URL is added below it.
    host: Arc<str>,
    port: Option<u16>,
    metrics: Arc<Metrics>,
}

impl ApiCallLayer {
    pub fn new(cluster: &str, server: &http::Uri, metrics: Arc<Metrics>) -> Self {
        let port = server.port_u16().or(match server.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        Self {
            cluster: Arc::from(cluster),
            host: Arc::from(server.host().unwrap_or_default().trim_matches(['[', ']'])),
            port,
            metrics,
        }
    }
}

impl<S> tower::Layer<S> for ApiCallLayer {
    type Service = ApiCalls<S>;

    fn layer(&self, inner: S) -> ApiCalls<S> {
        ApiCalls {
            inner,
            layer: self.clone(),
        }
    }
}

pub struct ApiCalls<S> {
    inner: S,
    layer: ApiCallLayer,
}

impl<S, B, RB> tower::Service<Request<B>> for ApiCalls<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        let target = Target::parse(&path);
        let span = tracing::info_span!(
            "kube",
            otel.name = %format!("{method} {}", target.resource),
            otel.kind = "client",
            otel.status_code = field::Empty,
            error.type = field::Empty,
            http.request.method = %method,
            url.path = %path,
            server.address = &*self.layer.host,
            server.port = self.layer.port.map(i64::from),
            http.response.status_code = field::Empty,
            k8s.cluster.name = %self.layer.cluster,
            k8s.resource = %target.resource,
            k8s.namespace.name = target.namespace.unwrap_or_default(),
            k8s.object.name = target.name.unwrap_or_default(),
        );
        TraceContextPropagator::new()
            .inject_context(&span.context(), &mut HeaderInjector(request.headers_mut()));
        let layer = self.layer.clone();
        let call = self.inner.call(request);
        Box::pin(
            async move {
                let started = Instant::now();
                let result = call.await;
                let span = tracing::Span::current();
                let error = match &result {
                    Ok(response) => {
                        let status = response.status();
                        span.record("http.response.status_code", i64::from(status.as_u16()));
                        match status.as_u16() {
                            // An answer (a read before a create, a delete of what is gone),
                            // not a failure of the call.
                            404 => None,
                            429 => Some("429"),
                            400..=499 => Some("4xx"),
                            500..=599 => Some("5xx"),
                            _ => None,
                        }
                    }
                    Err(_) => Some("transport"),
                };
                if let Some(kind) = error {
                    span.record("otel.status_code", "error");
                    span.record("error.type", kind);
                }
                layer
                    .metrics
                    .api_call(&layer.cluster, &method, started.elapsed(), error);
                result
            }
            .instrument(span),
        )
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// What an API path names: `/api/v1/namespaces/default/configmaps/web` is resource
/// `configmaps`, namespace `default`, name `web`.
#[derive(Debug, PartialEq)]
struct Target<'a> {
    resource: String,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

impl<'a> Target<'a> {
    fn parse(path: &'a str) -> Self {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        // Skip `api/v1` or `apis/<group>/<version>`.
        let rest = match segments.first() {
            Some(&"api") => segments.get(2..),
            Some(&"apis") => segments.get(3..),
            _ => None,
        };
        let Some(mut rest) = rest.filter(|r| !r.is_empty()) else {
            return Self {
                resource: "discovery".into(),
                namespace: None,
                name: None,
            };
        };
        let mut namespace = None;
        if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
            namespace = rest.get(1).copied();
            rest = &rest[2..];
        }
        let mut resource = rest[0].to_owned();
        if let Some(sub) = rest.get(2) {
            resource = format!("{resource}/{sub}");
        }
        Self {
            resource,
            namespace,
            name: rest.get(1).copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn paths_name_their_objects() {
        let t = Target::parse("/apis/apps/v1/namespaces/web/deployments/api/scale");
        assert_eq!(t.resource, "deployments/scale");
        assert_eq!((t.namespace, t.name), (Some("web"), Some("api")));
        let t = Target::parse("/api/v1/namespaces/team-a");
        assert_eq!(
            (t.resource.as_str(), t.name),
            ("namespaces", Some("team-a"))
        );
        let t = Target::parse("/api/v1/namespaces/default/configmaps");
        assert_eq!((t.resource.as_str(), t.name), ("configmaps", None));
        assert_eq!(Target::parse("/apis/apps/v1").resource, "discovery");
    }
}
