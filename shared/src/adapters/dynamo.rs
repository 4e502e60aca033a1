//! The DynamoDB adapter: one table, keys `pk`/`sk` (strings), TTL attribute `expires_at`.
//!
//! | item          | pk                                   | sk        |
//! |---------------|--------------------------------------|-----------|
//! | typing lease  | `{scope}#typing#{conversation}`      | holder    |
//! | presence      | `{scope}#presence#{subject}`         | device    |
//! | pushed state  | `{scope}#pushed#{subject}`           | device    |
//! | message       | `{scope}#msg#{kommo msgid}`          | `msg`     |
//! | its index     | `{scope}#out#{conversation}`         | `{created_at_ms:015}#{kommo msgid}` |
//! | its chat name | `{scope}#chatmsg#{chat msgid}`       | `alias`   |
//! | client message| `{scope}#in#{chat msgid}`            | `in`      |
//! | client inbox  | `{scope}#inbox#{conversation}`       | `{sent_at_ms:015}#{chat msgid}` |
//! | conversation  | `{scope}#conv#{conversation}`        | `conv`    |
//! | Kommo chat    | `{scope}#chat#{kommo chat id}`       | `chat`    |
//! | dedupe key    | `{scope}#dedupe#{key}`               | `dedupe`  |
//! | account       | `account#{numeric account id}`       | `account` |
//! | its scope     | `{scope}#account`                    | `account` |
//! | its managers  | `{scope}#managers`                   | `managers` (JSON list) |
//!
//! Every change is one conditional write whose condition carries the rule (lease still live,
//! status only forward, first claim only), so concurrent invocations cannot break it.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, Delete, KeySchemaElement, KeyType, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem,
};
use std::collections::HashMap;

use crate::models::status::DeliveryStatus;
use crate::ports::store::*;

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
        let token = hex::encode(crate::ids::random_bytes::<8>());
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

    /// Deletes a lease if `condition` (over `:now`) holds; returns the item it deleted.
    async fn delete_lease_if(&self, key: &LeaseKey, condition: &str, now_ms: i64) -> Result<Option<Item>, StoreError> {
        self.ops.write();
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(lease_pk(key)))
            .key("sk", s(&key.holder))
            .condition_expression(condition)
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(output.attributes),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(None),
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

fn lease_pk(key: &LeaseKey) -> String {
    format!("{}#typing#{}", key.scope_id, key.conversation_id)
}

fn presence_pk(scope_id: &str, subject: &str) -> String {
    format!("{scope_id}#presence#{subject}")
}

fn message_pk(scope_id: &str, kommo_msgid: &str) -> String {
    format!("{scope_id}#msg#{kommo_msgid}")
}

const MESSAGE_SK: &str = "msg";

#[async_trait]
impl TypingLeases for DynamoStore {
    async fn extend(&self, key: &LeaseKey, expires_at_ms: i64) -> Result<LeaseChange, StoreError> {
        // The expiry it replaced is kept too, so an SDK retry can still tell what its write did.
        let (request, token) = self.stamped_update(
            lease_pk(key),
            &key.holder,
            "SET expires_at_ms = :exp, expires_at = :ttl, previous_expires_at_ms = if_not_exists(expires_at_ms, :absent)",
        );
        let request = request
            .condition_expression("attribute_not_exists(expires_at_ms) OR expires_at_ms < :exp")
            .expression_attribute_values(":exp", n(expires_at_ms))
            .expression_attribute_values(":ttl", n(ttl_seconds(expires_at_ms, LEASE_GRACE_S)))
            .expression_attribute_values(":absent", n(ABSENT))
            .return_values(ReturnValue::AllNew);
        match Self::send_stamped(request, &token).await? {
            Stamped::Written { after } => {
                let previous = after.as_ref().and_then(|item| num(item, "previous_expires_at_ms"));
                Ok(match previous.filter(|at| *at != ABSENT) {
                    Some(previous_expires_at_ms) => LeaseChange::Extended { previous_expires_at_ms },
                    None => LeaseChange::Started,
                })
            }
            Stamped::Refused { current } => {
                let current = match current {
                    Some(item) => num(&item, "expires_at_ms"),
                    None => self.get_lease(key, 0).await?.map(|lease| lease.expires_at_ms),
                };
                Ok(LeaseChange::Unchanged { expires_at_ms: current.unwrap_or(expires_at_ms) })
            }
        }
    }

    async fn get_lease(&self, key: &LeaseKey, now_ms: i64) -> Result<Option<Lease>, StoreError> {
        let item = self.get_item(lease_pk(key), &key.holder).await?;
        Ok(item.as_ref().and_then(lease_of).filter(|lease| lease.expires_at_ms > now_ms))
    }

    async fn end(&self, key: &LeaseKey, now_ms: i64) -> Result<Option<Lease>, StoreError> {
        let ended = self.delete_lease_if(key, "expires_at_ms > :now", now_ms).await?;
        Ok(ended.as_ref().and_then(lease_of))
    }

