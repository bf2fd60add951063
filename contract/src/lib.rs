//! The wire contract shared by the longshore dispatcher and worker.
//!
//! Everything both halves must agree on lives here, and nothing else:
//!
//! - [`backoff`]: exponential backoff with jitter, for every retry loop;
//! - [`cluster`]: cluster names (DNS labels) and the subject each cluster's work goes to;
//! - [`labels`]: cluster labels and the Kubernetes-style label selectors pipelines pick
//!   clusters with (`env=prod,region in (eu,us)`);
//! - [`spec`]: what a pipeline asks for (action, manifests, targets, options), with the
//!   validation both sides apply;
//! - [`id`]: idempotency keys, the operation ids derived from them, and request fingerprints;
//! - [`envelope`]: the message published to the work queue and its NATS headers;
//! - [`deadletter`]: how an operation that exhausted its deliveries is kept for retry;
//! - [`record`]: the status record kept in the `LONGSHORE_OPERATIONS` bucket;
//! - [`rollout`]: fleet rollouts: one submission, many clusters in waves; the model, the
//!   progress kept in `LONGSHORE_ROLLOUTS`, and the step messages that move it;
//! - [`registry`]: the cluster registry (declared entries, pools, members, observed
//!   health) and the live in-memory copy every replica follows it with;
//! - [`inventory`]: what the watchers keep (the managed objects: health, drift) and the
//!   events they publish;
//! - [`jetstream`]: stream, consumer and bucket definitions, created idempotently at start;
//! - [`store`]: the one typed compare-and-set store every KV user goes through;
//! - [`nats`]: how both binaries connect to NATS (authentication and TLS included);
//! - [`secret`]: secrets read from files or environment variables, hidden from `Debug`;
//! - `telemetry` (feature `telemetry`): logging and OpenTelemetry setup both binaries
//!   share, and the W3C trace context carried in NATS headers;
//! - [`stop`]: the SIGTERM/SIGINT both binaries drain on, listened for from the start;
//! - [`settings`]: loading a binary's configuration (defaults < file < environment);
//! - [`duration`]: human-friendly durations (`"30s"`, `"2m"`) for configuration;
//! - [`exposition`]: `GET /metrics` in OpenMetrics or the Prometheus text format, as the
//!   scraper asks.
//!
//! `docs/contract.md` shows a JSON example of each message and record.

pub mod agent;
pub mod backoff;
pub mod cluster;
pub mod deadletter;
pub mod duration;
pub mod envelope;
pub mod exposition;
pub mod id;
pub mod inventory;
pub mod jetstream;
pub mod labels;
pub mod nats;
pub mod record;
pub mod registry;
pub mod rollout;
pub mod secret;
pub mod settings;
pub mod spec;
pub mod stop;
pub mod store;
#[cfg(feature = "telemetry")]
pub mod telemetry;

pub use cluster::{ClusterName, PoolName};
pub use envelope::Envelope;
pub use id::{IdempotencyKey, OperationId};
pub use record::{OperationRecord, State};
pub use spec::{Action, OperationSpec};
