//! Wiring of the deployed functions: the strict configuration and the production adapters.

use std::sync::Arc;

use crate::app::Bridge;

/// Reads the strict configuration or ends the process with exit code 2 and a message naming
/// the variable: a Lambda function never starts half-configured.
pub fn config_or_exit() -> crate::config::Config {
    match crate::config::Config::from_env_strict(&|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(2);
        }
    }
}

/// The deployed bridge: DynamoDB (the table named by `TABLE_NAME`), SQS timers
/// (`TIMER_QUEUE_URL`), the system clock, and HTTPS clients for amojo and the chat service, all
/// built once per cold start without network calls.
pub fn production_bridge(config: crate::config::Config) -> Bridge {
    let client = crate::store::dynamo::client_from_env(config.dynamodb_endpoint.as_deref());
    let store = crate::store::dynamo::DynamoStore::new(client, config.table_name.clone());
    let clock: Arc<dyn crate::time::Clock> = Arc::new(crate::time::SystemClock);
    let sqs = crate::timers::sqs_client_from_env(config.sqs_endpoint.as_deref());
    let queue_url = config.timer_queue_url.clone().expect("the strict configuration requires TIMER_QUEUE_URL");
    let timers = crate::timers::SqsTimers::new(sqs, queue_url, clock.clone());
    Bridge::with_http_clients(config, clock, Arc::new(store), Arc::new(timers))
}
