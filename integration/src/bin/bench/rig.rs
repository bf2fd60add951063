//! A running longshore for a benchmark: nats-server and the real dispatcher and worker
//! binaries as processes (so each one's CPU and memory can be read), kube-sim in-process,
//! and a KV watch that timestamps each operation's terminal state as it happens.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::StreamExt;
use longshore_contract::jetstream as names;
use longshore_integration::{
    nats::NatsServer,
    process::{Process, binary},
    wait::eventually,
};
use longshore_kube_sim::{KubeSim, SimOptions};
use serde_json::Value;

/// Where the dispatcher and worker binaries come from, when not the ones built beside the
/// benchmark: another build (say, the release before a change) to compare in the same run.
static BINARIES: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Uses the binaries in `dir` (or, with `None`, those beside the benchmark) from now on.
pub fn use_binaries(dir: Option<PathBuf>) {
    *BINARIES.lock().unwrap_or_else(|e| e.into_inner()) = dir;
}

fn bin(name: &str) -> anyhow::Result<PathBuf> {
    match BINARIES.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        Some(dir) => Ok(dir.join(name)),
        None => binary(name),
    }
}

/// When each operation reached a terminal state, and which.
type Finished = Arc<Mutex<HashMap<String, (Instant, String)>>>;

pub struct Rig {
    /// Where the dispatchers and workers reach NATS.
    pub nats_url: String,
    nats_pid: Option<u32>,
    /// The other nodes of a JetStream cluster, measured as `nats-server-<i>`.
    other_nats: Vec<u32>,
    /// Replicas of the stream and buckets (`nats.jetstream.replicas`).
    replicas: usize,
    /// The servers behind `nats_url`, kept running as long as the rig.
    _servers: Box<dyn std::any::Any + Send>,
    pub sim: KubeSim,
    pub kubeconfig: PathBuf,
    pub dispatchers: Vec<Process>,
    pub urls: Vec<String>,
    pub workers: Vec<Process>,
    logs: tempfile::TempDir,
    http: reqwest::Client,
    finished: Finished,
    keys: std::sync::atomic::AtomicU64,
    watcher: tokio::task::JoinHandle<()>,
}

impl Rig {
    /// Starts nats-server, kube-sim with `clusters`, and `dispatchers` dispatchers. Workers
    /// are added with [`Rig::add_worker`].
    pub async fn start(clusters: Vec<String>, dispatchers: usize) -> anyhow::Result<Self> {
        Self::start_replicated(clusters, dispatchers, 1).await
    }

    /// [`Rig::start`] with the stream and buckets at `replicas` (1: one server; more: a
    /// JetStream cluster of that many nodes, every one measured).
    pub async fn start_replicated(
        clusters: Vec<String>,
        dispatchers: usize,
        replicas: usize,
    ) -> anyhow::Result<Self> {
        if replicas <= 1 {
            let nats = NatsServer::start().await?;
            let (url, pid) = (nats.url(), nats.pid());
            return Self::start_on(Box::new(nats), url, pid, clusters, dispatchers).await;
        }
        let nats = longshore_integration::nats::NatsCluster::start(replicas).await?;
        let (url, pids) = (nats.url(), nats.pids());
        Self::start_with(
            Box::new(nats),
            url,
            pids.first().copied(),
            pids.get(1..).map(<[u32]>::to_vec).unwrap_or_default(),
            replicas,
            clusters,
            dispatchers,
        )
        .await
    }

    /// [`Rig::start`] on NATS servers of the caller's (`servers`, kept running), reached at
    /// `nats_url`; `nats_pid` is the one measured as `nats-server`.
    pub async fn start_on(
        servers: Box<dyn std::any::Any + Send>,
        nats_url: String,
        nats_pid: Option<u32>,
        clusters: Vec<String>,
        dispatchers: usize,
    ) -> anyhow::Result<Self> {
        Self::start_with(
            servers,
            nats_url,
            nats_pid,
            Vec::new(),
            1,
            clusters,
            dispatchers,
        )
        .await
    }

