//! The `kommo-webhook` Lambda function: everything that arrives from Kommo (chat webhooks, the Kommo UI widget's calls).
//! It only wires: configuration, clients built once per cold start, and the shared handler.

use std::sync::Arc;

use shared::routes::EntryPoint;
use shared::{deploy, lambda};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let bridge = deploy::production_bridge(deploy::config_or_exit().await);
    lambda::serve(Arc::new(bridge), EntryPoint::KommoWebhook).await
}
