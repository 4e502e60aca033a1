//! Dedupe keys: a repeated delivery is done once.

use async_trait::async_trait;

use super::StoreError;

/// Keys remembered for a while, so a repeated delivery is done once.
#[async_trait]
pub trait DedupeKeys: Send + Sync {
    /// True for the first claim of `key` within `ttl_ms`.
    async fn claim(&self, scope_id: &str, key: &str, now_ms: i64, ttl_ms: i64) -> Result<bool, StoreError>;
    /// Forgets a claim, so the work it guarded can be tried again (after that work failed).
    async fn release(&self, scope_id: &str, key: &str) -> Result<(), StoreError>;
}