    async fn start_with(
        servers: Box<dyn std::any::Any + Send>,
        nats_url: String,
        nats_pid: Option<u32>,
        other_nats: Vec<u32>,
        replicas: usize,
        clusters: Vec<String>,
        dispatchers: usize,
    ) -> anyhow::Result<Self> {
        let sim = KubeSim::start(SimOptions {
            clusters: clusters.clone(),
            ..Default::default()
        })
        .await?;
        let logs = tempfile::tempdir()?;
        let kubeconfig = logs.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig)?;
        let mut rig = Self {
            nats_url,
            nats_pid,
            other_nats,
            replicas,
            _servers: servers,
            sim,
            kubeconfig,
            dispatchers: Vec::new(),
            urls: Vec::new(),
            workers: Vec::new(),
            logs,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()?,
            finished: Arc::default(),
            keys: std::sync::atomic::AtomicU64::new(0),
            watcher: tokio::spawn(async {}),
        };
        let bin = bin("longshore-dispatcher")?;
        for i in 0..dispatchers {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let env = [
                ("LONGSHORE_NATS__URL", rig.nats_url.clone()),
                ("LONGSHORE_LISTEN", format!("127.0.0.1:{port}")),
                ("LONGSHORE_CLUSTERS", clusters.join(",")),
                (
                    "LONGSHORE_NATS__JETSTREAM__REPLICAS",
                    rig.replicas.to_string(),
                ),
            ];
            rig.dispatchers.push(Process::spawn(
                &format!("dispatcher-{i}"),
                &bin,
                &[],
                &env,
                rig.logs.path(),
            )?);
            rig.urls.push(format!("http://127.0.0.1:{port}"));
        }
        for url in rig.urls.clone() {
            let http = rig.http.clone();
            eventually(Duration::from_secs(60), "a dispatcher to be ready", || {
                let r = http.get(format!("{url}/readyz")).send();
                async move { r.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
            })
            .await?;
        }
        rig.watcher = rig.watch().await?;
        Ok(rig)
    }

    /// Starts a worker with these extra settings (`LONGSHORE_*` variables).
    pub fn add_worker(&mut self, extra: &[(&str, String)]) -> anyhow::Result<()> {
        let i = self.workers.len();
        let mut env = vec![
            ("LONGSHORE_NATS__URL", self.nats_url.clone()),
            ("LONGSHORE_WORKER_ID", format!("worker-{i}")),
            ("LONGSHORE_LISTEN", "127.0.0.1:0".to_owned()),
            (
                "LONGSHORE_CLUSTERS__KUBECONFIG",
                self.kubeconfig.display().to_string(),
            ),
            ("LONGSHORE_LOG", "warn".to_string()),
            (
                "LONGSHORE_NATS__JETSTREAM__REPLICAS",
                self.replicas.to_string(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let worker = Process::spawn(
            &format!("worker-{i}"),
            &bin("longshore-worker")?,
            &[],
            &env,
            self.logs.path(),
        )?;
        self.workers.push(worker);
        Ok(())
    }

    /// Stops every worker (SIGTERM, drained).
    pub async fn stop_workers(&mut self) {
        for mut w in self.workers.drain(..) {
            let _ = w.terminate(Duration::from_secs(30)).await;
        }
    }

    pub fn log_dir(&self) -> PathBuf {
        self.logs.path().to_owned()
    }

    /// The processes to measure: name and pid.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut out = vec![
            ("nats-server".to_string(), self.nats_pid.unwrap_or(0)),
            ("bench+kube-sim".to_string(), std::process::id()),
        ];
        out.extend(
            self.other_nats
                .iter()
                .enumerate()
                .map(|(i, pid)| (format!("nats-server-{}", i + 1), *pid)),
        );
        out.extend(
            self.dispatchers
                .iter()
                .filter_map(|p| Some((p.name.clone(), p.pid()?))),
        );
        out.extend(
            self.workers
                .iter()
                .filter_map(|p| Some((p.name.clone(), p.pid()?))),
        );
        out
    }

    /// Timestamps every record's first terminal state, from a watch on the status bucket.
    async fn watch(&self) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let client = async_nats::connect(server_addrs(&self.nats_url)?).await?;
        let kv = async_nats::jetstream::new(client)
            .get_key_value(names::OPERATIONS_BUCKET)
            .await?;
        let mut watch = kv.watch_all().await?;
        let finished = self.finished.clone();
        Ok(tokio::spawn(async move {
            while let Some(Ok(entry)) = watch.next().await {
                let Ok(record) = serde_json::from_slice::<Value>(&entry.value) else {
                    continue;
                };
                let state = record["state"].as_str().unwrap_or_default();
                if !matches!(state, "queued" | "running" | "") {
                    let mut map = finished.lock().unwrap_or_else(|e| e.into_inner());
                    map.entry(entry.key.clone())
                        .or_insert_with(|| (Instant::now(), state.to_owned()));
                }
            }
        }))
    }

