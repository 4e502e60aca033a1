//! The DynamoDB adapter: one table, keys `pk`/`sk` (strings), TTL attribute `expires_at`.
//!
//! Every kind of item the adapter writes, and the file that writes it (`{scope}` is the scope
//! id). The TTL column is what `expires_at` is set to, in epoch seconds by `ttl_seconds`; "none":
//! the item has no `expires_at` and stays until it is overwritten or deleted.
//!
//! | item | pk | sk | TTL | written in |
//! |---|---|---|---|---|
//! | typing lease | `{scope}#typing#{conversation}` | holder: `manager:{id}` or `client:{id}` | lease end + 1 h (`LEASE_GRACE_S`) | `leases.rs` |
//! | presence window | `{scope}#presence#{subject}` | device | window end + 30 d (`PRESENCE_RETENTION_S`) | `presence.rs` |
//! | pushed state | `{scope}#pushed#{subject}` | device | time of the write + 30 d | `presence.rs` |
//! | manager message | `{scope}#msg#{kommo msgid}` | `msg` | created + 90 d (`MESSAGE_RETENTION_S`); a status moves it to the status's time + 90 d | `messages.rs` |
//! | its index | `{scope}#out#{conversation}` | `{created_at_ms:015}#{kommo msgid}` | created + 90 d | `messages.rs` |
//! | its chat name | `{scope}#chatmsg#{chat msgid}` | `alias` | time of the write + 90 d | `messages.rs` |
//! | client message | `{scope}#in#{chat msgid}` | `in` | sent (floored at 0) + 90 d | `messages.rs` |
//! | client inbox | `{scope}#inbox#{conversation}` | `{sent_at_ms:015}#{chat msgid}` (sent floored at 0) | sent (floored at 0) + 90 d | `messages.rs` |
//! | conversation | `{scope}#conv#{conversation}` | `conv` | none | `conversations.rs` |
//! | Kommo chat | `{scope}#chat#{kommo chat id}` | `chat` (names the conversation) | none | `conversations.rs` |
//! | dedupe key | `{scope}#dedupe#{key}` | `dedupe` | claim end | `dedupe.rs` |
//! | send lane | `{scope}#turn#{lane}` | `turn` | hold end + 1 d (`TURN_RETENTION_S`) | `turns.rs` |
//! | account | `account#{numeric account id}` | `account` | none | `accounts.rs` |
//! | its scope | `{scope}#account` | `account` | none | `accounts.rs` |
//! | the accounts' list | `accounts` | `account#{numeric account id}`, and `#indexed` once accounts stored before the list are in it | none | `accounts.rs` |
//! | its managers | `{scope}#managers` | `managers` (the list as JSON in attribute `managers`) | none | `managers.rs` |
//! | its sources | `{scope}#sources` | `{external id}` | none | `sources.rs` |
//!
//! Every change is one conditional write whose condition carries the rule (lease still live,
//! status only forward, first claim only), so concurrent invocations cannot break it.
//!
//! Here: the client, the table, [`DynamoStore`] and what every capability's file shares (item
//! reads, counted updates, the stamped conditional update, the attribute helpers). Each
//! capability's `impl` and its own helpers are in the file the table names.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType, TimeToLiveSpecification,
};
use std::collections::HashMap;

use crate::ports::store::{OpCounter, OpCounts, Store, StoreError};

mod accounts;
mod conversations;
mod dedupe;
mod leases;
mod managers;
mod messages;
mod presence;
mod sources;
mod turns;

pub use aws_sdk_dynamodb::types::AttributeValue;

type Item = HashMap<String, AttributeValue>;

pub const TTL_ATTRIBUTE: &str = "expires_at";

/// A DynamoDB client configured from the environment (see [`crate::adapters::aws::sdk_config`]),
/// at `endpoint` when given (a local server).
pub fn client_from_env(endpoint: Option<&str>) -> Client {
    let mut builder = aws_sdk_dynamodb::config::Builder::from(&crate::adapters::aws::sdk_config());
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Client::from_conf(builder.build())
}

