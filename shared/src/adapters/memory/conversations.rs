//! [`Conversations`] in memory.

use async_trait::async_trait;

use super::{MemoryStore, slot};
use crate::ports::store::{ConversationFacts, ConversationInfo, Conversations, StoreError};

#[async_trait]
impl Conversations for MemoryStore {
    async fn remember_conversation(
        &self,
        scope_id: &str,
        conversation_id: &str,
        facts: &ConversationFacts<'_>,
    ) -> Result<(), StoreError> {
        self.ops.write();
        let mut state = self.state();
        let stored = state.conversations.entry(slot(scope_id, conversation_id)).or_default();
        let info = &mut stored.info;
        info.conversation_id = conversation_id.to_owned();
        let fields = [
            (&mut info.kommo_chat_id, facts.kommo_chat_id),
            (&mut info.client_user_id, facts.client_user_id),
            (&mut info.kommo_client_id, facts.kommo_client_id),
            (&mut info.answered_as, facts.answered_as),
        ];
        for (field, fact) in fields {
            if let Some(value) = fact {
                *field = Some(value.to_owned());
            }
        }
        // A conversation named by Kommo's chat id needs no second name.
        if let Some(chat_id) = facts.kommo_chat_id.filter(|chat_id| *chat_id != conversation_id) {
            self.ops.write();
            state.chats_by_kommo_id.insert(slot(scope_id, chat_id), conversation_id.to_owned());
        }
        Ok(())
    }

    async fn find_conversation(&self, scope_id: &str, id: &str) -> Result<Option<ConversationInfo>, StoreError> {
        self.ops.read();
        let state = self.state();
        let conversation_id = match state.conversations.get(&slot(scope_id, id)) {
            Some(stored) => match &stored.info.answered_as {
                Some(answered_as) => {
                    self.ops.read();
                    answered_as.clone()
                }
                None => return Ok(Some(stored.info.clone())),
            },
            None => match state.chats_by_kommo_id.get(&slot(scope_id, id)) {
                Some(conversation_id) => {
                    self.ops.read();
                    conversation_id.clone()
                }
                None => return Ok(None),
            },
        };
        Ok(state.conversations.get(&slot(scope_id, &conversation_id)).map(|stored| stored.info.clone()))
    }

    async fn advance_read_mark(
        &self,
        scope_id: &str,
        conversation_id: &str,
        sent_at_ms: i64,
        chat_msgid: &str,
    ) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let stored = state.conversations.entry(slot(scope_id, conversation_id)).or_default();
        let mark = (sent_at_ms, chat_msgid.to_owned());
        if stored.read_mark.as_ref().is_some_and(|current| *current >= mark) {
            return Ok(false);
        }
        stored.info.conversation_id = conversation_id.to_owned();
        stored.read_mark = Some(mark);
        Ok(true)
    }
}
