//! Names and definitions of the JetStream stream, consumers and KV buckets longshore uses,
//! and their idempotent creation at start (any number of replicas may start at once).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use serde::{Deserialize, Serialize};

/// The work-queue stream.
pub const STREAM: &str = "LONGSHORE_OPS";
/// Every operation subject: `longshore.ops.<cluster>`.
pub const STREAM_SUBJECTS: &str = "longshore.ops.>";
/// Operations that exhausted their deliveries, kept for inspection and retry.
pub const DEAD_LETTER_STREAM: &str = "LONGSHORE_DEAD_LETTERS";
pub const DEAD_LETTER_SUBJECTS: &str = "longshore.dead.>";
/// Status records, keyed by operation id.
pub const OPERATIONS_BUCKET: &str = "LONGSHORE_OPERATIONS";
/// Per-object fences, keyed by a hash of the object's identity.
pub const OBJECTS_BUCKET: &str = "LONGSHORE_OBJECTS";
pub use crate::rollout::step::{ROLLOUTS_BUCKET, STEPS_CONSUMER, STEPS_STREAM, STEPS_SUBJECTS};
/// The default worker pool (durable consumer) name.
pub const DEFAULT_POOL: &str = crate::cluster::DEFAULT_POOL;

/// Stream and bucket settings both binaries share (they must agree).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Replicas of the stream and buckets: 1 for a single server, 3 in production.
    pub replicas: usize,
    /// How long JetStream remembers a `Nats-Msg-Id` for publish deduplication.
    #[serde(with = "crate::duration")]
    pub duplicate_window: Duration,
    /// How long status records are kept (the operations bucket's TTL); beyond it, a
    /// repeated idempotency key starts a new operation.
    #[serde(with = "crate::duration")]
    pub retention: Duration,
    /// The JetStream domain holding the stream and buckets, for a replica that reaches
    /// them through a leaf node (an agent: `docs/agents.md`); its API is then
    /// `$JS.<domain>.API`. Unset: the JetStream of the servers connected to.
    pub domain: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            retention: Duration::from_secs(7 * 24 * 3600),
            domain: None,
        }
    }
}

