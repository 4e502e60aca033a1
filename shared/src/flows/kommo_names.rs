//! How the chat service's names for conversations and messages become the ones amojo takes:
//! the conversation a message, edit or reaction goes to (with Kommo's chat id on a chat a
//! manager started), and a message named by either side's id. Used by the queued halves that
//! call amojo.

use crate::models::chat::MessageRef;
use crate::models::kommo::KommoMessageRef;
use crate::ports::store::{ConversationFacts, Conversations, MessageRecords, StoreError};

/// Where something of the chat service's lands in Kommo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KommoConversation {
    /// The integration's conversation id amojo is given.
    pub conversation_id: String,
    /// Kommo's chat id, on a chat a manager started: Kommo then links the integration's id to
    /// that chat instead of opening a new one.
    pub conversation_ref_id: Option<String>,
    /// Kommo's id of the client, on such a chat.
    pub kommo_client_id: Option<String>,
    /// Kommo has the chat already: none is to be created.
    pub chat_exists: bool,
}

/// The conversation the chat service names by `conversation_id`, as amojo should be told it.
pub async fn kommo_conversation(
    conversations: &dyn Conversations,
    scope_id: &str,
    conversation_id: &str,
) -> Result<KommoConversation, StoreError> {
    let Some(known) = conversations.find_conversation(scope_id, conversation_id).await? else {
        return Ok(KommoConversation {
            conversation_id: conversation_id.to_owned(),
            conversation_ref_id: None,
            kommo_client_id: None,
            chat_exists: false,
        });
    };
    // A chat a manager started, or one the chat service answered under its own id: Kommo's chat
    // id goes along on every call, since the bridge cannot know whether the first one landed.
    let write_first = known.started_in_kommo() || known.kommo_client_id.is_some();
    Ok(KommoConversation {
        conversation_ref_id: known.kommo_chat_id.clone().filter(|_| write_first),
        chat_exists: known.kommo_chat_id.is_some(),
        kommo_client_id: known.kommo_client_id,
        conversation_id: known.conversation_id,
    })
}

/// The id under which Kommo shows the client typing in the conversation the chat service
/// names, or none while Kommo has no chat bound to an id of the integration's: one the bridge
/// has not made yet, or one a manager started that the chat service has not answered (Kommo
/// knows that chat by its own id only). A chat answered under another id leads to that id.
pub async fn kommo_typing_conversation(
    conversations: &dyn Conversations,
    scope_id: &str,
    conversation_id: &str,
) -> Result<Option<String>, StoreError> {
    let known = conversations.find_conversation(scope_id, conversation_id).await?;
    Ok(known.filter(|known| known.kommo_chat_id.is_some() && !known.started_in_kommo()).map(|k| k.conversation_id))
}

/// The chat service answers a chat a manager started under its own `conversation_id`, naming
/// the bridge's id for it in `ref_id`: from now on both lead to one conversation. Idempotent:
/// called when the message arrives and again when it is imported.
pub async fn link_answer(
    conversations: &dyn Conversations,
    scope_id: &str,
    conversation_id: &str,
    ref_id: &str,
    client_user_id: &str,
) -> Result<KommoConversation, StoreError> {
    let started = conversations.find_conversation(scope_id, ref_id).await?;
    if let Some(linked) = started.as_ref().filter(|started| started.conversation_id == conversation_id) {
        // Linked already (by the event's inbound half, or an earlier delivery of this work).
        return Ok(KommoConversation {
            conversation_id: conversation_id.to_owned(),
            conversation_ref_id: Some(linked.kommo_chat_id.clone().unwrap_or_else(|| ref_id.to_owned())),
            kommo_client_id: linked.kommo_client_id.clone(),
            chat_exists: true,
        });
    }
    // A chat the bridge has no record of (the store was reset, or the chat service names
    // Kommo's chat id from elsewhere) is taken to be named by Kommo's id.
    let kommo_chat_id = started.as_ref().and_then(|s| s.kommo_chat_id.clone()).unwrap_or_else(|| ref_id.to_owned());
    let kommo_client_id = started.as_ref().and_then(|s| s.kommo_client_id.clone());
    let facts = ConversationFacts {
        kommo_chat_id: Some(&kommo_chat_id),
        client_user_id: Some(client_user_id),
        kommo_client_id: kommo_client_id.as_deref(),
        answered_as: None,
    };
    conversations.remember_conversation(scope_id, conversation_id, &facts).await?;
    if let Some(started) = started.filter(|started| started.started_in_kommo()) {
        let answered = ConversationFacts { answered_as: Some(conversation_id), ..Default::default() };
        conversations.remember_conversation(scope_id, &started.conversation_id, &answered).await?;
    }
    Ok(KommoConversation {
        conversation_id: conversation_id.to_owned(),
        conversation_ref_id: Some(kommo_chat_id),
        kommo_client_id,
        chat_exists: true,
    })
}

/// A message the chat service names, as amojo takes it: by Kommo's id when the bridge knows it
/// (a `reference`, or a manager's message the chat service named by its own id), else by the
/// integration's id (a client's message, which Kommo knows by it).
pub async fn kommo_message(
    records: &dyn MessageRecords,
    scope_id: &str,
    message: &MessageRef,
) -> Result<KommoMessageRef, StoreError> {
    if let Some(reference) = &message.reference {
        return Ok(KommoMessageRef { msgid: None, id: Some(reference.clone()) });
    }
    let msgid = message.msgid.clone().unwrap_or_default();
    Ok(match records.kommo_msgid_for(scope_id, &msgid).await? {
        Some(kommo_msgid) => KommoMessageRef { msgid: None, id: Some(kommo_msgid) },
        None => KommoMessageRef { msgid: Some(msgid), id: None },
    })
}
