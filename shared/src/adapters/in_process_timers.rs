//! Timers as tokio tasks: what SQS does in AWS, for the dev server. The loop hands due work to
//! a [`DueWorkRunner`] (the queued-work dispatcher), never to the bridge itself.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::ports::timers::{DueWork, DueWorkRunner, TimerError, Timers};
use crate::time::Clock;

/// Timers as tokio tasks: what SQS does in AWS, for the dev server.
pub struct InProcessTimers {
    sender: tokio::sync::mpsc::UnboundedSender<(DueWork, i64)>,
}

/// The other end of [`InProcessTimers`]: run it with the bridge that does the work.
pub struct InProcessTimerLoop {
    receiver: tokio::sync::mpsc::UnboundedReceiver<(DueWork, i64)>,
}

/// Like SQS redelivery (a failed record comes back after the visibility timeout, a few times
/// over): a failed run is tried again, 1 s later, then 2, 4, … up to 30 s apart, for about two
/// minutes in all, so work that falls due while the store is down outlives an outage of that
/// long instead of being dropped (a lapsed lease would never be ended, a relay never made).
const IN_PROCESS_DELIVERIES: u32 = 9;
const IN_PROCESS_MAX_REDELIVERY_WAIT: Duration = Duration::from_secs(30);

/// The wait after failed delivery `delivery` (1-based).
fn redelivery_wait(delivery: u32) -> Duration {
    Duration::from_secs(1u64 << (delivery - 1).min(10)).min(IN_PROCESS_MAX_REDELIVERY_WAIT)
}

impl InProcessTimers {
    pub fn new() -> (Self, InProcessTimerLoop) {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        (Self { sender }, InProcessTimerLoop { receiver })
    }
}

#[async_trait]
impl Timers for InProcessTimers {
    async fn schedule(&self, work: DueWork, due_at_ms: i64) -> Result<(), TimerError> {
        self.sender.send((work, due_at_ms)).map_err(|_| TimerError("the timer loop has stopped".into()))
    }
}

impl InProcessTimerLoop {
    /// Hands every scheduled piece of work to `runner` when it falls due on `clock`, until the
    /// timers are dropped.
    pub async fn run<R: DueWorkRunner + 'static>(mut self, runner: Arc<R>, clock: Arc<dyn Clock>) {
        while let Some((work, due_at_ms)) = self.receiver.recv().await {
            let (runner, clock) = (runner.clone(), clock.clone());
            tokio::spawn(async move {
                let wait = (due_at_ms - clock.now_ms()).max(0) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                for delivery in 1..=IN_PROCESS_DELIVERIES {
                    match runner.run_due(work.clone()).await {
                        Ok(()) => return,
                        Err(error) if delivery < IN_PROCESS_DELIVERIES => {
                            tracing::warn!(work = work.kind(), delivery, %error, "due work failed; trying again");
                            tokio::time::sleep(redelivery_wait(delivery)).await;
                        }
                        Err(error) => tracing::warn!(work = work.kind(), delivery, %error, "due work failed"),
                    }
                }
                tracing::error!(work = work.kind(), "due work failed on every delivery; dropped");
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_redelivery_backs_off_for_about_two_minutes() {
        let waits: Vec<u64> = (1..IN_PROCESS_DELIVERIES).map(|d| redelivery_wait(d).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
