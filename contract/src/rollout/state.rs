//! A fleet rollout as it is kept in the `LONGSHORE_ROLLOUTS` bucket: the [`Rollout`],
//! written once at acceptance (`spec.<id>`), and its [`Progress`] (`state.<id>`), which
//! every step moves by compare-and-set.
//!
//! The moves are pure functions of the two, so whichever replica makes one makes the same
//! one, and a step repeated after a crash changes nothing the first did not:
//!
//! - [`Progress::tally`] counts one cluster's operation as over (a cell set once), and
//!   halts the rollout the moment its failures pass a budget;
//! - [`Progress::advance`] moves through the waves as far as it can now: a wave starts
//!   once its approval is given and its pause is over, and ends when every cluster in it
//!   is tallied; it says which wave's operations are to be published, and when to look
//!   again;
//! - [`Progress::control`] pauses, resumes, approves and cancels, each idempotent and
//!   recorded with who and when.

use std::ops::Range;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{RolloutId, RolloutLink, Selection, Strategy};
use crate::envelope::{Envelope, SCHEMA_VERSION};
use crate::spec::OperationSpec;
use crate::{ClusterName, IdempotencyKey, State};

/// A rollout as accepted: never changed afterwards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub id: RolloutId,
    pub idempotency_key: IdempotencyKey,
    pub source: String,
    /// Of the request as submitted, for the 422 on a key reused with a different body.
    pub fingerprint: String,
    pub submitted_at: Timestamp,
    /// The operation each cluster gets, with that cluster in place of this one (the first
    /// selected).
    pub template: OperationSpec,
    pub selection: Selection,
    pub strategy: Strategy,
    /// The selection as resolved at acceptance, in rollout order: the only clusters it
    /// will ever touch.
    pub clusters: Vec<ClusterName>,
    /// Where each wave ends in `clusters` ([`super::plan`]).
    pub wave_ends: Vec<usize>,
    /// The acceptance's trace, which every cluster's operation joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Rollout {
    /// The positions in `clusters` of wave `wave` (from 0).
    pub fn wave_range(&self, wave: usize) -> Range<usize> {
        let start = if wave == 0 {
            0
        } else {
            self.wave_ends[wave - 1]
        };
        start..self.wave_ends[wave]
    }

    /// The wave (from 0) holding the cluster at `index`.
    pub fn wave_of(&self, index: usize) -> Option<usize> {
        self.wave_ends.iter().position(|end| index < *end)
    }

    /// Attempt `attempt` of the operation of the cluster at `index`: its id derived from
    /// the rollout's, the cluster's and the attempt's, so it is the same however often and
    /// by whichever replica it is made.
    pub fn envelope(&self, index: usize, attempt: u32, now: Timestamp) -> Option<Envelope> {
        let cluster = self.clusters.get(index)?.clone();
        let wave = self.wave_of(index)?;
        let id = self.id.attempt(&cluster, attempt);
        let key = match attempt {
            0 => format!("{}/{}", self.id, cluster),
            n => format!("{}/{}/{n}", self.id, cluster),
        };
        let key = IdempotencyKey::new(key).ok()?;
        let spec = OperationSpec {
            cluster,
            ..self.template.clone()
        };
        Some(Envelope {
            schema_version: SCHEMA_VERSION,
            id,
            idempotency_key: key,
            source: self.source.clone(),
            fingerprint: crate::id::intent_fingerprint(&spec),
            submitted_at: now,
            spec,
            rollout: Some(RolloutLink {
                id: self.id.clone(),
                index,
                wave: wave + 1,
                attempt,
            }),
        })
    }
}

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Running,
    /// No wave starts until it is resumed; the running one goes on.
    Paused,
    /// The next wave waits for its approval.
    WaitingApproval,
    /// Failures passed a budget: no further cluster is touched.
    Halted,
    /// Cancelled: no further cluster is touched; operations already running finish.
    Cancelled,
    Succeeded,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Running,
        Phase::Paused,
        Phase::WaitingApproval,
        Phase::Halted,
        Phase::Cancelled,
        Phase::Succeeded,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Halted | Phase::Cancelled | Phase::Succeeded)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::WaitingApproval => "waiting_approval",
            Phase::Halted => "halted",
            Phase::Cancelled => "cancelled",
            Phase::Succeeded => "succeeded",
        }
    }
}

