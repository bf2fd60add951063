//! The worker's configuration: one typed struct, loaded by `main` (defaults < TOML file <
//! `LONGSHORE_...` environment) or built in-process by tests with `..Default::default()`,
//! and checked by [`Config::validate`] before anything connects.

use std::path::PathBuf;
use std::time::Duration;

use longshore_contract::cluster::{PoolName, dns_label_problem};
use longshore_contract::jetstream::{DEFAULT_POOL, PoolConsumer};
use longshore_contract::nats::NatsConfig;
use serde::{Deserialize, Serialize};

/// Everything a worker replica needs to know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach NATS, and the stream and bucket settings shared with the dispatcher.
    pub nats: NatsConfig,
    /// This replica's name in status records and logs. Defaults to the `HOSTNAME`
    /// environment variable (the pod name in Kubernetes), else a random `worker-…` id.
    pub worker_id: String,
    /// The worker pool (durable JetStream consumer) this replica pulls from.
    pub pool: PoolConfig,
    /// The Kubernetes clusters this replica can act on.
    pub clusters: ClustersConfig,
    /// Delays before a transiently failed operation is delivered again.
    pub retry: RetryConfig,
    /// Per-object fences (see [`crate::fence`]).
    pub fence: FenceConfig,
    /// Watching the pool's clusters: one member each, by lease (`docs/watching.md`).
    pub watch: WatchConfig,
    /// On shutdown, how long operations already started may run before they are handed
    /// back to the queue. Keep it below the pod's `terminationGracePeriodSeconds`.
    #[serde(with = "longshore_contract::duration")]
    pub drain_grace: Duration,
    /// Bound on a single Kubernetes API call (connect, send, and wait for the answer).
    #[serde(with = "longshore_contract::duration")]
    pub request_timeout: Duration,
    /// Address of the HTTP listener for `/metrics`, `/healthz` and `/readyz` (port 0
    /// picks a free one).
    pub listen: std::net::SocketAddr,
    /// Also serve `/registry/clusters/{name}` on the listener: the registry entry as this
    /// replica follows it (labels, pool, credential reference; never a credential). Off by
    /// default, since the listener asks for no token.
    pub registry_endpoint: bool,
    /// Trace export (OTLP); see `docs/observability.md`.
    pub telemetry: longshore_contract::telemetry::TelemetryConfig,
    /// Serving, from inside it, the one cluster this worker runs in: an agent pool that
    /// reaches the hub through a NATS leaf node (`docs/agents.md`).
    pub agent: AgentConfig,
}

/// An agent: a pool of its own, inside the cluster it serves, that registers that cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// The cluster served (a DNS label). The agent registers it at start for its pool,
    /// with `labels`, and keeps it so: what an agent's configuration says wins over edits
    /// through the API. Its credential is the service account (`clusters.in_cluster`
    /// naming it), else the kubeconfig context of the same name. Unset: not an agent.
    pub cluster: Option<String>,
    /// The cluster's labels in the registry.
    pub labels: longshore_contract::labels::Labels,
}

/// The worker pool: one durable pull consumer shared by every replica of the pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// The pool's name (a DNS label): its durable consumer, its subjects
    /// (`longshore.ops.<pool>.<cluster>`), and what registered clusters name to be served
    /// by it. Replicas with the same name share the work.
    pub name: String,
    /// Before the registry, a pool named the clusters it served here, and their operations
    /// went to `longshore.ops.<cluster>`. Those legacy subjects are still consumed (so an
    /// upgrade loses nothing queued): these clusters' with this list; without it, every
    /// cluster's (`longshore.ops.*`) by the default pool `workers`, none by another pool.
    pub filter_clusters: Vec<String>,
    /// Operations this replica carries out at once.
    pub concurrency: usize,
    /// Messages asked for per pull. Kept small: a message's `ack_wait` runs from delivery,
    /// so messages waiting in the client age.
    pub pull_batch: usize,
    /// How long a delivered operation may go without an acknowledgement or a progress
    /// signal before JetStream delivers it again (to any replica).
    #[serde(with = "longshore_contract::duration")]
    pub ack_wait: Duration,
    /// Deliveries of one operation before it is dead-lettered: copied to the dead-letter
    /// stream, recorded `dead_lettered` (class `transient`) and removed from the queue.
    /// Waiting for another operation's fence uses deliveries too.
    pub max_deliver: i64,
    /// Unacknowledged operations the whole pool may hold at once.
    pub max_ack_pending: i64,
}

