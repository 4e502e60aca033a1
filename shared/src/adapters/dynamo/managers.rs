//! [`ManagerDirectory`] on the table: one item per scope, the managers as a JSON list.

use super::{DynamoStore, n, num, s, text, unavailable};
use crate::ports::store::{ManagerDirectory, ManagerList, StoreError};
use async_trait::async_trait;

#[async_trait]
impl ManagerDirectory for DynamoStore {
    async fn managers_of(&self, scope_id: &str) -> Result<Option<ManagerList>, StoreError> {
        let Some(item) = self.get_item(format!("{scope_id}#managers"), "managers").await? else { return Ok(None) };
        let managers =
            text(&item, "managers").ok_or_else(|| StoreError::Corrupt("directory without managers".into()))?;
        let managers = serde_json::from_str(&managers).map_err(|e| StoreError::Corrupt(format!("directory: {e}")))?;
        Ok(Some(ManagerList { fetched_at_ms: num(&item, "fetched_at_ms").unwrap_or_default(), managers }))
    }

    async fn put_managers(&self, scope_id: &str, list: &ManagerList) -> Result<(), StoreError> {
        self.ops.write();
        // A list is small (about 100 bytes a manager; an item holds 400 KB): one item, one read.
        let managers = serde_json::to_string(&list.managers).expect("managers serialise");
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("{scope_id}#managers")))
            .item("sk", s("managers"))
            .item("managers", s(managers))
            .item("fetched_at_ms", n(list.fetched_at_ms))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
