//! The worker's Prometheus metrics, prefixed `longshore_worker_`, served on `GET /metrics`
//! by [`crate::server`]. Error labels come from the fixed [`ErrorClass`] set, never from
//! error messages.
//!
//! Every known combination of a counter's labels is there from the start at 0 (each
//! cluster's API errors from when the registry gives the cluster to this pool), so the
//! first error of a kind is a step from 0 to 1 that `rate()` and `increase()` see.

use std::time::Duration;

use longshore_contract::record::ErrorClass;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub action: &'static str,
    /// `succeeded`, `failed`, `superseded`, `dead_lettered`, `retried` (handed back with
    /// a delay), `already_done` (a redelivery of a finished operation), `handed_back`.
    pub outcome: &'static str,
    /// An [`ErrorClass`] in snake case, or `none`.
    pub error_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// The HTTP method, from a fixed set (`other` for anything else). Not the cluster:
    /// a latency histogram per cluster of a fleet of thousands is millions of series;
    /// each cluster's health is in the registry's observed state instead.
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiErrorLabels {
    pub cluster: String,
    /// `4xx`, `5xx`, `429`, or `transport` (no answer: connect error, reset, timeout).
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

pub struct Metrics {
    registry: Registry,
    pub operations: Family<OperationLabels, Counter>,
    pub queue_wait: Family<ActionLabels, Histogram>,
    pub apply_duration: Family<ActionLabels, Histogram>,
    pub in_flight: Gauge,
    pub redeliveries: Counter,
    pub fence_waits: Counter,
    pub api_duration: Family<ApiLabels, Histogram>,
    pub api_errors: Family<ApiErrorLabels, Counter>,
    pub pending: Family<PoolLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub ack_pending: Family<PoolLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub lag: Family<PoolLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub watch_leases: Gauge,
    pub watch_claims: Counter,
    pub watch_losses: Counter,
    pub watch_relists: Counter,
    pub watch_restarts: Counter,
    pub watch_events: Counter,
    pub events_published: Family<EventLabels, Counter>,
    pub events_deduplicated: Counter,
    pub drifted_objects: Gauge,
    pub inventory_fenced: Counter,
    pub rollout_steps: Family<OutcomeLabels, Counter>,
    pub rollout_waves_started: Counter,
    pub rollout_wave_duration: Family<StateLabels, Histogram>,
    pub rollouts_ended: Family<StateLabels, Counter>,
    /// The clusters whose API error series are started ([`Metrics::serve_clusters`]).
    served: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// How a Kubernetes API request can fail, as `kube_request_errors_total` counts it.
pub const API_ERROR_KINDS: [&str; 4] = ["4xx", "429", "5xx", "transport"];

/// The error classes a delivery with `outcome` is counted with: a failure with any class
/// (or none, when another worker's record stands), a retry or a dead letter with
/// `transient`, anything else with none.
pub fn counted_classes(outcome: crate::settle::Delivery) -> Vec<Option<ErrorClass>> {
    use crate::settle::Delivery;
    match outcome {
        Delivery::Failed => std::iter::once(None)
            .chain(ErrorClass::ALL.map(Some))
            .collect(),
        Delivery::Retried | Delivery::DeadLettered => vec![Some(ErrorClass::Transient)],
        _ => vec![None],
    }
}

/// Starts the series of `labels` in `family` at 0, so that its first increment is seen.
fn start<S, M, C>(family: &Family<S, M, C>, labels: S)
where
    S: Clone + std::hash::Hash + Eq,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    drop(family.get_or_create(&labels));
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `applied` or `retried`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// How a wave or rollout ended: `succeeded`, `failed` / `halted`.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The event's type: `created`, `drifted`, …
    pub event: &'static str,
}

fn buckets(start: f64, count: u16) -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        start, 2.0, count,
    ))
}

fn seconds_buckets() -> Histogram {
    // 5 ms to ~11 min: queue waits and waits for rollouts are long.
    buckets(0.005, 18)
}

