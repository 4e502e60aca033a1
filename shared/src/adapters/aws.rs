//! AWS SDK configuration from the environment, without `aws-config`: region from `AWS_REGION`,
//! credentials from the `AWS_*` variables Lambda sets (dummy ones for a local endpoint), bounded
//! timeouts. Nothing here touches the network, so it can neither slow nor hang a cold start,
//! and the build skips `aws-config`'s STS/SSO clients.

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_dynamodb::config::BehaviorVersion;
use aws_types::SdkConfig;
use aws_types::region::Region;
use aws_types::sdk_config::TimeoutConfig;

pub fn sdk_config() -> SdkConfig {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into());
    let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(key), Some(secret)) => Credentials::new(key, secret, env("AWS_SESSION_TOKEN"), None, "environment"),
        _ => Credentials::new("local", "local", None, None, "local-endpoint"),
    };
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .timeout_config(
            TimeoutConfig::builder()
                // DynamoDB and SQS answer in milliseconds; these bounds keep a stuck call well
                // inside the 4 s the webhook function has (Kommo waits 5 s).
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(Duration::from_secs(1))
                .operation_timeout(Duration::from_millis(2500))
                .build(),
        )
        .build()
}
