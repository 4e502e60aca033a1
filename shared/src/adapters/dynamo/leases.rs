//! [`TypingLeases`] on the table: one item per holder of a lease, its deadline in `expires_at_ms`.

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::ReturnValue;

use super::{ABSENT, DynamoStore, Item, Stamped, n, num, s, unavailable};
use crate::ports::store::{
    ClientSignal, LEASE_GRACE_S, Lease, LeaseChange, LeaseKey, StoreError, TypingLeases, ttl_seconds,
};

fn lease_pk(key: &LeaseKey) -> String {
    format!("{}#typing#{}", key.scope_id, key.conversation_id)
}

impl DynamoStore {
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
