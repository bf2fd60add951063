//! The deploy actions (scale, rollout restart/pause/resume/undo, run-job), dependency
//! ordering, dry-run diffs and wait-for-stable, against kube-sim's rollout simulation.

mod support;

use std::time::Duration;

use longshore_contract::Envelope;
use longshore_contract::record::{ErrorClass, OperationRecord, Outcome, State};
use longshore_contract::spec::{Action, ObjectRef, WaitOptions};
use longshore_kube_sim::{REVISION_ANNOTATION, Rollouts, WriteVerb};
use serde_json::{Value, json};
use support::{Fixture, RunningWorker, configmap, envelope, eventually};

fn deployment(name: &str, replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    })
}

fn deployment_ref(name: &str) -> ObjectRef {
    ObjectRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        namespace: None,
        name: name.into(),
    }
}

fn on(action: Action, name: &str) -> Envelope {
    let mut op = envelope(action, vec![]);
    op.spec.targets = vec![deployment_ref(name)];
    op
}

fn waiting(mut op: Envelope, timeout: Duration) -> Envelope {
    op.spec.options.wait = Some(WaitOptions { timeout });
    op
}

async fn run_op(fx: &Fixture, op: &Envelope) -> OperationRecord {
    fx.submit(op).await;
    fx.finished(&op.id).await
}

/// Delivers `op` again as if its worker had died after acting but before recording.
async fn redeliver(fx: &Fixture, op: &Envelope, done: &OperationRecord) -> OperationRecord {
    let mut running = done.clone();
    running.state = State::Running;
    fx.records
        .put(op.id.as_str(), running.to_bytes())
        .await
        .unwrap();
    fx.publish(op).await;
    let attempts = done.attempts + 1;
    eventually("the redelivered operation recorded", || async {
        fx.record(&op.id)
            .await
            .filter(|r| r.state.is_terminal() && r.attempts == attempts)
    })
    .await
}

fn get_deployment(fx: &Fixture, name: &str) -> Value {
    fx.prod()
        .get("apps/v1", "Deployment", Some("default"), name)
        .expect("deployment exists")
}

