//! What operations cost in JetStream requests, counted on the wire: a plain NATS client
//! subscribed to the subjects requests travel on sees each one (`$JS.API.>` for API calls
//! and reads, `$KV.<bucket>.>` for KV writes, the work-queue subjects for publishes,
//! `$JS.ACK.>` for acknowledgements).

use std::time::Duration;

use futures::StreamExt;
use longshore_integration::system::System;
use serde_json::json;

const OPS: usize = 5;

/// Counts the messages `subject` carries from now until `stop` is cancelled (and what was
/// already on its way then: the server delivers to one connection in order, so what was
/// sent before the event the test waited for arrives before it).
fn count(
    client: &async_nats::Client,
    subject: &'static str,
    stop: &tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<usize> {
    let client = client.clone();
    let stop = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let handle = tokio::spawn(async move {
        let mut sub = client.subscribe(subject).await.unwrap();
        client.flush().await.unwrap();
        ready_tx.send(()).unwrap();
        let mut n = 0;
        loop {
            tokio::select! {
                message = sub.next() => match message {
                    Some(_) => n += 1,
                    None => return n,
                },
                () = stop.cancelled() => break,
            }
        }
        // What is already buffered for this subscription.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            n += 1;
        }
        n
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_operation_is_claimed_without_reading_its_record() {
    let system = System::start(&["prod"], 1, 1).await.unwrap();
    let client = async_nats::connect(system.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let records = js.get_key_value("LONGSHORE_OPERATIONS").await.unwrap();
    // Ended operations are seen through a watch (one consumer), not by reading records.
    let mut ended = records.watch_all().await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let reads = count(
        &client,
        "$JS.API.DIRECT.GET.KV_LONGSHORE_OPERATIONS.>",
        &stop,
    );
    let stream_reads = count(
        &client,
        "$JS.API.STREAM.MSG.GET.KV_LONGSHORE_OPERATIONS",
        &stop,
    );
    let writes = count(&client, "$KV.LONGSHORE_OPERATIONS.>", &stop);
    let publishes = count(&client, "longshore.ops.>", &stop);
    let acks = count(&client, "$JS.ACK.>", &stop);
    let mut ids = Vec::new();
    for i in 0..OPS {
        let body = json!({"cluster": "prod", "action": "apply", "manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": format!("cm-{i}"), "namespace": "default"}, "data": {"i": i.to_string()}}]});
        ids.push(
            system
                .accept(0, &body, Some(&format!("claim-{i}")))
                .await
                .unwrap(),
        );
    }
    let mut done = std::collections::BTreeSet::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while done.len() < OPS {
            let entry = ended.next().await.unwrap().unwrap();
            let record: serde_json::Value =
                serde_json::from_slice(&entry.value).unwrap_or_default();
            if record["state"] == "succeeded" {
                done.insert(entry.key.clone());
            }
        }
    })
    .await
    .expect("every operation succeeds");
    // Each operation's ack follows its final record: once the work queue is empty (asked
    // on this connection, after the acks reached it), everything has been counted.
    longshore_integration::wait::eventually(
        Duration::from_secs(10),
        "the work queue to empty",
        || async {
            let mut stream = js.get_stream("LONGSHORE_OPS").await.ok()?;
            (stream.info().await.ok()?.state.messages == 0).then_some(())
        },
    )
    .await
    .unwrap();
    stop.cancel();
    let (reads, stream_reads, writes, publishes, acks) = (
        reads.await.unwrap(),
        stream_reads.await.unwrap(),
        writes.await.unwrap(),
        publishes.await.unwrap(),
        acks.await.unwrap(),
    );
    eprintln!(
        "per operation: record reads {}, record writes {}, publishes {}, acks {}",
        (reads + stream_reads) as f64 / OPS as f64,
        writes as f64 / OPS as f64,
        publishes as f64 / OPS as f64,
        acks as f64 / OPS as f64
    );
    assert_eq!(reads + stream_reads, 0, "the claim read no record");
    // queued (the dispatcher), running (the claim), succeeded (the end).
    assert_eq!(writes, 3 * OPS);
    assert_eq!(publishes, OPS);
    assert_eq!(acks, OPS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_record_revision_costs_a_read_and_loses_nothing() {
    use longshore_contract::envelope::{RECORD_REVISION_HEADER, SCHEMA_VERSION};
    use longshore_contract::{Envelope, IdempotencyKey, OperationId, OperationRecord};
    let system = System::start(&["prod"], 1, 1).await.unwrap();
    let client = async_nats::connect(system.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let records = js.get_key_value("LONGSHORE_OPERATIONS").await.unwrap();
    let key = IdempotencyKey::new("stale-revision").unwrap();
    let envelope = Envelope {
        schema_version: SCHEMA_VERSION,
        id: OperationId::derive("api", &key),
        idempotency_key: key,
        source: "api".into(),
        fingerprint: "f".into(),
        submitted_at: jiff::Timestamp::now(),
        spec: serde_json::from_value(json!({"cluster": "prod", "action": "apply", "manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "stale", "namespace": "default"}, "data": {"v": "1"}}]}))
        .unwrap(),
        rollout: None,
    };
    // The record moved on after the revision the message names (as a retry from the dead
    // letters moves it): the worker's compare-and-set from that revision must fail, and
    // what the record holds now must survive the claim.
    let first = records
        .create(
            envelope.id.as_str(),
            OperationRecord::queued(&envelope).to_bytes(),
        )
        .await
        .unwrap();
    let mut moved = OperationRecord::queued(&envelope);
    moved.source = "moved-on".into();
    records
        .update(envelope.id.as_str(), moved.to_bytes(), first)
        .await
        .unwrap();
    let (subject, mut headers, payload) = envelope
        .to_message(&longshore_contract::PoolName::default_pool())
        .unwrap();
    headers.insert(RECORD_REVISION_HEADER, first.to_string().as_str());
    js.publish_with_headers(subject, headers, payload)
        .await
        .unwrap()
        .await
        .unwrap();
    let record = system
        .wait_terminal(envelope.id.as_str(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(
        record["source"], "moved-on",
        "the record as it was, not as the message said"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_without_a_read_keeps_the_trace_the_dispatcher_recorded() {
    use longshore_contract::envelope::{
        RECORD_REVISION_HEADER, SCHEMA_VERSION, TRACEPARENT_HEADER,
    };
    use longshore_contract::{Envelope, IdempotencyKey, OperationId, OperationRecord};
    // In-process workers export no traces: the trace id can only come from the message.
    let system = System::start(&["prod"], 1, 1).await.unwrap();
    let client = async_nats::connect(system.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let records = js.get_key_value("LONGSHORE_OPERATIONS").await.unwrap();
    let key = IdempotencyKey::new("traced").unwrap();
    let envelope = Envelope {
        schema_version: SCHEMA_VERSION,
        id: OperationId::derive("api", &key),
        idempotency_key: key,
        source: "api".into(),
        fingerprint: "f".into(),
        submitted_at: jiff::Timestamp::now(),
        spec: serde_json::from_value(json!({"cluster": "prod", "action": "apply", "manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "traced", "namespace": "default"}, "data": {"v": "1"}}]}))
        .unwrap(),
        rollout: None,
    };
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut queued = OperationRecord::queued(&envelope);
    queued.trace_id = Some(trace.into());
    let revision = records
        .create(envelope.id.as_str(), queued.to_bytes())
        .await
        .unwrap();
    let (subject, mut headers, payload) = envelope
        .to_message(&longshore_contract::PoolName::default_pool())
        .unwrap();
    headers.insert(RECORD_REVISION_HEADER, revision.to_string().as_str());
    headers.insert(
        TRACEPARENT_HEADER,
        format!("00-{trace}-00f067aa0ba902b7-01").as_str(),
    );
    js.publish_with_headers(subject, headers, payload)
        .await
        .unwrap()
        .await
        .unwrap();
    let record = system
        .wait_terminal(envelope.id.as_str(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(record["traceId"], trace, "{record}");
}
