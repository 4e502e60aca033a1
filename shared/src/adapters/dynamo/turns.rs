//! [`SendTurns`] on the table: one item per lane, its holder and its sent mark.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::{DynamoStore, conditional, item_on_condition_failure, n, num, s, text, unavailable};
use crate::ports::store::{LaneView, SendTurns, StoreError, Turn, ttl_seconds};

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
        let token = hex::encode(crate::random::random_bytes::<8>());
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
                let (sent_mark, unconfirmed) = marks(output.attributes.as_ref());
                Ok(Turn::Yours { token, sent_mark, unconfirmed })
            }
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let held = item_on_condition_failure(e.err());
                if held.and_then(|item| text(item, "holder")).as_deref() == Some(token.as_str()) {
                    let (sent_mark, unconfirmed) = marks(held);
                    return Ok(Turn::Yours { token, sent_mark, unconfirmed });
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
        let (sent_mark, unconfirmed) = marks(Some(&item));
        Ok(LaneView { held_until_ms, sent_mark, unconfirmed })
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
                .update_expression("SET sent_mark = :mark REMOVE holder, hold_until_ms, unconfirmed_mark")
                .expression_attribute_values(":mark", n(mark)),
            None => release.update_expression("REMOVE holder, hold_until_ms"),
        };
        if conditional(release.send().await)? {
            return Ok(());
        }
        // The hold ran out before the send ended (or an SDK retry of this very write): the lane
        // is someone else's or free; the mark still only rises.
        match sent_mark {
            Some(mark) => {
                let raise = self
                    .update(turn_pk(scope_id, lane), "turn")
                    .update_expression("SET sent_mark = :mark REMOVE unconfirmed_mark")
                    .condition_expression(
                        "attribute_exists(pk) AND (attribute_not_exists(sent_mark) OR sent_mark <= :mark)",
                    )
                    .expression_attribute_values(":mark", n(mark))
                    .send()
                    .await;
                conditional(raise).map(drop)
            }
            None => Ok(()),
        }
    }

    async fn raise_mark(&self, scope_id: &str, lane: &str, mark: i64) -> Result<(), StoreError> {
        let raise = self
            .update(turn_pk(scope_id, lane), "turn")
            .update_expression("SET sent_mark = :mark, unconfirmed_mark = :mark")
            .condition_expression("attribute_exists(pk) AND (attribute_not_exists(sent_mark) OR sent_mark < :mark)")
            .expression_attribute_values(":mark", n(mark))
            .send()
            .await;
        conditional(raise).map(drop)
    }
}

/// A lane's sent mark, and whether it was raised before its send and not confirmed since.
fn marks(item: Option<&HashMap<String, AttributeValue>>) -> (Option<i64>, bool) {
    let sent_mark = item.and_then(|item| num(item, "sent_mark"));
    let unconfirmed = sent_mark.is_some() && item.and_then(|item| num(item, "unconfirmed_mark")) == sent_mark;
    (sent_mark, unconfirmed)
}
