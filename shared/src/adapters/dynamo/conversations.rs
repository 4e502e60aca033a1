//! [`Conversations`] on the table: one item per conversation, and one per Kommo chat id that
//! names it.

use super::{DynamoStore, n, s, text, unavailable};
use crate::ports::store::{ConversationFacts, ConversationInfo, Conversations, StoreError};
use async_trait::async_trait;

#[async_trait]
impl Conversations for DynamoStore {
    async fn remember_conversation(
        &self,
        scope_id: &str,
        conversation_id: &str,
        facts: &ConversationFacts<'_>,
    ) -> Result<(), StoreError> {
        let mut sets = vec!["conversation_id = :conv".to_owned()];
        let mut update = self
            .update(format!("{scope_id}#conv#{conversation_id}"), "conv")
            .expression_attribute_values(":conv", s(conversation_id));
        let fields = [
            ("kommo_chat_id", facts.kommo_chat_id),
            ("client_user_id", facts.client_user_id),
            ("kommo_client_id", facts.kommo_client_id),
            ("answered_as", facts.answered_as),
        ];
        for (attribute, value) in fields {
            if let Some(value) = value {
                sets.push(format!("{attribute} = :{attribute}"));
                update = update.expression_attribute_values(format!(":{attribute}"), s(value));
            }
        }
        update.update_expression(format!("SET {}", sets.join(", "))).send().await.map_err(unavailable)?;
        // A conversation named by Kommo's chat id needs no second name.
        if let Some(chat_id) = facts.kommo_chat_id.filter(|chat_id| *chat_id != conversation_id) {
            self.ops.write();
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(format!("{scope_id}#chat#{chat_id}")))
                .item("sk", s("chat"))
                .item("conversation_id", s(conversation_id))
                .send()
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn find_conversation(&self, scope_id: &str, id: &str) -> Result<Option<ConversationInfo>, StoreError> {
        let mut item = self.get_item(format!("{scope_id}#conv#{id}"), "conv").await?;
        match &item {
            // Answered under the chat service's own id: that conversation is this one now.
            Some(found) => {
                if let Some(answered_as) = text(found, "answered_as") {
                    item = self.get_item(format!("{scope_id}#conv#{answered_as}"), "conv").await?;
                }
            }
            None => {
                // Not the integration's id: maybe Kommo's chat id.
                let alias = self.get_item(format!("{scope_id}#chat#{id}"), "chat").await?;
                if let Some(conversation_id) = alias.and_then(|alias| text(&alias, "conversation_id")) {
                    item = self.get_item(format!("{scope_id}#conv#{conversation_id}"), "conv").await?;
                }
            }
        }
        Ok(item.map(|item| ConversationInfo {
            conversation_id: text(&item, "conversation_id").unwrap_or_default(),
            kommo_chat_id: text(&item, "kommo_chat_id"),
            client_user_id: text(&item, "client_user_id"),
            kommo_client_id: text(&item, "kommo_client_id"),
            answered_as: text(&item, "answered_as"),
        }))
    }

    async fn advance_read_mark(
        &self,
        scope_id: &str,
        conversation_id: &str,
        sent_at_ms: i64,
        chat_msgid: &str,
    ) -> Result<bool, StoreError> {
        let (request, token) = self.stamped_update(
            format!("{scope_id}#conv#{conversation_id}"),
            "conv",
            "SET read_mark_ms = :ms, read_mark_msgid = :id, conversation_id = :conv",
        );
        let request = request
            .condition_expression(
                "attribute_not_exists(read_mark_ms) OR read_mark_ms < :ms OR (read_mark_ms = :ms AND read_mark_msgid < :id)",
            )
            .expression_attribute_values(":ms", n(sent_at_ms))
            .expression_attribute_values(":id", s(chat_msgid))
            .expression_attribute_values(":conv", s(conversation_id));
        Ok(Self::send_stamped(request, &token).await?.written())
    }
}