    async fn end_if_lapsed(&self, key: &LeaseKey, now_ms: i64) -> Result<Option<i64>, StoreError> {
        let ended = self.delete_lease_if(key, "expires_at_ms <= :now", now_ms).await?;
        Ok(ended.as_ref().and_then(|old| num(old, "expires_at_ms")))
    }

    async fn client_typing_signal(
        &self,
        key: &LeaseKey,
        now_ms: i64,
        expires_at_ms: i64,
        min_gap_ms: i64,
    ) -> Result<ClientSignal, StoreError> {
        let lease_update = |set: &str| {
            let (request, token) = self.stamped_update(lease_pk(key), &key.holder, set);
            let request = request
                .expression_attribute_values(":exp", n(expires_at_ms))
                .expression_attribute_values(":ttl", n(ttl_seconds(expires_at_ms, LEASE_GRACE_S)))
                .expression_attribute_values(":now", n(now_ms));
            (request, token)
        };
        // The common case, one write: a live lease reaching less far is extended.
        let (extend, token) = lease_update("SET expires_at_ms = :exp, expires_at = :ttl");
        let extend = extend.condition_expression("expires_at_ms > :now AND expires_at_ms < :exp");
        let old = match Self::send_stamped(extend, &token).await? {
            Stamped::Written { .. } => return Ok(ClientSignal::Extended),
            Stamped::Refused { current } => current,
        };
        if old.as_ref().and_then(|item| num(item, "expires_at_ms")).is_some_and(|exp| exp > now_ms) {
            return Ok(ClientSignal::Extended); // live and already reaching as far
        }
        // No live lease: start one, claiming the next call unless one went out within the gap.
        let last_forwarded = old.as_ref().and_then(|item| num(item, "last_forwarded_at_ms"));
        let forward_now = last_forwarded.is_none_or(|at| at <= now_ms - min_gap_ms);
        let (start, token) = if forward_now {
            lease_update("SET expires_at_ms = :exp, expires_at = :ttl, last_forwarded_at_ms = :now")
        } else {
            lease_update("SET expires_at_ms = :exp, expires_at = :ttl")
        };
        let start = start.condition_expression("attribute_not_exists(expires_at_ms) OR expires_at_ms <= :now");
        match Self::send_stamped(start, &token).await? {
            Stamped::Written { .. } => {
                let base = if forward_now { now_ms } else { last_forwarded.unwrap_or(now_ms) };
                Ok(ClientSignal::Started { forward_now, next_forward_at_ms: base + min_gap_ms })
            }
            // A concurrent signal started it first: this one only confirms it.
            Stamped::Refused { .. } => Ok(ClientSignal::Extended),
        }
    }

    async fn claim_refresh(&self, key: &LeaseKey, now_ms: i64, min_gap_ms: i64) -> Result<bool, StoreError> {
        let (request, token) = self.stamped_update(lease_pk(key), &key.holder, "SET last_forwarded_at_ms = :now");
        let request = request
            .condition_expression(
                "expires_at_ms > :now AND (attribute_not_exists(last_forwarded_at_ms) OR last_forwarded_at_ms <= :gap_start)",
            )
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":gap_start", n(now_ms - min_gap_ms));
        Ok(Self::send_stamped(request, &token).await?.written())
    }
}

fn lease_of(item: &Item) -> Option<Lease> {
    Some(Lease { expires_at_ms: num(item, "expires_at_ms")?, last_forwarded_at_ms: num(item, "last_forwarded_at_ms") })
}

