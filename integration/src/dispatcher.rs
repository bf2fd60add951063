//! The real dispatcher, run in-process through its `run` function on a free port.

use std::time::Duration;

use longshore_dispatcher::{Config, RunError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Dispatcher {
    pub url: String,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

impl Dispatcher {
    /// Starts a dispatcher for `clusters` against the NATS server at `nats_url`.
    pub async fn start(nats_url: &str, clusters: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(Self::config(nats_url, clusters)).await
    }

    /// The configuration [`Dispatcher::start`] uses, to adjust before [`Dispatcher::start_with`].
    pub fn config(nats_url: &str, clusters: &[&str]) -> Config {
        let mut config = Config {
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        };
        config.nats.url = nats_url.to_owned();
        config.nats.request_timeout = Duration::from_secs(2);
        config.http.drain_grace = Duration::from_secs(2);
        config
    }

    pub async fn start_with(config: Config) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let task = tokio::spawn(longshore_dispatcher::run(
            config,
            listener,
            stop.clone().cancelled_owned(),
        ));
        let dispatcher = Self {
            url,
            stop,
            task: Some(task),
        };
        dispatcher.wait_ready().await?;
        Ok(dispatcher)
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.url);
        crate::wait::eventually(
            Duration::from_secs(15),
            "the dispatcher to be ready",
            || {
                let request = client.get(&url).send();
                async move {
                    request
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                        .map(|_| ())
                }
            },
        )
        .await
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

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
