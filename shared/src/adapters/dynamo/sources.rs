//! [`AccountSources`] on the table: one item per source, under its scope's key, so that one
//! query lists a scope's sources.

use async_trait::async_trait;

use super::{DynamoStore, Item, n, num, s, text, unavailable};
use crate::ports::store::{AccountSources, KnownSource, StoreError};

fn sources_pk(scope_id: &str) -> String {
    format!("{scope_id}#sources")
}

#[async_trait]
impl AccountSources for DynamoStore {
    async fn source_of(&self, scope_id: &str, external_id: &str) -> Result<Option<KnownSource>, StoreError> {
        let item = self.get_item(sources_pk(scope_id), external_id).await?;
        item.map(|item| known_source(&item)).transpose()
    }

    async fn remember_source(&self, scope_id: &str, source: &KnownSource) -> Result<(), StoreError> {
        self.ops.write();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(sources_pk(scope_id)))
            .item("sk", s(&source.external_id))
            .item("kommo_source_id", n(source.kommo_source_id as i64))
            .item("name", s(&source.name))
            .item("remembered_at_ms", n(source.remembered_at_ms))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn sources_of(&self, scope_id: &str) -> Result<Vec<KnownSource>, StoreError> {
        let (mut sources, mut start) = (Vec::new(), None);
        loop {
            self.ops.read();
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(sources_pk(scope_id)))
                .set_exclusive_start_key(start)
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?;
            for item in page.items() {
                sources.push(known_source(item)?);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(sources); // sorted by sk: the external id
            }
        }
    }
}

fn known_source(item: &Item) -> Result<KnownSource, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("source without {what}"));
    Ok(KnownSource {
        external_id: text(item, "sk").ok_or_else(|| corrupt("sk"))?,
        kommo_source_id: num(item, "kommo_source_id").ok_or_else(|| corrupt("kommo_source_id"))? as u64,
        name: text(item, "name").unwrap_or_default(),
        remembered_at_ms: num(item, "remembered_at_ms").unwrap_or_default(),
    })
}
