//! The `typing-expiry` Lambda function: work that falls due later, from the SQS timer queue
//! (lapsed typing leases, typing refreshes, queued deliveries to the chat service). Failed
//! records are reported one by one (`ReportBatchItemFailures`), so only they are retried.
//! It only wires: configuration, secrets and clients loaded on the first event, the runtime's
//! SQS event types, and the shared dispatcher.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use shared::app::config::Function;
use shared::app::deploy;
use shared::queued::QueuedRecord;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let cold_start = Arc::new(deploy::ColdStart::check_config_or_exit(Function::TypingExpiry));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let cold_start = cold_start.clone();
        // Without a bridge the whole batch fails and SQS redelivers it after the visibility timeout.
        async move {
            let bridge = cold_start.bridge().await.map_err(diagnostic)?;
            let dispatcher = bridge.dispatcher().ok_or_else(|| {
                diagnostic(deploy::FunctionError::configuration("typing-expiry is wired without a chat-service client"))
            })?;
            // A record without an id cannot be named in a failure: it is run like any other, and
            // an empty identifier, should it fail, makes Lambda retry the whole batch.
            let records = event.payload.records.into_iter().map(|message| QueuedRecord {
                message_id: message.message_id.unwrap_or_default(),
                body: message.body.unwrap_or_default(),
            });
            // What is left of the invocation's time, less a margin to hand unfinished work back.
            let left_ms = event.context.deadline.saturating_sub(now_ms()).saturating_sub(HAND_BACK_MARGIN_MS);
            let budget = Duration::from_millis(left_ms.max(MIN_BUDGET_MS));
            let failed = dispatcher.run_batch_within(records.collect(), Some(budget)).await;
            let mut response = SqsBatchResponse::default();
            response.batch_item_failures = failed.into_iter().map(failure).collect();
            Ok::<SqsBatchResponse, Diagnostic>(response)
        }
    }))
    .await
}

/// Time kept, before the invocation's deadline, to queue copies of unfinished work (one
/// SendMessage each, a store stall allowing).
const HAND_BACK_MARGIN_MS: u64 = 5_000;
/// A batch handed over with less time than the margin still gets this long.
const MIN_BUDGET_MS: u64 = 1_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// A function error as Lambda reports it: `errorType` is its kind, not a Rust type's name.
fn diagnostic(error: deploy::FunctionError) -> Diagnostic {
    Diagnostic { error_type: error.kind.to_owned(), error_message: error.to_string() }
}

fn failure(item_identifier: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = item_identifier;
    failure
}
