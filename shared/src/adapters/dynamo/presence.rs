//! [`PresenceWindows`] on the table: a window item per device, and what the chat service was
//! last told per device.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{ABSENT, DynamoStore, Stamped, TTL_ATTRIBUTE, n, num, s, text, unavailable};
use crate::ports::store::{
    HeartbeatOutcome, PRESENCE_RETENTION_S, PresenceKey, PresenceView, PresenceWindows, StoreError, ttl_seconds,
};

fn presence_pk(scope_id: &str, subject: &str) -> String {
    format!("{scope_id}#presence#{subject}")
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
