//! The real worker, run in-process through its `run` function.

use std::{path::Path, time::Duration};

use longshore_worker::Config;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Worker {
    pub id: String,
    /// `http://127.0.0.1:<port>`, serving `/metrics`, `/healthz` and `/readyz`.
    pub metrics_url: String,
    stop: CancellationToken,
    task: Option<JoinHandle<longshore_worker::Result<()>>>,
}

impl Worker {
    /// A worker configuration for tests: every context of `kubeconfig`, short timeouts.
    pub fn config(nats_url: &str, kubeconfig: &Path, id: &str) -> Config {
        let mut config = Config {
            worker_id: id.to_owned(),
            ..Default::default()
        };
        config.nats.url = nats_url.to_owned();
        config.nats.request_timeout = Duration::from_secs(2);
        config.clusters.kubeconfig = Some(kubeconfig.to_owned());
        config.retry.base = Duration::from_millis(50);
        config.retry.max = Duration::from_millis(500);
        config.drain_grace = Duration::from_secs(2);
        // Many workers share a test process: each gets a free port for /metrics.
        config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }

    pub fn start(nats_url: &str, kubeconfig: &Path, id: &str) -> Self {
        Self::start_with(Self::config(nats_url, kubeconfig, id))
    }

    pub fn start_with(config: Config) -> Self {
        let stop = CancellationToken::new();
        let id = config.worker_id.clone();
        let listener = std::net::TcpListener::bind(config.listen).expect("a free local port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking socket");
        let metrics_url = format!("http://{}", listener.local_addr().expect("bound"));
        let listener = tokio::net::TcpListener::from_std(listener).expect("in a Tokio runtime");
        let task = tokio::spawn(longshore_worker::run_on(
            config,
            listener,
            stop.clone().cancelled_owned(),
        ));
        Self {
            id,
            metrics_url,
            stop,
            task: Some(task),
        }
    }

    /// Stops it as SIGTERM would, and waits for the drain.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

/// The real worker binary as a process (to be SIGKILLed), with `id`, every context of
/// `kubeconfig`, a free port for `/metrics`, and a short drain; its log in `logs`.
pub fn process(
    nats_url: &str,
    kubeconfig: &Path,
    logs: &Path,
    id: &str,
) -> anyhow::Result<crate::process::Process> {
    process_with(nats_url, kubeconfig, logs, id, Vec::new())
}

/// [`process`], with more `LONGSHORE_*` settings.
fn process_with(
    nats_url: &str,
    kubeconfig: &Path,
    logs: &Path,
    id: &str,
    extra: Vec<(&str, String)>,
) -> anyhow::Result<crate::process::Process> {
    let mut env = vec![
        ("LONGSHORE_NATS__URL", nats_url.to_owned()),
        ("LONGSHORE_WORKER_ID", id.to_owned()),
        ("LONGSHORE_LISTEN", "127.0.0.1:0".to_owned()),
        (
            "LONGSHORE_CLUSTERS__KUBECONFIG",
            kubeconfig.display().to_string(),
        ),
        ("LONGSHORE_DRAIN_GRACE", "2s".into()),
    ];
    env.extend(extra);
    crate::process::Process::spawn(
        id,
        &crate::process::binary("longshore-worker")?,
        &[],
        &env,
        logs,
    )
}

/// An agent worker binary as a process: pool `pool`, serving `cluster` (labelled
/// `env=edge`) with the context of that name in `kubeconfig`, through the leaf node at
/// `leaf_url` and the hub's JetStream domain `domain`, with the agent's own inbox prefix;
/// its log in `logs`; `extra`: more `LONGSHORE_*` settings.
#[allow(clippy::too_many_arguments)]
pub fn agent_process(
    leaf_url: &str,
    domain: &str,
    pool: &str,
    cluster: &str,
    kubeconfig: &Path,
    logs: &Path,
    id: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<crate::process::Process> {
    let pool_name = longshore_contract::PoolName::new(pool)
        .map_err(|e| anyhow::anyhow!("pool {pool:?}: {e}"))?;
    let agent = vec![
        ("LONGSHORE_NATS__JETSTREAM__DOMAIN", domain.to_owned()),
        (
            "LONGSHORE_NATS__INBOX_PREFIX",
            longshore_contract::agent::inbox_prefix(&pool_name),
        ),
        ("LONGSHORE_POOL__NAME", pool.to_owned()),
        ("LONGSHORE_AGENT__CLUSTER", cluster.to_owned()),
        ("LONGSHORE_AGENT__LABELS__ENV", "edge".to_owned()),
    ];
    let extra = extra.iter().map(|(k, v)| (*k, (*v).to_owned()));
    process_with(
        leaf_url,
        kubeconfig,
        logs,
        id,
        agent.into_iter().chain(extra).collect(),
    )
}

/// The value of the counter `name` (with its `_total`) in the Prometheus text at
/// `metrics_url`/metrics, if it can be read.
pub async fn counter(metrics_url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{metrics_url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{name} ");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
