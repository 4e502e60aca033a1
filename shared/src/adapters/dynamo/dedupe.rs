//! [`DedupeKeys`] on the table: one item per key, held by one attempt's token (`until_ms` the
//! hold's end) and then remembered as done (`done`, `until_ms` the end of remembering).

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{DynamoStore, TTL_ATTRIBUTE, conditional, n, num, s, text, unavailable};
use crate::ports::store::{DedupeKeys, KeyClaim, StoreError, ttl_seconds};

fn dedupe_pk(scope_id: &str, key: &str) -> String {
    format!("{scope_id}#dedupe#{key}")
}

const DEDUPE_SK: &str = "dedupe";

#[async_trait]
impl DedupeKeys for DynamoStore {
    async fn claim(&self, scope_id: &str, key: &str, now_ms: i64, hold_ms: i64) -> Result<KeyClaim, StoreError> {
        self.ops.write();
        let until = now_ms + hold_ms;
        // The SDK retries an attempt that timed out, and the first may have been written: its
        // retry then finds the key held. The token of this call tells "held by this very call"
        // from "held by another", which would otherwise answer a fresh delivery as held.
        let token = hex::encode(crate::random::random_bytes::<8>());
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(dedupe_pk(scope_id, key)))
            .item("sk", s(DEDUPE_SK))
            .item("until_ms", n(until))
            .item("claim_token", s(&token))
            .item(TTL_ATTRIBUTE, n(ttl_seconds(until, 0)))
            .condition_expression("attribute_not_exists(pk) OR until_ms <= :now")
            .expression_attribute_values(":now", n(now_ms))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(KeyClaim::Claimed { token }),
            Err(SdkError::ServiceError(e)) => match e.err() {
                PutItemError::ConditionalCheckFailedException(failed) => {
                    let Some(item) = failed.item() else { return Ok(KeyClaim::Held { until_ms: until }) };
                    if text(item, "claim_token").as_deref() == Some(token.as_str()) {
                        Ok(KeyClaim::Claimed { token })
                    } else if item.get("done").and_then(|v| v.as_bool().ok()) == Some(&true) {
                        Ok(KeyClaim::Done)
                    } else {
                        Ok(KeyClaim::Held { until_ms: num(item, "until_ms").unwrap_or(until) })
                    }
                }
                _ => Err(unavailable(SdkError::ServiceError(e))),
            },
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn finish(&self, scope_id: &str, key: &str, token: &str, until_ms: i64) -> Result<(), StoreError> {
        let result = self
            .update(dedupe_pk(scope_id, key), DEDUPE_SK)
            .update_expression("SET done = :done, until_ms = :until, #ttl = :ttl")
            .condition_expression("claim_token = :token")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":done", AttributeValue::Bool(true))
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":ttl", n(ttl_seconds(until_ms, 0)))
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        // Taken over by another attempt meanwhile: that one finishes it.
        conditional(result).map(drop)
    }

    async fn release(&self, scope_id: &str, key: &str, token: &str) -> Result<(), StoreError> {
        self.ops.write();
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(dedupe_pk(scope_id, key)))
            .key("sk", s(DEDUPE_SK))
            .condition_expression("claim_token = :token AND attribute_not_exists(done)")
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        conditional(result).map(drop)
    }
}
