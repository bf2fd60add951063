use std::time::Duration;

use super::*;
use crate::rollout::{FailureBudget, Size};

fn rollout(n: usize, waves: &[Size], tweak: impl FnOnce(&mut Strategy)) -> Rollout {
    let clusters: Vec<ClusterName> = (0..n)
        .map(|i| ClusterName::new(format!("c{i}")).unwrap())
        .collect();
    let mut strategy = Strategy {
        waves: waves.to_vec(),
        order_by: None,
        max_failures: FailureBudget::default(),
        pause: Duration::ZERO,
        approval_before: Vec::new(),
        concurrency: 1,
        health_gate: None,
    };
    tweak(&mut strategy);
    let key = IdempotencyKey::new("deploy-1").unwrap();
    let template = crate::envelope::tests_support::sample().spec;
    Rollout {
        id: RolloutId::derive("ci", &key),
        idempotency_key: key,
        source: "ci".into(),
        fingerprint: "f".into(),
        submitted_at: t(0),
        template,
        selection: Selection::Selector("env=prod".into()),
        wave_ends: crate::rollout::plan(&strategy.waves, n).unwrap(),
        strategy,
        clusters,
        trace_id: None,
        traceparent: None,
    }
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

/// A health gate of 30 s.
fn gated(s: &mut Strategy) {
    s.health_gate = Some(crate::rollout::HealthGate {
        soak: Duration::from_secs(30),
    });
}

const ONE_TEN_ALL: [Size; 3] = [Size::Count(1), Size::Percent(10), Size::Percent(100)];

/// Starts the current wave and marks it published, as a stepper does.
fn start(p: &mut Progress, r: &Rollout, now: Timestamp) -> usize {
    let next = p.advance(r, now);
    let w = next.publish.expect("a wave to publish");
    assert!(p.published(w, now));
    assert_eq!(p.advance(r, now), Next::default(), "waits for its tallies");
    w
}

fn finish_wave(p: &mut Progress, r: &Rollout, w: usize, outcome: Outcome, now: Timestamp) {
    for i in r.wave_range(w) {
        p.tally(r, i, 0, outcome, now);
    }
}

#[test]
fn waves_run_in_order_each_starting_when_the_one_before_is_over() {
    let r = rollout(20, &ONE_TEN_ALL, |_| {});
    assert_eq!(r.wave_ends, [1, 2, 20]);
    let mut p = Progress::new(&r, t(0));
    assert_eq!(start(&mut p, &r, t(1)), 0);
    assert_eq!(p.waves[0].state, WaveState::Running);
    assert_eq!(
        p.waves[1].state,
        WaveState::Pending,
        "not before wave 1 is over"
    );
    finish_wave(&mut p, &r, 0, Outcome::Succeeded, t(2));
    assert_eq!(start(&mut p, &r, t(3)), 1);
    assert_eq!(p.waves[0].state, WaveState::Succeeded);
    assert_eq!(p.waves[0].ended_at, Some(t(3)));
    finish_wave(&mut p, &r, 1, Outcome::Succeeded, t(4));
    assert_eq!(start(&mut p, &r, t(5)), 2);
    assert_eq!(p.percent_complete(), 10, "2 of 20 over");
    for i in r.wave_range(2) {
        assert_ne!(p.phase, Phase::Succeeded, "not before the last cluster");
        p.tally(&r, i, 0, Outcome::Succeeded, t(6));
        p.advance(&r, t(6));
    }
    assert_eq!(p.phase, Phase::Succeeded);
    assert_eq!(p.percent_complete(), 100);
    assert_eq!(p.count(SUCCEEDED), 20);
    assert_eq!(p.advance(&r, t(7)), Next::default(), "over: nothing more");
}

#[test]
fn a_tally_counts_once_and_a_cluster_outside_the_rollout_not_at_all() {
    let r = rollout(3, &[Size::Percent(100)], |_| {});
    let mut p = Progress::new(&r, t(0));
    start(&mut p, &r, t(0));
    assert!(p.tally(&r, 1, 0, Outcome::Succeeded, t(1)));
    let before = p.clone();
    assert!(
        !p.tally(&r, 1, 0, Outcome::Failed, t(2)),
        "a redelivered tally"
    );
    assert!(!p.tally(&r, 7, 0, Outcome::Failed, t(2)));
    assert_eq!(p, before);
    assert_eq!(p.waves[0].cells, ".s.");
}

#[test]
fn an_approval_gate_holds_its_wave_until_approved_and_approving_is_idempotent() {
    let r = rollout(20, &ONE_TEN_ALL, |s| s.approval_before = vec![2]);
    let mut p = Progress::new(&r, t(0));
    start(&mut p, &r, t(0));
    finish_wave(&mut p, &r, 0, Outcome::Succeeded, t(1));
    assert_eq!(p.advance(&r, t(2)), Next::default());
    assert_eq!(p.phase, Phase::WaitingApproval);
    assert_eq!(p.waves[1].state, WaveState::Pending);
    assert_eq!(
        p.advance(&r, t(900)),
        Next::default(),
        "time does not open a gate"
    );
    assert_eq!(
        p.control(&r, ControlAction::Approve, Some(3), "alice", t(3)),
        Err(ControlError::NoGate {
            wave: 3,
            gates: vec![2]
        })
    );
    assert_eq!(
        p.control(&r, ControlAction::Approve, None, "alice", t(3)),
        Ok(true)
    );
    assert_eq!(
        p.control(&r, ControlAction::Approve, None, "bob", t(4)),
        Ok(false)
    );
    assert_eq!(p.controls.len(), 1, "the repeat is not recorded");
    assert_eq!(p.controls[0].by, "alice");
    assert_eq!(p.controls[0].wave, Some(2));
    assert_eq!(start(&mut p, &r, t(5)), 1);
    assert_eq!(p.phase, Phase::Running);
    assert_eq!(
        p.control(&r, ControlAction::Approve, None, "bob", t(6)),
        Ok(false),
        "a retried approval once the wave started"
    );
    assert_eq!(
        p.control(&r, ControlAction::Approve, Some(2), "bob", t(6)),
        Ok(false),
        "approving a wave already started"
    );
}

#[test]
fn a_gate_can_be_approved_ahead_and_an_empty_wave_still_waits_for_it() {
    // 1 then 10% of 5 = 1 again: wave 2 adds nobody, but its gate holds.
    let r = rollout(5, &ONE_TEN_ALL, |s| s.approval_before = vec![2, 3]);
    let mut p = Progress::new(&r, t(0));
    assert_eq!(
        p.control(&r, ControlAction::Approve, None, "a", t(0)),
        Err(ControlError::NotWaiting)
    );
    assert_eq!(
        p.control(&r, ControlAction::Approve, Some(3), "a", t(0)),
        Ok(true)
    );
    start(&mut p, &r, t(0));
    finish_wave(&mut p, &r, 0, Outcome::Succeeded, t(1));
    p.advance(&r, t(1));
    assert_eq!((p.phase, p.wave), (Phase::WaitingApproval, 1));
    p.control(&r, ControlAction::Approve, None, "a", t(2))
        .unwrap();
    // Wave 2 is empty: it passes, and wave 3 was approved ahead.
    assert_eq!(p.advance(&r, t(2)).publish, Some(2));
    assert_eq!(p.waves[1].state, WaveState::Succeeded);
}

#[test]
fn a_pause_between_waves_holds_the_next_until_it_is_over() {
    let r = rollout(20, &ONE_TEN_ALL, |s| s.pause = Duration::from_secs(60));
    let mut p = Progress::new(&r, t(0));
    assert_eq!(start(&mut p, &r, t(0)), 0, "no pause before the first wave");
    finish_wave(&mut p, &r, 0, Outcome::Succeeded, t(10));
    let next = p.advance(&r, t(10));
    assert_eq!(
        next,
        Next {
            wake_at: Some(t(70)),
            ..Next::default()
        }
    );
    assert_eq!(p.advance(&r, t(69)).wake_at, Some(t(70)));
    assert_eq!(p.waves[1].state, WaveState::Pending);
    assert_eq!(p.advance(&r, t(70)).publish, Some(1));
}

#[test]
fn a_failure_past_the_budget_halts_at_once_and_no_later_wave_starts() {
    let r = rollout(20, &ONE_TEN_ALL, |s| {
        s.max_failures = FailureBudget {
            per_wave: Size::Count(1),
            total: Size::Percent(100),
        }
    });
    let mut p = Progress::new(&r, t(0));
    start(&mut p, &r, t(0));
    p.tally(&r, 0, 0, Outcome::Succeeded, t(1));
    start(&mut p, &r, t(1));
    p.tally(&r, 1, 0, Outcome::Failed, t(1));
    assert_eq!(p.phase, Phase::Running, "one failure is within the budget");
    start(&mut p, &r, t(2));
    p.tally(&r, 2, 0, Outcome::Failed, t(3));
    assert_eq!(p.phase, Phase::Running);
    p.tally(&r, 3, 0, Outcome::Failed, t(4));
    assert_eq!(p.phase, Phase::Halted, "the second failure in wave 3");
    assert_eq!(p.waves[2].state, WaveState::Failed);
    assert!(
        p.reason.as_deref().unwrap().contains("wave 3: 2 failed"),
        "{:?}",
        p.reason
    );
    // The rest of the wave is told it was cancelled (or ends as it ends): still halted.
    for i in 4..20 {
        p.tally(&r, i, 0, Outcome::Cancelled, t(5));
    }
    assert_eq!(p.advance(&r, t(6)), Next::default());
    assert_eq!(p.phase, Phase::Halted);
    assert!(p.percent_complete() < 100);
    assert_eq!(
        p.control(&r, ControlAction::Resume, None, "a", t(7)),
        Err(ControlError::Over(Phase::Halted))
    );
}

#[test]
fn the_total_budget_counts_across_waves_and_percentages_round_down() {
    // 10% of 20 clusters: 2 failures allowed in all, the third halts.
    let r = rollout(20, &[Size::Count(10), Size::Percent(100)], |s| {
        s.max_failures = FailureBudget {
            per_wave: Size::Percent(100),
            total: Size::Percent(10),
        }
    });
    let mut p = Progress::new(&r, t(0));
    start(&mut p, &r, t(0));
    p.tally(&r, 0, 0, Outcome::Failed, t(1));
    p.tally(&r, 1, 0, Outcome::Failed, t(1));
    for i in 2..10 {
        p.tally(&r, i, 0, Outcome::Succeeded, t(1));
    }
    start(&mut p, &r, t(2));
    p.tally(&r, 10, 0, Outcome::Failed, t(3));
    assert_eq!(p.phase, Phase::Halted);
    assert!(p.reason.as_deref().unwrap().contains("maxFailures.total"));
    assert_eq!(Size::Percent(10).budget(5), 0);
}

#[test]
fn pause_resume_and_cancel_are_idempotent_and_recorded() {
    let r = rollout(20, &ONE_TEN_ALL, |_| {});
    let mut p = Progress::new(&r, t(0));
    start(&mut p, &r, t(0));
    assert_eq!(
        p.control(&r, ControlAction::Pause, None, "a", t(1)),
        Ok(true)
    );
    assert_eq!(
        p.control(&r, ControlAction::Pause, None, "b", t(2)),
        Ok(false)
    );
    finish_wave(&mut p, &r, 0, Outcome::Succeeded, t(3));
    assert_eq!(
        p.advance(&r, t(3)),
        Next::default(),
        "paused: no wave starts"
    );
    assert_eq!(p.waves[1].state, WaveState::Pending);
    assert_eq!(
        p.control(&r, ControlAction::Resume, None, "a", t(4)),
        Ok(true)
    );
    assert_eq!(
        p.control(&r, ControlAction::Resume, None, "a", t(4)),
        Ok(false)
    );
    assert_eq!(p.advance(&r, t(5)).publish, Some(1));
    assert_eq!(
        p.control(&r, ControlAction::Cancel, None, "c", t(6)),
        Ok(true)
    );
    assert_eq!(
        p.control(&r, ControlAction::Cancel, None, "c", t(7)),
        Ok(false)
    );
    assert_eq!(p.phase, Phase::Cancelled);
    assert_eq!(p.waves[1].state, WaveState::Cancelled);
    assert_eq!(p.advance(&r, t(8)), Next::default());
    let actions: Vec<_> = p
        .controls
        .iter()
        .map(|c| (c.action, c.by.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (ControlAction::Pause, "a"),
            (ControlAction::Resume, "a"),
            (ControlAction::Cancel, "c")
        ]
    );
}

#[test]
fn each_cluster_gets_its_own_operation_linked_to_the_rollout() {
    let r = rollout(20, &ONE_TEN_ALL, |_| {});
    let e = r.envelope(5, 0, t(1)).unwrap();
    assert_eq!(e.spec.cluster.as_str(), "c5");
    assert_eq!(e.id, r.id.operation(&r.clusters[5]));
    assert_eq!(
        e.id,
        r.envelope(5, 0, t(9)).unwrap().id,
        "the same at any time"
    );
    let link = e.rollout.unwrap();
    assert_eq!((link.index, link.wave), (5, 3));
    assert_eq!(e.spec.manifests, r.template.manifests);
    assert!(r.envelope(20, 0, t(1)).is_none());
}

#[test]
fn a_health_gate_holds_a_wave_until_its_clusters_stay_ready_for_the_soak() {
    let r = rollout(20, &ONE_TEN_ALL, gated);
    let mut p = Progress::new(&r, t(0));
    start(&mut p, &r, t(0));
    p.tally(&r, 0, 0, Outcome::Succeeded, t(1));
    assert_eq!(
        p.advance(&r, t(1)).wake_at,
        Some(t(1)),
        "look at its health now"
    );
    assert_eq!(p.waves[0].state, WaveState::Soaking);
    assert_eq!(
        p.advance(&r, t(2)).wake_at,
        Some(t(4)),
        "not seen ready: look again"
    );
    assert!(p.observe_health(&r, 0, &[(0, ClusterHealth::Ready)], t(5)));
    assert_eq!(p.waves[0].ready_since, Some(t(5)));
    assert!(
        !p.observe_health(&r, 0, &[(0, ClusterHealth::Ready)], t(6)),
        "still ready"
    );
    assert_eq!(p.advance(&r, t(20)).wake_at, Some(t(22)));
    // Not ready for a moment: the soak starts again.
    assert!(p.observe_health(&r, 0, &[(0, ClusterHealth::NotYet)], t(21)));
    assert!(p.observe_health(&r, 0, &[(0, ClusterHealth::Ready)], t(22)));
    assert_eq!(p.advance(&r, t(51)).publish, None, "29 s of 30");
    assert_eq!(p.waves[1].state, WaveState::Pending);
    assert_eq!(
        p.advance(&r, t(52)).publish,
        Some(1),
        "soaked: the next wave"
    );
    assert_eq!(p.waves[0].state, WaveState::Succeeded);
}

#[test]
fn an_unhealthy_cluster_fails_and_past_the_budget_halts() {
    let r = rollout(20, &ONE_TEN_ALL, gated);
    let mut p = Progress::new(&r, t(0));
    start(&mut p, &r, t(0));
    p.tally(&r, 0, 0, Outcome::Succeeded, t(1));
    p.advance(&r, t(1));
    let unhealthy = ClusterHealth::Unhealthy("ProgressDeadlineExceeded".into());
    assert!(
        !p.observe_health(&r, 1, &[(0, unhealthy.clone())], t(2)),
        "not the soaking wave"
    );
    assert!(p.observe_health(&r, 0, &[(0, unhealthy)], t(2)));
    assert_eq!(p.phase, Phase::Halted);
    assert_eq!(p.waves[0].cells, "f");
    let reason = p.reason.clone().unwrap();
    assert!(
        reason.contains("c0 unhealthy: ProgressDeadlineExceeded"),
        "{reason}"
    );
    assert_eq!(p.advance(&r, t(100)), Next::default());
}

#[test]
fn without_a_gate_or_a_success_a_wave_does_not_soak() {
    let r = rollout(20, &ONE_TEN_ALL, |s| {
        gated(s);
        s.max_failures.per_wave = Size::Percent(100);
        s.max_failures.total = Size::Percent(100);
    });
    let mut p = Progress::new(&r, t(0));
    start(&mut p, &r, t(0));
    p.tally(&r, 0, 0, Outcome::Failed, t(1));
    assert_eq!(
        p.advance(&r, t(1)).publish,
        Some(1),
        "nothing succeeded: nothing to soak"
    );
}

#[test]
fn retry_failed_opens_the_failed_clusters_again_and_goes_on_from_the_halt() {
    let r = rollout(20, &ONE_TEN_ALL, |_| {});
    let mut p = Progress::new(&r, t(0));
    start(&mut p, &r, t(0));
    p.tally(&r, 0, 0, Outcome::Succeeded, t(1));
    start(&mut p, &r, t(1));
    p.tally(&r, 1, 0, Outcome::Failed, t(2));
    assert_eq!(p.phase, Phase::Halted);
    assert_eq!(p.waves[1].cells, "f");
    assert_eq!(
        p.control(&r, ControlAction::RetryFailed, None, "ops", t(3)),
        Ok(true)
    );
    assert_eq!((p.phase, p.reason.clone()), (Phase::Running, None));
    assert_eq!(p.attempt_of(1), 1);
    assert_eq!(p.waves[1].cells, ".");
    assert_eq!(
        p.control(&r, ControlAction::RetryFailed, None, "ops", t(3)),
        Ok(false),
        "a retry runs"
    );
    let next = p.advance(&r, t(4));
    assert_eq!(next.retry, Some(1), "publish the retry first");
    assert!(p.retry_published(1, t(4)));
    assert_eq!(
        p.advance(&r, t(4)),
        Next::default(),
        "waits for the retried cluster"
    );
    assert!(
        !p.tally(&r, 1, 0, Outcome::Failed, t(5)),
        "the first attempt's tally, again: stale"
    );
    assert!(p.tally(&r, 1, 1, Outcome::Succeeded, t(5)));
    assert_eq!(
        p.advance(&r, t(5)).publish,
        Some(2),
        "on from where it halted"
    );
    assert_eq!(p.waves[1].state, WaveState::Succeeded);
    let e = r.envelope(1, 1, t(5)).unwrap();
    assert_ne!(e.id, r.id.operation(&r.clusters[1]), "a new operation");
    assert_eq!(e.rollout.unwrap().attempt, 1);
    assert_eq!(e.idempotency_key.as_str(), format!("{}/c1/1", r.id));
}

#[test]
fn a_halt_s_cancelled_clusters_are_retried_with_the_failed_and_a_cancelled_rollout_is_not() {
    let r = rollout(20, &[Size::Count(5), Size::Percent(100)], |_| {});
    let mut p = Progress::new(&r, t(0));
    start(&mut p, &r, t(0));
    p.tally(&r, 0, 0, Outcome::Failed, t(1));
    for i in 1..5 {
        p.tally(&r, i, 0, Outcome::Cancelled, t(1));
    }
    assert_eq!(p.waves[0].cells, "fxxxx");
    p.control(&r, ControlAction::RetryFailed, None, "ops", t(2))
        .unwrap();
    assert_eq!(p.retries[0].clusters, [0, 1, 2, 3, 4]);
    assert_eq!(p.waves[0].cells, ".....");
    let mut q = Progress::new(&r, t(0));
    q.control(&r, ControlAction::Cancel, None, "ops", t(1))
        .unwrap();
    assert_eq!(
        q.control(&r, ControlAction::RetryFailed, None, "ops", t(2)),
        Err(ControlError::Over(Phase::Cancelled))
    );
    let mut fine = Progress::new(&r, t(0));
    assert_eq!(
        fine.control(&r, ControlAction::RetryFailed, None, "ops", t(2)),
        Ok(false),
        "nothing failed: nothing to retry"
    );
}
