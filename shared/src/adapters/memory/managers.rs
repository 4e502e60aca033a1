//! [`ManagerDirectory`] in memory.

use async_trait::async_trait;

use super::MemoryStore;
use crate::ports::store::{ManagerDirectory, ManagerList, StoreError};

#[async_trait]
impl ManagerDirectory for MemoryStore {
    async fn managers_of(&self, scope_id: &str) -> Result<Option<ManagerList>, StoreError> {
        self.ops.read();
        Ok(self.state().managers.get(scope_id).cloned())
    }

    async fn put_managers(&self, scope_id: &str, list: &ManagerList) -> Result<(), StoreError> {
        self.ops.write();
        self.state().managers.insert(scope_id.to_owned(), list.clone());
        Ok(())
    }
}