#[async_trait]
impl PresenceWindows for DynamoStore {
    async fn heartbeat(
        &self,
        key: &PresenceKey,
        now_ms: i64,
        window_ms: i64,
        coalesce_ms: i64,
    ) -> Result<HeartbeatOutcome, StoreError> {
        // A read first: reads cost half a write and, while nothing changes, spare the write.
        let pk = presence_pk(&key.scope_id, &key.subject);
        let current = self.get_item(pk.clone(), &key.device).await?;
        let window =
            current.as_ref().and_then(|item| Some((num(item, "last_seen_at_ms")?, num(item, "online_until_ms")?)));
        let online = window.is_some_and(|(_, until)| until > now_ms);
        if online && window.is_some_and(|(last_seen, _)| last_seen > now_ms - coalesce_ms) {
            return Ok(HeartbeatOutcome::Coalesced);
        }
        let until = now_ms + window_ms;
        // The window it replaced is kept too, so an SDK retry can still tell what its write did.
        let (request, token) = self.stamped_update(
            pk,
            &key.device,
            "SET last_seen_at_ms = :now, online_until_ms = :until, expires_at = :ttl, \
             previous_online_until_ms = if_not_exists(online_until_ms, :absent)",
        );
        let request = request
            // Never let a slower concurrent heartbeat move last_seen backwards.
            .condition_expression("attribute_not_exists(last_seen_at_ms) OR last_seen_at_ms < :now")
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":ttl", n(ttl_seconds(until, PRESENCE_RETENTION_S)))
            .expression_attribute_values(":absent", n(ABSENT))
            .return_values(ReturnValue::AllNew);
        match Self::send_stamped(request, &token).await? {
            Stamped::Written { after } => {
                let was_online =
                    after.as_ref().and_then(|item| num(item, "previous_online_until_ms")).is_some_and(|u| u > now_ms);
                Ok(if was_online { HeartbeatOutcome::Refreshed } else { HeartbeatOutcome::CameOnline })
            }
            Stamped::Refused { .. } => Ok(HeartbeatOutcome::Coalesced),
        }
    }

    async fn go_offline(&self, key: &PresenceKey, now_ms: i64) -> Result<bool, StoreError> {
        let (request, token) = self.stamped_update(
            presence_pk(&key.scope_id, &key.subject),
            &key.device,
            "SET last_seen_at_ms = :now, online_until_ms = :now, expires_at = :ttl",
        );
        let request = request
            .condition_expression("online_until_ms > :now")
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":ttl", n(ttl_seconds(now_ms, PRESENCE_RETENTION_S)));
        Ok(Self::send_stamped(request, &token).await?.written())
    }

    async fn presence_devices(
        &self,
        scope_id: &str,
        subject: &str,
        now_ms: i64,
    ) -> Result<Vec<(String, PresenceView)>, StoreError> {
        self.ops.read();
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(presence_pk(scope_id, subject)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let now_s = now_ms.div_euclid(1000);
        Ok(output
            .items()
            .iter()
            // Expired but not yet collected by TTL: gone, whatever DynamoDB still returns.
            .filter(|item| num(item, TTL_ATTRIBUTE).is_some_and(|ttl| ttl > now_s))
            .filter_map(|item| {
                let view =
                    PresenceView::of_window(num(item, "last_seen_at_ms")?, num(item, "online_until_ms")?, now_ms);
                Some((text(item, "sk")?, view))
            })
            .collect())
    }

    async fn mark_pushed(&self, scope_id: &str, subject: &str, device: &str, online: bool) -> Result<bool, StoreError> {
        let (request, token) = self.stamped_update(
            format!("{scope_id}#pushed#{subject}"),
            device,
            "SET pushed_online = :online, expires_at = :ttl",
        );
        let request = request
            .condition_expression("attribute_not_exists(pushed_online) OR pushed_online <> :online")
            .expression_attribute_values(":online", AttributeValue::Bool(online))
            .expression_attribute_values(
                ":ttl",
                n(ttl_seconds(crate::time::Clock::now_ms(&crate::time::SystemClock), PRESENCE_RETENTION_S)),
            );
        Ok(Self::send_stamped(request, &token).await?.written())
    }

    async fn pushed(&self, scope_id: &str, subject: &str, device: &str) -> Result<Option<bool>, StoreError> {
        let item = self.get_item(format!("{scope_id}#pushed#{subject}"), device).await?;
        Ok(item.as_ref().and_then(|item| item.get("pushed_online")).and_then(|value| value.as_bool().ok()).copied())
    }
}

