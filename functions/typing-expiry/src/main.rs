//! The `typing-expiry` Lambda function: work that falls due later, from the SQS timer queue
//! (lapsed typing leases, typing refreshes, queued deliveries to the chat service). Failed
//! records are reported one by one (`ReportBatchItemFailures`), so only they are retried.
//! It only wires: configuration, clients built once per cold start, and the shared handler.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use shared::deploy;
use shared::due::{SqsBatchResponse, SqsEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let bridge = Arc::new(deploy::production_bridge(deploy::config_or_exit().await));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let bridge = bridge.clone();
        async move { Ok::<SqsBatchResponse, lambda_runtime::Error>(bridge.handle_sqs_batch(event.payload).await) }
    }))
    .await
}
