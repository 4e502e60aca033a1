//! Dedupe keys: a delivery that comes again (a sender's retry, a captured request replayed) is
//! done once, and an attempt that stopped half-way is taken over rather than refused.

use async_trait::async_trait;

use super::StoreError;

/// What claiming a delivery's key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// This attempt holds the key and does the work, under `token`: nobody held it, or the
    /// attempt that held it stopped (killed, or its answer lost) and its hold lapsed.
    Claimed { token: String },
    /// An earlier attempt did the work: nothing is to be done again.
    Done,
    /// Another attempt holds the key, until `until_ms`, and may still be doing the work.
    Held { until_ms: i64 },
}

/// Keys of deliveries, each held while one attempt does its work and then remembered as done
/// for a while.
#[async_trait]
pub trait DedupeKeys: Send + Sync {
    /// Claims `key` for an attempt, held until `now_ms + hold_ms`: taken from nobody, or from an
    /// attempt whose hold lapsed unfinished, or from a key whose remembering ended.
    async fn claim(&self, scope_id: &str, key: &str, now_ms: i64, hold_ms: i64) -> Result<KeyClaim, StoreError>;
    /// The work under the claim `token` is done: remembered as done until `until_ms`. A claim
    /// another attempt took over meanwhile is left as it is.
    async fn finish(&self, scope_id: &str, key: &str, token: &str, until_ms: i64) -> Result<(), StoreError>;
    /// Forgets the claim `token` (its work failed), so a retry is done, not refused. A claim
    /// another attempt took over, or a key done, is left as it is.
    async fn release(&self, scope_id: &str, key: &str, token: &str) -> Result<(), StoreError>;
}