fn api_buckets() -> Histogram {
    // 1 ms to ~33 s.
    buckets(0.001, 16)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("longshore_worker");
        let operations = Family::<OperationLabels, Counter>::default();
        registry.register(
            "operations",
            "Deliveries handled, by action, outcome and error class",
            operations.clone(),
        );
        let queue_wait =
            Family::<ActionLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> _);
        registry.register(
            "queue_wait_seconds",
            "Time from the operation's submission to a worker starting it (each delivery)",
            queue_wait.clone(),
        );
        let apply_duration =
            Family::<ActionLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> _);
        registry.register(
            "apply_duration_seconds",
            "Time a worker spent on one delivery, from claiming it to recording its outcome",
            apply_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "operations_in_flight",
            "Operations this replica is working on",
            in_flight.clone(),
        );
        let redeliveries = Counter::default();
        registry.register(
            "redeliveries",
            "Deliveries after the first (retries, hand-backs, ack timeouts)",
            redeliveries.clone(),
        );
        let fence_waits = Counter::default();
        registry.register(
            "fence_waits",
            "Operations handed back because another operation held one of their objects' fences",
            fence_waits.clone(),
        );
        let api_duration =
            Family::<ApiLabels, Histogram>::new_with_constructor(api_buckets as fn() -> _);
        registry.register(
            "kube_request_duration_seconds",
            "Kubernetes API requests, by method",
            api_duration.clone(),
        );
        let api_errors = Family::<ApiErrorLabels, Counter>::default();
        registry.register(
            "kube_request_errors",
            "Kubernetes API requests that failed, by cluster and kind of failure",
            api_errors.clone(),
        );
        let pending = Family::default();
        registry.register(
            "consumer_pending",
            "Messages the pool's consumer has not delivered yet (num_pending)",
            pending.clone(),
        );
        let ack_pending = Family::default();
        registry.register(
            "consumer_ack_pending",
            "Messages delivered to the pool and not yet acknowledged (num_ack_pending)",
            ack_pending.clone(),
        );
        let lag = Family::default();
        registry.register(
            "consumer_lag",
            "num_pending + num_ack_pending of the pool's consumer: what KEDA scales on",
            lag.clone(),
        );
        let watch_leases = Gauge::default();
        registry.register(
            "watch_leases",
            "Clusters this replica holds the watch lease of (and watches)",
            watch_leases.clone(),
        );
        let watch_claims = Counter::default();
        registry.register(
            "watch_lease_claims",
            "Watch leases taken: at start, after a scale change, or from a replica gone",
            watch_claims.clone(),
        );
        let watch_losses = Counter::default();
        registry.register(
            "watch_lease_losses",
            "Watch leases lost without being given up (a renewal refused, or not made in time)",
            watch_losses.clone(),
        );
        let watch_relists = Counter::default();
        registry.register(
            "watch_relists",
            "Watches started from a fresh list (first start, expired history, or an error)",
            watch_relists.clone(),
        );
        let watch_restarts = Counter::default();
        registry.register(
            "watch_restarts",
            "Watches that failed (the cluster unreachable, an error answered) and start again after a backoff",
            watch_restarts.clone(),
        );
        let watch_events = Counter::default();
        registry.register(
            "watch_events",
            "Changes to managed objects seen by this replica's watches",
            watch_events.clone(),
        );
        let events_published = Family::<EventLabels, Counter>::default();
        registry.register(
            "events_published",
            "Events this replica published to LONGSHORE_EVENTS, by type (duplicates included)",
            events_published.clone(),
        );
        let events_deduplicated = Counter::default();
        registry.register(
            "events_deduplicated",
            "Events JetStream recognised by their id as already published (a takeover's overlap)",
            events_deduplicated.clone(),
        );
        let drifted_objects = Gauge::default();
        registry.register(
            "drifted_objects",
            "Managed objects drifted from what longshore applied, in the clusters this replica watches",
            drifted_objects.clone(),
        );
        let inventory_fenced = Counter::default();
        registry.register(
            "inventory_fenced",
            "Inventory writes refused because a later lease holder had written (the watch stops)",
            inventory_fenced.clone(),
        );
        let rollout_steps = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "rollout_steps",
            "Fleet rollout steps taken (a batch of one rollout's steps counts once), by outcome",
            rollout_steps.clone(),
        );
        let rollout_waves_started = Counter::default();
        registry.register(
            "rollout_waves_started",
            "Waves of fleet rollouts this worker started",
            rollout_waves_started.clone(),
        );
        let rollout_wave_duration =
            Family::<StateLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> _);
        registry.register(
            "rollout_wave_duration_seconds",
            "From a wave's start to its end, for the waves this worker saw end, by how they ended (failed: the rollout halted in it)",
            rollout_wave_duration.clone(),
        );
        let rollouts_ended = Family::<StateLabels, Counter>::default();
        registry.register(
            "rollouts_ended",
            "Fleet rollouts this worker saw end, by state (succeeded, halted; a cancel is the dispatcher's)",
            rollouts_ended.clone(),
        );
        for action in longshore_contract::Action::ALL.map(|a| a.as_str()) {
            for outcome in crate::settle::Delivery::ALL {
                for class in counted_classes(outcome) {
                    let (outcome, error_class) = (outcome.label(), class_label(class));
                    start(
                        &operations,
                        OperationLabels {
                            action,
                            outcome,
                            error_class,
                        },
                    );
                }
            }
        }
        for event in longshore_contract::inventory::EventType::ALL.map(|e| e.as_str()) {
            start(&events_published, EventLabels { event });
        }
        for outcome in ["applied", "retried"] {
            start(&rollout_steps, OutcomeLabels { outcome });
        }
        for state in ["succeeded", "failed"] {
            start(&rollout_wave_duration, StateLabels { state });
        }
        for state in ["succeeded", "halted"] {
            start(&rollouts_ended, StateLabels { state });
        }
        Self {
            registry,
            operations,
            queue_wait,
            apply_duration,
            in_flight,
            redeliveries,
            fence_waits,
            api_duration,
            api_errors,
            pending,
            ack_pending,
            lag,
            watch_leases,
            watch_claims,
            watch_losses,
            watch_relists,
            watch_restarts,
            watch_events,
            events_published,
            events_deduplicated,
            drifted_objects,
            inventory_fenced,
            rollout_steps,
            rollout_waves_started,
            rollout_wave_duration,
            rollouts_ended,
            served: Default::default(),
        }
    }
}

