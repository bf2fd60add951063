//! Shutdown as the worker's tasks see it: the signal, and the deadline of the drain it
//! starts. The whole drain (the pull in flight, the operations still running, handing
//! messages back, NATS confirming them) fits inside `drain_grace` from the signal,
//! whatever NATS does: Kubernetes kills a pod that overstays
//! `terminationGracePeriodSeconds`, and a pod stuck terminating holds up rollouts and
//! scale-ins. What misses the deadline is not lost: JetStream redelivers an unacknowledged
//! message after `ack_wait`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Shutdown {
    token: CancellationToken,
    deadline: Arc<OnceLock<Instant>>,
    grace: Duration,
}

impl Shutdown {
    pub fn new(grace: Duration) -> Self {
        Self {
            token: CancellationToken::new(),
            deadline: Arc::default(),
            grace,
        }
    }

    /// Starts the drain: from now, everything has `grace` to finish.
    pub fn begin(&self) {
        let _ = self.deadline.set(Instant::now() + self.grace);
        self.token.cancel();
    }

    /// Resolves when the drain starts.
    pub async fn started(&self) {
        self.token.cancelled().await;
    }

    /// Cancelled when the drain starts: for tasks that take a token.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn is_started(&self) -> bool {
        self.token.is_cancelled()
    }

    /// When the drain must be over (`grace` from now if it has not started).
    pub fn deadline(&self) -> Instant {
        self.deadline
            .get()
            .copied()
            .unwrap_or_else(|| Instant::now() + self.grace)
    }

    /// The deadline less what the last steps of the drain need: running operations are
    /// given until then, so handing their messages back and NATS confirming it still fit.
    pub fn work_deadline(&self) -> Instant {
        self.deadline() - self.reserve()
    }

    /// A quarter of the grace, at most two seconds: time to hand back, and for NATS to
    /// confirm it.
    fn reserve(&self) -> Duration {
        (self.grace / 4).min(Duration::from_secs(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_deadline_runs_from_the_signal() {
        let s = Shutdown::new(Duration::from_secs(8));
        assert!(!s.is_started());
        let before = Instant::now();
        s.begin();
        assert!(s.is_started());
        s.started().await;
        let deadline = s.deadline();
        assert!(deadline >= before + Duration::from_secs(8));
        assert!(deadline <= Instant::now() + Duration::from_secs(8));
        assert_eq!(s.work_deadline(), deadline - Duration::from_secs(2));
        // A second signal does not move it.
        s.begin();
        assert_eq!(s.deadline(), deadline);
        let short = Shutdown::new(Duration::from_secs(2));
        short.begin();
        assert_eq!(
            short.deadline() - short.work_deadline(),
            Duration::from_millis(500)
        );
    }
}