#[async_trait]
impl MessageRecords for DynamoStore {
    async fn insert_message(&self, record: &MessageRecord) -> Result<bool, StoreError> {
        self.ops.write();
        let ttl = n(ttl_seconds(record.created_at_ms, MESSAGE_RETENTION_S));
        let mut message = Put::builder()
            .table_name(&self.table)
            .item("pk", s(message_pk(&record.scope_id, &record.kommo_msgid)))
            .item("sk", s(MESSAGE_SK))
            .item("conversation_id", s(&record.conversation_id))
            .item("dir", s(direction_name(record.direction)))
            .item("created_at_ms", n(record.created_at_ms))
            .item("relay_state", s(relay_name(record.relay)))
            .item("relay_hold_until_ms", n(0))
            .item(TTL_ATTRIBUTE, ttl.clone())
            .condition_expression("attribute_not_exists(pk)");
        if let Some(chat_msgid) = &record.chat_msgid {
            message = message.item("chat_msgid", s(chat_msgid));
        }
        if let Some(rank) = record.status_rank {
            message = message.item("status_rank", n(i64::from(rank)));
        }
        let index = Put::builder()
            .table_name(&self.table)
            .item("pk", s(format!("{}#out#{}", record.scope_id, record.conversation_id)))
            .item("sk", s(format!("{:015}#{}", record.created_at_ms, record.kommo_msgid)))
            .item("kommo_msgid", s(&record.kommo_msgid))
            .item(TTL_ATTRIBUTE, ttl);
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(message.build().map_err(corrupt)?).build())
            .transact_items(TransactWriteItem::builder().put(index.build().map_err(corrupt)?).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if condition_cancelled(e.err()) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn get_message(&self, scope_id: &str, kommo_msgid: &str) -> Result<Option<MessageRecord>, StoreError> {
        let item = self.get_item(message_pk(scope_id, kommo_msgid), MESSAGE_SK).await?;
        item.map(|item| {
            Ok(MessageRecord {
                scope_id: scope_id.to_owned(),
                kommo_msgid: kommo_msgid.to_owned(),
                conversation_id: text(&item, "conversation_id").unwrap_or_default(),
                direction: match text(&item, "dir").as_deref() {
                    Some("in") => Direction::Incoming,
                    _ => Direction::Outgoing,
                },
                chat_msgid: text(&item, "chat_msgid"),
                created_at_ms: num(&item, "created_at_ms")
                    .ok_or_else(|| StoreError::Corrupt("message without created_at_ms".into()))?,
                status_rank: num(&item, "status_rank").map(|rank| rank as i8),
                relay: match text(&item, "relay_state").as_deref() {
                    Some("pending") => RelayState::Pending,
                    Some("failed") => RelayState::Failed,
                    _ => RelayState::Sent,
                },
            })
        })
        .transpose()
    }

    async fn advance_status(
        &self,
        scope_id: &str,
        kommo_msgid: &str,
        status: &DeliveryStatus,
        now_ms: i64,
    ) -> Result<StatusChange, StoreError> {
        // The register's rule, as a condition: forward only; a failure only while nothing else.
        let condition = match status {
            DeliveryStatus::Failed(_) => "attribute_not_exists(status_rank)",
            _ => "attribute_not_exists(status_rank) OR status_rank < :rank",
        };
        // As with claims: an SDK retry of a write that landed finds its own token, not a rival.
        let token = hex::encode(crate::ids::random_bytes::<8>());
        let mut request = self
            .update(message_pk(scope_id, kommo_msgid), MESSAGE_SK)
            .update_expression(
                "SET status_rank = :rank, status_at_ms = :now, expires_at = :ttl, status_token = :token, \
                 created_at_ms = if_not_exists(created_at_ms, :now), dir = if_not_exists(dir, :out), \
                 relay_state = if_not_exists(relay_state, :sent)",
            )
            .expression_attribute_values(":token", s(&token))
            .condition_expression(condition)
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":ttl", n(ttl_seconds(now_ms, MESSAGE_RETENTION_S)))
            .expression_attribute_values(":out", s(direction_name(Direction::Outgoing)))
            .expression_attribute_values(":sent", s(relay_name(RelayState::Sent)))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        request = request.expression_attribute_values(":rank", n(i64::from(status.rank())));
        match request.send().await {
            Ok(output) => Ok(StatusChange::Advanced {
                previous_rank: output.attributes.as_ref().and_then(|old| num(old, "status_rank")).map(|r| r as i8),
            }),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let written_by_this_call = item_on_condition_failure(e.err())
                    .and_then(|item| item.get("status_token"))
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|written| *written == token);
                if written_by_this_call {
                    return Ok(StatusChange::Advanced { previous_rank: None });
                }
                let current = match item_on_condition_failure(e.err()) {
                    Some(item) => num(item, "status_rank"),
                    None => self.get_message(scope_id, kommo_msgid).await?.and_then(|r| r.status_rank).map(i64::from),
                };
                Ok(StatusChange::Unchanged { current_rank: current.map(|r| r as i8) })
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn claim_relay(
        &self,
        scope_id: &str,
        kommo_msgid: &str,
        now_ms: i64,
        hold_ms: i64,
    ) -> Result<RelayClaim, StoreError> {
        let (request, token) =
            self.stamped_update(message_pk(scope_id, kommo_msgid), MESSAGE_SK, "SET relay_hold_until_ms = :hold");
        let request = request
            .condition_expression("relay_state = :pending AND relay_hold_until_ms <= :now")
            .expression_attribute_values(":hold", n(now_ms + hold_ms))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":pending", s(relay_name(RelayState::Pending)));
        Ok(match Self::send_stamped(request, &token).await? {
            Stamped::Written { .. } => RelayClaim::Claimed,
            // The item DynamoDB returned with the refusal says why: still pending means held.
            Stamped::Refused { current: Some(item) }
                if text(&item, "relay_state").as_deref() == Some(relay_name(RelayState::Pending)) =>
            {
                RelayClaim::HeldUntil(num(&item, "relay_hold_until_ms").unwrap_or(now_ms + hold_ms))
            }
            Stamped::Refused { .. } => RelayClaim::Done,
        })
    }

