//! A whole longshore system for a test: nats-server, kube-sim with named clusters,
//! dispatchers and workers, plus the calls a pipeline makes.

use std::time::Duration;

use anyhow::Context as _;
use longshore_kube_sim::{ClusterHandle, KubeSim, SimOptions};
use serde_json::Value;

use crate::{dispatcher::Dispatcher, nats::NatsServer, wait::eventually, worker::Worker};

pub struct System {
    pub nats: NatsServer,
    pub sim: KubeSim,
    pub kubeconfig: tempfile::NamedTempFile,
    pub dispatchers: Vec<Dispatcher>,
    pub workers: Vec<Worker>,
    http: reqwest::Client,
}

impl System {
    /// Starts `dispatchers` dispatchers and `workers` workers over the clusters named.
    pub async fn start(
        clusters: &[&str],
        dispatchers: usize,
        workers: usize,
    ) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let sim = KubeSim::start(SimOptions {
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        })
        .await?;
        let kubeconfig = tempfile::NamedTempFile::new()?;
        sim.write_kubeconfig(kubeconfig.path())?;
        let mut system = Self {
            nats,
            sim,
            kubeconfig,
            dispatchers: Vec::new(),
            workers: Vec::new(),
            http: reqwest::Client::new(),
        };
        for _ in 0..dispatchers {
            let d = Dispatcher::start(&system.nats.url(), clusters).await?;
            system.dispatchers.push(d);
        }
        for i in 0..workers {
            system.add_worker(&format!("worker-{i}"));
        }
        Ok(system)
    }

    pub fn add_worker(&mut self, id: &str) {
        self.workers
            .push(Worker::start(&self.nats.url(), self.kubeconfig.path(), id));
    }

    pub fn cluster(&self, name: &str) -> ClusterHandle {
        self.sim.cluster(name).expect("cluster exists in the sim")
    }

    /// POSTs an operation to dispatcher `d`; returns the status code and body.
    pub async fn submit(
        &self,
        d: usize,
        body: &Value,
        key: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .post(format!("{}/v1/operations", self.dispatchers[d].url))
            .json(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        let resp = req.send().await.context("POST /v1/operations")?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// Submits and expects 202; returns the operation id.
    pub async fn accept(
        &self,
        d: usize,
        body: &Value,
        key: Option<&str>,
    ) -> anyhow::Result<String> {
        let (status, body) = self.submit(d, body, key).await?;
        anyhow::ensure!(status == 202, "expected 202, got {status}: {body}");
        Ok(body["id"]
            .as_str()
            .context("id in the 202 body")?
            .to_owned())
    }

    /// The status record of an operation, read through dispatcher 0.
    pub async fn status(&self, id: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}/v1/operations/{id}", self.dispatchers[0].url))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "GET status: {}", resp.status());
        Ok(resp.json().await?)
    }

    /// Waits (bounded) until the operation is terminal; returns its record.
    pub async fn wait_terminal(&self, id: &str, within: Duration) -> anyhow::Result<Value> {
        eventually(within, &format!("operation {id} to finish"), || async {
            let record = self.status(id).await.ok()?;
            let state = record["state"].as_str()?;
            (state != "queued" && state != "running").then_some(record)
        })
        .await
    }

    /// Messages still in the work queue, and the last sequence it ever stored.
    pub async fn queue_state(&self) -> anyhow::Result<(u64, u64)> {
        let client = async_nats::connect(self.nats.url()).await?;
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(longshore_contract::jetstream::STREAM).await?;
        let state = stream.info().await?.state.clone();
        Ok((state.messages, state.last_sequence))
    }
}
