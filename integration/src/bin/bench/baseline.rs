//! The bare JetStream limit on this machine: awaited publishes from concurrent tasks, then
//! pull and double ack, then both at once, on the same nats-server configuration and
//! payload size as longshore's work queue. For the loop (both at once) it also reports the
//! CPU milliseconds per message of each nats-server and of the client (this process): what
//! moving one message costs when nothing else runs. The loop is also run with the double
//! ack the worker sends (through the connection's shared reply subscription, not a
//! subscription per acknowledgement), so a ratio to the loop can be read against either.

use std::time::Instant;

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use futures::StreamExt;
use longshore_integration::nats::NatsServer;
use serde_json::{Value, json};

use crate::stats::Meter;

const STREAM: &str = "BENCH";

pub async fn run(messages: usize, concurrency: usize, payload: usize) -> anyhow::Result<Value> {
    let nats = NatsServer::start().await?;
    let pids: Vec<u32> = nats.pid().into_iter().collect();
    run_at(&nats.url(), &pids, 1, messages, concurrency, payload).await
}

/// [`run`] against the servers at `url` (processes `pids`, each measured), the stream at
/// `replicas`.
pub async fn run_at(
    url: &str,
    pids: &[u32],
    replicas: usize,
    messages: usize,
    concurrency: usize,
    payload: usize,
) -> anyhow::Result<Value> {
    let client = async_nats::connect(crate::rig::server_addrs(url)?).await?;
    let js = jetstream::new(client);
    let body = Bytes::from(vec![b'x'; payload]);

    let library = Some(Ack::Library);
    let publish = phase(&js, replicas, messages, concurrency, &body, true, None).await?;
    let consume = phase(&js, replicas, messages, concurrency, &body, false, library).await?;
    let mut processes = vec![("client".to_string(), std::process::id())];
    processes.extend(pids.iter().enumerate().map(|(i, pid)| {
        let name = if i == 0 {
            "nats-server".to_string()
        } else {
            format!("nats-server-{i}")
        };
        (name, *pid)
    }));
    let meter = Meter::start(&processes);
    let both = phase(&js, replicas, messages, concurrency, &body, true, library).await?;
    let cpu = cpu_ms_per(&meter.finish(), messages);
    let shared = Some(Ack::SharedReply);
    let both_shared = phase(&js, replicas, messages, concurrency, &body, true, shared).await?;
    Ok(json!({
        "replicas": replicas, "messages": messages, "payload_bytes": payload, "concurrency": concurrency,
        "publish_msgs_per_s": publish, "pull_double_ack_msgs_per_s": consume, "loop_msgs_per_s": both,
        "loop_cpu_ms_per_msg": cpu, "loop_shared_ack_msgs_per_s": both_shared,
    }))
}

/// CPU milliseconds per one of `n` by process, from a [`Meter::finish`], with their
/// `total`.
pub fn cpu_ms_per(resources: &Value, n: usize) -> Value {
    let n = n.max(1) as f64;
    let mut out: serde_json::Map<String, Value> = resources
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, r)| {
                    let ms = r["cpu_s"].as_f64().unwrap_or(0.0) * 1000.0 / n;
                    (name.clone(), json!(round3(ms)))
                })
                .collect()
        })
        .unwrap_or_default();
    let total: f64 = out.values().filter_map(Value::as_f64).sum();
    out.insert("total".into(), json!(round3(total)));
    out.into()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// How the loop's consumer confirms each acknowledgement.
#[derive(Clone, Copy)]
enum Ack {
    /// async-nats' `double_ack`: a subscription to a fresh inbox for each one.
    Library,
    /// The worker's: the connection's shared reply subscription.
    SharedReply,
}

/// Publishes `messages` (if `publish`) and/or consumes them, acknowledged as `consume`
/// says; returns messages per second.
async fn phase(
    js: &jetstream::Context,
    replicas: usize,
    messages: usize,
    concurrency: usize,
    body: &Bytes,
    publish: bool,
    consume: Option<Ack>,
) -> anyhow::Result<f64> {
    if publish {
        // A fresh work-queue stream like LONGSHORE_OPS for each publishing phase.
        let _ = js.delete_stream(STREAM).await;
        js.create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["bench.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await?;
    }
    let started = Instant::now();
    let producer = async {
        if !publish {
            return Ok::<_, anyhow::Error>(());
        }
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..messages)
            .map(|i| async move {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    format!("m{i}").as_str(),
                );
                js.publish_with_headers(format!("bench.c{}", i % 8), headers, body.clone())
                    .await?
                    .await?;
                Ok(())
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        results.into_iter().collect()
    };
    let consumer = async {
        let Some(ack) = consume else {
            return Ok::<_, anyhow::Error>(());
        };
        let stream = js.get_stream(STREAM).await?;
        let consumer = stream
            .get_or_create_consumer(
                "bench",
                pull::Config {
                    durable_name: Some("bench".into()),
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await?;
        let acked: Vec<anyhow::Result<()>> = consumer
            .messages()
            .await?
            .take(messages)
            .map(|m| async move {
                let m = m.map_err(anyhow::Error::msg)?;
                match ack {
                    Ack::Library => m.double_ack().await,
                    Ack::SharedReply => longshore_worker::settle::double_ack(&m).await,
                }
                .map_err(anyhow::Error::msg)?;
                Ok(())
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        acked.into_iter().collect()
    };
    let (p, c) = tokio::join!(producer, consumer);
    p?;
    c?;
    Ok((messages as f64 / started.elapsed().as_secs_f64()).round())
}