/// The label value of an error class.
pub fn class_label(class: Option<ErrorClass>) -> &'static str {
    let Some(class) = class else { return "none" };
    match class {
        ErrorClass::Invalid => "invalid",
        ErrorClass::Forbidden => "forbidden",
        ErrorClass::NotFound => "not_found",
        ErrorClass::Conflict => "conflict",
        ErrorClass::UnknownCluster => "unknown_cluster",
        ErrorClass::Malformed => "malformed",
        ErrorClass::Transient => "transient",
        ErrorClass::Rollout => "rollout",
        ErrorClass::Timeout => "timeout",
        ErrorClass::Cancelled => "cancelled",
    }
}

impl Metrics {
    pub fn operation(
        &self,
        action: &'static str,
        outcome: crate::settle::Delivery,
        class: Option<ErrorClass>,
    ) {
        self.operations
            .get_or_create(&OperationLabels {
                action,
                outcome: outcome.label(),
                error_class: class_label(class),
            })
            .inc();
    }

    pub fn api_call(
        &self,
        cluster: &str,
        method: &str,
        took: Duration,
        error: Option<&'static str>,
    ) {
        let method = match method {
            "GET" => "GET",
            "PUT" => "PUT",
            "POST" => "POST",
            "PATCH" => "PATCH",
            "DELETE" => "DELETE",
            _ => "other",
        };
        self.api_duration
            .get_or_create(&ApiLabels { method })
            .observe(took.as_secs_f64());
        if let Some(kind) = error {
            self.api_errors
                .get_or_create(&ApiErrorLabels {
                    cluster: cluster.to_owned(),
                    kind,
                })
                .inc();
        }
    }

    /// Starts every kind of API error at 0 for `clusters` (those the registry gives this
    /// pool), and drops the series of clusters no longer among them.
    pub fn serve_clusters(&self, clusters: std::collections::BTreeSet<String>) {
        let mut before = self.served.lock().unwrap_or_else(|p| p.into_inner());
        for cluster in before.difference(&clusters) {
            for kind in API_ERROR_KINDS {
                let cluster = cluster.clone();
                self.api_errors.remove(&ApiErrorLabels { cluster, kind });
            }
        }
        for cluster in clusters.difference(&before) {
            for kind in API_ERROR_KINDS {
                let cluster = cluster.clone();
                start(&self.api_errors, ApiErrorLabels { cluster, kind });
            }
        }
        *before = clusters;
    }

    pub fn consumer(&self, pool: &str, pending: u64, ack_pending: usize) {
        let labels = PoolLabels {
            pool: pool.to_owned(),
        };
        let pending = i64::try_from(pending).unwrap_or(i64::MAX);
        let ack_pending = i64::try_from(ack_pending).unwrap_or(i64::MAX);
        self.pending.get_or_create(&labels).set(pending);
        self.ack_pending.get_or_create(&labels).set(ack_pending);
        self.lag
            .get_or_create(&labels)
            .set(pending.saturating_add(ack_pending));
    }

    /// OpenMetrics text (see [`longshore_contract::exposition`] for the other format).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Keeps the in-flight gauge right however a handler ends.
pub struct InFlight<'a>(&'a Gauge<i64, std::sync::atomic::AtomicI64>);

impl<'a> InFlight<'a> {
    pub fn enter(gauge: &'a Gauge<i64, std::sync::atomic::AtomicI64>) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
