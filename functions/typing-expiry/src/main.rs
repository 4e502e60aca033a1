//! The `typing-expiry` Lambda function: work that falls due later, from the SQS timer queue
//! (lapsed typing leases, typing refreshes, queued deliveries to the chat service). Failed
//! records are reported one by one (`ReportBatchItemFailures`), so only they are retried.
//! It only wires: configuration, secrets and clients loaded on the first event, and the shared handler.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use shared::app::config::Function;
use shared::app::deploy;
use shared::queued::{SqsBatchResponse, SqsEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let cold_start = Arc::new(deploy::ColdStart::check_config_or_exit(Function::TypingExpiry));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let cold_start = cold_start.clone();
        // Without a bridge the whole batch fails and SQS redelivers it after the visibility timeout.
        async move {
            let bridge = cold_start.bridge().await?;
            let dispatcher = bridge.dispatcher().ok_or("typing-expiry is wired without a chat-service client")?;
            Ok::<SqsBatchResponse, lambda_runtime::Error>(dispatcher.run_batch(event.payload).await)
        }
    }))
    .await
}
