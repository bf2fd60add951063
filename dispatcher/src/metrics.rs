//! The dispatcher's Prometheus metrics, prefixed `longshore_dispatcher_`, served on
//! `GET /metrics`. Labels come from fixed sets (matched route templates, methods, status
//! codes, actions, outcomes), never from request content, so their number stays bounded.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// The HTTP methods a request's metrics name; any other is counted as `other`.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The metrics label of a request's method: itself if one of [`METHODS`], else `other`.
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .into_iter()
        .find(|m| *m == method)
        .unwrap_or("other")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/v1/operations/{id}`), or `unmatched`.
    pub route: String,
    /// One of [`METHODS`], or `other`: a client choosing its method cannot add series.
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, `duplicate` (the stream already had the message), or `error`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcceptedLabels {
    pub action: &'static str,
    /// `true` when the idempotency key had been seen: the same operation was returned.
    pub replayed: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplayLabels {
    pub replayed: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControlLabels {
    /// `pause`, `resume`, `approve`, `cancel`.
    pub control: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// A rollout's state: `running`, `paused`, `waiting_approval`, `succeeded`, `halted`,
    /// `cancelled`.
    pub state: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    publishes: Family<OutcomeLabels, Counter>,
    publish_duration: Histogram,
    accepted: Family<AcceptedLabels, Counter>,
    event_streams: Gauge,
    rollouts_accepted: Family<ReplayLabels, Counter>,
    rollout_controls: Family<ControlLabels, Counter>,
    /// Set from the rollouts bucket when `/metrics` is read (see [`crate::rollouts`]).
    pub rollouts: Family<StateLabels, Gauge>,
}

fn latency_buckets() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("longshore_dispatcher");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let request_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_buckets as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (long polls and event streams included)",
            request_duration.clone(),
        );
        let publishes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "publishes",
            "Publishes to JetStream (operations, dead-letter retries, rollout steps), by outcome, after retries",
            publishes.clone(),
        );
        let publish_duration = latency_buckets();
        registry.register(
            "publish_duration_seconds",
            "Time from publishing an operation to JetStream's acknowledgement, retries included",
            publish_duration.clone(),
        );
        let accepted = Family::<AcceptedLabels, Counter>::default();
        registry.register(
            "operations_accepted",
            "Operations answered 202, by action and whether the key was a replay",
            accepted.clone(),
        );
        let event_streams = Gauge::default();
        registry.register(
            "event_streams",
            "`GET /v1/events` streams open now",
            event_streams.clone(),
        );
        let rollouts_accepted = Family::<ReplayLabels, Counter>::default();
        registry.register(
            "rollouts_accepted",
            "Fleet rollouts answered 202, by whether the key was a replay",
            rollouts_accepted.clone(),
        );
        let rollout_controls = Family::<ControlLabels, Counter>::default();
        registry.register(
            "rollout_controls",
            "Fleet rollout controls that changed something, by control",
            rollout_controls.clone(),
        );
        let rollouts = Family::<StateLabels, Gauge>::default();
        registry.register(
            "rollouts",
            "Fleet rollouts in the rollouts bucket, by state (every replica reports the whole bucket: take the max, not the sum)",
            rollouts.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            publishes,
            publish_duration,
            accepted,
            event_streams,
            rollouts_accepted,
            rollout_controls,
            rollouts,
        }
    }
}

impl Metrics {
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method_label(method),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn published(&self, outcome: &'static str, took: Duration) {
        self.publishes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.publish_duration.observe(took.as_secs_f64());
    }

    pub fn accepted(&self, action: &'static str, replayed: bool) {
        let replayed = if replayed { "true" } else { "false" };
        self.accepted
            .get_or_create(&AcceptedLabels { action, replayed })
            .inc();
    }

    pub fn rollout_accepted(&self, replayed: bool) {
        let replayed = if replayed { "true" } else { "false" };
        self.rollouts_accepted
            .get_or_create(&ReplayLabels { replayed })
            .inc();
    }

    pub fn rollout_control(&self, control: &'static str) {
        self.rollout_controls
            .get_or_create(&ControlLabels { control })
            .inc();
    }

    /// An event stream opened (`1`) or closed (`-1`).
    pub fn event_streams(&self, change: i64) {
        self.event_streams.inc_by(change);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
