//! [`TypingLeases`] in memory.

use async_trait::async_trait;

use super::MemoryStore;
use crate::ports::store::{ClientSignal, Lease, LeaseChange, LeaseKey, StoreError, TypingLeases};

#[async_trait]
impl TypingLeases for MemoryStore {
    async fn extend(&self, key: &LeaseKey, expires_at_ms: i64) -> Result<LeaseChange, StoreError> {
        self.ops.write();
        let mut state = self.state();
        // A lapsed lease still stored was not ended: it goes on (see the port).
        match state.leases.get(key).copied() {
            Some(lease) if lease.expires_at_ms >= expires_at_ms => {
                Ok(LeaseChange::Unchanged { expires_at_ms: lease.expires_at_ms })
            }
            Some(lease) => {
                state.leases.insert(key.clone(), Lease { expires_at_ms, ..lease });
                Ok(LeaseChange::Extended { previous_expires_at_ms: lease.expires_at_ms })
            }
            None => {
                let lease = Lease { expires_at_ms, last_forwarded_at_ms: None };
                state.leases.insert(key.clone(), lease);
                Ok(LeaseChange::Started)
            }
        }
    }

    async fn get_lease(&self, key: &LeaseKey, now_ms: i64) -> Result<Option<Lease>, StoreError> {
        self.ops.read();
        Ok(self.state().leases.get(key).copied().filter(|lease| lease.expires_at_ms > now_ms))
    }

    async fn end(&self, key: &LeaseKey, now_ms: i64) -> Result<Option<Lease>, StoreError> {
        self.ops.write();
        let mut state = self.state();
        match state.leases.get(key).copied() {
            Some(lease) if lease.expires_at_ms > now_ms => {
                state.leases.remove(key);
                Ok(Some(lease))
            }
            _ => Ok(None),
        }
    }

    async fn end_if_lapsed(&self, key: &LeaseKey, now_ms: i64) -> Result<Option<i64>, StoreError> {
        self.ops.write();
        let mut state = self.state();
        match state.leases.get(key).copied() {
            Some(lease) if lease.expires_at_ms <= now_ms => {
                state.leases.remove(key);
                Ok(Some(lease.expires_at_ms))
            }
            _ => Ok(None),
        }
    }

    async fn client_typing_signal(
        &self,
        key: &LeaseKey,
        now_ms: i64,
        expires_at_ms: i64,
        min_gap_ms: i64,
    ) -> Result<ClientSignal, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let stored = state.leases.get(key).copied();
        match stored {
            Some(lease) if lease.expires_at_ms > now_ms => {
                if lease.expires_at_ms < expires_at_ms {
                    state.leases.insert(key.clone(), Lease { expires_at_ms, ..lease });
                }
                Ok(ClientSignal::Extended)
            }
            _ => {
                let last_forwarded = stored.and_then(|lease| lease.last_forwarded_at_ms);
                let forward_now = last_forwarded.is_none_or(|at| at <= now_ms - min_gap_ms);
                let last_forwarded_at_ms = if forward_now { Some(now_ms) } else { last_forwarded };
                state.leases.insert(key.clone(), Lease { expires_at_ms, last_forwarded_at_ms });
                let next_forward_at_ms = last_forwarded_at_ms.unwrap_or(now_ms) + min_gap_ms;
                Ok(ClientSignal::Started { forward_now, next_forward_at_ms })
            }
        }
    }

    async fn claim_refresh(&self, key: &LeaseKey, now_ms: i64, min_gap_ms: i64) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        match state.leases.get_mut(key) {
            Some(lease)
                if lease.expires_at_ms > now_ms
                    && lease.last_forwarded_at_ms.is_none_or(|at| at <= now_ms - min_gap_ms) =>
            {
                lease.last_forwarded_at_ms = Some(now_ms);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
