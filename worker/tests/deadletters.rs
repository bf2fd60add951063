//! Operations that exhaust their deliveries end in the dead-letter stream, recorded
//! `dead_lettered`, and leave the work queue: whether the last delivery failed in a worker
//! or no worker finished it.

mod support;

use std::time::Duration;

use async_nats::jetstream::AckKind;
use longshore_contract::record::{ErrorClass, State};
use longshore_contract::spec::Action;
use longshore_kube_sim::{ErrorFault, FaultScope, Faults, Trigger};
use support::{Fixture, RunningWorker, configmap, envelope, eventually, pull_one};

#[tokio::test]
async fn a_transient_failure_on_the_last_delivery_is_dead_lettered() {
    let fx = Fixture::start().await;
    fx.prod().set_faults(Faults {
        scope: FaultScope::Writes,
        errors: vec![ErrorFault {
            status: 503,
            retry_after_seconds: None,
            when: Trigger::default(),
        }],
        ..Default::default()
    });
    let mut config = fx.config("w1");
    config.pool.max_deliver = 2;
    let worker = RunningWorker::start(config);

    let op = envelope(Action::Apply, vec![configmap("web", "1")]);
    fx.submit(&op).await;
    let record = fx.finished(&op.id).await;

    assert_eq!(record.state, State::DeadLettered, "{record:?}");
    assert_eq!(record.attempts, 2);
    let error = record.error.expect("an error");
    assert_eq!(error.class, ErrorClass::Transient);
    assert!(error.message.contains("2 deliveries"), "{}", error.message);
    let letter = fx.dead_letter(&op).await.expect("a dead letter");
    assert_eq!(letter.id, op.id.as_str());
    assert_eq!(letter.cluster, "prod");
    assert_eq!(letter.deliveries, Some(2));
    assert_eq!(letter.original_sequence, record.stream_sequence);
    assert!(letter.reason.contains("2 deliveries"), "{}", letter.reason);
    let original = longshore_contract::Envelope::from_message(None, &letter.payload).unwrap();
    assert_eq!(original, op, "the envelope as it was queued");
    assert_eq!(fx.dead_letter_count().await, 1);
    eventually("the work queue empty", || async {
        (fx.queued_messages().await == 0).then_some(())
    })
    .await;
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn an_operation_whose_last_delivery_no_worker_finished_is_swept() {
    let fx = Fixture::start().await;
    let mut config = fx.config("w1");
    config.pool.max_deliver = 2;
    config.pool.ack_wait = Duration::from_secs(1);
    // A first run creates the streams and consumers, then the pool is left without workers.
    let worker = RunningWorker::start(config.clone());
    let warm_up = envelope(Action::Apply, vec![configmap("warm-up", "1")]);
    fx.submit(&warm_up).await;
    fx.finished(&warm_up.id).await;
    worker.stop().await.expect("clean drain");

    // A replica takes the operation twice and dies during the second (last) delivery.
    let consumer = fx.pool_consumer(&config).await;
    let op = envelope(Action::Apply, vec![configmap("web", "1")]);
    fx.submit(&op).await;
    pull_one(&consumer)
        .await
        .ack_with(AckKind::Nak(None))
        .await
        .unwrap();
    let last = pull_one(&consumer).await;
    assert_eq!(last.info().unwrap().delivered, 2);
    drop(last);
    // Once the last delivery's ack_wait is over, the next pull makes JetStream give up on
    // the message: it announces it in an advisory (while no worker listens) and keeps it.
    let advisories = eventually("the max-deliveries advisory kept", || async {
        use futures::StreamExt;
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .ok()?;
        if let Some(Ok(m)) = batch.next().await {
            panic!("delivered beyond max_deliver: {:?}", m.info().unwrap());
        }
        let mut stream = fx
            .js
            .get_stream(longshore_worker::deadletter::ADVISORY_STREAM)
            .await
            .ok()?;
        let kept = stream.info().await.ok()?.state.messages;
        (kept > 0).then_some(kept)
    })
    .await;
    assert_eq!(advisories, 1);
    assert_eq!(fx.queued_messages().await, 1);

    let worker = RunningWorker::start(config);
    let record = fx.finished(&op.id).await;
    assert_eq!(record.state, State::DeadLettered, "{record:?}");
    assert_eq!(record.error.unwrap().class, ErrorClass::Transient);
    let letter = fx.dead_letter(&op).await.expect("a dead letter");
    assert_eq!(letter.id, op.id.as_str());
    assert_eq!(letter.deliveries, Some(2));
    eventually("the message removed from the work queue", || async {
        (fx.queued_messages().await == 0).then_some(())
    })
    .await;
    assert!(fx.writes_by(&op.id).is_empty(), "never applied");
    worker.stop().await.expect("clean drain");
}