    /// Submits one operation (retrying 503s, as a pipeline would); returns its id and when
    /// the submission started.
    pub async fn submit(&self, i: usize, body: &Value) -> anyhow::Result<(String, Instant)> {
        let started = Instant::now();
        let url = &self.urls[i % self.urls.len()];
        // Every submission is a new operation; its retries keep its key.

        let key = format!(
            "bench-{}-{}",
            std::process::id(),
            self.keys.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        for _ in 0..100 {
            let resp = self
                .http
                .post(format!("{url}/v1/operations"))
                .header("Idempotency-Key", key.as_str())
                .json(body)
                .send()
                .await?;
            if resp.status() == 202 {
                let v: Value = resp.json().await?;
                return Ok((v["id"].as_str().context("id")?.to_owned(), started));
            }
            if resp.status() != 503 {
                let status = resp.status();
                anyhow::bail!(
                    "submit answered {status}: {}",
                    resp.text().await.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("operation {i} was never accepted")
    }

    /// Waits until every id is terminal; returns submit-to-terminal latencies and the time the
    /// last one finished. Fails if any did not succeed.
    pub async fn wait_all(
        &self,
        submitted: &[(String, Instant)],
        within: Duration,
    ) -> anyhow::Result<(Vec<Duration>, Instant)> {
        let finished = self.finished.clone();
        eventually(within, "every operation to finish", || {
            let all = {
                let map = finished.lock().unwrap_or_else(|e| e.into_inner());
                submitted.iter().all(|(id, _)| map.contains_key(id))
            };
            async move { all.then_some(()) }
        })
        .await?;
        let map = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        let mut latencies = Vec::with_capacity(submitted.len());
        let mut last = Instant::now() - Duration::from_secs(3600);
        for (id, start) in submitted {
            let (at, state) = &map[id];
            anyhow::ensure!(
                state == "succeeded",
                "operation {id} ended {state} (logs in {})",
                self.logs.path().display()
            );
            latencies.push(at.duration_since(*start));
            last = last.max(*at);
        }
        Ok((latencies, last))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// The servers of a comma-separated URL list (one server, or a cluster), as async-nats
/// takes them.
pub fn server_addrs(urls: &str) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    urls.split(',')
        .map(|u| u.parse().with_context(|| format!("NATS URL {u:?}")))
        .collect()
}

/// An apply of one small ConfigMap, the unit of work of most benchmarks.
pub fn apply_configmap(cluster: &str, name: &str, value: usize) -> Value {
    serde_json::json!({"cluster": cluster, "action": "apply", "manifests": [{
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench"}},
        "data": {"value": value.to_string(), "color": "blue", "size": "medium"}}]})
}
