//! The worker against a real nats-server and kube-sim: what reaches the cluster, what the
//! status record says, and how retries and shutdown behave.

mod support;

use std::time::Duration;

use longshore_contract::record::{ErrorClass, Outcome, State};
use longshore_contract::spec::Action;
use longshore_kube_sim::{ErrorFault, FaultScope, Faults, Latency, Trigger, WriteVerb};
use support::{Fixture, RunningWorker, configmap, envelope, eventually};

#[tokio::test]
async fn apply_creates_the_object_once_and_a_redelivery_does_not_touch_the_cluster() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));

    let op = envelope(Action::Apply, vec![configmap("web", "1")]);
    fx.submit(&op).await;
    let record = fx.finished(&op.id).await;

    assert_eq!(record.state, State::Succeeded, "{record:?}");
    assert_eq!(record.attempts, 1);
    assert_eq!(record.worker.as_deref(), Some("w1"));
    assert!(record.stream_sequence.is_some());
    assert_eq!(record.results.len(), 1);
    let result = &record.results[0];
    assert_eq!(result.outcome, Outcome::Created);
    assert_eq!(result.namespace.as_deref(), Some("default"));
    assert!(result.resource_version.is_some() && result.uid.is_some());

    let stored = fx
        .prod()
        .get("v1", "ConfigMap", Some("default"), "web")
        .expect("the ConfigMap exists");
    assert_eq!(stored["data"]["key"], "1");
    assert_eq!(
        stored["metadata"]["annotations"][longshore_worker::OPERATION_ID_ANNOTATION],
        op.id.as_str()
    );
    let writes = fx.writes_by(&op.id);
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].verb, WriteVerb::Apply);

    // The same operation delivered again (its first worker died before the ack landed):
    // acknowledged from its terminal record, without a single request to the cluster.
    let before = fx.prod().writes().len();
    fx.publish(&op).await;
    eventually("the redelivered message acknowledged", || async {
        (fx.queued_messages().await == 0).then_some(())
    })
    .await;
    assert_eq!(fx.prod().writes().len(), before);
    assert_eq!(fx.record(&op.id).await.unwrap(), record, "record untouched");

    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn a_new_operation_reconfigures_and_redoing_the_same_one_changes_nothing() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));

    let first = envelope(Action::Apply, vec![configmap("web", "1")]);
    fx.submit(&first).await;
    assert_eq!(
        fx.finished(&first.id).await.results[0].outcome,
        Outcome::Created
    );

    // A new operation is a new intent: it stamps its own id, so the object changes.
    let second = envelope(Action::Apply, vec![configmap("web", "1")]);
    fx.submit(&second).await;
    let record = fx.finished(&second.id).await;
    assert_eq!(record.results[0].outcome, Outcome::Configured);

    // The worker died after applying but before recording: the record still says
    // running. Redelivered, the same operation applies again and changes nothing.
    let mut running = record.clone();
    running.state = State::Running;
    fx.records
        .put(second.id.as_str(), running.to_bytes())
        .await
        .unwrap();
    fx.publish(&second).await;
    let redone = eventually("the redelivery recorded", || async {
        fx.record(&second.id)
            .await
            .filter(|r| r.state.is_terminal() && r.attempts == 2)
    })
    .await;
    assert_eq!(redone.state, State::Succeeded);
    assert_eq!(redone.results[0].outcome, Outcome::Unchanged);
    let changed = fx
        .writes_by(&second.id)
        .iter()
        .filter(|w| w.changed)
        .count();
    assert_eq!(changed, 1, "one effect for the operation");
    worker.stop().await.expect("clean drain");
}

/// A first attempt does not read an object before applying it (nothing can have stamped it
/// for the operation yet), but an operation that names the object twice has written it
/// once already by its second manifest: that one is read first and found unchanged.
#[tokio::test]
async fn an_object_named_twice_in_one_operation_is_unchanged_the_second_time() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));

    let op = envelope(
        Action::Apply,
        vec![configmap("twice", "1"), configmap("twice", "1")],
    );
    fx.submit(&op).await;
    let record = fx.finished(&op.id).await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    let outcomes: Vec<_> = record.results.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::Created, Outcome::Unchanged]);
    assert_eq!(
        record.results[0].resource_version,
        record.results[1].resource_version
    );
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn an_invalid_manifest_fails_at_once_with_the_api_servers_reason() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));

    let op = envelope(Action::Apply, vec![configmap("Not_A_Name", "1")]);
    fx.submit(&op).await;
    let record = fx.finished(&op.id).await;

    assert_eq!(record.state, State::Failed);
    assert_eq!(record.attempts, 1, "a permanent failure is not retried");
    let error = record.error.expect("an error");
    assert_eq!(error.class, ErrorClass::Invalid);
    assert!(error.message.contains("metadata.name"), "{}", error.message);
    eventually("the message acknowledged", || async {
        (fx.queued_messages().await == 0).then_some(())
    })
    .await;
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn a_503_is_retried_through_the_queue_then_succeeds() {
    let fx = Fixture::start().await;
    fx.prod().set_faults(Faults {
        scope: FaultScope::Writes,
        errors: vec![ErrorFault {
            status: 503,
            retry_after_seconds: None,
            when: Trigger::next(2),
        }],
        ..Default::default()
    });
    let worker = RunningWorker::start(fx.config("w1"));

    let op = envelope(Action::Apply, vec![configmap("web", "1")]);
    fx.submit(&op).await;
    let record = fx.finished(&op.id).await;

    assert_eq!(record.state, State::Succeeded, "{record:?}");
    assert_eq!(record.attempts, 3, "two 503s, then success");
    assert_eq!(record.results[0].outcome, Outcome::Created);
    // Faulted requests are refused before their body is read, so count them by code.
    let writes = fx.prod().writes();
    let faulted = writes.iter().filter(|w| w.code == 503).count();
    let changed = fx.writes_by(&op.id).iter().filter(|w| w.changed).count();
    assert_eq!((faulted, changed), (2, 1), "{writes:?}");
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn an_operation_for_a_cluster_the_worker_does_not_know_fails() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));

    let mut op = envelope(Action::Apply, vec![configmap("web", "1")]);
    op.spec.cluster = longshore_contract::ClusterName::new("mars").unwrap();
    fx.submit(&op).await;
    let record = fx.finished(&op.id).await;

    assert_eq!(record.state, State::Failed);
    assert_eq!(record.error.unwrap().class, ErrorClass::UnknownCluster);
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn shutdown_lets_a_running_operation_finish_within_the_grace_period() {
    let fx = Fixture::start().await;
    fx.prod().set_faults(Faults {
        scope: FaultScope::Writes,
        latency: Some(Latency {
            min_ms: 1000,
            max_ms: None,
        }),
        ..Default::default()
    });
    let worker = RunningWorker::start(fx.config("w1"));
    let op = envelope(Action::Apply, vec![configmap("web", "1")]);
    fx.submit(&op).await;
    eventually("the operation running", || async {
        fx.record(&op.id)
            .await
            .filter(|r| r.state == State::Running)
    })
    .await;

    worker.stop().await.expect("clean drain");

    let record = fx.record(&op.id).await.unwrap();
    assert_eq!(record.state, State::Succeeded, "finished during the drain");
    assert_eq!(fx.queued_messages().await, 0, "and acknowledged");
}

