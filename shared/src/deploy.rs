//! Wiring of the deployed functions: the strict configuration (secrets from SSM Parameter
//! Store) and the production adapters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::app::Bridge;

/// The secrets, each given either as a value (`NAME`, local runs and tests) or, in AWS, as the
/// name of an SSM SecureString parameter (`NAME_PARAM`), read once per cold start.
pub const SECRETS: [&str; 3] = ["KOMMO_CHANNEL_SECRET", "KOMMO_INTEGRATION_SECRET", "CHAT_SERVICE_SECRET"];

/// The whole of the cold start's one network call: SSM answers in tens of milliseconds.
const SSM_TIMEOUT: Duration = Duration::from_secs(3);

/// Reads the strict configuration, fetching the secrets named by `*_PARAM` from SSM in one
/// bounded call, or ends the process with exit code 2 and a message naming the variable: a
/// Lambda function never starts half-configured.
pub async fn config_or_exit() -> crate::config::Config {
    let fetched = match fetch_secrets(&|name| std::env::var(name).ok()).await {
        Ok(fetched) => fetched,
        Err(error) => refuse(&error),
    };
    let env = |name: &str| fetched.get(name).cloned().or_else(|| std::env::var(name).ok());
    crate::config::Config::from_env_strict(&env).unwrap_or_else(|error| refuse(&error.to_string()))
}

fn refuse(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2);
}

/// The secret values behind the `*_PARAM` variables (for secrets not given as values).
async fn fetch_secrets(env: &dyn Fn(&str) -> Option<String>) -> Result<HashMap<String, String>, String> {
    let wanted: Vec<(&str, String)> = SECRETS
        .iter()
        .filter(|name| env(name).is_none())
        .filter_map(|name| env(&format!("{name}_PARAM")).filter(|p| !p.is_empty()).map(|param| (*name, param)))
        .collect();
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    // One patient attempt rather than the SDK's quick ones: this call happens once per cold start.
    let timeouts = aws_sdk_ssm::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(SSM_TIMEOUT)
        .operation_timeout(SSM_TIMEOUT)
        .build();
    let mut ssm = aws_sdk_ssm::config::Builder::from(&crate::aws::sdk_config()).timeout_config(timeouts);
    if let Some(endpoint) = env("SSM_ENDPOINT").filter(|e| !e.is_empty()) {
        ssm = ssm.endpoint_url(endpoint); // a local server in tests
    }
    let client = aws_sdk_ssm::Client::from_conf(ssm.build());
    let mut request = client.get_parameters().with_decryption(true);
    for (_, param) in &wanted {
        request = request.names(param);
    }
    let answer = tokio::time::timeout(SSM_TIMEOUT, request.send())
        .await
        .map_err(|_| "configuration: SSM did not answer within 3 s for the *_PARAM secrets".to_owned())?
        .map_err(|e| {
            format!("configuration: SSM refused the *_PARAM secrets: {}", aws_sdk_ssm::error::DisplayErrorContext(e))
        })?;
    let values: HashMap<&str, &str> =
        answer.parameters().iter().filter_map(|p| Some((p.name()?, p.value()?))).collect();
    wanted
        .into_iter()
        .map(|(name, param)| match values.get(param.as_str()) {
            Some(value) => Ok((name.to_owned(), (*value).to_owned())),
            None => Err(format!("configuration: {name}_PARAM names {param:?}, which SSM does not have")),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_given_as_values_need_no_ssm_call() {
        let env = |name: &str| SECRETS.contains(&name).then(|| "value".to_owned());
        assert_eq!(fetch_secrets(&env).await, Ok(HashMap::new()));
        let nothing = |_: &str| None;
        assert_eq!(
            fetch_secrets(&nothing).await,
            Ok(HashMap::new()),
            "and no *_PARAM: the strict config names what is missing"
        );
    }
}
