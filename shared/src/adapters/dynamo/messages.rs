//! [`MessageRecords`] on the table: manager messages with their conversation index and their
//! chat-service names, client messages with their conversation inbox.

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{Delete, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem};

use super::{
    DynamoStore, Stamped, TTL_ATTRIBUTE, condition_cancelled, conditional, corrupt, item_on_condition_failure, n, num,
    s, text, unavailable,
};
use crate::models::status::DeliveryStatus;
use crate::ports::store::{
    Direction, IncomingState, MESSAGE_RETENTION_S, MessageRecord, MessageRecords, RelayClaim, RelayOutcome, RelayState,
    StatusChange, StoreError, ttl_seconds,
};

fn message_pk(scope_id: &str, kommo_msgid: &str) -> String {
    format!("{scope_id}#msg#{kommo_msgid}")
}

const MESSAGE_SK: &str = "msg";

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
        let token = hex::encode(crate::random::random_bytes::<8>());
        let mut request = self
            .update(message_pk(scope_id, kommo_msgid), MESSAGE_SK)
            .update_expression(
                "SET status_rank = :rank, status_at_ms = :now, expires_at = :ttl, status_token = :token, \
                 created_at_ms = if_not_exists(created_at_ms, :now), dir = if_not_exists(dir, :out), \
                 relay_state = if_not_exists(relay_state, :pending)",
            )
            .expression_attribute_values(":token", s(&token))
            .condition_expression(condition)
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":ttl", n(ttl_seconds(now_ms, MESSAGE_RETENTION_S)))
            .expression_attribute_values(":out", s(direction_name(Direction::Outgoing)))
            .expression_attribute_values(":pending", s(relay_name(RelayState::Pending)))
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
            // A record heard of only through a status has no hold yet.
            .condition_expression(
                "relay_state = :pending AND (attribute_not_exists(relay_hold_until_ms) OR relay_hold_until_ms <= :now)",
            )
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
