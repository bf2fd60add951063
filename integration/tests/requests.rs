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
async fn count(
    client: &async_nats::Client,
    subject: &'static str,
    stop: &tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<usize> {
    let mut sub = client.subscribe(subject).await.unwrap();
    longshore_integration::nats::round_trip(client)
        .await
        .unwrap();
    let stop = stop.clone();
    tokio::spawn(async move {
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
    })
}

/// The requests a round of operations made, by kind.
#[derive(Debug, Default, PartialEq)]
struct Requests {
    record_reads: usize,
    record_writes: usize,
    fence_reads: usize,
    fence_writes: usize,
    publishes: usize,
    acks: usize,
}

impl Requests {
    fn total(&self) -> usize {
        self.record_reads
            + self.record_writes
            + self.fence_reads
            + self.fence_writes
            + self.publishes
            + self.acks
    }

    fn per_operation(&self) -> String {
        let per = |n: usize| n as f64 / OPS as f64;
        format!(
            "record reads {}, record writes {}, fence reads {}, fence writes {}, publishes {}, acks {}: {} in all",
            per(self.record_reads),
            per(self.record_writes),
            per(self.fence_reads),
            per(self.fence_writes),
            per(self.publishes),
            per(self.acks),
            per(self.total())
        )
    }
}

/// Applies ConfigMaps `cm-0`..`cm-4` (each its own object) with `value`, counting every
/// request the operations make until they all succeeded and the work queue is empty.
async fn round(system: &System, label: &str, value: usize) -> Requests {
    let client = async_nats::connect(system.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let records = js.get_key_value("LONGSHORE_OPERATIONS").await.unwrap();
    // Ended operations are seen through a watch (one consumer), not by reading records.
    let mut ended = records.watch_all().await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let reads = async |bucket: &'static str, direct: &'static str| {
        (
            count(&client, direct, &stop).await,
            count(&client, bucket, &stop).await,
        )
    };
    let record_reads = reads(
        "$JS.API.STREAM.MSG.GET.KV_LONGSHORE_OPERATIONS",
        "$JS.API.DIRECT.GET.KV_LONGSHORE_OPERATIONS.>",
    )
    .await;
    let fence_reads = reads(
        "$JS.API.STREAM.MSG.GET.KV_LONGSHORE_OBJECTS",
        "$JS.API.DIRECT.GET.KV_LONGSHORE_OBJECTS.>",
    )
    .await;
    let record_writes = count(&client, "$KV.LONGSHORE_OPERATIONS.>", &stop).await;
    let fence_writes = count(&client, "$KV.LONGSHORE_OBJECTS.>", &stop).await;
    let publishes = count(&client, "longshore.ops.>", &stop).await;
    let acks = count(&client, "$JS.ACK.>", &stop).await;
    for i in 0..OPS {
        let body = json!({"cluster": "prod", "action": "apply", "manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": format!("cm-{i}"), "namespace": "default"},
             "data": {"v": value.to_string()}}]});
        system
            .accept(0, &body, Some(&format!("{label}-{i}")))
            .await
            .unwrap();
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
    let both = |(a, b): (
        tokio::task::JoinHandle<usize>,
        tokio::task::JoinHandle<usize>,
    )| async { a.await.unwrap() + b.await.unwrap() };
    let requests = Requests {
        record_reads: both(record_reads).await,
        record_writes: record_writes.await.unwrap(),
        fence_reads: both(fence_reads).await,
        fence_writes: fence_writes.await.unwrap(),
        publishes: publishes.await.unwrap(),
        acks: acks.await.unwrap(),
    };
    eprintln!("{label}, per operation: {}", requests.per_operation());
    for i in 0..OPS {
        let cm = system
            .cluster("prod")
            .get("v1", "ConfigMap", Some("default"), &format!("cm-{i}"));
        assert_eq!(
            cm.and_then(|cm| cm["data"]["v"].as_str().map(str::to_owned)),
            Some(value.to_string()),
            "{label}: cm-{i} has the round's value"
        );
    }
    requests
}

/// The Kubernetes API requests `worker` has made with `method`, from its metrics.
async fn kube_requests(system: &System, worker: usize, method: &str) -> f64 {
    let url = &system.workers[worker].metrics_url;
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series =
        format!("longshore_worker_kube_request_duration_seconds_count{{method=\"{method}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The common path (one object, no contention, no redelivery) in five requests: the
/// `queued` record and the publish (the dispatcher), the fence, the final record and the
/// acknowledgement (the worker). Again five for the next operation on each object when
/// the worker that carried out the last one takes it; eight on a worker that has not seen
/// the object, which reads the fence and the record of the operation holding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_makes_five_jetstream_requests() {
    let mut system = System::start(&["prod"], 1, 1).await.unwrap();
    let per = |record_reads, record_writes, fence_reads, fence_writes| Requests {
        record_reads: record_reads * OPS,
        record_writes: record_writes * OPS,
        fence_reads: fence_reads * OPS,
        fence_writes: fence_writes * OPS,
        publishes: OPS,
        acks: OPS,
    };
    // New objects: the fence is created without reading it first.
    let first = round(&system, "first apply", 1).await;
    assert_eq!(first, per(0, 2, 0, 1), "{}", first.per_operation());
    assert_eq!(first.total(), 5 * OPS);
    // The same objects on the same worker: it knows each fence as its last operation left it.
    // And one Kubernetes request each, the apply: a first attempt does not read the object
    // first (its kind is known from the round before). The worker's watches are GETs too,
    // and one may be opened again meanwhile: fewer GETs than operations, not none.
    let (gets, patches) = (
        kube_requests(&system, 0, "GET").await,
        kube_requests(&system, 0, "PATCH").await,
    );
    let again = round(&system, "re-apply, same worker", 2).await;
    assert_eq!(again, per(0, 2, 0, 1), "{}", again.per_operation());
    let read = kube_requests(&system, 0, "GET").await - gets;
    assert!(read < OPS as f64, "{read} GETs for {OPS} applies");
    assert_eq!(
        kube_requests(&system, 0, "PATCH").await - patches,
        OPS as f64
    );
    // The same objects on a worker that has not seen them: its guess (a new object) is
    // refused, it reads the fence, then the final record of the operation holding it.
    system.workers.remove(0).stop().await.unwrap();
    system.add_worker("worker-1");
    let other = round(&system, "re-apply, another worker", 3).await;
    assert_eq!(other, per(1, 2, 1, 2), "{}", other.per_operation());
    assert_eq!(other.total(), 8 * OPS);
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