/// Where a wave is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaveState {
    Pending,
    Running,
    /// Its operations are over; with a health gate, its clusters' objects must stay ready
    /// for the soak time before it counts as succeeded.
    Soaking,
    Succeeded,
    /// The rollout halted in it.
    Failed,
    /// The rollout was cancelled in it.
    Cancelled,
}

/// How one cluster's operation ended, as a rollout counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Succeeded, or superseded by a later operation on its objects.
    Succeeded,
    /// Failed, or dead-lettered.
    Failed,
    /// Not started: the rollout had halted or was cancelled.
    Cancelled,
}

impl Outcome {
    /// The outcome of an operation in `state`, if it is over.
    pub fn of(state: State) -> Option<Self> {
        match state {
            State::Succeeded | State::Superseded => Some(Outcome::Succeeded),
            State::Failed | State::DeadLettered => Some(Outcome::Failed),
            State::Cancelled => Some(Outcome::Cancelled),
            State::Queued | State::Running => None,
        }
    }

    fn cell(self) -> char {
        match self {
            Outcome::Succeeded => SUCCEEDED,
            Outcome::Failed => FAILED,
            Outcome::Cancelled => CANCELLED,
        }
    }
}

/// A cell of [`WaveProgress::cells`].
pub const OPEN: char = '.';
pub const SUCCEEDED: char = 's';
pub const FAILED: char = 'f';
pub const CANCELLED: char = 'x';

/// One wave's progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveProgress {
    pub state: WaveState,
    /// It may not start before this (the pause after the wave before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Every operation of the wave is in the work queue.
    #[serde(default)]
    pub published: bool,
    /// Soaking: since when every succeeded cluster's objects have been ready (none: not
    /// all are, yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since: Option<Timestamp>,
    /// One character per cluster of the wave, in order: `.` not over, `s` succeeded, `f`
    /// failed, `x` cancelled (never started).
    pub cells: String,
}

impl WaveProgress {
    pub fn count(&self, cell: char) -> usize {
        self.cells.chars().filter(|c| *c == cell).count()
    }

    fn is_over(&self) -> bool {
        !self.cells.contains(OPEN)
    }
}

/// A pause, resume, approval or cancellation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    Pause,
    Resume,
    Approve,
    Cancel,
    /// A new attempt on every cluster whose operation failed, as a wave of its own.
    #[serde(rename = "retry-failed")]
    RetryFailed,
}

impl ControlAction {
    pub const ALL: [ControlAction; 5] = [
        ControlAction::Pause,
        ControlAction::Resume,
        ControlAction::Approve,
        ControlAction::Cancel,
        ControlAction::RetryFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ControlAction::Pause => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Approve => "approve",
            ControlAction::Cancel => "cancel",
            ControlAction::RetryFailed => "retry-failed",
        }
    }
}

/// Who did what, and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Control {
    pub action: ControlAction,
    pub by: String,
    pub at: Timestamp,
    /// The wave approved (from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<usize>,
}

/// Why a control cannot be done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("the rollout is {} already", .0.as_str())]
    Over(Phase),
    #[error("the rollout is not waiting for an approval; name the wave to approve ahead")]
    NotWaiting,
    #[error("wave {wave} has no approval gate (strategy.approvalBefore is {gates:?})")]
    NoGate { wave: usize, gates: Vec<usize> },
}

/// A retry of the clusters whose operation had failed: their cells open again, each gets
/// attempt `attempt`, and the wave the rollout is at does not end before they do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    pub attempt: u32,
    /// Their positions in the rollout's list.
    pub clusters: Vec<usize>,
    pub at: Timestamp,
    /// Every retried operation is in the work queue.
    #[serde(default)]
    pub published: bool,
}

/// A rollout's progress: moved by compare-and-set only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub phase: Phase,
    /// The current wave (from 0).
    pub wave: usize,
    pub waves: Vec<WaveProgress>,
    /// Approved waves (from 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved: Vec<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<Control>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<Retry>,
    /// Why it halted or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
}

