//! Wiring of the deployed functions: the strict configuration (secrets from SSM Parameter
//! Store) and the production adapters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Bridge;
use super::config::{Config, Function};
use crate::signing::standard_webhooks::WebhookSecret;

/// The one network call of a cold start: SSM answers in tens of milliseconds.
const SSM_TIMEOUT: Duration = Duration::from_secs(3);

/// The deployed bridge, built on the first event rather than during Lambda's init phase.
///
/// Init only checks the configuration that needs no network, so a misconfigured function
/// fails at once with exit code 2 and a message naming the variable, and init stays as short
/// as a hello-world handler's (figures in docs/performance-and-cost.md). Fetching the secrets from SSM and
/// building the AWS and HTTPS clients (the TLS root store read among them) happen on the first
/// event, bounded by [`SSM_TIMEOUT`], and are kept for the life of the execution environment.
/// A failure is not kept: the invocation fails (a Lambda function error, which the errors alarm
/// counts, and the sender retries) and the next event tries again.
pub struct ColdStart {
    function: Function,
    bridge: tokio::sync::OnceCell<Arc<Bridge>>,
}

/// Why an invocation failed as a whole (the function could not serve it at all). Lambda
/// reports `kind` as the invocation's `errorType` (`configuration`: the secrets or the
/// configuration could not be read), so an alarm or a log query can tell failures apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct FunctionError {
    pub kind: &'static str,
    pub message: String,
}

impl FunctionError {
    pub fn configuration(message: impl Into<String>) -> Self {
        let message = message.into();
        let message = message.strip_prefix("configuration: ").map(str::to_owned).unwrap_or(message);
        Self { kind: "configuration", message }
    }
}

impl ColdStart {
    /// Checks `function`'s configuration from the environment, or ends the process with exit
    /// code 2.
    pub fn check_config_or_exit(function: Function) -> Self {
        let env = |name: &str| std::env::var(name).ok();
        if let Err(error) = check_without_secrets(&env, function) {
            eprintln!("{error}");
            std::process::exit(2);
        }
        Self { function, bridge: tokio::sync::OnceCell::new() }
    }

    /// The bridge, built on the first call with the function's secrets only.
    pub async fn bridge(&self) -> Result<Arc<Bridge>, FunctionError> {
        self.bridge
            .get_or_try_init(|| async {
                let config = load_config(&|name| std::env::var(name).ok(), self.function).await;
                let config = config.map_err(FunctionError::configuration)?;
                let ports = production_ports(&config);
                Ok(Arc::new(Bridge::new(config, ports)))
            })
            .await
            .cloned()
    }
}

/// The strict configuration, as [`Config::from_env_strict`] would read it once the secrets named
/// by `*_PARAM` are fetched: those stand in as placeholders of the right form.
fn check_without_secrets(env: &dyn Fn(&str) -> Option<String>, function: Function) -> Result<(), String> {
    let placeholder = |name: &str| {
        let by_parameter = env(name).is_none() && env(&format!("{name}_PARAM")).is_some_and(|p| !p.is_empty());
        by_parameter.then(|| match name {
            "CHAT_SERVICE_SECRET" => WebhookSecret::from_key(vec![0; 32]).expose(),
            // Of a key's form (64 hex digits, not one byte repeated): the real one is checked
            // once fetched.
            "KOMMO_TOKEN_KEY" => "0123456789abcdef".repeat(4),
            _ => "placeholder".to_owned(),
        })
    };
    let secrets = function.secrets();
    let env = |name: &str| if secrets.contains(&name) { placeholder(name).or_else(|| env(name)) } else { env(name) };
    Config::from_env_strict(&env, function).map(drop).map_err(|error| error.to_string())
}

/// The strict configuration with the function's secrets fetched from SSM where `*_PARAM` names
/// them.
async fn load_config(env: &(dyn Fn(&str) -> Option<String> + Sync), function: Function) -> Result<Config, String> {
    let fetched = fetch_secrets(env, function).await?;
    let env = |name: &str| fetched.get(name).cloned().or_else(|| env(name));
    Config::from_env_strict(&env, function).map_err(|error| error.to_string())
}

/// The values of `function`'s secrets behind their `*_PARAM` variables (for secrets not given
/// as values). Only those are asked of SSM: the function's role may read no other.
async fn fetch_secrets(
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    function: Function,
) -> Result<HashMap<String, String>, String> {
    let wanted: Vec<(&str, String)> = function
        .secrets()
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
    let mut ssm = aws_sdk_ssm::config::Builder::from(&crate::adapters::aws::sdk_config()).timeout_config(timeouts);
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

/// The deployed bridge's ports: DynamoDB (the table named by `TABLE_NAME`), SQS timers
/// (`TIMER_QUEUE_URL`), the system clock, and the HTTPS clients `config` allows, built without
/// network calls.
pub fn production_ports(config: &Config) -> super::Ports {
    let client = crate::adapters::dynamo::client_from_env(config.dynamodb_endpoint.as_deref());
    let store = crate::adapters::dynamo::DynamoStore::new(client, config.table_name.clone());
    let clock: Arc<dyn crate::time::Clock> = Arc::new(crate::time::SystemClock);
    let sqs = crate::adapters::sqs::sqs_client_from_env(config.sqs_endpoint.as_deref());
    let queue_url = config.timer_queue_url.clone().expect("the strict configuration requires TIMER_QUEUE_URL");
    let timers = crate::adapters::sqs::SqsTimers::new(sqs, queue_url, clock.clone());
    super::wiring::http_ports(config, clock, Arc::new(store), Arc::new(timers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_given_as_values_need_no_ssm_call() {
        let function = Function::ChatCallback;
        let env = |name: &str| function.secrets().contains(&name).then(|| "value".to_owned());
        assert_eq!(fetch_secrets(&env, function).await, Ok(HashMap::new()));
        let nothing = |_: &str| None;
        assert_eq!(
            fetch_secrets(&nothing, function).await,
            Ok(HashMap::new()),
            "and no *_PARAM: the strict config names what is missing"
        );
    }
}
