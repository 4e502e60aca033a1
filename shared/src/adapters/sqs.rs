//! SQS message timers, the [`Timers`] adapter in AWS: one message per piece of work on the
//! timer queue, consumed by the `typing-expiry` function.

use std::sync::Arc;

use async_trait::async_trait;

use crate::ports::timers::{DueWork, QUEUED_WORK_MAX_BYTES, TimerError, Timers, queue_body};

/// SQS's longest per-message delay; work due later fires early and is re-checked.
pub const SQS_MAX_DELAY_S: i64 = 900;

/// SQS's classic message size, what the template gives the timer queue (AWS allows up to 1 MiB
/// on a queue made so; the bridge keeps to the classic limit everywhere).
pub const SQS_MAX_MESSAGE_BYTES: usize = 262_144;
// The port's promise to the flows is what SQS takes.
const _: () = assert!(QUEUED_WORK_MAX_BYTES <= SQS_MAX_MESSAGE_BYTES);

/// SQS message timers: one message per piece of work, `DelaySeconds` rounded up so that work
/// never fires before it is due.
pub struct SqsTimers {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    clock: Arc<dyn crate::time::Clock>,
}

impl SqsTimers {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>, clock: Arc<dyn crate::time::Clock>) -> Self {
        Self { client, queue_url: queue_url.into(), clock }
    }
}

/// Whole seconds to wait so that `due_at_ms` has passed, within SQS's 0–900.
pub fn sqs_delay_seconds(due_at_ms: i64, now_ms: i64) -> i32 {
    let wait_ms = (due_at_ms - now_ms).max(0);
    (wait_ms.div_euclid(1000) + i64::from(wait_ms % 1000 != 0)).min(SQS_MAX_DELAY_S) as i32
}

#[async_trait]
impl Timers for SqsTimers {
    async fn schedule(&self, work: DueWork, due_at_ms: i64) -> Result<(), TimerError> {
        let body = queue_body(&work);
        // Checked where the work was accepted (`check_queueable`); this names the failure
        // plainly, and without a call, should work built later ever outgrow it.
        if body.len() > SQS_MAX_MESSAGE_BYTES {
            return Err(TimerError(format!(
                "{} work of {} bytes is over SQS's {SQS_MAX_MESSAGE_BYTES}",
                work.kind(),
                body.len()
            )));
        }
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(sqs_delay_seconds(due_at_ms, self.clock.now_ms()))
            .send()
            .await
            .map_err(|e| TimerError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        Ok(())
    }
}

/// An SQS client configured from the environment, at `endpoint` when given (a local server).
pub fn sqs_client_from_env(endpoint: Option<&str>) -> aws_sdk_sqs::Client {
    let mut builder = aws_sdk_sqs::config::Builder::from(&crate::adapters::aws::sdk_config());
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_sqs::Client::from_conf(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqs_delays_round_up_so_work_never_fires_early() {
        assert_eq!(sqs_delay_seconds(10_000, 10_000), 0);
        assert_eq!(sqs_delay_seconds(10_001, 10_000), 1);
        assert_eq!(sqs_delay_seconds(15_000, 10_000), 5);
        assert_eq!(sqs_delay_seconds(5_000, 10_000), 0);
        assert_eq!(sqs_delay_seconds(10_000_000, 0), 900);
    }
}
