//! [`DedupeKeys`] in memory.

use async_trait::async_trait;

use super::MemoryStore;
use crate::ports::store::{DedupeKeys, StoreError};

#[async_trait]
impl DedupeKeys for MemoryStore {
    async fn claim(&self, scope_id: &str, key: &str, now_ms: i64, ttl_ms: i64) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let slot = (scope_id.to_owned(), key.to_owned());
        if state.dedupe.get(&slot).is_some_and(|until| *until > now_ms) {
            return Ok(false);
        }
        state.dedupe.insert(slot, now_ms + ttl_ms);
        Ok(true)
    }

    async fn release(&self, scope_id: &str, key: &str) -> Result<(), StoreError> {
        self.ops.write();
        self.state().dedupe.remove(&(scope_id.to_owned(), key.to_owned()));
        Ok(())
    }
}
