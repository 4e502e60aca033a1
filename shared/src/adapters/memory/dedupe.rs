//! [`DedupeKeys`] in memory.

use async_trait::async_trait;

use super::{DedupeEntry, MemoryStore};
use crate::ports::store::{DedupeKeys, KeyClaim, StoreError};

#[async_trait]
impl DedupeKeys for MemoryStore {
    async fn claim(&self, scope_id: &str, key: &str, now_ms: i64, hold_ms: i64) -> Result<KeyClaim, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let slot = (scope_id.to_owned(), key.to_owned());
        match state.dedupe.get(&slot) {
            Some(entry) if entry.until_ms > now_ms && entry.done => return Ok(KeyClaim::Done),
            Some(entry) if entry.until_ms > now_ms => return Ok(KeyClaim::Held { until_ms: entry.until_ms }),
            _ => {}
        }
        let token = hex::encode(crate::random::random_bytes::<8>());
        state.dedupe.insert(slot, DedupeEntry { until_ms: now_ms + hold_ms, token: token.clone(), done: false });
        Ok(KeyClaim::Claimed { token })
    }

    async fn finish(&self, scope_id: &str, key: &str, token: &str, until_ms: i64) -> Result<(), StoreError> {
        self.ops.write();
        if let Some(entry) = self.state().dedupe.get_mut(&(scope_id.to_owned(), key.to_owned()))
            && entry.token == token
        {
            entry.done = true;
            entry.until_ms = until_ms;
        }
        Ok(())
    }

    async fn release(&self, scope_id: &str, key: &str, token: &str) -> Result<(), StoreError> {
        self.ops.write();
        let mut state = self.state();
        let slot = (scope_id.to_owned(), key.to_owned());
        if state.dedupe.get(&slot).is_some_and(|entry| entry.token == token && !entry.done) {
            state.dedupe.remove(&slot);
        }
        Ok(())
    }
}