/// What [`Progress::advance`] leaves to its caller, once the new progress is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Next {
    /// Publish this wave's operations (from 0), then [`Progress::published`] it.
    pub publish: Option<usize>,
    /// Publish this retry's operations, then [`Progress::retry_published`] it.
    pub retry: Option<u32>,
    /// Nothing more can happen before this, unless something is tallied or controlled.
    pub wake_at: Option<Timestamp>,
}

/// How often a soaking wave's health is looked at again.
pub const HEALTH_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Where one succeeded cluster's changed objects stand, for a health gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterHealth {
    /// Every one reports ready.
    Ready,
    /// Some are not ready yet (or not seen yet).
    NotYet,
    /// One failed: why.
    Unhealthy(String),
}

impl Progress {
    /// A new rollout's progress: every wave pending, the first about to start.
    pub fn new(rollout: &Rollout, now: Timestamp) -> Self {
        let waves = (0..rollout.wave_ends.len())
            .map(|w| WaveProgress {
                state: WaveState::Pending,
                not_before: None,
                started_at: None,
                ended_at: None,
                published: false,
                ready_since: None,
                cells: OPEN.to_string().repeat(rollout.wave_range(w).len()),
            })
            .collect();
        Self {
            phase: Phase::Running,
            wave: 0,
            waves,
            approved: Vec::new(),
            controls: Vec::new(),
            retries: Vec::new(),
            reason: None,
            updated_at: now,
            ended_at: None,
        }
    }

    /// How many clusters' operations ended `cell` (`SUCCEEDED`, `FAILED`, `CANCELLED`).
    pub fn count(&self, cell: char) -> usize {
        self.waves.iter().map(|w| w.count(cell)).sum()
    }

    /// Of the selected clusters, the share whose operation is over, from 0 to 100; 100
    /// only once the rollout succeeded (a halted one stays below, whatever ran).
    pub fn percent_complete(&self) -> u8 {
        if self.phase == Phase::Succeeded {
            return 100;
        }
        let total: usize = self.waves.iter().map(|w| w.cells.len()).sum();
        let over = total - self.count(OPEN);
        if total == 0 {
            return 0;
        }
        ((over * 100 / total) as u8).min(99)
    }

    /// The attempt the cluster at `index` is at: the last retry's that includes it, else 0.
    pub fn attempt_of(&self, index: usize) -> u32 {
        self.retries
            .iter()
            .rev()
            .find(|r| r.clusters.contains(&index))
            .map_or(0, |r| r.attempt)
    }

    /// Whether a retried cluster (of any wave) is not over yet.
    fn retry_open(&self, rollout: &Rollout) -> bool {
        let Some(retry) = self.retries.last() else {
            return false;
        };
        retry.clusters.iter().any(|i| {
            rollout.wave_of(*i).is_some_and(|w| {
                let offset = i - rollout.wave_range(w).start;
                self.waves[w].cells.chars().nth(offset) == Some(OPEN)
            })
        })
    }

    /// Retry `attempt`'s operations are all in the work queue.
    pub fn retry_published(&mut self, attempt: u32, now: Timestamp) -> bool {
        match self.retries.iter_mut().find(|r| r.attempt == attempt) {
            Some(r) if !r.published => {
                r.published = true;
                self.updated_at = now;
                true
            }
            _ => false,
        }
    }

    /// Counts the operation of the cluster at `index` as `outcome`. Idempotent: a cell is
    /// set once, and a second tally of it changes nothing. Halts the rollout the moment its
    /// failures pass a budget. Whether anything changed.
    pub fn tally(
        &mut self,
        rollout: &Rollout,
        index: usize,
        attempt: u32,
        outcome: Outcome,
        now: Timestamp,
    ) -> bool {
        // An earlier attempt's tally (redelivered after a retry opened its cell) is stale.
        if attempt != self.attempt_of(index) {
            return false;
        }
        let Some(w) = rollout.wave_of(index) else {
            return false;
        };
        let offset = index - rollout.wave_range(w).start;
        let wave = &mut self.waves[w];
        if wave.cells.chars().nth(offset) != Some(OPEN) {
            return false;
        }
        let mut cells: Vec<char> = wave.cells.chars().collect();
        cells[offset] = outcome.cell();
        wave.cells = cells.into_iter().collect();
        self.updated_at = now;
        if outcome == Outcome::Failed {
            self.count_failure(rollout, w, now);
        }
        true
    }

