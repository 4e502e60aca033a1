//! The `chat-callback` Lambda function: everything that arrives from the chat service.
//! It only wires: configuration, clients built once per cold start, and the shared handler.

use std::sync::Arc;

use shared::lambda;
use shared::routes::EntryPoint;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let bridge = lambda::production_bridge(lambda::config_or_exit());
    lambda::serve(Arc::new(bridge), EntryPoint::ChatCallback).await
}
