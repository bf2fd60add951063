//! The pull loop: asks the pool's durable consumer for as many messages as there are free
//! slots, hands each to [`operation::handle`] in a tracked task, and on shutdown stops
//! pulling and hands back whatever arrives afterwards.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::operation::{self, Context};

/// How long one pull request waits for messages. A pull cannot be withdrawn: the server
/// keeps delivering to it until it is full or expires, and a message it delivers after the
/// worker stopped listening waits out `ack_wait`. So on shutdown the worker reads the one in
/// flight until the server ends it (handing back what it brings). Short keeps shutdown
/// quick; the cost is one idle request per this period per replica.
const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// Pauses between failed pull requests (NATS unreachable): doubling up to the maximum.
const PULL_RETRY_MIN: Duration = Duration::from_millis(100);
const PULL_RETRY_MAX: Duration = Duration::from_secs(5);

/// Everything the pull loop needs besides the consumer.
pub struct Puller {
    pub ctx: Arc<Context>,
    pub tracker: TaskTracker,
    /// Cancelled when shutdown starts: stop pulling.
    pub shutdown: CancellationToken,
    /// Cancelled when the drain grace period is over: hand back what is still running.
    pub abort: CancellationToken,
}

impl Puller {
    /// Pulls until shutdown. Never returns early: a failing pull is retried.
    pub async fn run(&self, consumer: PullConsumer) {
        let pool = &self.ctx.config.pool;
        let slots = Arc::new(Semaphore::new(pool.concurrency));
        let mut pause = PULL_RETRY_MIN;
        loop {
            // Only ask for what can start now: a buffered message's ack_wait is running.
            let first = tokio::select! {
                // Shutdown first: a pull issued after it only brings messages to hand back.
                biased;
                () = self.shutdown.cancelled() => return,
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
                Ok(batch) => {
                    pause = PULL_RETRY_MIN;
                    batch
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?pause, "pull request failed");
                    drop(permits);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.shutdown.cancelled() => return,
                    }
                    pause = (pause * 2).min(PULL_RETRY_MAX);
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => {
                        self.hand_back_rest(batch).await;
                        return;
                    }
                    next = batch.next() => next,
                };
                match next {
                    None => break,
                    Some(Ok(message)) => {
                        let permit = permits.pop();
                        let ctx = self.ctx.clone();
                        let abort = self.abort.clone();
                        self.tracker.spawn(async move {
                            operation::handle(ctx, message, abort).await;
                            drop(permit);
                        });
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "pull request ended with an error");
                        break;
                    }
                }
            }
        }
    }

    /// Reads the rest of a pull already requested, until the server ends it (full, expired,
    /// or an error status), and hands every message back at once. Returning earlier would
    /// leave the request open at the server: what it delivered then would be dropped with
    /// the subscription and wait for `ack_wait`. The batch's own timer (`expires` plus a
    /// margin) bounds this if the server's end never comes.
    async fn hand_back_rest(&self, mut batch: async_nats::jetstream::consumer::pull::Batch) {
        let mut handed_back = 0usize;
        while let Some(next) = batch.next().await {
            if let Ok(message) = next {
                operation::hand_back(&message).await;
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