/// Where the pool's credentials come from. The registry names, for each cluster, a
/// credentials reference (a kubeconfig context, or in-cluster) that these resolve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClustersConfig {
    /// A directory of kubeconfig files (a Secret volume): every context of every file is a
    /// credential. Watched: a file added, changed or removed is used without a restart.
    pub kubeconfig_dir: Option<PathBuf>,
    /// A kubeconfig file whose contexts are credentials (read at start). Its contexts are
    /// also registered, under their own names and for this pool, if the registry lacks
    /// them: the way a fleet configured before the registry seeds it.
    pub kubeconfig: Option<PathBuf>,
    /// The contexts to use from `kubeconfig`; empty uses every context in the file.
    pub contexts: Vec<String>,
    /// The worker runs inside a cluster and serves it with its service account: registered
    /// under this name for this pool if the registry lacks it.
    pub in_cluster: Option<String>,
    /// How often `kubeconfig_dir` is looked at for changes.
    #[serde(with = "longshore_contract::duration")]
    pub reload_interval: Duration,
    /// A cluster's client (connections, discovery cache) unused for this long is dropped,
    /// so memory stays bounded however many clusters a worker has touched.
    #[serde(with = "longshore_contract::duration")]
    pub idle_timeout: Duration,
    /// How often each cluster is probed (by one live member of its pool) to tell whether
    /// it is reachable; an observation is kept for three of these.
    #[serde(with = "longshore_contract::duration")]
    pub probe_interval: Duration,
    /// How long an operation that applies a CustomResourceDefinition waits for it to be
    /// Established (and its kind served) before applying custom resources of that kind; past
    /// it the operation fails with the CRD's condition.
    #[serde(with = "longshore_contract::duration")]
    pub crd_established_timeout: Duration,
}

/// Backoff for transient failures: `base * 2^(delivery - 1)`, capped at `max`, with jitter
/// over the upper half; a larger `Retry-After` from the API server wins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// The delay after the first failed delivery.
    #[serde(with = "longshore_contract::duration")]
    pub base: Duration,
    /// The longest computed delay.
    #[serde(with = "longshore_contract::duration")]
    pub max: Duration,
}

/// Watching clusters: each cluster of the pool is watched by the one live member holding
/// its lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Whether this pool watches its clusters at all.
    pub enabled: bool,
    /// The longest a cluster goes unwatched after its watcher dies: the lease's key lives
    /// four fifths of it (the rest covers the server's expiry sweep and the claim), renewed
    /// every third of that. At least 8s: a dead member leaves the membership within 6s.
    #[serde(with = "longshore_contract::duration")]
    pub lease: Duration,
    /// The kinds watched, as `group/version/Kind` (`v1/Kind` for the core group); only
    /// objects longshore manages (label `longshore.io/managed`) are selected.
    pub kinds: Vec<String>,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            lease: Duration::from_secs(10),
            kinds: vec!["apps/v1/Deployment".into(), "v1/ConfigMap".into()],
        }
    }
}

impl WatchConfig {
    /// How long a lease's key lives without renewal.
    pub fn key_ttl(&self) -> Duration {
        Duration::from_secs((self.lease.as_secs() * 4 / 5).max(2))
    }

    /// How often a held lease is renewed.
    pub fn renew_every(&self) -> Duration {
        self.key_ttl() / 3
    }

    /// `kinds`, each as (apiVersion, kind).
    pub fn parsed_kinds(&self) -> Result<Vec<(String, String)>, String> {
        self.kinds
            .iter()
            .enumerate()
            .map(|(i, k)| match k.rsplit_once('/') {
                Some((api_version, kind))
                    if !api_version.is_empty()
                        && api_version.split('/').count() <= 2
                        && kind.chars().next().is_some_and(|c| c.is_ascii_uppercase()) =>
                {
                    Ok((api_version.to_owned(), kind.to_owned()))
                }
                _ => Err(format!(
                    "watch.kinds[{i}]: {k:?} is not group/version/Kind (or v1/Kind)"
                )),
            })
            .collect()
    }
}

/// Per-object fences.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FenceConfig {
    /// How long a fence stays held without renewal. The holder renews it with every
    /// progress signal (each `pool.ack_wait / 3`), so it must be at least `pool.ack_wait`:
    /// then two renewals in a row may fail before the lease runs out. After a worker dies,
    /// other operations on its objects wait up to this long; its own operation, redelivered,
    /// takes its fences back at once.
    #[serde(with = "longshore_contract::duration")]
    pub lease: Duration,
}