    /// A failure in wave `w` was counted: halts the rollout if it passes a budget.
    fn count_failure(&mut self, rollout: &Rollout, w: usize, now: Timestamp) {
        if self.phase.is_terminal() {
            return;
        }
        let budget = &rollout.strategy.max_failures;
        let in_wave = self.waves[w].count(FAILED);
        let allowed_in_wave = budget.per_wave.budget(self.waves[w].cells.len());
        let total = self.count(FAILED);
        let allowed_total = budget.total.budget(rollout.clusters.len());
        if in_wave > allowed_in_wave {
            self.halt(
                w,
                format!(
                    "wave {}: {in_wave} failed, more than maxFailures.perWave allows ({allowed_in_wave})",
                    w + 1
                ),
                now,
            );
        } else if total > allowed_total {
            self.halt(
                w,
                format!("{total} failed, more than maxFailures.total allows ({allowed_total})"),
                now,
            );
        }
    }

    fn halt(&mut self, wave: usize, reason: String, now: Timestamp) {
        self.phase = Phase::Halted;
        self.reason = Some(reason);
        self.ended_at = Some(now);
        self.waves[wave].state = WaveState::Failed;
        self.waves[wave].ended_at = Some(now);
    }

    /// Moves through the waves as far as they can go at `now`.
    pub fn advance(&mut self, rollout: &Rollout, now: Timestamp) -> Next {
        loop {
            if self.phase.is_terminal() || self.phase == Phase::Paused {
                return Next::default();
            }
            let w = self.wave;
            if let Some(retry) = self.retries.last()
                && !retry.published
            {
                return Next {
                    retry: Some(retry.attempt),
                    ..Next::default()
                };
            }
            let retrying = self.retry_open(rollout);
            let gates = &rollout.strategy.approval_before;
            let wave = &mut self.waves[w];
            match wave.state {
                WaveState::Pending => {
                    if gates.contains(&(w + 1)) && !self.approved.contains(&(w + 1)) {
                        if self.phase != Phase::WaitingApproval {
                            self.phase = Phase::WaitingApproval;
                            self.updated_at = now;
                        }
                        return Next::default();
                    }
                    if self.phase != Phase::Running {
                        self.phase = Phase::Running;
                        self.updated_at = now;
                    }
                    if let Some(at) = wave.not_before
                        && now < at
                    {
                        return Next {
                            wake_at: Some(at),
                            ..Next::default()
                        };
                    }
                    wave.state = WaveState::Running;
                    wave.started_at = Some(now);
                    wave.published = wave.cells.is_empty();
                    self.updated_at = now;
                }
                WaveState::Running if !wave.published => {
                    return Next {
                        publish: Some(w),
                        ..Next::default()
                    };
                }
                // Waiting for its operations (and any retried cluster's) to be tallied.
                WaveState::Running if !wave.is_over() || retrying => return Next::default(),
                WaveState::Running
                    if rollout.strategy.health_gate.is_some() && wave.cells.contains(SUCCEEDED) =>
                {
                    wave.state = WaveState::Soaking;
                    wave.ready_since = None;
                    self.updated_at = now;
                    return Next {
                        wake_at: Some(now),
                        ..Next::default()
                    };
                }
                WaveState::Soaking => {
                    let soak = rollout
                        .strategy
                        .health_gate
                        .as_ref()
                        .map(|g| SignedDuration::try_from(g.soak).unwrap_or(SignedDuration::MAX))
                        .unwrap_or(SignedDuration::ZERO);
                    let recheck = SignedDuration::try_from(HEALTH_RECHECK).unwrap_or_default();
                    let due = wave
                        .ready_since
                        .and_then(|since| since.checked_add(soak).ok());
                    match due {
                        Some(at) if now >= at => {}
                        Some(at) => {
                            let again = now.checked_add(recheck).unwrap_or(at);
                            return Next {
                                wake_at: Some(at.min(again)),
                                ..Next::default()
                            };
                        }
                        None => {
                            return Next {
                                wake_at: now.checked_add(recheck).ok(),
                                ..Next::default()
                            };
                        }
                    }
                    self.succeed_wave(w, rollout, now);
                    if self.phase.is_terminal() {
                        return Next::default();
                    }
                }
                WaveState::Running => {
                    self.succeed_wave(w, rollout, now);
                    if self.phase.is_terminal() {
                        return Next::default();
                    }
                }
                // The current wave is over only in a terminal phase, handled above.
                WaveState::Succeeded | WaveState::Failed | WaveState::Cancelled => {
                    return Next::default();
                }
            }
        }
    }

