//! What the worker's tests run against: a real `nats-server` (the shared test harness,
//! `longshore-testkit`), kube-sim in-process, and the worker itself through `run`.

#![allow(dead_code)] // each test file uses its own part of the harness

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use longshore_contract::envelope::SCHEMA_VERSION;
use longshore_contract::jetstream::{Settings, ensure_bucket, ensure_stream};
use longshore_contract::record::OperationRecord;
use longshore_contract::spec::{Action, OperationSpec, Options};
use longshore_contract::{ClusterName, Envelope, IdempotencyKey, OperationId};
use longshore_kube_sim::{KubeSim, SimOptions};
pub use longshore_testkit::nats::NatsServer;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Polls `check` until it returns `Some`, failing the test after 10 seconds: the shared
/// harness's bounded wait, with the bound every worker test uses.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    longshore_testkit::wait::eventually(Duration::from_secs(10), what, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// NATS, one simulated cluster named `prod`, and the JetStream handles a test reads.
pub struct Fixture {
    pub nats: NatsServer,
    pub sim: KubeSim,
    pub kubeconfig: PathBuf,
    pub js: jetstream::Context,
    pub records: kv::Store,
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn start() -> Self {
        let nats = NatsServer::start().await.expect("nats-server starts");
        let sim = KubeSim::start(SimOptions {
            clusters: vec!["prod".into()],
            ..Default::default()
        })
        .await
        .expect("kube-sim starts");
        let dir = tempfile::tempdir().expect("temporary directory");
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let js = jetstream::new(client);
        // As the dispatcher would: the stream and the bucket exist before anything is sent.
        let settings = Settings::default();
        ensure_stream(&js, settings.stream()).await.expect("stream");
        let records = ensure_bucket(&js, settings.operations_bucket())
            .await
            .expect("bucket");
        Self {
            nats,
            sim,
            kubeconfig,
            js,
            records,
            _dir: dir,
        }
    }

    /// A worker configuration for this fixture: fast retries, short drain.
    pub fn config(&self, worker_id: &str) -> longshore_worker::Config {
        let mut config = longshore_worker::Config {
            worker_id: worker_id.into(),
            drain_grace: Duration::from_secs(5),
            // Tests run side by side: each worker's /metrics listener takes a free port.
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Default::default()
        };
        config.nats.url = self.nats.url();
        config.clusters.kubeconfig = Some(self.kubeconfig.clone());
        config.retry.base = Duration::from_millis(50);
        config.retry.max = Duration::from_millis(200);
        config
    }

    pub fn prod(&self) -> longshore_kube_sim::ClusterHandle {
        self.sim.cluster("prod").expect("prod cluster")
    }

    /// Publishes an envelope as the dispatcher does: a `queued` record, then the message.
    pub async fn submit(&self, envelope: &Envelope) {
        self.records
            .create(
                envelope.id.as_str(),
                OperationRecord::queued(envelope).to_bytes(),
            )
            .await
            .expect("queued record");
        self.publish(envelope).await;
    }

    /// Publishes an envelope's message (again), with a fresh message id so JetStream's
    /// deduplication does not drop it: this is what a redelivery looks like to a worker.
    pub async fn publish(&self, envelope: &Envelope) {
        let (subject, mut headers, payload) = envelope
            .to_message(&longshore_contract::PoolName::default_pool())
            .expect("serialises");
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}-{}", envelope.id, rand::random::<u64>()).as_str(),
        );
        self.js
            .publish_with_headers(subject, headers, payload)
            .await
            .expect("publish")
            .await
            .expect("publish acknowledged");
    }

    pub async fn record(&self, id: &OperationId) -> Option<OperationRecord> {
        let bytes = self.records.get(id.as_str()).await.expect("kv get")?;
        Some(OperationRecord::from_bytes(&bytes).expect("readable record"))
    }

    /// Waits until the operation's record is terminal and returns it.
    pub async fn finished(&self, id: &OperationId) -> OperationRecord {
        eventually("a terminal record", || async {
            self.record(id).await.filter(|r| r.state.is_terminal())
        })
        .await
    }

    /// Messages still in the work queue (not yet acknowledged).
    pub async fn queued_messages(&self) -> u64 {
        let mut stream = self
            .js
            .get_stream(longshore_contract::jetstream::STREAM)
            .await
            .expect("stream");
        stream.info().await.expect("stream info").state.messages
    }

    /// Writes to `prod` stamped with this operation's id.
    pub fn writes_by(&self, id: &OperationId) -> Vec<longshore_kube_sim::WriteRecord> {
        self.prod()
            .writes()
            .into_iter()
            .filter(|w| {
                w.annotations.get(longshore_worker::OPERATION_ID_ANNOTATION)
                    == Some(&id.to_string())
            })
            .collect()
    }
}