    async fn finish_relay(&self, scope_id: &str, kommo_msgid: &str, outcome: &RelayOutcome) -> Result<(), StoreError> {
        let request =
            self.update(message_pk(scope_id, kommo_msgid), MESSAGE_SK).condition_expression("attribute_exists(pk)");
        let request = match outcome {
            RelayOutcome::Sent { chat_msgid: Some(chat_msgid) } => request
                .update_expression("SET relay_state = :state, chat_msgid = :chat")
                .expression_attribute_values(":state", s(relay_name(RelayState::Sent)))
                .expression_attribute_values(":chat", s(chat_msgid)),
            RelayOutcome::Sent { chat_msgid: None } => request
                .update_expression("SET relay_state = :state")
                .expression_attribute_values(":state", s(relay_name(RelayState::Sent))),
            RelayOutcome::RetryAt(at_ms) => {
                request.update_expression("SET relay_hold_until_ms = :at").expression_attribute_values(":at", n(*at_ms))
            }
            RelayOutcome::Failed => request
                .update_expression("SET relay_state = :state")
                .expression_attribute_values(":state", s(relay_name(RelayState::Failed))),
        };
        if !conditional(request.send().await)? {
            return Err(StoreError::Corrupt(format!("no message {kommo_msgid} to finish relaying")));
        }
        if let RelayOutcome::Sent { chat_msgid: Some(chat_msgid) } = outcome {
            self.ops.write();
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(format!("{scope_id}#chatmsg#{chat_msgid}")))
                .item("sk", s("alias"))
                .item("kommo_msgid", s(kommo_msgid))
                .item(
                    TTL_ATTRIBUTE,
                    n(ttl_seconds(crate::time::Clock::now_ms(&crate::time::SystemClock), MESSAGE_RETENTION_S)),
                )
                .send()
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn kommo_msgid_for(&self, scope_id: &str, chat_msgid: &str) -> Result<Option<String>, StoreError> {
        let item = self.get_item(format!("{scope_id}#chatmsg#{chat_msgid}"), "alias").await?;
        Ok(item.and_then(|item| text(&item, "kommo_msgid")))
    }

    async fn outgoing_up_to(
        &self,
        scope_id: &str,
        conversation_id: &str,
        created_at_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.ops.read();
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk < :upper")
            .expression_attribute_values(":pk", s(format!("{scope_id}#out#{conversation_id}")))
            // Every sort key of a message created at or before `created_at_ms` sorts below this.
            .expression_attribute_values(":upper", s(format!("{:015}$", created_at_ms)))
            .scan_index_forward(false)
            .limit(limit.min(1000) as i32)
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.items().iter().filter_map(|item| text(item, "kommo_msgid")).collect())
    }

    async fn insert_incoming(
        &self,
        scope_id: &str,
        chat_msgid: &str,
        conversation_id: &str,
        sent_at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.ops.write();
        let ttl = n(ttl_seconds(sent_at_ms.max(0), MESSAGE_RETENTION_S));
        let message = Put::builder()
            .table_name(&self.table)
            .item("pk", s(format!("{scope_id}#in#{chat_msgid}")))
            .item("sk", s("in"))
            .item("conversation_id", s(conversation_id))
            .item("sent_at_ms", n(sent_at_ms))
            .item(TTL_ATTRIBUTE, ttl.clone())
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(corrupt)?;
        let index = Put::builder()
            .table_name(&self.table)
            .item("pk", s(format!("{scope_id}#inbox#{conversation_id}")))
            .item("sk", s(format!("{:015}#{chat_msgid}", sent_at_ms.max(0))))
            .item("chat_msgid", s(chat_msgid))
            .item("sent_at_ms", n(sent_at_ms))
            .item(TTL_ATTRIBUTE, ttl)
            .build()
            .map_err(corrupt)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(message).build())
            .transact_items(TransactWriteItem::builder().put(index).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if condition_cancelled(e.err()) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn forget_incoming(
        &self,
        scope_id: &str,
        chat_msgid: &str,
        conversation_id: &str,
        sent_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.ops.write();
        let delete = |pk: String, sk: String| {
            let delete = Delete::builder().table_name(&self.table).key("pk", s(pk)).key("sk", s(sk));
            delete.build().map(|delete| TransactWriteItem::builder().delete(delete).build()).map_err(corrupt)
        };
        self.client
            .transact_write_items()
            .transact_items(delete(format!("{scope_id}#in#{chat_msgid}"), "in".to_owned())?)
            .transact_items(delete(
                format!("{scope_id}#inbox#{conversation_id}"),
                format!("{:015}#{chat_msgid}", sent_at_ms.max(0)),
            )?)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn newest_incoming(
        &self,
        scope_id: &str,
        conversation_id: &str,
    ) -> Result<Option<(i64, String)>, StoreError> {
        self.ops.read();
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(format!("{scope_id}#inbox#{conversation_id}")))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.items().first().and_then(|item| Some((num(item, "sent_at_ms")?, text(item, "chat_msgid")?))))
    }

    async fn finish_incoming(&self, scope_id: &str, chat_msgid: &str, state: &IncomingState) -> Result<(), StoreError> {
        let update = self.update(format!("{scope_id}#in#{chat_msgid}"), "in");
        let update = match state {
            IncomingState::Pending => update.update_expression("REMOVE import_state, kommo_msgid"),
            IncomingState::Imported { kommo_msgid: Some(kommo_msgid) } => update
                .update_expression("SET import_state = :state, kommo_msgid = :kommo")
                .expression_attribute_values(":state", s("imported"))
                .expression_attribute_values(":kommo", s(kommo_msgid)),
            IncomingState::Imported { kommo_msgid: None } => update
                .update_expression("SET import_state = :state")
                .expression_attribute_values(":state", s("imported")),
            IncomingState::Failed => {
                update.update_expression("SET import_state = :state").expression_attribute_values(":state", s("failed"))
            }
        };
        update.send().await.map_err(unavailable)?;
        Ok(())
    }