    /// Wave `w` succeeded: the rollout too if it was the last, else the next wave is due
    /// after the pause.
    fn succeed_wave(&mut self, w: usize, rollout: &Rollout, now: Timestamp) {
        let wave = &mut self.waves[w];
        wave.state = WaveState::Succeeded;
        wave.ended_at = Some(now);
        self.updated_at = now;
        if w + 1 == self.waves.len() {
            self.phase = Phase::Succeeded;
            self.ended_at = Some(now);
            return;
        }
        self.wave = w + 1;
        let pause = rollout.strategy.pause;
        if !pause.is_zero() {
            let pause = SignedDuration::try_from(pause).unwrap_or(SignedDuration::MAX);
            self.waves[w + 1].not_before = now.checked_add(pause).ok();
        }
    }

    /// What a health gate saw of soaking wave `wave`'s succeeded clusters (each by its
    /// offset in the wave): an unhealthy one counts as failed (and may halt the
    /// rollout); the soak runs from when all are ready, and starts again when one is not.
    /// Whether anything changed.
    pub fn observe_health(
        &mut self,
        rollout: &Rollout,
        wave: usize,
        health: &[(usize, ClusterHealth)],
        now: Timestamp,
    ) -> bool {
        if self.phase.is_terminal()
            || self.wave != wave
            || self.waves[wave].state != WaveState::Soaking
        {
            return false;
        }
        let start = rollout.wave_range(wave).start;
        let mut changed = false;
        let mut all_ready = true;
        for (offset, h) in health {
            match h {
                ClusterHealth::Ready => {}
                ClusterHealth::NotYet => all_ready = false,
                ClusterHealth::Unhealthy(reason) => {
                    all_ready = false;
                    let cells: Vec<char> = self.waves[wave].cells.chars().collect();
                    if cells.get(*offset) == Some(&SUCCEEDED) {
                        let mut cells = cells;
                        cells[*offset] = FAILED;
                        self.waves[wave].cells = cells.into_iter().collect();
                        changed = true;
                        self.count_failure(rollout, wave, now);
                        if self.phase == Phase::Halted
                            && let Some(r) = &mut self.reason
                        {
                            let cluster = &rollout.clusters[start + offset];
                            r.push_str(&format!(" ({cluster} unhealthy: {reason})"));
                        }
                    }
                }
            }
        }
        let wave = &mut self.waves[wave];
        let ready_since = if all_ready {
            wave.ready_since.or(Some(now))
        } else {
            None
        };
        if ready_since != wave.ready_since && !self.phase.is_terminal() {
            wave.ready_since = ready_since;
            changed = true;
        }
        if changed {
            self.updated_at = now;
        }
        changed
    }

