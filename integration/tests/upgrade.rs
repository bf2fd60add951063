//! A rolling upgrade to the version whose final records release the object fences: what
//! the previous version left in the buckets (records, fences, member keys) and published
//! (messages without the record's revision) is honoured by the new workers, and while a
//! worker of the previous version is a member, the new ones write their fences back as
//! it expects.

use std::time::Duration;

use async_nats::jetstream::kv;
use longshore_contract::envelope::SCHEMA_VERSION;
use longshore_contract::record::State;
use longshore_contract::{Envelope, IdempotencyKey, OperationId, OperationRecord, PoolName};
use longshore_integration::system::System;
use longshore_integration::wait::eventually;
use longshore_worker::fence::{Fence, Holder};
use serde_json::{Value, json};

fn envelope(key: &str, name: &str, value: &str) -> Envelope {
    let key = IdempotencyKey::new(key).unwrap();
    Envelope {
        schema_version: SCHEMA_VERSION,
        id: OperationId::derive("api", &key),
        idempotency_key: key,
        source: "api".into(),
        fingerprint: "f".into(),
        submitted_at: jiff::Timestamp::now(),
        spec: serde_json::from_value(json!({"cluster": "prod", "action": "apply", "manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": name, "namespace": "default"}, "data": {"v": value}}]}))
        .unwrap(),
        rollout: None,
    }
}