    async fn incoming_state(&self, scope_id: &str, chat_msgid: &str) -> Result<Option<IncomingState>, StoreError> {
        let Some(item) = self.get_item(format!("{scope_id}#in#{chat_msgid}"), "in").await? else {
            return Ok(None);
        };
        Ok(Some(match text(&item, "import_state").as_deref() {
            None => IncomingState::Pending,
            Some("imported") => IncomingState::Imported { kommo_msgid: text(&item, "kommo_msgid") },
            Some("failed") => IncomingState::Failed,
            Some(other) => return Err(StoreError::Corrupt(format!("import_state {other:?}"))),
        }))
    }
}

#[async_trait]
impl Conversations for DynamoStore {
    async fn remember_conversation(
        &self,
        scope_id: &str,
        conversation_id: &str,
        facts: &ConversationFacts<'_>,
    ) -> Result<(), StoreError> {
        let mut sets = vec!["conversation_id = :conv".to_owned()];
        let mut update = self
            .update(format!("{scope_id}#conv#{conversation_id}"), "conv")
            .expression_attribute_values(":conv", s(conversation_id));
        let fields = [
            ("kommo_chat_id", facts.kommo_chat_id),
            ("client_user_id", facts.client_user_id),
            ("kommo_client_id", facts.kommo_client_id),
            ("answered_as", facts.answered_as),
        ];
        for (attribute, value) in fields {
            if let Some(value) = value {
                sets.push(format!("{attribute} = :{attribute}"));
                update = update.expression_attribute_values(format!(":{attribute}"), s(value));
            }
        }
        update.update_expression(format!("SET {}", sets.join(", "))).send().await.map_err(unavailable)?;
        // A conversation named by Kommo's chat id needs no second name.
        if let Some(chat_id) = facts.kommo_chat_id.filter(|chat_id| *chat_id != conversation_id) {
            self.ops.write();
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(format!("{scope_id}#chat#{chat_id}")))
                .item("sk", s("chat"))
                .item("conversation_id", s(conversation_id))
                .send()
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn find_conversation(&self, scope_id: &str, id: &str) -> Result<Option<ConversationInfo>, StoreError> {
        let mut item = self.get_item(format!("{scope_id}#conv#{id}"), "conv").await?;
        match &item {
            // Answered under the chat service's own id: that conversation is this one now.
            Some(found) => {
                if let Some(answered_as) = text(found, "answered_as") {
                    item = self.get_item(format!("{scope_id}#conv#{answered_as}"), "conv").await?;
                }
            }
            None => {
                // Not the integration's id: maybe Kommo's chat id.
                let alias = self.get_item(format!("{scope_id}#chat#{id}"), "chat").await?;
                if let Some(conversation_id) = alias.and_then(|alias| text(&alias, "conversation_id")) {
                    item = self.get_item(format!("{scope_id}#conv#{conversation_id}"), "conv").await?;
                }
            }
        }
        Ok(item.map(|item| ConversationInfo {
            conversation_id: text(&item, "conversation_id").unwrap_or_default(),
            kommo_chat_id: text(&item, "kommo_chat_id"),
            client_user_id: text(&item, "client_user_id"),
            kommo_client_id: text(&item, "kommo_client_id"),
            answered_as: text(&item, "answered_as"),
        }))
    }

    async fn advance_read_mark(
        &self,
        scope_id: &str,
        conversation_id: &str,
        sent_at_ms: i64,
        chat_msgid: &str,
    ) -> Result<bool, StoreError> {
        let (request, token) = self.stamped_update(
            format!("{scope_id}#conv#{conversation_id}"),
            "conv",
            "SET read_mark_ms = :ms, read_mark_msgid = :id, conversation_id = :conv",
        );
        let request = request
            .condition_expression(
                "attribute_not_exists(read_mark_ms) OR read_mark_ms < :ms OR (read_mark_ms = :ms AND read_mark_msgid < :id)",
            )
            .expression_attribute_values(":ms", n(sent_at_ms))
            .expression_attribute_values(":id", s(chat_msgid))
            .expression_attribute_values(":conv", s(conversation_id));
        Ok(Self::send_stamped(request, &token).await?.written())
    }
}

#[async_trait]
impl DedupeKeys for DynamoStore {
    async fn claim(&self, scope_id: &str, key: &str, now_ms: i64, ttl_ms: i64) -> Result<bool, StoreError> {
        self.ops.write();
        let until = now_ms + ttl_ms;
        // The SDK retries an attempt that timed out, and the first may have been written: its
        // retry then finds the claim taken. A token of this call tells "taken by this very call"
        // from "taken by another", which would otherwise refuse a fresh webhook-id as a replay.
        let token = hex::encode(crate::ids::random_bytes::<8>());
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("{scope_id}#dedupe#{key}")))
            .item("sk", s("dedupe"))
            .item("until_ms", n(until))
            .item("claim_token", s(&token))
            .item(TTL_ATTRIBUTE, n(ttl_seconds(until, 0)))
            .condition_expression("attribute_not_exists(pk) OR until_ms <= :now")
            .expression_attribute_values(":now", n(now_ms))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) => match e.err() {
                PutItemError::ConditionalCheckFailedException(failed) => {
                    let holder = failed.item().and_then(|item| item.get("claim_token")).and_then(|v| v.as_s().ok());
                    Ok(holder == Some(&token))
                }
                _ => Err(unavailable(SdkError::ServiceError(e))),
            },
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn release(&self, scope_id: &str, key: &str) -> Result<(), StoreError> {
        self.ops.write();
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("{scope_id}#dedupe#{key}")))
            .key("sk", s("dedupe"))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// How long a lane's item (its sent mark) outlives its last turn: longer than any queued retry