impl Settings {
    /// Checks the settings, naming the offending key relative to `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        if !(1..=5).contains(&self.replicas) {
            return Err(format!(
                "{prefix}.replicas: must be between 1 and 5, got {}",
                self.replicas
            ));
        }
        if self.duplicate_window.is_zero() {
            return Err(format!("{prefix}.duplicate_window: must be positive"));
        }
        if self.retention < self.duplicate_window {
            return Err(format!(
                "{prefix}.retention: must be at least the duplicate_window"
            ));
        }
        if let Some(domain) = &self.domain
            && (domain.is_empty()
                || !domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(format!(
                "{prefix}.domain: {domain:?} is not a JetStream domain (letters, digits, - and _)"
            ));
        }
        Ok(())
    }

    /// The JetStream API prefix: `$JS.<domain>.API`, or `$JS.API` without a domain.
    pub fn api_prefix(&self) -> String {
        match &self.domain {
            Some(domain) => format!("$JS.{domain}.API"),
            None => "$JS.API".into(),
        }
    }

    pub fn stream(&self) -> stream::Config {
        stream::Config {
            name: STREAM.into(),
            description: Some("longshore operations awaiting a worker".into()),
            subjects: vec![STREAM_SUBJECTS.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            ..Default::default()
        }
    }

    pub fn dead_letter_stream(&self) -> stream::Config {
        stream::Config {
            name: DEAD_LETTER_STREAM.into(),
            description: Some("longshore operations that exhausted their deliveries".into()),
            subjects: vec![DEAD_LETTER_SUBJECTS.into()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            max_age: self.retention,
            // Listing and retrying read dead letters by subject and sequence.
            allow_direct: true,
            ..Default::default()
        }
    }

    pub fn operations_bucket(&self) -> kv::Config {
        kv::Config {
            bucket: OPERATIONS_BUCKET.into(),
            description: "longshore operation status records".into(),
            history: 1,
            max_age: self.retention,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    /// Fleet rollouts and their progress. Kept until deleted: a rollout may wait for an
    /// approval longer than operation records are kept.
    pub fn rollouts_bucket(&self) -> kv::Config {
        kv::Config {
            bucket: ROLLOUTS_BUCKET.into(),
            description: "longshore fleet rollouts and their progress".into(),
            history: 1,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    /// The steps that move rollouts (`crate::rollout::step`): a work queue like the
    /// operations'.
    pub fn steps_stream(&self) -> stream::Config {
        stream::Config {
            name: STEPS_STREAM.into(),
            description: Some("longshore fleet rollout steps".into()),
            subjects: vec![STEPS_SUBJECTS.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            ..Default::default()
        }
    }

    /// The hub workers' consumer of steps, redelivering after `ack_wait` (the pools').
    /// Deliveries are unlimited: the timer is handed back for as long as its rollout runs,
    /// and every step can be redone.
    pub fn steps_consumer(&self, ack_wait: Duration) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(STEPS_CONSUMER.into()),
            description: Some("longshore workers moving fleet rollouts".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait,
            max_deliver: -1,
            max_ack_pending: 10_000,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    pub fn objects_bucket(&self) -> kv::Config {
        kv::Config {
            bucket: OBJECTS_BUCKET.into(),
            description: "longshore per-object fences".into(),
            history: 1,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }
}

/// A worker pool's durable pull consumer.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConsumer {
    pub name: String,
    /// Subjects this pool serves: `longshore.ops.<pool>.>` and the legacy subjects it
    /// served before pools were in subjects; empty means every subject.
    pub filter_subjects: Vec<String>,
    /// How long a delivered message may go unacknowledged before redelivery.
    pub ack_wait: Duration,
    /// Deliveries before an operation is dead-lettered.
    pub max_deliver: i64,
    /// Unacknowledged messages the whole pool may hold.
    pub max_ack_pending: i64,
    pub replicas: usize,
}

impl PoolConsumer {
    pub fn config(&self) -> consumer::pull::Config {
        let (filter_subject, filter_subjects) = match self.filter_subjects.as_slice() {
            [] => (STREAM_SUBJECTS.to_owned(), Vec::new()),
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        };
        consumer::pull::Config {
            durable_name: Some(self.name.clone()),
            description: Some(format!("longshore worker pool {}", self.name)),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            max_ack_pending: self.max_ack_pending,
            filter_subject,
            filter_subjects,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }
}

/// Why the JetStream resources could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("cannot create or open stream {name}: {source}")]
    Stream {
        name: &'static str,
        source: async_nats::Error,
    },
    #[error("cannot create or open KV bucket {name}: {source}")]
    Bucket {
        name: &'static str,
        source: async_nats::Error,
    },
    #[error(
        "cannot create consumer {name} on {STREAM}: {source} (on a work-queue stream, pools' \
         filter_subjects must not overlap)"
    )]
    Consumer {
        name: String,
        source: async_nats::Error,
    },
}

/// Opens the stream, creating it if missing. Existing streams are left as they are.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, ProvisionError> {
    let name: &'static str = match config.name.as_str() {
        DEAD_LETTER_STREAM => DEAD_LETTER_STREAM,
        crate::inventory::EVENTS_STREAM => crate::inventory::EVENTS_STREAM,
        STEPS_STREAM => STEPS_STREAM,
        _ => STREAM,
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| ProvisionError::Stream {
            name,
            source: e.into(),
        })
}

/// Opens a KV bucket, creating it if missing.
pub async fn ensure_bucket(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, ProvisionError> {
    let name: &'static str = match config.bucket.as_str() {
        OBJECTS_BUCKET => OBJECTS_BUCKET,
        OPERATIONS_BUCKET => OPERATIONS_BUCKET,
        crate::registry::CLUSTERS_BUCKET => crate::registry::CLUSTERS_BUCKET,
        crate::registry::POOLS_BUCKET => crate::registry::POOLS_BUCKET,
        crate::registry::MEMBERS_BUCKET => crate::registry::MEMBERS_BUCKET,
        crate::registry::HEALTH_BUCKET => crate::registry::HEALTH_BUCKET,
        ROLLOUTS_BUCKET => ROLLOUTS_BUCKET,
        _ => "a longshore bucket",
    };
    match js.get_key_value(config.bucket.clone()).await {
        Ok(store) => Ok(store),
        Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => js
            .create_key_value(config)
            .await
            .map_err(|e| ProvisionError::Bucket {
                name,
                source: e.into(),
            }),
        Err(e) => Err(ProvisionError::Bucket {
            name,
            source: e.into(),
        }),
    }
}

/// Opens the pool's durable consumer, creating it if missing, and bringing its filters and
/// limits to `pool`'s if they differ (an upgrade from `longshore.ops.>`, a new
/// `ack_wait`). Its position in the stream is kept: nothing queued is skipped.
pub async fn ensure_consumer(
    stream: &stream::Stream,
    pool: &PoolConsumer,
) -> Result<consumer::Consumer<consumer::pull::Config>, ProvisionError> {
    let refused = |e: async_nats::Error| ProvisionError::Consumer {
        name: pool.name.clone(),
        source: e,
    };
    let mut existing: consumer::Consumer<consumer::pull::Config> = stream
        .get_or_create_consumer(&pool.name, pool.config())
        .await
        .map_err(|e| refused(e.into()))?;
    let want = pool.config();
    let have = existing
        .info()
        .await
        .map_err(|e| refused(e.into()))?
        .config
        .clone();
    let filters = |c: &consumer::Config| {
        let mut f = c.filter_subjects.clone();
        if !c.filter_subject.is_empty() {
            f.push(c.filter_subject.clone());
        }
        f.sort();
        f
    };
    let mut wanted_filters = want.filter_subjects.clone();
    if !want.filter_subject.is_empty() {
        wanted_filters.push(want.filter_subject.clone());
    }
    wanted_filters.sort();
    let differs = filters(&have) != wanted_filters
        || have.ack_wait != want.ack_wait
        || have.max_deliver != want.max_deliver
        || have.max_ack_pending != want.max_ack_pending;
    if !differs {
        return Ok(existing);
    }
    tracing::info!(consumer = %pool.name, from = ?filters(&have), to = ?wanted_filters, "updating the pool's consumer");
    stream
        .update_consumer(want)
        .await
        .map_err(|e| refused(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_queue_is_a_deduplicating_file_backed_work_queue() {
        let s = Settings {
            replicas: 3,
            ..Default::default()
        };
        let c = s.stream();
        assert_eq!(c.retention, stream::RetentionPolicy::WorkQueue);
        assert_eq!(c.storage, stream::StorageType::File);
        assert_eq!(c.num_replicas, 3);
        assert_eq!(c.duplicate_window, Duration::from_secs(120));
        assert_eq!(s.operations_bucket().max_age, s.retention);
    }

    #[test]
    fn settings_errors_name_the_key() {
        let s = Settings {
            replicas: 0,
            ..Default::default()
        };
        assert!(
            s.validate("nats")
                .unwrap_err()
                .starts_with("nats.replicas:")
        );
    }

    #[test]
    fn a_pool_filters_all_clusters_by_default() {
        let mut pool = PoolConsumer {
            name: "workers".into(),
            filter_subjects: vec![],
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            max_ack_pending: 1000,
            replicas: 1,
        };
        assert_eq!(pool.config().filter_subject, STREAM_SUBJECTS);
        pool.filter_subjects = vec!["longshore.ops.p.>".into(), "longshore.ops.b".into()];
        let c = pool.config();
        assert!(c.filter_subject.is_empty());
        assert_eq!(c.filter_subjects.len(), 2);
    }
}