fn fence_key(name: &str) -> String {
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

struct Buckets {
    js: async_nats::jetstream::Context,
    records: kv::Store,
    objects: kv::Store,
    members: kv::Store,
}

impl Buckets {
    async fn open(system: &System) -> Self {
        let js = async_nats::jetstream::new(async_nats::connect(system.nats.url()).await.unwrap());
        // The worker has created them by the time it pulls: wait for all three.
        let open = |name: &'static str| {
            let js = js.clone();
            async move {
                eventually(Duration::from_secs(20), name, || async {
                    js.get_key_value(name).await.ok()
                })
                .await
                .unwrap()
            }
        };
        Self {
            records: open("LONGSHORE_OPERATIONS").await,
            objects: open("LONGSHORE_OBJECTS").await,
            members: open("LONGSHORE_MEMBERS").await,
            js,
        }
    }

    /// Publishes `envelope` as the previous dispatcher did: no record revision in it.
    async fn publish_as_before(&self, envelope: &Envelope) {
        let (subject, headers, payload) = envelope.to_message(&PoolName::default_pool()).unwrap();
        self.js
            .publish_with_headers(subject, headers, payload)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn put_record(&self, record: &OperationRecord) {
        self.records
            .put(record.id.as_str(), record.to_bytes())
            .await
            .unwrap();
    }

    async fn put_fence(&self, key: &str, fence: &Fence) {
        self.objects
            .put(key, serde_json::to_vec(fence).unwrap().into())
            .await
            .unwrap();
    }

    /// The fence as stored (no holder resolved).
    async fn stored_fence(&self, key: &str) -> Option<Fence> {
        let bytes = self.objects.get(key).await.unwrap()?;
        Some(serde_json::from_slice(&bytes).unwrap())
    }
}

async fn terminal(system: &System, id: &OperationId) -> Value {
    system
        .wait_terminal(id.as_str(), Duration::from_secs(30))
        .await
        .unwrap()
}

fn data(system: &System, name: &str) -> Option<String> {
    system
        .cluster("prod")
        .get("v1", "ConfigMap", Some("default"), name)
        .and_then(|cm| cm["data"]["v"].as_str().map(str::to_owned))
}

fn holder(op: &OperationId, seq: u64, lease_until: jiff::Timestamp) -> Holder {
    Holder {
        op: op.clone(),
        seq,
        worker: "old-worker".into(),
        lease_until,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_previous_version_left_is_honoured() {
    let system = System::start(&["prod"], 1, 1).await.unwrap();
    let b = Buckets::open(&system).await;
    let in_an_hour = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);

    // 1. A message from the previous dispatcher (no record revision), its `queued`
    //    record as that dispatcher wrote it: claimed by reading the record.
    let old = envelope("old-dispatcher", "old-dispatcher", "1");
    b.put_record(&OperationRecord::queued(&old)).await;
    b.publish_as_before(&old).await;
    let record = terminal(&system, &old.id).await;
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(data(&system, "old-dispatcher").as_deref(), Some("1"));

    // 2. A fence an old worker wrote back (holder none, applied by an earlier operation):
    //    the new worker's guess (a new object) is refused, it reads the fence and
    //    advances it.
    let key = fence_key("written-back");
    let earlier = OperationId::derive("api", &IdempotencyKey::new("earlier").unwrap());
    b.put_fence(
        &key,
        &Fence {
            holder: None,
            applied_seq: 1,
            applied_op: Some(earlier),
        },
    )
    .await;
    let next = envelope("after-written-back", "written-back", "2");
    b.put_record(&OperationRecord::queued(&next)).await;
    b.publish_as_before(&next).await;
    let record = terminal(&system, &next.id).await;
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(record["appliedFences"], json!([key]), "{record}");

    // 3. An operation an old worker was running when it died: its record `running`, its
    //    fence held by it with a lease still to run. Redelivered (here: published again),
    //    the new worker claims it from the record and takes the fence back at once.
    let died = envelope("died-running", "died-running", "3");
    let mut running = OperationRecord::queued(&died);
    running.start("old-worker", 1, jiff::Timestamp::now());
    b.put_record(&running).await;
    b.put_fence(
        &fence_key("died-running"),
        &Fence {
            holder: Some(holder(&died.id, 1, in_an_hour)),
            ..Fence::default()
        },
    )
    .await;
    b.publish_as_before(&died).await;
    let record = terminal(&system, &died.id).await;
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(
        record["attempts"], 2,
        "the old worker's start counts: {record}"
    );
    assert_eq!(data(&system, "died-running").as_deref(), Some("3"));

    // 4. A fence an old worker could not write back (its release failed) but whose
    //    operation's record is final: the record releases it, no lease to wait for.
    let ended = envelope("ended-unreleased", "ended-unreleased", "4");
    let mut done = OperationRecord::queued(&ended);
    done.start("old-worker", 1, jiff::Timestamp::now());
    done.finish(
        longshore_contract::record::End::Succeeded,
        Vec::new(),
        "old-worker",
        jiff::Timestamp::now(),
    );
    b.put_record(&done).await;
    let key = fence_key("ended-unreleased");
    b.put_fence(
        &key,
        &Fence {
            holder: Some(holder(&ended.id, 1, in_an_hour)),
            ..Fence::default()
        },
    )
    .await;
    let after = envelope("after-ended", "ended-unreleased", "5");
    b.put_record(&OperationRecord::queued(&after)).await;
    b.publish_as_before(&after).await;
    let record = terminal(&system, &after.id).await;
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(record["attempts"], 1, "no wait for the lease: {record}");
    assert_eq!(data(&system, "ended-unreleased").as_deref(), Some("5"));

    // 5. A fence held by an old worker's operation that is still running: the new
    //    operation waits (handed back) until the old worker writes the fence back.
    let busy = envelope("still-running", "held", "6");
    let mut busy_record = OperationRecord::queued(&busy);
    busy_record.start("old-worker", 1, jiff::Timestamp::now());
    b.put_record(&busy_record).await;
    let key = fence_key("held");
    b.put_fence(
        &key,
        &Fence {
            holder: Some(holder(&busy.id, 1, in_an_hour)),
            ..Fence::default()
        },
    )
    .await;
    let waiting = envelope("waits-for-old", "held", "7");
    b.put_record(&OperationRecord::queued(&waiting)).await;
    b.publish_as_before(&waiting).await;
    // Handed back at least once: its record shows the wait.
    let record = eventually(Duration::from_secs(20), "the operation to wait", || async {
        let record = system.status(waiting.id.as_str()).await.ok()?;
        (record["state"] != "succeeded" && record["attempts"].as_u64() >= Some(1)).then_some(record)
    })
    .await
    .unwrap();
    assert_eq!(
        data(&system, "held"),
        None,
        "not written meanwhile: {record}"
    );
    // The old worker writes the fence back, as it did.
    b.put_fence(
        &key,
        &Fence {
            holder: None,
            applied_seq: 1,
            applied_op: Some(busy.id.clone()),
        },
    )
    .await;
    let record = terminal(&system, &waiting.id).await;
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(data(&system, "held").as_deref(), Some("7"));
    assert_eq!(
        State::Running,
        serde_json::from_value::<OperationRecord>(system.status(busy.id.as_str()).await.unwrap())
            .map_or(State::Running, |r| r.state),
        "the old operation's record is the old worker's to end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_worker_of_the_previous_version_is_a_member_fences_are_written_back() {
    let system = System::start(&["prod"], 1, 1).await.unwrap();
    let b = Buckets::open(&system).await;
    let key = fence_key("shared");

    // Alone, the new worker leaves its fences to its final records: the stored fence
    // still names the last holder, which has ended.
    let (id, stored) = apply_shared(&system, &b, &key).await;
    assert_eq!(stored.holder.map(|h| h.op.to_string()), Some(id));

    // A member of the previous version (no `fences` in its key): from when the worker
    // sees it, each fence is written back, holder none and applied advanced.
    let now = jiff::Timestamp::now();
    let old =
        json!({"pool": "workers", "worker": "old-worker", "startedAt": now, "heartbeatAt": now});
    b.members
        .put(
            "workers.old-worker",
            serde_json::to_vec(&old).unwrap().into(),
        )
        .await
        .unwrap();
    let (id, stored) = eventually(Duration::from_secs(20), "a fence written back", || async {
        let (id, stored) = apply_shared(&system, &b, &key).await;
        stored.holder.is_none().then_some((id, stored))
    })
    .await
    .unwrap();
    assert_eq!(stored.applied_op.map(|op| op.to_string()), Some(id));

    // The old member gone, final records release the fences again.
    b.members.delete("workers.old-worker").await.unwrap();
    eventually(
        Duration::from_secs(20),
        "a fence left to the record",
        || async {
            let (id, stored) = apply_shared(&system, &b, &key).await;
            (stored.holder.map(|h| h.op.to_string()) == Some(id)).then_some(())
        },
    )
    .await
    .unwrap();
}

/// Applies the ConfigMap `shared` once more (a new operation); its id and the fence as
/// stored after it.
async fn apply_shared(system: &System, b: &Buckets, key: &str) -> (String, Fence) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = json!({"cluster": "prod", "action": "apply", "manifests": [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "shared", "namespace": "default"}, "data": {"v": n.to_string()}}]});
    let id = system
        .accept(0, &body, Some(&format!("shared-{n}")))
        .await
        .unwrap();
    let record = system
        .wait_terminal(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(data(system, "shared"), Some(n.to_string()));
    (id, b.stored_fence(key).await.unwrap())
}
