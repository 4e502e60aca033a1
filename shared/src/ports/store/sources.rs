//! The sources the bridge created in each account through Kommo's sources API, remembered so
//! that a client message naming one costs one read, not a call to Kommo.

use async_trait::async_trait;

use super::StoreError;

/// One of the integration's sources in a scope's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownSource {
    /// What messages name it by (`source.external_id`).
    pub external_id: String,
    /// Kommo's id of the source.
    pub kommo_source_id: u64,
    pub name: String,
    pub remembered_at_ms: i64,
}

/// The sources of each scope's account (items of the scope, kept until overwritten).
#[async_trait]
pub trait AccountSources: Send + Sync {
    async fn source_of(&self, scope_id: &str, external_id: &str) -> Result<Option<KnownSource>, StoreError>;
    /// Records a source; the same `external_id` again replaces what was stored.
    async fn remember_source(&self, scope_id: &str, source: &KnownSource) -> Result<(), StoreError>;
    /// Every source remembered for the scope, by `external_id`.
    async fn sources_of(&self, scope_id: &str) -> Result<Vec<KnownSource>, StoreError>;
}
