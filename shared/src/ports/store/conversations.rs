//! Conversations: their ids on both sides, the client, and the read mark.

use async_trait::async_trait;

use super::StoreError;

/// What the bridge knows of a conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationInfo {
    /// The integration's id.
    pub conversation_id: String,
    pub kommo_chat_id: Option<String>,
    /// The client's user id in the chat service.
    pub client_user_id: Option<String>,
    /// Kommo's id of the client, on a conversation a manager started in Kommo (the chat service
    /// did not know it then).
    pub kommo_client_id: Option<String>,
    /// On a conversation a manager started, the id the chat service answered under instead of
    /// the bridge's: [`Conversations::find_conversation`] leads there.
    pub answered_as: Option<String>,
}

impl ConversationInfo {
    /// A manager started it in Kommo ("write first"): Kommo gave no id of the integration's, so
    /// the bridge named it by Kommo's chat id.
    pub fn started_in_kommo(&self) -> bool {
        self.kommo_chat_id.as_deref() == Some(self.conversation_id.as_str())
    }
}

/// What [`Conversations::remember_conversation`] learned; a field left `None` is kept as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConversationFacts<'a> {
    pub kommo_chat_id: Option<&'a str>,
    pub client_user_id: Option<&'a str>,
    pub kommo_client_id: Option<&'a str>,
    pub answered_as: Option<&'a str>,
}

/// Conversations: the integration's ids, Kommo's chat ids, the client, and the read mark.
#[async_trait]
pub trait Conversations: Send + Sync {
    /// Records what is known of a conversation; a field given as `None` is left as it is. A
    /// Kommo chat id also becomes a name of the conversation (the last one given wins).
    async fn remember_conversation(
        &self,
        scope_id: &str,
        conversation_id: &str,
        facts: &ConversationFacts<'_>,
    ) -> Result<(), StoreError>;
    /// A conversation named by the integration's id or by Kommo's chat id (what the Kommo UI
    /// sees); one that was answered under another id leads to that one.
    async fn find_conversation(&self, scope_id: &str, id: &str) -> Result<Option<ConversationInfo>, StoreError>;
    /// Moves the conversation's read mark forward to the client message (sent_at_ms, chat msgid):
    /// true when it moved, so the one `message.read` is due.
    async fn advance_read_mark(
        &self,
        scope_id: &str,
        conversation_id: &str,
        sent_at_ms: i64,
        chat_msgid: &str,
    ) -> Result<bool, StoreError>;
}
