//! [`DedupeKeys`] on the table: one item per claimed key, until its claim ends.

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

use super::{DynamoStore, TTL_ATTRIBUTE, n, s, unavailable};
use crate::ports::store::{DedupeKeys, StoreError, ttl_seconds};

#[async_trait]
impl DedupeKeys for DynamoStore {
    async fn claim(&self, scope_id: &str, key: &str, now_ms: i64, ttl_ms: i64) -> Result<bool, StoreError> {
        self.ops.write();
        let until = now_ms + ttl_ms;
        // The SDK retries an attempt that timed out, and the first may have been written: its
        // retry then finds the claim taken. A token of this call tells "taken by this very call"
        // from "taken by another", which would otherwise refuse a fresh webhook-id as a replay.
        let token = hex::encode(crate::random::random_bytes::<8>());
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