impl Default for FenceConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats: NatsConfig::default(),
            worker_id: default_worker_id(),
            pool: PoolConfig::default(),
            clusters: ClustersConfig::default(),
            retry: RetryConfig::default(),
            fence: FenceConfig::default(),
            watch: WatchConfig::default(),
            drain_grace: Duration::from_secs(20),
            request_timeout: Duration::from_secs(30),
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 9090)),
            registry_endpoint: false,
            telemetry: Default::default(),
            agent: AgentConfig::default(),
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            name: DEFAULT_POOL.into(),
            filter_clusters: Vec::new(),
            concurrency: 16,
            pull_batch: 8,
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            max_ack_pending: 1000,
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

fn default_worker_id() -> String {
    match std::env::var("HOSTNAME") {
        Ok(h) if !h.trim().is_empty() => h.trim().to_owned(),
        _ => format!("worker-{:08x}", rand::random::<u32>()),
    }
}

impl Config {
    /// Checks every setting, returning the first problem as `key: reason`.
    pub fn validate(&self) -> Result<(), String> {
        self.nats.validate("nats")?;
        self.telemetry.validate("telemetry")?;
        check(
            !self.worker_id.trim().is_empty(),
            "worker_id",
            "must not be empty",
        )?;
        self.pool.validate()?;
        self.clusters.validate()?;
        check(!self.retry.base.is_zero(), "retry.base", "must be positive")?;
        check(
            self.retry.max >= self.retry.base,
            "retry.max",
            "must be at least retry.base",
        )?;
        check(
            self.fence.lease >= self.pool.ack_wait,
            "fence.lease",
            "must be at least pool.ack_wait (the lease is renewed every ack_wait / 3)",
        )?;
        check(
            self.drain_grace >= 2 * crate::consumer::PULL_EXPIRES,
            "drain_grace",
            "must be at least 2s: the pull request in flight at SIGTERM (1s) is read to its end, to hand back what it brings",
        )?;
        check(
            self.watch.lease >= Duration::from_secs(8),
            "watch.lease",
            "must be at least 8s: a dead member leaves the membership within 6s, and its leases must not run out before",
        )?;
        self.watch.parsed_kinds()?;
        self.validate_agent()?;
        check(
            !self.request_timeout.is_zero(),
            "request_timeout",
            "must be positive",
        )
    }

    fn validate_agent(&self) -> Result<(), String> {
        let Some(cluster) = &self.agent.cluster else {
            check(
                self.agent.labels.is_empty(),
                "agent.labels",
                "needs agent.cluster",
            )?;
            return Ok(());
        };
        if let Some(reason) = dns_label_problem(cluster) {
            return Err(format!("agent.cluster: {cluster:?} {reason}"));
        }
        if let Some(problem) = longshore_contract::labels::check_labels(&self.agent.labels).first()
        {
            return Err(format!("agent.{}: {}", problem.field, problem.reason));
        }
        check(
            self.pool.name != DEFAULT_POOL,
            "pool.name",
            "an agent serves its cluster from a pool of its own (e.g. agent-<cluster>), not the hub's workers pool",
        )?;
        check(
            self.pool.filter_clusters.is_empty(),
            "pool.filter_clusters",
            "an agent's pool serves its own subjects only",
        )?;
        if let Some(in_cluster) = &self.clusters.in_cluster {
            check(
                in_cluster == cluster,
                "clusters.in_cluster",
                "an agent's service account is for the cluster it serves: name agent.cluster",
            )?;
        }
        Ok(())
    }

    /// The cluster this worker serves as an agent, if it is one; validated.
    pub fn agent_cluster(&self) -> Option<longshore_contract::ClusterName> {
        self.agent
            .cluster
            .as_ref()
            .and_then(|c| longshore_contract::ClusterName::new(c.clone()).ok())
    }

    /// The pool's name; validated, so always a DNS label.
    pub fn pool_name(&self) -> PoolName {
        PoolName::new(self.pool.name.clone()).unwrap_or_default()
    }

    /// The durable consumer this configuration describes: the pool's subjects, and the
    /// legacy ones it served before pools were in subjects.
    pub fn pool_consumer(&self) -> PoolConsumer {
        use longshore_contract::cluster::SUBJECT_PREFIX;
        // Only one pool can take every legacy subject: the default one, which served every
        // cluster before (a pool of named clusters took just theirs).
        let legacy: Vec<String> = if self.pool.filter_clusters.is_empty() {
            if self.pool_name() == PoolName::default_pool() {
                vec![format!("{SUBJECT_PREFIX}.*")]
            } else {
                Vec::new()
            }
        } else {
            self.pool
                .filter_clusters
                .iter()
                .map(|c| format!("{SUBJECT_PREFIX}.{c}"))
                .collect()
        };
        PoolConsumer {
            name: self.pool.name.clone(),
            filter_subjects: std::iter::once(self.pool_name().filter())
                .chain(legacy)
                .collect(),
            ack_wait: self.pool.ack_wait,
            max_deliver: self.pool.max_deliver,
            max_ack_pending: self.pool.max_ack_pending,
            replicas: self.nats.jetstream.replicas,
        }
    }
}

