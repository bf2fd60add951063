//! The bare JetStream limit on this machine: awaited publishes from concurrent tasks, then
//! pull and double ack, then both at once, on the same nats-server configuration and
//! payload size as longshore's work queue.

use std::time::Instant;

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use futures::StreamExt;
use longshore_integration::nats::NatsServer;
use serde_json::{Value, json};

const STREAM: &str = "BENCH";

pub async fn run(messages: usize, concurrency: usize, payload: usize) -> anyhow::Result<Value> {
    let nats = NatsServer::start().await?;
    run_at(&nats.url(), 1, messages, concurrency, payload).await
}

/// [`run`] against the servers at `url`, the stream at `replicas`.
pub async fn run_at(
    url: &str,
    replicas: usize,
    messages: usize,
    concurrency: usize,
    payload: usize,
) -> anyhow::Result<Value> {
    let client = async_nats::connect(crate::rig::server_addrs(url)?).await?;
    let js = jetstream::new(client);
    let body = Bytes::from(vec![b'x'; payload]);

    let publish = phase(&js, replicas, messages, concurrency, &body, true, false).await?;
    let consume = phase(&js, replicas, messages, concurrency, &body, false, true).await?;
    let both = phase(&js, replicas, messages, concurrency, &body, true, true).await?;
    Ok(json!({
        "replicas": replicas, "messages": messages, "payload_bytes": payload, "concurrency": concurrency,
        "publish_msgs_per_s": publish, "pull_double_ack_msgs_per_s": consume, "loop_msgs_per_s": both,
    }))
}

/// Publishes and/or consumes `messages`; returns messages per second.
async fn phase(
    js: &jetstream::Context,
    replicas: usize,
    messages: usize,
    concurrency: usize,
    body: &Bytes,
    publish: bool,
    consume: bool,
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
        if !consume {
            return Ok::<_, anyhow::Error>(());
        }
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
                m.map_err(anyhow::Error::msg)?
                    .double_ack()
                    .await
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
