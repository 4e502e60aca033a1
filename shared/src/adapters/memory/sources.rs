//! [`AccountSources`] in memory.

use async_trait::async_trait;

use super::{MemoryStore, slot};
use crate::ports::store::{AccountSources, KnownSource, StoreError};

#[async_trait]
impl AccountSources for MemoryStore {
    async fn source_of(&self, scope_id: &str, external_id: &str) -> Result<Option<KnownSource>, StoreError> {
        self.ops.read();
        Ok(self.state().sources.get(&slot(scope_id, external_id)).cloned())
    }

    async fn remember_source(&self, scope_id: &str, source: &KnownSource) -> Result<(), StoreError> {
        self.ops.write();
        self.state().sources.insert(slot(scope_id, &source.external_id), source.clone());
        Ok(())
    }

    async fn sources_of(&self, scope_id: &str) -> Result<Vec<KnownSource>, StoreError> {
        self.ops.read();
        let state = self.state();
        let mut sources: Vec<_> = state
            .sources
            .iter()
            .filter(|((scope, _), _)| scope == scope_id)
            .map(|(_, source)| source.clone())
            .collect();
        sources.sort_by(|a, b| a.external_id.cmp(&b.external_id));
        Ok(sources)
    }
}
