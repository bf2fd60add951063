//! The pull loop: asks the pool's durable consumer for as many messages as there are free
//! slots, hands each to [`operation::handle`] in a tracked task, and on shutdown stops
//! pulling and hands back whatever arrives afterwards.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use longshore_contract::backoff::{Backoff, Retries};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::operation::{self, Context};
use crate::settle;
use crate::shutdown::Shutdown;

/// How long one pull request waits for messages. A pull cannot be withdrawn: the server
/// keeps delivering to it until it is full or expires, and a message it delivers after the
/// worker stopped listening waits out `ack_wait`. So on shutdown the worker reads the one in
/// flight until the server ends it (handing back what it brings). Short keeps shutdown
/// quick; the cost is one idle request per this period per replica.
pub const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// Pauses between failed pull requests (NATS unreachable, or the consumer without a leader
/// answering 503): growing, jittered, reset by a pull that works.
const PULL_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Everything the pull loop needs besides the consumer.
pub struct Puller {
    pub ctx: Arc<Context>,
    pub tracker: TaskTracker,
    /// When shutdown starts: stop pulling.
    pub shutdown: Shutdown,
    /// Cancelled when the drain grace period is over: hand back what is still running.
    pub abort: CancellationToken,
}

impl Puller {
    /// Pulls until shutdown. Never returns early: a failing pull is retried after a pause
    /// that grows with each failure in a row.
    pub async fn run(&self, consumer: PullConsumer) {
        let pool = &self.ctx.config.pool;
        let slots = Arc::new(Semaphore::new(pool.concurrency));
        let mut retries = PULL_BACKOFF.retries();
        loop {
            // Only ask for what can start now: a buffered message's ack_wait is running.
            let first = tokio::select! {
                // Shutdown first: a pull issued after it only brings messages to hand back.
                biased;
                () = self.shutdown.started() => return,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let mut permits = vec![first];
            while permits.len() < pool.pull_batch {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let batch = consumer
                .batch()
                .max_messages(permits.len())
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    drop(permits);
                    if !self.pause(&mut retries, &e).await {
                        return;
                    }
                    continue;
                }
            };
            let failed = loop {
                let next = tokio::select! {
                    biased;
                    () = self.shutdown.started() => {
                        self.hand_back_rest(batch).await;
                        return;
                    }
                    next = batch.next() => next,
                };
                match next {
                    None => break None,
                    Some(Ok(message)) => {
                        retries.reset();
                        let permit = permits.pop();
                        let ctx = self.ctx.clone();
                        let abort = self.abort.clone();
                        self.tracker.spawn(async move {
                            operation::handle(ctx, message, abort).await;
                            drop(permit);
                        });
                    }
                    // The server ended the pull with an error status: 503 when the consumer
                    // has no leader (a cluster electing one, or without quorum), 409 when it
                    // was deleted. Asking again at once would only get the same answer.
                    Some(Err(e)) => break Some(e),
                }
            };
            match failed {
                Some(e) => {
                    drop(permits);
                    if !self.pause(&mut retries, &e).await {
                        return;
                    }
                }
                // Expired or full: the pull worked, whether or not it brought anything.
                None => retries.reset(),
            }
        }
    }

    /// Logs a failed pull and waits before the next one. `false` if shutdown came first.
    async fn pause(&self, retries: &mut Retries, error: &(dyn std::fmt::Display + Sync)) -> bool {
        let pause = retries.next_delay();
        // The first failure in a row is worth a warning; the rest only at debug.
        if retries.failures() == 1 {
            tracing::warn!(%error, retry_in = ?pause, "pull request failed; retrying with backoff");
        } else {
            tracing::debug!(%error, retry_in = ?pause, failures = retries.failures(), "pull request failed again");
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => true,
            () = self.shutdown.started() => false,
        }
    }

    /// Reads the rest of a pull already requested, until the server ends it (full, expired,
    /// or an error status), and hands every message back at once. Returning earlier would
    /// leave the request open at the server: what it delivered then would be dropped with
    /// the subscription and wait for `ack_wait`. The batch's own timer (`expires` plus a
    /// margin) bounds this if the server's end never comes.
    async fn hand_back_rest(&self, mut batch: async_nats::jetstream::consumer::pull::Batch) {
        let mut handed_back = 0usize;
        // Bounded by the drain: with NATS gone the server's end never comes, and the
        // batch's own timer is longer than a short grace period.
        let deadline = self.shutdown.work_deadline();
        while let Ok(Some(next)) = tokio::time::timeout_at(deadline, batch.next()).await {
            if let Ok(message) = next {
                settle::hand_back(&message).await;
                handed_back += 1;
            }
        }
        if handed_back > 0 {
            tracing::info!(
                count = handed_back,
                "handed back messages that arrived during shutdown"
            );
        }
    }
}