impl PoolConfig {
    fn validate(&self) -> Result<(), String> {
        if let Some(reason) = dns_label_problem(&self.name) {
            return Err(format!(
                "pool.name: {:?} {reason} (it is a subject token and a consumer name)",
                self.name
            ));
        }
        for (i, cluster) in self.filter_clusters.iter().enumerate() {
            if let Some(reason) = dns_label_problem(cluster) {
                return Err(format!("pool.filter_clusters[{i}]: {cluster:?} {reason}"));
            }
        }
        check(
            self.concurrency >= 1,
            "pool.concurrency",
            "must be at least 1",
        )?;
        check(
            self.pull_batch >= 1,
            "pool.pull_batch",
            "must be at least 1",
        )?;
        check(
            self.ack_wait >= Duration::from_secs(1),
            "pool.ack_wait",
            "must be at least 1s",
        )?;
        check(
            self.max_deliver >= 1,
            "pool.max_deliver",
            "must be at least 1",
        )?;
        check(
            self.max_ack_pending >= 1,
            "pool.max_ack_pending",
            "must be at least 1",
        )
    }
}

impl Default for ClustersConfig {
    fn default() -> Self {
        Self {
            kubeconfig_dir: None,
            kubeconfig: None,
            contexts: Vec::new(),
            in_cluster: None,
            reload_interval: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(600),
            probe_interval: Duration::from_secs(30),
            crd_established_timeout: Duration::from_secs(60),
        }
    }
}

impl ClustersConfig {
    fn validate(&self) -> Result<(), String> {
        check(
            self.kubeconfig_dir.is_some() || self.kubeconfig.is_some() || self.in_cluster.is_some(),
            "clusters",
            "set clusters.kubeconfig_dir, clusters.kubeconfig or clusters.in_cluster (the worker needs credentials)",
        )?;
        check(
            !self.reload_interval.is_zero(),
            "clusters.reload_interval",
            "must be positive",
        )?;
        check(
            !self.idle_timeout.is_zero(),
            "clusters.idle_timeout",
            "must be positive",
        )?;
        check(
            self.probe_interval >= Duration::from_secs(1),
            "clusters.probe_interval",
            "must be at least 1s",
        )?;
        check(
            !self.crd_established_timeout.is_zero(),
            "clusters.crd_established_timeout",
            "must be positive",
        )?;
        check(
            self.contexts.is_empty() || self.kubeconfig.is_some(),
            "clusters.contexts",
            "needs clusters.kubeconfig",
        )?;
        for (i, context) in self.contexts.iter().enumerate() {
            if let Some(reason) = dns_label_problem(context) {
                return Err(format!("clusters.contexts[{i}]: {context:?} {reason}"));
            }
        }
        if let Some(name) = &self.in_cluster
            && let Some(reason) = dns_label_problem(name)
        {
            return Err(format!("clusters.in_cluster: {name:?} {reason}"));
        }
        Ok(())
    }
}

