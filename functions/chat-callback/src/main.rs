//! The `chat-callback` Lambda function: everything that arrives from the chat service.
//! It only wires: configuration, secrets and clients loaded on the first event, and the shared handler.

use std::sync::Arc;

use shared::app::config::Function;
use shared::app::routes::EntryPoint;
use shared::app::{deploy, lambda};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let cold_start = deploy::ColdStart::check_config_or_exit(Function::ChatCallback);
    lambda::serve(Arc::new(cold_start), EntryPoint::ChatCallback).await
}