    /// Opens every failed cluster's cell again for a new attempt (and, after a halt, those
    /// of its wave the halt kept from starting), and the rollout with them:
    /// a halted rollout goes on from the wave it halted in, once they are over (and
    /// within the budgets); a succeeded one with failures within them ends again. Nothing
    /// to retry (none failed, or a retry still running) is `Ok(false)`; a cancelled
    /// rollout is over.
    fn retry_failed(
        &mut self,
        rollout: &Rollout,
        by: &str,
        now: Timestamp,
    ) -> Result<bool, ControlError> {
        if self.phase == Phase::Cancelled {
            return Err(ControlError::Over(self.phase));
        }
        // The failed, and those of the wave it halted in that the halt kept from starting.
        let halted_in = (self.phase == Phase::Halted).then_some(self.wave);
        let failed: Vec<usize> = (0..rollout.clusters.len())
            .filter(|i| {
                rollout.wave_of(*i).is_some_and(|w| {
                    let offset = i - rollout.wave_range(w).start;
                    match self.waves[w].cells.chars().nth(offset) {
                        Some(FAILED) => true,
                        Some(CANCELLED) => halted_in == Some(w),
                        _ => false,
                    }
                })
            })
            .collect();
        if failed.is_empty() || !self.phase.is_terminal() {
            return Ok(false);
        }
        for i in &failed {
            let Some(w) = rollout.wave_of(*i) else {
                continue;
            };
            let offset = i - rollout.wave_range(w).start;
            let mut cells: Vec<char> = self.waves[w].cells.chars().collect();
            cells[offset] = OPEN;
            self.waves[w].cells = cells.into_iter().collect();
        }
        let current = &mut self.waves[self.wave];
        current.state = WaveState::Running;
        current.ended_at = None;
        current.ready_since = None;
        self.phase = Phase::Running;
        self.reason = None;
        self.ended_at = None;
        let attempt = self.retries.last().map_or(1, |r| r.attempt + 1);
        self.retries.push(Retry {
            attempt,
            clusters: failed,
            at: now,
            published: false,
        });
        self.updated_at = now;
        self.controls.push(Control {
            action: ControlAction::RetryFailed,
            by: by.to_owned(),
            at: now,
            wave: None,
        });
        Ok(true)
    }

    /// Wave `wave`'s operations are all in the work queue. Whether anything changed.
    pub fn published(&mut self, wave: usize, now: Timestamp) -> bool {
        match self.waves.get_mut(wave) {
            Some(w) if !w.published => {
                w.published = true;
                self.updated_at = now;
                true
            }
            _ => false,
        }
    }

    /// Pauses, resumes, approves (`wave`, from 1: the one waiting if not given) or cancels,
    /// for `by`. `Ok(false)`: already so, nothing changed (and nothing recorded).
    pub fn control(
        &mut self,
        rollout: &Rollout,
        action: ControlAction,
        wave: Option<usize>,
        by: &str,
        now: Timestamp,
    ) -> Result<bool, ControlError> {
        if action == ControlAction::RetryFailed {
            return self.retry_failed(rollout, by, now);
        }
        if self.phase.is_terminal() {
            if action == ControlAction::Cancel && self.phase == Phase::Cancelled {
                return Ok(false);
            }
            return Err(ControlError::Over(self.phase));
        }
        let mut approved = None;
        match action {
            ControlAction::Pause if self.phase == Phase::Paused => return Ok(false),
            ControlAction::Pause => self.phase = Phase::Paused,
            ControlAction::Resume if self.phase != Phase::Paused => return Ok(false),
            // Back to running; the next advance finds any gate again.
            ControlAction::Resume => self.phase = Phase::Running,
            ControlAction::Approve => {
                let gates = &rollout.strategy.approval_before;
                let wave = match wave {
                    Some(w) => w,
                    None if self.phase == Phase::WaitingApproval => self.wave + 1,
                    // A repeat of the approval given last (a retried request).
                    None if !self.approved.is_empty() => return Ok(false),
                    None => return Err(ControlError::NotWaiting),
                };
                if !gates.contains(&wave) {
                    return Err(ControlError::NoGate {
                        wave,
                        gates: gates.clone(),
                    });
                }
                let started = wave - 1 < self.wave
                    || (wave - 1 == self.wave && self.waves[self.wave].state != WaveState::Pending);
                if started || self.approved.contains(&wave) {
                    return Ok(false);
                }
                self.approved.push(wave);
                approved = Some(wave);
            }
            ControlAction::RetryFailed => unreachable!("handled above"),
            ControlAction::Cancel => {
                self.phase = Phase::Cancelled;
                self.reason = Some(format!("cancelled by {by}"));
                self.ended_at = Some(now);
                let current = &mut self.waves[self.wave];
                if current.state != WaveState::Succeeded {
                    current.state = WaveState::Cancelled;
                    current.ended_at = Some(now);
                }
            }
        }
        self.updated_at = now;
        self.controls.push(Control {
            action,
            by: by.to_owned(),
            at: now,
            wave: approved,
        });
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