/// Creates the table (on demand, TTL on `expires_at`) unless it exists: for tests and local runs;
/// in AWS the SAM template owns it.
pub async fn ensure_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let key = |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build();
    let attribute =
        |name: &str| AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build();
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash).map_err(corrupt)?)
        .key_schema(key("sk", KeyType::Range).map_err(corrupt)?)
        .attribute_definitions(attribute("pk").map_err(corrupt)?)
        .attribute_definitions(attribute("sk").map_err(corrupt)?)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(SdkError::ServiceError(e)) if e.err().is_resource_in_use_exception() => return Ok(()),
        Err(e) => return Err(unavailable(e)),
    }
    let ttl =
        TimeToLiveSpecification::builder().enabled(true).attribute_name(TTL_ATTRIBUTE).build().map_err(corrupt)?;
    client.update_time_to_live().table_name(table).time_to_live_specification(ttl).send().await.map_err(unavailable)?;
    Ok(())
}

pub struct DynamoStore {
    client: Client,
    table: String,
    ops: OpCounter,
}

impl DynamoStore {
    /// Every item in the table (a scan: for tests and operators, never on a request's path).
    pub async fn item_count(&self) -> Result<usize, StoreError> {
        let (mut count, mut start) = (0, None);
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start)
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?;
            count += page.count().max(0) as usize;
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(count);
            }
        }
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), ops: OpCounter::default() }
    }

    async fn get_item(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        self.ops.read();
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item)
    }
}

impl DynamoStore {
    /// An UpdateItem on one item, counted as a write (DynamoDB bills a failed condition as one).
    fn update(&self, pk: String, sk: &str) -> UpdateItemFluentBuilder {
        self.ops.write();
        self.client.update_item().table_name(&self.table).key("pk", s(pk)).key("sk", s(sk))
    }

    /// A conditional UpdateItem that stamps a token of this call into the item. The SDK retries
    /// an attempt that timed out (1 s), and the first may have been written: the retry then
    /// fails its own condition. The item DynamoDB returns with the failure tells the two apart
    /// (see [`Self::send_stamped`]). `set` is the update expression and starts with `SET `.
    fn stamped_update(&self, pk: String, sk: &str, set: &str) -> (UpdateItemFluentBuilder, String) {
        let token = hex::encode(crate::random::random_bytes::<8>());
        let expression = set.replacen("SET ", "SET write_token = :write_token, ", 1);
        let request = self
            .update(pk, sk)
            .update_expression(expression)
            .expression_attribute_values(":write_token", s(&token))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        (request, token)
    }

    async fn send_stamped(request: UpdateItemFluentBuilder, token: &str) -> Result<Stamped, StoreError> {
        match request.send().await {
            Ok(output) => Ok(Stamped::Written { after: output.attributes }),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let item = item_on_condition_failure(e.err()).cloned();
                match item {
                    Some(item) if text(&item, "write_token").as_deref() == Some(token) => {
                        Ok(Stamped::Written { after: Some(item) })
                    }
                    item => Ok(Stamped::Refused { current: item }),
                }
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// How a stamped conditional update ended.
enum Stamped {
    /// Written by this call (by this attempt, or by an earlier one the SDK retried); `after` is
    /// the item as written, when the request asked for `ALL_NEW` or a retry found it.
    Written { after: Option<Item> },
    /// The condition did not hold: someone else's write, or none; the item as it is.
    Refused { current: Option<Item> },
}

impl Stamped {
    fn written(&self) -> bool {
        matches!(self, Self::Written { .. })
    }
}

/// Stored in place of an attribute that was missing, where a write keeps the previous value.
const ABSENT: i64 = -1;

impl Store for DynamoStore {
    fn op_counts(&self) -> OpCounts {
        self.ops.counts()
    }
}

/// Ok(true) when a conditional write went through, Ok(false) when its condition did not hold.
fn conditional<O, E>(
    result: Result<O, SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>,
) -> Result<bool, StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(SdkError::ServiceError(e)) if e.err().code() == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(unavailable(e)),
    }
}

/// The item DynamoDB returns with a failed condition (`ReturnValuesOnConditionCheckFailure`).
fn item_on_condition_failure(error: &UpdateItemError) -> Option<&Item> {
    match error {
        UpdateItemError::ConditionalCheckFailedException(failed) => failed.item(),
        _ => None,
    }
}

/// Whether a transaction was cancelled because one of its conditions did not hold.
fn condition_cancelled(error: &TransactWriteItemsError) -> bool {
    match error {
        TransactWriteItemsError::TransactionCanceledException(canceled) => {
            canceled.cancellation_reasons().iter().any(|reason| reason.code() == Some("ConditionalCheckFailed"))
        }
        _ => false,
    }
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn num(item: &Item, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn text(item: &Item, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

fn unavailable<E: std::error::Error + Send + Sync + 'static>(error: E) -> StoreError {
    StoreError::Unavailable(DisplayErrorContext(error).to_string())
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(error.to_string())
}
