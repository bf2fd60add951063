//! What stops a worker from starting, with an error that says why.

mod support;

use std::time::Duration;

use longshore_contract::jetstream::{PoolConsumer, ensure_consumer};
use support::Fixture;

#[tokio::test]
async fn a_pool_overlapping_another_on_the_work_queue_is_refused_at_start() {
    let fx = Fixture::start().await;
    let stream = fx
        .js
        .get_stream(longshore_contract::jetstream::STREAM)
        .await
        .unwrap();
    ensure_consumer(
        &stream,
        &PoolConsumer {
            name: "private".into(),
            filter_subjects: vec!["longshore.ops.prod".into()],
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            max_ack_pending: 100,
            replicas: 1,
        },
    )
    .await
    .unwrap();

    // The default pool serves every cluster, which overlaps the pool above.
    let run = longshore_worker::run(fx.config("w1"), std::future::pending());
    let err = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("refused at once, not retried")
        .unwrap_err();
    assert!(
        matches!(
            err,
            longshore_worker::Error::Provision(
                longshore_contract::jetstream::ProvisionError::Consumer { .. }
            )
        ),
        "{err}"
    );
    assert!(err.to_string().contains("must not overlap"), "{err}");
}

#[tokio::test]
async fn invalid_configuration_is_refused_before_connecting() {
    let mut config = longshore_worker::Config::default();
    config.clusters.kubeconfig = Some("/nonexistent".into());
    config.pool.concurrency = 0;
    let err = longshore_worker::run(config, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: pool.concurrency: must be at least 1"
    );
}