/// A worker running in-process until [`RunningWorker::stop`].
pub struct RunningWorker {
    stop: CancellationToken,
    task: JoinHandle<longshore_worker::Result<()>>,
}

impl RunningWorker {
    pub fn start(config: longshore_worker::Config) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(longshore_worker::run(
            config,
            stop.clone().cancelled_owned(),
        ));
        Self { stop, task }
    }

    /// Stops it as SIGTERM would and waits for the drain (bounded).
    pub async fn stop(self) -> longshore_worker::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the worker drains within its grace period")
            .expect("the worker task does not panic")
    }
}

/// An envelope for `action` on `prod`, with a unique idempotency key.
pub fn envelope(action: Action, manifests: Vec<Value>) -> Envelope {
    let key = IdempotencyKey::new(format!("test-{}", rand::random::<u64>())).expect("key");
    Envelope {
        schema_version: SCHEMA_VERSION,
        id: OperationId::derive("test", &key),
        idempotency_key: key,
        source: "test".into(),
        fingerprint: "test".into(),
        submitted_at: jiff::Timestamp::now(),
        spec: OperationSpec {
            cluster: ClusterName::new("prod").expect("cluster name"),
            action,
            manifests,
            targets: vec![],
            patch: None,
            params: Default::default(),
            options: Options::default(),
            pipeline: None,
        },
        rollout: None,
    }
}

pub fn configmap(name: &str, value: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"key": value},
    })
}

/// The object fence of a ConfigMap in `prod`'s `default` namespace.
pub fn configmap_fence(name: &str) -> String {
    longshore_worker::fence::key(
        "prod",
        &longshore_contract::spec::ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("default".into()),
            name: name.into(),
        },
    )
}

impl Fixture {
    /// The objects bucket (created here if no worker has yet).
    pub async fn objects(&self) -> kv::Store {
        ensure_bucket(&self.js, Settings::default().objects_bucket())
            .await
            .expect("objects bucket")
    }

    /// The fence of `key` as it stands: its holder let go if its final record is written
    /// (as a worker taking it would see it).
    pub async fn fence(&self, key: &str) -> Option<longshore_worker::fence::Fence> {
        self.fences("reader")
            .await
            .effective(key)
            .await
            .expect("readable fence")
    }

    /// The fence of `key` as stored, holder and all.
    pub async fn stored_fence(&self, key: &str) -> Option<longshore_worker::fence::Fence> {
        let bytes = self.objects().await.get(key).await.expect("kv get")?;
        Some(serde_json::from_slice(&bytes).expect("readable fence"))
    }

    /// The fences as a worker named `worker` uses them (lease 60 s).
    pub async fn fences(&self, worker: &str) -> longshore_worker::fence::Fences {
        longshore_worker::fence::Fences::new(
            self.objects().await,
            self.records.clone(),
            worker.into(),
            Duration::from_secs(60),
        )
    }

    pub async fn set_fence(&self, key: &str, fence: &longshore_worker::fence::Fence) {
        self.objects()
            .await
            .put(key, serde_json::to_vec(fence).unwrap().into())
            .await
            .expect("kv put");
    }

    /// The pool consumer as the worker with `config` would create it, for a test to pull
    /// from as a worker that is slow or dies would.
    pub async fn pool_consumer(
        &self,
        config: &longshore_worker::Config,
    ) -> jetstream::consumer::PullConsumer {
        let stream = ensure_stream(&self.js, Settings::default().stream())
            .await
            .expect("stream");
        longshore_contract::jetstream::ensure_consumer(&stream, &config.pool_consumer())
            .await
            .expect("pool consumer")
    }

    /// The dead letter of an operation, if there is one.
    pub async fn dead_letter(
        &self,
        envelope: &Envelope,
    ) -> Option<longshore_contract::deadletter::DeadLetter> {
        use longshore_contract::deadletter;
        let stream = ensure_stream(&self.js, Settings::default().dead_letter_stream())
            .await
            .expect("dead-letter stream");
        let subject = deadletter::subject(&envelope.spec.cluster, &envelope.id);
        let m = stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .ok()?;
        Some(deadletter::DeadLetter::from_parts(
            &m.subject,
            Some(&m.headers),
            m.payload,
            m.sequence,
        ))
    }

    pub async fn dead_letter_count(&self) -> u64 {
        let mut stream = ensure_stream(&self.js, Settings::default().dead_letter_stream())
            .await
            .expect("dead-letter stream");
        stream.info().await.expect("stream info").state.messages
    }
}

/// Pulls one message from `consumer`, waiting for it (bounded).
pub async fn pull_one(consumer: &jetstream::consumer::PullConsumer) -> jetstream::Message {
    use futures::StreamExt;
    eventually("a message from the pool consumer", || async {
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .ok()?;
        batch.next().await?.ok()
    })
    .await
}