#[tokio::test]
async fn apply_writes_dependencies_first_and_delete_goes_in_reverse() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    let in_team = |mut m: Value| {
        m["metadata"]["namespace"] = json!("team");
        m
    };
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}});
    // Submitted workloads first: in this order, the namespace would not exist yet.
    let op = envelope(
        Action::Apply,
        vec![
            in_team(deployment("web", 1, "web:1")),
            in_team(service),
            in_team(configmap("settings", "1")),
            namespace,
        ],
    );
    let record = run_op(&fx, &op).await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    let applied: Vec<&str> = record.results.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(applied, ["Namespace", "ConfigMap", "Service", "Deployment"]);
    let written: Vec<String> = fx.writes_by(&op.id).into_iter().map(|w| w.kind).collect();
    assert_eq!(written, applied);

    let mut delete = op.clone();
    delete.id = envelope(Action::Delete, vec![]).id;
    delete.spec.action = Action::Delete;
    let record = run_op(&fx, &delete).await;
    let deleted: Vec<&str> = record.results.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(deleted, ["Deployment", "Service", "ConfigMap", "Namespace"]);
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn scale_sets_an_absolute_count_once_and_its_dry_run_shows_the_change() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));
    run_op(
        &fx,
        &envelope(Action::Apply, vec![deployment("web", 2, "web:1")]),
    )
    .await;

    let mut dry = on(Action::Scale, "web");
    dry.spec.params.replicas = Some(7);
    dry.spec.options.dry_run = true;
    let record = run_op(&fx, &dry).await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    let diff = record.results[0]
        .diff
        .as_ref()
        .expect("a dry run has a diff");
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert_eq!(diff[0].path, "spec.replicas");
    assert_eq!(
        (diff[0].before.clone(), diff[0].after.clone()),
        (Some(json!(2)), Some(json!(7)))
    );
    assert_eq!(get_deployment(&fx, "web")["spec"]["replicas"], 2);

    let mut op = on(Action::Scale, "web");
    op.spec.params.replicas = Some(5);
    let record = run_op(&fx, &op).await;
    assert_eq!(record.results[0].outcome, Outcome::Configured, "{record:?}");
    assert!(
        record.results[0].diff.is_none(),
        "only dry runs carry diffs"
    );
    assert_eq!(get_deployment(&fx, "web")["spec"]["replicas"], 5);

    let again = redeliver(&fx, &op, &record).await;
    assert_eq!(again.state, State::Succeeded);
    assert_eq!(again.results[0].outcome, Outcome::Unchanged);
    let scales = fx
        .prod()
        .writes()
        .into_iter()
        .filter(|w| w.verb == WriteVerb::Scale && w.changed)
        .count();
    assert_eq!(scales, 1, "the redelivery did not scale again");
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn restart_stamps_the_template_once_per_operation() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));
    run_op(
        &fx,
        &envelope(Action::Apply, vec![deployment("web", 1, "web:1")]),
    )
    .await;
    let generation = |fx: &Fixture| get_deployment(fx, "web")["metadata"]["generation"].clone();
    let before = generation(&fx);

    let op = on(Action::RolloutRestart, "web");
    let record = run_op(&fx, &op).await;
    assert_eq!(record.results[0].outcome, Outcome::Configured, "{record:?}");
    let template =
        get_deployment(&fx, "web")["spec"]["template"]["metadata"]["annotations"].clone();
    assert_eq!(
        template[longshore_worker::OPERATION_ID_ANNOTATION],
        op.id.as_str()
    );
    assert_eq!(
        template["kubectl.kubernetes.io/restartedAt"],
        op.submitted_at.to_string()
    );
    let restarted = generation(&fx);
    assert_ne!(restarted, before, "a template change is a new generation");

    let again = redeliver(&fx, &op, &record).await;
    assert_eq!(again.results[0].outcome, Outcome::Unchanged);
    assert_eq!(generation(&fx), restarted, "not restarted twice");
    assert_eq!(fx.writes_by(&op.id).iter().filter(|w| w.changed).count(), 1);
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn pause_and_resume_set_paused_and_leave_a_deployment_already_so() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));
    run_op(
        &fx,
        &envelope(Action::Apply, vec![deployment("web", 1, "web:1")]),
    )
    .await;

    let mut dry = on(Action::RolloutPause, "web");
    dry.spec.options.dry_run = true;
    let record = run_op(&fx, &dry).await;
    let diff = record.results[0].diff.clone().unwrap();
    assert!(
        diff.iter()
            .any(|c| c.path == "spec.paused" && c.after == Some(json!(true))),
        "{diff:?}"
    );
    assert_eq!(get_deployment(&fx, "web")["spec"].get("paused"), None);

    let record = run_op(&fx, &on(Action::RolloutPause, "web")).await;
    assert_eq!(record.results[0].outcome, Outcome::Configured, "{record:?}");
    assert_eq!(get_deployment(&fx, "web")["spec"]["paused"], true);
    let record = run_op(&fx, &on(Action::RolloutPause, "web")).await;
    assert_eq!(
        record.results[0].outcome,
        Outcome::Unchanged,
        "already paused"
    );

    let record = run_op(&fx, &on(Action::RolloutResume, "web")).await;
    assert_eq!(record.results[0].outcome, Outcome::Configured, "{record:?}");
    assert_eq!(get_deployment(&fx, "web")["spec"]["paused"], false);
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn undo_rolls_back_to_the_previous_or_a_given_revision_once() {
    let fx = Fixture::start().await;
    fx.prod()
        .set_rollouts(Rollouts::progressing(Duration::from_millis(10)));
    let worker = RunningWorker::start(fx.config("w1"));
    let image = |fx: &Fixture| {
        get_deployment(fx, "web")["spec"]["template"]["spec"]["containers"][0]["image"].clone()
    };
    let revision = |fx: &Fixture| {
        get_deployment(fx, "web")["metadata"]["annotations"][REVISION_ANNOTATION].clone()
    };
    for (version, expected) in [("web:1", "1"), ("web:2", "2")] {
        let op = waiting(
            envelope(Action::Apply, vec![deployment("web", 1, version)]),
            Duration::from_secs(5),
        );
        let record = run_op(&fx, &op).await;
        assert_eq!(record.state, State::Succeeded, "{record:?}");
        eventually("the new revision recorded", || async {
            (revision(&fx) == json!(expected)).then_some(())
        })
        .await;
    }

    let undo = on(Action::RolloutUndo, "web");
    let record = run_op(&fx, &undo).await;
    assert_eq!(record.results[0].outcome, Outcome::Configured, "{record:?}");
    assert_eq!(image(&fx), "web:1");
    eventually("revision 1 comes back as revision 3", || async {
        (revision(&fx) == json!("3")).then_some(())
    })
    .await;
    // A second "previous revision" would be web:2 again: the redelivery must not go there.
    let again = redeliver(&fx, &undo, &record).await;
    assert_eq!(again.results[0].outcome, Outcome::Unchanged);
    assert_eq!(image(&fx), "web:1");

    let mut to = on(Action::RolloutUndo, "web");
    to.spec.params.to_revision = Some(2);
    let record = run_op(&fx, &to).await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    assert_eq!(image(&fx), "web:2");

    let mut missing = on(Action::RolloutUndo, "web");
    missing.spec.params.to_revision = Some(99);
    let record = run_op(&fx, &missing).await;
    assert_eq!(record.state, State::Failed);
    let error = record.error.unwrap();
    assert_eq!(error.class, ErrorClass::Invalid);
    assert!(error.message.contains("revision 99"), "{error:?}");
    worker.stop().await.expect("clean drain");
}

