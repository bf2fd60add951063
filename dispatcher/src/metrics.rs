//! The dispatcher's Prometheus metrics, prefixed `longshore_dispatcher_`, served on
//! `GET /metrics`. Labels come from fixed sets (matched route templates, methods, status
//! codes, actions, outcomes), never from request content, so their number stays bounded.
//!
//! Every known combination of a counter's labels is there from the start at 0, so the
//! first error of a kind is a step from 0 to 1 that `rate()` and `increase()` see, not a
//! series born at 1 that they cannot.

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
    /// Set from the rollouts bucket when `/metrics` is read (see [`crate::scrape`]).
    pub rollouts: Family<StateLabels, Gauge>,
    /// Each pool's queue, from its consumer when `/metrics` is read: seen whether or not
    /// any worker runs.
    pub queue_pending: Family<PoolLabels, Gauge>,
    pub queue_ack_pending: Family<PoolLabels, Gauge>,
    pub queue_last_delivery: Family<PoolLabels, Gauge>,
    /// Messages in the dead-letter stream, when `/metrics` is read.
    pub dead_letters: Gauge,
    /// Registered clusters by phase, and each cluster not ready, when `/metrics` is read.
    pub clusters: Family<PhaseLabels, Gauge>,
    clusters_not_ready: Family<ClusterLabels, Gauge>,
    /// The clusters with a `cluster_not_ready` series now.
    not_ready: std::sync::Mutex<std::collections::BTreeSet<ClusterLabels>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `ready`, `unreachable`, `unserved`, `pending`.
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
    /// `unreachable`, `unserved`, `pending`: never `ready`.
    pub phase: &'static str,
}

/// The statuses every route's request counter starts with at 0: the errors an alert or a
/// panel watches for (a success's series appears with the first success).
pub const ERROR_STATUSES: [u16; 6] = [400, 401, 403, 404, 429, 503];

/// The outcomes of a publish.
pub const PUBLISH_OUTCOMES: [&str; 3] = ["ok", "duplicate", "error"];

/// Starts the series of `labels` in `family` at 0, so that its first increment is seen.
fn start<S, M, C>(family: &Family<S, M, C>, labels: S)
where
    S: Clone + std::hash::Hash + Eq,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    drop(family.get_or_create(&labels));
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
        let queue_pending = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "queue_pending",
            "Operations in the pool's queue not delivered to any worker yet (num_pending), read when /metrics is read",
            queue_pending.clone(),
        );
        let queue_ack_pending = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "queue_ack_pending",
            "Operations delivered to the pool's workers and not acknowledged yet (num_ack_pending)",
            queue_ack_pending.clone(),
        );
        let queue_last_delivery = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "queue_last_delivery_timestamp_seconds",
            "When the pool's consumer last delivered a message to a worker (Unix time; its creation if never)",
            queue_last_delivery.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register(
            "dead_letters",
            "Operations in the dead-letter stream: deliveries exhausted, waiting for a retry (POST /v1/operations/{id}/retry)",
            dead_letters.clone(),
        );
        let clusters = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "clusters",
            "Registered clusters by phase (every replica reports the whole registry: take the max, not the sum)",
            clusters.clone(),
        );
        let clusters_not_ready = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "cluster_not_ready",
            "1 for each registered cluster not ready, by its phase (unreachable, unserved, pending); ready clusters have no series",
            clusters_not_ready.clone(),
        );
        for outcome in PUBLISH_OUTCOMES {
            start(&publishes, OutcomeLabels { outcome });
        }
        for action in longshore_contract::Action::ALL {
            for replayed in ["true", "false"] {
                let action = action.as_str();
                start(&accepted, AcceptedLabels { action, replayed });
            }
        }
        for replayed in ["true", "false"] {
            start(&rollouts_accepted, ReplayLabels { replayed });
        }
        for control in longshore_contract::rollout::state::ControlAction::ALL {
            let control = control.as_str();
            start(&rollout_controls, ControlLabels { control });
        }
        for phase in longshore_contract::rollout::Phase::ALL {
            let state = phase.as_str();
            start(&rollouts, StateLabels { state });
        }
        for phase in longshore_contract::registry::Phase::ALL {
            let phase = phase.as_str();
            start(&clusters, PhaseLabels { phase });
        }
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
            queue_pending,
            queue_ack_pending,
            queue_last_delivery,
            dead_letters,
            clusters,
            clusters_not_ready,
            not_ready: Default::default(),
        }
    }
}

impl Metrics {
    /// Starts the request counters of every route the API serves, with each method it
    /// serves, at 0 for each of [`ERROR_STATUSES`].
    pub fn serve_routes(&self, routes: &[(&str, &[&str])]) {
        for (route, methods) in routes {
            for method in *methods {
                for status in ERROR_STATUSES {
                    let route = (*route).to_owned();
                    let method = method_label(method);
                    start(
                        &self.requests,
                        RequestLabels {
                            route,
                            method,
                            status,
                        },
                    );
                }
            }
        }
    }

    /// The registered clusters by phase, and the clusters not ready now: a cluster that
    /// became ready, or went, loses its series.
    pub fn set_clusters(
        &self,
        counts: std::collections::BTreeMap<&'static str, i64>,
        not_ready: std::collections::BTreeSet<ClusterLabels>,
    ) {
        for (phase, n) in counts {
            self.clusters.get_or_create(&PhaseLabels { phase }).set(n);
        }
        let mut before = self.not_ready.lock().unwrap_or_else(|p| p.into_inner());
        for labels in before.difference(&not_ready) {
            self.clusters_not_ready.remove(labels);
        }
        for labels in &not_ready {
            self.clusters_not_ready.get_or_create(labels).set(1);
        }
        *before = not_ready;
    }

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

    /// OpenMetrics text (see [`longshore_contract::exposition`] for the other format).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