/// of a send on it.
const TURN_RETENTION_S: i64 = 24 * 3600;

fn turn_pk(scope_id: &str, lane: &str) -> String {
    format!("{scope_id}#turn#{lane}")
}

#[async_trait]
impl SendTurns for DynamoStore {
    async fn take_turn(&self, scope_id: &str, lane: &str, now_ms: i64, hold_ms: i64) -> Result<Turn, StoreError> {
        // As with claims: an SDK retry of a write that landed finds its own token, not a rival.
        let token = hex::encode(crate::ids::random_bytes::<8>());
        let until_ms = now_ms + hold_ms;
        let result = self
            .update(turn_pk(scope_id, lane), "turn")
            .update_expression("SET holder = :token, hold_until_ms = :until, expires_at = :ttl")
            .condition_expression("attribute_not_exists(hold_until_ms) OR hold_until_ms <= :now")
            .expression_attribute_values(":token", s(&token))
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":ttl", n(ttl_seconds(until_ms, TURN_RETENTION_S)))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => {
                let sent_mark = output.attributes.as_ref().and_then(|item| num(item, "sent_mark"));
                Ok(Turn::Yours { token, sent_mark })
            }
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let held = item_on_condition_failure(e.err());
                if held.and_then(|item| text(item, "holder")).as_deref() == Some(token.as_str()) {
                    let sent_mark = held.and_then(|item| num(item, "sent_mark"));
                    return Ok(Turn::Yours { token, sent_mark });
                }
                Ok(Turn::Busy { until_ms: held.and_then(|item| num(item, "hold_until_ms")).unwrap_or(until_ms) })
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn peek_turn(&self, scope_id: &str, lane: &str, now_ms: i64) -> Result<LaneView, StoreError> {
        let Some(item) = self.get_item(turn_pk(scope_id, lane), "turn").await? else {
            return Ok(LaneView::default());
        };
        let held_until_ms = num(&item, "hold_until_ms").filter(|until_ms| *until_ms > now_ms);
        Ok(LaneView { held_until_ms, sent_mark: num(&item, "sent_mark") })
    }

    async fn end_turn(
        &self,
        scope_id: &str,
        lane: &str,
        token: &str,
        sent_mark: Option<i64>,
    ) -> Result<(), StoreError> {
        let release = self
            .update(turn_pk(scope_id, lane), "turn")
            .condition_expression("holder = :token")
            .expression_attribute_values(":token", s(token));
        let release = match sent_mark {
            // While the turn is held no one else writes the mark, and a sender only sends what
            // is above it: no max() needed.
            Some(mark) => release
                .update_expression("SET sent_mark = :mark REMOVE holder, hold_until_ms")
                .expression_attribute_values(":mark", n(mark)),
            None => release.update_expression("REMOVE holder, hold_until_ms"),
        };
        if conditional(release.send().await)? {
            return Ok(());
        }
        // The hold ran out before the send ended (or an SDK retry of this very write): the lane
        // is someone else's or free; the mark still only rises.
        if let Some(mark) = sent_mark {
            let raise = self
                .update(turn_pk(scope_id, lane), "turn")
                .update_expression("SET sent_mark = :mark")
                .condition_expression("attribute_exists(pk) AND (attribute_not_exists(sent_mark) OR sent_mark < :mark)")
                .expression_attribute_values(":mark", n(mark))
                .send()
                .await;
            conditional(raise)?;
        }
        Ok(())
    }
}

#[async_trait]
impl ManagerDirectory for DynamoStore {
    async fn managers_of(&self, scope_id: &str) -> Result<Option<ManagerList>, StoreError> {
        let Some(item) = self.get_item(format!("{scope_id}#managers"), "managers").await? else { return Ok(None) };
        let managers =
            text(&item, "managers").ok_or_else(|| StoreError::Corrupt("directory without managers".into()))?;
        let managers = serde_json::from_str(&managers).map_err(|e| StoreError::Corrupt(format!("directory: {e}")))?;
        Ok(Some(ManagerList { fetched_at_ms: num(&item, "fetched_at_ms").unwrap_or_default(), managers }))
    }