#[tokio::test]
async fn shutdown_hands_back_what_outlives_the_grace_period_for_another_replica() {
    let fx = Fixture::start().await;
    fx.prod().set_faults(Faults {
        scope: FaultScope::Writes,
        latency: Some(Latency {
            min_ms: 20_000,
            max_ms: None,
        }),
        ..Default::default()
    });
    let mut config = fx.config("w1");
    config.drain_grace = Duration::from_secs(2);
    let first = RunningWorker::start(config);
    let op = envelope(Action::Apply, vec![configmap("web", "1")]);
    fx.submit(&op).await;
    eventually("the operation running", || async {
        fx.record(&op.id)
            .await
            .filter(|r| r.state == State::Running)
    })
    .await;

    first.stop().await.expect("clean drain");
    assert_eq!(fx.record(&op.id).await.unwrap().state, State::Running);

    // Handed back, not left to wait out ack_wait (30s): a second replica finishes it well
    // within the 10s `eventually` bound.
    fx.prod().set_faults(Faults::default());
    let second = RunningWorker::start(fx.config("w2"));
    let record = fx.finished(&op.id).await;
    assert_eq!(record.state, State::Succeeded);
    assert_eq!(record.worker.as_deref(), Some("w2"));
    assert_eq!(record.attempts, 2);
    second.stop().await.expect("clean drain");
}

#[tokio::test]
async fn a_slow_operation_signals_progress_and_is_not_redelivered_meanwhile() {
    let fx = Fixture::start().await;
    fx.prod().set_faults(Faults {
        scope: FaultScope::Writes,
        latency: Some(Latency {
            min_ms: 3000,
            max_ms: None,
        }),
        ..Default::default()
    });
    let mut config = fx.config("w1");
    config.pool.ack_wait = Duration::from_secs(1);
    let worker = RunningWorker::start(config);

    let op = envelope(Action::Apply, vec![configmap("web", "1")]);
    fx.submit(&op).await;
    let record = fx.finished(&op.id).await;

    // Without progress signals the message would be delivered again after 1s, to another
    // slot of this same worker, which would claim it a second time.
    assert_eq!(record.state, State::Succeeded);
    assert_eq!(record.attempts, 1, "{record:?}");
    assert_eq!(fx.writes_by(&op.id).len(), 1);
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn shutdown_hands_back_what_reaches_the_pull_pending_at_shutdown() {
    let fx = Fixture::start().await;
    let mut config = fx.config("w1");
    // One slot, one message per pull: the message ends the pull request at once, so the
    // worker exits right after handing it back.
    config.pool.concurrency = 1;
    config.pool.pull_batch = 1;
    let mut consumer = fx.pool_consumer(&config).await;
    let first = RunningWorker::start(config);
    eventually("w1's pull request waiting at the server", || {
        let mut consumer = consumer.clone();
        async move { (consumer.info().await.ok()?.num_waiting > 0).then_some(()) }
    })
    .await;

    // Shutdown is requested as the operation reaches the pull still open at the server:
    // whichever the worker sees first, the operation must not wait for ack_wait.
    let op = envelope(Action::Apply, vec![configmap("web", "1")]);
    let (stopped, ()) = tokio::join!(first.stop(), fx.submit(&op));
    stopped.expect("clean drain");

    // No pull request left open, and the message handed back rather than left to wait out
    // ack_wait (30s): a second replica finishes it within the 10s `eventually` bound.
    assert_eq!(consumer.info().await.unwrap().num_waiting, 0);
    let second = RunningWorker::start(fx.config("w2"));
    let record = fx.finished(&op.id).await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    assert_eq!(fx.writes_by(&op.id).len(), 1);
    second.stop().await.expect("clean drain");
}