fn check(ok: bool, key: &str, reason: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{key}: {reason}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config {
            clusters: ClustersConfig {
                kubeconfig: Some("/etc/longshore/kubeconfig".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn error_key(config: &Config) -> String {
        let err = config.validate().unwrap_err();
        err.split(':').next().unwrap().to_owned()
    }

    #[test]
    fn defaults_with_a_kubeconfig_are_valid() {
        assert_eq!(valid().validate(), Ok(()));
        assert!(!valid().worker_id.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = valid();
        c.pool.concurrency = 0;
        assert_eq!(
            c.validate().unwrap_err(),
            "pool.concurrency: must be at least 1"
        );

        type Breaks = fn(&mut Config);
        let cases: Vec<(&str, Breaks)> = vec![
            ("nats.url", |c| c.nats.url = " , ".into()),
            ("worker_id", |c| c.worker_id = " ".into()),
            ("pool.name", |c| c.pool.name = "a.b".into()),
            ("pool.name", |c| c.pool.name = "Upper_Case".into()),
            ("clusters.reload_interval", |c| {
                c.clusters.reload_interval = Duration::ZERO
            }),
            ("pool.filter_clusters[1]", |c| {
                c.pool.filter_clusters = vec!["ok".into(), "Not_OK".into()]
            }),
            ("pool.pull_batch", |c| c.pool.pull_batch = 0),
            ("pool.ack_wait", |c| {
                c.pool.ack_wait = Duration::from_millis(10)
            }),
            ("pool.max_deliver", |c| c.pool.max_deliver = 0),
            ("pool.max_ack_pending", |c| c.pool.max_ack_pending = 0),
            ("clusters", |c| c.clusters.kubeconfig = None),
            ("clusters.contexts[0]", |c| {
                c.clusters.contexts = vec!["prod.eu".into()]
            }),
            ("clusters.in_cluster", |c| {
                c.clusters.in_cluster = Some("".into())
            }),
            ("retry.base", |c| c.retry.base = Duration::ZERO),
            ("retry.max", |c| c.retry.max = Duration::from_millis(1)),
            ("fence.lease", |c| c.fence.lease = Duration::from_secs(10)),
            ("watch.lease", |c| c.watch.lease = Duration::from_secs(5)),
            ("watch.kinds[1]", |c| {
                c.watch.kinds = vec!["v1/ConfigMap".into(), "Deployment".into()]
            }),
            ("watch.kinds[0]", |c| {
                c.watch.kinds = vec!["apps/v1/deployment".into()]
            }),
            ("request_timeout", |c| c.request_timeout = Duration::ZERO),
            ("nats.jetstream.domain", |c| {
                c.nats.jetstream.domain = Some("hub.eu".into())
            }),
            ("nats.inbox_prefix", |c| {
                c.nats.inbox_prefix = Some("_INBOX.>".into())
            }),
            ("agent.labels", |c| {
                c.agent.labels.insert("env".into(), "prod".into());
            }),
            ("agent.cluster", |c| c.agent.cluster = Some("Edge_1".into())),
            ("pool.name", |c| c.agent.cluster = Some("edge-1".into())),
            ("pool.filter_clusters", |c| {
                c.agent.cluster = Some("edge-1".into());
                c.pool.name = "agent-edge-1".into();
                c.pool.filter_clusters = vec!["edge-1".into()];
            }),
            ("clusters.in_cluster", |c| {
                c.agent.cluster = Some("edge-1".into());
                c.pool.name = "agent-edge-1".into();
                c.clusters.in_cluster = Some("edge-2".into());
            }),
            ("agent.labels.env", |c| {
                c.agent.cluster = Some("edge-1".into());
                c.pool.name = "agent-edge-1".into();
                c.agent.labels.insert("env".into(), "not ok!".into());
            }),
            ("drain_grace", |c| {
                c.drain_grace = Duration::from_millis(500)
            }),
        ];
        for (key, break_it) in cases {
            let mut c = valid();
            break_it(&mut c);
            assert_eq!(error_key(&c), key, "{:?}", c.validate());
        }
    }

    #[test]
    fn a_pool_filters_its_subjects_and_the_legacy_ones_it_served() {
        let mut c = valid();
        assert_eq!(
            c.pool_consumer().filter_subjects,
            ["longshore.ops.workers.>", "longshore.ops.*"]
        );
        c.pool.name = "edge".into();
        assert_eq!(
            c.pool_consumer().filter_subjects,
            ["longshore.ops.edge.>"],
            "only the default pool takes every legacy subject"
        );
        c.pool.filter_clusters = vec!["a".into(), "b".into()];
        assert_eq!(
            c.pool_consumer().filter_subjects,
            ["longshore.ops.edge.>", "longshore.ops.a", "longshore.ops.b"]
        );
    }

    #[test]
    fn loads_from_toml_with_friendly_durations_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("worker.toml");
        std::fs::write(
            &file,
            "worker_id = \"w1\"\ndrain_grace = \"5s\"\n[pool]\nconcurrency = 3\n\
             [clusters]\nkubeconfig = \"/k\"\ncontexts = [\"prod\"]\n",
        )
        .unwrap();
        let c: Config =
            longshore_contract::settings::load(Some(&file), "LONGSHORE_TEST_NONE", &[]).unwrap();
        assert_eq!(c.worker_id, "w1");
        assert_eq!(c.drain_grace, Duration::from_secs(5));
        assert_eq!(c.pool.concurrency, 3);
        assert_eq!(c.pool.pull_batch, 8, "unset keys keep their defaults");
        assert_eq!(c.clusters.contexts, ["prod"]);
        assert_eq!(c.validate(), Ok(()));

        std::fs::write(&file, "[pool]\nconcurency = 3\n").unwrap();
        let err =
            longshore_contract::settings::load::<Config>(Some(&file), "LONGSHORE_TEST_NONE", &[])
                .unwrap_err();
        assert!(err.to_string().contains("concurency"), "{err}");
    }
}