    async fn put_managers(&self, scope_id: &str, list: &ManagerList) -> Result<(), StoreError> {
        self.ops.write();
        // A list is small (about 100 bytes a manager; an item holds 400 KB): one item, one read.
        let managers = serde_json::to_string(&list.managers).expect("managers serialise");
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("{scope_id}#managers")))
            .item("sk", s("managers"))
            .item("managers", s(managers))
            .item("fetched_at_ms", n(list.fetched_at_ms))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl AccountRegistry for DynamoStore {
    async fn put_account(&self, record: &AccountRecord) -> Result<(), StoreError> {
        self.ops.write();
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("account#{}", record.account_id)))
            .item("sk", s("account"))
            .item("account_id", n(record.account_id as i64))
            .item("host", s(&record.host))
            .item("amojo_id", s(&record.amojo_id))
            .item("scope_id", s(&record.scope_id))
            .item("state", s(record.state.as_str()))
            .item("access_expires_at_ms", n(record.access_expires_at_ms))
            .item("token_version", n(record.token_version as i64))
            .item("installed_at_ms", n(record.installed_at_ms));
        if let Some(sealed) = &record.sealed_tokens {
            put = put.item("sealed_tokens", s(sealed));
        }
        put.send().await.map_err(unavailable)?;
        self.ops.write();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("{}#account", record.scope_id)))
            .item("sk", s("account"))
            .item("account_id", n(record.account_id as i64))
            .item("state", s(record.state.as_str()))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get_account(&self, account_id: u64) -> Result<Option<AccountRecord>, StoreError> {
        let item = self.get_item(format!("account#{account_id}"), "account").await?;
        item.map(|item| account_record(&item)).transpose()
    }

    async fn account_of_scope(&self, scope_id: &str) -> Result<Option<ScopeAccount>, StoreError> {
        let item = self.get_item(format!("{scope_id}#account"), "account").await?;
        let Some(item) = item else { return Ok(None) };
        let account_id = num(&item, "account_id").ok_or_else(|| StoreError::Corrupt("scope without account".into()))?;
        let state = text(&item, "state").unwrap_or_else(|| AccountState::Connected.as_str().into());
        let state = AccountState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("scope state {state:?}")))?;
        Ok(Some(ScopeAccount { account_id: account_id as u64, state }))
    }

    async fn replace_tokens(
        &self,
        account_id: u64,
        expected_version: u64,
        sealed_tokens: &str,
        access_expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        // A retried write that had landed fails its own condition and reads as lost: the caller
        // reads the account again and finds its own tokens, so nothing is lost either way.
        let result = self
            .update(format!("account#{account_id}"), "account")
            .condition_expression("token_version = :expected AND attribute_exists(sealed_tokens)")
            .update_expression("SET sealed_tokens = :sealed, access_expires_at_ms = :expires, token_version = :next")
            .expression_attribute_values(":expected", n(expected_version as i64))
            .expression_attribute_values(":next", n(expected_version as i64 + 1))
            .expression_attribute_values(":sealed", s(sealed_tokens))
            .expression_attribute_values(":expires", n(access_expires_at_ms))
            .send()
            .await;
        conditional(result)
    }

    async fn set_account_state(&self, account_id: u64, state: AccountState) -> Result<(), StoreError> {
        let update = self
            .update(format!("account#{account_id}"), "account")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":state", s(state.as_str()));
        let update = match state {
            AccountState::Disconnected => update
                .update_expression("SET #state = :state ADD token_version :one REMOVE sealed_tokens")
                .expression_attribute_values(":one", n(1)),
            _ => update.update_expression("SET #state = :state"),
        };
        // `state` is a DynamoDB reserved word.
        let update = update.expression_attribute_names("#state", "state").return_values(ReturnValue::AllNew);
        let account = match update.send().await {
            Ok(output) => output.attributes,
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => return Ok(()), // not registered
            Err(error) => return Err(unavailable(error)),
        };
        // Events read the state from the scope's item (one read each): it follows the account's.
        let Some(scope_id) = account.as_ref().and_then(|item| text(item, "scope_id")) else { return Ok(()) };
        self.update(format!("{scope_id}#account"), "account")
            .update_expression("SET #state = :state")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":state", s(state.as_str()))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        let mut accounts = Vec::new();
        let mut start = None;
        loop {
            self.ops.read();
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :sk AND begins_with(pk, :prefix)")
                .expression_attribute_values(":sk", s("account"))
                .expression_attribute_values(":prefix", s("account#"))
                .set_exclusive_start_key(start)
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?;
            for item in page.items() {
                accounts.push(account_record(item)?);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        accounts.sort_by_key(|account| account.account_id);
        Ok(accounts)
    }
}

fn account_record(item: &Item) -> Result<AccountRecord, StoreError> {
    let required = |name: &str| text(item, name).ok_or_else(|| StoreError::Corrupt(format!("account without {name}")));
    let state = required("state")?;
    Ok(AccountRecord {
        account_id: num(item, "account_id").unwrap_or_default() as u64,
        host: required("host")?,
        amojo_id: required("amojo_id")?,
        scope_id: required("scope_id")?,
        state: AccountState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("account state {state:?}")))?,
        sealed_tokens: text(item, "sealed_tokens"),
        access_expires_at_ms: num(item, "access_expires_at_ms").unwrap_or_default(),
        token_version: num(item, "token_version").unwrap_or_default() as u64,
        installed_at_ms: num(item, "installed_at_ms").unwrap_or_default(),
    })
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

fn relay_name(relay: RelayState) -> &'static str {
    match relay {
        RelayState::Pending => "pending",
        RelayState::Sent => "sent",
        RelayState::Failed => "failed",
    }
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Outgoing => "out",
        Direction::Incoming => "in",
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
