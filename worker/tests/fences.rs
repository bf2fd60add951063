//! Latest intent wins, per object: fences in the objects bucket order operations on one
//! object by stream sequence, make concurrent ones take turns, and expire with their lease.

mod support;

use std::collections::BTreeMap;

use async_nats::jetstream::AckKind;
use longshore_contract::record::{Outcome, State};
use longshore_contract::spec::{Action, ObjectRef, PatchSpec, PatchType};
use longshore_contract::{IdempotencyKey, OperationId};
use longshore_kube_sim::{FaultScope, Faults, Latency, Trigger, WriteVerb};
use longshore_worker::fence::{Fence, Holder};
use serde_json::json;
use support::{Fixture, RunningWorker, configmap, configmap_fence, envelope, eventually, pull_one};

fn other_op() -> OperationId {
    OperationId::derive("test", &IdempotencyKey::new("someone else").unwrap())
}

fn held_by(op: &OperationId, lease_until: jiff::Timestamp) -> Fence {
    Fence {
        holder: Some(Holder {
            op: op.clone(),
            seq: 1,
            worker: "elsewhere".into(),
            lease_until,
        }),
        ..Default::default()
    }
}

fn data(fx: &Fixture, name: &str) -> serde_json::Value {
    fx.prod()
        .get("v1", "ConfigMap", Some("default"), name)
        .map(|o| o["data"]["key"].clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_older_operation_is_superseded_by_a_newer_one_already_applied() {
    let fx = Fixture::start().await;
    let config = fx.config("w1");
    // A slow replica holds the older operation while the newer one is applied.
    let slow = fx.pool_consumer(&config).await;
    let older = envelope(Action::Apply, vec![configmap("web", "old")]);
    fx.submit(&older).await;
    let held = pull_one(&slow).await;

    let worker = RunningWorker::start(config);
    let newer = envelope(Action::Apply, vec![configmap("web", "new")]);
    fx.submit(&newer).await;
    let newer_record = fx.finished(&newer.id).await;
    assert_eq!(newer_record.state, State::Succeeded, "{newer_record:?}");

    // The slow replica hands the older operation back; a worker now sees it.
    held.ack_with(AckKind::Nak(None)).await.unwrap();
    let record = fx.finished(&older.id).await;

    assert_eq!(record.state, State::Superseded, "{record:?}");
    assert!(record.stream_sequence < newer_record.stream_sequence);
    assert_eq!(record.results.len(), 1);
    assert_eq!(record.results[0].outcome, Outcome::Superseded);
    assert_eq!(data(&fx, "web"), json!("new"), "the newer intent stands");
    assert!(
        fx.writes_by(&older.id).is_empty(),
        "the older one never wrote"
    );
    let fence = fx.fence(&configmap_fence("web")).await.unwrap();
    assert_eq!(fence.holder, None);
    assert_eq!(Some(fence.applied_seq), newer_record.stream_sequence);
    assert_eq!(fence.applied_op, Some(newer.id.clone()));
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn only_the_superseded_objects_of_an_operation_are_left_alone() {
    let fx = Fixture::start().await;
    let key = configmap_fence("taken");
    // A later operation (sequence far ahead) already reached `taken`.
    fx.set_fence(
        &key,
        &Fence {
            applied_seq: 1_000_000,
            ..Default::default()
        },
    )
    .await;
    let worker = RunningWorker::start(fx.config("w1"));
    let op = envelope(
        Action::Apply,
        vec![configmap("taken", "stale"), configmap("free", "1")],
    );
    fx.submit(&op).await;
    let record = fx.finished(&op.id).await;

    assert_eq!(record.state, State::Succeeded, "{record:?}");
    let outcomes: Vec<Outcome> = record.results.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::Superseded, Outcome::Created]);
    assert_eq!(
        fx.prod().get("v1", "ConfigMap", Some("default"), "taken"),
        None
    );
    assert_eq!(data(&fx, "free"), json!("1"));
    let fence = fx.fence(&key).await.unwrap();
    assert_eq!(
        fence.applied_seq, 1_000_000,
        "a superseded object does not advance"
    );
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn a_busy_fence_makes_the_operation_wait_until_it_is_released() {
    let fx = Fixture::start().await;
    let key = configmap_fence("web");
    let in_an_hour = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    fx.set_fence(&key, &held_by(&other_op(), in_an_hour)).await;
    let worker = RunningWorker::start(fx.config("w1"));

    let op = envelope(Action::Apply, vec![configmap("web", "1")]);
    fx.submit(&op).await;
    // It goes back to the queue and comes again, without writing.
    let waiting = eventually("the operation retried", || async {
        fx.record(&op.id).await.filter(|r| r.attempts >= 2)
    })
    .await;
    assert_eq!(waiting.state, State::Running);
    assert!(fx.writes_by(&op.id).is_empty());

    // The other operation releases the object: this one goes ahead.
    fx.set_fence(&key, &Fence::default()).await;
    let record = fx.finished(&op.id).await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    assert_eq!(data(&fx, "web"), json!("1"));
    let fence = fx.fence(&key).await.unwrap();
    assert_eq!(fence.holder, None);
    assert_eq!(Some(fence.applied_seq), record.stream_sequence);
    assert_eq!(fence.applied_op, Some(op.id.clone()));
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let fx = Fixture::start().await;
    let key = configmap_fence("web");
    let a_minute_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(1);
    fx.set_fence(&key, &held_by(&other_op(), a_minute_ago))
        .await;
    let worker = RunningWorker::start(fx.config("w1"));

    let op = envelope(Action::Apply, vec![configmap("web", "1")]);
    fx.submit(&op).await;
    let record = fx.finished(&op.id).await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    assert_eq!(record.attempts, 1, "no waiting for a dead holder");
    assert_eq!(
        fx.fence(&key).await.unwrap().applied_op,
        Some(op.id.clone())
    );
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn fences_are_taken_in_key_order_and_given_back_when_one_is_busy() {
    let fx = Fixture::start().await;
    let fences = fx.fences("w1").await;
    let (a, b) = (configmap_fence("a"), configmap_fence("b"));
    let (first, second) = if a < b { (a, b) } else { (b, a) };
    let in_an_hour = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let op = envelope(Action::Apply, vec![]).id;

    // The first key is busy: nothing else is touched, whatever order the objects came in.
    fx.set_fence(&first, &held_by(&other_op(), in_an_hour))
        .await;
    let objects = BTreeMap::from([
        (second.clone(), "second".to_owned()),
        (first.clone(), "first".to_owned()),
    ]);
    let err = fences.acquire(&op, 10, &objects).await.err().unwrap();
    assert!(err.to_string().contains("first"), "{err}");
    assert_eq!(
        fx.fence(&second).await,
        None,
        "never tried past the busy one"
    );

    // The second key is busy: the first, taken meanwhile, is let go again.
    fx.set_fence(&first, &Fence::default()).await;
    fx.set_fence(&second, &held_by(&other_op(), in_an_hour))
        .await;
    let err = fences.acquire(&op, 10, &objects).await.err().unwrap();
    assert!(err.to_string().contains("second"), "{err}");
    assert_eq!(fx.fence(&first).await.unwrap().holder, None);

    // Both free: both held by this operation, then released with applied_seq advanced.
    fx.set_fence(&second, &Fence::default()).await;
    let guard = fences.acquire(&op, 10, &objects).await.unwrap();
    for key in [&first, &second] {
        let held = fx.fence(key).await.unwrap().holder.unwrap();
        assert_eq!((held.op.clone(), held.seq), (op.clone(), 10));
    }
    guard.release(&[first.clone()].into()).await;
    let (f1, f2) = (
        fx.fence(&first).await.unwrap(),
        fx.fence(&second).await.unwrap(),
    );
    assert_eq!((f1.holder, f1.applied_seq), (None, 10));
    assert_eq!(
        (f2.holder, f2.applied_seq),
        (None, 0),
        "not applied: not advanced"
    );
}

#[tokio::test]
async fn two_operations_over_the_same_objects_in_opposite_order_both_finish() {
    let fx = Fixture::start().await;
    // Slow writes make the two operations overlap.
    fx.prod().set_faults(Faults {
        scope: FaultScope::Writes,
        latency: Some(Latency {
            min_ms: 150,
            max_ms: None,
        }),
        ..Default::default()
    });
    let worker = RunningWorker::start(fx.config("w1"));
    let one = envelope(
        Action::Apply,
        vec![configmap("a", "1"), configmap("b", "1")],
    );
    let two = envelope(
        Action::Apply,
        vec![configmap("b", "2"), configmap("a", "2")],
    );
    fx.submit(&one).await;
    fx.submit(&two).await;

    // Neither waits for the other forever: both finish. If the older one comes second it
    // is superseded; either way the newer intent stands on both objects.
    let (r1, r2) = (fx.finished(&one.id).await, fx.finished(&two.id).await);
    assert!(
        matches!(r1.state, State::Succeeded | State::Superseded),
        "{r1:?}"
    );
    assert_eq!(r2.state, State::Succeeded, "{r2:?}");
    assert_eq!((data(&fx, "a"), data(&fx, "b")), (json!("2"), json!("2")));
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn a_redelivery_after_a_crash_takes_its_own_fence_back_and_has_one_effect() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));
    let op = envelope(Action::Apply, vec![configmap("web", "1")]);
    fx.submit(&op).await;
    let done = fx.finished(&op.id).await;

    // As a worker that died after writing leaves things: the record running, the fence
    // held by this operation with a live lease.
    let mut running = done.clone();
    running.state = State::Running;
    fx.records
        .put(op.id.as_str(), running.to_bytes())
        .await
        .unwrap();
    let in_an_hour = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    fx.set_fence(&configmap_fence("web"), &held_by(&op.id, in_an_hour))
        .await;
    fx.publish(&op).await;

    let redone = eventually("the redelivery recorded", || async {
        fx.record(&op.id)
            .await
            .filter(|r| r.state.is_terminal() && r.attempts == 2)
    })
    .await;
    assert_eq!(redone.state, State::Succeeded, "{redone:?}");
    assert_eq!(redone.results[0].outcome, Outcome::Unchanged);
    let changed = fx.writes_by(&op.id).iter().filter(|w| w.changed).count();
    assert_eq!(changed, 1, "one effect for the operation");
    assert_eq!(
        fx.fence(&configmap_fence("web")).await.unwrap().holder,
        None
    );
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn a_write_committed_behind_a_reset_connection_is_not_repeated() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));
    let mut base = configmap("web", "1");
    base["metadata"]["finalizers"] = json!(["example.com/first"]);
    let setup = envelope(Action::Apply, vec![base]);
    fx.submit(&setup).await;
    assert_eq!(fx.finished(&setup.id).await.state, State::Succeeded);

    // The API server commits the next write, then drops the connection before answering.
    fx.prod().set_faults(Faults {
        scope: FaultScope::Writes,
        reset_after_commit: Some(Trigger::next(1)),
        ..Default::default()
    });
    // Appending to a list is not idempotent: sent twice, it would append twice.
    let mut op = envelope(Action::Patch, vec![]);
    op.spec.targets = vec![ObjectRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: None,
        name: "web".into(),
    }];
    op.spec.patch = Some(PatchSpec {
        patch_type: PatchType::Json,
        body: json!([{"op": "add", "path": "/metadata/finalizers/-", "value": "example.com/second"}]),
    });
    fx.submit(&op).await;
    let record = fx.finished(&op.id).await;

    assert_eq!(record.state, State::Succeeded, "{record:?}");
    assert_eq!(record.attempts, 2, "the lost answer was retried");
    // A JSON patch body is a list, with no annotations to find it by: count the patches.
    let writes: Vec<_> = fx
        .prod()
        .writes()
        .into_iter()
        .filter(|w| w.verb == WriteVerb::Patch && w.name.as_deref() == Some("web"))
        .collect();
    assert_eq!(writes.iter().filter(|w| w.changed).count(), 1, "{writes:?}");
    assert_eq!(
        writes
            .iter()
            .filter(|w| w.fault.as_deref() == Some("reset_after_commit"))
            .count(),
        1,
        "the fault fired: {writes:?}"
    );
    let stored = fx
        .prod()
        .get("v1", "ConfigMap", Some("default"), "web")
        .unwrap();
    assert_eq!(
        stored["metadata"]["finalizers"],
        json!(["example.com/first", "example.com/second"])
    );

    // An apply whose answer is lost the same way re-sends the same content: no change.
    fx.prod().set_faults(Faults {
        scope: FaultScope::Writes,
        reset_after_commit: Some(Trigger::next(1)),
        ..Default::default()
    });
    let apply = envelope(Action::Apply, vec![configmap("other", "1")]);
    fx.submit(&apply).await;
    let record = fx.finished(&apply.id).await;
    assert_eq!((record.state, record.attempts), (State::Succeeded, 2));
    let changed = fx.writes_by(&apply.id).iter().filter(|w| w.changed).count();
    assert_eq!(changed, 1);
    worker.stop().await.expect("clean drain");
}