fn job(generate_name: &str) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"generateName": generate_name},
        "spec": {"completions": 2, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "migrate", "image": "migrate:1"}]}}}
    })
}

#[tokio::test]
async fn run_job_creates_one_job_per_operation_and_reports_how_it_ended() {
    let fx = Fixture::start().await;
    fx.prod()
        .set_rollouts(Rollouts::progressing(Duration::from_millis(50)));
    let worker = RunningWorker::start(fx.config("w1"));
    let jobs = |fx: &Fixture| fx.prod().list("batch/v1", "Job", Some("default")).len();

    let op = waiting(
        envelope(Action::RunJob, vec![job("migrate-")]),
        Duration::from_secs(5),
    );
    let record = run_op(&fx, &op).await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    let result = &record.results[0];
    assert_eq!(
        result.name,
        longshore_contract::spec::job_name(&job("migrate-"), &op.id)
    );
    assert_eq!(result.job.as_ref().unwrap().outcome, "complete");
    let again = redeliver(&fx, &op, &record).await;
    assert_eq!(again.state, State::Succeeded);
    assert_eq!(jobs(&fx), 1, "the redelivery found the same Job");

    let started = run_op(&fx, &envelope(Action::RunJob, vec![job("migrate-")])).await;
    assert_eq!(started.results[0].job.as_ref().unwrap().outcome, "running");
    assert_eq!(jobs(&fx), 2, "another operation, another Job");

    fx.prod()
        .set_rollouts(Rollouts::failing(Duration::from_millis(200)));
    let failing = waiting(
        envelope(Action::RunJob, vec![job("broken-")]),
        Duration::from_secs(5),
    );
    let record = run_op(&fx, &failing).await;
    assert_eq!(record.state, State::Failed, "{record:?}");
    assert_eq!(record.error.as_ref().unwrap().class, ErrorClass::Rollout);
    assert!(
        record
            .error
            .unwrap()
            .message
            .contains("BackoffLimitExceeded")
    );
    assert_eq!(record.results[0].job.as_ref().unwrap().outcome, "failed");
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn dry_runs_report_the_changed_fields_and_never_a_secret_value() {
    let fx = Fixture::start().await;
    let worker = RunningWorker::start(fx.config("w1"));
    let secret = |value: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
            "type": "Opaque", "data": {"password": value}})
    };
    run_op(
        &fx,
        &envelope(
            Action::Apply,
            vec![configmap("cm", "1"), secret("b2xkLXNlY3JldA==")],
        ),
    )
    .await;

    let mut op = envelope(
        Action::Apply,
        vec![configmap("cm", "2"), secret("bmV3LXNlY3JldA==")],
    );
    op.spec.options.dry_run = true;
    let record = run_op(&fx, &op).await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    let cm = record.results[0].diff.clone().unwrap();
    let data = cm.iter().find(|c| c.path == "data.key").expect("data.key");
    assert_eq!(
        (data.before.clone(), data.after.clone()),
        (Some(json!("1")), Some(json!("2")))
    );
    let secret_diff = record.results[1].diff.clone().unwrap();
    assert!(
        secret_diff.iter().any(|c| c.path == "data.password"),
        "{secret_diff:?}"
    );
    let stored = String::from_utf8(
        fx.records
            .get(op.id.as_str())
            .await
            .unwrap()
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    for value in ["b2xkLXNlY3JldA==", "bmV3LXNlY3JldA=="] {
        assert!(
            !stored.contains(value),
            "secret value in the record: {stored}"
        );
    }
    assert_eq!(
        fx.prod()
            .get("v1", "ConfigMap", Some("default"), "cm")
            .unwrap()["data"]["key"],
        "1",
        "nothing written"
    );

    let mut delete = envelope(Action::Delete, vec![configmap("cm", "1")]);
    delete.spec.options.dry_run = true;
    let record = run_op(&fx, &delete).await;
    let gone = record.results[0].diff.clone().unwrap();
    assert!(
        gone.iter()
            .any(|c| c.path == "data.key" && c.after.is_none()),
        "{gone:?}"
    );
    assert!(
        fx.prod()
            .get("v1", "ConfigMap", Some("default"), "cm")
            .is_some()
    );
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn a_wait_succeeds_when_the_rollout_completes_showing_progress_meanwhile() {
    let fx = Fixture::start().await;
    fx.prod()
        .set_rollouts(Rollouts::progressing(Duration::from_millis(300)));
    let worker = RunningWorker::start(fx.config("w1"));
    let op = waiting(
        envelope(Action::Apply, vec![deployment("web", 3, "web:1")]),
        Duration::from_secs(8),
    );
    fx.submit(&op).await;
    let progress = eventually("progress shown while waiting", || async {
        fx.record(&op.id)
            .await
            .filter(|r| r.state == State::Running)
            .and_then(|r| r.progress)
            .filter(|p| p.contains("/3 replicas updated"))
    })
    .await;
    assert!(progress.contains("Deployment default/web"), "{progress}");
    let record = fx.finished(&op.id).await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    assert_eq!(get_deployment(&fx, "web")["status"]["availableReplicas"], 3);
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn a_wait_fails_with_the_reason_when_the_rollout_exceeds_its_deadline() {
    let fx = Fixture::start().await;
    fx.prod()
        .set_rollouts(Rollouts::failing(Duration::from_millis(300)));
    let worker = RunningWorker::start(fx.config("w1"));
    let op = waiting(
        envelope(Action::Apply, vec![deployment("web", 2, "web:1")]),
        Duration::from_secs(8),
    );
    let record = run_op(&fx, &op).await;
    assert_eq!(record.state, State::Failed, "{record:?}");
    assert_eq!(record.attempts, 1, "a failed rollout is not retried");
    let error = record.error.unwrap();
    assert_eq!(error.class, ErrorClass::Rollout);
    assert!(
        error.message.contains("ProgressDeadlineExceeded"),
        "{error:?}"
    );
    assert_eq!(
        record.results[0].outcome,
        Outcome::Created,
        "the change is in"
    );
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn a_wait_times_out_on_a_stuck_rollout_saying_how_far_it_got() {
    let fx = Fixture::start().await;
    fx.prod().set_rollouts(Rollouts::stuck());
    let worker = RunningWorker::start(fx.config("w1"));
    let op = waiting(
        envelope(Action::Apply, vec![deployment("web", 2, "web:1")]),
        Duration::from_secs(1),
    );
    let record = run_op(&fx, &op).await;
    assert_eq!(record.state, State::Failed, "{record:?}");
    let error = record.error.unwrap();
    assert_eq!(error.class, ErrorClass::Timeout);
    assert!(error.message.contains("0/2 replicas updated"), "{error:?}");
    worker.stop().await.expect("clean drain");
}

#[tokio::test]
async fn a_wait_longer_than_ack_wait_is_not_redelivered() {
    let fx = Fixture::start().await;
    // Five replicas, one a second: about five seconds, more than twice the ack wait.
    fx.prod()
        .set_rollouts(Rollouts::progressing(Duration::from_secs(1)));
    let mut config = fx.config("w1");
    config.pool.ack_wait = Duration::from_secs(2);
    let worker = RunningWorker::start(config);
    let op = waiting(
        envelope(Action::Apply, vec![deployment("web", 5, "web:1")]),
        Duration::from_secs(20),
    );
    fx.submit(&op).await;
    eventually("the wait under way", || async {
        fx.record(&op.id).await.filter(|r| r.progress.is_some())
    })
    .await;
    let record = eventually("the wait over", || async {
        fx.record(&op.id).await.filter(|r| r.state.is_terminal())
    })
    .await;
    assert_eq!(record.state, State::Succeeded, "{record:?}");
    let waited = record
        .finished_at
        .unwrap()
        .duration_since(record.started_at.unwrap());
    assert!(
        waited > jiff::SignedDuration::from_secs(4),
        "the wait outlasted ack_wait: {waited:?}"
    );
    assert_eq!(record.attempts, 1, "delivered once: {record:?}");
    eventually("the message acknowledged", || async {
        (fx.queued_messages().await == 0).then_some(())
    })
    .await;
    worker.stop().await.expect("clean drain");
}
